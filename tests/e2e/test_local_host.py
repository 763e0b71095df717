"""The Function App behind the local Functions runner, over real HTTP and real queues.

Every route of the operator API is called over HTTP with and without the function key, and
notices travel the way they do in Azure: POSTed or queued, picked up by the queue trigger,
provisioned in the Exchange simulator, looked up again over HTTP. The poison path runs for
real too: a message whose handler keeps failing is delivered maxDequeueCount times, moved to
`<queue>-poison`, and recorded as failed by the poison trigger, so nothing disappears.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exosim import Simulator
from localrun.host import LocalFunctionsHost
from shared import runtime
from shared.outcome import Status
from shared.store import ActivationRecord
from tests.fixtures.localhost import FAST_QUEUES, FINAL, FunctionsApi, write_host_json

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
INVALID = json.loads((ROOT / "samples" / "invalid" / "four-bad-fields.json").read_text(encoding="utf-8"))
KEYED_ROUTES = [
    ("GET", "/api/activations"),
    ("POST", "/api/activations"),
    ("GET", "/api/activations/E2E-1"),
    ("POST", "/api/activations/E2E-1/retry"),
]


def notice(**overrides: Any) -> dict[str, Any]:
    """The sample notice for a tenant of its own, under a notice_id no other test uses."""
    return {**SAMPLE, "notice_id": f"E2E-{uuid.uuid4().hex[:12]}", "tenant_id": str(uuid.uuid4()), **overrides}


def text(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- keys -------------------------------------------------------------------------------------------
def test_health_answers_without_a_key(functions_api: FunctionsApi) -> None:
    reply = functions_api.get("/api/health", key=None)
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "path"), KEYED_ROUTES)
def test_keyed_routes_refuse_a_missing_or_wrong_key(functions_api: FunctionsApi, method: str, path: str) -> None:
    body = text(notice(notice_id="E2E-1")).encode() if method == "POST" else None
    assert functions_api.call(method, path, key=None, data=body).status_code == 401
    assert functions_api.call(method, path, key="not-the-key", data=body).status_code == 401
    assert functions_api.call(method, path, key=None, params={"code": "not-the-key"}, data=body).status_code == 401
    assert functions_api.call(method, path, key=functions_api.host.function_key[:-1], data=body).status_code == 401
    # and the function never ran: nothing was accepted under that notice_id
    assert functions_api.get("/api/activations/E2E-1").status_code == 404


@pytest.mark.parametrize(("method", "path"), KEYED_ROUTES)
@pytest.mark.parametrize("key", ["header", "code"])
def test_keyed_routes_run_with_the_key_in_the_header_or_the_code_parameter(
    functions_api: FunctionsApi, method: str, path: str, key: str,
) -> None:
    body = text(notice(notice_id="E2E-1")).encode() if method == "POST" else None
    expected = {("GET", "/api/activations"): 200, ("POST", "/api/activations"): 202,
                ("GET", "/api/activations/E2E-1"): 404, ("POST", "/api/activations/E2E-1/retry"): 404}
    assert functions_api.call(method, path, key=key, data=body).status_code == expected[(method, path)]


def test_the_key_is_taken_from_the_header_or_the_code_parameter(functions_api: FunctionsApi) -> None:
    by_header = functions_api.get("/api/activations", key="header")
    by_code = functions_api.get("/api/activations", key="code")
    assert (by_header.status_code, by_code.status_code) == (200, 200)
    assert by_header.json() == by_code.json() == {"items": [], "continuation": None}
    assert functions_api.get("/api/activations/E2E-none", key="code").status_code == 404


@pytest.mark.parametrize("name", ["Code", "CODE", "cOdE"])
def test_the_code_parameter_is_read_in_any_letter_case_as_azure_does(functions_api: FunctionsApi, name: str) -> None:
    # ASP.NET Core's query collection ignores case, so the host finds `?CODE=` as `?code=`.
    key = functions_api.host.function_key
    assert functions_api.get("/api/activations", key=None, params={name: key}).status_code == 200
    assert functions_api.get("/api/activations", key=None, params={name: key[:-1]}).status_code == 401


def test_the_header_wins_over_the_code_parameter(functions_api: FunctionsApi) -> None:
    # The host reads the header when it is there and looks at the query only when it is not.
    key = functions_api.host.function_key
    assert functions_api.get("/api/activations", key="not-the-key", params={"code": key}).status_code == 401
    assert functions_api.get("/api/activations", key=None, params={"code": key},
                             headers={"x-functions-key": ""}).status_code == 401


# -- routing ----------------------------------------------------------------------------------------
def test_unknown_paths_and_methods_no_route_takes_are_404(functions_api: FunctionsApi) -> None:
    missing = functions_api.get("/api/activations/E2E-never-submitted")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    assert functions_api.get("/api/no-such-route").status_code == 404
    assert functions_api.get("/activations").status_code == 404  # the route prefix is required
    # The host matches the method as part of the route: a path served for GET and POST is
    # not found for DELETE (404 with no body, not 405), as Azure answers.
    for method, path in (("DELETE", "/api/activations"), ("PUT", "/api/activations/E2E-1"),
                         ("GET", "/api/activations/E2E-1/retry"), ("POST", "/api/health")):
        wrong = functions_api.call(method, path)
        assert (wrong.status_code, wrong.content) == (404, b""), (method, path)
        assert "Allow" not in wrong.headers


# -- submit and provision -----------------------------------------------------------------------------
def test_a_posted_notice_is_provisioned_by_the_queue_trigger(
    functions_api: FunctionsApi, local_host: LocalFunctionsHost, simulator: Simulator,
    local_env: dict[str, str],
) -> None:
    body = notice()
    reply = functions_api.post("/api/activations", data=text(body).encode())
    assert reply.status_code == 202
    location = reply.headers["Location"]
    assert location == f"/api/activations/{body['notice_id']}"
    assert reply.json()["status"] == "queued"

    doc = functions_api.wait_for(body["notice_id"])
    assert doc["status"] == "succeeded"
    assert doc["attempts"] == 1
    assert [(c["service"], c["action"], c["validation"]) for c in doc["connectors"]] == [
        ("enterprise_audit", "create", "passed"), ("mailgates", "create", "passed")]
    # The history is appended after the row (and its index rows) is written: wait for its end.
    again = functions_api.wait_for(body["notice_id"], lambda d: any(e["kind"] == "finished" for e in d["events"]))
    kinds = [e["kind"] for e in again["events"]]
    for expected in ("received", "claimed", "plan", "validation.passed", "finished"):
        assert expected in kinds
    assert len(simulator.connectors(body["tenant_id"])) == 2
    assert local_host.counters(local_env["ACTIVATION_QUEUE"]).processed == 1


def test_an_invalid_notice_is_refused_with_every_field_error_and_kept_as_rejected(
    functions_api: FunctionsApi,
) -> None:
    bad = {**INVALID, "notice_id": f"E2E-{uuid.uuid4().hex[:12]}"}
    reply = functions_api.post("/api/activations", data=text(bad).encode())
    assert reply.status_code == 400
    doc = reply.json()
    assert doc["status"] == "rejected"
    fields = {e["field"] for e in doc["errors"]}
    assert "tenant_id" in fields
    assert len(doc["errors"]) >= 4
    assert all(e["message"] and e["message_ja"] for e in doc["errors"])

    stored = functions_api.get(f"/api/activations/{bad['notice_id']}")
    assert stored.status_code == 200
    assert stored.json()["status"] == "rejected"
    assert stored.json()["error"]["code"] == "NOTICE_INVALID"


# -- listing ----------------------------------------------------------------------------------------
def test_listing_filters_by_status_and_tenant_and_pages_every_activation_once(functions_api: FunctionsApi) -> None:
    store = runtime.store()
    now = datetime.now(UTC)
    tenant_a, tenant_b = str(uuid.uuid4()), str(uuid.uuid4())
    rows = [("E2E-L1", tenant_a, "succeeded"), ("E2E-L2", tenant_a, "failed"), ("E2E-L3", tenant_b, "succeeded"),
            ("E2E-L4", tenant_b, "failed"), ("E2E-L5", tenant_a, "succeeded")]
    for notice_id, tenant, status in rows:
        store.create(ActivationRecord(notice_id=notice_id, tenant_id=tenant, status=Status(status), created_at=now,
                                      updated_at=now))

    seen: list[str] = []
    continuation: str | None = None
    pages = 0
    while True:
        params = {"top": "2", **({"continuation": continuation} if continuation else {})}
        page = functions_api.get("/api/activations", params=params)
        assert page.status_code == 200
        pages += 1
        seen.extend(item["notice_id"] for item in page.json()["items"])
        continuation = page.json()["continuation"]
        if not continuation:
            break
    assert pages == 3
    assert sorted(seen) == [r[0] for r in rows]  # each exactly once

    def ids(**params: str) -> list[str]:
        reply = functions_api.get("/api/activations", params=params)
        assert reply.status_code == 200
        return sorted(item["notice_id"] for item in reply.json()["items"])

    assert ids(status="failed") == ["E2E-L2", "E2E-L4"]
    assert ids(tenant_id=tenant_a.upper()) == ["E2E-L1", "E2E-L2", "E2E-L5"]
    assert ids(tenant_id=tenant_a, status="succeeded") == ["E2E-L1", "E2E-L5"]
    assert functions_api.get("/api/activations", params={"status": "finished"}).status_code == 400


# -- retry ------------------------------------------------------------------------------------------
def test_retry_of_an_unknown_activation_is_404(functions_api: FunctionsApi) -> None:
    reply = functions_api.post("/api/activations/E2E-unknown/retry")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "NOT_FOUND"


def test_retry_while_a_worker_holds_the_lease_is_409(functions_api: FunctionsApi) -> None:
    now = datetime.now(UTC)
    running = ActivationRecord(notice_id="E2E-running", tenant_id=str(uuid.uuid4()), status=Status.RUNNING, attempts=1,
                               notice_json=text(notice(notice_id="E2E-running")), created_at=now, updated_at=now,
                               started_at=now, lease_owner="another-worker:1",
                               lease_expires_at=now + timedelta(minutes=10))
    runtime.store().create(running)
    reply = functions_api.post("/api/activations/E2E-running/retry")
    assert reply.status_code == 409
    assert reply.json()["error"]["code"] == "CONFLICT"
    assert runtime.store().get("E2E-running").status == "running"  # type: ignore[union-attr]


def test_retry_of_a_finished_activation_runs_it_again(functions_api: FunctionsApi) -> None:
    body = notice()
    assert functions_api.post("/api/activations", data=text(body).encode()).status_code == 202
    assert functions_api.wait_for(body["notice_id"])["status"] == "succeeded"

    reply = functions_api.post(f"/api/activations/{body['notice_id']}/retry")
    assert reply.status_code == 202
    assert reply.headers["Location"] == f"/api/activations/{body['notice_id']}"
    assert (reply.json()["status"], reply.json()["series"]) == ("queued", 2)

    doc = functions_api.wait_for(body["notice_id"], lambda d: d["series"] == 2 and d["status"] == "succeeded")
    assert doc["attempts"] == 1
    assert "retry.requested" in [e["kind"] for e in doc["events"]]


# -- queue semantics --------------------------------------------------------------------------------
def test_a_message_that_keeps_failing_is_poisoned_and_recorded_as_failed(
    functions_api: FunctionsApi, local_host: LocalFunctionsHost, local_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = text(notice())
    notice_id = json.loads(body)["notice_id"]
    worker = runtime.worker()
    real_handle = worker.handle
    deliveries: list[int] = []

    def buggy_handle(message: bytes | str, *, dequeue_count: int = 1) -> str:
        raw = message.decode() if isinstance(message, bytes) else message
        if notice_id in raw:
            deliveries.append(dequeue_count)
            raise RuntimeError("a bug in the worker")
        return real_handle(message, dequeue_count=dequeue_count)

    monkeypatch.setattr(worker, "handle", buggy_handle)
    runtime.queue().send_notice(body)

    # The history is appended after the row (and its index rows) is written: wait for both.
    doc = functions_api.wait_for(notice_id, lambda d: d.get("status") in FINAL and any(
        e["kind"] == "poisoned" for e in d.get("events", [])), timeout=30)
    assert doc["status"] == "failed"
    assert doc["error"]["code"] == "UNHANDLED"
    assert deliveries == [1, 2]  # maxDequeueCount deliveries, then the poison queue
    queue = local_env["ACTIVATION_QUEUE"]
    # The poison trigger may record the activation before the runner has deleted the messages
    # and counted them (the move and the poison invocation each finish after their function).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (local_host.counters(queue).poisoned == 0
                                           or local_host.counters(f"{queue}-poison").processed == 0
                                           or runtime.queue().approximate_count() != 0):
        time.sleep(0.05)
    assert local_host.counters(queue).failed == 2
    assert local_host.counters(queue).poisoned == 1
    assert local_host.counters(f"{queue}-poison").processed == 1
    record = runtime.store().get(notice_id)
    assert record is not None and record.raw_message == body  # the message is kept whole
    poisoned = [e for e in doc["events"] if e["kind"] == "poisoned"]
    assert len(poisoned) == 1 and poisoned[0]["data"]["raw_message"] == body
    assert runtime.queue().approximate_count() == 0
    assert runtime.queue().poison.approximate_count() == 0


def test_a_slow_message_is_not_delivered_again_while_it_runs(
    functions_api: FunctionsApi, local_host: LocalFunctionsHost, monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = text(notice())
    notice_id = json.loads(body)["notice_id"]
    worker = runtime.worker()
    real_handle = worker.handle
    deliveries: list[int] = []
    slower_than_visibility = 2.5  # host.json visibilityTimeout is 1 s and polling every 0.5 s here

    def slow_handle(message: bytes | str, *, dequeue_count: int = 1) -> str:
        raw = message.decode() if isinstance(message, bytes) else message
        if notice_id in raw:
            deliveries.append(dequeue_count)
            time.sleep(slower_than_visibility)
        return real_handle(message, dequeue_count=dequeue_count)

    monkeypatch.setattr(worker, "handle", slow_handle)
    runtime.queue().send_notice(body)
    assert functions_api.wait_for(notice_id)["status"] == "succeeded"
    assert deliveries == [1]


def test_base64_message_encoding_is_decoded_before_the_function_sees_it(
    local_env: dict[str, str], tmp_path: Path,
) -> None:
    import function_app

    host_json = write_host_json(tmp_path, **FAST_QUEUES, messageEncoding="base64")
    body = notice()
    with LocalFunctionsHost(function_app.app, host_json=host_json, environ=os.environ, port=0) as host:
        assert host.config.queues.message_encoding == "base64"
        runtime.queue().send_notice(base64.b64encode(text(body).encode()).decode())
        api = FunctionsApi(host)
        assert api.wait_for(body["notice_id"])["status"] == "succeeded"


def test_stop_lets_a_running_message_finish(
    local_env: dict[str, str], local_host_json: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import function_app

    started = threading.Event()
    body = text(notice())
    notice_id = json.loads(body)["notice_id"]
    worker = runtime.worker()
    real_handle = worker.handle

    def slow_handle(message: bytes | str, *, dequeue_count: int = 1) -> str:
        started.set()
        time.sleep(1.0)
        return real_handle(message, dequeue_count=dequeue_count)

    monkeypatch.setattr(worker, "handle", slow_handle)
    host = LocalFunctionsHost(function_app.app, host_json=local_host_json, environ=os.environ, port=0,
                              drain_timeout=20).start()
    try:
        runtime.queue().send_notice(body)
        assert started.wait(10)
    finally:
        host.stop()
    assert host.counters(local_env["ACTIVATION_QUEUE"]).processed == 1
    record = runtime.store().get(notice_id)
    assert record is not None and record.status == "succeeded"
    assert runtime.queue().approximate_count() == 0
