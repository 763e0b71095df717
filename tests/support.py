"""Helpers shared by test modules (not fixtures: those live in tests/fixtures)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from shared.connectors import ConnectorSpec


# -- connectors as Exchange reports them ------------------------------------------------------
@dataclass(frozen=True)
class FakeConnector:
    name: str
    recipient_domains: tuple[str, ...]
    smart_hosts: tuple[str, ...] = ()
    use_mx_record: bool = True
    connector_type: str = "Partner"
    tls_settings: str | None = "CertificateValidation"
    enabled: bool = True
    is_transport_rule_scoped: bool = False
    test_mode: bool = False
    is_validated: bool = False
    validation_recipients: tuple[str, ...] = ()
    comment: str = ""
    tls_domain: str | None = None
    last_validation_timestamp: str | None = None


def as_deployed(spec: ConnectorSpec, **overrides: object) -> FakeConnector:
    """A connector exactly as our own earlier run left it."""
    connector = FakeConnector(
        name=spec.name,
        recipient_domains=spec.recipient_domains,
        smart_hosts=spec.smart_hosts,
        use_mx_record=spec.use_mx_record,
        is_validated=True,
        validation_recipients=spec.validation_recipients,
        comment=spec.comment,
        last_validation_timestamp="2026-01-01T00:00:00Z",
    )
    return replace(connector, **overrides)  # type: ignore[arg-type]


# Every way a process can be told which CAs to trust; tests clear them all, then name one.
TLS_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


def forget_ca_bundles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every CA-bundle variable, so a test trusts exactly what it sets itself."""
    for name in TLS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
