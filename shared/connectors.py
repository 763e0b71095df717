"""The desired outbound connectors for a notice: the vendor's procedure as data.

Pure: a notice and settings in, connector specs out. The Enterprise Audit connector comes
first so that, while the MailGates `*` connector is being created, journal reports already
have their more specific route and never ride the `*` connector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .notice import ActivationNotice
from .settings import Settings

ENTERPRISE_AUDIT = "enterprise_audit"
MAILGATES = "mailgates"

# Written into each connector's Comment, so that a connector renamed by an admin is still
# recognised as ours rather than reported as a conflict.
OWNERSHIP_MARKER = "[managed-by:activation-provisioning]"


@dataclass(frozen=True)
class ConnectorSpec:
    """One outbound connector exactly as the procedure configures it."""

    service: str
    name: str
    recipient_domains: tuple[str, ...]
    smart_hosts: tuple[str, ...]
    use_mx_record: bool
    validation_recipients: tuple[str, ...]
    connector_type: str = "Partner"
    tls_settings: str = "CertificateValidation"
    enabled: bool = True
    is_transport_rule_scoped: bool = False
    # A connector in test mode carries no mail; ours must be in service.
    test_mode: bool = False

    @property
    def comment(self) -> str:
        return f"{OWNERSHIP_MARKER} {self.service}"

    def settings_parameters(self) -> dict[str, Any]:
        """The parameters that define routing; what drift detection compares."""
        params: dict[str, Any] = {
            "ConnectorType": self.connector_type,
            "RecipientDomains": list(self.recipient_domains),
            "UseMXRecord": self.use_mx_record,
            "SmartHosts": list(self.smart_hosts),
            "TlsSettings": self.tls_settings,
            "Enabled": self.enabled,
            "IsTransportRuleScoped": self.is_transport_rule_scoped,
            "TestMode": self.test_mode,
        }
        return params

    def new_parameters(self) -> dict[str, Any]:
        """Parameters of New-OutboundConnector (which takes no ValidationRecipients)."""
        params: dict[str, Any] = {"Name": self.name}
        params.update(self.settings_parameters())
        if self.use_mx_record:
            # SmartHosts is meaningless with MX routing; Exchange rejects an empty list there.
            del params["SmartHosts"]
        params["Comment"] = self.comment
        return params

    def to_dict(self) -> dict[str, Any]:
        """The connector as `plan --format json` shows it."""
        return {
            "Name": self.name,
            "ConnectorType": self.connector_type,
            "RecipientDomains": list(self.recipient_domains),
            "SmartHosts": list(self.smart_hosts),
            "UseMXRecord": self.use_mx_record,
            "TlsSettings": self.tls_settings,
            "Enabled": self.enabled,
            "IsTransportRuleScoped": self.is_transport_rule_scoped,
            "ValidationRecipients": list(self.validation_recipients),
            "Service": self.service,
            "Comment": self.comment,
        }


def desired_connectors(notice: ActivationNotice, settings: Settings | None = None) -> list[ConnectorSpec]:
    """The connectors a notice asks for, Enterprise Audit first."""
    settings = settings or Settings()
    specs: list[ConnectorSpec] = []
    if ENTERPRISE_AUDIT in notice.services:
        assert notice.journal_report_address is not None and notice.journal_domain is not None
        _require_allowed(notice.journal_domain, settings.allowed_journal_domains, "journal domain")
        specs.append(ConnectorSpec(
            service=ENTERPRISE_AUDIT,
            name=settings.ea_connector_name,
            recipient_domains=(f"*.{notice.journal_domain}",),
            smart_hosts=(),
            use_mx_record=True,
            validation_recipients=(notice.journal_report_address,),
        ))
    if MAILGATES in notice.services:
        assert notice.mx_host is not None and notice.validation_recipient is not None
        _require_allowed(notice.mx_host, settings.allowed_smart_hosts, "smart host")
        specs.append(ConnectorSpec(
            service=MAILGATES,
            name=settings.mg_connector_name,
            recipient_domains=("*",),
            smart_hosts=(notice.mx_host,),
            use_mx_record=False,
            validation_recipients=(notice.validation_recipient,),
        ))
    return specs


def _require_allowed(value: str, allowed: frozenset[str], what: str) -> None:
    # A second gate behind notice validation: a notice built in code (not parsed) must not
    # be able to route a tenant's mail anywhere off the allow-list either.
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not on the allow-list")
