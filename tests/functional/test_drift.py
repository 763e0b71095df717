"""Drift over real HTTPS (simulator) and Azurite: an admin's edit after success is found and repaired.

An activation succeeds through the queue worker; an admin then edits one of its connectors
with the same REST API an admin's PowerShell uses. The drift check (the API's function, as
`POST /api/drift` calls it) marks the activation drifted, naming the parameter, and writes
nothing to Exchange: the simulator's write log is the proof. With DRIFT_REPAIR the re-provision
is a run like any other and the activation is succeeded again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from exosim import Simulator
from shared.api import ActivationApi
from shared.auth import MsalTokenProvider
from shared.drift import DriftChecker, client_factory_from_settings
from shared.exchange import ExchangeAdminClient
from shared.provisioning import ProvisioningEngine
from shared.queueing import ActivationQueue
from shared.settings import Settings
from shared.store import ActivationStore
from shared.worker import Worker
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

TENANT = "7a1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4c"
MG_NAME = "MAILGATESΣ 送信コネクタ"
NOTICE: dict[str, Any] = {
    "notice_id": "ACT-D-1", "tenant_id": TENANT, "services": ["mailgates", "enterprise_audit"],
    "journal_report_address": "jr-1@cs-365.cybermail.jp", "mx_host": "mgf.cybermail.jp",
    "validation_recipient": "adm@example.com",
}


@pytest.fixture
def product(settings: Settings, storage: StorageNames, activation_store: ActivationStore,
            activation_queue: ActivationQueue, token_provider: MsalTokenProvider
            ) -> Callable[..., tuple[Worker, ActivationApi]]:
    def build(**overrides: Any) -> tuple[Worker, ActivationApi]:
        worker_settings = dataclasses.replace(
            settings, activation_queue=storage.queue, activations_table=storage.activations_table,
            events_table=storage.events_table, exo_call_retries=0, **overrides)
        engine = ProvisioningEngine(worker_settings, token_provider=token_provider)
        checkers: list[DriftChecker] = []
        worker = Worker(worker_settings, store=activation_store, queue=activation_queue,
                        engine_factory=lambda: engine, drift_factory=lambda: checkers[0])
        checker = DriftChecker(worker_settings, store=activation_store, worker=worker,
                               client_factory=client_factory_from_settings(worker_settings, token_provider))
        checkers.append(checker)
        return worker, ActivationApi(activation_store, lambda: worker, lambda: checker)
    return build


def deliver_all(worker: Worker, queue: ActivationQueue, *, idle_rounds: int = 40) -> list[str]:
    results: list[str] = []
    idle = 0
    while idle < idle_rounds:
        messages = queue.receive(max_messages=16, visibility_timeout=30)
        if not messages:
            idle += 1
            time.sleep(0.1)
            continue
        idle = 0
        for message in messages:
            results.append(worker.handle(message.content, dequeue_count=message.dequeue_count))
            queue.delete(message)
    return [r for r in results if r in ("succeeded", "failed", "needs_attention", "retry_scheduled")]


def admin_edits(settings: Settings, token_provider: MsalTokenProvider, changes: dict[str, Any]) -> None:
    """A customer's admin changes our MailGates connector (the admin center's Set-OutboundConnector)."""
    with ExchangeAdminClient(TENANT, credential=token_provider, endpoint=settings.exo_admin_api_url) as admin:
        admin.update_outbound_connector(MG_NAME, changes)


@pytest.fixture
def succeeded(product: Callable[..., tuple[Worker, ActivationApi]], activation_queue: ActivationQueue,
              simulator: Simulator) -> None:
    worker, api = product()
    assert api.submit(json.dumps(NOTICE).encode()).status == 202
    assert deliver_all(worker, activation_queue) == ["succeeded"]


def test_an_admins_tls_edit_marks_the_activation_drifted_naming_the_parameter_and_writes_nothing(
        succeeded: None, product: Callable[..., tuple[Worker, ActivationApi]], simulator: Simulator,
        settings: Settings, token_provider: MsalTokenProvider, activation_store: ActivationStore) -> None:
    before = activation_store.get("ACT-D-1")
    assert before is not None and before.status == "succeeded"
    admin_edits(settings, token_provider, {"TlsSettings": "EncryptionOnly"})
    simulator.reset_log()
    _, api = product()
    response = api.drift(json.dumps({"tenant_id": TENANT}).encode(), requested_by="ops@example.com")
    assert response.status == 202, response.body
    [check] = response.body["checks"]
    assert (check["notice_id"], check["result"], check["repair"]) == ("ACT-D-1", "drifted", None)
    assert check["differences"] == [{"connector": MG_NAME, "service": "mailgates", "parameter": "TlsSettings",
                                     "desired": "CertificateValidation", "actual": "EncryptionOnly"}]
    # Read-only: two listings (plain and test mode) and not a single write.
    assert simulator.writes(TENANT) == []
    assert simulator.calls(TENANT) == {"Get-OutboundConnector": 2}
    after = activation_store.get("ACT-D-1")
    assert after is not None and after.status == "drifted"
    # The last run's truth stays; the finding is added.
    assert (after.connectors, after.attempts, after.series, after.finished_at) == (
        before.connectors, before.attempts, before.series, before.finished_at)
    assert [w["code"] for w in after.warnings] == ["CONNECTOR_DRIFT"]
    doc = api.get("ACT-D-1").body
    [found] = [e for e in doc["events"] if e["kind"] == "drift.found"]
    assert found["data"]["requested_by"] == "ops@example.com"
    assert "TlsSettings" in found["message"] and "EncryptionOnly" in found["message"]


def test_our_connector_switched_into_test_mode_is_drift(
        succeeded: None, product: Callable[..., tuple[Worker, ActivationApi]], simulator: Simulator,
        settings: Settings, token_provider: MsalTokenProvider) -> None:
    admin_edits(settings, token_provider, {"TestMode": True})
    _, api = product()
    [check] = api.drift(json.dumps({"tenant_id": TENANT.upper()}).encode()).body["checks"]
    assert [(d["parameter"], d["desired"], d["actual"]) for d in check["differences"]] == [("TestMode", False, True)]


def test_no_drift_writes_nothing(succeeded: None, product: Callable[..., tuple[Worker, ActivationApi]],
                                 simulator: Simulator, activation_store: ActivationStore) -> None:
    before = activation_store.get("ACT-D-1")
    events = len(activation_store.list_events("ACT-D-1"))
    _, api = product()
    [check] = api.drift(json.dumps({"notice_id": "ACT-D-1"}).encode()).body["checks"]
    assert (check["result"], check["differences"]) == ("in_sync", [])
    after = activation_store.get("ACT-D-1")
    assert before is not None and after is not None and after.etag == before.etag
    assert len(activation_store.list_events("ACT-D-1")) == events


def test_with_drift_repair_the_activation_is_re_provisioned_and_succeeds_again(
        succeeded: None, product: Callable[..., tuple[Worker, ActivationApi]], simulator: Simulator,
        settings: Settings, token_provider: MsalTokenProvider, activation_store: ActivationStore,
        activation_queue: ActivationQueue) -> None:
    admin_edits(settings, token_provider, {"SmartHosts": ["mgs.cybermail.jp"]})
    worker, api = product(drift_repair=True)
    [check] = api.drift(json.dumps({"tenant_id": TENANT}).encode()).body["checks"]
    assert (check["result"], check["repair"]) == ("drifted", "queued")
    assert [d["parameter"] for d in check["differences"]] == ["SmartHosts"]
    assert deliver_all(worker, activation_queue) == ["succeeded"]
    record = activation_store.get("ACT-D-1")
    assert record is not None and (record.status, record.series, record.warnings) == ("succeeded", 2, [])
    [mg] = [c for c in simulator.connectors(TENANT) if c["Name"] == MG_NAME]
    assert mg["SmartHosts"] == ["mgf.cybermail.jp"]
    kinds = [e.kind for e in activation_store.list_events("ACT-D-1")]
    assert "drift.found" in kinds and "drift.repair" in kinds
    # Set right, the next check finds nothing.
    [again] = api.drift(json.dumps({"notice_id": "ACT-D-1"}).encode()).body["checks"]
    assert again["result"] == "in_sync"


def test_a_terminated_tenant_is_not_checked(
        succeeded: None, product: Callable[..., tuple[Worker, ActivationApi]], simulator: Simulator,
        activation_queue: ActivationQueue) -> None:
    worker, api = product()
    body = {"notice_id": "TRM-D-1", "tenant_id": TENANT, "services": ["mailgates", "enterprise_audit"],
            "action": "terminate"}
    assert api.submit(json.dumps(body).encode()).status == 202
    assert deliver_all(worker, activation_queue) == ["succeeded"]
    simulator.reset_log()
    [check] = api.drift(json.dumps({"tenant_id": TENANT}).encode()).body["checks"]
    assert (check["result"], check["notice_id"]) == ("skipped", "TRM-D-1")
    assert "termination" in check["detail"]
    assert simulator.calls(TENANT) == {}


def test_a_check_of_every_tenant_is_one_queued_message_per_tenant_run_by_the_queue_trigger(
        succeeded: None, product: Callable[..., tuple[Worker, ActivationApi]], simulator: Simulator,
        settings: Settings, token_provider: MsalTokenProvider, activation_store: ActivationStore,
        activation_queue: ActivationQueue) -> None:
    worker, api = product()
    other = {**NOTICE, "notice_id": "ACT-D-2"}  # a second activation of the same tenant: one check
    assert api.submit(json.dumps(other).encode()).status == 202
    assert deliver_all(worker, activation_queue) == ["succeeded"]
    admin_edits(settings, token_provider, {"TlsSettings": "EncryptionOnly"})
    simulator.reset_log()
    response = api.drift(b"", requested_by="ops@example.com")
    assert response.status == 202
    assert response.body == {"requested_by": "ops@example.com", "queued": 1, "checked": 0, "drifted": 0,
                             "checks": []}
    assert simulator.calls(TENANT) == {}  # queuing reads only the index
    [message] = activation_queue.receive(max_messages=5)
    assert json.loads(message.content) == {"kind": "drift-check", "tenant_id": TENANT,
                                           "requested_by": "ops@example.com"}
    # The queue trigger runs it as that tenant's check; the newest activation is the one marked.
    assert worker.handle(message.content, dequeue_count=1) == "drifted"
    activation_queue.delete(message)
    newest = activation_store.get("ACT-D-2")
    assert newest is not None and newest.status == "drifted"
    assert simulator.writes(TENANT) == [] and simulator.calls(TENANT) == {"Get-OutboundConnector": 2}
    [found] = [e for e in api.get("ACT-D-2").body["events"] if e["kind"] == "drift.found"]
    assert found["data"]["requested_by"] == "ops@example.com"
    # Delivered twice (at-least-once), the second check finds the same and changes nothing.
    before = activation_store.get("ACT-D-2")
    assert worker.handle(message.content, dequeue_count=2) == "drifted"
    after = activation_store.get("ACT-D-2")
    assert before is not None and after is not None and (after.status, after.warnings) == (
        before.status, before.warnings)


def test_a_drift_message_that_keeps_failing_is_logged_not_recorded_as_an_activation(
        product: Callable[..., tuple[Worker, ActivationApi]], activation_store: ActivationStore,
        caplog: pytest.LogCaptureFixture) -> None:
    worker, _ = product()
    body = json.dumps({"kind": "drift-check", "tenant_id": TENANT})
    with caplog.at_level("ERROR", logger="activation.worker"):
        assert worker.handle_poison(body, dequeue_count=5) == "poisoned"
    assert activation_store.list_activations().items == []
    assert any(TENANT in r.getMessage() and "next scheduled check" in r.getMessage() for r in caplog.records)
    # A malformed one is refused like a malformed retry envelope, and nothing is created either.
    assert worker.handle(json.dumps({"kind": "drift-check", "tenant_id": "nope"})) == "invalid_retry"
    assert activation_store.list_activations().items == []


@pytest.mark.parametrize("body", [b"[1]", b'{"tenant": "x"}', b'{"tenant_id": "nope"}', b"{",
                                  b'{"notice_id": "ACT-D-1", "tenant_id": "7a1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4c"}'])
def test_a_bad_drift_request_is_refused_naming_the_field(
        body: bytes, product: Callable[..., tuple[Worker, ActivationApi]]) -> None:
    _, api = product()
    response = api.drift(body)
    assert response.status == 400 and response.body["error"]["code"] == "BAD_REQUEST"


def test_the_command_line_checks_a_tenant_and_status_shows_desired_against_actual(
        succeeded: None, settings: Settings, token_provider: MsalTokenProvider, storage: StorageNames,
        simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from shared.cli import EXIT_OK, main

    for name, value in (("AzureWebJobsStorage", storage.connection_string), ("ACTIVATION_QUEUE", storage.queue),
                        ("ACTIVATIONS_TABLE", storage.activations_table), ("EVENTS_TABLE", storage.events_table)):
        monkeypatch.setenv(name, value)
    admin_edits(settings, token_provider, {"TlsSettings": "EncryptionOnly"})
    simulator.reset_log()

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        code = main(list(argv), stdin=io.StringIO(""), stdout=out, stderr=io.StringIO(), local_env=None)
        return code, out.getvalue()

    code, out = run("drift", "--tenant-id", TENANT)
    assert code == EXIT_OK, out
    assert "ACT-D-1  drifted" in out and "1 tenant(s) checked, 1 drifted" in out
    assert simulator.writes(TENANT) == []
    code, out = run("status", "ACT-D-1")
    assert code == EXIT_OK and "ACT-D-1  drifted" in out
    drift = out[out.index("drift found"):]
    assert f'{MG_NAME}: TlsSettings desired "CertificateValidation", actual "EncryptionOnly"' in drift


def test_the_command_line_queues_every_tenant_without_an_exchange_credential(
        succeeded: None, storage: StorageNames, activation_queue: ActivationQueue,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator's command line in Azure has storage roles but no Exchange credential."""
    import io

    from shared.cli import EXIT_OK, main

    for name in [n for n in os.environ if n.startswith("EXO_")]:
        monkeypatch.delenv(name)
    for name, value in (("AzureWebJobsStorage", storage.connection_string), ("ACTIVATION_QUEUE", storage.queue),
                        ("ACTIVATIONS_TABLE", storage.activations_table), ("EVENTS_TABLE", storage.events_table)):
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    code = main(["drift"], stdin=io.StringIO(""), stdout=out, stderr=err, local_env=None)
    assert (code, err.getvalue()) == (EXIT_OK, ""), out.getvalue()
    assert out.getvalue().startswith("1 tenant(s) queued for a drift check")
    [message] = activation_queue.receive(max_messages=5)
    assert json.loads(message.content) == {"kind": "drift-check", "tenant_id": TENANT,
                                           "requested_by": "command line"}
