"""The parts the suite runs against, and the faults it injects into them.

* Azurite with its data on disk in the work folder, so a SIGKILL loses only what Azurite had
  not yet written, and a restart on the same ports serves the rest;
* the Exchange simulator in this process, where the suite configures tenants, reads what
  Exchange really holds, and holds one answer (`Simulator.on_answer`) to kill the worker at
  an exact step;
* the local Functions runner (`python -m chaos.runner`) as a child process in its own
  process group, on a fixed port and key, killed with SIGKILL and started again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from exosim import Simulator
from localrun.azurite import PROJECT_DIR, AzuriteProcess, start_azurite
from localrun.status import ApiClient
from shared.queueing import ActivationQueue
from shared.settings import Settings

from .runner import VISIBILITY_VARIABLE

RUNNER_START_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1
_TLS_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


class StackError(RuntimeError):
    """A part of the suite's stack could not be started."""


@dataclass(frozen=True)
class RunnerSettings:
    """What the suite passes to the runner: product settings by their variables, plus the harness knob."""

    product: Mapping[str, str]
    visibility_seconds: int | None

    def describe(self) -> str:
        lease = self.product.get("LEASE_SECONDS")
        parts = [f"LEASE_SECONDS={lease} (set by the suite)" if lease else "LEASE_SECONDS default"]
        parts.append(f"message visibility {self.visibility_seconds}s (set by the suite)"
                     if self.visibility_seconds else "message visibility: the runner's default")
        return ", ".join(parts)


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the runner when the suite's thread dies.

    The runner has its own process group (so the suite can kill it alone), which also means a
    suite killed by its user would leave it behind; this ends it with the suite instead.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return hook


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ChaosStack:
    workdir: Path
    runner_settings: RunnerSettings
    azurite: AzuriteProcess | None = None
    simulator: Simulator | None = None
    queue_name: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=_free_port)
    key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    _runner: subprocess.Popen[bytes] | None = None
    runner_starts: int = 0
    azurite_kills: int = 0
    runner_kills: int = 0
    poison_poison_seen: int = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ChaosStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.azurite = start_azurite(workdir=self.workdir / "azurite", in_memory=False)
        self.simulator = Simulator(port=0, state_dir=self.workdir / "exosim").start()
        self.start_runner()
        return self

    def stop(self) -> None:
        self.stop_runner()
        if self.simulator is not None:
            self.simulator.on_answer(None)
            self.simulator.stop()
            self.simulator = None
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None

    def __enter__(self) -> ChaosStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the parts -------------------------------------------------------------------------------
    @property
    def sim(self) -> Simulator:
        if self.simulator is None:
            raise StackError("the simulator is not running")
        return self.simulator

    @property
    def storage(self) -> AzuriteProcess:
        if self.azurite is None:
            raise StackError("Azurite is not running")
        return self.azurite

    def env(self) -> dict[str, str]:
        """The runner's whole environment: the product's settings pointed at this stack."""
        environ = {k: v for k, v in os.environ.items() if k not in _TLS_VARIABLES and not k.startswith("CHAOS_")}
        environ.update(self.sim.env())
        environ.update({
            "AzureWebJobsStorage": self.storage.connection_string,
            "ACTIVATION_QUEUE": self.queue_name,
            "ACTIVATIONS_TABLE": "chaosactivations",
            "EVENTS_TABLE": "chaosevents",
            # No DNS server here: the simulated tenants have no custom domains to check.
            "SPF_POLICY": "off",
            "CHAOS_FUNCTION_KEY": self.key,
            "PYTHONUNBUFFERED": "1",
        })
        environ.update(self.runner_settings.product)
        if self.runner_settings.visibility_seconds:
            environ[VISIBILITY_VARIABLE] = str(self.runner_settings.visibility_seconds)
        return environ

    def settings(self) -> Settings:
        """The settings the runner reads (for connector names and queue names)."""
        return Settings.from_env(self.env())

    def api(self, *, timeout: float = 30.0) -> ApiClient:
        return ApiClient(f"http://127.0.0.1:{self.port}/api", self.key, timeout=timeout)

    def queue(self) -> ActivationQueue:
        """A client of the activation queue, as the contract system sends (close it after use)."""
        return ActivationQueue.from_connection_string(self.storage.connection_string, queue_name=self.queue_name)

    # -- the runner ------------------------------------------------------------------------------
    def start_runner(self) -> None:
        if self._runner is not None and self._runner.poll() is None:
            raise StackError("the runner is already running")
        self.runner_starts += 1
        ready = self.workdir / f"runner-{self.runner_starts}.ready"
        log_path = self.workdir / "functions.log"
        with (self.workdir / "runner.out").open("ab") as out:
            self._runner = subprocess.Popen(
                [sys.executable, "-m", "chaos.runner", "--port", str(self.port), "--ready-file", str(ready),
                 "--log-file", str(log_path)],
                cwd=PROJECT_DIR, env=self.env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a kill takes the runner and nothing else
                preexec_fn=_die_with_parent(),  # noqa: PLW1509 - only sets the parent-death signal
            )
        deadline = time.monotonic() + RUNNER_START_TIMEOUT_S
        while not ready.exists():
            if self._runner.poll() is not None:
                raise StackError(f"the runner exited with {self._runner.returncode}; see {self.workdir / 'runner.out'}")
            if time.monotonic() > deadline:
                raise StackError(f"the runner did not start within {RUNNER_START_TIMEOUT_S:.0f}s")
            time.sleep(0.05)

    def runner_alive(self) -> bool:
        return self._runner is not None and self._runner.poll() is None

    def kill_runner(self) -> float:
        """SIGKILL the runner's whole process group; returns the monotonic time of the kill."""
        runner = self._runner
        if runner is None or runner.poll() is not None:
            raise StackError("the runner is not running")
        killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        self.runner_kills += 1
        return killed_at

    def stop_runner(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None or runner.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGTERM)
        try:
            runner.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(timeout=10)

    # -- Azurite ---------------------------------------------------------------------------------
    def kill_azurite(self) -> None:
        self.storage.kill()
        self.azurite_kills += 1

    def restart_azurite(self) -> None:
        """Azurite again on the same ports and location (from the main thread: it dies with its parent thread)."""
        self.azurite = self.storage.restart()
