// The Function App on the Flex Consumption plan (FC1), running Python 3.11.
//
// It runs as a user-assigned managed identity and holds no secret: the Functions host reaches
// storage with that identity (AzureWebJobsStorage__credential = managedidentity), telemetry is
// sent with it (APPLICATIONINSIGHTS_AUTHENTICATION_STRING), the code package is pulled from the
// deployment container with it, and the product code uses it for Key Vault and, in federated
// mode, as the credential of the multi-tenant Exchange app.

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('azd service name in azure.yaml; azd finds the app to deploy to by this tag.')
param serviceName string = 'api'

@description('Name of the Flex Consumption plan.')
param planName string

@description('Name of the Function App.')
param functionAppName string

@description('Resource ID of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client ID of that identity.')
param identityClientId string

@description('Name of the storage account (Functions host storage, queue, tables, deployment container).')
param storageAccountName string

@description('Blob container the code package is deployed to.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Resource ID of the Log Analytics workspace that receives the app logs; empty for none.')
param logAnalyticsId string = ''

@description('The product settings (shared/settings.py), merged with the platform settings below.')
param appSettings object

@description('Upper bound of instances the plan scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Spread instances over availability zones (only in regions where Flex Consumption offers it; the platform then keeps at least two always-ready instances, billed).')
param zoneRedundant bool = false

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Settings of the Functions host and the platform, all identity based: no connection string,
// no account key. The product's own storage clients read the same AzureWebJobsStorage__*
// settings; AzureWebJobsStorage itself (a connection string) is for local runs only.
var platformSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Zone redundancy of a Flex Consumption plan exists only in some regions and keeps at least two billed always-ready instances per function group, so it is the zoneRedundant parameter (default off); a zone outage delays activations but loses none: notices wait in the (by default zone-redundant) queue and every step is idempotent.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:The HTTP API (status, retry, submit) is called by operators and the status page from outside Azure; every function but the anonymous liveness probe requires a function key, HTTPS only, and notices from the contract system arrive through the queue, not HTTP.
  //checkov:skip=CKV_AZURE_17:Callers authenticate with function keys over TLS 1.2+; requiring client certificates would lock out the operator CLI and status page and adds no identity the keys do not already prove.
  //checkov:skip=CKV_AZURE_212:numberOfWorkers does not apply to the Flex Consumption plan: the platform scales instances per trigger (maximumInstanceCount), and queue messages survive an instance loss.
  //checkov:skip=CKV_AZURE_213:App Service health check is not available on the Flex Consumption plan; the platform replaces unhealthy instances and the queue redelivers any message whose processing did not finish.
  name: functionAppName
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      // Set with the site, not as a separate config resource, so the host's first start
      // already has its identity-based storage settings.
      appSettings: [for setting in items(union(platformSettings, appSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No FTP and no publishing with user names and passwords: deployments (azd, az functionapp
// deployment) authenticate with Microsoft Entra ID.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

resource appDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsId)) {
  name: 'logs'
  scope: functionApp
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

output functionAppId string = functionApp.id
output functionAppName string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
