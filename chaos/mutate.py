"""Generated and mutated activation notices (pure): what a broken contract system might send.

Each `Mutant` starts from a valid notice of one tenant and changes it the way real senders
break data: a key dropped, duplicated or misspelt, a value of the wrong type, text with odd
Unicode (a lone surrogate escape, U+FFFF, control characters, bidi overrides), numbers too big
for a float, notice ids like `..`, timestamps at the edges of the calendar, a body that is not
JSON at all. Most must be rejected with field errors; some stay valid and are provisioned.
Either way the product must answer, record and list them without a 500.

`Mutant.notice_id` is the id the product should file it under when that id is usable (a
string matching the notice schema's pattern), else None: such a notice is checked only
through the list views and the poison queues, since its record's key is the product's choice.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench.harness import BOTH, Tenant, notice_for
from shared.notice import NOTICE_ID_PATTERN

ODD_TEXT = (
    "\ud800",  # a lone surrogate: valid as a JSON escape, not encodable as UTF-8
    "\udfff tail",
    "\uffff",
    "\ufffe\ufeff",
    "\x00",
    "a\x07b\x1bc\x7f",
    "\u202eevil\u202c",
    "𝕄𝔸𝕀𝕃 🚀 株式会社",
    "e\u0301" * 40,
    "x" * 300,
    "",
    " ",
    "\n\r\t",
)
HUGE_NUMBERS = ("1e400", "-1e400", "1" + "0" * 400, "NaN", "Infinity", "-0", "1.0e-400", "12345678901234567890")
EDGE_TIMES = (
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "2026-02-29T00:00:00+09:00",
    "2024-02-29T24:00:00Z",
    "2026-12-31T23:59:60Z",
    "2026-11-30T09:00:00+24:00",
    "2026-11-30T09:00:00.123456789+09:00",
    "2026-11-30",
    "+12026-01-01T00:00:00Z",
    "2026-11-30T09:00:00+09:00\u0000",
)
ODD_IDS = ("..", ".", "...", "../etc", "a/b", "%2e%2e", "x" * 65, "ＡＣＴ", "ACT 1", "-", "_", "a..b", "CON", "\u0000")
WRONG_TYPES: tuple[Any, ...] = (None, 0, 1.5, True, [], {}, ["x"], {"a": 1}, -1)


@dataclass(frozen=True)
class Mutant:
    """One generated notice: its exact text (or bytes), how it was made, the id to look it up by."""

    kind: str
    body: str | bytes
    notice_id: str | None

    def text(self) -> str | None:
        """The body as text for the queue (which carries text only), or None if it is not text."""
        return self.body if isinstance(self.body, str) else None


def _usable_id(value: object, body: str | bytes) -> str | None:
    """The id the product files the mutant under: its notice_id when that is a valid one; for an
    invalid notice_id, the id the product derives from the text (`rejected-<16 hex of its
    SHA-256>`, shared/worker.py), since an id that does not round-trip through a URL is itself a
    field error; None when the product has no id to file it under that the suite can know."""
    if not isinstance(value, str):
        return None
    if NOTICE_ID_PATTERN.fullmatch(value):
        return value
    if isinstance(body, str):
        return f"rejected-{hashlib.sha256(body.encode('utf-8')).hexdigest()[:16]}"
    return None


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False)


def _set_raw(doc: dict[str, Any], key: str, raw_json: str) -> str:
    """The notice's JSON text with `key`'s value replaced by a literal (for what json.dumps cannot write)."""
    placeholder = "__chaos_raw__"
    text = _dump({**doc, key: placeholder})
    return text.replace(json.dumps(placeholder), raw_json, 1)


def _mutations(rng: random.Random) -> list[tuple[str, Callable[[dict[str, Any]], tuple[str | bytes, object]]]]:
    keys = ("tenant_id", "services", "journal_report_address", "mx_host", "validation_recipient",
            "tenant_domain", "contract_id", "customer_name", "issued_at")

    def drop(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        key = rng.choice([k for k in doc if k != "notice_id"])
        return _dump({k: v for k, v in doc.items() if k != key}), doc["notice_id"]

    def drop_id(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        return _dump({k: v for k, v in doc.items() if k != "notice_id"}), None

    def duplicate_key(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        key = rng.choice(list(doc))
        text = _dump(doc)
        # A repeated notice_id leaves the id to the product (the last one wins in most parsers).
        return (text[:-1] + f", {json.dumps(key)}: {json.dumps(rng.choice(ODD_TEXT))}}}",
                None if key == "notice_id" else doc["notice_id"])

    def duplicate_id(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        text = _dump(doc)
        return text[:-1] + ', "notice_id": "OTHER-ID"}', None

    def wrong_type(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        key = rng.choice(keys)
        return _dump({**doc, key: rng.choice(WRONG_TYPES)}), doc["notice_id"]

    def id_wrong_type(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        return _dump({**doc, "notice_id": rng.choice(WRONG_TYPES)}), None

    def odd_text(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        key = rng.choice(keys)
        value = rng.choice(ODD_TEXT)
        # ensure_ascii keeps a lone surrogate as the escape \ud800, which is what senders emit.
        return json.dumps({**doc, key: value}, ensure_ascii=True), doc["notice_id"]

    def odd_text_in_optional(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        key = rng.choice(("customer_name", "contract_id"))
        return json.dumps({**doc, key: rng.choice(ODD_TEXT)}, ensure_ascii=True), doc["notice_id"]

    def huge_number(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        return _set_raw(doc, rng.choice(keys), rng.choice(HUGE_NUMBERS)), doc["notice_id"]

    def odd_id(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        notice_id = rng.choice(ODD_IDS)
        if notice_id in ("..", ".", "...", "a..b", "-", "_", "CON"):
            notice_id = f"{notice_id}" if rng.random() < 0.5 else f"{doc['notice_id']}{notice_id}"
        return json.dumps({**doc, "notice_id": notice_id}, ensure_ascii=True), notice_id

    def edge_time(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        return json.dumps({**doc, "issued_at": rng.choice(EDGE_TIMES)}, ensure_ascii=True), doc["notice_id"]

    def unknown_key(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        return _dump({**doc, rng.choice(("mxhost", "Notice_Id", "services ", "", "\u0000")): "x"}), doc["notice_id"]

    def tenant_case(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        tenant = str(doc["tenant_id"])
        return _dump({**doc, "tenant_id": rng.choice((tenant.upper(), "{" + tenant + "}", tenant + " "))}), \
            doc["notice_id"]

    def not_json(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        text = _dump(doc)
        return rng.choice((text[: rng.randrange(1, len(text))], "\ufeff" + text, "[" + text + "]", "null",
                           '"' + doc["notice_id"] + '"', "{}", "", "{" * 5000, text + text)), None

    def oversized(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        return _dump({**doc, "customer_name": "長" * 9000}), doc["notice_id"]

    def raw_bytes(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        data = _dump(doc).encode("utf-8")
        cut = rng.randrange(1, len(data))
        return data[:cut] + rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00")) + data[cut:], None

    def valid(doc: dict[str, Any]) -> tuple[str | bytes, object]:
        return _dump(doc), doc["notice_id"]

    return [
        ("drop_key", drop), ("drop_notice_id", drop_id), ("duplicate_key", duplicate_key),
        ("duplicate_notice_id", duplicate_id), ("wrong_type", wrong_type), ("notice_id_wrong_type", id_wrong_type),
        ("odd_unicode", odd_text), ("odd_unicode_optional", odd_text_in_optional), ("huge_number", huge_number),
        ("odd_notice_id", odd_id), ("calendar_edge", edge_time), ("unknown_key", unknown_key),
        ("tenant_id_variant", tenant_case), ("not_json", not_json), ("oversized", oversized),
        ("invalid_utf8", raw_bytes), ("valid", valid),
    ]


def mutants(count: int, tenants: Sequence[Tenant], *, seed: int, prefix: str = "F") -> Iterator[Mutant]:
    """`count` mutated notices over `tenants`, reproducible from `seed`, each with its own notice_id."""
    rng = random.Random(seed)
    table = _mutations(rng)
    services = (BOTH, ("mailgates",), ("enterprise_audit",))
    for index in range(count):
        tenant = tenants[index % len(tenants)]
        doc = notice_for(tenant, f"{prefix}-{index:05d}", rng.choice(services), sequence=index)
        kind, mutate = table[index % len(table)]
        body, notice_id = mutate(doc)
        yield Mutant(kind, body, _usable_id(notice_id, body))
