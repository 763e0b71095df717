"""The operators' status page: one static HTML file, and the headers it must be served with.

The Function App serves the page itself (`GET /api/status`) so that it shares the API's
origin: its script calls `/api/activations…` with the function key and needs no CORS, no
second deployment and no storage account website. The page is served without a key (an
anonymous route) so that a reload or a bookmark works after the key has left the address
bar; that is safe because it is a shell, the same bytes for every request with no data in
them, while every activation comes from the key-protected API. The page shows notice fields, customer
names and Exchange's own messages, all untrusted, so the response carries a strict Content
Security Policy on top of the page never writing data as HTML:

* scripts and styles are allowed by the SHA-256 of the page's one inline `<script>` and one
  inline `<style>`, not by 'unsafe-inline'. Should a bug ever write untrusted text as markup,
  an injected `<script>` or `onerror=` attribute would still not run. Hashes rather than a
  per-request nonce keep this module pure: the same bytes and headers every time, computed
  once per process;
* `connect-src 'self'` lets the page talk to its own API and nowhere else, `img-src data:`
  allows nothing from the network, and `frame-ancestors 'none'` stops another site framing
  the page to trick an operator into pressing Retry;
* `Cache-Control: no-store` because the URL may carry the function key (`?code=`), and
  `Referrer-Policy: no-referrer` so that key never leaves in a Referer header. The script
  keeps the key in `sessionStorage` (this tab only, gone when it closes), never in
  `localStorage` or a cookie, and sends it only as the `x-functions-key` header. It also
  takes the key from the fragment (`#code=`), the form the local runner prints: a browser
  never sends a fragment, so such a link keeps the key out of request logs altogether.

The page's words for statuses and error codes are not written in the HTML: `render_page`
puts them (STATUS_LABELS_JA here, LABELS_JA and HINTS from `shared/errors.py`) into the
page's `<meta name="labels">` as JSON, the one place a script reads them from. The services'
names (`shared/services.py`) and the triage order (`index.TRIAGE_ORDER`, the order the list
API returns rows in) travel the same way, so the page orders and names nothing itself. It is
data, not script, so the CSP hashes do not change; a status, code or service added in Python
shows on the page with its words and in its place, and one the page has no words for shows
under its own name.
"""

from __future__ import annotations

import base64
import hashlib
import html as html_text
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import TypedDict

from .errors import HINTS, LABELS_JA
from .index import TRIAGE_ORDER
from .outcome import Status
from .services import SERVICES

STATUS_PAGE_PATH = Path(__file__).parent / "static" / "status.html"

# Japanese names of the statuses, as operators say them (the page shows the English value too).
STATUS_LABELS_JA: dict[Status, str] = {
    Status.QUEUED: "待機中",
    Status.RUNNING: "実行中",
    Status.RETRY_SCHEDULED: "再試行待ち",
    Status.SUCCEEDED: "成功",
    Status.NEEDS_ATTENTION: "要対応",
    Status.FAILED: "失敗",
    Status.REJECTED: "却下",
    Status.DRIFTED: "設定変更検出",
}

# The page's one placeholder for its words; render_page fills it (an empty object if absent).
LABELS_META = '<meta name="labels" content="{}">'

# The page has exactly one bare <script> and one bare <style>; `render_page` refuses anything
# else, so a new inline block cannot be added without the policy being recomputed for it.
_INLINE = re.compile(r"<(script|style)\b([^>]*)>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class StaticPage:
    """An HTML page ready to serve: its bytes and every header it needs."""

    body: bytes
    headers: Mapping[str, str]
    mimetype: str = "text/html"
    charset: str = "utf-8"


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy(html: str) -> str:
    """The CSP that allows exactly the page's inline script and style, and nothing else."""
    blocks: dict[str, list[str]] = {"script": [], "style": []}
    for match in _INLINE.finditer(html):
        tag, attributes, content = match.group(1).lower(), match.group(2), match.group(3)
        if attributes.strip():
            # A src= or type= would change what the hash covers (or load from elsewhere).
            raise ValueError(f"<{tag}> must have no attributes in the status page, found {attributes.strip()!r}")
        blocks[tag].append(content)
    if len(blocks["script"]) != 1 or len(blocks["style"]) != 1:
        raise ValueError("the status page must have exactly one inline <script> and one inline <style>, found "
                         f"{len(blocks['script'])} and {len(blocks['style'])}")
    return "; ".join([
        "default-src 'none'",
        f"script-src {_sha256_source(blocks['script'][0])}",
        f"style-src {_sha256_source(blocks['style'][0])}",
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


class PageLabels(TypedDict):
    """What the page is told, as its `<meta name="labels">` carries it (JSON)."""

    status: dict[str, str]         # status -> Japanese label
    code: dict[str, str]           # error code -> short Japanese meaning
    hint_ja: dict[str, str]        # error code -> what to do, Japanese
    hint_en: dict[str, str]        # error code -> what to do, English
    service: dict[str, str]        # service key -> title
    service_short: dict[str, str]  # service key -> short name (EA, MG)
    triage: list[str]              # every status, in the order operators triage them


def page_labels() -> PageLabels:
    """What the page shows and how it orders it: status and code labels, Japanese and English
    hints, each service's name and short name, and the triage order."""
    return {
        # every status, so the page lists one that has no Japanese words yet, under its own name
        "status": {s.value: STATUS_LABELS_JA.get(s, s.value) for s in Status},
        "code": {c.value: label for c, label in LABELS_JA.items()},
        "hint_ja": {c.value: hint.ja for c, hint in HINTS.items()},
        "hint_en": {c.value: hint.en for c, hint in HINTS.items()},
        "service": {s.key: s.title for s in SERVICES},
        "service_short": {s.key: s.short for s in SERVICES},
        # The page lists statuses, and fetches the unfiltered list status by status, in this order.
        "triage": [s.value for s in TRIAGE_ORDER],
    }


def render_page(html: str, *, labels: Mapping[str, object] | None = None) -> StaticPage:
    """The page and its security headers, from the HTML text and the words to put in it. Pure."""
    # Browsers hash inline blocks after the HTML parser has turned CRLF into LF; a checkout with
    # Windows line endings would otherwise serve hashes that match nothing and a dead page.
    html = html.replace("\r\n", "\n").replace("\r", "\n")
    if labels is not None and LABELS_META in html:
        # An attribute value, escaped for one: the browser gives the script back the exact JSON.
        content = html_text.escape(json.dumps(labels, ensure_ascii=False, separators=(",", ":")), quote=True)
        html = html.replace(LABELS_META, f'<meta name="labels" content="{content}">', 1)
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",  # frame-ancestors' equivalent for browsers that predate it
    }
    return StaticPage(body=html.encode("utf-8"), headers=MappingProxyType(headers))


@cache
def load_status_page(path: Path = STATUS_PAGE_PATH) -> StaticPage:
    """The operators' status page, read and hashed once per process."""
    return render_page(path.read_text(encoding="utf-8"), labels=page_labels())


__all__ = ["LABELS_META", "STATUS_LABELS_JA", "STATUS_PAGE_PATH", "PageLabels", "StaticPage", "content_security_policy",
           "load_status_page", "page_labels", "render_page"]
