"""Operators' routes in Azure mode (OPERATOR_AUTH=entra) and who is recorded as having asked.

The triggers of function_app.py are called with real HttpRequests against Azurite: App Service
Authentication itself is not here, so the tests play its part by setting (or not setting) the
X-MS-CLIENT-PRINCIPAL* headers it injects.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import function_app
from shared import runtime
from shared.outcome import Status
from shared.queueing import ActivationQueue
from shared.requester import FUNCTION_KEY
from shared.store import ActivationStore
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
NOTICE = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
OPERATOR = {"X-MS-CLIENT-PRINCIPAL-NAME": "taro@contoso.example",
            "X-MS-CLIENT-PRINCIPAL-ID": "0f3c9c2e-1111-4222-8333-444455556666"}


@pytest.fixture
def app_env(product_env: dict[str, str], storage: StorageNames, activation_store: ActivationStore,
            activation_queue: ActivationQueue, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AzureWebJobsStorage", storage.connection_string)
    monkeypatch.setenv("ACTIVATION_QUEUE", storage.queue)
    monkeypatch.setenv("ACTIVATIONS_TABLE", storage.activations_table)
    monkeypatch.setenv("EVENTS_TABLE", storage.events_table)
    runtime.reset()
    yield
    runtime.reset()


@pytest.fixture
def entra(app_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPERATOR_AUTH", "entra")
    runtime.reset()


def request(method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
            route: dict[str, str] | None = None) -> func.HttpRequest:
    data = b"" if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    return func.HttpRequest(method, f"https://func.example/api/{path}", body=data, headers=headers or {},
                            route_params=route or {})


def events(store: ActivationStore, notice_id: str, kind: str) -> list[dict[str, Any]]:
    return [e.data or {} for e in store.list_events(notice_id) if e.kind == kind]


def test_a_signed_in_submit_and_retry_record_the_operator(entra: None, activation_store: ActivationStore) -> None:
    notice = {**NOTICE, "notice_id": "ACT-WHO-1"}
    response = function_app.submit_activation(request("POST", "activations", body=notice, headers=OPERATOR))
    assert response.status_code == 202
    assert events(activation_store, "ACT-WHO-1", "received") == [
        {"content_hash": activation_store.get("ACT-WHO-1").content_hash,  # type: ignore[union-attr]
         "requested_by": "taro@contoso.example"}]

    response = function_app.retry_activation(request("POST", "activations/ACT-WHO-1/retry", headers=OPERATOR,
                                                     route={"notice_id": "ACT-WHO-1"}))
    assert response.status_code == 202
    assert [e["requested_by"] for e in events(activation_store, "ACT-WHO-1", "retry.requested")] == \
        ["taro@contoso.example"]


def test_automation_submits_with_its_key_and_is_recorded_as_the_function_key(
        entra: None, activation_store: ActivationStore) -> None:
    notice = {**NOTICE, "notice_id": "ACT-WHO-2"}
    response = function_app.submit_activation_with_key(request("POST", "automation/activations", body=notice))
    assert response.status_code == 202
    assert response.headers["Location"] == "/api/activations/ACT-WHO-2"
    assert [e["requested_by"] for e in events(activation_store, "ACT-WHO-2", "received")] == [FUNCTION_KEY]


@pytest.mark.parametrize(("trigger", "method", "path", "route"), [
    (function_app.submit_activation, "POST", "activations", {}),
    (function_app.list_activations, "GET", "activations", {}),
    (function_app.summary, "GET", "summary", {}),
    (function_app.get_activation, "GET", "activations/ACT-1", {"notice_id": "ACT-1"}),
    (function_app.retry_activation, "POST", "activations/ACT-1/retry", {"notice_id": "ACT-1"}),
    (function_app.status_page, "GET", "status", {}),
    (function_app.check_drift_now, "POST", "drift", {}),
])
def test_with_entra_the_operators_routes_refuse_a_call_that_did_not_sign_in(
        entra: None, trigger: Any, method: str, path: str, route: dict[str, str]) -> None:
    # A key alone does not open them: these routes are anonymous to the host, the sign-in is the lock.
    response = trigger(request(method, path, body=NOTICE if method == "POST" else None,
                               headers={"x-functions-key": "k"}, route=route))
    assert response.status_code == 401
    assert json.loads(response.get_body())["error"]["code"] == "SIGN_IN_REQUIRED"


def test_with_entra_a_signed_in_operator_reads_the_page_and_the_list(entra: None) -> None:
    assert function_app.status_page(request("GET", "status", headers=OPERATOR)).status_code == 200
    listed = function_app.list_activations(request("GET", "activations", headers=OPERATOR))
    assert listed.status_code == 200 and json.loads(listed.get_body())["items"] == []


def test_with_entra_a_signed_in_operator_reads_the_summary(entra: None) -> None:
    response = function_app.summary(request("GET", "summary", headers=OPERATOR))
    body = json.loads(response.get_body())
    assert response.status_code == 200
    assert set(body["counts"]) == {s.value for s in Status} and body["total"] == 0
    assert isinstance(body["exact"], bool)


def test_with_keys_principal_headers_are_not_believed(app_env: None, activation_store: ActivationStore) -> None:
    notice = {**NOTICE, "notice_id": "ACT-WHO-3"}
    response = function_app.submit_activation(request("POST", "activations", body=notice, headers=OPERATOR))
    assert response.status_code == 202
    assert [e["requested_by"] for e in events(activation_store, "ACT-WHO-3", "received")] == [FUNCTION_KEY]


def test_the_host_sees_the_auth_level_of_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    def levels() -> dict[str, str]:
        module = importlib.reload(function_app)
        return {fn.get_function_name(): str(fn.get_trigger().auth_level)
                for fn in module.app.get_functions() if fn.get_trigger().get_binding_name() == "httpTrigger"}

    try:
        monkeypatch.setenv("OPERATOR_AUTH", "entra")
        runtime.reset()
        entra_levels = levels()
        monkeypatch.setenv("OPERATOR_AUTH", "key")
        runtime.reset()
        key_levels = levels()
    finally:
        monkeypatch.delenv("OPERATOR_AUTH")
        runtime.reset()
        importlib.reload(function_app)
    operators = {"submit_activation", "list_activations", "get_activation", "retry_activation", "status_page",
                 "check_drift_now", "summary"}
    assert {name for name, level in entra_levels.items() if level.endswith("ANONYMOUS")} == operators | {"health"}
    assert entra_levels["submit_activation_with_key"].endswith("FUNCTION")
    # The status page is only a shell without data, so it needs no key in either mode.
    assert {name for name, level in key_levels.items() if level.endswith("ANONYMOUS")} == {"health", "status_page"}
