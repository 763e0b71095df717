"""The queue worker: the loop around the lifecycle that reads, applies effects and writes.

Every decision is `shared.lifecycle.transition`'s; this module only does the I/O around it:
it reads the activation row, asks what to do, performs the effects (queue sends, history,
the provisioning run) and writes the row with the ETag it read. A write that loses a race
(HTTP 412) is not an error: the row is read again and the decision made again on what is
there now, so a conflict warning written during a run never costs the run its outcome.

Crash recovery does not depend on the host: a claim sends a watchdog message due when its
short lease ends, and a heartbeat thread renews the lease while the run goes on. A worker
that dies stops renewing; its watchdog then finds the lease expired and takes the activation
over, about LEASE_SECONDS after the last heartbeat. (The Functions host's own redelivery of a
message whose host died waits out a fixed 10-minute visibility timeout, see
Azure/azure-webjobs-sdk#1040.)

History writes after a state change are best effort: a lost event never strands a lease.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import telemetry
from .errors import ErrorCode, ProvisioningError
from .lifecycle import (
    OPERATOR_RETRY_DELAY_SECONDS,
    Append,
    AttemptFinished,
    Crashed,
    Decision,
    Delivered,
    DriftFound,
    DriftRepair,
    Heartbeat,
    LifecycleEvent,
    Misconfigured,
    OperatorRetry,
    Poisoned,
    Received,
    Rejected,
    Result,
    RetryDue,
    Rules,
    RunEngine,
    Send,
    transition,
)
from .notice import NOTICE_ID_PATTERN, ActivationNotice, FieldError, NoticeError, parse_notice
from .outcome import Event, Outcome, Status
from .queueing import (
    ActivationQueue,
    DriftEnvelope,
    RetryEnvelope,
    SentMessage,
    parse_drift_envelope,
    parse_retry_envelope,
)
from .settings import Settings
from .store import ActivationRecord, ActivationStore, ConcurrentUpdate, EventRecord, RecordExists
from .text import clean, decode_body

if TYPE_CHECKING:
    from .drift import DriftChecker
    from .provisioning import ProvisioningEngine

log = logging.getLogger("activation.worker")

# Rounds of read-decide-write before a row that keeps changing is reported as an error.
_WRITE_ROUNDS = 8
# A poison copy that cannot be recorded (storage down) goes back on the poison queue this
# much later instead of failing: a failing poison trigger would move it to `-poison-poison`,
# which nothing reads.
POISON_REQUEUE_SECONDS = 60.0

__all__ = ["OPERATOR_RETRY_DELAY_SECONDS", "LeaseLost", "ProvisioningError", "RetryRefused", "Submitted", "Worker"]


class LeaseLost(Exception):
    """Another worker took the activation over while this one ran: stop, write nothing."""


class RetryRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Submitted:
    """What an HTTP submit did: the activation's row, whether it was queued, and if it conflicts."""

    record: ActivationRecord
    enqueued: bool
    conflict: bool = False
    detail: str = ""


class Worker:
    """Handles activation messages; one instance per process, safe across threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: ActivationStore,
        queue: ActivationQueue,
        engine_factory: Callable[[], ProvisioningEngine],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        owner_prefix: str | None = None,
        rng: random.Random | None = None,
        drift_factory: Callable[[], DriftChecker] | None = None,
    ) -> None:
        self.settings = settings
        self._drift_factory = drift_factory
        self.store = store
        self.queue = queue
        self._engine_factory = engine_factory
        self._engine: ProvisioningEngine | None = None
        self.clock = clock
        self.rules = Rules.from_settings(settings)
        self.owner_prefix = owner_prefix or f"{socket.gethostname()}:{os.getpid()}"
        self._rng = rng or random.Random()  # noqa: S311 - spreads retries in time; nothing secret

    @property
    def engine(self) -> ProvisioningEngine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    # -- entry points ---------------------------------------------------------------------
    def handle(self, body: bytes | str, *, dequeue_count: int = 1) -> Result:
        """Process one activation-queue message; returns what was done (for logs and tests)."""
        raw = _text(body)
        try:
            retry = parse_retry_envelope(raw)
            drift = parse_drift_envelope(raw) if retry is None else None
        except ValueError as exc:
            return self._invalid_envelope(raw, exc)
        if retry is not None:
            return self._handle_retry(retry)
        if drift is not None:
            return self._check_drift(drift)
        try:
            notice = _parse(body, self.settings)
        except NoticeError as exc:
            self.record_rejected(raw, exc)
            return Result.REJECTED
        decision, _ = self._step(notice.notice_id, lambda: Received(notice))
        if decision.result is not Result.ACCEPTED:
            return decision.result
        return self._deliver(notice.notice_id, Delivered)

    def handle_poison(self, body: bytes | str, *, dequeue_count: int | None = None) -> Result:
        """Record a message the host gave up on, keeping it whole; never raises for its content.

        `dequeue_count` is the poison copy's own count, kept in the history only. What the
        copy does to an activation is the lifecycle's decision (see `lifecycle._poisoned`).
        If the copy cannot be recorded at all (storage failing), it is put back on the
        poison queue for later rather than raised, since the host would move a failing
        poison message to `<queue>-poison-poison`, which nothing reads.
        """
        raw = _text(body)
        try:
            drift = parse_drift_envelope(raw)
        except ValueError:
            drift = None
        if drift is not None:
            # One tenant's drift check that kept failing: no activation changed; the next scheduled
            # check asks again. Logged for the failure alerts, not recorded as an activation.
            log.error("the drift check of tenant %s failed %s time(s) and was given up; the next "
                      "scheduled check repeats it", drift.tenant_id, dequeue_count or "several")
            return Result.POISONED
        try:
            notice_id, tenant, notice, retry = self._identify_poison(body, raw)
        except Exception:  # the readers name what they refuse; should one fail, the copy is still kept
            log.exception("could not read a poisoned message; it is kept under its hash")
            notice_id, tenant, notice, retry = f"poison-{_short_hash(raw)}", "", None, None
        with telemetry.activation_scope(notice_id, tenant, attempt=retry.attempt if retry else None, step="poison"):
            try:
                if retry is None:  # the attempt it stands for is the activation's latest (0: none ran)
                    existing = self.store.get(notice_id)
                    telemetry.refine(attempt=existing.attempts if existing is not None else 0)
                telemetry.record_poisoned(notice_id=notice_id, tenant_id=tenant, code=ErrorCode.UNHANDLED.value,
                                          dequeue_count=dequeue_count)
                decision, _ = self._step(notice_id, lambda: Poisoned(
                    notice_id, raw, tenant_id=tenant, notice=notice, envelope=retry, dequeue_count=dequeue_count))
                return decision.result
            except Exception:
                log.exception("could not record a poisoned message; it goes back on the poison queue")
                self.queue.poison.send_notice(clean(raw) or "(empty message)", delay_seconds=POISON_REQUEUE_SECONDS)
                return Result.POISON_REQUEUED

    def _identify_poison(self, body: bytes | str,
                         raw: str) -> tuple[str, str, ActivationNotice | None, RetryEnvelope | None]:
        """The activation a poisoned copy is about: (notice_id, tenant_id, notice, retry envelope)."""
        try:
            retry = parse_retry_envelope(raw)
        except ValueError:
            retry = None
        notice: ActivationNotice | None
        try:
            notice = _parse(body, self.settings)
        except NoticeError:
            notice = None
        if notice is not None:
            notice_id = notice.notice_id
        elif retry is not None:
            notice_id = retry.notice_id
        else:
            notice_id = _guess_notice_id(raw) or f"poison-{_short_hash(raw)}"
        tenant = notice.tenant_id if notice is not None else _guess_tenant(raw)
        return notice_id, tenant, notice, retry

    def record_misconfigured(self, body: bytes | str, problem: str, *, poison: bool = False) -> Result:
        """Record a message that came while the settings do not load; it waits on its queue meanwhile.

        For the triggers' fallback (shared/misconfigured.py), which builds this worker from the
        storage settings alone and never runs the engine. The notice is not parsed (parsing
        depends on settings that may be the broken ones); the activation is named by the
        message's notice_id, or by the id the message will get once it can be read (`rejected-`
        or `poison-` and its hash), so the notice's own record replaces the placeholder.
        """
        raw = _text(body)
        queue = self.queue.poison_name if poison else self.queue.name
        with contextlib.suppress(ValueError):
            if (drift := parse_drift_envelope(raw)) is not None:
                # A tenant's drift check names no activation: nothing to record, it waits like the rest.
                log.error("a drift check of tenant %s arrived while the settings are invalid: %s; it waits on %s",
                          drift.tenant_id, problem, queue)
                return Result.UNKNOWN
        notice_id, tenant, attempt = message_activation(raw, poison=poison)
        with telemetry.activation_scope(notice_id, tenant, attempt=attempt, step="config"):
            log.error("activation %s: a message arrived while the settings are invalid: %s; it waits on %s "
                      "and is recorded as %s", notice_id, problem, queue, ErrorCode.CONFIG_INVALID.value)
            decision, _ = self._step(notice_id, lambda: Misconfigured(
                # A retry or watchdog message (it has an attempt) names no new activation.
                notice_id, raw, problem, tenant_id=tenant, placeholder=attempt is None, queue=queue))
        return decision.result

    # -- acceptance -----------------------------------------------------------------------
    def record_rejected(self, raw: str, exc: NoticeError) -> ActivationRecord:
        """Keep an invalid notice with its field errors; it is not retried and not poisoned.

        Returns the rejected notice's own row; when a valid notice owns its notice_id, the
        rejection is an event of that activation and a record describing this notice is
        returned without being stored (the stored row stays the valid activation's).
        """
        guessed = _guess_notice_id(raw)
        notice_id = guessed or f"rejected-{_short_hash(raw)}"
        event = Rejected(notice_id, _guess_tenant(raw), exc.to_dict(), raw)
        _, written = self._step(notice_id, lambda: event)
        if written is not None:
            return written
        now = self.clock()
        return ActivationRecord(notice_id=notice_id, tenant_id=event.tenant_id, status=Status.REJECTED,
                                error=dict(event.error), created_at=now, updated_at=now, finished_at=now)

    def accept(self, notice: ActivationNotice, raw: str | None = None, *,
               requested_by: str | None = None) -> ActivationRecord | None:
        """The activation row for a valid notice: new or existing, or None on a content conflict."""
        decision, written = self._step(notice.notice_id, lambda: Received(notice, requested_by))
        if decision.result is Result.CONFLICT:
            return None
        return written or self.store.get(notice.notice_id)

    def submit(self, body: bytes | str, *, requested_by: str | None = None) -> Submitted:
        """Validate and enqueue a notice (HTTP submit). NoticeError propagates to the caller."""
        notice = parse_notice(body, self.settings)
        existing = self.store.get(notice.notice_id)
        if existing is not None and existing.content_hash:
            if existing.content_hash != notice.content_hash:
                decision, _ = self._step(notice.notice_id, lambda: Received(notice, requested_by))
                if decision.result is Result.CONFLICT:
                    current = self.store.get(notice.notice_id) or existing
                    return Submitted(current, enqueued=False, conflict=True, detail=decision.detail)
            elif existing.status.final:
                return Submitted(existing, enqueued=False)
        # The message goes first, so a failed send leaves no `queued` row with nothing behind
        # it; the worker accepts the notice itself, and acceptance is idempotent.
        self.queue.send_notice(notice.canonical_json())
        decision, written = self._step(notice.notice_id, lambda: Received(notice, requested_by))
        row = written or self.store.get(notice.notice_id)
        assert row is not None
        return Submitted(row, enqueued=True, conflict=decision.result is Result.CONFLICT,
                         detail=decision.detail)

    # -- deliveries -----------------------------------------------------------------------
    def _handle_retry(self, envelope: RetryEnvelope) -> Result:
        step = "watchdog" if envelope.recheck_owner is not None else "retry"
        with telemetry.activation_scope(envelope.notice_id, attempt=envelope.attempt, step=step):
            result = self._deliver(envelope.notice_id, lambda owner: RetryDue(envelope, owner))
            if result is Result.UNKNOWN:
                log.warning("retry message for unknown activation %s dropped", envelope.notice_id)
        return result

    def _check_drift(self, envelope: DriftEnvelope) -> Result:
        """One tenant's drift check from a fan-out message (shared/drift.py)."""
        if self._drift_factory is None:
            log.error("a drift-check message for tenant %s reached a worker without a drift check; dropped",
                      envelope.tenant_id)
            return Result.UNKNOWN
        report = self._drift_factory().run(tenant_id=envelope.tenant_id, requested_by=envelope.requested_by)
        results = {check.result for check in report.checks}
        if Result.DRIFTED.value in results:
            return Result.DRIFTED
        return Result.IN_SYNC if results == {Result.IN_SYNC.value} else Result.UNKNOWN

    def _invalid_envelope(self, raw: str, exc: ValueError) -> Result:
        """A message that claims to be a retry but is malformed: record it, never crash on it."""
        notice_id = _guess_notice_id(raw)
        if notice_id is None:  # about no activation anyone can name: no context to give
            log.warning("malformed retry message ignored: %s", exc)
            return Result.INVALID_RETRY
        with telemetry.activation_scope(notice_id, _guess_tenant(raw), step="retry"):
            record = self.store.get(notice_id)
            if record is not None:
                telemetry.refine(tenant_id=record.tenant_id, attempt=record.attempts)
                self._best_effort(record, [Event("retry.invalid", f"malformed retry message ignored: {exc}",
                                                 data={"raw_message": raw[:2048]})])
            log.warning("malformed retry message for activation %s ignored: %s", notice_id, exc)
        return Result.INVALID_RETRY

    def _deliver(self, notice_id: str, make: Callable[[str], LifecycleEvent]) -> Result:
        """A message for a stored activation: claim and run it, or do what the lifecycle says."""
        # One scope for the whole delivery, so taking back watchdogs after the run is logged
        # with the activation too.
        with telemetry.activation_scope(notice_id):
            return self._deliver_in_scope(notice_id, make)

    def _deliver_in_scope(self, notice_id: str, make: Callable[[str], LifecycleEvent]) -> Result:
        owners: list[str] = []

        def event() -> LifecycleEvent:
            owners.append(f"{self.owner_prefix}:{uuid.uuid4().hex[:8]}")  # a new claim per round
            return make(owners[-1])

        sent: list[SentMessage] = []
        decision, claimed = self._step(notice_id, event, sent=sent)
        if not any(isinstance(e, RunEngine) for e in decision.after) or claimed is None:
            self._cancel(sent)  # watchdogs of claims that lost their race
            return decision.result
        telemetry.refine(tenant_id=claimed.tenant_id, attempt=claimed.attempts)
        watchdog = sent[-1] if sent else None
        self._cancel(sent[:-1])
        return self._run(claimed, owners[-1], watchdog=watchdog)

    def _cancel(self, sent: list[SentMessage]) -> None:
        """Take back watchdog messages no claim needs any more (a leftover one is only a no-op later)."""
        for message in sent:
            try:
                self.queue.cancel(message)
            except Exception:  # received meanwhile, or storage busy: it arrives and is dropped as stale
                log.debug("could not cancel message %s", message.id, exc_info=True)

    # -- running --------------------------------------------------------------------------
    def _run(self, claimed: ActivationRecord, owner: str, *, watchdog: SentMessage | None = None) -> Result:
        """Run the claimed activation and record its outcome.

        The claim's watchdog is taken back once the outcome (or the release after a bug) is
        written; a worker that dies never gets that far, and its watchdog takes over.
        """
        watchdogs = [watchdog] if watchdog is not None else []
        try:
            result = self._run_claimed(claimed, owner)
        except Exception:  # a bug: the claim was released for the host's redelivery
            self._cancel(watchdogs)
            raise
        self._cancel(watchdogs)
        return result

    def _run_claimed(self, claimed: ActivationRecord, owner: str) -> Result:
        with telemetry.activation_scope(claimed.notice_id, claimed.tenant_id, attempt=claimed.attempts, step="run"):
            return self._run_in_scope(claimed, owner)

    def _run_in_scope(self, claimed: ActivationRecord, owner: str) -> Result:
        heartbeat = _Heartbeat(self, claimed, owner)
        heartbeat.start()
        try:
            try:
                notice = _parse(claimed.notice_json, self.settings)
                engine = self.engine
            except ProvisioningError as exc:
                # A configuration problem (EXO_CLIENT_ID missing, an unreadable certificate) is
                # an outcome with its own code, for an operator to fix: never a bug, never poison.
                outcome = Outcome(notice_id=claimed.notice_id, tenant_id=claimed.tenant_id,
                                  error=exc.to_dict(), retry_after=exc.retry_after,
                                  events=[Event("error", exc.detail, data={"code": exc.code.value})])
            else:
                with telemetry.activation_scope(notice.notice_id, notice.tenant_id, attempt=claimed.attempts):
                    outcome = engine.run(notice, on_event=telemetry.steps(heartbeat.on_event))
        except LeaseLost:
            heartbeat.stop()
            self._best_effort(claimed, [Event("lease.lost", "another worker took over during the run; "
                                                            "this run's result is not recorded")])
            return Result.LEASE_LOST
        except Exception as exc:
            heartbeat.stop()
            self._release_after_bug(claimed.notice_id, owner, exc)
            raise
        finally:
            heartbeat.stop()
        try:
            return self.finish(heartbeat.record, outcome, owner=owner)
        except Exception as exc:
            self._release_after_bug(claimed.notice_id, owner, exc)
            raise

    def claim(self, record: ActivationRecord, *, series: int | None = None) -> tuple[ActivationRecord | None, str]:
        """Take the activation for this worker as a delivery would: (claimed row, owner) or (None, why not).

        For callers that drive the run themselves (tests, tools); the queue path is `handle`.
        """
        owners: list[str] = []

        def event() -> LifecycleEvent:
            owners.append(f"{self.owner_prefix}:{uuid.uuid4().hex[:8]}")
            return Delivered(owners[-1])

        decision, claimed = self._step(record.notice_id, event)
        if decision.result is Result.CLAIMED and claimed is not None:
            return claimed, owners[-1]
        return None, decision.result.value

    def finish(self, record: ActivationRecord, outcome: Outcome, *, owner: str | None = None) -> Result:
        """Write the run's outcome, release the claim, and schedule the next attempt if one is due."""
        holder = owner or record.lease_owner or ""
        jitter = self._rng.random()
        # The row as this worker last wrote it: one read fewer; if it changed since, the write
        # fails on its ETag and the row is read again.
        decision, _ = self._step(record.notice_id, lambda: AttemptFinished(holder, outcome, jitter), first=record)
        return decision.result

    def _release_after_bug(self, notice_id: str, owner: str, exc: Exception) -> None:
        detail = f"{type(exc).__name__}: {str(exc)[:500]}"
        try:
            self._step(notice_id, lambda: Crashed(owner, detail))
        except Exception:  # recording must never mask the original bug
            log.exception("could not release activation %s after an unexpected error", notice_id)

    # -- operator actions -----------------------------------------------------------------
    def retry(self, notice_id: str, *, requested_by: str | None = None) -> ActivationRecord:
        """Start a fresh series of attempts (operator action). Raises RetryRefused."""
        try:
            decision, written = self._step(notice_id, lambda: OperatorRetry(requested_by), rounds=1)
        except ConcurrentUpdate as exc:
            raise RetryRefused(409, "the activation changed meanwhile; look again and retry") from exc
        if decision.result is Result.NOT_FOUND:
            raise RetryRefused(404, f"no activation {notice_id}")
        if decision.result is Result.REFUSED or written is None:
            raise RetryRefused(409, decision.detail or "the activation cannot be retried now")
        return written

    # -- drift ----------------------------------------------------------------------------
    def record_drift(self, notice_id: str, differences: Sequence[Mapping[str, Any]], *,
                     requested_by: str | None = None) -> Result:
        """Record a drift check's finding (shared/drift.py); the lifecycle decides what changes."""
        decision, _ = self._step(notice_id, lambda: DriftFound(tuple(differences), requested_by))
        return decision.result

    def repair_drift(self, notice_id: str, *, requested_by: str | None = None) -> Result:
        """Queue a drifted activation's re-provision: a fresh series, run like any other."""
        try:
            decision, _ = self._step(notice_id, lambda: DriftRepair(requested_by), rounds=1)
        except ConcurrentUpdate:
            # Changed meanwhile (a run, an operator): its message, if sent, is stale on arrival.
            return Result.STALE
        return decision.result

    # -- the loop -------------------------------------------------------------------------
    def _step(self, notice_id: str, make: Callable[[], LifecycleEvent], *, rounds: int = _WRITE_ROUNDS,
              sent: list[SentMessage] | None = None,
              first: ActivationRecord | None = None) -> tuple[Decision, ActivationRecord | None]:
        """Read, decide, perform and write; on a lost race read again and decide again.

        Returns the decision and the row as written (None when nothing was written); the
        messages sent before each write attempt are added to `sent`. `first`, a row this
        worker wrote, stands in for the first read.
        """
        with telemetry.activation_scope(notice_id):
            return self._step_in_scope(notice_id, make, rounds=rounds, sent=sent, first=first)

    def _step_in_scope(self, notice_id: str, make: Callable[[], LifecycleEvent], *, rounds: int,
                       sent: list[SentMessage] | None,
                       first: ActivationRecord | None) -> tuple[Decision, ActivationRecord | None]:
        for round_ in range(rounds):
            current = first if round_ == 0 and first is not None else self.store.get(notice_id)
            event = make()
            telemetry.refine(tenant_id=current.tenant_id if current is not None else _tenant_of(event),
                             attempt=current.attempts if current is not None else None, step=_step_name(event))
            decision = transition(current, event, self.clock(), self.rules)
            for effect in decision.before:
                message = self._perform(effect, current)
                if message is not None and sent is not None:
                    sent.append(message)
            written: ActivationRecord | None = None
            if decision.record is not None:
                try:
                    written = (self.store.create(decision.record) if current is None
                               else self.store.replace(decision.record, previous=current))
                except (ConcurrentUpdate, RecordExists):
                    continue
                telemetry.refine(tenant_id=written.tenant_id, attempt=written.attempts)
                _report_outcome(current, written)
            elif current is not None and isinstance(event, RetryDue):
                # A watchdog or retry message that changes nothing comes after a run whose last
                # index write a crash may have lost: make sure the lists show this row.
                self.store.repair_index(current)
            for effect in decision.after:
                self._perform(effect, written or current)
            sends = [e for e in decision.effects if isinstance(e, Send)]
            telemetry.record_transition(
                notice_id, result=decision.result.value, status=written.status.value if written else None,
                wrote=written is not None or bool(sends),
                delay_seconds=round(sends[-1].delay_seconds, 1) if sends else None,
                watchdog=bool(sends) and sends[-1].envelope.recheck_owner is not None)
            return decision, written
        raise ConcurrentUpdate(f"activation {notice_id!r} kept changing; giving up after {rounds} rounds")

    def _perform(self, effect: Send | Append | RunEngine, record: ActivationRecord | None) -> SentMessage | None:
        if isinstance(effect, Send):
            return self.queue.schedule_retry(effect.envelope, delay_seconds=effect.delay_seconds)
        if isinstance(effect, Append) and record is not None:
            self._best_effort(record, list(effect.events))
        # RunEngine is performed by the caller with the written row (see _deliver).
        return None

    def renew(self, notice_id: str, owner: str, *, record: ActivationRecord | None = None) -> ActivationRecord:
        """Renew this worker's lease; LeaseLost if another worker holds the activation now."""
        decision, written = self._step(notice_id, lambda: Heartbeat(owner), first=record)
        if decision.result is not Result.RENEWED or written is None:
            raise LeaseLost(notice_id)
        return written

    # -- history --------------------------------------------------------------------------
    def event(self, record: ActivationRecord, kind: str, message: str, **data: Any) -> None:
        self._append(record, [Event(kind, message, data=data)])

    def _best_effort(self, record: ActivationRecord, events: list[Event]) -> None:
        """History after a state change: a failure is logged, never allowed to strand the row."""
        try:
            self._append(record, events)
        except Exception:
            log.exception("could not write %d history event(s) of activation %s", len(events), record.notice_id)

    def _append(self, record: ActivationRecord, events: list[Event]) -> None:
        if not events:
            return
        self.store.append_events([
            EventRecord(record.notice_id, e.kind, e.message, at=_parse_at(e.at), attempt=record.attempts,
                        series=record.series, data=e.data or None, duration_ms=e.duration_ms)
            for e in events
        ])


class _Heartbeat:
    """Keeps a running worker's lease alive while its run goes on.

    A thread renews it every HEARTBEAT_SECONDS, so a single Exchange call that blocks for a
    long time (Validate-OutboundConnector, a slow token endpoint) never lets the lease run
    out; engine events also renew it once less than half remains. If another worker has
    taken over, the next engine event raises LeaseLost and the run stops writing.
    """

    def __init__(self, worker: Worker, claimed: ActivationRecord, owner: str) -> None:
        self.worker = worker
        self.record = claimed  # the row as this worker last wrote it
        self.notice_id = claimed.notice_id
        self.owner = owner
        self.renewed_at = worker.clock()
        self.lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # The thread runs in a copy of the starter's context, so its log lines (a failed
        # renewal) carry the run's activation context as the run's own do.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), daemon=True,
                                        name=f"heartbeat:{self.notice_id}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        # Settings.from_env enforces this; Settings built in code may not have been checked.
        interval = min(self.worker.settings.heartbeat_seconds, self.worker.settings.lease_seconds / 3)
        while not self._stop.wait(interval):
            with telemetry.activation_scope(self.notice_id, step="heartbeat"):
                try:
                    self.renew()
                except Exception:  # a failed renewal is retried on the next beat; the lease has slack
                    log.warning("could not renew the lease on activation %s", self.notice_id, exc_info=True)

    def renew(self) -> None:
        with self._lock:
            if self.lost or self._stop.is_set():
                return
            try:
                self.record = self.worker.renew(self.notice_id, self.owner, record=self.record)
                self.renewed_at = self.worker.clock()
            except LeaseLost:
                self.lost = True

    def on_event(self, event: Event) -> None:
        if self.lost:
            raise LeaseLost(self.notice_id)
        lease = self.worker.settings.lease_seconds
        elapsed = (self.worker.clock() - self.renewed_at).total_seconds()
        if elapsed < lease / 2:
            return
        with telemetry.activation_scope(self.notice_id, step="heartbeat"):
            try:
                self.renew()
            except Exception as exc:
                if elapsed >= lease:
                    # No renewal has succeeded for a whole lease (storage unreachable): another
                    # worker may hold the activation now, so this one stops before its next call.
                    raise LeaseLost(self.notice_id) from exc
                log.warning("could not renew the lease on activation %s", self.notice_id, exc_info=True)
        if self.lost:
            raise LeaseLost(self.notice_id)


def message_activation(raw: str, *, poison: bool = False) -> tuple[str, str, int | None]:
    """(notice_id, tenant_id, attempt) of a message, read without the settings a notice's parse needs.

    A retry envelope names its activation and attempt; a notice its notice_id and tenant (as
    written, unchecked); anything else is named as the worker will name it once it can be read:
    `rejected-<hash>`, or `poison-<hash>` on the poison queue. The attempt is None for a notice.
    """
    try:
        retry = parse_retry_envelope(raw)
    except ValueError:
        retry = None
    if retry is not None:
        return retry.notice_id, "", retry.attempt
    notice_id = _guess_notice_id(raw) or f"{'poison' if poison else 'rejected'}-{_short_hash(raw)}"
    return notice_id, _guess_tenant(raw), None


def _step_name(event: LifecycleEvent) -> str:
    """The `step` of the log records about one lifecycle decision (see shared/telemetry.py)."""
    if isinstance(event, RetryDue):
        return "watchdog" if event.envelope.recheck_owner is not None else "retry"
    return _STEP_NAMES[type(event)]


_STEP_NAMES: Mapping[type, str] = {
    Received: "receive", Rejected: "reject", Delivered: "claim", Heartbeat: "heartbeat", AttemptFinished: "finish",
    Crashed: "crash", OperatorRetry: "operator_retry", Poisoned: "poison", DriftFound: "drift",
    DriftRepair: "drift_repair", Misconfigured: "config",
}


def _tenant_of(event: LifecycleEvent) -> str:
    """The tenant an event names when there is no row yet (a first delivery, a rejection, poison)."""
    if isinstance(event, Received):
        return event.notice.tenant_id
    if isinstance(event, Rejected | Poisoned | Misconfigured):
        return event.tenant_id
    return ""


def _parse(body: bytes | str, settings: Settings) -> ActivationNotice:
    """parse_notice, where an unexpected failure of the parser is a rejection, never a crash."""
    try:
        return parse_notice(body, settings)
    except NoticeError:
        raise
    except Exception as exc:
        # The parser should name the field; if it cannot, the notice is still refused with a
        # clear error rather than crashing the worker (and then the poison trigger) on it.
        raise NoticeError([FieldError(
            "(notice)", "unreadable",
            f"the notice could not be read ({type(exc).__name__}: {str(exc)[:200]}); check every field's format",
            f"開通通知を読み取れませんでした（{type(exc).__name__}）。各項目の形式を確認してください。")]) from exc


def _text(body: bytes | str) -> str:
    """The message as text with every undecodable byte kept, so the record can keep the original."""
    return decode_body(body)


def _parse_at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _guess_notice_id(raw: str) -> str | None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("notice_id"), str):
        value = obj["notice_id"].strip()
        return value if NOTICE_ID_PATTERN.fullmatch(value) else None
    return None


def _guess_tenant(raw: str) -> str:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    value = obj.get("tenant_id") if isinstance(obj, dict) else None
    return value.strip().lower()[:64] if isinstance(value, str) else ""


def _report_outcome(before: ActivationRecord | None, after: ActivationRecord) -> None:
    """One telemetry record each time an activation reaches an outcome (the alerts count them)."""
    if after.status not in _OUTCOME_STATUSES:
        return
    if before is not None and before.status is after.status and before.attempts == after.attempts:
        return  # the same outcome again (a warning added, an event noted): not a new one
    code = (after.error or {}).get("code")
    duration = None
    if after.started_at is not None and after.finished_at is not None:
        duration = round((after.finished_at - after.started_at).total_seconds() * 1000, 1)
    telemetry.record_outcome(notice_id=after.notice_id, tenant_id=after.tenant_id, status=after.status.value,
                             code=code, attempt=after.attempts, duration_ms=duration)


_OUTCOME_STATUSES = frozenset({Status.SUCCEEDED, Status.NEEDS_ATTENTION, Status.FAILED, Status.RETRY_SCHEDULED,
                               Status.REJECTED})


def _short_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", errors="replace")).hexdigest()[:16]

