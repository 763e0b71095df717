"""Text that can always be stored, listed and shown: one set of rules for every boundary.

A Python `str` can hold what no storage or wire format can: lone surrogates (from a JSON
escape such as `"\\ud800"`, or from bytes decoded with `surrogateescape`) cannot be encoded
as UTF-8 at all, and the queue and Table services speak XML 1.0 on some paths, which forbids
most C0 control characters and U+FFFE/U+FFFF. One such character stored in a row makes every
response that contains the row fail to encode, so a single hostile notice could take the
list views and the status page down. Hence two rules, both pure:

* `forbidden_characters` is the notice's rule: control characters (C0, DEL, C1), lone
  surrogates and noncharacters have no place in any field of a notice, so they are field
  errors before anything is stored or sent;
* `clean` is the storage rule: at the write (and read) boundary every character that cannot
  be stored as text becomes U+FFFD. Tab, line feed and carriage return stay (Exchange's
  messages have line breaks). It never lengthens a string (a replaced character is one
  UTF-16 unit or two; U+FFFD is one), so the size limits computed before it still hold, and
  it keeps JSON text valid JSON (such characters only occur inside JSON strings).

A rejected message is evidence, so cleaning must not destroy it. `keep_raw` stores a cleaned,
readable preview where the raw message always was, and only when cleaning changed anything,
the exact original bytes in base64 beside it. Base64 rather than an escape syntax inside the
text: an escape needs its escape character escaped too, which would make every ordinary
message in Storage Explorer harder to read, while base64 costs nothing for the valid messages
that are nearly all of them. `decode_body` turns undecodable bytes into lone surrogates
(`surrogateescape`), so `original_bytes` gives back the very bytes that arrived.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

REPLACEMENT = "\ufffd"

# Noncharacters: U+FDD0..U+FDEF and the last two code points of every plane (Unicode §23.7).
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)
)
# What XML 1.0 (§2.2 Char) cannot carry, lone surrogates, and the noncharacters.
_UNSTORABLE = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff{_NONCHARACTERS}]")
# The notice's stricter rule: every control character, tab and line breaks included.
_FORBIDDEN = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_NONCHARACTERS}]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DISPLAY_ESCAPE = re.compile(f"[\\\\\x00-\x1f\x7f-\x9f\ud800-\udfff{_NONCHARACTERS}]")

# The original of a raw message is kept up to this many bytes (base64 makes 4 characters of
# 3 bytes, and a Table string property holds 32 Ki UTF-16 units).
MAX_ORIGINAL_BYTES = 24 * 1024


def forbidden_characters(text: str) -> list[str]:
    """The distinct characters of `text` a notice field may not contain, in order of appearance."""
    return list(dict.fromkeys(_FORBIDDEN.findall(text)))


def is_storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def clean(text: str) -> str:
    """`text` with every character that cannot be stored as text replaced by U+FFFD.

    A high and low surrogate standing next to each other as two code points (possible in a
    Python str, though not after JSON decoding) are joined into the character they encode.
    """
    if _UNSTORABLE.search(text) is None:
        return text
    if _SURROGATE.search(text):
        # Join valid pairs; every unit that stays alone becomes U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _UNSTORABLE.sub(REPLACEMENT, text)


def clean_value(value: Any) -> Any:
    """`value` (JSON-like data) with `clean` applied to every string in it, keys included."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, Mapping):
        return {clean(str(k)): clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_value(v) for v in value]
    return value


def display(text: str, limit: int = 80) -> str:
    """`text` safe to quote in a message: at most `limit` characters, the forbidden escaped.

    Escaped as Python and JSON write them (`\\u0000`, `\\ud800`, `\\U0010ffff`, a backslash as
    two), so an operator sees exactly which character was wrong.
    """
    cut = text[:limit]

    def escape(match: re.Match[str]) -> str:
        ch = match.group(0)
        if ch == "\\":
            return "\\\\"
        code = ord(ch)
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"

    shown = _DISPLAY_ESCAPE.sub(escape, cut)
    return shown + ("…" if len(text) > limit else "")


def decode_body(body: bytes | str) -> str:
    """A queue or HTTP body as text, every undecodable byte kept (as a lone surrogate)."""
    if isinstance(body, str):
        return body
    return body.decode("utf-8", "surrogateescape")


def original_bytes(text: str) -> bytes:
    """The bytes `text` came from: the inverse of `decode_body` for any str.

    U+DC80..U+DCFF are the bytes `surrogateescape` stood for; any other lone surrogate (from a
    str that never was bytes) is written in its three-byte form, as `surrogatepass` does.
    """
    out = bytearray()
    for piece in re.split("([\ud800-\udfff])", text):
        if not piece:
            continue
        if len(piece) == 1 and "\udc80" <= piece <= "\udcff":
            out.append(ord(piece) - 0xDC00)
        else:
            out += piece.encode("utf-8", "surrogatepass")
    return bytes(out)


def keep_raw(text: str) -> tuple[str, str | None]:
    """(preview, original): the cleaned text to show, and base64 of the exact bytes when they differ.

    `original` is None when `text` is storable as it is, which is the case for every valid
    notice. It keeps at most MAX_ORIGINAL_BYTES bytes, more than a notice may have.
    """
    preview = clean(text)
    if preview == text:
        return text, None
    data = original_bytes(text)[:MAX_ORIGINAL_BYTES]
    return preview, base64.b64encode(data).decode("ascii")


def restore_raw(preview: str, original: str | None) -> bytes:
    """The bytes a raw message arrived as, from the two values `keep_raw` made of it."""
    if original:
        try:
            return base64.b64decode(original, validate=True)
        except (binascii.Error, ValueError):
            pass  # edited by hand: the preview is all there is
    return original_bytes(preview)


__all__ = [
    "MAX_ORIGINAL_BYTES", "REPLACEMENT", "clean", "clean_value", "decode_body", "display",
    "forbidden_characters", "is_storable", "keep_raw", "original_bytes", "restore_raw",
]  # fmt: skip
