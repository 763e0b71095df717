"""Benchmarks against the running stack: the engine on its own, and the worker behind the queue.

* engine, fresh vs replay: the same notices run twice, serially, against the simulator. The
  second run must only read (Get-OutboundConnector, Get-AcceptedDomain) and write nothing;
  Exchange throttles per tenant, so calls per notice matter more than milliseconds. The token
  cache must hold across runs: one token request per tenant.
* worker, 0 % vs 30 % transient faults: a fleet of notices through the queue and a 6-thread
  pump, once on healthy tenants and once on tenants failing 30 % of calls. In-run retries
  should absorb most faults and the queue's back-off the rest, so the time and the calls grow
  by a bounded factor, and every notice still succeeds with one connector of each name.
* worker memory: tracemalloc over N and 3N notices. A peak that grows with N means the worker
  keeps something per notice.

Timings are compressed as in the e2e test: queue back-off 0.2 s doubling to 1 s (visibility is
whole seconds), in-run waits between call retries slept at a tenth of their length.
"""

from __future__ import annotations

import gc
import json
import random
import re
import time
import tracemalloc
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.notice import parse_notice
from shared.outcome import Status
from shared.provisioning import ProvisioningEngine
from shared.services import connector_names
from shared.worker import Worker

from .harness import (
    BOTH,
    FINAL_STATUSES,
    QueuePump,
    all_final,
    make_fleet,
    make_tenant,
    notice_for,
    percentile,
)
from .stack import Stack

SLEEP_SCALE = 0.1
PUMP_THREADS = 6
EXO_CALL_RETRIES = 2
MAX_ATTEMPTS = 12  # see tests/e2e/test_scale.py for why 12 with 30 % faults


def scaled_sleep(seconds: float) -> None:
    time.sleep(seconds * SLEEP_SCALE)


@dataclass
class EngineResult:
    notices: int
    fresh_s: float = 0.0
    replay_s: float = 0.0
    fresh_calls_per_notice: float = 0.0
    replay_calls_per_notice: float = 0.0
    replay_writes: int = 0
    token_requests_per_tenant: float = 0.0
    failures: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)

    @property
    def replay_over_fresh_calls(self) -> float:
        return self.replay_calls_per_notice / self.fresh_calls_per_notice if self.fresh_calls_per_notice else 0.0

    @property
    def replay_over_fresh_time(self) -> float:
        return self.replay_s / self.fresh_s if self.fresh_s else 0.0


def engine_fresh_vs_replay(stack: Stack, *, notices: int = 20, budget_s: float = 40.0) -> EngineResult:
    """Run `notices` both-services notices on fresh tenants, then the same notices again."""
    sim = stack.simulator
    settings = stack.settings()
    provider = stack.token_provider()
    engine = ProvisioningEngine(settings, token_provider=provider, sleep=scaled_sleep)
    result = EngineResult(notices=notices)
    rng = random.Random(5)
    warm = make_tenant(9999, rng, "W")
    tenants = [make_tenant(i, rng, "B") for i in range(notices)]
    parsed = [parse_notice(notice_for(t, f"B-{t.index:04d}", BOTH), settings) for t in tenants]
    deadline = time.monotonic() + budget_s
    try:
        # Warm up on another tenant: the first TLS handshakes are not a fresh notice's cost.
        engine.run(parse_notice(notice_for(warm, "W-0", BOTH), settings))

        def calls() -> int:
            return sum(sum(sim.calls(t.tenant_id).values()) for t in tenants)

        def writes() -> int:
            return sum(len(sim.writes(t.tenant_id)) for t in tenants)

        for phase in ("fresh", "replay"):
            before_calls, before_writes = calls(), writes()
            started = time.perf_counter()
            for notice in parsed:
                if time.monotonic() > deadline:
                    result.incomplete.append(f"engine {phase}: time budget of {budget_s:.0f}s exceeded")
                    return result
                outcome = engine.run(notice)
                if outcome.status is not Status.SUCCEEDED:
                    result.failures.append(f"engine {phase}: {notice.notice_id} ended {outcome.status.value}: "
                                           f"{(outcome.error or {}).get('code')}")
            elapsed = time.perf_counter() - started
            per_notice = (calls() - before_calls) / notices
            if phase == "fresh":
                result.fresh_s, result.fresh_calls_per_notice = elapsed, per_notice
            else:
                result.replay_s, result.replay_calls_per_notice = elapsed, per_notice
                result.replay_writes = writes() - before_writes
        result.token_requests_per_tenant = sum(sim.token_requests(t.tenant_id) for t in tenants) / notices
    finally:
        provider.close()
    if result.replay_writes:
        result.failures.append(f"engine replay: {result.replay_writes} write(s); a replay must write nothing")
    if result.token_requests_per_tenant != 1:
        result.failures.append(f"engine: {result.token_requests_per_tenant} token requests per tenant; "
                               "the cache should serve every run after the first")
    return result


@dataclass
class WorkerResult:
    transient_rate: float
    tenants: int
    notices: int
    elapsed_s: float = 0.0
    notices_per_s: float = 0.0
    calls_per_notice: float = 0.0
    faulted_share: float = 0.0
    queue_retries: int = 0
    max_attempts: int = 0
    p95_handle_ms: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def worker_run(
    stack: Stack,
    *,
    transient_rate: float,
    tenants: int,
    notices: int,
    seed: int,
    prefix: str,
    timeout_s: float = 60.0,
) -> WorkerResult:
    """A fleet through queue, pump and worker; time from the first enqueue to the last finish."""
    sim = stack.simulator
    storage = stack.storage()
    settings = stack.settings(storage, retry_base_seconds=0.2, retry_max_seconds=1.0, max_attempts=MAX_ATTEMPTS,
                              exo_call_retries=EXO_CALL_RETRIES, exo_timeout_seconds=15.0)
    provider = stack.token_provider()
    engine = ProvisioningEngine(settings, token_provider=provider, sleep=scaled_sleep)
    worker = Worker(settings, store=storage.store, queue=storage.queue, engine_factory=lambda: engine)
    fleet = make_fleet(tenants, notices, seed=seed, prefix=prefix)
    for tenant in fleet.tenants:
        sim.configure_tenant(tenant.tenant_id, transient_rate=transient_rate, seed=seed + tenant.index)
    result = WorkerResult(transient_rate, tenants, notices)
    try:
        started_at = datetime.now(UTC)
        for body in fleet.bodies():
            storage.queue.send_notice(body)
        pump = QueuePump(worker, storage.queue, threads=PUMP_THREADS)
        report = pump.run(until=all_final(storage.store, notices), timeout=timeout_s,
                          max_messages=notices * MAX_ATTEMPTS, check_every=0.2)
    finally:
        provider.close()
    records = list(storage.store.iter_activations())
    finished = [r.finished_at for r in records if r.finished_at is not None]
    # The worker's own finish stamps, not the pump's polling, say when the last notice was done.
    result.elapsed_s = ((max(finished) - started_at).total_seconds() if len(finished) == notices
                        else report.elapsed_s)
    result.notices_per_s = notices / result.elapsed_s if result.elapsed_s > 0 else 0.0
    result.statuses = dict(Counter(r.status for r in records))
    result.queue_retries = report.results["retry_scheduled"]
    result.max_attempts = max((r.attempts for r in records), default=0)
    result.p95_handle_ms = percentile(report.handle_ms, 95)
    entries = [e for t in fleet.tenants for e in sim.log_for(t.tenant_id) if e.kind == "invoke"]
    result.calls_per_notice = len(entries) / notices
    result.faulted_share = sum(1 for e in entries if e.fault is not None) / len(entries) if entries else 0.0
    # Correctness: every notice that finished succeeded, none was lost, no connector twice.
    # Running out of time is reported as incomplete, not as a failure: on a loaded machine
    # that is a timing, and timings never fail the benchmark.
    name = f"worker {transient_rate:.0%}"
    unfinished = sum(n for status, n in result.statuses.items() if status not in FINAL_STATUSES)
    if report.timed_out or unfinished:
        result.incomplete.append(f"{name}: {unfinished} of {notices} not finished within {timeout_s:.0f}s")
    if report.errors:
        result.failures.append(f"{name}: handler errors {report.errors[:3]}")
    wrong = {s: n for s, n in result.statuses.items() if s in FINAL_STATUSES and s != "succeeded"}
    if wrong:
        result.failures.append(f"{name}: notices ended {wrong}, expected all succeeded")
    missing = fleet.notice_ids - {r.notice_id for r in records}
    if missing and not report.timed_out:
        result.failures.append(f"{name}: {len(missing)} notice(s) lost (no activation row)")
    expected = sorted(connector_names(settings))
    for tenant in fleet.tenants:
        names = sorted(str(c["Name"]) for c in sim.connectors(tenant.tenant_id))
        if len(names) != len(set(names)) or (names != expected and not result.incomplete):
            result.failures.append(f"{name}: tenant {tenant.tenant_id} has connectors {names}")
    stack.release(storage)
    return result


@dataclass
class DuplicateResult:
    notices: int
    copies: int
    calls_per_notice: float = 0.0
    busy: int = 0
    failures: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


def duplicate_delivery(stack: Stack, *, notices: int = 12, copies: int = 3, timeout_s: float = 30.0) -> DuplicateResult:
    """Each notice on the queue `copies` times in a row: what the extra deliveries cost Exchange.

    At-least-once delivery makes duplicates normal, so they must be nearly free: the claim on
    the activation row turns them away before any Exchange call. Calls per notice should equal
    a single fresh run's.
    """
    sim = stack.simulator
    storage = stack.storage()
    settings = stack.settings(storage, exo_call_retries=EXO_CALL_RETRIES)
    provider = stack.token_provider()
    engine = ProvisioningEngine(settings, token_provider=provider, sleep=scaled_sleep)
    worker = Worker(settings, store=storage.store, queue=storage.queue, engine_factory=lambda: engine)
    rng = random.Random(31)
    tenants = [make_tenant(i, rng, "DUP") for i in range(notices)]
    result = DuplicateResult(notices, copies)
    try:
        for tenant in tenants:
            body = json.dumps(notice_for(tenant, f"DUP-{tenant.index:04d}", BOTH), ensure_ascii=False)
            for _ in range(copies):
                storage.queue.send_notice(body)
        pump = QueuePump(worker, storage.queue, threads=PUMP_THREADS)
        # Stops when every notice is final; the copies handed back as busy come round after the
        # lease and would only add "duplicate" no-ops.
        report = pump.run(until=all_final(storage.store, notices), timeout=timeout_s,
                          max_messages=notices * copies * 2, check_every=0.2)
        records = list(storage.store.iter_activations())
    finally:
        provider.close()
    result.busy = report.results["busy"]
    calls = [sum(sim.calls(t.tenant_id).values()) for t in tenants]
    result.calls_per_notice = sum(calls) / notices
    if report.timed_out:
        result.incomplete.append(f"duplicates: not all final within {timeout_s:.0f}s: {dict(report.results)}")
    elif Counter(r.status for r in records) != {"succeeded": notices} or report.results["succeeded"] != notices:
        result.failures.append(f"duplicates: {dict(report.results)}; expected {notices} runs, all succeeded")
    for tenant in tenants:
        news = sim.calls(tenant.tenant_id).get("New-OutboundConnector", 0)
        if news > 2:
            result.failures.append(f"duplicates: tenant {tenant.tenant_id} got {news} New-OutboundConnector calls")
    stack.release(storage)
    return result


@dataclass
class WorkerMemoryResult:
    small: int
    large: int
    tenants: int
    small_peak_kib: float = 0.0
    large_peak_kib: float = 0.0
    small_retained_kib: float = 0.0
    large_retained_kib: float = 0.0
    token_cache_kib_per_tenant: float = 0.0
    failures: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)

    @property
    def peak_ratio(self) -> float:
        return self.large_peak_kib / self.small_peak_kib if self.small_peak_kib else 0.0


def worker_memory(stack: Stack, *, small: int = 12, large: int = 48, tenants: int = 6, threads: int = 1,
                  timeout_s: float = 60.0) -> WorkerMemoryResult:
    """tracemalloc peak and retained growth of one worker handling `small`, then `large` notices.

    Run it on a stack whose simulator is another process (`local_stack_out_of_process`), so
    only the worker and its SDKs are measured. Like a Function App process, one worker serves
    every phase, after a warm-up that provisions `tenants` tenants (imports, TLS sessions,
    tokens and MSAL metadata are one-off costs); the phases then send notices for the same
    tenants, so any growth from `small` to `large` is per notice. A full collection before
    each phase empties the interpreter's free lists, which tracemalloc counts as allocated;
    both phases refill them to the same bound, so that cancels out in the ratio.

    One pump thread by default: the peak is then one invocation's working set, the same from
    run to run. With the host's concurrent invocations the peak is a multiple of it that
    depends on how many happen to be at their largest at once, which is noise here. `re`'s pattern cache is
    filled to its bound first: the Tables SDK compiles one pattern per batch response (its
    multipart boundary), and that cache, bounded at 512 patterns, only reaches its steady
    size after some 170 notices; until then it would read as growth per notice.

    The token provider keeps one MSAL application per tenant; what that costs per tenant is
    measured separately (`token_cache_kib_per_tenant`), since it grows with tenants, not notices.
    """
    result = WorkerMemoryResult(small, large, tenants)
    storage = stack.storage()
    settings = stack.settings(storage, exo_call_retries=EXO_CALL_RETRIES)
    provider = stack.token_provider()
    engine = ProvisioningEngine(settings, token_provider=provider, sleep=scaled_sleep)
    worker = Worker(settings, store=storage.store, queue=storage.queue, engine_factory=lambda: engine)
    people = [make_tenant(i, random.Random(i), "MEM") for i in range(tenants)]
    sent = 0

    def phase(count: int) -> None:
        nonlocal sent
        for i in range(count):
            tenant = people[i % tenants]
            body = json.dumps(notice_for(tenant, f"MEM-{sent + i:05d}", BOTH), ensure_ascii=False)
            storage.queue.send_notice(body)
        sent += count
        pump = QueuePump(worker, storage.queue, threads=threads)
        # Counting results, not reading rows back: listing every activation is not the worker's memory.
        report = pump.run(until=lambda r: r.results["succeeded"] >= count, timeout=timeout_s,
                          max_messages=count * 4)
        if report.timed_out:
            result.incomplete.append(f"worker memory: {dict(report.results)} of {count} notices "
                                     f"within {timeout_s:.0f}s")
        elif report.errors or dict(report.results) != {"succeeded": count}:
            result.failures.append(f"worker memory: {dict(report.results)} for {count} notices "
                                   f"(errors: {report.errors[:2]})")

    try:
        # Tracing starts before the warm-up, so that objects the phases merely replace (pools,
        # refreshed caches) were traced when first allocated and their release is seen.
        tracemalloc.start()
        try:
            phase(tenants)  # warm-up: provisions every tenant once
            for count in (small, large):
                _fill_re_cache()
                gc.collect()
                before, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                phase(count)
                _, peak = tracemalloc.get_traced_memory()
                _fill_re_cache()
                gc.collect()
                after, _ = tracemalloc.get_traced_memory()
                peak_kib, retained_kib = (peak - before) / 1024, (after - before) / 1024
                if count == small:
                    result.small_peak_kib, result.small_retained_kib = peak_kib, retained_kib
                else:
                    result.large_peak_kib, result.large_retained_kib = peak_kib, retained_kib
            result.token_cache_kib_per_tenant = _token_cache_per_tenant(stack)
        finally:
            tracemalloc.stop()
        statuses = dict(Counter(r.status for r in storage.store.iter_activations()))
        if not result.incomplete and statuses != {"succeeded": sent}:
            result.failures.append(f"worker memory: statuses {statuses}, expected {sent} succeeded")
    finally:
        provider.close()
        stack.release(storage)
    return result


def _fill_re_cache(patterns: int = 600) -> None:
    """Bring `re`'s bounded pattern cache to the steady state of a long-running worker.

    That is: full of the multipart-boundary patterns that email.feedparser compiles for each
    Tables batch response, so each new one replaces one of the same size.
    """
    re.purge()
    for _ in range(patterns):
        separator = "--batchresponse_" + str(uuid.uuid4())
        re.compile("(?P<sep>" + re.escape(separator) + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$")


def _token_cache_per_tenant(stack: Stack, tenants: int = 20) -> float:
    """KiB a token provider keeps per tenant it has served (tracemalloc must be running)."""
    provider = stack.token_provider()
    try:
        rng = random.Random(77)
        people = [make_tenant(i, rng, "TOK") for i in range(tenants + 1)]
        provider.get_token(people[0].tenant_id)  # MSAL's own one-off set-up
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        for tenant in people[1:]:
            provider.get_token(tenant.tenant_id)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        provider.close()
    return (after - before) / 1024 / tenants
