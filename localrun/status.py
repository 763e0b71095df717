"""The live status table of `make run`, read through the product's own HTTP API.

The table is what an operator would watch: each notice's status, attempts, what happened to
its two connectors and the error code if any. It is read over HTTP with the function key,
exactly as an operator's script would, so a broken route or key check shows up here first.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from shared import outcome
from shared.services import SERVICES

# The product's final statuses (drifted too): no worker moves them on, so the table stops waiting.
FINAL_STATUSES: frozenset[str] = frozenset(s.value for s in outcome.FINAL_STATUSES)
COLUMNS = ("NOTICE_ID", "CUSTOMER", "SERVICES", "STATUS", "ATTEMPTS", "CONNECTORS", "ERROR")
_SERVICE_ABBREVIATIONS = {s.key: s.short for s in SERVICES}
_CUSTOMER_WIDTH = 24
_PAGE_SIZE = 50
_MAX_PAGES = 100


@dataclass(frozen=True)
class ApiReply:
    status: int
    headers: Mapping[str, str]
    body: Any


class ApiClient:
    """A small client of the activation API, with the function key on every request."""

    def __init__(self, base_url: str, function_key: str, *, timeout: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the API URL must be http(s), got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._key = function_key
        self.timeout = timeout

    def request(self, method: str, path: str, body: bytes | None = None) -> ApiReply:
        headers = {"x-functions-key": self._key, "Content-Type": "application/json; charset=utf-8"}
        url = self.base_url + path
        request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - http(s) only
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
                return ApiReply(response.status, dict(response.headers.items()), _json(response.read()))
        except urllib.error.HTTPError as exc:
            with exc:
                return ApiReply(exc.code, dict(exc.headers.items()), _json(exc.read()))

    def list_activations(self) -> list[dict[str, Any]]:
        """Every activation, following continuation tokens."""
        items: list[dict[str, Any]] = []
        continuation: str | None = None
        for _ in range(_MAX_PAGES):
            query = {"top": str(_PAGE_SIZE)}
            if continuation:
                query["continuation"] = continuation
            reply = self.request("GET", "/activations?" + urllib.parse.urlencode(query))
            if reply.status != 200 or not isinstance(reply.body, dict):
                raise RuntimeError(f"GET /activations answered {reply.status}: {reply.body!r}")
            items.extend(reply.body.get("items") or [])
            continuation = reply.body.get("continuation")
            if not continuation:
                break
        return items


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


# -- table ----------------------------------------------------------------------------------------
def status_row(notice_id: str, doc: Mapping[str, Any] | None) -> tuple[str, ...]:
    """One table row; a notice the API does not know yet shows as `(pending)`."""
    if doc is None:
        return (notice_id, "", "", "(pending)", "", "", "")
    services = "+".join(_SERVICE_ABBREVIATIONS.get(s, s) for s in doc.get("services") or [])
    connectors = " ".join(
        f"{_SERVICE_ABBREVIATIONS.get(c.get('service', ''), c.get('service', '?'))}:"
        f"{c.get('action', '?')}/{c.get('validation', '?')}"
        for c in doc.get("connectors") or []
    )
    error = doc.get("error") or {}
    return (
        notice_id,
        _clip(str(doc.get("customer_name") or ""), _CUSTOMER_WIDTH),
        services,
        str(doc.get("status", "")),
        str(doc.get("attempts", "")),
        connectors,
        str(error.get("code", "")) if isinstance(error, dict) else "",
    )


def render_table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Aligned lines; Japanese customer names count two columns per character, as terminals draw them."""
    table = [COLUMNS, *rows]
    widths = [max(_width(row[i]) for row in table) for i in range(len(COLUMNS))]
    return ["  ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)).rstrip() for row in table]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _clip(text: str, width: int) -> str:
    if _width(text) <= width:
        return text
    out = ""
    for ch in text:
        if _width(out + ch) > width - 1:
            break
        out += ch
    return out + "…"


class StatusBoard:
    """Shows the rows: redrawn in place on a terminal, one line per change otherwise (logs, CI)."""

    def __init__(self, notice_ids: Sequence[str], out: TextIO = sys.stdout, *, live: bool | None = None) -> None:
        self.notice_ids = list(notice_ids)
        self.out = out
        self.live = out.isatty() if live is None else live
        self._drawn = 0
        self._last: dict[str, tuple[str, ...]] = {}

    def rows(self, docs: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, ...]]:
        return [status_row(n, docs.get(n)) for n in self.notice_ids]

    def update(self, docs: Mapping[str, Mapping[str, Any]]) -> None:
        rows = self.rows(docs)
        if self.live:
            # Lines wider than the terminal would wrap, and redrawing in place would then miscount.
            columns = shutil.get_terminal_size().columns
            lines = [line if _width(line) < columns else _clip(line, columns - 1) for line in render_table(rows)]
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # back to the table's first line, clear below
            self.out.write("\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            stamp = datetime.now().strftime("%H:%M:%S")
            for row in rows:
                key = (row[3], row[4], row[6])
                if self._last.get(row[0]) != key:
                    self._last[row[0]] = key
                    detail = f" attempt {row[4]}" if row[4] else ""
                    detail += f" {row[6]}" if row[6] else ""
                    self.out.write(f"{stamp} {row[0]} {row[3]}{detail}\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line outside the table (an error); the table is drawn afresh below it."""
        self.out.write(text + "\n")
        self.out.flush()
        self._drawn = 0

    def final(self, docs: Mapping[str, Mapping[str, Any]], *, heading: str = "Final status:") -> None:
        """The last table under `heading`; on a terminal it replaces the live one."""
        if self.live and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0
        else:
            self.out.write("\n")
        self.out.write(heading + "\n" + "\n".join(render_table(self.rows(docs))) + "\n")
        self.out.flush()


def watch(
    fetch: Callable[[], Iterable[Mapping[str, Any]]],
    board: StatusBoard,
    *,
    timeout: float,
    stop: threading.Event,
    interval: float = 0.5,
    on_error: Callable[[Exception], None] | None = None,
) -> tuple[dict[str, Mapping[str, Any]], bool]:
    """Refresh the board until every notice is final, `timeout` passes or `stop` is set.

    Returns the last documents seen (by notice_id) and whether every notice reached a final status.
    """
    deadline = time.monotonic() + timeout
    wanted = set(board.notice_ids)
    docs: dict[str, Mapping[str, Any]] = {}
    while True:
        try:
            docs = {str(d.get("notice_id")): d for d in fetch() if d.get("notice_id") in wanted}
        except (OSError, RuntimeError) as exc:  # the API is part of what is being shown: report, keep going
            if on_error is not None:
                on_error(exc)
        else:
            board.update(docs)
        done = len(docs) == len(wanted) and all(d.get("status") in FINAL_STATUSES for d in docs.values())
        if done or time.monotonic() >= deadline or stop.wait(interval):
            return docs, done
