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
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

STATUS_PAGE_PATH = Path(__file__).parent / "static" / "status.html"

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


def render_page(html: str) -> StaticPage:
    """The page and its security headers, from the HTML text. Pure."""
    # Browsers hash inline blocks after the HTML parser has turned CRLF into LF; a checkout with
    # Windows line endings would otherwise serve hashes that match nothing and a dead page.
    html = html.replace("\r\n", "\n").replace("\r", "\n")
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
    return render_page(path.read_text(encoding="utf-8"))


__all__ = ["STATUS_PAGE_PATH", "StaticPage", "content_security_policy", "load_status_page", "render_page"]
