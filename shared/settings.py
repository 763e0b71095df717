"""Every setting the product reads, in one place, validated once.

Operators configure the product through environment variables (app settings in Azure,
`local.settings.json` or the shell locally). Reading them here, and nowhere else, means a
typo in a variable's value is reported once, at start-up, naming the variable, rather than
surfacing as a strange failure halfway through provisioning a customer's tenant.

The command line may also read `.run/local.env`, the file `make run` writes with the settings
of the local stack it started (Azurite's connection string, the simulator's EXO_* settings):
see `local_env_values` for which of its values count. The Function App never reads it.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Collection, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

DEFAULT_SMART_HOSTS = frozenset({"mgf.cybermail.jp", "mgs.cybermail.jp", "mgp.cybermail.jp"})
DEFAULT_JOURNAL_DOMAINS = frozenset({"cs-365.cybermail.jp", "cs-365-02.cybermail.jp"})

# Written by `python -m localrun` (make run) in its run directory, read by `python -m shared`
# from the current directory: both default to `.run` under the project root.
LOCAL_ENV_FILE = Path(".run") / "local.env"
# host.json's functionTimeout ("00:10:00"); tests/unit/test_settings.py keeps the two equal.
FUNCTION_TIMEOUT_SECONDS = 600.0

AuthMode = Literal["certificate", "secret", "federated"]
SpfPolicy = Literal["warn", "block", "off"]
OperatorAuth = Literal["key", "entra"]
JournalRulePolicy = Literal["off", "ensure"]


class SettingsError(ValueError):
    """A setting has a value the product cannot run with; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """Documentation of one environment variable (the README table is checked against these)."""

    env: str
    attr: str
    description: str


@dataclass(frozen=True)
class Settings:
    """The product's configuration. Defaults are those of the vendor's procedure."""

    activation_queue: str = "activation-notices"
    activations_table: str = "activations"
    events_table: str = "activationevents"
    ea_connector_name: str = "Enterprise Audit送信コネクタ"
    mg_connector_name: str = "MAILGATESΣ 送信コネクタ"
    allowed_smart_hosts: frozenset[str] = DEFAULT_SMART_HOSTS
    allowed_journal_domains: frozenset[str] = DEFAULT_JOURNAL_DOMAINS
    exo_admin_api_url: str = "https://outlook.office365.com"
    entra_authority_host: str = "https://login.microsoftonline.com"
    exo_auth_mode: AuthMode = "certificate"
    exo_client_id: str = ""
    exo_certificate_path: str = ""
    exo_client_secret: str = field(default="", repr=False)
    key_vault_url: str = ""
    exo_certificate_name: str = ""
    managed_identity_client_id: str = ""
    exo_timeout_seconds: float = 30.0
    # Validate-OutboundConnector connects to each smart host and sends test mail before it
    # answers; it can take well over a minute, and a timed-out one is never repeated in-process.
    # Four minutes: two validations still fit host.json's 10-minute functionTimeout.
    exo_validate_timeout_seconds: float = 240.0
    exo_call_retries: int = 2
    max_attempts: int = 8
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 15.0
    grant_propagation_attempts: int = 4
    grant_propagation_base_seconds: float = 60.0
    replication_wait_seconds: float = 60.0
    spf_policy: SpfPolicy = "warn"
    spf_required_include: str = ""
    dns_nameserver: str = ""
    dns_port: int = 53
    storage_connection_string: str = field(default="", repr=False)
    storage_account_name: str = ""
    storage_table_service_uri: str = ""
    storage_queue_service_uri: str = ""
    storage_client_id: str = ""
    operator_auth: OperatorAuth = "key"
    applicationinsights_connection_string: str = ""
    ea_journal_rule: JournalRulePolicy = "off"
    ea_journal_rule_name: str = "Enterprise Audit ジャーナル ルール"
    # The drift check (shared/drift.py): NCRONTAB with seconds, read by the host as %DRIFT_SCHEDULE%.
    drift_schedule: str = "0 0 3 * * *"
    drift_repair: bool = False
    drift_page_size: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, local_env: Path | None = None,
                 only: Collection[str] | None = None) -> Settings:
        """Read settings from the environment; an unusable value raises naming the variable.

        With `local_env` (the command line passes LOCAL_ENV_FILE), the values that file
        contributes under `local_env_values`' rules fill in what the environment leaves unset.
        With `only` (variable names, e.g. STORAGE_SETTINGS), just those are read and the rest
        keep their defaults: what a trigger can still use when another setting is broken.
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        if local_env is not None:
            env = {**env, **local_env_values(local_env, env)}
        values: dict[str, object] = {}
        for spec in SETTINGS:
            if only is not None and spec.env not in only:
                continue
            raw = env.get(spec.env)
            if raw is None or raw.strip() == "":
                continue
            values[spec.attr] = _convert(spec, raw.strip())
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules that a single variable cannot express."""
        if self.exo_auth_mode not in ("certificate", "secret", "federated"):
            raise SettingsError(
                f"EXO_AUTH_MODE={self.exo_auth_mode!r}: use certificate, secret or federated"
            )
        if self.operator_auth not in ("key", "entra"):
            raise SettingsError(f"OPERATOR_AUTH={self.operator_auth!r}: use key (function keys only) or entra "
                                "(App Service Authentication in front of the operators' routes)")
        if self.spf_policy not in ("warn", "block", "off"):
            raise SettingsError(f"SPF_POLICY={self.spf_policy!r}: use warn, block or off")
        if self.ea_journal_rule not in ("off", "ensure"):
            raise SettingsError(f"EA_JOURNAL_RULE={self.ea_journal_rule!r}: use off or ensure")
        if not self.ea_journal_rule_name or len(self.ea_journal_rule_name) > 64:
            raise SettingsError("EA_JOURNAL_RULE_NAME must be 1-64 characters (Exchange's limit)")
        for env, value in (("EXO_TIMEOUT_SECONDS", self.exo_timeout_seconds),
                           ("LEASE_SECONDS", self.lease_seconds), ("RETRY_MAX_SECONDS", self.retry_max_seconds)):
            if not value > 0:
                raise SettingsError(f"{env} must be more than 0 seconds")
        if not self.exo_validate_timeout_seconds > 0:
            raise SettingsError("EXO_VALIDATE_TIMEOUT_SECONDS must be more than 0 seconds")
        if self.exo_validate_timeout_seconds * 2 >= FUNCTION_TIMEOUT_SECONDS:
            # A run validates up to two connectors, and a Validate is never cut short and
            # repeated (it sends test mail), so both must fit in the host's functionTimeout.
            # The heartbeat renews the lease while a Validate runs, so the lease sets no bound.
            raise SettingsError(
                f"EXO_VALIDATE_TIMEOUT_SECONDS ({self.exo_validate_timeout_seconds:g}) must be less than "
                f"{FUNCTION_TIMEOUT_SECONDS / 2:g}: a run validates two connectors within host.json's "
                f"functionTimeout ({FUNCTION_TIMEOUT_SECONDS:g} s)"
            )
        if not 1 <= self.dns_port <= 65535:
            raise SettingsError(f"DNS_PORT={self.dns_port} is not a port (1-65535)")
        # The poison queue is `<name>-poison`, so the queue name leaves room for that suffix.
        if not _QUEUE_NAME.fullmatch(self.activation_queue) or len(self.activation_queue) > 56:
            raise SettingsError(f"ACTIVATION_QUEUE={self.activation_queue!r}: use 3-56 lower-case letters, digits "
                                "and single hyphens (Azure queue naming, room for '-poison')")
        for env, table in (("ACTIVATIONS_TABLE", self.activations_table), ("EVENTS_TABLE", self.events_table)):
            if not _TABLE_NAME.fullmatch(table):
                raise SettingsError(f"{env}={table!r}: use 3-63 letters and digits, starting with a letter "
                                    "(Azure table naming)")
        if self.storage_connection_string and not _is_connection_string(self.storage_connection_string):
            # Checked here, as the SDK would (azure.core parse_connection_string), so a damaged
            # value is one line naming the setting, not a traceback; never echoed: it holds a key.
            raise SettingsError("AzureWebJobsStorage is not a connection string (Name=value pairs separated "
                                "by ';', each name once); copy it again, or `python -m localrun.azurite env`")
        if self.exo_call_retries < 0:
            raise SettingsError("EXO_CALL_RETRIES must be 0 or more")
        if not 1 <= self.drift_page_size <= 1000:
            raise SettingsError("DRIFT_PAGE_SIZE must be between 1 and 1000 (one table page)")
        if len(self.drift_schedule.split()) != 6:
            raise SettingsError(f"DRIFT_SCHEDULE={self.drift_schedule!r}: use an NCRONTAB expression with six "
                                "fields, {second} {minute} {hour} {day} {month} {day-of-week}, e.g. 0 0 3 * * *")
        if self.max_attempts < 1:
            raise SettingsError("MAX_ATTEMPTS must be at least 1")
        # Renewed at least twice per lease, so one slow renewal never lets another worker in.
        if not 0 < self.heartbeat_seconds <= self.lease_seconds / 3:
            raise SettingsError(f"HEARTBEAT_SECONDS={self.heartbeat_seconds:g} must be more than 0 and at most a "
                                f"third of LEASE_SECONDS ({self.lease_seconds:g})")
        if self.grant_propagation_attempts < 0:
            raise SettingsError("GRANT_PROPAGATION_ATTEMPTS must be 0 or more")
        for name, hosts in (
            ("ALLOWED_SMART_HOSTS", self.allowed_smart_hosts),
            ("ALLOWED_JOURNAL_DOMAINS", self.allowed_journal_domains),
        ):
            if not hosts:
                raise SettingsError(f"{name} must list at least one domain")
            for host in hosts:
                if not _HOST_NAME.fullmatch(host):
                    raise SettingsError(f"{name}: {host!r} is not a plain domain name")
        for name, connector in (
            ("EA_CONNECTOR_NAME", self.ea_connector_name),
            ("MG_CONNECTOR_NAME", self.mg_connector_name),
        ):
            if not connector or len(connector) > 64:
                raise SettingsError(f"{name} must be 1-64 characters (Exchange's limit)")
        if self.ea_connector_name.casefold() == self.mg_connector_name.casefold():
            raise SettingsError("EA_CONNECTOR_NAME and MG_CONNECTOR_NAME must differ")
        for name, url in (
            ("EXO_ADMIN_API_URL", self.exo_admin_api_url),
            ("ENTRA_AUTHORITY_HOST", self.entra_authority_host),
        ):
            if not url.startswith("https://"):
                raise SettingsError(f"{name} must be an https:// URL, got {url!r}")

    def public_dict(self) -> dict[str, object]:
        """Settings safe to show an operator: every secret is masked."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_ATTRS:
                value = "***" if value else ""
            elif isinstance(value, frozenset):
                value = sorted(value)
            out[f.name] = value
        return out


_SECRET_ATTRS = frozenset({"exo_client_secret", "storage_connection_string"})
_QUEUE_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{2,62}")
_HOST_NAME = re.compile(r"(?=.{4,253}$)((?!-)[a-z0-9-]{1,63}(?<!-)\.)+[a-z][a-z0-9-]{0,62}(?<!-)")

SETTINGS: tuple[Setting, ...] = (
    Setting("ACTIVATION_QUEUE", "activation_queue", "Queue of activation notices; `<name>-poison` holds failed messages."),
    Setting("ACTIVATIONS_TABLE", "activations_table", "Table with one row per activation (status, lease)."),
    Setting("EVENTS_TABLE", "events_table", "Table with the append-only history of every activation."),
    Setting("EA_CONNECTOR_NAME", "ea_connector_name", "Name of the Enterprise Audit outbound connector."),
    Setting("MG_CONNECTOR_NAME", "mg_connector_name", "Name of the MailGates outbound connector."),
    Setting("ALLOWED_SMART_HOSTS", "allowed_smart_hosts", "Comma-separated MailGates smart hosts a notice may name."),
    Setting("ALLOWED_JOURNAL_DOMAINS", "allowed_journal_domains", "Comma-separated Enterprise Audit journal domains a notice may name."),
    Setting("EXO_ADMIN_API_URL", "exo_admin_api_url", "Exchange Online admin API base URL."),
    Setting("ENTRA_AUTHORITY_HOST", "entra_authority_host", "Microsoft Entra authority host for app-only tokens."),
    Setting("EXO_AUTH_MODE", "exo_auth_mode", "certificate, secret (local development) or federated (managed identity assertion)."),
    Setting("EXO_CLIENT_ID", "exo_client_id", "Application (client) ID of the multi-tenant Exchange app."),
    Setting("EXO_CERTIFICATE_PATH", "exo_certificate_path", "PEM file with the app certificate and key (certificate mode)."),
    Setting("EXO_CLIENT_SECRET", "exo_client_secret", "Client secret (local development only)."),
    Setting("KEY_VAULT_URL", "key_vault_url", "Key Vault holding the app certificate (certificate mode in Azure)."),
    Setting("EXO_CERTIFICATE_NAME", "exo_certificate_name", "Name of the app certificate in Key Vault."),
    Setting("MANAGED_IDENTITY_CLIENT_ID", "managed_identity_client_id", "Client ID of the Function App's user-assigned identity."),
    Setting("EXO_TIMEOUT_SECONDS", "exo_timeout_seconds", "Timeout of each Exchange and token call."),
    Setting("EXO_VALIDATE_TIMEOUT_SECONDS", "exo_validate_timeout_seconds", "Timeout of one Validate-OutboundConnector call (it sends test mail; never repeated after a timeout); less than half of host.json's functionTimeout."),
    Setting("EXO_CALL_RETRIES", "exo_call_retries", "Quick in-process retries of one throttled Exchange call before the queue takes over."),
    Setting("MAX_ATTEMPTS", "max_attempts", "Attempts of one activation before it is marked failed."),
    Setting("RETRY_BASE_SECONDS", "retry_base_seconds", "First back-off delay; doubles each attempt, with jitter."),
    Setting("RETRY_MAX_SECONDS", "retry_max_seconds", "Upper bound of one back-off delay."),
    Setting("LEASE_SECONDS", "lease_seconds", "How long a worker's claim on an activation lasts unless renewed; a dead worker's activation is taken over about this long after its last heartbeat."),
    Setting("HEARTBEAT_SECONDS", "heartbeat_seconds", "How often a running worker renews its claim (at most a third of LEASE_SECONDS)."),
    Setting("GRANT_PROPAGATION_ATTEMPTS", "grant_propagation_attempts", "Retries of an activation stopped by CONSENT_MISSING or ROLE_MISSING, waiting for a new grant to reach Exchange, before it needs attention."),
    Setting("GRANT_PROPAGATION_BASE_SECONDS", "grant_propagation_base_seconds", "First wait for a grant to propagate; doubles each retry (60 s and 4 retries cover 15 minutes)."),
    Setting("REPLICATION_WAIT_SECONDS", "replication_wait_seconds", "How long a just-created connector may read as missing."),
    Setting("SPF_POLICY", "spf_policy", "warn, block or off: what an SPF problem does to the outcome."),
    Setting("SPF_REQUIRED_INCLUDE", "spf_required_include", "The include: the vendor's SPF page asks customers to publish."),
    Setting("DNS_NAMESERVER", "dns_nameserver", "Name server for SPF look-ups (default: the system's)."),
    Setting("DNS_PORT", "dns_port", "Port of DNS_NAMESERVER."),
    Setting("AzureWebJobsStorage", "storage_connection_string", "Storage connection string (local development; Azurite)."),
    Setting("AzureWebJobsStorage__accountName", "storage_account_name", "Storage account reached by managed identity (Azure)."),
    Setting("AzureWebJobsStorage__tableServiceUri", "storage_table_service_uri", "Table service URI, when not derived from the account name."),
    Setting("AzureWebJobsStorage__queueServiceUri", "storage_queue_service_uri", "Queue service URI, when not derived from the account name."),
    Setting("AzureWebJobsStorage__clientId", "storage_client_id", "Client ID of the identity used for storage (defaults to MANAGED_IDENTITY_CLIENT_ID)."),
    Setting("OPERATOR_AUTH", "operator_auth", "key (function keys; local) or entra (Azure: operators sign in with App Service Authentication, automation keeps its keys)."),
    Setting("APPLICATIONINSIGHTS_CONNECTION_STRING", "applicationinsights_connection_string", "Application Insights to export logs to (Azure); unset, no telemetry SDK is loaded."),
    Setting("EA_JOURNAL_RULE", "ea_journal_rule", "off or ensure: whether an Enterprise Audit activation also ensures its journal rule (and termination removes it)."),
    Setting("EA_JOURNAL_RULE_NAME", "ea_journal_rule_name", "Name of the Enterprise Audit journal rule."),
    Setting("DRIFT_SCHEDULE", "drift_schedule", "NCRONTAB schedule (six fields, UTC) of the drift check of succeeded activations' connectors (one queue message per tenant); default daily at 03:00."),
    Setting("DRIFT_REPAIR", "drift_repair", "true: a drifted activation is re-provisioned at once; false (default): it is only marked drifted."),
    Setting("DRIFT_PAGE_SIZE", "drift_page_size", "Activations read per page by the drift check (1-1000)."),
)


# Settings that only make sense together. The local stack's file gives a whole group or none
# of it: an operator who set any of a group (say AzureWebJobsStorage__accountName for the
# real account) must never have the file's Azurite connection string, which would win, or the
# simulator's secret sent to a real Entra ID, quietly mixed into their configuration.
_STORAGE_GROUP = frozenset({"AzureWebJobsStorage", "AzureWebJobsStorage__accountName",
                            "AzureWebJobsStorage__tableServiceUri", "AzureWebJobsStorage__queueServiceUri",
                            "AzureWebJobsStorage__clientId"})
_EXCHANGE_GROUP = frozenset({"EXO_ADMIN_API_URL", "ENTRA_AUTHORITY_HOST", "EXO_AUTH_MODE", "EXO_CLIENT_ID",
                             "EXO_CERTIFICATE_PATH", "EXO_CLIENT_SECRET", "KEY_VAULT_URL", "EXO_CERTIFICATE_NAME",
                             "MANAGED_IDENTITY_CLIENT_ID"})
_DNS_GROUP = frozenset({"DNS_NAMESERVER", "DNS_PORT"})
_GROUPS = (_STORAGE_GROUP, _EXCHANGE_GROUP, _DNS_GROUP)
# The stack's other settings belong to one of its services and count only when the file's
# settings for that service do: its queue, tables and demo back-off go with its Azurite; its
# replication wait, DNS server and SPF include with its simulator (which the DNS server serves).
# Beside the operator's own storage or Exchange they would be local values in a real
# configuration: a 20 s replication wait failing real tenants, an SPF include never agreed.
_COMPANIONS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("ACTIVATION_QUEUE", "ACTIVATIONS_TABLE", "EVENTS_TABLE", "RETRY_BASE_SECONDS",
                     "RETRY_MAX_SECONDS"), _STORAGE_GROUP),
    **dict.fromkeys(("REPLICATION_WAIT_SECONDS", "SPF_REQUIRED_INCLUDE", *_DNS_GROUP), _EXCHANGE_GROUP),
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_env_file(path: Path) -> dict[str, str]:
    """`NAME=value` lines of a shell-style env file (`#` comments, `export`, shell quoting).

    Missing file: empty. A line that is not an assignment raises SettingsError naming the
    file and line, so a damaged file is reported rather than half read.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read it ({exc}); delete it or run `make run` again") from exc
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        stripped = stripped.removeprefix("export ").lstrip()
        name, equals, raw = stripped.partition("=")
        try:
            words = shlex.split(raw, comments=True)
        except ValueError:
            words = None
        if not equals or not _ENV_NAME.fullmatch(name) or words is None or len(words) > 1:
            raise SettingsError(f"{path}:{number}: not a NAME=value line; delete the file or run `make run` again")
        values[name] = words[0] if words else ""
    return values


def local_env_values(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The product settings the local stack's env file adds to `environ` (default: the process's).

    The explicit environment always wins: a variable set there (non-empty) is never replaced,
    and the file's storage, Exchange and DNS settings each count only as a whole group, when
    the environment sets none of that group; the stack's other settings only with the group of
    the service they belong to (`_COMPANIONS`). Names that are not product settings (the CA
    bundle line, for a shell that sources the file) are left out: TLS trust is the process's.
    """
    env = os.environ if environ is None else environ
    known = {spec.env for spec in SETTINGS}

    def is_set(name: str) -> bool:
        return bool((env.get(name) or "").strip())

    file = read_env_file(path)

    def taken(group: frozenset[str]) -> bool:
        return any(name in file for name in group) and not any(is_set(name) for name in group)

    added: dict[str, str] = {}
    for name, value in file.items():
        if name not in known or is_set(name):
            continue
        group = next((g for g in _GROUPS if name in g), None)
        if group is not None and not taken(group):
            continue
        anchors = [_COMPANIONS[name]] if name in _COMPANIONS else [] if group is not None else list(_GROUPS[:2])
        # A setting of no group and no service counts only when the file gives the whole stack.
        if not all(taken(anchor) for anchor in anchors):
            continue
        added[name] = value
    return added


_TLS_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


def trust_local_env_ca(path: Path, environ: MutableMapping[str, str] | None = None) -> str | None:
    """Make this process trust the local simulator's CA when the file's Exchange settings are in use.

    TLS trust is the process's (REQUESTS_CA_BUNDLE, read by the HTTP clients), not a product
    setting; but a command that talks to the simulator because the file said so must trust the
    simulator's throw-away CA, or `apply` fails on a certificate error. So, for the command line
    only: when `local_env_values` took the file's Exchange endpoint, no CA variable is set, the
    environment configures no storage of its own (reached over HTTPS with a public certificate)
    and the file's REQUESTS_CA_BUNDLE exists, it is set here. Returns the bundle set, or None.
    """
    env = os.environ if environ is None else environ
    if any((env.get(name) or "").strip() for name in _TLS_VARIABLES):
        return None
    if any((env.get(name) or "").strip() for name in _STORAGE_GROUP):
        # The bundle replaces the system's trust for every HTTPS call of the process, and holds
        # only the simulator's root: one's own storage account would fail its TLS handshake.
        return None
    if "EXO_ADMIN_API_URL" not in local_env_values(path, env):
        return None
    bundle = read_env_file(path).get("REQUESTS_CA_BUNDLE", "")
    if not bundle or not Path(bundle).is_file():
        return None
    env["REQUESTS_CA_BUNDLE"] = bundle
    return bundle


def _is_connection_string(value: str) -> bool:
    """Whether the storage SDK can parse `value`: `Name=value` pairs, `;`-separated, names unique."""
    pairs = [part.split("=", 1) for part in value.strip().rstrip(";").split(";")]
    if any(len(pair) != 2 or not all(pair) for pair in pairs):
        return False
    names = [pair[0].lower() for pair in pairs]
    return len(set(names)) == len(names)


def _convert(spec: Setting, raw: str) -> object:
    default = {f.name: f.default for f in fields(Settings)}[spec.attr]
    if isinstance(default, bool):
        # A typo ("ture") must not quietly read as false.
        if raw.lower() not in _TRUE | _FALSE:
            raise SettingsError(f"{spec.env}={raw!r} is not true or false: use true or false (also 1/0, "
                                f"yes/no, on/off), or remove it for the default ({str(default).lower()})")
        return raw.lower() in _TRUE
    try:
        if isinstance(default, frozenset):
            return frozenset(p.strip().lower().rstrip(".") for p in raw.split(",") if p.strip())
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            value = float(raw)
            if value < 0 or not math.isfinite(value):
                raise ValueError("negative or not finite")
            return value
    except ValueError as exc:
        raise SettingsError(f"{spec.env}={raw!r} is not {_KIND_OF_VALUE[type(default)]}: set it to one, such as "
                            f"{default!r} (the default), or remove it to use the default") from exc
    if spec.attr in ("exo_admin_api_url", "entra_authority_host"):
        return raw.rstrip("/")
    return raw


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
# What a numeric setting must be, for the message that names a bad one.
_KIND_OF_VALUE: dict[type, str] = {int: "a whole number", float: "a number (0 or more, finite)"}

# The settings the product needs to reach its queue, and with the tables to record anything.
# A trigger whose other settings are broken still reads these (`from_env(only=...)`), so the
# message it was given is kept and the problem recorded (see shared/misconfigured.py).
QUEUE_SETTINGS = frozenset({
    "AzureWebJobsStorage", "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__clientId", "MANAGED_IDENTITY_CLIENT_ID",
    "ACTIVATION_QUEUE",
})
STORAGE_SETTINGS = QUEUE_SETTINGS | {"ACTIVATIONS_TABLE", "EVENTS_TABLE"}
