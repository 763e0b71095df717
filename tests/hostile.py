"""Hostile notices: each once broke the record or made it lie, and each must now be a clean rejection.

Shared by the unit, functional and e2e tests so that every layer is held to the same list:
parsing gives field errors, the HTTP API answers 400, the queue records `rejected`, and no
list view, detail or page fails afterwards.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE: dict[str, Any] = json.loads((ROOT / "samples" / "both-cs365-mgf.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Hostile:
    """One hostile notice: its body as sent, and the field its error must name."""

    name: str
    body: bytes
    field: str
    queueable: bool = True  # the queue carries text: a body that is not UTF-8 cannot be sent there

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def _notice(**changes: Any) -> dict[str, Any]:
    return {**SAMPLE, "notice_id": f"HOSTILE-{uuid.uuid4().hex[:12]}", "tenant_id": str(uuid.uuid4()), **changes}


def _ascii(data: dict[str, Any]) -> bytes:
    """JSON with every non-ASCII character as an escape, the way a lone surrogate can travel."""
    return json.dumps(data, ensure_ascii=True).encode("ascii")


def hostile_notices() -> list[Hostile]:
    """Fresh notice_ids and tenants every call, so tests never see each other's rows."""
    return [
        Hostile("lone-surrogate-in-a-value", _ascii(_notice(customer_name="株式会社\ud800")), "customer_name"),
        Hostile("lone-surrogate-in-the-tenant", _ascii(_notice(tenant_id="\udfff")), "tenant_id"),
        Hostile("lone-surrogate-in-a-key", _ascii({**_notice(), "\ud800": "x"}), "\\ud800"),
        Hostile("lone-surrogate-in-an-ignored-field",
                _ascii(_notice(services=["enterprise_audit"], mx_host={"deep": ["\udc00"]})), "mx_host"),
        Hostile("issued-at-past-the-last-instant", _ascii(_notice(issued_at="9999-12-31T23:59:59-14:00")),
                "issued_at"),
        Hostile("issued-at-before-the-first-instant", _ascii(_notice(issued_at="0001-01-01T00:00:00+14:00")),
                "issued_at"),
        Hostile("noncharacter-uffff-in-customer-name",
                json.dumps(_notice(customer_name="Contoso\uffff"), ensure_ascii=False).encode("utf-8"),
                "customer_name", queueable=False),  # U+FFFF cannot be carried as queue (XML) text
        Hostile("noncharacter-uffff-escaped", _ascii(_notice(customer_name="Contoso\uffff")), "customer_name"),
        Hostile("noncharacter-ufdd0-in-contract-id", _ascii(_notice(contract_id="C-\ufdd0")), "contract_id"),
        Hostile("nul-in-customer-name", _ascii(_notice(customer_name="a\u0000b")), "customer_name"),
        Hostile("escape-in-notice-id", _ascii(_notice(notice_id="ACT-\u001b[31m")), "notice_id"),
        Hostile("control-in-a-service", _ascii(_notice(services=["mailgates\u0000", "enterprise_audit"])), "services"),
        Hostile("notice-id-dot-dot", _ascii(_notice(notice_id="..")), "notice_id"),
        Hostile("notice-id-dot", _ascii(_notice(notice_id=".")), "notice_id"),
        Hostile("notice-id-trailing-dot", _ascii(_notice(notice_id="ACT-2026-0001.")), "notice_id"),
        Hostile("bytes-that-are-not-utf-8",
                json.dumps(_notice(customer_name="@@")).encode("utf-8").replace(b"@@", b"\xff\xed\xa0\x80"), "$",
                queueable=False),
    ]


__all__ = ["SAMPLE", "Hostile", "hostile_notices"]
