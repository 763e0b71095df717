"""The queue worker: turns one delivered message into at most one provisioning run.

Queues deliver at least once, workers crash and Exchange throttles, so every decision here is
made against the activation row in Table storage, under an ETag-guarded claim with an
expiring lease:

- a duplicate of a finished notice does nothing; a duplicate of a running one is put back
  on the queue to be looked at after the running worker's lease ends;
- a crashed worker's lease expires and the next delivery takes the activation over;
- a transient failure releases the claim, then schedules a delayed retry message (in that
  order, so a failure to enqueue makes the host redeliver the original message);
- a bug raises: the claim is released first, then the Functions host retries the message and
  finally moves it to the poison queue, whose trigger records `failed`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import ErrorCode, ProvisioningError, error_dict
from .notice import NOTICE_ID_PATTERN, ActivationNotice, NoticeError, parse_notice
from .outcome import Event, Outcome, Status, now_iso
from .queueing import RETRY_KIND, ActivationQueue
from .retry import RetryPolicy
from .settings import Settings
from .store import ActivationRecord, ActivationStore, ConcurrentUpdate, EventRecord, RecordExists

if TYPE_CHECKING:
    from .provisioning import ProvisioningEngine

log = logging.getLogger("activation.worker")

RAW_KEEP = 32 * 1024  # raw messages are kept for the operator, up to a Table storage-friendly size


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
        envelope = _retry_envelope(raw)
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
        return self._process(record, notice)

    def handle_poison(self, body: bytes | str, *, dequeue_count: int | None = None) -> str:
        """Record a message the host gave up on, keeping it whole, so nothing vanishes.

        `dequeue_count` is the poison copy's own count, not the failed deliveries before it,
        so it is kept in the history only. An activation that already finished, or that a
        live worker holds, keeps its status: the poisoned copy was a duplicate of it.
        """
        raw = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        notice_id = _guess_notice_id(raw) or f"poison-{uuid.uuid4().hex[:12]}"
        now = self.clock()
        error = error_dict(ErrorCode.UNHANDLED,
                           "the Functions host gave up on this message after its maximum number of deliveries "
                           "(host.json maxDequeueCount)")
        record = self.store.get(notice_id)
        if record is None:
            record = _new_record(notice_id, _guess_tenant(raw), now, status=Status.FAILED.value)
            record = replace(record, raw_message=raw[:RAW_KEEP], error=error, finished_at=now)
            try:
                self.store.create(record)
            except RecordExists:
                return self.handle_poison(body, dequeue_count=dequeue_count)
        elif Status(record.status).final or _lease_live(record, now):
            self.event(record, "poisoned", f"a copy of this message was poisoned; the activation stays {record.status}",
                       raw_message=raw[:2048], dequeue_count=dequeue_count)
            return "poisoned_duplicate"
        else:
            record = replace(record, status=Status.FAILED.value, error=error, finished_at=now, updated_at=now,
                             raw_message=raw[:RAW_KEEP], lease_owner=None, lease_expires_at=None)
            try:
                self.store.replace(record)
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
        if existing is None:
            try:
                record = self.store.create(record)
            except RecordExists:
                record = self.store.replace(replace(record, etag=self._etag(notice_id)))
        else:
            record = self.store.replace(replace(record, etag=existing.etag, created_at=existing.created_at))
        self.event(record, "notice.rejected", f"invalid notice: {len(exc.errors)} field error(s)",
                   errors=exc.to_dict()["errors"])
        return record

    def accept(self, notice: ActivationNotice, raw: str | None = None) -> ActivationRecord | None:
        """The activation row for a valid notice: new, existing, or None on a content conflict."""
        now = self.clock()
        existing = self.store.get(notice.notice_id)
        if existing is None or (existing.status == Status.REJECTED.value and not existing.content_hash):
            record = _new_record(notice.notice_id, notice.tenant_id, now, status=Status.QUEUED.value)
            record = replace(record, content_hash=notice.content_hash, notice_json=notice.canonical_json(),
                             services=notice.services, customer_name=notice.customer_name or "",
                             contract_id=notice.contract_id or "")
            try:
                if existing is None:
                    record = self.store.create(record)
                else:
                    record = self.store.replace(replace(record, etag=existing.etag, created_at=existing.created_at))
            except (RecordExists, ConcurrentUpdate):
                return self.accept(notice, raw)
            self.event(record, "received", "activation notice accepted", content_hash=notice.content_hash)
            return record
        if existing.content_hash != notice.content_hash:
            self._conflict(existing, notice, raw)
            return None
        return existing

    def _conflict(self, existing: ActivationRecord, notice: ActivationNotice, raw: str | None) -> None:
        detail = (f"notice_id {notice.notice_id} was first received with content {existing.content_hash[:12]}, "
                  f"now with {notice.content_hash[:12]}")
        err = error_dict(ErrorCode.NOTICE_CONFLICT, detail)
        # On a concurrent update the history below still records the conflict.
        with contextlib.suppress(ConcurrentUpdate):
            self.store.replace(replace(existing, status=Status.REJECTED.value, error=err, updated_at=self.clock(),
                                       finished_at=self.clock()))
        self.event(existing, "notice.conflict", detail, previous_status=existing.status,
                   first_hash=existing.content_hash, new_hash=notice.content_hash,
                   new_notice=json.loads(notice.canonical_json()))

    # -- processing -----------------------------------------------------------------------
    def _handle_retry(self, envelope: dict[str, Any]) -> str:
        notice_id = str(envelope.get("notice_id", ""))
        record = self.store.get(notice_id)
        if record is None or not record.notice_json:
            log.warning("retry message for unknown activation %s dropped", notice_id)
            return "unknown"
        if int(envelope.get("series", 0)) != record.series:
            return "stale"  # an operator started a new series since this message was sent
        notice = parse_notice(record.notice_json, self.settings)
        return self._process(record, notice)

    def _process(self, record: ActivationRecord, notice: ActivationNotice) -> str:
        status = Status(record.status)
        if status in (Status.SUCCEEDED, Status.NEEDS_ATTENTION, Status.FAILED, Status.REJECTED):
            self.event(record, "duplicate", f"delivery ignored: activation is already {status.value}")
            return "duplicate"
        claimed = self.claim(record)
        if claimed is None:
            return "busy"
        try:
            outcome = self.engine.run(notice)
        except Exception as exc:
            self._release_after_bug(claimed, exc)
            raise
        return self.finish(claimed, outcome)

    def claim(self, record: ActivationRecord) -> ActivationRecord | None:
        """Take the activation for this worker, or hand the message back if another holds it."""
        now = self.clock()
        owner = f"{self.owner_prefix}:{uuid.uuid4().hex[:8]}"
        for _ in range(5):
            current = self.store.get(record.notice_id)
            if current is None:
                return None
            if current.status in (s.value for s in Status if s.final):
                return None
            if _lease_live(current, now):
                assert current.lease_expires_at is not None
                # Someone is running it now. If that worker crashed, its lease ends at
                # lease_expires_at; look again then, so the activation is never stranded.
                wait = (current.lease_expires_at - now).total_seconds() + 1
                self.queue.schedule_retry(_envelope(current), delay_seconds=wait)
                self.event(current, "busy", f"another worker holds the lease; looking again in {wait:.0f}s")
                return None
            takeover = current.status == Status.RUNNING.value
            attempts = current.attempts + 1
            claimed = replace(current, status=Status.RUNNING.value, attempts=attempts, lease_owner=owner,
                              lease_expires_at=now + timedelta(seconds=self.settings.lease_seconds),
                              started_at=now, updated_at=now, next_attempt_at=None)
            try:
                claimed = self.store.replace(claimed)
            except ConcurrentUpdate:
                continue
            self.event(claimed, "claimed",
                       f"attempt {attempts}" + (" (took over an expired lease)" if takeover else ""),
                       owner=owner, takeover=bool(takeover))
            return claimed
        return None

    def finish(self, record: ActivationRecord, outcome: Outcome) -> str:
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
                next_at = now + timedelta(seconds=delay)
        done = replace(
            record, status=status.value, connectors=[c.to_dict() for c in outcome.connectors],
            error=error, warnings=outcome.warnings, updated_at=now, lease_owner=None, lease_expires_at=None,
            next_attempt_at=next_at, finished_at=now if status.final else None,
        )
        try:
            self.store.replace(done)
        except ConcurrentUpdate:
            # Our lease was taken over (we ran past it). The other worker owns the truth now;
            # keep our history but do not overwrite its row or enqueue a competing retry.
            events.append(Event("lease.lost", "lease expired during the run; result kept in history only"))
            self._append(record, events)
            return "lease_lost"
        if delay is not None:
            events.append(Event("retry.scheduled", f"attempt {record.attempts + 1} in {delay:.0f}s",
                                data={"delay_s": round(delay, 1), "next_attempt_at": now_iso(next_at)}))
        self._append(record, events)
        if delay is not None:
            self.queue.schedule_retry(_envelope(done), delay_seconds=delay)
        return status.value

    def _release_after_bug(self, record: ActivationRecord, exc: Exception) -> None:
        detail = f"{type(exc).__name__}: {str(exc)[:500]}"
        try:
            current = self.store.get(record.notice_id)
            if current is not None and current.lease_owner == record.lease_owner:
                self.store.replace(replace(current, status=Status.QUEUED.value, lease_owner=None,
                                           lease_expires_at=None, updated_at=self.clock(),
                                           error=error_dict(ErrorCode.UNHANDLED, detail)))
            self.event(record, "error.unhandled", detail)
        except Exception:  # recording must never mask the original bug
            log.exception("could not release activation %s after an unexpected error", record.notice_id)

    # -- operator actions -----------------------------------------------------------------
    def retry(self, notice_id: str) -> ActivationRecord:
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
        try:
            fresh = self.store.replace(fresh)
        except ConcurrentUpdate as exc:
            raise RetryRefused(409, "the activation changed meanwhile; look again and retry") from exc
        self.event(fresh, "retry.requested", f"operator retry: series {fresh.series}")
        self.queue.schedule_retry(_envelope(fresh), delay_seconds=0)
        return fresh

    def submit(self, body: bytes | str) -> tuple[ActivationRecord, bool]:
        """Validate and enqueue a notice (HTTP submit). Returns (record, enqueued)."""
        raw = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        notice = parse_notice(body, self.settings)  # NoticeError propagates to the caller
        record = self.accept(notice, raw)
        if record is None:
            conflict = self.store.get(notice.notice_id)
            assert conflict is not None
            return conflict, False
        if Status(record.status).final:
            return record, False
        self.queue.send_notice(notice.canonical_json())
        return record, True

    # -- history --------------------------------------------------------------------------
    def event(self, record: ActivationRecord, kind: str, message: str, **data: Any) -> None:
        self._append(record, [Event(kind, message, data=data)])

    def _append(self, record: ActivationRecord, events: list[Event]) -> None:
        self.store.append_events([
            EventRecord(record.notice_id, e.kind, e.message, at=_parse_at(e.at), attempt=record.attempts,
                        series=record.series, data=e.data or None, duration_ms=e.duration_ms)
            for e in events
        ])

    def _etag(self, notice_id: str) -> str | None:
        current = self.store.get(notice_id)
        return None if current is None else current.etag


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


def _envelope(record: ActivationRecord) -> dict[str, Any]:
    return {"kind": RETRY_KIND, "notice_id": record.notice_id, "series": record.series, "attempt": record.attempts}


def _retry_envelope(raw: str) -> dict[str, Any] | None:
    if '"kind"' not in raw:
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if isinstance(obj, dict) and obj.get("kind") == RETRY_KIND and isinstance(obj.get("notice_id"), str):
        return obj
    return None


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
    import hashlib

    return hashlib.sha256(raw.encode("utf-8", errors="replace")).hexdigest()[:16]


def _new_record(notice_id: str, tenant_id: str, now: datetime, *, status: str) -> ActivationRecord:
    return ActivationRecord(notice_id=notice_id, tenant_id=tenant_id, status=status, created_at=now, updated_at=now)


__all__ = ["ProvisioningError", "RetryRefused", "Worker"]
