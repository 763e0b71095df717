"""The one client of the Exchange Online admin API: InvokeCommand, error mapping, cmdlet helpers.

`POST {endpoint}/adminapi/beta/{tenant}/InvokeCommand` is the endpoint the Exchange Online
PowerShell module itself uses. It is not a published contract, so everything that knows its
shape lives here: the request (headers, body, paging), the three error body shapes, which
answers are worth a retry, and the quirks (a role-less app gets a 403 of NUL bytes under a
false `Content-Encoding: gzip`; `Get-OutboundConnector -Identity <unknown>` may return every
connector). Callers see typed rows and the error taxonomy of `errors.py`, nothing else.

Because a `*` smart-host connector redirects all of a customer's outbound mail, the client
refuses, before sending anything, any connector change that names a smart host or recipient
domain off the allow-list, a new connector whose routing is not exactly one service's (the
guard is built from the service definitions in `services.py`), any journal rule or transport
change for another rule or address, and any cmdlet not in ALLOWED_CMDLETS.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self
from urllib.parse import quote, urlsplit

import requests
import requests.adapters
import urllib3.exceptions

from .connectors import ConnectorSpec
from .errors import (
    ConnectorExistsError,
    ConnectorNotFoundError,
    ErrorCode,
    ExchangeError,
    ExchangeTransientError,
    ProvisioningError,
    RoutingPolicyError,
    TransientError,
)
from .plan import name_key
from .services import (
    SERVICES,
    AllowLists,
    Service,
    admitting,
    connector_names,
    norm,
    routable_recipient_domains,
    routable_smart_hosts,
)
from .settings import DEFAULT_JOURNAL_DOMAINS, DEFAULT_SMART_HOSTS, Settings

if TYPE_CHECKING:
    from requests.sessions import _Settings

__all__ = [
    "ALLOWED_CMDLETS",
    "EXCHANGE_ENDPOINT",
    "AcceptedDomain",
    "CallRecord",
    "Connector",
    "ConnectorExistsError",
    "ConnectorNotFoundError",
    "ExchangeAdminClient",
    "JournalRule",
    "RoutingPolicyError",
    "TokenProvider",
    "ValidationTask",
    "error_from_response",
    "extract_error_message",
    "https_session",
    "parse_exchange_time",
    "parse_retry_after",
    "throttle_wait",
    "validation_tasks",
]

EXCHANGE_ENDPOINT = "https://outlook.office365.com"

# The well-known system mailbox that routes app-only admin calls to the tenant's servers.
_ANCHOR_MAILBOX = "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}"

ALLOWED_CMDLETS = frozenset({
    "Get-OutboundConnector",
    "New-OutboundConnector",
    "Set-OutboundConnector",
    "Remove-OutboundConnector",
    "Validate-OutboundConnector",
    "Get-AcceptedDomain",
    # Enterprise Audit's journal rule (EA_JOURNAL_RULE=ensure) and the address Exchange needs
    # for undeliverable journal reports.
    "Get-JournalRule",
    "New-JournalRule",
    "Set-JournalRule",
    "Enable-JournalRule",
    "Remove-JournalRule",
    "Get-TransportConfig",
    "Set-TransportConfig",
})
_JOURNAL_CMDLETS = frozenset(c for c in ALLOWED_CMDLETS if c.endswith(("JournalRule", "TransportConfig")))
DEFAULT_JOURNAL_RULE_NAME = Settings().ea_journal_rule_name
_ROUTING_CMDLETS = frozenset({"New-OutboundConnector", "Set-OutboundConnector"})
_LISTING_CMDLETS = frozenset({"Get-OutboundConnector", "Get-AcceptedDomain", "Get-JournalRule"})
VALIDATE_CMDLET = "Validate-OutboundConnector"
# The connector names Remove-OutboundConnector may name when the caller configures none.
DEFAULT_OWN_CONNECTOR_NAMES = connector_names(Settings())
# The only parameters the product ever sends to the routing cmdlets. Anything else (an
# abbreviation such as `SmartHost`, which PowerShell would bind to SmartHosts) is refused,
# so the allow-list checks below cannot be walked around by spelling.
_ROUTING_PARAMETERS = frozenset(name.casefold() for name in (
    "Identity", "Name", "ConnectorType", "RecipientDomains", "UseMXRecord", "SmartHosts", "TlsSettings",
    "TlsDomain", "Enabled", "IsTransportRuleScoped", "TestMode", "Comment", "IsValidated",
    "ValidationRecipients", "LastValidationTimestamp",
))

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Texts Exchange uses for conditions that clear by themselves, whatever the HTTP status.
# "too busy" is ServerBusyException's own text, for bodies that carry the message but not the type.
_THROTTLING_MARKERS = ("maximum number of concurrent requests", "serverbusy", "server is too busy")
_TRANSIENT_MARKERS = (
    *_THROTTLING_MARKERS,
    "transientexception",
    "backendcommunicationexception",
    "cmdletproxynotavailablefailure",
    "adserversettingschangedexception",
    # The words those exceptions carry, for bodies that keep the message but drop the type.
    "transient failure",
    "try again later",
)
_NOT_FOUND_TYPE = "ManagementObjectNotFoundException"
_EXISTS_TYPE = "ManagementObjectAlreadyExistsException"
_NOT_FOUND_TEXT = re.compile(r"couldn't be found|could not be found|was not found", re.IGNORECASE)
_EXISTS_TEXT = re.compile(r"already exists", re.IGNORECASE)
# `|Microsoft.Exchange.Some.Exception|text`, sometimes with an `Ex6F9304` style code before the
# first bar.
_PIPED = re.compile(r"^[^|\s]*\|(?P<type>[\w.+`]+)\|(?P<text>.*)$", re.DOTALL)

_MAX_PAGES = 1000
# Sent on every listing: without it the service picks a page size of its own (unknown, and
# possibly small); 1000 is what CIPP-API sends (New-ExoRequest.ps1) and the service honours
# it (rknightion/graph2otel internal/exoclient/exoclient.go, live-verified).
_PREFER_PAGE_SIZE = "odata.maxpagesize=1000"
# Per journal cmdlet: the parameters it may carry, and those it must (casefolded).
_JOURNAL_PARAMETERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "Get-JournalRule": (frozenset(), frozenset()),
    "New-JournalRule": (frozenset({"name", "journalemailaddress", "scope", "enabled"}),
                        frozenset({"name", "journalemailaddress", "scope", "enabled"})),
    "Set-JournalRule": (frozenset({"identity", "journalemailaddress", "scope"}), frozenset({"identity"})),
    "Enable-JournalRule": (frozenset({"identity"}), frozenset({"identity"})),
    "Remove-JournalRule": (frozenset({"identity", "confirm"}), frozenset({"identity", "confirm"})),
    "Get-TransportConfig": (frozenset(), frozenset()),
    "Set-TransportConfig": (frozenset({"journalingreportndrto"}), frozenset({"journalingreportndrto"})),
}
# A follow-up page the service cannot serve: its cursor is bound to one backend server, and a
# POST to the front door may land on another (graph2otel, live capture).
_PAGE_EXPIRED_TEXT = re.compile(r"expired or invalid pagination request", re.IGNORECASE)
_EXCERPT = 300


class TokenProvider(Protocol):
    """Anything that returns an app-only bearer token for the Exchange scope of a tenant.

    A provider may also offer `invalidate(tenant_id)`, dropping its cached token, and
    `token_is_fresh(tenant_id, token)`, whether that token was just issued by Entra rather
    than served from a cache. The permission and role travel in the token, so after a 401 or
    403 the client drops the token (the next attempt asks for a new one), and a 401 on a
    token that was not fresh is retried once with a new one. A provider may also offer
    `admin_consent_url(tenant_id)`, quoted in the hint of CONSENT_MISSING.
    """

    def get_token(self, tenant_id: str) -> str: ...


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Connector:
    """An outbound connector as Get-OutboundConnector reports it."""

    name: str
    guid: str
    connector_type: str
    recipient_domains: tuple[str, ...]
    smart_hosts: tuple[str, ...]
    use_mx_record: bool
    tls_settings: str | None
    enabled: bool
    is_transport_rule_scoped: bool
    test_mode: bool
    is_validated: bool
    validation_recipients: tuple[str, ...]
    last_validation_timestamp: str | None
    comment: str
    tls_domain: str | None = None
    # `AdminUI` for a connector made in the admin center's wizard; informational only.
    connector_source: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Connector:
        """Read a row leniently: a field that is missing or null gets a safe default.

        The defaults lean towards caution in conflict detection: a connector whose `Enabled`
        is unknown counts as enabled (Exchange's own default), one whose `TestMode` is unknown
        as live. Rows carry OData annotations beside multi-valued properties
        (`RecipientDomains@odata.type`) and properties this product does not manage
        (`MtaStsMode`, `SmtpDaneMode`); only the named properties are read, so neither can
        ever count as drift. Enum values are read in any case and given Exchange's spelling.
        """
        name = _as_str(row.get("Name")) or _as_str(row.get("Identity"))
        return cls(
            name=name,
            guid=_as_str(row.get("Guid")),
            connector_type=_as_enum(row.get("ConnectorType"), _CONNECTOR_TYPES),
            recipient_domains=_as_strings(row.get("RecipientDomains")),
            smart_hosts=_as_strings(row.get("SmartHosts")),
            use_mx_record=_as_bool(row.get("UseMXRecord"), default=False),
            tls_settings=_as_enum(row.get("TlsSettings"), _TLS_SETTINGS) or None,
            tls_domain=_as_str(row.get("TlsDomain")) or None,
            enabled=_as_bool(row.get("Enabled"), default=True),
            is_transport_rule_scoped=_as_bool(row.get("IsTransportRuleScoped"), default=False),
            test_mode=_as_bool(row.get("TestMode"), default=False),
            is_validated=_as_bool(row.get("IsValidated"), default=False),
            validation_recipients=_as_strings(row.get("ValidationRecipients")),
            last_validation_timestamp=_as_str(row.get("LastValidationTimestamp")) or None,
            comment=_as_str(row.get("Comment")),
            connector_source=_as_enum(row.get("ConnectorSource"), _CONNECTOR_SOURCES),
            raw=MappingProxyType(dict(row)),
        )

    @property
    def last_validated_at(self) -> datetime | None:
        """LastValidationTimestamp as an aware UTC datetime (see `parse_exchange_time`)."""
        return parse_exchange_time(self.last_validation_timestamp)


@dataclass(frozen=True)
class JournalRule:
    """A journal rule as Get-JournalRule reports it."""

    name: str
    journal_email_address: str
    scope: str
    enabled: bool
    recipient: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JournalRule:
        return cls(
            name=_as_str(row.get("Name")) or _as_str(row.get("Identity")),
            journal_email_address=_as_str(row.get("JournalEmailAddress")),
            scope=_as_enum(row.get("Scope"), ("Global", "Internal", "External")) or "Global",
            # A rule that does not say it is enabled may be disabled: ensure enables it.
            enabled=_as_bool(row.get("Enabled"), default=False),
            recipient=_as_str(row.get("Recipient")) or None,
        )


@dataclass(frozen=True)
class AcceptedDomain:
    """A domain the tenant receives mail for (a validation recipient must not be in one)."""

    domain_name: str
    domain_type: str
    default: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AcceptedDomain:
        return cls(
            domain_name=_as_str(row.get("DomainName")) or _as_str(row.get("Name")),
            domain_type=_as_str(row.get("DomainType")),
            default=_as_bool(row.get("Default"), default=False),
        )


@dataclass(frozen=True)
class ValidationTask:
    """One leaf step of Validate-OutboundConnector (smart-host connectivity or a test message).

    `path` names the tasks above it when Exchange nested it in `SubTaskResults`.
    """

    task_name: str
    successful: bool
    details: str
    path: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, path: tuple[str, ...] = ()) -> ValidationTask:
        detail = row.get("TaskDetail")
        return cls(
            task_name=_as_str(row.get("TaskName")),
            # A task that does not say it succeeded did not: null is not success.
            successful=_as_bool(row.get("IsTaskSuccessful"), default=False),
            # `TaskDetail` is the admin API's name ($metadata); `Details` that of older rows.
            details=_as_str(detail if detail not in (None, "") else row.get("Details")),
            path=path,
        )


_MAX_TASK_DEPTH = 8


def validation_tasks(rows: Sequence[Mapping[str, Any]]) -> list[ValidationTask]:
    """The leaf tasks of Validate-OutboundConnector's answer, flat rows and nested ones alike.

    The admin API declares the result as `OutboundConnectorValidationResult {IsTaskSuccessful,
    TaskName, TaskDetail, SubTaskResults: [OutboundConnectorValidationResult]}`; older answers
    are flat rows. A task with sub-tasks is judged by its leaves, but a parent that itself
    says it failed while every leaf passed is kept as a failed task too (Exchange knows
    something its leaves do not say), so no failure is ever lost by flattening.
    """
    leaves: list[ValidationTask] = []

    def walk(row: Mapping[str, Any], path: tuple[str, ...]) -> None:
        children = row.get("SubTaskResults")
        subtasks = [c for c in children if isinstance(c, Mapping)] if isinstance(children, list) else []
        if not subtasks or len(path) >= _MAX_TASK_DEPTH:
            leaves.append(ValidationTask.from_row(row, path=path))
            return
        before = len(leaves)
        name = _as_str(row.get("TaskName"))
        for child in subtasks:
            walk(child, (*path, name))
        parent = ValidationTask.from_row(row, path=path)
        reported = row.get("IsTaskSuccessful")
        if reported is not None and not parent.successful and all(t.successful for t in leaves[before:]):
            leaves.append(parent)

    for row in rows:
        walk(row, ())
    return leaves


@dataclass(frozen=True)
class CallRecord:
    """One HTTP exchange with Exchange, for the activation's event log (never the token)."""

    cmdlet: str
    status: int | None
    duration_ms: float
    ok: bool
    error_code: str | None


def _as_str(value: Any) -> str:
    return "" if value is None else str(value)


def _as_strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, Sequence):
        return tuple(str(v) for v in value if v is not None and str(v) != "")
    return (str(value),)


# Exchange's spellings of the enum properties the product reads (Get-OutboundConnector.md,
# New-OutboundConnector.md); a row may carry them in another case.
_CONNECTOR_TYPES = ("Partner", "OnPremises")
_TLS_SETTINGS = ("EncryptionOnly", "CertificateValidation", "DomainValidation")
_CONNECTOR_SOURCES = ("Default", "Migrated", "HybridWizard", "AdminUI")
# DateTimeOffset as the admin API writes it: up to 7 fractional digits, `Z`, an offset, or no
# zone at all (`2026-07-24T18:59:12.0000000` in a live capture).
_EXCHANGE_TIME = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?)(?:\.(?P<fraction>\d+))?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE,
)


def _as_enum(value: Any, choices: Sequence[str]) -> str:
    text = _as_str(value).strip()
    for choice in choices:
        if choice.casefold() == text.casefold():
            return choice
    return text


def parse_exchange_time(value: Any) -> datetime | None:
    """A DateTimeOffset of the admin API as an aware UTC datetime, or None if it is not one.

    Seven fractional digits are cut to Python's six; a value without a zone is taken as UTC,
    which is how the admin center stores LastValidationTimestamp (an inference: the live
    capture that lacks a zone sits beside `WhenChangedUTC` values in the same minute).
    """
    text = _as_str(value).strip()
    match = _EXCHANGE_TIME.match(text)
    if not match:
        return None
    fraction = (match.group("fraction") or "")[:6].ljust(6, "0")
    zone = (match.group("zone") or "Z").upper()
    if zone != "Z" and ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    try:
        moment = datetime.fromisoformat(f"{match.group('base').replace(' ', 'T')}.{fraction}"
                                        f"{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return None
    return moment.astimezone(UTC)


def _as_bool(value: Any, *, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "$true", "1", "yes"):
            return True
        if lowered in ("false", "$false", "0", "no"):
            return False
        return default
    return bool(value)


# --------------------------------------------------------------------------- transport


class _EnvironmentTrustSession(requests.Session):
    """A Session whose TLS trust follows the process's standard CA-bundle variables.

    requests already honours REQUESTS_CA_BUNDLE (and CURL_CA_BUNDLE) for each request, but
    not OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR, which other tools (curl, az, azure-core behind
    a proxy) use; a private CA set either way must work the same. These are process-wide TLS
    conventions, not product settings, which is why they are read here and not in Settings.
    """

    def merge_environment_settings(
        self,
        url: str | bytes | None,
        proxies: Any,
        stream: Any,
        verify: Any,
        cert: Any,
    ) -> _Settings:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if self.trust_env and merged.get("verify") is True:
            for variable in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
                location = os.environ.get(variable, "")
                if location and os.path.exists(location):
                    merged["verify"] = location
                    break
        return merged


class _DefaultTimeoutAdapter(requests.adapters.HTTPAdapter):
    """Applies a timeout to requests that name none.

    MSAL calls its http_client without a timeout when the client is supplied by the caller,
    and a token request must never hang a queue trigger; this puts the bound on the transport.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._default_timeout = timeout

    def send(  # noqa: PLR0917 - the signature is HTTPAdapter.send's, positional as requests calls it
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=self._default_timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


def https_session(*, timeout: float | None = None) -> requests.Session:
    """A pooled Session trusting the CA bundle named by REQUESTS_CA_BUNDLE or SSL_CERT_FILE.

    With `timeout`, every request that does not pass its own gets that bound.
    """
    session = _EnvironmentTrustSession()
    if timeout is not None:
        adapter = _DefaultTimeoutAdapter(timeout)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
    return session


# --------------------------------------------------------------------------- error mapping


def extract_error_message(body: Any) -> tuple[str, str | None]:
    """Exchange's own words and exception type name from an error body.

    The useful text sits in one of three places, tried in the order the protocol names them:
    `error.innererror.internalexception.message`, then `error.details[0].message` (either
    `|Type|text` or a JSON string `{"Message", "TypeName"}`), then `error.message`. Returns
    ("", None) when the body has none of them.
    """
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return "", None
    fallback_type = None
    inner = error.get("innererror")
    if isinstance(inner, Mapping):
        fallback_type = _as_str(inner.get("type")) or None
        internal = inner.get("internalexception")
        if isinstance(internal, Mapping):
            text = _as_str(internal.get("message")).strip()
            if text:
                return _split_typed(text, _as_str(internal.get("type")) or fallback_type)
    details = error.get("details")
    if isinstance(details, Sequence) and not isinstance(details, str) and details:
        first = details[0]
        text = _as_str(first.get("message") if isinstance(first, Mapping) else first).strip()
        if text:
            return _split_typed(text, fallback_type)
    text = _as_str(error.get("message")).strip()
    if text:
        return _split_typed(text, fallback_type)
    return "", fallback_type


def _split_typed(text: str, type_name: str | None) -> tuple[str, str | None]:
    """Separate a message from the exception type Exchange embeds in it, if it does."""
    if text.startswith("{"):
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, Mapping):
            message = _as_str(decoded.get("Message")).strip()
            if message:
                return message, _as_str(decoded.get("TypeName")) or type_name
    match = _PIPED.match(text)
    if match:
        return match.group("text").strip(), match.group("type")
    return text, type_name


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), else None."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # `inf` and `nan` parse as floats but are no wait: one would be stored as `Infinity`
        # (not JSON), the other retry at once. Leave them to the caller's back-off.
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def throttle_wait(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait before calling again, from the headers of a transient answer, else None.

    `Retry-After` (seconds or an HTTP-date) first. Without it, `Rate-Limit-Reset`, which
    Exchange sends beside `Rate-Limit-Remaining` (ExoHelper logs both); its format is not
    documented, so seconds, a Unix time, an HTTP-date and an ISO 8601 time are all read
    (an inference). None leaves the wait to the caller's exponential back-off.
    """
    waited = parse_retry_after(_header(headers, "Retry-After"), now=now)
    if waited is not None:
        return waited
    reset = (_header(headers, "Rate-Limit-Reset") or "").strip()
    if not reset:
        return None
    moment = now or datetime.now(UTC)
    try:
        number = float(reset)
    except ValueError:
        when = parse_exchange_time(reset)
        if when is None:
            return parse_retry_after(reset, now=moment)
        return max(0.0, (when - moment).total_seconds())
    if not math.isfinite(number):
        return None  # `inf`, `nan`: no wait the service meant (see parse_retry_after)
    if number > _UNIX_TIME_FLOOR:
        return max(0.0, number - moment.timestamp())
    return max(0.0, number)


# Any Rate-Limit-Reset number above this is a Unix time, not a count of seconds (2001-09-09).
_UNIX_TIME_FLOOR = 1e9


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    cmdlet: str,
    secret: str = "",
) -> ProvisioningError:
    """The taxonomy error for a non-2xx answer of InvokeCommand.

    `body` is the raw entity as received (already un-gzipped if that worked). `secret` (the
    bearer token) is scrubbed from any text kept, in case a server ever echoes it.
    """
    parsed = _json_or_none(body)
    message, type_name = extract_error_message(parsed)
    # A plain-text answer (throttling comes that way too) may name its exception only in this
    # header (GreyCorbel/ExoHelper Commands/Public/Invoke-ExoCommand.ps1 reads it).
    header_type = (_header(headers, "X-ExceptionType") or "").strip() or None
    type_name = type_name or header_type
    if not message:
        message = _describe_unparsed(status, body)
    if secret:
        message = message.replace(secret, "***")
    detail = f"{cmdlet}: {message}"
    lowered = " ".join((message, type_name or "", header_type or "", _text_or_empty(body))).lower()

    def build(cls: type[ExchangeError], code: ErrorCode, **kwargs: Any) -> ExchangeError:
        err = cls(code, detail, status_code=status, **kwargs)
        err.exception_type = type_name
        return err

    # The app's permission and its directory role travel in the token, and Exchange builds the
    # session's RBAC from them. 401: the token carries no Exchange.ManageAsApp (consent missing
    # or revoked). 403, with any body (NUL bytes, a false gzip header): the token is accepted
    # but the service principal has no Exchange role. Both need a person; both propagate in
    # minutes after the customer acts, and only a new token sees the change.
    if status == 401:
        return build(ExchangeError, ErrorCode.CONSENT_MISSING, needs_attention=True)
    if status == 403:
        return build(ExchangeError, ErrorCode.ROLE_MISSING, needs_attention=True)
    if status in TRANSIENT_STATUSES or any(marker in lowered for marker in _TRANSIENT_MARKERS):
        throttled = status == 429 or any(marker in lowered for marker in _THROTTLING_MARKERS)
        code = ErrorCode.THROTTLED if throttled else ErrorCode.EXCHANGE_UNAVAILABLE
        return build(ExchangeTransientError, code, retry_after=throttle_wait(headers))
    if type_name and type_name.endswith(_NOT_FOUND_TYPE):
        return build(ConnectorNotFoundError, ErrorCode.EXCHANGE_REJECTED)
    if type_name and type_name.endswith(_EXISTS_TYPE):
        return build(ConnectorExistsError, ErrorCode.EXCHANGE_REJECTED)
    # Without a type name, only Exchange's own words count: a bare 404 from a wrong URL must
    # not read as "connector absent", or the engine would create one again and again.
    if parsed is not None and status == 404 and _NOT_FOUND_TEXT.search(message):
        return build(ConnectorNotFoundError, ErrorCode.EXCHANGE_REJECTED)
    if parsed is not None and 400 <= status < 500 and _EXISTS_TEXT.search(message):
        return build(ConnectorExistsError, ErrorCode.EXCHANGE_REJECTED)
    return build(ExchangeError, ErrorCode.EXCHANGE_REJECTED)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        return None


def _text_or_empty(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return ""


def _describe_unparsed(status: int, body: bytes) -> str:
    """Words for a body that carries no Exchange error (empty, HTML, NUL bytes)."""
    if not body:
        return f"HTTP {status} with an empty body"
    text = _text_or_empty(body)
    printable = "".join(ch for ch in text if ch.isprintable()).strip()
    if not printable:
        return f"HTTP {status} with a body that is not JSON ({len(body)} bytes)"
    excerpt = " ".join(printable.split())[:_EXCERPT]
    return f"HTTP {status}: {excerpt}"


def _decode_entity(data: bytes, content_encoding: str) -> bytes:
    """Undo a gzip/deflate Content-Encoding, keeping the raw bytes if the header is false.

    Exchange's role-missing 403 claims gzip and carries NUL bytes; requests would fail
    decoding it, losing the status, so the client reads raw bytes and decodes here.
    """
    encoding = content_encoding.strip().lower()
    if not data or encoding not in ("gzip", "x-gzip", "deflate"):
        return data
    for wbits in (zlib.MAX_WBITS | 32, -zlib.MAX_WBITS):  # gzip or zlib header; raw deflate
        try:
            return zlib.decompress(data, wbits)
        except zlib.error:
            continue
    return data


# --------------------------------------------------------------------------- client


class ExchangeAdminClient:
    """Run the product's Exchange Online cmdlets (ALLOWED_CMDLETS) in one tenant, with typed results.

    One instance per tenant and activation; the Session is reused across calls for
    connection pooling. Every error is a `ProvisioningError` from `errors.py`.
    """

    def __init__(
        self,
        tenant_id: str,
        *,
        credential: TokenProvider,
        endpoint: str = EXCHANGE_ENDPOINT,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        allowed_smart_hosts: frozenset[str] = DEFAULT_SMART_HOSTS,
        allowed_journal_domains: frozenset[str] = DEFAULT_JOURNAL_DOMAINS,
        on_call: Callable[[CallRecord], None] | None = None,
        validate_timeout: float | None = None,
        own_connector_names: Sequence[str] = DEFAULT_OWN_CONNECTOR_NAMES,
        journal_rule_name: str = DEFAULT_JOURNAL_RULE_NAME,
        services: Sequence[Service] = SERVICES,
    ) -> None:
        if not tenant_id or "/" in tenant_id or "?" in tenant_id or "#" in tenant_id:
            raise ValueError(f"tenant_id {tenant_id!r} cannot be part of a URL path")
        self.tenant_id = tenant_id
        self._credential = credential
        self._endpoint = endpoint.rstrip("/")
        self._url = f"{self._endpoint}/adminapi/beta/{quote(tenant_id, safe='')}/InvokeCommand"
        self._owns_session = session is None
        self._session = session if session is not None else https_session()
        self._timeout = timeout
        # Validate-OutboundConnector connects to every smart host and sends test mail before it
        # answers: it gets its own, longer bound (None: the same as every other call).
        self._validate_timeout = timeout if validate_timeout is None else validate_timeout
        # The allow-list guard is built from the service definitions: a connector may route only
        # as some service's does, and a partial update may name only hosts and domains some
        # service may use.
        self._allow = AllowLists(allowed_smart_hosts, allowed_journal_domains)
        self._services = tuple(services)
        self._allowed_smart_hosts = routable_smart_hosts(self._allow, self._services)
        self._allowed_recipient_domains = routable_recipient_domains(self._allow, self._services)
        self._allowed_journal_domains = self._allow.journal_domains
        self._on_call = on_call
        self._own_connector_names = frozenset(name_key(n) for n in own_connector_names)
        self._journal_rule_name = journal_rule_name

    # -- context manager ---------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the Session if this client created it; an injected one belongs to the caller."""
        if self._owns_session:
            self._session.close()

    # -- the raw call ------------------------------------------------------

    def invoke(self, cmdlet: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one cmdlet and return every row, following `@odata.nextLink` pages.

        A follow-up page refused as "Expired or Invalid pagination request" restarts the
        listing once from the first page (a fresh cursor); refused again, it is a transient
        failure for the caller's back-off, never a partial list.
        """
        params = dict(parameters or {})
        self._check_allowed(cmdlet, params)
        body = json.dumps(
            {"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}, ensure_ascii=False
        ).encode("utf-8")
        try:
            return self._all_pages(cmdlet, body)
        except _PageExpired as first:
            try:
                return self._all_pages(cmdlet, body)
            except _PageExpired as again:
                raise ExchangeTransientError(
                    ErrorCode.EXCHANGE_UNAVAILABLE,
                    f"{again.error.detail} (a second listing from the first page was refused too)",
                    status_code=again.error.status_code,
                ) from first.error

    def _all_pages(self, cmdlet: str, body: bytes) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        url: str | None = self._url
        seen: set[str] = set()
        while url is not None:
            if url in seen or len(seen) >= _MAX_PAGES:
                raise ExchangeError(
                    ErrorCode.EXCHANGE_REJECTED,
                    f"{cmdlet}: paging did not end (@odata.nextLink repeated or over {_MAX_PAGES} pages)",
                )
            seen.add(url)
            try:
                page = self._post(cmdlet, url, body)
            except ExchangeError as err:
                if url != self._url and err.status_code == 400 and _PAGE_EXPIRED_TEXT.search(err.detail):
                    raise _PageExpired(err) from err
                raise
            value = page.get("value", [])
            if not isinstance(value, list):
                raise ExchangeError(ErrorCode.EXCHANGE_REJECTED, f"{cmdlet}: 'value' is not a list")
            rows.extend(row for row in value if isinstance(row, dict))
            url = self._next_link(cmdlet, page.get("@odata.nextLink"))
        return rows

    def _next_link(self, cmdlet: str, link: Any) -> str | None:
        if link is None or link == "":
            return None
        # The next page gets the bearer token too: follow it only on the endpoint's own origin.
        target, origin = urlsplit(str(link)), urlsplit(self._endpoint)
        if (target.scheme, target.netloc.lower()) != (origin.scheme, origin.netloc.lower()):
            raise ExchangeError(
                ErrorCode.EXCHANGE_REJECTED,
                f"{cmdlet}: @odata.nextLink points outside {self._endpoint}; not followed",
            )
        return str(link)

    def _post(self, cmdlet: str, url: str, body: bytes) -> dict[str, Any]:
        """POST one page; map any failure; settle a 401 on a cached token with a fresh one."""
        invalidate = getattr(self._credential, "invalidate", None)
        is_fresh = getattr(self._credential, "token_is_fresh", None)
        retried = False
        while True:
            token = self._credential.get_token(self.tenant_id)
            started = time.perf_counter()
            status: int | None = None
            try:
                status, headers, data = self._send(cmdlet, url, body, token)
                if status == 401 and callable(invalidate) and not retried and not (
                    callable(is_fresh) and is_fresh(self.tenant_id, token)
                ):
                    # A token from the cache may predate the customer's consent, or have been
                    # revoked: one new token settles whether the permission is really missing.
                    self._record(cmdlet, status, started, ok=False, error_code=None)
                    invalidate(self.tenant_id)
                    retried = True
                    continue
                if not 200 <= status < 300:
                    raise self._error(status, headers, data, cmdlet=cmdlet, token=token)
                page = _json_or_none(data)
                if not isinstance(page, dict):
                    # A 2xx that is not an InvokeCommand answer (a proxy page, a cut-off body).
                    raise ExchangeTransientError(
                        ErrorCode.EXCHANGE_UNAVAILABLE,
                        f"{cmdlet}: {_scrub(_describe_unparsed(status, data), token)} (expected a JSON object)",
                        status_code=status,
                    )
            except ProvisioningError as err:
                self._record(cmdlet, status, started, ok=False, error_code=err.code.value)
                raise
            self._record(cmdlet, status, started, ok=True, error_code=None)
            return page

    def _error(self, status: int, headers: Mapping[str, str], data: bytes, *, cmdlet: str,
               token: str) -> ProvisioningError:
        """The mapped error; after a 401 or 403 the tenant's token is dropped.

        The permission and the role are read from the token when Exchange builds the session,
        so a token issued before the customer granted them never gains them: whichever attempt
        comes next (an operator's retry, a scheduled one) must ask Entra for a new token.
        """
        error = error_from_response(status, headers, data, cmdlet=cmdlet, secret=token)
        if error.code in (ErrorCode.CONSENT_MISSING, ErrorCode.ROLE_MISSING):
            invalidate = getattr(self._credential, "invalidate", None)
            if callable(invalidate):
                invalidate(self.tenant_id)
                error.detail += " (the cached token was dropped; the next attempt gets a new one)"
        if error.code is ErrorCode.CONSENT_MISSING:
            consent_url = getattr(self._credential, "admin_consent_url", None)
            if callable(consent_url):
                error.extra_hint = f"Admin consent URL / 管理者同意 URL: {consent_url(self.tenant_id)}"
        return error

    def _send(self, cmdlet: str, url: str, body: bytes, token: str) -> tuple[int, Mapping[str, str], bytes]:
        """One HTTP exchange: status, headers and the entity (un-gzipped when that is true)."""
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Only encodings this module can undo itself (see _decode_entity).
            "Accept-Encoding": "gzip, deflate",
            "X-AnchorMailbox": _ANCHOR_MAILBOX.format(tenant=self.tenant_id),
            "client-request-id": str(uuid.uuid4()),
        }
        if cmdlet in _LISTING_CMDLETS:
            headers["Prefer"] = _PREFER_PAGE_SIZE
        try:
            # stream=True: the body is read raw, so a false Content-Encoding cannot crash
            # decoding before the status has been looked at.
            timeout = self._validate_timeout if cmdlet == VALIDATE_CMDLET else self._timeout
            response = self._session.post(url, data=body, headers=headers, timeout=timeout, stream=True)
            try:
                raw = response.raw.read(decode_content=False)
            finally:
                response.close()
        except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
            detail = f"{cmdlet}: {type(exc).__name__} talking to {self._endpoint}: {_scrub(str(exc), token)}"
            if cmdlet == VALIDATE_CMDLET:
                # The request may have reached Exchange: the test message may be on its way.
                detail += " (the validation may have run and sent its test message; it is not repeated now)"
            raise TransientError(ErrorCode.NETWORK_ERROR, detail) from exc
        data = _decode_entity(raw, response.headers.get("Content-Encoding", ""))
        return response.status_code, response.headers, data

    def _record(self, cmdlet: str, status: int | None, started: float, *, ok: bool, error_code: str | None) -> None:
        if self._on_call is not None:
            duration_ms = (time.perf_counter() - started) * 1000.0
            self._on_call(CallRecord(cmdlet, status, round(duration_ms, 3), ok, error_code))

    # -- the allow-list guard ------------------------------------------------

    def _check_allowed(self, cmdlet: str, params: Mapping[str, Any]) -> None:
        if cmdlet not in ALLOWED_CMDLETS:
            # Only code names a cmdlet (never a notice or a setting), so this is a bug: a plain
            # ValueError, which the host retries and finally parks in the poison queue.
            raise ValueError(f"cmdlet {cmdlet!r} is not one this client may send")
        if cmdlet == "Remove-OutboundConnector":
            self._check_removal(params)
            return
        if cmdlet in _JOURNAL_CMDLETS:
            self._check_journal(cmdlet, params)
            return
        if cmdlet not in _ROUTING_CMDLETS:
            return
        # PowerShell parameter names are case-insensitive, so the guard must be too.
        by_name = {key.casefold(): value for key, value in params.items()}
        unknown = sorted(key for key in params if key.casefold() not in _ROUTING_PARAMETERS)
        if unknown:
            raise RoutingPolicyError(f"{cmdlet}: parameter(s) {', '.join(unknown)} are not ones this client sends")
        hosts = _entries(by_name.get("smarthosts"))
        domains = _entries(by_name.get("recipientdomains"))
        for host in hosts:
            if norm(host) not in self._allowed_smart_hosts:
                raise RoutingPolicyError(f"{cmdlet}: smart host {host!r} is not on the allow-list")
        for domain in domains:
            if norm(domain) not in self._allowed_recipient_domains:
                raise RoutingPolicyError(f"{cmdlet}: recipient domain {domain!r} is not on the allow-list")
        if cmdlet == "New-OutboundConnector":
            # A new connector carries its whole routing, so it must be exactly one service's
            # routing, not a mix of allowed parts (a MailGates smart host for a journal domain).
            # Without UseMXRecord, New-OutboundConnector routes by MX (its documented default).
            routing = _Routing(str(by_name.get("name", "")), tuple(domains), tuple(hosts),
                               by_name.get("usemxrecord", True) is True)
            if admitting(routing, self._allow, self._services) is None:
                via = f"smart host(s) {', '.join(hosts)}" if hosts else (
                    "MX record" if routing.use_mx_record else "no smart host")
                raise RoutingPolicyError(f"{cmdlet}: RecipientDomains {', '.join(domains) or '(none)'} via {via} "
                                         "is not the routing of any service")

    def _check_removal(self, params: Mapping[str, Any]) -> None:
        """Remove-OutboundConnector only for one of our connector names, by name, without a prompt.

        Removing the wrong connector cuts a customer's mail flow, so a GUID or any other
        connector's name is refused here, whatever the caller decided.
        """
        by_name = {key.casefold(): value for key, value in params.items()}
        if set(by_name) != {"identity", "confirm"} or by_name["confirm"] is not False:
            raise RoutingPolicyError("Remove-OutboundConnector: only Identity and Confirm=$false are sent")
        identity = by_name["identity"]
        if not isinstance(identity, str) or name_key(identity) not in self._own_connector_names:
            raise RoutingPolicyError(f"Remove-OutboundConnector: {identity!r} is not one of our connectors")

    def _check_journal(self, cmdlet: str, params: Mapping[str, Any]) -> None:
        """Journal cmdlets only with the parameters the product sends, for our rule and addresses.

        A journal rule copies every message of the tenant to its address, so that address must
        be on ALLOWED_JOURNAL_DOMAINS; the rule named must be ours (EA_JOURNAL_RULE_NAME).
        """
        by_name = {key.casefold(): value for key, value in params.items()}
        allowed, required = _JOURNAL_PARAMETERS[cmdlet]
        keys = set(by_name)
        if not required <= keys <= allowed:
            raise RoutingPolicyError(f"{cmdlet}: parameter(s) {', '.join(sorted(params))} are not the ones this "
                                     "client sends")
        for key in ("identity", "name"):
            if key in by_name and not (isinstance(by_name[key], str)
                                       and by_name[key].casefold() == self._journal_rule_name.casefold()):
                raise RoutingPolicyError(f"{cmdlet}: {by_name[key]!r} is not our journal rule")
        if "journalemailaddress" in by_name:
            address = by_name["journalemailaddress"]
            if not (isinstance(address, str) and address.count("@") == 1
                    and _norm_host(address.rsplit("@", 1)[1]) in self._allowed_journal_domains):
                raise RoutingPolicyError(f"{cmdlet}: journal address {address!r} is not on the allow-list")
        if "journalingreportndrto" in by_name:
            address = by_name["journalingreportndrto"]
            if not (isinstance(address, str) and address.count("@") == 1
                    and _norm_host(address.rsplit("@", 1)[1]) not in self._allowed_journal_domains):
                raise RoutingPolicyError(f"{cmdlet}: {address!r} is not an address this client sets")
        if by_name.get("scope", "Global") != "Global" or by_name.get("enabled", True) is not True \
                or by_name.get("confirm", False) is not False:
            raise RoutingPolicyError(f"{cmdlet}: only Scope Global, Enabled $true and Confirm $false are sent")

    # -- typed cmdlets -------------------------------------------------------

    def list_outbound_connectors(self, *, test_mode: bool = False) -> list[Connector]:
        """The tenant's outbound connectors that are not in test mode (or, with `test_mode`, only
        those that are): Exchange's own split (Get-OutboundConnector.md,
        `-IncludeTestModeConnectors`). The default sends no parameter at all.
        """
        parameters = {"IncludeTestModeConnectors": True} if test_mode else None
        return [Connector.from_row(row) for row in self.invoke("Get-OutboundConnector", parameters)]

    def get_outbound_connector(self, name: str, *, test_mode: bool = False) -> Connector | None:
        """The connector with this name (case-insensitively), or None.

        Exchange may answer `Get-OutboundConnector -Identity <unknown>` with every connector,
        so the rows are matched by name here rather than trusted. Like the listing, a lookup
        finds a connector in test mode only with `test_mode` (and then only one in test mode).
        """
        parameters: dict[str, Any] = {"Identity": name}
        if test_mode:
            parameters["IncludeTestModeConnectors"] = True
        try:
            rows = self.invoke("Get-OutboundConnector", parameters)
        except ConnectorNotFoundError:
            return None
        wanted = name.casefold()
        for row in rows:
            connector = Connector.from_row(row)
            if connector.name.casefold() == wanted:
                return connector
        return None

    def create_outbound_connector(self, spec: ConnectorSpec) -> Connector:
        """New-OutboundConnector; ConnectorExistsError if the name is taken."""
        parameters = spec.new_parameters()
        rows = self.invoke("New-OutboundConnector", parameters)
        if rows:
            return Connector.from_row(rows[0])
        # No row back: describe the connector as requested rather than read it again, which
        # replication lag could answer with "not found".
        return Connector.from_row(parameters)

    def update_outbound_connector(self, name: str, changes: Mapping[str, Any]) -> None:
        """Set-OutboundConnector with only `changes`; ConnectorNotFoundError if it is absent."""
        if any(key.casefold() == "identity" for key in changes):
            raise ValueError("changes must not carry Identity; pass the connector name instead")
        self.invoke("Set-OutboundConnector", {"Identity": name, **changes})

    def remove_outbound_connector(self, name: str) -> None:
        """Remove-OutboundConnector without a prompt; ConnectorNotFoundError if it is absent.

        Only a connector named as one of `own_connector_names` may be removed (the guard).
        """
        self.invoke("Remove-OutboundConnector", {"Identity": name, "Confirm": False})

    def validate_outbound_connector(self, name: str, recipients: Sequence[str]) -> list[ValidationTask]:
        """Validate-OutboundConnector's leaf tasks; it does not mark the connector validated (mark_validated).

        Slow, and every call sends test mail: the call has its own timeout (`validate_timeout`)
        and is never repeated by this client after a timeout or a dropped connection.
        """
        rows = self.invoke(VALIDATE_CMDLET, {"Identity": name, "Recipients": list(recipients)})
        return validation_tasks(rows)

    def mark_validated(self, name: str, recipients: Sequence[str], *, when: datetime) -> None:
        """Stamp a connector validated, as the admin center does after a successful validation."""
        if when.tzinfo is None:
            raise ValueError("when must be timezone-aware")
        stamp = when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.invoke("Set-OutboundConnector", {
            "Identity": name,
            "IsValidated": True,
            "ValidationRecipients": list(recipients),
            "LastValidationTimestamp": stamp,
        })

    # -- Enterprise Audit's journal rule ---------------------------------------------------

    def list_journal_rules(self) -> list[JournalRule]:
        """Every journal rule (Get-JournalRule with an unknown Identity returns all rules anyway)."""
        return [JournalRule.from_row(row) for row in self.invoke("Get-JournalRule")]

    def create_journal_rule(self, name: str, journal_email_address: str) -> None:
        """New-JournalRule for every message (Scope Global, no Recipient), enabled at once.

        A new rule is disabled unless `-Enabled $true` is sent (New-JournalRule.md).
        """
        self.invoke("New-JournalRule", {"Name": name, "JournalEmailAddress": journal_email_address,
                                        "Scope": "Global", "Enabled": True})

    def update_journal_rule(self, name: str, changes: Mapping[str, Any]) -> None:
        """Set-JournalRule with only `changes` (JournalEmailAddress, Scope); it has no Enabled."""
        self.invoke("Set-JournalRule", {"Identity": name, **changes})

    def enable_journal_rule(self, name: str) -> None:
        self.invoke("Enable-JournalRule", {"Identity": name})

    def remove_journal_rule(self, name: str) -> None:
        """Remove-JournalRule without a prompt; ConnectorNotFoundError (Exchange's not-found) if absent."""
        self.invoke("Remove-JournalRule", {"Identity": name, "Confirm": False})

    def get_journaling_report_ndr_to(self) -> str | None:
        """The tenant's address for undeliverable journal reports, or None when it has none."""
        rows = self.invoke("Get-TransportConfig")
        value = _as_str(rows[0].get("JournalingReportNdrTo")).strip() if rows else ""
        # An unset SmtpAddress reads as null or, in some serialisations, as "<>" (inference).
        return None if value in ("", "<>") else value

    def set_journaling_report_ndr_to(self, address: str) -> None:
        self.invoke("Set-TransportConfig", {"JournalingReportNdrTo": address})

    def list_accepted_domains(self) -> list[AcceptedDomain]:
        """The tenant's accepted domains."""
        return [AcceptedDomain.from_row(row) for row in self.invoke("Get-AcceptedDomain")]


class _PageExpired(Exception):
    """A follow-up page refused because its cursor is gone; `invoke` lists again from the start."""

    def __init__(self, error: ExchangeError) -> None:
        super().__init__(error.detail)
        self.error = error


@dataclass(frozen=True)
class _Routing:
    """The routing a New-OutboundConnector call asks for, as the service definitions judge it."""

    name: str
    recipient_domains: tuple[str, ...]
    smart_hosts: tuple[str, ...]
    use_mx_record: bool


def _norm_host(value: str) -> str:
    return value.strip().lower().rstrip(".")


def _entries(value: Any) -> list[str]:
    """The entries of a list parameter; anything that is not a string counts as refused text."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence):
        return [v if isinstance(v, str) else repr(v) for v in value]
    return [repr(value)]


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text
