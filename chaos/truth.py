"""What really happened, read from outside the worker: the status API, the queues, Exchange.

The suite keeps its own ledger of what it sent; these functions compare it with what the
product answers over HTTP (as an operator reads it), what is left on the queues, and what
the simulated Exchange holds per tenant, so that no check depends on the worker's own word.
"""

from __future__ import annotations

import contextlib
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from exosim import Simulator
from localrun.status import FINAL_STATUSES, ApiClient

POLL_S = 0.5
LIST_PAGE = 200  # the API's largest page


@dataclass
class Settled:
    """The last status document of each notice, and when each was first seen final."""

    docs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    final_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def pending(self, notice_ids: Iterable[str]) -> list[str]:
        return [n for n in notice_ids if n not in self.final_at]


def status_of(api: ApiClient, notice_id: str) -> tuple[int, dict[str, Any] | None]:
    try:
        reply = api.request("GET", "/activations/" + urllib.parse.quote(notice_id, safe=""))
    except OSError as exc:
        return 0, {"error": str(exc)}
    return reply.status, reply.body if isinstance(reply.body, dict) else None


def await_final(api: ApiClient, notice_ids: Iterable[str], *, timeout: float,
                settled: Settled | None = None) -> Settled:
    """Poll each notice's status (GET /api/activations/{id}) until every one is final or `timeout` passes."""
    result = settled or Settled()
    wanted = list(dict.fromkeys(notice_ids))
    deadline = time.monotonic() + timeout
    while True:
        for notice_id in result.pending(wanted):
            code, doc = status_of(api, notice_id)
            if code == 200 and doc is not None:
                result.docs[notice_id] = doc
                if doc.get("status") in FINAL_STATUSES:
                    result.final_at[notice_id] = time.monotonic()
            elif code >= 500:
                result.errors.append(f"GET /activations/{notice_id} answered {code}")
        if not result.pending(wanted) or time.monotonic() > deadline:
            return result
        time.sleep(POLL_S)


def list_all(api: ApiClient, query: Mapping[str, str] | None = None,
             *, max_pages: int = 1000) -> tuple[list[dict[str, Any]], list[str]]:
    """Every item of one list view, following continuations; and every non-200 answer met."""
    items: list[dict[str, Any]] = []
    errors: list[str] = []
    continuation: str | None = None
    for _ in range(max_pages):
        params = {**(query or {}), "top": str(LIST_PAGE)}
        if continuation:
            params["continuation"] = continuation
        path = "/activations?" + urllib.parse.urlencode(params)
        try:
            reply = api.request("GET", path)
        except OSError as exc:
            errors.append(f"GET {path}: {exc}")
            break
        if reply.status != 200 or not isinstance(reply.body, dict):
            errors.append(f"GET {path} answered {reply.status}: {str(reply.body)[:200]}")
            break
        items.extend(reply.body.get("items") or [])
        continuation = reply.body.get("continuation")
        if not continuation:
            break
    return items, errors


def queue_depth(connection_string: str, queue_name: str) -> int:
    """Messages on a queue (visible or not), 0 if it does not exist; -1 if storage does not answer."""
    client = QueueClient.from_connection_string(connection_string, queue_name)
    try:
        return int(client.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0
    except AzureError:
        return -1
    finally:
        with contextlib.suppress(Exception):
            client.close()


def duplicate_connectors(simulator: Simulator, tenants: Iterable[str], names: Iterable[str]) -> dict[str, int]:
    """Per tenant, how many connectors of our names it holds beyond one of each."""
    wanted = {name.casefold() for name in names}
    extra: dict[str, int] = {}
    for tenant in dict.fromkeys(tenants):
        counts: dict[str, int] = {}
        for connector in simulator.connectors(tenant):
            name = str(connector.get("Name", "")).casefold()
            if name in wanted:
                counts[name] = counts.get(name, 0) + 1
        surplus = sum(n - 1 for n in counts.values() if n > 1)
        if surplus:
            extra[tenant] = surplus
    return extra


def new_connector_calls(simulator: Simulator, tenant: str) -> int:
    """Successful New-OutboundConnector calls Exchange answered for the tenant."""
    return sum(1 for w in simulator.writes(tenant) if w.get("cmdlet") == "New-OutboundConnector")


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = POLL_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
