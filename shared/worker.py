"""The queue worker: turns one delivered message into at most one provisioning run.

Queues deliver at least once, workers crash and Exchange throttles, so every decision here is
made against the activation row in Table storage, under an ETag-guarded claim with an
expiring lease that a running worker renews:

- a duplicate of a finished notice does nothing; a duplicate of a running one is put back
  on the queue to be looked at after the running worker's lease ends;
- a crashed worker's lease expires and the next delivery takes the activation over, until
  the attempts run out (a notice that kills its worker every time ends `failed`);
- a transient failure writes `retry_scheduled` with the due time, then sends a retry message
  carrying that due time: a message for an older due time is stale, so one activation never
  has two retry chains, and a redelivery of the original message re-sends a lost one;
- a bug raises: the claim is released first, then the Functions host retries the message and
  finally moves it to the poison queue, whose trigger records `failed`.
History writes after a state change are best effort: a lost event never strands a lease.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import telemetry
from .errors import ErrorCode, ProvisioningError, error_dict
from .notice import NOTICE_ID_PATTERN, ActivationNotice, NoticeError, parse_notice
from .outcome import Event, Outcome, Status, now_iso
from .queueing import RETRY_KIND, ActivationQueue, RetryEnvelope
from .retry import RetryPolicy
from .settings import Settings
from .store import ActivationRecord, ActivationStore, ConcurrentUpdate, EventRecord, RecordExists

if TYPE_CHECKING:
    from .provisioning import ProvisioningEngine

log = logging.getLogger("activation.worker")

RAW_KEEP = 32 * 1024  # raw messages are kept for the operator, up to a Table storage-friendly size
# A scheduled attempt whose message has not come this long after it was due is taken as
# lost: any message for the activation may then run it.
OVERDUE_GRACE = timedelta(seconds=60)
# An operator retry's message waits this long, so the row's new series is written first.
OPERATOR_RETRY_DELAY_SECONDS = 2.0


class LeaseLost(Exception):
    """Another worker took the activation over while this one ran: stop, write nothing."""


@dataclass(frozen=True)
class Submitted:
    """What an HTTP submit did: the activation's row, whether it was queued, and if it conflicts."""

    record: ActivationRecord
    enqueued: bool
    conflict: bool = False


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
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self._engine_factory = engine_factory
        self._engine: ProvisioningEngine | None = None
        self.clock = clock
        self.policy = RetryPolicy(settings.retry_base_seconds, settings.retry_max_seconds, settings.max_attempts)
        self.owner_prefix = owner_prefix or f"{socket.gethostname()}:{os.getpid()}"

    @property
    def engine(self) -> ProvisioningEngine:
        if self._engine is None:
            self._engine = self._engine_factory()
        return self._engine

    # -- entry points ---------------------------------------------------------------------
    def handle(self, body: bytes | str, *, dequeue_count: int = 1) -> str:
        """Process one activation-queue message; returns what was done (for logs and tests)."""
        raw = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        try:
            envelope = _retry_envelope(raw)
        except ValueError as exc:
            return self._invalid_envelope(raw, exc)
        if envelope is not None:
            return self._handle_retry(envelope)
        try:
            notice = parse_notice(body, self.settings)
        except NoticeError as exc:
            self.record_rejected(raw, exc)
            return "rejected"
        record = self.accept(notice, raw)
        if record is None:
            return "conflict"
        return self._handle_notice(record, notice)

    def handle_poison(self, body: bytes | str, *, dequeue_count: int | None = None) -> str:
        """Record a message the host gave up on, keeping it whole, so nothing vanishes.

        `dequeue_count` is the poison copy's own count, not the failed deliveries before it,
        so it is kept in the history only. An activation that already finished, that a live
        worker holds, or that an operator restarted since the message was sent, keeps its
        status: the poisoned copy was a duplicate of it. A new row keeps the notice itself
        when it parses, so an operator can retry it.
        """
        raw = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        try:
            envelope = _retry_envelope(raw)
        except ValueError:
            envelope = None
        notice_id = _guess_notice_id(raw) or f"poison-{_short_hash(raw)}"
        now = self.clock()
        telemetry.record_poisoned(notice_id=notice_id, tenant_id=_guess_tenant(raw), code=ErrorCode.UNHANDLED.value,
                                  dequeue_count=dequeue_count)
        error = error_dict(ErrorCode.UNHANDLED,
                           "the Functions host gave up on this message after its maximum number of deliveries "
                           "(host.json maxDequeueCount)")
        record = self.store.get(notice_id)
        if record is None:
            record = _new_record(notice_id, _guess_tenant(raw), now, status=Status.FAILED.value)
            record = replace(record, raw_message=raw[:RAW_KEEP], error=error, finished_at=now)
            with contextlib.suppress(NoticeError):
                notice = parse_notice(body, self.settings)
                record = replace(record, content_hash=notice.content_hash, notice_json=notice.canonical_json(),
                                 services=notice.services, customer_name=notice.customer_name or "",
                                 contract_id=notice.contract_id or "")
            try:
                record = self.store.create(record)
            except RecordExists:
                return self.handle_poison(body, dequeue_count=dequeue_count)
        elif (Status(record.status).final or _lease_live(record, now)
              or (envelope is not None and envelope.series != record.series)):
            self.event(record, "poisoned", f"a copy of this message was poisoned; the activation stays {record.status}",
                       raw_message=raw[:2048], dequeue_count=dequeue_count)
            return "poisoned_duplicate"
        else:
            if record.error:
                error["last_error"] = record.error
            record = replace(record, status=Status.FAILED.value, error=error, finished_at=now, updated_at=now,
                             raw_message=raw[:RAW_KEEP], lease_owner=None, lease_expires_at=None,
                             next_attempt_at=None)
            try:
                record = self.store.replace(record)
            except ConcurrentUpdate:
                return self.handle_poison(body, dequeue_count=dequeue_count)
        self.event(record, "poisoned", "the Functions host gave up on this message; recorded as failed",
                   raw_message=raw[:2048], dequeue_count=dequeue_count)
        return "poisoned"

    # -- acceptance -----------------------------------------------------------------------
    def record_rejected(self, raw: str, exc: NoticeError) -> ActivationRecord:
        """Keep an invalid notice with its field errors; it is not retried and not poisoned."""
        guessed = _guess_notice_id(raw)
        notice_id = guessed if guessed and _valid_id(guessed) else f"rejected-{_short_hash(raw)}"
        now = self.clock()
        existing = self.store.get(notice_id)
        if existing is not None and existing.content_hash:
            # A valid notice owns this id: keep its record, note the bad resubmission.
            self.event(existing, "notice.rejected", "an invalid notice arrived under this notice_id; ignored",
                       errors=exc.to_dict()["errors"], raw_message=raw[:2048])
            return existing
        record = _new_record(notice_id, _guess_tenant(raw), now, status=Status.REJECTED.value)
        record = replace(record, raw_message=raw[:RAW_KEEP], error=exc.to_dict(), finished_at=now)
        try:
            record = self._write_over(existing, record)
        except (RecordExists, ConcurrentUpdate):
            # Someone wrote the row meanwhile (perhaps a valid copy): look again, never clobber it.
            return self.record_rejected(raw, exc)
        self.event(record, "notice.rejected", f"invalid notice: {len(exc.errors)} field error(s)",
                   errors=exc.to_dict()["errors"])
        return record

    def accept(self, notice: ActivationNotice, raw: str | None = None, *,
               requested_by: str | None = None) -> ActivationRecord | None:
        """The activation row for a valid notice: new, existing, or None on a content conflict.

        A row without content (an invalid notice's, or a poison placeholder that could not
        parse) gives way to a valid notice under the same id.
        """
        now = self.clock()
        existing = self.store.get(notice.notice_id)
        if existing is None or not existing.content_hash:
            record = _new_record(notice.notice_id, notice.tenant_id, now, status=Status.QUEUED.value)
            record = replace(record, content_hash=notice.content_hash, notice_json=notice.canonical_json(),
                             services=notice.services, customer_name=notice.customer_name or "",
                             contract_id=notice.contract_id or "")
            try:
                record = self._write_over(existing, record)
            except (RecordExists, ConcurrentUpdate):
                return self.accept(notice, raw, requested_by=requested_by)
            who = {} if requested_by is None else {"requested_by": requested_by}  # None: from the queue
            self.event(record, "received", "activation notice accepted", content_hash=notice.content_hash, **who)
            return record
        if existing.content_hash != notice.content_hash:
            self._conflict(existing, notice)
            return None
        return existing

    def _write_over(self, existing: ActivationRecord | None, record: ActivationRecord) -> ActivationRecord:
        """Create the row, or replace the one read as `existing` (guarded by its ETag)."""
        if existing is None:
            return self.store.create(record)
        return self.store.replace(replace(record, etag=existing.etag, created_at=existing.created_at))

    def _conflict(self, existing: ActivationRecord, notice: ActivationNotice) -> None:
        """Another notice under a used notice_id: reject it and keep both hashes in history.

        A finished activation is marked rejected with NOTICE_CONFLICT (its connectors stay on
        record); one still in progress is left to finish, so its outcome is not thrown away.
        """
        detail = (f"notice_id {notice.notice_id} was first received with content {existing.content_hash[:12]}, "
                  f"now with {notice.content_hash[:12]}")
        if Status(existing.status).final:
            err = error_dict(ErrorCode.NOTICE_CONFLICT, detail)
            # On a concurrent update the history below still records the conflict.
            with contextlib.suppress(ConcurrentUpdate):
                self.store.replace(replace(existing, status=Status.REJECTED.value, error=err,
                                           updated_at=self.clock(), finished_at=self.clock()))
        self.event(existing, "notice.conflict", detail, previous_status=existing.status,
                   first_hash=existing.content_hash, new_hash=notice.content_hash,
                   new_notice=json.loads(notice.canonical_json()))

    # -- deliveries -----------------------------------------------------------------------
    def _handle_notice(self, record: ActivationRecord, notice: ActivationNotice) -> str:
        """A notice delivered (again): run it unless it is done, running, or waiting its turn."""
        status = Status(record.status)
        if status.final:
            self.event(record, "duplicate", f"delivery ignored: activation is already {status.value}")
            return "duplicate"
        now = self.clock()
        if status is Status.RETRY_SCHEDULED and record.next_attempt_at is not None \
                and record.next_attempt_at > now:
            # Its retry message may have been lost with the reply to the send: send it again for
            # the same due time. Two messages for one due time are safe; the claim runs one.
            delay = (record.next_attempt_at - now).total_seconds()
            self.queue.schedule_retry(_envelope(record, due=record.next_attempt_at), delay_seconds=delay)
            return "scheduled"
        return self._run(record, notice, series=record.series)

    def _handle_retry(self, envelope: RetryEnvelope) -> str:
        record = self.store.get(envelope.notice_id)
        if record is None or not record.notice_json:
            log.warning("retry message for unknown activation %s dropped", envelope.notice_id)
            return "unknown"
        if envelope.series != record.series:
            return "stale"  # an operator started a new series since this message was sent
        status = Status(record.status)
        if status.final:
            return "duplicate"
        now = self.clock()
        if envelope.recheck_owner is not None:
            # A look-again message: only meaningful while that same worker's lease is on the row.
            if not (status is Status.RUNNING and record.lease_owner == envelope.recheck_owner):
                return "stale"
        elif status is Status.RETRY_SCHEDULED and envelope.due != _iso(record.next_attempt_at):
            due = record.next_attempt_at
            if due is not None and due + OVERDUE_GRACE > now:
                if due > now:
                    # The message for the current due time may never have been sent (the worker
                    # stopped between the row and the send): send one; the claim runs only one.
                    self.queue.schedule_retry(_envelope(record, due=due),
                                              delay_seconds=(due - now).total_seconds())
                return "stale"
            # overdue: the message for it is lost; run it now
        notice = parse_notice(record.notice_json, self.settings)
        return self._run(record, notice, series=envelope.series)

    def _invalid_envelope(self, raw: str, exc: ValueError) -> str:
        """A message that claims to be a retry but is malformed: record it, never crash on it."""
        notice_id = _guess_notice_id(raw)
        record = self.store.get(notice_id) if notice_id else None
        if record is not None:
            self.event(record, "retry.invalid", f"malformed retry message ignored: {exc}", raw_message=raw[:2048])
        else:
            log.warning("malformed retry message ignored: %s", exc)
        return "invalid_retry"

    # -- running --------------------------------------------------------------------------
    def _run(self, record: ActivationRecord, notice: ActivationNotice, *, series: int) -> str:
        claimed, reason = self.claim(record, series=series)
        if claimed is None:
            return reason
        lease = _Lease(self, claimed)
        try:
            with telemetry.activation_scope(notice.notice_id, notice.tenant_id, attempt=claimed.attempts):
                outcome = self.engine.run(notice, on_event=telemetry.steps(lease.renew_if_due))
        except LeaseLost:
            self._best_effort_event(lease.record, "lease.lost", "another worker took over during the run; "
                                    "this run's result is not recorded")
            return "lease_lost"
        except Exception as exc:
            self._release_after_bug(lease.record, exc)
            raise
        try:
            return self.finish(lease.record, outcome)
        except Exception as exc:
            self._release_after_bug(lease.record, exc)
            raise

    def claim(self, record: ActivationRecord, *, series: int | None = None) -> tuple[ActivationRecord | None, str]:
        """Take the activation for this worker: (claimed row, "") or (None, why not)."""
        now = self.clock()
        owner = f"{self.owner_prefix}:{uuid.uuid4().hex[:8]}"
        for _ in range(5):
            current = self.store.get(record.notice_id)
            if current is None:
                return None, "unknown"
            if series is not None and current.series != series:
                return None, "stale"
            if Status(current.status).final:
                return None, "duplicate"
            if _lease_live(current, now):
                assert current.lease_expires_at is not None and current.lease_owner is not None
                # Someone is running it now. If that worker crashed, its lease ends at
                # lease_expires_at; look again then, so the activation is never stranded.
                wait = (current.lease_expires_at - now).total_seconds() + 1
                self.queue.schedule_retry(_envelope(current, recheck_owner=current.lease_owner), delay_seconds=wait)
                self._best_effort_event(current, "busy", f"another worker holds the lease; looking again in "
                                        f"{wait:.0f}s")
                return None, "busy"
            takeover = current.status == Status.RUNNING.value
            if takeover and self.policy.exhausted(current.attempts):
                # Every attempt so far lost its worker (killed, recycled, timed out): stop here
                # rather than send validation mail again every lease period, forever.
                failed = replace(current, status=Status.FAILED.value, lease_owner=None, lease_expires_at=None,
                                 finished_at=now, updated_at=now, next_attempt_at=None,
                                 error=error_dict(ErrorCode.MAX_ATTEMPTS_EXCEEDED,
                                                  f"the worker was lost during each of {current.attempts} attempts"))
                try:
                    self.store.replace(failed)
                except ConcurrentUpdate:
                    continue
                self._best_effort_event(failed, "failed", "attempts exhausted by lost workers")
                telemetry.record_outcome(notice_id=failed.notice_id, tenant_id=failed.tenant_id, status=failed.status,
                                         code=ErrorCode.MAX_ATTEMPTS_EXCEEDED.value, attempt=failed.attempts)
                return None, "failed"
            attempts = current.attempts + 1
            claimed = replace(current, status=Status.RUNNING.value, attempts=attempts, lease_owner=owner,
                              lease_expires_at=now + timedelta(seconds=self.settings.lease_seconds),
                              started_at=now, updated_at=now, next_attempt_at=None)
            try:
                claimed = self.store.replace(claimed)
            except ConcurrentUpdate:
                continue
            self._best_effort_event(claimed, "claimed",
                                    f"attempt {attempts}" + (" (took over an expired lease)" if takeover else ""),
                                    takeover=takeover)
            return claimed, ""
        return None, "busy"

    def finish(self, record: ActivationRecord, outcome: Outcome) -> str:
        """Write the outcome, release the claim, and schedule the next attempt if one is due."""
        now = self.clock()
        events = list(outcome.events)
        status = outcome.status
        error = outcome.error
        next_at: datetime | None = None
        delay: float | None = None
        if outcome.retryable:
            if self.policy.exhausted(record.attempts):
                status = Status.FAILED
                last = outcome.error or {}
                error = error_dict(ErrorCode.MAX_ATTEMPTS_EXCEEDED,
                                   f"gave up after {record.attempts} attempts; last error "
                                   f"{last.get('code')}: {last.get('message')}")
                error["last_error"] = last
            else:
                status = Status.RETRY_SCHEDULED
                delay = self.policy.delay(record.attempts, retry_after=outcome.retry_after)
                next_at = (now + timedelta(seconds=delay)).replace(microsecond=0)
                delay = (next_at - now).total_seconds()
        done = replace(
            record, status=status.value, connectors=[c.to_dict() for c in outcome.connectors],
            error=error, warnings=outcome.warnings, updated_at=now, lease_owner=None, lease_expires_at=None,
            next_attempt_at=next_at, finished_at=now if status.final else None,
        )
        try:
            done = self.store.replace(done)
        except ConcurrentUpdate:
            # Our lease was taken over (we ran past it). The other worker owns the truth now;
            # keep our history but do not overwrite its row or enqueue a competing retry.
            events.append(Event("lease.lost", "lease expired during the run; result kept in history only"))
            self._best_effort_append(record, events)
            return "lease_lost"
        telemetry.record_outcome(notice_id=done.notice_id, tenant_id=done.tenant_id, status=done.status,
                                 code=(error or {}).get("code"), attempt=record.attempts,
                                 duration_ms=_elapsed_ms(record.started_at, now))
        if delay is not None and next_at is not None:
            events.append(Event("retry.scheduled", f"attempt {record.attempts + 1} in {delay:.0f}s",
                                data={"delay_s": round(delay, 1), "next_attempt_at": now_iso(next_at)}))
            # Sent before the history: if this send fails, the host redelivers the message and
            # the redelivery sends it again (see _handle_notice and _handle_retry).
            self.queue.schedule_retry(_envelope(done, due=next_at), delay_seconds=delay)
        self._best_effort_append(record, events)
        return status.value

    def _release_after_bug(self, record: ActivationRecord, exc: Exception) -> None:
        detail = f"{type(exc).__name__}: {str(exc)[:500]}"
        try:
            current = self.store.get(record.notice_id)
            if current is not None and current.lease_owner == record.lease_owner and current.lease_owner:
                self.store.replace(replace(current, status=Status.QUEUED.value, lease_owner=None,
                                           lease_expires_at=None, updated_at=self.clock(),
                                           error=error_dict(ErrorCode.UNHANDLED, detail)))
            self.event(record, "error.unhandled", detail)
        except Exception:  # recording must never mask the original bug
            log.exception("could not release activation %s after an unexpected error", record.notice_id)

    # -- operator actions -----------------------------------------------------------------
    def retry(self, notice_id: str, *, requested_by: str | None = None) -> ActivationRecord:
        """Start a fresh series of attempts (operator action). Raises RetryRefused."""
        record = self.store.get(notice_id)
        if record is None:
            raise RetryRefused(404, f"no activation {notice_id}")
        now = self.clock()
        if _lease_live(record, now):
            raise RetryRefused(409, "the activation is running now; retry when it has finished")
        if not record.notice_json:
            raise RetryRefused(409, "the notice was rejected as invalid; submit a corrected notice instead")
        fresh = replace(record, status=Status.QUEUED.value, attempts=0, series=record.series + 1, error=None,
                        lease_owner=None, lease_expires_at=None, next_attempt_at=None, finished_at=None,
                        updated_at=now)
        # The message goes first: if it cannot be sent, nothing changed. It waits a moment so
        # the row below carries its series when it arrives; if the row then cannot be written,
        # the message is stale and dropped.
        self.queue.schedule_retry(_envelope(fresh), delay_seconds=OPERATOR_RETRY_DELAY_SECONDS)
        try:
            fresh = self.store.replace(fresh)
        except ConcurrentUpdate as exc:
            raise RetryRefused(409, "the activation changed meanwhile; look again and retry") from exc
        who = {} if requested_by is None else {"requested_by": requested_by}
        self._best_effort_event(fresh, "retry.requested", f"operator retry: series {fresh.series}"
                                + (f" (requested by {requested_by})" if requested_by else ""), **who)
        return fresh

    def submit(self, body: bytes | str, *, requested_by: str | None = None) -> Submitted:
        """Validate and enqueue a notice (HTTP submit). NoticeError propagates to the caller."""
        raw = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        notice = parse_notice(body, self.settings)
        existing = self.store.get(notice.notice_id)
        if existing is not None and existing.content_hash:
            if existing.content_hash != notice.content_hash:
                self._conflict(existing, notice)
                current = self.store.get(notice.notice_id)
                return Submitted(current or existing, enqueued=False, conflict=True)
            if Status(existing.status).final:
                return Submitted(existing, enqueued=False)
        # The message goes first, so a failed send leaves no `queued` row with nothing behind
        # it; the worker accepts the notice itself, and accept() below is idempotent.
        self.queue.send_notice(notice.canonical_json())
        record = self.accept(notice, raw, requested_by=requested_by)
        if record is None:
            current = self.store.get(notice.notice_id)
            assert current is not None
            return Submitted(current, enqueued=True, conflict=True)
        return Submitted(record, enqueued=True)

    # -- history --------------------------------------------------------------------------
    def event(self, record: ActivationRecord, kind: str, message: str, **data: Any) -> None:
        self._append(record, [Event(kind, message, data=data)])

    def _best_effort_event(self, record: ActivationRecord, kind: str, message: str, **data: Any) -> None:
        self._best_effort_append(record, [Event(kind, message, data=data)])

    def _best_effort_append(self, record: ActivationRecord, events: list[Event]) -> None:
        """History after a state change: a failure is logged, never allowed to strand the row."""
        try:
            self._append(record, events)
        except Exception:
            log.exception("could not write %d history event(s) of activation %s", len(events), record.notice_id)

    def _append(self, record: ActivationRecord, events: list[Event]) -> None:
        self.store.append_events([
            EventRecord(record.notice_id, e.kind, e.message, at=_parse_at(e.at), attempt=record.attempts,
                        series=record.series, data=e.data or None, duration_ms=e.duration_ms)
            for e in events
        ])


class _Lease:
    """Keeps a running worker's claim alive: renewed whenever less than half of it remains.

    Engine events arrive after every Exchange call, so even a run slowed by throttling renews
    its lease long before another delivery could take the activation over.
    """

    def __init__(self, worker: Worker, record: ActivationRecord) -> None:
        self.worker = worker
        self.record = record

    def renew_if_due(self, event: Event) -> None:
        now = self.worker.clock()
        expires = self.record.lease_expires_at
        lease = timedelta(seconds=self.worker.settings.lease_seconds)
        if expires is None or expires - now > lease / 2:
            return
        try:
            self.record = self.worker.store.replace(replace(self.record, lease_expires_at=now + lease, updated_at=now))
        except ConcurrentUpdate as exc:
            raise LeaseLost(self.record.notice_id) from exc


class RetryRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _lease_live(record: ActivationRecord, now: datetime) -> bool:
    """Whether a worker is running this activation now (its lease has not run out)."""
    return (record.status == Status.RUNNING.value and bool(record.lease_owner)
            and record.lease_expires_at is not None and record.lease_expires_at > now)


def _parse_at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else now_iso(value)


def _envelope(record: ActivationRecord, *, due: datetime | None = None,
              recheck_owner: str | None = None) -> RetryEnvelope:
    return RetryEnvelope(notice_id=record.notice_id, series=record.series, attempt=record.attempts,
                         due=_iso(due), recheck_owner=recheck_owner)


def _retry_envelope(raw: str) -> RetryEnvelope | None:
    """The retry envelope in a message, None for anything else; ValueError if it is malformed."""
    if '"kind"' not in raw:
        return None
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("kind") != RETRY_KIND:
        return None
    return RetryEnvelope.from_mapping(obj)


def _guess_notice_id(raw: str) -> str | None:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("notice_id"), str):
        value = obj["notice_id"].strip()
        return value if _valid_id(value) else None
    return None


def _guess_tenant(raw: str) -> str:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    value = obj.get("tenant_id") if isinstance(obj, dict) else None
    return value.strip().lower()[:64] if isinstance(value, str) else ""


def _valid_id(value: str) -> bool:
    return bool(NOTICE_ID_PATTERN.fullmatch(value))


def _short_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", errors="replace")).hexdigest()[:16]


def _elapsed_ms(start: datetime | None, end: datetime) -> float | None:
    return None if start is None else round((end - start).total_seconds() * 1000, 1)


def _new_record(notice_id: str, tenant_id: str, now: datetime, *, status: str) -> ActivationRecord:
    return ActivationRecord(notice_id=notice_id, tenant_id=tenant_id, status=status, created_at=now, updated_at=now)


__all__ = ["LeaseLost", "ProvisioningError", "RetryRefused", "Submitted", "Worker"]
