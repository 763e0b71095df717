"""Review findings for the queue worker: each test shows one way a notice is lost, duplicated or misreported.

Each test was written failing, for the reason its name gives, and now guards the fix.

The worker runs against real Azurite tables with a scripted stand-in for the provisioning
engine, a clock the test moves, and a queue whose sends are recorded (and, where a test says
so, fail) instead of going to Azurite. Recording is what lets a test deliver a delayed retry
message "later" without waiting for it, and count how many are pending.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from shared.api import ActivationApi
from shared.errors import ErrorCode, error_dict
from shared.notice import ActivationNotice, NoticeError, parse_notice
from shared.outcome import ConnectorOutcome, Event, Outcome, Status, Validation
from shared.provisioning import EventSink, ProvisioningEngine
from shared.queueing import RETRY_KIND, ActivationQueue, RetryEnvelope, SentMessage
from shared.settings import Settings
from shared.store import ActivationRecord, ActivationStore, EventRecord, StoreError
from shared.worker import RetryRefused, Worker
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
NOTICE_ID: str = SAMPLE["notice_id"]


def sample(**overrides: Any) -> str:
    return json.dumps({**SAMPLE, **overrides}, ensure_ascii=False)


# -- a scripted engine ----------------------------------------------------------------------------
Step = Callable[[ActivationNotice, EventSink | None], Outcome]


def succeeded(notice: ActivationNotice, on_event: EventSink | None = None) -> Outcome:
    return Outcome(
        notice_id=notice.notice_id, tenant_id=notice.tenant_id, status=Status.SUCCEEDED,
        connectors=[ConnectorOutcome(name="Enterprise Audit送信コネクタ", service="enterprise_audit",
                                     action="create", validation=Validation.PASSED)],
        events=[Event("finished", "activation succeeded")],
    )


def transient(notice: ActivationNotice, on_event: EventSink | None = None) -> Outcome:
    return Outcome(
        notice_id=notice.notice_id, tenant_id=notice.tenant_id, status=Status.FAILED, retryable=True,
        error=error_dict(ErrorCode.THROTTLED, "Exchange is throttling this tenant", retryable=True),
        events=[Event("error", "THROTTLED")],
    )


class ProcessDied(BaseException):
    """Stands for the worker process dying mid-run (OOM, host recycle, functionTimeout restart).

    A BaseException passes the worker's `except Exception`, so, as after a real crash, nothing
    after the claim runs: the lease stays on the row until it expires.
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
    """What the worker put on the queue; a failure listed here is raised by the next such send."""

    envelopes: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    envelope_failures: list[Exception] = field(default_factory=list)
    notice_failures: list[Exception] = field(default_factory=list)

    def schedule_retry(self, envelope: RetryEnvelope | Mapping[str, Any], *, delay_seconds: float) -> SentMessage:
        data = envelope.to_dict() if isinstance(envelope, RetryEnvelope) else dict(envelope)
        self.envelopes.append((data, delay_seconds))  # stored by the service even when the reply is lost
        if self.envelope_failures:
            raise self.envelope_failures.pop(0)
        return _SENT

    def send_notice(self, body: str | bytes, *, delay_seconds: float = 0) -> SentMessage:
        if self.notice_failures:
            raise self.notice_failures.pop(0)
        self.notices.append(body if isinstance(body, str) else body.decode("utf-8"))
        return _SENT


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


# == lost notices ===================================================================================
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
    (envelope, _), = h.sends.envelopes
    assert h.deliver(envelope) == "succeeded"


def test_a_notice_recorded_by_the_poison_trigger_can_be_resubmitted(h: Harness) -> None:
    assert h.worker.handle_poison(sample(), dequeue_count=1) == "poisoned"
    # Either the resubmission runs, or (the placeholder kept the notice) it is a duplicate an operator can retry.
    assert h.worker.handle(sample()) in ("succeeded", "duplicate")
    error = h.record().error or {}
    assert error.get("code") != "NOTICE_CONFLICT"


def test_a_poisoned_envelope_of_an_old_series_does_not_fail_the_current_series(h: Harness) -> None:
    record = h.worker.accept(h.notice())
    assert record is not None
    h.store.replace(replace(record, status="needs_attention"))
    assert h.worker.retry(NOTICE_ID).series == 2
    old = {"kind": RETRY_KIND, "notice_id": NOTICE_ID, "series": 1, "attempt": 1}
    h.worker.handle_poison(json.dumps(old), dequeue_count=1)
    assert h.record().status == "queued"
    (operator_retry, _), = h.sends.envelopes
    assert h.deliver(operator_retry) == "succeeded"


def test_a_submit_whose_enqueue_fails_leaves_no_orphan_queued_record(h: Harness) -> None:
    h.sends.notice_failures.append(ServiceRequestError("connection reset while sending the message"))
    api = ActivationApi(h.store, lambda: h.worker)
    with contextlib.suppress(ServiceRequestError):
        api.submit(sample().encode())
    assert h.sends.notices == []
    record = h.store.get(NOTICE_ID)
    assert record is None or record.status != "queued"


# == phantom leases and crash loops =================================================================
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
    with contextlib.suppress(StoreError):
        h.worker.handle(sample())
    h.clock.advance(30)  # host.json visibilityTimeout: the host delivers the message again
    assert h.new_worker().handle(sample()) != "busy"


def test_a_failed_outcome_write_leaves_no_phantom_lease(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = h.store.replace
    failures = [HttpResponseError(message="503 Server Busy")]

    def replace_row(record: ActivationRecord) -> ActivationRecord:
        if failures and record.status == "succeeded":
            raise failures.pop()
        return real_replace(record)

    monkeypatch.setattr(h.store, "replace", replace_row)
    with contextlib.suppress(HttpResponseError):
        h.worker.handle(sample())
    h.clock.advance(30)
    assert h.new_worker().handle(sample()) != "busy"
    assert h.record().status == "succeeded"


def test_a_notice_that_kills_its_worker_every_time_ends_failed(h: Harness) -> None:
    def die(notice: ActivationNotice, on_event: EventSink | None) -> Outcome:
        raise ProcessDied

    h.engine.default = die
    for _ in range(h.settings.max_attempts + 3):
        with contextlib.suppress(ProcessDied):
            h.new_worker().handle(sample())
        h.clock.advance(h.settings.lease_seconds + 1)
    assert len(h.engine.runs) <= h.settings.max_attempts
    assert h.record().status == "failed"


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


# == duplicated work: more than one retry chain per activation =====================================
def test_a_busy_recheck_does_not_start_a_second_retry_chain(h: Harness) -> None:
    h.engine.default = transient
    record = h.worker.accept(h.notice())
    assert record is not None
    holder = h.new_worker()
    claimed, _ = holder.claim(record)
    assert claimed is not None
    assert h.worker.handle(sample()) == "busy"  # a duplicate delivery: look again when the lease ends
    (recheck, recheck_delay), = h.sends.envelopes
    assert holder.finish(claimed, transient(h.notice())) == "retry_scheduled"
    retry1, retry1_delay = h.sends.envelopes[1]
    h.clock.advance(retry1_delay + 1)
    assert h.deliver(retry1) == "retry_scheduled"  # attempt 2, as scheduled; attempt 3 is now pending
    h.clock.advance(max(0.0, recheck_delay - retry1_delay))
    runs = len(h.engine.runs)
    h.deliver(recheck)
    assert len(h.engine.runs) == runs


def test_each_scheduled_attempt_runs_once_when_the_retry_send_reply_is_lost(h: Harness) -> None:
    h.engine.default = transient
    h.sends.envelope_failures.append(ServiceResponseError("timed out reading the reply"))
    with contextlib.suppress(ServiceResponseError):
        h.worker.handle(sample())
    h.clock.advance(30)  # the host delivers the original notice again
    h.worker.handle(sample())
    h.clock.advance(7200)  # every retry message sent so far is due
    for envelope, _ in list(h.sends.envelopes):
        h.deliver(envelope)
    assert len(h.engine.runs) == 2


def test_a_stale_series_envelope_does_not_run_when_an_operator_retry_lands_in_between(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.engine.default = transient
    assert h.worker.handle(sample()) == "retry_scheduled"
    (retry1, delay), = h.sends.envelopes
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


# == bad input must be recorded, not crash the worker =============================================
@pytest.mark.parametrize("body", [
    '{"kind": "activation-retry", "notice_id": "ACT-2026-0001", "series": "two", "attempt": 1}',
    '{"kind": "activation-retry", "notice_id": "ACT-2026-0001", "series": [1], "attempt": 1}',
    '{"kind": ' + "[" * 20000 + "]" * 20000 + "}",
], ids=["series-text", "series-list", "deeply-nested"])
def test_a_malformed_message_is_recorded_not_raised(h: Harness, body: str) -> None:
    h.engine.default = transient
    assert h.worker.handle(sample()) == "retry_scheduled"
    h.worker.handle(body)
    assert h.record().status == "retry_scheduled"


def test_the_poison_trigger_recording_the_same_message_twice_keeps_one_record(h: Harness) -> None:
    h.worker.handle_poison("garbage that never parsed", dequeue_count=1)
    h.worker.handle_poison("garbage that never parsed", dequeue_count=2)
    assert len(h.store.list_activations(status="failed").items) == 1


# == showing the truth ==============================================================================
def test_a_conflicting_notice_during_a_run_does_not_discard_the_runs_outcome(h: Harness) -> None:
    conflict: list[str] = []

    def run_meanwhile_conflict(notice: ActivationNotice, on_event: EventSink | None) -> Outcome:
        conflict.append(h.new_worker().handle(sample(mx_host="mgs.cybermail.jp")))
        return succeeded(notice)

    h.engine.script.append(run_meanwhile_conflict)
    result = h.worker.handle(sample())
    record = h.record()
    assert conflict == ["conflict"]
    assert result != "lease_lost"
    assert record.lease_owner is None and record.connectors
    assert record.status == "succeeded"


def test_the_same_notice_with_issued_at_in_another_offset_is_a_duplicate(h: Harness) -> None:
    assert h.worker.handle(sample()) == "succeeded"
    assert h.worker.handle(sample(issued_at="2026-11-30T00:00:00Z")) == "duplicate"
    assert h.record().status == "succeeded"


def test_the_status_document_shows_the_latest_events_of_a_long_history(h: Harness) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    h.store.append_events(EventRecord(NOTICE_ID, "exchange.call", f"call {i}", at=start + timedelta(seconds=i))
                          for i in range(250))
    assert h.worker.handle(sample()) == "succeeded"
    doc = ActivationApi(h.store, lambda: h.worker).get(NOTICE_ID).body
    assert doc["events"][-1]["kind"] == "finished" or doc.get("events_truncated")


def test_an_invalid_resubmission_reports_the_stored_status(h: Harness) -> None:
    assert h.worker.handle(sample()) == "succeeded"
    response = ActivationApi(h.store, lambda: h.worker).submit(sample(mx_host="mx.attacker.example").encode())
    assert response.status == 400
    assert response.body["status"] == h.record().status


def test_the_status_document_does_not_reveal_worker_host_names(h: Harness) -> None:
    assert h.worker.handle(sample()) == "succeeded"
    doc = ActivationApi(h.store, lambda: h.worker).get(NOTICE_ID).body
    assert h.worker.owner_prefix not in json.dumps(doc, ensure_ascii=False)


def test_review_harness_sanity(h: Harness) -> None:
    """Not a finding: the harness drives the normal paths as the product does."""
    h.engine.script.append(transient)
    assert h.worker.handle(sample()) == "retry_scheduled"
    (envelope, delay), = h.sends.envelopes
    assert 300 <= delay <= 600 and envelope["series"] == 1
    h.clock.advance(delay + 1)
    assert h.deliver(envelope) == "succeeded"
    assert (h.record().status, h.record().attempts) == ("succeeded", 2)
    with pytest.raises(RetryRefused):
        h.worker.retry("never-seen")
