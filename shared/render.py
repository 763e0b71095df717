"""The plan of a notice in the three forms people use: JSON, a readable summary, PowerShell.

Pure functions of (notice, connectors, operations). The PowerShell form is the fallback for a
customer who will not consent to the app: an Exchange admin runs it as-is and gets the same
connectors, so it must be idempotent (create-or-update) and fail loudly on validation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .connectors import OWNERSHIP_MARKER, ConnectorSpec
from .notice import ActivationNotice
from .plan import Operation
from .removal import OwnConnectors, RemovalPlan, removal_operations
from .services import ENTERPRISE_AUDIT, by_key, removal_order

PLAN_KEYS = (
    "Name", "ConnectorType", "RecipientDomains", "SmartHosts", "UseMXRecord",
    "TlsSettings", "Enabled", "IsTransportRuleScoped", "ValidationRecipients",
)


def plan_json(notice: ActivationNotice, specs: Sequence[ConnectorSpec], ops: Sequence[Operation]) -> str:
    doc: dict[str, Any] = {
        "notice_id": notice.notice_id,
        "tenant_id": notice.tenant_id,
        "connectors": [spec.to_dict() for spec in specs],
        "operations": [op.to_dict() for op in ops],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2)


def _heading(kind: str, notice: ActivationNotice) -> list[str]:
    """The first lines of a text plan: which notice, tenant, customer and contract it is for."""
    lines = [
        f"{kind} {notice.notice_id}",
        f"  tenant:    {notice.tenant_id}" + (f" ({notice.tenant_domain})" if notice.tenant_domain else ""),
    ]
    if notice.customer_name:
        lines.append(f"  customer:  {notice.customer_name}")
    if notice.contract_id:
        lines.append(f"  contract:  {notice.contract_id}")
    return lines


def plan_text(notice: ActivationNotice, specs: Sequence[ConnectorSpec], ops: Sequence[Operation]) -> str:
    lines = _heading("Activation", notice)
    lines.append(f"  services:  {', '.join(notice.services)}")
    lines.append("")
    for number, spec in enumerate(specs, start=1):
        route = ("MX record of the recipient domain" if spec.use_mx_record
                 else "smart host " + ", ".join(spec.smart_hosts))
        lines += [
            f"{number}. {spec.name}  [{spec.connector_type}, {'on' if spec.enabled else 'off'}]",
            f"   for recipients in: {', '.join(spec.recipient_domains)}",
            f"   route via:         {route}",
            f"   TLS:               {spec.tls_settings} (always TLS, certificate from a trusted CA)",
            f"   validate with:     {', '.join(spec.validation_recipients)}",
        ]
    lines += ["", "Exchange calls for a tenant without these connectors:"]
    lines += [f"  {i}. {op.cmdlet} {_short(op.parameters)}" for i, op in enumerate(ops, start=1)]
    return "\n".join(lines) + "\n"


def _short(params: dict[str, Any]) -> str:
    return " ".join(f"-{k} {json.dumps(v, ensure_ascii=False)}" for k, v in params.items())


def ps_string(text: str) -> str:
    """A PowerShell expression for `text` that survives any script file encoding.

    Windows PowerShell 5.1 reads a script without a BOM as the ANSI code page, which would
    mangle the Japanese connector names; non-ASCII characters are therefore written as
    [char] code points and the readable name is kept in a comment beside it.
    """
    parts: list[str] = []
    ascii_run = ""
    for ch in text:
        if 32 <= ord(ch) < 127:
            ascii_run += ch
            continue
        if ascii_run:
            parts.append("'" + ascii_run.replace("'", "''") + "'")
            ascii_run = ""
        if ord(ch) > 0xFFFF:
            # [char] holds one UTF-16 unit; a character beyond the BMP needs ConvertFromUtf32.
            parts.append(f"[char]::ConvertFromUtf32(0x{ord(ch):X})")
        else:
            parts.append(f"[string][char]0x{ord(ch):04X}")
    if ascii_run or not parts:
        parts.append("'" + ascii_run.replace("'", "''") + "'")
    return "(" + " + ".join(parts) + ")" if len(parts) > 1 else parts[0]


def _ps_value(value: Any) -> str:
    if value is None:
        return "$null"
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, list):
        return "@(" + ", ".join(_ps_value(v) for v in value) + ")"
    if isinstance(value, int | float):
        return str(value)
    return ps_string(str(value))


def plan_powershell(notice: ActivationNotice, specs: Sequence[ConnectorSpec], *,
                    own_names: Sequence[str] = (), journal_rule: str | None = None) -> str:
    """A script with the engine's safety rules: right tenant, no competitor, wait out replication.

    It refuses to write beside a foreign enabled connector that would compete with ours (as
    the engine does), finds our connectors by name or by the ownership marker in Comment,
    retries while a new connector is not yet visible, and switches off a connector it set up
    whose validation fails.
    """
    names = list(dict.fromkeys([*own_names, *(spec.name for spec in specs)]))
    journal_domains = [spec.recipient_domains[0][2:] for spec in specs if spec.use_mx_record]
    out = [
        f"# Outbound connectors for activation {notice.notice_id}, tenant {notice.tenant_id}",
        "# Run in Exchange Online PowerShell (module ExchangeOnlineManagement) as an Exchange",
        "# administrator of this tenant. Safe to run again: existing connectors are updated.",
        "#Requires -Modules ExchangeOnlineManagement",
        "$ErrorActionPreference = 'Stop'",
        f"$TenantId = '{notice.tenant_id}'",
        f"$Marker = {ps_string(OWNERSHIP_MARKER)}",
        "$OurNames = " + _ps_value(names),
        "$JournalDomains = " + _ps_value(journal_domains),
        "",
        "Connect-ExchangeOnline -ShowBanner:$false",
        "$connection = Get-ConnectionInformation | Where-Object { $_.State -eq 'Connected' } |",
        "    Select-Object -Last 1",
        "if (\"$($connection.TenantID)\" -ne $TenantId) {",
        "    throw \"Signed in to tenant $($connection.TenantID); this script is for $TenantId.\"",
        "}",
        "",
        "function Test-Covers {",
        "    param([string]$Pattern, [string]$Domain)",
        "    if ($Pattern -eq '*') { return $true }",
        "    if ($Pattern.StartsWith('*.')) {",
        "        $base = $Pattern.Substring(2)",
        "        return ($Domain -eq $base) -or $Domain.EndsWith('.' + $base) -or $base.EndsWith('.' + $Domain)",
        "    }",
        "    return ($Pattern -eq $Domain) -or $Pattern.EndsWith('.' + $Domain)",
        "}",
        "",
        "# Nothing is written beside a foreign, enabled connector that would take the same mail.",
        "$competitors = @(Get-OutboundConnector | Where-Object {",
        "    $_.Enabled -and -not $_.TestMode -and -not $_.IsTransportRuleScoped -and",
        "    -not \"$($_.Comment)\".Contains($Marker) -and ($OurNames -notcontains $_.Name) -and",
        "    @(@($_.RecipientDomains) | ForEach-Object { $d = \"$_\"; $d -eq '*' -or",
        "        @($JournalDomains | Where-Object { Test-Covers $d $_ }).Count -gt 0 }) -contains $true",
        "})",
        "if ($competitors.Count -gt 0) {",
        "    throw (\"Another enabled outbound connector would take the same mail: \" +",
        "        \"$($competitors.Name -join ', '). Disable or narrow it first; nothing was changed.\")",
        "}",
        "",
        "function Invoke-WhenReplicated {",
        "    # A connector just created can read as not found for a while: wait, at most a minute.",
        "    param([scriptblock]$Action)",
        "    for ($try = 1; ; $try++) {",
        "        try { return & $Action }",
        "        catch {",
        "            if ($try -ge 12 -or \"$_\" -notmatch \"couldn't be found\") { throw }",
        "            Start-Sleep -Seconds 5",
        "        }",
        "    }",
        "}",
        "",
        "function Set-ProvisionedConnector {",
        "    param([string]$Name, [string]$Service, [hashtable]$Settings, [hashtable]$UpdateOnly,",
        "          [string[]]$Recipients)",
        "    # Get-OutboundConnector leaves out connectors in test mode unless asked for them alone.",
        "    $all = @(Get-OutboundConnector) + @(Get-OutboundConnector -IncludeTestModeConnectors $true)",
        "    $existing = @($all | Where-Object { $_.Name -eq $Name })",
        "    if ($existing.Count -eq 0) {",
        "        $existing = @($all | Where-Object { \"$($_.Comment)\".Contains(\"$Marker $Service\") })",
        "    }",
        "    if ($existing.Count -gt 0) {",
        "        Write-Host \"Updating $Name\"",
        "        if ($existing[0].Name -ne $Name) {",
        "            Set-OutboundConnector -Identity $existing[0].Identity -Name $Name",
        "        }",
        "        Set-OutboundConnector -Identity $Name @Settings @UpdateOnly",
        "    } else {",
        "        Write-Host \"Creating $Name\"",
        "        New-OutboundConnector -Name $Name @Settings | Out-Null",
        "    }",
        "    # Validate-OutboundConnector reports the tasks but does not mark the connector",
        "    # validated; the Set-OutboundConnector below records the successful validation.",
        "    $tasks = @(Invoke-WhenReplicated { Validate-OutboundConnector -Identity $Name -Recipients $Recipients })",
        "    $tasks | Format-Table TaskName, IsTaskSuccessful, Details -AutoSize | Out-Host",
        "    $failed = @($tasks | Where-Object { -not $_.IsTaskSuccessful })",
        "    if ($failed.Count -gt 0 -or $tasks.Count -eq 0) {",
        "        # Left on, a failed '*' connector would send all mail to a host Exchange cannot reach.",
        "        Set-OutboundConnector -Identity $Name -Enabled $false",
        "        throw \"Validation of $Name failed: $($failed.TaskName -join ', '). It was turned off.\"",
        "    }",
        "    Invoke-WhenReplicated {",
        "        Set-OutboundConnector -Identity $Name -IsValidated $true -ValidationRecipients $Recipients `",
        "            -LastValidationTimestamp ((Get-Date).ToUniversalTime())",
        "    }",
        "}",
        "",
    ]
    ensure_rule = journal_rule is not None and notice.journal_report_address is not None
    if ensure_rule:
        out += _ps_journal_ndr(notice)
    for spec in specs:
        params = spec.new_parameters()
        del params["Name"]
        # IsValidated is withdrawn with the update (plan.write_parameters): stopped before the
        # validation below, the script must not leave the old route's validation standing.
        update_only: dict[str, Any] = {"TlsDomain": None, "IsValidated": False}
        if spec.use_mx_record:
            update_only["SmartHosts"] = None  # MX routing refuses leftover smart hosts
        out.append(f"# {spec.name}")
        out.append(f"Set-ProvisionedConnector -Name {ps_string(spec.name)} -Service '{spec.service}' "
                   "-Settings @{")
        out += [f"    {key} = {_ps_value(value)}" for key, value in params.items()]
        out.append("} -UpdateOnly @{")
        out += [f"    {key} = {_ps_value(value)}" for key, value in update_only.items()]
        out.append("} -Recipients " + _ps_value(list(spec.validation_recipients)))
        out.append("")
    if ensure_rule:
        assert journal_rule is not None and notice.journal_report_address is not None
        out += _ps_journal_rule(journal_rule, notice.journal_report_address)
    out.append("Get-OutboundConnector | Format-Table Name, Enabled, RecipientDomains, SmartHosts, IsValidated "
               "-AutoSize")
    return "\n".join(out) + "\n"


# -- termination ------------------------------------------------------------------------------


def _ours_rule(service: str, own: OwnConnectors) -> str:
    return by_key(service).ours_rule(own.allow_lists)


def removal_json(notice: ActivationNotice, plan: RemovalPlan, *, own: OwnConnectors) -> str:
    doc: dict[str, Any] = {
        "notice_id": notice.notice_id,
        "tenant_id": notice.tenant_id,
        "action": notice.action,
        "removals": [{"Service": r.service, "Name": r.name, "OursOnlyWith": _ours_rule(r.service, own)}
                     for r in plan.removals],
        "operations": [op.to_dict() for op in removal_operations(plan)],
    }
    return json.dumps(doc, ensure_ascii=False, indent=2)


def removal_text(notice: ActivationNotice, plan: RemovalPlan, *, own: OwnConnectors) -> str:
    lines = _heading("Termination", notice)
    lines += [f"  ending:    {', '.join(r.service for r in plan.removals)}", ""]
    for number, removal in enumerate(plan.removals, start=1):
        lines += [
            f"{number}. remove {removal.name}  [{removal.service}]",
            f"   only if ours:      {_ours_rule(removal.service, own)}",
            "   otherwise:         nothing is removed (CONNECTOR_NOT_OURS); already gone: nothing to do",
        ]
    lines += ["", "Exchange calls for a tenant with these connectors (after listing them in and out of test mode):"]
    lines += [f"  {i}. {op.cmdlet} {_short(op.parameters)}" for i, op in enumerate(removal_operations(plan), start=1)]
    return "\n".join(lines) + "\n"


def removal_powershell(notice: ActivationNotice, plan: RemovalPlan, *, own: OwnConnectors) -> str:
    """A script that removes exactly what the engine would: ours by name and routing, MailGates first.

    It checks every connector before removing any, so a connector with our name and other
    routing stops the script with nothing removed, as it stops the engine.
    """
    out = [
        f"# Remove the outbound connectors of ended services: notice {notice.notice_id}, tenant {notice.tenant_id}",
        "# Run in Exchange Online PowerShell (module ExchangeOnlineManagement) as an Exchange",
        "# administrator of this tenant. Safe to run again: a connector already gone is skipped.",
        "#Requires -Modules ExchangeOnlineManagement",
        "$ErrorActionPreference = 'Stop'",
        f"$TenantId = '{notice.tenant_id}'",
        "$SmartHosts = " + _ps_value(sorted(own.smart_hosts)),
        "$JournalPatterns = " + _ps_value([f"*.{d}" for d in sorted(own.journal_domains)]),
        "",
        "Connect-ExchangeOnline -ShowBanner:$false",
        "$connection = Get-ConnectionInformation | Where-Object { $_.State -eq 'Connected' } |",
        "    Select-Object -Last 1",
        "if (\"$($connection.TenantID)\" -ne $TenantId) {",
        "    throw \"Signed in to tenant $($connection.TenantID); this script is for $TenantId.\"",
        "}",
        "",
        "# Get-OutboundConnector leaves out connectors in test mode unless asked for them alone;",
        "# a test-mode connector left behind would come back if test mode were turned off.",
        "$all = @(Get-OutboundConnector) + @(Get-OutboundConnector -IncludeTestModeConnectors $true)",
        "",
        "function Test-Ours {",
        "    param($Connector, [string]$Service)",
        f"    if ({_routed_by_smart_host(own)}) {{",
        "        $hosts = @($Connector.SmartHosts | ForEach-Object { \"$_\".ToLower().TrimEnd('.') })",
        "        return (-not $Connector.UseMXRecord) -and $hosts.Count -gt 0 -and",
        "            @($hosts | Where-Object { $SmartHosts -notcontains $_ }).Count -eq 0",
        "    }",
        "    $domains = @($Connector.RecipientDomains | ForEach-Object { \"$_\".ToLower().TrimEnd('.') })",
        "    return $Connector.UseMXRecord -and $domains.Count -gt 0 -and",
        "        @($domains | Where-Object { $JournalPatterns -notcontains $_ }).Count -eq 0",
        "}",
        "",
        "# In removal order: MailGates' '*' connector before Enterprise Audit's.",
        "$ended = @(",
    ]
    out += [f"    @{{ Name = {ps_string(r.name)}; Service = '{r.service}' }}" for r in plan.removals]
    out += [
        ")",
    ]
    if plan.journal_rule:
        out += [
            "",
            "# Enterprise Audit's journal rule: ours only if it sends to a journal domain.",
            f"$RuleName = {ps_string(plan.journal_rule)}",
            "$JournalDomains = " + _ps_value(sorted(own.journal_domains)),
            "$rules = @(Get-JournalRule | Where-Object { $_.Name -eq $RuleName })",
            "foreach ($rule in $rules) {",
            "    $domain = \"$($rule.JournalEmailAddress)\".Split('@')[-1].ToLower()",
            "    if ($JournalDomains -notcontains $domain) {",
            "        throw \"Journal rule '$($rule.Name)' sends elsewhere; nothing was removed.\"",
            "    }",
            "}",
        ]
    out += [
        "$remove = @()",
        "foreach ($item in $ended) {",
        "    $found = @($all | Where-Object { $_.Name -eq $item.Name })",
        "    if ($found.Count -eq 0) { Write-Host \"$($item.Name): not there; nothing to remove\"; continue }",
        "    foreach ($connector in $found) {",
        "        if (-not (Test-Ours $connector $item.Service)) {",
        "            throw (\"'$($connector.Name)' has our name but routes elsewhere; nothing was removed. \" +",
        "                \"Ask the customer who uses it.\")",
        "        }",
        "        $remove += @{ Connector = $connector; Service = $item.Service }",
        "    }",
        "}",
        "function Remove-Ours {",
        "    param([string]$Service)",
        "    foreach ($entry in @($remove | Where-Object { $_.Service -eq $Service })) {",
        "        Write-Host \"Removing $($entry.Connector.Name)\"",
        "        Remove-OutboundConnector -Identity $entry.Connector.Identity -Confirm:$false",
        "    }",
        "}",
    ]
    for service in removal_order():
        if service is ENTERPRISE_AUDIT and plan.journal_rule:
            out += [
                "# The journal rule goes before the connector its reports ride on.",
                "foreach ($rule in $rules) {",
                "    Write-Host \"Removing journal rule $($rule.Name)\"",
                "    Remove-JournalRule -Identity $rule.Identity -Confirm:$false",
                "}",
            ]
        out.append(f"Remove-Ours '{service.key}'")
    out += [
        "",
        "Get-OutboundConnector | Format-Table Name, Enabled, RecipientDomains, SmartHosts -AutoSize",
    ]
    return "\n".join(out) + "\n"


def _routed_by_smart_host(own: OwnConnectors) -> str:
    """Test-Ours' condition for its smart-host rule: the services whose definitions route by
    smart host (MailGates); every other one is judged by the MX rule, as `Service.routing_fault` does."""
    keys = [s.key for s in removal_order() if not s.route(own.allow_lists).use_mx_record]
    return " -or ".join(f"$Service -eq {ps_string(key)}" for key in keys) or "$false"


def _ps_journal_ndr(notice: ActivationNotice) -> list[str]:
    """Before anything is written: journal rules need an address for undeliverable reports."""
    out = [
        "# Journal rules need an address for undeliverable journal reports (JournalingReportNdrTo).",
        "$ndr = \"$((Get-TransportConfig).JournalingReportNdrTo)\"",
        "if (-not $ndr -or $ndr -eq '<>') {",
    ]
    if notice.journal_ndr_address:
        out.append(f"    Set-TransportConfig -JournalingReportNdrTo {ps_string(notice.journal_ndr_address)}")
    else:
        out.append("    throw (\"The tenant has no address for undeliverable journal reports; set one with \" +")
        out.append("        \"Set-TransportConfig -JournalingReportNdrTo first. Nothing was changed.\")")
    return [*out, "}", ""]


def _ps_journal_rule(name: str, address: str) -> list[str]:
    """After the connectors: one enabled rule for every message to the journal report address."""
    return [
        "# Enterprise Audit's journal rule: every message (Scope Global), enabled. Set-JournalRule has",
        "# no Enabled parameter; Enable-JournalRule switches a disabled rule on.",
        f"$RuleName = {ps_string(name)}",
        f"$JournalAddress = {ps_string(address)}",
        "$rule = @(Get-JournalRule | Where-Object { $_.Name -eq $RuleName })",
        "if ($rule.Count -eq 0) {",
        "    Write-Host \"Creating journal rule $RuleName\"",
        "    New-JournalRule -Name $RuleName -JournalEmailAddress $JournalAddress -Scope Global `",
        "        -Enabled $true | Out-Null",
        "} else {",
        "    Write-Host \"Updating journal rule $RuleName\"",
        "    Set-JournalRule -Identity $RuleName -JournalEmailAddress $JournalAddress -Scope Global",
        "    if (-not $rule[0].Enabled) { Enable-JournalRule -Identity $RuleName }",
        "}",
        "",
    ]
