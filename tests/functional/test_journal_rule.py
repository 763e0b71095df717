"""Enterprise Audit's journal rule (EA_JOURNAL_RULE=ensure) over real HTTPS against the simulator."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from exosim import Simulator
from shared.auth import MsalTokenProvider
from shared.errors import ProvisioningError
from shared.notice import parse_notice
from shared.outcome import Status
from shared.provisioning import ProvisioningEngine
from shared.settings import Settings
from tests.fixtures.product import Sleeps

pytestmark = pytest.mark.functional

TENANT = "0b4d6e2c-93a1-4f7e-b5c8-1d2e3f405162"
RULE = "Enterprise Audit ジャーナル ルール"
EA_NAME = "Enterprise Audit送信コネクタ"
MG_NAME = "MAILGATESΣ 送信コネクタ"
JOURNAL = "jr-7@cs-365.cybermail.jp"
ACTIVATION: dict[str, Any] = {
    "notice_id": "ACT-J-1",
    "tenant_id": TENANT,
    "services": ["enterprise_audit"],
    "journal_report_address": JOURNAL,
    "journal_ndr_address": "journal-ndr@northwind.example",
}
TERMINATION = {"notice_id": "TRM-J-1", "tenant_id": TENANT, "services": ["mailgates", "enterprise_audit"],
               "action": "terminate"}


@pytest.fixture
def ensuring(settings: Settings, token_provider: MsalTokenProvider, sleeps: Sleeps) -> ProvisioningEngine:
    return ProvisioningEngine(dataclasses.replace(settings, ea_journal_rule="ensure"),
                              token_provider=token_provider, sleep=sleeps.sleep, clock=sleeps.clock)


def writes(sim: Simulator) -> list[tuple[str, str]]:
    return [(w["cmdlet"], w["identity"]) for w in sim.writes(TENANT)]


def test_a_fresh_activation_sets_the_ndr_address_and_creates_one_enabled_global_rule(
        simulator: Simulator, ensuring: ProvisioningEngine) -> None:
    outcome = ensuring.run(parse_notice(ACTIVATION))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.journal_rules(TENANT) == [{
        "Identity": RULE, "Name": RULE, "Guid": simulator.journal_rules(TENANT)[0]["Guid"],
        "JournalEmailAddress": JOURNAL, "Recipient": None, "Scope": "Global", "Enabled": True}]
    assert simulator.journaling_report_ndr_to(TENANT) == "journal-ndr@northwind.example"
    # The connector first, so journal reports have their route before the rule sends any.
    assert [c for c, _ in writes(simulator)] == [
        "New-OutboundConnector", "Set-OutboundConnector", "Set-TransportConfig", "New-JournalRule"]
    assert outcome.writes == 4


def test_a_replayed_activation_writes_nothing(simulator: Simulator, ensuring: ProvisioningEngine) -> None:
    ensuring.run(parse_notice(ACTIVATION))
    simulator.reset_log()
    outcome = ensuring.run(parse_notice(ACTIVATION))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert writes(simulator) == [] and outcome.writes == 0
    assert len(simulator.journal_rules(TENANT)) == 1


def test_without_any_ndr_address_nothing_is_written_and_the_hint_says_what_to_do(
        simulator: Simulator, ensuring: ProvisioningEngine) -> None:
    outcome = ensuring.run(parse_notice({k: v for k, v in ACTIVATION.items() if k != "journal_ndr_address"}))
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "JOURNAL_NDR_MISSING"
    assert "journal_ndr_address" in outcome.error["hint_en"] and "JournalingReportNdrTo" in outcome.error["hint_en"]
    assert writes(simulator) == []


def test_the_tenants_own_ndr_address_is_kept_and_a_disabled_rule_is_enabled(
        simulator: Simulator, ensuring: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, journaling_report_ndr_to="ndr@contoso.example", journal_rules=[
        {"Name": RULE, "JournalEmailAddress": "old@cs-365.cybermail.jp", "Enabled": False}])
    outcome = ensuring.run(parse_notice(ACTIVATION))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert [c for c, _ in writes(simulator) if "Journal" in c or "Transport" in c] == [
        "Set-JournalRule", "Enable-JournalRule"]
    assert simulator.journaling_report_ndr_to(TENANT) == "ndr@contoso.example"
    [rule] = simulator.journal_rules(TENANT)
    assert (rule["JournalEmailAddress"], rule["Enabled"]) == (JOURNAL, True)


def test_with_the_setting_off_no_journal_cmdlet_is_called(simulator: Simulator, engine: ProvisioningEngine) -> None:
    outcome = engine.run(parse_notice(ACTIVATION))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert not any("Journal" in c or "Transport" in c for c in simulator.calls(TENANT))


def test_termination_removes_the_rule_before_the_enterprise_audit_connector(
        simulator: Simulator, ensuring: ProvisioningEngine) -> None:
    both = {**ACTIVATION, "services": ["mailgates", "enterprise_audit"], "mx_host": "mgf.cybermail.jp",
            "validation_recipient": "adm@northwind.example"}
    assert ensuring.run(parse_notice(both)).status is Status.SUCCEEDED
    simulator.reset_log()
    outcome = ensuring.run(parse_notice(TERMINATION))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert writes(simulator) == [("Remove-OutboundConnector", MG_NAME), ("Remove-JournalRule", RULE),
                                 ("Remove-OutboundConnector", EA_NAME)]
    assert simulator.journal_rules(TENANT) == [] and simulator.connectors(TENANT) == []
    simulator.reset_log()
    assert ensuring.run(parse_notice(TERMINATION)).writes == 0
    assert writes(simulator) == []


def test_a_rule_of_our_name_sending_elsewhere_stops_termination_with_nothing_removed(
        simulator: Simulator, ensuring: ProvisioningEngine) -> None:
    assert ensuring.run(parse_notice(ACTIVATION)).status is Status.SUCCEEDED
    simulator.configure_tenant(TENANT, journal_rules=[{"Name": RULE, "JournalEmailAddress": "vault@contoso.example"}])
    simulator.reset_log()
    outcome = ensuring.run(parse_notice({**TERMINATION, "services": ["enterprise_audit"]}))
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "CONNECTOR_NOT_OURS"
    assert writes(simulator) == []


# -- the simulator's documented rules, through the client ------------------------------------


def test_the_simulator_models_the_documented_journal_rules(simulator: Simulator, settings: Settings,
                                                           token_provider: MsalTokenProvider) -> None:
    from shared.exchange import ExchangeAdminClient

    simulator.configure_tenant(TENANT, accepted_domains=["northwind.example"])
    with ExchangeAdminClient(TENANT, credential=token_provider, endpoint=settings.exo_admin_api_url) as client:
        # Inference modelled: no rule until undeliverable journal reports have an address.
        with pytest.raises(ProvisioningError, match="JournalingReportNdrTo"):
            client.create_journal_rule(RULE, JOURNAL)
        # Documented: that address can't be an Exchange Online mailbox.
        with pytest.raises(ProvisioningError, match="Exchange Online"):
            client.set_journaling_report_ndr_to("ndr@northwind.example")
        client.set_journaling_report_ndr_to("ndr@contoso.example")
        assert client.get_journaling_report_ndr_to() == "ndr@contoso.example"
        client.create_journal_rule(RULE, JOURNAL)
        [rule] = client.list_journal_rules()
        assert (rule.name, rule.journal_email_address, rule.scope, rule.enabled) == (RULE, JOURNAL, "Global", True)
        client.remove_journal_rule(RULE)
        assert client.list_journal_rules() == []


def test_a_rule_made_by_another_delivery_meanwhile_is_converged_not_duplicated(
        simulator: Simulator, ensuring: ProvisioningEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    from exosim.core import Backend

    # The listing saw no rule; just before New-JournalRule reaches Exchange another delivery
    # makes one (disabled, to an old address). Exchange answers "already exists"; the engine
    # converges on that rule instead of failing.
    original = Backend.invoke

    def racing(self: Backend, tenant_id: str, headers: Any, body: bytes, *rest: Any) -> Any:
        if b"New-JournalRule" in body and not simulator.journal_rules(TENANT):
            simulator.configure_tenant(TENANT, journal_rules=[
                {"Name": RULE, "JournalEmailAddress": "old@cs-365.cybermail.jp", "Enabled": False}])
        return original(self, tenant_id, headers, body, *rest)

    monkeypatch.setattr(Backend, "invoke", racing)
    outcome = ensuring.run(parse_notice(ACTIVATION))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    [rule] = simulator.journal_rules(TENANT)
    assert (rule["JournalEmailAddress"], rule["Enabled"]) == (JOURNAL, True)
    assert [c for c, _ in writes(simulator)][-2:] == ["Set-JournalRule", "Enable-JournalRule"]
