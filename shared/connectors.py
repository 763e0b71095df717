"""The desired outbound connectors for a notice: the vendor's procedure as data.

Pure: a notice and settings in, connector specs out; each service's part comes from its
definition in `services.py`. The Enterprise Audit connector comes first (the registry's
activation order) so that, while the MailGates `*` connector is being created, journal
reports already have their more specific route and never ride the `*` connector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .notice import ActivationNotice
from .services import SERVICES, Service, activation_order, requested
from .settings import Settings

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


def desired_connectors(notice: ActivationNotice, settings: Settings | None = None, *,
                       registry: Sequence[Service] = SERVICES) -> list[ConnectorSpec]:
    """The connectors a notice asks for, in activation order (Enterprise Audit first).

    What each service's connector carries is its definition's (`services.py`); the settings
    every connector shares (Partner, CertificateValidation, enabled) are `ConnectorSpec`'s.
    """
    settings = settings or Settings()
    specs: list[ConnectorSpec] = []
    for service in requested(notice.services, order=activation_order(registry)):
        desired = service.desired(notice, settings)
        specs.append(ConnectorSpec(
            service=service.key,
            name=service.connector_name(settings),
            recipient_domains=desired.recipient_domains,
            smart_hosts=desired.smart_hosts,
            use_mx_record=desired.use_mx_record,
            validation_recipients=desired.validation_recipients,
        ))
    return specs
