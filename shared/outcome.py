"""The record of one activation run: status, per-connector result, error, events.

This is what operators see (status API, CLI, status table) and what Table storage keeps, so
it is plain data with a stable JSON form, and it never holds settings, secrets or tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .plan import Action
from .removal import RemovalAction


def now_iso(moment: datetime | None = None) -> str:
    """UTC timestamps with milliseconds, the one format the product stores and shows."""
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Status(StrEnum):
    """Lifecycle of an activation (the status API's vocabulary)."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRY_SCHEDULED = "retry_scheduled"
    SUCCEEDED = "succeeded"
    NEEDS_ATTENTION = "needs_attention"
    FAILED = "failed"
    REJECTED = "rejected"
    # Succeeded, but a later read found its connectors changed in Exchange (shared/drift.py).
    # The record keeps its last run's truth; only a repair (a real new run) rewrites it.
    DRIFTED = "drifted"

    @property
    def final(self) -> bool:
        """No worker will move it on its own: only an operator retry or a new notice starts a run."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.NEEDS_ATTENTION, Status.FAILED, Status.REJECTED,
                            Status.DRIFTED})


class Validation(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ALREADY_VALIDATED = "already_validated"
    NOT_RUN = "not_run"


@dataclass
class Event:
    """One step of a run, timestamped, with how long it took where that means something."""

    kind: str
    message: str
    at: str = field(default_factory=now_iso)
    duration_ms: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ConnectorOutcome:
    name: str
    service: str
    # create | update | unchanged (activation) · removed | absent (termination); None: not reached
    action: Action | RemovalAction | None = None
    changed: list[str] = field(default_factory=list)
    validation: Validation = Validation.NOT_RUN
    tasks: list[dict[str, Any]] = field(default_factory=list)
    disabled: bool = False  # turned off by this run because its validation failed

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["action"] = self.action.value if self.action is not None else "pending"
        out["validation"] = self.validation.value
        return out


@dataclass
class Outcome:
    """The result of one run of the engine for one notice."""

    notice_id: str
    tenant_id: str
    status: Status = Status.RUNNING
    connectors: list[ConnectorOutcome] = field(default_factory=list)
    error: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    writes: int = 0
    action: str = "activate"  # the notice's action: activate | terminate

    def to_dict(self) -> dict[str, Any]:
        return {
            "notice_id": self.notice_id,
            "tenant_id": self.tenant_id,
            "status": self.status.value,
            "connectors": [c.to_dict() for c in self.connectors],
            "error": self.error,
            "warnings": self.warnings,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
            "writes": self.writes,
            "action": self.action,
            "events": [e.to_dict() for e in self.events],
        }
