"""The operators' status page as a file: what it may load, what its script may do, how it is served.

These are guards, read from the file itself (no browser): the page must keep working offline
and behind its strict CSP, and untrusted text (customer names, Exchange messages) must never
reach the DOM as HTML. tests/e2e/test_status_page_browser.py shows the same in Chromium.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser

import azure.functions as func
import pytest

import function_app
from shared.errors import HINTS, LABELS_JA, ErrorCode, label_ja
from shared.index import TRIAGE_ORDER
from shared.outcome import Status
from shared.page import LABELS_META, STATUS_LABELS_JA, STATUS_PAGE_PATH, load_status_page, page_labels, render_page
from shared.services import SERVICES

HTML = STATUS_PAGE_PATH.read_text(encoding="utf-8")
SERVED = load_status_page().body
MAX_BYTES = 40 * 1024  # the file as written; the served page adds the labels (about 20 KB)


class _Page(HTMLParser):
    """Every tag with its attributes, and the text of each <script> and <style>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in self.inline:
            self._open = tag
            self.inline[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open:
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.inline[self._open][-1] += data


def _parsed() -> _Page:
    page = _Page()
    page.feed(HTML)
    page.close()
    return page


SCRIPT = _parsed().inline["script"][0]


def _policy(header: str) -> dict[str, list[str]]:
    directives = (d.split() for d in header.split(";") if d.strip())
    return {d[0]: d[1:] for d in directives}


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def test_the_status_route_serves_the_page_with_its_security_headers() -> None:
    response = function_app.status_page(func.HttpRequest("GET", "http://localhost/api/status", body=b""))
    assert response.status_code == 200
    assert response.mimetype == "text/html" and response.charset == "utf-8"
    assert response.get_body() == SERVED
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    policy = _policy(headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["img-src"] == ["data:"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"] and policy["form-action"] == ["'none'"]


def test_the_policy_allows_exactly_the_pages_one_script_and_one_style_and_no_inline_handlers() -> None:
    page = _parsed()
    assert len(page.inline["script"]) == 1 and len(page.inline["style"]) == 1
    policy = _policy(load_status_page().headers["Content-Security-Policy"])
    # A hash (not 'unsafe-inline') also blocks injected <script> and on*= attributes.
    assert policy["script-src"] == [_sha256(page.inline["script"][0])]
    assert policy["style-src"] == [_sha256(page.inline["style"][0])]


def test_the_page_loads_nothing_from_anywhere() -> None:
    # Not even in a comment: the page works offline, and a URL here is a URL someone will load.
    assert not re.search(r"(?i)\b(?:https?|wss?|ftp)://", HTML)
    assert not re.search(r"(?i)//[a-z0-9.-]+\.[a-z]{2,}/", HTML)  # protocol-relative
    assert not re.search(r"(?i)@import|url\(", _parsed().inline["style"][0])
    for tag, attrs in _parsed().tags:
        assert tag not in {"link", "img", "iframe", "frame", "object", "embed", "base", "audio", "video",
                           "source", "picture", "svg"}, tag
        for name in attrs:
            assert name not in {"src", "href", "srcset", "action", "formaction", "poster", "data", "style"}, (tag, name)
            assert not name.startswith("on"), (tag, name)  # CSP would block it; the page does not need it
        assert not (tag == "meta" and (attrs.get("http-equiv") or "").lower() == "refresh")


@pytest.mark.parametrize("sink", [
    r"\.innerHTML\b", r"\.outerHTML\b", r"insertAdjacentHTML", r"document\.write", r"\beval\s*\(",
    r"new\s+Function\b", r"setAttribute\(\s*['\"](?:on|style|href|src)", r"\.srcdoc\b",
    r"createContextualFragment", r"DOMParser", r"\bsetTimeout\(\s*['\"]", r"\.href\s*=", r"\.src\s*=",
    r"location\s*=", r"window\.open",
])
def test_the_script_never_turns_data_into_markup_or_code(sink: str) -> None:
    # Notice fields, customer names and Exchange's messages reach the DOM only as text nodes.
    assert not re.search(sink, SCRIPT), sink


def test_the_page_stays_one_small_file() -> None:
    assert len(HTML.encode("utf-8")) < MAX_BYTES


@pytest.mark.parametrize("status", list(Status))
def test_every_status_has_a_japanese_label(status: Status) -> None:
    assert STATUS_LABELS_JA[status].strip(), status
    assert page_labels()["status"][status.value] == STATUS_LABELS_JA[status]


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_a_short_japanese_label(code: ErrorCode) -> None:
    label = LABELS_JA[code]
    assert label.strip() and len(label) <= 24, label  # a few words beside a code, not a hint
    assert label_ja(code.value) == label and label != HINTS[code].ja


def test_the_page_is_told_every_status_so_its_triage_order_misses_none() -> None:
    assert list(page_labels()["status"]) == [s.value for s in Status]


def test_an_unknown_code_has_no_label_rather_than_an_error() -> None:
    assert label_ja("NOT_A_CODE") == label_ja(None) == ""


def test_triage_statuses_have_their_colour_and_any_other_status_a_neutral_badge() -> None:
    style = _parsed().inline["style"][0]
    assert ".s-needs_attention{" in style and ".s-failed{" in style
    assert re.search(r"\.badge\{[^}]*background:", style)  # a status added later still shows


def test_the_words_are_defined_once_in_python_and_served_in_the_page() -> None:
    # Not written in the HTML: the page gets them from shared/page.py and shared/errors.py.
    for label in [*STATUS_LABELS_JA.values(), *LABELS_JA.values()]:
        assert f'"{label}"' not in HTML, label
    assert LABELS_META in HTML
    metas = [a for t, a in _served_tags() if t == "meta" and a.get("name") == "labels"]
    assert len(metas) == 1
    assert json.loads(metas[0]["content"] or "") == page_labels()


def _served_labels() -> dict[str, object]:
    metas = [a for t, a in _served_tags() if t == "meta" and a.get("name") == "labels"]
    assert len(metas) == 1
    labels = json.loads(metas[0]["content"] or "")
    assert isinstance(labels, dict)
    return labels


def test_the_page_is_told_exactly_the_registrys_services_and_the_triage_order() -> None:
    labels = _served_labels()
    assert labels["service"] == {s.key: s.title for s in SERVICES}
    assert labels["service_short"] == {s.key: s.short for s in SERVICES}
    assert labels["triage"] == [s.value for s in TRIAGE_ORDER]
    # the order the page fetches and lists in is the API's, and places every status
    assert sorted(page_labels()["triage"]) == sorted(s.value for s in Status)


def test_the_page_names_no_service_and_orders_no_status_itself() -> None:
    # Its only service names and status order are the server's: a copy here would drift.
    for service in SERVICES:
        assert service.title not in HTML, service.title
        for word in (service.key, service.short):
            assert not re.search(rf"[\"']{re.escape(word)}[\"']|\b{re.escape(word)}\s*:", HTML), word
    statuses = "|".join(re.escape(s.value) for s in Status)
    assert not re.search(rf"\[\s*[\"'](?:{statuses})[\"']\s*,", SCRIPT), "a list of statuses in the script"


def _served_tags() -> list[tuple[str, dict[str, str | None]]]:
    page = _Page()
    page.feed(SERVED.decode("utf-8"))
    page.close()
    return page.tags


def test_labels_cannot_break_out_of_their_attribute() -> None:
    hostile = {"status": {"x": '"><script>alert(1)</script>&amp;'}}
    page = render_page(HTML, labels=hostile)
    parsed = _Page()
    parsed.feed(page.body.decode("utf-8"))
    parsed.close()
    assert len(parsed.inline["script"]) == 1
    meta = [a for t, a in parsed.tags if t == "meta" and a.get("name") == "labels"]
    assert json.loads(meta[0]["content"] or "") == hostile
    # the data is not script: the policy is the one of the file as written
    assert page.headers["Content-Security-Policy"] == load_status_page().headers["Content-Security-Policy"]


def test_the_key_is_sent_as_a_header_and_taken_out_of_the_address_bar() -> None:
    assert '"x-functions-key": key' in SCRIPT
    assert "searchParams.delete(name)" in SCRIPT and "history.replaceState" in SCRIPT
    # `?Code=` carries the key in Azure too (the host's query look-up ignores case).
    assert 'n.toLowerCase() === "code"' in SCRIPT


def test_the_key_is_kept_for_this_tab_only() -> None:
    # sessionStorage survives a reload and dies with the tab; nothing longer-lived holds the key.
    assert "sessionStorage.setItem(KEY_ITEM, value)" in SCRIPT
    assert "localStorage" not in SCRIPT and "document.cookie" not in SCRIPT and "indexedDB" not in SCRIPT
    # a key the API refused is forgotten, so a reload asks again instead of repeating it
    assert re.search(r"status !== 401\) return false;\s*keepKey\(\"\"\)", SCRIPT)


def test_without_a_key_the_page_asks_for_one_and_calls_no_api() -> None:
    assert "if (key) refresh(); else askForKey();" in SCRIPT
    assert re.search(r"setInterval\(\(\) => \{ if \(key && ", SCRIPT)


def _http_route_levels() -> dict[str, str]:
    from localrun.host import app_functions  # indexes the app once per process, as the worker does

    levels = {}
    for function in app_functions(function_app.app):
        found = function.get_trigger()
        trigger = found.get_dict_repr() if found is not None else {}
        if trigger.get("type") == "httpTrigger":
            levels[str(trigger.get("route"))] = str(trigger.get("authLevel")).lower()
    return levels


def test_only_health_and_the_page_shell_are_anonymous() -> None:
    levels = _http_route_levels()
    assert {route for route, level in levels.items() if level != "function"} == {"health", "status"}
    assert levels["status"] == levels["health"] == "anonymous"
    assert {levels[r] for r in ("activations", "activations/{notice_id}", "activations/{notice_id}/retry")} == {
        "function"}


@pytest.mark.parametrize("url", [
    "http://localhost/api/status",
    "http://localhost/api/status?code=some-key&status=failed&tenant_id=6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b",
    "http://localhost/api/status?id=ACT-2026-0001&top=2",
])
def test_the_anonymous_shell_is_the_same_bytes_whoever_asks(url: str) -> None:
    # No request value reaches the page: with or without a key, it is the file and nothing else.
    request = func.HttpRequest("GET", url, headers={"x-functions-key": "k"} if "code" in url else {}, body=b"",
                               params=dict(p.split("=", 1) for p in url.partition("?")[2].split("&") if p))
    response = function_app.status_page(request)
    assert response.status_code == 200
    assert response.get_body() == SERVED
    assert dict(response.headers) == dict(load_status_page().headers)


def test_a_page_with_another_inline_block_or_an_external_script_is_refused() -> None:
    base = "<style>a{}</style><script>1</script>"
    render_page(base)
    for broken in (base + "<script>2</script>", "<script>1</script>", base.replace("<script>", "<script src=x>"),
                   base + "<STYLE>b{}</STYLE>"):
        with pytest.raises(ValueError):
            render_page(broken)


def test_windows_line_endings_hash_as_the_browser_parses_them() -> None:
    # The HTML parser turns CRLF into LF before the browser hashes a block.
    unix = render_page("<style>\na{}\n</style><script>\n1\n</script>")
    windows = render_page("<style>\r\na{}\r\n</style><script>\r\n1\r\n</script>")
    assert windows.body == unix.body
    assert windows.headers == unix.headers
