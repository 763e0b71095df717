"""Review findings against the Exchange simulator: each test shows one problem end to end, now fixed.

Each test was written failing, for the reason its name gives, and now guards the fix.
"""

from __future__ import annotations

from typing import Any

import pytest

from exosim import Simulator
from shared.connectors import OWNERSHIP_MARKER
from shared.notice import ActivationNotice, parse_notice
from shared.outcome import Status
from shared.provisioning import ProvisioningEngine

pytestmark = pytest.mark.functional

TENANT = "0b6f5a3c-1d2e-4f30-9a8b-7c6d5e4f3a2b"
EA_NAME = "Enterprise Audit送信コネクタ"
MG_NAME = "MAILGATESΣ 送信コネクタ"
JOURNAL = "jr-9@cs-365.cybermail.jp"
RECIPIENT = "adm@example.com"


def notice(*services: str) -> ActivationNotice:
    return parse_notice({
        "notice_id": "ACT-REVIEW-1",
        "tenant_id": TENANT,
        "services": list(services),
        "journal_report_address": JOURNAL,
        "mx_host": "mgf.cybermail.jp",
        "validation_recipient": RECIPIENT,
    })


def connectors(sim: Simulator) -> dict[str, dict[str, Any]]:
    return {c["Name"]: c for c in sim.connectors(TENANT)}


def seed_ours_ea(sim: Simulator, **overrides: Any) -> None:
    fields: dict[str, Any] = {
        "Name": EA_NAME, "ConnectorType": "Partner", "RecipientDomains": ["*.cs-365.cybermail.jp"],
        "UseMXRecord": True, "TlsSettings": "CertificateValidation", "Enabled": True,
        "IsTransportRuleScoped": False, "Comment": f"{OWNERSHIP_MARKER} enterprise_audit",
        "IsValidated": True, "ValidationRecipients": [JOURNAL],
        "LastValidationTimestamp": "2026-01-01T00:00:00Z",
    }
    fields.update(overrides)
    sim.seed_connector(TENANT, **fields)


def seed_ours_mg(sim: Simulator, **overrides: Any) -> None:
    fields: dict[str, Any] = {
        "Name": MG_NAME, "ConnectorType": "Partner", "RecipientDomains": ["*"],
        "UseMXRecord": False, "SmartHosts": ["mgf.cybermail.jp"], "TlsSettings": "CertificateValidation",
        "Enabled": True, "IsTransportRuleScoped": False, "Comment": f"{OWNERSHIP_MARKER} mailgates",
        "IsValidated": True, "ValidationRecipients": [RECIPIENT],
        "LastValidationTimestamp": "2026-01-01T00:00:00Z",
    }
    fields.update(overrides)
    sim.seed_connector(TENANT, **fields)


def test_an_enterprise_audit_connector_moved_to_a_smart_host_is_set_back_to_mx(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    seed_ours_ea(simulator, UseMXRecord=False, SmartHosts=["mgf.cybermail.jp"])
    outcome = engine.run(notice("enterprise_audit"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    ea = connectors(simulator)[EA_NAME]
    assert ea["UseMXRecord"] is True
    assert ea["SmartHosts"] == []


def test_a_mailgates_connector_hardened_to_domain_validation_is_set_back(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    seed_ours_mg(simulator, TlsSettings="DomainValidation", TlsDomain="mgf.cybermail.jp")
    outcome = engine.run(notice("mailgates"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    mg = connectors(simulator)[MG_NAME]
    assert mg["TlsSettings"] == "CertificateValidation"
    assert mg["TlsDomain"] is None


def test_our_mailgates_connector_in_test_mode_is_taken_out_of_it(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    seed_ours_mg(simulator, TestMode=True)
    outcome = engine.run(notice("mailgates"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert outcome.connectors[0].action == "update"
    assert connectors(simulator)[MG_NAME]["TestMode"] is False


def test_a_mailgates_connector_that_fails_validation_is_not_left_routing_all_mail(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, unreachable_hosts=["mgf.cybermail.jp"])
    outcome = engine.run(notice("mailgates"))
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "VALIDATION_FAILED"
    mg = connectors(simulator).get(MG_NAME)
    assert mg is None or mg["Enabled"] is False
