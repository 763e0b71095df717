"""The two fault hooks `make chaos` relies on, pinned so the suite's crashes are the ones it claims.

* `Simulator.on_answer` holds an Exchange answer after the call took effect: a connector made
  by New-OutboundConnector exists while its client still waits, which is the moment the suite
  kills the runner;
* a persisted Azurite killed with SIGKILL and restarted on the same ports serves what it had
  written, so a storage outage in the suite is an outage, not a wipe.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from exosim import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Simulator
from exosim.core import LogEntry
from localrun.azurite import start_azurite
from shared.queueing import ActivationQueue

pytestmark = pytest.mark.functional

SCOPE = "https://outlook.office365.com/.default"
AUTOSAVE_S = 5
ANCHOR = "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}"


def _invoke(sim: Simulator, tenant: str, token: str, cmdlet: str, parameters: dict[str, object]) -> int:
    response = requests.post(
        sim.invoke_url(tenant),
        json={"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}},
        headers={"Authorization": f"Bearer {token}", "X-AnchorMailbox": ANCHOR.format(tenant=tenant)},
        verify=sim.ca_file, timeout=30,
    )
    return response.status_code


def test_an_answer_held_by_the_hook_has_already_taken_effect(simulator: Simulator) -> None:
    # given a tenant and a hook that holds the answer to its New-OutboundConnector
    tenant = str(uuid.uuid4())
    token = requests.post(simulator.token_endpoint(tenant), verify=simulator.ca_file, timeout=30, data={
        "grant_type": "client_credentials", "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET, "scope": SCOPE}).json()["access_token"]
    reached, release = threading.Event(), threading.Event()
    seen: list[LogEntry] = []

    def hold(entry: LogEntry) -> None:
        seen.append(entry)
        if entry.cmdlet == "New-OutboundConnector":
            reached.set()
            release.wait(30)

    simulator.on_answer(hold)
    answers: list[int] = []
    try:
        call = threading.Thread(target=lambda: answers.append(_invoke(
            simulator, tenant, token, "New-OutboundConnector",
            {"Name": "Relay", "ConnectorType": "Partner", "RecipientDomains": ["*"], "UseMXRecord": True})))
        call.start()
        # when the call has been answered by Exchange but the reply is held
        assert reached.wait(30)
        # then the connector exists already, and the client has no answer yet
        assert [c["Name"] for c in simulator.connectors(tenant)] == ["Relay"]
        assert answers == []
        release.set()
        call.join(30)
    finally:
        simulator.on_answer(None)
    # and once released the client gets the ordinary answer, and the hook saw the logged call
    assert answers == [200]
    assert [e.cmdlet for e in seen] == ["New-OutboundConnector"]
    assert seen[0].status == 200 and seen[0].tenant == tenant


def test_a_persisted_azurite_killed_and_restarted_keeps_its_queue(tmp_path: Path) -> None:
    # given a persisted Azurite with a message on a queue
    azurite = start_azurite(workdir=tmp_path / "azurite", in_memory=False)
    restarted = None
    try:
        queue = ActivationQueue.from_connection_string(azurite.connection_string, queue_name="persisted")
        queue.ensure_queues()
        queue.send_notice('{"notice_id": "P-1"}')
        queue.close()
        # Azurite saves its metadata to disk every 5 s (autosaveInterval 5000 in its Loki*MetadataStore),
        # so a kill loses what it acknowledged in the last 5 s; real storage never does.
        time.sleep(AUTOSAVE_S + 1)
        # when it is killed with SIGKILL and started again on the same ports
        azurite.kill()
        assert not azurite.running()
        restarted = azurite.restart()
        assert (restarted.queue_port, restarted.table_port) == (azurite.queue_port, azurite.table_port)
        # then the same connection string still reads the message
        queue = ActivationQueue.from_connection_string(restarted.connection_string, queue_name="persisted")
        received = queue.receive(max_messages=1)
        queue.close()
        assert [m.content for m in received] == ['{"notice_id": "P-1"}']
    finally:
        azurite.stop()
        if restarted is not None:
            restarted.stop()
