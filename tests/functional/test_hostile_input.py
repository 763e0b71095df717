"""Hostile input against the API and the worker on real Azurite: a clean rejection, never a broken record.

Each notice in tests/hostile.py once answered 500, or was stored in a way that broke every
later list view, or was accepted and then unreachable. Here each must give 400 with field
errors over the API and a `rejected` record over the queue, and every list and detail must
still answer with JSON that encodes. The history must show the newest events.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient

from shared import api as api_module
from shared.api import ActivationApi, ApiResponse
from shared.queueing import ActivationQueue
from shared.settings import Settings
from shared.store import ACTIVATION_ROW_KEY, ActivationStore, EventRecord
from shared.worker import Worker
from tests.fixtures.azurite import StorageNames
from tests.hostile import SAMPLE, Hostile, hostile_notices

pytestmark = pytest.mark.functional

CASES = hostile_notices()


@dataclasses.dataclass
class Parts:
    api: ActivationApi
    worker: Worker
    store: ActivationStore
    queue: ActivationQueue


@pytest.fixture
def parts(settings: Settings, storage: StorageNames, activation_store: ActivationStore,
          activation_queue: ActivationQueue) -> Iterator[Parts]:
    configured = dataclasses.replace(settings, activation_queue=storage.queue,
                                     activations_table=storage.activations_table, events_table=storage.events_table)

    def no_engine() -> object:
        raise AssertionError("a hostile notice must never reach provisioning")

    worker = Worker(configured, store=activation_store, queue=activation_queue,
                    engine_factory=no_engine)  # type: ignore[arg-type]
    yield Parts(ActivationApi(activation_store, lambda: worker), worker, activation_store, activation_queue)


def answered(response: ApiResponse, status: int = 200) -> dict[str, Any]:
    """The response's body, after checking its status and that it can be sent as UTF-8."""
    assert response.status == status, response.body
    decoded = json.loads(response.json().encode("utf-8"))
    assert isinstance(decoded, dict)
    return decoded


def every_view_answers(parts: Parts) -> list[dict[str, Any]]:
    """Every list view and every activation's detail answer 200; the listed items."""
    items = answered(parts.api.list({}))["items"]
    assert isinstance(items, list)
    for status in ("rejected", "queued"):
        answered(parts.api.list({"status": status}))
    for item in items:
        answered(parts.api.get(item["notice_id"]))
        if item["tenant_id"]:
            tenant = str(item["tenant_id"])
            if len(tenant) == 36:
                answered(parts.api.list({"tenant_id": tenant}))
    return items


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_notice_posted_is_400_with_its_field_and_breaks_no_view(parts: Parts, case: Hostile) -> None:
    body = answered(parts.api.submit(case.body), 400)
    errors = body["errors"]
    assert isinstance(errors, list)
    assert case.field in {e["field"] for e in errors}
    assert all(e["message"] and e["message_ja"] for e in errors)
    assert body["status"] == "rejected"
    parts.store.append_event(str(body["notice_id"]), kind="probe", message="after", attempt=0, series=1,
                             at=datetime.now(UTC))
    items = every_view_answers(parts)
    assert [i["status"] for i in items] == ["rejected"]
    detail = answered(parts.api.get(str(body["notice_id"])))
    assert detail["error"]["code"] == "NOTICE_INVALID"
    assert parts.queue.approximate_count() == 0  # nothing was queued for provisioning
    # the evidence is kept: the exact bytes that arrived
    assert parts.store.raw_message_bytes(str(body["notice_id"])) == case.body


@pytest.mark.parametrize("case", [c for c in CASES if c.queueable], ids=[c.name for c in CASES if c.queueable])
def test_a_hostile_notice_on_the_queue_is_recorded_rejected_and_breaks_no_view(parts: Parts, case: Hostile) -> None:
    parts.queue.send_notice(case.text)
    (message,) = parts.queue.receive(max_messages=1)
    assert parts.worker.handle(message.content, dequeue_count=message.dequeue_count) == "rejected"
    parts.queue.delete(message)
    items = every_view_answers(parts)
    assert len(items) == 1 and items[0]["status"] == "rejected"
    error = items[0]["error"]
    assert isinstance(error, dict) and error["code"] == "NOTICE_INVALID"
    assert case.field in {e["field"] for e in error["errors"]}


def test_a_row_an_older_version_stored_with_characters_that_are_not_text_breaks_no_view(
    parts: Parts, storage: StorageNames,
) -> None:
    with TableClient.from_connection_string(storage.connection_string, storage.activations_table) as table:
        table.create_entity({"PartitionKey": "rejected-0123456789abcdef", "RowKey": ACTIVATION_ROW_KEY,
                             "status": "rejected", "tenant_id": "\ud800", "customer_name": "\uffff",
                             "error": '{"code": "NOTICE_INVALID", "errors": [{"field": "\\ud800"}]}'})
    with TableClient.from_connection_string(storage.connection_string, storage.events_table) as table:
        table.create_entity({"PartitionKey": "rejected-0123456789abcdef", "RowKey": "0001775001600000-1-0",
                             "kind": "notice.rejected", "message": "\udfff", "data": '{"raw": "\\udfff"}'})
    assert parts.worker.handle(json.dumps({**SAMPLE, "tenant_id": "bad"}).encode()) == "rejected"
    assert parts.store.reindex() == 2  # a row from before the index is listed once reindexed
    items = every_view_answers(parts)
    assert len(items) == 2
    detail = answered(parts.api.get("rejected-0123456789abcdef"))
    assert detail["customer_name"] == "\ufffd"
    assert [e["message"] for e in detail["events"]] == ["\ufffd"]


# -- history: the newest events, and how many there are ---------------------------------------------


def _history(store: ActivationStore, notice_id: str, n: int) -> None:
    start = datetime.now(UTC) + timedelta(seconds=1)  # after the rejection that created the row
    store.append_events(EventRecord(notice_id, "exchange.call", f"call {i}", at=start + timedelta(milliseconds=i))
                        for i in range(n))


def test_the_detail_shows_the_newest_events_of_a_long_history_with_an_exact_total(parts: Parts) -> None:
    assert parts.api.submit(json.dumps({**SAMPLE, "tenant_id": "bad"}).encode()).status == 400
    notice_id = SAMPLE["notice_id"]
    _history(parts.store, notice_id, 1234)
    parts.store.append_event(notice_id, kind="finished", message="the newest", attempt=1, series=1,
                             at=datetime.now(UTC) + timedelta(minutes=1))
    doc = answered(parts.api.get(notice_id))
    events = doc["events"]
    assert isinstance(events, list) and len(events) == 200
    assert events[-1]["message"] == "the newest"
    assert [e["message"] for e in events[-4:-1]] == ["call 1231", "call 1232", "call 1233"]
    assert (doc["events_total"], doc["events_total_exact"], doc["events_truncated"]) == (1236, True, True)


def test_a_history_longer_than_the_count_is_marked_as_a_lower_bound(parts: Parts,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_module, "MAX_EVENTS_COUNTED", 300)
    assert parts.api.submit(json.dumps({**SAMPLE, "tenant_id": "bad"}).encode()).status == 400
    _history(parts.store, SAMPLE["notice_id"], 400)
    doc = answered(parts.api.get(SAMPLE["notice_id"], events=50))
    assert [e["message"] for e in doc["events"]][-1] == "call 399"
    assert (doc["events_total"], doc["events_total_exact"], doc["events_truncated"]) == (300, False, True)


def test_a_short_history_is_whole_and_exact(parts: Parts) -> None:
    assert parts.api.submit(json.dumps({**SAMPLE, "tenant_id": "bad"}).encode()).status == 400
    doc = answered(parts.api.get(SAMPLE["notice_id"]))
    assert [e["kind"] for e in doc["events"]] == ["notice.rejected"]
    assert (doc["events_total"], doc["events_total_exact"], doc["events_truncated"]) == (1, True, False)


def test_a_rejected_notice_re_sent_valid_under_its_notice_id_is_listed_and_counted_as_the_valid_one(
    parts: Parts,
) -> None:
    """The rejected row's odd tenant id is indexed; the valid notice under the same notice_id
    replaces it, and no list, search or count shows the rejected state any more."""
    odd = {**SAMPLE, "notice_id": "RESENT-1", "tenant_id": "ＴＥＮＡＮＴ|/#?\u202e" + "x" * 80}
    assert parts.api.submit(json.dumps(odd).encode()).status == 400
    assert [i["notice_id"] for i in answered(parts.api.list({"status": "rejected"}))["items"]] == ["RESENT-1"]
    valid = {**SAMPLE, "notice_id": "RESENT-1"}
    assert parts.api.submit(json.dumps(valid).encode()).status == 202
    assert answered(parts.api.list({"status": "rejected"}))["items"] == []
    (item,) = answered(parts.api.list({}))["items"]
    assert (item["notice_id"], item["status"], item["tenant_id"]) == ("RESENT-1", "queued", SAMPLE["tenant_id"].lower())
    assert [i["notice_id"] for i in answered(parts.api.list({"tenant_id": SAMPLE["tenant_id"]}))["items"]] == [
        "RESENT-1"]
    assert [i["notice_id"] for i in answered(parts.api.list({"q": SAMPLE["customer_name"][:5]}))["items"]] == [
        "RESENT-1"]
    assert answered(parts.api.summary())["counts"]["queued"] == 1
    assert answered(parts.api.summary())["total"] == 1
    index_rows = [e["RowKey"] for e in parts.store._activations.query_entities(
        "PartitionKey eq @pk", parameters={"pk": "index:activations"})]
    assert not [k for k in index_rows if "ｔｅｎａｎｔ" in k or "rejected" in k]
    every_view_answers(parts)
