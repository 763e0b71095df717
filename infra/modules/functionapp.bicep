// The Function App on the Flex Consumption plan (FC1), running Python (3.11 by default).
//
// Only properties Flex Consumption honours are set: the runtime, scale and deployment source
// live in functionAppConfig, and none of the site properties or app settings listed under
// "Flex Consumption plan deprecations" appears (siteConfig.ftpsState among them: FTP is
// switched off by the basicPublishingCredentialsPolicies below instead). Sources:
// https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations
// and the azd Flex quickstart, Azure-Samples/functions-quickstart-python-http-azd infra/app/api.bicep.
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

@description('Python version of the Flex Consumption runtime (functionAppConfig.runtime.version). 3.13 needs the azure-functions 2.x line, which requirements.txt selects by python_version; see docs/deploy.md.')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string = '3.11'

@description('Threads of the Python worker (PYTHON_THREADPOOL_THREAD_COUNT). Every trigger is synchronous, so one queue trigger alone may run host.json batchSize + newBatchThreshold (8 + 4 = 12) invocations at once; below that, messages wait for a thread while their visibility timeout runs.')
@minValue(12)
param pythonThreadpoolThreadCount int = 16

@description('Application (client) ID of the Entra app registration operators sign in with (App Service Authentication).')
param operatorSignInClientId string

@description('Object ID of the operators\' Entra group; when set, App Service Authentication admits only its members (the token must carry the groups claim). Empty: every user of the tenant the app registration admits.')
param operatorsGroupObjectId string = ''

@description('Paths App Service Authentication lets through without sign-in. The Functions host still asks a function key on every one of them but /api/health.')
param unauthenticatedPaths array = [
  '/api/health'
  '/api/automation/activations'
]

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
  PYTHON_THREADPOOL_THREAD_COUNT: string(pythonThreadpoolThreadCount)
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
  //checkov:skip=CKV_AZURE_222:The HTTP API and the status page are used by operators from outside Azure; App Service Authentication (authsettingsV2 below) makes them sign in with Entra ID, automation's one route needs a function key, HTTPS only; notices from the contract system arrive through the queue, not HTTP.
  //checkov:skip=CKV_AZURE_78:The Flex Consumption plan does not accept siteConfig.ftpsState (functions-app-settings#flex-consumption-plan-deprecations); FTP and FTPS are switched off by basicPublishingCredentialsPolicies/ftp allow false below, which tests/unit/test_infra.py asserts.
  //checkov:skip=CKV_AZURE_17:Operators authenticate with Entra ID (App Service Authentication) and automation with a function key, over TLS 1.2+; requiring client certificates would lock out the operator CLI and status page and adds no identity the keys do not already prove.
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
        version: pythonVersion
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

// App Service Authentication (Easy Auth) with Microsoft Entra ID in front of the HTTP API and
// the status page: an operator signs in with the browser (the page) or presents an Entra token
// (scripts); nobody needs a function key in a URL. Signed-in requests reach the app with the
// X-MS-CLIENT-PRINCIPAL* headers, which the platform strips from outside requests, so the app
// can record who asked
// (https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities).
// Automation keeps its function keys on the paths in unauthenticatedPaths, where the Functions
// host asks for the key. Without a client secret the sign-in uses the ID token (implicit flow),
// so the app registration must allow ID tokens; see docs/deploy.md.
// Schema: https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // Checkov applies its App Service site checks to every Microsoft.Web/sites/config resource;
  // these describe properties of the site (siteConfig), which an authsettingsV2 resource does not carry:
  //checkov:skip=CKV_AZURE_13:This resource IS App Service Authentication (platform.enabled true, Entra ID required); the check reads the V1 siteAuthSettings shape.
  //checkov:skip=CKV_AZURE_222:Public network access is a property of the site, decided (and excused) on functionApp above.
  //checkov:skip=CKV_AZURE_63:HTTP logging is a siteConfig property; the app's logs go to Log Analytics (FunctionAppLogs diagnostic setting) and Application Insights.
  //checkov:skip=CKV_AZURE_65:Detailed error pages are a siteConfig property of App Service web apps; a Function App returns its own JSON errors.
  //checkov:skip=CKV_AZURE_66:Failed request tracing is a siteConfig property (IIS on Windows); the Function App is Linux, its failures are in Application Insights requests.
  //checkov:skip=CKV_AZURE_80:.NET Framework version does not apply: the app is Python.
  //checkov:skip=CKV_AZURE_88:Azure Files content storage does not exist on Flex Consumption; the package is in a blob container.
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: unauthenticatedPaths
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: operatorSignInClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${operatorSignInClientId}'
            operatorSignInClientId
          ]
          defaultAuthorizationPolicy: {
            allowedPrincipals: {
              groups: empty(operatorsGroupObjectId) ? [] : [
                operatorsGroupObjectId
              ]
            }
          }
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
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
