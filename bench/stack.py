"""The local stack a benchmark runs against: its own Azurite and its own Exchange simulator.

The benchmark starts both itself, rather than reusing a developer's or CI's, so that nothing
else's tables, tenants or request log are in its figures, and stops both however it ends.
Everything listens on 127.0.0.1. Each scenario gets its own tables and queue (and fresh
simulator tenants), so a scenario's figures are its own.

The simulator normally runs in this process (`exosim.Simulator`), where a scenario can set
per-tenant faults and read the request log directly. The memory scenario runs it as a child
process instead (`python -m exosim`): tracemalloc counts every allocation of the process, and
the simulator's own state (tenants, request log) would otherwise be measured as the worker's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from exosim import Simulator
from localrun.azurite import PROJECT_DIR, AzuriteProcess, start_azurite
from shared.auth import MsalTokenProvider
from shared.queueing import ActivationQueue
from shared.settings import Settings
from shared.store import ActivationStore

TLS_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
SIMULATOR_START_TIMEOUT_S = 30.0


class StackError(RuntimeError):
    """A part of the local stack could not be started."""


@dataclass
class Storage:
    """One scenario's tables and queue; `close` closes the clients (Azurite keeps the data)."""

    store: ActivationStore
    queue: ActivationQueue
    tables: tuple[str, str]

    def close(self) -> None:
        self.queue.close()
        self.store.close()


@dataclass
class Stack:
    connection_string: str
    base: Settings
    in_process: Simulator | None = None
    _storages: list[Storage] = field(default_factory=list)

    @property
    def simulator(self) -> Simulator:
        """The in-process simulator (for faults and the request log)."""
        if self.in_process is None:
            raise StackError("this stack's simulator runs in another process")
        return self.in_process

    def settings(self, storage: Storage | None = None, **overrides: object) -> Settings:
        """The product's settings pointed at this stack (and at `storage`'s tables and queue)."""
        values: dict[str, object] = dict(overrides)
        if storage is not None:
            values.update(activation_queue=storage.queue.name, activations_table=storage.tables[0],
                          events_table=storage.tables[1])
        return dataclasses.replace(self.base, **values)  # type: ignore[arg-type]

    def storage(self) -> Storage:
        """Fresh, created tables and queue for one scenario."""
        suffix = uuid.uuid4().hex[:12]
        tables = (f"benchact{suffix}", f"benchevt{suffix}")
        store = ActivationStore.from_connection_string(
            self.connection_string, activations_table=tables[0], events_table=tables[1])
        store.ensure_tables()
        queue = ActivationQueue.from_connection_string(self.connection_string, queue_name=f"bench-{suffix}")
        queue.ensure_queues()
        storage = Storage(store, queue, tables)
        self._storages.append(storage)
        return storage

    def release(self, storage: Storage) -> None:
        """Close a scenario's clients as soon as it is done."""
        storage.close()
        self._storages.remove(storage)

    def close(self) -> None:
        for storage in list(self._storages):
            with contextlib.suppress(Exception):  # Azurite is stopped next anyway
                self.release(storage)

    def token_provider(self) -> MsalTokenProvider:
        return MsalTokenProvider(client_id=self.base.exo_client_id, credential=self.base.exo_client_secret,
                                 authority_host=self.base.entra_authority_host, timeout=10)


@contextlib.contextmanager
def azurite(workdir: Path) -> Iterator[AzuriteProcess]:
    """A fresh in-memory Azurite on free loopback ports, stopped on the way out."""
    process = start_azurite(workdir=workdir / "azurite")
    try:
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def _trusting(ca_file: str) -> Iterator[None]:
    """Point the CA-bundle variables at the simulator's CA, as an operator would; restore after."""
    saved = {name: os.environ.get(name) for name in TLS_VARIABLES}
    for name in TLS_VARIABLES:
        os.environ.pop(name, None)
    os.environ["REQUESTS_CA_BUNDLE"] = ca_file
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _base_settings(env: Mapping[str, str]) -> Settings:
    # SPF checks are off: they would need a DNS server, and the simulator's tenants have no
    # custom domains to check anyway; nothing here may reach a resolver off this machine.
    return Settings.from_env({**env, "SPF_POLICY": "off"})


@contextlib.contextmanager
def local_stack(storage: AzuriteProcess) -> Iterator[Stack]:
    """Azurite plus an in-process simulator."""
    with Simulator(port=0) as simulator, _trusting(simulator.ca_file):
        stack = Stack(storage.connection_string, _base_settings(simulator.env()), simulator)
        try:
            yield stack
        finally:
            stack.close()


@contextlib.contextmanager
def local_stack_out_of_process(storage: AzuriteProcess, workdir: Path) -> Iterator[Stack]:
    """Azurite plus the simulator as a child process (`python -m exosim`), stopped on the way out."""
    state_dir = workdir / f"exosim-{uuid.uuid4().hex[:8]}"
    state_dir.mkdir(parents=True)
    log_path = state_dir / "exosim.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # fixed argv, this interpreter, no shell
            [sys.executable, "-m", "exosim", "--host", "127.0.0.1", "--port", "0", "--state-dir", str(state_dir)],
            cwd=PROJECT_DIR, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        info = _wait_for_info(process, state_dir / "exosim.json", log_path)
        env = {
            "EXO_ADMIN_API_URL": info["url"],
            "ENTRA_AUTHORITY_HOST": info["url"],
            "EXO_AUTH_MODE": "secret",
            "EXO_CLIENT_ID": info["client_id"],
            "EXO_CLIENT_SECRET": info["client_secret"],
        }
        with _trusting(info["ca_file"]):
            stack = Stack(storage.connection_string, _base_settings(env))
            try:
                yield stack
            finally:
                stack.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _wait_for_info(process: subprocess.Popen[bytes], info_path: Path, log_path: Path) -> dict[str, str]:
    """The simulator's exosim.json once it is listening (it writes the file after binding)."""
    deadline = time.monotonic() + SIMULATOR_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"python -m exosim exited with {process.returncode}: "
                             f"{log_path.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(info_path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and all(k in data for k in ("url", "ca_file", "client_id", "client_secret")):
                return {k: str(v) for k, v in data.items()}
        time.sleep(0.1)
    raise StackError(f"python -m exosim did not start within {SIMULATOR_START_TIMEOUT_S:.0f}s")
