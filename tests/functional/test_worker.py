"""The queue worker against real Azurite and the simulator: at-least-once delivery made safe.

The pump below does what the Functions host does with a queue message: hand it to the
worker, delete it on success, leave it (and finally poison it) on an exception. Retry
messages scheduled by the worker are picked up by the same pump when they become visible.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exosim import Simulator
from shared.auth import MsalTokenProvider
from shared.notice import parse_notice
from shared.provisioning import ProvisioningEngine
from shared.queueing import ActivationQueue
from shared.settings import Settings
from shared.store import ActivationStore
from shared.worker import OPERATOR_RETRY_DELAY_SECONDS, Worker
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
                               max_attempts=4, exo_call_retries=0)


@pytest.fixture
def worker(worker_settings: Settings, activation_store: ActivationStore, activation_queue: ActivationQueue,
           token_provider: MsalTokenProvider) -> Worker:
    engine = ProvisioningEngine(worker_settings, token_provider=token_provider)
    return Worker(worker_settings, store=activation_store, queue=activation_queue, engine_factory=lambda: engine)


def pump(worker: Worker, queue: ActivationQueue, *, until: float = 20.0, idle_exit: float = 1.5) -> list[str]:
    """Deliver queue messages to the worker like the Functions host; returns the results."""
    results: list[str] = []
    deadline = time.monotonic() + until
    last_work = time.monotonic()
    while time.monotonic() < deadline:
        messages = queue.receive(max_messages=16, visibility_timeout=30)
        if not messages:
            if time.monotonic() - last_work > idle_exit:
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


def test_human_action_needed_is_needs_attention_and_not_retried(worker: Worker, activation_queue: ActivationQueue,
                                                                activation_store: ActivationStore,
                                                                simulator: Simulator) -> None:
    simulator.configure_tenant(TENANT, role_missing=403)
    activation_queue.send_notice(sample())
    assert pump(worker, activation_queue) == ["needs_attention"]
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.error is not None and record.error["code"] == "ROLE_MISSING"


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
    (record,) = activation_store.list_activations(status="failed").items
    assert record.raw_message == "garbage that never parsed"


def test_a_crashed_workers_claim_is_taken_over_after_its_lease_expires(
        worker: Worker, worker_settings: Settings, activation_store: ActivationStore,
        activation_queue: ActivationQueue, simulator: Simulator) -> None:
    # given a worker that claimed the activation and died without releasing it
    worker.accept(parse_notice(sample()))
    record = activation_store.get(NOTICE_ID)
    assert record is not None
    crashed = dataclasses.replace(record, status="running", attempts=1, lease_owner="dead-worker",
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


def test_the_same_notice_id_with_other_content_is_rejected_as_a_conflict_keeping_both_hashes(
        worker: Worker, activation_store: ActivationStore, simulator: Simulator) -> None:
    assert worker.handle(sample()) == "succeeded"
    assert worker.handle(sample(mx_host="mgs.cybermail.jp")) == "conflict"
    record = activation_store.get(NOTICE_ID)
    assert record is not None and record.status == "rejected"
    assert record.error is not None and record.error["code"] == "NOTICE_CONFLICT"
    (conflict,) = [e for e in activation_store.list_events(NOTICE_ID) if e.kind == "notice.conflict"]
    assert conflict.data is not None
    assert conflict.data["first_hash"] != conflict.data["new_hash"]
    assert conflict.data["previous_status"] == "succeeded"


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
