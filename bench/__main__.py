"""`python -m bench` (`make bench`): throughput, Exchange calls and memory, reported as ratios.

Starts its own Azurite and Exchange simulator on loopback, runs every scenario within a
fixed time budget, prints a table and writes `.run/bench.json`. The exit status is 1 only
when a correctness check inside a scenario failed (a notice did not succeed, a replay wrote to
Exchange, a tenant got a connector twice); a missed ratio target is printed, never fatal,
because timings on a shared machine are evidence, not a verdict.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localrun.azurite import PROJECT_DIR
from shared.settings import Settings

from . import core, listing, live
from .report import Row, table, write_json
from .stack import azurite, local_stack, local_stack_out_of_process

BUDGET_S = 170.0  # the whole run, services included, stays under 3 minutes
# What each live scenario needs at most, so one that cannot finish in time is skipped, not cut.
ENGINE_NEEDS_S = 40.0
WORKER_RUN_NEEDS_S = 45.0
MEMORY_NEEDS_S = 60.0
DUPLICATES_NEEDS_S = 25.0
MEMORY_PHASE_TIMEOUT_S = 18.0  # per phase (3 phases); measured ~6 s for the 48-notice one


@dataclasses.dataclass(frozen=True)
class Sizes:
    core_notices: int = 3000
    memory_small: int = 1000
    memory_large: int = 10000
    engine_notices: int = 20
    duplicate_notices: int = 12
    fleet_tenants: int = 16
    fleet_notices: int = 64
    worker_rounds: int = 3
    worker_memory_small: int = 12
    worker_memory_large: int = 48
    listing_activations: int = 100_000


QUICK = Sizes(core_notices=500, memory_small=200, memory_large=2000, engine_notices=6, duplicate_notices=4,
              fleet_tenants=5,
              fleet_notices=20, worker_rounds=1, worker_memory_small=6, worker_memory_large=24,
              listing_activations=5_000)


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(sizes: Sizes, out: Path) -> int:
    started = time.monotonic()
    deadline = started + BUDGET_S
    rows: list[Row] = []
    results: dict[str, Any] = {}
    failures: list[str] = []
    incomplete: list[str] = []
    skipped: list[str] = []

    def left() -> float:
        return deadline - time.monotonic()

    # (a) + (d, core): the pure core, no services.
    settings = Settings()
    _log(f"core: parse + desired + plan, {sizes.core_notices} notices, fresh and replay")
    thr = core.throughput(settings, notices=sizes.core_notices)
    results["core"] = dataclasses.asdict(thr)
    rows += [
        Row("core.fresh_per_s", "core: fresh notices / s (parse+desired+plan)", thr.fresh_per_s, digits=0),
        Row("core.replay_per_s", "core: replayed notices / s", thr.replay_per_s, digits=0),
        Row("core.replay_over_fresh_time", "core: replay time / fresh time", thr.replay_over_fresh_time),
    ]
    failures += core.failed_checks(thr)
    _log(f"core: memory, {sizes.memory_small} vs {sizes.memory_large} notices streamed")
    mem = core.memory(settings, small=sizes.memory_small, large=sizes.memory_large)
    results["core_memory"] = dataclasses.asdict(mem)
    rows += [
        Row("core.memory_peak_small", f"core: peak over steady state, {mem.small:,} notices", mem.small_peak_kib,
            "KiB", 1),
        Row("core.memory_peak_large", f"core: peak over steady state, {mem.large:,} notices", mem.large_peak_kib,
            "KiB", 1),
        Row("core.memory_peak_10k_over_1k", f"core: peak {mem.large:,} / peak {mem.small:,}", mem.peak_ratio),
    ]

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, azurite(Path(tmp)) as storage:
        with local_stack(storage) as stack:
            # (b) the engine against the simulator, fresh then replay.
            if left() > ENGINE_NEEDS_S:
                _log(f"engine: {sizes.engine_notices} notices fresh, then replayed")
                eng = live.engine_fresh_vs_replay(stack, notices=sizes.engine_notices, budget_s=ENGINE_NEEDS_S)
                results["engine"] = {**dataclasses.asdict(eng), "replay_over_fresh_calls": eng.replay_over_fresh_calls,
                                     "replay_over_fresh_time": eng.replay_over_fresh_time}
                failures += eng.failures
                incomplete += eng.incomplete
                rows += [
                    Row("engine.fresh_calls", "engine: Exchange calls / fresh notice", eng.fresh_calls_per_notice),
                    Row("engine.replay_calls", "engine: Exchange calls / replayed notice", eng.replay_calls_per_notice),
                    Row("engine.replay_over_fresh_calls", "engine: replay calls / fresh calls",
                        eng.replay_over_fresh_calls),
                    Row("engine.fresh_ms", "engine: ms / fresh notice", 1000 * eng.fresh_s / eng.notices, "ms", 1),
                    Row("engine.replay_ms", "engine: ms / replayed notice", 1000 * eng.replay_s / eng.notices, "ms", 1),
                    Row("engine.replay_over_fresh_time", "engine: replay time / fresh time",
                        eng.replay_over_fresh_time),
                    Row("engine.token_requests_per_tenant", "engine: token requests / tenant (fresh+replay)",
                        eng.token_requests_per_tenant),
                ]
            else:
                skipped.append("engine")
            # (b') at-least-once delivery: every notice three times at once.
            if left() > DUPLICATES_NEEDS_S + WORKER_RUN_NEEDS_S + MEMORY_NEEDS_S:
                _log(f"worker: {sizes.duplicate_notices} notices delivered 3 times at once")
                dup = live.duplicate_delivery(stack, notices=sizes.duplicate_notices, copies=3,
                                              timeout_s=DUPLICATES_NEEDS_S - 5)
                results["duplicates"] = dataclasses.asdict(dup)
                failures += dup.failures
                incomplete += dup.incomplete
                rows.append(Row("worker.duplicate_calls", "worker: Exchange calls / notice delivered 3x at once",
                                dup.calls_per_notice))
                if "engine" in results and results["engine"]["fresh_calls_per_notice"]:
                    rows.append(Row("worker.duplicate_over_single_calls", "worker: calls 3x delivery / calls 1x",
                                    dup.calls_per_notice / results["engine"]["fresh_calls_per_notice"]))
            else:
                skipped.append("duplicates")
            # (c) the worker behind the queue, healthy vs 30 % transient faults, interleaved.
            runs: dict[float, list[live.WorkerResult]] = {0.0: [], 0.3: []}
            for round_no in range(sizes.worker_rounds):
                for rate in (0.0, 0.3):
                    if left() < WORKER_RUN_NEEDS_S + MEMORY_NEEDS_S:
                        skipped.append(f"worker {rate:.0%} round {round_no + 1}")
                        continue
                    _log(f"worker: {sizes.fleet_notices} notices / {sizes.fleet_tenants} tenants, "
                         f"{rate:.0%} transient faults (round {round_no + 1})")
                    result = live.worker_run(stack, transient_rate=rate, tenants=sizes.fleet_tenants,
                                             notices=sizes.fleet_notices, seed=1000 * (round_no + 1) + int(rate * 100),
                                             prefix=f"R{round_no}F{int(rate * 100)}", timeout_s=40.0)
                    failures += result.failures
                    incomplete += result.incomplete
                    runs[rate].append(result)
            results["worker"] = {f"{rate:.0%}": [dataclasses.asdict(r) for r in rs] for rate, rs in runs.items()}
            if runs[0.0] and runs[0.3]:
                # Means, not bests: under faults the spread between rounds is the retries' tail
                # (a notice that needs a 4th attempt waits 3 s more), which is the thing measured.
                time0 = sum(r.elapsed_s for r in runs[0.0]) / len(runs[0.0])
                time30 = sum(r.elapsed_s for r in runs[0.3]) / len(runs[0.3])
                calls0 = sum(r.calls_per_notice for r in runs[0.0]) / len(runs[0.0])
                calls30 = sum(r.calls_per_notice for r in runs[0.3]) / len(runs[0.3])
                rows += [
                    Row("worker.healthy_per_s", "worker: notices / s, 0 % faults", sizes.fleet_notices / time0,
                        digits=1),
                    Row("worker.faults_per_s", "worker: notices / s, 30 % faults", sizes.fleet_notices / time30,
                        digits=1),
                    Row("worker.faults_over_healthy_time", "worker: time 30 % / time 0 %", time30 / time0),
                    Row("worker.healthy_calls", "worker: Exchange calls / notice, 0 %", calls0),
                    Row("worker.faults_calls", "worker: Exchange calls / notice, 30 %", calls30),
                    Row("worker.faults_over_healthy_calls", "worker: calls 30 % / calls 0 %", calls30 / calls0),
                    Row("worker.faulted_share", "worker: share of calls that failed, 30 %",
                        sum(r.faulted_share for r in runs[0.3]) / len(runs[0.3])),
                    Row("worker.queue_retries", "worker: queue retries / notice, 30 %",
                        sum(r.queue_retries for r in runs[0.3]) / sum(r.notices for r in runs[0.3])),
                ]
        # (d) the worker's memory, with the simulator in its own process.
        if left() > MEMORY_NEEDS_S:
            with local_stack_out_of_process(storage, Path(tmp)) as stack:
                _log(f"worker: memory, {sizes.worker_memory_small} vs {sizes.worker_memory_large} notices")
                wm = live.worker_memory(stack, small=sizes.worker_memory_small, large=sizes.worker_memory_large,
                                        timeout_s=MEMORY_PHASE_TIMEOUT_S)
            results["worker_memory"] = {**dataclasses.asdict(wm), "peak_ratio": wm.peak_ratio}
            failures += wm.failures
            incomplete += wm.incomplete
            rows += [
                Row("worker.memory_peak_small", f"worker: peak, {wm.small} notices, one at a time",
                    wm.small_peak_kib, "KiB", 0),
                Row("worker.memory_peak_large", f"worker: peak, {wm.large} notices, one at a time",
                    wm.large_peak_kib, "KiB", 0),
                Row("worker.memory_peak_4x_over_1x", f"worker: peak {wm.large} / peak {wm.small}", wm.peak_ratio),
                Row("worker.memory_retained_large", f"worker: kept after the {wm.large}-notice phase",
                    wm.large_retained_kib, "KiB", 0),
                Row("auth.token_cache_per_tenant", "token provider: kept per tenant served",
                    wm.token_cache_kib_per_tenant, "KiB", 1),
            ]
        else:
            skipped.append("worker memory")

    # (e) what a list page and the summary read at years' worth of activations. Entity counts, not
    # timings, so it runs after the time-budgeted part, whatever time is left (see bench/listing.py).
    _log(f"listing: {sizes.listing_activations:,} activations in Azurite, then pages of 50 and the summary")
    lst = listing.measure(activations=sizes.listing_activations, log=_log)
    results["listing"] = dataclasses.asdict(lst)
    failures += lst.failures
    n = f"{lst.activations:,}"
    rows += [
        Row("listing.fill_s", f"listing: {lst.entities:,} entities built and loaded for {n} activations",
            lst.fill_s + lst.load_s, "s", 0),
        Row("listing.status_page_reads", f"listing: entities read, first page of {lst.page_size} by status",
            lst.status_first_page_reads, digits=0),
        Row("listing.status_page_over_page_size", "listing: first page by status, entities read / page size",
            lst.status_first_page_reads / lst.page_size),
        Row("listing.status_deep_page_over_page_size",
            f"listing: page {lst.deep_page} by status, entities read / page size",
            lst.status_deep_page_reads / lst.page_size),
        Row("listing.rare_status_page_over_page_size", "listing: needs_attention page, entities read / page size",
            lst.rare_status_page_reads / lst.page_size),
        Row("listing.all_page_over_page_size", "listing: triage page of all, entities read / page size",
            lst.all_page_reads / lst.page_size),
        Row("listing.tenant_page_reads_over_items",
            f"listing: busiest tenant's page ({lst.tenant_page_items} items), entities read / items",
            lst.tenant_page_reads / max(lst.tenant_page_items, 1)),
        Row("listing.summary_reads", f"listing: entities read per summary, {n} activations", lst.summary_reads,
            digits=0),
        Row("listing.write_index_point_reads", "listing: index point reads per status change", lst.write_index_reads,
            digits=0),
        Row("listing.write_transactions", "listing: index transactions per status change", lst.write_transactions,
            digits=0),
    ]

    duration = time.monotonic() - started
    print(table(rows))
    for name in skipped:
        print(f"skipped (time budget): {name}")
    for note in incomplete:
        print(f"INCOMPLETE (time bound, not a failure): {note}")
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    print(f"{len(rows)} figures in {duration:.0f}s; correctness checks "
          f"{'passed' if not failures else 'FAILED'}; results in {out}")
    write_json(out, {
        "command": "python -m bench",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(duration, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "sizes": dataclasses.asdict(sizes),
        "figures": [r.to_dict() for r in rows],
        "results": results,
        "skipped": skipped,
        "incomplete": incomplete,
        "failures": failures,
        "ok": not failures,
    })
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / ".run" / "bench.json",
                        help="where to write the JSON results (default .run/bench.json)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every scenario")
    args = parser.parse_args(argv)
    return run(QUICK if args.quick else Sizes(), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
