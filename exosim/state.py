"""Exchange Online semantics of one tenant: outbound connectors and accepted domains.

Pure in-memory state with no HTTP and no injected faults, so its rules can be exercised
directly. The rules are the ones the product depends on (DESIGN.md and
docs/exchange-protocol.md), reproduced with Exchange's behaviour rather than an idealised one:

* parameter binding as PowerShell does it: names case-insensitive, unknown names refused
  (`New-OutboundConnector` has no ValidationRecipients), mandatory parameters checked, values
  converted or refused with Exchange's wording;
* connector names unique case-insensitively and at most 64 characters; Identity is a Name or
  a Guid;
* object validation after every change: smart hosts with UseMXRecord $false, OnPremises-only
  flags refused on Partner connectors, RecipientDomains as SmtpDomainWithSubdomains;
* `Get-OutboundConnector -Identity <no match>` returning every connector (the quirk that
  makes the product match by name itself), switchable off;
* replication lag: a connector just created is invisible to reads for a while;
* `Validate-OutboundConnector` returning task rows without marking the connector validated;
* test mode as Get-OutboundConnector.md documents it: listings and Identity lookups return
  only connectors not in test mode, or with `-IncludeTestModeConnectors $true` only those in
  it (Set/Validate/Remove find either);
* rows as the service writes them (rknightion/graph2otel, a live Get-OutboundConnector
  capture): `X@odata.type` annotations beside multi-valued properties, DateTimeOffset values
  with seven fractional digits, `LastValidationTimestamp` without a zone, `MtaStsMode` and
  `SmtpDaneMode`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exosim.options import TenantOptions

NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
ALREADY_EXISTS = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAlreadyExistsException"
DATA_VALIDATION = "Microsoft.Exchange.Data.DataValidationException"
PARAMETER_BINDING = "System.Management.Automation.ParameterBindingException"
PARAMETER_TRANSFORMATION = "Microsoft.Exchange.AdminApi.CommandInvocation.ParameterTransformationException"
COMMAND_NOT_FOUND = "System.Management.Automation.CommandNotFoundException"

# The domain controller Exchange names in its not-found messages; any plausible name will do.
DOMAIN_CONTROLLER = "TYCPR01A004DC001.JPNPR01A004.PROD.OUTLOOK.COM"

MAX_NAME_LENGTH = 64


class CmdletError(Exception):
    """A cmdlet failure as Exchange reports it: HTTP status, .NET exception type, message."""

    def __init__(self, status: int, type_name: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type_name = type_name
        self.message = message


def not_found(identity: str) -> CmdletError:
    return CmdletError(
        404,
        NOT_FOUND,
        f"The operation couldn't be performed because object '{identity}' couldn't be found on '{DOMAIN_CONTROLLER}'.",
    )


def _binding(message: str) -> CmdletError:
    return CmdletError(400, PARAMETER_BINDING, message)


def _transformation(parameter: str, value: object, type_name: str, reason: str) -> CmdletError:
    return CmdletError(
        400,
        PARAMETER_TRANSFORMATION,
        f"Cannot process argument transformation on parameter '{parameter}'. Cannot convert value "
        f'"{value}" to type "{type_name}". Error: "{reason}"',
    )


def _invalid(message: str) -> CmdletError:
    return CmdletError(400, DATA_VALIDATION, message)


def iso_utc(timestamp: float) -> str:
    """Exchange's UTC timestamps as ISO 8601 with a Z."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def wire_time(value: float | str | None, *, zone: bool = True) -> str | None:
    """A DateTimeOffset as the admin API renders it: seven fractional digits, `Z` or no zone.

    `WhenChangedUTC` comes as `2026-07-24T19:01:54.0000000Z`, `LastValidationTimestamp` as
    `2026-07-24T18:59:12.0000000` (no zone) in the same live row.
    """
    if value is None:
        return None
    if isinstance(value, str):
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
    else:
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0" + ("Z" if zone else "")


# The OData annotation the service writes beside every multi-valued property of a row.
COLLECTION_ANNOTATION = "#Collection(String)"


# --- value conversion -------------------------------------------------------------------------

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_ADDRESS = re.compile(r"^[^@\s]+@([^@\s]+)$")
_DOMAIN_LIST_TYPE = "Microsoft.Exchange.Data.MultiValuedProperty`1[Microsoft.Exchange.Data.SmtpDomainWithSubdomains]"


def _is_domain(text: str) -> bool:
    if not text or len(text) > 255 or text.endswith("."):
        return False
    return all(_LABEL.match(label) for label in text.split("."))


def parse_domain_pattern(text: str) -> str | None:
    """Canonical SmtpDomainWithSubdomains, or None when Exchange would refuse it.

    `*` is every domain, `*.contoso.com` is contoso.com and its subdomains, `contoso.com` is that
    domain only. A wildcard may only be the whole first label: `a.*.contoso.com` and
    `*contoso.com` are refused.
    """
    value = text.strip().lower()
    if value == "*":
        return value
    if value.startswith("*."):
        rest = value[2:]
        return value if _is_domain(rest) else None
    return value if _is_domain(value) else None


def _is_smart_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return _is_domain(text)
    return True


@dataclass(frozen=True)
class _Param:
    kind: str
    choices: tuple[str, ...] = ()
    mandatory: bool = False


_BOOL = _Param("bool")
_STRING = _Param("string")

# Properties a connector's New- and Set- share.
_CONNECTOR_PARAMS: dict[str, _Param] = {
    "AllAcceptedDomains": _BOOL,
    "CloudServicesMailEnabled": _BOOL,
    "Comment": _STRING,
    "ConnectorSource": _Param("enum", ("Default", "Migrated", "HybridWizard", "AdminUI")),
    "ConnectorType": _Param("enum", ("Partner", "OnPremises")),
    "Enabled": _BOOL,
    "IsTransportRuleScoped": _BOOL,
    "RecipientDomains": _Param("domains"),
    "RouteAllMessagesViaOnPremises": _BOOL,
    "SenderRewritingEnabled": _BOOL,
    "SmartHosts": _Param("hosts"),
    "TestMode": _BOOL,
    "TlsDomain": _Param("tlsdomain"),
    "TlsSettings": _Param("enum?", ("EncryptionOnly", "CertificateValidation", "DomainValidation")),
    "UseMXRecord": _BOOL,
}

# PowerShell common parameters the REST endpoint also binds; they change nothing here.
_COMMON_PARAMS: dict[str, _Param] = {
    "ErrorAction": _STRING,
    "WarningAction": _STRING,
    "Verbose": _BOOL,
    "Debug": _BOOL,
}
_SHOULD_PROCESS: dict[str, _Param] = {"Confirm": _BOOL, "WhatIf": _BOOL}

CMDLET_PARAMS: dict[str, dict[str, _Param]] = {
    "Get-OutboundConnector": {
        "Identity": _Param("identity"),
        "IncludeTestModeConnectors": _BOOL,
        "IsTransportRuleScoped": _BOOL,
        "ResultSize": _Param("resultsize"),
        **_COMMON_PARAMS,
    },
    "New-OutboundConnector": {
        "Name": _Param("name", mandatory=True),
        "LinkForModifiedConnector": _Param("guid"),
        **_CONNECTOR_PARAMS,
        **_SHOULD_PROCESS,
        **_COMMON_PARAMS,
    },
    "Set-OutboundConnector": {
        "Identity": _Param("identity", mandatory=True),
        "Name": _Param("name"),
        "IsValidated": _BOOL,
        "LastValidationTimestamp": _Param("datetime"),
        "ValidationRecipients": _Param("strings"),
        **_CONNECTOR_PARAMS,
        **_SHOULD_PROCESS,
        **_COMMON_PARAMS,
    },
    "Remove-OutboundConnector": {
        "Identity": _Param("identity", mandatory=True),
        **_SHOULD_PROCESS,
        **_COMMON_PARAMS,
    },
    "Validate-OutboundConnector": {
        "Identity": _Param("identity", mandatory=True),
        "Recipients": _Param("addresses", mandatory=True),
        **_COMMON_PARAMS,
    },
    "Get-AcceptedDomain": {
        "Identity": _Param("identity"),
        "ResultSize": _Param("resultsize"),
        **_COMMON_PARAMS,
    },
}

# Journal rules and the transport config (New-/Get-/Set-/Enable-/Disable-/Remove-JournalRule.md,
# Get-/Set-TransportConfig.md): only the parameters Exchange Online has; DomainController is
# on-premises only. Set-JournalRule has no Enabled: Enable-/Disable-JournalRule switch a rule.
_JOURNAL_SCOPE = _Param("enum", ("Global", "Internal", "External"))
CMDLET_PARAMS.update({
    "Get-JournalRule": {"Identity": _Param("identity"), **_COMMON_PARAMS},
    "New-JournalRule": {
        "Name": _Param("name", mandatory=True),
        "JournalEmailAddress": _Param("address", mandatory=True),
        "Enabled": _BOOL,
        "Recipient": _Param("address?"),
        "Scope": _JOURNAL_SCOPE,
        **_SHOULD_PROCESS,
        **_COMMON_PARAMS,
    },
    "Set-JournalRule": {
        "Identity": _Param("identity", mandatory=True),
        "Name": _Param("name"),
        "JournalEmailAddress": _Param("address"),
        "Recipient": _Param("address?"),
        "Scope": _JOURNAL_SCOPE,
        **_SHOULD_PROCESS,
        **_COMMON_PARAMS,
    },
    "Enable-JournalRule": {"Identity": _Param("identity", mandatory=True), **_SHOULD_PROCESS, **_COMMON_PARAMS},
    "Disable-JournalRule": {"Identity": _Param("identity", mandatory=True), **_SHOULD_PROCESS, **_COMMON_PARAMS},
    "Remove-JournalRule": {"Identity": _Param("identity", mandatory=True), **_SHOULD_PROCESS, **_COMMON_PARAMS},
    "Get-TransportConfig": {**_COMMON_PARAMS},
    "Set-TransportConfig": {"JournalingReportNdrTo": _Param("address?"), **_SHOULD_PROCESS, **_COMMON_PARAMS},
})

CMDLETS = {name.lower(): name for name in CMDLET_PARAMS}
WRITE_CMDLETS = frozenset({
    "New-OutboundConnector", "Set-OutboundConnector", "Remove-OutboundConnector",
    "New-JournalRule", "Set-JournalRule", "Enable-JournalRule", "Disable-JournalRule", "Remove-JournalRule",
    "Set-TransportConfig",
})


def canonical_cmdlet(name: str) -> str:
    """The cmdlet's canonical spelling; PowerShell resolves command names case-insensitively."""
    try:
        return CMDLETS[name.lower()]
    except KeyError:
        raise CmdletError(
            400,
            COMMAND_NOT_FOUND,
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or "
            "operable program. Check the spelling of the name, or if a path was included, verify that "
            "the path is correct and try again.",
        ) from None


def _string_list(parameter: str, value: object, type_name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise _transformation(parameter, value, type_name, "Only strings or arrays of strings are accepted.")


def _multivalued(
    parameter: str,
    value: object,
    current: Sequence[str],
    convert: Callable[[str], str],
    type_name: str,
) -> list[str]:
    """A MultiValuedProperty: a list replaces, `{"Add": [...], "Remove": [...]}` edits.

    Duplicates are refused as Exchange refuses them ("already present in the collection").
    """
    if value is None:
        return []
    if isinstance(value, dict):
        unknown = {key.lower() for key in value} - {"add", "remove"}
        if unknown:
            raise _transformation(parameter, value, type_name, "Only the keys Add and Remove are supported.")
        items = list(current)
        for key, raw in value.items():
            converted = [convert(item) for item in _string_list(parameter, raw, type_name)]
            if key.lower() == "add":
                for item in converted:
                    if item.lower() in (existing.lower() for existing in items):
                        raise _invalid(f'The value "{item}" is already present in the collection.')
                    items.append(item)
            else:
                lowered = {item.lower() for item in converted}
                items = [item for item in items if item.lower() not in lowered]
        return items
    items = [convert(item) for item in _string_list(parameter, value, type_name)]
    seen: set[str] = set()
    for item in items:
        if item.lower() in seen:
            raise _invalid(f'The value "{item}" is already present in the collection.')
        seen.add(item.lower())
    return items


def _convert(parameter: str, spec: _Param, value: object, current: Mapping[str, Any]) -> object:
    """One parameter value as Exchange would bind it."""
    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise _transformation(
                parameter,
                value,
                "System.Boolean",
                "Boolean parameters accept only Boolean values and numbers, such as $True, $False, 1 or 0.",
            )
        return value
    if kind in ("string", "identity"):
        if value is None and kind == "string":
            return None
        if not isinstance(value, str):
            raise _transformation(parameter, value, "System.String", "A string value is required.")
        return value
    if kind == "name":
        if not isinstance(value, str) or not value.strip():
            raise _binding(f"Cannot bind argument to parameter '{parameter}' because it is an empty string or null.")
        if len(value) > MAX_NAME_LENGTH:
            raise _invalid(
                f"The length of the property is too long. The maximum length is {MAX_NAME_LENGTH} and the "
                f"length of the value provided is {len(value)}."
            )
        return value
    if kind in ("enum", "enum?"):
        if value is None and kind == "enum?":
            return None
        if isinstance(value, str):
            for choice in spec.choices:
                if choice.lower() == value.strip().lower():
                    return choice
        raise _transformation(
            parameter,
            value,
            f"Microsoft.Exchange.Data.{parameter}",
            f"Unable to match the identifier name {value} to a valid enumerator name. Specify one of the "
            f"following enumerator names and try again: {', '.join(spec.choices)}",
        )
    if kind == "domains":

        def domain(item: str) -> str:
            parsed = parse_domain_pattern(item)
            if parsed is None:
                raise _transformation(
                    parameter,
                    item,
                    _DOMAIN_LIST_TYPE,
                    f'"{item}" isn\'t a valid SMTP domain. A wildcard (*) may only be used alone or as the '
                    "first label, for example * or *.contoso.com.",
                )
            return parsed

        return _multivalued(parameter, value, current.get(parameter, []), domain, _DOMAIN_LIST_TYPE)
    if kind == "hosts":
        host_type = "Microsoft.Exchange.Data.MultiValuedProperty`1[Microsoft.Exchange.Data.SmartHost]"

        def host(item: str) -> str:
            text = item.strip()
            if not _is_smart_host(text):
                raise _transformation(
                    parameter,
                    item,
                    host_type,
                    f'"{item}" isn\'t a valid smart host. Specify a fully qualified domain name or an IP address.',
                )
            return text

        return _multivalued(parameter, value, current.get(parameter, []), host, host_type)
    if kind == "strings":
        return _multivalued(parameter, value, current.get(parameter, []), lambda item: item, "System.String[]")
    if kind == "addresses":
        address_type = "Microsoft.Exchange.Data.MultiValuedProperty`1[Microsoft.Exchange.Data.SmtpAddress]"

        def address(item: str) -> str:
            text = item.strip()
            match = _ADDRESS.match(text)
            if not match or not _is_domain(match.group(1)):
                raise _transformation(parameter, item, address_type, f'"{item}" isn\'t a valid SMTP address.')
            return text

        return _multivalued(parameter, value, [], address, address_type)
    if kind in ("address", "address?"):
        if value is None and kind == "address?":
            return None
        text = value.strip() if isinstance(value, str) else ""
        match = _ADDRESS.match(text)
        if not match or not _is_domain(match.group(1)):
            raise _transformation(parameter, value, "Microsoft.Exchange.Data.SmtpAddress",
                                  f'"{value}" isn\'t a valid SMTP address.')
        return text
    if kind == "tlsdomain":
        if value is None:
            return None
        parsed = parse_domain_pattern(value) if isinstance(value, str) else None
        if parsed is None or parsed == "*":
            raise _transformation(
                parameter,
                value,
                "Microsoft.Exchange.Data.SmtpDomainWithSubdomains",
                f'"{value}" isn\'t a valid domain.',
            )
        return parsed
    if kind == "datetime":
        if value is None:
            return None
        if isinstance(value, str):
            try:
                moment = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                pass
            else:
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=dt.UTC)
                return iso_utc(moment.timestamp())
        raise _transformation(parameter, value, "System.DateTime", "The string was not recognized as a valid DateTime.")
    if kind == "guid":
        if value is None:
            return None
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise _transformation(parameter, value, "System.Guid", "Unrecognized Guid format.") from None
    if kind == "resultsize":
        if isinstance(value, str) and value.lower() == "unlimited":
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        raise _transformation(parameter, value, "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]", "Invalid value.")
    raise AssertionError(f"unhandled parameter kind {kind}")


def bind_parameters(cmdlet: str, parameters: Mapping[str, object]) -> dict[str, object]:
    """Parameter names as the cmdlet declares them; unknown or missing ones refused.

    Values are not converted here (conversion may depend on the object, e.g. Add/Remove).
    """
    declared = CMDLET_PARAMS[cmdlet]
    by_lower = {name.lower(): name for name in declared}
    bound: dict[str, object] = {}
    for name, value in parameters.items():
        canonical = by_lower.get(name.lower())
        if canonical is None:
            raise _binding(f"A parameter cannot be found that matches parameter name '{name}'.")
        if canonical in bound:
            raise _binding(f"Cannot bind parameter because parameter '{canonical}' is specified more than once.")
        bound[canonical] = value
    missing = [name for name, spec in declared.items() if spec.mandatory and name not in bound]
    if missing:
        raise _binding(
            f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}."
        )
    return bound


# --- connectors ---------------------------------------------------------------------------------

_CONNECTOR_DEFAULTS: dict[str, Any] = {
    "ConnectorType": "Partner",
    "ConnectorSource": "Default",
    "Comment": None,
    "Enabled": True,
    "UseMXRecord": True,
    "SmartHosts": [],
    "RecipientDomains": [],
    "TlsSettings": None,
    "TlsDomain": None,
    "IsTransportRuleScoped": False,
    "RouteAllMessagesViaOnPremises": False,
    "CloudServicesMailEnabled": False,
    "AllAcceptedDomains": False,
    "SenderRewritingEnabled": False,
    "TestMode": False,
    "IsValidated": False,
    "LastValidationTimestamp": None,
    "ValidationRecipients": [],
    "LinkForModifiedConnector": None,
}

_ON_PREMISES_ONLY = ("SenderRewritingEnabled", "AllAcceptedDomains", "RouteAllMessagesViaOnPremises")


@dataclass
class Connector:
    guid: str
    name: str
    props: dict[str, Any]
    created: float
    changed: float
    visible_at: float

    def row(self) -> dict[str, Any]:
        """The connector as Get-OutboundConnector returns it."""
        props = self.props
        return {
            "Identity": self.name,
            "Id": self.name,
            "Name": self.name,
            "Guid": self.guid,
            "ConnectorType": props["ConnectorType"],
            "ConnectorSource": props["ConnectorSource"],
            "Comment": props["Comment"],
            "Enabled": props["Enabled"],
            "UseMXRecord": props["UseMXRecord"],
            "SmartHosts@odata.type": COLLECTION_ANNOTATION,
            "SmartHosts": list(props["SmartHosts"]),
            "RecipientDomains@odata.type": COLLECTION_ANNOTATION,
            "RecipientDomains": list(props["RecipientDomains"]),
            "TlsSettings": props["TlsSettings"],
            "TlsDomain": props["TlsDomain"],
            "IsTransportRuleScoped": props["IsTransportRuleScoped"],
            "RouteAllMessagesViaOnPremises": props["RouteAllMessagesViaOnPremises"],
            "CloudServicesMailEnabled": props["CloudServicesMailEnabled"],
            "AllAcceptedDomains": props["AllAcceptedDomains"],
            "SenderRewritingEnabled": props["SenderRewritingEnabled"],
            # Not settable here: the service's defaults, present in every live row.
            "MtaStsMode": "Opportunistic",
            "SmtpDaneMode": "Opportunistic",
            "TestMode": props["TestMode"],
            "ValidationRecipients@odata.type": COLLECTION_ANNOTATION,
            "ValidationRecipients": list(props["ValidationRecipients"]),
            "IsValidated": props["IsValidated"],
            "LastValidationTimestamp": wire_time(props["LastValidationTimestamp"], zone=False),
            "LinkForModifiedConnector": props["LinkForModifiedConnector"],
            "AdminDisplayName": "",
            "IsValid": True,
            "ObjectState": "Unchanged",
            "WhenCreated": wire_time(self.created),
            "WhenChanged": wire_time(self.changed),
            "WhenCreatedUTC": wire_time(self.created),
            "WhenChangedUTC": wire_time(self.changed),
        }


def _check_connector(props: Mapping[str, Any]) -> None:
    """Object-level rules Exchange enforces after binding, on the resulting connector."""
    if props["ConnectorType"] == "Partner":
        for flag in _ON_PREMISES_ONLY:
            if props[flag]:
                raise _invalid(
                    f"{flag} can be set to $true only on an outbound connector whose ConnectorType is "
                    "OnPremises. This connector's ConnectorType is Partner."
                )
    if not props["UseMXRecord"] and not props["SmartHosts"]:
        raise _invalid("SmartHosts must be specified when UseMXRecord is set to $false.")
    if props["UseMXRecord"] and props["SmartHosts"]:
        raise _invalid(
            "SmartHosts can't be specified when UseMXRecord is set to $true. Set UseMXRecord to $false to "
            "route through smart hosts, or clear SmartHosts."
        )
    if props["TlsSettings"] == "DomainValidation" and not props["TlsDomain"]:
        raise _invalid("TlsDomain must be specified when TlsSettings is set to DomainValidation.")
    if props["TlsDomain"] and props["TlsSettings"] != "DomainValidation":
        raise _invalid("TlsDomain can be specified only when TlsSettings is set to DomainValidation.")


@dataclass(frozen=True)
class WriteRecord:
    """A successful change, as the tests' `writes()` report it."""

    cmdlet: str
    identity: str
    parameters: dict[str, Any]
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "cmdlet": self.cmdlet,
            "identity": self.identity,
            "parameters": self.parameters,
            "changed": self.changed,
        }


@dataclass(frozen=True)
class CmdletResult:
    rows: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    write: WriteRecord | None = None
    # Test messages a Validate-OutboundConnector sent: (connector name, recipient).
    test_messages: list[tuple[str, str]] = field(default_factory=list)


def _task(name: str, ok: bool, detail: str, subtasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One OutboundConnectorValidationResult, with the OData type annotation the admin API adds."""
    return {
        "TaskName": name,
        "IsTaskSuccessful": ok,
        "TaskDetail": detail,
        "SubTaskResults@odata.type": "#Collection(Exchange.OutboundConnectorValidationResult)",
        "SubTaskResults": list(subtasks or []),
    }


def _specificity(pattern: str, domain: str) -> int | None:
    """How specifically `pattern` matches `domain` (higher wins), or None for no match.

    An exact domain beats `*.domain`, which beats `*.parent`, which beats `*`: Exchange routes
    by the most specific RecipientDomains entry.
    """
    if pattern == "*":
        return 0
    if pattern.startswith("*."):
        base = pattern[2:]
        if domain == base or domain.endswith("." + base):
            return 2 * base.count(".") + 2
        return None
    return 2 * pattern.count(".") + 3 if domain == pattern else None


def _best_match(patterns: Sequence[str], domain: str) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for pattern in patterns:
        score = _specificity(pattern, domain)
        if score is not None and (best is None or score > best[0]):
            best = (score, pattern)
    return best


def default_initial_domain(tenant_id: str) -> str:
    prefix = re.sub(r"[^a-z0-9]", "", tenant_id.lower())[:8] or "tenant"
    return f"{prefix}.onmicrosoft.com"


def accepted_domain_rows(tenant_id: str, domains: Sequence[object] | None) -> list[dict[str, Any]]:
    """Accepted-domain rows from a configuration list.

    Strings are domain names, the first being the default. A tenant always has its initial
    `.onmicrosoft.com` domain, so one is added (not default) when the list names none.
    Dicts give the fields directly.
    """
    if domains is None:
        initial = default_initial_domain(tenant_id)
        domains = [{"DomainName": initial, "Default": True, "InitialDomain": True}]
    rows: list[dict[str, Any]] = []
    names = [item for item in domains if isinstance(item, str)]
    has_initial = any(name.lower().endswith(".onmicrosoft.com") for name in names) or any(
        isinstance(item, dict) and item.get("InitialDomain") for item in domains
    )
    initial_taken = False
    for index, item in enumerate(domains):
        if isinstance(item, str):
            if not _is_domain(item):
                raise ValueError(f"invalid accepted domain {item!r}")
            is_initial = not initial_taken and item.lower().endswith(".onmicrosoft.com")
            initial_taken = initial_taken or is_initial
            entry: dict[str, Any] = {"DomainName": item.lower(), "Default": index == 0, "InitialDomain": is_initial}
        elif isinstance(item, dict):
            if not isinstance(item.get("DomainName"), str) or not _is_domain(item["DomainName"]):
                raise ValueError(f"accepted domain needs a valid DomainName: {item!r}")
            entry = {
                "DomainName": item["DomainName"].lower(),
                "Default": bool(item.get("Default", False)),
                "InitialDomain": bool(item.get("InitialDomain", False)),
                "DomainType": str(item.get("DomainType", "Authoritative")),
            }
        else:
            raise ValueError(f"accepted domain must be a string or an object: {item!r}")
        rows.append(entry)
    if not has_initial:
        rows.append({"DomainName": default_initial_domain(tenant_id), "Default": False, "InitialDomain": True})
    result = []
    for entry in rows:
        name = entry["DomainName"]
        result.append(
            {
                "Identity": name,
                "Name": name,
                "DomainName": name,
                "DomainType": entry.get("DomainType", "Authoritative"),
                "Default": entry["Default"],
                "InitialDomain": entry["InitialDomain"],
            }
        )
    return result


class TenantState:
    """One tenant's Exchange configuration and the cmdlets that read and change it.

    Not thread-safe by itself: the simulator serialises calls per tenant.
    """

    def __init__(self, tenant_id: str, clock: Callable[[], float], options: TenantOptions | None = None) -> None:
        self.tenant_id = tenant_id
        self.clock = clock
        self.options = options or TenantOptions()
        self.connectors: list[Connector] = []
        self.accepted_domains: list[dict[str, Any]] = accepted_domain_rows(tenant_id, None)
        self.journal_rules: list[JournalRule] = []
        self.journaling_report_ndr_to: str | None = None

    # -- lookup ----------------------------------------------------------------------------------

    def _visible(self, connector: Connector) -> bool:
        return self.clock() >= connector.visible_at

    def _find(self, identity: str, *, include_hidden: bool) -> Connector | None:
        wanted = identity.strip()
        try:
            wanted_guid: str | None = str(uuid.UUID(wanted))
        except ValueError:
            wanted_guid = None
        for connector in self.connectors:
            if not include_hidden and not self._visible(connector):
                continue
            if connector.name.casefold() == wanted.casefold() or connector.guid == wanted_guid:
                return connector
        return None

    def _name_taken(self, name: str, *, other_than: Connector | None = None) -> bool:
        # Uniqueness is enforced where the object is written, so a connector still replicating
        # already holds its name: a retry of New- during the lag gets "already exists".
        return any(c is not other_than and c.name.casefold() == name.casefold() for c in self.connectors)

    def rows(self, *, include_hidden: bool = True) -> list[dict[str, Any]]:
        return [c.row() for c in self.connectors if include_hidden or self._visible(c)]

    def replicate(self) -> None:
        """End the replication lag of every connector now."""
        now = self.clock()
        for connector in self.connectors:
            connector.visible_at = min(connector.visible_at, now)

    # -- cmdlets ---------------------------------------------------------------------------------

    def invoke(self, cmdlet: str, parameters: Mapping[str, object]) -> CmdletResult:
        name = canonical_cmdlet(cmdlet)
        bound = bind_parameters(name, parameters)
        handler = {
            "Get-OutboundConnector": self._get_connectors,
            "New-OutboundConnector": self._new_connector,
            "Set-OutboundConnector": self._set_connector,
            "Remove-OutboundConnector": self._remove_connector,
            "Validate-OutboundConnector": self._validate_connector,
            "Get-AcceptedDomain": self._get_accepted_domains,
        }.get(name)
        if handler is None:
            return _JOURNAL_HANDLERS[name](self, name, bound)
        return handler(bound)

    def _converted(self, cmdlet: str, bound: Mapping[str, object], current: Mapping[str, Any]) -> dict[str, Any]:
        specs = CMDLET_PARAMS[cmdlet]
        return {name: _convert(name, specs[name], value, current) for name, value in bound.items()}

    def _get_connectors(self, bound: Mapping[str, object]) -> CmdletResult:
        values = self._converted("Get-OutboundConnector", bound, {})
        visible = [c for c in self.connectors if self._visible(c)]
        identity = values.get("Identity")
        if isinstance(identity, str):
            match = self._find(identity, include_hidden=False)
            if match is not None:
                visible = [match]
            elif not self.options.unknown_identity_returns_all:
                raise not_found(identity)
        # Documented: $false (the default) returns only connectors not in test mode, $true only
        # those in test mode; an Identity lookup is filtered the same way (an inference: a
        # filtered-out match gives an empty answer, not an error).
        in_test_mode = values.get("IncludeTestModeConnectors", False)
        visible = [c for c in visible if c.props["TestMode"] == in_test_mode]
        if "IsTransportRuleScoped" in values:
            visible = [c for c in visible if c.props["IsTransportRuleScoped"] == values["IsTransportRuleScoped"]]
        rows = [c.row() for c in visible]
        limit = values.get("ResultSize")
        if isinstance(limit, int):
            rows = rows[:limit]
        return CmdletResult(rows)

    def _new_connector(self, bound: Mapping[str, object]) -> CmdletResult:
        values = self._converted("New-OutboundConnector", bound, {})
        name = str(values.pop("Name"))
        for ignored in ("Confirm", "WhatIf", *_COMMON_PARAMS):
            values.pop(ignored, None)
        props = {**_CONNECTOR_DEFAULTS, **values}
        _check_connector(props)
        if self._name_taken(name):
            raise CmdletError(
                400,
                ALREADY_EXISTS,
                f"The operation couldn't be performed because an object with the name '{name}' already exists.",
            )
        if bound.get("WhatIf") is True:
            return CmdletResult([])
        now = self.clock()
        connector = Connector(
            guid=str(uuid.uuid4()),
            name=name,
            props=props,
            created=now,
            changed=now,
            visible_at=now + self.options.replication_lag,
        )
        self.connectors.append(connector)
        return CmdletResult(
            [connector.row()],
            write=WriteRecord("New-OutboundConnector", name, dict(bound), changed=True),
        )

    def _lookup(self, bound: Mapping[str, object]) -> tuple[str, Connector | None]:
        identity = bound["Identity"]
        if not isinstance(identity, str):
            raise _transformation("Identity", identity, "OutboundConnectorIdParameter", "A string value is required.")
        return identity, self._find(identity, include_hidden=False)

    def _target(self, bound: Mapping[str, object]) -> tuple[str, Connector]:
        identity, connector = self._lookup(bound)
        if connector is None:
            raise not_found(identity)
        return identity, connector

    def _set_connector(self, bound: Mapping[str, object]) -> CmdletResult:
        # PowerShell binds (and converts) every parameter before the cmdlet looks the object
        # up, so a bad value is reported even for a connector that does not exist.
        identity, found = self._lookup(bound)
        values = self._converted("Set-OutboundConnector", bound, found.props if found else _CONNECTOR_DEFAULTS)
        if found is None:
            raise not_found(identity)
        connector = found
        values.pop("Identity")
        for ignored in ("Confirm", "WhatIf", *_COMMON_PARAMS):
            values.pop(ignored, None)
        new_name = values.pop("Name", None)
        props = {**connector.props, **values}
        _check_connector(props)
        if isinstance(new_name, str) and self._name_taken(new_name, other_than=connector):
            raise CmdletError(
                400,
                ALREADY_EXISTS,
                f"The operation couldn't be performed because an object with the name '{new_name}' already exists.",
            )
        changed = props != connector.props or (isinstance(new_name, str) and new_name != connector.name)
        if bound.get("WhatIf") is True:
            return CmdletResult([])
        warnings: list[str] = []
        if changed:
            connector.props = props
            if isinstance(new_name, str):
                connector.name = new_name
            connector.changed = self.clock()
        else:
            warnings.append(
                f"The command completed successfully but no settings of '{connector.name}' have been modified."
            )
        return CmdletResult(
            [],
            warnings,
            WriteRecord("Set-OutboundConnector", identity, dict(bound), changed=changed),
        )

    def _remove_connector(self, bound: Mapping[str, object]) -> CmdletResult:
        self._converted("Remove-OutboundConnector", bound, {})
        identity, connector = self._target(bound)
        if bound.get("WhatIf") is True:
            return CmdletResult([])
        self.connectors.remove(connector)
        return CmdletResult([], write=WriteRecord("Remove-OutboundConnector", identity, dict(bound), changed=True))

    def _validate_connector(self, bound: Mapping[str, object]) -> CmdletResult:
        """The admin API's `OutboundConnectorValidationResult` tree, as its $metadata declares it.

        `{IsTaskSuccessful, TaskName, TaskDetail, SubTaskResults: [OutboundConnectorValidationResult]}`
        (christophwille/talkingtoexorestapi docs/metadata.xml). How Exchange groups its tasks
        is not public; here one result per test the cmdlet's documentation names (connectivity
        to each smart host, a test message to each recipient), each with one leaf per host or
        recipient. A parent succeeds only if all its leaves do.
        """
        values = self._converted("Validate-OutboundConnector", bound, {})
        _, connector = self._target(bound)
        recipients: list[str] = values["Recipients"]
        options = self.options
        results: list[dict[str, Any]] = []
        reachable_hosts = 0
        uses_smart_hosts = not connector.props["UseMXRecord"]
        if uses_smart_hosts:
            hosts: list[dict[str, Any]] = []
            for host in connector.props["SmartHosts"]:
                ok = host.lower() not in options.unreachable_hosts
                reachable_hosts += ok
                hosts.append(_task(
                    f"Check connectivity to '{host}'",
                    ok,
                    f"Connected to '{host}' on port 25 and negotiated TLS."
                    if ok
                    else "450 4.4.317 Cannot connect to remote server [Message=SocketError: TimedOut "
                    f"SocketErrorCode: TimedOut] [LastAttemptedServerName={host}]",
                ))
            results.append(_task("Check connectivity to the smart hosts", all(h["IsTaskSuccessful"] for h in hosts),
                                 "", hosts))
        sent: list[tuple[str, str]] = []
        messages: list[dict[str, Any]] = []
        for recipient in recipients:
            no_host = uses_smart_hosts and reachable_hosts == 0
            ok, details = self._test_email(connector, recipient, no_host)
            if not no_host:
                # Routing decides where it goes, but a message was submitted either way.
                sent.append((connector.name, recipient))
            messages.append(_task(f"Send test email to {recipient}", ok, details))
        results.append(_task("Send test email", all(m["IsTaskSuccessful"] for m in messages), "", messages))
        return CmdletResult(results, test_messages=sent)

    def _test_email(self, connector: Connector, recipient: str, no_host: bool) -> tuple[bool, str]:
        options = self.options
        if no_host:
            return False, (
                f"The test email to {recipient} couldn't be sent because none of the connector's smart hosts "
                "could be reached."
            )
        domain = recipient.rsplit("@", 1)[1].lower()
        if options.routing_conflicts_fail_validation:
            own = _best_match(connector.props["RecipientDomains"], domain)
            if own is None:
                return False, (
                    f"The recipient domain '{domain}' isn't in this connector's RecipientDomains, so the test "
                    "email wasn't routed through it."
                )
            rivals: list[tuple[int, str, str]] = []
            for other in self.connectors:
                props = other.props
                if other is connector or not props["Enabled"] or props["TestMode"] or props["IsTransportRuleScoped"]:
                    continue
                match = _best_match(props["RecipientDomains"], domain)
                if match is not None and match[0] >= own[0]:
                    rivals.append((match[0], match[1], other.name))
            if rivals:
                score, pattern, name = max(rivals)
                if score > own[0]:
                    return False, (
                        f"The test email to {recipient} was routed through the outbound connector '{name}', whose "
                        f"recipient domain '{pattern}' is more specific than this connector's '{own[1]}'."
                    )
                names = ", ".join(sorted(f"'{r[2]}'" for r in rivals))
                return False, (
                    f"The test email to {recipient} couldn't be routed through this connector: the enabled outbound "
                    f"connector(s) {names} match the recipient domain with the same priority ('{own[1]}'). Disable "
                    "or remove the other connector and validate again."
                )
        if recipient.lower() in options.unreachable_recipients:
            return False, (
                f"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {recipient} not found by SMTP address "
                "lookup. The test email couldn't be delivered."
            )
        return True, f"The test email was sent to {recipient} through this connector."

    def _get_accepted_domains(self, bound: Mapping[str, object]) -> CmdletResult:
        values = self._converted("Get-AcceptedDomain", bound, {})
        rows = [dict(row) for row in self.accepted_domains]
        identity = values.get("Identity")
        if isinstance(identity, str):
            rows = [r for r in rows if identity.lower() in (r["Name"].lower(), r["DomainName"].lower())]
            if not rows:
                raise not_found(identity)
        limit = values.get("ResultSize")
        if isinstance(limit, int):
            rows = rows[:limit]
        return CmdletResult(rows)

    # -- seeding ---------------------------------------------------------------------------------

    def seed_connector(self, fields: Mapping[str, object]) -> dict[str, Any]:
        """Add an existing connector (e.g. a customer's own `*` connector) without a write record.

        Accepts what New- accepts plus the validation properties and a Guid, and the same checks
        apply, so a seeded connector is one Exchange could really hold. It is visible at once.
        """
        data = dict(fields)
        by_lower = {key.lower(): key for key in data}
        guid: str | None = None
        if "guid" in by_lower:
            guid = str(uuid.UUID(str(data.pop(by_lower["guid"]))))
            if any(c.guid == guid for c in self.connectors):
                raise ValueError(f"a connector with Guid {guid} already exists")
        extra: dict[str, object] = {}
        for key in ("IsValidated", "LastValidationTimestamp", "ValidationRecipients"):
            if key.lower() in by_lower:
                extra[key] = data.pop(by_lower[key.lower()])
        values = self._converted("Set-OutboundConnector", extra, _CONNECTOR_DEFAULTS)
        self._new_connector(bind_parameters("New-OutboundConnector", data))
        connector = self.connectors[-1]
        connector.props.update(values)
        if guid is not None:
            connector.guid = guid
        connector.visible_at = connector.created
        return connector.row()


# --- journal rules and the transport config --------------------------------------------------


@dataclass
class JournalRule:
    guid: str
    name: str
    journal_email_address: str
    scope: str = "Global"
    recipient: str | None = None
    enabled: bool = False  # New-JournalRule.md: "The default value is $false."

    def row(self) -> dict[str, Any]:
        return {
            "Identity": self.name,
            "Name": self.name,
            "Guid": self.guid,
            "JournalEmailAddress": self.journal_email_address,
            "Recipient": self.recipient,
            "Scope": self.scope,
            "Enabled": self.enabled,
        }


# The rules (kept apart from the connector rules for reading):
# * New-JournalRule needs Name (at most 64 characters, unique) and JournalEmailAddress; a new
#   rule is disabled unless `Enabled $true`; Scope defaults to Global (New-JournalRule.md).
#   Set-JournalRule has no Enabled: Enable-/Disable-JournalRule switch a rule.
# * Journal reports and the undeliverable-reports address can't go to an Exchange Online
#   mailbox (configure-journaling.md, Set-TransportConfig.md -JournalingReportNdrTo): an
#   address in one of the tenant's accepted domains is refused.
# * Inference: New-JournalRule is refused while JournalingReportNdrTo is empty (the admin
#   center greys out "new journal rule" until that address is set; Microsoft's Configure
#   Journaling page says you "have to" specify it). The exact error text is invented.
# * Get-JournalRule -Identity <no match> returns every rule (Get-JournalRule.md, Caution).


def _in_tenant(state: TenantState, address: str) -> bool:
    domain = address.rsplit("@", 1)[1].lower()
    return any(domain == row["DomainName"] for row in state.accepted_domains)


def _find_rule(state: TenantState, identity: str) -> JournalRule | None:
    for rule in state.journal_rules:
        if rule.name.casefold() == identity.strip().casefold() or rule.guid == identity.strip():
            return rule
    return None


def _get_journal_rules(self: TenantState, cmdlet: str, bound: Mapping[str, object]) -> CmdletResult:
    values = self._converted("Get-JournalRule", bound, {})
    rules = list(self.journal_rules)
    identity = values.get("Identity")
    if isinstance(identity, str):
        match = _find_rule(self, identity)
        if match is not None:
            rules = [match]
    return CmdletResult([r.row() for r in rules])


def _refuse_exchange_online_mailbox(self: TenantState, parameter: str, address: str) -> None:
    if _in_tenant(self, address):
        raise _invalid(f"The {parameter} '{address}' is an Exchange Online recipient; journal reports can't be "
                       "delivered to an Exchange Online mailbox. Specify an address outside the organization.")


def _new_journal_rule(self: TenantState, cmdlet: str, params: Mapping[str, object]) -> CmdletResult:
    values = self._converted(cmdlet, params, {})
    name = str(values["Name"])
    address = str(values["JournalEmailAddress"])
    _refuse_exchange_online_mailbox(self, "JournalEmailAddress", address)
    if not self.journaling_report_ndr_to:
        raise _invalid("Journal rules can't be created until an address for undeliverable journal reports is set "
                       "(Set-TransportConfig -JournalingReportNdrTo).")
    if any(r.name.casefold() == name.casefold() for r in self.journal_rules):
        raise CmdletError(400, ALREADY_EXISTS,
                          f"The operation couldn't be performed because an object with the name '{name}' already "
                          "exists.")
    if values.get("WhatIf") is True:
        return CmdletResult([])
    rule = JournalRule(str(uuid.uuid4()), name, address, scope=str(values.get("Scope") or "Global"),
                       recipient=values.get("Recipient"),
                       enabled=bool(values.get("Enabled", False)))
    self.journal_rules.append(rule)
    return CmdletResult([rule.row()], write=WriteRecord(cmdlet, name, dict(params), changed=True))


def _rule_target(self: TenantState, cmdlet: str, params: Mapping[str, object]) -> tuple[dict[str, Any], JournalRule]:
    values = self._converted(cmdlet, params, {})
    identity = str(values["Identity"])
    rule = _find_rule(self, identity)
    if rule is None:
        raise not_found(identity)
    return values, rule


def _set_journal_rule(self: TenantState, cmdlet: str, params: Mapping[str, object]) -> CmdletResult:
    values, rule = _rule_target(self, cmdlet, params)
    before = rule.row()
    if "JournalEmailAddress" in values:
        _refuse_exchange_online_mailbox(self, "JournalEmailAddress", str(values["JournalEmailAddress"]))
        rule.journal_email_address = str(values["JournalEmailAddress"])
    if "Scope" in values:
        rule.scope = str(values["Scope"])
    if "Recipient" in values:
        rule.recipient = values["Recipient"]
    if isinstance(values.get("Name"), str):
        rule.name = str(values["Name"])
    changed = rule.row() != before
    return CmdletResult([], write=WriteRecord(cmdlet, str(values["Identity"]), dict(params), changed=changed))


def _enable_journal_rule(self: TenantState, cmdlet: str, params: Mapping[str, object]) -> CmdletResult:
    values, rule = _rule_target(self, cmdlet, params)
    wanted = cmdlet == "Enable-JournalRule"
    changed = rule.enabled != wanted
    rule.enabled = wanted
    return CmdletResult([], write=WriteRecord(cmdlet, str(values["Identity"]), dict(params), changed=changed))


def _remove_journal_rule(self: TenantState, cmdlet: str, params: Mapping[str, object]) -> CmdletResult:
    values, rule = _rule_target(self, cmdlet, params)
    self.journal_rules.remove(rule)
    return CmdletResult([], write=WriteRecord(cmdlet, str(values["Identity"]), dict(params), changed=True))


def _get_transport_config(self: TenantState, cmdlet: str, bound: Mapping[str, object]) -> CmdletResult:
    self._converted("Get-TransportConfig", bound, {})
    return CmdletResult([{"Identity": "Transport Settings", "JournalingReportNdrTo": self.journaling_report_ndr_to}])


def _set_transport_config(self: TenantState, cmdlet: str, bound: Mapping[str, object]) -> CmdletResult:
    values = self._converted("Set-TransportConfig", bound, {})
    before = self.journaling_report_ndr_to
    if "JournalingReportNdrTo" in values:
        address = values["JournalingReportNdrTo"]
        if isinstance(address, str):
            _refuse_exchange_online_mailbox(self, "JournalingReportNdrTo", address)
        self.journaling_report_ndr_to = address
    return CmdletResult([], write=WriteRecord("Set-TransportConfig", "Transport Settings", dict(bound),
                                              changed=self.journaling_report_ndr_to != before))


def seed_journal_rule(state: TenantState, fields: Mapping[str, object]) -> dict[str, Any]:
    """Add an existing journal rule (no write record), e.g. one a customer's admin made."""
    rule = JournalRule(str(uuid.uuid4()), str(fields["Name"]), str(fields["JournalEmailAddress"]),
                       scope=str(fields.get("Scope", "Global")),
                       recipient=str(fields["Recipient"]) if fields.get("Recipient") else None,
                       enabled=bool(fields.get("Enabled", True)))
    state.journal_rules.append(rule)
    return rule.row()


_JOURNAL_HANDLERS: dict[str, Callable[[TenantState, str, Mapping[str, object]], CmdletResult]] = {
    "Get-JournalRule": _get_journal_rules,
    "New-JournalRule": _new_journal_rule,
    "Set-JournalRule": _set_journal_rule,
    "Enable-JournalRule": _enable_journal_rule,
    "Disable-JournalRule": _enable_journal_rule,
    "Remove-JournalRule": _remove_journal_rule,
    "Get-TransportConfig": _get_transport_config,
    "Set-TransportConfig": _set_transport_config,
}
