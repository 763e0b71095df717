"""The plan of a notice in the three forms people use: JSON, a readable summary, PowerShell.

Pure functions of (notice, connectors, operations). The PowerShell form is the fallback for a
customer who will not consent to the app: an Exchange admin runs it as-is and gets the same
connectors, so it must be idempotent (create-or-update) and fail loudly on validation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .connectors import ConnectorSpec
from .notice import ActivationNotice
from .plan import Operation

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


def plan_text(notice: ActivationNotice, specs: Sequence[ConnectorSpec], ops: Sequence[Operation]) -> str:
    lines = [
        f"Activation {notice.notice_id}",
        f"  tenant:    {notice.tenant_id}" + (f" ({notice.tenant_domain})" if notice.tenant_domain else ""),
    ]
    if notice.customer_name:
        lines.append(f"  customer:  {notice.customer_name}")
    if notice.contract_id:
        lines.append(f"  contract:  {notice.contract_id}")
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
        parts.append(f"[string][char]0x{ord(ch):04X}")
    if ascii_run or not parts:
        parts.append("'" + ascii_run.replace("'", "''") + "'")
    return "(" + " + ".join(parts) + ")" if len(parts) > 1 else parts[0]


def _ps_value(value: Any) -> str:
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, list):
        return "@(" + ", ".join(_ps_value(v) for v in value) + ")"
    if isinstance(value, int | float):
        return str(value)
    return ps_string(str(value))


def plan_powershell(notice: ActivationNotice, specs: Sequence[ConnectorSpec]) -> str:
    out = [
        f"# Outbound connectors for activation {notice.notice_id}, tenant {notice.tenant_id}",
        "# Run in Exchange Online PowerShell (module ExchangeOnlineManagement) as an Exchange",
        "# administrator of this tenant. Safe to run again: existing connectors are updated.",
        "#Requires -Modules ExchangeOnlineManagement",
        "$ErrorActionPreference = 'Stop'",
        "Connect-ExchangeOnline -ShowBanner:$false",
        "",
        "function Set-ProvisionedConnector {",
        "    param([string]$Name, [hashtable]$Settings, [string[]]$Recipients)",
        "    $existing = @(Get-OutboundConnector | Where-Object { $_.Name -eq $Name })",
        "    if ($existing.Count -gt 0) {",
        "        Write-Host \"Updating $Name\"",
        "        Set-OutboundConnector -Identity $Name @Settings",
        "    } else {",
        "        Write-Host \"Creating $Name\"",
        "        New-OutboundConnector -Name $Name @Settings | Out-Null",
        "    }",
        "    # Validate-OutboundConnector reports the tasks but does not mark the connector",
        "    # validated; the Set-OutboundConnector below records the successful validation.",
        "    $tasks = @(Validate-OutboundConnector -Identity $Name -Recipients $Recipients)",
        "    $tasks | Format-Table TaskName, IsTaskSuccessful, Details -AutoSize | Out-Host",
        "    $failed = @($tasks | Where-Object { -not $_.IsTaskSuccessful })",
        "    if ($failed.Count -gt 0) { throw \"Validation of $Name failed: $($failed.TaskName -join ', ')\" }",
        "    Set-OutboundConnector -Identity $Name -IsValidated $true -ValidationRecipients $Recipients "
        "-LastValidationTimestamp ((Get-Date).ToUniversalTime())",
        "}",
        "",
    ]
    for spec in specs:
        params = spec.new_parameters()
        del params["Name"]
        out.append(f"# {spec.name}")
        out.append("Set-ProvisionedConnector -Name " + ps_string(spec.name) + " -Settings @{")
        out += [f"    {key} = {_ps_value(value)}" for key, value in params.items()]
        out.append("} -Recipients " + _ps_value(list(spec.validation_recipients)))
        out.append("")
    out.append("Get-OutboundConnector | Format-Table Name, Enabled, RecipientDomains, SmartHosts, IsValidated "
               "-AutoSize")
    return "\n".join(out) + "\n"
