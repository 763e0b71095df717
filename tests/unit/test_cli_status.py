"""`python -m shared status` as text: warnings and turned-off connectors in both languages."""

from __future__ import annotations

import io

from shared.cli import _print_status
from shared.errors import HINTS, LABELS_JA, ErrorCode


def _shown(doc: dict[str, object]) -> list[str]:
    out = io.StringIO()
    _print_status(doc, out)
    return out.getvalue().splitlines()


def test_a_warning_is_shown_with_its_meaning_and_advice_in_japanese_and_english() -> None:
    code = ErrorCode.SPF_INCLUDE_MISSING
    lines = _shown({"notice_id": "N-1", "status": "succeeded", "warnings": [
        {"code": code.value, "domain": "contoso.example", "message": "no include:spf.example"}]})
    start = lines.index("  warning SPF_INCLUDE_MISSING [contoso.example]: no include:spf.example")
    assert lines[start + 1] == f"    警告: {LABELS_JA[code]}。{HINTS[code].ja}"
    assert lines[start + 2] == f"    hint: {HINTS[code].en}"


def test_a_warning_with_a_code_this_build_does_not_know_is_still_shown() -> None:
    lines = _shown({"notice_id": "N-1", "status": "succeeded", "warnings": [{"code": "NEW_CODE", "message": "m"}]})
    assert lines[-1] == "  warning NEW_CODE: m"


def test_a_connector_the_engine_turned_off_says_so_in_both_languages() -> None:
    lines = _shown({"notice_id": "N-1", "status": "needs_attention", "connectors": [
        {"name": "MailGates Outbound", "action": "create", "validation": "failed", "disabled": True},
        {"name": "Enterprise Audit Outbound", "action": "create", "validation": "passed", "disabled": False}]})
    assert "  MailGates Outbound: create, validation failed, 無効化済み (disabled)" in lines
    assert "  Enterprise Audit Outbound: create, validation passed" in lines
