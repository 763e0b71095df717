"""Every log line about an activation carries notice_id, tenant_id, attempt, step and duration.

Real runs (Azurite, the simulator over HTTPS, DNS on loopback) with a real logging handler on
the product's logger, as the exporter's handler is set up: the engine's steps and every path
around them (claim, lease renewal, watchdog, retry scheduling and delivery, poison, crash, the
HTTP API's submit and retry, drift, termination). Each test checks every record it captured,
not a sample, so a line written without the context fails it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exosim import Simulator
from shared.api import ActivationApi
from shared.auth import MsalTokenProvider
from shared.drift import DriftChecker, client_factory_from_settings
from shared.exchange import ExchangeAdminClient
from shared.lifecycle import envelope
from shared.notice import parse_notice
from shared.provisioning import ProvisioningEngine
from shared.queueing import ActivationQueue, RetryEnvelope
from shared.settings import Settings
from shared.store import ActivationRecord, ActivationStore
from shared.telemetry import EXPORTED_LOGGER, TRANSITION_EVENT, install_log_context
from shared.worker import Worker
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
SAMPLE: dict[str, Any] = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
TERMINATE: dict[str, Any] = json.loads(
    (ROOT / "tests" / "fixtures" / "notices" / "terminate-both.json").read_text(encoding="utf-8"))
NOTICE_ID = SAMPLE["notice_id"]
TENANT = SAMPLE["tenant_id"].lower()
MG_NAME = "MAILGATESΣ 送信コネクタ"


class Captured(logging.Handler):
    """Every record of the product's logger, with the activation context as the exporter gets it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        install_log_context(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def steps(self) -> set[str]:
        return {getattr(r, "step", "") for r in self.records}

    def clear(self) -> None:
        self.records.clear()


@pytest.fixture
def captured() -> Iterator[Captured]:
    logger = logging.getLogger(EXPORTED_LOGGER)
    handler, level = Captured(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def check_context(records: list[logging.LogRecord], *, notice_id: str, tenant_id: str | None,
                  attempt_known: bool = True) -> None:
    """Each record names the activation, its tenant (when known), attempt, step and a duration."""
    assert records, "nothing was logged"
    for record in records:
        where = f"{record.name}: {record.getMessage()!r}"
        assert getattr(record, "notice_id", None) == notice_id, where
        if tenant_id is None:
            assert not hasattr(record, "tenant_id"), where  # unknown is left off, never ""
        else:
            assert getattr(record, "tenant_id", None) == tenant_id, where
        if attempt_known:
            assert isinstance(getattr(record, "attempt", None), int), where
        step = getattr(record, "step", None)
        assert isinstance(step, str) and step, where
        duration = getattr(record, "duration_ms", None)
        assert isinstance(duration, int | float) and duration >= 0, where


@pytest.fixture
def worker_settings(settings: Settings, storage: StorageNames) -> Settings:
    # Retries within a second, so the test delivers them from the real queue.
    return dataclasses.replace(settings, activation_queue=storage.queue, activations_table=storage.activations_table,
                               events_table=storage.events_table, exo_call_retries=0,
                               retry_base_seconds=0.2, retry_max_seconds=0.4)


@pytest.fixture
def build(worker_settings: Settings, activation_store: ActivationStore, activation_queue: ActivationQueue,
          token_provider: MsalTokenProvider) -> Callable[..., Worker]:
    def make(*, worker_class: type[Worker] = Worker, engine: Any = None,
             clock: Callable[[], datetime] | None = None, **overrides: Any) -> Worker:
        these = dataclasses.replace(worker_settings, **overrides)
        real = ProvisioningEngine(these, token_provider=token_provider)
        return worker_class(these, store=activation_store, queue=activation_queue,
                            engine_factory=lambda: engine or real, clock=clock or (lambda: datetime.now(UTC)))
    return make


def deliver_all(worker: Worker, queue: ActivationQueue, *, until: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """The Functions host's part: receive, hand to the worker, delete; delayed retries included."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "the activation did not finish in time"
        messages = queue.receive(max_messages=16, visibility_timeout=30)
        if not messages:
            time.sleep(0.1)
            continue
        for message in messages:
            worker.handle(message.content, dequeue_count=message.dequeue_count)
            queue.delete(message)


def final(store: ActivationStore, notice_id: str) -> Callable[[], bool]:
    def done() -> bool:
        record = store.get(notice_id)
        return record is not None and record.status.final
    return done


def test_a_run_with_a_retry_carries_the_context_on_every_line_from_claim_to_outcome(
        build: Callable[..., Worker], simulator: Simulator, activation_store: ActivationStore,
        activation_queue: ActivationQueue, captured: Captured) -> None:
    worker = build()
    simulator.fail_next(TENANT, 1, "unavailable")  # attempt 1 is retried through the queue
    activation_queue.send_notice(json.dumps(SAMPLE, ensure_ascii=False))
    deliver_all(worker, activation_queue, until=final(activation_store, NOTICE_ID))
    record = activation_store.get(NOTICE_ID)
    assert record is not None and (record.status.value, record.attempts) == ("succeeded", 2)

    check_context(captured.records, notice_id=NOTICE_ID, tenant_id=TENANT)
    assert {"receive", "claim", "finish", "retry"} <= captured.steps()
    transitions = {(r.step, r.attempt): r for r in captured.records  # type: ignore[attr-defined]
                   if getattr(r, "event", None) == TRANSITION_EVENT}
    scheduled = transitions[("finish", 1)]
    assert scheduled.result == "retry_scheduled" and scheduled.levelno == logging.INFO  # type: ignore[attr-defined]
    assert 0 < scheduled.delay_seconds <= 0.4 and not scheduled.watchdog  # type: ignore[attr-defined]
    claimed = transitions[("retry", 2)]
    assert claimed.result == "claimed" and claimed.watchdog  # type: ignore[attr-defined]
    assert transitions[("finish", 2)].result == "succeeded"  # type: ignore[attr-defined]


def test_a_failing_lease_renewal_is_logged_from_the_heartbeat_thread_with_the_run_context(
        build: Callable[..., Worker], simulator: Simulator, captured: Captured) -> None:
    class StorageGoneForRenewals(Worker):
        """A worker whose lease renewals fail as with storage unreachable (the rest works)."""

        def renew(self, notice_id: str, owner: str, *, record: ActivationRecord | None = None) -> ActivationRecord:
            raise ConnectionError("storage unreachable")

    worker = build(worker_class=StorageGoneForRenewals, heartbeat_seconds=0.05)
    simulator.configure_tenant(TENANT, latency_ms=60)  # a run long enough for several beats
    assert worker.handle(json.dumps(SAMPLE, ensure_ascii=False)) == "succeeded"

    check_context(captured.records, notice_id=NOTICE_ID, tenant_id=TENANT)
    beats = [r for r in captured.records if (r.threadName or "").startswith("heartbeat:")]
    assert beats and all(r.levelno == logging.WARNING for r in beats)
    assert {(r.step, r.attempt) for r in beats} == {("heartbeat", 1)}  # type: ignore[attr-defined]


def test_a_crashed_run_logs_its_release_with_the_context(
        build: Callable[..., Worker], captured: Captured) -> None:
    class Broken:
        def run(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug in the engine")

    worker = build(engine=Broken())
    with pytest.raises(RuntimeError):
        worker.handle(json.dumps(SAMPLE, ensure_ascii=False))
    check_context(captured.records, notice_id=NOTICE_ID, tenant_id=TENANT)
    assert [r.result for r in captured.records if getattr(r, "step", "") == "crash"] == ["released"]  # type: ignore[attr-defined]


def test_poisoned_copies_carry_what_is_known_about_them(build: Callable[..., Worker], captured: Captured) -> None:
    worker = build()
    assert worker.handle_poison(json.dumps(SAMPLE, ensure_ascii=False), dequeue_count=5) == "poisoned"
    check_context(captured.records, notice_id=NOTICE_ID, tenant_id=TENANT)
    assert captured.steps() == {"poison", "outcome"}  # recorded as failed: an outcome the alerts count

    captured.clear()
    assert worker.handle_poison("{not json at all", dequeue_count=5) == "poisoned"
    [notice_id] = {getattr(r, "notice_id", None) for r in captured.records}
    assert isinstance(notice_id, str) and notice_id.startswith("poison-")
    check_context(captured.records, notice_id=notice_id, tenant_id=None)  # no tenant can be read from it
    assert captured.steps() == {"poison", "outcome"}


def test_retry_messages_that_cannot_run_are_logged_with_the_activation_they_name(
        build: Callable[..., Worker], captured: Captured) -> None:
    worker = build()
    unknown = RetryEnvelope(notice_id="ACT-NOBODY", series=1, attempt=3)
    assert worker.handle(unknown.to_json()) == "unknown"
    check_context(captured.records, notice_id="ACT-NOBODY", tenant_id=None)
    assert {(r.step, r.attempt) for r in captured.records} == {("retry", 3)}  # type: ignore[attr-defined]

    captured.clear()
    assert worker.handle(json.dumps(SAMPLE, ensure_ascii=False)) == "succeeded"
    captured.clear()
    malformed = json.dumps({"kind": "activation-retry", "notice_id": NOTICE_ID, "series": "one"})
    assert worker.handle(malformed) == "invalid_retry"
    check_context(captured.records, notice_id=NOTICE_ID, tenant_id=TENANT)
    assert [r.levelno for r in captured.records] == [logging.WARNING]


def test_the_apis_submit_retry_drift_and_a_termination_log_with_the_context(
        build: Callable[..., Worker], worker_settings: Settings, simulator: Simulator,
        activation_store: ActivationStore, activation_queue: ActivationQueue, token_provider: MsalTokenProvider,
        captured: Captured) -> None:
    worker = build()
    checker = DriftChecker(worker_settings, store=activation_store, worker=worker,
                           client_factory=client_factory_from_settings(worker_settings, token_provider))
    api = ActivationApi(activation_store, lambda: worker, lambda: checker)

    assert api.submit(json.dumps(SAMPLE, ensure_ascii=False).encode(), requested_by="op@example.com").status == 202
    check_context(captured.records, notice_id=NOTICE_ID, tenant_id=TENANT)
    assert captured.steps() == {"receive"}
    deliver_all(worker, activation_queue, until=final(activation_store, NOTICE_ID))

    with ExchangeAdminClient(TENANT, credential=token_provider, endpoint=worker_settings.exo_admin_api_url) as admin:
        admin.update_outbound_connector(MG_NAME, {"TlsSettings": "EncryptionOnly"})
    captured.clear()
    # A tenant's check (a check of every tenant queues these and logs only how many it queued).
    assert api.drift(json.dumps({"tenant_id": TENANT}).encode(), requested_by="op@example.com").status == 202
    check_context(captured.records, notice_id=NOTICE_ID, tenant_id=TENANT)
    assert captured.steps() == {"drift"}
    assert [r.result for r in captured.records  # type: ignore[attr-defined]
            if getattr(r, "event", None) == TRANSITION_EVENT] == ["drifted"]

    captured.clear()
    assert api.retry(NOTICE_ID, requested_by="op@example.com").status == 202
    check_context(captured.records, notice_id=NOTICE_ID, tenant_id=TENANT)
    assert captured.steps() == {"operator_retry"}
    deliver_all(worker, activation_queue, until=final(activation_store, NOTICE_ID))

    captured.clear()
    assert worker.handle(json.dumps(TERMINATE, ensure_ascii=False)) == "succeeded"
    check_context(captured.records, notice_id=TERMINATE["notice_id"], tenant_id=TENANT)
    assert {"receive", "claim", "finish"} <= captured.steps()


def test_a_watchdog_taking_over_a_dead_workers_claim_logs_with_the_context(
        build: Callable[..., Worker], worker_settings: Settings, activation_store: ActivationStore,
        activation_queue: ActivationQueue, captured: Captured) -> None:
    first = build()
    assert first.accept(parse_notice(json.dumps(SAMPLE, ensure_ascii=False), worker_settings)) is not None
    queued = activation_store.get(NOTICE_ID)
    assert queued is not None
    claimed, owner = first.claim(queued)  # ... and this worker dies before it runs anything
    assert claimed is not None
    captured.clear()
    later = build(clock=lambda: datetime.now(UTC) + timedelta(minutes=5))  # past the lease
    assert later.handle(envelope(claimed, recheck_owner=owner).to_json()) == "succeeded"

    check_context(captured.records, notice_id=NOTICE_ID, tenant_id=TENANT)
    takeover = [r for r in captured.records if getattr(r, "event", None) == TRANSITION_EVENT
                and getattr(r, "step", None) == "watchdog"]
    assert [(r.result, r.attempt) for r in takeover] == [("claimed", 2)]  # type: ignore[attr-defined]
