// Role assignments, each scoped to the one resource it is about, with the narrowest built-in
// data role that does the job. No Owner, Contributor or User Access Administrator anywhere.

@description('Principal ID (object ID) of the Function App identity.')
param appPrincipalId string

@description('Storage account of the app (host storage, queue, tables, deployment container).')
param storageAccountName string

@description('Name of the activation queue.')
param activationQueueName string

@description('Name of the activations table.')
param activationsTableName string

@description('Name of the activation events table.')
param eventsTableName string

@description('Key Vault holding the Exchange app certificate.')
param keyVaultName string

@description('Application Insights component the app sends telemetry to.')
param applicationInsightsName string

@description('Principal ID of the contract system that enqueues activation notices; empty for none.')
param contractSystemPrincipalId string = ''

@description('Kind of that principal.')
@allowed([
  'ServicePrincipal'
  'Group'
  'User'
])
param contractSystemPrincipalType string = 'ServicePrincipal'

@description('Principal ID of the operator deploying the system (azd fills in the signed-in user); empty for none.')
param operatorPrincipalId string = ''

@description('Kind of that principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Object ID of the operators\' Entra group; it gets the data roles `python -m shared` needs (docs/operations.md). Empty for none.')
param operatorsGroupObjectId string = ''

@description('Let the operators\' group run `python -m shared retry` (writes the activation row and its history): Storage Table Data Contributor on the two tables instead of Reader.')
param operatorsCanRetryFromCli bool = true

// Built-in role definition IDs (the same in every tenant).
// Host storage: blob leases and the deployment package (Functions' documented role for
// identity-based AzureWebJobsStorage).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Queue trigger, delayed retries and the poison queue.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// Activation and event rows.
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
// Telemetry with Entra ID authentication (Application Insights has local auth disabled).
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
// Read the Exchange app certificate with its private key (it is served as a secret).
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
// Add messages to one queue, nothing else: the contract system, and operators' test notices.
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
// Read activation rows and their history: `status` and `list` of the operators' CLI.
var storageTableDataReader = '76199698-9eea-4c19-bc75-cec21354c6b6'
// Create and import the Exchange app certificate (operators only).
var keyVaultCertificatesOfficer = 'a4417e6f-fecd-4de8-b567-7b0420556985'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource activationQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: activationQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource activationsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: activationsTableName
}

resource eventsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: eventsTableName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
  }
}

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
  }
}

resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, storageTableDataContributor)
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
  }
}

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, appPrincipalId, keyVaultSecretsUser)
  scope: keyVault
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource contractSystemSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(contractSystemPrincipalId)) {
  name: guid(activationQueue.id, contractSystemPrincipalId, storageQueueDataMessageSender)
  scope: activationQueue
  properties: {
    principalId: contractSystemPrincipalId
    principalType: contractSystemPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
  }
}

resource operatorSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(activationQueue.id, operatorPrincipalId, storageQueueDataMessageSender)
  scope: activationQueue
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
  }
}

resource operatorCertificatesOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(keyVault.id, operatorPrincipalId, keyVaultCertificatesOfficer)
  scope: keyVault
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultCertificatesOfficer)
  }
}

// The operators' group: exactly what `python -m shared` does against storage, on the two tables
// and the one queue it touches (the CLI reads and writes Table storage and the queue itself; it
// does not go through the HTTP API). status/list read the tables; submit adds a message; retry
// rewrites the activation row, appends to its history and adds a delayed message.
var operatorsTableRole = operatorsCanRetryFromCli ? storageTableDataContributor : storageTableDataReader

resource operatorsActivationsTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorsGroupObjectId)) {
  name: guid(activationsTable.id, operatorsGroupObjectId, operatorsTableRole)
  scope: activationsTable
  properties: {
    principalId: operatorsGroupObjectId
    principalType: 'Group'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', operatorsTableRole)
  }
}

resource operatorsEventsTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorsGroupObjectId)) {
  name: guid(eventsTable.id, operatorsGroupObjectId, operatorsTableRole)
  scope: eventsTable
  properties: {
    principalId: operatorsGroupObjectId
    principalType: 'Group'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', operatorsTableRole)
  }
}

resource operatorsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorsGroupObjectId)) {
  name: guid(activationQueue.id, operatorsGroupObjectId, storageQueueDataMessageSender)
  scope: activationQueue
  properties: {
    principalId: operatorsGroupObjectId
    principalType: 'Group'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
  }
}
