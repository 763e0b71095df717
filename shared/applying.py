"""Synchronous provisioning with in-process retries: the `apply` command's engine loop.

Used where there is no queue to retry through (an operator at a terminal, a one-off run):
transient errors are retried here with the same back-off policy the worker uses, bounded by
attempts and by wall time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .auth import token_provider_from_settings
from .errors import ProvisioningError
from .notice import ActivationNotice
from .outcome import Event, Outcome, Status, now_iso
from .provisioning import ProvisioningEngine
from .retry import RetryPolicy
from .settings import Settings

# A person is waiting at the terminal: start retrying after a second, not after the
# queue worker's default half minute.
INTERACTIVE_POLICY = RetryPolicy(base_seconds=1.0, max_seconds=30.0)


def apply_with_retries(
    notice: ActivationNotice,
    settings: Settings,
    *,
    on_event: Callable[[Event], None] | None = None,
    on_retry: Callable[[float, int], None] | None = None,
    max_attempts: int = 8,
    max_wait: float = 300.0,
    engine: ProvisioningEngine | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Run the engine until the outcome is final or the retry budget is spent."""
    if engine is None:
        try:
            engine = ProvisioningEngine(settings, token_provider=token_provider_from_settings(settings))
        except ProvisioningError as exc:
            outcome = Outcome(notice_id=notice.notice_id, tenant_id=notice.tenant_id, status=Status.FAILED)
            outcome.error = exc.to_dict()
            outcome.finished_at = now_iso()
            return outcome
    policy = RetryPolicy(INTERACTIVE_POLICY.base_seconds, INTERACTIVE_POLICY.max_seconds, max_attempts)
    deadline = clock() + max_wait
    attempt = 1
    while True:
        outcome = engine.run(notice, on_event=on_event)
        if not outcome.retryable or policy.exhausted(attempt):
            return outcome
        delay = policy.delay(attempt, retry_after=outcome.retry_after)
        if clock() + delay > deadline:
            return outcome
        if on_retry is not None:
            on_retry(delay, attempt)
        sleep(delay)
        attempt += 1
