// Alerts: who is told when an activation needs a person, and when the app itself fails.
//
// One action group (email, and optionally a webhook such as a Teams workflow URL), and log
// alert rules (Microsoft.Insights/scheduledQueryRules) on the Application Insights component:
//   * outcomes  - an activation ended `needs_attention` or `failed` (the app logs one
//                 `activation.outcome` record per finished attempt, with status and code);
//   * poison    - a message reached the poison queue (the poison trigger logs
//                 `activation.poisoned` for each one it records);
//   * poison-depth - the poison queue held messages at every sample of the window (the app
//                 logs `queue.poison_depth` every 5 minutes): nobody is recording them;
//   * failures  - a function invocation failed (the host's `requests` with success false),
//                 which is also how a poison queue that is not being drained shows up.
// Azure Storage publishes QueueMessageCount per account, not per queue, so the poison queue's
// own depth is not a platform metric: the app samples it (measure_poison_queue in
// function_app.py) and logs it (see docs/operations.md).
// Schema: https://learn.microsoft.com/azure/templates/microsoft.insights/scheduledqueryrules

@description('Azure region of the resources.')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Name prefix of the alert resources.')
param namePrefix string

@description('Resource ID of the Application Insights component the app logs to.')
param applicationInsightsId string

@description('E-mail address that receives the alerts; empty for none.')
param alertEmailAddress string = ''

@description('Webhook (for example a Teams workflow "When a webhook request is received" URL) that receives the alerts; empty for none.')
@secure()
param alertWebhookUrl string = ''

@description('How often each rule runs (ISO 8601 duration).')
param evaluationFrequency string = 'PT5M'

@description('The window of logs each run looks at (ISO 8601 duration); longer than the frequency, so a late record is still seen.')
param windowSize string = 'PT15M'

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${namePrefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'activations'
    enabled: true
    emailReceivers: empty(alertEmailAddress) ? [] : [
      {
        name: 'operators'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
    webhookReceivers: empty(alertWebhookUrl) ? [] : [
      {
        name: 'webhook'
        serviceUri: alertWebhookUrl
        useCommonAlertSchema: true
      }
    ]
  }
}

// Each rule: a KQL query over the component's logs, fired when it returns a row, split by the
// dimensions an operator acts on.
var rules = [
  {
    name: 'outcomes'
    displayName: 'Activation needs a person or failed'
    description: 'An activation ended needs_attention or failed. Look it up (status page, or python -m shared status NOTICE_ID), follow the hint of its error code, then retry.'
    severity: 2
    query: 'traces | where customDimensions["event"] == "activation.outcome" | extend status = tostring(customDimensions["status"]), code = tostring(customDimensions["code"]) | where status in ("needs_attention", "failed") | project timestamp, status, code'
    dimensions: [
      'status'
      'code'
    ]
  }
  {
    name: 'poison'
    displayName: 'Activation message reached the poison queue'
    description: 'The Functions host gave up on a message after maxDequeueCount deliveries; the poison trigger recorded the activation as failed (UNHANDLED, raw message kept). Read the activation, report the error, then retry.'
    severity: 1
    query: 'traces | where customDimensions["event"] == "activation.poisoned" | extend code = tostring(customDimensions["code"]) | project timestamp, code'
    dimensions: [
      'code'
    ]
  }
  {
    name: 'poison-depth'
    displayName: 'Messages are waiting in the poison queue'
    description: 'Every sample of the poison queue in the window (the app measures it every 5 minutes) found messages: the poison trigger is not recording them. Read the failures of record_poisoned_activation; the messages stay in the poison queue until it succeeds.'
    severity: 1
    query: 'traces | where customDimensions["event"] == "queue.poison_depth" | extend depth = toint(customDimensions["depth"]) | summarize samples = count(), least = min(depth) | where samples >= 2 and least > 0'
    dimensions: []
  }
  {
    name: 'failures'
    displayName: 'Function invocations failed'
    description: 'A function of the app raised (an unexpected error, or Storage unreachable). Queue messages are retried by the host and end in the poison queue; a failing record_poisoned_activation means poison messages are piling up. Read the exceptions in Application Insights.'
    severity: 1
    query: 'requests | where success == false | project timestamp, operation_Name'
    dimensions: [
      'operation_Name'
    ]
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: 'alert-${namePrefix}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: evaluationFrequency
    windowSize: windowSize
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [for dimension in rule.dimensions: {
            name: dimension
            operator: 'Include'
            values: [
              '*'
            ]
          }]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupId string = actionGroup.id
