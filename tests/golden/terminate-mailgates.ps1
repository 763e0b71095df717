# Remove the outbound connectors of ended services: notice TRM-2026-0002, tenant 0b4d6e2c-93a1-4f7e-b5c8-1d2e3f405162
# Run in Exchange Online PowerShell (module ExchangeOnlineManagement) as an Exchange
# administrator of this tenant. Safe to run again: a connector already gone is skipped.
#Requires -Modules ExchangeOnlineManagement
$ErrorActionPreference = 'Stop'
$TenantId = '0b4d6e2c-93a1-4f7e-b5c8-1d2e3f405162'
$SmartHosts = @('mgf.cybermail.jp', 'mgp.cybermail.jp', 'mgs.cybermail.jp')
$JournalPatterns = @('*.cs-365-02.cybermail.jp', '*.cs-365.cybermail.jp')

Connect-ExchangeOnline -ShowBanner:$false
$connection = Get-ConnectionInformation | Where-Object { $_.State -eq 'Connected' } |
    Select-Object -Last 1
if ("$($connection.TenantID)" -ne $TenantId) {
    throw "Signed in to tenant $($connection.TenantID); this script is for $TenantId."
}

# Get-OutboundConnector leaves out connectors in test mode unless asked for them alone;
# a test-mode connector left behind would come back if test mode were turned off.
$all = @(Get-OutboundConnector) + @(Get-OutboundConnector -IncludeTestModeConnectors $true)

function Test-Ours {
    param($Connector, [string]$Service)
    if ($Service -eq 'mailgates') {
        $hosts = @($Connector.SmartHosts | ForEach-Object { "$_".ToLower().TrimEnd('.') })
        return (-not $Connector.UseMXRecord) -and $hosts.Count -gt 0 -and
            @($hosts | Where-Object { $SmartHosts -notcontains $_ }).Count -eq 0
    }
    $domains = @($Connector.RecipientDomains | ForEach-Object { "$_".ToLower().TrimEnd('.') })
    return $Connector.UseMXRecord -and $domains.Count -gt 0 -and
        @($domains | Where-Object { $JournalPatterns -notcontains $_ }).Count -eq 0
}

# In removal order: MailGates' '*' connector before Enterprise Audit's.
$ended = @(
    @{ Name = ('MAILGATES' + [string][char]0x03A3 + ' ' + [string][char]0x9001 + [string][char]0x4FE1 + [string][char]0x30B3 + [string][char]0x30CD + [string][char]0x30AF + [string][char]0x30BF); Service = 'mailgates' }
)
$remove = @()
foreach ($item in $ended) {
    $found = @($all | Where-Object { $_.Name -eq $item.Name })
    if ($found.Count -eq 0) { Write-Host "$($item.Name): not there; nothing to remove"; continue }
    foreach ($connector in $found) {
        if (-not (Test-Ours $connector $item.Service)) {
            throw ("'$($connector.Name)' has our name but routes elsewhere; nothing was removed. " +
                "Ask the customer who uses it.")
        }
        $remove += @{ Connector = $connector; Service = $item.Service }
    }
}
function Remove-Ours {
    param([string]$Service)
    foreach ($entry in @($remove | Where-Object { $_.Service -eq $Service })) {
        Write-Host "Removing $($entry.Connector.Name)"
        Remove-OutboundConnector -Identity $entry.Connector.Identity -Confirm:$false
    }
}
Remove-Ours 'mailgates'
Remove-Ours 'enterprise_audit'

Get-OutboundConnector | Format-Table Name, Enabled, RecipientDomains, SmartHosts -AutoSize
