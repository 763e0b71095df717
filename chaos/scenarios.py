"""The scenarios of `make chaos`. Each sends notices, injects its fault, and checks the truth.

Every scenario uses fresh tenants and notice ids of its own prefix, so one scenario's
figures never include another's notices. A notice counts as *lost* when, after the
scenario's bound, the status API cannot find it or it is not final; one that is final with
the wrong status (say `failed` where Exchange only had transient faults) is a *problem*. A
*duplicate connector* is any connector of our names beyond one per name in a tenant.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import statistics
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.harness import BOTH, Tenant, make_fleet, make_tenant, notice_for
from exosim.core import LogEntry
from localrun.status import FINAL_STATUSES
from shared.outcome import Status

from .mutate import Mutant, mutants
from .stack import ChaosStack
from .truth import (
    Settled,
    await_final,
    duplicate_connectors,
    list_all,
    new_connector_calls,
    queue_depth,
    status_of,
    wait_until,
)

HOLD_TIMEOUT_S = 60.0
# Azurite's autosaveInterval (node_modules/azurite/dist/src/*/persistence/Loki*MetadataStore.js).
AZURITE_AUTOSAVE_S = 5.0
LOOKUP_EVERY = 10
FUZZ_CHUNK = 500  # longest a held Exchange answer waits for the kill
STATUSES = tuple(s.value for s in Status)  # the product's one definition


@dataclass(frozen=True)
class Size:
    transient_notices: int
    transient_tenants: int
    crash_rounds: int
    crash_notices: int
    azurite_notices: int
    duplicate_notices: int
    fuzz_notices: int
    consent_notices: int
    recovery_timeout_s: float
    settle_timeout_s: float
    fuzz_settle_s: float
    fuzz_send_budget_s: float


FULL = Size(transient_notices=200, transient_tenants=50, crash_rounds=2, crash_notices=4, azurite_notices=40,
            duplicate_notices=20, fuzz_notices=10_000, consent_notices=8, recovery_timeout_s=120.0,
            settle_timeout_s=240.0, fuzz_settle_s=120.0, fuzz_send_budget_s=600.0)
SMALL = Size(transient_notices=40, transient_tenants=10, crash_rounds=1, crash_notices=3, azurite_notices=12,
             duplicate_notices=8, fuzz_notices=400, consent_notices=4, recovery_timeout_s=120.0,
             settle_timeout_s=120.0, fuzz_settle_s=100.0, fuzz_send_budget_s=120.0)


@dataclass
class Result:
    name: str
    notices: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: int = 0
    crashes: int = 0
    recovery_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicates and not self.problems


# -- shared steps ---------------------------------------------------------------------------------

def _tenants(count: int, prefix: str, seed: int) -> list[Tenant]:
    rng = random.Random(seed)
    return [make_tenant(i, rng, prefix) for i in range(count)]


def _send_queue(stack: ChaosStack, bodies: Iterable[str]) -> int:
    queue = stack.queue()
    sent = 0
    try:
        for body in bodies:
            queue.send_notice(body)
            sent += 1
    finally:
        queue.close()
    return sent


def _post(stack: ChaosStack, body: str | bytes) -> int:
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    try:
        return stack.api().request("POST", "/activations", data).status
    except OSError:
        return 0


def _judge(result: Result, settled: Settled, expected: dict[str, frozenset[str]], timeout: float) -> None:
    """Lost (not found / not final) and wrong-outcome notices of a scenario, from the status API."""
    for notice_id, allowed in expected.items():
        doc = settled.docs.get(notice_id)
        if doc is None:
            result.lost.append(f"{notice_id}: not found by the status API")
        elif notice_id not in settled.final_at:
            result.lost.append(f"{notice_id}: still {doc.get('status')} after {timeout:.0f}s")
        elif doc.get("status") not in allowed:
            error = doc.get("error") or {}
            result.problems.append(f"{notice_id}: ended {doc.get('status')} ({error.get('code')}: "
                                   f"{str(error.get('message'))[:120]}), expected {'/'.join(sorted(allowed))}")
    result.problems.extend(sorted(set(settled.errors))[:5])


def _check_exchange(result: Result, stack: ChaosStack, tenants: Iterable[str]) -> None:
    settings = stack.settings()
    extra = duplicate_connectors(stack.sim, tenants, (settings.ea_connector_name, settings.mg_connector_name))
    result.duplicates += sum(extra.values())
    for tenant, count in sorted(extra.items())[:5]:
        result.problems.append(f"tenant {tenant} holds {count} extra connector(s) of our names")


def check_poison(result: Result, stack: ChaosStack) -> None:
    """Nothing may sit in `<queue>-poison-poison`: that is a notice even the poison trigger failed on.

    The queue is shared by the scenarios, so each is charged with what arrived during it.
    """
    name = f"{stack.queue_name}-poison-poison"
    depth = queue_depth(stack.storage.connection_string, name)
    if depth < 0:
        result.problems.append(f"{name}: storage did not answer")
    elif depth > stack.poison_poison_seen:
        result.lost.extend(f"a message in {name}" for _ in range(depth - stack.poison_poison_seen))
        stack.poison_poison_seen = depth


def _recovery_notes(result: Result) -> None:
    if result.recovery_s:
        result.notes.append(f"converged after crash: median {statistics.median(result.recovery_s):.1f}s, "
                            f"max {max(result.recovery_s):.1f}s over {len(result.recovery_s)} notice(s)")


# -- 1. transient faults --------------------------------------------------------------------------

def transient_faults(stack: ChaosStack, size: Size) -> Result:
    """30 % of Exchange calls fail transiently; every notice still succeeds, once."""
    result = Result("transient-30pct")
    fleet = make_fleet(size.transient_tenants, size.transient_notices, seed=20261201, prefix="T")
    for tenant in fleet.tenants:
        stack.sim.configure_tenant(tenant.tenant_id, transient_rate=0.3, seed=3000 + tenant.index)
    bodies = fleet.bodies()
    by_http = bodies[::4]
    _send_queue(stack, [b for i, b in enumerate(bodies) if i % 4])
    answers = Counter(_post(stack, body) for body in by_http)
    if set(answers) - {202}:
        result.problems.append(f"POST /activations answered {dict(answers)}, expected 202 only")
    ids = sorted(fleet.notice_ids)
    result.notices = len(ids)
    settled = await_final(stack.api(), ids, timeout=size.settle_timeout_s)
    _judge(result, settled, dict.fromkeys(ids, frozenset({"succeeded"})), size.settle_timeout_s)
    _check_exchange(result, stack, [t.tenant_id for t in fleet.tenants])
    invokes = [e for t in fleet.tenants for e in stack.sim.log_for(t.tenant_id) if e.kind == "invoke"]
    faulted = sum(1 for e in invokes if e.fault is not None)
    attempts = Counter(int(d.get("attempts") or 0) for d in settled.docs.values() if d)
    result.notes.append(f"{faulted}/{len(invokes)} Exchange calls faulted; attempts {dict(sorted(attempts.items()))}")
    return result


# -- 2-4. SIGKILL of the runner at a step boundary ------------------------------------------------

class AnswerHold:
    """Holds the simulator's answer to the `occurrence`-th successful `cmdlet` call of one tenant."""

    def __init__(self, tenant: str, cmdlet: str, occurrence: int) -> None:
        self.tenant = tenant.lower()
        self.cmdlet = cmdlet
        self.occurrence = occurrence
        self.reached = threading.Event()
        self.release = threading.Event()
        self._seen = 0
        self._lock = threading.Lock()

    def __call__(self, entry: LogEntry) -> None:
        if entry.tenant != self.tenant or entry.cmdlet != self.cmdlet or entry.status != 200 or entry.page:
            return
        with self._lock:
            self._seen += 1
            mine = self._seen == self.occurrence
        if mine:
            self.reached.set()
            self.release.wait(HOLD_TIMEOUT_S)


# (scenario name, cmdlet whose answer is held, which successful call of it) for a both-services
# notice on a fresh tenant, whose calls are: Get, Get-AcceptedDomain, then per connector
# (Enterprise Audit first) New, Validate, Set (stamp the validation), then the outcome write.
BOUNDARIES = (
    ("kill-after-new", "New-OutboundConnector", 1),
    ("kill-after-validate", "Validate-OutboundConnector", 1),
    ("kill-before-outcome", "Set-OutboundConnector", 2),
)


def kill_at_boundary(stack: ChaosStack, size: Size, name: str, cmdlet: str, occurrence: int) -> Result:
    """The runner is SIGKILLed while Exchange's answer to `cmdlet` is on its way, then restarted.

    Exchange has done the call (the connector exists, the validation ran) but the worker
    never heard of it: the restarted runner must finish the activation without a second
    connector, within the recovery bound.
    """
    result = Result(name)
    result.notes.append(stack.runner_settings.describe())
    for round_no in range(size.crash_rounds):
        tenants = _tenants(size.crash_notices, f"K{round_no}", seed=zlib.crc32(f"{name}/{round_no}".encode()))
        notices = [notice_for(t, f"K-{name}-{round_no}-{t.index}", BOTH) for t in tenants]
        hold = AnswerHold(tenants[0].tenant_id, cmdlet, occurrence)
        stack.sim.on_answer(hold)
        try:
            _send_queue(stack, [json.dumps(n, ensure_ascii=False) for n in notices])
            killed_at: float | None = None
            before: dict[str, dict[str, Any] | None] = {}
            if hold.reached.wait(HOLD_TIMEOUT_S):
                for notice in notices:
                    code, doc = status_of(stack.api(), notice["notice_id"])
                    before[notice["notice_id"]] = doc if code == 200 else None
                killed_at = stack.kill_runner()
                result.crashes += 1
            else:
                result.problems.append(f"round {round_no}: {cmdlet} #{occurrence} was never answered; no kill")
        finally:
            hold.release.set()
            stack.sim.on_answer(None)
        if killed_at is not None:
            stack.start_runner()
        ids = [n["notice_id"] for n in notices]
        settled = await_final(stack.api(), ids, timeout=size.recovery_timeout_s)
        result.notices += len(ids)
        # Recovery is timed for the notices the killed runner had taken (a record not yet
        # final); one still waiting on the queue was never interrupted.
        for notice_id in ids:
            doc = before.get(notice_id)
            if (killed_at is not None and doc is not None and doc.get("status") not in FINAL_STATUSES
                    and notice_id in settled.final_at):
                result.recovery_s.append(settled.final_at[notice_id] - killed_at)
        if killed_at is not None and ids[0] in settled.final_at:
            result.notes.append(f"round {round_no}: the notice killed at the boundary converged "
                                f"{settled.final_at[ids[0]] - killed_at:.1f}s after the kill")
        _judge(result, settled, dict.fromkeys(ids, frozenset({"succeeded"})), size.recovery_timeout_s)
        _check_exchange(result, stack, [t.tenant_id for t in tenants])
        news = new_connector_calls(stack.sim, tenants[0].tenant_id)
        if news != 2:
            result.problems.append(f"round {round_no}: the killed tenant saw {news} New-OutboundConnector calls")
    _recovery_notes(result)
    return result


# -- 5. Azurite killed for 8 s ---------------------------------------------------------------------

def azurite_outage(stack: ChaosStack, size: Size, *, outage_s: float = 8.0) -> Result:
    """SIGKILL Azurite while notices run, keep it down for 8 s, start it again from its files."""
    result = Result("azurite-down-8s")
    tenants = _tenants(size.azurite_notices, "A", seed=41)
    for tenant in tenants:  # slow Exchange, so that runs are in progress when storage goes
        stack.sim.configure_tenant(tenant.tenant_id, latency_ms=400)
    notices = [notice_for(t, f"A-{t.index:04d}", BOTH) for t in tenants]
    _send_queue(stack, [json.dumps(n, ensure_ascii=False) for n in notices])
    ids = [n["notice_id"] for n in notices]
    sent_at = time.monotonic()
    started = wait_until(lambda: sum(len(stack.sim.writes(t.tenant_id)) for t in tenants) >= 3, timeout=60)
    if not started:
        result.problems.append("no run had started within 60s")
    # Azurite saves to disk every 5 s, so a kill loses what it acknowledged in the last 5 s:
    # the suite's own sends are kept older than that, so that any loss is the product's.
    time.sleep(max(0.0, AZURITE_AUTOSAVE_S + 1 - (time.monotonic() - sent_at)))
    stack.kill_azurite()
    killed_at = time.monotonic()
    result.crashes += 1
    time.sleep(outage_s)
    stack.restart_azurite()
    settled = await_final(stack.api(), ids, timeout=size.recovery_timeout_s + outage_s)
    result.notices = len(ids)
    result.recovery_s = [settled.final_at[i] - killed_at for i in ids if i in settled.final_at]
    _judge(result, settled, dict.fromkeys(ids, frozenset({"succeeded"})), size.recovery_timeout_s + outage_s)
    _check_exchange(result, stack, [t.tenant_id for t in tenants])
    for tenant in tenants:
        stack.sim.configure_tenant(tenant.tenant_id, latency_ms=0)
    result.notes.append(stack.runner_settings.describe())
    result.notes.append("Azurite SIGKILLed with its data on disk; it loses what it acknowledged in its last 5 s "
                        "(autosave), which real storage never does")
    _recovery_notes(result)
    return result


# -- 6. each notice delivered three times at once --------------------------------------------------

def triple_delivery(stack: ChaosStack, size: Size, *, copies: int = 3) -> Result:
    result = Result("delivered-3x")
    tenants = _tenants(size.duplicate_notices, "D", seed=7)
    notices = [notice_for(t, f"D-{t.index:04d}", BOTH) for t in tenants]
    _send_queue(stack, [json.dumps(n, ensure_ascii=False) for n in notices for _ in range(copies)])
    ids = [n["notice_id"] for n in notices]
    result.notices = len(ids)
    settled = await_final(stack.api(), ids, timeout=size.settle_timeout_s)
    _judge(result, settled, dict.fromkeys(ids, frozenset({"succeeded"})), size.settle_timeout_s)
    _check_exchange(result, stack, [t.tenant_id for t in tenants])
    for tenant in tenants:
        news = new_connector_calls(stack.sim, tenant.tenant_id)
        if news != 2:
            result.problems.append(f"tenant {tenant.tenant_id}: {news} New-OutboundConnector calls, expected 2")
    attempts = Counter(int(d.get("attempts") or 0) for d in settled.docs.values() if d)
    kinds: Counter[str] = Counter()
    for notice_id, doc in settled.docs.items():
        mine = Counter(str(e.get("kind")) for e in (doc or {}).get("events") or [])
        kinds.update(mine)
        if mine["claimed"] != 1:
            result.problems.append(f"{notice_id}: claimed {mine['claimed']} times, so it ran more than once")
    result.notes.append(f"{copies} copies each; attempts {dict(sorted(attempts.items()))}; history: "
                        f"{kinds['claimed']} claimed, {kinds['busy']} busy, {kinds['duplicate']} duplicate")
    return result


# -- 7. consent and role missing ------------------------------------------------------------------

CONSENT_CASES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("no-consent", {"consent": False}),
    ("no-permission-grant", {"consent": False, "consent_error": 65001}),
    ("role-403", {"role_missing": 403}),
    ("role-401", {"role_missing": 401}),
)


def consent_and_role(stack: ChaosStack, size: Size) -> Result:
    """Tenants that never consented or lack the Exchange role: needs_attention, never lost."""
    result = Result("consent-role-missing")
    tenants = _tenants(size.consent_notices, "C", seed=13)
    notices = []
    for tenant in tenants:
        label, options = CONSENT_CASES[tenant.index % len(CONSENT_CASES)]
        stack.sim.configure_tenant(tenant.tenant_id, **options)
        notices.append(notice_for(tenant, f"C-{label}-{tenant.index}", BOTH))
    bodies = [json.dumps(n, ensure_ascii=False) for n in notices]
    _send_queue(stack, bodies[1::2])
    answers = Counter(_post(stack, body) for body in bodies[::2])
    if set(answers) - {202}:
        result.problems.append(f"POST /activations answered {dict(answers)}, expected 202 only")
    ids = [n["notice_id"] for n in notices]
    result.notices = len(ids)
    settled = await_final(stack.api(), ids, timeout=size.settle_timeout_s)
    _judge(result, settled, dict.fromkeys(ids, frozenset({"needs_attention"})), size.settle_timeout_s)
    codes = Counter(str((d or {}).get("error", {}).get("code")) for d in settled.docs.values())
    result.notes.append(f"error codes {dict(sorted(codes.items()))}")
    if any(stack.sim.connectors(t.tenant_id) for t in tenants):
        result.problems.append("a connector was created in a tenant without consent or role")
    return result


# -- 8. generated and mutated notices -------------------------------------------------------------

def _queue_depths(stack: ChaosStack) -> tuple[int, int]:
    cs = stack.storage.connection_string
    return queue_depth(cs, stack.queue_name), queue_depth(cs, stack.queue_name + "-poison")


def mutated_notices(stack: ChaosStack, size: Size, *, threads: int = 6) -> Result:
    """Mutated notices through HTTP and the queue: no 500, every list view and the page answer 200.

    A notice with a usable notice_id must be found under it by `GET /api/activations/{id}`,
    final; the others are checked through the list views and the poison queues only.
    """
    result = Result("mutated-notices")
    tenants = _tenants(20, "F", seed=99)
    made: list[Mutant] = list(mutants(size.fuzz_notices, tenants, seed=20261201))
    began = time.monotonic()
    answers: list[tuple[Mutant, int]] = []
    refused: Counter[str] = Counter()
    sent: list[Mutant] = []
    queue = stack.queue()
    try:
        with ThreadPoolExecutor(threads) as pool:
            # In chunks, half POSTed and half queued, so that a run cut short by its budget
            # still sent both ways.
            for start in range(0, len(made), FUZZ_CHUNK):
                if time.monotonic() - began > size.fuzz_send_budget_s:
                    break
                chunk = made[start:start + FUZZ_CHUNK]
                over_http = [m for i, m in enumerate(chunk) if i % 2 == 0 or m.text() is None]
                over_queue = [m for i, m in enumerate(chunk) if i % 2 == 1 and m.text() is not None]
                answers += pool.map(lambda m: (m, _post(stack, m.body)), over_http)
                for m in over_queue:
                    try:
                        queue.send_notice(m.text() or "")
                    except Exception as exc:
                        # The storage SDK refuses some texts before they leave; a sender sees that error.
                        refused[f"{m.kind}: {type(exc).__name__}"] += 1
                sent += chunk
    finally:
        queue.close()
    sent_s = time.monotonic() - began
    result.notices = len(sent)
    if len(sent) < len(made):
        # A slow machine is not a defect of the product: reported, never a failure.
        result.notes.append(f"CUT SHORT: {len(sent)} of {len(made)} mutated notices sent within the sending "
                            f"budget of {size.fuzz_send_budget_s:.0f}s")
    kind_of = {m.notice_id: m.kind for m in sent if m.notice_id is not None}
    by_status = Counter(code for _, code in answers)
    five = Counter(m.kind for m, code in answers if code >= 500 or code == 0)
    if five:
        result.problems.append(f"POST /activations answered 5xx or nothing {sum(five.values())} time(s), by "
                               f"mutation: {dict(five.most_common(8))}")
    drained = wait_until(lambda: _queue_depths(stack) == (0, 0), timeout=size.fuzz_settle_s, interval=2.0)
    if not drained:
        depth, poison = _queue_depths(stack)
        message = f"after {size.fuzz_settle_s:.0f}s the queue still holds {depth} and -poison {poison} message(s)"
        if poison:
            result.problems.append(message)
        else:
            # Delayed envelopes (a watchdog re-sent by a long run, a second retry message for
            # one due time) stay invisible until due and are then dropped as stale; whether a
            # notice was lost is judged from its record below, not from the queue's depth.
            result.notes.append(message + "; delayed envelopes, judged by the records")
    expected = sorted(kind_of)
    items, errors = list_all(stack.api())
    listed = not errors
    seen = {str(i.get("notice_id")) for i in items}
    listed_final = {str(i.get("notice_id")) for i in items if i.get("status") in FINAL_STATUSES}
    # Each notice is looked up by its id when the list cannot vouch for it; otherwise every
    # odd id and one in LOOKUP_EVERY, so the lookup route is exercised without 10,000 calls.
    to_get = [n for n in expected if not listed or n not in listed_final or kind_of[n] == "odd_notice_id"
              or int(hashlib.sha256(n.encode()).hexdigest(), 16) % LOOKUP_EVERY == 0]
    with ThreadPoolExecutor(threads) as pool:
        lookups = dict(zip(to_get, pool.map(lambda n: status_of(stack.api(), n), to_get), strict=True))
    lost_kinds: Counter[str] = Counter()
    for notice_id, (code, doc) in lookups.items():
        if code != 200 or doc is None:
            lost_kinds[f"{kind_of[notice_id]} (GET {code})"] += 1
            result.lost.append(f"{notice_id} [{kind_of[notice_id]}]: GET /activations/{{id}} answered {code}")
        elif doc.get("status") not in FINAL_STATUSES:
            lost_kinds[f"{kind_of[notice_id]} ({doc.get('status')})"] += 1
            result.lost.append(f"{notice_id} [{kind_of[notice_id]}]: still {doc.get('status')}")
    if lost_kinds:
        result.problems.append(f"lost by mutation: {dict(lost_kinds.most_common(10))}")
    if listed:
        missing = [n for n in expected if n not in seen]
        if missing:
            result.problems.append(f"{len(missing)} notice id(s) missing from GET /activations, e.g. {missing[:3]}")
    for status in STATUSES:
        errors += list_all(stack.api(), {"status": status})[1]
    for tenant in tenants:
        errors += list_all(stack.api(), {"tenant_id": tenant.tenant_id})[1]
    page = stack.api().request("GET", "/status")
    if page.status != 200:
        errors.append(f"GET /status answered {page.status}")
    if errors:
        result.problems.append(f"{len(errors)} list/page answer(s) not 200, e.g. {errors[:2]}")
    _check_exchange(result, stack, [t.tenant_id for t in tenants])
    rows = Counter(str(i.get("status")) for i in items)
    queued = len(sent) - len(answers) - sum(refused.values())
    result.notes.append(f"sent in {sent_s:.0f}s: {len(answers)} by HTTP, answers {dict(sorted(by_status.items()))};"
                        f" {queued} on the queue; {len(expected)} with a usable id,"
                        f" {len(to_get)} looked up by id")
    if refused:
        result.notes.append(f"refused by the queue SDK before sending: {dict(refused)}")
    result.notes.append(f"rows by status: {dict(sorted(rows.items())) if listed else 'GET /activations failed'}")
    return result


Scenario = Callable[[ChaosStack, Size], Result]


def index_consistency(stack: ChaosStack, size: Size) -> Result:
    """After every other scenario (kills, outages, duplicates, hostile notices): the lists and the
    summary agree with the activations themselves, as an operator would read them.

    Each status's list holds as many rows as GET /api/summary counts for it, no notice is listed
    under two statuses, and every listed notice's own status document (GET /activations/{id},
    the row) has the status it is listed under: for the statuses that need a person all of them,
    for the rest one in LOOKUP_EVERY. A crash between a row and its index write is allowed to
    show until that activation's watchdog message repairs it, so the check is repeated until it
    holds or a lease and its grace (plus the recovery timeout) have passed.
    """
    result = Result("index-consistency")
    deadline = time.monotonic() + size.recovery_timeout_s
    while True:
        mismatches, listed = _index_mismatches(stack)
        if not mismatches or time.monotonic() > deadline:
            break
        time.sleep(5)
    result.notices = listed
    result.problems += mismatches[:20]
    result.notes.append(f"{listed} listed activation(s) compared with the summary and their own rows")
    return result


def _index_mismatches(stack: ChaosStack) -> tuple[list[str], int]:
    api = stack.api()
    problems: list[str] = []
    reply = api.request("GET", "/summary")
    if reply.status != 200 or not isinstance(reply.body, dict):
        return [f"GET /summary answered {reply.status}"], 0
    counts = reply.body.get("counts") or {}
    where: dict[str, str] = {}
    for status in STATUSES:
        items, errors = list_all(api, {"status": status})
        problems += errors
        ids = [str(i.get("notice_id")) for i in items]
        if len(ids) != counts.get(status):
            problems.append(f"{status}: {len(ids)} listed, the summary counts {counts.get(status)}")
        for notice_id in ids:
            if notice_id in where:
                problems.append(f"{notice_id} is listed as {where[notice_id]} and as {status}")
            where[notice_id] = status
    if reply.body.get("total") != len(where) or reply.body.get("exact") is not True:
        problems.append(f"summary total {reply.body.get('total')} (exact {reply.body.get('exact')}), "
                        f"{len(where)} listed")
    urgent = {"needs_attention", "failed", "running", "queued", "retry_scheduled", "drifted"}
    for notice_id, status in where.items():
        if status in urgent or int(hashlib.sha256(notice_id.encode()).hexdigest(), 16) % LOOKUP_EVERY == 0:
            code, doc = status_of(api, notice_id)
            if code != 200 or doc is None or doc.get("status") != status:
                problems.append(f"{notice_id} is listed as {status}, its row says "
                                f"{doc.get('status') if doc else f'GET {code}'}")
    return problems, len(where)


def _boundary(stack: ChaosStack, size: Size, *, name: str, cmdlet: str, occurrence: int) -> Result:
    return kill_at_boundary(stack, size, name, cmdlet, occurrence)


def all_scenarios() -> Sequence[tuple[str, Scenario]]:
    scenarios: list[tuple[str, Scenario]] = [("transient-30pct", transient_faults)]
    for name, cmdlet, occurrence in BOUNDARIES:
        scenarios.append((name, functools.partial(_boundary, name=name, cmdlet=cmdlet, occurrence=occurrence)))
    scenarios += [("azurite-down-8s", azurite_outage), ("delivered-3x", triple_delivery),
                  ("consent-role-missing", consent_and_role), ("mutated-notices", mutated_notices),
                  ("index-consistency", index_consistency)]
    return scenarios
