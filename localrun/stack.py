"""The whole local stack behind `make run`: storage, Exchange, DNS and the Function App.

A fresh clone has no Azure subscription, no customer tenant and no Core Tools, yet a
developer should see the product provision connectors within a minute. `LocalStack` starts
Azurite (queues and tables, in memory), the bundled Exchange Online + Entra ID simulator
and a DNS server for the SPF check (unless the developer points the product at a real
Exchange endpoint), wires the app settings exactly as the Function App in Azure gets them,
and runs `function_app.py` in a `LocalFunctionsHost`.

While it runs, `<run_dir>/local.env` holds the app settings it set (storage, the simulator's
EXO_* settings and CA bundle, DNS, local pacing), so `python -m shared list` in another
terminal finds this stack with nothing configured, and a shell can `set -a; . .run/local.env`.
The file is removed when the stack stops.

Local use only: nothing here is deployed, and in Azure the app settings come from Bicep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from types import TracebackType

from exosim import Simulator
from exosim.dnsserver import DnsServer

from .azurite import PROJECT_DIR, AzuriteProcess, start_azurite
from .host import LocalFunctionsHost

log = logging.getLogger("localrun.stack")

DEFAULT_PORT = 7071
DEFAULT_SPF_INCLUDE = "spf.cybermail.jp"

# Local demo pacing: a throttled tenant is retried after seconds, not the production 30 s.
LOCAL_DEFAULTS = {
    "ACTIVATION_QUEUE": "activation-notices",
    "ACTIVATIONS_TABLE": "activations",
    "EVENTS_TABLE": "activationevents",
    "RETRY_BASE_SECONDS": "2",
    "RETRY_MAX_SECONDS": "30",
    "REPLICATION_WAIT_SECONDS": "20",
    "SPF_REQUIRED_INCLUDE": DEFAULT_SPF_INCLUDE,
}
# Point requests at the simulator's throw-away CA only; a CA left over in the shell would win.
_TLS_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
LOCAL_ENV_NAME = "local.env"
_LOCAL_ENV_HEADER = """\
# Settings of the local stack `make run` (python -m localrun) started; removed when it stops.
# FOR LOCAL USE ONLY. `python -m shared ...` reads it when the environment does not configure
# storage / Exchange itself; a shell can `set -a; . .run/local.env; set +a`. The storage key is
# Azurite's published development key and the client secret the simulator's throw-away one.
"""


def write_local_env(path: Path, settings: Mapping[str, str]) -> None:
    """Write `settings` as a shell-sourceable env file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _LOCAL_ENV_HEADER + "".join(f"{name}={shlex.quote(value)}\n" for name, value in sorted(settings.items()))
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    # Created 0600 (not chmod-ed after), and renamed into place so a reader never sees half a file.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def external_exchange(environ: MutableMapping[str, str]) -> bool:
    """Whether the developer points the product at an Exchange endpoint of their own."""
    return bool(environ.get("EXO_ADMIN_API_URL", "").strip() and environ.get("ENTRA_AUTHORITY_HOST", "").strip())


class LocalStack:
    """Azurite, the simulator and DNS server (or an external Exchange), and the Functions host."""

    def __init__(
        self,
        *,
        run_dir: Path,
        port: int = DEFAULT_PORT,
        host_json: Path = PROJECT_DIR / "host.json",
        environ: MutableMapping[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.port = port
        self.host_json = host_json
        self.environ: MutableMapping[str, str] = os.environ if environ is None else environ
        self.use_simulator = not external_exchange(self.environ)
        self.azurite: AzuriteProcess | None = None
        self.simulator: Simulator | None = None
        self.dns: DnsServer | None = None
        self.host: LocalFunctionsHost | None = None
        self.app_settings: dict[str, str] = {}
        self.local_env_path = run_dir / LOCAL_ENV_NAME

    def start(self) -> LocalStack:
        """Start every service, set the app settings, create tables and queues, start the host."""
        from shared import runtime

        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.azurite = start_azurite(workdir=self.run_dir / "azurite")
            settings: dict[str, str] = {"AzureWebJobsStorage": self.azurite.connection_string}
            if self.use_simulator:
                self.simulator = Simulator(port=0, state_dir=self.run_dir / "exosim").start()
                self.dns = DnsServer({}, port=0).start()
                for name in _TLS_VARIABLES:
                    self.environ.pop(name, None)
                settings.update(self.simulator.env())
                settings.update({"DNS_NAMESERVER": self.dns.host, "DNS_PORT": str(self.dns.port)})
            for name, value in LOCAL_DEFAULTS.items():
                if not self.environ.get(name, "").strip():
                    settings[name] = value
            self.environ.update(settings)
            # The app reads its settings once per process; these objects were built (if at
            # all) from the settings before this stack existed.
            runtime.reset()
            runtime.store().ensure_tables()
            runtime.queue().ensure_queues()
            import function_app

            self.host = LocalFunctionsHost(function_app.app, host_json=self.host_json, environ=self.environ,
                                           port=self.port).start()
            # What the app runs with: the settings set here, and the queue and table names (and
            # pacing) the developer's environment chose, so a command finds the same queue.
            self.app_settings = {**{name: self.environ[name] for name in LOCAL_DEFAULTS}, **settings}
            if self.app_settings.get("REQUESTS_CA_BUNDLE"):
                # Absolute, so the file means the same from any directory that sources it.
                self.app_settings["REQUESTS_CA_BUNDLE"] = str(Path(self.app_settings["REQUESTS_CA_BUNDLE"]).resolve())
            write_local_env(self.local_env_path, self.app_settings)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the host first (running notices finish), then the services it was using."""
        from shared import runtime

        # First, so that no command is pointed at services that are about to go.
        if self.app_settings:
            self.local_env_path.unlink(missing_ok=True)
            self.app_settings = {}
        host, self.host = self.host, None
        if host is not None:
            host.stop()
        with contextlib.suppress(Exception):  # closing clients of services about to stop
            runtime.store().close()
            runtime.queue().close()
        runtime.reset()
        simulator, self.simulator = self.simulator, None
        if simulator is not None:
            simulator.stop()
        dns, self.dns = self.dns, None
        if dns is not None:
            dns.stop()
        azurite, self.azurite = self.azurite, None
        if azurite is not None:
            azurite.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running_host(self) -> LocalFunctionsHost:
        if self.host is None:
            raise RuntimeError("the stack is not running")
        return self.host
