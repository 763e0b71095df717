"""A customer's grant, then an operator's retry, in one running `make run`.

The role travels in the app-only token, so the retry succeeds only because the product dropped
the token Exchange refused: this drives the stack exactly as an operator would, in a
subprocess started as `make run` starts it, the role granted through the simulator's control
API (`POST /_sim/tenants/{tenant}`) while everything keeps running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_make_run import FOREIGN

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


class RunningStack:
    """`python -m localrun --no-samples` in a subprocess, and what its banner says."""

    def __init__(self, run_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localrun", "--no-samples", "--port", "0", "--run-dir", str(run_dir)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.output: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(120):
            self.stop()
            raise AssertionError("the stack did not start:\n" + "".join(self.output))
        text = "".join(self.output)
        self.api = _find(r"API\s+(http://\S+)", text)  # ends in /api
        self.exchange = _find(r"Exchange\s+(https://\S+) \(simulator\)", text)
        self.key = _find(r"export FUNCTION_KEY='([^']+)'", text)
        self.ca = str(run_dir / "exosim" / "ca.pem")
        self.http = requests.Session()
        self.http.trust_env = False

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("Serving "):
                self._ready.set()
        self._ready.set()

    def configure_tenant(self, tenant: str, **options: Any) -> None:
        reply = self.http.post(f"{self.exchange}/_sim/tenants/{tenant}", json=options, verify=self.ca, timeout=10)
        assert reply.status_code == 200, reply.text

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.http.request(method, self.api + path, headers={"x-functions-key": self.key}, timeout=30,
                                 **kwargs)

    def wait_for(self, notice_id: str, until: Callable[[dict[str, Any]], bool], *,
                 timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            reply = self.call("GET", f"/activations/{notice_id}")
            if reply.status_code == 200:
                last = reply.json()
                if until(last):
                    return dict(last)
            time.sleep(0.25)
        tail = "".join(self.output[-60:])  # what the stack said meanwhile: its queue trigger's lines
        raise AssertionError(f"{notice_id} did not get there within {timeout:.0f}s; last seen: {last!r}\n"
                             f"the stack's last output:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, f"{pattern!r} not in the banner:\n{text}"
    return match.group(1)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path / ".run")
    try:
        yield running
    finally:
        running.stop()


def test_role_missing_then_the_role_granted_then_an_operator_retry_succeeds(stack: RunningStack) -> None:
    tenant = str(uuid.uuid4())
    notice_id = f"E2E-ROLE-{uuid.uuid4().hex[:8]}"
    stack.configure_tenant(tenant, role_missing=403)
    notice = {"notice_id": notice_id, "tenant_id": tenant, "services": ["mailgates", "enterprise_audit"],
              "journal_report_address": "jr-9@cs-365.cybermail.jp", "mx_host": "mgf.cybermail.jp",
              "validation_recipient": "adm@example.com"}
    assert stack.call("POST", "/activations", json=notice).status_code == 202

    # the activation stops at ROLE_MISSING (retried a bounded number of times, or at once for a person)
    refused = stack.wait_for(notice_id, lambda d: (d.get("error") or {}).get("code") == "ROLE_MISSING"
                             and d["status"] in ("needs_attention", "retry_scheduled", "failed"))
    assert "Exchange" in refused["error"]["hint_en"]

    stack.configure_tenant(tenant, role_missing=None)  # the customer assigns the role now
    retry = stack.call("POST", f"/activations/{notice_id}/retry")
    assert retry.status_code == 202, retry.text
    done = stack.wait_for(notice_id, lambda d: d["status"] == "succeeded" and d["series"] >= 2)
    assert [(c["service"], c["validation"]) for c in done["connectors"]] == [
        ("enterprise_audit", "passed"), ("mailgates", "passed")]
