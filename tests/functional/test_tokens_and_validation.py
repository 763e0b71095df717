"""Exchange Online as it really behaves: the token carries the grants, validation is slow and sends mail.

Each test is one point of docs/exchange-protocol.md §5, run through the engine as the worker
builds it, over real HTTPS to the simulator: the permission and the role travel in the token
(401 is not 403, and only a new token sees a grant), Validate answers a tree of tasks whose
failed leaves the operator must see, and a Validate is never sent twice by one run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from exosim import Simulator
from shared.auth import MsalTokenProvider
from shared.notice import parse_notice
from shared.outcome import Status, Validation
from shared.provisioning import ProvisioningEngine
from shared.settings import Settings
from tests.fixtures.product import Sleeps

pytestmark = pytest.mark.functional

TENANT = "0b7a5c3e-2f4d-4e6a-9b8c-1d2e3f4a5b6c"
MG_NAME = "MAILGATESΣ 送信コネクタ"
EA_NAME = "Enterprise Audit送信コネクタ"
VALIDATE = "Validate-OutboundConnector"


def notice(**overrides: Any) -> Any:
    raw: dict[str, Any] = {
        "notice_id": "ACT-TV-1",
        "tenant_id": TENANT,
        "services": ["mailgates", "enterprise_audit"],
        "journal_report_address": "jr-1@cs-365.cybermail.jp",
        "mx_host": "mgf.cybermail.jp",
        "validation_recipient": "adm@example.com",
        **overrides,
    }
    return parse_notice(raw)


def engine_with(settings: Settings, provider: MsalTokenProvider, sleeps: Sleeps, **changes: Any) -> ProvisioningEngine:
    return ProvisioningEngine(dataclasses.replace(settings, spf_policy="off", **changes), token_provider=provider,
                              sleep=sleeps.sleep, clock=sleeps.clock)


@pytest.fixture
def engine(settings: Settings, token_provider: MsalTokenProvider, sleeps: Sleeps) -> ProvisioningEngine:
    return engine_with(settings, token_provider, sleeps)


def wait_for_test_messages(simulator: Simulator, count: int, *, within: float = 10.0) -> list[dict[str, Any]]:
    """The tenant's test messages once `count` have been sent (the simulator finishes a call after its wait)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sent = simulator.test_messages(TENANT)
        if len(sent) >= count:
            return sent
        time.sleep(0.05)
    return simulator.test_messages(TENANT)


# --------------------------------------------------------------------------- the token carries the grants


def test_a_fresh_two_service_tenant_still_takes_eight_calls_and_one_token(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    outcome = engine.run(notice())
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert sum(simulator.calls(TENANT).values()) == 8
    assert simulator.token_requests(TENANT) == 1
    assert len(simulator.test_messages(TENANT)) == 2  # one per connector


def test_role_missing_then_role_assigned_then_the_next_attempt_succeeds_with_a_new_token(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, role_missing=403)
    first = engine.run(notice())
    assert first.status is Status.NEEDS_ATTENTION
    assert first.error is not None and first.error["code"] == "ROLE_MISSING"
    simulator.configure_tenant(TENANT, role_missing=None)  # the customer assigns the role
    second = engine.run(notice())
    assert second.status is Status.SUCCEEDED, second.error
    # the token issued before the role was dropped, so exactly one new one was asked for
    assert simulator.token_requests(TENANT) == 2


def test_a_401_with_a_fresh_token_ends_consent_missing_with_the_consent_url(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, permission_granted=False)
    outcome = engine.run(notice())
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "CONSENT_MISSING"
    consent_url = f"{simulator.url}/{TENANT}/adminconsent?client_id={simulator.client_id}"
    assert consent_url in outcome.error["hint_en"] and consent_url in outcome.error["hint_ja"]
    # the fresh token was not swapped for another one in the run
    assert simulator.token_requests(TENANT) == 1 and sum(simulator.calls(TENANT).values()) == 1
    simulator.configure_tenant(TENANT, permission_granted=True)  # the customer consents
    assert engine.run(notice()).status is Status.SUCCEEDED
    assert simulator.token_requests(TENANT) == 2


# --------------------------------------------------------------------------- failed validation, in Exchange's words


def test_a_failed_validation_shows_each_failed_task_and_its_detail_to_the_operator(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, unreachable_hosts=["mgf.cybermail.jp"])
    outcome = engine.run(notice())
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "VALIDATION_FAILED"
    mailgates = next(c for c in outcome.connectors if c.name == MG_NAME)
    assert mailgates.validation is Validation.FAILED
    failed = [t for t in mailgates.tasks if not t["successful"]]
    assert [t["task"] for t in failed] == [
        "Check connectivity to 'mgf.cybermail.jp'", "Send test email to adm@example.com"]
    assert failed[0]["details"].startswith("450 4.4.317 Cannot connect to remote server")
    assert failed[0]["parent"] == "Check connectivity to the smart hosts"
    for text in (outcome.error["message"], outcome.error["hint_en"], outcome.error["hint_ja"]):
        assert "Check connectivity to 'mgf.cybermail.jp'" in text and "450 4.4.317" in text


# --------------------------------------------------------------------------- slow validation, sent once


def test_a_validate_slower_than_every_other_call_may_take_succeeds_under_its_own_timeout(
        simulator: Simulator, settings: Settings, token_provider: MsalTokenProvider, sleeps: Sleeps) -> None:
    # Other calls time out after 0.5 s here; Validate keeps the default timeout (240 s).
    engine = engine_with(settings, token_provider, sleeps, exo_timeout_seconds=0.5)
    simulator.configure_tenant(TENANT, cmdlet_latency_ms={VALIDATE: 1500})
    outcome = engine.run(notice(services=["enterprise_audit"]))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.calls(TENANT)[VALIDATE] == 1
    assert len(simulator.test_messages(TENANT)) == 1


def test_a_validate_that_times_out_is_sent_once_and_left_to_the_queue(
        simulator: Simulator, settings: Settings, token_provider: MsalTokenProvider, sleeps: Sleeps) -> None:
    engine = engine_with(settings, token_provider, sleeps, exo_validate_timeout_seconds=0.5)
    simulator.configure_tenant(TENANT, cmdlet_latency_ms={VALIDATE: 2000})
    outcome = engine.run(notice(services=["enterprise_audit"]))
    assert outcome.retryable and outcome.error is not None and outcome.error["code"] == "NETWORK_ERROR"
    assert "may have run and sent its test message" in outcome.error["message"]
    assert simulator.calls(TENANT)[VALIDATE] == 1
    assert not [e for e in outcome.events if e.kind == "exchange.retry"]
    # Exchange finished the cmdlet after the client gave up: its message went, exactly once
    assert len(wait_for_test_messages(simulator, 1)) == 1
    time.sleep(0.3)
    assert len(simulator.test_messages(TENANT)) == 1
    (connector,) = simulator.connectors(TENANT)
    assert connector["IsValidated"] is False  # not stamped: the run does not know the result


def test_a_dropped_connection_during_validate_is_not_repeated(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.fail_next(TENANT, 1, "disconnect", cmdlet=VALIDATE)
    outcome = engine.run(notice(services=["enterprise_audit"]))
    assert outcome.retryable and outcome.error is not None and outcome.error["code"] == "NETWORK_ERROR"
    assert simulator.calls(TENANT)[VALIDATE] == 1


@pytest.mark.parametrize("kind", ["throttle", "unavailable", "concurrency"])
def test_a_validate_exchange_did_not_process_is_repeated_in_the_run(
        simulator: Simulator, engine: ProvisioningEngine, kind: str) -> None:
    simulator.fail_next(TENANT, 1, kind, cmdlet=VALIDATE)
    outcome = engine.run(notice(services=["enterprise_audit"]))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.calls(TENANT)[VALIDATE] == 2
    assert len(simulator.test_messages(TENANT)) == 1


@pytest.mark.parametrize("kind", ["internal", "gateway_timeout", "transient"])
def test_a_validate_that_may_have_run_is_left_to_the_queue(
        simulator: Simulator, engine: ProvisioningEngine, kind: str) -> None:
    simulator.fail_next(TENANT, 1, kind, cmdlet=VALIDATE)
    outcome = engine.run(notice(services=["enterprise_audit"]))
    assert outcome.retryable, outcome.error
    assert simulator.calls(TENANT)[VALIDATE] == 1


@pytest.mark.slow
def test_a_validate_of_forty_seconds_succeeds_under_default_settings_and_is_sent_once(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    # Real time on purpose (it only waits): the default timeouts, end to end, against a
    # Validate as slow as Exchange's can be.
    simulator.configure_tenant(TENANT, cmdlet_latency_ms={VALIDATE: 40_000})
    outcome = engine.run(notice(services=["enterprise_audit"]))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert simulator.calls(TENANT)[VALIDATE] == 1
    assert len(simulator.test_messages(TENANT)) == 1
