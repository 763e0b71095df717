"""Security properties of the Bicep in infra/, asserted on the parsed templates.

Each check below is a function that reads a parsed copy of infra/ and returns the problems it
finds, as text. The real templates must have none. Every check is also run against a copy of
infra/ with one property broken (see MUTATIONS), and must then report it: a check that cannot
fail would prove nothing.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from pycep import BicepParser

from shared.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

# Built-in roles the templates may assign, with the resource types each may be scoped to.
ALLOWED_ROLES: dict[str, tuple[str, frozenset[str]]] = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": (
        "Storage Blob Data Owner",
        frozenset({"Microsoft.Storage/storageAccounts"}),
    ),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": (
        "Storage Queue Data Contributor",
        frozenset({"Microsoft.Storage/storageAccounts"}),
    ),
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": (
        "Storage Table Data Contributor",
        frozenset({"Microsoft.Storage/storageAccounts"}),
    ),
    "3913510d-42f4-4e42-8a64-420c390055eb": (
        "Monitoring Metrics Publisher",
        frozenset({"Microsoft.Insights/components"}),
    ),
    "4633458b-17de-408a-b874-0445c86b69e6": ("Key Vault Secrets User", frozenset({"Microsoft.KeyVault/vaults"})),
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": (
        "Storage Queue Data Message Sender",
        frozenset({"Microsoft.Storage/storageAccounts/queueServices/queues"}),
    ),
    "a4417e6f-fecd-4de8-b567-7b0420556985": (
        "Key Vault Certificates Officer",
        frozenset({"Microsoft.KeyVault/vaults"}),
    ),
    "76199698-9eea-4c19-bc75-cec21354c6b6": (
        "Storage Table Data Reader",
        frozenset({"Microsoft.Storage/storageAccounts/tableServices/tables"}),
    ),
}
# The operators' group may also hold Table Data Contributor, but on one table at a time.
ALLOWED_ROLES["0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"] = (
    "Storage Table Data Contributor",
    frozenset({"Microsoft.Storage/storageAccounts", "Microsoft.Storage/storageAccounts/tableServices/tables"}),
)
# Named so that a failure says what went wrong; any GUID outside ALLOWED_ROLES fails anyway.
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
}

# App settings the platform reads (Functions host, Application Insights), not the product.
PLATFORM_SETTINGS = frozenset(
    {
        "AzureWebJobsStorage__credential",
        "AzureWebJobsStorage__clientId",
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__blobServiceUri",
        "AzureWebJobsStorage__queueServiceUri",
        "AzureWebJobsStorage__tableServiceUri",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "PYTHON_THREADPOOL_THREAD_COUNT",
    }
)

# Site properties and app settings the Flex Consumption plan does not honour ("Flex Consumption
# plan deprecations", https://learn.microsoft.com/azure/azure-functions/functions-app-settings
# #flex-consumption-plan-deprecations): the runtime, scale and package live in functionAppConfig.
# Compare this list with the page's tables when the page changes, and add any new entry.
FLEX_DEPRECATED_SITE_CONFIG = frozenset(
    {
        "alwaysOn",
        "ftpsState",
        "functionAppScaleLimit",
        "functionsRuntimeScaleMonitoringEnabled",
        "javaVersion",
        "linuxFxVersion",
        "netFrameworkVersion",
        "powerShellVersion",
        "preWarmedInstanceCount",
        "use32BitWorkerProcess",
        "windowsFxVersion",
    }
)
FLEX_DEPRECATED_SITE_PROPERTIES = frozenset({"containerSize", "isXenon", "reserved", "use32BitWorkerProcess"})
FLEX_DEPRECATED_APP_SETTINGS = frozenset(
    {
        "FUNCTIONS_EXTENSION_VERSION",
        "FUNCTIONS_WORKER_RUNTIME",
        "FUNCTIONS_WORKER_RUNTIME_VERSION",
        "FUNCTIONS_MAX_HTTP_CONCURRENCY",
        "FUNCTIONS_WORKER_PROCESS_COUNT",
        "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
        "SCM_DO_BUILD_DURING_DEPLOYMENT",
        "ENABLE_ORYX_BUILD",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        "WEBSITE_CONTENTSHARE",
        "WEBSITE_CONTENTOVERVNET",
        "WEBSITE_DNS_SERVER",
        "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
        "WEBSITE_NODE_DEFAULT_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
        "WEBSITE_VNET_ROUTE_ALL",
    }
)
# The only paths App Service Authentication may let through without sign-in: the liveness probe
# (anonymous) and the automation door, where the Functions host asks for a function key.
UNAUTHENTICATED_PATHS = frozenset({"/api/health", "/api/automation/activations"})
HOST_JSON = ROOT / "host.json"
# Read by the app, but only ever set locally: a client secret, and a storage connection string
# (Azurite); in Azure both would be credentials in plain configuration.
LOCAL_ONLY_SETTINGS = frozenset({"EXO_CLIENT_SECRET", "AzureWebJobsStorage"})

# Text that only appears when a credential is handled in a template.
CREDENTIAL_MARKERS = ("AccountKey", "DefaultEndpointsProtocol", "listKeys(", "SharedAccessSignature", "listSecrets(")

_COMMENT = re.compile(r"(^|\s)//.*$", re.MULTILINE)


@dataclass(frozen=True)
class Resource:
    file: str
    symbol: str
    type: str
    existing: bool
    config: dict[str, Any]


@dataclass(frozen=True)
class Infra:
    """The parsed templates of one infra/ folder, keyed by path relative to it."""

    files: dict[str, dict[str, Any]]
    code: dict[str, str]  # the text without comments

    def resources(self, type_: str | None = None, *, existing: bool = False) -> Iterator[Resource]:
        for name, parsed in self.files.items():
            for symbol, res in parsed.get("resources", {}).items():
                if (type_ is None or res["type"] == type_) and bool(res.get("existing")) == existing:
                    yield Resource(name, symbol, res["type"], bool(res.get("existing")), _body(res["config"]))

    def variable(self, file: str, name: str) -> Any:
        return self.files[file]["variables"][name]["value"]


@functools.cache
def _parse(text: str) -> dict[str, Any]:
    # Cached by content: a mutated copy of infra/ differs from the real one in a single file.
    return dict(BicepParser().parse(text=text))


def load_infra(root: Path) -> Infra:
    """Parse every .bicep file under root (the real infra/ or a mutated copy)."""
    files: dict[str, dict[str, Any]] = {}
    code: dict[str, str] = {}
    for path in sorted(root.rglob("*.bicep")):
        name = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        files[name] = _parse(text)
        code[name] = _COMMENT.sub("", text)
    return Infra(files, code)


def _body(config: dict[str, Any]) -> dict[str, Any]:
    """The properties of a resource, also when it is conditional (`= if (...) {...}`) or a loop."""
    while isinstance(config.get("config"), dict) and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _dotted(value: Any) -> str:
    """`a.b.c` for a parsed property accessor (or the plain name), so checks can compare text."""
    operands = _get(value, "operator", "operands")
    if _get(value, "operator", "type") == "property_accessor" and isinstance(operands, dict):
        return f"{_dotted(operands['operand_1'])}.{_dotted(operands['operand_2'])}"
    return str(value)


def _function(value: Any) -> tuple[str, dict[str, Any]] | None:
    fn = _get(value, "function")
    if isinstance(fn, dict):
        return str(fn["type"]), dict(fn.get("parameters") or {})
    return None


# ---------------------------------------------------------------------------------- checks


def check_storage(infra: Infra) -> list[str]:
    problems = []
    accounts = list(infra.resources("Microsoft.Storage/storageAccounts"))
    if not accounts:
        problems.append("no storage account declared")
    for res in accounts:
        props = res.config.get("properties") or {}
        where = f"{res.file}:{res.symbol}"
        if props.get("allowSharedKeyAccess") is not False:
            problems.append(f"{where}: allowSharedKeyAccess must be false")
        if props.get("minimumTlsVersion") != "TLS1_2":
            problems.append(f"{where}: minimumTlsVersion must be TLS1_2")
        if props.get("supportsHttpsTrafficOnly") is not True:
            problems.append(f"{where}: supportsHttpsTrafficOnly must be true")
        if props.get("allowBlobPublicAccess") is not False:
            problems.append(f"{where}: allowBlobPublicAccess must be false")
    for res in infra.resources("Microsoft.Storage/storageAccounts/blobServices/containers"):
        if _get(res.config, "properties", "publicAccess") != "None":
            problems.append(f"{res.file}:{res.symbol}: container publicAccess must be None")
    return problems


def check_storage_names(infra: Infra) -> list[str]:
    """The queue, its poison queue, both tables and the deployment container exist."""
    names = {
        res.type.rsplit("/", 1)[-1]: res
        for res in infra.resources()
        if res.type.startswith("Microsoft.Storage/storageAccounts/")
    }
    problems = [f"no {kind} declared" for kind in ("queues", "tables", "containers") if kind not in names]
    queues = [res.config["name"] for res in infra.resources("Microsoft.Storage/storageAccounts/queueServices/queues")]
    if "activationQueueName" not in queues or "${activationQueueName}-poison" not in queues:
        problems.append(f"the activation queue and its -poison queue must both be declared, got {queues}")
    tables = [res.config["name"] for res in infra.resources("Microsoft.Storage/storageAccounts/tableServices/tables")]
    if sorted(tables) != ["activationsTableName", "eventsTableName"]:
        problems.append(f"tables must be the activations and events tables, got {tables}")
    params = infra.files["main.bicep"]["parameters"]
    expected = {
        "activationQueueName": "activation-notices",
        "activationsTableName": "activations",
        "eventsTableName": "activationevents",
    }
    for param, default in expected.items():
        if _get(params, param, "default") != default:
            problems.append(f"main.bicep: {param} must default to {default!r}")
    return problems


def check_function_app(infra: Infra) -> list[str]:
    problems = []
    sites = list(infra.resources("Microsoft.Web/sites"))
    if len(sites) != 1:
        return [f"expected one Function App, found {len(sites)}"]
    site = sites[0]
    cfg, where = site.config, f"{site.file}:{site.symbol}"
    props = cfg.get("properties") or {}
    site_config = props.get("siteConfig") or {}
    if "functionapp" not in str(cfg.get("kind")) or "linux" not in str(cfg.get("kind")):
        problems.append(f"{where}: kind must be functionapp,linux")
    if props.get("httpsOnly") is not True:
        problems.append(f"{where}: httpsOnly must be true")
    if site_config.get("minTlsVersion") != "1.2":
        problems.append(f"{where}: siteConfig.minTlsVersion must be 1.2")
    if site_config.get("scmMinTlsVersion") != "1.2":
        problems.append(f"{where}: siteConfig.scmMinTlsVersion must be 1.2")
    for key in sorted(FLEX_DEPRECATED_SITE_CONFIG & set(site_config)):
        problems.append(f"{where}: siteConfig.{key} is not supported on Flex Consumption; remove it")
    for key in sorted(FLEX_DEPRECATED_SITE_PROPERTIES & set(props)):
        problems.append(f"{where}: properties.{key} is not supported on Flex Consumption; remove it")
    identity = cfg.get("identity") or {}
    if identity.get("type") != "UserAssigned" or len(identity.get("userAssignedIdentities") or {}) != 1:
        problems.append(f"{where}: identity must be UserAssigned with one identity attached")
    deployment = _get(props, "functionAppConfig", "deployment", "storage") or {}
    if _get(deployment, "authentication", "type") != "UserAssignedIdentity":
        problems.append(f"{where}: the deployment container must be read with the user-assigned identity")
    runtime = _get(props, "functionAppConfig", "runtime") or {}
    if (runtime.get("name"), runtime.get("version")) != ("python", "pythonVersion"):
        problems.append(f"{where}: runtime must be python, version from the pythonVersion parameter, got {runtime}")
    for file in (site.file, "main.bicep"):
        param = infra.files[file]["parameters"].get("pythonVersion") or {}
        allowed: list[str] = next((d["argument"] for d in param.get("decorators", []) if d["type"] == "allowed"), [])
        if param.get("default") != "3.11" or not {"3.11", "3.13"} <= set(allowed):
            problems.append(f"{file}: pythonVersion must default to python 3.11 and allow 3.13, got {param}")
    if _get(infra.files["main.bicep"], "modules", "functionApp", "config", "params", "pythonVersion") != \
            "pythonVersion":
        problems.append("main.bicep: the functionApp module must receive pythonVersion")
    if _get(props, "functionAppConfig", "scaleAndConcurrency") is None:
        problems.append(f"{where}: functionAppConfig.scaleAndConcurrency missing")
    plans = list(infra.resources("Microsoft.Web/serverfarms"))
    if not plans or any(_get(p.config, "sku") != {"name": "FC1", "tier": "FlexConsumption"} for p in plans):
        problems.append("the plan must be Flex Consumption (sku FC1, tier FlexConsumption)")
    return problems


def check_basic_publishing_off(infra: Infra) -> list[str]:
    policies = {
        res.config.get("name"): _get(res.config, "properties", "allow")
        for res in infra.resources("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    }
    return [
        f"basicPublishingCredentialsPolicies/{name} must exist with allow: false"
        for name in ("ftp", "scm")
        if policies.get(name) is not False
    ]


def _site_app_settings_source(infra: Infra) -> list[str]:
    """The site's appSettings must loop over union(platformSettings, appSettings)."""
    site = next(infra.resources("Microsoft.Web/sites"), None)
    if site is None:
        return ["no Function App"]
    loop = _get(site.config, "properties", "siteConfig", "appSettings", "loop_type", "detail", "array_name")
    items = _function(loop)
    union = _function(items[1].get("arg_1")) if items and items[0] == "items" else None
    merged = sorted(map(str, union[1].values())) if union and union[0] == "union" else []
    if merged != ["appSettings", "platformSettings"]:
        return [f"{site.file}: siteConfig.appSettings must be built from union(platformSettings, appSettings)"]
    module = _get(infra.files["main.bicep"], "modules", "functionApp", "config", "params", "appSettings")
    if module != "appSettings":
        return ["main.bicep: the functionApp module must receive the appSettings variable"]
    return []


def app_settings(infra: Infra) -> dict[str, Any]:
    """Every app setting the Function App gets: platform settings and product settings."""
    platform = dict(infra.variable("modules/functionapp.bicep", "platformSettings"))
    product = dict(infra.variable("main.bicep", "appSettings"))
    return {**platform, **product}


def check_storage_by_identity(infra: Infra) -> list[str]:
    problems = _site_app_settings_source(infra)
    settings = app_settings(infra)
    if settings.get("AzureWebJobsStorage__credential") != "managedidentity":
        problems.append("AzureWebJobsStorage__credential must be managedidentity")
    for suffix in ("clientId", "blobServiceUri", "queueServiceUri", "tableServiceUri"):
        if f"AzureWebJobsStorage__{suffix}" not in settings:
            problems.append(f"AzureWebJobsStorage__{suffix} must be set")
    for name in settings:
        by_key = name == "AzureWebJobsStorage" or name.lower().startswith("azurewebjobsstorage__")
        if by_key and name not in PLATFORM_SETTINGS:
            problems.append(f"{name}: the host must reach storage by identity only")
    auth = str(settings.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""))
    if "Authorization=AAD" not in auth or "ClientId=${identityClientId}" not in auth:
        problems.append("APPLICATIONINSIGHTS_AUTHENTICATION_STRING must use the identity client id with AAD")
    for file, code in infra.code.items():
        problems.extend(f"{file}: contains {marker!r}" for marker in CREDENTIAL_MARKERS if marker in code)
    return problems


def check_key_vault(infra: Infra) -> list[str]:
    problems = []
    vaults = list(infra.resources("Microsoft.KeyVault/vaults"))
    if not vaults:
        problems.append("no Key Vault declared")
    for res in vaults:
        props = res.config.get("properties") or {}
        where = f"{res.file}:{res.symbol}"
        for key in ("enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"):
            if props.get(key) is not True:
                problems.append(f"{where}: {key} must be true")
        if props.get("accessPolicies"):
            problems.append(f"{where}: access policies are not used; RBAC only")
    return problems


def check_app_insights(infra: Infra) -> list[str]:
    components = list(infra.resources("Microsoft.Insights/components"))
    problems = [] if components else ["no Application Insights component declared"]
    for res in components:
        props = res.config.get("properties") or {}
        if props.get("DisableLocalAuth") is not True:
            problems.append(f"{res.file}:{res.symbol}: DisableLocalAuth must be true")
        if not props.get("WorkspaceResourceId"):
            problems.append(f"{res.file}:{res.symbol}: must be workspace based (WorkspaceResourceId)")
    return problems


def check_role_assignments(infra: Infra) -> list[str]:
    problems = []
    assignments = list(infra.resources("Microsoft.Authorization/roleAssignments"))
    if not assignments:
        problems.append("no role assignment declared")
    for res in assignments:
        where = f"{res.file}:{res.symbol}"
        call = _function(_get(res.config, "properties", "roleDefinitionId"))
        if call is None or call[0] != "subscription_resource_id":
            problems.append(f"{where}: roleDefinitionId must be subscriptionResourceId(roleDefinitions, <id>)")
            continue
        variables = infra.files[res.file].get("variables", {})
        for role_id in _role_ids(str(call[1].get("resource_name_1")), variables):
            if role_id in BROAD_ROLES:
                problems.append(f"{where}: assigns {BROAD_ROLES[role_id]}")
                continue
            if role_id not in ALLOWED_ROLES:
                problems.append(f"{where}: role {role_id} is not in the allow-list")
                continue
            role_name, scope_types = ALLOWED_ROLES[role_id]
            scope = res.config.get("scope")
            scope_res = infra.files[res.file].get("resources", {}).get(scope) if isinstance(scope, str) else None
            if scope_res is None or scope_res["type"] not in scope_types:
                problems.append(f"{where}: {role_name} must be scoped to a {' or '.join(sorted(scope_types))}")
    return problems


def _role_ids(ref: str, variables: dict[str, Any]) -> list[str]:
    """The role GUIDs a roleDefinitionId may name: a variable, or either branch of `cond ? a : b`."""
    if ref not in variables:
        return [ref]
    value = variables[ref]["value"]
    operands = _get(value, "operator", "operands")
    if _get(value, "operator", "type") == "conditional" and isinstance(operands, dict):
        return [rid for key in ("true_value", "false_value") for rid in _role_ids(str(operands[key]), variables)]
    return [str(value)]


def check_product_settings(infra: Infra) -> list[str]:
    problems = _site_app_settings_source(infra)
    settings = app_settings(infra)
    known = {spec.env for spec in SETTINGS}
    for env in sorted(known - LOCAL_ONLY_SETTINGS):
        if env not in settings:
            problems.append(f"{env} is read by the app but not set in the Bicep")
    for env in sorted(LOCAL_ONLY_SETTINGS):
        named = re.compile(rf"(?<!\w){env}(?!\w)")
        if env in settings or any(named.search(code) for code in infra.code.values()):
            problems.append(f"{env} is local-only and must not be set in Azure")
    for name in sorted(set(settings) - known - PLATFORM_SETTINGS):
        problems.append(f"{name} is set in the Bicep but the app does not read it (typo?)")
    for name in settings:
        if re.search("SECRET|PASSWORD|ACCOUNTKEY", name.upper()):
            problems.append(f"{name} looks like a secret; secrets do not belong in app settings")
    return problems


def _resolve_int(infra: Infra, file: str, value: Any) -> int | None:
    """An int app setting written as string(<parameter>), resolved to the parameter's default."""
    call = _function(value)
    if call is not None and call[0] == "string":
        value = next(iter(call[1].values()), None)
    if isinstance(value, str) and value in infra.files[file].get("parameters", {}):
        module = _get(infra.files["main.bicep"], "modules", "functionApp", "config", "params", value)
        if module is not None:
            return None  # main.bicep passes its own value: not resolved here
        value = infra.files[file]["parameters"][value].get("default")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def check_flex_settings(infra: Infra) -> list[str]:
    """No app setting Flex ignores, and enough Python threads for host.json's queue batches."""
    problems = []
    settings = app_settings(infra)
    for name in sorted(FLEX_DEPRECATED_APP_SETTINGS & set(settings)):
        problems.append(f"{name} is not supported on Flex Consumption (functionAppConfig replaces it)")
    queues = json.loads(HOST_JSON.read_text(encoding="utf-8"))["extensions"]["queues"]
    needed = int(queues["batchSize"]) + int(queues["newBatchThreshold"])
    threads = _resolve_int(infra, APP, settings.get("PYTHON_THREADPOOL_THREAD_COUNT"))
    if threads is None or threads < needed:
        problems.append(f"PYTHON_THREADPOOL_THREAD_COUNT must be at least batchSize + newBatchThreshold = {needed}, "
                        f"got {threads}")
    location = infra.files["main.bicep"]["parameters"]["location"]
    metadata = [d["argument"] for d in location.get("decorators", []) if d["type"] == "metadata"]
    if {"azd": {"type": "location"}} not in metadata:
        problems.append("main.bicep: location needs @metadata({azd: {type: 'location'}}) so azd asks for a region")
    return problems


def check_key_vault_name(infra: Infra) -> list[str]:
    """A purge-protected vault keeps its name after `azd down`: the name takes a suffix parameter."""
    name = _get(infra.files["main.bicep"], "modules", "keyVault", "config", "params", "keyVaultName")
    param = infra.files["main.bicep"]["parameters"].get("keyVaultNameSuffix") or {}
    problems = []
    if not isinstance(name, str) or "${keyVaultNameSuffix}" not in name:
        problems.append(f"main.bicep: the Key Vault name must end with ${{keyVaultNameSuffix}}, got {name!r}")
    if param.get("default") != "":
        problems.append("main.bicep: keyVaultNameSuffix must default to '' (the first deployment's name)")
    return problems


def check_operator_sign_in(infra: Infra) -> list[str]:
    """App Service Authentication with Entra ID guards everything but health and the key-only door."""
    configs = [res for res in infra.resources("Microsoft.Web/sites/config")
               if res.config.get("name") == "authsettingsV2"]
    if len(configs) != 1:
        return [f"expected one authsettingsV2 on the Function App, found {len(configs)}"]
    auth = configs[0]
    where = f"{auth.file}:{auth.symbol}"
    props = auth.config.get("properties") or {}
    problems = []
    site = next(infra.resources("Microsoft.Web/sites"))
    if auth.config.get("parent") != site.symbol or auth.file != site.file:
        problems.append(f"{where}: must belong to the Function App")
    if _get(props, "platform", "enabled") is not True:
        problems.append(f"{where}: platform.enabled must be true")
    validation = props.get("globalValidation") or {}
    if validation.get("requireAuthentication") is not True:
        problems.append(f"{where}: globalValidation.requireAuthentication must be true")
    if validation.get("unauthenticatedClientAction") not in ("RedirectToLoginPage", "Return401"):
        problems.append(f"{where}: unauthenticatedClientAction must send unauthenticated callers away, got "
                        f"{validation.get('unauthenticatedClientAction')!r}")
    excluded = validation.get("excludedPaths")
    if isinstance(excluded, str):
        excluded = _get(infra.files[auth.file], "parameters", excluded, "default")
        if _get(infra.files["main.bicep"], "modules", "functionApp", "config", "params", "unauthenticatedPaths"):
            excluded = None  # overridden from main.bicep: not checked here
    if not isinstance(excluded, list) or not set(excluded) <= UNAUTHENTICATED_PATHS:
        problems.append(f"{where}: excludedPaths may only be {sorted(UNAUTHENTICATED_PATHS)}, got {excluded}")
    aad = _get(props, "identityProviders", "azureActiveDirectory") or {}
    if aad.get("enabled") is not True or not _get(aad, "registration", "clientId"):
        problems.append(f"{where}: the azureActiveDirectory provider must be enabled with a clientId")
    if "tenant().tenantId" not in str(_get(aad, "registration", "openIdIssuer")):
        problems.append(f"{where}: openIdIssuer must be the deploying tenant (single-tenant sign-in)")
    if _get(aad, "validation", "defaultAuthorizationPolicy", "allowedPrincipals", "groups") is None:
        problems.append(f"{where}: allowedPrincipals.groups must admit the operators' group")
    if app_settings(infra).get("OPERATOR_AUTH") != "entra":
        problems.append("OPERATOR_AUTH must be 'entra' in Azure, so the app asks for the signed-in principal")
    return problems


def _alert_rules(infra: Infra) -> list[dict[str, Any]]:
    for res in infra.resources("Microsoft.Insights/scheduledQueryRules"):
        loop = _get(infra.files[res.file], "resources", res.symbol, "config", "loop_type", "detail", "array_name")
        if isinstance(loop, str):
            return list(infra.variable(res.file, loop))
        return [{"query": _get(res.config, "properties", "criteria", "allOf")}]
    return []


def check_alerts(infra: Infra) -> list[str]:
    """An action group, and a log alert on each signal an operator must act on."""
    from shared.telemetry import OUTCOME_EVENT, POISON_DEPTH_EVENT, POISONED_EVENT

    problems = []
    groups = list(infra.resources("Microsoft.Insights/actionGroups"))
    if len(groups) != 1:
        return [f"expected one action group, found {len(groups)}"]
    props = groups[0].config.get("properties") or {}
    receivers = json.dumps([props.get("emailReceivers"), props.get("webhookReceivers")])
    if '"emailAddress": "alertEmailAddress"' not in receivers or '"serviceUri": "alertWebhookUrl"' not in receivers:
        problems.append("the action group must e-mail alertEmailAddress and call alertWebhookUrl when set")
    rules = list(infra.resources("Microsoft.Insights/scheduledQueryRules"))
    if not rules:
        return [*problems, "no scheduledQueryRules declared"]
    for res in rules:
        groups = _get(res.config, "properties", "actions", "actionGroups") or []
        if "actionGroup.id" not in [_dotted(g) for g in groups]:
            problems.append(f"{res.file}:{res.symbol}: must notify the action group")
    queries = [str(rule.get("query")) for rule in _alert_rules(infra)]
    wanted: dict[str, Callable[[str], bool]] = {
        "activations ending failed or needs_attention": lambda q: OUTCOME_EVENT in q and "needs_attention" in q
        and "failed" in q,
        "messages reaching the poison queue": lambda q: POISONED_EVENT in q,
        "poison-queue depth": lambda q: POISON_DEPTH_EVENT in q and "least > 0" in q,
        "function failures": lambda q: q.startswith("requests") and "success == false" in q,
    }
    for what, matches in wanted.items():
        if not any(matches(q) for q in queries):
            problems.append(f"no alert rule on {what}")
    main_alerts = _get(infra.files["main.bicep"], "modules", "alerts", "config", "params") or {}
    if _dotted(main_alerts.get("applicationInsightsId")) != "monitoring.outputs.applicationInsightsId":
        problems.append("main.bicep: the alerts must watch the app's Application Insights component")
    return problems


CHECKS: dict[str, Callable[[Infra], list[str]]] = {
    "storage": check_storage,
    "storage_names": check_storage_names,
    "function_app": check_function_app,
    "basic_publishing": check_basic_publishing_off,
    "storage_by_identity": check_storage_by_identity,
    "key_vault": check_key_vault,
    "app_insights": check_app_insights,
    "role_assignments": check_role_assignments,
    "product_settings": check_product_settings,
    "flex_settings": check_flex_settings,
    "key_vault_name": check_key_vault_name,
    "operator_sign_in": check_operator_sign_in,
    "alerts": check_alerts,
}


@pytest.fixture(scope="module")
def infra() -> Infra:
    return load_infra(INFRA)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_infra_has_the_security_property(infra: Infra, name: str) -> None:
    assert CHECKS[name](infra) == []


# ------------------------------------------------------- each check must be able to fail


class Mutation(NamedTuple):
    check: str
    file: str
    old: str  # text of the real file
    new: str  # what it becomes in the copy
    expect: str  # words the check's report must contain


STORAGE, APP, VAULT = "modules/storage.bicep", "modules/functionapp.bicep", "modules/keyvault.bicep"
ROLES, MONITORING, MAIN = "modules/roles.bicep", "modules/monitoring.bicep", "main.bicep"
ALERTS = "modules/alerts.bicep"
OWNER, CONTRIBUTOR = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", "b24988ac-6180-42a0-ab88-20f7382dd24c"
KEY_CONNECTION = "DefaultEndpointsProtocol=https;AccountKey=${storage.listKeys().keys[0].value}"

MUTATIONS = [
    Mutation("storage", STORAGE, "    allowSharedKeyAccess: false\n", "", "allowSharedKeyAccess"),
    Mutation("storage", STORAGE, "'TLS1_2'", "'TLS1_0'", "minimumTlsVersion"),
    Mutation("storage", STORAGE, "supportsHttpsTrafficOnly: true", "supportsHttpsTrafficOnly: false", "supportsHttps"),
    Mutation("storage", STORAGE, "allowBlobPublicAccess: false", "allowBlobPublicAccess: true", "allowBlobPublic"),
    Mutation("storage", STORAGE, "publicAccess: 'None'", "publicAccess: 'Blob'", "publicAccess"),
    Mutation("storage_names", STORAGE, "name: '${activationQueueName}-poison'", "name: 'x'", "-poison"),
    Mutation("storage_names", MAIN, "= 'activationevents'", "= 'events'", "eventsTableName"),
    Mutation("function_app", APP, "    httpsOnly: true\n", "", "httpsOnly"),
    Mutation("function_app", APP, "      minTlsVersion: '1.2'", "      minTlsVersion: '1.0'", "minTlsVersion"),
    Mutation("function_app", APP, "      scmMinTlsVersion: '1.2'\n",
             "      scmMinTlsVersion: '1.2'\n      ftpsState: 'Disabled'\n", "ftpsState is not supported"),
    Mutation("function_app", APP, "      http20Enabled: true\n",
             "      http20Enabled: true\n      alwaysOn: false\n", "alwaysOn is not supported"),
    Mutation("function_app", APP, "    type: 'UserAssigned'\n", "    type: 'SystemAssigned'\n", "UserAssigned"),
    Mutation("function_app", APP, "name: 'FC1'", "name: 'Y1'", "Flex Consumption"),
    Mutation("function_app", APP, "'UserAssignedIdentity'", "'StorageAccountConnectionString'", "deployment container"),
    Mutation("function_app", APP, "version: pythonVersion", "version: '3.11'", "pythonVersion parameter"),
    Mutation("function_app", MAIN, "  '3.13'\n])\nparam pythonVersion", "])\nparam pythonVersion", "allow 3.13"),
    Mutation("flex_settings", APP, "param pythonThreadpoolThreadCount int = 16",
             "param pythonThreadpoolThreadCount int = 8", "at least batchSize + newBatchThreshold = 12"),
    Mutation("flex_settings", APP, "  PYTHON_THREADPOOL_THREAD_COUNT: string(pythonThreadpoolThreadCount)\n", "",
             "PYTHON_THREADPOOL_THREAD_COUNT"),
    Mutation("flex_settings", APP, "platformSettings = {\n",
             "platformSettings = {\n  WEBSITE_RUN_FROM_PACKAGE: '1'\n", "WEBSITE_RUN_FROM_PACKAGE is not supported"),
    Mutation("flex_settings", MAIN, "    type: 'location'\n", "    type: 'string'\n", "azd: {type: 'location'}"),
    Mutation("key_vault_name", MAIN, "'kv-${resourceToken}${keyVaultNameSuffix}'", "'kv-${resourceToken}'",
             "keyVaultNameSuffix"),
    Mutation("operator_sign_in", APP, "      requireAuthentication: true\n", "      requireAuthentication: false\n",
             "requireAuthentication"),
    Mutation("operator_sign_in", APP, "'RedirectToLoginPage'", "'AllowAnonymous'", "unauthenticatedClientAction"),
    Mutation("operator_sign_in", APP, "  '/api/health'\n", "  '/api/health'\n  '/api/status'\n", "excludedPaths"),
    Mutation("operator_sign_in", APP, "  name: 'authsettingsV2'\n", "  name: 'web'\n", "expected one authsettingsV2"),
    Mutation("operator_sign_in", APP, "    platform: {\n      enabled: true", "    platform: {\n      enabled: false",
             "platform.enabled"),
    Mutation("operator_sign_in", MAIN, "  OPERATOR_AUTH: 'entra'\n", "  OPERATOR_AUTH: 'key'\n", "OPERATOR_AUTH"),
    Mutation("alerts", ALERTS, "customDimensions[\"event\"] == \"activation.outcome\"",
             "customDimensions[\"event\"] == \"outcome\"", "failed or needs_attention"),
    Mutation("alerts", ALERTS, "== \"activation.poisoned\"", "== \"poisoned\"", "poison queue"),
    Mutation("alerts", ALERTS, "least > 0", "least >= 0", "poison-queue depth"),
    Mutation("alerts", ALERTS, "'requests | where success == false", "'requests | where success == true",
             "function failures"),
    Mutation("alerts", ALERTS, "      actionGroups: [\n        actionGroup.id\n      ]\n",
             "      actionGroups: []\n", "must notify the action group"),
    Mutation("alerts", ALERTS, "        emailAddress: alertEmailAddress\n", "        emailAddress: 'x@example.com'\n",
             "alertEmailAddress"),
    Mutation("function_app", APP, "scmMinTlsVersion: '1.2'", "scmMinTlsVersion: '1.0'", "scmMinTlsVersion"),
    Mutation("basic_publishing", APP, "name: 'ftp'", "name: 'ftps'", "ftp must exist"),
    Mutation(
        "basic_publishing",
        APP,
        "'scm'\n  properties: {\n    allow: false",
        "'scm'\n  properties: {\n    allow: true",
        "scm",
    ),
    Mutation("storage_by_identity", APP, "__credential: 'managedidentity'", "__credential: 'none'", "managedidentity"),
    Mutation(
        "storage_by_identity",
        APP,
        "platformSettings = {\n",
        f"platformSettings = {{\n  AzureWebJobsStorage: '{KEY_CONNECTION}'\n",
        "AccountKey",
    ),
    Mutation("storage_by_identity", APP, "union(platformSettings, appSettings)", "appSettings", "union"),
    Mutation("storage_by_identity", APP, ";Authorization=AAD", "", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"),
    Mutation("key_vault", VAULT, "    enablePurgeProtection: true\n", "", "enablePurgeProtection"),
    Mutation(
        "key_vault", VAULT, "enableRbacAuthorization: true", "enableRbacAuthorization: false", "enableRbacAuthorization"
    ),
    Mutation("key_vault", VAULT, "enableSoftDelete: true", "enableSoftDelete: false", "enableSoftDelete"),
    Mutation("app_insights", MONITORING, "DisableLocalAuth: true", "DisableLocalAuth: false", "DisableLocalAuth"),
    Mutation("role_assignments", ROLES, "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", OWNER, "Owner"),
    Mutation("role_assignments", ROLES, "974c5e8b-45b9-4653-ba55-5f855dd0fb88", CONTRIBUTOR, "Contributor"),
    Mutation(
        "role_assignments",
        ROLES,
        "4633458b-17de-408a-b874-0445c86b69e6",
        "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        "allow-list",
    ),
    Mutation("role_assignments", ROLES, "  scope: keyVault\n", "  scope: storage\n", "Key Vault Secrets User"),
    Mutation("role_assignments", ROLES, "  scope: activationQueue\n", "", "Storage Queue Data Message Sender"),
    Mutation("role_assignments", ROLES, "  scope: activationsTable\n", "  scope: storage\n",
             "Storage Table Data Reader"),
    Mutation("role_assignments", ROLES, "? storageTableDataContributor : storageTableDataReader",
             "? storageTableDataContributor : storageAccountContributor", "allow-list"),
    Mutation("product_settings", MAIN, "  MAX_ATTEMPTS: string(maxAttempts)\n", "", "MAX_ATTEMPTS"),
    Mutation(
        "product_settings",
        MAIN,
        "  SPF_POLICY: spfPolicy\n",
        "  SPF_POLICY: spfPolicy\n  EXO_CLIENT_SECRET: 'x'\n",
        "EXO_CLIENT_SECRET",
    ),
    Mutation("product_settings", MAIN, "  LEASE_SECONDS:", "  LEASE_SECOND:", "LEASE_SECOND"),
    Mutation("product_settings", APP, "  AzureWebJobsStorage__accountName: storage.name\n", "", "__accountName"),
    Mutation(
        "product_settings",
        APP,
        "platformSettings = {\n",
        "platformSettings = {\n  AzureWebJobsStorage: 'UseDevelopmentStorage=true'\n",
        "AzureWebJobsStorage is local-only",
    ),
]


def mutated_infra(tmp_path: Path, file: str, old: str, new: str) -> Infra:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    path = copy / file
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{file} no longer contains {old!r}: update MUTATIONS"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return load_infra(copy)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[f"{m.check}:{m.expect}" for m in MUTATIONS])
def test_check_reports_a_regression(tmp_path: Path, mutation: Mutation) -> None:
    problems = CHECKS[mutation.check](mutated_infra(tmp_path, mutation.file, mutation.old, mutation.new))
    assert problems, f"{mutation.check} did not notice: {mutation}"
    assert any(mutation.expect in p for p in problems), problems


def test_every_check_has_a_mutation() -> None:
    assert {m.check for m in MUTATIONS} == set(CHECKS)


# ---------------------------------------------------------------- deployment wiring


def test_parameters_file_names_only_declared_parameters() -> None:
    declared = load_infra(INFRA).files["main.bicep"]["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(given) <= set(declared)
    assert not [name for name in given if re.search("secret|password", name, re.IGNORECASE)]


def test_modules_exist(infra: Infra) -> None:
    for parsed in infra.files.values():
        for module in parsed.get("modules", {}).values():
            assert (INFRA / module["detail"]["path"]).is_file()


def test_azd_service_is_the_tagged_function_app(infra: Infra) -> None:
    azure_yaml = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    assert re.search(r"^  api:\n(    .*\n)*    host: function$", azure_yaml, re.MULTILINE)
    site = next(infra.resources("Microsoft.Web/sites"))
    assert _get(site.config, "tags", "function", "parameters", "arg_2") == {"'azd-service-name'": "serviceName"}
    assert _get(infra.files["main.bicep"], "modules", "functionApp", "config", "params", "serviceName") == "api"


def test_outputs_for_operators(infra: Infra) -> None:
    outputs = infra.files["main.bicep"]["outputs"]
    for name in (
        "FUNCTION_APP_NAME",
        "FUNCTION_APP_URL",
        "ACTIVATION_QUEUE_URL",
        "KEY_VAULT_NAME",
        "KEY_VAULT_URI",
        "MANAGED_IDENTITY_CLIENT_ID",
    ):
        assert name in outputs


# ---------------------------------------------------------------- what is deployed

SHIPPED = frozenset({"function_app.py", "host.json", "requirements.txt", "shared"})


def _ignored(path: str, patterns: list[str]) -> bool:
    """.funcignore uses .gitignore patterns; these are the forms the file uses (names, dirs/, globs)."""
    parts = path.split("/")
    for pattern in patterns:
        if pattern.endswith("/"):
            if pattern.rstrip("/") in parts[:-1] or any(fnmatch.fnmatch(p, pattern.rstrip("/")) for p in parts[:-1]):
                return True
        elif any(fnmatch.fnmatch(p, pattern) for p in parts) or fnmatch.fnmatch(path, pattern):
            return True
    return False


def shipped_files(funcignore: str) -> set[str]:
    patterns = [line.strip() for line in funcignore.splitlines() if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {path for path in tracked.splitlines() if not _ignored(path, patterns)}


def test_the_package_ships_only_what_runs() -> None:
    shipped = shipped_files((ROOT / ".funcignore").read_text(encoding="utf-8"))
    assert {path.split("/")[0] for path in shipped} == SHIPPED
    assert "shared/static/status.html" in shipped  # the page is read from the package at run time


def test_a_funcignore_that_forgets_a_file_is_noticed() -> None:
    text = (ROOT / ".funcignore").read_text(encoding="utf-8").replace("README.md\n", "")
    assert "README.md" in {path.split("/")[0] for path in shipped_files(text)}


def test_requirements_pick_the_azure_functions_line_of_the_python_version() -> None:
    # 2.x is the same programming model built for Python 3.13+; 1.x runs 3.10-3.12.
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pins = [line for line in lines if line.startswith("azure-functions")]
    assert sorted(pins) == ['azure-functions>=1.26,<2; python_version < "3.13"',
                            'azure-functions>=2.0,<3; python_version >= "3.13"']
    assert any(line.startswith("azure-monitor-opentelemetry") for line in lines)
