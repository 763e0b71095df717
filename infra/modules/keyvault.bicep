// Key Vault holding the certificate the multi-tenant Exchange app authenticates with
// (EXO_AUTH_MODE=certificate). The Function App reads the certificate with its private key
// through the secrets endpoint, so its identity holds Key Vault Secrets User on this vault
// and nothing more.
//
// Access is by Azure RBAC only (no access policies). Soft delete and purge protection keep a
// deleted or overwritten certificate recoverable for `softDeleteRetentionInDays`.
//
// Network: the public endpoint stays enabled by default (publicNetworkAccess = 'Enabled'),
// because a Flex Consumption app without VNet integration reaches the vault from addresses
// that are not fixed, and operators import the certificate from their own machines. Every
// request still needs an Entra ID token and a data role. With EXO_AUTH_MODE=federated the
// app never reads the vault at run time: set publicNetworkAccess to 'Disabled' then.

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Key Vault name (3-24 characters).')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('Enabled (default) or Disabled. Disable only when the app does not read the vault (federated mode) or reaches it privately.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Enabled'

@description('Days a deleted certificate stays recoverable.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Resource ID of the Log Analytics workspace that receives the vault audit log; empty for none.')
param logAnalyticsId string = ''

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109:The public endpoint is needed by the Flex Consumption app (no fixed outbound addresses without VNet integration) and by operators importing the certificate; RBAC-only authorization with a single Secrets User role for the app guards it, and the parameter publicNetworkAccess turns it off for federated mode.
  //checkov:skip=CKV_AZURE_189:Same reason as CKV_AZURE_109; documented in docs/deploy.md.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Who read or changed the certificate, and when.
resource keyVaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsId)) {
  name: 'audit'
  scope: keyVault
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output keyVaultId string = keyVault.id
output keyVaultName string = keyVault.name
output keyVaultUri string = keyVault.properties.vaultUri
