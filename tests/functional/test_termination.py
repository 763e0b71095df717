"""Termination over real HTTPS (simulator), and through the queue worker with Azurite.

A contract that ends removes our connectors of the ended services and nothing else: MailGates'
`*` first, then Enterprise Audit's; a connector with our name and other routing stops it with
nothing removed; a replay writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from exosim import Simulator
from shared.auth import MsalTokenProvider
from shared.notice import ActivationNotice, parse_notice
from shared.outcome import Status
from shared.provisioning import ProvisioningEngine
from shared.queueing import ActivationQueue
from shared.settings import Settings
from shared.store import ActivationStore
from shared.worker import Worker
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

TENANT = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"
EA_NAME = "Enterprise Audit送信コネクタ"
MG_NAME = "MAILGATESΣ 送信コネクタ"
ACTIVATION: dict[str, Any] = {
    "notice_id": "ACT-L-1",
    "tenant_id": TENANT,
    "services": ["mailgates", "enterprise_audit"],
    "journal_report_address": "jr-1@cs-365.cybermail.jp",
    "mx_host": "mgf.cybermail.jp",
    "validation_recipient": "adm@example.com",
}
FOREIGN = {"Name": "Bank relay", "RecipientDomains": ["*.bank.example"], "UseMXRecord": False,
           "SmartHosts": ["relay.bank.example"]}


def terminate(*services: str, notice_id: str = "TRM-L-1") -> ActivationNotice:
    return parse_notice({"notice_id": notice_id, "tenant_id": TENANT, "services": list(services),
                         "action": "terminate"})


def writes(sim: Simulator) -> list[tuple[str, str]]:
    return [(w["cmdlet"], w["identity"]) for w in sim.writes(TENANT)]


def names(sim: Simulator) -> list[str]:
    return sorted(c["Name"] for c in sim.connectors(TENANT))


@pytest.fixture
def provisioned(simulator: Simulator, engine: ProvisioningEngine) -> Simulator:
    """A tenant with both connectors from an activation, and a foreign connector beside them."""
    simulator.seed_connector(TENANT, **FOREIGN)
    outcome = engine.run(parse_notice(ACTIVATION))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    simulator.reset_log()
    return simulator


def test_terminating_both_removes_mailgates_then_enterprise_audit_and_nothing_else(
        provisioned: Simulator, engine: ProvisioningEngine) -> None:
    outcome = engine.run(terminate("enterprise_audit", "mailgates"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert writes(provisioned) == [("Remove-OutboundConnector", MG_NAME), ("Remove-OutboundConnector", EA_NAME)]
    assert names(provisioned) == ["Bank relay"]
    assert [(c.service, c.action) for c in outcome.connectors] == [("mailgates", "removed"),
                                                                   ("enterprise_audit", "removed")]
    assert (outcome.action, outcome.writes) == ("terminate", 2)
    # Two listings (in and out of test mode), two removals; no accepted domains, SPF or validation.
    assert provisioned.calls(TENANT) == {"Get-OutboundConnector": 2, "Remove-OutboundConnector": 2}


def test_a_replayed_termination_writes_nothing(provisioned: Simulator, engine: ProvisioningEngine) -> None:
    engine.run(terminate("mailgates", "enterprise_audit"))
    provisioned.reset_log()
    outcome = engine.run(terminate("mailgates", "enterprise_audit"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert writes(provisioned) == [] and outcome.writes == 0
    assert [c.action for c in outcome.connectors] == ["absent", "absent"]


def test_ending_mailgates_only_keeps_enterprise_audit(provisioned: Simulator, engine: ProvisioningEngine) -> None:
    outcome = engine.run(terminate("mailgates"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert writes(provisioned) == [("Remove-OutboundConnector", MG_NAME)]
    assert names(provisioned) == sorted(["Bank relay", EA_NAME])
    assert [(c.service, c.action) for c in outcome.connectors] == [("mailgates", "removed")]


def test_a_connector_with_our_name_routed_off_the_allow_list_stops_it_with_nothing_removed(
        simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.configure_tenant(TENANT, connectors=[
        {"Name": MG_NAME, "RecipientDomains": ["*"], "UseMXRecord": False, "SmartHosts": ["smtp.contoso.example"]},
        {"Name": EA_NAME, "RecipientDomains": ["*.cs-365.cybermail.jp"], "UseMXRecord": True},
    ])
    outcome = engine.run(terminate("mailgates", "enterprise_audit"))
    assert outcome.status is Status.NEEDS_ATTENTION
    assert outcome.error is not None and outcome.error["code"] == "CONNECTOR_NOT_OURS"
    assert "smtp.contoso.example" in outcome.error["message"] and MG_NAME in outcome.error["hint_en"]
    assert writes(simulator) == []
    assert names(simulator) == sorted([EA_NAME, MG_NAME])


def test_our_connector_in_test_mode_is_found_and_removed(simulator: Simulator, engine: ProvisioningEngine) -> None:
    simulator.seed_connector(TENANT, Name=MG_NAME, RecipientDomains=["*"], UseMXRecord=False,
                             SmartHosts=["mgf.cybermail.jp"], TestMode=True)
    outcome = engine.run(terminate("mailgates"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert writes(simulator) == [("Remove-OutboundConnector", MG_NAME)]
    assert names(simulator) == []


def test_a_throttled_removal_is_retried_in_place(provisioned: Simulator, engine: ProvisioningEngine) -> None:
    provisioned.fail_next(TENANT, 1, "throttle", cmdlet="Remove-OutboundConnector", retry_after=1)
    outcome = engine.run(terminate("mailgates"))
    assert outcome.status is Status.SUCCEEDED, outcome.error
    assert [e.kind for e in outcome.events].count("exchange.retry") == 1
    assert writes(provisioned) == [("Remove-OutboundConnector", MG_NAME)]


# -- through the worker: the same records, claims and retries as activations ---------------------


@pytest.fixture
def worker(settings: Settings, storage: StorageNames, activation_store: ActivationStore,
           activation_queue: ActivationQueue, token_provider: MsalTokenProvider) -> Worker:
    worker_settings = dataclasses.replace(
        settings, activation_queue=storage.queue, activations_table=storage.activations_table,
        events_table=storage.events_table, retry_base_seconds=0.2, retry_max_seconds=1.0, max_attempts=4,
        exo_call_retries=0)
    engine = ProvisioningEngine(worker_settings, token_provider=token_provider)
    return Worker(worker_settings, store=activation_store, queue=activation_queue, engine_factory=lambda: engine)


def deliver_all(worker: Worker, queue: ActivationQueue, *, rounds: int = 40) -> list[str]:
    import time

    results: list[str] = []
    idle = 0
    for _ in range(rounds):
        messages = queue.receive(max_messages=16, visibility_timeout=30)
        if not messages:
            idle += 1
            if idle > 15:
                break
            time.sleep(0.1)
            continue
        idle = 0
        for message in messages:
            results.append(worker.handle(message.content, dequeue_count=message.dequeue_count))
            queue.delete(message)
    return results


def test_a_termination_on_the_queue_is_recorded_and_retried_like_an_activation(
        provisioned: Simulator, worker: Worker, activation_queue: ActivationQueue,
        activation_store: ActivationStore) -> None:
    provisioned.fail_next(TENANT, 1, "unavailable")
    body = json.dumps({"notice_id": "TRM-Q-1", "tenant_id": TENANT, "services": ["mailgates", "enterprise_audit"],
                       "action": "terminate"})
    activation_queue.send_notice(body)
    assert deliver_all(worker, activation_queue) == ["retry_scheduled", "succeeded"]
    record = activation_store.get("TRM-Q-1")
    assert record is not None and (record.status, record.attempts) == ("succeeded", 2)
    assert [(c["service"], c["action"]) for c in record.connectors] == [("mailgates", "removed"),
                                                                        ("enterprise_audit", "removed")]
    assert writes(provisioned) == [("Remove-OutboundConnector", MG_NAME), ("Remove-OutboundConnector", EA_NAME)]
    # The same notice delivered again is a duplicate of a finished record: nothing is written.
    provisioned.reset_log()
    activation_queue.send_notice(body)
    deliver_all(worker, activation_queue)
    assert writes(provisioned) == []
    again = activation_store.get("TRM-Q-1")
    assert again is not None and (again.status, again.attempts) == ("succeeded", 2)


def test_a_termination_posted_to_the_api_is_looked_up_like_an_activation(
        provisioned: Simulator, worker: Worker, activation_queue: ActivationQueue,
        activation_store: ActivationStore) -> None:
    from shared.api import ActivationApi

    api = ActivationApi(activation_store, lambda: worker)
    body = json.dumps({"notice_id": "TRM-A-1", "tenant_id": TENANT, "services": ["mailgates"],
                       "action": "terminate"}).encode()
    submitted = api.submit(body)
    assert (submitted.status, submitted.body["status"]) == (202, "queued")
    assert deliver_all(worker, activation_queue) == ["succeeded"]
    doc = api.get("TRM-A-1").body
    assert (doc["status"], doc["services"]) == ("succeeded", ["mailgates"])
    assert [(c["name"], c["action"]) for c in doc["connectors"]] == [(MG_NAME, "removed")]
    assert "connector.removed" in [e["kind"] for e in doc["events"]]
    assert sorted(c["Name"] for c in provisioned.connectors(TENANT)) == sorted(["Bank relay", EA_NAME])
