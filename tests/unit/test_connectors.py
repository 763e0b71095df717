"""The desired connectors: the design table, exactly, for every combination of services."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared.connectors import OWNERSHIP_MARKER, ConnectorSpec, desired_connectors
from shared.notice import ActivationNotice, parse_notice
from shared.settings import Settings

TENANT_ID = "8f3c2a6e-1b7d-4c59-9e0a-2d4f6b8a1c3e"
EA_NAME = "Enterprise Audit送信コネクタ"
MG_NAME = "MAILGATESΣ 送信コネクタ"

# Parameters that belong to OnPremises connectors only: sending them for a Partner connector is a 400.
ON_PREMISES_ONLY = ("SenderRewritingEnabled", "AllAcceptedDomains", "RouteAllMessagesViaOnPremises")


def make_notice(services: list[str], *, journal: str = "j0001@cs-365.cybermail.jp",
                mx_host: str = "mgf.cybermail.jp", recipient: str = "adm@example.com",
                settings: Settings | None = None) -> ActivationNotice:
    data: dict[str, Any] = {"notice_id": "ACT-1", "tenant_id": TENANT_ID, "services": services}
    if "enterprise_audit" in services:
        data["journal_report_address"] = journal
    if "mailgates" in services:
        data["mx_host"] = mx_host
        data["validation_recipient"] = recipient
    return parse_notice(data, settings)


def ea_spec(domain: str, address: str, name: str = EA_NAME) -> ConnectorSpec:
    return ConnectorSpec(
        service="enterprise_audit",
        name=name,
        recipient_domains=(f"*.{domain}",),
        smart_hosts=(),
        use_mx_record=True,
        validation_recipients=(address,),
        connector_type="Partner",
        tls_settings="CertificateValidation",
        enabled=True,
        is_transport_rule_scoped=False,
    )


def mg_spec(host: str, recipient: str, name: str = MG_NAME) -> ConnectorSpec:
    return ConnectorSpec(
        service="mailgates",
        name=name,
        recipient_domains=("*",),
        smart_hosts=(host,),
        use_mx_record=False,
        validation_recipients=(recipient,),
        connector_type="Partner",
        tls_settings="CertificateValidation",
        enabled=True,
        is_transport_rule_scoped=False,
    )


@pytest.mark.parametrize(("notice", "expected"), [
    pytest.param(
        make_notice(["mailgates", "enterprise_audit"]),
        [ea_spec("cs-365.cybermail.jp", "j0001@cs-365.cybermail.jp"), mg_spec("mgf.cybermail.jp", "adm@example.com")],
        id="both-services",
    ),
    pytest.param(
        make_notice(["enterprise_audit", "mailgates"], journal="j0002@cs-365-02.cybermail.jp",
                    mx_host="mgs.cybermail.jp", recipient="ops@example.org"),
        [
            ea_spec("cs-365-02.cybermail.jp", "j0002@cs-365-02.cybermail.jp"),
            mg_spec("mgs.cybermail.jp", "ops@example.org"),
        ],
        id="cs-365-02-and-mgs",
    ),
    pytest.param(
        make_notice(["mailgates"], mx_host="mgp.cybermail.jp"),
        [mg_spec("mgp.cybermail.jp", "adm@example.com")],
        id="mailgates-only",
    ),
    pytest.param(
        make_notice(["enterprise_audit"]),
        [ea_spec("cs-365.cybermail.jp", "j0001@cs-365.cybermail.jp")],
        id="enterprise-audit-only",
    ),
])
def test_desired_connectors_are_exactly_the_design_table(
    notice: ActivationNotice, expected: list[ConnectorSpec]
) -> None:
    assert desired_connectors(notice) == expected
    assert desired_connectors(notice, Settings()) == expected


def test_the_design_table_as_the_plan_shows_it() -> None:
    ea, mg = desired_connectors(make_notice(["mailgates", "enterprise_audit"]))

    assert ea.to_dict() == {
        "Name": "Enterprise Audit送信コネクタ",
        "ConnectorType": "Partner",
        "RecipientDomains": ["*.cs-365.cybermail.jp"],
        "SmartHosts": [],
        "UseMXRecord": True,
        "TlsSettings": "CertificateValidation",
        "Enabled": True,
        "IsTransportRuleScoped": False,
        "ValidationRecipients": ["j0001@cs-365.cybermail.jp"],
        "Service": "enterprise_audit",
        "Comment": f"{OWNERSHIP_MARKER} enterprise_audit",
    }
    assert mg.to_dict() == {
        "Name": "MAILGATESΣ 送信コネクタ",
        "ConnectorType": "Partner",
        "RecipientDomains": ["*"],
        "SmartHosts": ["mgf.cybermail.jp"],
        "UseMXRecord": False,
        "TlsSettings": "CertificateValidation",
        "Enabled": True,
        "IsTransportRuleScoped": False,
        "ValidationRecipients": ["adm@example.com"],
        "Service": "mailgates",
        "Comment": f"{OWNERSHIP_MARKER} mailgates",
    }


@pytest.mark.parametrize("order", [["mailgates", "enterprise_audit"], ["enterprise_audit", "mailgates"]])
def test_enterprise_audit_comes_first_whatever_the_notice_order(order: list[str]) -> None:
    # Journal reports must have their specific route before the `*` connector exists.
    assert [spec.service for spec in desired_connectors(make_notice(order))] == ["enterprise_audit", "mailgates"]


def test_names_come_from_settings() -> None:
    settings = Settings(ea_connector_name="EA outbound", mg_connector_name="MG outbound")
    specs = desired_connectors(make_notice(["mailgates", "enterprise_audit"]), settings)
    assert [spec.name for spec in specs] == ["EA outbound", "MG outbound"]
    assert [spec.new_parameters()["Name"] for spec in specs] == ["EA outbound", "MG outbound"]


def test_normalised_notice_values_reach_the_connectors() -> None:
    notice = make_notice(["mailgates", "enterprise_audit"], journal="J1@CS-365-02.CyberMail.JP",
                         mx_host="MGS.CYBERMAIL.JP.", recipient="Adm@Example.COM")
    ea, mg = desired_connectors(notice)
    assert ea.recipient_domains == ("*.cs-365-02.cybermail.jp",)
    assert ea.validation_recipients == ("J1@cs-365-02.cybermail.jp",)
    assert mg.smart_hosts == ("mgs.cybermail.jp",)
    assert mg.validation_recipients == ("Adm@example.com",)


# --- New-OutboundConnector parameters -------------------------------------------------------


def test_new_parameters_of_the_enterprise_audit_connector() -> None:
    (ea,) = desired_connectors(make_notice(["enterprise_audit"]))
    assert ea.new_parameters() == {
        "Name": EA_NAME,
        "ConnectorType": "Partner",
        "RecipientDomains": ["*.cs-365.cybermail.jp"],
        "UseMXRecord": True,
        "TlsSettings": "CertificateValidation",
        "Enabled": True,
        "IsTransportRuleScoped": False,
        "TestMode": False,
        "Comment": f"{OWNERSHIP_MARKER} enterprise_audit",
    }


def test_new_parameters_of_the_mailgates_connector() -> None:
    (mg,) = desired_connectors(make_notice(["mailgates"], mx_host="mgs.cybermail.jp"))
    assert mg.new_parameters() == {
        "Name": MG_NAME,
        "ConnectorType": "Partner",
        "RecipientDomains": ["*"],
        "UseMXRecord": False,
        "SmartHosts": ["mgs.cybermail.jp"],
        "TlsSettings": "CertificateValidation",
        "Enabled": True,
        "IsTransportRuleScoped": False,
        "TestMode": False,
        "Comment": f"{OWNERSHIP_MARKER} mailgates",
    }


@pytest.mark.parametrize("spec", desired_connectors(make_notice(["mailgates", "enterprise_audit"])),
                         ids=lambda s: s.service)
def test_new_parameters_never_carry_validation_recipients_or_on_premises_options(spec: ConnectorSpec) -> None:
    params = spec.new_parameters()
    assert "ValidationRecipients" not in params
    assert "IsValidated" not in params
    for name in ON_PREMISES_ONLY:
        assert name not in params


def test_the_mx_connector_has_no_smart_hosts_parameter_at_all() -> None:
    # Exchange rejects an empty SmartHosts list on an MX-routed connector.
    (ea,) = desired_connectors(make_notice(["enterprise_audit"]))
    assert "SmartHosts" not in ea.new_parameters()
    assert ea.smart_hosts == ()


def test_new_parameters_do_not_change_the_spec_or_each_other() -> None:
    (mg,) = desired_connectors(make_notice(["mailgates"]))
    first = mg.new_parameters()
    first["SmartHosts"].append("smtp.example.net")
    first["RecipientDomains"].clear()
    assert mg.new_parameters()["SmartHosts"] == ["mgf.cybermail.jp"]
    assert mg.new_parameters()["RecipientDomains"] == ["*"]


def test_settings_parameters_are_the_routing_parameters_drift_is_compared_on() -> None:
    ea, mg = desired_connectors(make_notice(["mailgates", "enterprise_audit"]))
    for spec in (ea, mg):
        assert set(spec.settings_parameters()) == {
            "ConnectorType", "RecipientDomains", "UseMXRecord", "SmartHosts", "TlsSettings", "Enabled",
            "IsTransportRuleScoped", "TestMode",
        }
    assert ea.settings_parameters()["SmartHosts"] == []
    assert mg.settings_parameters()["SmartHosts"] == ["mgf.cybermail.jp"]


def test_the_comment_marks_the_connector_as_ours() -> None:
    for spec in desired_connectors(make_notice(["mailgates", "enterprise_audit"])):
        assert spec.comment.startswith(OWNERSHIP_MARKER)
        assert spec.comment.endswith(spec.service)


def test_specs_are_immutable_and_deterministic() -> None:
    notice = make_notice(["mailgates", "enterprise_audit"])
    specs = desired_connectors(notice)
    assert desired_connectors(notice) == specs
    with pytest.raises(dataclasses.FrozenInstanceError):
        specs[0].name = "other"  # type: ignore[misc]


# --- the allow-list gate behind notice validation -------------------------------------------


@pytest.mark.parametrize("host", ["smtp.example.net", "*", "MGF.CYBERMAIL.JP", "mgf.cybermail.jp.", ""])
def test_a_hand_built_notice_with_an_off_list_smart_host_raises(host: str) -> None:
    notice = ActivationNotice(notice_id="ACT-1", tenant_id=TENANT_ID, services=("mailgates",), mx_host=host,
                              validation_recipient="adm@example.com")
    with pytest.raises(ValueError, match="smart host"):
        desired_connectors(notice)


@pytest.mark.parametrize("address", ["j@archive.example.net", "j@sub.cs-365.cybermail.jp", "j@CS-365.cybermail.jp"])
def test_a_hand_built_notice_with_an_off_list_journal_domain_raises(address: str) -> None:
    notice = ActivationNotice(notice_id="ACT-1", tenant_id=TENANT_ID, services=("enterprise_audit",),
                              journal_report_address=address)
    with pytest.raises(ValueError, match="journal domain"):
        desired_connectors(notice)


def test_an_off_list_host_raises_even_when_the_other_connector_is_fine() -> None:
    notice = ActivationNotice(notice_id="ACT-1", tenant_id=TENANT_ID, services=("enterprise_audit", "mailgates"),
                              journal_report_address="j@cs-365.cybermail.jp", mx_host="smtp.example.net",
                              validation_recipient="adm@example.com")
    with pytest.raises(ValueError, match=r"smtp\.example\.net"):
        desired_connectors(notice)


def test_the_allow_list_of_the_settings_given_is_the_one_enforced() -> None:
    # A notice accepted under the default settings, planned under narrower ones, is refused.
    notice = make_notice(["mailgates", "enterprise_audit"])
    narrower_hosts = Settings(allowed_smart_hosts=frozenset({"mgs.cybermail.jp"}))
    narrower_domains = Settings(allowed_journal_domains=frozenset({"cs-365-02.cybermail.jp"}))
    with pytest.raises(ValueError, match="smart host"):
        desired_connectors(notice, narrower_hosts)
    with pytest.raises(ValueError, match="journal domain"):
        desired_connectors(notice, narrower_domains)


def test_custom_allow_lists_flow_through_to_the_connectors() -> None:
    settings = Settings(allowed_smart_hosts=frozenset({"relay.mailgates.example"}),
                        allowed_journal_domains=frozenset({"journal.example.jp"}))
    notice = make_notice(["mailgates", "enterprise_audit"], journal="j@journal.example.jp",
                         mx_host="relay.mailgates.example", settings=settings)
    ea, mg = desired_connectors(notice, settings)
    assert ea.recipient_domains == ("*.journal.example.jp",)
    assert mg.smart_hosts == ("relay.mailgates.example",)


def test_a_hand_built_notice_missing_what_its_service_needs_is_refused() -> None:
    with pytest.raises((AssertionError, ValueError)):
        desired_connectors(ActivationNotice(notice_id="ACT-1", tenant_id=TENANT_ID, services=("mailgates",)))
    with pytest.raises((AssertionError, ValueError)):
        desired_connectors(ActivationNotice(notice_id="ACT-1", tenant_id=TENANT_ID, services=("enterprise_audit",)))
