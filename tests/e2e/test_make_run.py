"""`make run` from a fresh clone: the whole local stack provisions every sample notice.

This is the newcomer's first command, so it is tested as they run it: `python -m localrun`
in a subprocess from the repository root, with nothing started beforehand (it starts its own
Azurite, Exchange simulator and DNS server), in a working directory of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
