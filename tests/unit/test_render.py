"""The PowerShell export (`plan --format powershell`): the engine's safety rules, in a script.

The full text of every sample's script is pinned by the golden files (test_plan_cli.py); these
say which lines carry which rule, so a change to the script that drops one fails by name.
"""

from __future__ import annotations

from shared.connectors import OWNERSHIP_MARKER, desired_connectors
from shared.notice import parse_notice
from shared.render import plan_powershell, ps_string

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
SCRIPT = plan_powershell(NOTICE, [EA, MG])


def _code_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_script_finds_our_connector_by_its_ownership_marker_too() -> None:
    code = _code_lines(SCRIPT)
    assert f"$Marker = '{OWNERSHIP_MARKER}'" in code
    assert any("Where-Object" in line and "Contains(\"$Marker $Service\")" in line for line in code)


def test_the_script_finds_our_connector_in_test_mode_too() -> None:
    assert ("    $all = @(Get-OutboundConnector) + @(Get-OutboundConnector -IncludeTestModeConnectors $true)"
            in _code_lines(SCRIPT))


def test_the_script_refuses_to_write_beside_a_foreign_enabled_star_connector() -> None:
    code = _code_lines(SCRIPT)
    assert "    $_.Enabled -and -not $_.TestMode -and -not $_.IsTransportRuleScoped -and" in code
    assert "if ($competitors.Count -gt 0) {" in code


def test_the_script_waits_out_replication_lag_after_creating() -> None:
    assert "            Start-Sleep -Seconds 5" in _code_lines(SCRIPT)


def test_the_script_checks_it_is_connected_to_the_notices_tenant() -> None:
    code = _code_lines(SCRIPT)
    assert f"$TenantId = '{TENANT}'" in code
    assert "if (\"$($connection.TenantID)\" -ne $TenantId) {" in code


def test_the_script_update_path_resets_test_mode_and_clears_smart_hosts_of_the_mx_connector() -> None:
    ea_block = SCRIPT.split("# " + EA.name, 1)[1].split("\n\n", 1)[0]
    assert "TestMode = $false" in ea_block
    assert "SmartHosts = $null" in ea_block


def test_ps_string_encodes_characters_outside_the_bmp_as_valid_chars() -> None:
    # A [char] holds one UTF-16 unit, so a character beyond the BMP needs ConvertFromUtf32.
    assert ps_string("MailGates 😀") == "('MailGates ' + [char]::ConvertFromUtf32(0x1F600))"
