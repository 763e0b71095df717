"""Review findings (pure): each test shows one problem found in review, now fixed.

Each test was written failing, for the reason its name gives, and now guards the fix.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.auth import error_from_msal_result
from shared.connectors import OWNERSHIP_MARKER, desired_connectors
from shared.errors import ErrorCode, RoutingPolicyError
from shared.exchange import ExchangeAdminClient
from shared.notice import parse_notice
from shared.plan import Action, make_plan
from shared.render import plan_powershell, ps_string
from shared.settings import Settings
from shared.spf import DnsLookupFailed, DnsNameNotFound, DnsNoAnswer, SpfResult, check_domain
from tests.support import FakeConnector, as_deployed

TENANT = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"
NOTICE = parse_notice({
    "notice_id": "n-review",
    "tenant_id": TENANT,
    "services": ["mailgates", "enterprise_audit"],
    "journal_report_address": "jr@cs-365.cybermail.jp",
    "mx_host": "mgf.cybermail.jp",
    "validation_recipient": "adm@example.com",
})
EA, MG = desired_connectors(NOTICE)
EA_ONLY = parse_notice({
    "notice_id": "n-review-ea",
    "tenant_id": TENANT,
    "services": ["enterprise_audit"],
    "journal_report_address": "jr@cs-365.cybermail.jp",
})
OWN_NAMES = (Settings().ea_connector_name, Settings().mg_connector_name)


# -- plan: drift and ownership ------------------------------------------------------------------


def test_our_connector_left_in_test_mode_is_taken_out_of_it() -> None:
    plan = make_plan([EA, MG], [as_deployed(EA), as_deployed(MG, test_mode=True)])
    item = plan.connectors[1]
    assert item.action is Action.UPDATE
    assert item.changes.get("TestMode") is False


def test_switching_back_to_mx_routing_clears_the_smart_hosts() -> None:
    plan = make_plan([EA], [as_deployed(EA, use_mx_record=False, smart_hosts=("mgf.cybermail.jp",))])
    changes = plan.connectors[0].changes
    assert changes.get("UseMXRecord") is True
    assert "SmartHosts" in changes and not changes["SmartHosts"]


def test_the_manual_procedures_spelling_of_the_mailgates_name_is_recognised() -> None:
    manual = as_deployed(MG, name="MAILGATES Σ 送信コネクタ", comment="", is_validated=False)
    plan = make_plan([EA, MG], [manual], own_names=OWN_NAMES)
    assert not plan.blocked
    assert plan.connectors[1].action is Action.UPDATE
    assert plan.connectors[1].changes.get("Name") == MG.name


# -- plan: conflict rules -----------------------------------------------------------------------



def test_a_transport_rule_scoped_foreign_connector_only_warns() -> None:
    scoped = FakeConnector(name="Encryption via rule", recipient_domains=("*",), use_mx_record=False,
                           smart_hosts=("encrypt.example",), is_transport_rule_scoped=True)
    plan = make_plan([EA, MG], [scoped], own_names=OWN_NAMES)
    assert not plan.blocked
    assert plan.warnings


# -- SPF (RFC 7208) -----------------------------------------------------------------------------

REQUIRED = "spf.cybermail.jp"
REQUIRED_RECORD = "v=spf1 ip4:203.0.113.0/24 -all"


class FakeDns:
    def __init__(self, zone: dict[str, list[str]]) -> None:
        self.zone = zone

    def txt(self, name: str) -> list[str]:
        if name == "fail.example":
            raise DnsLookupFailed(name, "timeout")
        if name not in self.zone:
            raise DnsNameNotFound(name, "does not exist (NXDOMAIN)")
        if not self.zone[name]:
            raise DnsNoAnswer(name, "has no TXT records")
        return list(self.zone[name])


def spf(record: str, **extra: list[str]) -> SpfResult:
    zone = {"contoso.com": [record], REQUIRED: [REQUIRED_RECORD], **extra}
    return check_domain("contoso.com", required_include=REQUIRED, resolver=FakeDns(zone))


def test_an_include_after_all_does_not_authorise_mailgates() -> None:
    result = spf(f"v=spf1 -all include:{REQUIRED}")
    assert ErrorCode.SPF_INCLUDE_MISSING in result.codes


def test_a_fail_qualified_include_does_not_authorise_mailgates() -> None:
    result = spf(f"v=spf1 -include:{REQUIRED} ~all")
    assert ErrorCode.SPF_INCLUDE_MISSING in result.codes


def test_a_broken_include_before_mailgates_is_a_finding() -> None:
    result = spf(f"v=spf1 include:gone.example include:{REQUIRED} -all")
    assert not result.ok


# -- PowerShell export --------------------------------------------------------------------------

SCRIPT = plan_powershell(NOTICE, [EA, MG])


def _code_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_script_finds_our_connector_by_its_ownership_marker_too() -> None:
    code = _code_lines(SCRIPT)
    assert f"$Marker = '{OWNERSHIP_MARKER}'" in code
    assert any("Where-Object" in line and "Contains(\"$Marker $Service\")" in line for line in code)


def test_the_script_refuses_to_write_beside_a_foreign_enabled_star_connector() -> None:
    code = "\n".join(_code_lines(SCRIPT))
    assert "$_.Enabled" in code and "TestMode" in code


def test_the_script_waits_out_replication_lag_after_creating() -> None:
    assert "Start-Sleep" in SCRIPT


def test_the_script_checks_it_is_connected_to_the_notices_tenant() -> None:
    assert any(TENANT in line for line in _code_lines(SCRIPT))


def test_the_script_update_path_resets_test_mode_and_clears_smart_hosts_of_the_mx_connector() -> None:
    ea_block = SCRIPT.split("# " + EA.name, 1)[1].split("\n\n", 1)[0]
    assert "TestMode = $false" in ea_block
    assert "SmartHosts = $null" in ea_block


def test_ps_string_encodes_characters_outside_the_bmp_as_valid_chars() -> None:
    expression = ps_string("MailGates 😀")
    for literal in re.findall(r"\[char\]0x([0-9A-Fa-f]+)", expression):
        assert int(literal, 16) <= 0xFFFF


# -- the client's allow-list guard --------------------------------------------------------------


class _Raw:
    def read(self, decode_content: bool = False) -> bytes:
        return b'{"value": []}'


class _Response:
    def __init__(self) -> None:
        self.status_code = 200
        self.headers: dict[str, str] = {}
        self.raw = _Raw()

    def close(self) -> None:
        pass


class _RecordingSession:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def post(self, url: str, data: bytes, **_: Any) -> _Response:
        self.sent.append(data)
        return _Response()


class _Token:
    def get_token(self, tenant_id: str) -> str:
        return "token"


def test_the_guard_refuses_parameters_it_does_not_know_on_routing_cmdlets() -> None:
    session = _RecordingSession()
    client = ExchangeAdminClient(TENANT, credential=_Token(), session=session)  # type: ignore[arg-type]
    with pytest.raises(RoutingPolicyError):
        client.invoke("Set-OutboundConnector", {"Identity": MG.name, "SmartHost": ["relay.attacker.example"]})
    assert session.sent == []


# -- Entra error mapping ------------------------------------------------------------------------


def test_missing_service_principal_means_the_app_is_not_in_the_tenant() -> None:
    error = error_from_msal_result({
        "error": "invalid_client",
        "error_description": "AADSTS7000229: The client application 11111111-1111-1111-1111-111111111111 is "
                             f"missing service principal in the tenant {TENANT}.",
        "error_codes": [7000229],
    })
    assert error.code is ErrorCode.APP_NOT_IN_TENANT


# -- notice ---------------------------------------------------------------------------------------


def test_a_mailgates_validation_recipient_in_a_journal_domain_is_refused() -> None:
    from shared.notice import NoticeError

    with pytest.raises(NoticeError):
        parse_notice({
            "notice_id": "n-review-2",
            "tenant_id": TENANT,
            "services": ["mailgates", "enterprise_audit"],
            "journal_report_address": "jr@cs-365.cybermail.jp",
            "mx_host": "mgf.cybermail.jp",
            "validation_recipient": "adm@cs-365.cybermail.jp",
        })
