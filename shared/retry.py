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
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_seconds)
        ceiling = min(self.max_seconds, self.base_seconds * float(2 ** max(attempt - 1, 0)))
        # "Equal jitter": at least half the exponential step, so a retry never fires at once.
        source: random.Random = rng if rng is not None else _JITTER
        return ceiling / 2 + source.uniform(0, ceiling / 2)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts
