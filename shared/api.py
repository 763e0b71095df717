"""The operator's HTTP API as plain functions: request data in, an ApiResponse out.

The Functions HTTP triggers only adapt `func.HttpRequest` to these calls, so every route is
tested without a Functions host, and the local runner serves the very same code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import ErrorCode, error_dict
from .notice import GUID_PATTERN, NOTICE_ID_PATTERN, NoticeError
from .outcome import Status, now_iso
from .requester import FUNCTION_KEY
from .store import MAX_QUERY_CHARS, ActivationRecord, ActivationStore, InvalidContinuation
from .text import clean, decode_body
from .worker import RetryRefused, Worker

if TYPE_CHECKING:
    from .drift import DriftChecker

MAX_TOP = 200
MAX_EVENTS_COUNTED = 5000  # beyond this, events_total is a lower bound (events_total_exact false)
MAX_BODY_BYTES = 64 * 1024
BAD_NOTICE_ID = "notice_id must be 1-64 characters of A-Z a-z 0-9 . _ -, not ending with '.'"


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> str:
        """The body as JSON text that always encodes as UTF-8.

        The store already keeps every value storable text; cleaning the text once more here
        means that no value from anywhere can make a response fail to encode (a 500 for a
        whole list because of one row). It keeps the JSON valid: such characters only occur
        inside JSON strings.
        """
        return clean(json.dumps(self.body, ensure_ascii=False))


def _problem(status: int, code: str, message: str, **extra: Any) -> ApiResponse:
    return ApiResponse(status, {"error": {"code": code, "message": message, **extra}})


class ActivationApi:
    """Submit, look up, list and retry activations."""

    def __init__(self, store: ActivationStore, worker: Callable[[], Worker],
                 drift: Callable[[], DriftChecker] | None = None) -> None:
        self._store = store
        self._worker = worker
        self._drift = drift

    def submit(self, body: bytes, *, base_path: str = "/api/activations",
               requested_by: str = FUNCTION_KEY) -> ApiResponse:
        if len(body) > MAX_BODY_BYTES:
            return _problem(413, "NOTICE_INVALID", f"the body is larger than {MAX_BODY_BYTES} bytes")
        worker = self._worker()
        try:
            submitted = worker.submit(body, requested_by=requested_by)
        except NoticeError as exc:
            rejected = worker.record_rejected(decode_body(body), exc)  # undecodable bytes kept as evidence
            return ApiResponse(400, {
                "notice_id": rejected.notice_id,
                "status": rejected.status,  # this notice's: rejected (a valid activation under its id is untouched)
                "errors": [e.to_dict() for e in exc.errors],
            })
        record = submitted.record
        location = f"{base_path}/{record.notice_id}"
        if submitted.conflict:
            # Refused: the activation under this notice_id keeps its status and outcome.
            error = error_dict(ErrorCode.NOTICE_CONFLICT, submitted.detail or f"notice_id {record.notice_id} was "
                               "already used for another notice")
            return ApiResponse(409, {"notice_id": record.notice_id, "status": record.status, "error": error},
                               {"Location": location})
        code = 202 if submitted.enqueued else 200
        return ApiResponse(code, {"notice_id": record.notice_id, "status": record.status, "location": location},
                           {"Location": location})

    def get(self, notice_id: str, *, events: int = 200) -> ApiResponse:
        if not NOTICE_ID_PATTERN.fullmatch(notice_id):
            return _problem(400, "BAD_REQUEST", BAD_NOTICE_ID)
        try:
            record = self._store.get(notice_id)
        except ValueError as exc:
            # A row this version did not write (edited by hand, say): no list shows it, and its
            # own page says what is wrong with it instead of failing without a word.
            return _problem(500, "UNREADABLE_ROW", f"the stored row of activation {notice_id} cannot be read "
                            f"({exc}); correct it in the activations table, or delete it and submit the notice again")
        if record is None:
            return _problem(404, "NOT_FOUND", f"no activation {notice_id}")
        # The newest events tell how the activation ended; a very long history is cut from the
        # start, and the document says so: events_total counts up to MAX_EVENTS_COUNTED, and
        # events_total_exact is false when there are more than that.
        history = self._store.history(notice_id, newest=events, count_limit=max(events, MAX_EVENTS_COUNTED))
        doc = status_document(record)
        doc["events_total"] = history.total
        doc["events_total_exact"] = history.total_exact
        doc["events_truncated"] = history.truncated
        doc["events"] = [{
            "at": now_iso(e.at), "kind": e.kind, "message": e.message, "attempt": e.attempt,
            "series": e.series, "duration_ms": e.duration_ms, "data": e.data or {},
        } for e in history.events]
        return ApiResponse(200, doc)

    def list(self, params: Mapping[str, str]) -> ApiResponse:
        """A page of activations, newest created first; `q` searches (see ActivationStore.search)."""
        status = params.get("status") or None
        tenant = params.get("tenant_id") or None
        if status is not None and status not in {s.value for s in Status}:
            return _problem(400, "BAD_REQUEST", f"status must be one of {', '.join(s.value for s in Status)}")
        if tenant is not None:
            if not GUID_PATTERN.fullmatch(tenant):
                return _problem(400, "BAD_REQUEST", "tenant_id must be a GUID")
            tenant = tenant.lower()
        try:
            top = int(params.get("top", "50"))
        except ValueError:
            return _problem(400, "BAD_REQUEST", "top must be an integer")
        if not 1 <= top <= MAX_TOP:
            return _problem(400, "BAD_REQUEST", f"top must be between 1 and {MAX_TOP}")
        q = " ".join((params.get("q") or "").split()) or None
        if q is not None and len(q) > MAX_QUERY_CHARS:
            return _problem(400, "BAD_REQUEST", f"q must be at most {MAX_QUERY_CHARS} characters")
        try:
            page = self._store.list_activations(status=status, tenant_id=tenant, q=q, top=top,
                                                continuation=params.get("continuation") or None)
        except InvalidContinuation as exc:
            return _problem(400, "BAD_REQUEST", f"continuation: {exc}")
        return ApiResponse(200, {
            "items": [{**status_document(r), "warnings_count": len(r.warnings)} for r in page.items],
            "continuation": page.continuation,
        })

    def summary(self) -> ApiResponse:
        """Activations per status, from counters (one small query, whatever the table's size)."""
        summary = self._store.summary()
        return ApiResponse(200, {"counts": summary.counts, "total": summary.total, "exact": summary.exact})

    def retry(self, notice_id: str, *, requested_by: str = FUNCTION_KEY) -> ApiResponse:
        if not NOTICE_ID_PATTERN.fullmatch(notice_id):
            return _problem(400, "BAD_REQUEST", BAD_NOTICE_ID)
        try:
            record = self._worker().retry(notice_id, requested_by=requested_by)
        except RetryRefused as exc:
            return _problem(exc.status, "NOT_FOUND" if exc.status == 404 else "CONFLICT", exc.message)
        location = f"/api/activations/{record.notice_id}"
        return ApiResponse(202, status_document(record), {"Location": location})

    def drift(self, body: bytes, *, requested_by: str = FUNCTION_KEY) -> ApiResponse:
        """Check succeeded activations' connectors now: one tenant's or one notice's, or all (202).

        With a scope, 202 with the findings, recorded when this answers; the repairs it queued
        (DRIFT_REPAIR) run afterwards, like any retry. Without one, every tenant's check is
        queued (one message each, see `DriftChecker.fan_out`): 202 with how many, and the
        findings appear on the activations as the queue trigger runs them.
        """
        if len(body) > MAX_BODY_BYTES:
            return _problem(413, "BAD_REQUEST", f"the body is larger than {MAX_BODY_BYTES} bytes")
        usage = 'send no body, {"tenant_id": "<GUID>"} or {"notice_id": "<id>"}'
        text = decode_body(body).strip()
        try:
            scope = json.loads(text) if text else {}
        except (ValueError, RecursionError):
            return _problem(400, "BAD_REQUEST", f"the body is not JSON: {usage}")
        if not isinstance(scope, dict) or set(scope) - {"tenant_id", "notice_id"} or len(scope) > 1:
            return _problem(400, "BAD_REQUEST", f"the body names unknown or several fields: {usage}")
        tenant, notice_id = scope.get("tenant_id"), scope.get("notice_id")
        if tenant is not None and not (isinstance(tenant, str) and GUID_PATTERN.fullmatch(tenant)):
            return _problem(400, "BAD_REQUEST", "tenant_id must be a GUID")
        if notice_id is not None and not (isinstance(notice_id, str) and NOTICE_ID_PATTERN.fullmatch(notice_id)):
            return _problem(400, "BAD_REQUEST", f"notice_id: {BAD_NOTICE_ID}")
        if self._drift is None:
            return _problem(503, "UNAVAILABLE", "the drift check is not configured in this process")
        if tenant is None and notice_id is None:
            queued = self._drift().fan_out(requested_by=requested_by)
            return ApiResponse(202, {"requested_by": requested_by, "queued": queued, "checked": 0, "drifted": 0,
                                     "checks": []})
        report = self._drift().run(tenant_id=tenant.lower() if tenant else None, notice_id=notice_id,
                                   requested_by=requested_by)
        if notice_id is not None and not report.checks:
            return _problem(404, "NOT_FOUND", f"no activation {notice_id}")
        return ApiResponse(202, {"requested_by": requested_by, **report.to_dict()})


def status_document(record: ActivationRecord) -> dict[str, Any]:
    """The public shape of an activation: what an operator needs, nothing internal."""
    return {
        "notice_id": record.notice_id,
        "tenant_id": record.tenant_id,
        "status": record.status,
        "attempts": record.attempts,
        "series": record.series,
        "services": list(record.services),
        "customer_name": record.customer_name,
        "contract_id": record.contract_id,
        "connectors": record.connectors,
        "warnings": record.warnings,
        "error": record.error,
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "next_attempt_at": _iso(record.next_attempt_at),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else now_iso(value)


__all__ = ["ActivationApi", "ApiResponse", "status_document"]
