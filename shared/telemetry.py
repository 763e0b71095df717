"""Telemetry: what the alerts and an operator reading the logs need, and nothing heavy at import.

Three things live here:

* the names of the log records the alert rules in `infra/modules/alerts.bicep` query
  (`OUTCOME_EVENT`, `POISONED_EVENT`, `POISON_DEPTH_EVENT`), defined once so the Bicep test
  can check them;
* the activation context: inside `activation_scope(...)` every exported log record carries
  `notice_id`, `tenant_id`, `attempt`, `step` and `duration_ms` as attributes (they become
  `customDimensions` in Application Insights), whichever module of the product logs it. It is
  the one mechanism for every log line about an activation: the engine run, and the worker's
  other paths too (claim, lease and heartbeat, watchdog, retries, poison, submit, operator
  retry, drift), each a scope with the step it is and what it knows (a poisoned message may
  have no tenant, a claim no attempt yet). `duration_ms` is the record's own when it names
  one (an engine step), else the time since its scope began;
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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from .outcome import Event

# The `event` attribute of the records the alert rules select (customDimensions["event"]).
OUTCOME_EVENT = "activation.outcome"
POISONED_EVENT = "activation.poisoned"
POISON_DEPTH_EVENT = "queue.poison_depth"
STEP_EVENT = "activation.step"
TRANSITION_EVENT = "activation.transition"

# Records of this logger and its children are exported (configure_azure_monitor's logger_name):
# the product's own, not every library's debug chatter.
EXPORTED_LOGGER = "activation"
log = logging.getLogger("activation.telemetry")

CONTEXT_FIELDS = ("notice_id", "tenant_id", "attempt", "step", "duration_ms")


@dataclass(frozen=True)
class ActivationContext:
    notice_id: str
    tenant_id: str
    attempt: int | None = None
    step: str | None = None
    duration_ms: float | None = None
    # When the scope began (time.monotonic()): a record with no duration of its own gets the
    # time since then, so "how long until this happened" is on every line.
    started: float | None = field(default=None, compare=False, repr=False)

    def fields(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in CONTEXT_FIELDS}
        if values["duration_ms"] is None and self.started is not None:
            values["duration_ms"] = round((time.monotonic() - self.started) * 1000, 1)
        return values


_current: ContextVar[ActivationContext | None] = ContextVar("activation_context", default=None)
_install_lock = threading.Lock()
_state = {"exporter": False}  # configured at most once per process


def current() -> ActivationContext | None:
    """The activation the running code works on, if any."""
    return _current.get()


@contextmanager
def activation_scope(notice_id: str, tenant_id: str = "", *, attempt: int | None = None,
                     step: str | None = None) -> Iterator[ActivationContext]:
    """Tag every log record written inside the block with this activation and step.

    Inside a scope of the same activation, what this one leaves unset is the enclosing one's (a
    lease renewal inside a run keeps the run's tenant and attempt). Unknown fields stay unset
    and are left off the record rather than guessed.
    """
    outer = _current.get()
    if outer is not None and outer.notice_id == notice_id:
        tenant_id = tenant_id or outer.tenant_id
        attempt = attempt if attempt is not None else outer.attempt
        step = step or outer.step
    token = _current.set(ActivationContext(notice_id=notice_id, tenant_id=tenant_id, attempt=attempt, step=step,
                                           started=time.monotonic()))
    try:
        yield _current.get()  # type: ignore[misc]
    finally:
        _current.reset(token)


def refine(*, tenant_id: str = "", attempt: int | None = None, step: str | None = None) -> None:
    """Tell the current scope what it found out since it began: the tenant and attempt of a row
    just read, which step of the lifecycle this is. Fields given replace the scope's; it lasts
    until the scope ends. Outside a scope it does nothing.
    """
    ctx = _current.get()
    if ctx is None:
        return
    _current.set(replace(ctx, tenant_id=tenant_id or ctx.tenant_id,
                         attempt=attempt if attempt is not None else ctx.attempt, step=step or ctx.step))


class ActivationContextFilter(logging.Filter):
    """Give each record the fields of the activation being worked on, unless it names its own.

    A handler filter, not a record factory: it runs after `extra=` was applied (a factory that
    set these attributes would make `extra={"step": ...}` raise), in the thread and context of
    the logging call, so it sees that call's activation.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        if ctx is not None:
            for name, value in _present(ctx.fields()).items():
                if value != "":  # a tenant not known yet is left off, not written as ""
                    record.__dict__.setdefault(name, value)
        return True


def install_log_context(handler: logging.Handler) -> None:
    """Attach the activation context to what `handler` emits (idempotent)."""
    if not any(isinstance(f, ActivationContextFilter) for f in handler.filters):
        handler.addFilter(ActivationContextFilter())


def steps(then: Callable[[Event], None]) -> Callable[[Event], None]:
    """An engine `on_event` callback that logs each step, then calls `then` (the lease renewal)."""

    def on_event(event: Event) -> None:
        record_step(event)
        then(event)

    return on_event


def record_step(event: Event) -> None:
    """One log record per engine step, with its name and duration."""
    ctx = _current.get()
    extra: dict[str, Any] = {"event": STEP_EVENT, "step": event.kind, "duration_ms": event.duration_ms}
    if ctx is not None:
        _current.set(replace(ctx, step=event.kind, duration_ms=event.duration_ms))
    log.info("%s: %s", event.kind, event.message, extra=_present(extra))


def record_transition(notice_id: str, *, result: str, status: str | None, wrote: bool,
                      delay_seconds: float | None = None, watchdog: bool = False) -> None:
    """One record per lifecycle decision outside the engine: a claim, a renewal, a retry scheduled.

    INFO when the activation's row changed or a message was sent (what an operator follows);
    DEBUG for what changed nothing (a duplicate delivery turned away, a stale message dropped)
    and for lease renewals, which come every HEARTBEAT_SECONDS per running activation. The
    step, tenant, attempt and duration come from the scope the worker opened for the decision.
    """
    ctx = _current.get()
    quiet = not wrote or (ctx is not None and ctx.step == "heartbeat")
    later = "" if delay_seconds is None else (
        f", {'watchdog due' if watchdog else 'next attempt'} in {delay_seconds:.1f} s")
    log.log(logging.DEBUG if quiet else logging.INFO, "activation %s: %s -> %s%s", notice_id,
            ctx.step if ctx is not None else "?", result, later, extra=_present({
                "event": TRANSITION_EVENT, "result": result, "status": status, "delay_seconds": delay_seconds,
                "watchdog": watchdog if delay_seconds is not None else None}))


def record_outcome(*, notice_id: str, tenant_id: str, status: str, code: str | None, attempt: int | None,
                   duration_ms: float | None = None) -> None:
    """The one record per finished attempt that the `outcomes` alert counts by (status, code)."""
    level = logging.INFO if status in ("succeeded", "retry_scheduled") else logging.WARNING
    log.log(level, "activation %s: %s%s", notice_id, status, f" ({code})" if code else "", extra=_present({
        "event": OUTCOME_EVENT, "notice_id": notice_id, "tenant_id": tenant_id or None, "status": status,
        "code": code or "", "attempt": attempt, "step": "outcome", "duration_ms": duration_ms,
    }))


def record_poisoned(*, notice_id: str, tenant_id: str, code: str, dequeue_count: int | None) -> None:
    """The record the `poison` alert counts: a message the host gave up on was recorded."""
    log.error("activation %s: message moved to the poison queue after %s deliveries", notice_id,
              dequeue_count if dequeue_count is not None else "several", extra=_present({
                  "event": POISONED_EVENT, "notice_id": notice_id, "tenant_id": tenant_id or None, "code": code,
                  "status": "failed", "step": "poison", "dequeue_count": dequeue_count,
              }))


def record_poison_depth(*, queue: str, depth: int) -> None:
    """A sample of the poison queue's depth, for the alert on messages nobody records.

    Azure Storage publishes message counts per account, not per queue, so the app measures
    its own poison queue; the poison trigger empties it within seconds when it works.
    """
    log.log(logging.WARNING if depth else logging.INFO, "poison queue %s holds %d message(s)", queue, depth,
            extra={"event": POISON_DEPTH_EVENT, "queue": queue, "depth": depth})


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    """Only the fields with a value: OpenTelemetry attributes cannot be None."""
    return {name: value for name, value in fields.items() if value is not None}


def configure(connection_string: str, *, managed_identity_client_id: str = "",
              credential: TokenCredential | None = None) -> bool:
    """Export the product's logs to Application Insights; False (and nothing loaded) without one.

    Called once, lazily, by `shared.runtime` on the first invocation, never at import.
    """
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
        for handler in exported.handlers:  # the exporter's LoggingHandler
            install_log_context(handler)
        _state["exporter"] = True
    return True


__all__ = [
    "OUTCOME_EVENT", "POISONED_EVENT", "POISON_DEPTH_EVENT", "STEP_EVENT", "TRANSITION_EVENT", "ActivationContext",
    "ActivationContextFilter",
    "activation_scope", "configure", "current", "install_log_context", "record_outcome", "record_poison_depth",
    "record_poisoned", "record_step", "record_transition", "refine", "steps",
]
