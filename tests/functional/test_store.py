"""ActivationStore against a real Azurite: records, ETags, events, listing (claims are the worker's: test_worker.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.outcome import Status
from shared.store import (
    ACTIVATION_ROW_KEY,
    MAX_STRING_UNITS,
    ActivationRecord,
    ActivationStore,
    ConcurrentUpdate,
    EventRecord,
    InvalidContinuation,
    RecordExists,
    RecordNotFound,
)
from shared.text import decode_body
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

T0 = datetime(2026, 4, 1, 0, 0, 0, 123456, tzinfo=UTC)
TENANT = "11111111-2222-3333-4444-555555555555"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"


def record(notice_id: str = "N-1", **changes: object) -> ActivationRecord:
    base = ActivationRecord(
        notice_id=notice_id,
        tenant_id=TENANT,
        status=Status.QUEUED,
        content_hash="ab" * 32,
        notice_json=json.dumps({"notice_id": notice_id, "tenant_id": TENANT, "customer_name": "株式会社テスト"}),
        services=("enterprise_audit", "mailgates"),
        customer_name="株式会社テスト",
        contract_id="C-9",
        created_at=T0,
        updated_at=T0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# ----------------------------------------------------------------- records and ETags


def test_a_created_activation_reads_back_with_every_field(activation_store: ActivationStore) -> None:
    full = record(
        attempts=2,
        series=3,
        raw_message='{"notice_id": "N-1"}',
        connectors=[{"name": "Enterprise Audit送信コネクタ", "action": "create"}],
        warnings=[{"code": "FOREIGN_CONNECTOR", "domains": ["*.bank.example"]}],
        error={"code": "THROTTLED", "message": "スロットル", "retryable": True},
        events_count=7,
        started_at=T0 + timedelta(seconds=1),
        finished_at=T0 + timedelta(seconds=2),
        next_attempt_at=T0 + timedelta(minutes=5),
        lease_owner="worker-a",
        lease_expires_at=T0 + timedelta(minutes=10),
    )
    created = activation_store.create(full)
    got = activation_store.get("N-1")
    assert got == full
    assert got is not None and got.etag == created.etag and got.etag


def test_creating_an_activation_twice_raises_record_exists(activation_store: ActivationStore) -> None:
    activation_store.create(record())
    with pytest.raises(RecordExists):
        activation_store.create(record(status="running"))
    stored = activation_store.get("N-1")
    assert stored is not None and stored.status == "queued"


def test_an_unknown_or_unstorable_notice_id_reads_as_none(activation_store: ActivationStore) -> None:
    assert activation_store.get("never-sent") is None
    assert activation_store.get("a/b#c") is None
    assert activation_store.get("it's") is None


def test_a_missing_table_is_an_error_not_a_missing_activation(storage: StorageNames) -> None:
    store = ActivationStore.from_connection_string(
        storage.connection_string, activations_table=storage.activations_table, events_table=storage.events_table
    )
    with pytest.raises(ResourceNotFoundError):
        store.get("N-1")


def test_ensure_tables_can_run_again(activation_store: ActivationStore) -> None:
    activation_store.ensure_tables()
    activation_store.create(record())
    activation_store.ensure_tables()
    assert activation_store.get("N-1") is not None


def test_replace_with_a_stale_etag_raises_concurrent_update(activation_store: ActivationStore) -> None:
    first = activation_store.create(record())
    second = activation_store.replace(replace(first, status=Status.RUNNING))
    assert second.etag != first.etag
    with pytest.raises(ConcurrentUpdate):
        activation_store.replace(replace(first, status=Status.FAILED))
    stored = activation_store.get("N-1")
    assert stored is not None and stored.status == "running"


def test_replace_removes_fields_set_to_none(activation_store: ActivationStore) -> None:
    created = activation_store.create(record(error={"code": "THROTTLED"}, lease_owner="w", lease_expires_at=T0))
    activation_store.replace(replace(created, error=None, lease_owner=None, lease_expires_at=None))
    stored = activation_store.get("N-1")
    assert stored is not None
    assert (stored.error, stored.lease_owner, stored.lease_expires_at) == (None, None, None)


def test_replace_of_a_row_that_was_never_created_raises_record_not_found(activation_store: ActivationStore) -> None:
    with pytest.raises(RecordNotFound):
        activation_store.replace(replace(record(), etag='W/"datetime\'2026-01-01T00%3A00%3A00.0000000Z\'"'))


def test_replace_without_an_etag_is_refused(activation_store: ActivationStore) -> None:
    with pytest.raises(ValueError, match="etag"):
        activation_store.replace(record())


def test_an_oversized_raw_message_is_stored_cut_with_a_marker(activation_store: ActivationStore) -> None:
    activation_store.create(record(status="rejected", raw_message="毒" * 100_000))
    stored = activation_store.get("N-1")
    assert stored is not None and stored.raw_message is not None
    assert stored.raw_message.startswith("毒毒毒")
    assert "truncated" in stored.raw_message
    assert len(stored.raw_message) <= MAX_STRING_UNITS


def test_an_oversized_error_is_stored_as_valid_shorter_json(activation_store: ActivationStore) -> None:
    huge = {"code": "EXCHANGE_REJECTED", "message": "x" * 200_000, "retryable": False}
    activation_store.create(record(status="failed", error=huge))
    stored = activation_store.get("N-1")
    assert stored is not None and stored.error is not None
    assert stored.error["code"] == "EXCHANGE_REJECTED"
    assert stored.error["retryable"] is False
    assert "truncated" in stored.error["message"]


# ----------------------------------------------------------------- events


def test_events_in_the_same_millisecond_list_in_append_order(activation_store: ActivationStore) -> None:
    for i in range(20):
        activation_store.append_event("N-1", kind="step", message=f"step {i}", attempt=1, series=1, at=T0)
    events = activation_store.list_events("N-1")
    assert [e.message for e in events] == [f"step {i}" for i in range(20)]
    assert len({e.event_id for e in events}) == 20


def test_events_list_chronologically_whatever_order_they_were_appended(activation_store: ActivationStore) -> None:
    activation_store.append_event("N-1", kind="b", message="later", attempt=1, series=1, at=T0 + timedelta(seconds=1))
    activation_store.append_event("N-1", kind="a", message="earlier", attempt=1, series=1, at=T0)
    assert [e.message for e in activation_store.list_events("N-1")] == ["earlier", "later"]


def test_an_appended_event_reads_back_with_its_data(activation_store: ActivationStore) -> None:
    appended = activation_store.append_event(
        "N-1", kind="connector.created", message="作成しました", data={"name": "MAILGATESΣ 送信コネクタ", "n": 1},
        attempt=2, series=3, at=T0, duration_ms=41.5,
    )  # fmt: skip
    (stored,) = activation_store.list_events("N-1")
    assert stored == appended
    assert stored.data == {"name": "MAILGATESΣ 送信コネクタ", "n": 1}
    assert (stored.attempt, stored.series, stored.duration_ms) == (2, 3, 41.5)


def test_a_batch_of_250_events_is_stored_in_order_across_transactions(activation_store: ActivationStore) -> None:
    batch = [EventRecord("N-1", kind="step", message=f"m{i:03d}", at=T0, attempt=1, series=1) for i in range(250)]
    batch.append(EventRecord("N-2", kind="step", message="other notice", at=T0))
    stamped = activation_store.append_events(batch)
    assert all(e.event_id for e in stamped)
    assert [e.message for e in activation_store.list_events("N-1")] == [f"m{i:03d}" for i in range(250)]
    assert [e.message for e in activation_store.list_events("N-2")] == ["other notice"]


def test_list_events_stops_at_the_limit_and_ignores_other_notices(activation_store: ActivationStore) -> None:
    for i in range(5):
        activation_store.append_event("N-1", kind="k", message=str(i), attempt=1, series=1, at=T0)
    activation_store.append_event("N-10", kind="k", message="not mine", attempt=1, series=1, at=T0)
    assert [e.message for e in activation_store.list_events("N-1", limit=3)] == ["2", "3", "4"]  # the newest
    assert len(activation_store.list_events("N-1")) == 5
    assert activation_store.list_events("nobody") == []


# ----------------------------------------------------------------- listing


def _seed(store: ActivationStore, count: int, **changes: object) -> list[str]:
    ids = [f"N-{i:04d}" for i in range(count)]
    for notice_id in ids:
        store.create(record(notice_id, **changes))
    return ids


def test_paging_through_120_activations_returns_each_exactly_once(activation_store: ActivationStore) -> None:
    ids = _seed(activation_store, 120)
    # events live in another table but share partition keys: they must not appear
    activation_store.append_event("N-0001", kind="k", message="m", attempt=1, series=1, at=T0)
    seen: list[str] = []
    sizes: list[int] = []
    continuation: str | None = None
    for _ in range(10):
        page = activation_store.list_activations(top=50, continuation=continuation)
        seen.extend(item.notice_id for item in page.items)
        sizes.append(len(page.items))
        continuation = page.continuation
        if continuation is None:
            break
    assert sorted(seen) == ids
    assert len(seen) == len(set(seen))
    assert sizes == [50, 50, 20]


def test_listing_filters_by_status_and_by_tenant(activation_store: ActivationStore) -> None:
    _seed(activation_store, 3)
    activation_store.create(record("F-1", status="failed"))
    activation_store.create(record("F-2", status="failed", tenant_id=OTHER_TENANT))
    activation_store.create(record("S-1", status="succeeded", tenant_id=OTHER_TENANT))

    def ids(**filters: str) -> list[str]:
        return [r.notice_id for r in activation_store.list_activations(**filters).items]  # type: ignore[arg-type]

    assert ids(status="failed") == ["F-1", "F-2"]
    assert ids(tenant_id=OTHER_TENANT) == ["F-2", "S-1"]
    assert ids(status="failed", tenant_id=OTHER_TENANT) == ["F-2"]
    assert ids(status="needs_attention") == []


def test_a_tenant_id_with_quotes_cannot_widen_the_filter(activation_store: ActivationStore) -> None:
    _seed(activation_store, 3)
    hostile = f"{TENANT}' or tenant_id ne 'x"
    assert activation_store.list_activations(tenant_id=hostile).items == []
    # a quote that really is in a stored value still matches exactly
    activation_store.create(record("Q-1", tenant_id="o'brien"))
    assert [r.notice_id for r in activation_store.list_activations(tenant_id="o'brien").items] == ["Q-1"]


def test_filters_are_paged_and_the_token_stays_bound_to_its_query(activation_store: ActivationStore) -> None:
    _seed(activation_store, 7, status="failed")
    _seed_other = [record(f"Z-{i}", status="succeeded") for i in range(5)]
    for rec in _seed_other:
        activation_store.create(rec)
    first = activation_store.list_activations(status="failed", top=4)
    assert len(first.items) == 4 and first.continuation is not None
    rest = activation_store.list_activations(status="failed", top=4, continuation=first.continuation)
    assert len(rest.items) == 3 and rest.continuation is None
    with pytest.raises(InvalidContinuation, match="different query"):
        activation_store.list_activations(status="succeeded", continuation=first.continuation)


@pytest.mark.parametrize(
    "token",
    ["garbage", "!!!not-base64!!!", "eyJ2IjoxfQ", "bnVsbA", "A" * 5000, "", "e30"],
    ids=["word", "punctuation", "no-keys", "json-null", "too-long", "empty", "empty-object"],
)
def test_a_garbage_continuation_token_is_a_clear_value_error(activation_store: ActivationStore, token: str) -> None:
    with pytest.raises(ValueError, match="continuation token"):
        activation_store.list_activations(continuation=token)


def test_listing_rejects_an_unknown_status_and_a_silly_page_size(activation_store: ActivationStore) -> None:
    with pytest.raises(ValueError, match="status"):
        activation_store.list_activations(status="done")
    with pytest.raises(ValueError, match="top"):
        activation_store.list_activations(top=0)


def test_iterating_activations_walks_every_page(activation_store: ActivationStore) -> None:
    ids = _seed(activation_store, 12)
    assert [r.notice_id for r in activation_store.iter_activations()] == ids


# ----------------------------------------------------------------- history: the newest, and how many


def _append(store: ActivationStore, n: int, *, notice_id: str = "N-1") -> None:
    batch = [EventRecord(notice_id, kind="step", message=f"m{i:04d}", at=T0 + timedelta(milliseconds=i // 3),
                         attempt=1, series=1) for i in range(n)]
    store.append_events(batch)


def _legacy(storage: StorageNames, n: int, *, notice_id: str = "N-1") -> None:
    """Events as the older version wrote them: RowKeys ascending from the oldest."""
    from azure.data.tables import TableClient

    with TableClient.from_connection_string(storage.connection_string, storage.events_table) as table:
        for chunk in range(0, n, 100):
            table.submit_transaction([("create", {
                "PartitionKey": notice_id,
                "RowKey": f"{int(T0.timestamp() * 1000) - 10_000 + i:015d}-{i:010d}-0000abcd",
                "kind": "old", "message": f"old{i:04d}", "attempt": 1, "series": 1,
                "at": T0 - timedelta(seconds=10) + timedelta(milliseconds=i),
            }) for i in range(chunk, min(n, chunk + 100))])


def test_history_shows_the_newest_events_of_a_long_history_and_counts_them_exactly(
    activation_store: ActivationStore,
) -> None:
    _append(activation_store, 1234)
    history = activation_store.history("N-1", newest=200, count_limit=5000)
    assert [e.message for e in history.events] == [f"m{i:04d}" for i in range(1034, 1234)]  # oldest first
    assert (history.total, history.total_exact, history.truncated) == (1234, True, True)
    everything = activation_store.history("N-1", newest=2000, count_limit=5000)
    assert len(everything.events) == 1234 and not everything.truncated


def test_history_beyond_the_count_limit_gives_a_lower_bound(activation_store: ActivationStore) -> None:
    _append(activation_store, 350)
    history = activation_store.history("N-1", newest=100, count_limit=300)
    assert [e.message for e in history.events] == [f"m{i:04d}" for i in range(250, 350)]
    assert (history.total, history.total_exact, history.truncated) == (300, False, True)


def test_history_in_the_older_key_scheme_still_shows_its_newest_events(
    activation_store: ActivationStore, storage: StorageNames,
) -> None:
    _legacy(storage, 450)
    history = activation_store.history("N-1", newest=50, count_limit=5000)
    assert [e.message for e in history.events] == [f"old{i:04d}" for i in range(400, 450)]
    assert (history.total, history.total_exact) == (450, True)
    # new events after an upgrade come after the old ones, and the newest are the new ones
    _append(activation_store, 30)
    mixed = activation_store.history("N-1", newest=50, count_limit=5000)
    assert [e.message for e in mixed.events] == [f"old{i:04d}" for i in range(430, 450)] + [
        f"m{i:04d}" for i in range(30)]
    assert (mixed.total, mixed.total_exact) == (480, True)
    assert [e.message for e in activation_store.list_events("N-1")][-31:-29] == ["old0449", "m0000"]
    assert activation_store.history("N-1", newest=10, count_limit=100).total_exact is False


# ----------------------------------------------------------------- rows that are not text


def test_a_row_with_characters_that_are_not_text_never_breaks_a_read_a_list_or_a_history(
    activation_store: ActivationStore, storage: StorageNames,
) -> None:
    from azure.data.tables import TableClient

    # as an older version stored them: straight from a decoded JSON escape
    with TableClient.from_connection_string(storage.connection_string, storage.activations_table) as table:
        table.create_entity({"PartitionKey": "rejected-old", "RowKey": ACTIVATION_ROW_KEY, "status": "rejected",
                             "tenant_id": "\ud800", "customer_name": "\uffff\x01",
                             "error": json.dumps({"code": "NOTICE_INVALID", "errors": [{"field": "\ud800"}]})})
    with TableClient.from_connection_string(storage.connection_string, storage.events_table) as table:
        table.create_entity({"PartitionKey": "rejected-old", "RowKey": "0001775001600000-0000000001-00000000",
                             "kind": "notice.rejected", "message": "'\udfff' is not a field",
                             "data": json.dumps({"errors": [{"field": "\udfff"}]}, ensure_ascii=False)
                             .replace("\udfff", "\\udfff")})
    activation_store.create(record("N-ok"))
    got = activation_store.get("rejected-old")
    assert got is not None and (got.tenant_id, got.customer_name) == ("\ufffd", "\ufffd\ufffd")
    assert [r.notice_id for r in activation_store.list_activations().items] == ["N-ok"]  # not indexed yet
    assert activation_store.reindex() == 2
    listed = activation_store.list_activations().items
    events = activation_store.history("rejected-old").events
    for value in ([r.tenant_id for r in listed], [r.error for r in listed], [(e.message, e.data) for e in events]):
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a response can always be written
    assert {r.notice_id for r in listed} == {"rejected-old", "N-ok"}


def test_the_exact_bytes_of_a_raw_message_that_was_not_text_can_be_read_back(activation_store: ActivationStore) -> None:
    arrived = b'{"notice_id": "\xc0\xaf", "customer_name": "\xed\xa0\x80"}'
    activation_store.create(record("N-raw", status="rejected", raw_message=decode_body(arrived)))
    stored = activation_store.get("N-raw")
    assert stored is not None
    assert stored.raw_message == '{"notice_id": "\ufffd\ufffd", "customer_name": "\ufffd\ufffd\ufffd"}'
    assert activation_store.raw_message_bytes("N-raw") == arrived
    activation_store.create(record("N-plain", raw_message='{"a": 1}'))
    assert activation_store.raw_message_bytes("N-plain") == b'{"a": 1}'
    assert activation_store.raw_message_bytes("N-1") is None
