"""Every setting the product reads, in one place, validated once.

Operators configure the product through environment variables (app settings in Azure,
`local.settings.json` or the shell locally). Reading them here, and nowhere else, means a
typo in a variable's value is reported once, at start-up, naming the variable, rather than
surfacing as a strange failure halfway through provisioning a customer's tenant.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

DEFAULT_SMART_HOSTS = frozenset({"mgf.cybermail.jp", "mgs.cybermail.jp", "mgp.cybermail.jp"})
DEFAULT_JOURNAL_DOMAINS = frozenset({"cs-365.cybermail.jp", "cs-365-02.cybermail.jp"})

AuthMode = Literal["certificate", "secret", "federated"]
SpfPolicy = Literal["warn", "block", "off"]
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
    exo_call_retries: int = 2
    max_attempts: int = 8
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    lease_seconds: float = 600.0
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
    ea_journal_rule: JournalRulePolicy = "off"
    ea_journal_rule_name: str = "Enterprise Audit ジャーナル ルール"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from the environment; an unusable value raises naming the variable."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in SETTINGS:
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
        if self.exo_call_retries < 0:
            raise SettingsError("EXO_CALL_RETRIES must be 0 or more")
        if self.max_attempts < 1:
            raise SettingsError("MAX_ATTEMPTS must be at least 1")
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
    Setting("EXO_CALL_RETRIES", "exo_call_retries", "Quick in-process retries of one throttled Exchange call before the queue takes over."),
    Setting("MAX_ATTEMPTS", "max_attempts", "Attempts of one activation before it is marked failed."),
    Setting("RETRY_BASE_SECONDS", "retry_base_seconds", "First back-off delay; doubles each attempt, with jitter."),
    Setting("RETRY_MAX_SECONDS", "retry_max_seconds", "Upper bound of one back-off delay."),
    Setting("LEASE_SECONDS", "lease_seconds", "How long a worker's claim on an activation lasts before another may take it over."),
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
    Setting("EA_JOURNAL_RULE", "ea_journal_rule", "off or ensure: whether an Enterprise Audit activation also ensures its journal rule (and termination removes it)."),
    Setting("EA_JOURNAL_RULE_NAME", "ea_journal_rule_name", "Name of the Enterprise Audit journal rule."),
)


def _convert(spec: Setting, raw: str) -> object:
    default = {f.name: f.default for f in fields(Settings)}[spec.attr]
    try:
        if isinstance(default, frozenset):
            return frozenset(p.strip().lower().rstrip(".") for p in raw.split(",") if p.strip())
        if isinstance(default, bool):
            return raw.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            value = float(raw)
            if value < 0 or not math.isfinite(value):
                raise ValueError("negative or not finite")
            return value
    except ValueError as exc:
        raise SettingsError(f"{spec.env}={raw!r} is not a valid {type(default).__name__}") from exc
    if spec.attr in ("exo_admin_api_url", "entra_authority_host"):
        return raw.rstrip("/")
    return raw
