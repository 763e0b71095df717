"""`LocalFunctionsHost`: runs `function_app.py` locally, without Azure Functions Core Tools.

Core Tools cannot be installed here, yet the product's behaviour lives as much in the host as
in the code: which URL reaches which function, who needs a key, how often a failing notice
is retried and when it is given up to the poison queue. This host indexes the very
`FunctionApp` that is deployed (`app.get_functions()`), takes its settings from the same
app settings (`%ACTIVATION_QUEUE%`, the `AzureWebJobsStorage` connection) and its queue and
HTTP behaviour from the same host.json, so what an operator sees locally is what Azure does.

It is for local development and tests only. In Azure, and locally with Core Tools
(`func start`), the same `function_app.py` runs unchanged and this module is not involved.

    with LocalFunctionsHost(function_app.app, host_json=Path("host.json"), environ=os.environ,
                            port=0) as host:
        requests.get(f"{host.url}/api/health")
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import azure.functions as func

from .hostconfig import HostConfig, HostConfigError
from .httpserver import FunctionsHTTPServer
from .queuepump import QueueCounters, QueueFunction, QueuePump
from .routes import HttpFunction, RouteTable

log = logging.getLogger("localrun.host")

LOOPBACK = "127.0.0.1"
DEFAULT_CONNECTION = "AzureWebJobsStorage"
_SETTING_REF = re.compile(r"%([^%]+)%")
_AUTH_LEVELS = {"anonymous", "function", "admin"}
# Bindings the runner knows how to feed; anything else would be called with a missing argument.
_SUPPORTED_TRIGGERS = {"httpTrigger", "queueTrigger"}
_SUPPORTED_OUTPUTS = {"http"}


# FunctionApp.get_functions() may run once per app: a second call fails its duplicate-name check
# (the Python worker indexes once per process). Hosts started one after another share the result.
_indexed: weakref.WeakKeyDictionary[func.FunctionApp, list[func.decorators.function_app.Function]] = (
    weakref.WeakKeyDictionary())
_index_lock = threading.Lock()


def app_functions(app: func.FunctionApp) -> list[func.decorators.function_app.Function]:
    """The app's functions, indexed once per app."""
    with _index_lock:
        functions = _indexed.get(app)
        if functions is None:
            functions = _indexed[app] = app.get_functions()
        return functions


def resolve_setting_refs(value: str, environ: Mapping[str, str], *, where: str) -> str:
    """Replace every `%NAME%` in a binding value with the app setting NAME, as the host does."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = environ.get(name)
        if resolved is None or resolved == "":
            raise HostConfigError(f"{where}: app setting {name} is not set (referenced as %{name}%)")
        return resolved

    return _SETTING_REF.sub(setting, value)


def connection_string_for(connection: str | None, environ: Mapping[str, str], *, where: str) -> str:
    """The storage connection string a binding's `connection` names (the host's look-up order)."""
    name = connection or DEFAULT_CONNECTION
    for candidate in (name, f"AzureWebJobs{name}"):
        value = environ.get(candidate, "").strip()
        if value:
            return value
    raise HostConfigError(
        f"{where}: connection setting {name} is not set; the local runner needs a connection string "
        "(identity-based connections such as AzureWebJobsStorage__accountName work only in Azure)"
    )


def index_functions(
    app: func.FunctionApp, config: HostConfig, environ: Mapping[str, str]
) -> tuple[list[HttpFunction], list[QueueFunction]]:
    """The app's HTTP and queue functions, with routes, settings and connections resolved."""
    http: list[HttpFunction] = []
    queues: list[QueueFunction] = []
    for function in app_functions(app):
        name = function.get_function_name() or function.get_user_function().__name__
        trigger = function.get_trigger()
        if trigger is None:
            log.warning("function %s has no trigger; skipped", name)
            continue
        spec: dict[str, Any] = trigger.get_dict_repr()
        kind = str(spec.get("type", ""))
        if kind not in _SUPPORTED_TRIGGERS:
            log.warning("function %s has a %s trigger, which the local runner does not serve; skipped", name, kind)
            continue
        for binding in function.get_bindings():
            other: dict[str, Any] = binding.get_dict_repr()
            if other is spec or other.get("type") in _SUPPORTED_TRIGGERS:
                continue
            if other.get("type") not in _SUPPORTED_OUTPUTS:
                raise HostConfigError(f"function {name}: the local runner does not support "
                                      f"{other.get('type')} bindings")
        user_function: Callable[..., Any] = function.get_user_function()
        arg_name = str(spec.get("name") or "req")
        where = f"function {name}"
        if kind == "httpTrigger":
            route = str(spec.get("route") or name)
            prefix = config.route_prefix
            methods = spec.get("methods")
            level = str(spec.get("authLevel") or "function").lower()
            if level not in _AUTH_LEVELS:
                raise HostConfigError(f"{where}: unknown authLevel {spec.get('authLevel')!r}")
            http.append(HttpFunction(
                name=name,
                route=f"{prefix}/{route.strip('/')}".strip("/") if prefix else route.strip("/"),
                methods=frozenset(str(m).upper() for m in methods) if methods else None,
                auth_level=level,
                arg_name=arg_name,
                user_function=user_function,
            ))
        else:
            queue_name = resolve_setting_refs(str(spec.get("queueName", "")), environ, where=where)
            if not queue_name:
                raise HostConfigError(f"{where}: queue trigger without a queue name")
            queues.append(QueueFunction(
                name=name,
                queue_name=queue_name,
                connection_string=connection_string_for(spec.get("connection"), environ, where=where),
                arg_name=arg_name,
                user_function=user_function,
            ))
    return http, queues


class LocalFunctionsHost:
    """Serves a FunctionApp's HTTP triggers on loopback and drives its queue triggers from storage."""

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        host_json: Path,
        environ: Mapping[str, str],
        port: int = 7071,
        function_key: str | None = None,
        drain_timeout: float = 30.0,
    ) -> None:
        self.config = HostConfig.from_file(host_json)
        self.http_functions, self.queue_functions = index_functions(app, config=self.config, environ=environ)
        self.routes = RouteTable(self.http_functions)
        # One key for every function- and admin-level route, new each start unless given: a
        # local key must never become something people paste into scripts and keep.
        self.function_key = function_key or secrets.token_urlsafe(32)
        self.drain_timeout = drain_timeout
        self._requested_port = port
        self._pumps = [QueuePump(f, self.config.queues) for f in self.queue_functions]
        self._server: FunctionsHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> LocalFunctionsHost:
        if self._server is not None:
            return self
        for pump in self._pumps:
            pump.ensure_queue()
        self._server = FunctionsHTTPServer((LOOPBACK, self._requested_port), self.routes, self.function_key)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="localrun-http", daemon=True)
        self._thread.start()
        for pump in self._pumps:
            pump.start()
        log.info("Host started: %s, %d HTTP function(s), %d queue function(s)", self.url,
                 len(self.http_functions), len(self._pumps))
        return self

    def stop(self) -> None:
        """Stop taking work, let running work finish (bounded by `drain_timeout`), then close."""
        server, self._server = self._server, None
        if server is None:
            return
        for pump in self._pumps:
            pump.stop_polling()
        server.shutdown()  # no new HTTP requests
        busy = server.wait_idle(self.drain_timeout)
        if busy:
            log.warning("%d HTTP request(s) still running at shutdown", busy)
        for pump in self._pumps:
            pump.stop(timeout=self.drain_timeout)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        log.info("Host stopped")

    def __enter__(self) -> LocalFunctionsHost:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the host is not running; call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL without the route prefix, e.g. http://127.0.0.1:7071."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def api_url(self) -> str:
        """Base URL with host.json's route prefix, e.g. http://127.0.0.1:7071/api."""
        prefix = self.config.route_prefix
        return f"{self.url}/{prefix}" if prefix else self.url

    # -- counters ------------------------------------------------------------------------------
    def counters(self, queue_name: str) -> QueueCounters:
        """Delivery outcomes of one queue trigger's queue (KeyError for a queue no trigger reads)."""
        for pump in self._pumps:
            if pump.queue_name == queue_name:
                return pump.counters
        raise KeyError(queue_name)

    @property
    def processed(self) -> int:
        """Queue messages whose function succeeded, over every queue."""
        return sum(p.counters.processed for p in self._pumps)

    @property
    def failed(self) -> int:
        """Queue deliveries whose function raised, over every queue."""
        return sum(p.counters.failed for p in self._pumps)

    @property
    def poisoned(self) -> int:
        """Messages moved to a poison queue, over every queue."""
        return sum(p.counters.poisoned for p in self._pumps)

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self._pumps)
