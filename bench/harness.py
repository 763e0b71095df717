"""What the scale test and the benchmarks share: a realistic notice fleet and a threaded queue pump.

The fleet is what the contract system really sends over time: a tenant's first notice asks
for both services, later notices (amendments, renewals, a service re-issued on its own) ask
for one or both again, and every notice of one tenant agrees on the tenant's smart host,
journal address and validation recipient. Tenants get unequal numbers of notices, and the
queue order is shuffled, so notices of one tenant run at the same time on different threads,
which is where duplicate connectors would come from if create-or-update did not converge.

The pump does what the Functions host does with a queue trigger (host.json: batchSize,
visibilityTimeout, maxDequeueCount, maxPollingInterval), with a few threads instead of the
host's concurrent invocations. Everything it does is bounded twice: by a deadline and by a
count of messages and receive calls, so a bug that re-enqueues forever ends the run instead
of hanging it.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import outcome
from shared.queueing import ActivationQueue, ReceivedMessage
from shared.services import SERVICES, activation_order, requested
from shared.store import ActivationStore
from shared.worker import Worker

MX_HOSTS = ("mgf.cybermail.jp", "mgs.cybermail.jp", "mgp.cybermail.jp")
JOURNAL_DOMAINS = ("cs-365.cybermail.jp", "cs-365-02.cybermail.jp")
# Every service, in the registry's order (MailGates first), as the contract system lists them.
BOTH = tuple(s.key for s in SERVICES)
# Notices after a tenant's first: each service re-issued on its own (a MailGates amendment, an
# Enterprise Audit re-issue), then a renewal of all of them.
LATER_SERVICES: tuple[tuple[str, ...], ...] = (*((s.key,) for s in SERVICES), BOTH)
# Extra notices per tenant beyond the first, cycled over tenants: 1..5 (so 2..6 in all, 4 on average).
EXTRA_WEIGHTS = (1, 2, 3, 4, 5)
FINAL_STATUSES: frozenset[str] = frozenset(s.value for s in outcome.FINAL_STATUSES)


@dataclass(frozen=True)
class Tenant:
    """One customer tenant and the values all of its notices agree on."""

    index: int
    tenant_id: str
    mx_host: str
    journal_address: str
    validation_recipient: str
    tenant_domain: str


@dataclass(frozen=True)
class Fleet:
    """Tenants and their notices (as JSON-ready dicts), in the order they go on the queue."""

    tenants: tuple[Tenant, ...]
    notices: tuple[dict[str, Any], ...]

    @property
    def notice_ids(self) -> frozenset[str]:
        return frozenset(str(n["notice_id"]) for n in self.notices)

    def notices_of(self, tenant_id: str) -> list[dict[str, Any]]:
        return [n for n in self.notices if n["tenant_id"] == tenant_id]

    def bodies(self) -> list[str]:
        return [json.dumps(n, ensure_ascii=False) for n in self.notices]


def make_tenant(index: int, rng: random.Random, prefix: str) -> Tenant:
    """A tenant with a reproducible GUID and per-tenant allow-listed routing values."""
    tenant_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    journal_domain = JOURNAL_DOMAINS[index % len(JOURNAL_DOMAINS)]
    return Tenant(
        index=index,
        tenant_id=tenant_id,
        mx_host=MX_HOSTS[index % len(MX_HOSTS)],
        journal_address=f"jr-{prefix.lower()}{index:04d}@{journal_domain}",
        validation_recipient=f"postmaster@customer{index:04d}.example",
        tenant_domain=f"customer{index:04d}.onmicrosoft.com",
    )


def notice_for(tenant: Tenant, notice_id: str, services: Sequence[str], *, sequence: int = 0) -> dict[str, Any]:
    """A valid notice for `tenant`; only the keys its services read (`Service.fields`) are present."""
    values = {"journal_report_address": tenant.journal_address, "mx_host": tenant.mx_host,
              "validation_recipient": tenant.validation_recipient}
    notice: dict[str, Any] = {
        "notice_id": notice_id,
        "tenant_id": tenant.tenant_id,
        "services": list(services),
        "tenant_domain": tenant.tenant_domain,
        "contract_id": f"C-{tenant.index:05d}-{sequence}",
        "customer_name": f"顧客{tenant.index:04d}株式会社",
        "issued_at": "2026-11-30T09:00:00+09:00",
    }
    for service in requested(services, order=activation_order()):
        # an optional field the tenant has no value for (journal_ndr_address) stays out
        notice.update({name: values[name] for name in service.fields if name in values})
    return notice


def make_fleet(
    tenants: int,
    notices: int,
    *,
    seed: int,
    prefix: str,
    later_services: Sequence[tuple[str, ...]] = LATER_SERVICES,
) -> Fleet:
    """`notices` notices over `tenants` tenants, every tenant's first asking for both services.

    With notices = 4 x tenants and tenants a multiple of 5, tenants get 2, 3, 4, 5 and 6
    notices in turn; other sizes spread the extras over the same weighted cycle. A tenant's
    later notices cycle through `later_services`.
    """
    if not later_services:
        raise ValueError("later_services must not be empty")
    if not 1 <= tenants <= notices:
        raise ValueError("need at least one tenant and at least one notice per tenant")
    rng = random.Random(seed)
    people = [make_tenant(i, rng, prefix) for i in range(tenants)]
    counts = [1] * tenants
    cycle = [i for i in range(tenants) for _ in range(EXTRA_WEIGHTS[i % len(EXTRA_WEIGHTS)])]
    for k in range(notices - tenants):
        counts[cycle[k % len(cycle)]] += 1
    items: list[dict[str, Any]] = []
    for tenant, count in zip(people, counts, strict=True):
        for k in range(count):
            services = BOTH if k == 0 else later_services[(k - 1) % len(later_services)]
            items.append(notice_for(tenant, f"{prefix}-{tenant.index:04d}-{k}", services, sequence=k))
    rng.shuffle(items)
    return Fleet(tuple(people), tuple(items))


def make_tenants(count: int, *, seed: int, prefix: str = "M") -> list[Tenant]:
    """`count` tenants, the same for the same seed, so two measures see the same input."""
    rng = random.Random(seed)
    return [make_tenant(i, rng, prefix) for i in range(count)]


def iter_notice_texts(count: int, people: Sequence[Tenant]) -> Iterator[str]:
    """`count` notice bodies for `people`, made one at a time and not kept (memory benchmark)."""
    tenants = len(people)
    for i in range(count):
        tenant = people[i % tenants]
        services = (BOTH, *LATER_SERVICES)[i % (1 + len(LATER_SERVICES))]
        yield json.dumps(notice_for(tenant, f"M-{i:06d}", services), ensure_ascii=False)


# --------------------------------------------------------------------------- the pump


@dataclass
class PumpReport:
    """What a pump run did: handler results, errors, time, and whether it hit a bound."""

    results: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    handled: int = 0
    receives: int = 0
    elapsed_s: float = 0.0
    timed_out: bool = False
    capped: bool = False
    handle_ms: list[float] = field(default_factory=list)

    @property
    def max_handle_ms(self) -> float:
        return max(self.handle_ms, default=0.0)


class QueuePump:
    """Delivers queue messages to a Worker from several threads, like the Functions host."""

    def __init__(
        self,
        worker: Worker,
        queue: ActivationQueue,
        *,
        threads: int = 6,
        batch_size: int = 1,
        visibility_timeout: float = 30.0,
        max_dequeue: int = 5,
        max_polling_interval: float = 0.5,
    ) -> None:
        if not 1 <= threads <= 32:
            raise ValueError("threads must be between 1 and 32")
        self.worker = worker
        self.queue = queue
        self.threads = threads
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self.max_dequeue = max_dequeue
        self.max_polling_interval = max_polling_interval
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(
        self,
        *,
        until: Callable[[PumpReport], bool],
        timeout: float,
        max_messages: int,
        check_every: float = 0.5,
    ) -> PumpReport:
        """Pump until `until(report)` holds (checked every `check_every` s), `timeout` s pass,
        or `max_messages` messages were handled. The caller asserts on `timed_out`/`capped`.

        `until` sees the live report, so a stop condition can count results instead of reading
        every activation back from the table (which the memory benchmark would measure)."""
        report = PumpReport()
        self._stop.clear()
        started = time.monotonic()
        deadline = started + timeout
        # Receive calls are capped too: an idle thread polls at most every few tens of ms.
        max_receives = max_messages + int(timeout / 0.05) + 1
        workers = [
            threading.Thread(target=self._serve, args=(report, deadline, max_messages, max_receives),
                             name=f"pump-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for thread in workers:
            thread.start()
        try:
            while time.monotonic() < deadline:
                if until(report):
                    break
                if not any(t.is_alive() for t in workers):  # every thread hit a bound
                    break
                self._stop.wait(check_every)
            else:
                report.timed_out = True
        finally:
            self._stop.set()
            for thread in workers:
                thread.join(timeout=max(5.0, self.worker.settings.exo_timeout_seconds + 5))
        report.elapsed_s = time.monotonic() - started
        with self._lock:
            report.capped = report.handled >= max_messages
        return report

    def _serve(self, report: PumpReport, deadline: float, max_messages: int, max_receives: int) -> None:
        try:
            self._loop(report, deadline, max_messages, max_receives)
        except Exception as exc:  # e.g. a delete that failed: recorded, never a silently dead thread
            with self._lock:
                report.errors.append(f"pump: {type(exc).__name__}: {exc}")

    def _loop(self, report: PumpReport, deadline: float, max_messages: int, max_receives: int) -> None:
        idle = 0.02
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if report.handled >= max_messages or report.receives >= max_receives:
                    return
                report.receives += 1
            try:
                messages = self.queue.receive(max_messages=self.batch_size, visibility_timeout=self.visibility_timeout)
            except Exception as exc:  # a storage blip: the host would log it and poll again
                with self._lock:
                    report.errors.append(f"receive: {type(exc).__name__}: {exc}")
                self._stop.wait(0.2)
                continue
            if not messages:
                # The host backs off while the queue is empty, up to maxPollingInterval.
                self._stop.wait(idle)
                idle = min(idle * 2, self.max_polling_interval)
                continue
            idle = 0.02
            for message in messages:
                if self._stop.is_set():
                    return  # left invisible; it reappears after the visibility timeout
                self._deliver(message, report)

    def _deliver(self, message: ReceivedMessage, report: PumpReport) -> None:
        started = time.perf_counter()
        try:
            result = self.worker.handle(message.content, dequeue_count=message.dequeue_count)
        except Exception as exc:
            # The host leaves the message to reappear, and poisons it after maxDequeueCount.
            with self._lock:
                report.handled += 1
                report.results[f"error:{type(exc).__name__}"] += 1
                report.errors.append(f"handle: {type(exc).__name__}: {exc}")
            if message.dequeue_count >= self.max_dequeue:
                self.queue.poison.send_notice(message.content)
                self.queue.delete(message)
            return
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.queue.delete(message)
        with self._lock:
            report.handled += 1
            report.results[result] += 1
            report.handle_ms.append(elapsed_ms)


def statuses(store: ActivationStore) -> Counter[str]:
    """How many activations are in each status (one query, paged)."""
    return Counter(record.status for record in store.iter_activations())


def all_final(store: ActivationStore, expected: int) -> Callable[[PumpReport | None], bool]:
    """A pump stop condition: `expected` activations exist and every one is in a final status."""

    def check(_report: PumpReport | None = None) -> bool:
        counts = statuses(store)
        return sum(counts.values()) >= expected and all(s in FINAL_STATUSES for s in counts)

    return check


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]
