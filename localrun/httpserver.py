"""The HTTP side of the local runner: HTTP triggers served over real HTTP on loopback.

Operators, the status page and `curl` talk to the API over HTTP, so the local stack serves it
over HTTP too, with what the Functions host adds around a function: the route prefix, the
function-key check (`x-functions-key` header, else the `code` query parameter in any letter
case; 401 without a key), 404 when no route takes the path with the request's method (see
`routes`), and a 500 that tells the caller nothing about the failure while the log keeps
the traceback.

The key look-up follows the host's `AuthenticationLevelHandler.GetAuthorizationKeyInfoAsync`
(Azure/azure-functions-host `src/WebJobs.Script.WebHost/Security/Authentication/Keys/`):
the header first, else `request.Query["code"]`. ASP.NET Core's query collection compares
names with `StringComparer.OrdinalIgnoreCase` (dotnet/aspnetcore
`src/Http/Http/src/QueryCollection.cs`; `QueryHelpers.ParseQuery` is documented to return
"a case-insensitive (OrdinalIgnoreCase) key comparer"), so `?Code=` and `?CODE=` carry the key
in Azure too; of repeated names the first value counts (`values.First()`).

Core Tools' `func start` does not check keys at all; this runner does, as Azure does, so a
script that forgets its key fails here first rather than in production.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from .routes import HttpFunction, RouteTable

log = logging.getLogger("localrun.http")

KEY_HEADER = "x-functions-key"
KEY_PARAM = "code"
MAX_BODY_BYTES = 100 * 1024 * 1024  # the Functions host's default request size limit
_IDLE_CONNECTION_SECONDS = 30.0


def _problem(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")


class FunctionsHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the route table and the host key."""

    daemon_threads = True  # a hung function must not keep the process alive after stop()
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], routes: RouteTable, function_key: str) -> None:
        super().__init__(address, _Handler)
        self.routes = routes
        self._function_key = function_key
        self._active = 0
        self._idle = threading.Condition()

    def key_matches(self, supplied: str | None) -> bool:
        if not supplied:
            return False
        return hmac.compare_digest(supplied.encode("utf-8"), self._function_key.encode("utf-8"))

    def request_started(self) -> None:
        with self._idle:
            self._active += 1

    def request_finished(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> int:
        """Wait until no request is being served, up to `timeout` s; returns how many still are."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            return self._active


class _Handler(BaseHTTPRequestHandler):
    server: FunctionsHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "localrun"
    sys_version = ""
    timeout = _IDLE_CONNECTION_SECONDS

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        # The base class would print the request line, query string (and so `?code=`) included.
        pass

    # -----------------------------------------------------------------------------------------
    def _serve(self) -> None:
        self.server.request_started()
        try:
            self._serve_one()
        finally:
            self.server.request_finished()

    def _serve_one(self) -> None:
        split = urlsplit(self.path)
        path = split.path
        try:
            body = self._read_body()
        except _BodyTooLarge:
            self._reply(413, _problem("PAYLOAD_TOO_LARGE", f"the body is larger than {MAX_BODY_BYTES} bytes"))
            self.close_connection = True
            return
        except ValueError as exc:
            self._reply(400, _problem("BAD_REQUEST", str(exc)))
            self.close_connection = True
            return
        match = self.server.routes.match(self.command, path)
        if match.function is None:
            self._reply(404, b"")
            return
        function = match.function
        params = _query(split.query)
        headers = _headers(self.headers.items())
        if function.auth_level != "anonymous":
            supplied = headers.get(KEY_HEADER) if KEY_HEADER in headers else key_parameter(split.query)
            if not self.server.key_matches(supplied):
                self._reply(401, b"")
                return
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        request = func.HttpRequest(
            self.command,
            f"http://{host}{self.path}",
            headers=headers,
            params=params,
            route_params=match.route_params,
            body=body,
        )
        started = time.monotonic()
        invocation = str(uuid.uuid4())
        log.info("Executing 'Functions.%s' (Reason='This function was programmatically called via the host "
                 "APIs.', Id=%s) %s %s", function.name, invocation, self.command, path)
        try:
            response = _call(function, request)
        except Exception:
            log.exception("Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms)",
                          function.name, invocation, (time.monotonic() - started) * 1000)
            self._reply(500, _problem("INTERNAL_ERROR", "the function failed; the host log has the details"))
            return
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms) -> %d", function.name, invocation,
                 (time.monotonic() - started) * 1000, response.status_code)
        self._write_response(response)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            raise ValueError("Content-Length is not a number") from None
        if length < 0:
            raise ValueError("Content-Length is negative")
        if length > MAX_BODY_BYTES:
            raise _BodyTooLarge
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ValueError("malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers carry nothing a function sees
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyTooLarge
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _write_response(self, response: func.HttpResponse) -> None:
        headers = {k: v for k, v in response.headers.items()}
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = f"{response.mimetype}; charset={response.charset}"
        self._reply(response.status_code, response.get_body() or b"", headers)

    def _reply(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        sent_type = False
        for name, value in (headers or {}).items():
            if name.lower() in ("content-length", "transfer-encoding", "connection"):
                continue
            sent_type = sent_type or name.lower() == "content-type"
            self.send_header(name, value)
        if body and not sent_type:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


class _BodyTooLarge(Exception):
    pass


def _query(query: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(name, value)  # the first value of a repeated name, as the host passes it
    return params


def key_parameter(query: str) -> str | None:
    """The function key from the query string: the first `code` parameter, whatever its letter case."""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.casefold() == KEY_PARAM:
            return value
    return None


def _headers(items: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in items:
        key = str(name).lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else str(value)
    return headers


def _call(function: HttpFunction, request: func.HttpRequest) -> func.HttpResponse:
    result = invoke(function.user_function, {function.arg_name: request})
    if isinstance(result, func.HttpResponse):
        return result
    if isinstance(result, str | bytes):
        return func.HttpResponse(result, status_code=200)
    raise TypeError(f"function {function.name} returned {type(result).__name__}, not an HttpResponse")


def invoke(user_function: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """Call a user function the way the Python worker does: sync directly, async to completion."""
    if inspect.iscoroutinefunction(user_function):
        return asyncio.run(user_function(**kwargs))
    return user_function(**kwargs)
