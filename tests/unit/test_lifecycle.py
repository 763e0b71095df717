"""The lifecycle, transition by transition: `(status, event) -> (status, effects)`, with no service.

Each row of TRANSITIONS is one edge of the lifecycle; the tests after the table pin down the
details an edge's row cannot show (the exact delays, what a conflict keeps, what poison does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.errors import HINTS, POLICY, Disposition, ErrorCode, ProvisioningError, error_dict
from shared.lifecycle import (
    OPERATOR_RETRY_DELAY_SECONDS,
    WATCH_GRACE_SECONDS,
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
    envelope,
    transition,
)
from shared.notice import ActivationNotice, parse_notice
from shared.outcome import ConnectorOutcome, Event, Outcome, Status, Validation, now_iso
from shared.plan import Action
from shared.queueing import RetryEnvelope
from shared.store import ActivationRecord

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
NOW = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
RULES = Rules(max_attempts=5, retry_base_seconds=30.0, retry_max_seconds=3600.0, lease_seconds=60.0,
              grant_propagation_attempts=4, grant_propagation_base_seconds=60.0)
ME = "host:1:aaaa"
OTHER = "host:2:bbbb"


def notice(**overrides: Any) -> ActivationNotice:
    return parse_notice(json.dumps({**SAMPLE, **overrides}, ensure_ascii=False))


NOTICE = notice()
OTHER_NOTICE = notice(mx_host="mgs.cybermail.jp")


def row(status: Status = Status.QUEUED, **fields: Any) -> ActivationRecord:
    base = ActivationRecord(notice_id=NOTICE.notice_id, tenant_id=NOTICE.tenant_id, status=status,
                            content_hash=NOTICE.content_hash, notice_json=NOTICE.canonical_json(),
                            services=NOTICE.services, created_at=NOW - timedelta(hours=1),
                            updated_at=NOW - timedelta(minutes=5), etag="W/etag-1")
    return replace(base, **fields)


def running(owner: str = ME, *, expires_in: float = 30.0, attempts: int = 1, **fields: Any) -> ActivationRecord:
    return row(Status.RUNNING, attempts=attempts, lease_owner=owner,
               lease_expires_at=NOW + timedelta(seconds=expires_in), started_at=NOW - timedelta(seconds=10), **fields)


def succeeded_row() -> ActivationRecord:
    return row(Status.SUCCEEDED, attempts=1, finished_at=NOW - timedelta(minutes=1),
               connectors=[{"name": "Enterprise Audit送信コネクタ", "action": "create", "validation": "passed"}])


def outcome(code: ErrorCode | None = None, *, retry_after: float | None = None) -> Outcome:
    if code is None:
        return Outcome(notice_id=NOTICE.notice_id, tenant_id=NOTICE.tenant_id, status=Status.SUCCEEDED,
                       connectors=[ConnectorOutcome(name="Enterprise Audit送信コネクタ", service="enterprise_audit",
                                                    action=Action.CREATE, validation=Validation.PASSED)],
                       events=[Event("finished", "activation succeeded", at=now_iso(NOW))])
    return Outcome(notice_id=NOTICE.notice_id, tenant_id=NOTICE.tenant_id, status=Status.FAILED,
                   error=error_dict(code, f"{code.value} from the test"), retry_after=retry_after,
                   events=[Event("error", code.value, at=now_iso(NOW))])


def env(**fields: Any) -> RetryEnvelope:
    return RetryEnvelope(**{"notice_id": NOTICE.notice_id, "series": 1, "attempt": 1, **fields})


def kinds(decision: Decision) -> list[str]:
    """The effects in order, as short names: send, run, and each appended event's kind."""
    out: list[str] = []
    for effect in decision.effects:
        if isinstance(effect, Send):
            out.append("send:watch" if effect.envelope.recheck_owner else "send")
        elif isinstance(effect, RunEngine):
            out.append("run")
        elif isinstance(effect, Append):
            out.extend(e.kind for e in effect.events)
    return out


def status_after(before: ActivationRecord | None, decision: Decision) -> Status | None:
    if decision.record is not None:
        return decision.record.status
    return before.status if before is not None else None


@dataclass(frozen=True)
class Case:
    name: str
    before: ActivationRecord | None
    event: LifecycleEvent
    result: Result
    status: Status | None
    effects: list[str]


SMART_HOST = {"connector": "MAILGATESΣ 送信コネクタ", "service": "mailgates", "parameter": "SmartHosts",
              "desired": ["mgf.cybermail.jp"], "actual": ["mgs.cybermail.jp"]}
MISSING = {"connector": "Enterprise Audit送信コネクタ", "service": "enterprise_audit", "parameter": None,
           "desired": None, "actual": None}


def drifted_row(*differences: dict[str, Any]) -> ActivationRecord:
    return replace(succeeded_row(), status=Status.DRIFTED, warnings=[
        {"code": "CONNECTOR_DRIFT", "message": "…", "differences": list(differences), "at": now_iso(NOW)}])


REJECTION = {"code": "NOTICE_INVALID", "message": "mx_host: host_not_allowed",
             "errors": [{"field": "mx_host", "code": "host_not_allowed"}]}

TRANSITIONS = [
    # received
    Case("a new notice is queued", None, Received(NOTICE), Result.ACCEPTED, Status.QUEUED, ["received"]),
    Case("a notice replaces an invalid notice's row", row(Status.REJECTED, content_hash="", notice_json=""),
         Received(NOTICE), Result.ACCEPTED, Status.QUEUED, ["received"]),
    Case("the same notice again changes nothing", row(), Received(NOTICE), Result.ACCEPTED, Status.QUEUED, []),
    # conflict
    Case("another notice under a succeeded activation's id is refused", succeeded_row(), Received(OTHER_NOTICE),
         Result.CONFLICT, Status.SUCCEEDED, ["notice.conflict"]),
    Case("another notice under a running activation's id is refused", running(), Received(OTHER_NOTICE),
         Result.CONFLICT, Status.RUNNING, ["notice.conflict"]),
    # rejected
    Case("an invalid notice is recorded rejected", None, Rejected(NOTICE.notice_id, "", REJECTION, "{}"),
         Result.REJECTED, Status.REJECTED, ["notice.rejected"]),
    Case("an invalid notice under a valid activation's id is an event only", succeeded_row(),
         Rejected(NOTICE.notice_id, "", REJECTION, "{}"), Result.REJECTED, Status.SUCCEEDED, ["notice.rejected"]),
    # duplicate
    Case("a delivery of a finished notice is a duplicate", succeeded_row(), Delivered(ME), Result.DUPLICATE,
         Status.SUCCEEDED, ["duplicate"]),
    Case("a retry message for a finished notice is a duplicate", succeeded_row(), RetryDue(env(), ME),
         Result.DUPLICATE, Status.SUCCEEDED, []),
    # claimed
    Case("a queued activation is claimed, watched and run", row(), Delivered(ME), Result.CLAIMED, Status.RUNNING,
         ["send:watch", "claimed", "run"]),
    Case("a due retry is claimed", row(Status.RETRY_SCHEDULED, attempts=1, next_attempt_at=NOW),
         RetryDue(env(due=now_iso(NOW)), ME), Result.CLAIMED, Status.RUNNING, ["send:watch", "claimed", "run"]),
    Case("a delivery while another worker's lease is live is ignored", running(OTHER), Delivered(ME), Result.BUSY,
         Status.RUNNING, ["busy"]),
    # lease expired
    Case("an expired lease is taken over", running(OTHER, expires_in=-1), Delivered(ME), Result.CLAIMED,
         Status.RUNNING, ["send:watch", "lease.expired", "claimed", "run"]),
    Case("a watchdog finding the lease expired takes over", running(OTHER, expires_in=-1),
         RetryDue(env(recheck_owner=OTHER), ME), Result.CLAIMED, Status.RUNNING,
         ["send:watch", "lease.expired", "claimed", "run"]),
    Case("a watchdog finding its worker alive looks again later", running(OTHER, expires_in=40),
         RetryDue(env(recheck_owner=OTHER), ME), Result.WATCHING, Status.RUNNING, ["send:watch"]),
    Case("a watchdog of an earlier claim is stale", running(OTHER), RetryDue(env(recheck_owner="gone"), ME),
         Result.STALE, Status.RUNNING, []),
    Case("a takeover with no attempts left fails", running(OTHER, expires_in=-1, attempts=5), Delivered(ME),
         Result.FAILED, Status.FAILED, ["failed"]),
    # retry due
    Case("a notice redelivered before its retry is due re-sends the retry",
         row(Status.RETRY_SCHEDULED, attempts=1, next_attempt_at=NOW + timedelta(seconds=90)), Delivered(ME),
         Result.SCHEDULED, Status.RETRY_SCHEDULED, ["send"]),
    Case("a retry message for an older due time is stale",
         row(Status.RETRY_SCHEDULED, attempts=2, next_attempt_at=NOW + timedelta(seconds=90)),
         RetryDue(env(due=now_iso(NOW - timedelta(seconds=300))), ME), Result.STALE, Status.RETRY_SCHEDULED,
         ["send"]),
    Case("any retry message runs an attempt whose own message is long overdue",
         row(Status.RETRY_SCHEDULED, attempts=2, next_attempt_at=NOW - timedelta(seconds=120)),
         RetryDue(env(due=now_iso(NOW - timedelta(seconds=900))), ME), Result.CLAIMED, Status.RUNNING,
         ["send:watch", "claimed", "run"]),
    Case("a retry message of an older series is stale", row(series=2), RetryDue(env(series=1), ME), Result.STALE,
         Status.QUEUED, []),
    # heartbeat
    Case("the holder renews its lease", running(), Heartbeat(ME), Result.RENEWED, Status.RUNNING, []),
    Case("a worker that lost its lease cannot renew it", running(OTHER), Heartbeat(ME), Result.LEASE_LOST,
         Status.RUNNING, []),
    # attempt finished
    Case("a successful run succeeds", running(), AttemptFinished(ME, outcome()), Result.SUCCEEDED, Status.SUCCEEDED,
         ["finished"]),
    Case("a transient error schedules a retry", running(), AttemptFinished(ME, outcome(ErrorCode.THROTTLED)),
         Result.RETRY_SCHEDULED, Status.RETRY_SCHEDULED, ["send", "error", "retry.scheduled"]),
    Case("a transient error on the last attempt fails", running(attempts=5),
         AttemptFinished(ME, outcome(ErrorCode.THROTTLED)), Result.FAILED, Status.FAILED, ["error"]),
    Case("a missing role waits for the grant to propagate", running(),
         AttemptFinished(ME, outcome(ErrorCode.ROLE_MISSING)), Result.RETRY_SCHEDULED, Status.RETRY_SCHEDULED,
         ["send", "error", "grant.waiting"]),
    Case("a missing role after every propagation retry needs attention", running(propagation_waits=4),
         AttemptFinished(ME, outcome(ErrorCode.ROLE_MISSING)), Result.NEEDS_ATTENTION, Status.NEEDS_ATTENTION,
         ["error"]),
    Case("a conflicting connector needs attention", running(),
         AttemptFinished(ME, outcome(ErrorCode.CONFLICTING_CONNECTOR)), Result.NEEDS_ATTENTION,
         Status.NEEDS_ATTENTION, ["error"]),
    Case("a configuration problem needs attention", running(),
         AttemptFinished(ME, outcome(ErrorCode.CONFIG_INVALID)), Result.NEEDS_ATTENTION, Status.NEEDS_ATTENTION,
         ["error"]),
    Case("an unknown tenant fails", running(), AttemptFinished(ME, outcome(ErrorCode.TENANT_NOT_FOUND)),
         Result.FAILED, Status.FAILED, ["error"]),
    Case("a run whose lease was taken over writes nothing", running(OTHER), AttemptFinished(ME, outcome()),
         Result.LEASE_LOST, Status.RUNNING, ["finished", "lease.lost"]),
    # crashed
    Case("a bug releases the claim for the host's redelivery", running(), Crashed(ME, "KeyError: 'x'"),
         Result.RELEASED, Status.QUEUED, ["error.unhandled"]),
    Case("a bug after a takeover leaves the new holder alone", running(OTHER), Crashed(ME, "KeyError: 'x'"),
         Result.RELEASED, Status.RUNNING, ["error.unhandled"]),
    # operator retry
    Case("an operator retry starts a fresh series", row(Status.NEEDS_ATTENTION, attempts=3), OperatorRetry(),
         Result.QUEUED, Status.QUEUED, ["send", "retry.requested"]),
    Case("an operator retry of a running activation is refused", running(OTHER), OperatorRetry(), Result.REFUSED,
         Status.RUNNING, []),
    Case("an operator retry of a rejected notice is refused", row(Status.REJECTED, content_hash="", notice_json=""),
         OperatorRetry(), Result.REFUSED, Status.REJECTED, []),
    Case("an operator retry of nothing is not found", None, OperatorRetry(), Result.NOT_FOUND, None, []),
    # drift
    Case("a drift check finding a changed parameter marks the activation drifted", succeeded_row(),
         DriftFound((SMART_HOST,)), Result.DRIFTED, Status.DRIFTED, ["drift.found"]),
    Case("a drift check finding nothing writes nothing", succeeded_row(), DriftFound(()), Result.IN_SYNC,
         Status.SUCCEEDED, []),
    Case("the same drift found again writes nothing", drifted_row(SMART_HOST), DriftFound((SMART_HOST,)),
         Result.DRIFTED, Status.DRIFTED, []),
    Case("new drift on a drifted activation is recorded", drifted_row(SMART_HOST),
         DriftFound((SMART_HOST, MISSING)), Result.DRIFTED, Status.DRIFTED, ["drift.found"]),
    Case("a drifted activation set right again by an admin is succeeded again", drifted_row(SMART_HOST),
         DriftFound(()), Result.IN_SYNC, Status.SUCCEEDED, ["drift.cleared"]),
    Case("a drift finding for an activation that is not succeeded is stale", row(Status.NEEDS_ATTENTION),
         DriftFound((SMART_HOST,)), Result.STALE, Status.NEEDS_ATTENTION, []),
    Case("a drift finding while a run holds the activation is stale", running(OTHER), DriftFound((SMART_HOST,)),
         Result.STALE, Status.RUNNING, []),
    Case("a drift repair starts a fresh series", drifted_row(SMART_HOST), DriftRepair("drift check"),
         Result.QUEUED, Status.QUEUED, ["send", "drift.repair"]),
    Case("a drift repair of an activation that is no longer drifted is stale", succeeded_row(), DriftRepair(),
         Result.STALE, Status.SUCCEEDED, []),
    # poisoned
    Case("a poisoned notice never seen is recorded failed", None, Poisoned(NOTICE.notice_id, "{}", notice=NOTICE),
         Result.POISONED, Status.FAILED, ["poisoned"]),
    Case("a poisoned copy of a succeeded activation leaves it succeeded", succeeded_row(),
         Poisoned(NOTICE.notice_id, "{}", notice=NOTICE), Result.POISONED_DUPLICATE, Status.SUCCEEDED, ["poisoned"]),
    Case("a poisoned copy with other content leaves the activation alone", row(),
         Poisoned(NOTICE.notice_id, "{}", notice=OTHER_NOTICE), Result.POISON_CONFLICT, Status.QUEUED,
         ["poison.conflict"]),
    Case("unparseable poison under a valid activation's id leaves it alone", row(Status.RETRY_SCHEDULED),
         Poisoned(NOTICE.notice_id, '{"notice_id": "ACT-2026-0001", "issued_at": "9999-12-31T23:59:59-14:00"}'),
         Result.POISON_CONFLICT, Status.RETRY_SCHEDULED, ["poison.conflict"]),
    Case("the poisoned notice of a released activation fails it", row(Status.QUEUED, attempts=2),
         Poisoned(NOTICE.notice_id, "{}", notice=NOTICE), Result.POISONED, Status.FAILED, ["poisoned"]),
    Case("a poisoned copy while a worker runs it is a duplicate", running(OTHER),
         Poisoned(NOTICE.notice_id, "{}", notice=NOTICE), Result.POISONED_DUPLICATE, Status.RUNNING, ["poisoned"]),
    Case("a poisoned envelope of an older series is a duplicate", row(series=2),
         Poisoned(NOTICE.notice_id, "{}", envelope=env(series=1)), Result.POISONED_DUPLICATE, Status.QUEUED,
         ["poisoned"]),
    Case("the poisoned retry message an activation waits on fails it",
         row(Status.RETRY_SCHEDULED, attempts=2, next_attempt_at=NOW - timedelta(seconds=5)),
         Poisoned(NOTICE.notice_id, "{}", envelope=env(due=now_iso(NOW - timedelta(seconds=5)))), Result.POISONED,
         Status.FAILED, ["poisoned"]),
    Case("poison that was already recorded is a duplicate",
         ActivationRecord(notice_id="poison-0123456789abcdef", status=Status.FAILED, etag="W/1"),
         Poisoned("poison-0123456789abcdef", "garbage"), Result.POISONED_DUPLICATE, Status.FAILED, ["poisoned"]),
]


@pytest.mark.parametrize("case", TRANSITIONS, ids=[c.name for c in TRANSITIONS])
def test_transition(case: Case) -> None:
    decision = transition(case.before, case.event, NOW, RULES)
    assert (decision.result, status_after(case.before, decision), kinds(decision)) == (
        case.result, case.status, case.effects)


def test_every_lifecycle_event_type_has_a_row_in_the_table() -> None:
    covered = {type(c.event) for c in TRANSITIONS}
    assert covered == {Received, Rejected, Delivered, RetryDue, Heartbeat, AttemptFinished, Crashed,
                       OperatorRetry, Poisoned, DriftFound, DriftRepair}


def test_every_status_a_record_can_have_is_reached_by_some_transition() -> None:
    reached = {status_after(c.before, transition(c.before, c.event, NOW, RULES)) for c in TRANSITIONS}
    assert reached - {None} == set(Status)


def test_a_drift_finding_keeps_the_last_runs_truth_and_adds_the_differences() -> None:
    before = succeeded_row()
    decision = transition(before, DriftFound((SMART_HOST,), requested_by="ops@example.com"), NOW, RULES)
    assert decision.record is not None
    after = decision.record
    assert (after.connectors, after.error, after.finished_at, after.attempts, after.series) == (
        before.connectors, before.error, before.finished_at, before.attempts, before.series)
    [warning] = after.warnings
    assert warning["code"] == "CONNECTOR_DRIFT" and warning["differences"] == [SMART_HOST]
    assert "SmartHosts is ['mgs.cybermail.jp'], should be ['mgf.cybermail.jp']" in warning["message"]
    [event] = [e for effect in decision.after if isinstance(effect, Append) for e in effect.events]
    assert event.data == {"differences": [SMART_HOST], "requested_by": "ops@example.com"}


def test_a_repaired_activation_runs_and_succeeds_without_its_drift_warning() -> None:
    queued = transition(drifted_row(SMART_HOST), DriftRepair(), NOW, RULES).record
    assert queued is not None and queued.series == 2
    claimed = transition(queued, RetryDue(envelope(queued), ME), NOW, RULES).record
    assert claimed is not None and claimed.status is Status.RUNNING
    done = transition(claimed, AttemptFinished(ME, outcome()), NOW, RULES).record
    assert done is not None and (done.status, done.warnings) == (Status.SUCCEEDED, [])


# -- the error policy --------------------------------------------------------------------------
def test_every_error_code_has_a_disposition_and_a_hint() -> None:
    assert set(POLICY) == set(ErrorCode)
    assert set(HINTS) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode), ids=[c.value for c in ErrorCode])
def test_a_raise_site_cannot_override_the_policy(code: ErrorCode) -> None:
    for flag in (True, False):
        error = ProvisioningError(code, "detail", retryable=flag, needs_attention=flag)
        assert error.retryable is (POLICY[code] is Disposition.RETRY)
        assert error.needs_attention is (POLICY[code] in (Disposition.ATTENTION, Disposition.RETRY_THEN_ATTENTION))
        assert error.to_dict()["retryable"] is error.retryable


def test_grants_retry_before_they_need_attention() -> None:
    assert POLICY[ErrorCode.CONSENT_MISSING] is Disposition.RETRY_THEN_ATTENTION
    assert POLICY[ErrorCode.ROLE_MISSING] is Disposition.RETRY_THEN_ATTENTION


@pytest.mark.parametrize("code", list(ErrorCode), ids=[c.value for c in ErrorCode])
def test_each_code_ends_where_its_disposition_says(code: ErrorCode) -> None:
    decision = transition(running(propagation_waits=RULES.grant_propagation_attempts, attempts=1),
                          AttemptFinished(ME, outcome(code)), NOW, RULES)
    expected = {
        Disposition.RETRY: Status.RETRY_SCHEDULED,
        Disposition.RETRY_THEN_ATTENTION: Status.NEEDS_ATTENTION,  # its propagation retries are used up
        Disposition.ATTENTION: Status.NEEDS_ATTENTION,
        Disposition.FAIL: Status.FAILED,
        Disposition.REJECT: Status.REJECTED,
    }[POLICY[code]]
    assert decision.record is not None and decision.record.status is expected
    assert decision.record.error is not None and decision.record.error["code"] == code.value


# -- details of the edges ----------------------------------------------------------------------
def test_a_claim_sends_its_watchdog_before_the_write_and_for_when_the_lease_ends() -> None:
    decision = transition(row(), Delivered(ME), NOW, RULES)
    assert decision.record is not None
    (watch,) = decision.before
    assert isinstance(watch, Send)
    assert (watch.envelope.recheck_owner, watch.delay_seconds) == (ME, RULES.lease_seconds + WATCH_GRACE_SECONDS)
    assert (decision.record.attempts, decision.record.lease_owner) == (1, ME)
    assert decision.record.lease_expires_at == NOW + timedelta(seconds=RULES.lease_seconds)


def test_a_watchdog_of_a_live_holder_looks_again_just_after_the_renewed_lease() -> None:
    decision = transition(running(OTHER, expires_in=45), RetryDue(env(recheck_owner=OTHER), ME), NOW, RULES)
    (send,) = decision.after
    assert isinstance(send, Send)
    assert send.delay_seconds == 45 + WATCH_GRACE_SECONDS


def test_a_heartbeat_extends_the_lease_by_a_full_lease() -> None:
    decision = transition(running(expires_in=5), Heartbeat(ME), NOW, RULES)
    assert decision.record is not None
    assert decision.record.lease_expires_at == NOW + timedelta(seconds=RULES.lease_seconds)


def test_a_transient_retry_waits_the_jittered_back_off_in_whole_seconds() -> None:
    decision = transition(running(attempts=2), AttemptFinished(ME, outcome(ErrorCode.THROTTLED), jitter=0.0),
                          NOW, RULES)
    assert decision.record is not None
    # attempt 2: a 60 s step; no jitter takes its lower half, 30 s
    assert decision.record.next_attempt_at == NOW + timedelta(seconds=30)
    send = next(e for e in decision.after if isinstance(e, Send))
    assert (send.delay_seconds, send.envelope.due) == (30.0, now_iso(NOW + timedelta(seconds=30)))


def test_retry_after_from_exchange_is_honoured() -> None:
    decision = transition(running(), AttemptFinished(ME, outcome(ErrorCode.THROTTLED, retry_after=7.5)), NOW, RULES)
    assert decision.record is not None and decision.record.next_attempt_at == NOW + timedelta(seconds=7.5)


def test_transient_errors_past_the_last_attempt_fail_with_the_last_error() -> None:
    decision = transition(running(attempts=5), AttemptFinished(ME, outcome(ErrorCode.EXCHANGE_UNAVAILABLE)),
                          NOW, RULES)
    assert decision.record is not None and decision.record.error is not None
    assert decision.record.error["code"] == "MAX_ATTEMPTS_EXCEEDED"
    assert decision.record.error["last_error"]["code"] == "EXCHANGE_UNAVAILABLE"
    assert decision.record.next_attempt_at is None and decision.record.lease_owner is None


def test_grant_propagation_retries_double_and_cover_fifteen_minutes_then_need_attention() -> None:
    record = running()
    delays: list[float] = []
    for _ in range(RULES.grant_propagation_attempts):
        decision = transition(record, AttemptFinished(ME, outcome(ErrorCode.CONSENT_MISSING)), NOW, RULES)
        assert decision.record is not None and decision.record.status is Status.RETRY_SCHEDULED
        assert decision.record.error is not None
        assert "waiting for the grant to propagate" in decision.record.error["note"]
        delays.append(next(e for e in decision.after if isinstance(e, Send)).delay_seconds)
        record = replace(decision.record, status=Status.RUNNING, lease_owner=ME,
                         attempts=decision.record.attempts + 1)
    assert delays == [60.0, 120.0, 240.0, 480.0] and sum(delays) == 15 * 60
    decision = transition(record, AttemptFinished(ME, outcome(ErrorCode.CONSENT_MISSING)), NOW, RULES)
    assert decision.record is not None and decision.record.status is Status.NEEDS_ATTENTION
    assert decision.record.error is not None and decision.record.error["code"] == "CONSENT_MISSING"
    assert "after 4 retries" in decision.record.error["note"]


def test_grant_propagation_waits_start_again_after_another_outcome() -> None:
    decision = transition(running(propagation_waits=3), AttemptFinished(ME, outcome(ErrorCode.THROTTLED)), NOW,
                          RULES)
    assert decision.record is not None and decision.record.propagation_waits == 0


def test_no_grant_propagation_retries_means_attention_at_once() -> None:
    rules = replace(RULES, grant_propagation_attempts=0)
    decision = transition(running(), AttemptFinished(ME, outcome(ErrorCode.ROLE_MISSING)), NOW, rules)
    assert decision.record is not None and decision.record.status is Status.NEEDS_ATTENTION


def test_a_conflict_keeps_status_outcome_and_error_and_adds_a_warning_with_both_hashes() -> None:
    before = succeeded_row()
    decision = transition(before, Received(OTHER_NOTICE), NOW, RULES)
    after = decision.record
    assert after is not None
    assert (after.status, after.connectors, after.error, after.finished_at, after.updated_at) == (
        before.status, before.connectors, before.error, before.finished_at, before.updated_at)
    (warning,) = after.warnings
    assert (warning["code"], warning["first_hash"], warning["new_hash"]) == (
        "NOTICE_CONFLICT", NOTICE.content_hash, OTHER_NOTICE.content_hash)
    (append,) = decision.after
    assert isinstance(append, Append)
    (event,) = append.events
    assert (event.data["first_hash"], event.data["new_hash"], event.data["previous_status"]) == (
        NOTICE.content_hash, OTHER_NOTICE.content_hash, "succeeded")


def test_the_same_conflict_twice_adds_one_warning() -> None:
    first = transition(succeeded_row(), Received(OTHER_NOTICE), NOW, RULES).record
    assert first is not None
    again = transition(first, Received(OTHER_NOTICE), NOW, RULES)
    assert again.result is Result.CONFLICT and again.record is None and kinds(again) == ["notice.conflict"]


def test_a_run_keeps_the_conflict_warnings_written_while_it_ran() -> None:
    during = transition(running(), Received(OTHER_NOTICE), NOW, RULES).record
    assert during is not None
    done = transition(during, AttemptFinished(ME, outcome()), NOW, RULES).record
    assert done is not None and done.status is Status.SUCCEEDED
    assert [w["code"] for w in done.warnings] == ["NOTICE_CONFLICT"]


def test_a_poisoned_copy_keeps_the_raw_message_and_the_previous_error() -> None:
    before = row(Status.QUEUED, attempts=2, error=error_dict(ErrorCode.UNHANDLED, "KeyError: 'x'"))
    decision = transition(before, Poisoned(NOTICE.notice_id, '{"raw": 1}', notice=NOTICE, dequeue_count=1), NOW,
                          RULES)
    assert decision.record is not None and decision.record.error is not None
    assert decision.record.raw_message == '{"raw": 1}'
    assert decision.record.error["last_error"]["message"] == "KeyError: 'x'"


def test_poison_never_seen_keeps_the_notice_so_an_operator_can_retry_it() -> None:
    decision = transition(None, Poisoned(NOTICE.notice_id, "{}", notice=NOTICE), NOW, RULES)
    assert decision.record is not None
    assert decision.record.content_hash == NOTICE.content_hash
    retried = transition(decision.record, OperatorRetry(), NOW, RULES)
    assert retried.result is Result.QUEUED


def test_an_operator_retry_resets_attempts_and_waits_before_its_message_arrives() -> None:
    decision = transition(row(Status.FAILED, attempts=5, propagation_waits=2), OperatorRetry(), NOW, RULES)
    assert decision.record is not None
    assert (decision.record.series, decision.record.attempts, decision.record.propagation_waits) == (2, 0, 0)
    (send,) = decision.before
    assert isinstance(send, Send)
    assert (send.envelope.series, send.delay_seconds) == (2, OPERATOR_RETRY_DELAY_SECONDS)


def test_a_lost_run_keeps_its_events_in_history() -> None:
    decision = transition(succeeded_row(), AttemptFinished(ME, outcome(ErrorCode.THROTTLED)), NOW, RULES)
    assert decision.result is Result.LEASE_LOST and decision.record is None
    assert kinds(decision) == ["error", "lease.lost"]


def test_the_envelope_of_a_record_names_its_series_and_attempt() -> None:
    assert envelope(row(series=3, attempts=2)).to_dict() == {
        "kind": "activation-retry", "notice_id": NOTICE.notice_id, "series": 3, "attempt": 2}


def test_a_dead_workers_activation_is_taken_over_within_two_minutes_by_default() -> None:
    from localrun.queuepump import PROCESSING_VISIBILITY_SECONDS
    from shared.settings import Settings

    settings = Settings()
    # Worst case: the worker dies right after a heartbeat; its watchdog takes over one lease
    # (plus the grace) later, long before the host would redeliver the message it held.
    takeover_after = settings.lease_seconds + WATCH_GRACE_SECONDS
    assert takeover_after <= 120
    assert takeover_after < PROCESSING_VISIBILITY_SECONDS
    assert settings.heartbeat_seconds * 3 <= settings.lease_seconds  # a late beat never loses the lease


# -- settings that do not load (shared/misconfigured.py) -----------------------------------
PROBLEM = "LEASE_SECONDS='abc' is not a number (0 or more, finite): set it to one, such as 60.0 (the default)"


def misconfigured(**fields: Any) -> Misconfigured:
    return Misconfigured(**{"notice_id": NOTICE.notice_id, "raw": NOTICE.canonical_json(), "problem": PROBLEM,
                            "tenant_id": NOTICE.tenant_id, "queue": "activation-notices", **fields})


def test_a_notice_that_arrives_while_the_settings_are_broken_is_a_placeholder_needing_attention() -> None:
    decision = transition(None, misconfigured(), NOW, RULES)
    new = decision.record
    assert decision.result is Result.MISCONFIGURED and new is not None
    assert (new.status, new.error["code"] if new.error else None) == (Status.NEEDS_ATTENTION, "CONFIG_INVALID")
    assert PROBLEM in (new.error or {})["message"] and new.raw_message == NOTICE.canonical_json()
    assert not new.content_hash and not new.notice_json  # no content: nothing to retry from it
    assert kinds(decision) == ["config.invalid"]
    # Once the settings load, the notice itself takes the placeholder's place.
    accepted = transition(new, Received(NOTICE), NOW, RULES)
    assert accepted.result is Result.ACCEPTED and accepted.record is not None
    assert accepted.record.status is Status.QUEUED and accepted.record.content_hash == NOTICE.content_hash


def test_the_same_problem_again_adds_nothing_to_its_placeholder() -> None:
    first = transition(None, misconfigured(), NOW, RULES).record
    again = transition(first, misconfigured(), NOW + timedelta(minutes=5), RULES)
    assert (again.result, again.record, kinds(again)) == (Result.MISCONFIGURED, None, [])


@pytest.mark.parametrize("before", [succeeded_row(), running(), row(Status.RETRY_SCHEDULED, attempts=2),
                                    row(Status.REJECTED, content_hash="", notice_json="", error=REJECTION)],
                         ids=["succeeded", "running", "retry_scheduled", "rejected"])
def test_an_activation_that_exists_keeps_its_record_and_gains_an_event(before: ActivationRecord) -> None:
    decision = transition(before, misconfigured(), NOW, RULES)
    assert (decision.result, decision.record) == (Result.MISCONFIGURED, None)
    assert kinds(decision) == ["config.invalid"]


def test_a_retry_message_for_no_activation_makes_no_placeholder() -> None:
    decision = transition(None, misconfigured(placeholder=False), NOW, RULES)
    assert (decision.result, decision.record, kinds(decision)) == (Result.MISCONFIGURED, None, [])
