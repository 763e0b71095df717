"""The records the alerts count, written by a real worker run (Azurite, simulator, DNS)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from exosim import Simulator
from shared.auth import MsalTokenProvider
from shared.provisioning import ProvisioningEngine
from shared.queueing import ActivationQueue
from shared.settings import Settings
from shared.store import ActivationStore
from shared.telemetry import (
    EXPORTED_LOGGER,
    OUTCOME_EVENT,
    POISON_DEPTH_EVENT,
    POISONED_EVENT,
    STEP_EVENT,
    install_log_context,
)
from shared.worker import Worker
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
TENANT = SAMPLE["tenant_id"].lower()


@pytest.fixture
def worker(settings: Settings, storage: StorageNames, activation_store: ActivationStore,
           activation_queue: ActivationQueue, token_provider: MsalTokenProvider) -> Worker:
    settings = dataclasses.replace(settings, activation_queue=storage.queue,
                                   activations_table=storage.activations_table, events_table=storage.events_table,
                                   exo_call_retries=0)
    engine = ProvisioningEngine(settings, token_provider=token_provider)
    return Worker(settings, store=activation_store, queue=activation_queue, engine_factory=lambda: engine)


class Exported(logging.Handler):
    """Stands in for the exporter's LoggingHandler: the product's records, with the activation context."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        install_log_context(self)  # as telemetry.configure does for the exporter's handler

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, event: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "event", None) == event]


@pytest.fixture
def exported() -> Iterator[Exported]:
    logger = logging.getLogger(EXPORTED_LOGGER)
    handler, level = Exported(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_an_activation_that_needs_a_person_is_one_outcome_record_with_status_and_code(
        worker: Worker, simulator: Simulator, exported: Exported) -> None:
    simulator.configure_tenant(TENANT, consent=False)
    assert worker.handle(json.dumps(SAMPLE, ensure_ascii=False)) == "needs_attention"
    [outcome] = exported.of(OUTCOME_EVENT)
    assert (outcome.status, outcome.code, outcome.attempt) == ("needs_attention", "APP_NOT_IN_TENANT", 1)  # type: ignore[attr-defined]
    assert outcome.notice_id == SAMPLE["notice_id"] and outcome.tenant_id == TENANT  # type: ignore[attr-defined]
    assert outcome.duration_ms is not None and outcome.levelno == logging.WARNING  # type: ignore[attr-defined]


def test_every_step_of_a_run_is_logged_with_the_activation_it_belongs_to(
        worker: Worker, simulator: Simulator, exported: Exported) -> None:
    assert worker.handle(json.dumps(SAMPLE, ensure_ascii=False)) == "succeeded"
    steps = exported.of(STEP_EVENT)
    assert steps, "the engine reported no step"
    for record in steps:
        assert (record.notice_id, record.tenant_id, record.attempt) == (SAMPLE["notice_id"], TENANT, 1)  # type: ignore[attr-defined]
        assert record.step  # type: ignore[attr-defined]
    assert any(getattr(r, "duration_ms", None) is not None for r in steps)
    [outcome] = exported.of(OUTCOME_EVENT)
    assert (outcome.status, outcome.code) == ("succeeded", "")  # type: ignore[attr-defined]


def test_a_poisoned_message_is_one_poison_record(worker: Worker, exported: Exported) -> None:
    assert worker.handle_poison(json.dumps(SAMPLE, ensure_ascii=False), dequeue_count=1) == "poisoned"
    [poisoned] = exported.of(POISONED_EVENT)
    assert (poisoned.notice_id, poisoned.code) == (SAMPLE["notice_id"], "UNHANDLED")  # type: ignore[attr-defined]


def test_the_poison_queue_is_sampled_for_the_depth_alert(
        product_env: dict[str, str], storage: StorageNames, activation_queue: ActivationQueue,
        exported: Exported, monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.functions.timer import TimerRequest

    import function_app
    from shared import runtime

    monkeypatch.setenv("AzureWebJobsStorage", storage.connection_string)
    monkeypatch.setenv("ACTIVATION_QUEUE", storage.queue)
    runtime.reset()
    try:
        timer = TimerRequest(past_due=False)
        function_app.measure_poison_queue(timer)
        activation_queue.poison.send_notice("{not json")
        activation_queue.poison.send_notice("{also not json")
        function_app.measure_poison_queue(timer)
    finally:
        runtime.reset()
    samples = exported.of(POISON_DEPTH_EVENT)
    assert [(r.queue, r.depth, r.levelno) for r in samples] == [  # type: ignore[attr-defined]
        (f"{storage.queue}-poison", 0, logging.INFO), (f"{storage.queue}-poison", 2, logging.WARNING)]
