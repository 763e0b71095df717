# Outbound connectors for activation ACT-2026-0004, tenant 0d1e2f3a-4b5c-4d6e-9f70-8192a3b4c5d6
# Run in Exchange Online PowerShell (module ExchangeOnlineManagement) as an Exchange
# administrator of this tenant. Safe to run again: existing connectors are updated.
#Requires -Modules ExchangeOnlineManagement
$ErrorActionPreference = 'Stop'
Connect-ExchangeOnline -ShowBanner:$false

function Set-ProvisionedConnector {
    param([string]$Name, [hashtable]$Settings, [string[]]$Recipients)
    $existing = @(Get-OutboundConnector | Where-Object { $_.Name -eq $Name })
    if ($existing.Count -gt 0) {
        Write-Host "Updating $Name"
        Set-OutboundConnector -Identity $Name @Settings
    } else {
        Write-Host "Creating $Name"
        New-OutboundConnector -Name $Name @Settings | Out-Null
    }
    # Validate-OutboundConnector reports the tasks but does not mark the connector
    # validated; the Set-OutboundConnector below records the successful validation.
    $tasks = @(Validate-OutboundConnector -Identity $Name -Recipients $Recipients)
    $tasks | Format-Table TaskName, IsTaskSuccessful, Details -AutoSize | Out-Host
    $failed = @($tasks | Where-Object { -not $_.IsTaskSuccessful })
    if ($failed.Count -gt 0) { throw "Validation of $Name failed: $($failed.TaskName -join ', ')" }
    Set-OutboundConnector -Identity $Name -IsValidated $true -ValidationRecipients $Recipients -LastValidationTimestamp ((Get-Date).ToUniversalTime())
}

# Enterprise Audit送信コネクタ
Set-ProvisionedConnector -Name ('Enterprise Audit' + [string][char]0x9001 + [string][char]0x4FE1 + [string][char]0x30B3 + [string][char]0x30CD + [string][char]0x30AF + [string][char]0x30BF) -Settings @{
    ConnectorType = 'Partner'
    RecipientDomains = @('*.cs-365.cybermail.jp')
    UseMXRecord = $true
    TlsSettings = 'CertificateValidation'
    Enabled = $true
    IsTransportRuleScoped = $false
    Comment = '[managed-by:activation-provisioning] enterprise_audit'
} -Recipients @('jr-0004@cs-365.cybermail.jp')

Get-OutboundConnector | Format-Table Name, Enabled, RecipientDomains, SmartHosts, IsValidated -AutoSize
