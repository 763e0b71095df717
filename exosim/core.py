"""The simulator's engine: tenants, tokens, faults, paging, request log, counters.

Everything an HTTP request can do goes through `Backend`, and so does everything a test does
through `Simulator` or the control API, so the three views never disagree. One lock guards all
of it; it is never held while a call waits out its injected latency, so slow tenants do not
slow the others and concurrency limits can really be exceeded.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from exosim import entra
from exosim.entra import AadError, ClientRegistration
from exosim.faults import (
    FaultQueue,
    FaultSpec,
    HttpReply,
    error_reply,
    render_invoke_fault,
    role_missing_403_reply,
)
from exosim.options import TenantOptions, apply_options, options_dict
from exosim.state import (
    WRITE_CMDLETS,
    CmdletError,
    TenantState,
    accepted_domain_rows,
    canonical_cmdlet,
    seed_journal_rule,
)

ANCHOR_MAILBOX = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@"
DEFAULT_PAGE_SIZE = 1000
# Exchange keeps a paging cursor for half an hour, then answers with this error.
PAGE_EXPIRY_SECONDS = 1800.0
PAGE_EXPIRED = "Expired or Invalid pagination request. Default Expiry time is 00:30:00"


_UNSET = object()


def is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text.strip("{}")) == 36


def tenant_key(tenant: str) -> str:
    """Tenant ids compare case-insensitively, as Entra and Exchange treat them."""
    return tenant.strip().lower()


@dataclass(frozen=True)
class LogEntry:
    """One request the simulator answered (control API requests are not logged)."""

    time: float
    tenant: str | None
    kind: str  # "discovery" | "token" | "invoke"
    cmdlet: str | None
    parameters: dict[str, Any]
    status: int
    duration_ms: float
    fault: str | None = None
    client_id: str | None = None
    error: str | None = None
    page: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "tenant": self.tenant,
            "kind": self.kind,
            "cmdlet": self.cmdlet,
            "parameters": self.parameters,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "fault": self.fault,
            "client_id": self.client_id,
            "error": self.error,
            "page": self.page,
        }


@dataclass
class _Grant:
    """An issued access token and what it carries.

    `permission` (the app's Exchange.ManageAsApp role) and `role` (a directory role fit for
    Exchange administration) are fixed when the token is issued: Exchange builds the session's
    RBAC from the roles in the token, so a grant made later helps only a new token.
    """

    tenant: str
    client_id: str
    expires_at: float
    permission: bool = True
    role: bool = True


@dataclass
class _Page:
    tenant: str
    cmdlet: str
    rows: list[dict[str, Any]]
    page_size: int
    warnings: list[str]
    expires_at: float


@dataclass
class _Tenant:
    state: TenantState
    faults: FaultQueue = field(default_factory=FaultQueue)
    rng: random.Random = field(default_factory=random.Random)
    in_flight: int = 0
    refused_next_links: int = 0

    @property
    def options(self) -> TenantOptions:
        return self.state.options


def _reseed(tenant: _Tenant, key: str) -> None:
    # Seeded per tenant so that the failure sequence of one tenant does not depend on how
    # many calls other tenants made in between (concurrent benchmarks stay reproducible).
    tenant.rng.seed(f"{tenant.options.seed}:{key}")


def _error_text(reply: HttpReply) -> str | None:
    if reply.status < 400:
        return None
    try:
        payload = json.loads(reply.body)
    except ValueError:
        return "(non-JSON body)"
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            inner = error.get("innererror", {}).get("internalexception", {}).get("message")
            details = error.get("details") or [{}]
            return str(inner or details[0].get("message") or error.get("message"))
        if isinstance(error, str):
            return str(payload.get("error_description", error))
    return None


class Backend:
    """All simulator state; thread-safe."""

    def __init__(
        self,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        auto_create_tenants: bool = True,
        token_lifetime: int = entra.TOKEN_LIFETIME_SECONDS,
        client_id: str = entra.DEFAULT_CLIENT_ID,
        client_secret: str = entra.DEFAULT_CLIENT_SECRET,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.page_size = page_size
        self.auto_create_tenants = auto_create_tenants
        self.token_lifetime = token_lifetime
        self.default_client = ClientRegistration(client_id, secret=client_secret, federation=True)
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.RLock()
        self._clients: dict[str, ClientRegistration] = {}
        self._tenants: dict[str, _Tenant] = {}
        self._tokens: dict[str, _Grant] = {}
        self._pages: dict[str, _Page] = {}
        self._token_faults: dict[str, FaultQueue] = {}
        self._log: list[LogEntry] = []
        self._token_counts: Counter[str] = Counter()
        self._calls: dict[str, Counter[str]] = {}
        self._writes: list[dict[str, Any]] = []
        self._test_messages: list[dict[str, Any]] = []
        # Called with each answered InvokeCommand call after it took effect and before its
        # reply is sent; it may block, so a test can hold an answer and kill the client then.
        self.answer_hook: Callable[[LogEntry], None] | None = None
        self._reset_clients()

    # -- registry --------------------------------------------------------------------------------

    def _reset_clients(self) -> None:
        self._clients = {self.default_client.client_id.lower(): self.default_client}

    def register_client(self, registration: ClientRegistration) -> None:
        with self._lock:
            self._clients[registration.client_id.lower()] = registration

    def clients(self) -> list[dict[str, Any]]:
        with self._lock:
            return [client.to_dict() for client in self._clients.values()]

    def _new_tenant(self, key: str) -> _Tenant:
        tenant = _Tenant(TenantState(key, self.clock))
        _reseed(tenant, key)
        self._tenants[key] = tenant
        return tenant

    def _tenant(self, tenant_id: str) -> _Tenant | None:
        """The tenant, created on first use when it looks like a tenant id (a GUID)."""
        key = tenant_key(tenant_id)
        tenant = self._tenants.get(key)
        if tenant is None and self.auto_create_tenants and is_guid(key):
            tenant = self._new_tenant(key)
        return tenant

    def _configured(self, tenant_id: str) -> _Tenant:
        key = tenant_key(tenant_id)
        if not key:
            raise ValueError("a tenant id is required")
        return self._tenants.get(key) or self._new_tenant(key)

    # -- control -------------------------------------------------------------------------------

    def configure_tenant(self, tenant_id: str, options: Mapping[str, object]) -> dict[str, Any]:
        """Apply options; besides `TenantOptions` fields it takes these actions:

        `connectors` (list of connector objects: replaces the tenant's connectors),
        `accepted_domains` (list: replaces the accepted domains), `journal_rules` (list of
        journal rule objects: replaces them), `journaling_report_ndr_to` (the transport config's
        address for undeliverable journal reports, or null), `fail_next` (count) with
        `fault` (kind name or fault object, default "unavailable").
        """
        changes = dict(options)
        connectors = changes.pop("connectors", None)
        domains = changes.pop("accepted_domains", None)
        fail_count = changes.pop("fail_next", None)
        fault = changes.pop("fault", None)
        journal_rules = changes.pop("journal_rules", None)
        ndr_to = changes.pop("journaling_report_ndr_to", _UNSET)
        with self._lock:
            tenant = self._configured(tenant_id)
            new_options = apply_options(tenant.options, changes)
            if connectors is not None and not isinstance(connectors, list):
                raise ValueError("option 'connectors' must be a list of connector objects")
            if domains is not None:
                if not isinstance(domains, list):
                    raise ValueError("option 'accepted_domains' must be a list")
                rows = accepted_domain_rows(tenant.state.tenant_id, domains)
            spec = _fault_spec(fault) if fail_count is not None or fault is not None else None
            if fail_count is not None and (isinstance(fail_count, bool) or not isinstance(fail_count, int)):
                raise ValueError("option 'fail_next' must be an integer")
            reseed = new_options.seed != tenant.options.seed
            if connectors is not None:
                # Built aside first, so a refused connector leaves the tenant as it was.
                scratch = TenantState(tenant.state.tenant_id, self.clock, new_options)
                for item in connectors:
                    if not isinstance(item, dict):
                        raise ValueError("each connector must be an object of connector properties")
                    try:
                        scratch.seed_connector(item)
                    except CmdletError as exc:
                        raise ValueError(f"connector refused by Exchange rules: {exc.message}") from exc
            tenant.state.options = new_options
            if "refuse_next_links" in changes:
                tenant.refused_next_links = 0
            if reseed:
                _reseed(tenant, tenant.state.tenant_id)
            if domains is not None:
                tenant.state.accepted_domains = rows
            if connectors is not None:
                tenant.state.connectors = scratch.connectors
            if ndr_to is not _UNSET:
                tenant.state.journaling_report_ndr_to = None if ndr_to is None else str(ndr_to)
            if journal_rules is not None:
                if not isinstance(journal_rules, list) or not all(isinstance(r, dict) for r in journal_rules):
                    raise ValueError("option 'journal_rules' must be a list of journal rule objects")
                tenant.state.journal_rules = []
                for rule in journal_rules:
                    seed_journal_rule(tenant.state, rule)
            if spec is not None:
                self._queue_fault(tenant_id, spec, 1 if fail_count is None else fail_count)
            return self._tenant_info(tenant)

    def tenant_info(self, tenant_id: str) -> dict[str, Any]:
        with self._lock:
            return self._tenant_info(self._configured(tenant_id))

    def _tenant_info(self, tenant: _Tenant) -> dict[str, Any]:
        key = tenant.state.tenant_id
        token_queue = self._token_faults.get(key, FaultQueue())
        return {
            "tenant": key,
            "options": options_dict(tenant.options),
            "pending_faults": [spec.to_dict() for spec in tenant.faults.items + token_queue.items],
            "connectors": len(tenant.state.connectors),
            "accepted_domains": [row["DomainName"] for row in tenant.state.accepted_domains],
        }

    def _seed(self, tenant: _Tenant, fields: Mapping[str, object]) -> dict[str, Any]:
        try:
            return tenant.state.seed_connector(fields)
        except CmdletError as exc:
            raise ValueError(f"connector refused by Exchange rules: {exc.message}") from exc

    def seed_connector(self, tenant_id: str, fields: Mapping[str, object]) -> dict[str, Any]:
        with self._lock:
            return self._seed(self._configured(tenant_id), fields)

    def _queue_fault(self, tenant_id: str, spec: FaultSpec, count: int) -> None:
        key = tenant_key(tenant_id)
        if spec.target == "token":
            self._token_faults.setdefault(key, FaultQueue()).add(spec, count)
        else:
            self._configured(key).faults.add(spec, count)

    def fail_next(self, tenant_id: str, spec: FaultSpec, count: int = 1) -> None:
        with self._lock:
            self._queue_fault(tenant_id, spec, count)

    def clear_faults(self, tenant_id: str) -> None:
        with self._lock:
            key = tenant_key(tenant_id)
            self._configured(key).faults.clear()
            self._token_faults.pop(key, None)

    def replicate(self, tenant_id: str) -> None:
        with self._lock:
            self._configured(tenant_id).state.replicate()

    def expire_tokens(self, tenant_id: str | None = None) -> int:
        with self._lock:
            key = None if tenant_id is None else tenant_key(tenant_id)
            count = 0
            for grant in self._tokens.values():
                if key is None or grant.tenant == key:
                    grant.expires_at = 0.0
                    count += 1
            return count

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._token_counts.clear()
            self._calls.clear()
            self._writes.clear()
            self._test_messages.clear()

    def reset(self, *, revoke_tokens: bool = False) -> None:
        """Back to a fresh simulator: no tenants, no faults, default client, empty log.

        Issued tokens stay valid unless `revoke_tokens`: a client's token cache outliving one
        test must not turn the next test's first call into a 401 it did not ask for.
        """
        with self._lock:
            self._tenants.clear()
            self._pages.clear()
            self._token_faults.clear()
            self._reset_clients()
            if revoke_tokens:
                self._tokens.clear()
            self.reset_log()

    # -- observation -----------------------------------------------------------------------------

    def log(self, tenant_id: str | None = None) -> list[LogEntry]:
        with self._lock:
            if tenant_id is None:
                return list(self._log)
            key = tenant_key(tenant_id)
            return [entry for entry in self._log if entry.tenant == key]

    def token_requests(self, tenant_id: str | None = None) -> int:
        with self._lock:
            if tenant_id is None:
                return sum(self._token_counts.values())
            return self._token_counts[tenant_key(tenant_id)]

    def calls(self, tenant_id: str | None = None) -> dict[str, int]:
        with self._lock:
            if tenant_id is not None:
                return dict(self._calls.get(tenant_key(tenant_id), Counter()))
            total: Counter[str] = Counter()
            for counter in self._calls.values():
                total.update(counter)
            return dict(total)

    def writes(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if tenant_id is None:
                return [dict(item) for item in self._writes]
            key = tenant_key(tenant_id)
            return [dict(item) for item in self._writes if item["tenant"] == key]

    def test_messages(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """Test messages Validate-OutboundConnector sent (each one is real mail in Exchange Online)."""
        with self._lock:
            key = None if tenant_id is None else tenant_key(tenant_id)
            return [dict(item) for item in self._test_messages if key is None or item["tenant"] == key]

    def connectors(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's true connectors, replicated or not (what Exchange really holds)."""
        with self._lock:
            tenant = self._tenant(tenant_id)
            return [] if tenant is None else tenant.state.rows(include_hidden=True)

    def journal_rules(self, tenant_id: str) -> list[dict[str, Any]]:
        with self._lock:
            tenant = self._tenant(tenant_id)
            return [] if tenant is None else [rule.row() for rule in tenant.state.journal_rules]

    def journaling_report_ndr_to(self, tenant_id: str) -> str | None:
        with self._lock:
            tenant = self._tenant(tenant_id)
            return None if tenant is None else tenant.state.journaling_report_ndr_to

    def accepted_domains(self, tenant_id: str) -> list[dict[str, Any]]:
        with self._lock:
            tenant = self._tenant(tenant_id)
            return [] if tenant is None else [dict(row) for row in tenant.state.accepted_domains]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "token_requests": dict(self._token_counts),
                "calls": {tenant: dict(counter) for tenant, counter in self._calls.items()},
                "writes": [dict(item) for item in self._writes],
                "test_messages": [dict(item) for item in self._test_messages],
                "requests": len(self._log),
                "tenants": sorted(self._tenants),
            }

    def _record(self, entry: LogEntry) -> None:
        with self._lock:
            self._log.append(entry)
        hook = self.answer_hook  # called without the lock: it may block
        if hook is not None and entry.kind == "invoke":
            hook(entry)

    # -- Entra ID --------------------------------------------------------------------------------

    def discovery(self, tenant_id: str, base_url: str) -> HttpReply:
        """OpenID configuration of a tenant, pointing at this simulator (what MSAL reads)."""
        started = time.perf_counter()
        with self._lock:
            tenant = self._tenant(tenant_id)
            exists = tenant is not None and tenant.options.exists
        key = tenant_key(tenant_id)
        if not exists:
            error = entra.tenant_not_found(tenant_id)
            reply = entra.aad_error_reply(400, "invalid_tenant", error.code, error.description)
        else:
            base = f"{base_url}/{tenant_id}"
            reply = HttpReply.json(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                    "jwks_uri": f"{base_url}/{tenant_id}/discovery/v2.0/keys",
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "issuer": f"{base}/v2.0",
                    "request_uri_parameter_supported": False,
                    "userinfo_endpoint": f"{base_url}/oidc/userinfo",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "http_logout_supported": True,
                    "frontchannel_logout_supported": True,
                    "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                    "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "appid"],
                    "kerberos_endpoint": f"{base}/kerberos",
                    "tenant_region_scope": "AS",
                    "cloud_instance_name": "microsoftonline.com",
                    "cloud_graph_host_name": "graph.windows.net",
                    "msgraph_host": "graph.microsoft.com",
                    "rbac_url": "https://pas.windows.net",
                },
            )
        self._record(
            LogEntry(
                time=self.clock(),
                tenant=key,
                kind="discovery",
                cmdlet=None,
                parameters={},
                status=reply.status,
                duration_ms=(time.perf_counter() - started) * 1000,
                error=_error_text(reply),
            )
        )
        return reply

    def token(self, tenant_id: str, form: Mapping[str, str], base_url: str) -> HttpReply:
        """The client-credentials grant."""
        started = time.perf_counter()
        key = tenant_key(tenant_id)
        fault_name: str | None = None
        with self._lock:
            self._token_counts[key] += 1
            queue = self._token_faults.get(key)
            spec = queue.take("token", None) if queue else None
            if spec is not None:
                fault_name = spec.kind
                reply = _render_token_fault(spec)
            else:
                try:
                    reply = self._grant(tenant_id, form)
                except AadError as exc:
                    reply = exc.reply()
        self._record(
            LogEntry(
                time=self.clock(),
                tenant=key,
                kind="token",
                cmdlet=None,
                parameters={k: v for k, v in form.items() if k in ("grant_type", "client_id", "scope")},
                status=reply.status,
                duration_ms=(time.perf_counter() - started) * 1000,
                fault=fault_name,
                client_id=form.get("client_id"),
                error=_error_text(reply),
            )
        )
        return reply

    def _grant(self, tenant_id: str, form: Mapping[str, str]) -> HttpReply:
        key = tenant_key(tenant_id)
        tenant = self._tenant(tenant_id)
        if tenant is None or not tenant.options.exists:
            raise entra.tenant_not_found(tenant_id)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _missing_parameter("grant_type")
        if grant_type != "client_credentials":
            raise AadError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        client_id = form.get("client_id", "")
        if not client_id:
            raise _missing_parameter("client_id")
        client = self._clients.get(client_id.lower())
        if client is None:
            raise entra.consent_missing(client_id, tenant_id, 700016)
        if not tenant.options.consent:
            raise entra.consent_missing(client_id, tenant_id, tenant.options.consent_error)
        if "client_secret" in form:
            entra.check_secret(client, form["client_secret"])
        elif "client_assertion" in form:
            if form.get("client_assertion_type") != entra.JWT_BEARER:
                raise AadError(
                    400,
                    "invalid_request",
                    50027,
                    f"Invalid client_assertion_type; it must be '{entra.JWT_BEARER}'.",
                )
            entra.check_assertion(
                client,
                form["client_assertion"],
                token_endpoint_paths=(f"/{key}/oauth2/v2.0/token", f"/{key}/oauth2/token"),
                now=self.clock(),
            )
        else:
            raise AadError(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            )
        scope = form.get("scope", "")
        if not scope:
            raise _missing_parameter("scope")
        scopes = scope.split()
        if any(not item.endswith("/.default") for item in scopes):
            raise AadError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value "
                "with /.default suffixed to the resource identifier (application ID URI).",
            )
        if scopes != [entra.EXCHANGE_SCOPE]:
            raise AadError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {scope.removesuffix('/.default')} was not found in the tenant named "
                f"{tenant_id}. This can happen if the application has not been installed by the administrator of the "
                "tenant or consented to by any user in the tenant.",
            )
        token = entra.new_access_token()
        options = tenant.options
        self._tokens[token] = _Grant(
            key,
            client.client_id,
            self.clock() + self.token_lifetime,
            permission=options.permission_granted,
            role=options.role_missing is None,
        )
        return HttpReply.json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            },
            (("Cache-Control", "no-store"),),
        )

    # -- Exchange admin API ----------------------------------------------------------------------

    def invoke(
        self,
        tenant_id: str,
        headers: Mapping[str, str],
        body: bytes,
        query: Mapping[str, str],
        base_url: str,
    ) -> HttpReply:
        """One `POST /adminapi/beta/{tenant}/InvokeCommand`."""
        started = time.perf_counter()
        key = tenant_key(tenant_id)
        cmdlet, parameters = _peek_cmdlet(body)
        fault_name: str | None = None
        tenant: _Tenant | None = None
        spec: FaultSpec | None = None
        client_id = ""
        entered = False
        try:
            reply, grant = self._authorize(key, headers)
            client_id = "" if grant is None else grant.client_id
            if reply is None:
                reply = _check_anchor(key, headers)
            if reply is None and cmdlet is None:
                reply = error_reply(
                    "message",
                    400,
                    "System.ArgumentException",
                    'The request body must be {"CmdletInput": {"CmdletName": "...", "Parameters": {...}}}.',
                )
            if reply is None:
                assert cmdlet is not None and grant is not None
                with self._lock:
                    tenant = self._tenant(key)
                    assert tenant is not None  # a valid token implies the tenant
                    self._calls.setdefault(key, Counter())[_display_cmdlet(cmdlet)] += 1
                    options = tenant.options
                    # Authorization comes from the token, before any cmdlet runs: a refused call
                    # is answered at once and never counts against the concurrency limit.
                    if not grant.permission:
                        fault_name = "permission_missing"
                        reply = render_invoke_fault(FaultSpec("permission_missing"), client_id=client_id)
                    elif not grant.role:
                        fault_name = "role_missing_403"
                        reply = role_missing_403_reply(options.role_missing_gzip)
                    else:
                        tenant.in_flight += 1
                        entered = True
                        spec = self._pick_fault(tenant, cmdlet)
                if reply is None:
                    latency = options.cmdlet_latency_ms.get(_display_cmdlet(cmdlet), options.latency_ms)
                    if latency:
                        # The cmdlet runs after the wait whether or not the caller is still
                        # there: a client that timed out cannot know whether it ran.
                        self.sleep(latency / 1000)
                    if spec is not None:
                        fault_name = spec.kind
                        reply = render_invoke_fault(spec, client_id=client_id)
                    else:
                        reply = self._run(
                            tenant, key, cmdlet, parameters=parameters or {}, query=query, base_url=base_url,
                            preferred_page_size=_preferred_page_size(headers),
                        )
        finally:
            if entered and tenant is not None:
                with self._lock:
                    tenant.in_flight -= 1
        self._record(
            LogEntry(
                time=self.clock(),
                tenant=key,
                kind="invoke",
                cmdlet=None if cmdlet is None else _display_cmdlet(cmdlet),
                parameters=parameters or {},
                status=reply.status,
                duration_ms=(time.perf_counter() - started) * 1000,
                fault=fault_name,
                client_id=client_id or None,
                error=_error_text(reply),
                page="$skiptoken" in query,
            )
        )
        return reply

    def _authorize(self, key: str, headers: Mapping[str, str]) -> tuple[HttpReply | None, _Grant | None]:
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            grant = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            # Tenants are recreated on demand, so a token outlives `reset()` (see there).
            tenant = self._tenant(key) if grant is not None else None
            valid = (
                grant is not None
                and grant.tenant == key
                and grant.expires_at > self.clock()
                and tenant is not None
                and tenant.options.exists
            )
        if not valid or grant is None:
            return (
                error_reply(
                    "message",
                    401,
                    "Microsoft.Exchange.Security.Authentication.InvalidTokenException",
                    "The access token is missing, invalid, expired, or was not issued for this tenant.",
                    (
                        (
                            "WWW-Authenticate",
                            'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
                            'token_types="app_asserted_user_v1 service_asserted_app_v1", error="invalid_token"',
                        ),
                    ),
                ),
                None,
            )
        return None, grant

    def _pick_fault(self, tenant: _Tenant, cmdlet: str) -> FaultSpec | None:
        """The failure this call gets, if any; called with the lock held."""
        options = tenant.options
        if options.max_concurrent is not None and tenant.in_flight > options.max_concurrent:
            return FaultSpec("concurrency")
        queued = tenant.faults.take("invoke", cmdlet)
        if queued is not None:
            return queued
        if options.transient_rate > 0 and tenant.rng.random() < options.transient_rate:
            kind = tenant.rng.choice(options.transient_kinds)
            retry_after = options.transient_retry_after if kind in ("throttle", "unavailable") else None
            return FaultSpec(kind, retry_after=retry_after)
        return None

    def _run(
        self,
        tenant: _Tenant,
        key: str,
        cmdlet: str,
        *,
        parameters: Mapping[str, object],
        query: Mapping[str, str],
        base_url: str,
        preferred_page_size: int | None = None,
    ) -> HttpReply:
        shape = tenant.options.error_shape
        with self._lock:
            skip = query.get("$skiptoken")
            if skip is not None:
                if tenant.refused_next_links < tenant.options.refuse_next_links:
                    # The live behaviour: the cursor is bound to a backend this request did
                    # not land on, so the page is refused although it has not expired.
                    tenant.refused_next_links += 1
                    self._pages.pop(skip, None)
                    return error_reply(shape, 400, "System.Exception", PAGE_EXPIRED)
                return self._next_page(key, cmdlet, skip, base_url, shape)
            try:
                result = tenant.state.invoke(cmdlet, parameters)
            except CmdletError as exc:
                return error_reply(shape, exc.status, exc.type_name, exc.message)
            if result.write is not None:
                entry = result.write.to_dict()
                entry["tenant"] = key
                entry["time"] = self.clock()
                self._writes.append(entry)
            for connector, recipient in result.test_messages:
                self._test_messages.append(
                    {"tenant": key, "connector": connector, "recipient": recipient, "time": self.clock()}
                )
            page_size = tenant.options.page_size or self.page_size
            if preferred_page_size is not None:
                # `Prefer: odata.maxpagesize=N` is honoured up to the server's own page size.
                page_size = min(page_size, preferred_page_size)
            return self._page_reply(
                key,
                _display_cmdlet(cmdlet),
                result.rows,
                warnings=result.warnings,
                page_size=page_size,
                base_url=base_url,
            )

    def _page_reply(
        self,
        key: str,
        cmdlet: str,
        rows: list[dict[str, Any]],
        *,
        warnings: list[str],
        page_size: int,
        base_url: str,
    ) -> HttpReply:
        payload: dict[str, Any] = {
            "@odata.context": f"{base_url}/adminapi/beta/{key}/$metadata#Collection(Exchange.GenericHashTable)",
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": warnings,
            "value": rows[:page_size],
        }
        rest = rows[page_size:]
        if rest:
            now = self.clock()
            self._pages = {token: page for token, page in self._pages.items() if page.expires_at > now}
            skip = uuid.uuid4().hex
            self._pages[skip] = _Page(key, cmdlet, rest, page_size, warnings, now + PAGE_EXPIRY_SECONDS)
            payload["@odata.nextLink"] = f"{base_url}/adminapi/beta/{key}/InvokeCommand?$skiptoken={quote(skip)}"
        return HttpReply.json(200, payload)

    def _next_page(self, key: str, cmdlet: str, skip: str, base_url: str, shape: Any) -> HttpReply:
        page = self._pages.pop(skip, None)
        if (
            page is None
            or page.tenant != key
            or page.cmdlet != _display_cmdlet(cmdlet)
            or page.expires_at <= self.clock()
        ):
            return error_reply(shape, 400, "System.Exception", PAGE_EXPIRED)
        return self._page_reply(
            key, page.cmdlet, page.rows, warnings=page.warnings, page_size=page.page_size, base_url=base_url
        )


def _preferred_page_size(headers: Mapping[str, str]) -> int | None:
    """N of a `Prefer: odata.maxpagesize=N` request header (RFC 7240), if there is one."""
    for preference in headers.get("prefer", "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "odata.maxpagesize":
            try:
                size = int(value.strip().strip('"'))
            except ValueError:
                return None
            return size if size > 0 else None
    return None


def _missing_parameter(name: str) -> AadError:
    return AadError(400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'.")


def _render_token_fault(spec: FaultSpec) -> HttpReply:
    """Entra's answer when it is the one failing: a transient AADSTS error, or a dropped line."""
    if spec.kind == "disconnect":
        return HttpReply(0, disconnect=True)
    status = spec.status or {"throttle": 429, "gateway_timeout": 504, "internal": 500}.get(spec.kind, 503)
    reply = entra.aad_error_reply(
        status,
        "temporarily_unavailable",
        90033,
        spec.message or "A transient error has occurred. Please try again.",
    )
    if spec.retry_after is not None:
        return HttpReply(reply.status, reply.body, (*reply.headers, ("Retry-After", str(spec.retry_after))))
    return reply


def _fault_spec(fault: object) -> FaultSpec:
    if fault is None:
        return FaultSpec("unavailable")
    if isinstance(fault, str):
        return FaultSpec(fault)
    if isinstance(fault, FaultSpec):
        return fault
    if isinstance(fault, dict):
        return FaultSpec.from_dict(fault)
    raise ValueError("option 'fault' must be a fault kind name or a fault object")


def _peek_cmdlet(body: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """Cmdlet name and parameters of a request body, or (None, None) if it is malformed."""
    try:
        payload = json.loads(body or b"null")
    except ValueError:
        return None, None
    if not isinstance(payload, dict):
        return None, None
    cmdlet_input = payload.get("CmdletInput")
    if not isinstance(cmdlet_input, dict):
        return None, None
    name = cmdlet_input.get("CmdletName")
    parameters = cmdlet_input.get("Parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(name, str) or not name or not isinstance(parameters, dict):
        return None, None
    return name, parameters


def _display_cmdlet(name: str) -> str:
    try:
        return canonical_cmdlet(name)
    except CmdletError:
        return name


def _check_anchor(key: str, headers: Mapping[str, str]) -> HttpReply | None:
    expected = ANCHOR_MAILBOX + key
    anchor = headers.get("x-anchormailbox", "")
    if anchor.strip().lower() == expected.lower():
        return None
    return error_reply(
        "message",
        400,
        "Microsoft.Exchange.Data.Common.InvalidAnchorMailboxException",
        f"The X-AnchorMailbox header must be '{expected}' for this tenant; got '{anchor}'.",
    )


# Kept importable for the HTTP layer and the Simulator facade.
__all__ = ["ANCHOR_MAILBOX", "WRITE_CMDLETS", "Backend", "LogEntry", "is_guid", "tenant_key"]
