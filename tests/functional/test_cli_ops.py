"""The operator's commands against real services: apply (simulator), submit/status/list/retry (Azurite)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from exosim import Simulator
from shared.cli import EXIT_FAILED, EXIT_INVALID, EXIT_NEEDS_ATTENTION, EXIT_OK, main
from shared.notice import parse_notice
from shared.provisioning import ProvisioningEngine
from shared.queueing import ActivationQueue
from shared.settings import Settings
from shared.store import ActivationStore
from shared.worker import Worker
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "both-cs365-mgf.json"
TENANT = json.loads(SAMPLE.read_text(encoding="utf-8"))["tenant_id"].lower()


def no_engine() -> ProvisioningEngine:
    raise AssertionError("these commands never provision")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ops_env(product_env: dict[str, str], storage: StorageNames, activation_store: ActivationStore,
            activation_queue: ActivationQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage settings for the commands, on this test's own (created) tables and queue."""
    monkeypatch.setenv("AzureWebJobsStorage", storage.connection_string)
    monkeypatch.setenv("ACTIVATION_QUEUE", storage.queue)
    monkeypatch.setenv("ACTIVATIONS_TABLE", storage.activations_table)
    monkeypatch.setenv("EVENTS_TABLE", storage.events_table)


def test_apply_prints_each_step_and_exits_0_when_it_succeeds(product_env: dict[str, str],
                                                             simulator: Simulator) -> None:
    code, out, err = run("apply", str(SAMPLE))
    assert (code, err) == (EXIT_OK, "")
    assert "New-OutboundConnector -> 200" in out
    assert "validation.passed" in out
    assert out.rstrip().splitlines()[-3].endswith(": succeeded")
    assert len(simulator.connectors(TENANT)) == 2


def test_apply_json_exits_3_when_a_human_must_act(product_env: dict[str, str], simulator: Simulator) -> None:
    simulator.configure_tenant(TENANT, permission_granted=False)
    code, out, _ = run("apply", str(SAMPLE), "--json")
    assert code == EXIT_NEEDS_ATTENTION
    outcome = json.loads(out)
    assert outcome["status"] == "needs_attention"
    assert outcome["error"]["code"] == "CONSENT_MISSING"
    assert "adminconsent" in outcome["error"]["hint_en"]


def test_apply_exits_4_when_retries_run_out(product_env: dict[str, str], simulator: Simulator) -> None:
    simulator.fail_next(TENANT, 100, "throttle", retry_after=1)
    code, out, _ = run("apply", str(SAMPLE), "--json", "--max-attempts", "2", "--max-wait", "5")
    assert code == EXIT_FAILED
    assert json.loads(out)["error"]["code"] == "THROTTLED"


def test_apply_exits_2_for_an_invalid_notice_without_calling_exchange(product_env: dict[str, str],
                                                                      simulator: Simulator, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"notice_id": "x", "tenant_id": TENANT, "services": ["mailgates"],
                               "mx_host": "smtp.evil.example", "validation_recipient": "a@example.com"}))
    code, _, err = run("apply", str(bad))
    assert code == EXIT_INVALID
    assert err.startswith("mx_host: host_not_allowed")
    assert simulator.log == []


def test_apply_reports_a_missing_setting_by_name(product_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXO_CLIENT_SECRET")
    code, out, _ = run("apply", str(SAMPLE), "--json")
    assert code == EXIT_FAILED
    error = json.loads(out)["error"]
    assert error["code"] == "CONFIG_INVALID" and "EXO_CLIENT_SECRET" in error["message"]


def test_submit_status_list_and_retry_work_on_the_stored_activation(
        ops_env: None, activation_store: ActivationStore, activation_queue: ActivationQueue) -> None:
    code, out, _ = run("submit", str(SAMPLE))
    assert code == EXIT_OK and "queued ACT-2026-0001" in out
    (message,) = activation_queue.receive(max_messages=1)
    assert json.loads(message.content)["notice_id"] == "ACT-2026-0001"  # plain JSON, no base64
    settings = Settings.from_env()
    worker = Worker(settings, store=activation_store, queue=activation_queue, engine_factory=no_engine)
    assert worker.accept(parse_notice(message.content)) is not None

    code, out, _ = run("status", "ACT-2026-0001")
    assert code == EXIT_OK and "queued" in out.splitlines()[0]
    code, out, _ = run("status", "ACT-2026-0001", "--json")
    assert json.loads(out)["events"][0]["kind"] == "received"
    code, out, _ = run("list", "--status", "queued", "--json")
    assert [i["notice_id"] for i in json.loads(out)["items"]] == ["ACT-2026-0001"]
    code, out, _ = run("retry", "ACT-2026-0001")
    assert code == EXIT_OK and "series 2" in out
    code, _, err = run("retry", "NOPE-1")
    assert code == EXIT_FAILED and "no activation" in err
    code, _, err = run("status", "NOPE-1")
    assert code == EXIT_FAILED and "no activation" in err
