"""Drift end to end over HTTP: success, an admin's edit, `POST /api/drift`, and the repair.

The stack runs as `make run` starts it (local runner, Azurite, simulator), with DRIFT_REPAIR
on. After the activation succeeds, a customer's admin changes the MailGates connector's TLS
setting through the Exchange admin REST API (as their PowerShell would); the operator's
`POST /api/drift` reports the activation drifted, naming the parameter, and the repair it
queues runs like any run and leaves the activation succeeded with the connector set back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.exchange import ExchangeAdminClient
from shared.settings import read_env_file
from tests.e2e.test_grant_then_retry import RunningStack

pytestmark = pytest.mark.e2e

MG_NAME = "MAILGATESΣ 送信コネクタ"


class _SimulatorToken:
    """App-only tokens from the simulator's Entra ID for the admin's own edit."""

    def __init__(self, env: dict[str, str], session: requests.Session) -> None:
        self.env, self.session = env, session

    def get_token(self, tenant_id: str) -> str:
        reply = self.session.post(
            f"{self.env['ENTRA_AUTHORITY_HOST']}/{tenant_id}/oauth2/v2.0/token", timeout=10,
            data={"grant_type": "client_credentials", "client_id": self.env["EXO_CLIENT_ID"],
                  "client_secret": self.env["EXO_CLIENT_SECRET"],
                  "scope": "https://outlook.office365.com/.default"})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["access_token"])


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningStack]:
    monkeypatch.setenv("DRIFT_REPAIR", "true")  # the stack's process inherits it
    running = RunningStack(tmp_path / ".run")
    try:
        yield running
    finally:
        running.stop()


def test_an_admins_edit_is_found_by_post_drift_and_repaired(stack: RunningStack, tmp_path: Path) -> None:
    tenant = str(uuid.uuid4())
    notice_id = f"E2E-DRIFT-{uuid.uuid4().hex[:8]}"
    notice = {"notice_id": notice_id, "tenant_id": tenant, "services": ["mailgates", "enterprise_audit"],
              "journal_report_address": "jr-9@cs-365.cybermail.jp", "mx_host": "mgf.cybermail.jp",
              "validation_recipient": "adm@example.com"}
    assert stack.call("POST", "/activations", json=notice).status_code == 202
    stack.wait_for(notice_id, lambda d: d["status"] == "succeeded")

    env = read_env_file(tmp_path / ".run" / "local.env")  # the simulator's app, as `make run` wrote it
    session = requests.Session()
    session.trust_env = False
    session.verify = stack.ca
    with ExchangeAdminClient(tenant, credential=_SimulatorToken(env, session), endpoint=env["EXO_ADMIN_API_URL"],
                             session=session) as admin:
        admin.update_outbound_connector(MG_NAME, {"TlsSettings": "EncryptionOnly"})

    reply = stack.call("POST", "/drift", json={"tenant_id": tenant})
    assert reply.status_code == 202, reply.text
    [check] = reply.json()["checks"]
    assert (check["notice_id"], check["result"], check["repair"]) == (notice_id, "drifted", "queued")
    assert check["differences"] == [{"connector": MG_NAME, "service": "mailgates", "parameter": "TlsSettings",
                                     "desired": "CertificateValidation", "actual": "EncryptionOnly"}]

    done = stack.wait_for(notice_id, lambda d: d["status"] == "succeeded" and d["series"] >= 2)
    assert all(w["code"] != "CONNECTOR_DRIFT" for w in done["warnings"])
    kinds = [e["kind"] for e in stack.call("GET", f"/activations/{notice_id}").json()["events"]]
    assert "drift.found" in kinds and "drift.repair" in kinds
    connectors: list[dict[str, Any]] = [c for c in admin_listing(tenant, env, session) if c["Name"] == MG_NAME]
    assert [c["TlsSettings"] for c in connectors] == ["CertificateValidation"]
    # Set right, a second check finds nothing.
    [again] = stack.call("POST", "/drift", json={"tenant_id": tenant}).json()["checks"]
    assert again["result"] == "in_sync"


def admin_listing(tenant: str, env: dict[str, str], session: requests.Session) -> list[dict[str, Any]]:
    with ExchangeAdminClient(tenant, credential=_SimulatorToken(env, session), endpoint=env["EXO_ADMIN_API_URL"],
                             session=session) as admin:
        return admin.invoke("Get-OutboundConnector")


def test_post_drift_without_a_scope_queues_every_tenant_and_the_queue_trigger_finds_the_edit(
        stack: RunningStack, tmp_path: Path) -> None:
    tenant = str(uuid.uuid4())
    notice_id = f"E2E-FAN-{uuid.uuid4().hex[:8]}"
    notice = {"notice_id": notice_id, "tenant_id": tenant, "services": ["mailgates"],
              "mx_host": "mgf.cybermail.jp", "validation_recipient": "adm@example.com"}
    assert stack.call("POST", "/activations", json=notice).status_code == 202
    stack.wait_for(notice_id, lambda d: d["status"] == "succeeded")
    env = read_env_file(tmp_path / ".run" / "local.env")
    session = requests.Session()
    session.trust_env = False
    session.verify = stack.ca
    with ExchangeAdminClient(tenant, credential=_SimulatorToken(env, session), endpoint=env["EXO_ADMIN_API_URL"],
                             session=session) as admin:
        admin.update_outbound_connector(MG_NAME, {"SmartHosts": ["mgs.cybermail.jp"]})

    reply = stack.call("POST", "/drift")
    assert reply.status_code == 202, reply.text
    body = reply.json()
    assert body["queued"] >= 1 and body["checks"] == []  # one message per tenant, run by the queue trigger
    # The check runs on the queue; with DRIFT_REPAIR the repair follows it, a new series.
    stack.wait_for(notice_id, lambda d: any(e["kind"] == "drift.found" for e in d["events"]))
    done = stack.wait_for(notice_id, lambda d: d["status"] == "succeeded" and d["series"] >= 2)
    assert all(w["code"] != "CONNECTOR_DRIFT" for w in done["warnings"])
