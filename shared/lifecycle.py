"""The lifecycle of an activation as one pure function: `(record, event, now) -> Decision`.

Every status change in the product goes through `transition`. It does no I/O: the worker
reads the row, asks `transition` what to do, performs the effects (queue sends, history,
the provisioning run) and writes the row with the ETag it was read at. When that write loses
a race, the worker reads again and asks again, so each decision is made on the row as it is.

The events, and what they can lead to:

- `Received` a valid notice: a new `queued` row; the same content again changes nothing;
  different content under a used notice_id is a **conflict**: refused, an event with both
  hashes and a warning on the row, and the status and outcome stay as they were.
- `Rejected` an invalid notice: a `rejected` row, unless a valid notice owns the id (then an
  event only).
- `Delivered` (a notice again) or `RetryDue` (a retry or watchdog message): a **duplicate** of
  a finished activation does nothing; otherwise the activation is **claimed** (`running`, a
  short lease, a watchdog message due when the lease ends), or is busy, stale or not yet due.
  A `running` row whose lease has run out is taken over (**lease expired**), until the attempts
  run out.
- `Heartbeat`: the running worker renews its lease.
- `AttemptFinished` with the engine's Outcome: `succeeded`, or what POLICY says for the
  error's code: retry with back-off, wait for a grant to propagate, `needs_attention`, `failed`.
- `Crashed` (a bug in the run): the claim is released so the host's redelivery can run it.
- `OperatorRetry`: a fresh series of attempts.
- `DriftFound` (a drift check's finding, `shared/drift.py`): a succeeded activation whose
  connectors no longer match becomes `drifted`, keeping its last run's outcome and gaining the
  differences as a warning and an event; no differences is nothing (or, for a drifted one that
  an admin set right again, back to `succeeded`).
- `DriftRepair`: a drifted activation's re-provision, a fresh series like an operator retry,
  so it is claimed, run and recorded like any run (and so returns to `succeeded`).
- `Poisoned`: the host gave up on a message. Only a copy of this very activation that nothing
  else will move on fails it; a copy of a finished, running or rescheduled activation, or one
  whose content differs, is an event and nothing more.

- `Misconfigured`: a message arrived while the product's settings cannot be loaded, and went
  back on its queue to wait for the fix. A notice never seen before gets a `needs_attention`
  placeholder row (`CONFIG_INVALID`, the raw message kept, no content) that the notice itself
  replaces once it is read with working settings; an activation that exists gets an event, and
  keeps its record.
A finished record changes only through an event that says a real new run happened
(`OperatorRetry`, then a claim), or through the poison of its own stuck message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .errors import Disposition, ErrorCode, disposition, error_dict
from .outcome import Event, Outcome, Status, now_iso
from .queueing import RetryEnvelope
from .retry import backoff
from .store import ActivationRecord

if TYPE_CHECKING:
    from .notice import ActivationNotice
    from .settings import Settings

RAW_KEEP = 32 * 1024  # raw messages are kept for the operator (the store caps them further)
RAW_IN_EVENT = 2048
# A scheduled attempt whose message has not come this long after it was due is taken as lost:
# any message for the activation may then run it.
OVERDUE_GRACE = timedelta(seconds=60)
# An operator retry's message waits this long, so the row's new series is written first.
OPERATOR_RETRY_DELAY_SECONDS = 2.0
# A watchdog message arrives this long after the lease it watches has run out.
WATCH_GRACE_SECONDS = 2.0
# Conflict warnings kept on one record; further conflicts are still events.
MAX_CONFLICT_WARNINGS = 10


class Result(StrEnum):
    """What handling one event came to (the worker's return value, for logs and tests)."""

    ACCEPTED = "accepted"
    CONFLICT = "conflict"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    SCHEDULED = "scheduled"
    STALE = "stale"
    BUSY = "busy"
    WATCHING = "watching"
    CLAIMED = "claimed"
    RENEWED = "renewed"
    SUCCEEDED = "succeeded"
    RETRY_SCHEDULED = "retry_scheduled"
    NEEDS_ATTENTION = "needs_attention"
    FAILED = "failed"
    LEASE_LOST = "lease_lost"
    RELEASED = "released"
    QUEUED = "queued"
    NOT_FOUND = "not_found"
    REFUSED = "refused"
    UNKNOWN = "unknown"
    INVALID_RETRY = "invalid_retry"
    POISONED = "poisoned"
    POISONED_DUPLICATE = "poisoned_duplicate"
    POISON_CONFLICT = "poison_conflict"
    POISON_REQUEUED = "poison_requeued"  # could not be recorded now; back on the poison queue
    MISCONFIGURED = "misconfigured"  # settings broken: recorded, and the message waits on its queue
    DRIFTED = "drifted"
    IN_SYNC = "in_sync"  # a drift check found the connectors as the last run left them


# -- effects ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Put a retry envelope on the activation queue, visible after `delay_seconds`."""

    envelope: RetryEnvelope
    delay_seconds: float


@dataclass(frozen=True)
class Append:
    """Add events to the activation's history (best effort once the row is written)."""

    events: tuple[Event, ...]


@dataclass(frozen=True)
class RunEngine:
    """Provision the claimed activation's notice now."""


Effect = Send | Append | RunEngine


@dataclass(frozen=True)
class Decision:
    """Where an activation goes next.

    `record` is the row to write (with the ETag it was read at), or None to leave the row as
    it is. `before` runs before the write, so that its failure leaves the row unchanged (a
    claim's watchdog, an operator retry's message); `after` runs once the row is written.
    """

    result: Result
    record: ActivationRecord | None = None
    before: tuple[Effect, ...] = ()
    after: tuple[Effect, ...] = ()
    detail: str = ""

    @property
    def effects(self) -> tuple[Effect, ...]:
        return self.before + self.after


# -- events ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    notice: ActivationNotice
    requested_by: str | None = None  # who submitted it over HTTP; None when it came from the queue


@dataclass(frozen=True)
class Rejected:
    notice_id: str
    tenant_id: str
    error: Mapping[str, Any]  # NoticeError.to_dict(): code, message, hints, errors per field
    raw: str


@dataclass(frozen=True)
class Delivered:
    owner: str  # the claim this worker would take: unique per attempt to claim


@dataclass(frozen=True)
class RetryDue:
    envelope: RetryEnvelope
    owner: str


@dataclass(frozen=True)
class Heartbeat:
    owner: str


@dataclass(frozen=True)
class AttemptFinished:
    owner: str
    outcome: Outcome
    jitter: float = 0.5  # drawn by the worker from [0, 1), so the back-off is reproducible here


@dataclass(frozen=True)
class Crashed:
    owner: str
    detail: str


@dataclass(frozen=True)
class OperatorRetry:
    requested_by: str | None = None  # the signed-in operator, or "function key"


@dataclass(frozen=True)
class DriftFound:
    """A drift check's reading of a succeeded activation's connectors (empty: none differ)."""

    differences: tuple[Mapping[str, Any], ...]
    requested_by: str | None = None  # who asked for the check; None for the schedule


@dataclass(frozen=True)
class DriftRepair:
    requested_by: str | None = None


@dataclass(frozen=True)
class Poisoned:
    notice_id: str
    raw: str
    tenant_id: str = ""
    notice: ActivationNotice | None = None  # the poisoned text, when it parses as a notice
    envelope: RetryEnvelope | None = None  # ... or as a retry envelope
    dequeue_count: int | None = None


@dataclass(frozen=True)
class Misconfigured:
    """A message for `notice_id` that a trigger could not handle: the settings do not load."""

    notice_id: str
    raw: str
    problem: str  # the SettingsError's message: names the variable and how to fix it
    tenant_id: str = ""
    placeholder: bool = True  # False for a retry or watchdog message: it names no new activation
    queue: str = ""  # where the message waits for the fix (the activation or the poison queue)


LifecycleEvent = (Received | Rejected | Delivered | RetryDue | Heartbeat | AttemptFinished | Crashed
                  | OperatorRetry | Poisoned | DriftFound | DriftRepair | Misconfigured)


# -- rules -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rules:
    """The settings the lifecycle depends on."""

    max_attempts: int = 8
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    lease_seconds: float = 60.0
    grant_propagation_attempts: int = 4
    grant_propagation_base_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Rules:
        return cls(max_attempts=settings.max_attempts, retry_base_seconds=settings.retry_base_seconds,
                   retry_max_seconds=settings.retry_max_seconds, lease_seconds=settings.lease_seconds,
                   grant_propagation_attempts=settings.grant_propagation_attempts,
                   grant_propagation_base_seconds=settings.grant_propagation_base_seconds)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    def grant_delay(self, wait: int) -> float:
        """Seconds before retry `wait` (from 1) of an activation waiting for a grant."""
        return min(self.retry_max_seconds, self.grant_propagation_base_seconds * 2.0 ** (wait - 1))


# -- the function ----------------------------------------------------------------------------
def transition(record: ActivationRecord | None, event: LifecycleEvent, now: datetime,
               rules: Rules | None = None) -> Decision:
    """Where an activation goes next. No I/O: the worker performs the effects and writes the row."""
    rules = rules if rules is not None else Rules()
    match event:
        case Received():
            return _received(record, event.notice, now, requested_by=event.requested_by)
        case Rejected():
            return _rejected(record, event, now)
        case Poisoned():
            return _poisoned(record, event, now)
        case Misconfigured():
            return _misconfigured(record, event, now)
        case OperatorRetry():
            return _operator_retry(record, now, requested_by=event.requested_by)
    if record is None:
        return Decision(Result.UNKNOWN, detail="no activation under this notice_id")
    match event:
        case Delivered():
            return _delivered(record, event, now, rules)
        case RetryDue():
            return _retry_due(record, event, now, rules)
        case Heartbeat():
            return _heartbeat(record, event, now, rules)
        case AttemptFinished():
            return _finished(record, event, now, rules)
        case Crashed():
            return _crashed(record, event, now)
        case DriftFound():
            return _drift_found(record, event, now)
        case DriftRepair():
            return _drift_repair(record, now, requested_by=event.requested_by)
    raise TypeError(f"not a lifecycle event: {event!r}")


def envelope(record: ActivationRecord, *, due: datetime | None = None,
             recheck_owner: str | None = None) -> RetryEnvelope:
    return RetryEnvelope(notice_id=record.notice_id, series=record.series, attempt=record.attempts,
                         due=_iso(due), recheck_owner=recheck_owner)


# -- acceptance ------------------------------------------------------------------------------
def _received(record: ActivationRecord | None, notice: ActivationNotice, now: datetime, *,
              requested_by: str | None = None) -> Decision:
    if record is None or not record.content_hash:
        # A row without content (an invalid notice's, or a poison placeholder that could not
        # parse) gives way to a valid notice under the same id.
        new = _with_notice(_blank(record, notice.notice_id, notice.tenant_id, Status.QUEUED, now), notice)
        return Decision(Result.ACCEPTED, new, after=_append(
            _event("received", "activation notice accepted", now, content_hash=notice.content_hash,
                   **_who(requested_by))))
    if record.content_hash == notice.content_hash:
        return Decision(Result.ACCEPTED)
    return _conflict(record, notice, now)


def _conflict(record: ActivationRecord, notice: ActivationNotice, now: datetime) -> Decision:
    first, new = record.content_hash, notice.content_hash
    detail = (f"notice_id {record.notice_id} was first received with content {first[:12]}, now with {new[:12]}: "
              f"the new notice is refused and the activation stays {record.status.value}")
    conflicts = [w for w in record.warnings if w.get("code") == ErrorCode.NOTICE_CONFLICT.value]
    updated: ActivationRecord | None = None
    if len(conflicts) < MAX_CONFLICT_WARNINGS and not any(w.get("new_hash") == new for w in conflicts):
        # Only the warnings change: status, outcome, error and timestamps stay the truth of the run.
        warning = {"code": ErrorCode.NOTICE_CONFLICT.value, "message": detail, "first_hash": first,
                   "new_hash": new, "at": now_iso(now)}
        updated = replace(record, warnings=[*record.warnings, warning])
    return Decision(Result.CONFLICT, updated, detail=detail, after=_append(_event(
        "notice.conflict", detail, now, previous_status=record.status.value, first_hash=first, new_hash=new,
        new_notice=json.loads(notice.canonical_json()))))


def _rejected(record: ActivationRecord | None, event: Rejected, now: datetime) -> Decision:
    errors = event.error.get("errors", [])
    if record is not None and record.content_hash:
        return Decision(Result.REJECTED, after=_append(_event(
            "notice.rejected", "an invalid notice arrived under this notice_id; the activation keeps its record",
            now, errors=errors, raw_message=event.raw[:RAW_IN_EVENT])))
    new = replace(_blank(record, event.notice_id, event.tenant_id, Status.REJECTED, now),
                  raw_message=event.raw[:RAW_KEEP], error=dict(event.error), finished_at=now)
    count = len(errors) if isinstance(errors, Sequence) else 0
    return Decision(Result.REJECTED, new, after=_append(
        _event("notice.rejected", f"invalid notice: {count} field error(s)", now, errors=errors)))


# -- deliveries and claims -------------------------------------------------------------------
def _delivered(record: ActivationRecord, event: Delivered, now: datetime, rules: Rules) -> Decision:
    if record.status.final:
        return Decision(Result.DUPLICATE, after=_append(
            _event("duplicate", f"delivery ignored: activation is already {record.status.value}", now)))
    due = record.next_attempt_at
    if record.status is Status.RETRY_SCHEDULED and due is not None and due > now:
        # Its retry message may have been lost with the reply to the send: send it again for the
        # same due time. Two messages for one due time are safe; the claim runs one.
        return Decision(Result.SCHEDULED, after=(Send(envelope(record, due=due), _seconds(due - now)),))
    return _claim(record, event.owner, now, rules)


def _retry_due(record: ActivationRecord, event: RetryDue, now: datetime, rules: Rules) -> Decision:
    env = event.envelope
    if not record.notice_json:
        return Decision(Result.UNKNOWN, detail="the activation has no stored notice to retry")
    if env.series != record.series:
        return Decision(Result.STALE, detail="an operator started a new series since this message was sent")
    if record.status.final:
        return Decision(Result.DUPLICATE)
    if env.recheck_owner is not None:
        # A watchdog: meaningful only while the claim it watches is still on the row.
        if not (record.status is Status.RUNNING and record.lease_owner == env.recheck_owner):
            return Decision(Result.STALE)
        if record.lease_live(now):
            assert record.lease_expires_at is not None
            # The holder is alive (it renewed the lease): look again when the renewed lease ends.
            wait = _seconds(record.lease_expires_at - now) + WATCH_GRACE_SECONDS
            return Decision(Result.WATCHING, after=(Send(envelope(record, recheck_owner=env.recheck_owner), wait),))
        # The holder stopped renewing: take over below.
    elif record.status is Status.RETRY_SCHEDULED and env.due != _iso(record.next_attempt_at):
        due = record.next_attempt_at
        if due is not None and due + OVERDUE_GRACE > now:
            if due > now:
                # The message for the current due time may never have been sent (the worker
                # stopped between the row and the send): send one; the claim runs only one.
                return Decision(Result.STALE, after=(Send(envelope(record, due=due), _seconds(due - now)),))
            return Decision(Result.STALE)
        # overdue: the message for it is lost; run it now
    return _claim(record, event.owner, now, rules)


def _claim(record: ActivationRecord, owner: str, now: datetime, rules: Rules) -> Decision:
    if record.lease_live(now):
        # The holder's watchdog takes the activation over if the holder dies; nothing to add.
        return Decision(Result.BUSY, after=_append(
            _event("busy", "another worker is running this activation; delivery ignored", now)))
    takeover = record.status is Status.RUNNING
    if takeover and record.attempts >= rules.max_attempts:
        # Every attempt so far lost its worker (killed, recycled, timed out): stop here rather
        # than send validation mail again every lease period, forever.
        failed = replace(record, status=Status.FAILED, lease_owner=None, lease_expires_at=None, finished_at=now,
                         updated_at=now, next_attempt_at=None,
                         error=error_dict(ErrorCode.MAX_ATTEMPTS_EXCEEDED,
                                          f"the worker was lost during each of {record.attempts} attempts"))
        return Decision(Result.FAILED, failed, after=_append(_event("failed", "attempts exhausted by lost workers",
                                                                    now)))
    attempts = record.attempts + 1
    claimed = replace(record, status=Status.RUNNING, attempts=attempts, lease_owner=owner,
                      lease_expires_at=now + rules.lease, started_at=now, updated_at=now, next_attempt_at=None)
    events = []
    if takeover:
        events.append(_event("lease.expired", "the worker running the previous attempt stopped renewing its lease",
                             now))
    events.append(_event("claimed", f"attempt {attempts}" + (" (took over an expired lease)" if takeover else ""),
                         now, takeover=takeover))
    # The watchdog goes out before the claim is written: if it cannot be sent, nothing is
    # claimed; if the claim then fails, the watchdog finds another owner and is dropped.
    watchdog = Send(envelope(claimed, recheck_owner=owner), rules.lease_seconds + WATCH_GRACE_SECONDS)
    return Decision(Result.CLAIMED, claimed, before=(watchdog,), after=(Append(tuple(events)), RunEngine()))


def _heartbeat(record: ActivationRecord, event: Heartbeat, now: datetime, rules: Rules) -> Decision:
    if record.status is not Status.RUNNING or record.lease_owner != event.owner:
        return Decision(Result.LEASE_LOST)
    return Decision(Result.RENEWED, replace(record, lease_expires_at=now + rules.lease))


# -- outcomes --------------------------------------------------------------------------------
def _finished(record: ActivationRecord, event: AttemptFinished, now: datetime, rules: Rules) -> Decision:
    outcome = event.outcome
    run_events = tuple(outcome.events)
    if record.status is not Status.RUNNING or record.lease_owner != event.owner:
        # Another worker took over (this one ran past its lease): it owns the truth now.
        lost = _event("lease.lost", "another worker took the activation over during this run; its result is kept "
                      "in history only", now)
        return Decision(Result.LEASE_LOST, after=(Append((*run_events, lost)),))
    base = replace(record, connectors=[c.to_dict() for c in outcome.connectors],
                   warnings=[*outcome.warnings, *_conflict_warnings(record)], updated_at=now, lease_owner=None,
                   lease_expires_at=None, next_attempt_at=None)
    error = outcome.error
    if error is None:
        done = replace(base, status=Status.SUCCEEDED, error=None, finished_at=now, propagation_waits=0)
        return Decision(Result.SUCCEEDED, done, after=(Append(run_events),))
    code = str(error.get("code"))
    kind = disposition(code)
    if kind is Disposition.RETRY:
        if record.attempts >= rules.max_attempts:
            return _give_up(base, error, now, run_events)
        delay = backoff(record.attempts, base_seconds=rules.retry_base_seconds, max_seconds=rules.retry_max_seconds,
                        retry_after=outcome.retry_after, jitter=event.jitter)
        return _schedule(replace(base, propagation_waits=0), error, delay, now, run_events)
    if kind is Disposition.RETRY_THEN_ATTENTION:
        wait = record.propagation_waits + 1
        limit = rules.grant_propagation_attempts
        if wait <= limit and record.attempts < rules.max_attempts:
            delay = rules.grant_delay(wait)
            note = (f"waiting for the grant to propagate to Exchange Online: retry {wait} of {limit} in "
                    f"{delay:.0f}s, with a new token")
            return _schedule(replace(base, propagation_waits=wait), {**error, "note": note}, delay, now, run_events,
                             kind="grant.waiting", message=note)
        note = (f"the grant had not reached Exchange Online after {limit} retries; a person must check it"
                if limit else "")
        return _final(base, Status.NEEDS_ATTENTION, {**error, "note": note} if note else error, now, run_events)
    status = {Disposition.ATTENTION: Status.NEEDS_ATTENTION, Disposition.REJECT: Status.REJECTED}.get(
        kind, Status.FAILED)
    return _final(replace(base, propagation_waits=0), status, error, now, run_events)


def _final(base: ActivationRecord, status: Status, error: Mapping[str, Any], now: datetime,
           run_events: tuple[Event, ...]) -> Decision:
    done = replace(base, status=status, error=dict(error), finished_at=now)
    return Decision(Result(status.value), done, after=(Append(run_events),))


def _give_up(base: ActivationRecord, last: Mapping[str, Any], now: datetime, run_events: tuple[Event, ...]) -> Decision:
    error = error_dict(ErrorCode.MAX_ATTEMPTS_EXCEEDED, f"gave up after {base.attempts} attempts; last error "
                                                        f"{last.get('code')}: {last.get('message')}")
    error["last_error"] = dict(last)
    return _final(base, Status.FAILED, error, now, run_events)


def _schedule(base: ActivationRecord, error: Mapping[str, Any], delay: float, now: datetime,
              run_events: tuple[Event, ...], *, kind: str = "retry.scheduled", message: str = "") -> Decision:
    # Whole milliseconds, rounded up: the due time travels as text at that precision (now_iso),
    # and a retry never comes early.
    next_at = now + timedelta(milliseconds=math.ceil(max(delay, 0.0) * 1000))
    extra = next_at.microsecond % 1000
    if extra:
        next_at += timedelta(microseconds=1000 - extra)
    wait = _seconds(next_at - now)
    done = replace(base, status=Status.RETRY_SCHEDULED, error=dict(error), next_attempt_at=next_at, finished_at=None)
    scheduled = _event(kind, message or f"attempt {base.attempts + 1} in {wait:.0f}s", now,
                       delay_s=round(wait, 1), next_attempt_at=now_iso(next_at))
    # Sent before the history: if this send fails, the host redelivers the message and the
    # redelivery sends it again (see _delivered and _retry_due).
    return Decision(Result.RETRY_SCHEDULED, done,
                    after=(Send(envelope(done, due=next_at), wait), Append((*run_events, scheduled))))


def _crashed(record: ActivationRecord, event: Crashed, now: datetime) -> Decision:
    note = _append(_event("error.unhandled", event.detail, now))
    if record.status is Status.RUNNING and record.lease_owner == event.owner:
        released = replace(record, status=Status.QUEUED, lease_owner=None, lease_expires_at=None, updated_at=now,
                           error=error_dict(ErrorCode.UNHANDLED, event.detail))
        return Decision(Result.RELEASED, released, after=note)
    return Decision(Result.RELEASED, after=note)


# -- operator --------------------------------------------------------------------------------
def _operator_retry(record: ActivationRecord | None, now: datetime, *, requested_by: str | None = None) -> Decision:
    if record is None:
        return Decision(Result.NOT_FOUND, detail="no activation under this notice_id")
    if record.lease_live(now):
        return Decision(Result.REFUSED, detail="the activation is running now; retry when it has finished")
    if not record.notice_json:
        return Decision(Result.REFUSED,
                        detail="the notice was rejected as invalid; submit a corrected notice instead")
    fresh = replace(record, status=Status.QUEUED, attempts=0, propagation_waits=0, series=record.series + 1,
                    error=None, lease_owner=None, lease_expires_at=None, next_attempt_at=None, finished_at=None,
                    updated_at=now)
    # The message goes first: if it cannot be sent, nothing changed. It waits a moment so the
    # row carries its series when it arrives; if the row then cannot be written, it is stale.
    return Decision(Result.QUEUED, fresh, before=(Send(envelope(fresh), OPERATOR_RETRY_DELAY_SECONDS),),
                    after=_append(_event("retry.requested", f"operator retry: series {fresh.series}"
                                         + (f" (requested by {requested_by})" if requested_by else ""), now,
                                         **_who(requested_by))))


# -- drift -----------------------------------------------------------------------------------
DRIFT_WARNING = "CONNECTOR_DRIFT"  # the warning on a drifted record; not an error code: no run failed


def _drift_found(record: ActivationRecord, event: DriftFound, now: datetime) -> Decision:
    if record.status not in (Status.SUCCEEDED, Status.DRIFTED) or record.lease_live(now):
        return Decision(Result.STALE, detail=f"the activation is {record.status.value}; only a succeeded "
                                             "activation is drift-checked")
    differences = [dict(d) for d in event.differences]
    previous = _drift_warning(record)
    others = [w for w in record.warnings if w.get("code") != DRIFT_WARNING]
    if not differences:
        if record.status is Status.SUCCEEDED:
            return Decision(Result.IN_SYNC)  # nothing to write, not even an event
        cleared = replace(record, status=Status.SUCCEEDED, warnings=others, updated_at=now)
        return Decision(Result.IN_SYNC, cleared, after=_append(_event(
            "drift.cleared", "the connectors match the last run again", now, **_who(event.requested_by))))
    if previous is not None and previous.get("differences") == differences and record.status is Status.DRIFTED:
        return Decision(Result.DRIFTED)  # the same finding again: already on the record
    message = "connectors changed since the last run: " + "; ".join(_describe(d) for d in differences)
    warning = {"code": DRIFT_WARNING, "message": message, "differences": differences, "at": now_iso(now)}
    # Only status and warnings change: outcome, connectors and timestamps stay the last run's truth.
    drifted = replace(record, status=Status.DRIFTED, warnings=[*others, warning], updated_at=now)
    return Decision(Result.DRIFTED, drifted, after=_append(_event(
        "drift.found", message, now, differences=differences, **_who(event.requested_by))))


def _drift_repair(record: ActivationRecord, now: datetime, *, requested_by: str | None = None) -> Decision:
    if record.status is not Status.DRIFTED:
        return Decision(Result.STALE, detail=f"the activation is {record.status.value}, not drifted")
    decision = _operator_retry(record, now, requested_by=requested_by)
    if decision.record is None:
        return decision
    fresh = decision.record
    return replace(decision, after=_append(_event(
        "drift.repair", f"re-provisioning the drifted connectors: series {fresh.series}", now,
        **_who(requested_by))))


def _drift_warning(record: ActivationRecord) -> Mapping[str, Any] | None:
    return next((w for w in record.warnings if w.get("code") == DRIFT_WARNING), None)


def _describe(difference: Mapping[str, Any]) -> str:
    connector = difference.get("connector")
    if difference.get("parameter") is None:
        return f"{connector}: missing"
    return (f"{connector}: {difference.get('parameter')} is {difference.get('actual')!r}, "
            f"should be {difference.get('desired')!r}")


# -- poison ----------------------------------------------------------------------------------
POISON_NOTE = ("the Functions host gave up on this message after its maximum number of deliveries "
               "(host.json maxDequeueCount)")


def _poisoned(record: ActivationRecord | None, event: Poisoned, now: datetime) -> Decision:
    data: dict[str, Any] = {"raw_message": event.raw[:RAW_IN_EVENT], "dequeue_count": event.dequeue_count}
    if record is None or (not record.content_hash and event.notice is not None):
        new = replace(_blank(record, event.notice_id, event.tenant_id, Status.FAILED, now),
                      raw_message=event.raw[:RAW_KEEP], error=error_dict(ErrorCode.UNHANDLED, POISON_NOTE),
                      finished_at=now)
        if event.notice is not None:
            new = _with_notice(new, event.notice)  # kept, so an operator can retry it
        return Decision(Result.POISONED, new, after=_append(
            _event("poisoned", "the Functions host gave up on this message; recorded as failed", now, **data)))
    status = record.status.value
    if event.envelope is None and (
            (event.notice is not None and event.notice.content_hash != record.content_hash)
            or (event.notice is None and record.content_hash)):
        # Not this activation's notice (other content, or text that does not parse): the
        # activation keeps its truth, and the poisoned text is kept in its history.
        return Decision(Result.POISON_CONFLICT, after=_append(_event(
            "poison.conflict", f"a poisoned message under this notice_id is not this activation's notice; "
            f"the activation stays {status}", now, first_hash=record.content_hash,
            poisoned_hash=event.notice.content_hash if event.notice is not None else None, **data)))
    if (record.status.final or record.lease_live(now)
            or (event.envelope is not None and event.envelope.series != record.series)
            or (record.status is Status.RETRY_SCHEDULED and not _chain_message(record, event, now))):
        return Decision(Result.POISONED_DUPLICATE, after=_append(_event(
            "poisoned", f"a copy of this message was poisoned; the activation stays {status}", now, **data)))
    # The message that would move this activation on is gone: record it as failed, never lost.
    error = error_dict(ErrorCode.UNHANDLED, POISON_NOTE)
    if record.error:
        error["last_error"] = record.error
    failed = replace(record, status=Status.FAILED, error=error, finished_at=now, updated_at=now,
                     raw_message=event.raw[:RAW_KEEP], lease_owner=None, lease_expires_at=None, next_attempt_at=None)
    return Decision(Result.POISONED, failed, after=_append(
        _event("poisoned", "the Functions host gave up on this message; recorded as failed", now, **data)))


def _misconfigured(record: ActivationRecord | None, event: Misconfigured, now: datetime) -> Decision:
    detail = f"{event.problem} (the message waits on {event.queue or 'its queue'} until the setting is fixed)"
    data: dict[str, Any] = {"code": ErrorCode.CONFIG_INVALID.value, "problem": event.problem,
                            "raw_message": event.raw[:RAW_IN_EVENT]}
    if record is None:
        if not event.placeholder:
            return Decision(Result.MISCONFIGURED, detail=detail)
        # Not a rewrite of anything: a row without content gives way to the notice (`_received`).
        new = replace(_blank(None, event.notice_id, event.tenant_id, Status.NEEDS_ATTENTION, now),
                      raw_message=event.raw[:RAW_KEEP], error=error_dict(ErrorCode.CONFIG_INVALID, detail),
                      finished_at=now)
        return Decision(Result.MISCONFIGURED, new, detail=detail, after=_append(_event(
            "config.invalid", f"a message arrived while the settings are invalid: {detail}", now, **data)))
    if (not record.content_hash and record.error is not None
            and record.error.get("code") == ErrorCode.CONFIG_INVALID.value and record.error.get("message") == detail):
        return Decision(Result.MISCONFIGURED, detail=detail)  # this placeholder already says so
    # An activation that exists keeps its record: a broken setting says nothing about its run.
    return Decision(Result.MISCONFIGURED, detail=detail, after=_append(_event(
        "config.invalid", f"a message for this activation arrived while the settings are invalid: {detail}; "
        f"the activation stays {record.status.value}", now, **data)))


def _chain_message(record: ActivationRecord, event: Poisoned, now: datetime) -> bool:
    """Whether a retry_scheduled activation's poisoned message was the one its retry hung on."""
    due = record.next_attempt_at
    if event.envelope is not None and event.envelope.due is not None and event.envelope.due == _iso(due):
        return True
    return due is not None and due + OVERDUE_GRACE < now


# -- helpers ---------------------------------------------------------------------------------
def _blank(record: ActivationRecord | None, notice_id: str, tenant_id: str, status: Status,
           now: datetime) -> ActivationRecord:
    """A new row, or one replacing `record` (keeping its creation time and ETag)."""
    return ActivationRecord(notice_id=notice_id, tenant_id=tenant_id, status=status,
                            created_at=record.created_at if record is not None and record.created_at else now,
                            updated_at=now, etag=record.etag if record is not None else None)


def _with_notice(record: ActivationRecord, notice: ActivationNotice) -> ActivationRecord:
    return replace(record, tenant_id=notice.tenant_id, content_hash=notice.content_hash,
                   notice_json=notice.canonical_json(), services=notice.services,
                   customer_name=notice.customer_name or "", contract_id=notice.contract_id or "")


def _conflict_warnings(record: ActivationRecord) -> list[dict[str, Any]]:
    """Conflict warnings outlive a run: they are about the notice_id, not about one attempt."""
    return [w for w in record.warnings if w.get("code") == ErrorCode.NOTICE_CONFLICT.value]


def _event(kind: str, message: str, now: datetime, **data: Any) -> Event:
    return Event(kind, message, at=now_iso(now), data=data)


def _who(requested_by: str | None) -> dict[str, str]:
    """The `requested_by` field of an event, present only when someone asked over HTTP."""
    return {} if requested_by is None else {"requested_by": requested_by}


def _append(*events: Event) -> tuple[Effect, ...]:
    return (Append(events),)


def _seconds(delta: timedelta) -> float:
    return max(0.0, delta.total_seconds())


def _iso(value: datetime | None) -> str | None:
    return None if value is None else now_iso(value)


__all__ = [
    "DRIFT_WARNING", "OPERATOR_RETRY_DELAY_SECONDS", "Append", "AttemptFinished", "Crashed", "Decision", "Delivered",
    "DriftFound", "DriftRepair", "Effect",
    "Heartbeat", "LifecycleEvent", "Misconfigured", "OperatorRetry", "Poisoned", "Received", "Rejected", "Result",
    "RetryDue",
    "Rules", "RunEngine", "Send", "envelope", "transition",
]
