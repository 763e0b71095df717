"""App-only tokens from the simulator's Entra ID over HTTPS: caching, credentials, refusals.

The simulator's authority host is not one of Microsoft's, so every test here also proves that
MSAL is told not to ask login.microsoftonline.com about it (there is no network to ask).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from exosim import Simulator
from shared.auth import ManagedIdentityAssertion, MsalTokenProvider, token_provider_from_settings
from shared.errors import AuthError, ErrorCode, TransientError
from shared.exchange import ExchangeAdminClient
from shared.settings import Settings

pytestmark = pytest.mark.functional

@pytest.fixture
def sim(trusted: Simulator) -> Simulator:
    """The simulator with only its own CA trusted (see tests/fixtures/simulator.py)."""
    return trusted


@pytest.fixture
def tokens(sim: Simulator) -> Iterator[MsalTokenProvider]:
    provider = MsalTokenProvider(client_id=sim.client_id, credential=sim.client_secret, authority_host=sim.url,
                                 timeout=10)
    yield provider
    provider.close()


def settings_for(sim: Simulator, **values: object) -> Settings:
    base: dict[str, object] = {"entra_authority_host": sim.url, "exo_admin_api_url": sim.url,
                               "exo_client_id": sim.client_id, "exo_timeout_seconds": 10.0}
    base.update(values)
    return Settings(**base)  # type: ignore[arg-type]


def make_certificate(tmp_path: Path, name: str) -> tuple[Path, str]:
    """A throw-away self-signed app certificate: (PEM file with key and cert, cert PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    path = tmp_path / f"{name}.pem"
    path.write_bytes(key_pem + cert_pem)
    return path, cert_pem.decode("ascii")


# --------------------------------------------------------------------------- caching


def test_many_exchange_calls_for_a_tenant_use_one_token_request(
        sim: Simulator, tokens: MsalTokenProvider, exo_tenant: str) -> None:
    with ExchangeAdminClient(exo_tenant, credential=tokens, endpoint=sim.url) as exchange:
        for _ in range(10):
            exchange.list_outbound_connectors()
            exchange.list_accepted_domains()
    assert sim.token_requests(exo_tenant) == 1
    assert sim.calls(exo_tenant) == {"Get-OutboundConnector": 10, "Get-AcceptedDomain": 10}


def test_eight_threads_starting_at_once_share_one_token_request_per_tenant(
        sim: Simulator, tokens: MsalTokenProvider) -> None:
    tenants = [str(uuid.uuid4()), str(uuid.uuid4())]
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def worker(tenant: str) -> None:
        start.wait()
        try:
            with ExchangeAdminClient(tenant, credential=tokens, endpoint=sim.url) as exchange:
                for _ in range(3):
                    exchange.list_outbound_connectors()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(tenants[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for tenant in tenants:
        assert sim.token_requests(tenant) == 1
        assert [e.kind for e in sim.log_for(tenant)].count("discovery") == 1  # one MSAL app per tenant
        assert sim.calls(tenant) == {"Get-OutboundConnector": 12}


def test_a_non_microsoft_authority_host_is_used_without_instance_discovery(
        sim: Simulator, tokens: MsalTokenProvider, exo_tenant: str) -> None:
    assert tokens.get_token(exo_tenant)
    assert [entry.kind for entry in sim.log] == ["discovery", "token"]


# --------------------------------------------------------------------------- credentials


def test_secret_mode_from_the_simulator_environment_gets_a_token(sim: Simulator, exo_tenant: str) -> None:
    provider = token_provider_from_settings(Settings.from_env(sim.env()))
    assert provider.get_token(exo_tenant)
    token_entry = next(e for e in sim.log if e.kind == "token")
    assert token_entry.status == 200 and token_entry.parameters["scope"] == "https://outlook.office365.com/.default"


def test_certificate_mode_signs_an_assertion_the_registered_certificate_verifies(
        sim: Simulator, exo_tenant: str, tmp_path: Path) -> None:
    client_id = str(uuid.uuid4())
    path, cert_pem = make_certificate(tmp_path, "provisioning-app")
    sim.register_client(client_id, certificate_pem=cert_pem)
    provider = token_provider_from_settings(settings_for(
        sim, exo_client_id=client_id, exo_auth_mode="certificate", exo_certificate_path=str(path)))
    with ExchangeAdminClient(exo_tenant, credential=provider, endpoint=sim.url) as exchange:
        assert exchange.list_outbound_connectors() == []


def test_a_certificate_not_registered_on_the_app_is_credential_invalid(
        sim: Simulator, exo_tenant: str, tmp_path: Path) -> None:
    client_id = str(uuid.uuid4())
    _, registered = make_certificate(tmp_path, "registered")
    other, _ = make_certificate(tmp_path, "other")
    sim.register_client(client_id, certificate_pem=registered)
    provider = token_provider_from_settings(settings_for(
        sim, exo_client_id=client_id, exo_auth_mode="certificate", exo_certificate_path=str(other)))
    with pytest.raises(AuthError) as info:
        provider.get_token(exo_tenant)
    assert info.value.code is ErrorCode.CREDENTIAL_INVALID and "AADSTS700027" in info.value.detail
    assert "PRIVATE KEY" not in str(info.value.to_dict())


def test_federated_mode_presents_the_managed_identity_token_as_assertion(
        sim: Simulator, exo_tenant: str) -> None:
    @dataclass
    class AccessToken:
        token: str
        expires_on: int

    class FakeManagedIdentity:
        """Stands in for IMDS: a JWT for api://AzureADTokenExchange, as azure-identity returns."""

        def __init__(self) -> None:
            self.requests = 0

        def get_token(self, *scopes: str) -> AccessToken:
            self.requests += 1
            expires = int(time.time()) + 3600
            claims = {"aud": "api://AzureADTokenExchange", "iss": "https://login.microsoftonline.com/x/v2.0",
                      "sub": "mi-object-id", "exp": expires, "nbf": expires - 3600}
            parts = [{"alg": "RS256", "typ": "JWT"}, claims]
            encoded = [base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=").decode() for p in parts]
            return AccessToken(".".join([*encoded, "c2lnbmF0dXJl"]), expires)

    identity = FakeManagedIdentity()
    provider = MsalTokenProvider(client_id=sim.client_id, credential=ManagedIdentityAssertion(credential=identity),
                                 authority_host=sim.url, timeout=10)
    assert provider.get_token(exo_tenant)
    assert provider.get_token(str(uuid.uuid4()))
    assert identity.requests == 1  # the assertion is reused across tenants until near expiry


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("consent_error", [700016, 65001])
def test_missing_consent_needs_an_admin_and_names_the_consent_url(
        sim: Simulator, tokens: MsalTokenProvider, exo_tenant: str, consent_error: int) -> None:
    sim.configure_tenant(exo_tenant, consent=False, consent_error=consent_error)
    with pytest.raises(AuthError) as info:
        tokens.get_token(exo_tenant)
    err = info.value
    # 700016: the app is not in the tenant at all; 65001: a permission is not consented
    expected = ErrorCode.APP_NOT_IN_TENANT if consent_error == 700016 else ErrorCode.CONSENT_MISSING
    assert err.code is expected and err.needs_attention and not err.retryable
    assert f"{sim.url}/{exo_tenant}/adminconsent?client_id={sim.client_id}" in err.hint.en
    assert f"AADSTS{consent_error}" in err.detail and "Trace ID" not in err.detail


def test_once_consent_is_granted_the_next_attempt_gets_a_token(
        sim: Simulator, tokens: MsalTokenProvider, exo_tenant: str) -> None:
    sim.configure_tenant(exo_tenant, consent=False)
    with pytest.raises(AuthError):
        tokens.get_token(exo_tenant)
    sim.configure_tenant(exo_tenant, consent=True)
    assert tokens.get_token(exo_tenant)


def test_an_app_unknown_to_entra_is_not_in_the_tenant(sim: Simulator, exo_tenant: str) -> None:
    provider = MsalTokenProvider(client_id=str(uuid.uuid4()), credential="whatever", authority_host=sim.url,
                                 timeout=10)
    with pytest.raises(AuthError) as info:
        provider.get_token(exo_tenant)
    assert info.value.code is ErrorCode.APP_NOT_IN_TENANT and "AADSTS700016" in info.value.detail


def test_a_wrong_secret_is_credential_invalid_and_never_echoed(sim: Simulator, exo_tenant: str) -> None:
    wrong = "wrong-secret-4f1e2d"
    provider = MsalTokenProvider(client_id=sim.client_id, credential=wrong, authority_host=sim.url, timeout=10)
    with pytest.raises(AuthError) as info:
        provider.get_token(exo_tenant)
    err = info.value
    assert err.code is ErrorCode.CREDENTIAL_INVALID and not err.retryable and "AADSTS7000215" in err.detail
    assert wrong not in str(err.to_dict()) and wrong not in repr(err)


def test_an_expired_secret_is_credential_invalid(sim: Simulator, exo_tenant: str) -> None:
    client_id = str(uuid.uuid4())
    sim.register_client(client_id, secret="old-secret", secret_expired=True)
    provider = MsalTokenProvider(client_id=client_id, credential="old-secret", authority_host=sim.url, timeout=10)
    with pytest.raises(AuthError) as info:
        provider.get_token(exo_tenant)
    assert info.value.code is ErrorCode.CREDENTIAL_INVALID and "AADSTS7000222" in info.value.detail


def test_an_unknown_tenant_is_tenant_not_found(sim: Simulator, tokens: MsalTokenProvider, exo_tenant: str) -> None:
    sim.configure_tenant(exo_tenant, exists=False)
    with pytest.raises(AuthError) as info:
        tokens.get_token(exo_tenant)
    assert info.value.code is ErrorCode.TENANT_NOT_FOUND and not info.value.retryable
    assert "AADSTS90002" in info.value.detail
    with pytest.raises(AuthError) as info:
        tokens.get_token("no-such-tenant.onmicrosoft.com")
    assert info.value.code is ErrorCode.TENANT_NOT_FOUND


@pytest.mark.parametrize("kind", ["unavailable", "internal", "throttle", "disconnect"])
def test_entra_outages_are_transient_network_errors(
        sim: Simulator, tokens: MsalTokenProvider, exo_tenant: str, kind: str) -> None:
    sim.fail_next(exo_tenant, 1, kind, target="token")
    with pytest.raises(TransientError) as info:
        tokens.get_token(exo_tenant)
    assert info.value.code is ErrorCode.NETWORK_ERROR and info.value.retryable


def test_after_a_dropped_token_request_the_next_attempt_succeeds(
        sim: Simulator, tokens: MsalTokenProvider, exo_tenant: str) -> None:
    sim.fail_next(exo_tenant, 1, "disconnect", target="token")
    with pytest.raises(TransientError):
        tokens.get_token(exo_tenant)
    assert tokens.get_token(exo_tenant)


def test_a_silent_authority_times_out_as_a_transient_network_error(exo_tenant: str) -> None:
    import socket

    # Accepts connections and never answers: without a timeout on MSAL's HTTP, this would hang.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        provider = MsalTokenProvider(client_id=str(uuid.uuid4()), credential="s", timeout=0.5,
                                     authority_host=f"https://127.0.0.1:{port}")
        started = time.monotonic()
        with pytest.raises(TransientError) as info:
            provider.get_token(exo_tenant)
        assert time.monotonic() - started < 5
    assert info.value.code is ErrorCode.NETWORK_ERROR and "Timeout" in info.value.detail


def test_the_per_tenant_token_clients_are_bounded_least_recently_used_first(sim: Simulator) -> None:
    provider = MsalTokenProvider(client_id=sim.client_id, credential=sim.client_secret, authority_host=sim.url,
                                 timeout=10, max_tenants=2)
    first, second, third = (str(uuid.uuid4()) for _ in range(3))
    try:
        for tenant in (first, second, first, third):  # `second` is the least recently used when `third` arrives
            provider.get_token(tenant)
        provider.get_token(first)
        assert sim.token_requests(first) == 1  # kept: used recently
        provider.get_token(second)
        assert sim.token_requests(second) == 2  # evicted, so Entra was asked again
    finally:
        provider.close()
