"""The operators' status page in a real browser, served by the real Function App.

Everything below the browser is the product: `function_app.py` in the local Functions host
(routes, function keys, queue triggers from host.json), Table storage and queues in Azurite,
Exchange Online in the simulator. The activations are made the way production makes them
(notices POSTed to the API, provisioned by the queue trigger), so the page is checked
against the JSON the API really returns, not against a hand-written fixture of it.

The browser is headless Chromium (Debian's `chromium` package), driven over the DevTools
protocol with a small stdlib websocket client: `--dump-dom` can only look, and the page's
point is what an operator does (filter, page, open an activation, press Retry, recover from a
wrong key). The browser resolves no host but 127.0.0.1, so nothing leaves the machine.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from exosim import Simulator
from localrun.host import LocalFunctionsHost
from shared import runtime
from shared.errors import HINTS, LABELS_JA, ErrorCode
from shared.index import TRIAGE_ORDER
from shared.outcome import Status
from shared.page import STATUS_LABELS_JA, STATUS_PAGE_PATH, load_status_page, page_labels, render_page
from shared.services import SERVICES
from shared.store import ActivationRecord, ActivationStore
from tests.fixtures.azurite import StorageNames

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
PROJECT = Path(__file__).resolve().parents[2]
XSS = "<img src=x onerror=alert(1)>"
FINAL = {"succeeded", "needs_attention", "failed", "rejected"}


# --------------------------------------------------------------------------- DevTools client


class _WebSocket:
    """Just enough RFC 6455 for one loopback DevTools connection: masked text out, text in."""

    _GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1", url
        self._sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout)
        self._buffer = b""
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        self._sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                            ).encode("ascii"))
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1((key + self._GUID).encode("ascii")).digest()).decode("ascii")
        assert head.startswith(b"HTTP/1.1 101") and accept.encode("ascii") in head, head

    def _fill(self) -> None:
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("DevTools closed the connection")
        self._buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        elif n < 1 << 16:
            header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode("utf-8"))

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            first, second = self._take(2)
            n = second & 0x7F
            if n == 126:
                n = int.from_bytes(self._take(2), "big")
            elif n == 127:
                n = int.from_bytes(self._take(8), "big")
            mask = self._take(4) if second & 0x80 else b""
            data = self._take(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode == 0x9:
                self._send_frame(0xA, data)
                continue
            if opcode in (0x0, 0x1, 0x2):
                parts.append(data)
                if first & 0x80:
                    return b"".join(parts).decode("utf-8")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


class Chromium:
    """One headless Chromium with a DevTools session on its page; every event is kept in `events`."""

    def __init__(self, executable: Path, profile: Path, *, timeout: float = 30.0) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.log_path = profile.parent / "chromium.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(executable), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-quic", "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions", "--no-proxy-server",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--window-size=1280,900",
             "--lang=ja-JP", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.events: list[dict[str, Any]] = []
        self.handlers: dict[str, Callable[[dict[str, Any]], object]] = {}
        self._next_id = 0
        self._ws: _WebSocket | None = None
        try:
            self._ws = _WebSocket(self._page_websocket(profile / "DevToolsActivePort", timeout))
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            # The viewport itself, not the window, so screenshots are the same size everywhere.
            self.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _page_websocket(self, port_file: Path, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}: {self.log_path.read_text()}")
            lines = port_file.read_text().split() if port_file.exists() else []
            if lines:
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(f"http://127.0.0.1:{lines[0]}/json/list", timeout=5) as response:
                    targets = json.load(response)
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.1)
        raise RuntimeError(f"chromium did not open DevTools within {timeout}s: {self.log_path.read_text()}")

    def send(self, method: str, **params: Any) -> int:
        """Send a command without waiting for its answer (used from event handlers)."""
        assert self._ws is not None
        self._next_id += 1
        self._ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        return self._next_id

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        sent = self.send(method, **params)
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == sent:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)
                handler = self.handlers.get(message["method"])
                if handler is not None:
                    handler(message.get("params", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 15.0, what: str = "") -> Any:
        """Poll `expression` in the page until it is truthy; on timeout show what the page shows."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                shown = self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(f"timed out after {timeout}s waiting for {what or expression}; page:\n{shown}")
            time.sleep(0.1)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && location.pathname.endsWith('/status')")

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data

    def problems(self) -> list[str]:
        """Script exceptions, CSP violations and dialogs (an alert() would mean injected script ran)."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog: {params.get('message')}")
            elif method == "Log.entryAdded" and "Content Security Policy" in params["entry"].get("text", ""):
                found.append(f"csp: {params['entry']['text']}")
        return found

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the group this test started, nothing else
                self.process.wait(timeout=10)
        self._log.close()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's browser with `apt-get install -y chromium`")
    browser = Chromium(CHROMIUM, tmp_path / "profile")
    # A dialog would block the page; dismiss it and let problems() report it.
    browser.handlers["Page.javascriptDialogOpening"] = lambda _: browser.send("Page.handleJavaScriptDialog",
                                                                               accept=False)
    yield browser
    browser.close()


@pytest.fixture
def function_host(product_env: dict[str, str], storage: StorageNames, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[LocalFunctionsHost]:
    """function_app.py in the local Functions host, on this test's tables and queue."""
    for name, value in {
        "AzureWebJobsStorage": storage.connection_string, "ACTIVATION_QUEUE": storage.queue,
        "ACTIVATIONS_TABLE": storage.activations_table, "EVENTS_TABLE": storage.events_table,
        "RETRY_BASE_SECONDS": "1", "RETRY_MAX_SECONDS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    runtime.store().ensure_tables()
    runtime.queue().ensure_queues()
    import function_app

    try:
        with LocalFunctionsHost(function_app.app, host_json=PROJECT / "host.json", environ=os.environ,
                                port=0, drain_timeout=10) as host:
            yield host
    finally:
        runtime.store().close()
        runtime.queue().close()
        runtime.reset()


def _post(host: LocalFunctionsHost, path: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(f"{host.api_url}/{path}", data=json.dumps(body).encode("utf-8"), method="POST",
                                     headers={"x-functions-key": host.function_key,
                                              "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _notice(notice_id: str, tenant_id: str, **fields: Any) -> dict[str, Any]:
    notice: dict[str, Any] = json.loads((PROJECT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))
    notice.update(notice_id=notice_id, tenant_id=tenant_id, **fields)
    return notice


def _wait_final(store: ActivationStore, notice_ids: list[str], timeout: float = 60.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = {i: (r.status if (r := store.get(i)) else "missing") for i in notice_ids}
        if all(s in FINAL for s in statuses.values()):
            return statuses
        assert time.monotonic() < deadline, f"activations not final after {timeout}s: {statuses}"
        time.sleep(0.2)


# Small JavaScript expressions the test asks the page; ids are passed as JSON literals.
ROWS = "[...document.querySelectorAll('#rows tr')].map(r => r.dataset.id)"


def _row(notice_id: str) -> str:
    return f"[...document.querySelectorAll('#rows tr')].find(r => r.dataset.id === {json.dumps(notice_id)})"


def _row_status(notice_id: str) -> str:
    return f"({_row(notice_id)} || {{querySelector: () => null}}).querySelector('[data-status]')?.dataset.status"


def _text(selector: str) -> str:
    return f"((document.querySelector({json.dumps(selector)}) || {{}}).textContent || '')"


# --------------------------------------------------------------------------- the test


def test_an_operator_finds_fixes_and_retries_activations_on_the_status_page(
        chromium: Chromium, function_host: LocalFunctionsHost, activation_store: ActivationStore,
        simulator: Simulator, tmp_path: Path) -> None:
    # (chromium first: without a browser the test is skipped before any service starts)
    started = time.monotonic()
    host = function_host
    ok_id, na_id, bad_id = "PAGE-OK-1", "PAGE-NA-1", "PAGE-REJ-1"
    ok_tenant, na_tenant = str(uuid.uuid4()), str(uuid.uuid4())
    # given one tenant that provisions cleanly, one with a foreign `*` connector in the way
    # (needs attention) whose notice carries markup as its customer name, and an invalid
    # notice whose bad field, echoed in the error messages, is markup too
    simulator.seed_connector(na_tenant, Name="Old relay", ConnectorType="Partner", RecipientDomains=["*"],
                             UseMXRecord=False, SmartHosts=["relay.example.net"], Enabled=True)
    assert _post(host, "activations", _notice(ok_id, ok_tenant)) == 202
    assert _post(host, "activations", _notice(na_id, na_tenant, customer_name=XSS)) == 202
    assert _post(host, "activations", _notice(bad_id, ok_tenant, mx_host=XSS)) == 400
    assert _wait_final(activation_store, [ok_id, na_id, bad_id]) == {
        ok_id: "succeeded", na_id: "needs_attention", bad_id: "rejected"}
    seeded = time.monotonic()

    # when the operator opens the link with the key, two activations per page
    chromium.open(f"{host.api_url}/status?code={host.function_key}&top=2")
    first_page = chromium.wait_for(f"{ROWS}.length === 2 && {ROWS}", what="the first page")
    # then the key is gone from the address bar, the other parameters stay
    assert chromium.wait_for("location.search === '?top=2' && location.search", what="the key removed") == "?top=2"
    assert host.function_key not in chromium.evaluate("location.href")
    # and the list is in triage order: what needs attention first, then success, then rejected
    assert first_page == [na_id, ok_id]
    # and the next page holds the third activation, and First goes back
    chromium.evaluate("document.getElementById('next').click()")
    second_page = chromium.wait_for(f"{ROWS}.length === 1 && {ROWS}", what="the second page")
    assert second_page == [bad_id]
    assert chromium.evaluate("document.getElementById('next').disabled") is True
    chromium.evaluate("document.getElementById('first').click()")
    assert chromium.wait_for(f"{ROWS}.length === 2 && {ROWS}") == first_page

    # when the whole list is shown
    chromium.open(f"{host.api_url}/status?code={host.function_key}")
    assert chromium.wait_for(f"{ROWS}.length === 3 && {ROWS}", what="three rows") == [na_id, ok_id, bad_id]
    # then every status has its badge in Japanese, and the markup in a customer name is plain text
    assert [chromium.evaluate(_row_status(i)) for i in (ok_id, na_id, bad_id)] == [
        "succeeded", "needs_attention", "rejected"]
    badge = chromium.evaluate(f"{_row(na_id)}.querySelector('.badge').textContent")
    assert STATUS_LABELS_JA[Status.NEEDS_ATTENTION] in badge
    assert chromium.evaluate(f"{_row(na_id)}.querySelector('.customer').textContent") == XSS
    assert chromium.evaluate(f"{_row(ok_id)}.textContent").count("EA: create/passed") == 1
    assert chromium.evaluate(f"{_row(na_id)}.textContent").count("CONFLICTING_CONNECTOR") == 1
    # and the error code has its short meaning in Japanese beside it
    assert chromium.evaluate(f"{_row(na_id)}.querySelector('.code-ja').textContent") == LABELS_JA[
        ErrorCode.CONFLICTING_CONNECTOR]
    assert chromium.evaluate("document.querySelectorAll('img, [onerror]').length") == 0

    # when filtering by status, then only that status is listed; a bad tenant id is explained
    chromium.evaluate("document.getElementById('f-status').value = 'needs_attention';"
                      "document.getElementById('filters').requestSubmit()")
    assert chromium.wait_for(f"{ROWS}.length === 1 && {ROWS}") == [na_id]
    chromium.evaluate("document.getElementById('f-tenant').value = 'not-a-guid';"
                      "document.getElementById('filters').requestSubmit()")
    assert "tenant_id must be a GUID" in chromium.wait_for(f"!document.getElementById('msg').hidden && {_text('#msg')}")
    chromium.evaluate("document.getElementById('clear').click()")
    chromium.wait_for(f"{ROWS}.length === 3 && document.getElementById('msg').hidden")

    # when the operator opens the rejected notice, its field errors show the markup as text
    chromium.evaluate(f"{_row(bad_id)}.click()")
    detail = chromium.wait_for(f"{_text('#detail h2')}.includes({json.dumps(bad_id)}) && {_text('#detail')}")
    assert "mx_host" in detail and XSS in detail and "NOTICE_INVALID" in detail
    # and Retry is not offered (it cannot work), with the reason and what to do instead
    assert chromium.evaluate("document.getElementById('retry').disabled") is True
    why = chromium.evaluate(_text("#no-retry"))
    assert "訂正した通知を送信してください" in why and "submit a corrected notice" in why

    # when the operator opens the activation that needs attention
    chromium.evaluate(f"{_row(na_id)}.click()")
    detail = chromium.wait_for(f"{_text('#detail h2')}.includes({json.dumps(na_id)}) && {_text('#detail')}")
    # then the error, Exchange's words, both hints and the history are there
    hint = HINTS[ErrorCode.CONFLICTING_CONNECTOR]
    assert "CONFLICTING_CONNECTOR" in detail and "Old relay" in detail
    assert hint.ja in detail and hint.en in detail
    assert chromium.evaluate("document.querySelectorAll('#detail ol.events li').length") >= 3
    assert chromium.evaluate("document.querySelectorAll('img, [onerror]').length") == 0
    screenshot = chromium.screenshot(tmp_path / "status-page.png")
    assert screenshot.startswith(b"\x89PNG") and len(screenshot) > 20_000
    print(f"\nstatus page screenshot: {tmp_path / 'status-page.png'}")

    # when the customer removes the foreign connector and the operator presses Retry
    simulator.configure_tenant(na_tenant, connectors=[])
    assert chromium.evaluate("document.getElementById('retry').disabled") is False
    # then a confirmation is asked first, and Cancel sends nothing
    chromium.evaluate("document.getElementById('retry').click()")
    asked = chromium.wait_for(f"document.getElementById('confirm').open && {_text('#confirm-text')}")
    assert na_id in asked and "再試行しますか" in asked
    chromium.evaluate("document.getElementById('confirm-cancel').click()")
    assert chromium.evaluate("document.getElementById('confirm').open") is False
    time.sleep(0.3)
    assert chromium.evaluate("document.getElementById('retry-msg').hidden") is True
    assert activation_store.get(na_id).status == "needs_attention"  # type: ignore[union-attr]
    # and confirming it queues the retry
    chromium.evaluate("document.getElementById('retry').click()")
    chromium.wait_for("document.getElementById('confirm').open")
    chromium.evaluate("document.getElementById('confirm-ok').click()")
    accepted = chromium.wait_for(f"{_text('#retry-msg')}.includes('Retry queued') && {_text('#retry-msg')}")
    assert "再試行を受け付けました" in accepted
    # then auto-refresh shows it succeed, in the list and in the open detail, with no reload
    chromium.wait_for(f"{_row_status(na_id)} === 'succeeded'", timeout=40, what=f"{na_id} to succeed")
    chromium.wait_for("document.querySelector('#detail [data-status]')?.dataset.status === 'succeeded'")
    assert "MG: create/passed" in chromium.evaluate(f"{_row(na_id)}.textContent")
    detail = chromium.wait_for(f"{_text('#detail')}.includes('retry.requested') && {_text('#detail')}")
    assert "✔" in detail and "passed" in detail
    # and a clean success offers no retry (there is nothing for it to do)
    chromium.wait_for("document.getElementById('retry').disabled")
    assert "Succeeded with nothing to fix" in chromium.evaluate(_text("#no-retry"))
    chromium.evaluate("document.getElementById('detail').scrollTop = 1e6")
    chromium.screenshot(tmp_path / "status-page-history.png")

    # when the API stops accepting the key (a rotated key), the page says so and asks for one
    chromium.handlers["Fetch.requestPaused"] = lambda p: chromium.send(
        "Fetch.fulfillRequest", requestId=p["requestId"], responseCode=401, responseHeaders=[], body="")
    chromium.call("Fetch.enable", patterns=[{"urlPattern": "*/api/activations*"}])
    chromium.evaluate("document.getElementById('refresh').click()")
    unauthorized = chromium.wait_for(f"!document.getElementById('keyform').hidden && {_text('#msg')}")
    assert "関数キーがないか、誤っています" in unauthorized and "Function key missing or wrong" in unauthorized
    assert chromium.evaluate("document.getElementById('auto').checked") is False
    # and with the right key entered, the list comes back
    chromium.call("Fetch.disable")
    chromium.evaluate(f"document.getElementById('key').value = {json.dumps(host.function_key)};"
                      "document.getElementById('keyform').requestSubmit()")
    chromium.wait_for(f"{ROWS}.length === 3 && document.getElementById('msg').hidden", what="the list after the key")

    # and nothing ran that should not have: no script error, no CSP violation, no dialog
    assert chromium.problems() == []
    print(f"seeding {seeded - started:.1f}s, browser {time.monotonic() - seeded:.1f}s")


def test_the_page_survives_a_reload_and_asks_for_the_key_in_a_new_tab(
        chromium: Chromium, function_host: LocalFunctionsHost, activation_store: ActivationStore,
        simulator: Simulator) -> None:
    host = function_host
    notice_id = "PAGE-RELOAD-1"
    assert _post(host, "activations", _notice(notice_id, str(uuid.uuid4()))) == 202
    assert _wait_final(activation_store, [notice_id]) == {notice_id: "succeeded"}
    api_calls: list[str] = []
    chromium.handlers["Network.requestWillBeSent"] = lambda p: api_calls.append(p["request"]["url"])
    chromium.call("Network.enable")

    # given the operator opened the link with the key (here as ?CODE=: the host ignores its case)
    chromium.open(f"{host.api_url}/status?CODE={host.function_key}&status=succeeded")
    assert chromium.wait_for(f"{ROWS}.length === 1 && {ROWS}", what="the list") == [notice_id]
    assert chromium.wait_for("location.search === '?status=succeeded' && location.search") == "?status=succeeded"
    # when they reload the page, whose address no longer has the key
    chromium.call("Page.reload")
    chromium.wait_for("document.readyState === 'complete'")
    # then it still lists the activation, without asking for the key
    assert chromium.wait_for(f"{ROWS}.length === 1 && {ROWS}", what="the list after reload") == [notice_id]
    assert chromium.evaluate("document.getElementById('keyform').hidden") is True
    assert host.function_key not in chromium.evaluate("location.href")
    # and a bookmark of the bare page opened in the same tab works too
    chromium.open(f"{host.api_url}/status")
    chromium.wait_for(f"{ROWS}.length === 1", what="the bookmarked page")

    # when the bare URL is opened in a new tab (a new tab starts with an empty sessionStorage)
    chromium.evaluate("sessionStorage.clear()")
    api_calls.clear()
    chromium.open(f"{host.api_url}/status")
    # then the page loads, asks for the key, shows no activation and has called no API route
    asked = chromium.wait_for(f"!document.getElementById('keyform').hidden && {_text('#msg')}", what="the key form")
    assert "関数キーを入力してください" in asked and "Enter the function key" in asked
    assert chromium.evaluate(f"{ROWS}.length") == 0
    time.sleep(0.5)  # a refresh tick or a stray call would show up here
    assert [u for u in api_calls if "/api/activations" in u] == []
    # and with the key typed in, the list comes back and survives the next reload
    chromium.evaluate(f"document.getElementById('key').value = {json.dumps(host.function_key)};"
                      "document.getElementById('keyform').requestSubmit()")
    chromium.wait_for(f"{ROWS}.length === 1 && document.getElementById('msg').hidden", what="the list after the key")
    chromium.call("Page.reload")
    chromium.wait_for("document.readyState === 'complete'")
    chromium.wait_for(f"{ROWS}.length === 1 && document.getElementById('keyform').hidden", what="reload after typing")

    # when the API refuses the stored key (rotated), a reload asks again instead of repeating it
    chromium.evaluate(f"sessionStorage.setItem('functions-key', {json.dumps(host.function_key[:-1])})")
    chromium.call("Page.reload")
    chromium.wait_for("document.readyState === 'complete'")
    chromium.wait_for(f"!document.getElementById('keyform').hidden && {_text('#msg')}.includes('401')")
    chromium.call("Page.reload")
    chromium.wait_for("document.readyState === 'complete'")
    asked = chromium.wait_for(f"!document.getElementById('keyform').hidden && {_text('#msg')}")
    assert "Enter the function key" in asked
    assert chromium.problems() == []


def test_the_page_shell_needs_no_key_but_every_data_route_does(function_host: LocalFunctionsHost) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for url in (f"{function_host.api_url}/status", f"{function_host.api_url}/status?code=not-the-key"):
        with opener.open(url, timeout=10) as page:
            assert page.status == 200
            assert page.headers["Content-Type"].startswith("text/html")
            assert "script-src 'sha256-" in page.headers["Content-Security-Policy"]
            assert page.headers["Cache-Control"] == "no-store"
            assert page.read() == load_status_page().body
    for method, path in (("GET", "activations"), ("GET", "activations/PAGE-OK-1"),
                         ("POST", "activations/PAGE-OK-1/retry"), ("POST", "activations")):
        request = urllib.request.Request(f"{function_host.api_url}/{path}", data=b"{}" if method == "POST" else None,
                                         method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(request, timeout=10)
        assert refused.value.code == 401, (method, path)


def test_a_key_in_the_fragment_never_reaches_the_server(
        chromium: Chromium, function_host: LocalFunctionsHost, activation_store: ActivationStore,
        simulator: Simulator) -> None:
    # A key in ?code= travels to the server with the page request (and from there into request
    # logs and telemetry, Azure/azure-functions-host#11602); the shell needs no key, so the link
    # make run prints carries it in #code=, which the browser keeps to itself.
    host = function_host
    notice_id = "PAGE-FRAGMENT-1"
    assert _post(host, "activations", _notice(notice_id, str(uuid.uuid4()))) == 202
    assert _wait_final(activation_store, [notice_id]) == {notice_id: "succeeded"}
    sent: list[str] = []
    chromium.handlers["Network.requestWillBeSent"] = lambda p: sent.append(p["request"]["url"])
    chromium.call("Network.enable")
    chromium.open(f"{host.api_url}/status?status=succeeded#code={host.function_key}")
    assert chromium.wait_for(f"{ROWS}.length === 1 && {ROWS}", what="the list") == [notice_id]
    assert chromium.wait_for("location.hash === '' && location.search") == "?status=succeeded"
    assert host.function_key not in chromium.evaluate("location.href")
    assert sent and not [url for url in sent if host.function_key in url]
    # and a reload in the tab keeps working from the stored key
    chromium.call("Page.reload")
    chromium.wait_for("document.readyState === 'complete'")
    assert chromium.wait_for(f"{ROWS}.length === 1 && {ROWS}", what="the list after reload") == [notice_id]


def test_the_page_shows_the_newest_events_with_their_count_and_survives_rows_that_are_not_text(
        chromium: Chromium, function_host: LocalFunctionsHost, activation_store: ActivationStore,
        storage: StorageNames) -> None:
    from datetime import UTC, datetime, timedelta

    from azure.data.tables import TableClient

    from shared.store import ACTIVATION_ROW_KEY, EventRecord
    from tests.hostile import hostile_notices

    host = function_host
    # given a rejected notice with a long history, every hostile notice, and a row an older
    # version stored with characters that are not text
    long_id = "PAGE-HIST-1"
    assert _post(host, "activations", _notice(long_id, "not-a-guid")) == 400
    start = datetime.now(UTC) + timedelta(seconds=1)
    activation_store.append_events(EventRecord(long_id, "step", f"step {i}", at=start + timedelta(milliseconds=i))
                                   for i in range(1299))
    activation_store.append_event(long_id, kind="finished", message="the newest event", attempt=1, series=1,
                                  at=start + timedelta(minutes=1))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for case in hostile_notices():
        request = urllib.request.Request(f"{host.api_url}/activations", data=case.body, method="POST",
                                         headers={"x-functions-key": host.function_key})
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(request, timeout=10)
        assert refused.value.code == 400, case.name
    with TableClient.from_connection_string(storage.connection_string, storage.activations_table) as table:
        table.create_entity({"PartitionKey": "rejected-00000000000000ff", "RowKey": ACTIVATION_ROW_KEY,
                             "status": "rejected", "tenant_id": "\ud800", "customer_name": "old \udfff row"})
    activation_store.reindex()  # a row an older version wrote is listed once indexed

    # when the operator opens the page
    chromium.open(f"{host.api_url}/status?code={host.function_key}")
    rows = chromium.wait_for(f"{ROWS}.length >= 3 && {ROWS}", what="the rows")
    # then every row is listed, the old one with its bad characters shown as replacements
    assert long_id in rows and "rejected-00000000000000ff" in rows and len(rows) == 2 + len(hostile_notices())
    assert "old \ufffd row" in chromium.evaluate(f"{_row('rejected-00000000000000ff')}.textContent")
    # and the long history shows its newest 200 events, ending with the newest, and how many there are
    chromium.evaluate(f"{_row(long_id)}.click()")
    count = chromium.wait_for(f"{_text('#detail .events-count')}", what="the history count")
    assert "最新 200 件 / 全 1301 件" in count and "newest 200 of 1301" in count
    assert chromium.evaluate("document.querySelectorAll('#detail ol.events li').length") == 200
    assert "the newest event" in chromium.evaluate(_text("#detail ol.events li:last-child"))
    assert chromium.problems() == []


def _seed_triage(store: ActivationStore) -> dict[str, str]:
    """Activations in every state the triage view distinguishes, written as the engine records them."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    tenant = str(uuid.uuid4())

    def connector(service: str, name: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "service": service, "action": "create", "changed": [], "validation": "passed",
                "tasks": [], "disabled": False, **fields}

    spf = {"code": ErrorCode.SPF_INCLUDE_MISSING.value, "domain": "contoso.example",
           "message": "the SPF record of contoso.example does not include the MailGates servers"}
    rows = {
        # the engine turned MailGates off when its validation failed
        "TRI-A-NA": ActivationRecord("TRI-A-NA", tenant, Status.NEEDS_ATTENTION, attempts=1, notice_json="{}",
                                     customer_name="Northwind", contract_id="K-100",
                                     connectors=[connector("mailgates", "MailGates Outbound", validation="failed",
                                                           disabled=True)],
                                     error={"code": ErrorCode.VALIDATION_FAILED.value, "message": "550 5.7.1"}),
        "TRI-B-FAIL": ActivationRecord("TRI-B-FAIL", tenant, Status.FAILED, attempts=5, notice_json="{}",
                                       customer_name="Fabrikam", contract_id="K-200",
                                       error={"code": ErrorCode.MAX_ATTEMPTS_EXCEEDED.value, "message": "gave up"}),
        "TRI-C-WARN": ActivationRecord("TRI-C-WARN", tenant, Status.SUCCEEDED, attempts=1, notice_json="{}",
                                       customer_name="Contoso", contract_id="K-300", warnings=[spf],
                                       connectors=[connector("mailgates", "MailGates Outbound")]),
        "TRI-D-TERM": ActivationRecord("TRI-D-TERM", tenant, Status.SUCCEEDED, attempts=1, notice_json="{}",
                                       customer_name="Litware", contract_id="K-400",
                                       connectors=[connector("mailgates", "MailGates Outbound", action="removed"),
                                                   connector("enterprise_audit", "Enterprise Audit Outbound",
                                                             action="absent")]),
        "TRI-E-RUN": ActivationRecord("TRI-E-RUN", tenant, Status.RUNNING, attempts=1, notice_json="{}",
                                      customer_name="Adatum", contract_id="K-500"),
    }
    for record in rows.values():
        store.create(ActivationRecord(**{**record.__dict__, "created_at": now, "updated_at": now}))
    return {notice_id: record.status.value for notice_id, record in rows.items()}


STATUSES_SHOWN = "[...document.querySelectorAll('#rows tr')].map(r => r.querySelector('[data-status]').dataset.status)"


def test_the_page_puts_what_needs_a_person_first_and_says_what_each_row_means(
        chromium: Chromium, function_host: LocalFunctionsHost, activation_store: ActivationStore) -> None:
    host = function_host
    _seed_triage(activation_store)
    chromium.open(f"{host.api_url}/status#code={host.function_key}")
    # then needs_attention and failed come first, whatever their notice ids
    chromium.wait_for(f"{ROWS}.length === 5", what="five rows")
    assert chromium.evaluate(STATUSES_SHOWN) == ["needs_attention", "failed", "running", "succeeded", "succeeded"]
    assert chromium.evaluate(ROWS)[:2] == ["TRI-A-NA", "TRI-B-FAIL"]
    # and each error code has its Japanese meaning beside it
    assert chromium.evaluate(f"{_row('TRI-B-FAIL')}.querySelector('.code-ja').textContent") == LABELS_JA[
        ErrorCode.MAX_ATTEMPTS_EXCEEDED]
    # and a success with warnings is marked, a clean one is not
    assert "警告 1 件" in chromium.evaluate(f"{_row('TRI-C-WARN')}.querySelector('.warned')?.textContent || ''")
    assert chromium.evaluate(f"{_row('TRI-D-TERM')}.querySelector('.warned')") is None
    # and a connector the engine turned off says 無効化済み; termination's removed ones say so too
    assert "MG: 無効化済み disabled" in chromium.evaluate(f"{_row('TRI-A-NA')}.textContent")
    term = chromium.evaluate(f"{_row('TRI-D-TERM')}.textContent")
    assert "MG: 削除済み removed" in term and "EA: なし absent" in term

    # when the operator opens the success with a warning, it is there in both languages
    chromium.evaluate(f"{_row('TRI-C-WARN')}.click()")
    detail = chromium.wait_for(f"{_text('#detail h2')}.includes('TRI-C-WARN') && {_text('#detail .warnings')}")
    hint = HINTS[ErrorCode.SPF_INCLUDE_MISSING]
    assert LABELS_JA[ErrorCode.SPF_INCLUDE_MISSING] in detail and hint.ja in detail and hint.en in detail
    assert "does not include the MailGates servers" in detail and "contoso.example" in detail
    # and Retry is offered for it (a re-run checks the SPF record again)
    assert chromium.evaluate("document.getElementById('retry').disabled") is False
    # but not while an activation is running, nor for a clean success
    for notice_id, reason in (("TRI-E-RUN", "Running now"), ("TRI-D-TERM", "nothing to fix")):
        chromium.evaluate(f"{_row(notice_id)}.click()")
        chromium.wait_for(f"{_text('#detail h2')}.includes({json.dumps(notice_id)})")
        assert chromium.evaluate("document.getElementById('retry').disabled") is True, notice_id
        assert reason in chromium.evaluate(_text("#no-retry")), notice_id
    # and the disabled connector says 無効化済み in the detail too
    chromium.evaluate(f"{_row('TRI-A-NA')}.click()")
    detail = chromium.wait_for(f"{_text('#detail h2')}.includes('TRI-A-NA') && {_text('#detail')}")
    assert "無効化済み disabled" in detail and LABELS_JA[ErrorCode.VALIDATION_FAILED] in detail
    assert chromium.evaluate("document.getElementById('retry').disabled") is False

    # when the operator filters to failed and opens it, then reloads
    chromium.evaluate("document.getElementById('f-status').value = 'failed';"
                      "document.getElementById('filters').requestSubmit()")
    assert chromium.wait_for(f"{ROWS}.length === 1 && {ROWS}") == ["TRI-B-FAIL"]
    chromium.evaluate(f"{_row('TRI-B-FAIL')}.click()")
    chromium.wait_for(f"{_text('#detail h2')}.includes('TRI-B-FAIL')")
    chromium.call("Page.reload")
    chromium.wait_for("document.readyState === 'complete'")
    # then the same filter and the same activation are shown, without the key in the address
    assert chromium.wait_for(f"{ROWS}.length === 1 && {ROWS}", what="the list after reload") == ["TRI-B-FAIL"]
    chromium.wait_for(f"{_text('#detail h2')}.includes('TRI-B-FAIL')", what="the detail after reload")
    assert chromium.evaluate("document.getElementById('f-status').value") == "failed"
    assert host.function_key not in chromium.evaluate("location.href")
    assert chromium.problems() == []


def test_the_counts_bar_shows_the_summary_and_filters_by_status(
        chromium: Chromium, function_host: LocalFunctionsHost, activation_store: ActivationStore) -> None:
    # Needs GET /api/summary; without that route the bar stays hidden and this test fails.
    host = function_host
    seeded = _seed_triage(activation_store)
    chromium.open(f"{host.api_url}/status#code={host.function_key}")
    chromium.wait_for(f"{ROWS}.length === 5", what="five rows")
    chromium.wait_for("!document.getElementById('counts').hidden", what="the counts bar")
    shown = chromium.evaluate("Object.fromEntries([...document.querySelectorAll('#counts button')]"
                              ".map(b => [b.dataset.status, b.querySelector('.n').textContent]))")
    expected = {s.value: str(list(seeded.values()).count(s.value)) for s in Status}
    assert {k: v for k, v in shown.items() if k} == expected
    assert shown[""] == "5"
    # when the operator presses the failed count, the list is the failed activations
    chromium.evaluate("document.querySelector('#counts button[data-status=\"failed\"]').click()")
    assert chromium.wait_for(f"{ROWS}.length === 1 && {ROWS}") == ["TRI-B-FAIL"]
    assert chromium.evaluate("document.getElementById('f-status').value") == "failed"
    assert chromium.problems() == []


@pytest.mark.parametrize(("query", "expected"), [
    ("TRI-B", ["TRI-B-FAIL"]),          # notice id prefix
    ("Contoso", ["TRI-C-WARN"]),        # customer name
    ("K-400", ["TRI-D-TERM"]),          # contract id
])
def test_the_search_finds_by_notice_id_prefix_customer_and_contract(
        chromium: Chromium, function_host: LocalFunctionsHost, activation_store: ActivationStore,
        query: str, expected: list[str]) -> None:
    # Needs the list API's q parameter; an API that ignores it lists all five and this test fails.
    host = function_host
    _seed_triage(activation_store)
    chromium.open(f"{host.api_url}/status#code={host.function_key}")
    chromium.wait_for(f"{ROWS}.length === 5", what="five rows")
    chromium.evaluate(f"document.getElementById('f-q').value = {json.dumps(query)};"
                      "document.getElementById('filters').requestSubmit()")
    chromium.wait_for(f"new URLSearchParams(location.search).get('q') === {json.dumps(query)}")
    time.sleep(1.0)  # the list has answered (or a wrong one would have shown by now)
    assert chromium.wait_for(f"{ROWS}.length > 0 && {ROWS}") == expected
    assert chromium.problems() == []


OPTIONS = "[...document.querySelectorAll('#f-status option')].map(o => o.value)"
COUNTED = "[...document.querySelectorAll('#counts button')].map(b => b.dataset.status)"


def _serve_page_with(chromium: Chromium, labels: Mapping[str, object]) -> None:
    """From now on the browser gets the status page rendered with `labels` instead of the product's
    (the API behind it stays the real one)."""
    page = render_page(STATUS_PAGE_PATH.read_text(encoding="utf-8"), labels=labels)
    headers = [{"name": k, "value": v} for k, v in {**page.headers, "Content-Type": "text/html; charset=utf-8"}.items()]
    body = base64.b64encode(page.body).decode("ascii")
    chromium.handlers["Fetch.requestPaused"] = lambda p: chromium.send(
        "Fetch.fulfillRequest", requestId=p["requestId"], responseCode=200, responseHeaders=headers, body=body)
    chromium.call("Fetch.enable", patterns=[{"urlPattern": "*/api/status*"}])


def test_the_page_orders_and_names_what_it_shows_as_the_server_tells_it(
        chromium: Chromium, function_host: LocalFunctionsHost, activation_store: ActivationStore) -> None:
    host = function_host
    _seed_triage(activation_store)
    mailgates = next(s for s in SERVICES if s.key == "mailgates")
    triage = [s.value for s in TRIAGE_ORDER]
    # the product's page: its status filter and counts bar are in TRIAGE_ORDER, services by their short name
    chromium.open(f"{host.api_url}/status#code={host.function_key}")
    chromium.wait_for(f"{ROWS}.length === 5", what="five rows")
    chromium.wait_for("!document.getElementById('counts').hidden", what="the counts bar")
    assert chromium.evaluate(OPTIONS) == ["", *triage]
    assert chromium.evaluate(COUNTED) == ["", *triage]
    assert f"{mailgates.short}: 削除済み removed" in chromium.evaluate(f"{_row('TRI-D-TERM')}.textContent")
    assert chromium.evaluate(_text("#products")) == " / ".join(s.title for s in SERVICES) + " 送信コネクタ"

    # when the server tells another order and other names, the page follows them: it has no copy of its own
    other = page_labels()
    other["triage"] = list(reversed(triage))
    other["service"] = {s.key: f"Service {s.key}" for s in SERVICES}
    other["service_short"] = {s.key: f"S-{s.key}" for s in SERVICES}
    _serve_page_with(chromium, other)
    chromium.open(f"{host.api_url}/status")
    assert chromium.wait_for(f"{ROWS}.length === 5 && {ROWS}", what="five rows") == [
        "TRI-C-WARN", "TRI-D-TERM", "TRI-E-RUN", "TRI-B-FAIL", "TRI-A-NA"]
    chromium.wait_for("!document.getElementById('counts').hidden", what="the counts bar")
    assert chromium.evaluate(OPTIONS) == ["", *reversed(triage)]
    assert chromium.evaluate(COUNTED) == ["", *reversed(triage)]
    assert "S-mailgates: 削除済み removed" in chromium.evaluate(f"{_row('TRI-D-TERM')}.textContent")
    chromium.evaluate(f"{_row('TRI-D-TERM')}.click()")
    detail = chromium.wait_for(f"{_text('#detail h2')}.includes('TRI-D-TERM') && {_text('#detail')}")
    assert "Service mailgates" in detail and "Service enterprise_audit" in detail
    assert chromium.evaluate(_text("#products")) == "Service mailgates / Service enterprise_audit 送信コネクタ"

    # when the server tells it nothing, the list is still whole, in the API's own (triage) order,
    # and each service shows under its key
    _serve_page_with(chromium, {})
    chromium.open(f"{host.api_url}/status")
    assert chromium.wait_for(f"{ROWS}.length === 5 && {ROWS}", what="five rows") == [
        "TRI-A-NA", "TRI-B-FAIL", "TRI-E-RUN", "TRI-C-WARN", "TRI-D-TERM"]
    assert "mailgates: 削除済み removed" in chromium.evaluate(f"{_row('TRI-D-TERM')}.textContent")
    assert chromium.evaluate(_text("#products")) == "送信コネクタ"
    assert chromium.problems() == []
