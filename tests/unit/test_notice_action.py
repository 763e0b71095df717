"""The notice's `action`: activate (the default, as before) or terminate (only the services that end)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.notice import NoticeError, parse_notice

TENANT = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"
ACTIVATION: dict[str, Any] = {
    "notice_id": "n-1",
    "tenant_id": TENANT,
    "services": ["mailgates", "enterprise_audit"],
    "journal_report_address": "jr@cs-365.cybermail.jp",
    "mx_host": "mgf.cybermail.jp",
    "validation_recipient": "adm@example.com",
}


def codes(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(NoticeError) as caught:
        parse_notice(raw)
    return [(e.field, e.code) for e in caught.value.errors]


def test_without_an_action_a_notice_activates_and_hashes_as_before() -> None:
    plain = parse_notice(ACTIVATION)
    explicit = parse_notice({**ACTIVATION, "action": "activate"})
    assert plain.action == "activate" and not plain.terminates
    assert "action" not in plain.to_dict()
    # The content hash is the activation's identity in storage: it must not change for old notices.
    assert explicit.content_hash == plain.content_hash
    assert plain.content_hash == parse_notice(dict(ACTIVATION)).content_hash


def test_a_terminate_notice_needs_only_notice_id_tenant_id_and_services() -> None:
    notice = parse_notice({"notice_id": "t-1", "tenant_id": TENANT.upper(), "services": ["mailgates"],
                           "action": "terminate"})
    assert notice.terminates and notice.services == ("mailgates",) and notice.tenant_id == TENANT
    assert notice.to_dict()["action"] == "terminate"


def test_a_terminate_notice_ignores_the_routing_keys_of_an_activation() -> None:
    notice = parse_notice({**ACTIVATION, "action": "terminate", "mx_host": "smtp.example.net",
                           "journal_report_address": "not-an-address"})
    assert notice.terminates
    assert (notice.mx_host, notice.journal_report_address, notice.validation_recipient) == (None, None, None)


def test_terminating_differs_from_activating_in_content_hash() -> None:
    assert (parse_notice({**ACTIVATION, "action": "terminate"}).content_hash
            != parse_notice(ACTIVATION).content_hash)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"action": "deactivate"}, [("action", "unknown_action")]),
    ({"action": "TERMINATE"}, [("action", "unknown_action")]),
    ({"action": 1}, [("action", "wrong_type")]),
    ({"action": "terminate", "services": []}, [("services", "empty")]),
    ({"action": "terminate", "services": None}, [("services", "missing")]),
    ({"action": "terminate", "tenant_id": "x"}, [("tenant_id", "invalid_guid")]),
])
def test_bad_actions_and_terminate_notices_name_the_field(raw: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert codes({**ACTIVATION, **raw}) == expected


def test_an_unknown_action_still_reports_every_other_bad_field() -> None:
    assert codes({**ACTIVATION, "action": "stop", "mx_host": "smtp.example.net"}) == [
        ("action", "unknown_action"), ("mx_host", "host_not_allowed")]


@pytest.mark.parametrize(("address", "code"), [
    ("not an address", "invalid_email"),
    ("ndr@contoso.onmicrosoft.com", "recipient_in_tenant"),
    ("ndr@cs-365.cybermail.jp", "recipient_in_journal_domain"),
    ("ndr@x.cs-365-02.cybermail.jp", "recipient_in_journal_domain"),
])
def test_a_bad_journal_ndr_address_is_named(address: str, code: str) -> None:
    assert codes({**ACTIVATION, "journal_ndr_address": address}) == [("journal_ndr_address", code)]


def test_the_journal_ndr_address_is_kept_for_enterprise_audit_and_ignored_otherwise() -> None:
    notice = parse_notice({**ACTIVATION, "journal_ndr_address": "Journal-NDR@Example.COM"})
    assert notice.journal_ndr_address == "Journal-NDR@example.com"
    mailgates = parse_notice({**ACTIVATION, "services": ["mailgates"], "journal_ndr_address": "bad"})
    assert mailgates.journal_ndr_address is None
