"""Telemetry: what the alerts and an operator reading the logs need, and nothing heavy at import.

Three things live here:

* the names of the two log records the alert rules in `infra/modules/alerts.bicep` query
  (`OUTCOME_EVENT`, `POISONED_EVENT`), defined once so the Bicep test can check them;
* the activation context: inside `activation_scope(...)` every log record of the process
  carries `notice_id`, `tenant_id`, `attempt`, `step` and `duration_ms` as attributes (they
  become `customDimensions` in Application Insights), whoever logs it;
* `configure(...)`, which starts the Azure Monitor OpenTelemetry distro only when an
  Application Insights connection string is set. The distro (OpenTelemetry SDK, exporter,
  instrumentations) is imported inside it, so importing `function_app` and running locally
  never load it. Application Insights has local authentication disabled, so the exporter
  authenticates with Entra ID: the Function App's user-assigned identity, which holds
  Monitoring Metrics Publisher on the component.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from .outcome import Event

# The `event` attribute of the records the alert rules select (customDimensions["event"]).
OUTCOME_EVENT = "activation.outcome"
POISONED_EVENT = "activation.poisoned"
STEP_EVENT = "activation.step"

# Records of this logger and its children are exported (configure_azure_monitor's logger_name):
# the product's own, not every library's debug chatter.
EXPORTED_LOGGER = "shared"
log = logging.getLogger("shared.telemetry")

CONTEXT_FIELDS = ("notice_id", "tenant_id", "attempt", "step", "duration_ms")


@dataclass(frozen=True)
class ActivationContext:
    notice_id: str
    tenant_id: str
    attempt: int | None = None
    step: str | None = None
    duration_ms: float | None = None

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CONTEXT_FIELDS}


_current: ContextVar[ActivationContext | None] = ContextVar("activation_context", default=None)
_install_lock = threading.Lock()
_state = {"log_context": False, "exporter": False}  # what this process has set up, once each


def current() -> ActivationContext | None:
    """The activation the running code works on, if any."""
    return _current.get()


@contextmanager
def activation_scope(notice_id: str, tenant_id: str, *, attempt: int | None = None) -> Iterator[ActivationContext]:
    """Tag every log record written inside the block with this activation."""
    token = _current.set(ActivationContext(notice_id=notice_id, tenant_id=tenant_id, attempt=attempt))
    try:
        yield _current.get()  # type: ignore[misc]
    finally:
        _current.reset(token)


def install_log_context() -> None:
    """Make every LogRecord carry the activation context (idempotent, no SDK needed).

    A record factory rather than a handler filter: it applies to every handler (the
    Functions host's, the exporter's, a test's), so no log line about an activation can
    miss its notice_id.
    """
    with _install_lock:
        if _state["log_context"]:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            ctx = _current.get()
            if ctx is not None:
                for name, value in ctx.fields().items():
                    if not hasattr(record, name):
                        setattr(record, name, value)
            return record

        logging.setLogRecordFactory(factory)
        _state["log_context"] = True


def record_step(event: Event) -> None:
    """One log record per engine step, with its name and duration."""
    ctx = _current.get()
    extra: dict[str, Any] = {"event": STEP_EVENT, "step": event.kind, "duration_ms": event.duration_ms}
    if ctx is not None:
        _current.set(replace(ctx, step=event.kind, duration_ms=event.duration_ms))
    log.info("%s: %s", event.kind, event.message, extra=extra)


def record_outcome(*, notice_id: str, tenant_id: str, status: str, code: str | None, attempt: int | None,
                   duration_ms: float | None = None) -> None:
    """The one record per finished attempt that the `outcomes` alert counts by (status, code)."""
    level = logging.INFO if status in ("succeeded", "retry_scheduled") else logging.WARNING
    log.log(level, "activation %s: %s%s", notice_id, status, f" ({code})" if code else "", extra={
        "event": OUTCOME_EVENT, "notice_id": notice_id, "tenant_id": tenant_id, "status": status,
        "code": code or "", "attempt": attempt, "step": "outcome", "duration_ms": duration_ms,
    })


def record_poisoned(*, notice_id: str, tenant_id: str, code: str, dequeue_count: int | None) -> None:
    """The record the `poison` alert counts: a message the host gave up on was recorded."""
    log.error("activation %s: message moved to the poison queue after %s deliveries", notice_id,
              dequeue_count if dequeue_count is not None else "several", extra={
                  "event": POISONED_EVENT, "notice_id": notice_id, "tenant_id": tenant_id, "code": code,
                  "status": "failed", "attempt": None, "step": "poison", "duration_ms": None,
                  "dequeue_count": dequeue_count,
              })


def configure(connection_string: str, *, managed_identity_client_id: str = "",
              credential: TokenCredential | None = None) -> bool:
    """Export the product's logs to Application Insights; False (and nothing loaded) without one.

    Called once, lazily, by `shared.runtime` on the first invocation, never at import.
    """
    install_log_context()
    if not connection_string:
        return False
    with _install_lock:
        if _state["exporter"]:
            return True
        from azure.monitor.opentelemetry import configure_azure_monitor

        if credential is None:
            from azure.identity import ManagedIdentityCredential

            credential = ManagedIdentityCredential(client_id=managed_identity_client_id or None)
        configure_azure_monitor(connection_string=connection_string, credential=credential,
                                logger_name=EXPORTED_LOGGER)
        exported = logging.getLogger(EXPORTED_LOGGER)
        if exported.level == logging.NOTSET:
            exported.setLevel(logging.INFO)  # outcome and step records are INFO
        _state["exporter"] = True
    return True


__all__ = [
    "OUTCOME_EVENT", "POISONED_EVENT", "STEP_EVENT", "ActivationContext", "activation_scope", "configure",
    "current", "install_log_context", "record_outcome", "record_poisoned", "record_step",
]
