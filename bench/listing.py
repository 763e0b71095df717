"""Entities read per list page and per summary, with 100,000 activations in Azurite.

The figure that matters is how many rows a query hands back, which does not depend on the
machine: a page of 50 by status must read about 50 rows however large the table grows.

The fill. Azurite keeps a table in one in-memory collection and costs 1-25 ms per written
entity, growing with the partition's size, so writing 100,000 activations (their rows, index
rows, pointers: ~500,000 entities) through its HTTP API would take hours. Instead the rows are
built with the product's own functions (`store.record_to_entity`, `index.IndexState`) and
written into the file Azurite loads at start (`--location`), in the shape Azurite itself
writes (learned from a table it created in the same run). The measured part is then real:
Azurite started on that file, the product's `ActivationStore` querying it over HTTP. Checks:
a row read back equals its record, the summary equals the filled distribution, a page equals
what the synthetic records say it must be, and a write through the store at that size moves
the counters and the rows together.

`python -m bench.listing [--activations N]` runs it alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient
from azure.data.tables._serialize import _add_entity_properties  # the SDK's own wire form of a property

from localrun.azurite import start_azurite
from shared import index as ix
from shared.outcome import Status
from shared.services import activation_order, keys
from shared.store import ActivationRecord, ActivationStore, record_to_entity

PAGE = 50
DEEP_PAGE = 20
ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account
ACTIVATIONS_TABLE, EVENTS_TABLE = "benchactivations", "benchevents"
# Roughly what years of contracts look like: most finished, a few in flight or stuck.
MIX = {Status.SUCCEEDED: 0.85, Status.REJECTED: 0.04, Status.FAILED: 0.03, Status.NEEDS_ATTENTION: 0.03,
       Status.DRIFTED: 0.01, Status.QUEUED: 0.02, Status.RETRY_SCHEDULED: 0.01, Status.RUNNING: 0.01}
T0 = datetime(2023, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=3 * 365)


@dataclasses.dataclass(frozen=True)
class ListingResult:
    activations: int
    tenants: int
    entities: int
    fill_s: float
    load_s: float
    page_size: int
    status_first_page_reads: int
    status_deep_page_reads: int
    deep_page: int
    rare_status_page_reads: int
    all_page_reads: int
    tenant_page_reads: int
    tenant_page_items: int
    search_reads: int
    summary_reads: int
    write_index_reads: int
    write_transactions: int
    failures: list[str]


def synthetic(n: int, *, seed: int = 7) -> list[ActivationRecord]:
    """`n` activations over ~n/3 tenants (1-6 each), created over three years, in `MIX`."""
    rng = random.Random(seed)
    statuses = list(MIX)
    weights = [MIX[s] for s in statuses]
    records: list[ActivationRecord] = []
    tenant_no = 0
    while len(records) < n:
        tenant = f"{tenant_no:08x}-0000-4000-8000-{rng.getrandbits(48):012x}"
        customer = f"{rng.choice(['Acme', 'Beta', 'Contoso', 'Fabrikam', 'Tailspin', '東京'])} {tenant_no} K.K."
        for _ in range(min(rng.randint(1, 6), n - len(records))):
            i = len(records)
            created = T0 + SPAN * rng.random()
            status = rng.choices(statuses, weights)[0]
            connectors = [] if status is Status.REJECTED else [
                {"service": service.key, "name": service.title, "action": "create", "validation": "passed",
                 "disabled": False} for service in activation_order()]
            error = ({"code": "CONSENT_MISSING", "message": "admin consent is missing"}
                     if status in (Status.NEEDS_ATTENTION, Status.FAILED) else None)
            records.append(ActivationRecord(
                notice_id=f"ACT-{i:07d}", tenant_id=tenant, status=status, attempts=1,
                content_hash=f"{rng.getrandbits(128):032x}", notice_json=json.dumps({"notice_id": f"ACT-{i:07d}"}),
                services=keys(), customer_name=customer, contract_id=f"C-{i:07d}",
                connectors=connectors, error=error, created_at=created,
                updated_at=created + timedelta(minutes=2), finished_at=created + timedelta(minutes=2)))
        tenant_no += 1
    return records


def table_rows(records: Iterable[ActivationRecord]) -> Iterator[dict[str, Any]]:
    """Every entity the store would hold for `records`: activation rows, index rows, pointers,
    counters and the "complete" marker, built with the product's own functions."""
    shards: dict[str, Counter[str]] = {}
    for record in records:
        entity = record_to_entity(record)
        yield entity
        state = ix.IndexState.of(entity)
        yield from state.rows()
        yield state.pointer()
        shards.setdefault(ix.counter_key(record.notice_id), Counter())[state.status] += 1
    for key, counts in shards.items():
        yield {"PartitionKey": ix.INDEX_PARTITION, "RowKey": key, **{s.value: counts[s.value] for s in Status}}
    yield {"PartitionKey": ix.INDEX_PARTITION, "RowKey": ix.COMPLETE_ROW}


def _azurite_document(entity: Mapping[str, Any], loki_id: int, stamp: str, created_ms: int) -> dict[str, Any]:
    """`entity` as Azurite stores what the SDK sends: typed properties keep their
    @odata.type annotation, strings none, plus the service's Timestamp and ETag."""
    wire = _add_entity_properties(dict(entity))
    properties = {k: v for k, v in wire.items() if not (k.endswith("@odata.type") and v == "Edm.String")}
    properties["Timestamp"], properties["Timestamp@odata.type"] = stamp, "Edm.DateTime"
    return {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"], "properties": properties,
            "lastModifiedTime": stamp, "eTag": f"W/\"datetime'{stamp.replace(':', '%3A')}'\"",
            "meta": {"revision": 0, "created": created_ms, "version": 0}, "$loki": loki_id}


def write_snapshot(workdir: Path, entities: Iterable[Mapping[str, Any]]) -> int:
    """Put `entities` into the activations table of the Azurite data in `workdir`; returns how many.

    Azurite (stopped) must have created the two tables there: its file is the template, so
    every field but the documents is Azurite's own. The collection's binary indices are left
    out: Azurite then finds rows by scanning (correct, only slower), where a hand-built index
    would have to copy LokiJS's ordering rules exactly.
    """
    path = workdir / "__azurite_db_table__.json"
    db = json.loads(path.read_text(encoding="utf-8"))
    (collection,) = [c for c in db["collections"] if c["name"] == f"{ACCOUNT}${ACTIVATIONS_TABLE}"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"  # 7 digits, as Azurite writes
    created_ms = int(time.time() * 1000)
    collection["data"] = [_azurite_document(e, i, stamp, created_ms) for i, e in enumerate(entities, start=1)]
    collection["maxId"] = len(collection["data"])
    collection["idIndex"] = None
    collection["binaryIndices"] = {}
    # Node reads the file into one string, at most 2**29 - 24 characters: compact separators.
    path.write_text(json.dumps(db, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return len(collection["data"])


class CountingTable:
    """Wraps a store's TableClient: every entity handed back (queries and point reads), every
    query's filter, and the index point reads and transactions of writes. The listing bench
    and the index tests count with it."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.reads = 0
        self.index_reads = 0
        self.row_reads = 0  # point reads outside the index partition (activation rows)
        self.transactions = 0
        self.filters: list[str] = []

    def reset(self) -> None:
        self.reads = self.index_reads = self.row_reads = self.transactions = 0
        self.filters = []

    def take(self) -> int:
        reads, self.reads = self.reads, 0
        return reads

    def get_entity(self, partition_key: str, row_key: str, **kwargs: Any) -> Any:
        self.reads += 1
        if partition_key == ix.INDEX_PARTITION:
            self.index_reads += 1
        else:
            self.row_reads += 1
        return self._table.get_entity(partition_key, row_key, **kwargs)

    def submit_transaction(self, operations: Any, **kwargs: Any) -> Any:
        self.transactions += 1
        return self._table.submit_transaction(operations, **kwargs)

    def query_entities(self, query_filter: str, **kwargs: Any) -> Any:
        self.filters.append(query_filter)
        inner = self._table.query_entities(query_filter, **kwargs)
        counter = self

        class Counted:
            def __iter__(self) -> Iterator[Any]:
                for row in inner:
                    counter.reads += 1
                    yield row

            def by_page(self, **kw: Any) -> Any:
                pages = inner.by_page(**kw)

                class Pages:
                    def __iter__(self) -> Any:
                        return self

                    def __next__(self) -> Any:
                        page = list(next(pages))
                        counter.reads += len(page)
                        return page

                    @property
                    def continuation_token(self) -> Any:
                        return pages.continuation_token

                return Pages()

        return Counted()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def _expected(records: list[ActivationRecord], status: Status | None = None,
              tenant: str | None = None) -> list[str]:
    """A list's notice ids as the index must give them: triage order, newest created first."""
    chosen = [r for r in records
              if (status is None or r.status is status) and (tenant is None or r.tenant_id == tenant)]
    chosen.sort(key=lambda r: (ix.rank(r.status), ix.order_key(r.notice_id, r.created_at)))
    return [r.notice_id for r in chosen]


def measure(*, activations: int = 100_000, log: Any = None) -> ListingResult:
    say = log or (lambda message: print(f"[listing] {message}", file=sys.stderr, flush=True))
    failures: list[str] = []
    records = synthetic(activations)
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        workdir = Path(tmp) / "azurite"
        started = time.monotonic()
        template = start_azurite(workdir=workdir, in_memory=False)
        try:
            service = TableServiceClient.from_connection_string(template.connection_string)
            for name in (ACTIVATIONS_TABLE, EVENTS_TABLE):
                service.create_table(name)
            service.close()
        finally:
            template.stop()  # Azurite saves its data file on the way out
        entities = write_snapshot(workdir, table_rows(records))
        fill_s = time.monotonic() - started
        say(f"{entities:,} entities written for {activations:,} activations in {fill_s:.0f} s; starting Azurite")
        started = time.monotonic()
        azurite = start_azurite(workdir=workdir, in_memory=False, timeout=600)
        load_s = time.monotonic() - started
        try:
            store = ActivationStore.from_connection_string(
                azurite.connection_string, activations_table=ACTIVATIONS_TABLE, events_table=EVENTS_TABLE)
            counting = CountingTable(store._activations)
            store._activations = counting  # type: ignore[assignment]

            sample = records[activations // 2]
            got = store.get(sample.notice_id)
            if got is None or replace(got, etag=None) != sample:
                failures.append(f"listing: {sample.notice_id} read back differs from the record filled")
            counting.take()

            page = store.list_activations(status=Status.SUCCEEDED.value, top=PAGE)
            first_reads = counting.take()
            if [r.notice_id for r in page.items] != _expected(records, Status.SUCCEEDED)[:PAGE]:
                failures.append("listing: the first page of succeeded is not the newest 50")
            # A deep page that exists at this size (page 21 at 100,000; the last full one when fewer).
            deep_page = min(DEEP_PAGE, len(_expected(records, Status.SUCCEEDED)) // PAGE - 1)
            for _ in range(deep_page - 1):
                page = store.list_activations(status=Status.SUCCEEDED.value, top=PAGE, continuation=page.continuation)
            counting.take()
            deep = store.list_activations(status=Status.SUCCEEDED.value, top=PAGE, continuation=page.continuation)
            deep_reads = counting.take()
            start = deep_page * PAGE
            if [r.notice_id for r in deep.items] != _expected(records, Status.SUCCEEDED)[start:start + PAGE]:
                failures.append(f"listing: page {deep_page + 1} of succeeded is not what the records say")

            store.list_activations(status=Status.NEEDS_ATTENTION.value, top=PAGE)
            rare_reads = counting.take()
            everything = store.list_activations(top=PAGE)
            all_reads = counting.take()
            if [r.notice_id for r in everything.items] != _expected(records)[:PAGE]:
                failures.append("listing: the first page of all is not in triage order")
            busiest = Counter(r.tenant_id for r in records).most_common(1)[0][0]
            tenant_page = store.list_activations(tenant_id=busiest, top=PAGE)
            tenant_reads = counting.take()
            if [r.notice_id for r in tenant_page.items] != _expected(records, tenant=busiest):
                failures.append("listing: the busiest tenant's page is not its activations in triage order")
            found = store.search(sample.customer_name or "", top=PAGE)
            search_reads = counting.take()
            if sample.notice_id not in [r.notice_id for r in found]:
                failures.append("listing: a search by customer name did not find its activation")

            summary = store.summary()
            summary_reads = counting.take()
            wanted = {s.value: 0 for s in Status} | dict(Counter(r.status.value for r in records))
            if (summary.counts, summary.total, summary.exact) != (wanted, activations, True):
                failures.append(f"listing: summary {summary.counts} differs from the filled {wanted}")

            # One real write at this size: a queued activation finishes.
            queued = next(r for r in records if r.status is Status.QUEUED)
            current = store.get(queued.notice_id)
            assert current is not None
            counting.index_reads = counting.transactions = 0
            assert queued.updated_at is not None
            store.replace(replace(current, status=Status.SUCCEEDED, updated_at=queued.updated_at + timedelta(1)),
                          previous=current)
            write_reads, write_transactions = counting.index_reads, counting.transactions
            after = store.summary()
            if (after.counts["queued"], after.counts["succeeded"]) != (wanted["queued"] - 1, wanted["succeeded"] + 1):
                failures.append("listing: a status change at this size did not move the counters")
            if queued.notice_id not in [r.notice_id for r in store.search(queued.notice_id)
                                        if r.status is Status.SUCCEEDED]:
                failures.append("listing: a status change at this size did not move the rows")
            store.close()
        finally:
            azurite.stop()
    return ListingResult(
        activations=activations, tenants=len({r.tenant_id for r in records}), entities=entities, fill_s=fill_s,
        load_s=load_s, page_size=PAGE, status_first_page_reads=first_reads, status_deep_page_reads=deep_reads,
        deep_page=deep_page + 1, rare_status_page_reads=rare_reads, all_page_reads=all_reads,
        tenant_page_reads=tenant_reads, tenant_page_items=len(tenant_page.items), search_reads=search_reads,
        summary_reads=summary_reads, write_index_reads=write_reads, write_transactions=write_transactions,
        failures=failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--activations", type=int, default=100_000)
    args = parser.parse_args(argv)
    result = measure(activations=args.activations)
    print(json.dumps(dataclasses.asdict(result), indent=2))
    return 1 if result.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
