"""The simulator's journal-rule and transport-config rules, on the in-memory tenant (no HTTP)."""

from __future__ import annotations

import pytest

from exosim.state import CmdletError, TenantState

TENANT = "0b4d6e2c-93a1-4f7e-b5c8-1d2e3f405162"


@pytest.fixture
def state() -> TenantState:
    tenant = TenantState(TENANT, clock=lambda: 0.0)
    tenant.invoke("Set-TransportConfig", {"JournalingReportNdrTo": "ndr@contoso.example"})
    return tenant


def test_a_new_rule_is_disabled_and_global_unless_told_otherwise(state: TenantState) -> None:
    state.invoke("New-JournalRule", {"Name": "R", "JournalEmailAddress": "j@cs-365.cybermail.jp"})
    [row] = state.invoke("Get-JournalRule", {}).rows
    assert (row["Enabled"], row["Scope"], row["Recipient"]) == (False, "Global", None)


def test_set_journal_rule_has_no_enabled_but_enable_journal_rule_switches_it_on(state: TenantState) -> None:
    state.invoke("New-JournalRule", {"Name": "R", "JournalEmailAddress": "j@cs-365.cybermail.jp"})
    with pytest.raises(CmdletError, match="parameter name 'Enabled'"):
        state.invoke("Set-JournalRule", {"Identity": "R", "Enabled": True})
    result = state.invoke("Enable-JournalRule", {"Identity": "r"})
    assert result.write is not None and result.write.changed
    assert state.invoke("Get-JournalRule", {"Identity": "R"}).rows[0]["Enabled"] is True


def test_an_unknown_identity_lists_every_rule(state: TenantState) -> None:
    for name in ("A", "B"):
        state.invoke("New-JournalRule", {"Name": name, "JournalEmailAddress": "j@cs-365.cybermail.jp"})
    assert [r["Name"] for r in state.invoke("Get-JournalRule", {"Identity": "Nope"}).rows] == ["A", "B"]


def test_names_are_unique_case_insensitively_and_at_most_64_characters(state: TenantState) -> None:
    state.invoke("New-JournalRule", {"Name": "Rule", "JournalEmailAddress": "j@cs-365.cybermail.jp"})
    with pytest.raises(CmdletError, match="already exists"):
        state.invoke("New-JournalRule", {"Name": "RULE", "JournalEmailAddress": "j@cs-365.cybermail.jp"})
    with pytest.raises(CmdletError, match="maximum length is 64"):
        state.invoke("New-JournalRule", {"Name": "x" * 65, "JournalEmailAddress": "j@cs-365.cybermail.jp"})


def test_no_rule_without_an_address_for_undeliverable_reports() -> None:
    tenant = TenantState(TENANT, clock=lambda: 0.0)
    with pytest.raises(CmdletError, match="JournalingReportNdrTo"):
        tenant.invoke("New-JournalRule", {"Name": "R", "JournalEmailAddress": "j@cs-365.cybermail.jp"})
    assert tenant.invoke("Get-TransportConfig", {}).rows[0]["JournalingReportNdrTo"] is None


def test_journal_and_ndr_addresses_cannot_be_exchange_online_mailboxes(state: TenantState) -> None:
    initial = state.accepted_domains[0]["DomainName"]
    with pytest.raises(CmdletError, match="Exchange Online"):
        state.invoke("New-JournalRule", {"Name": "R", "JournalEmailAddress": f"j@{initial}"})
    with pytest.raises(CmdletError, match="Exchange Online"):
        state.invoke("Set-TransportConfig", {"JournalingReportNdrTo": f"ndr@{initial}"})


def test_remove_of_a_missing_rule_is_not_found(state: TenantState) -> None:
    with pytest.raises(CmdletError) as caught:
        state.invoke("Remove-JournalRule", {"Identity": "Ghost", "Confirm": False})
    assert caught.value.type_name.endswith("ManagementObjectNotFoundException")
