"""The store's pure parts: row <-> record, size limits, keys, event ids, continuation tokens."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.outcome import Status
from shared.settings import Settings, SettingsError
from shared.store import (
    ACTIVATION_ROW_KEY,
    MAX_STRING_UNITS,
    RAW_ORIGINAL_PROPERTY,
    ActivationRecord,
    EventRecord,
    InvalidContinuation,
    StorageConnection,
    _chunks,
    cap_text,
    check_key,
    decode_continuation,
    encode_continuation,
    entity_to_event,
    entity_to_record,
    event_key_time,
    event_to_entity,
    json_column,
    new_event_id,
    record_to_entity,
)
from shared.text import clean, decode_body, is_storable, restore_raw

T0 = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# ----------------------------------------------------------------- row <-> record


def test_a_record_survives_the_trip_to_a_row_and_back() -> None:
    rec = ActivationRecord(
        notice_id="N-1",
        tenant_id="11111111-2222-3333-4444-555555555555",
        status=Status.RETRY_SCHEDULED,
        attempts=3,
        series=2,
        content_hash="f" * 64,
        notice_json='{"notice_id":"N-1"}',
        raw_message="{}",
        services=("enterprise_audit", "mailgates"),
        customer_name="株式会社テスト",
        contract_id="C-1",
        connectors=[{"name": "MAILGATESΣ 送信コネクタ", "action": "update", "changed": ["SmartHosts"]}],
        warnings=[{"code": "FOREIGN_CONNECTOR"}],
        error={"code": "THROTTLED", "retryable": True},
        events_count=4,
        created_at=T0,
        updated_at=T0,
        started_at=T0,
        next_attempt_at=T0 + timedelta(minutes=2),
        lease_owner="w1",
        lease_expires_at=T0 + timedelta(minutes=10),
    )
    entity = record_to_entity(rec)
    assert entity["PartitionKey"] == "N-1" and entity["RowKey"] == ACTIVATION_ROW_KEY
    assert entity["services"] == "enterprise_audit,mailgates"
    assert json.loads(entity["connectors"])[0]["changed"] == ["SmartHosts"]
    assert entity_to_record(entity, etag="W/x") == rec


def test_none_fields_are_left_out_of_the_row() -> None:
    entity = record_to_entity(ActivationRecord(notice_id="N-1"))
    for name in ("error", "lease_owner", "lease_expires_at", "finished_at", "raw_message", "connectors"):
        assert name not in entity


def test_a_row_with_missing_or_hand_edited_columns_still_reads() -> None:
    rec = entity_to_record({"PartitionKey": "N-1", "RowKey": "activation", "error": "not json {"})
    assert rec.status == "queued" and rec.series == 1 and rec.connectors == []
    assert rec.error == {"unparsed": "not json {"}


def test_datetimes_are_stored_in_utc_and_naive_ones_are_refused() -> None:
    jst = timezone(timedelta(hours=9))
    rec = ActivationRecord(notice_id="N-1", created_at=datetime(2026, 4, 1, 18, 30, tzinfo=jst))
    assert rec.created_at == T0 and rec.created_at is not None and rec.created_at.tzinfo is UTC
    with pytest.raises(ValueError, match="timezone-aware"):
        ActivationRecord(notice_id="N-1", updated_at=datetime(2026, 4, 1))


def test_the_status_is_typed_stored_as_its_value_and_unknown_statuses_are_refused() -> None:
    entity = record_to_entity(ActivationRecord("N-1", status=Status.FAILED))
    assert type(entity["status"]) is str and entity["status"] == "failed"
    assert entity_to_record({**entity, "RowKey": "activation"}).status is Status.FAILED
    assert ActivationRecord("N-1", status="succeeded").status is Status.SUCCEEDED  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status 'done' is not one of"):
        ActivationRecord("N-1", status="done")  # type: ignore[arg-type]


def test_a_lease_is_live_only_while_running_held_and_unexpired() -> None:
    rec = ActivationRecord("N-1", status=Status.RUNNING, lease_owner="w1", lease_expires_at=T0)
    assert rec.lease_live(T0 - timedelta(seconds=1))
    assert not rec.lease_live(T0)
    assert not replace(rec, lease_owner=None).lease_live(T0 - timedelta(seconds=1))
    assert not replace(rec, status=Status.SUCCEEDED).lease_live(T0 - timedelta(seconds=1))


def test_a_notice_too_large_for_a_property_is_refused_rather_than_cut() -> None:
    with pytest.raises(ValueError, match="notice_json"):
        record_to_entity(ActivationRecord("N-1", notice_json="x" * (MAX_STRING_UNITS + 1)))


def test_an_event_survives_the_trip_to_a_row_and_back() -> None:
    event = EventRecord(
        "N-1", "plan", "2 changes", at=T0, attempt=1, series=1, data={"n": 2}, duration_ms=12.5,
        event_id=new_event_id(T0),
    )
    assert entity_to_event(event_to_entity(event)) == event


# ----------------------------------------------------------------- size limits


def test_long_text_is_cut_to_the_property_limit_with_a_marker() -> None:
    text = cap_text("😀" * 40_000)  # each emoji is two UTF-16 units
    assert _units(text) <= MAX_STRING_UNITS
    assert text.startswith("😀😀") and "truncated" in text
    assert "\ufffd" not in text  # no half surrogate pair at the cut
    assert cap_text("short") == "short"


def test_oversized_json_stays_valid_json_within_the_limit() -> None:
    value = {"code": "EXCHANGE_REJECTED", "message": "長" * 100_000, "tasks": [{"detail": "d" * 10_000}] * 3}
    text = json_column(value)
    assert _units(text) <= MAX_STRING_UNITS
    loaded = json.loads(text)
    assert loaded["code"] == "EXCHANGE_REJECTED" and "truncated" in loaded["message"]


def test_json_too_big_even_when_every_string_is_short_becomes_a_preview() -> None:
    text = json_column([{"i": i} for i in range(20_000)])
    assert _units(text) <= MAX_STRING_UNITS
    assert json.loads(text)["truncated"] is True
    # and such a row reads back as a list, the column's type
    assert entity_to_record({"PartitionKey": "N", "connectors": text}).connectors[0]["truncated"] is True


# ----------------------------------------------------------------- keys and event ids


@pytest.mark.parametrize("bad", ["", "a/b", "a\\b", "a#b", "a?b", "a\tb", "a\x7fb", "x" * 600])
def test_keys_table_storage_forbids_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_key(bad)


def test_event_ids_sort_newest_first_by_time_then_by_append_order() -> None:
    same_ms = [new_event_id(T0) for _ in range(1000)]
    assert same_ms == sorted(same_ms, reverse=True)
    assert len(set(same_ms)) == 1000
    later = new_event_id(T0 + timedelta(milliseconds=1))
    earlier = new_event_id(T0 - timedelta(milliseconds=1))
    assert later < same_ms[-1] and same_ms[0] < earlier


def test_new_event_ids_sort_after_every_id_of_the_older_ascending_scheme() -> None:
    legacy = f"{int(datetime(9999, 1, 1, tzinfo=UTC).timestamp() * 1000):015d}-0000000000-00000000"
    assert legacy < new_event_id(datetime(1970, 1, 1, tzinfo=UTC)) and legacy < new_event_id(T0)
    assert event_key_time(new_event_id(T0)) == T0
    assert event_key_time(f"{int(T0.timestamp() * 1000):015d}-0000000001-abcdef01") == T0
    assert event_key_time("hand-written") == datetime(1970, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------- the text boundary


HOSTILE = ["\ud800", "x\udfffy", "\uffff", "\ufffe", "\ufdd0", "\U0010ffff", "a\x00b", "\x01\x1f", "\x0b"]


@pytest.mark.parametrize("bad", HOSTILE)
def test_every_text_property_written_is_utf8_text_whatever_the_record_holds(bad: str) -> None:
    rec = ActivationRecord(
        notice_id="N-1", tenant_id=bad, customer_name=f"名前{bad}", contract_id=bad, raw_message=f'{{"k": "{bad}"}}',
        error={"code": "NOTICE_INVALID", "errors": [{"field": bad, "message": f"'{bad}' is not a field"}], bad: 1},
        connectors=[{"name": bad}], warnings=[{"code": bad}], lease_owner=bad,
    )
    entity = record_to_entity(rec)
    for name, value in entity.items():
        if isinstance(value, str):
            value.encode("utf-8")  # never raises
            assert is_storable(value), name
    back = entity_to_record(entity)
    assert back.error is not None and back.error["errors"][0]["field"] == clean(bad) != bad
    assert back.customer_name == "名前" + clean(bad)


def test_a_raw_message_that_is_not_text_keeps_its_exact_bytes_beside_a_readable_preview() -> None:
    arrived = b'{"notice_id": "N-1", "customer_name": "\xff\xfe\xed\xa0\x80"}'
    raw = decode_body(arrived)
    entity = record_to_entity(ActivationRecord(notice_id="N-1", raw_message=raw))
    assert entity["raw_message"] == '{"notice_id": "N-1", "customer_name": "\ufffd\ufffd\ufffd\ufffd\ufffd"}'
    assert restore_raw(entity["raw_message"], entity[RAW_ORIGINAL_PROPERTY]) == arrived
    # a storable message is kept as it is, with nothing beside it
    plain = record_to_entity(ActivationRecord(notice_id="N-1", raw_message='{"customer_name": "\\ud800"}'))
    assert plain["raw_message"] == '{"customer_name": "\\ud800"}' and RAW_ORIGINAL_PROPERTY not in plain


def test_a_row_written_by_an_older_version_with_a_lone_surrogate_reads_as_text() -> None:
    row = {"PartitionKey": "rejected-1", "RowKey": ACTIVATION_ROW_KEY, "status": "rejected", "tenant_id": "\ud800",
           "customer_name": "a\udc00", "error": '{"code": "NOTICE_INVALID", "errors": [{"field": "\\ud800"}]}'}
    rec = entity_to_record(row)
    assert (rec.tenant_id, rec.customer_name) == ("\ufffd", "a\ufffd")
    assert rec.error == {"code": "NOTICE_INVALID", "errors": [{"field": "\ufffd"}]}  # the JSON escape, too
    json.dumps(rec.error, ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("row", [
    {"PartitionKey": "N", "RowKey": "hand-written", "attempt": "n/a", "duration_ms": "fast", "data": "[[["},
    {"PartitionKey": "N", "RowKey": "r-x", "at": "yesterday", "series": 1e300, "message": "\ud800", "kind": None},
    {"PartitionKey": "N", "RowKey": "1700000000000-1-a", "data": '{"raw_message": "\\udfff"}', "duration_ms": "nan"},
])
def test_an_event_row_of_any_shape_reads_as_an_event(row: dict[str, object]) -> None:
    event = entity_to_event(row)
    assert event.event_id == row["RowKey"]
    json.dumps([event.message, event.kind, event.data], ensure_ascii=False).encode("utf-8")


def test_transactions_are_cut_at_100_rows_and_by_size() -> None:
    small = [{"PartitionKey": "N", "RowKey": str(i)} for i in range(250)]
    assert [len(c) for c in _chunks(small)] == [100, 100, 50]
    big = [{"PartitionKey": "N", "RowKey": str(i), "data": "x" * 60_000} for i in range(100)]
    chunks = list(_chunks(big))
    assert len(chunks) > 1 and sum(len(c) for c in chunks) == 100


# ----------------------------------------------------------------- continuation tokens


def test_a_continuation_token_is_url_safe_and_round_trips() -> None:
    sdk_token = {"PartitionKey": "1!8!TiAtMDA1MA--", "RowKey": "1!16!YWN0aXZhdGlvbg--"}
    token = encode_continuation(sdk_token, query="q1")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_continuation(token, query="q1") == sdk_token


def test_a_continuation_token_for_another_query_is_refused() -> None:
    token = encode_continuation({"PartitionKey": "a", "RowKey": None}, query="q1")
    with pytest.raises(InvalidContinuation, match="different query"):
        decode_continuation(token, query="q2")


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "a b",
        "A" * 5000,
        "",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _b64([1, 2]),
        _b64({"v": 2, "q": "", "pk": "a"}),
        _b64({"v": 1, "q": "", "pk": 5}),
        _b64({"v": 1, "q": "", "pk": None, "rk": None}),
    ],
    ids=["punctuation", "space", "too-long", "empty", "not-utf8", "list", "version", "number", "no-position"],
)
def test_a_garbage_continuation_token_is_a_value_error(token: str) -> None:
    with pytest.raises(ValueError, match="continuation token"):
        decode_continuation(token)


# ----------------------------------------------------------------- connection


def test_the_connection_follows_the_functions_host_conventions() -> None:
    conn = StorageConnection.from_environ(
        {"AzureWebJobsStorage__accountName": "stprov", "AzureWebJobsStorage__clientId": "cid"}
    )
    assert conn.table_endpoint() == "https://stprov.table.core.windows.net"
    assert conn.queue_endpoint() == "https://stprov.queue.core.windows.net"
    assert conn.client_id == "cid"
    explicit = StorageConnection.from_environ(
        {
            "AzureWebJobsStorage__tableServiceUri": "https://t.example/",
            "AzureWebJobsStorage__queueServiceUri": "https://q.example",
        }
    )
    assert (explicit.table_endpoint(), explicit.queue_endpoint()) == ("https://t.example", "https://q.example")


def test_no_storage_configured_names_the_variables_to_set() -> None:
    conn = StorageConnection.from_settings(Settings())
    with pytest.raises(SettingsError, match="AzureWebJobsStorage"):
        conn.table_endpoint()


def test_use_development_storage_is_explained_not_misread() -> None:
    conn = StorageConnection(connection_string="UseDevelopmentStorage=true")
    with pytest.raises(SettingsError, match=r"localrun\.azurite"):
        conn.table_service()


def test_the_connection_string_is_kept_out_of_reprs() -> None:
    assert "AccountKey" not in repr(StorageConnection(connection_string="AccountName=a;AccountKey=secret"))
