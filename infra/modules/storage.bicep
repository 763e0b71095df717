// The storage account behind the Function App: the Functions host (AzureWebJobsStorage), the
// activation queue and its poison queue, the activation and event tables, and the blob
// container Flex Consumption deploys the code package from.
//
// Shared keys are disabled: every caller (the app, the contract system, an operator's
// `az storage ... --auth-mode login`) authenticates with Microsoft Entra ID and a data role.

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Replication of the account. Geo-zone-redundant keeps the queue and the activation history through a zone outage and copies them to the paired region.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GZRS'

@description('Queue of activation notices (ACTIVATION_QUEUE).')
param activationQueueName string = 'activation-notices'

@description('Table with one row per activation (ACTIVATIONS_TABLE).')
param activationsTableName string = 'activations'

@description('Append-only table of activation events (EVENTS_TABLE).')
param eventsTableName string = 'activationevents'

@description('Blob container the Flex Consumption app deploys its code package from.')
param deploymentContainerName string

@description('Resource ID of the Log Analytics workspace that receives storage audit logs; empty for none.')
param logAnalyticsId string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_43:The name is computed by main.bicep ('st' + uniqueString, 15 lowercase letters and digits) and the parameter is length-checked; the scanner cannot evaluate a module parameter.
  //checkov:skip=CKV_AZURE_35:The contract system and operators enqueue notices from outside Azure and a Flex Consumption app without VNet integration has no fixed outbound addresses; access is guarded by Entra ID roles with shared keys disabled.
  //checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the public endpoint is required by the contract system and the app; only Entra ID callers with a data role get in (allowSharedKeyAccess false, no anonymous blob access).
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource activationQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: activationQueueName
}

// The Functions host moves a message here after its last failed dequeue; a poison-queue
// trigger records the activation as failed so nothing disappears silently.
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${activationQueueName}-poison'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource activationsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: activationsTableName
}

resource eventsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: eventsTableName
}

// Audit of who changed queue messages and table rows. Reads are not logged: the Functions
// host polls the queue continuously and read logs would cost more than they tell.
resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsId)) {
  name: 'audit'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsId)) {
  name: 'audit'
  scope: tableService
  properties: {
    workspaceId: logAnalyticsId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

output storageAccountId string = storage.id
output storageAccountName string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainer.name}'
output activationQueueName string = activationQueue.name
output poisonQueueName string = poisonQueue.name
output activationQueueUrl string = '${storage.properties.primaryEndpoints.queue}${activationQueue.name}'
