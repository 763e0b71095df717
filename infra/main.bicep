// Activation provisioning: everything one environment needs, in one resource group.
//
//   user-assigned identity ─┬─► storage (host, activation queue + poison, tables, deployment container)
//                           ├─► Key Vault (the Exchange app certificate)
//                           └─► Application Insights ◄─ Log Analytics
//   Flex Consumption plan ──► Function App (Python 3.11-3.13) running as that identity,
//                            behind App Service Authentication (Entra ID) for operators
//   action group ◄── alert rules on the activation outcomes, the poison queue and failures
//
// Deploy with `azd up` (azure.yaml) or `az deployment group create` (docs/deploy.md).
// No secret is set anywhere in this template: EXO_CLIENT_SECRET is for local development only.

targetScope = 'resourceGroup'

@description('Name of the environment (azd sets it); part of every resource name.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Azure region of the resources; it must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string = resourceGroup().location

@description('Tags applied to every resource.')
param tags object = {}

// ---------------------------------------------------------------- the Exchange app
@description('Application (client) ID of the multi-tenant Exchange app (EXO_CLIENT_ID). Empty until the app is registered.')
param exoClientId string = ''

@description('How the app authenticates to customer tenants (EXO_AUTH_MODE): certificate from Key Vault, or federated (the managed identity is a federated credential of the app). "secret" is for local development only.')
@allowed([
  'certificate'
  'federated'
])
param exoAuthMode string = 'certificate'

@description('Name of the app certificate in Key Vault (EXO_CERTIFICATE_NAME).')
param exoCertificateName string = 'exo-app'

@description('Exchange Online admin API base URL (EXO_ADMIN_API_URL).')
param exoAdminApiUrl string = 'https://outlook.office365.com'

@description('Microsoft Entra authority host (ENTRA_AUTHORITY_HOST).')
param entraAuthorityHost string = 'https://login.microsoftonline.com'

@description('Timeout in seconds of each Exchange and token call (EXO_TIMEOUT_SECONDS).')
@minValue(1)
param exoTimeoutSeconds int = 30

@description('Timeout in seconds of one Validate-OutboundConnector call, which sends test mail and is never repeated after a timeout; less than half of leaseSeconds (EXO_VALIDATE_TIMEOUT_SECONDS).')
@minValue(30)
param exoValidateTimeoutSeconds int = 240

// ---------------------------------------------------------------- what may be provisioned
@description('MailGates smart hosts a notice may name (ALLOWED_SMART_HOSTS).')
param allowedSmartHosts array = [
  'mgf.cybermail.jp'
  'mgs.cybermail.jp'
  'mgp.cybermail.jp'
]

@description('Enterprise Audit journal domains a notice may name (ALLOWED_JOURNAL_DOMAINS).')
param allowedJournalDomains array = [
  'cs-365.cybermail.jp'
  'cs-365-02.cybermail.jp'
]

@description('Name of the Enterprise Audit outbound connector (EA_CONNECTOR_NAME).')
@maxLength(64)
param eaConnectorName string = 'Enterprise Audit送信コネクタ'

@description('Name of the MailGates outbound connector (MG_CONNECTOR_NAME).')
@maxLength(64)
param mgConnectorName string = 'MAILGATESΣ 送信コネクタ'

@description('What an SPF problem does to the outcome (SPF_POLICY).')
@allowed([
  'warn'
  'block'
  'off'
])
param spfPolicy string = 'warn'

@description('The include: the vendor asks customers to publish in SPF (SPF_REQUIRED_INCLUDE); empty to skip that check.')
param spfRequiredInclude string = ''

@description('Name server for SPF look-ups (DNS_NAMESERVER); empty for the platform resolver.')
param dnsNameserver string = ''

@description('Port of that name server (DNS_PORT).')
param dnsPort int = 53

@description('Whether an Enterprise Audit activation also ensures its journal rule (EA_JOURNAL_RULE).')
@allowed([
  'off'
  'ensure'
])
param eaJournalRule string = 'off'

@description('Name of the Enterprise Audit journal rule (EA_JOURNAL_RULE_NAME).')
@maxLength(64)
param eaJournalRuleName string = 'Enterprise Audit ジャーナル ルール'

@description('NCRONTAB schedule of the drift check of succeeded activations (DRIFT_SCHEDULE); the timer trigger reads it as %DRIFT_SCHEDULE%.')
param driftSchedule string = '0 0 3 * * *'

@description('Whether a drifted activation is re-provisioned at once (DRIFT_REPAIR).')
param driftRepair bool = false

// ---------------------------------------------------------------- retries and leases
@description('Attempts of one activation before it is marked failed (MAX_ATTEMPTS).')
@minValue(1)
param maxAttempts int = 8

@description('First back-off delay in seconds (RETRY_BASE_SECONDS).')
param retryBaseSeconds int = 30

@description('Upper bound of one back-off delay in seconds (RETRY_MAX_SECONDS).')
param retryMaxSeconds int = 3600

@description('Seconds the claim of a worker on an activation lasts unless renewed (LEASE_SECONDS).')
param leaseSeconds int = 60

@description('Seconds between renewals of a running claim, at most a third of the lease (HEARTBEAT_SECONDS).')
param heartbeatSeconds int = 15

@description('Retries waiting for a consent or role grant to reach Exchange (GRANT_PROPAGATION_ATTEMPTS).')
param grantPropagationAttempts int = 4

@description('First wait in seconds for a grant to propagate, doubling (GRANT_PROPAGATION_BASE_SECONDS).')
param grantPropagationBaseSeconds int = 60

@description('Seconds a just-created connector may read as missing (REPLICATION_WAIT_SECONDS).')
param replicationWaitSeconds int = 60

// ---------------------------------------------------------------- storage names
@description('Queue of activation notices (ACTIVATION_QUEUE); "<name>-poison" is created beside it.')
param activationQueueName string = 'activation-notices'

@description('Table of activations (ACTIVATIONS_TABLE).')
param activationsTableName string = 'activations'

@description('Table of activation events (EVENTS_TABLE).')
param eventsTableName string = 'activationevents'

// ---------------------------------------------------------------- access
@description('Principal ID (object ID) of the contract system; it gets Storage Queue Data Message Sender on the activation queue. Empty for none.')
param contractSystemPrincipalId string = ''

@description('Kind of the contract system principal.')
@allowed([
  'ServicePrincipal'
  'Group'
  'User'
])
param contractSystemPrincipalType string = 'ServicePrincipal'

@description('Principal ID of the operator (azd passes the signed-in user); gets Key Vault Certificates Officer on the vault and Message Sender on the queue. Empty for none.')
param operatorPrincipalId string = ''

@description('Kind of the operator principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Public network access of the Key Vault. Keep Enabled for EXO_AUTH_MODE=certificate (the app reads the certificate); Disabled is fine for federated mode.')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('Application (client) ID of the Entra app registration operators sign in with (App Service Authentication in front of the status page and the API). See docs/deploy.md, step 1b.')
@minLength(36)
@maxLength(36)
param operatorSignInClientId string

@description('Object ID of the operators\' Entra group: only its members may sign in (when set), and it gets the data roles of the operators\' CLI. Empty for none.')
param operatorsGroupObjectId string = ''

@description('Give the operators\' group Storage Table Data Contributor on the two tables, so `python -m shared retry` works; false keeps it to Reader (status and list) and retries go through the status page or the API.')
param operatorsCanRetryFromCli bool = true

// ---------------------------------------------------------------- alerts
@description('E-mail address that receives the alerts (activation needs a person or failed, poison queue, function failures); empty for none.')
param alertEmailAddress string = ''

@description('Webhook that receives the same alerts (for example a Teams workflow URL); empty for none.')
@secure()
param alertWebhookUrl string = ''

// ---------------------------------------------------------------- capacity
@description('Python version of the Function App (3.13 needs the azure-functions 2.x line; docs/deploy.md).')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string = '3.11'

@description('Appended to the Key Vault name. A deleted vault keeps its name for the soft-delete period and purge protection forbids purging it, so after `azd down` either recover it (docs/deploy.md) or deploy with a new suffix (up to 8 lowercase letters or digits).')
@maxLength(8)
param keyVaultNameSuffix string = ''

@description('Upper bound of Function App instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Spread Function App instances over availability zones (only where Flex Consumption supports it).')
param zoneRedundant bool = false

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Replication of the storage account. The default needs a region with availability zones (Japan East has them); choose Standard_RAGRS elsewhere.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_GZRS'

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 90

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var allTags = union(tags, { 'azd-env-name': environmentName })
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceToken}'
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: allTags
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    retentionInDays: logRetentionInDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: allTags
    storageAccountName: 'st${resourceToken}'
    skuName: storageSkuName
    activationQueueName: activationQueueName
    activationsTableName: activationsTableName
    eventsTableName: eventsTableName
    deploymentContainerName: deploymentContainerName
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    tags: allTags
    keyVaultName: 'kv-${resourceToken}${keyVaultNameSuffix}'
    publicNetworkAccess: keyVaultPublicNetworkAccess
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    appPrincipalId: identity.properties.principalId
    storageAccountName: storage.outputs.storageAccountName
    activationQueueName: storage.outputs.activationQueueName
    activationsTableName: activationsTableName
    eventsTableName: eventsTableName
    keyVaultName: keyVault.outputs.keyVaultName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    contractSystemPrincipalId: contractSystemPrincipalId
    contractSystemPrincipalType: contractSystemPrincipalType
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
    operatorsGroupObjectId: operatorsGroupObjectId
    operatorsCanRetryFromCli: operatorsCanRetryFromCli
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: allTags
    namePrefix: resourceToken
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    alertEmailAddress: alertEmailAddress
    alertWebhookUrl: alertWebhookUrl
  }
}

// Every setting the product reads (shared/settings.py SETTINGS), except EXO_CLIENT_SECRET,
// which is for local development only and must never reach Azure.
var appSettings = {
  ACTIVATION_QUEUE: activationQueueName
  ACTIVATIONS_TABLE: activationsTableName
  EVENTS_TABLE: eventsTableName
  EA_CONNECTOR_NAME: eaConnectorName
  MG_CONNECTOR_NAME: mgConnectorName
  ALLOWED_SMART_HOSTS: join(allowedSmartHosts, ',')
  ALLOWED_JOURNAL_DOMAINS: join(allowedJournalDomains, ',')
  EXO_ADMIN_API_URL: exoAdminApiUrl
  ENTRA_AUTHORITY_HOST: entraAuthorityHost
  EXO_AUTH_MODE: exoAuthMode
  EXO_CLIENT_ID: exoClientId
  // In Azure the certificate comes from Key Vault; a PEM path is for local runs.
  EXO_CERTIFICATE_PATH: ''
  KEY_VAULT_URL: keyVault.outputs.keyVaultUri
  EXO_CERTIFICATE_NAME: exoCertificateName
  MANAGED_IDENTITY_CLIENT_ID: identity.properties.clientId
  EXO_TIMEOUT_SECONDS: string(exoTimeoutSeconds)
  EXO_VALIDATE_TIMEOUT_SECONDS: string(exoValidateTimeoutSeconds)
  MAX_ATTEMPTS: string(maxAttempts)
  RETRY_BASE_SECONDS: string(retryBaseSeconds)
  RETRY_MAX_SECONDS: string(retryMaxSeconds)
  LEASE_SECONDS: string(leaseSeconds)
  HEARTBEAT_SECONDS: string(heartbeatSeconds)
  GRANT_PROPAGATION_ATTEMPTS: string(grantPropagationAttempts)
  GRANT_PROPAGATION_BASE_SECONDS: string(grantPropagationBaseSeconds)
  REPLICATION_WAIT_SECONDS: string(replicationWaitSeconds)
  EXO_CALL_RETRIES: '2'
  SPF_POLICY: spfPolicy
  SPF_REQUIRED_INCLUDE: spfRequiredInclude
  DNS_NAMESERVER: dnsNameserver
  DNS_PORT: string(dnsPort)
  // App Service Authentication guards the operators' routes (authsettingsV2 in functionapp.bicep).
  OPERATOR_AUTH: 'entra'
  EA_JOURNAL_RULE: eaJournalRule
  EA_JOURNAL_RULE_NAME: eaJournalRuleName
  DRIFT_SCHEDULE: driftSchedule
  DRIFT_REPAIR: string(driftRepair)
  DRIFT_PAGE_SIZE: '100'
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: allTags
    serviceName: 'api'
    planName: 'plan-${resourceToken}'
    functionAppName: functionAppName
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.storageAccountName
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    appSettings: appSettings
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    pythonVersion: pythonVersion
    operatorSignInClientId: operatorSignInClientId
    operatorsGroupObjectId: operatorsGroupObjectId
  }
  // The host starts as soon as the app exists: its identity must already hold its roles.
  dependsOn: [
    roles
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output FUNCTION_APP_NAME string = functionApp.outputs.functionAppName
output FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output STORAGE_ACCOUNT_NAME string = storage.outputs.storageAccountName
output ACTIVATION_QUEUE_NAME string = storage.outputs.activationQueueName
output ACTIVATION_QUEUE_URL string = storage.outputs.activationQueueUrl
output KEY_VAULT_NAME string = keyVault.outputs.keyVaultName
output KEY_VAULT_URI string = keyVault.outputs.keyVaultUri
output MANAGED_IDENTITY_CLIENT_ID string = identity.properties.clientId
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.properties.principalId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output ALERT_ACTION_GROUP_ID string = alerts.outputs.actionGroupId
