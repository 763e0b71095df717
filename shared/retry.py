"""When to try a transient failure again.

Exchange Online throttles per tenant and often omits `Retry-After`; thousands of tenants
retrying in lock-step would throttle each other, so the delay is exponential with equal
jitter, bounded, and honours `Retry-After` whenever Exchange gives one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_JITTER = random.Random()  # noqa: S311 - spreads retries in time; nothing secret depends on it


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 30.0
    max_seconds: float = 3600.0
    max_attempts: int = 8

    def delay(self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        source: random.Random = rng if rng is not None else _JITTER
        return backoff(attempt, base_seconds=self.base_seconds, max_seconds=self.max_seconds,
                       retry_after=retry_after, jitter=source.random())

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


def backoff(attempt: int, *, base_seconds: float, max_seconds: float, retry_after: float | None = None,
            jitter: float = 0.5) -> float:
    """Seconds before attempt `attempt + 1`, for a `jitter` drawn from [0, 1); pure, so testable.

    "Equal jitter": at least half the exponential step, so a retry never fires at once.
    """
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, max_seconds)
    ceiling = min(max_seconds, base_seconds * float(2 ** max(attempt - 1, 0)))
    return ceiling / 2 + min(max(jitter, 0.0), 1.0) * ceiling / 2
