"""The operator's commands against real services: apply (simulator), submit/status/list/retry (Azurite)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exosim import Simulator
from localrun.azurite import connection_string
from localrun.stack import write_local_env
from shared.cli import EXIT_FAILED, EXIT_INVALID, EXIT_NEEDS_ATTENTION, EXIT_OK, main
from shared.index import TRIAGE_ORDER
from shared.notice import parse_notice
from shared.outcome import Status
from shared.provisioning import ProvisioningEngine
from shared.queueing import ActivationQueue
from shared.settings import Settings
from shared.store import ActivationRecord, ActivationStore
from shared.worker import Worker
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.functional

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "both-cs365-mgf.json"
TENANT = json.loads(SAMPLE.read_text(encoding="utf-8"))["tenant_id"].lower()


def no_engine() -> ProvisioningEngine:
    raise AssertionError("these commands never provision")


def run(*argv: str, local_env: Path | None = None) -> tuple[int, str, str]:
    """The command in this process; no local stack's file unless the test gives one."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdin=io.StringIO(""), stdout=out, stderr=err, local_env=local_env)
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


# -- what the operator sees ---------------------------------------------------------------------------

STORAGE_ENV = ("AzureWebJobsStorage", "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__tableServiceUri",
               "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__clientId")


def _record(notice_id: str, status: Status, **fields: Any) -> ActivationRecord:
    now = datetime.now(UTC)
    return ActivationRecord(notice_id=notice_id, tenant_id=TENANT, status=status, created_at=now, updated_at=now,
                            **fields)


def test_list_has_a_header_and_says_when_nothing_matched(ops_env: None, activation_store: ActivationStore) -> None:
    code, out, _ = run("list")
    assert (code, out) == (EXIT_OK, "No activations yet.\n")
    activation_store.create(_record("CLI-LIST-1", Status.SUCCEEDED, attempts=1))
    code, out, _ = run("list")
    header, row = out.splitlines()
    assert code == EXIT_OK
    assert header.split() == ["NOTICE_ID", "STATUS", "ATTEMPTS", "TENANT_ID", "ERROR"]
    assert row.split() == ["CLI-LIST-1", "succeeded", "1", TENANT]
    code, out, _ = run("list", "--status", "failed", "--tenant-id", TENANT)
    assert (code, out) == (EXIT_OK, f"No activations match with status=failed, tenant_id={TENANT}.\n")


def test_summary_counts_per_status_and_list_searches(ops_env: None, activation_store: ActivationStore) -> None:
    activation_store.create(_record("CLI-SUM-1", Status.SUCCEEDED, customer_name="Acme"))
    activation_store.create(_record("CLI-SUM-2", Status.FAILED, customer_name="Beta"))
    code, out, _ = run("summary")
    lines = dict(line.split()[:2] for line in out.splitlines())
    assert code == EXIT_OK and lines["succeeded"] == "1" and lines["failed"] == "1" and lines["total"] == "2"
    assert list(lines) == [*(s.value for s in TRIAGE_ORDER), "total"]  # the order operators triage in
    code, out, _ = run("summary", "--json")
    assert json.loads(out)["counts"]["queued"] == 0
    code, out, _ = run("list", "--q", "acme")
    assert code == EXIT_OK and [line.split()[0] for line in out.splitlines()[1:]] == ["CLI-SUM-1"]
    code, out, _ = run("reindex")
    assert (code, out) == (EXIT_OK, "indexed 2 activation(s)\n")


def test_status_shows_the_warnings_of_an_activation(ops_env: None, activation_store: ActivationStore) -> None:
    warning = {"code": "SPF_INCLUDE_MISSING", "domain": "contoso.example",
               "message": "the SPF record of contoso.example lacks include:spf.cybermail.jp\n\x1b[31mred"}
    activation_store.create(_record("CLI-WARN-1", Status.SUCCEEDED, warnings=[warning]))
    code, out, _ = run("status", "CLI-WARN-1")
    assert code == EXIT_OK
    (line,) = [line for line in out.splitlines() if "warning" in line]
    assert line.startswith("  warning SPF_INCLUDE_MISSING [contoso.example]: the SPF record of contoso.example")
    assert "\x1b" not in out  # stored text cannot send escape sequences to the terminal


@pytest.mark.parametrize("command", [("list",), ("status", "ACT-2026-0001"), ("retry", "ACT-2026-0001"),
                                     ("submit", str(SAMPLE))])
def test_missing_storage_is_one_line_naming_the_setting(command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    for name in STORAGE_ENV:
        monkeypatch.delenv(name, raising=False)
    code, out, err = run(*command, local_env=tmp_path / ".run" / "local.env")
    assert (code, out) == (EXIT_INVALID, "")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("configuration error: ") and "AzureWebJobsStorage" in err and "make run" in err


def test_unreachable_storage_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AzureWebJobsStorage", connection_string(queue_port=port, table_port=port, blob_port=port))
    code, out, err = run("list")
    assert (code, out) == (EXIT_FAILED, "")
    assert len(err.splitlines()) == 1 and err.startswith("storage error: ") and str(port) in err


@pytest.mark.parametrize("value", ["garbage", "AccountName=x;AccountKey", "AccountName=x;accountname=y;AccountKey=k2"])
def test_a_malformed_connection_string_is_one_line_that_does_not_echo_it(value: str, monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    # A stale or hand-edited .run/local.env, or a pasted fragment, used to end in the SDK's traceback.
    for name in STORAGE_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AzureWebJobsStorage", value)
    code, out, err = run("list", local_env=tmp_path / ".run" / "local.env")
    assert (code, out) == (EXIT_INVALID, "")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("configuration error: AzureWebJobsStorage ") and value not in err


def test_the_command_line_finds_the_local_stack_with_nothing_configured(
        storage: StorageNames, activation_store: ActivationStore, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    # given the file `make run` writes for its stack, and no setting in the environment
    for name in (*STORAGE_ENV, "ACTIVATION_QUEUE", "ACTIVATIONS_TABLE", "EVENTS_TABLE"):
        monkeypatch.delenv(name, raising=False)
    local_env = tmp_path / ".run" / "local.env"
    write_local_env(local_env, {"AzureWebJobsStorage": storage.connection_string, "ACTIVATION_QUEUE": storage.queue,
                                "ACTIVATIONS_TABLE": storage.activations_table, "EVENTS_TABLE": storage.events_table})
    activation_store.create(_record("CLI-LOCAL-1", Status.SUCCEEDED, attempts=1))
    # then list reads that stack's storage
    code, out, err = run("list", local_env=local_env)
    assert (code, err) == (EXIT_OK, "")
    assert out.splitlines()[1].split()[:2] == ["CLI-LOCAL-1", "succeeded"]
    # and when that stack is gone, the error says where the settings came from
    write_local_env(local_env, {"AzureWebJobsStorage": connection_string(queue_port=1, table_port=1, blob_port=1)})
    code, _, err = run("list", local_env=local_env)
    assert code == EXIT_FAILED and f"storage settings from {local_env}: is `make run` still running?" in err


@pytest.mark.parametrize(("tenant", "in_link"), [
    ("Contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
    ("6F1C2B3A-4D5E-4F60-8A7B-9C0D1E2F3A4B", "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"),
])
def test_consent_url_takes_a_tenant_guid_or_domain(tenant: str, in_link: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXO_CLIENT_ID", "a1b2c3d4-e5f6-4789-9abc-def012345678")
    monkeypatch.delenv("ENTRA_AUTHORITY_HOST", raising=False)
    code, out, err = run("consent-url", tenant)
    assert code == EXIT_OK
    assert out == (f"https://login.microsoftonline.com/{in_link}/adminconsent"
                   "?client_id=a1b2c3d4-e5f6-4789-9abc-def012345678\n")
    assert ("recommends" in err) is (in_link == "contoso.onmicrosoft.com")


@pytest.mark.parametrize("tenant", ["common", "contoso", "not a tenant"])
def test_consent_url_says_plainly_what_it_needs(tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXO_CLIENT_ID", "a1b2c3d4-e5f6-4789-9abc-def012345678")
    code, out, err = run("consent-url", tenant)
    assert (code, out) == (EXIT_INVALID, "")
    assert len(err.splitlines()) == 1 and "tenant ID (GUID)" in err


def _closed_pipe_run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """Run the command with a stdout whose reader has already gone, like `| head -1` that has exited."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "shared", *argv], cwd=ROOT, env=env, stdout=write_end,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60, check=False)
    finally:
        os.close(write_end)


def test_output_to_a_closed_pipe_ends_quietly(ops_env: None, activation_store: ActivationStore,
                                              tmp_path: Path) -> None:
    for number in range(3):
        activation_store.create(_record(f"CLI-PIPE-{number}", Status.SUCCEEDED, attempts=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv in (["list"], ["plan", str(SAMPLE), "--format", "powershell"], ["--help"], ["status", "CLI-PIPE-1"]):
        result = _closed_pipe_run(argv, env)
        assert (result.returncode, result.stderr) == (0, b""), argv


def test_azurite_env_prints_the_running_azurite_and_never_a_stale_file(
        storage: StorageNames, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from localrun.azurite import main as azurite_main

    run_dir = tmp_path / ".run"
    write_local_env(run_dir / "local.env", {"AzureWebJobsStorage": storage.connection_string})
    assert azurite_main(["env", "--run-dir", str(run_dir), "--value"]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (storage.connection_string + "\n", f"Azurite from {run_dir / 'local.env'}.\n")
    # a file left by a stack that died is called stale, and its ports are not printed as if in use
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    (run_dir / "azurite.env").write_text(
        f"AZURITE_CONNECTION_STRING='{connection_string(queue_port=dead, table_port=dead, blob_port=dead)}'\n")
    assert azurite_main(["env", "--run-dir", str(run_dir), "--value"]) == 0  # the live one still wins
    assert capsys.readouterr().out == storage.connection_string + "\n"
    (run_dir / "local.env").unlink()
    code = azurite_main(["env", "--run-dir", str(run_dir)])
    out, err = capsys.readouterr()
    if "standard ports" not in err:  # unless someone runs an Azurite on 10001/10002
        assert (code, out) == (1, "")
        assert f"127.0.0.1:{dead}" in err and "stale" in err
    # and with ports given, the string for those ports, running or not
    assert azurite_main(["env", "--queue-port", "20001", "--table-port", "20002", "--value"]) == 0
    assert "QueueEndpoint=http://127.0.0.1:20001/" in capsys.readouterr().out
