"""The activation notice, schema v1: every rule, valid and invalid, field by field.

A notice decides where a customer's outbound mail goes, so each rule is pinned down by the
field it names and the stable code it reports: codes are stored and searched for, and an
operator fixes a notice by reading them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import pytest

from shared.errors import ErrorCode, ProvisioningError
from shared.notice import (
    ALLOWED_KEYS,
    MAX_NOTICE_BYTES,
    ActivationNotice,
    FieldError,
    NoticeError,
    parse_notice,
)
from shared.settings import Settings
from shared.text import forbidden_characters
from tests.hostile import Hostile, hostile_notices

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
INVALID_SAMPLES = SAMPLES / "invalid"

TENANT_ID = "8f3c2a6e-1b7d-4c59-9e0a-2d4f6b8a1c3e"
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")

FULL: dict[str, Any] = {
    "notice_id": "ACT-2026-0001",
    "tenant_id": TENANT_ID,
    "services": ["mailgates", "enterprise_audit"],
    "journal_report_address": "j0001@cs-365.cybermail.jp",
    "mx_host": "mgf.cybermail.jp",
    "validation_recipient": "adm@example.com",
    "tenant_domain": "contoso.onmicrosoft.com",
    "contract_id": "C-0001",
    "customer_name": "コントソ株式会社",
    "issued_at": "2026-04-01T09:00:00+09:00",
}
MAILGATES_ONLY: dict[str, Any] = {
    "notice_id": "ACT-2026-0002",
    "tenant_id": TENANT_ID,
    "services": ["mailgates"],
    "mx_host": "mgs.cybermail.jp",
    "validation_recipient": "adm@example.com",
}
AUDIT_ONLY: dict[str, Any] = {
    "notice_id": "ACT-2026-0003",
    "tenant_id": TENANT_ID,
    "services": ["enterprise_audit"],
    "journal_report_address": "j0003@cs-365-02.cybermail.jp",
}


def notice(base: dict[str, Any] | None = None, *, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    """A copy of `base` (the full notice by default) without `drop` and with `changes`."""
    out = {k: v for k, v in (FULL if base is None else base).items() if k not in drop}
    out.update(changes)
    return out


def errors_of(data: Any, settings: Settings | None = None) -> list[tuple[str, str]]:
    """The (field, code) pairs of the NoticeError that `data` must raise."""
    with pytest.raises(NoticeError) as info:
        parse_notice(data, settings)
    assert info.value.errors, "a NoticeError always names at least one field"
    return [(e.field, e.code) for e in info.value.errors]


def field_errors_of(data: Any, settings: Settings | None = None) -> list[FieldError]:
    with pytest.raises(NoticeError) as info:
        parse_notice(data, settings)
    return info.value.errors


# --- a valid notice -------------------------------------------------------------------------


def test_a_full_notice_parses_into_its_normalised_fields() -> None:
    parsed = parse_notice(json.dumps(FULL, ensure_ascii=False))

    assert parsed == ActivationNotice(
        notice_id="ACT-2026-0001",
        tenant_id=TENANT_ID,
        services=("enterprise_audit", "mailgates"),
        journal_report_address="j0001@cs-365.cybermail.jp",
        mx_host="mgf.cybermail.jp",
        validation_recipient="adm@example.com",
        tenant_domain="contoso.onmicrosoft.com",
        contract_id="C-0001",
        customer_name="コントソ株式会社",
        issued_at="2026-04-01T00:00:00Z",
    )
    assert parsed.journal_domain == "cs-365.cybermail.jp"


@pytest.mark.parametrize("data", [
    json.dumps(FULL, ensure_ascii=False),
    json.dumps(FULL).encode("utf-8"),
    FULL,
], ids=["str", "bytes", "mapping"])
def test_text_bytes_and_a_decoded_object_are_all_accepted(data: Any) -> None:
    assert parse_notice(data) == parse_notice(FULL)


def test_the_minimal_notices_of_each_service_parse() -> None:
    mailgates = parse_notice(MAILGATES_ONLY)
    audit = parse_notice(AUDIT_ONLY)

    assert mailgates.services == ("mailgates",)
    assert (mailgates.journal_report_address, mailgates.tenant_domain, mailgates.issued_at) == (None, None, None)
    assert audit.services == ("enterprise_audit",)
    assert (audit.mx_host, audit.validation_recipient) == (None, None)
    assert audit.journal_domain == "cs-365-02.cybermail.jp"


def test_to_dict_leaves_out_absent_fields_and_lists_services() -> None:
    assert parse_notice(MAILGATES_ONLY).to_dict() == {
        "notice_id": "ACT-2026-0002",
        "tenant_id": TENANT_ID,
        "services": ["mailgates"],
        "mx_host": "mgs.cybermail.jp",
        "validation_recipient": "adm@example.com",
    }


def test_a_parsed_notice_parses_again_to_itself() -> None:
    parsed = parse_notice(FULL)
    assert parse_notice(parsed.to_dict()) == parsed
    assert parse_notice(parsed.canonical_json()) == parsed


# --- keys -----------------------------------------------------------------------------------


def test_an_unknown_key_is_an_error_naming_it() -> None:
    assert errors_of(notice(comment="please hurry")) == [("comment", "unknown_key")]


def test_a_misspelt_key_is_reported_and_the_real_field_is_still_missing() -> None:
    data = notice(drop=("mx_host",), mx_hots="mgf.cybermail.jp")
    assert sorted(errors_of(data)) == [("mx_host", "missing"), ("mx_hots", "unknown_key")]


def test_keys_are_case_sensitive() -> None:
    data = notice(drop=("notice_id",), Notice_ID="ACT-1")
    assert sorted(errors_of(data)) == [("Notice_ID", "unknown_key"), ("notice_id", "missing")]


def test_the_unknown_key_message_lists_the_allowed_keys() -> None:
    (error,) = field_errors_of(notice(mxhost="x"))
    for key in ALLOWED_KEYS:
        assert key in error.message
        assert key in error.message_ja


@pytest.mark.parametrize(("services", "extra"), [
    (["mailgates"], {"journal_report_address": "j@archive.example.net"}),
    (["mailgates"], {"journal_report_address": 42}),
    (["enterprise_audit"], {"mx_host": "smtp.example.net"}),
    (["enterprise_audit"], {"validation_recipient": "admin@contoso.onmicrosoft.com"}),
    (["enterprise_audit"], {"mx_host": ["not", "a", "string"], "validation_recipient": None}),
])
def test_a_key_for_a_service_not_requested_is_accepted_and_ignored(services: list[str], extra: dict[str, Any]) -> None:
    base = MAILGATES_ONLY if services == ["mailgates"] else AUDIT_ONLY
    parsed = parse_notice(notice(base, **extra))

    assert parsed == parse_notice(base)
    for key in extra:
        assert getattr(parsed, key) is None
        assert key not in parsed.to_dict()


# --- notice_id ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["A", "a" * 64, "ACT-2026.04_01", "0123456789", "._-"])
def test_notice_id_accepts_1_to_64_safe_characters(value: str) -> None:
    assert parse_notice(notice(notice_id=value)).notice_id == value


@pytest.mark.parametrize(("value", "code"), [
    ("a" * 65, "invalid_format"),
    ("ACT 2026", "invalid_format"),
    ("ACT/2026", "invalid_format"),
    ("開通-0001", "invalid_format"),
    ("ACT\n1", "control_character"),
    (".", "invalid_format"),  # a URL path would drop it: /api/activations/. is the list
    ("..", "invalid_format"),
    ("...", "invalid_format"),
    ("ACT-1.", "invalid_format"),
    ("", "empty"),
    ("   ", "empty"),
    (2026, "wrong_type"),
    (["ACT-1"], "wrong_type"),
    (None, "missing"),
])
def test_notice_id_rejects(value: Any, code: str) -> None:
    assert errors_of(notice(notice_id=value)) == [("notice_id", code)]


def test_notice_id_is_required() -> None:
    assert errors_of(notice(drop=("notice_id",))) == [("notice_id", "missing")]


# --- tenant_id ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [TENANT_ID, TENANT_ID.upper(), "8F3C2A6E-1b7d-4C59-9e0a-2D4F6B8A1C3E"])
def test_tenant_id_is_a_guid_in_any_case_normalised_to_lower_case(value: str) -> None:
    assert parse_notice(notice(tenant_id=value)).tenant_id == TENANT_ID


@pytest.mark.parametrize(("value", "code"), [
    ("8f3c2a6e-1b7d-4c59-9e0a-2d4f6b8a1c3", "invalid_guid"),
    ("8f3c2a6e1b7d4c599e0a2d4f6b8a1c3e", "invalid_guid"),
    ("{8f3c2a6e-1b7d-4c59-9e0a-2d4f6b8a1c3e}", "invalid_guid"),
    ("8f3c2a6e-1b7d-4c59-9e0a-2d4f6b8a1c3g", "invalid_guid"),
    ("contoso.onmicrosoft.com", "invalid_guid"),
    ("８f3c2a6e-1b7d-4c59-9e0a-2d4f6b8a1c3e", "invalid_guid"),
    ("", "empty"),
    (12345, "wrong_type"),
    (None, "missing"),
])
def test_tenant_id_rejects(value: Any, code: str) -> None:
    assert errors_of(notice(tenant_id=value)) == [("tenant_id", code)]


def test_tenant_id_is_required() -> None:
    assert errors_of(notice(drop=("tenant_id",))) == [("tenant_id", "missing")]


# --- services -------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [["mailgates", "enterprise_audit"], ["enterprise_audit", "mailgates"]])
def test_services_come_out_in_canonical_order_enterprise_audit_first(order: list[str]) -> None:
    assert parse_notice(notice(services=order)).services == ("enterprise_audit", "mailgates")


@pytest.mark.parametrize(("value", "code"), [
    ([], "empty"),
    ("mailgates", "wrong_type"),
    ({"mailgates": True}, "wrong_type"),
    (["mailgates", "archive"], "unknown_service"),
    (["MailGates", "enterprise_audit"], "unknown_service"),
    (["mailgates", 1], "unknown_service"),
    (["mailgates", None], "unknown_service"),
    (["mailgates", ["enterprise_audit"]], "unknown_service"),
    (["mailgates", "enterprise_audit", "mailgates"], "duplicate_service"),
    (None, "missing"),
])
def test_services_rejects(value: Any, code: str) -> None:
    assert errors_of(notice(services=value)) == [("services", code)]


def test_services_is_required() -> None:
    assert errors_of(notice(drop=("services",))) == [("services", "missing")]


def test_each_bad_service_entry_is_reported() -> None:
    data = notice(services=["archive", "mailgates", "mailgates", 7])
    assert errors_of(data) == [
        ("services", "unknown_service"),
        ("services", "duplicate_service"),
        ("services", "unknown_service"),
    ]


# --- journal_report_address -----------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("j0001@cs-365.cybermail.jp", "j0001@cs-365.cybermail.jp"),
    ("j0001@cs-365-02.cybermail.jp", "j0001@cs-365-02.cybermail.jp"),
    ("J0001@CS-365.CyberMail.JP", "J0001@cs-365.cybermail.jp"),
    ("  j0001@cs-365.cybermail.jp  ", "j0001@cs-365.cybermail.jp"),
    ("first.last+tag@cs-365-02.cybermail.jp", "first.last+tag@cs-365-02.cybermail.jp"),
])
def test_journal_address_domain_is_compared_and_stored_in_lower_case(value: str, expected: str) -> None:
    parsed = parse_notice(notice(journal_report_address=value))
    assert parsed.journal_report_address == expected
    assert parsed.journal_domain == expected.rsplit("@", 1)[1]


@pytest.mark.parametrize(("value", "code"), [
    ("j0001@archive.example.net", "domain_not_allowed"),
    ("j0001@sub.cs-365.cybermail.jp", "domain_not_allowed"),
    ("j0001@cybermail.jp", "domain_not_allowed"),
    ("j0001@cs-365.cybermail.jp.example.net", "domain_not_allowed"),
    ("cs-365.cybermail.jp", "invalid_email"),
    ("j0001@@cs-365.cybermail.jp", "invalid_email"),
    ("j 0001@cs-365.cybermail.jp", "invalid_email"),
    ("j0001@cs-365.cybermail.jp.", "invalid_email"),
    ("@cs-365.cybermail.jp", "invalid_email"),
    ("j0001@", "invalid_email"),
    ("", "empty"),
    (["j0001@cs-365.cybermail.jp"], "wrong_type"),
    (None, "missing"),
])
def test_journal_address_rejects(value: Any, code: str) -> None:
    assert errors_of(notice(journal_report_address=value)) == [("journal_report_address", code)]


def test_journal_address_is_required_for_enterprise_audit() -> None:
    assert errors_of(notice(drop=("journal_report_address",))) == [("journal_report_address", "missing")]
    assert errors_of(notice(AUDIT_ONLY, drop=("journal_report_address",))) == [("journal_report_address", "missing")]


def test_journal_address_is_not_required_for_mailgates_alone() -> None:
    assert parse_notice(notice(MAILGATES_ONLY)).journal_report_address is None


# --- mx_host --------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("mgf.cybermail.jp", "mgf.cybermail.jp"),
    ("mgs.cybermail.jp", "mgs.cybermail.jp"),
    ("mgp.cybermail.jp", "mgp.cybermail.jp"),
    ("MGF.CyberMail.JP", "mgf.cybermail.jp"),
    ("mgs.cybermail.jp.", "mgs.cybermail.jp"),
    ("MGP.CYBERMAIL.JP.", "mgp.cybermail.jp"),
    (" mgf.cybermail.jp ", "mgf.cybermail.jp"),
])
def test_mx_host_is_case_insensitive_with_one_trailing_dot_allowed(value: str, expected: str) -> None:
    assert parse_notice(notice(mx_host=value)).mx_host == expected


@pytest.mark.parametrize(("value", "code"), [
    ("smtp.example.net", "host_not_allowed"),
    ("mgf.cybermail.jp..", "host_not_allowed"),
    ("mgx.cybermail.jp", "host_not_allowed"),
    ("evil.mgf.cybermail.jp", "host_not_allowed"),
    ("mgf.cybermail.jp.example.net", "host_not_allowed"),
    ("mgf.cybermail.jp:25", "host_not_allowed"),
    ("*", "host_not_allowed"),
    ("mgf.cybermail.jp,smtp.example.net", "host_not_allowed"),
    ("203.0.113.25", "host_not_allowed"),
    ("", "empty"),
    (["mgf.cybermail.jp"], "wrong_type"),
    (None, "missing"),
])
def test_mx_host_rejects(value: Any, code: str) -> None:
    assert errors_of(notice(mx_host=value)) == [("mx_host", code)]


def test_mx_host_is_required_for_mailgates() -> None:
    assert errors_of(notice(MAILGATES_ONLY, drop=("mx_host",))) == [("mx_host", "missing")]


def test_the_host_not_allowed_message_lists_the_allowed_hosts() -> None:
    (error,) = field_errors_of(notice(mx_host="smtp.example.net"))
    for host in ("mgf.cybermail.jp", "mgs.cybermail.jp", "mgp.cybermail.jp"):
        assert host in error.message
        assert host in error.message_ja


# --- validation_recipient -------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("adm@example.com", "adm@example.com"),
    ("Adm@Example.COM", "Adm@example.com"),
    ("adm@notonmicrosoft.com", "adm@notonmicrosoft.com"),
    ("adm@onmicrosoft.com.example.net", "adm@onmicrosoft.com.example.net"),
    ("it-team+check@mail.example.co.jp", "it-team+check@mail.example.co.jp"),
])
def test_validation_recipient_outside_the_tenant_is_accepted(value: str, expected: str) -> None:
    assert parse_notice(notice(validation_recipient=value)).validation_recipient == expected


@pytest.mark.parametrize(("value", "code"), [
    ("admin@contoso.onmicrosoft.com", "recipient_in_tenant"),
    ("admin@CONTOSO.OnMicrosoft.COM", "recipient_in_tenant"),
    ("admin@fabrikam.onmicrosoft.com", "recipient_in_tenant"),
    ("admin@contoso.mail.onmicrosoft.com", "recipient_in_tenant"),
    ("admin@onmicrosoft.com", "recipient_in_tenant"),
    ("adm.example.com", "invalid_email"),
    ("adm@localhost", "invalid_email"),
    ("adm@example.123", "invalid_email"),
    ("adm@-example.com", "invalid_email"),
    ("adm@example..com", "invalid_email"),
    ("a@b@example.com", "invalid_email"),
    ("Adm <adm@example.com>", "invalid_email"),
    ("", "empty"),
    (42, "wrong_type"),
    (None, "missing"),
])
def test_validation_recipient_rejects(value: Any, code: str) -> None:
    assert errors_of(notice(validation_recipient=value)) == [("validation_recipient", code)]


def test_validation_recipient_is_required_for_mailgates() -> None:
    data = notice(MAILGATES_ONLY, drop=("validation_recipient",))
    assert errors_of(data) == [("validation_recipient", "missing")]


def test_validation_recipient_is_not_required_for_enterprise_audit_alone() -> None:
    assert parse_notice(AUDIT_ONLY).validation_recipient is None


# --- tenant_domain --------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
    ("Contoso.OnMicrosoft.com", "contoso.onmicrosoft.com"),
    ("contoso.onmicrosoft.com.", "contoso.onmicrosoft.com"),
])
def test_tenant_domain_is_the_initial_domain_in_lower_case(value: str, expected: str) -> None:
    assert parse_notice(notice(tenant_domain=value)).tenant_domain == expected


def test_tenant_domain_is_optional() -> None:
    assert parse_notice(notice(drop=("tenant_domain",))).tenant_domain is None


@pytest.mark.parametrize(("value", "code"), [
    ("contoso.co.jp", "invalid_tenant_domain"),
    ("onmicrosoft.com", "invalid_tenant_domain"),
    ("a.contoso.onmicrosoft.com", "invalid_tenant_domain"),
    ("contoso.mail.onmicrosoft.com", "invalid_tenant_domain"),
    ("con toso.onmicrosoft.com", "invalid_tenant_domain"),
    (["contoso.onmicrosoft.com"], "wrong_type"),
])
def test_tenant_domain_rejects(value: Any, code: str) -> None:
    assert errors_of(notice(tenant_domain=value)) == [("tenant_domain", code)]


def test_a_recipient_in_the_named_tenant_domain_is_rejected() -> None:
    data = notice(tenant_domain="contoso.onmicrosoft.com", validation_recipient="it@contoso.onmicrosoft.com")
    assert errors_of(data) == [("validation_recipient", "recipient_in_tenant")]


# --- contract_id, customer_name -------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "コントソ株式会社",
    "Contoso Ltd.",
    "株式会社コントソ 🏢 (東京本社)",
    "Ünïcödé — ✓",
    "x" * 256,
    "MAILGATESΣ",
])
@pytest.mark.parametrize("field", ["contract_id", "customer_name"])
def test_optional_text_fields_accept_any_unicode(field: str, value: str) -> None:
    assert getattr(parse_notice(notice() | {field: value}), field) == value


@pytest.mark.parametrize("field", ["contract_id", "customer_name"])
def test_optional_text_fields_may_be_absent_or_null(field: str) -> None:
    assert getattr(parse_notice(notice(drop=(field,))), field) is None
    assert getattr(parse_notice(notice() | {field: None}), field) is None
    assert getattr(parse_notice(notice() | {field: ""}), field) is None


@pytest.mark.parametrize(("value", "code"), [
    (12345, "wrong_type"),
    (["C-1"], "wrong_type"),
    ({"id": "C-1"}, "wrong_type"),
    (True, "wrong_type"),
    ("x" * 257, "too_long"),
    ("line one\nline two", "control_character"),
    ("tab\there", "control_character"),
])
@pytest.mark.parametrize("field", ["contract_id", "customer_name"])
def test_optional_text_fields_reject(field: str, value: Any, code: str) -> None:
    assert errors_of(notice() | {field: value}) == [(field, code)]


def test_a_lone_surrogate_in_a_text_field_is_rejected_or_hashable() -> None:
    text = json.dumps(notice(customer_name="x\ud800y"))  # ensure_ascii: the JSON text is plain ASCII
    try:
        parsed = parse_notice(text)
    except NoticeError as exc:
        assert [e.field for e in exc.errors] == ["customer_name"]
        return
    assert len(parsed.content_hash) == 64


# --- issued_at ------------------------------------------------------------------------------


# The same instant is the same notice whatever offset the contract system wrote it in, so
# issued_at is kept in UTC (a re-sent notice must not become a NOTICE_CONFLICT).
@pytest.mark.parametrize(("value", "expected"), [
    ("2026-04-01T09:00:00+09:00", "2026-04-01T00:00:00Z"),
    ("2026-04-01T00:00:00Z", "2026-04-01T00:00:00Z"),
    ("2026-04-01T09:00:00.250+09:00", "2026-04-01T00:00:00.250000Z"),
    ("2026-04-01T09:00+0900", "2026-04-01T00:00:00Z"),
])
def test_issued_at_is_an_iso_timestamp_with_offset(value: str, expected: str) -> None:
    assert parse_notice(notice(issued_at=value)).issued_at == expected


@pytest.mark.parametrize(("value", "code"), [
    ("2026-04-01T09:00:00", "invalid_timestamp"),
    ("2026-04-01", "invalid_timestamp"),
    ("2026-04-01 09:00:00+09:00", "invalid_timestamp"),
    ("2026/04/01 9:00 JST", "invalid_timestamp"),
    ("2026-13-01T09:00:00+09:00", "invalid_timestamp"),
    ("2026-04-01T09:00:00+25:00", "invalid_timestamp"),
    ("yesterday", "invalid_timestamp"),
    (1775001600, "wrong_type"),
])
def test_issued_at_rejects(value: Any, code: str) -> None:
    assert errors_of(notice(issued_at=value)) == [("issued_at", code)]


def test_issued_at_is_optional() -> None:
    assert parse_notice(notice(drop=("issued_at",))).issued_at is None


# --- every bad field at once ----------------------------------------------------------------


def test_four_bad_fields_give_four_errors_in_one_notice_error() -> None:
    data = notice(
        tenant_id="not-a-guid",
        mx_host="smtp.example.net",
        journal_report_address="j0001@archive.example.net",
        validation_recipient="admin@contoso.onmicrosoft.com",
    )
    assert sorted(errors_of(data)) == [
        ("journal_report_address", "domain_not_allowed"),
        ("mx_host", "host_not_allowed"),
        ("tenant_id", "invalid_guid"),
        ("validation_recipient", "recipient_in_tenant"),
    ]


def test_an_empty_object_reports_every_required_field() -> None:
    assert sorted(errors_of({})) == [("notice_id", "missing"), ("services", "missing"), ("tenant_id", "missing")]


def test_every_field_wrong_at_once_is_reported_field_by_field() -> None:
    data = {
        "notice_id": "bad id",
        "tenant_id": "bad",
        "services": ["mailgates", "enterprise_audit"],
        "journal_report_address": "nope",
        "mx_host": "smtp.example.net",
        "validation_recipient": "x@contoso.onmicrosoft.com",
        "tenant_domain": "contoso.com",
        "contract_id": 1,
        "customer_name": "a\x00b",
        "issued_at": "today",
        "action": "stop",
        "journal_ndr_address": "nope",
        "extra": 1,
    }
    errors = errors_of(data)
    assert sorted(field for field, _ in errors) == sorted([*(k for k in ALLOWED_KEYS if k != "services"), "extra"])


def test_notice_error_carries_the_notice_invalid_code_and_each_field() -> None:
    with pytest.raises(NoticeError) as info:
        parse_notice(notice(mx_host="smtp.example.net", tenant_id="bad"))
    exc = info.value

    assert isinstance(exc, ProvisioningError)
    assert exc.code is ErrorCode.NOTICE_INVALID
    assert exc.retryable is False
    stored = exc.to_dict()
    assert stored["code"] == "NOTICE_INVALID"
    assert stored["errors"] == [e.to_dict() for e in exc.errors]
    assert {e.field for e in exc.errors} == {"mx_host", "tenant_id"}
    assert "mx_host: host_not_allowed" in str(exc)


# --- normalisation and content_hash ---------------------------------------------------------


def test_normalisation_of_every_field_at_once() -> None:
    parsed = parse_notice({
        "notice_id": " ACT-9 ",
        "tenant_id": TENANT_ID.upper(),
        "services": ["mailgates", "enterprise_audit"],
        "journal_report_address": "J9@CS-365-02.CYBERMAIL.JP",
        "mx_host": "MGS.CYBERMAIL.JP.",
        "validation_recipient": "Ops@Example.ORG",
        "tenant_domain": "Contoso.OnMicrosoft.Com",
    })
    assert parsed.notice_id == "ACT-9"
    assert parsed.tenant_id == TENANT_ID
    assert parsed.services == ("enterprise_audit", "mailgates")
    assert parsed.journal_report_address == "J9@cs-365-02.cybermail.jp"
    assert parsed.mx_host == "mgs.cybermail.jp"
    assert parsed.validation_recipient == "Ops@example.org"
    assert parsed.tenant_domain == "contoso.onmicrosoft.com"


@pytest.mark.parametrize("variant", [
    dict(reversed(list(FULL.items()))),
    notice(tenant_id=TENANT_ID.upper()),
    notice(services=["enterprise_audit", "mailgates"]),
    notice(mx_host="MGF.cybermail.jp."),
    notice(journal_report_address="j0001@CS-365.CYBERMAIL.JP"),
    notice(validation_recipient="adm@EXAMPLE.com"),
    notice(tenant_domain="CONTOSO.onmicrosoft.com."),
    notice(notice_id="  ACT-2026-0001\t"),
    notice(issued_at="2026-04-01T09:00:00.000+09:00"),
], ids=["key-order", "guid-case", "service-order", "host-case-dot", "journal-case", "recipient-domain-case",
        "tenant-domain-case", "whitespace", "zero-fraction"])
def test_content_hash_is_equal_for_semantically_equal_notices(variant: dict[str, Any]) -> None:
    assert parse_notice(variant).content_hash == parse_notice(FULL).content_hash
    assert parse_notice(variant) == parse_notice(FULL)


def test_content_hash_ignores_keys_of_services_not_requested() -> None:
    with_extra = notice(MAILGATES_ONLY, journal_report_address="j0001@cs-365.cybermail.jp")
    assert parse_notice(with_extra).content_hash == parse_notice(MAILGATES_ONLY).content_hash


@pytest.mark.parametrize("variant", [
    notice(notice_id="ACT-2026-0002"),
    notice(tenant_id="8f3c2a6e-1b7d-4c59-9e0a-2d4f6b8a1c3f"),
    notice(services=["mailgates"]),
    notice(mx_host="mgs.cybermail.jp"),
    notice(journal_report_address="j0001@cs-365-02.cybermail.jp"),
    notice(journal_report_address="J0001@cs-365.cybermail.jp"),
    notice(validation_recipient="ops@example.com"),
    notice(drop=("tenant_domain",)),
    notice(contract_id="C-0002"),
    notice(customer_name="コントソ"),
    notice(issued_at="2026-04-01T09:00:01+09:00"),
], ids=["notice-id", "tenant", "services", "host", "journal-domain", "journal-local-part-case", "recipient",
        "no-tenant-domain", "contract", "customer", "issued-at"])
def test_content_hash_differs_for_different_notices(variant: dict[str, Any]) -> None:
    assert parse_notice(variant).content_hash != parse_notice(FULL).content_hash


def test_content_hash_is_a_sha256_hex_digest_of_the_canonical_json() -> None:
    parsed = parse_notice(FULL)
    assert re.fullmatch(r"[0-9a-f]{64}", parsed.content_hash)
    assert json.loads(parsed.canonical_json()) == parsed.to_dict()
    assert "コントソ株式会社" in parsed.canonical_json()


# --- the JSON itself ------------------------------------------------------------------------


def test_duplicate_keys_are_an_error_naming_the_key() -> None:
    text = f'{{"notice_id": "A-1", "notice_id": "A-2", "tenant_id": "{TENANT_ID}", "services": ["enterprise_audit"]}}'
    assert errors_of(text) == [("notice_id", "duplicate_key")]


def test_a_duplicate_key_with_the_same_value_is_still_an_error() -> None:
    text = json.dumps(FULL)[:-1] + ', "mx_host": "mgf.cybermail.jp"}'
    assert errors_of(text) == [("mx_host", "duplicate_key")]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    text = json.dumps(notice(contract_id="__X__")).replace('"__X__"', constant)
    assert errors_of(text) == [("$", "malformed_json")]
    text = json.dumps(notice(services=["__X__"])).replace('"__X__"', constant)
    assert errors_of(text) == [("$", "malformed_json")]


def test_bytes_with_a_utf8_bom_are_accepted() -> None:
    data = b"\xef\xbb\xbf" + json.dumps(FULL, ensure_ascii=False).encode("utf-8")
    assert parse_notice(data) == parse_notice(FULL)


@pytest.mark.parametrize(("data", "code"), [
    ("", "malformed_json"),
    ("   ", "malformed_json"),
    ("{", "malformed_json"),
    ('{"notice_id": "A-1",}', "malformed_json"),
    ("{'notice_id': 'A-1'}", "malformed_json"),
    (json.dumps(FULL) + " trailing", "malformed_json"),
    (b"\xff\xfe{\x00}\x00", "malformed_json"),
    (json.dumps(FULL).encode("utf-16"), "malformed_json"),
    (json.dumps(FULL, ensure_ascii=False).encode("shift_jis"), "malformed_json"),
    (b"\x80\x81\x82", "malformed_json"),
    ("[" * 5000 + "]" * 5000, "malformed_json"),
    ('{"services": ' + "[" * 5000 + "]" * 5000 + "}", "malformed_json"),
    ("[]", "not_object"),
    ("[" + json.dumps(FULL) + "]", "not_object"),
    ('"notice"', "not_object"),
    ("42", "not_object"),
    ("null", "not_object"),
    ("true", "not_object"),
    (b"{}[]", "malformed_json"),
])
def test_text_that_is_not_a_json_object_is_a_notice_error(data: str | bytes, code: str) -> None:
    assert errors_of(data) == [("$", code)]


def test_a_notice_at_the_size_cap_is_read_and_one_byte_more_is_too_large() -> None:
    text = json.dumps(FULL)
    at_cap = text[:-1] + " " * (MAX_NOTICE_BYTES - len(text)) + "}"
    assert len(at_cap.encode("utf-8")) == MAX_NOTICE_BYTES

    assert parse_notice(at_cap) == parse_notice(FULL)
    assert parse_notice(at_cap.encode("utf-8")) == parse_notice(FULL)
    assert errors_of(at_cap + " ") == [("$", "too_large")]
    assert errors_of(at_cap.encode("utf-8") + b" ") == [("$", "too_large")]


def test_the_size_cap_counts_utf8_bytes_not_characters() -> None:
    text = json.dumps(notice(customer_name="社" * 6000), ensure_ascii=False)
    assert len(text) < MAX_NOTICE_BYTES < len(text.encode("utf-8"))
    assert errors_of(text) == [("$", "too_large")]


def test_a_huge_input_is_rejected_before_it_is_parsed() -> None:
    assert errors_of("[" * 10_000_000) == [("$", "too_large")]
    assert errors_of(b"\x00" * 1_000_000) == [("$", "too_large")]


def test_a_str_that_is_not_encodable_is_a_notice_error() -> None:
    assert errors_of('{"notice_id": "\ud800"}') == [("$", "malformed_json")]


def test_a_huge_integer_as_a_service_in_a_mapping_is_a_notice_error() -> None:
    assert errors_of(notice(services=[10**5000])) == [("services", "unknown_service")]


# --- messages -------------------------------------------------------------------------------

BAD_NOTICES: list[Any] = [
    notice(notice_id="bad id"), notice(notice_id=""), notice(notice_id=1), notice(drop=("notice_id",)),
    notice(tenant_id="bad"),
    notice(services=[]), notice(services="x"), notice(services=["x"]), notice(services=["mailgates", "mailgates"]),
    notice(journal_report_address="x"), notice(journal_report_address="x@example.net"),
    notice(mx_host="smtp.example.net"),
    notice(validation_recipient="x"), notice(validation_recipient="x@contoso.onmicrosoft.com"),
    notice(tenant_domain="contoso.com"),
    notice(contract_id="x" * 300), notice(customer_name="a\x01"),
    notice(issued_at="today"),
    notice(unknown=1),
    '{"a": 1, "a": 2}', "{", "[]", "x" * (MAX_NOTICE_BYTES + 1),
]


def test_every_error_has_a_field_a_code_and_messages_in_english_and_japanese() -> None:
    codes: set[str] = set()
    for data in BAD_NOTICES:
        for error in field_errors_of(data):
            codes.add(error.code)
            assert error.field
            assert re.fullmatch(r"[a-z_]+", error.code), error
            assert error.message.strip(), error
            assert error.message_ja.strip(), error
            assert JAPANESE.search(error.message_ja), error
            assert error.line().startswith(f"{error.field}: {error.code}: ")
    assert codes >= {
        "missing", "empty", "wrong_type", "invalid_format", "invalid_guid", "unknown_service",
        "duplicate_service", "invalid_email", "domain_not_allowed", "host_not_allowed",
        "recipient_in_tenant", "invalid_tenant_domain", "too_long", "control_character",
        "invalid_timestamp", "unknown_key", "duplicate_key", "malformed_json", "not_object", "too_large",
    }


# --- custom allow-lists ---------------------------------------------------------------------

CUSTOM = Settings(
    allowed_smart_hosts=frozenset({"relay.mailgates.example"}),
    allowed_journal_domains=frozenset({"journal.example.jp"}),
)


def test_custom_allow_lists_admit_their_hosts_and_domains() -> None:
    parsed = parse_notice(
        notice(mx_host="Relay.MailGates.Example.", journal_report_address="j@Journal.Example.JP"), CUSTOM
    )
    assert parsed.mx_host == "relay.mailgates.example"
    assert parsed.journal_report_address == "j@journal.example.jp"


def test_custom_allow_lists_replace_the_defaults() -> None:
    assert sorted(errors_of(FULL, CUSTOM)) == [
        ("journal_report_address", "domain_not_allowed"),
        ("mx_host", "host_not_allowed"),
    ]


def test_the_default_settings_are_used_when_none_are_given() -> None:
    assert parse_notice(FULL, None) == parse_notice(FULL, Settings())


# --- the sample notices ---------------------------------------------------------------------

# Each file in samples/invalid/ is named for what is wrong with it; this is what it must report.
INVALID_SAMPLE_ERRORS: dict[str, set[tuple[str, str]]] = {
    "bad-guid.json": {("tenant_id", "invalid_guid")},
    "missing-tenant-id.json": {("tenant_id", "missing")},
    "missing-notice-id.json": {("notice_id", "missing")},
    "notice-id-bad-characters.json": {("notice_id", "invalid_format")},
    "smart-host-off-allow-list.json": {("mx_host", "host_not_allowed")},
    "smart-host-lookalike.json": {("mx_host", "host_not_allowed")},
    "journal-domain-off-allow-list.json": {("journal_report_address", "domain_not_allowed")},
    "journal-address-not-an-email.json": {("journal_report_address", "invalid_email")},
    "mailgates-missing-mx-host.json": {("mx_host", "missing")},
    "mailgates-missing-validation-recipient.json": {("validation_recipient", "missing")},
    "enterprise-audit-missing-journal-address.json": {("journal_report_address", "missing")},
    "empty-services.json": {("services", "empty")},
    "services-not-a-list.json": {("services", "wrong_type")},
    "unknown-service.json": {("services", "unknown_service")},
    "duplicate-service.json": {("services", "duplicate_service")},
    "unknown-key-typo.json": {("mx_hots", "unknown_key"), ("mx_host", "missing")},
    "recipient-in-tenant.json": {("validation_recipient", "recipient_in_tenant")},
    "recipient-not-an-email.json": {("validation_recipient", "invalid_email")},
    "tenant-domain-not-onmicrosoft.json": {("tenant_domain", "invalid_tenant_domain")},
    "issued-at-without-offset.json": {("issued_at", "invalid_timestamp")},
    "contract-id-not-a-string.json": {("contract_id", "wrong_type")},
    "duplicate-key.json": {("mx_host", "duplicate_key")},
    "not-an-object.json": {("$", "not_object")},
    "four-bad-fields.json": {
        ("tenant_id", "invalid_guid"),
        ("mx_host", "host_not_allowed"),
        ("journal_report_address", "domain_not_allowed"),
        ("validation_recipient", "recipient_in_tenant"),
    },
}


def test_every_invalid_sample_has_an_expectation_and_every_expectation_a_sample() -> None:
    assert sorted(p.name for p in INVALID_SAMPLES.glob("*.json")) == sorted(INVALID_SAMPLE_ERRORS)


@pytest.mark.parametrize("name", sorted(INVALID_SAMPLE_ERRORS))
def test_invalid_sample_reports_what_its_name_says(name: str) -> None:
    data = (INVALID_SAMPLES / name).read_bytes()
    errors = errors_of(data)
    assert len(errors) == len(set(errors))
    assert set(errors) == INVALID_SAMPLE_ERRORS[name]


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_every_valid_sample_parses(path: Path) -> None:
    parsed = parse_notice(path.read_bytes())
    assert parse_notice(parsed.to_dict()) == parsed


def test_a_mailgates_validation_recipient_in_a_journal_domain_is_refused() -> None:
    assert errors_of({
        "notice_id": "n-review-2",
        "tenant_id": TENANT_ID,
        "services": ["mailgates", "enterprise_audit"],
        "journal_report_address": "jr@cs-365.cybermail.jp",
        "mx_host": "mgf.cybermail.jp",
        "validation_recipient": "adm@cs-365.cybermail.jp",
    }) == [("validation_recipient", "recipient_in_journal_domain")]


# --- hostile input --------------------------------------------------------------------------
# Each of these once failed later with a 500, broke every list view that held its row, or was
# accepted and then unreachable by URL. Now each is a field error naming what to fix.


@pytest.mark.parametrize("case", hostile_notices(), ids=lambda c: c.name)
def test_a_hostile_notice_is_a_field_error_that_can_itself_be_stored(case: Hostile) -> None:
    with pytest.raises(NoticeError) as info:
        parse_notice(case.body)
    assert case.field in [e.field for e in info.value.errors]
    for error in info.value.errors:
        for text in (error.field, error.message, error.message_ja):
            assert not forbidden_characters(text), text  # quoted escaped, never raw
    json.dumps(info.value.to_dict(), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize(("ch", "code"), [
    ("\ud800", "invalid_unicode"), ("\udfff", "invalid_unicode"), ("\uffff", "invalid_unicode"),
    ("\ufffe", "invalid_unicode"), ("\ufdd0", "invalid_unicode"), ("\U0010ffff", "invalid_unicode"),
    ("\x00", "control_character"), ("\x1b", "control_character"), ("\x7f", "control_character"),
    ("\x85", "control_character"), ("\t", "control_character"),
])
@pytest.mark.parametrize("field", ["notice_id", "tenant_id", "customer_name", "contract_id", "mx_host",
                                   "validation_recipient", "journal_report_address", "tenant_domain", "issued_at"])
def test_a_character_that_is_not_text_is_an_error_in_any_field(field: str, ch: str, code: str) -> None:
    value = str(FULL.get(field) or "x")
    bad = value[:2] + ch + value[2:]
    assert errors_of(notice() | {field: bad}) == [(field, code)]
    assert errors_of(json.dumps(notice() | {field: bad})) == [(field, code)]  # as a JSON escape too


def test_a_character_that_is_not_text_is_an_error_in_a_key_a_list_and_an_ignored_field() -> None:
    assert errors_of(notice() | {"\ud800": 1}) == [("\\ud800", "invalid_unicode")]
    assert errors_of(notice(services=["mailgates", "enterprise_audit\uffff"])) == [("services", "invalid_unicode")]
    ignored = notice(services=["enterprise_audit"], drop=("mx_host", "validation_recipient"))
    assert errors_of(ignored | {"mx_host": {"a": ["\x00"]}}) == [("mx_host", "control_character")]
    assert errors_of(ignored | {"mx_host": {"\udc00": 1}}) == [("mx_host", "invalid_unicode")]


def test_surrounding_whitespace_is_still_trimmed_not_refused() -> None:
    assert parse_notice(notice(notice_id="\tACT-2026-0001\r\n")).notice_id == "ACT-2026-0001"


def test_a_message_quotes_bad_text_escaped() -> None:
    with pytest.raises(NoticeError) as info:
        parse_notice(json.dumps(notice(customer_name="a\ud800\x00")))
    (error,) = info.value.errors
    assert "\\ud800" in error.message and "\\u0000" in error.message


@pytest.mark.parametrize("value", [
    "9999-12-31T23:59:59-14:00",  # after the last instant a datetime can hold once in UTC
    "0001-01-01T00:00:00+14:00",  # before the first
    "9999-12-31T23:59:59.999999+00:00",
    "0001-01-01T00:00:00Z",
    "1999-12-31T23:59:59Z",
    "2100-01-01T00:00:00Z",
    "2026-04-01T09:00:00+14:01",  # no place on Earth is that far ahead
    "2026-04-01T09:00:00-23:59",
])
def test_a_timestamp_at_the_calendars_edges_is_out_of_range(value: str) -> None:
    assert errors_of(notice(issued_at=value)) == [("issued_at", "out_of_range")]


@pytest.mark.parametrize(("value", "expected"), [
    ("2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z"),
    ("2099-12-31T23:59:59.999999Z", "2099-12-31T23:59:59.999999Z"),
    ("2026-04-01T09:00:00+14:00", "2026-03-31T19:00:00Z"),
    ("2026-04-01T09:00:00-12:00", "2026-04-01T21:00:00Z"),
])
def test_a_timestamp_inside_the_window_is_accepted(value: str, expected: str) -> None:
    assert parse_notice(notice(issued_at=value)).issued_at == expected


@pytest.mark.parametrize("notice_id", ["ACT-2026-0001", "a", "a.b", ".hidden", "a..b", "_", "-", "x" * 64])
def test_a_notice_id_survives_a_url_path_unchanged(notice_id: str) -> None:
    parsed = parse_notice(notice(notice_id=notice_id))
    base = "https://func.example/api/activations/"
    assert urlsplit(urljoin(base, quote(parsed.notice_id, safe=""))).path == urlsplit(base).path + notice_id


@pytest.mark.parametrize("data", [None, 42, 1.5, ["a"], object(), bytearray(b"{}"), memoryview(b"[]"),
                                  {1: "x"}, {None: "x"}, {("t",): 1}, {10**5000: 1}])
def test_anything_that_is_not_a_notice_is_a_notice_error(data: Any) -> None:
    with pytest.raises(NoticeError) as info:
        parse_notice(data)
    json.dumps(info.value.to_dict(), ensure_ascii=False).encode("utf-8")


def test_a_cyclic_or_huge_mapping_is_a_notice_error_not_a_hang() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert ("customer_name", "too_large") in errors_of(notice(customer_name=loop))
    assert ("contract_id", "too_large") in errors_of(notice(contract_id=[[0]] * 20_000))
