"""HTTPS front of the simulator: Entra ID and Exchange admin routes, and the control API.

Routes (all under one origin, so `ENTRA_AUTHORITY_HOST` and `EXO_ADMIN_API_URL` can both be the
simulator's URL):

* `GET  /{tenant}/v2.0/.well-known/openid-configuration`, `GET /{tenant}/discovery/v2.0/keys`
* `POST /{tenant}/oauth2/v2.0/token`
* `POST /adminapi/beta/{tenant}/InvokeCommand[?$skiptoken=…]`
* `/_sim/…`: the control API (see `CONTROL_ROUTES`), so that a simulator running in another
  process (`make run`, benchmarks) is configured and observed like an in-process one.

HTTP/1.1 with keep-alive, as Microsoft's endpoints: the product reuses connections, and a
server that closed each one would hide the cost (or the bugs) of that reuse. The TLS handshake
runs in the connection's own thread so a slow or failing client never stalls the others.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import socket
import ssl
import sys
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from exosim.core import Backend
from exosim.entra import ClientRegistration
from exosim.faults import FaultSpec, HttpReply

_TENANT = r"(?P<tenant>[^/]+)"
_DISCOVERY = re.compile(rf"^/{_TENANT}/v2\.0/\.well-known/openid-configuration$")
_KEYS = re.compile(rf"^/{_TENANT}/discovery/v2\.0/keys$")
_TOKEN = re.compile(rf"^/{_TENANT}/oauth2/v2\.0/token$")
_AUTHORIZE = re.compile(rf"^/{_TENANT}/oauth2/v2\.0/(authorize|devicecode|logout)$")
_INVOKE = re.compile(rf"^/adminapi/beta/{_TENANT}/InvokeCommand$", re.IGNORECASE)

CONTROL_ROUTES = (
    "GET    /_sim/health",
    "GET    /_sim/info",
    "GET    /_sim/stats",
    "GET    /_sim/log[?tenant=ID]",
    "DELETE /_sim/log                      (also POST /_sim/log/reset)",
    "POST   /_sim/reset                    {revoke_tokens?: bool}",
    "GET    /_sim/clients",
    "POST   /_sim/clients                  {client_id, secret?, certificate_pem?, federation?, ...}",
    "POST   /_sim/tokens/expire            {tenant?: ID}",
    "GET    /_sim/tenants/{tenant}",
    "POST   /_sim/tenants/{tenant}         {option: value, ...}",
    "GET    /_sim/tenants/{tenant}/stats",
    "GET    /_sim/tenants/{tenant}/connectors",
    "POST   /_sim/tenants/{tenant}/connectors  {connector properties} or [..]",
    "GET    /_sim/tenants/{tenant}/accepted-domains",
    "POST   /_sim/tenants/{tenant}/faults  {kind, count?, status?, shape?, retry_after?, ...}",
    "DELETE /_sim/tenants/{tenant}/faults",
    "POST   /_sim/tenants/{tenant}/replicate",
)


class _ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json_body(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except ValueError:
        raise _ControlError(400, "the body must be JSON") from None


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _ControlError(400, "the body must be a JSON object")
    return data


class SimulatorHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that speaks TLS and can drop its open connections on shutdown."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        backend: Backend,
        context: ssl.SSLContext,
        *,
        info: Callable[[], dict[str, Any]],
        verbose: bool = False,
    ) -> None:
        self.backend = backend
        self.ssl_context = context
        self.info = info
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        sock.settimeout(30)
        try:
            tls = self.ssl_context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            # A client that does not trust the CA aborts the handshake: nothing to serve.
            return
        with self._connections_lock:
            self._connections.add(tls)
        try:
            _Handler(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            with self._connections_lock:
                self._connections.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "exosim/1.0"
    sys_version = ""
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 30
    # Headers and body leave in separate writes; with Nagle on, a keep-alive client's delayed
    # ACK would add ~40 ms to every response and distort every latency a benchmark measures.
    disable_nagle_algorithm = True
    server: SimulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            return b""
        return self.rfile.read(size) if size > 0 else b""

    def _base_url(self) -> str:
        host = self.headers.get("Host")
        if host:
            return f"https://{host}"
        return str(self.server.info()["url"])

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            reply = self._route(method, path, query, body)
        except _ControlError as exc:
            reply = HttpReply.json(exc.status, {"error": str(exc)})
        except ValueError as exc:
            reply = HttpReply.json(400, {"error": str(exc)})
        self._send(reply)

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> HttpReply:
        backend = self.server.backend
        if path.startswith("/_sim/") or path == "/_sim":
            return self._control(method, path, query, body)
        if match := _INVOKE.match(path):
            if method != "POST":
                return _method_not_allowed()
            headers = {key.lower(): value for key, value in self.headers.items()}
            return backend.invoke(match["tenant"], headers, body, query, self._base_url())
        if match := _TOKEN.match(path):
            if method != "POST":
                return _method_not_allowed()
            return backend.token(match["tenant"], self._form(body), self._base_url())
        if match := _DISCOVERY.match(path):
            return backend.discovery(match["tenant"], self._base_url())
        if _KEYS.match(path):
            # Access tokens are opaque here, so there is no signing key to publish.
            return HttpReply.json(200, {"keys": []})
        if _AUTHORIZE.match(path):
            return HttpReply.json(
                400,
                {
                    "error": "unsupported_response_type",
                    "error_description": "The simulator serves the client-credentials grant only.",
                },
            )
        return HttpReply.json(404, {"error": {"code": "NotFound", "message": f"No route for {method} {path}."}})

    def _form(self, body: bytes) -> dict[str, str]:
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        authorization = self.headers.get("Authorization", "")
        if authorization.lower().startswith("basic "):
            # client_secret_basic: the same credentials in a header instead of the form.
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            client_id, _, secret = decoded.partition(":")
            form.setdefault("client_id", unquote(client_id))
            form.setdefault("client_secret", unquote(secret))
        return form

    def _control(self, method: str, path: str, query: dict[str, str], body: bytes) -> HttpReply:
        backend = self.server.backend
        segments = [segment for segment in path.split("/") if segment][1:]
        route = (method, *segments)
        if route == ("GET", "health"):
            return HttpReply.json(200, {"status": "ok"})
        if route == ("GET", "info"):
            return HttpReply.json(200, {**self.server.info(), "routes": list(CONTROL_ROUTES)})
        if route == ("GET", "stats"):
            return HttpReply.json(200, backend.stats())
        if route == ("GET", "log"):
            entries = backend.log(query.get("tenant"))
            return HttpReply.json(200, {"entries": [entry.to_dict() for entry in entries]})
        if route in (("DELETE", "log"), ("POST", "log", "reset")):
            backend.reset_log()
            return HttpReply.json(200, {"status": "ok"})
        if route == ("POST", "reset"):
            data = _object(_json_body(body))
            backend.reset(revoke_tokens=bool(data.get("revoke_tokens", False)))
            return HttpReply.json(200, {"status": "ok"})
        if route == ("GET", "clients"):
            return HttpReply.json(200, {"clients": backend.clients()})
        if route == ("POST", "clients"):
            data = _object(_json_body(body))
            try:
                registration = ClientRegistration(**data)
            except TypeError as exc:
                raise _ControlError(400, f"invalid client registration: {exc}") from None
            if not isinstance(registration.client_id, str) or not registration.client_id:
                raise _ControlError(400, "client_id is required")
            backend.register_client(registration)
            return HttpReply.json(200, registration.to_dict())
        if route == ("POST", "tokens", "expire"):
            data = _object(_json_body(body))
            tenant = data.get("tenant")
            return HttpReply.json(200, {"expired": backend.expire_tokens(None if tenant is None else str(tenant))})
        if len(segments) >= 2 and segments[0] == "tenants":
            return self._tenant_control(method, segments[1], segments[2:], body)
        raise _ControlError(404, f"no control route {method} {path}")

    def _tenant_control(self, method: str, tenant: str, rest: list[str], body: bytes) -> HttpReply:
        backend = self.server.backend
        route = (method, *rest)
        if route == ("GET",):
            return HttpReply.json(200, backend.tenant_info(tenant))
        if route == ("POST",):
            return HttpReply.json(200, backend.configure_tenant(tenant, _object(_json_body(body))))
        if route == ("GET", "stats"):
            return HttpReply.json(
                200,
                {
                    "token_requests": backend.token_requests(tenant),
                    "calls": backend.calls(tenant),
                    "writes": backend.writes(tenant),
                    "test_messages": backend.test_messages(tenant),
                },
            )
        if route == ("GET", "connectors"):
            return HttpReply.json(200, {"value": backend.connectors(tenant)})
        if route == ("POST", "connectors"):
            data = _json_body(body)
            items = data if isinstance(data, list) else [data]
            rows = [backend.seed_connector(tenant, _object(item)) for item in items]
            return HttpReply.json(200, {"value": rows})
        if route == ("GET", "accepted-domains"):
            return HttpReply.json(200, {"value": backend.accepted_domains(tenant)})
        if route == ("POST", "faults"):
            data = dict(_object(_json_body(body)))
            count = data.pop("count", 1)
            if isinstance(count, bool) or not isinstance(count, int):
                raise _ControlError(400, "count must be an integer")
            backend.fail_next(tenant, FaultSpec.from_dict(data), count)
            return HttpReply.json(200, backend.tenant_info(tenant))
        if route == ("DELETE", "faults"):
            backend.clear_faults(tenant)
            return HttpReply.json(200, backend.tenant_info(tenant))
        if route == ("POST", "replicate"):
            backend.replicate(tenant)
            return HttpReply.json(200, {"status": "ok"})
        raise _ControlError(404, f"no control route {method} /_sim/tenants/{tenant}/{'/'.join(rest)}")

    def _send(self, reply: HttpReply) -> None:
        if reply.disconnect:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(reply.status)
        has_type = False
        for name, value in reply.headers:
            has_type = has_type or name.lower() == "content-type"
            self.send_header(name, value)
        if not has_type and reply.body:
            self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("request-id", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(reply.body)


def _method_not_allowed() -> HttpReply:
    return HttpReply.json(405, {"error": {"code": "MethodNotAllowed", "message": "The method is not allowed."}})
