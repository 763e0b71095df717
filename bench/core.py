"""Benchmarks of the pure core: parse, desired connectors, plan. No I/O, no services.

The core runs for every delivery, including every duplicate and every replay, so its cost per
notice bounds how many notices one Function App instance can look at. Two questions:

* throughput, fresh (a tenant with no connectors: the plan creates both) against replay (the
  same notice after it succeeded: the plan must find nothing to do). A replay is the common
  case under at-least-once delivery, and should cost about what a fresh plan costs;
* memory: parsing and planning 10,000 notices one after another must peak where 1,000 do.
  A peak that grows with the count means something keeps every notice (a cache, a log list).

A replay plans against the connectors as Exchange lists them once the product's own fresh run
has finished in the tenant. Those rows come from the simulator's tenant state (`exosim.state`,
no HTTP) driven with exactly the operations the plan sends, so they carry what a real run
leaves behind (`IsValidated` together with `LastValidationTimestamp` and `ValidationRecipients`,
which the planner requires before it keeps a validation). The memory stream uses a cheaper
copy of the same rows built directly, and the throughput run checks, notice by notice, that
the copy equals what the simulator returned.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from exosim.options import TenantOptions
from exosim.state import TenantState, wire_time
from shared.connectors import ConnectorSpec, desired_connectors
from shared.exchange import Connector
from shared.notice import parse_notice
from shared.plan import make_plan, operations, timestamp
from shared.services import connector_names
from shared.settings import Settings

from .harness import iter_notice_texts, make_tenants


@dataclass(frozen=True)
class CoreResult:
    notices: int
    fresh_per_s: float
    replay_per_s: float
    replay_over_fresh_time: float
    replays_without_writes: int
    # Notices whose directly built rows (the memory stream's) differ from the simulator's.
    synthetic_mismatches: int


@dataclass(frozen=True)
class MemoryResult:
    small: int
    large: int
    small_peak_kib: float
    large_peak_kib: float
    peak_ratio: float


def own_names(settings: Settings) -> tuple[str, ...]:
    """The connector names the product manages, passed to the planner as the engine does."""
    return connector_names(settings)


# The moment the synthetic tenants were provisioned: any fixed time, so rows are comparable.
DEPLOYED_AT = datetime(2026, 1, 1, tzinfo=UTC)
_DEPLOYED_STAMP = timestamp(DEPLOYED_AT)
_NO_LAG = TenantOptions(replication_lag=0.0)


def as_deployed(specs: Sequence[ConnectorSpec], *, settings: Settings) -> list[Connector]:
    """What Get-OutboundConnector lists after the product's fresh run created and validated `specs`.

    The simulator's tenant state runs the very operations the engine sends to an empty tenant
    (New-OutboundConnector, Validate-OutboundConnector, Set-OutboundConnector -IsValidated
    -ValidationRecipients -LastValidationTimestamp), and its rows are read back as the engine
    reads them. A replay planned against these must find nothing to do.
    """
    state = TenantState("00000000-0000-4000-8000-000000000000", clock=DEPLOYED_AT.timestamp, options=_NO_LAG)
    fresh = make_plan(specs, [], own_names=own_names(settings))
    for op in operations(fresh, now=DEPLOYED_AT):
        state.invoke(op.cmdlet, op.parameters)
    return [Connector.from_row(row) for row in state.rows()]


def as_created(specs: Sequence[ConnectorSpec]) -> list[Connector]:
    """The rows of `as_deployed`, built directly (no simulator), for the memory stream.

    Only the Guid differs (the simulator draws one); `same_rows` is how the throughput run
    holds this copy to the simulator's answer.
    """
    rows: list[dict[str, Any]] = []
    for spec in specs:
        row = spec.to_dict()
        del row["Service"]
        row.update(
            ConnectorSource="Default", TestMode=False, TlsDomain=None,
            IsValidated=True, LastValidationTimestamp=wire_time(_DEPLOYED_STAMP, zone=False),
            Guid=f"00000000-0000-4000-8000-{len(rows):012d}",
        )
        rows.append(row)
    return [Connector.from_row(row) for row in rows]


def same_rows(a: Sequence[Connector], b: Sequence[Connector]) -> bool:
    """Equal in every field Connector reads, the Guid aside."""
    return [replace(c, guid="") for c in a] == [replace(c, guid="") for c in b]


def _timed(texts: Sequence[str], actuals: Sequence[Sequence[Connector]], settings: Settings) -> tuple[float, int]:
    """Seconds to parse, build and plan every text; and how many plans needed no write."""
    quiet = 0
    started = time.perf_counter()
    own = own_names(settings)
    for text, actual in zip(texts, actuals, strict=True):
        notice = parse_notice(text, settings)
        plan = make_plan(desired_connectors(notice, settings), actual, own_names=own)
        quiet += not plan.writes_needed
    return time.perf_counter() - started, quiet


def throughput(settings: Settings, *, notices: int = 3000, repeats: int = 3, budget_s: float = 20.0) -> CoreResult:
    """Best-of-`repeats` throughput, fresh and replay, interleaved so both see the same noise."""
    texts = list(iter_notice_texts(notices, make_tenants(500, seed=1)))
    none: list[list[Connector]] = [[] for _ in texts]
    specs = [desired_connectors(parse_notice(t, settings), settings) for t in texts]
    created = [as_deployed(wanted, settings=settings) for wanted in specs]
    mismatches = sum(not same_rows(as_created(wanted), deployed)
                     for wanted, deployed in zip(specs, created, strict=True))
    fresh_best = replay_best = float("inf")
    quiet = 0
    deadline = time.monotonic() + budget_s
    for _ in range(repeats):
        fresh, _ = _timed(texts, none, settings)
        replay, quiet = _timed(texts, created, settings)
        fresh_best, replay_best = min(fresh_best, fresh), min(replay_best, replay)
        if time.monotonic() > deadline:
            break
    return CoreResult(
        notices=notices,
        fresh_per_s=notices / fresh_best,
        replay_per_s=notices / replay_best,
        replay_over_fresh_time=replay_best / fresh_best,
        replays_without_writes=quiet,
        synthetic_mismatches=mismatches,
    )


def failed_checks(result: CoreResult) -> list[str]:
    """The correctness checks of the core run, as `CHECK FAILED` lines (none when it passed)."""
    failures: list[str] = []
    if result.replays_without_writes != result.notices:
        failures.append(f"core: {result.notices - result.replays_without_writes} replay plan(s) wanted a write")
    if result.synthetic_mismatches:
        failures.append(f"core: {result.synthetic_mismatches} notice(s) whose streamed rows differ from the "
                        "simulator's; the memory figures plan against rows Exchange would not list")
    return failures


def _stream(texts: Iterable[str], settings: Settings) -> int:
    """Parse and plan each notice fresh and as a replay, keeping nothing; returns the count."""
    count = 0
    own = own_names(settings)
    for text in texts:
        notice = parse_notice(text, settings)
        specs = desired_connectors(notice, settings)
        make_plan(specs, [], own_names=own)
        make_plan(specs, as_created(specs), own_names=own)
        count += 1
    return count


def memory(settings: Settings, *, small: int = 1000, large: int = 10000) -> MemoryResult:
    """tracemalloc peak, above the baseline, while streaming `small` and then `large` notices.

    One tracing session for both, after a warm-up inside it, and no gc.collect() in between:
    tracemalloc counts the interpreter's free lists (tuples, dicts, ...) and small caches as
    allocated, they fill over the first ~3,000 notices to a bound of some 230 KiB, and a full
    collection empties them. Measured from a cold start or after a collection, that filling
    reads as growth with the count; measured from the steady state, growth is growth.
    """
    people = make_tenants(500, seed=2)  # the input's tenants exist before the measure starts
    peaks: list[float] = []
    gc.collect()
    tracemalloc.start()
    try:
        _stream(iter_notice_texts(5000, people), settings)  # warm-up to the steady state
        for count in (small, large):
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            done = _stream(iter_notice_texts(count, people), settings)
            assert done == count
            _, peak = tracemalloc.get_traced_memory()
            peaks.append((peak - base) / 1024)
    finally:
        tracemalloc.stop()
    return MemoryResult(small, large, peaks[0], peaks[1], peaks[1] / peaks[0])
