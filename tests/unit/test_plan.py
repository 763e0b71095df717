"""Planning rules: the fewest writes to converge, and no writes at all beside a competitor."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.connectors import desired_connectors
from shared.exchange import Connector
from shared.notice import parse_notice
from shared.plan import Action, covers, diff, make_plan, needs_validation, operations, overlaps, write_parameters
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


def test_a_tenant_without_connectors_gets_both_created_enterprise_audit_first() -> None:
    plan = make_plan([EA, MG], [])
    assert [(p.spec.name, p.action) for p in plan.connectors] == [(EA.name, Action.CREATE), (MG.name, Action.CREATE)]
    assert [op.cmdlet for op in operations(plan)] == [
        "New-OutboundConnector", "Validate-OutboundConnector", "Set-OutboundConnector"] * 2
    assert not plan.blocked


def test_a_tenant_already_provisioned_needs_no_write_and_no_validation() -> None:
    plan = make_plan([EA, MG], [as_deployed(EA), as_deployed(MG)])
    assert [p.action for p in plan.connectors] == [Action.UNCHANGED, Action.UNCHANGED]
    assert not plan.writes_needed
    assert operations(plan) == []


def test_drift_on_one_connector_updates_only_the_differing_parameter() -> None:
    plan = make_plan([EA, MG], [as_deployed(EA), as_deployed(MG, smart_hosts=("mgs.cybermail.jp",))])
    assert plan.connectors[0].action is Action.UNCHANGED
    assert plan.connectors[1].action is Action.UPDATE
    assert plan.connectors[1].changes == {"SmartHosts": ["mgf.cybermail.jp"]}
    assert plan.connectors[1].needs_validation
    ops = operations(plan)
    assert ops[0].cmdlet == "Set-OutboundConnector"
    # the old route's validation is withdrawn with the write, so a run stopped before the
    # Validate cannot leave it standing for the new route
    assert ops[0].parameters == {"Identity": MG.name, "SmartHosts": ["mgf.cybermail.jp"], "IsValidated": False}


def test_a_write_that_needs_no_new_validation_leaves_the_validation_alone() -> None:
    assert write_parameters({"Comment": MG.comment}, validate=False) == {"Comment": MG.comment}
    ops = operations(make_plan([MG], [as_deployed(MG, comment="")]))
    assert [(op.cmdlet, op.parameters) for op in ops] == [
        ("Set-OutboundConnector", {"Identity": MG.name, "Comment": MG.comment})]


def test_lists_compare_order_insensitively_and_names_case_insensitively() -> None:
    ea = replace(EA, recipient_domains=("*.CS-365.cybermail.jp",))
    actual = [as_deployed(ea, name=EA.name.upper()), as_deployed(MG, smart_hosts=("MGF.cybermail.jp.",))]
    plan = make_plan([EA, MG], actual)
    assert [p.action for p in plan.connectors] == [Action.UNCHANGED, Action.UNCHANGED]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"enabled": False}, {"Enabled": True}),
        ({"tls_settings": "EncryptionOnly"}, {"TlsSettings": "CertificateValidation"}),
        ({"tls_settings": None}, {"TlsSettings": "CertificateValidation"}),
        ({"use_mx_record": True, "smart_hosts": ()}, {"UseMXRecord": False, "SmartHosts": ["mgf.cybermail.jp"]}),
        ({"recipient_domains": ("*", "contoso.com")}, {"RecipientDomains": ["*"]}),
        ({"is_transport_rule_scoped": True}, {"IsTransportRuleScoped": False}),
        ({"connector_type": "OnPremises"}, {"ConnectorType": "Partner"}),
    ],
)
def test_each_drifted_setting_is_set_back_alone(override: dict[str, object], expected: dict[str, object]) -> None:
    plan = make_plan([MG], [as_deployed(MG, **override)])
    assert plan.connectors[0].action is Action.UPDATE
    assert plan.connectors[0].changes == expected


def test_smart_hosts_left_on_an_mx_connector_are_not_drift() -> None:
    plan = make_plan([EA], [as_deployed(EA, smart_hosts=("old.example",))])
    assert plan.connectors[0].action is Action.UNCHANGED


def test_a_connector_validated_for_other_recipients_is_validated_again_without_writes() -> None:
    plan = make_plan([MG], [as_deployed(MG, validation_recipients=("someone@else.example",))])
    assert plan.connectors[0].action is Action.UNCHANGED
    assert plan.connectors[0].needs_validation
    assert [op.cmdlet for op in operations(plan)] == ["Validate-OutboundConnector", "Set-OutboundConnector"]


def test_an_unvalidated_connector_is_validated() -> None:
    plan = make_plan([EA], [as_deployed(EA, is_validated=False)])
    assert plan.connectors[0].needs_validation


def test_a_connector_made_by_hand_with_our_name_is_adopted_by_stamping_the_marker() -> None:
    plan = make_plan([MG], [as_deployed(MG, comment="created in the admin center")])
    assert plan.connectors[0].changes == {"Comment": MG.comment}
    assert not plan.blocked


def test_our_connector_renamed_by_an_admin_is_renamed_back_not_duplicated() -> None:
    plan = make_plan([MG], [as_deployed(MG, name="MailGates (renamed)")])
    item = plan.connectors[0]
    assert item.action is Action.UPDATE
    assert item.changes == {"Name": MG.name}
    assert item.identity == "MailGates (renamed)"
    assert not plan.blocked


def test_a_foreign_enabled_star_connector_blocks_everything() -> None:
    foreign = FakeConnector(name="Old gateway", recipient_domains=("*",), use_mx_record=False,
                            smart_hosts=("gw.example",))
    plan = make_plan([EA, MG], [foreign])
    assert plan.blocked
    assert {c.name for c in plan.conflicts} == {"Old gateway"}
    assert "Old gateway" in plan.conflicts[0].reason


def test_a_foreign_star_connector_blocks_an_enterprise_audit_only_activation_too() -> None:
    foreign = FakeConnector(name="Old gateway", recipient_domains=("*",))
    assert make_plan([EA], [foreign]).blocked


@pytest.mark.parametrize("override", [{"enabled": False}, {"test_mode": True}])
def test_disabled_or_test_mode_foreign_connectors_do_not_block(override: dict[str, object]) -> None:
    foreign = replace(FakeConnector(name="Old gateway", recipient_domains=("*",)), **override)  # type: ignore[arg-type]
    assert not make_plan([EA, MG], [foreign]).blocked


@pytest.mark.parametrize("domains", [("*.cybermail.jp",), ("cs-365.cybermail.jp",), ("*.cs-365.cybermail.jp",)])
def test_a_foreign_connector_covering_the_journal_domain_blocks(domains: tuple[str, ...]) -> None:
    plan = make_plan([EA, MG], [FakeConnector(name="Archive (old)", recipient_domains=domains)])
    assert plan.blocked
    assert {c.blocks for c in plan.conflicts} == {EA.name}


def test_a_narrow_foreign_connector_only_warns_which_domains_bypass_mailgates() -> None:
    plan = make_plan([EA, MG], [FakeConnector(name="Bank TLS", recipient_domains=("*.bank.example",))])
    assert not plan.blocked
    assert [w.code for w in plan.warnings] == ["MAIL_BYPASSES_MAILGATES"]
    assert plan.warnings[0].data == {"connector": "Bank TLS", "domains": ["*.bank.example"]}


def test_a_narrow_foreign_connector_is_irrelevant_to_enterprise_audit_alone() -> None:
    plan = make_plan([EA], [FakeConnector(name="Bank TLS", recipient_domains=("*.bank.example",))])
    assert not plan.blocked and not plan.warnings


@pytest.mark.parametrize(
    ("pattern", "domain", "expected"),
    [
        ("*", "anything.example", True),
        ("*.contoso.com", "contoso.com", True),
        ("*.contoso.com", "mail.contoso.com", True),
        ("*.contoso.com", "notcontoso.com", False),
        ("contoso.com", "mail.contoso.com", False),
        ("CONTOSO.com.", "contoso.COM", True),
    ],
)
def test_recipient_domain_coverage_follows_exchange(pattern: str, domain: str, expected: bool) -> None:
    assert covers(pattern, domain) is expected


def test_wildcards_overlap_when_one_base_lies_under_the_other() -> None:
    assert overlaps("*.cybermail.jp", "*.cs-365.cybermail.jp")
    assert overlaps("*.cs-365.cybermail.jp", "cs-365.cybermail.jp")
    assert not overlaps("*.cs-365.cybermail.jp", "*.cs-365-02.cybermail.jp")


def test_our_mailgates_connector_does_not_block_an_enterprise_audit_only_notice() -> None:
    plan = make_plan([EA], [as_deployed(MG)], own_names=(EA.name, MG.name))
    assert not plan.blocked and not plan.warnings
    assert [p.action for p in plan.connectors] == [Action.CREATE]


def test_a_mailgates_connector_made_by_hand_under_our_name_is_ours_too() -> None:
    by_hand = as_deployed(MG, comment="")
    assert not make_plan([EA], [by_hand], own_names=(EA.name, MG.name)).blocked


def test_any_connector_carrying_our_marker_is_never_a_competitor() -> None:
    renamed = as_deployed(MG, name="MailGates (renamed by an admin)")
    assert not make_plan([EA], [renamed]).blocked


# -- validation: what a test message is sent for -------------------------------------------------


def wizard_made(spec: object, **overrides: object) -> FakeConnector:
    """Our connector as the admin center's wizard leaves it: validated, no ownership Comment."""
    return as_deployed(spec, comment="", **overrides)  # type: ignore[arg-type]


def test_wizard_made_connectors_are_adopted_with_a_comment_and_no_new_validation() -> None:
    plan = make_plan([EA, MG], [wizard_made(EA), wizard_made(MG)])
    assert [(p.action, p.changes, p.needs_validation) for p in plan.connectors] == [
        (Action.UPDATE, {"Comment": EA.comment}, False), (Action.UPDATE, {"Comment": MG.comment}, False)]
    assert [op.cmdlet for op in operations(plan)] == ["Set-OutboundConnector", "Set-OutboundConnector"]


def test_a_wizard_row_as_exchange_returns_it_needs_only_the_comment() -> None:
    row = {"Name": MG.name, "ConnectorType": "partner", "ConnectorSource": "AdminUI", "Enabled": True,
           "UseMXRecord": False, "SmartHosts@odata.type": "#Collection(String)", "SmartHosts": ["mgf.cybermail.jp"],
           "RecipientDomains@odata.type": "#Collection(String)", "RecipientDomains": ["*"],
           "TlsSettings": "certificatevalidation", "TlsDomain": None, "IsTransportRuleScoped": False,
           "TestMode": False, "MtaStsMode": "Opportunistic", "SmtpDaneMode": "Opportunistic", "IsValidated": True,
           "ValidationRecipients@odata.type": "#Collection(String)", "ValidationRecipients": ["ADM@example.com"],
           "LastValidationTimestamp": "2026-07-24T18:59:12.0000000", "Comment": None}
    current = Connector.from_row(row)
    assert diff(MG, current) == {"Comment": MG.comment}
    assert needs_validation(MG, current, {"Comment": MG.comment}) is False


def test_renaming_our_validated_connector_back_does_not_validate_it_again() -> None:
    plan = make_plan([MG], [as_deployed(MG, name="MAILGATES Σ 送信コネクタ", comment="")])
    assert plan.connectors[0].changes == {"Name": MG.name, "Comment": MG.comment}
    assert plan.connectors[0].needs_validation is False


@pytest.mark.parametrize("override", [
    {"validation_recipients": ("other@example.com",)},
    {"validation_recipients": ()},
    {"is_validated": False},
    # IsValidated is a flag anyone can set (Set-OutboundConnector -IsValidated); the wizard and
    # this product always stamp the time with it, so a flag without a time is no validation
    {"last_validation_timestamp": None},
    {"last_validation_timestamp": ""},
])
def test_a_wizard_connector_not_validated_for_our_recipients_is_validated(override: dict[str, object]) -> None:
    assert make_plan([MG], [wizard_made(MG, **override)]).connectors[0].needs_validation is True


@pytest.mark.parametrize("override", [
    {"smart_hosts": ("mgs.cybermail.jp",)},
    {"enabled": False},
    {"test_mode": True},
    {"tls_settings": "EncryptionOnly"},
    {"is_transport_rule_scoped": True},
])
def test_any_change_to_how_a_validated_connector_routes_needs_a_new_validation(override: dict[str, object]) -> None:
    item = make_plan([MG], [wizard_made(MG, **override)]).connectors[0]
    assert item.action is Action.UPDATE
    assert item.needs_validation is True


# -- drift and ownership found in review -------------------------------------------------------

OWN_NAMES = (Settings().ea_connector_name, Settings().mg_connector_name)


def test_our_connector_left_in_test_mode_is_taken_out_of_it() -> None:
    plan = make_plan([EA, MG], [as_deployed(EA), as_deployed(MG, test_mode=True)])
    item = plan.connectors[1]
    assert item.action is Action.UPDATE
    assert item.changes == {"TestMode": False}
    assert item.needs_validation is True


def test_switching_back_to_mx_routing_clears_the_smart_hosts() -> None:
    plan = make_plan([EA], [as_deployed(EA, use_mx_record=False, smart_hosts=("mgf.cybermail.jp",))])
    changes = plan.connectors[0].changes
    assert changes == {"UseMXRecord": True, "SmartHosts": None}


def test_the_manual_procedures_spelling_of_the_mailgates_name_is_recognised() -> None:
    manual = as_deployed(MG, name="MAILGATES Σ 送信コネクタ", comment="", is_validated=False)
    plan = make_plan([EA, MG], [manual], own_names=OWN_NAMES)
    assert not plan.blocked
    assert plan.connectors[1].action is Action.UPDATE
    assert plan.connectors[1].changes == {"Name": MG.name, "Comment": MG.comment}
    assert plan.connectors[1].current_name == "MAILGATES Σ 送信コネクタ"


def test_a_transport_rule_scoped_foreign_connector_only_warns() -> None:
    scoped = FakeConnector(name="Encryption via rule", recipient_domains=("*",), use_mx_record=False,
                           smart_hosts=("encrypt.example",), is_transport_rule_scoped=True)
    plan = make_plan([EA, MG], [scoped], own_names=OWN_NAMES)
    assert not plan.blocked
    assert [(w.code, w.data) for w in plan.warnings] == [
        ("RULE_SCOPED_CONNECTOR", {"connector": "Encryption via rule", "domains": ["*"]})]
