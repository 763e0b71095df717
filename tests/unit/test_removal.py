"""Termination's removal decision: which connectors are ours, in which order, what blocks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.connectors import desired_connectors
from shared.notice import parse_notice
from shared.plan import Operation
from shared.provisioning import own_connectors
from shared.removal import (
    OwnConnectors,
    RemovalAction,
    expected_removals,
    plan_removals,
    removal_operations,
)
from shared.services import SERVICES
from shared.settings import Settings
from tests.support import FakeConnector, as_deployed

NOTICE = parse_notice({
    "notice_id": "n-1",
    "tenant_id": "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b",
    "services": ["mailgates", "enterprise_audit"],
    "journal_report_address": "jr@cs-365.cybermail.jp",
    "mx_host": "mgf.cybermail.jp",
    "validation_recipient": "adm@example.com",
})
EA, MG = desired_connectors(NOTICE)
OWN = own_connectors(Settings())
BOTH = ("mailgates", "enterprise_audit")
FOREIGN_STAR = FakeConnector("Contoso relay", ("*",), ("smtp.contoso.example",), use_mx_record=False)
FOREIGN_NARROW = FakeConnector("Bank", ("*.bank.example",))


def remove(name: str) -> Operation:
    return Operation("Remove-OutboundConnector", {"Identity": name, "Confirm": False})


@pytest.mark.parametrize(("services", "actual", "expected"), [
    # both ours: MailGates' '*' first, then Enterprise Audit's; foreign connectors untouched
    (BOTH, [as_deployed(EA), FOREIGN_STAR, as_deployed(MG), FOREIGN_NARROW], [remove(MG.name), remove(EA.name)]),
    # the notice's order of services does not matter
    (("enterprise_audit", "mailgates"), [as_deployed(EA), as_deployed(MG)], [remove(MG.name), remove(EA.name)]),
    # ending MailGates only keeps Enterprise Audit (and the other way round)
    (("mailgates",), [as_deployed(EA), as_deployed(MG)], [remove(MG.name)]),
    (("enterprise_audit",), [as_deployed(EA), as_deployed(MG)], [remove(EA.name)]),
    # already gone: nothing to do, so a replay writes nothing
    (BOTH, [FOREIGN_STAR], []),
    (BOTH, [as_deployed(EA)], [remove(EA.name)]),
    # ours in test mode (read from the second listing) is removed too
    (("mailgates",), [as_deployed(MG, test_mode=True)], [remove(MG.name)]),
    # ours after a failed validation switched it off
    (("mailgates",), [as_deployed(MG, enabled=False)], [remove(MG.name)]),
    # our name as an admin typed it: removed under the name Exchange knows
    (("mailgates",), [as_deployed(MG, name="MAILGATES Σ 送信コネクタ")], [remove("MAILGATES Σ 送信コネクタ")]),
    # another allow-listed smart host or journal domain is still ours
    (("mailgates",), [as_deployed(MG, smart_hosts=("MGS.cybermail.jp.",))], [remove(MG.name)]),
    (("enterprise_audit",), [as_deployed(EA, recipient_domains=("*.cs-365-02.cybermail.jp",))], [remove(EA.name)]),
    # renamed by an admin (only our marker in Comment): not ours by name, left alone
    (("mailgates",), [as_deployed(MG, name="Outbound via MailGates")], []),
])
def test_removals(services: tuple[str, ...], actual: list[FakeConnector], expected: list[Operation]) -> None:
    plan = plan_removals(services, actual, own=OWN)
    assert not plan.blocked
    assert removal_operations(plan) == expected


@pytest.mark.parametrize(("connector", "reason"), [
    (as_deployed(MG, smart_hosts=("smtp.contoso.example",)), "smtp.contoso.example, not on ALLOWED_SMART_HOSTS"),
    (as_deployed(MG, smart_hosts=("mgf.cybermail.jp", "smtp.contoso.example")), "smtp.contoso.example"),
    (as_deployed(MG, use_mx_record=True, smart_hosts=()), "routes by MX record"),
    (as_deployed(EA, recipient_domains=("*.contoso.example",)), "*.contoso.example, not a journal domain"),
    (as_deployed(EA, recipient_domains=("*",)), "is for *, not a journal domain"),
    (as_deployed(EA, recipient_domains=("cs-365.cybermail.jp",)), "cs-365.cybermail.jp"),
    (as_deployed(EA, recipient_domains=()), "no recipient domains"),
    (as_deployed(EA, use_mx_record=False, smart_hosts=("mgf.cybermail.jp",)), "not by MX record"),
])
def test_a_connector_with_our_name_and_other_routing_blocks_every_removal(connector: FakeConnector,
                                                                          reason: str) -> None:
    others = [as_deployed(EA), as_deployed(MG)]
    actual = [connector if c.name == connector.name else c for c in others]
    plan = plan_removals(BOTH, actual, own=OWN)
    assert plan.blocked
    assert [r.name for r in plan.refusals] == [connector.name]
    assert reason in plan.refusals[0].reason
    assert removal_operations(plan) == []


def test_a_foreign_connector_with_our_name_blocks_only_when_its_service_ends() -> None:
    stranger = as_deployed(EA, recipient_domains=("*.contoso.example",))
    plan = plan_removals(("mailgates",), [stranger, as_deployed(MG)], own=OWN)
    assert not plan.blocked
    assert removal_operations(plan) == [remove(MG.name)]


def test_each_ended_service_is_reported_removed_or_absent_in_order() -> None:
    plan = plan_removals(BOTH, [as_deployed(EA, test_mode=True)], own=OWN)
    assert [(r.service, r.action, r.test_mode) for r in plan.removals] == [
        ("mailgates", RemovalAction.ABSENT, False), ("enterprise_audit", RemovalAction.REMOVE, True)]


def test_every_service_of_the_registry_has_its_configured_connector_name() -> None:
    settings = Settings(ea_connector_name="EA outbound", mg_connector_name="MG outbound")
    own = OwnConnectors.from_settings(settings)
    assert own.names == {s.key: s.connector_name(settings) for s in SERVICES}
    assert (own.name_of("mailgates"), own.name_of("enterprise_audit")) == ("MG outbound", "EA outbound")


def test_ownership_follows_the_configured_names_and_allow_lists() -> None:
    own = OwnConnectors(names={"enterprise_audit": "EA", "mailgates": "MG"},
                        smart_hosts=frozenset({"relay.example.jp"}), journal_domains=frozenset({"journal.example.jp"}))
    actual = [FakeConnector("mg", ("*",), ("relay.example.jp",), use_mx_record=False),
              FakeConnector("EA", ("*.journal.example.jp",)),
              replace(as_deployed(MG))]
    assert removal_operations(plan_removals(BOTH, actual, own=own)) == [remove("mg"), remove("EA")]


def test_the_plan_of_a_terminate_notice_removes_both_mailgates_first() -> None:
    assert removal_operations(expected_removals(["enterprise_audit", "mailgates"], own=OWN)) == [
        remove(MG.name), remove(EA.name)]
