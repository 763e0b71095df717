"""The queue worker against real Azurite: at-least-once delivery made safe.

Two harnesses. The first runs the real engine against the simulator; its pump does what the
Functions host does with a queue message: hand it to the worker, delete it on success,
leave it (and finally poison it) on an exception, and deliver retry and watchdog messages
when they become visible.

The second ("with a scripted engine") runs the worker against real Azurite tables with a
scripted stand-in for the provisioning engine, a clock the test moves, and a queue whose
sends are recorded (and, where a test says so, fail) instead of going to Azurite. Recording
is what lets a test deliver a delayed retry message "later" without waiting for it.
The decisions themselves are specified, edge by edge, in tests/unit/test_lifecycle.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from exosim import Simulator
from shared.api import ActivationApi
from shared.auth import MsalTokenProvider
from shared.errors import ErrorCode, error_dict
from shared.notice import ActivationNotice, NoticeError, parse_notice
from shared.outcome import ConnectorOutcome, Event, Outcome, Status, Validation
from shared.plan import Action
from shared.provisioning import EventSink, ProvisioningEngine
from shared.queueing import RETRY_KIND, ActivationQueue, RetryEnvelope, SentMessage
from shared.settings import Settings
from shared.store import ActivationRecord, ActivationStore, EventRecord, StoreError
from shared.worker import OPERATOR_RETRY_DELAY_SECONDS, RetryRefused, Worker
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
TENANT = SAMPLE["tenant_id"].lower()
NOTICE_ID = SAMPLE["notice_id"]
MAX_DEQUEUE = 5


def sample(**overrides: Any) -> str:
    return json.dumps({**SAMPLE, **overrides}, ensure_ascii=False)


@pytest.fixture
def worker_settings(settings: Settings, storage: StorageNames) -> Settings:
    return dataclasses.replace(settings, activation_queue=storage.queue, activations_table=storage.activations_table,
                               events_table=storage.events_table, retry_base_seconds=0.2, retry_max_seconds=1.0,
                               max_attempts=4, exo_call_retries=0, grant_propagation_attempts=0)


@pytest.fixture
def worker(worker_settings: Settings, activation_store: ActivationStore, activation_queue: ActivationQueue,
           token_provider: MsalTokenProvider) -> Worker:
    engine = ProvisioningEngine(worker_settings, token_provider=token_provider)
    return Worker(worker_settings, store=activation_store, queue=activation_queue, engine_factory=lambda: engine)


def pump(worker: Worker, queue: ActivationQueue, *, until: float = 20.0, idle_exit: float = 1.5,
         idle_max: float = 8.0) -> list[str]:
    """Deliver queue messages to the worker like the Functions host; returns the results.

    Stops once nothing arrived for `idle_exit` seconds and the queue holds no message, visible
    or delayed (a retry becomes visible only on the service's next whole second, later on a
    busy machine), or after `idle_max` idle seconds whatever it holds.
    """
    results: list[str] = []
    deadline = time.monotonic() + until
    last_work = time.monotonic()
    while time.monotonic() < deadline:
        messages = queue.receive(max_messages=16, visibility_timeout=30)
        if not messages:
            idle = time.monotonic() - last_work
            if idle > idle_max or (idle > idle_exit and queue.approximate_count() == 0):
                break
            time.sleep(0.1)
            continue
        last_work = time.monotonic()
        for message in messages:
            try:
                results.append(worker.handle(message.content, dequeue_count=message.dequeue_count))
            except Exception as exc:
                results.append(f"error:{type(exc).__name__}")
                if message.dequeue_count >= MAX_DEQUEUE:
                    queue.poison.send_notice(message.content)
                    queue.delete(message)
                continue
            queue.delete(message)
        last_work = time.monotonic()  # idle counts from the end of the work, however long a write took
    return results


def test_a_notice_on_the_queue_is_provisioned_and_recorded(worker: Worker, activation_queue: ActivationQueue,
                                                           activation_store: ActivationStore,
                                                           simulator: Simulator) -> None:
    activation_queue.send_notice(sample())
    assert pump(worker, activation_queue) == ["succeeded"]
    record = activation_store.get(NOTICE_ID)
    assert record is not None
    assert (record.status, record.attempts, record.tenant_id) == ("succeeded", 1, TENANT)
    assert [(c["action"], c["validation"]) for c in record.connectors] == [("create", "passed")] * 2
    assert record.lease_owner is None and record.finished_at is not None
    kinds = [e.kind for e in activation_store.list_events(NOTICE_ID)]
    assert kinds[:2] == ["received", "claimed"]
    assert kinds.count("exchange.call") == 8
    assert kinds[-1] == "finished"
    assert activation_queue.approximate_count() == 0  # the claim's watchdog was taken back


def test_the_same_notice_delivered_three_times_at_once_provisions_once(
        worker: Worker, activation_queue: ActivationQueue, activation_store: ActivationStore,
        simulator: Simulator) -> None:
    bodies = [sample()] * 3
    results: list[str] = []
    barrier = threading.Barrier(3)

    def deliver(body: str) -> None:
        barrier.wait()
        results.append(worker.handle(body))

    threads = [threading.Thread(target=deliver, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results += pump(worker, activation_queue, until=15)  # the busy deliveries look again later
    names = [c["Name"] for c in simulator.connectors(TENANT)]
    assert sorted(names) == sorted(set(names)) and len(names) == 2
    assert results.count("succeeded") == 1
    assert sum(1 for w in simulator.writes(TENANT) if w["cmdlet"] == "New-OutboundConnector") == 2
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.status == "succeeded"


def test_a_transient_failure_is_retried_through_the_queue_until_it_succeeds(
        worker: Worker, activation_queue: ActivationQueue, activation_store: ActivationStore,
        simulator: Simulator) -> None:
    simulator.fail_next(TENANT, 2, "unavailable")
    activation_queue.send_notice(sample())
    results = pump(worker, activation_queue, until=20)
    assert results == ["retry_scheduled", "retry_scheduled", "succeeded"]
    record = activation_store.get(NOTICE_ID)
    assert record is not None and (record.status, record.attempts) == ("succeeded", 3)
    kinds = [e.kind for e in activation_store.list_events(NOTICE_ID)]
    assert kinds.count("retry.scheduled") == 2


def test_transient_failures_past_max_attempts_end_failed_with_the_last_error(
        worker: Worker, activation_queue: ActivationQueue, activation_store: ActivationStore,
        simulator: Simulator) -> None:
    simulator.fail_next(TENANT, 50, "unavailable")
    activation_queue.send_notice(sample())
    results = pump(worker, activation_queue, until=30)
    assert results == ["retry_scheduled"] * 3 + ["failed"]
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.status == "failed" and record.attempts == 4
    assert record.error is not None and record.error["code"] == "MAX_ATTEMPTS_EXCEEDED"
    assert record.error["last_error"]["code"] == "EXCHANGE_UNAVAILABLE"
    assert record.next_attempt_at is None


def test_a_permanent_error_fails_at_once(worker: Worker, activation_queue: ActivationQueue,
                                         activation_store: ActivationStore, simulator: Simulator) -> None:
    simulator.configure_tenant(TENANT, exists=False)
    activation_queue.send_notice(sample())
    assert pump(worker, activation_queue) == ["failed"]
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.attempts == 1
    assert record.error is not None and record.error["code"] == "TENANT_NOT_FOUND"


def test_a_missing_role_is_retried_while_the_grant_propagates_then_needs_attention(
        worker_settings: Settings, activation_queue: ActivationQueue, activation_store: ActivationStore,
        token_provider: MsalTokenProvider, simulator: Simulator) -> None:
    settings = dataclasses.replace(worker_settings, grant_propagation_attempts=2, grant_propagation_base_seconds=0.2)
    engine = ProvisioningEngine(settings, token_provider=token_provider)
    worker = Worker(settings, store=activation_store, queue=activation_queue, engine_factory=lambda: engine)
    simulator.configure_tenant(TENANT, role_missing=403)
    activation_queue.send_notice(sample())
    assert pump(worker, activation_queue) == ["retry_scheduled", "retry_scheduled", "needs_attention"]
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.error is not None
    assert (record.status, record.attempts, record.propagation_waits) == ("needs_attention", 3, 2)
    assert record.error["code"] == "ROLE_MISSING" and "after 2 retries" in record.error["note"]
    waits = [e for e in activation_store.list_events(NOTICE_ID) if e.kind == "grant.waiting"]
    assert [e.message.split(":")[0] for e in waits] == ["waiting for the grant to propagate to Exchange Online"] * 2


def test_a_role_granted_while_the_activation_waits_is_picked_up_by_the_next_attempt(
        worker_settings: Settings, activation_queue: ActivationQueue, activation_store: ActivationStore,
        token_provider: MsalTokenProvider, simulator: Simulator) -> None:
    settings = dataclasses.replace(worker_settings, grant_propagation_attempts=3, grant_propagation_base_seconds=0.2)
    engine = ProvisioningEngine(settings, token_provider=token_provider)
    worker = Worker(settings, store=activation_store, queue=activation_queue, engine_factory=lambda: engine)
    simulator.configure_tenant(TENANT, role_missing=403)
    assert worker.handle(sample()) == "retry_scheduled"
    simulator.configure_tenant(TENANT, role_missing=None)  # the customer's grant reached Exchange
    assert pump(worker, activation_queue) == ["succeeded"]
    record = activation_store.get(NOTICE_ID)
    assert record is not None and (record.status, record.attempts, record.error) == ("succeeded", 2, None)


def test_an_invalid_notice_is_rejected_with_its_errors_and_not_poisoned(
        worker: Worker, activation_queue: ActivationQueue, activation_store: ActivationStore) -> None:
    activation_queue.send_notice(sample(mx_host="mx.attacker.example", services=["mailgates", "archive"]))
    assert pump(worker, activation_queue) == ["rejected"]
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.status == "rejected"
    assert record.error is not None
    assert {e["field"] for e in record.error["errors"]} == {"services"}
    assert record.raw_message and "mx.attacker.example" in record.raw_message
    assert activation_queue.poison.receive(max_messages=1) == []


def test_a_message_that_is_not_even_json_is_rejected_under_a_generated_id(
        worker: Worker, activation_store: ActivationStore) -> None:
    assert worker.handle(b"\xff\xfe not json") == "rejected"
    page = activation_store.list_activations(status="rejected")
    assert len(page.items) == 1 and page.items[0].notice_id.startswith("rejected-")


def test_a_handler_bug_releases_the_claim_and_the_poison_trigger_records_failed(
        worker: Worker, activation_queue: ActivationQueue, activation_store: ActivationStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise KeyError("bug in the engine")

    monkeypatch.setattr(worker.engine, "run", broken)
    activation_queue.send_notice(sample())
    with pytest.raises(KeyError):
        worker.handle(sample())
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.status == "queued" and record.lease_owner is None
    assert record.error is not None and record.error["code"] == "UNHANDLED"
    # the host gives up after maxDequeueCount deliveries and moves the message to the poison queue
    assert worker.handle_poison(sample(), dequeue_count=5) == "poisoned"
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.status == "failed"
    assert record.error is not None and record.error["code"] == "UNHANDLED"
    assert record.raw_message == sample()


def test_a_poisoned_message_of_an_unknown_notice_is_kept_whole(worker: Worker,
                                                               activation_store: ActivationStore) -> None:
    assert worker.handle_poison("garbage that never parsed", dequeue_count=5) == "poisoned"
    (listed,) = activation_store.list_activations(status="failed").items
    record = activation_store.get(listed.notice_id)  # a list shows the listed fields; the row keeps the evidence
    assert record is not None and record.raw_message == "garbage that never parsed"


def test_a_crashed_workers_claim_is_taken_over_after_its_lease_expires(
        worker: Worker, worker_settings: Settings, activation_store: ActivationStore,
        activation_queue: ActivationQueue, simulator: Simulator) -> None:
    # given a worker that claimed the activation and died without releasing it
    worker.accept(parse_notice(sample()))
    record = activation_store.get(NOTICE_ID)
    assert record is not None
    crashed = dataclasses.replace(record, status=Status.RUNNING, attempts=1, lease_owner="dead-worker",
                                  lease_expires_at=datetime.now(UTC) + timedelta(seconds=600))
    activation_store.replace(crashed)
    # when the message is redelivered while the lease is live, it is handed back for later
    assert worker.handle(sample()) == "busy"
    # and when it is redelivered after the lease expired, this worker takes over
    later = Worker(worker_settings, store=activation_store, queue=activation_queue,
                   engine_factory=lambda: worker.engine,
                   clock=lambda: datetime.now(UTC) + timedelta(seconds=601))
    assert later.handle(sample()) == "succeeded"
    events = activation_store.list_events(NOTICE_ID)
    assert any(e.kind == "claimed" and (e.data or {}).get("takeover") for e in events)
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.attempts == 2


def test_a_finished_notice_delivered_again_does_no_new_work(worker: Worker, activation_store: ActivationStore,
                                                            simulator: Simulator) -> None:
    assert worker.handle(sample()) == "succeeded"
    simulator.reset_log()
    assert worker.handle(sample()) == "duplicate"
    assert simulator.calls(TENANT) == {}


def test_a_conflicting_notice_on_the_queue_leaves_a_succeeded_activation_succeeded(
        worker: Worker, activation_store: ActivationStore, simulator: Simulator) -> None:
    assert worker.handle(sample()) == "succeeded"
    before = activation_store.get(NOTICE_ID)
    simulator.reset_log()
    assert worker.handle(sample(mx_host="mgs.cybermail.jp")) == "conflict"
    record = activation_store.get(NOTICE_ID)
    assert record is not None and before is not None
    assert (record.status, record.error, record.connectors, record.finished_at, record.attempts) == (
        "succeeded", None, before.connectors, before.finished_at, 1)
    (warning,) = record.warnings
    assert warning["code"] == "NOTICE_CONFLICT" and warning["first_hash"] == before.content_hash
    (conflict,) = [e for e in activation_store.list_events(NOTICE_ID) if e.kind == "notice.conflict"]
    assert conflict.data is not None
    assert (conflict.data["first_hash"], conflict.data["previous_status"]) == (before.content_hash, "succeeded")
    assert conflict.data["new_hash"] == warning["new_hash"] != before.content_hash
    assert simulator.calls(TENANT) == {}


def test_an_operator_retry_starts_a_fresh_series(worker: Worker, activation_queue: ActivationQueue,
                                                 activation_store: ActivationStore, simulator: Simulator) -> None:
    simulator.configure_tenant(TENANT, role_missing=403)
    assert worker.handle(sample()) == "needs_attention"
    simulator.configure_tenant(TENANT, role_missing=None)  # the customer assigned the role
    record = worker.retry(NOTICE_ID)
    assert (record.status, record.series, record.attempts) == ("queued", 2, 0)
    # the retry message waits a moment so that it arrives after the row's new series
    assert pump(worker, activation_queue, idle_exit=OPERATOR_RETRY_DELAY_SECONDS + 2) == ["succeeded"]
    record2 = activation_store.get(NOTICE_ID)
    assert record2 is not None and (record2.status, record2.series, record2.attempts) == ("succeeded", 2, 1)


def test_a_poisoned_copy_of_a_finished_notice_leaves_its_status_alone(worker: Worker,
                                                                      activation_store: ActivationStore) -> None:
    assert worker.handle(sample()) == "succeeded"
    assert worker.handle_poison(sample(), dequeue_count=1) == "poisoned_duplicate"
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.status == "succeeded" and record.error is None
    assert activation_store.list_events(NOTICE_ID)[-1].kind == "poisoned"


def test_a_poisoned_notice_never_seen_before_is_listed_under_its_tenant(worker: Worker,
                                                                        activation_store: ActivationStore) -> None:
    assert worker.handle_poison(sample(), dequeue_count=1) == "poisoned"
    (record,) = activation_store.list_activations(tenant_id=TENANT).items
    assert (record.notice_id, record.status) == (NOTICE_ID, "failed")
    assert record.error is not None and "maxDequeueCount" in record.error["message"]


def test_only_one_of_five_simultaneous_claims_wins(worker: Worker, activation_store: ActivationStore,
                                                   worker_settings: Settings,
                                                   activation_queue: ActivationQueue) -> None:
    record = worker.accept(parse_notice(sample()))
    assert record is not None
    workers = [Worker(worker_settings, store=activation_store, queue=activation_queue,
                      engine_factory=lambda: worker.engine, owner_prefix=f"w{i}") for i in range(5)]
    barrier = threading.Barrier(5)
    results: dict[int, tuple[ActivationRecord | None, str]] = {}

    def claim(i: int) -> None:
        barrier.wait()
        results[i] = workers[i].claim(record)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [(claimed, owner) for claimed, owner in results.values() if claimed is not None]
    assert len(results) == 5 and len(winners) == 1
    assert sorted(why for claimed, why in results.values() if claimed is None) == ["busy"] * 4
    stored = activation_store.get(NOTICE_ID)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.lease_owner) == ("running", 1, winners[0][1])


def test_a_heartbeat_keeps_a_long_run_from_being_taken_over(
        worker_settings: Settings, activation_store: ActivationStore, activation_queue: ActivationQueue) -> None:
    settings = dataclasses.replace(worker_settings, lease_seconds=1.5, heartbeat_seconds=0.3)
    during: list[str] = []

    class SlowEngine:
        def run(self, notice: ActivationNotice, *, on_event: EventSink | None = None) -> Outcome:
            time.sleep(2.5)  # one Exchange call longer than the whole lease, reporting nothing
            rival = Worker(settings, store=activation_store, queue=activation_queue,
                           engine_factory=lambda: cast(ProvisioningEngine, self), owner_prefix="rival")
            during.append(rival.handle(sample()))
            return succeeded(notice)

    engine = SlowEngine()
    worker = Worker(settings, store=activation_store, queue=activation_queue,
                    engine_factory=lambda: cast(ProvisioningEngine, engine))
    assert worker.handle(sample()) == "succeeded"
    assert during == ["busy"]
    record = activation_store.get(NOTICE_ID)
    assert record is not None and (record.status, record.attempts) == ("succeeded", 1)


def test_a_worker_that_dies_mid_run_is_taken_over_by_its_watchdog_once_the_lease_ends(
        worker_settings: Settings, activation_store: ActivationStore, activation_queue: ActivationQueue) -> None:
    # The host's own redelivery of the dead worker's message would take 10 minutes; nothing
    # here redelivers it: only the claim's watchdog message brings the activation back.
    settings = dataclasses.replace(worker_settings, lease_seconds=1.5, heartbeat_seconds=0.3)
    engine = StubEngine()

    def die(notice: ActivationNotice, on_event: EventSink | None) -> Outcome:
        raise ProcessDied

    engine.script.append(die)
    worker = Worker(settings, store=activation_store, queue=activation_queue,
                    engine_factory=lambda: cast(ProvisioningEngine, engine))
    with pytest.raises(ProcessDied):
        worker.handle(sample())
    assert activation_queue.approximate_count() == 1  # the watchdog, and nothing else
    results = pump(worker, activation_queue, until=30, idle_exit=6.0)  # a watchdog is due 4 s after its claim
    assert results == ["succeeded"]
    assert activation_queue.approximate_count() == 0  # the takeover took its own watchdog back when it finished
    record = activation_store.get(NOTICE_ID)
    assert record is not None and (record.status, record.attempts) == ("succeeded", 2)
    kinds = [e.kind for e in activation_store.list_events(NOTICE_ID)]
    assert kinds.count("claimed") == 2 and "lease.expired" in kinds


def test_a_missing_client_id_is_a_config_invalid_record_not_a_bug(
        worker_settings: Settings, activation_store: ActivationStore, activation_queue: ActivationQueue) -> None:
    from shared.auth import token_provider_from_settings

    settings = dataclasses.replace(worker_settings, exo_client_id="")
    worker = Worker(settings, store=activation_store, queue=activation_queue,
                    engine_factory=lambda: ProvisioningEngine(settings,
                                                              token_provider=token_provider_from_settings(settings)))
    assert worker.handle(sample()) == "needs_attention"
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.error is not None
    assert (record.status, record.error["code"], record.lease_owner) == ("needs_attention", "CONFIG_INVALID", None)
    assert "EXO_CLIENT_ID" in record.error["message"]


def test_a_notice_whose_issued_at_overflows_is_rejected_and_the_poison_trigger_records_it(
        worker: Worker, activation_store: ActivationStore, activation_queue: ActivationQueue) -> None:
    body = sample(notice_id="ACT-OVERFLOW", issued_at="9999-12-31T23:59:59-14:00")
    assert worker.handle(body) == "rejected"
    record = activation_store.get("ACT-OVERFLOW")
    assert record is not None and record.status == "rejected" and record.raw_message == body
    assert worker.handle_poison(body, dequeue_count=1) == "poisoned_duplicate"
    fresh = "ACT-OVERFLOW-2"
    assert worker.handle_poison(sample(notice_id=fresh, issued_at="9999-12-31T23:59:59-14:00")) == "poisoned"
    poisoned = activation_store.get(fresh)
    assert poisoned is not None and poisoned.status == "failed" and "9999-12-31" in (poisoned.raw_message or "")
    assert activation_queue.poison.approximate_count() == 0


def test_an_unreadable_poison_copy_under_a_succeeded_activations_id_leaves_it_succeeded(
        worker: Worker, activation_store: ActivationStore, simulator: Simulator) -> None:
    assert worker.handle(sample()) == "succeeded"
    body = sample(issued_at="9999-12-31T23:59:59-14:00")
    assert worker.handle_poison(body, dequeue_count=1) == "poison_conflict"
    assert worker.handle_poison(sample(mx_host="mgs.cybermail.jp"), dequeue_count=1) == "poison_conflict"
    record = activation_store.get(NOTICE_ID)
    assert record is not None and (record.status, record.error) == ("succeeded", None)
    conflicts = [e for e in activation_store.list_events(NOTICE_ID) if e.kind == "poison.conflict"]
    assert len(conflicts) == 2 and conflicts[0].data is not None and conflicts[0].data["raw_message"] == body


def test_the_poison_trigger_puts_a_message_it_cannot_record_back_on_the_poison_queue(
        worker: Worker, activation_store: ActivationStore, activation_queue: ActivationQueue,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def down(notice_id: str) -> ActivationRecord | None:
        raise HttpResponseError(message="503 Server Busy")

    monkeypatch.setattr(activation_store, "get", down)
    assert worker.handle_poison(sample(), dequeue_count=1) == "poison_requeued"  # returned, not raised
    assert activation_queue.poison.approximate_count() == 1


# == with a scripted engine =======================================================================
Step = Callable[[ActivationNotice, EventSink | None], Outcome]


def succeeded(notice: ActivationNotice, on_event: EventSink | None = None) -> Outcome:
    return Outcome(
        notice_id=notice.notice_id, tenant_id=notice.tenant_id, status=Status.SUCCEEDED,
        connectors=[ConnectorOutcome(name="Enterprise Audit送信コネクタ", service="enterprise_audit",
                                     action=Action.CREATE, validation=Validation.PASSED)],
        events=[Event("finished", "activation succeeded")],
    )


def transient(notice: ActivationNotice, on_event: EventSink | None = None) -> Outcome:
    return Outcome(
        notice_id=notice.notice_id, tenant_id=notice.tenant_id, status=Status.FAILED, retryable=True,
        error=error_dict(ErrorCode.THROTTLED, "Exchange is throttling this tenant"),
        events=[Event("error", "THROTTLED")],
    )


class ProcessDied(BaseException):
    """Stands for the worker process dying mid-run (OOM, host recycle, functionTimeout restart).

    A BaseException passes the worker's `except Exception`, so, as after a real crash, nothing
    after the claim is recorded: the lease stays on the row until it expires.
    """


class StubEngine:
    """Plays `script` one step per run, then `default`; remembers each run."""

    def __init__(self) -> None:
        self.script: list[Step] = []
        self.default: Step = succeeded
        self.runs: list[str] = []

    def run(self, notice: ActivationNotice, *, on_event: EventSink | None = None) -> Outcome:
        self.runs.append(notice.notice_id)
        step = self.script.pop(0) if self.script else self.default
        return step(notice, on_event)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


_SENT = SentMessage(id="recorded", pop_receipt=None, inserted_on=None, next_visible_on=None, expires_on=None)


@dataclass
class Sends:
    """What the worker put on the queue; a failure listed here is raised by the next such send.

    Watchdog messages (a claim's "look again when the lease ends") are kept apart from retry
    messages, so a test can count each.
    """

    envelopes: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    retry_failures: list[Exception] = field(default_factory=list)
    notice_failures: list[Exception] = field(default_factory=list)

    def schedule_retry(self, envelope: RetryEnvelope | Mapping[str, Any], *, delay_seconds: float) -> SentMessage:
        data = envelope.to_dict() if isinstance(envelope, RetryEnvelope) else dict(envelope)
        self.envelopes.append((data, delay_seconds))  # stored by the service even when the reply is lost
        if self.retry_failures and "recheck_owner" not in data:
            raise self.retry_failures.pop(0)
        return _SENT

    def send_notice(self, body: str | bytes, *, delay_seconds: float = 0) -> SentMessage:
        if self.notice_failures:
            raise self.notice_failures.pop(0)
        self.notices.append(body if isinstance(body, str) else body.decode("utf-8"))
        return _SENT

    def retries(self) -> list[tuple[dict[str, Any], float]]:
        return [(e, d) for e, d in self.envelopes if "recheck_owner" not in e]

    def watchdogs(self) -> list[tuple[dict[str, Any], float]]:
        return [(e, d) for e, d in self.envelopes if "recheck_owner" in e]


@dataclass
class Harness:
    settings: Settings
    store: ActivationStore
    queue: ActivationQueue
    clock: Clock
    engine: StubEngine
    sends: Sends
    worker: Worker

    def new_worker(self) -> Worker:
        """Another worker process on the same tables, queue and clock."""
        return Worker(self.settings, store=self.store, queue=self.queue,
                      engine_factory=lambda: cast(ProvisioningEngine, self.engine), clock=self.clock,
                      owner_prefix=f"other-{uuid.uuid4().hex[:6]}")

    def deliver(self, envelope: Mapping[str, Any]) -> str:
        return self.worker.handle(json.dumps(envelope))

    def notice(self, body: str | None = None) -> ActivationNotice:
        return parse_notice(body or sample(), self.settings)

    def record(self) -> ActivationRecord:
        record = self.store.get(NOTICE_ID)
        assert record is not None
        return record


@pytest.fixture
def h(storage: StorageNames, activation_store: ActivationStore, activation_queue: ActivationQueue,
      monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    settings = Settings(activation_queue=storage.queue, activations_table=storage.activations_table,
                        events_table=storage.events_table, max_attempts=5, retry_base_seconds=600.0,
                        retry_max_seconds=3600.0, lease_seconds=600.0)
    sends = Sends()
    monkeypatch.setattr(activation_queue, "schedule_retry", sends.schedule_retry)
    monkeypatch.setattr(activation_queue, "send_notice", sends.send_notice)
    engine = StubEngine()
    clock = Clock()
    worker = Worker(settings, store=activation_store, queue=activation_queue,
                    engine_factory=lambda: cast(ProvisioningEngine, engine), clock=clock)
    yield Harness(settings, activation_store, activation_queue, clock, engine, sends, worker)


def test_the_scripted_harness_drives_the_normal_paths_as_the_product_does(h: Harness) -> None:
    h.engine.script.append(transient)
    assert h.worker.handle(sample()) == "retry_scheduled"
    (envelope, delay), = h.sends.retries()
    assert 300 <= delay <= 600 and envelope["series"] == 1
    (watchdog, watch_delay), = h.sends.watchdogs()
    assert watch_delay == h.settings.lease_seconds + 2
    h.clock.advance(delay + 1)
    assert h.deliver(envelope) == "succeeded"
    assert (h.record().status, h.record().attempts) == ("succeeded", 2)
    assert h.deliver(watchdog) == "duplicate"
    with pytest.raises(RetryRefused):
        h.worker.retry("never-seen")


# -- nothing lost ---------------------------------------------------------------------------------
def test_an_invalid_copy_racing_a_valid_notice_does_not_clobber_it(h: Harness, monkeypatch: pytest.MonkeyPatch
                                                                    ) -> None:
    valid = h.worker.accept(h.notice())
    assert valid is not None
    bad = sample(mx_host="mx.attacker.example")
    with pytest.raises(NoticeError) as caught:
        h.notice(bad)
    # The invalid copy's worker read the row just before the valid copy's worker created it.
    real_get = h.store.get
    stale_reads: list[ActivationRecord | None] = [None]

    def get(notice_id: str) -> ActivationRecord | None:
        return stale_reads.pop() if stale_reads else real_get(notice_id)

    monkeypatch.setattr(h.store, "get", get)
    h.worker.record_rejected(bad, caught.value)
    record = h.record()
    assert (record.status, record.content_hash) == ("queued", valid.content_hash)
    assert h.worker.handle(sample()) == "succeeded"


def test_a_notice_recorded_by_the_poison_trigger_can_be_retried_by_an_operator(h: Harness) -> None:
    assert h.worker.handle_poison(sample(), dequeue_count=1) == "poisoned"
    h.worker.retry(NOTICE_ID)
    (envelope, _), = h.sends.retries()
    assert h.deliver(envelope) == "succeeded"


def test_a_notice_recorded_by_the_poison_trigger_and_resubmitted_waits_for_an_operator_retry(h: Harness) -> None:
    assert h.worker.handle_poison(sample(), dequeue_count=1) == "poisoned"
    assert h.worker.handle(sample()) == "duplicate"
    record = h.record()
    assert record.error is not None
    assert (record.status, record.error["code"], record.warnings) == ("failed", "UNHANDLED", [])


def test_a_poisoned_envelope_of_an_old_series_does_not_fail_the_current_series(h: Harness) -> None:
    record = h.worker.accept(h.notice())
    assert record is not None
    h.store.replace(replace(record, status=Status.NEEDS_ATTENTION))
    assert h.worker.retry(NOTICE_ID).series == 2
    old = {"kind": RETRY_KIND, "notice_id": NOTICE_ID, "series": 1, "attempt": 1}
    assert h.worker.handle_poison(json.dumps(old), dequeue_count=1) == "poisoned_duplicate"
    assert h.record().status == "queued"
    (operator_retry, _), = h.sends.retries()
    assert h.deliver(operator_retry) == "succeeded"


def test_a_submit_whose_enqueue_fails_leaves_no_orphan_queued_record(h: Harness) -> None:
    h.sends.notice_failures.append(ServiceRequestError("connection reset while sending the message"))
    api = ActivationApi(h.store, lambda: h.worker)
    with pytest.raises(ServiceRequestError):
        api.submit(sample().encode())
    assert h.sends.notices == []
    assert h.store.get(NOTICE_ID) is None


# -- phantom leases and crash loops ---------------------------------------------------------------
def test_a_failed_history_write_after_the_claim_leaves_no_phantom_lease(h: Harness,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real_append = h.store.append_events
    failures = [StoreError("appending 1 events failed: ServerBusy")]

    def append_events(events: Iterable[EventRecord]) -> list[EventRecord]:
        events = list(events)
        if failures and any(e.kind == "claimed" for e in events):
            raise failures.pop()
        return real_append(events)

    monkeypatch.setattr(h.store, "append_events", append_events)
    assert h.worker.handle(sample()) == "succeeded"  # history is best effort after the claim
    assert failures == []
    record = h.record()
    assert (record.status, record.lease_owner) == ("succeeded", None)


def test_a_failed_outcome_write_leaves_no_phantom_lease(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = h.store.replace
    failures = [HttpResponseError(message="503 Server Busy")]

    def replace_row(record: ActivationRecord, **options: Any) -> ActivationRecord:
        if failures and record.status == "succeeded":
            raise failures.pop()
        return real_replace(record, **options)

    monkeypatch.setattr(h.store, "replace", replace_row)
    with pytest.raises(HttpResponseError):
        h.worker.handle(sample())
    assert (h.record().status, h.record().lease_owner) == ("queued", None)  # released for the redelivery
    h.clock.advance(30)  # host.json visibilityTimeout: the host delivers the message again
    assert h.new_worker().handle(sample()) == "succeeded"
    assert (h.record().status, h.record().attempts) == ("succeeded", 2)


def test_a_notice_that_kills_its_worker_every_time_ends_failed(h: Harness) -> None:
    def die(notice: ActivationNotice, on_event: EventSink | None) -> Outcome:
        raise ProcessDied

    h.engine.default = die
    for _ in range(h.settings.max_attempts + 3):
        with contextlib.suppress(ProcessDied):
            h.new_worker().handle(sample())
        h.clock.advance(h.settings.lease_seconds + 1)
    assert len(h.engine.runs) == h.settings.max_attempts
    record = h.record()
    assert record.error is not None
    assert (record.status, record.error["code"], record.lease_owner) == ("failed", "MAX_ATTEMPTS_EXCEEDED", None)


def test_a_run_longer_than_the_lease_is_not_taken_over(h: Harness) -> None:
    duplicate: list[str] = []

    def slow(notice: ActivationNotice, on_event: EventSink | None) -> Outcome:
        for _ in range(4):  # slow Exchange calls, each reported as it completes
            h.clock.advance(h.settings.lease_seconds / 3)
            if on_event is not None:
                on_event(Event("exchange.call", "Validate-OutboundConnector -> 200"))
        duplicate.append(h.new_worker().handle(sample()))
        return succeeded(notice)

    h.engine.script.append(slow)
    result = h.worker.handle(sample())
    assert duplicate == ["busy"]
    assert (result, len(h.engine.runs)) == ("succeeded", 1)


def test_a_run_that_cannot_renew_its_lease_for_a_whole_lease_stops_before_its_next_call(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = h.store.replace
    storage_down = [True]

    def replace_row(record: ActivationRecord, **options: Any) -> ActivationRecord:
        if storage_down[0] and record.status == "running":
            raise HttpResponseError(message="503 Server Busy")
        return real_replace(record, **options)

    calls_after_loss: list[str] = []

    def cut_off(notice: ActivationNotice, on_event: EventSink | None) -> Outcome:
        assert on_event is not None
        monkeypatch.setattr(h.store, "replace", replace_row)
        h.clock.advance(h.settings.lease_seconds * 0.6)
        on_event(Event("exchange.call", "Get-OutboundConnector -> 200"))  # renewal fails; the lease has slack
        h.clock.advance(h.settings.lease_seconds * 0.5)
        on_event(Event("exchange.call", "Get-AcceptedDomain -> 200"))  # a whole lease without renewal: stop
        calls_after_loss.append("New-OutboundConnector")
        return succeeded(notice)

    h.engine.script.append(cut_off)
    assert h.worker.handle(sample()) == "lease_lost"
    assert calls_after_loss == []
    storage_down[0] = False
    assert h.new_worker().handle(sample()) == "succeeded"  # the lease had run out: taken over
    assert (h.record().status, h.record().attempts) == ("succeeded", 2)


# -- one run at a time, one retry chain -----------------------------------------------------------
def test_a_watchdog_of_an_earlier_attempt_does_not_start_a_second_run(h: Harness) -> None:
    h.engine.default = transient
    record = h.worker.accept(h.notice())
    assert record is not None
    holder = h.new_worker()
    claimed, owner = holder.claim(record)
    assert claimed is not None
    assert h.worker.handle(sample()) == "busy"  # a duplicate delivery while the holder runs
    (watchdog, watch_delay), = h.sends.watchdogs()
    assert holder.finish(claimed, transient(h.notice()), owner=owner) == "retry_scheduled"
    (retry1, retry1_delay), = h.sends.retries()
    h.clock.advance(retry1_delay + 1)
    assert h.deliver(retry1) == "retry_scheduled"  # attempt 2, as scheduled; attempt 3 is now pending
    h.clock.advance(max(0.0, watch_delay - retry1_delay))
    runs = len(h.engine.runs)
    assert h.deliver(watchdog) == "stale"
    assert len(h.engine.runs) == runs


def test_each_scheduled_attempt_runs_once_when_the_retry_send_reply_is_lost(h: Harness) -> None:
    h.engine.default = transient
    h.sends.retry_failures.append(ServiceResponseError("timed out reading the reply"))
    with pytest.raises(ServiceResponseError):
        h.worker.handle(sample())
    h.clock.advance(30)  # the host delivers the original notice again
    assert h.worker.handle(sample()) == "scheduled"  # the lost retry is sent again, for the same due time
    h.clock.advance(7200)  # every retry message sent so far is due
    for envelope, _ in list(h.sends.envelopes):
        h.deliver(envelope)
    assert len(h.engine.runs) == 2


def test_a_stale_series_envelope_does_not_run_when_an_operator_retry_lands_in_between(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.engine.default = transient
    assert h.worker.handle(sample()) == "retry_scheduled"
    (retry1, delay), = h.sends.retries()
    h.clock.advance(delay + 1)
    real_get = h.store.get
    raced: list[bool] = []

    def get(notice_id: str) -> ActivationRecord | None:
        current = real_get(notice_id)
        if not raced:  # the operator's retry lands right after the envelope's series check read the row
            raced.append(True)
            h.new_worker().retry(notice_id)
        return current

    monkeypatch.setattr(h.store, "get", get)
    assert h.deliver(retry1) == "stale"
    assert len(h.engine.runs) == 1


# -- bad input is recorded, never raised ----------------------------------------------------------
@pytest.mark.parametrize(("body", "result"), [
    ('{"kind": "activation-retry", "notice_id": "ACT-2026-0001", "series": "two", "attempt": 1}', "invalid_retry"),
    ('{"kind": "activation-retry", "notice_id": "ACT-2026-0001", "series": [1], "attempt": 1}', "invalid_retry"),
    ('{"kind": ' + "[" * 20000 + "]" * 20000 + "}", "rejected"),
], ids=["series-text", "series-list", "deeply-nested"])
def test_a_malformed_message_is_recorded_not_raised(h: Harness, body: str, result: str) -> None:
    h.engine.default = transient
    assert h.worker.handle(sample()) == "retry_scheduled"
    assert h.worker.handle(body) == result
    assert h.record().status == "retry_scheduled"


def test_the_poison_trigger_recording_the_same_message_twice_keeps_one_record(h: Harness) -> None:
    assert h.worker.handle_poison("garbage that never parsed", dequeue_count=1) == "poisoned"
    assert h.worker.handle_poison("garbage that never parsed", dequeue_count=2) == "poisoned_duplicate"
    (listed,) = h.store.list_activations(status="failed").items
    record = h.store.get(listed.notice_id)
    assert record is not None
    assert record.notice_id.startswith("poison-") and record.raw_message == "garbage that never parsed"


# -- a finished activation keeps its truth --------------------------------------------------------
def test_a_conflicting_notice_during_a_run_does_not_discard_the_runs_outcome(h: Harness) -> None:
    conflict: list[str] = []

    def run_meanwhile_conflict(notice: ActivationNotice, on_event: EventSink | None) -> Outcome:
        conflict.append(h.new_worker().handle(sample(mx_host="mgs.cybermail.jp")))
        return succeeded(notice)

    h.engine.script.append(run_meanwhile_conflict)
    assert h.worker.handle(sample()) == "succeeded"
    record = h.record()
    assert conflict == ["conflict"]
    assert (record.status, record.lease_owner, len(record.connectors)) == ("succeeded", None, 1)
    assert [w["code"] for w in record.warnings] == ["NOTICE_CONFLICT"]


def test_a_conflicting_notice_over_http_is_refused_and_leaves_a_succeeded_activation_succeeded(h: Harness) -> None:
    assert h.worker.handle(sample()) == "succeeded"
    before = h.record()
    response = ActivationApi(h.store, lambda: h.worker).submit(sample(mx_host="mgs.cybermail.jp").encode())
    assert response.status == 409
    assert (response.body["status"], response.body["error"]["code"]) == ("succeeded", "NOTICE_CONFLICT")
    assert before.content_hash[:12] in response.body["error"]["message"]
    record = h.record()
    assert (record.status, record.error, record.connectors, record.finished_at) == (
        "succeeded", None, before.connectors, before.finished_at)
    assert h.sends.notices == []  # the refused notice was never queued


def test_the_same_notice_with_issued_at_in_another_offset_is_a_duplicate(h: Harness) -> None:
    assert h.worker.handle(sample()) == "succeeded"
    assert h.worker.handle(sample(issued_at="2026-11-30T00:00:00Z")) == "duplicate"
    assert h.record().status == "succeeded"


def test_an_invalid_resubmission_is_answered_about_the_notice_sent(h: Harness) -> None:
    assert h.worker.handle(sample()) == "succeeded"
    response = ActivationApi(h.store, lambda: h.worker).submit(sample(mx_host="mx.attacker.example").encode())
    assert response.status == 400
    assert (response.body["notice_id"], response.body["status"]) == (NOTICE_ID, "rejected")
    assert [e["field"] for e in response.body["errors"]] == ["mx_host"]
    assert h.record().status == "succeeded"  # the valid activation under that id is untouched


def test_the_status_document_shows_the_latest_events_of_a_long_history(h: Harness) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    h.store.append_events(EventRecord(NOTICE_ID, "exchange.call", f"call {i}", at=start + timedelta(seconds=i))
                          for i in range(250))
    assert h.worker.handle(sample()) == "succeeded"
    total = len(h.store.list_events(NOTICE_ID))
    doc = ActivationApi(h.store, lambda: h.worker).get(NOTICE_ID).body
    assert (doc["events_total"], doc["events_truncated"], len(doc["events"])) == (total, True, 200)
    assert doc["events"][-1]["kind"] == "finished"


def test_the_status_document_does_not_reveal_worker_host_names(h: Harness) -> None:
    assert h.worker.handle(sample()) == "succeeded"
    doc = ActivationApi(h.store, lambda: h.worker).get(NOTICE_ID).body
    assert h.worker.owner_prefix not in json.dumps(doc, ensure_ascii=False)
