"""The whole local stack behind `make run`: storage, Exchange, DNS and the Function App.

A fresh clone has no Azure subscription, no customer tenant and no Core Tools, yet a
developer should see the product provision connectors within a minute. `LocalStack` starts
Azurite (queues and tables, in memory), the bundled Exchange Online + Entra ID simulator
and a DNS server for the SPF check (unless the developer points the product at a real
Exchange endpoint), wires the app settings exactly as the Function App in Azure gets them,
and runs `function_app.py` in a `LocalFunctionsHost`.

Local use only: nothing here is deployed, and in Azure the app settings come from Bicep.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import MutableMapping
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
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the host first (running notices finish), then the services it was using."""
        from shared import runtime

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
