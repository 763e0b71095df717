"""`Simulator`: the in-process face of exosim, for tests and benchmarks.

    with Simulator(port=0) as sim:
        sim.configure_tenant(TENANT, replication_lag=2.0)
        ... point the product at sim.url with REQUESTS_CA_BUNDLE=sim.ca_file ...
        assert sim.writes(TENANT) == []

The same operations exist on the control API (`/_sim/…`) for a simulator started with
`python -m exosim`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from exosim.core import Backend, LogEntry
from exosim.entra import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TOKEN_LIFETIME_SECONDS, ClientRegistration
from exosim.faults import FaultSpec, Shape, Target
from exosim.server import SimulatorHTTPServer
from exosim.tls import DEFAULT_HOST_NAMES, create_tls_files, server_context


class Simulator:
    """A local Exchange Online + Entra ID over HTTPS on loopback, with a throw-away CA."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: str | Path | None = None,
        page_size: int = 1000,
        auto_create_tenants: bool = True,
        token_lifetime: int = TOKEN_LIFETIME_SECONDS,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._own_state_dir = state_dir is None
        self.client_id = client_id
        self.client_secret = client_secret
        self.verbose = verbose
        self.backend = Backend(
            page_size=page_size,
            auto_create_tenants=auto_create_tenants,
            token_lifetime=token_lifetime,
            client_id=client_id,
            client_secret=client_secret,
        )
        self._server: SimulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._server is not None:
            return self
        if self._state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="exosim-"))
        hosts = [*DEFAULT_HOST_NAMES]
        if self.host not in hosts and self.host not in ("0.0.0.0", "::", ""):
            hosts.insert(0, self.host)
        files = create_tls_files(self._state_dir, hosts)
        self._ca_file = files.ca_file
        self._server = SimulatorHTTPServer(
            (self.host, self._requested_port),
            self.backend,
            server_context(files),
            info=self.info,
            verbose=self.verbose,
        )
        # A short poll interval keeps stop() quick (serve_forever checks for shutdown between polls).
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="exosim", daemon=True
        )
        self._thread.start()
        (self._state_dir / "exosim.json").write_text(json.dumps(self.info(), indent=2), encoding="utf-8")
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._own_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._state_dir = None

    close = stop

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------------

    def _running(self) -> SimulatorHTTPServer:
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() or use it as a context manager")
        return self._server

    @property
    def port(self) -> int:
        return int(self._running().server_address[1])

    @property
    def url(self) -> str:
        """Base URL for both ENTRA_AUTHORITY_HOST and EXO_ADMIN_API_URL."""
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self.port}"

    @property
    def ca_file(self) -> str:
        """PEM of the throw-away CA; give it to clients as REQUESTS_CA_BUNDLE."""
        self._running()
        return str(self._ca_file)

    @property
    def state_dir(self) -> Path:
        self._running()
        assert self._state_dir is not None
        return self._state_dir

    def authority(self, tenant: str) -> str:
        """The MSAL authority of a tenant (use with instance_discovery=False)."""
        return f"{self.url}/{tenant}"

    def token_endpoint(self, tenant: str) -> str:
        return f"{self.url}/{tenant}/oauth2/v2.0/token"

    def invoke_url(self, tenant: str) -> str:
        return f"{self.url}/adminapi/beta/{tenant}/InvokeCommand"

    def env(self) -> dict[str, str]:
        """Environment values that point the product at this simulator (secret mode)."""
        return {
            "EXO_ADMIN_API_URL": self.url,
            "ENTRA_AUTHORITY_HOST": self.url,
            "REQUESTS_CA_BUNDLE": self.ca_file,
            "EXO_AUTH_MODE": "secret",
            "EXO_CLIENT_ID": self.client_id,
            "EXO_CLIENT_SECRET": self.client_secret,
        }

    def info(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ca_file": self.ca_file,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "page_size": self.backend.page_size,
        }

    # -- control ---------------------------------------------------------------------------------

    def configure_tenant(self, tenant: str, **options: Any) -> dict[str, Any]:
        """Set tenant options (see `exosim.options.TenantOptions`) and actions.

        Actions: `connectors=[{...}]` replaces the connectors, `accepted_domains=[...]` the
        accepted domains, `fail_next=N` with `fault="kind"` (or a fault dict) queues failures.
        Returns the tenant's resulting configuration.
        """
        return self.backend.configure_tenant(tenant, options)

    def tenant_info(self, tenant: str) -> dict[str, Any]:
        return self.backend.tenant_info(tenant)

    def seed_connector(self, tenant: str, **fields: Any) -> dict[str, Any]:
        """Add an existing connector by Exchange property names (Name=…, RecipientDomains=[…])."""
        return self.backend.seed_connector(tenant, fields)

    def fail_next(
        self,
        tenant: str,
        count: int = 1,
        kind: str = "unavailable",
        *,
        status: int | None = None,
        shape: Shape | None = None,
        retry_after: int | None = None,
        message: str | None = None,
        cmdlet: str | None = None,
        target: Target = "invoke",
        gzip: bool = True,
    ) -> None:
        """The next `count` matching calls fail with `kind` (see `exosim.faults.FAULT_KINDS`)."""
        spec = FaultSpec(kind, status, shape, retry_after, message, cmdlet, target, gzip)
        self.backend.fail_next(tenant, spec, count)

    def on_answer(self, hook: Callable[[LogEntry], None] | None) -> None:
        """Call `hook` with every answered InvokeCommand call, after its effect, before its reply.

        The hook runs on the request's thread and may block: holding a New-OutboundConnector
        answer while the client is killed leaves Exchange with a connector the client never
        heard of, the crash a reliability test needs at an exact step. `None` removes it.
        """
        self.backend.answer_hook = hook

    def clear_faults(self, tenant: str) -> None:
        self.backend.clear_faults(tenant)

    def replicate(self, tenant: str) -> None:
        """End the replication lag of the tenant's connectors now."""
        self.backend.replicate(tenant)

    def register_client(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate_pem: str | None = None,
        federation: bool = False,
        federated_subject: str | None = None,
        secret_expired: bool = False,
    ) -> None:
        self.backend.register_client(
            ClientRegistration(
                client_id,
                secret=secret,
                secret_expired=secret_expired,
                certificate_pem=certificate_pem,
                federation=federation,
                federated_subject=federated_subject,
            )
        )

    def expire_tokens(self, tenant: str | None = None) -> int:
        """Make issued tokens (of one tenant, or all) expired; returns how many."""
        return self.backend.expire_tokens(tenant)

    def reset_log(self) -> None:
        """Forget the request log and every counter (token requests, calls, writes)."""
        self.backend.reset_log()

    def reset(self, *, revoke_tokens: bool = False) -> None:
        """Fresh state: no tenants, faults or extra clients, empty log. Tokens survive unless asked."""
        self.backend.reset(revoke_tokens=revoke_tokens)

    # -- observation -----------------------------------------------------------------------------

    @property
    def log(self) -> list[LogEntry]:
        return self.backend.log()

    def log_for(self, tenant: str) -> list[LogEntry]:
        return self.backend.log(tenant)

    def token_requests(self, tenant: str | None = None) -> int:
        return self.backend.token_requests(tenant)

    def calls(self, tenant: str | None = None) -> dict[str, int]:
        """InvokeCommand calls per cmdlet (failed ones included)."""
        return self.backend.calls(tenant)

    def writes(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Successful writes (connectors, journal rules, transport config), in order."""
        return self.backend.writes(tenant)

    def test_messages(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Test messages sent by Validate-OutboundConnector: {tenant, connector, recipient, time}."""
        return self.backend.test_messages(tenant)

    def connectors(self, tenant: str) -> list[dict[str, Any]]:
        """What Exchange really holds for the tenant, replicated or not."""
        return self.backend.connectors(tenant)

    def journal_rules(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's journal rules as Get-JournalRule returns them."""
        return self.backend.journal_rules(tenant)

    def journaling_report_ndr_to(self, tenant: str) -> str | None:
        """The transport config's address for undeliverable journal reports."""
        return self.backend.journaling_report_ndr_to(tenant)

    def accepted_domains(self, tenant: str) -> list[dict[str, Any]]:
        return self.backend.accepted_domains(tenant)

    def stats(self) -> dict[str, Any]:
        return self.backend.stats()
