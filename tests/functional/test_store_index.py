"""The index behind lists, search and the summary: what it reads, and how it stays right.

A list by status or tenant reads index rows only (every query names a PartitionKey), in triage
order and newest created first within a status; the summary is counters that move in the same
transaction as the rows; a crash between the activation write and its index write is repaired
by that activation's next write, its watchdog (`repair_index`), and `reindex`.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.listing import CountingTable
from shared import index as ix
from shared.api import ActivationApi
from shared.outcome import Status
from shared.store import ActivationRecord, ActivationStore, ConcurrentUpdate, _query_fingerprint, record_to_entity
from tests.fixtures.azurite import StorageNames

T0 = datetime(2026, 4, 1, 0, 0, 0, tzinfo=UTC)
TENANT = "11111111-2222-3333-4444-555555555555"
OTHER = "99999999-8888-7777-6666-555555555555"
ZEROS = {s.value: 0 for s in Status}


def record(notice_id: str, minute: int, **changes: Any) -> ActivationRecord:
    base = ActivationRecord(
        notice_id=notice_id, tenant_id=TENANT, status=Status.QUEUED,
        notice_json=json.dumps({"notice_id": notice_id}), customer_name="Acme Trading K.K.",
        contract_id=f"C-{notice_id}", created_at=T0 + timedelta(minutes=minute),
        updated_at=T0 + timedelta(minutes=minute), warnings=[{"code": "W"}],
    )
    return replace(base, **changes)


def later(row: ActivationRecord, minutes: int = 1, **changes: Any) -> ActivationRecord:
    """`row` changed by a later write (the lifecycle stamps every write's updated_at)."""
    assert row.updated_at is not None
    return replace(row, updated_at=row.updated_at + timedelta(minutes=minutes), **changes)


@pytest.fixture
def logged(activation_store: ActivationStore) -> CountingTable:
    log = CountingTable(activation_store._activations)
    activation_store._activations = log  # type: ignore[assignment]
    return log


def ids(records: list[ActivationRecord]) -> list[str]:
    return [r.notice_id for r in records]


def lose_index_writes(store: ActivationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies after the activation row is written and before its index write."""
    def crashed(entity: Any, *, fresh: bool = False) -> bool:
        raise ConnectionError("the process died here")
    monkeypatch.setattr(store, "sync_index", crashed)


def test_every_list_search_and_summary_query_names_a_partition_key(
    activation_store: ActivationStore, logged: CountingTable,
) -> None:
    for i in range(3):
        activation_store.create(record(f"N-{i}", i))
    logged.reset()
    activation_store.list_activations()
    activation_store.list_activations(status="queued")
    activation_store.list_activations(tenant_id=TENANT)
    activation_store.list_activations(tenant_id=TENANT, status="failed")
    activation_store.list_activations(q="N-")
    activation_store.list_activations(q="acme")
    activation_store.list_activations(q="C-N-1")
    activation_store.list_activations(q="in")  # a notice-id range that spans the index partition
    activation_store.summary()
    list(activation_store.iter_activations(status="queued"))
    assert len(logged.filters) >= 11
    for query_filter in logged.filters:
        assert ("PartitionKey eq @pk" in query_filter
                or ("PartitionKey ge @lo" in query_filter and "PartitionKey lt @hi" in query_filter)), query_filter


def test_a_page_of_50_reads_the_50_rows_it_shows(activation_store: ActivationStore, logged: CountingTable) -> None:
    rows = [activation_store.create(record(f"N-{i:03d}", i)) for i in range(120)]
    for row in rows[:60]:
        activation_store.replace(later(row, status=Status.SUCCEEDED))
    logged.reset()
    page = activation_store.list_activations(status="succeeded", top=50)
    assert (len(page.items), logged.reads, len(logged.filters)) == (50, 50, 1)
    logged.reset()
    rest = activation_store.list_activations(status="succeeded", top=50, continuation=page.continuation)
    assert (len(rest.items), rest.continuation, logged.reads) == (10, None, 10)
    logged.reset()
    assert activation_store.summary().total == 120
    assert logged.reads == ix.COUNTER_SHARDS + 1  # the counters and the "complete" marker


def test_lists_are_in_triage_order_newest_first_and_follow_status_changes(activation_store: ActivationStore) -> None:
    rows = [activation_store.create(record(f"N-{i}", i)) for i in range(5)]
    assert ids(activation_store.list_activations().items) == ["N-4", "N-3", "N-2", "N-1", "N-0"]
    activation_store.replace(later(rows[1], status=Status.FAILED))
    activation_store.replace(later(rows[2], status=Status.FAILED, tenant_id=OTHER))
    activation_store.replace(later(rows[3], status=Status.SUCCEEDED))
    activation_store.replace(later(rows[0], status=Status.NEEDS_ATTENTION))
    # Triage order: needs a person first, newest first within each status; done last.
    assert ids(activation_store.list_activations().items) == ["N-0", "N-2", "N-1", "N-4", "N-3"]
    assert ids(activation_store.list_activations(status="queued").items) == ["N-4"]
    assert ids(activation_store.list_activations(status="failed").items) == ["N-2", "N-1"]
    assert ids(activation_store.list_activations(tenant_id=TENANT).items) == ["N-0", "N-1", "N-4", "N-3"]
    assert ids(activation_store.list_activations(tenant_id=TENANT, status="failed").items) == ["N-1"]
    (listed,) = activation_store.list_activations(status="failed", tenant_id=OTHER).items
    assert listed.status is Status.FAILED and listed.warnings == [{"code": "W"}]
    assert listed.tenant_id == OTHER and listed.contract_id == "C-N-2"
    assert listed.notice_json == "" and listed.raw_message is None  # the index holds the listed fields only


def test_triage_order_places_every_status() -> None:
    assert sorted(ix.TRIAGE_ORDER) == sorted(Status)
    assert ix.TRIAGE_ORDER[:2] == (Status.NEEDS_ATTENTION, Status.FAILED)
    assert [ix.rank(s) for s in ix.TRIAGE_ORDER] == sorted(ix.rank(s) for s in ix.TRIAGE_ORDER)


def test_the_summary_counts_every_status_and_moves_with_each_change(activation_store: ActivationStore) -> None:
    assert activation_store.summary().counts == ZEROS and activation_store.summary().exact
    rows = [activation_store.create(record(f"N-{i}", i)) for i in range(5)]
    running = activation_store.replace(later(rows[0], status=Status.RUNNING))
    activation_store.replace(later(running, 2, status=Status.SUCCEEDED))
    activation_store.replace(later(rows[1], status=Status.NEEDS_ATTENTION))
    summary = activation_store.summary()
    assert summary.counts == {**ZEROS, "queued": 3, "succeeded": 1, "needs_attention": 1}
    assert summary.total == 5 and summary.exact


def test_a_lease_renewal_touches_no_index_row(activation_store: ActivationStore, logged: CountingTable) -> None:
    row = activation_store.create(record("N-1", 0, status=Status.RUNNING, lease_owner="w1",
                                         lease_expires_at=T0 + timedelta(minutes=5)))
    before = activation_store.list_activations(status="running").items
    logged.reset()
    renewed = later(row, lease_expires_at=T0 + timedelta(minutes=10))
    activation_store.replace(renewed, previous=row)
    assert (logged.index_reads, logged.transactions, logged.row_reads) == (0, 0, 0)
    assert activation_store.list_activations(status="running").items == before
    # Without `previous` the store checks the index (one point read) and still writes nothing.
    logged.reset()
    activation_store.replace(later(activation_store.get("N-1") or row, 2))
    assert (logged.index_reads, logged.transactions) == (1, 0)


def test_a_status_change_is_one_transaction_and_two_point_reads(activation_store: ActivationStore,
                                                                  logged: CountingTable) -> None:
    row = activation_store.create(record("N-1", 0))
    assert (logged.index_reads, logged.transactions) == (1, 1)  # the counter; no pointer yet
    assert logged.row_reads == 0  # a new row: nothing can have been indexed from a later write
    logged.reset()
    activation_store.replace(later(row, status=Status.RUNNING), previous=row)
    assert (logged.index_reads, logged.transactions) == (2, 1)  # the pointer and the counter
    assert logged.row_reads == 1  # the row again, after the pointer: it, not a clock, says what is latest


def test_a_crash_before_the_index_write_is_repaired_by_the_next_write(
    activation_store: ActivationStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = activation_store.create(record("N-1", 0))
    with monkeypatch.context() as m:
        lose_index_writes(activation_store, m)
        running = activation_store.replace(later(row, status=Status.RUNNING), previous=row)
    assert activation_store.get("N-1") is not None  # the row, the truth, was written
    assert ids(activation_store.list_activations(status="queued").items) == ["N-1"]  # one change behind
    activation_store.replace(later(running, 2, status=Status.SUCCEEDED), previous=running)
    assert activation_store.list_activations(status="queued").items == []
    assert activation_store.list_activations(status="running").items == []
    assert ids(activation_store.list_activations(status="succeeded").items) == ["N-1"]
    assert activation_store.summary().counts == {**ZEROS, "succeeded": 1}


def test_repair_index_mends_a_finished_row_whose_last_index_write_was_lost(
    activation_store: ActivationStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = activation_store.create(record("N-1", 0))
    with monkeypatch.context() as m:
        lose_index_writes(activation_store, m)
        done = activation_store.replace(later(row, status=Status.SUCCEEDED), previous=row)
    assert activation_store.summary().counts["queued"] == 1
    activation_store.repair_index(done)
    assert ids(activation_store.list_activations(status="succeeded").items) == ["N-1"]
    assert activation_store.summary().counts == {**ZEROS, "succeeded": 1}
    with monkeypatch.context() as m:
        lose_index_writes(activation_store, m)
        activation_store.repair_index(done)  # never raises: it is best effort by design


def test_an_index_write_older_than_the_one_indexed_is_ignored(activation_store: ActivationStore) -> None:
    row = activation_store.create(record("N-1", 0))
    newer = activation_store.replace(later(row, 5, status=Status.SUCCEEDED), previous=row)
    # A slower writer's index update for an earlier state arrives after the newer one.
    assert activation_store.sync_index(record_to_entity(later(row, 1, status=Status.RUNNING))) is False
    assert ids(activation_store.list_activations(status="succeeded").items) == ["N-1"]
    assert activation_store.summary().counts == {**ZEROS, "succeeded": 1}
    assert activation_store.sync_index(record_to_entity(newer)) is False  # already shown: nothing to write


def test_reindex_repairs_rows_left_behind_and_indexes_rows_from_before_the_index(
    activation_store: ActivationStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [activation_store.create(record(f"N-{i}", i)) for i in range(3)]
    with monkeypatch.context() as m:
        lose_index_writes(activation_store, m)
        activation_store.replace(later(rows[0], status=Status.FAILED), previous=rows[0])
    # A row an older version wrote by hand, with no index rows at all.
    activation_store._activations.create_entity(record_to_entity(record("OLD-1", -10, status=Status.SUCCEEDED)))
    assert "OLD-1" not in ids(activation_store.list_activations().items)
    assert activation_store.reindex() == 4
    assert activation_store.reindex() == 4  # idempotent
    assert ids(activation_store.list_activations(status="failed").items) == ["N-0"]
    assert ids(activation_store.list_activations(status="succeeded").items) == ["OLD-1"]
    assert activation_store.summary().counts == {**ZEROS, "failed": 1, "queued": 2, "succeeded": 1}


def test_a_table_with_rows_from_before_the_index_is_not_exact_until_reindexed(
    activation_store: ActivationStore,
) -> None:
    table = activation_store._activations
    table.delete_entity(ix.INDEX_PARTITION, ix.COMPLETE_ROW)
    table.create_entity(record_to_entity(record("OLD-1", 0)))
    activation_store.ensure_tables()  # a worker starting on an upgraded table
    assert activation_store.summary().exact is False
    activation_store.reindex()
    assert activation_store.summary().exact and activation_store.summary().total == 1


def test_search_by_notice_prefix_customer_prefix_and_contract_id(activation_store: ActivationStore) -> None:
    activation_store.create(record("ACT-1", 0, customer_name="Acme Trading K.K."))
    activation_store.create(record("ACT-2", 1, customer_name="Beta  Works", contract_id="K-77"))
    activation_store.create(record("ZED-9", 2, customer_name="Zed/Corp|x", contract_id=None))

    def q(text: str, **filters: Any) -> list[str]:
        return ids(activation_store.list_activations(q=text, **filters).items)

    assert q("ACT-") == ["ACT-2", "ACT-1"]
    assert q("acme") == ["ACT-1"]  # customer name prefix, case-insensitive
    assert q("beta works") == ["ACT-2"]  # spaces collapsed
    assert q("trading") == []  # a prefix, not a substring
    assert q("K-77") == ["ACT-2"] and q("K-7") == ["ACT-2"]  # contract id prefix
    assert q("zed/c") == ["ZED-9"] and q("zed/corp|") == ["ZED-9"]  # key characters are matched alike
    assert q("ACT", status="failed") == [] and q("ACT", tenant_id=OTHER) == []
    assert q("' or PartitionKey ne '") == []
    activation_store.create(record("in-1", 3, customer_name=None))
    activation_store.create(record("j-1", 4, customer_name=None))
    assert q("i") == ["in-1"]  # the index partition sorts among the notice ids: skipped, not listed
    assert q("in") == ["in-1"]
    (found,) = activation_store.search("in-1")
    assert found.notice_json == "" and found.raw_message is None  # the same listed fields as a list


def test_concurrent_status_changes_keep_the_counters_equal_to_the_rows(activation_store: ActivationStore) -> None:
    def one(i: int) -> None:
        row = activation_store.create(record(f"P-{i:03d}", i))
        activation_store.replace(later(row, status=Status.SUCCEEDED if i % 2 else Status.FAILED), previous=row)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, range(40)))
    summary = activation_store.summary()
    assert summary.counts == {**ZEROS, "succeeded": 20, "failed": 20}
    assert len(activation_store.list_activations(status="succeeded").items) == 20
    assert len(activation_store.list_activations(status="failed").items) == 20


def test_an_unreadable_index_row_is_skipped_not_a_broken_list(activation_store: ActivationStore) -> None:
    activation_store.create(record("N-1", 0))
    table = activation_store._activations
    for row_key, values in (("s|00needs_attention|000|bad", {"notice_id": "bad", "status": "no-such-status"}),
                            ("s|00needs_attention|001|none", {}),
                            ("s|01failed|002|odd", {"notice_id": "odd", "attempts": "many", "status": "failed"})):
        table.upsert_entity({"PartitionKey": ix.INDEX_PARTITION, "RowKey": row_key, **values})
    assert ids(activation_store.list_activations().items) == ["N-1"]


def test_the_api_lists_searches_and_summarises_from_the_index(activation_store: ActivationStore) -> None:
    api = ActivationApi(activation_store, lambda: None)  # type: ignore[arg-type, return-value]
    activation_store.create(record("ACT-1", 0))
    activation_store.create(record("ACT-2", 1, status=Status.FAILED, warnings=[]))
    listed = api.list({"q": "  ACT-  "})  # notice ids match as typed (keys are case-sensitive)
    assert listed.status == 200 and listed.body["continuation"] is None
    assert [(i["notice_id"], i["warnings_count"]) for i in listed.body["items"]] == [("ACT-2", 0), ("ACT-1", 1)]
    assert [i["notice_id"] for i in api.list({"q": "acme", "status": "failed"}).body["items"]] == ["ACT-2"]
    too_long = api.list({"q": "x" * 201})
    assert too_long.status == 400 and "q must be" in too_long.body["error"]["message"]
    page = api.list({"top": "1"})
    assert api.list({"q": "ACT", "continuation": page.body["continuation"]}).status == 400
    summary = api.summary()
    assert summary.status == 200
    assert summary.body == {"counts": {**ZEROS, "queued": 1, "failed": 1}, "total": 2, "exact": True}


def test_a_table_made_by_the_deployment_is_exact_from_its_first_activation(storage: StorageNames) -> None:
    """In Azure the Bicep creates the tables and nothing calls ensure_tables: the first write
    of a process on a table with no activation row marks it completely indexed."""
    from azure.data.tables import TableServiceClient

    with TableServiceClient.from_connection_string(storage.connection_string) as service:
        service.create_table(storage.activations_table)
        service.create_table(storage.events_table)
    store = ActivationStore.from_connection_string(storage.connection_string,
                                                   activations_table=storage.activations_table,
                                                   events_table=storage.events_table)
    try:
        assert store.summary().exact is False  # nothing has looked yet
        store.create(record("N-1", 0))
        assert store.summary().exact and store.summary().total == 1
    finally:
        store.close()


def test_a_table_with_older_rows_is_not_marked_exact_by_a_new_write(
    activation_store: ActivationStore, storage: StorageNames,
) -> None:
    table = activation_store._activations
    table.delete_entity(ix.INDEX_PARTITION, ix.COMPLETE_ROW)
    table.create_entity(record_to_entity(record("OLD-1", 0)))
    fresh = ActivationStore.from_connection_string(storage.connection_string,
                                                   activations_table=storage.activations_table,
                                                   events_table=storage.events_table)
    try:
        fresh.create(record("N-1", 1))
        assert fresh.summary().exact is False and fresh.summary().total == 1
    finally:
        fresh.close()


def test_a_search_narrowed_by_status_or_tenant_finds_matches_beyond_the_first_page_of_the_range(
    activation_store: ActivationStore,
) -> None:
    # Sixty activations of one customer; the one failed and the one of another tenant sort last by
    # customer row (notice id), contract row and notice id alike. Narrowing must not drop them.
    for i in range(60):
        activation_store.create(record(f"A-{i:03d}", i))
    failed = activation_store.get("A-059")
    assert failed is not None
    activation_store.replace(later(failed, status=Status.FAILED))
    moved = activation_store.get("A-058")
    assert moved is not None
    activation_store.replace(later(moved, tenant_id=OTHER))
    for text in ("acme", "C-A-0", "A-0"):  # customer prefix, contract prefix, notice-id prefix
        assert ids(activation_store.list_activations(q=text, status="failed", top=50).items) == ["A-059"], text
        assert ids(activation_store.list_activations(q=text, tenant_id=OTHER, top=50).items) == ["A-058"], text
        assert ids(activation_store.list_activations(q=text, status="queued", tenant_id=OTHER, top=5).items) == [
            "A-058"], text


@pytest.mark.parametrize("text", ["x\ud7ff", "\ud7ff", "x\U0010fffd", "\U0001f600", "x\uffef"])
def test_a_search_ending_in_any_character_is_a_range_the_service_accepts(
    activation_store: ActivationStore, text: str,
) -> None:
    activation_store.create(record("N-1", 0, customer_name="x\ud7ff tail", contract_id="\U0001f600-1"))
    activation_store.create(record("N-2", 1, customer_name="x\U0001f600", contract_id="\uffef"))
    activation_store.create(record("N-3", 2, customer_name="x\ue000", contract_id="x\uffefz"))
    expected = sorted(r.notice_id for r in (activation_store.get(n) for n in ("N-1", "N-2", "N-3"))
                      if r is not None and (ix.customer_part(r.customer_name).startswith(ix.customer_part(text))
                                            or ix.key_part(r.contract_id).startswith(ix.key_part(text))))
    assert sorted(ids(activation_store.list_activations(q=text).items)) == expected
    response = ActivationApi(activation_store, lambda: None).list({"q": text})  # type: ignore[arg-type, return-value]
    assert response.status == 200 and sorted(i["notice_id"] for i in response.body["items"]) == expected


def test_rows_an_older_version_wrote_by_hand_never_break_a_list_and_are_counted_as_listed(
    activation_store: ActivationStore,
) -> None:
    api = ActivationApi(activation_store, lambda: None)  # type: ignore[arg-type, return-value]
    table = activation_store._activations
    odd = {**record_to_entity(record("OLD-1", 0)), "attempts": "many", "series": "2", "propagation_waits": 1.5,
           "events_count": "n/a"}
    bare = {"PartitionKey": "OLD-2", "RowKey": "activation", "tenant_id": TENANT, "customer_name": "Acme old",
            "created_at": "2026-04-01T00:00:00Z"}  # no status, a date as text
    unknown = {**record_to_entity(record("OLD-3", 2)), "status": "Succeeded"}  # no such status
    for entity in (odd, bare, unknown):
        table.create_entity(entity)
    activation_store.create(record("NEW-1", 3))
    assert activation_store.reindex() == 3  # the row whose status is unknown is not indexed

    def shown(**params: str) -> list[str]:
        response = api.list(params)
        assert response.status == 200, response.body
        return sorted(item["notice_id"] for item in response.body["items"])

    everything = ["NEW-1", "OLD-1", "OLD-2"]
    assert shown() == shown(status="queued") == shown(tenant_id=TENANT) == everything
    assert shown(q="acme") == sorted([*shown(q="OLD"), "NEW-1"]) == everything
    summary = api.summary().body
    assert summary["counts"] == {**ZEROS, "queued": 3} and summary["total"] == 3
    (item,) = [i for i in api.list({"q": "OLD-1"}).body["items"]]
    assert (item["attempts"], item["series"]) == (0, 2)  # what cannot be read as a number reads as its default
    assert api.get("OLD-1").status == 200
    # Edited by hand after it was indexed: its index rows go, so the counts still equal the rows.
    table.upsert_entity({**record_to_entity(record("NEW-1", 3)), "status": "done"})
    assert shown(tenant_id=TENANT) == ["OLD-1", "OLD-2"]  # a tenant's page reads the rows: never a 500
    activation_store.reindex()
    assert shown() == shown(tenant_id=TENANT) == shown(q="acme") == ["OLD-1", "OLD-2"]
    assert api.summary().body["counts"] == {**ZEROS, "queued": 2}
    # Its own page names what cannot be read and the fix, rather than failing without a word.
    page = api.get("OLD-3")
    assert (page.status, page.body["error"]["code"]) == (500, "UNREADABLE_ROW")
    assert "'Succeeded'" in page.body["error"]["message"] and "correct it" in page.body["error"]["message"]


def test_an_index_row_deleted_by_hand_neither_stops_that_activation_s_index_nor_reindex(
    activation_store: ActivationStore,
) -> None:
    row = activation_store.create(record("N-1", 0))
    activation_store.create(record("N-2", 1))
    activation_store._activations.delete_entity(ix.INDEX_PARTITION, "c|acme trading k.k.|N-1")
    activation_store.replace(later(row, status=Status.FAILED, customer_name="Other"), previous=row)
    assert ids(activation_store.list_activations(status="failed").items) == ["N-1"]
    assert activation_store.summary().counts == {**ZEROS, "queued": 1, "failed": 1}
    assert ids(activation_store.list_activations(q="other").items) == ["N-1"]
    assert ids(activation_store.list_activations(q="acme").items) == ["N-2"]


def test_the_row_not_the_clock_says_which_write_is_shown(activation_store: ActivationStore) -> None:
    """Two writers' clocks disagree (another instance, a clock set back, one millisecond): the
    index follows the row, and the watchdog's repair and reindex mend what a clock got wrong."""
    row = activation_store.create(record("N-1", 0))
    running = activation_store.replace(later(row, 10, status=Status.RUNNING), previous=row)
    # Finished by an instance whose clock is two minutes behind the one that claimed it.
    done = activation_store.replace(later(running, -2, status=Status.SUCCEEDED), previous=running)
    assert ids(activation_store.list_activations(status="succeeded").items) == ["N-1"]
    assert activation_store.summary().counts == {**ZEROS, "succeeded": 1}
    # The claim's index write arrives last (a slow writer): the repair and reindex read the row.
    assert activation_store.sync_index(record_to_entity(running)) is False
    table = activation_store._activations
    pointer = table.get_entity(ix.INDEX_PARTITION, ix.pointer_key("N-1"))
    stale = ix.IndexState.of(record_to_entity(replace(running, updated_at=T0 + timedelta(hours=1))))
    table.submit_transaction([("delete", {"PartitionKey": ix.INDEX_PARTITION, "RowKey": k}) for k in
                              ix.pointer_keys(pointer) if k not in stale.keys]
                             + [("upsert", r) for r in stale.rows()] + [("upsert", stale.pointer())])
    activation_store.repair_index(done)
    assert ids(activation_store.list_activations(status="succeeded").items) == ["N-1"]
    assert activation_store.list_activations(status="running").items == []
    table.submit_transaction([("delete", {"PartitionKey": ix.INDEX_PARTITION, "RowKey": k}) for k in
                              ix.IndexState.of(record_to_entity(done)).keys if k not in stale.keys]
                             + [("upsert", r) for r in stale.rows()] + [("upsert", stale.pointer())])
    activation_store.reindex()
    assert ids(activation_store.list_activations().items) == ["N-1"]
    assert ids(activation_store.list_activations(status="succeeded").items) == ["N-1"]


def test_concurrent_writers_with_disagreeing_clocks_and_a_reindex_leave_the_index_equal_to_the_rows(
    activation_store: ActivationStore,
) -> None:
    """Six writers move four activations that share one counter row, each write stamped by a
    clock up to two minutes off, while reindex runs twice; then every list and count is the rows'."""
    shard = [n for n in (f"S-{i}" for i in range(300)) if ix.counter_key(n) == ix.counter_key("S-0")][:4]
    for minute, notice_id in enumerate(shard):
        activation_store.create(record(notice_id, minute))
    names = ["Acme Trading K.K.", "Beta Works", None]

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(12):
            notice_id = rng.choice(shard)
            while True:
                current = activation_store.get(notice_id)
                assert current is not None
                changed = replace(current, status=rng.choice(list(Status)), tenant_id=rng.choice([TENANT, OTHER]),
                                  customer_name=rng.choice(names),
                                  updated_at=T0 + timedelta(hours=1, seconds=rng.randint(-120, 120)))
                try:
                    activation_store.replace(changed, previous=current)
                    break
                except ConcurrentUpdate:
                    continue

    with ThreadPoolExecutor(max_workers=7) as pool:
        reindexing = pool.submit(lambda: [activation_store.reindex() for _ in range(2)])
        list(pool.map(writer, range(6)))
        reindexing.result()
    rows = {n: activation_store.get(n) for n in shard}
    for status in Status:
        assert sorted(ids(activation_store.list_activations(status=status.value).items)) == sorted(
            n for n, r in rows.items() if r is not None and r.status is status), status
    assert activation_store.summary().counts == {
        s.value: sum(1 for r in rows.values() if r is not None and r.status is s) for s in Status}
    for tenant in (TENANT, OTHER):
        assert sorted(ids(activation_store.list_activations(tenant_id=tenant).items)) == sorted(
            n for n, r in rows.items() if r is not None and r.tenant_id == tenant)
    assert sorted(ids(activation_store.list_activations(q="beta").items)) == sorted(
        n for n, r in rows.items() if r is not None and r.customer_name == "Beta Works")
    # updated_at is left out: a write that changes nothing a list shows but the time (a renewal, or
    # here a writer that drew the same state again) does not touch the index, by design.
    listed = {r.notice_id: r for r in activation_store.list_activations().items}
    assert {n: (r.status, r.tenant_id, r.customer_name) for n, r in listed.items()} == {
        n: (r.status, r.tenant_id, r.customer_name) for n, r in rows.items() if r is not None}


# A writer that says which state it is about to write, then writes it (row, then index), forever.
_WRITER = """
import json, sys
from dataclasses import replace
from datetime import timedelta
from shared.outcome import Status
from shared.store import ActivationStore
connection, activations, events, *notice_ids = sys.argv[1:]
store = ActivationStore.from_connection_string(connection, activations_table=activations, events_table=events)
table = store._activations
def update_entity(*args, **kwargs):  # says when the row is written, so the kill lands in the index write
    written = type(table).update_entity(table, *args, **kwargs)
    print(json.dumps(["written", args[0]["PartitionKey"]]), flush=True)
    return written
table.update_entity = update_entity
cycle = [Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.QUEUED, Status.NEEDS_ATTENTION, Status.DRIFTED]
for i in range(10**6):
    current = store.get(notice_ids[i % len(notice_ids)])
    changed = replace(current, status=cycle[i % len(cycle)], customer_name=f"Name {i}",
                      updated_at=current.updated_at + timedelta(seconds=1))
    print(json.dumps([changed.notice_id, changed.status.value]), flush=True)
    store.replace(changed, previous=current)
"""


@pytest.mark.parametrize("writes", [7, 18, 31])
def test_a_writer_killed_mid_write_leaves_the_index_at_most_one_change_behind(
    activation_store: ActivationStore, storage: StorageNames, writes: int,
) -> None:
    """SIGKILL at an arbitrary point of a write (row written, index not yet; or mid-transaction):
    the counts still equal the rows listed, at most the one activation in flight is one change
    behind, and the watchdog's repair_index brings it up to date."""
    notice_ids = ["K-1", "K-2", "K-3", "K-4", "K-5"]
    for minute, notice_id in enumerate(notice_ids):
        activation_store.create(record(notice_id, minute))
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, storage.connection_string, storage.activations_table, storage.events_table,
         *notice_ids], cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    intended: dict[str, list[str]] = {n: ["queued"] for n in notice_ids}
    try:
        assert child.stdout is not None
        written = 0
        for line in child.stdout:
            notice_id, status = json.loads(line)
            if notice_id != "written":
                intended[notice_id].append(status)
            else:
                written += 1
                if written == writes:  # this write's row is stored; its index write has just begun
                    child.send_signal(signal.SIGKILL)
                    break
        child.wait(timeout=30)
        for line in child.stdout:  # what it printed (and may have written) before the signal landed
            notice_id, status = json.loads(line)
            if notice_id != "written":
                intended[notice_id].append(status)
    finally:
        child.kill()
        child.wait(timeout=30)
    rows = {n: activation_store.get(n) for n in notice_ids}
    listed = {r.notice_id: r.status.value for r in activation_store.list_activations().items}
    summary = activation_store.summary()
    assert sorted(listed) == notice_ids and summary.total == len(notice_ids)
    assert summary.counts == {s.value: list(listed.values()).count(s.value) for s in Status}
    behind = [n for n in notice_ids if listed[n] != (rows[n] or record(n, 0)).status.value]
    assert len(behind) <= 1, (listed, rows)
    for notice_id in behind:  # the one in flight: its row is the last state asked for, the index the one before
        row = rows[notice_id]
        assert row is not None and row.status.value == intended[notice_id][-1]
        assert listed[notice_id] == intended[notice_id][-2]
    for row in rows.values():
        assert row is not None
        activation_store.repair_index(row)  # what the watchdog message does
    assert {r.notice_id: r.status for r in activation_store.list_activations().items} == {
        n: r.status for n, r in rows.items() if r is not None}
    assert sum(activation_store.summary().counts.values()) == len(notice_ids)


def test_indexing_never_writes_an_activation_row(activation_store: ActivationStore,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished activation's row is the truth of its run: reindex, repair_index and a sync of
    an older state read it, and write the index partition only."""
    row = activation_store.create(record("N-1", 0))
    with monkeypatch.context() as m:
        lose_index_writes(activation_store, m)
        activation_store.replace(later(row, status=Status.SUCCEEDED, finished_at=T0), previous=row)
    table = activation_store._activations
    table.create_entity({**record_to_entity(record("OLD-1", 1)), "attempts": "many"})
    table.create_entity({**record_to_entity(record("OLD-2", 2)), "status": "done"})

    def activation_rows() -> dict[str, Any]:
        return {e["PartitionKey"]: (e.metadata["etag"], dict(e)) for e in table.query_entities(
            "RowKey eq @rk", parameters={"rk": "activation"})}

    before = activation_rows()
    activation_store.reindex()
    done = activation_store.get("N-1")
    assert done is not None
    activation_store.repair_index(done)
    activation_store.sync_index(record_to_entity(row))
    assert activation_rows() == before
    assert ids(activation_store.list_activations(status="succeeded").items) == ["N-1"]


def test_pages_cross_status_boundaries_in_triage_order_and_forged_tokens_are_no_500(
    activation_store: ActivationStore,
) -> None:
    for i in range(23):
        row = activation_store.create(record(f"P-{i:02d}", i))
        activation_store.replace(later(row, status=list(Status)[i % len(Status)], tenant_id=TENANT if i % 3 else OTHER))
    api = ActivationApi(activation_store, lambda: None)  # type: ignore[arg-type, return-value]
    for params in ({}, {"tenant_id": TENANT}, {"status": "failed"}):
        whole = [i["notice_id"] for i in api.list({**params, "top": "200"}).body["items"]]
        assert len(whole) == (23 if not params else 15 if "tenant_id" in params else 3)
        for top in ("1", "4", "7"):
            paged: list[str] = []
            token: str | None = None
            while True:
                page = api.list({**params, "top": top, **({"continuation": token} if token else {})})
                assert page.status == 200
                paged += [i["notice_id"] for i in page.body["items"]]
                if (token := page.body["continuation"]) is None:
                    break
            assert paged == whole, (params, top)
    shown = set(ids(activation_store.list_activations(top=1000).items))
    forged = [("index:activations", "s|\n"), ("x\r\nX-Other: 1", "s|"), ("index:activations", "s|\u4e00"),
              ("\u00e9", None), ("index:activations", "s|" + "x" * 3000), ("N-1", "activation")]
    for pk, rk in forged:
        payload = {"v": 1, "q": _query_fingerprint("index", None, None), "pk": pk, "rk": rk}
        token = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        response = api.list({"top": "5", "continuation": token})
        assert response.status in (200, 400), (pk, rk)
        if response.status == 200:  # at worst another place in the same list, never another row
            assert {i["notice_id"] for i in response.body["items"]} <= shown


def test_a_burst_of_status_changes_on_one_counter_row_is_indexed_whole(
    activation_store: ActivationStore, caplog: pytest.LogCaptureFixture,
) -> None:
    """Sixteen activations that share a counter row change status at the same instant (a batch
    of claims): every one is indexed, none left a change behind for want of a retry."""
    shard = [n for n in (f"S-{i}" for i in range(1000)) if ix.counter_key(n) == ix.counter_key("S-0")][:16]
    rows = {n: activation_store.create(record(n, i)) for i, n in enumerate(shard)}
    start = threading.Barrier(len(shard))

    def claim(notice_id: str) -> None:
        start.wait()
        activation_store.replace(later(rows[notice_id], status=Status.RUNNING), previous=rows[notice_id])

    with ThreadPoolExecutor(max_workers=len(shard)) as pool:
        list(pool.map(claim, shard))
    assert not [r for r in caplog.records if "could not update the index rows" in r.getMessage()]
    assert sorted(ids(activation_store.list_activations(status="running").items)) == sorted(shard)
    assert activation_store.summary().counts == {**ZEROS, "running": len(shard)}


def test_a_q_with_odata_syntax_is_only_text(activation_store: ActivationStore) -> None:
    activation_store.create(record("N-1", 0, customer_name="O'Brien & Sons", contract_id="K' or 1 eq 1"))
    activation_store.create(record("N-2", 1, customer_name="Other"))
    api = ActivationApi(activation_store, lambda: None)  # type: ignore[arg-type, return-value]
    expected = {"o'brien": ["N-1"], "O'Brien & S": ["N-1"], "K' or 1 eq 1": ["N-1"], "' or RowKey ne '": [],
                "@pk": [], "@lo x @hi": [], "$filter=RowKey ne ''": [], "N-1 or PartitionKey gt ''": [],
                "%27": [], "\x00": [], "index:": [], "s|0": [], "~count": [], "@N-1": []}
    for q, notice_ids in expected.items():
        response = api.list({"q": q})
        assert response.status == 200, q
        assert [i["notice_id"] for i in response.body["items"]] == notice_ids, q
        assert api.list({"q": q, "status": "failed"}).body["items"] == [], q


def test_reindex_drops_the_index_rows_of_an_activation_row_deleted_by_hand(activation_store: ActivationStore) -> None:
    activation_store.create(record("N-1", 0))
    row = activation_store.create(record("N-2", 1))
    activation_store.replace(later(row, status=Status.FAILED), previous=row)
    activation_store._activations.delete_entity("N-2", "activation")  # an operator's clean-up in Storage Explorer
    assert ids(activation_store.list_activations().items) == ["N-2", "N-1"]  # listed until reindex
    activation_store.reindex()
    assert ids(activation_store.list_activations().items) == ["N-1"]
    assert activation_store.list_activations(tenant_id=TENANT, status="failed").items == []
    assert activation_store.summary().counts == {**ZEROS, "queued": 1}
    assert [e["RowKey"] for e in activation_store._activations.query_entities(
        "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
        parameters={"pk": ix.INDEX_PARTITION, "lo": "@", "hi": "A"})] == ["@N-1"]
