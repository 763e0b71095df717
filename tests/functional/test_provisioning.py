"""The provisioning engine end to end over real HTTPS (simulator) and real DNS (local server).

These are the scenarios of the Exchange issue: fresh tenant, replay, drift, conflict, partial,
validation failure, missing role, missing consent, throttling, replication lag and SPF.
"""

from __future__ import annotations

from typing import Any

import pytest

from exosim import Simulator
from exosim.dnsserver import DnsServer
from shared.applying import apply_with_retries
from shared.connectors import OWNERSHIP_MARKER, desired_connectors
from shared.notice import ActivationNotice, parse_notice
from shared.outcome import Status, Validation
from shared.provisioning import ProvisioningEngine
from shared.settings import Settings
from tests.fixtures.product import Sleeps

pytestmark = pytest.mark.functional

TENANT = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"
EA_NAME = "Enterprise Audit送信コネクタ"
MG_NAME = "MAILGATESΣ 送信コネクタ"
WRITES = ("New-OutboundConnector", "Set-OutboundConnector", "Remove-OutboundConnector")


def make_notice(**overrides: Any) -> ActivationNotice:
    raw: dict[str, Any] = {
        "notice_id": "ACT-T-1",
        "tenant_id": TENANT,
        "services": ["mailgates", "enterprise_audit"],
        "journal_report_address": "jr-1@cs-365.cybermail.jp",
        "mx_host": "mgf.cybermail.jp",
        "validation_recipient": "adm@example.com",
    }
    raw.update(overrides)
    return parse_notice(raw)


NOTICE = make_notice()


def total_calls(sim: Simulator, tenant: str = TENANT) -> int:
    return sum(sim.calls(tenant).values())


def by_name(sim: Simulator, tenant: str = TENANT) -> dict[str, dict[str, Any]]:
    return {c["Name"]: c for c in sim.connectors(tenant)}


def test_a_fresh_tenant_takes_exactly_eight_calls_and_one_token(simulator: Simulator,
                                                                 engine: ProvisioningEngine) -> None:
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.calls(TENANT) == {
        "Get-OutboundConnector": 1, "Get-AcceptedDomain": 1, "New-OutboundConnector": 2,
        "Validate-OutboundConnector": 2, "Set-OutboundConnector": 2,
    }
    assert total_calls(simulator) == 8
    assert simulator.token_requests(TENANT) == 1
    connectors = by_name(simulator)
    assert set(connectors) == {EA_NAME, MG_NAME}
    assert connectors[MG_NAME]["SmartHosts"] == ["mgf.cybermail.jp"]
    assert connectors[MG_NAME]["RecipientDomains"] == ["*"]
    assert connectors[EA_NAME]["RecipientDomains"] == ["*.cs-365.cybermail.jp"]
    assert connectors[EA_NAME]["UseMXRecord"] is True
    for connector in connectors.values():
        assert connector["IsValidated"] is True
        assert connector["TlsSettings"] == "CertificateValidation"
        assert connector["LastValidationTimestamp"]
    assert connectors[EA_NAME]["ValidationRecipients"] == ["jr-1@cs-365.cybermail.jp"]
    assert [(c.name, c.action, c.validation) for c in outcome.connectors] == [
        (EA_NAME, "create", Validation.PASSED), (MG_NAME, "create", Validation.PASSED)]


def test_enterprise_audit_is_created_before_mailgates(simulator: Simulator, engine: ProvisioningEngine) -> None:
    engine.run(NOTICE)
    created = [w["parameters"]["Name"] for w in simulator.writes(TENANT) if w["cmdlet"] == "New-OutboundConnector"]
    assert created == [EA_NAME, MG_NAME]


def test_a_replay_reads_twice_and_writes_nothing(simulator: Simulator, engine: ProvisioningEngine) -> None:
    engine.run(NOTICE)
    simulator.reset_log()
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED
    assert simulator.calls(TENANT) == {"Get-OutboundConnector": 1, "Get-AcceptedDomain": 1}
    assert simulator.writes(TENANT) == []
    assert simulator.token_requests(TENANT) == 0  # the cached token is reused
    # The rows read carried the service's annotations and zone-less times; none counted as drift.
    row = by_name(simulator)[MG_NAME]
    assert row["SmartHosts@odata.type"] == "#Collection(String)"
    assert row["LastValidationTimestamp"].endswith("0000000")
    assert [c.validation for c in outcome.connectors] == [Validation.ALREADY_VALIDATED] * 2


def test_drift_on_one_connector_is_set_back_with_only_that_parameter(simulator: Simulator,
                                                                     engine: ProvisioningEngine) -> None:
    engine.run(NOTICE)
    engine.run(make_notice(mx_host="mgs.cybermail.jp"))  # an admin-visible change of smart host
    simulator.reset_log()
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED
    writes = simulator.writes(TENANT)
    assert writes[0]["cmdlet"] == "Set-OutboundConnector"
    # the drifted parameter only, and the old route's validation withdrawn until the new one passes
    assert {k for k in writes[0]["parameters"] if k != "Identity"} == {"SmartHosts", "IsValidated"}
    assert writes[0]["parameters"]["IsValidated"] is False
    assert [c.action for c in outcome.connectors] == ["unchanged", "update"]
    assert by_name(simulator)[MG_NAME]["SmartHosts"] == ["mgf.cybermail.jp"]


def test_a_foreign_star_connector_stops_everything_before_any_write(simulator: Simulator,
                                                                    engine: ProvisioningEngine) -> None:
    simulator.seed_connector(TENANT, Name="Old relay", ConnectorType="Partner", RecipientDomains=["*"],
                             UseMXRecord=False, SmartHosts=["relay.example.net"], Enabled=True)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "CONFLICTING_CONNECTOR"
    assert "Old relay" in outcome.error["message"]
    assert simulator.writes(TENANT) == []


def test_a_tenant_with_enterprise_audit_already_done_gets_only_mailgates(simulator: Simulator,
                                                                         engine: ProvisioningEngine) -> None:
    engine.run(make_notice(services=["enterprise_audit"]))
    simulator.reset_log()
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED
    assert [c.action for c in outcome.connectors] == ["unchanged", "create"]
    assert [w["cmdlet"] for w in simulator.writes(TENANT)] == ["New-OutboundConnector", "Set-OutboundConnector"]


def test_a_failed_validation_needs_attention_and_names_the_task(simulator: Simulator,
                                                                engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, unreachable_hosts=["mgf.cybermail.jp"])
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "VALIDATION_FAILED"
    assert "Check connectivity to 'mgf.cybermail.jp'" in outcome.error["message"]
    assert outcome.connectors[1].validation is Validation.FAILED
    assert by_name(simulator)[MG_NAME]["IsValidated"] is False


def test_a_missing_exchange_role_needs_attention(simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, role_missing=403)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "ROLE_MISSING"
    assert "Exchange" in outcome.error["hint_ja"]


def test_a_missing_permission_is_consent_missing_with_the_admin_consent_url(simulator: Simulator,
                                                                            engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, permission_granted=False)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "CONSENT_MISSING"
    assert f"/{TENANT}/adminconsent?client_id=" in outcome.error["hint_en"]
    assert f"/{TENANT}/adminconsent?client_id=" in outcome.error["hint_ja"]


def test_an_app_missing_from_the_tenant_needs_attention_with_the_admin_consent_url(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, consent=False)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.NEEDS_ATTENTION and not outcome.retryable
    assert outcome.error is not None and outcome.error["code"] == "APP_NOT_IN_TENANT"
    assert f"/{TENANT}/adminconsent?client_id=" in outcome.error["hint_en"]
    assert simulator.calls(TENANT) == {}


def test_brief_throttling_is_retried_inside_the_run_honouring_retry_after(
        simulator: Simulator, engine: ProvisioningEngine, sleeps: Sleeps) -> None:
    simulator.fail_next(TENANT, 2, "throttle", retry_after=7)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED
    assert sleeps.calls == [7.0, 7.0]
    assert [e.data["code"] for e in outcome.events if e.kind == "exchange.retry"] == ["THROTTLED", "THROTTLED"]
    assert total_calls(simulator) == 10  # the 8 calls plus the 2 throttled ones


def test_persistent_throttling_ends_the_run_and_apply_retries_it_with_back_off(
        simulator: Simulator, settings: Settings, engine: ProvisioningEngine, sleeps: Sleeps) -> None:
    simulator.fail_next(TENANT, 3, "unavailable")  # one more than the in-run retries
    simulator.fail_next(TENANT, 1, "throttle", retry_after=60)  # too long to wait inside a run
    waits: list[float] = []
    outcome = apply_with_retries(NOTICE, settings, engine=engine, sleep=waits.append, clock=sleeps.clock,
                                 max_attempts=5)
    assert outcome.status is Status.SUCCEEDED
    assert len(waits) == 2
    assert 0 < waits[0] <= 1.0  # interactive back-off starts at about a second
    assert waits[1] == 30.0  # Retry-After, capped by the interactive policy
    assert len(by_name(simulator)) == 2


def test_transient_errors_beyond_the_attempt_budget_end_failed_and_retryable(
        simulator: Simulator, settings: Settings, engine: ProvisioningEngine, sleeps: Sleeps) -> None:
    simulator.fail_next(TENANT, 10, "unavailable")
    outcome = apply_with_retries(NOTICE, settings, engine=engine, sleep=sleeps.sleep, clock=sleeps.clock,
                                 max_attempts=3)
    assert outcome.status is Status.FAILED
    assert outcome.retryable
    assert outcome.error is not None and outcome.error["code"] == "EXCHANGE_UNAVAILABLE"
    assert simulator.writes(TENANT) == []


def test_replication_lag_after_create_is_waited_out(simulator: Simulator, settings: Settings,
                                                    token_provider: Any) -> None:
    # Real time here: the simulator's lag runs on the wall clock.
    simulator.configure_tenant(TENANT, replication_lag=1.0)
    engine = ProvisioningEngine(settings, token_provider=token_provider)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert any(e.kind == "replication.wait" for e in outcome.events)
    assert len(by_name(simulator)) == 2
    assert all(c["IsValidated"] for c in simulator.connectors(TENANT))


def test_replication_that_never_completes_is_a_transient_failure(simulator: Simulator, settings: Settings,
                                                                 engine: ProvisioningEngine, sleeps: Sleeps) -> None:
    simulator.configure_tenant(TENANT, replication_lag=3600)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.FAILED and outcome.retryable
    assert outcome.error is not None and outcome.error["code"] == "REPLICATION_TIMEOUT"
    assert sum(sleeps.calls) <= settings.replication_wait_seconds


def test_a_validation_recipient_inside_the_tenant_needs_attention(simulator: Simulator,
                                                                  engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, accepted_domains=["contoso.onmicrosoft.com", "example.com"])
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "RECIPIENT_IN_TENANT"
    assert simulator.writes(TENANT) == []


def test_spf_problems_are_warnings_by_default(simulator: Simulator, dns_zone: DnsServer,
                                              engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, accepted_domains=["contoso.onmicrosoft.com", "contoso.co.jp"])
    dns_zone.set_zone({"contoso.co.jp": [("TXT", "v=spf1 include:spf.protection.outlook.com -all")],
                       "spf.protection.outlook.com": [("TXT", "v=spf1 ip4:40.92.0.0/15 -all")]})
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED
    assert [(w["code"], w["domain"]) for w in outcome.warnings] == [("SPF_INCLUDE_MISSING", "contoso.co.jp")]


@pytest.mark.parametrize(
    ("zone", "code"),
    [
        ({}, "SPF_MISSING"),
        ({"contoso.co.jp": [("TXT", "v=spf1 -all"), ("TXT", "v=spf1 include:spf.cybermail.jp -all")]},
         "SPF_MULTIPLE_RECORDS"),
    ],
)
def test_spf_policy_block_stops_before_any_write(simulator: Simulator, dns_zone: DnsServer,
                                                 settings: Settings, token_provider: Any,
                                                 zone: dict[str, list[tuple[str, str]]], code: str) -> None:
    simulator.configure_tenant(TENANT, accepted_domains=["contoso.co.jp"])
    dns_zone.set_zone(zone)
    blocking = Settings(**{**settings.__dict__, "spf_policy": "block"})
    from shared.spf import DnsPythonResolver

    engine = ProvisioningEngine(blocking, token_provider=token_provider,
                                spf_resolver=DnsPythonResolver(dns_zone.host, dns_zone.port, timeout=0.5))
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == code
    assert simulator.writes(TENANT) == []


def test_a_good_spf_record_gives_no_warning(simulator: Simulator, dns_zone: DnsServer,
                                            engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, accepted_domains=["contoso.co.jp"])
    dns_zone.set_zone({"contoso.co.jp": [("TXT", "v=spf1 include:spf.cybermail.jp -all")],
                       "spf.cybermail.jp": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")]})
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED
    assert outcome.warnings == []


def test_the_outcome_never_contains_the_client_secret_or_a_token(simulator: Simulator, settings: Settings,
                                                                 engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, role_missing=403)
    text = repr(engine.run(NOTICE).to_dict()) + repr(engine.run(NOTICE).to_dict())
    assert settings.exo_client_secret not in text
    assert "Bearer" not in text


def test_no_crafted_notice_sends_a_host_off_the_allow_list(simulator: Simulator, engine: ProvisioningEngine) -> None:
    # parse_notice refuses it; a notice built in code is refused by the desired-state builder,
    # and a spec built by hand is refused by the client before anything is sent.
    crafted = ActivationNotice(notice_id="x", tenant_id=TENANT, services=("mailgates",),
                               mx_host="relay.attacker.example", validation_recipient="a@example.com")
    with pytest.raises(ValueError, match="allow-list"):
        desired_connectors(crafted)
    assert simulator.writes(TENANT) == []


def test_an_enterprise_audit_notice_for_a_tenant_with_mailgates_changes_nothing(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    engine.run(NOTICE)
    simulator.reset_log()
    outcome = engine.run(make_notice(notice_id="ACT-T-2", services=["enterprise_audit"]))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.writes(TENANT) == []


# -- Exchange as it really behaves: test mode, wizard-made tenants, plain-text throttling ---------

WIZARD_TIME = "2026-07-24T18:59:12.0000000"  # as the admin center stores it: no zone


def seed_mailgates(simulator: Simulator, **overrides: Any) -> None:
    fields: dict[str, Any] = {
        "Name": MG_NAME, "ConnectorType": "Partner", "RecipientDomains": ["*"], "UseMXRecord": False,
        "SmartHosts": ["mgf.cybermail.jp"], "TlsSettings": "CertificateValidation", "Enabled": True,
        "IsTransportRuleScoped": False, "ConnectorSource": "AdminUI", "IsValidated": True,
        "ValidationRecipients": ["adm@example.com"], "LastValidationTimestamp": WIZARD_TIME,
    }
    fields.update(overrides)
    simulator.seed_connector(TENANT, **fields)


def seed_enterprise_audit(simulator: Simulator, **overrides: Any) -> None:
    fields: dict[str, Any] = {
        "Name": EA_NAME, "ConnectorType": "Partner", "RecipientDomains": ["*.cs-365.cybermail.jp"],
        "UseMXRecord": True, "TlsSettings": "CertificateValidation", "Enabled": True,
        "IsTransportRuleScoped": False, "ConnectorSource": "AdminUI", "IsValidated": True,
        "ValidationRecipients": ["jr-1@cs-365.cybermail.jp"], "LastValidationTimestamp": WIZARD_TIME,
    }
    fields.update(overrides)
    simulator.seed_connector(TENANT, **fields)


def test_our_mailgates_connector_in_test_mode_is_converged_without_a_duplicate(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    seed_mailgates(simulator, TestMode=True)
    outcome = engine.run(make_notice(services=["mailgates"]))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    # The listing leaves test-mode connectors out; New- finds the name taken; one test-mode lookup.
    assert simulator.calls(TENANT) == {
        "Get-OutboundConnector": 2, "Get-AcceptedDomain": 1, "New-OutboundConnector": 1,
        "Set-OutboundConnector": 2, "Validate-OutboundConnector": 1,
    }
    lookup = [e.parameters for e in simulator.log_for(TENANT) if e.cmdlet == "Get-OutboundConnector"]
    assert lookup == [{}, {"Identity": MG_NAME, "IncludeTestModeConnectors": True}]
    connectors = simulator.connectors(TENANT)
    assert [c["Name"] for c in connectors] == [MG_NAME]
    assert connectors[0]["TestMode"] is False
    assert connectors[0]["IsValidated"] is True
    assert [(c.action, c.changed, c.validation) for c in outcome.connectors] == [
        ("update", ["Comment", "TestMode"], Validation.PASSED)]


def test_after_leaving_test_mode_a_replay_reads_twice_and_writes_nothing(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    seed_mailgates(simulator, TestMode=True)
    engine.run(NOTICE)
    simulator.reset_log()
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.calls(TENANT) == {"Get-OutboundConnector": 1, "Get-AcceptedDomain": 1}
    assert sorted(c["Name"] for c in simulator.connectors(TENANT)) == sorted([EA_NAME, MG_NAME])


def test_a_foreign_star_connector_in_test_mode_is_no_competitor(simulator: Simulator,
                                                                engine: ProvisioningEngine) -> None:
    simulator.seed_connector(TENANT, Name="Trial relay", ConnectorType="Partner", RecipientDomains=["*"],
                             UseMXRecord=False, SmartHosts=["relay.trial.example"], TestMode=True)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert total_calls(simulator) == 8
    assert by_name(simulator)["Trial relay"]["TestMode"] is True
    assert [w for w in simulator.writes(TENANT) if w["identity"] == "Trial relay"] == []


def test_a_wizard_made_tenant_is_adopted_without_a_new_validation(simulator: Simulator,
                                                                  engine: ProvisioningEngine) -> None:
    seed_enterprise_audit(simulator)
    seed_mailgates(simulator)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.calls(TENANT) == {
        "Get-OutboundConnector": 1, "Get-AcceptedDomain": 1, "Set-OutboundConnector": 2}
    assert [w["parameters"] for w in simulator.writes(TENANT)] == [
        {"Identity": EA_NAME, "Comment": desired_connectors(NOTICE)[0].comment},
        {"Identity": MG_NAME, "Comment": desired_connectors(NOTICE)[1].comment},
    ]
    assert [(c.action, c.changed, c.validation) for c in outcome.connectors] == [
        ("update", ["Comment"], Validation.ALREADY_VALIDATED), ("update", ["Comment"], Validation.ALREADY_VALIDATED)]
    for row in simulator.connectors(TENANT):
        assert row["LastValidationTimestamp"] == WIZARD_TIME  # the admin's validation stands


def test_a_wizard_connector_validated_for_another_recipient_is_validated_once(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    seed_enterprise_audit(simulator)
    seed_mailgates(simulator, ValidationRecipients=["someone@else.example"])
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.calls(TENANT)["Validate-OutboundConnector"] == 1
    assert [c.validation for c in outcome.connectors] == [Validation.ALREADY_VALIDATED, Validation.PASSED]
    assert by_name(simulator)[MG_NAME]["ValidationRecipients"] == ["adm@example.com"]


def test_plain_text_throttling_is_waited_out_for_rate_limit_reset(
        simulator: Simulator, engine: ProvisioningEngine, sleeps: Sleeps) -> None:
    simulator.fail_next(TENANT, 1, "throttle_text", retry_after=4)
    outcome = engine.run(NOTICE)
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert sleeps.calls == [4.0]
    assert [e.data["code"] for e in outcome.events if e.kind == "exchange.retry"] == ["THROTTLED"]
    assert total_calls(simulator) == 9


# -- drift on connectors that are ours, found in review ---------------------------------------

JOURNAL = "jr-1@cs-365.cybermail.jp"
RECIPIENT = "adm@example.com"


def notice(*services: str) -> ActivationNotice:
    return make_notice(services=list(services))


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
    ea = by_name(simulator)[EA_NAME]
    assert ea["UseMXRecord"] is True
    assert ea["SmartHosts"] == []


def test_a_mailgates_connector_hardened_to_domain_validation_is_set_back(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    seed_ours_mg(simulator, TlsSettings="DomainValidation", TlsDomain="mgf.cybermail.jp")
    outcome = engine.run(notice("mailgates"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    mg = by_name(simulator)[MG_NAME]
    assert mg["TlsSettings"] == "CertificateValidation"
    assert mg["TlsDomain"] is None


def test_our_mailgates_connector_in_test_mode_is_taken_out_of_it(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    seed_ours_mg(simulator, TestMode=True)
    outcome = engine.run(notice("mailgates"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert outcome.connectors[0].action == "update"
    assert outcome.connectors[0].changed == ["TestMode"]
    assert by_name(simulator)[MG_NAME]["TestMode"] is False


def test_a_mailgates_connector_that_fails_validation_is_not_left_routing_all_mail(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, unreachable_hosts=["mgf.cybermail.jp"])
    outcome = engine.run(notice("mailgates"))
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "VALIDATION_FAILED"
    mg = by_name(simulator)[MG_NAME]
    assert mg["Enabled"] is False
    assert outcome.connectors[0].disabled is True



def test_a_connector_rerouted_by_a_run_whose_validation_never_ran_is_validated_by_the_next(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    # Validated once for mgs; the notice moves it to mgf. Set- keeps IsValidated as it was, so if
    # the run stops between the Set and the Validate (throttled past the in-run retries), the
    # next run must not read the old validation as one of the new route.
    seed_ours_mg(simulator, SmartHosts=["mgs.cybermail.jp"])
    simulator.fail_next(TENANT, 10, "throttle", cmdlet="Validate-OutboundConnector", retry_after=600)
    first = engine.run(notice("mailgates"))
    assert first.retryable and first.status is not Status.SUCCEEDED
    assert by_name(simulator)[MG_NAME]["SmartHosts"] == ["mgf.cybermail.jp"]
    simulator.clear_faults(TENANT)
    simulator.reset_log()
    second = engine.run(notice("mailgates"))
    assert second.status is Status.SUCCEEDED, second.error
    assert simulator.calls(TENANT).get("Validate-OutboundConnector") == 1
    assert [c.validation for c in second.connectors] == [Validation.PASSED]


def test_our_connector_in_test_mode_beside_a_live_foreign_star_connector_is_left_untouched(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    # The listing hides ours (test mode) and shows the foreign `*`: the conflict must stop the run
    # before New- (which would find our name taken and converge ours into a second live `*`).
    seed_mailgates(simulator, TestMode=True)
    simulator.seed_connector(TENANT, Name="Old gateway", ConnectorType="Partner", RecipientDomains=["*"],
                             UseMXRecord=False, SmartHosts=["relay.old.example"])
    outcome = engine.run(make_notice(services=["mailgates"]))
    assert outcome.status is Status.NEEDS_ATTENTION
    assert simulator.writes(TENANT) == []
    assert by_name(simulator)[MG_NAME]["TestMode"] is True


def test_an_adopted_connector_records_whose_validation_it_keeps(simulator: Simulator,
                                                              engine: ProvisioningEngine) -> None:
    # The record must not read as if this run had tested the route: it names the validation
    # Exchange holds (when, for whom, made where) and says this run sent no test message.
    seed_mailgates(simulator)
    outcome = engine.run(make_notice(services=["mailgates"]))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.calls(TENANT).get("Validate-OutboundConnector") is None
    kept = [e for e in outcome.events if e.kind == "validation.kept"]
    assert [e.data for e in kept] == [{
        "connector": MG_NAME, "last_validation_timestamp": "2026-07-24T18:59:12.000Z",
        "validation_recipients": ["adm@example.com"], "connector_source": "AdminUI"}]
    assert "not by this run" in kept[0].message
    assert not [e for e in outcome.events if e.kind == "validation.passed"]
