"""Hostile notices over real HTTP and the real queue trigger of the local Functions runner.

Every notice in tests/hostile.py is POSTed (400 with field errors) and, where the queue can
carry it, queued for the trigger (a `rejected` record). Afterwards the list views, each
activation's detail and the status page still answer 200: one bad notice never takes the
operators' views down.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from localrun.host import LocalFunctionsHost
from shared import runtime
from tests.fixtures.localhost import FunctionsApi
from tests.hostile import hostile_notices

pytestmark = pytest.mark.e2e


def views_answer(api: FunctionsApi) -> list[dict[str, Any]]:
    """Every list view, every detail and the page answer 200 with content; the listed items."""
    items: list[dict[str, Any]] = []
    continuation: str | None = None
    while True:
        reply = api.get("/api/activations", params={"top": "200", **({"continuation": continuation}
                                                                      if continuation else {})})
        assert reply.status_code == 200, reply.text
        items += reply.json()["items"]
        continuation = reply.json()["continuation"]
        if not continuation:
            break
    assert api.get("/api/activations", params={"status": "rejected"}).status_code == 200
    for item in items:
        detail = api.get(f"/api/activations/{item['notice_id']}")
        assert detail.status_code == 200, (item["notice_id"], detail.text)
        assert detail.json()["notice_id"] == item["notice_id"]  # reachable by its URL
    page = api.get("/api/status")
    assert page.status_code == 200 and b"<script>" in page.content
    return items


def test_every_hostile_notice_is_a_400_over_http_and_a_rejected_record_over_the_queue(
    functions_api: FunctionsApi, local_host: LocalFunctionsHost,
) -> None:
    cases = hostile_notices()
    posted: dict[str, str] = {}
    for case in cases:
        reply = functions_api.post("/api/activations", data=case.body)
        assert reply.status_code == 400, (case.name, reply.status_code, reply.text)
        body = reply.json()
        assert case.field in {e["field"] for e in body["errors"]}, (case.name, body)
        assert body["status"] == "rejected"
        posted[case.name] = body["notice_id"]
        views_answer(functions_api)
    assert len(set(posted.values())) == len(cases)  # each kept as its own rejected record

    queued = [case for case in cases if case.queueable]
    before = {item["notice_id"] for item in views_answer(functions_api)}
    for case in queued:
        runtime.queue().send_notice(case.text)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and local_host.counters(runtime.queue().name).processed < len(queued):
        time.sleep(0.2)
    counters = local_host.counters(runtime.queue().name)
    assert (counters.processed, counters.failed, counters.poisoned) == (len(queued), 0, 0)
    items = views_answer(functions_api)
    assert all(item["status"] == "rejected" for item in items)
    # the queued copy of each notice is recorded on the row its POST made (same id, or the same
    # "rejected-<hash>" of the same text): no new rows, and one more rejection in each history
    assert {item["notice_id"] for item in items} == before
    assert all(item["error"]["code"] == "NOTICE_INVALID" for item in items)
    for case in queued:
        detail = functions_api.get(f"/api/activations/{posted[case.name]}").json()
        kinds = [e["kind"] for e in detail["events"]]
        assert kinds.count("notice.rejected") == 2, (case.name, kinds)
