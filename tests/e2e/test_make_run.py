"""`make run` from a fresh clone: the whole local stack provisions every sample notice.

This is the newcomer's first command, so it is tested as they run it: `python -m localrun`
in a subprocess from the repository root, with nothing started beforehand (it starts its own
Azurite, Exchange simulator and DNS server), in a working directory of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_IDS = sorted(json.loads(p.read_text(encoding="utf-8"))["notice_id"] for p in (ROOT / "samples").glob("*.json"))
# Settings a developer's shell may carry that would point the stack elsewhere than its own services.
FOREIGN = ("EXO_ADMIN_API_URL", "ENTRA_AUTHORITY_HOST", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE",
           "SSL_CERT_DIR", "AzureWebJobsStorage", "ACTIVATION_QUEUE", "ACTIVATIONS_TABLE", "EVENTS_TABLE",
           "RETRY_BASE_SECONDS", "LOCAL_PORT")


def test_make_run_once_provisions_every_sample(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    result = subprocess.run(
        [sys.executable, "-m", "localrun", "--once", "--port", "0", "--timeout", "150", "--run-dir",
         str(tmp_path / ".run")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    final = output.split("Final status:", 1)[1].splitlines()
    rows = {line.split()[0]: line for line in final if line.startswith(tuple(SAMPLE_IDS))}
    assert sorted(rows) == SAMPLE_IDS, output
    for notice_id, line in rows.items():
        assert " succeeded " in line, f"{notice_id}: {line}"
    assert "All samples succeeded." in output
    # the operator is shown how to reach the API, and the throttled tenant needed a second attempt
    assert "x-functions-key" in output
    assert rows["ACT-2026-0002"].split()[:5] == ["ACT-2026-0002", "ファブリカム株式会社", "EA+MG", "succeeded", "2"]
    assert (tmp_path / ".run" / "functions.log").exists()


def test_with_make_run_up_the_command_line_finds_the_stack_with_no_settings(tmp_path: Path) -> None:
    # given `make run` serving in one terminal (its run directory under the operator's project)
    project = tmp_path / "project"
    run_dir = project / ".run"
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    log = (tmp_path / "localrun.out").open("wb")
    stack = subprocess.Popen([sys.executable, "-m", "localrun", "--port", "0", "--timeout", "150", "--run-dir",
                              str(run_dir)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    # and a second terminal in that project directory, with no product setting at all
    cli_env = {**env, "PYTHONPATH": str(ROOT)}

    def cli(*argv: str, module: str = "shared") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", module, *argv], cwd=project, env=cli_env, capture_output=True,
                              text=True, timeout=60, check=False)

    try:
        deadline = time.monotonic() + 150
        listed: list[dict[str, object]] = []
        while time.monotonic() < deadline and stack.poll() is None:
            if (run_dir / "local.env").exists():
                reply = cli("list", "--json")
                assert reply.returncode == 0, reply.stderr
                listed = json.loads(reply.stdout)["items"]
                if sorted(str(i["notice_id"]) for i in listed) == SAMPLE_IDS and all(
                        i["status"] == "succeeded" for i in listed):
                    break
            time.sleep(1)
        assert sorted(str(i["notice_id"]) for i in listed) == SAMPLE_IDS, (tmp_path / "localrun.out").read_text()
        # then `list` shows the samples under its header, with nothing configured
        reply = cli("list")
        assert (reply.returncode, reply.stderr) == (0, "")
        lines = reply.stdout.splitlines()
        assert lines[0].split()[:2] == ["NOTICE_ID", "STATUS"]
        assert sorted(line.split()[0] for line in lines[1:]) == SAMPLE_IDS
        # and `azurite env` prints the ports this stack's Azurite really listens on
        reply = cli("env", "--value", module="localrun.azurite")
        assert reply.returncode == 0, reply.stderr
        local = (run_dir / "local.env").read_text(encoding="utf-8")
        assert reply.stdout.strip() in local and "127.0.0.1:10002" not in reply.stdout
        assert "EXO_CLIENT_SECRET" in local and (run_dir / "local.env").stat().st_mode & 0o077 == 0
    finally:
        stack.send_signal(signal.SIGTERM)  # Ctrl-C's clean stop
        stack.wait(timeout=60)
        log.close()
    # when the stack has stopped, its file is gone and the command says what is missing, in one line
    assert not (run_dir / "local.env").exists()
    reply = cli("list")
    assert reply.returncode == 2 and reply.stdout == ""
    assert len(reply.stderr.splitlines()) == 1 and "AzureWebJobsStorage" in reply.stderr
    reply = cli("env", module="localrun.azurite")
    if "the standard ports" not in reply.stderr:  # unless someone runs an Azurite on 10001/10002
        assert reply.returncode == 1 and "no running Azurite" in reply.stderr
