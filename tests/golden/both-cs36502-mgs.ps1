# Outbound connectors for activation ACT-2026-0002, tenant 1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9
# Run in Exchange Online PowerShell (module ExchangeOnlineManagement) as an Exchange
# administrator of this tenant. Safe to run again: existing connectors are updated.
#Requires -Modules ExchangeOnlineManagement
$ErrorActionPreference = 'Stop'
$TenantId = '1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9'
$Marker = '[managed-by:activation-provisioning]'
$OurNames = @(('Enterprise Audit' + [string][char]0x9001 + [string][char]0x4FE1 + [string][char]0x30B3 + [string][char]0x30CD + [string][char]0x30AF + [string][char]0x30BF), ('MAILGATES' + [string][char]0x03A3 + ' ' + [string][char]0x9001 + [string][char]0x4FE1 + [string][char]0x30B3 + [string][char]0x30CD + [string][char]0x30AF + [string][char]0x30BF))
$JournalDomains = @('cs-365-02.cybermail.jp')

Connect-ExchangeOnline -ShowBanner:$false
$connection = Get-ConnectionInformation | Where-Object { $_.State -eq 'Connected' } |
    Select-Object -Last 1
if ("$($connection.TenantID)" -ne $TenantId) {
    throw "Signed in to tenant $($connection.TenantID); this script is for $TenantId."
}

function Test-Covers {
    param([string]$Pattern, [string]$Domain)
    if ($Pattern -eq '*') { return $true }
    if ($Pattern.StartsWith('*.')) {
        $base = $Pattern.Substring(2)
        return ($Domain -eq $base) -or $Domain.EndsWith('.' + $base) -or $base.EndsWith('.' + $Domain)
    }
    return ($Pattern -eq $Domain) -or $Pattern.EndsWith('.' + $Domain)
}

# Nothing is written beside a foreign, enabled connector that would take the same mail.
$competitors = @(Get-OutboundConnector | Where-Object {
    $_.Enabled -and -not $_.TestMode -and -not $_.IsTransportRuleScoped -and
    -not "$($_.Comment)".Contains($Marker) -and ($OurNames -notcontains $_.Name) -and
    @(@($_.RecipientDomains) | ForEach-Object { $d = "$_"; $d -eq '*' -or
        @($JournalDomains | Where-Object { Test-Covers $d $_ }).Count -gt 0 }) -contains $true
})
if ($competitors.Count -gt 0) {
    throw ("Another enabled outbound connector would take the same mail: " +
        "$($competitors.Name -join ', '). Disable or narrow it first; nothing was changed.")
}

function Invoke-WhenReplicated {
    # A connector just created can read as not found for a while: wait, at most a minute.
    param([scriptblock]$Action)
    for ($try = 1; ; $try++) {
        try { return & $Action }
        catch {
            if ($try -ge 12 -or "$_" -notmatch "couldn't be found") { throw }
            Start-Sleep -Seconds 5
        }
    }
}

function Set-ProvisionedConnector {
    param([string]$Name, [string]$Service, [hashtable]$Settings, [hashtable]$UpdateOnly,
          [string[]]$Recipients)
    # Get-OutboundConnector leaves out connectors in test mode unless asked for them alone.
    $all = @(Get-OutboundConnector) + @(Get-OutboundConnector -IncludeTestModeConnectors $true)
    $existing = @($all | Where-Object { $_.Name -eq $Name })
    if ($existing.Count -eq 0) {
        $existing = @($all | Where-Object { "$($_.Comment)".Contains("$Marker $Service") })
    }
    if ($existing.Count -gt 0) {
        Write-Host "Updating $Name"
        if ($existing[0].Name -ne $Name) {
            Set-OutboundConnector -Identity $existing[0].Identity -Name $Name
        }
        Set-OutboundConnector -Identity $Name @Settings @UpdateOnly
    } else {
        Write-Host "Creating $Name"
        New-OutboundConnector -Name $Name @Settings | Out-Null
    }
    # Validate-OutboundConnector reports the tasks but does not mark the connector
    # validated; the Set-OutboundConnector below records the successful validation.
    $tasks = @(Invoke-WhenReplicated { Validate-OutboundConnector -Identity $Name -Recipients $Recipients })
    $tasks | Format-Table TaskName, IsTaskSuccessful, Details -AutoSize | Out-Host
    $failed = @($tasks | Where-Object { -not $_.IsTaskSuccessful })
    if ($failed.Count -gt 0 -or $tasks.Count -eq 0) {
        # Left on, a failed '*' connector would send all mail to a host Exchange cannot reach.
        Set-OutboundConnector -Identity $Name -Enabled $false
        throw "Validation of $Name failed: $($failed.TaskName -join ', '). It was turned off."
    }
    Invoke-WhenReplicated {
        Set-OutboundConnector -Identity $Name -IsValidated $true -ValidationRecipients $Recipients `
            -LastValidationTimestamp ((Get-Date).ToUniversalTime())
    }
}

# Enterprise Audit送信コネクタ
Set-ProvisionedConnector -Name ('Enterprise Audit' + [string][char]0x9001 + [string][char]0x4FE1 + [string][char]0x30B3 + [string][char]0x30CD + [string][char]0x30AF + [string][char]0x30BF) -Service 'enterprise_audit' -Settings @{
    ConnectorType = 'Partner'
    RecipientDomains = @('*.cs-365-02.cybermail.jp')
    UseMXRecord = $true
    TlsSettings = 'CertificateValidation'
    Enabled = $true
    IsTransportRuleScoped = $false
    TestMode = $false
    Comment = '[managed-by:activation-provisioning] enterprise_audit'
} -UpdateOnly @{
    TlsDomain = $null
    IsValidated = $false
    SmartHosts = $null
} -Recipients @('jr-0002@cs-365-02.cybermail.jp')

# MAILGATESΣ 送信コネクタ
Set-ProvisionedConnector -Name ('MAILGATES' + [string][char]0x03A3 + ' ' + [string][char]0x9001 + [string][char]0x4FE1 + [string][char]0x30B3 + [string][char]0x30CD + [string][char]0x30AF + [string][char]0x30BF) -Service 'mailgates' -Settings @{
    ConnectorType = 'Partner'
    RecipientDomains = @('*')
    UseMXRecord = $false
    SmartHosts = @('mgs.cybermail.jp')
    TlsSettings = 'CertificateValidation'
    Enabled = $true
    IsTransportRuleScoped = $false
    TestMode = $false
    Comment = '[managed-by:activation-provisioning] mailgates'
} -UpdateOnly @{
    TlsDomain = $null
    IsValidated = $false
} -Recipients @('postmaster@fabrikam.example')

Get-OutboundConnector | Format-Table Name, Enabled, RecipientDomains, SmartHosts, IsValidated -AutoSize
