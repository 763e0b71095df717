"""A broken setting crashes neither queue trigger, loses no message and is recorded (Azurite, simulator).

The triggers of function_app are called as the host calls them, with the process environment an
operator set, one broken setting at a time: a number that is not one, a choice that is not one of
the choices, a flag that is neither true nor false, a rule between two settings, an allow-list
entry that is not a domain, a misnamed table, storage the SDK cannot use, and a damaged
Application Insights connection string. See shared/misconfigured.py for what each case does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import function_app
from shared import misconfigured, runtime
from shared.misconfigured import StorageNotConfigured
from shared.queueing import ActivationQueue, DriftEnvelope, RetryEnvelope
from shared.store import ActivationStore
from shared.telemetry import install_log_context
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
SAMPLE: dict[str, Any] = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
BODY = json.dumps(SAMPLE, ensure_ascii=False)
NOTICE_ID = SAMPLE["notice_id"]

# (variable, broken value, words the recorded problem must contain: the variable and the fix)
BROKEN = [
    pytest.param("LEASE_SECONDS", "abc", ("LEASE_SECONDS='abc'", "is not a number", "60.0 (the default)"),
                 id="number"),
    pytest.param("MAX_ATTEMPTS", "eight", ("MAX_ATTEMPTS='eight'", "whole number", "8 (the default)"), id="integer"),
    pytest.param("SPF_POLICY", "strict", ("SPF_POLICY='strict'", "use warn, block or off"), id="choice"),
    pytest.param("EXO_AUTH_MODE", "password", ("EXO_AUTH_MODE='password'", "use certificate, secret or federated"),
                 id="auth-mode"),
    pytest.param("DRIFT_REPAIR", "maybe", ("DRIFT_REPAIR='maybe'", "use true or false"), id="flag"),
    pytest.param("HEARTBEAT_SECONDS", "30", ("HEARTBEAT_SECONDS=30", "at most a third of LEASE_SECONDS"),
                 id="rule-between-settings"),
    pytest.param("ALLOWED_SMART_HOSTS", "mgf.cybermail.jp,not a host", ("ALLOWED_SMART_HOSTS", "not a plain domain"),
                 id="allow-list"),
]


@pytest.fixture
def environment(product_env: dict[str, str], storage: StorageNames,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The Function App's environment on this test's Azurite queue and tables."""
    monkeypatch.setenv("AzureWebJobsStorage", storage.connection_string)
    monkeypatch.setenv("ACTIVATION_QUEUE", storage.queue)
    monkeypatch.setenv("ACTIVATIONS_TABLE", storage.activations_table)
    monkeypatch.setenv("EVENTS_TABLE", storage.events_table)
    runtime.reset()
    yield monkeypatch
    runtime.reset()


def deliver(body: str) -> None:
    function_app.provision_activation(func.QueueMessage(body=body.encode("utf-8")))


def deliver_poison(body: str) -> None:
    function_app.record_poisoned_activation(func.QueueMessage(body=body.encode("utf-8")))


def waiting(queue: ActivationQueue) -> int:
    """Messages on the queue, the invisible (delayed) ones included."""
    return queue.approximate_count()


@pytest.mark.parametrize(("variable", "value", "words"), BROKEN)
def test_a_broken_setting_keeps_the_notice_on_the_queue_and_records_config_invalid(
        environment: pytest.MonkeyPatch, activation_store: ActivationStore, activation_queue: ActivationQueue,
        variable: str, value: str, words: tuple[str, ...], caplog: pytest.LogCaptureFixture) -> None:
    environment.setenv(variable, value)
    install_log_context(caplog.handler)  # as the exporter's handler has it
    with caplog.at_level(logging.ERROR, logger="activation"):
        deliver(BODY)  # does not raise
    assert waiting(activation_queue) == 1  # back on the queue, delayed: nothing lost, nothing poisoned
    assert waiting(activation_queue.poison) == 0
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.status.value == "needs_attention"
    assert record.error is not None and record.error["code"] == "CONFIG_INVALID"
    for word in words:
        assert word in record.error["message"]
    assert "restart the Function App" in record.error["hint_en"]
    assert record.raw_message == BODY and not record.content_hash  # the notice's own record replaces it
    [event] = [e for e in activation_store.list_events(NOTICE_ID) if e.kind == "config.invalid"]
    assert words[0] in event.message
    lines = [r for r in caplog.records if r.levelno == logging.ERROR and words[0] in r.getMessage()]
    assert lines and all(getattr(r, "notice_id", None) == NOTICE_ID for r in lines)


@pytest.mark.parametrize(("variable", "value", "words"), BROKEN)
def test_the_poison_trigger_keeps_its_copy_and_records_it_under_a_broken_setting(
        environment: pytest.MonkeyPatch, activation_store: ActivationStore, activation_queue: ActivationQueue,
        variable: str, value: str, words: tuple[str, ...]) -> None:
    environment.setenv(variable, value)
    deliver_poison(BODY)
    deliver_poison("{not json")  # content the trigger cannot read either: kept under its hash
    assert waiting(activation_queue.poison) == 2 and waiting(activation_queue) == 0
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.error is not None and record.error["code"] == "CONFIG_INVALID"
    assert words[0] in record.error["message"]
    placeholders = [r for r in activation_store.list_activations(top=50).items if r.notice_id.startswith("poison-")]
    assert [r.error["code"] for r in placeholders if r.error] == ["CONFIG_INVALID"]


def test_a_finished_activation_keeps_its_record_and_gains_an_event(
        environment: pytest.MonkeyPatch, activation_store: ActivationStore, activation_queue: ActivationQueue) -> None:
    deliver(BODY)
    finished = activation_store.get(NOTICE_ID)
    assert finished is not None and finished.status.value == "succeeded"
    environment.setenv("LEASE_SECONDS", "abc")
    runtime.reset()
    deliver(BODY)  # a duplicate delivery while the app is broken
    after = activation_store.get(NOTICE_ID)
    assert after is not None and (after.status, after.error, after.finished_at, after.attempts) == (
        finished.status, finished.error, finished.finished_at, finished.attempts)
    [event] = [e for e in activation_store.list_events(NOTICE_ID) if e.kind == "config.invalid"]
    assert "the activation stays succeeded" in event.message
    assert waiting(activation_queue) == 1


def test_a_retry_message_for_no_activation_records_nothing_but_still_waits(
        environment: pytest.MonkeyPatch, activation_store: ActivationStore, activation_queue: ActivationQueue) -> None:
    environment.setenv("SPF_POLICY", "strict")
    deliver(RetryEnvelope(notice_id="ACT-NOBODY", series=1, attempt=2).to_json())
    assert activation_store.get("ACT-NOBODY") is None
    assert waiting(activation_queue) == 1


def test_a_drift_check_message_records_no_activation_but_still_waits(
        environment: pytest.MonkeyPatch, activation_store: ActivationStore, activation_queue: ActivationQueue) -> None:
    environment.setenv("SPF_POLICY", "strict")
    deliver(DriftEnvelope("7a1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4c", "drift schedule").to_json())
    deliver_poison(DriftEnvelope("7a1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4c").to_json())
    assert activation_store.list_activations().items == []  # a tenant's check names no activation
    assert waiting(activation_queue) == 1 and waiting(activation_queue.poison) == 1


def test_once_the_setting_is_fixed_the_waiting_notice_is_provisioned(
        environment: pytest.MonkeyPatch, activation_store: ActivationStore, activation_queue: ActivationQueue) -> None:
    environment.setattr(misconfigured, "CONFIG_WAIT_SECONDS", 0.0)  # no five-minute wait in a test
    environment.setenv("LEASE_SECONDS", "abc")
    deliver(BODY)
    environment.delenv("LEASE_SECONDS")  # the operator fixes the setting and restarts the app
    runtime.reset()
    [message] = activation_queue.receive(max_messages=2)
    assert message.content == BODY
    deliver(message.content)
    record = activation_store.get(NOTICE_ID)
    assert record is not None and (record.status.value, record.attempts) == ("succeeded", 1)
    assert record.content_hash and record.error is None


def test_tables_that_cannot_be_named_leave_the_message_waiting_unrecorded(
        environment: pytest.MonkeyPatch, activation_queue: ActivationQueue, caplog: pytest.LogCaptureFixture) -> None:
    environment.setenv("ACTIVATIONS_TABLE", "no_such-table")
    with caplog.at_level(logging.ERROR, logger="activation"):
        deliver(BODY)
        deliver_poison(BODY)
    assert waiting(activation_queue) == 1 and waiting(activation_queue.poison) == 1
    lines = [r.getMessage() for r in caplog.records if "cannot be recorded" in r.getMessage()]
    assert len(lines) == 2 and all("ACTIVATIONS_TABLE='no_such-table'" in line for line in lines)


def test_storage_the_product_cannot_use_is_left_to_the_host_with_one_line(
        environment: pytest.MonkeyPatch, activation_queue: ActivationQueue, caplog: pytest.LogCaptureFixture) -> None:
    # The host understands this value; the Python SDK does not, so the product reaches no queue.
    environment.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    install_log_context(caplog.handler)
    with caplog.at_level(logging.ERROR, logger="activation"):
        with pytest.raises(StorageNotConfigured):
            deliver(BODY)
        with pytest.raises(StorageNotConfigured):
            deliver_poison(BODY)
    lines = [r for r in caplog.records if r.name == "activation.config"]
    assert len(lines) == 2 and all("UseDevelopmentStorage=true" in r.getMessage() for r in lines)
    assert [(getattr(r, "notice_id", None), getattr(r, "step", None)) for r in lines] == [(NOTICE_ID, "config")] * 2
    assert waiting(activation_queue) == 0  # nothing was consumed by the product: the host keeps it


def test_a_damaged_application_insights_connection_string_does_not_stop_provisioning(
        environment: pytest.MonkeyPatch, activation_store: ActivationStore, activation_queue: ActivationQueue,
        caplog: pytest.LogCaptureFixture) -> None:
    environment.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", "not a connection string")
    runtime.monitoring.cache_clear()  # configured once per process; this test's process starts it again
    try:
        with caplog.at_level(logging.ERROR, logger="activation"):
            deliver(BODY)
    finally:
        runtime.monitoring.cache_clear()
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.status.value == "succeeded"
    assert any("APPLICATIONINSIGHTS_CONNECTION_STRING cannot be used" in r.getMessage() for r in caplog.records)

