"""App-only token provider: Entra error mapping, caching per tenant, settings, certificates.

MSAL runs for real here; only its HTTP is replaced, by a fake Entra mounted as a requests
adapter on the Session the provider is given.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import requests.adapters
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from requests.structures import CaseInsensitiveDict

from shared.auth import (
    ManagedIdentityAssertion,
    MsalTokenProvider,
    certificate_credential_from_pem,
    certificate_credential_from_secret,
    error_from_msal_result,
    token_provider_from_settings,
)
from shared.errors import AuthError, ErrorCode, ProvisioningError, TransientError
from shared.settings import Settings

HOST = "https://login.entra.test"
TENANT = "11111111-2222-3333-4444-555555555555"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SECRET = "s3cr3t-value-never-logged"
TRACE = " Trace ID: 0b1c Correlation ID: 9f2e Timestamp: 2025-01-01 00:00:00Z"


# --------------------------------------------------------------------------- fake Entra

TokenAnswer = Callable[[str, dict[str, list[str]]], tuple[int, dict[str, Any]]]


def _response(request: requests.PreparedRequest, status: int, body: dict[str, Any] | bytes) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode() if isinstance(body, dict) else body
    response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
    response.url = request.url or ""
    response.request = request
    return response


class FakeEntra(requests.adapters.BaseAdapter):
    """OpenID discovery and the token endpoint of any tenant; `token_answer` decides tokens."""

    def __init__(self, token_answer: TokenAnswer | None = None,
                 *, unknown_tenants: frozenset[str] = frozenset(), delay: float = 0.0) -> None:
        super().__init__()
        self.token_answer = token_answer or (lambda tenant, form: (200, token_body(tenant)))
        self.unknown_tenants = unknown_tenants
        self.delay = delay
        self.log: list[tuple[str, str]] = []
        self.token_forms: list[dict[str, list[str]]] = []
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: object = None,
             verify: object = True, cert: object = None, proxies: object = None) -> requests.Response:
        url = urllib.parse.urlsplit(request.url or "")
        with self._lock:
            self.log.append((request.method or "", f"{url.netloc}{url.path}"))
        tenant = url.path.split("/")[1]
        if url.path.endswith("/v2.0/.well-known/openid-configuration"):
            if tenant in self.unknown_tenants:
                return _response(request, 400, {
                    "error": "invalid_tenant",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have "
                                         "the correct tenant ID." + TRACE,
                    "error_codes": [90002]})
            base = f"{url.scheme}://{url.netloc}/{tenant}"
            return _response(request, 200, {
                "issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize"})
        if url.path.endswith("/oauth2/v2.0/token"):
            time.sleep(self.delay)
            raw = request.body if isinstance(request.body, str) else (request.body or b"").decode()
            form = urllib.parse.parse_qs(raw)
            with self._lock:
                self.token_forms.append(form)
            status, body = self.token_answer(tenant, form)
            return _response(request, status, body)
        return _response(request, 404, {"error": "not_found"})

    def close(self) -> None:
        pass

    def token_requests(self, tenant: str | None = None) -> int:
        return sum(1 for method, path in self.log
                   if method == "POST" and path.endswith("/token") and (tenant is None or f"/{tenant}/" in path))


def token_body(tenant: str) -> dict[str, Any]:
    return {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": f"token-for-{tenant}"}


def provider(entra: FakeEntra, credential: Any = SECRET, host: str = HOST) -> MsalTokenProvider:
    session = requests.Session()
    session.mount("https://", entra)
    return MsalTokenProvider(client_id=CLIENT_ID, credential=credential, authority_host=host, timeout=5,
                             http_client=session)


def refuse(code: int, error: str, text: str, status: int = 400) -> TokenAnswer:
    return lambda tenant, form: (status, {"error": error, "error_description": f"AADSTS{code}: {text}{TRACE}",
                                          "error_codes": [code], "trace_id": "0b1c", "correlation_id": "9f2e"})


# --------------------------------------------------------------------------- mapping of MSAL's error dicts


@pytest.mark.parametrize(("code", "error", "expected"), [
    (700016, "unauthorized_client", ErrorCode.APP_NOT_IN_TENANT),
    (7000229, "invalid_client", ErrorCode.APP_NOT_IN_TENANT),
    (65001, "invalid_grant", ErrorCode.CONSENT_MISSING),
    (7000215, "invalid_client", ErrorCode.CREDENTIAL_INVALID),
    (7000222, "invalid_client", ErrorCode.CREDENTIAL_INVALID),
    (700027, "invalid_client", ErrorCode.CREDENTIAL_INVALID),
    (700024, "invalid_client", ErrorCode.CREDENTIAL_INVALID),
    (90002, "invalid_tenant", ErrorCode.TENANT_NOT_FOUND),
])
def test_aadsts_codes_map_to_product_codes(code: int, error: str, expected: ErrorCode) -> None:
    err = error_from_msal_result({"error": error, "error_description": f"AADSTS{code}: words.", "error_codes": [code]})
    assert isinstance(err, AuthError)
    assert err.code is expected and not err.retryable


def test_consent_missing_needs_a_human_and_names_the_admin_consent_url() -> None:
    url = f"{HOST}/{TENANT}/adminconsent?client_id={CLIENT_ID}"
    err = error_from_msal_result({"error": "unauthorized_client", "error_codes": [700016],
                                  "error_description": f"AADSTS700016: Application with identifier '{CLIENT_ID}' "
                                                       f"was not found in the directory.{TRACE}"},
                                 consent_url=url)
    assert err.needs_attention
    assert url in err.extra_hint and url in err.hint.en and url in err.hint.ja


def test_entra_words_are_kept_without_trace_and_correlation_ids() -> None:
    err = error_from_msal_result({"error": "invalid_client", "error_codes": [7000215],
                                  "error_description": "AADSTS7000215: Invalid client secret provided.\r\n"
                                                       "Trace ID: abc\r\nCorrelation ID: def\r\nTimestamp: now"})
    assert err.detail == "AADSTS7000215: Invalid client secret provided."


def test_codes_are_read_from_the_description_when_error_codes_is_absent() -> None:
    err = error_from_msal_result({"error": "invalid_request",
                                  "error_description": "AADSTS90002: Tenant 'x' not found."})
    assert err.code is ErrorCode.TENANT_NOT_FOUND


def test_entra_outages_are_transient_network_errors() -> None:
    err = error_from_msal_result({"error": "temporarily_unavailable", "error_description": "AADSTS50196: busy"})
    assert isinstance(err, TransientError) and err.code is ErrorCode.NETWORK_ERROR


def test_an_unknown_refusal_keeps_entra_words_and_asks_a_human() -> None:
    err = error_from_msal_result({"error": "invalid_request", "error_description": "AADSTS12345: something new."})
    assert err.code is ErrorCode.UNHANDLED and err.needs_attention and "AADSTS12345" in err.detail


# --------------------------------------------------------------------------- provider over a fake Entra


def test_many_calls_for_one_tenant_send_one_token_request() -> None:
    entra = FakeEntra()
    tokens = provider(entra)
    assert {tokens.get_token(TENANT) for _ in range(20)} == {f"token-for-{TENANT}"}
    assert entra.token_requests() == 1


def test_each_tenant_gets_its_own_token() -> None:
    entra = FakeEntra()
    tokens = provider(entra)
    other = "99999999-2222-3333-4444-555555555555"
    assert tokens.get_token(TENANT) != tokens.get_token(other)
    tokens.get_token(TENANT)
    assert entra.token_requests(TENANT) == 1 and entra.token_requests(other) == 1


def test_concurrent_first_calls_for_a_tenant_send_one_token_request() -> None:
    entra = FakeEntra(delay=0.2)
    tokens = provider(entra)
    start = threading.Barrier(8)
    results: list[str] = []

    def worker() -> None:
        start.wait()
        results.append(tokens.get_token(TENANT))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert entra.token_requests() == 1
    discovery = [p for m, p in entra.log if m == "GET"]
    assert len(discovery) == 1  # one MSAL application was built


def test_a_non_microsoft_authority_host_never_asks_microsoft_about_itself() -> None:
    entra = FakeEntra()
    tokens = provider(entra)
    tokens.get_token(TENANT)
    assert all(path.startswith("login.entra.test/") for _, path in entra.log)


def test_the_token_request_uses_client_credentials_for_the_exchange_scope() -> None:
    entra = FakeEntra()
    provider(entra).get_token(TENANT)
    form = entra.token_forms[0]
    assert form["grant_type"] == ["client_credentials"]
    assert form["scope"] == ["https://outlook.office365.com/.default"]
    assert form["client_id"] == [CLIENT_ID] and form["client_secret"] == [SECRET]


def test_an_app_missing_from_the_tenant_needs_a_person_at_once_without_the_secret() -> None:
    entra = FakeEntra(refuse(700016, "unauthorized_client", f"Application with identifier '{CLIENT_ID}' was not "
                                                            f"found in the directory '{TENANT}'."))
    with pytest.raises(AuthError) as info:
        provider(entra).get_token(TENANT)
    err = info.value
    assert err.code is ErrorCode.APP_NOT_IN_TENANT and err.needs_attention and not err.retryable
    assert f"{HOST}/{TENANT}/adminconsent?client_id={CLIENT_ID}" in err.extra_hint
    assert SECRET not in str(err.to_dict()) and "Trace ID" not in err.detail


def test_only_a_token_just_fetched_from_entra_counts_as_fresh() -> None:
    entra = FakeEntra()
    tokens = provider(entra)
    first = tokens.get_token(TENANT)
    assert tokens.token_is_fresh(TENANT, first)
    # served again from MSAL's cache: no longer "just obtained"
    assert tokens.get_token(TENANT) == first and not tokens.token_is_fresh(TENANT, first)
    tokens.invalidate(TENANT)
    second = tokens.get_token(TENANT)
    assert len(entra.token_forms) == 2 and tokens.token_is_fresh(TENANT, second)
    assert not tokens.token_is_fresh(OTHER_TENANT, second)


def test_a_retry_after_consent_is_granted_asks_entra_again() -> None:
    consented = False

    def answer(tenant: str, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if consented:
            return 200, token_body(tenant)
        return refuse(65001, "invalid_grant", "The user or administrator has not consented.")(tenant, form)

    tokens = provider(FakeEntra(answer))
    with pytest.raises(AuthError):
        tokens.get_token(TENANT)
    consented = True
    assert tokens.get_token(TENANT) == f"token-for-{TENANT}"


def test_bad_secret_is_credential_invalid() -> None:
    entra = FakeEntra(refuse(7000215, "invalid_client", "Invalid client secret provided.", status=401))
    with pytest.raises(AuthError) as info:
        provider(entra).get_token(TENANT)
    assert info.value.code is ErrorCode.CREDENTIAL_INVALID and not info.value.retryable


def test_unknown_tenant_is_tenant_not_found_with_entra_words() -> None:
    entra = FakeEntra(unknown_tenants=frozenset({TENANT}))
    with pytest.raises(AuthError) as info:
        provider(entra).get_token(TENANT)
    assert info.value.code is ErrorCode.TENANT_NOT_FOUND
    assert "AADSTS90002" in info.value.detail and "Trace ID" not in info.value.detail


def test_entra_5xx_is_a_transient_network_error() -> None:
    with pytest.raises(TransientError) as info:
        provider(FakeEntra(lambda tenant, form: (503, {"error": "x"}))).get_token(TENANT)
    assert info.value.code is ErrorCode.NETWORK_ERROR


def test_connection_failure_to_entra_is_a_transient_network_error() -> None:
    class Down(FakeEntra):
        def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: object = None,
                 verify: object = True, cert: object = None, proxies: object = None) -> requests.Response:
            raise requests.ConnectionError("connection refused")

    with pytest.raises(TransientError) as info:
        provider(Down()).get_token(TENANT)
    assert info.value.code is ErrorCode.NETWORK_ERROR


def test_a_malformed_tenant_id_is_refused_before_any_request() -> None:
    entra = FakeEntra()
    with pytest.raises(AuthError) as info:
        provider(entra).get_token("evil.example/../x")
    assert info.value.code is ErrorCode.TENANT_NOT_FOUND and entra.log == []


def test_certificate_credential_sends_a_signed_assertion_not_a_secret() -> None:
    pem, cert = make_pem()
    entra = FakeEntra()
    provider(entra, credential=certificate_credential_from_pem(pem)).get_token(TENANT)
    form = entra.token_forms[0]
    assert "client_secret" not in form
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    header = json.loads(_b64(form["client_assertion"][0].split(".")[0]))
    assert _b64(header["x5t"]) == cert.fingerprint(hashes.SHA1())


def test_a_callable_credential_supplies_the_assertion() -> None:
    entra = FakeEntra()
    provider(entra, credential=lambda: "federated.jwt.value").get_token(TENANT)
    assert entra.token_forms[0]["client_assertion"] == ["federated.jwt.value"]


# --------------------------------------------------------------------------- certificates


def make_pem(*, cert_first: bool = False) -> tuple[bytes, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "provisioning-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    return (cert_pem + key_pem if cert_first else key_pem + cert_pem), cert


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("cert_first", [False, True])
def test_pem_with_key_and_certificate_gives_the_sha1_thumbprint(cert_first: bool) -> None:
    pem, cert = make_pem(cert_first=cert_first)
    credential = certificate_credential_from_pem(pem)
    assert credential["thumbprint"] == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert credential["private_key"].startswith("-----BEGIN PRIVATE KEY-----")


def test_pem_without_a_key_or_with_a_foreign_certificate_is_refused() -> None:
    pem, _ = make_pem()
    other_pem, _ = make_pem()
    cert_only = pem[pem.index(b"-----BEGIN CERTIFICATE"):]
    with pytest.raises(ValueError, match="no private key"):
        certificate_credential_from_pem(cert_only)
    key_only = pem[:pem.index(b"-----BEGIN CERTIFICATE")]
    foreign_cert = other_pem[other_pem.index(b"-----BEGIN CERTIFICATE"):]
    with pytest.raises(ValueError, match="matches"):
        certificate_credential_from_pem(key_only + foreign_cert)


# --------------------------------------------------------------------------- settings


def config_error(settings: Settings) -> ProvisioningError:
    with pytest.raises(ProvisioningError) as info:
        token_provider_from_settings(settings)
    assert info.value.code is ErrorCode.CONFIG_INVALID
    return info.value


def test_missing_client_id_is_named() -> None:
    assert "EXO_CLIENT_ID" in config_error(Settings(exo_auth_mode="secret", exo_client_secret=SECRET)).detail


def test_secret_mode_without_a_secret_names_the_variable() -> None:
    assert "EXO_CLIENT_SECRET" in config_error(Settings(exo_auth_mode="secret", exo_client_id=CLIENT_ID)).detail


def test_certificate_mode_without_a_source_names_the_variables() -> None:
    detail = config_error(Settings(exo_auth_mode="certificate", exo_client_id=CLIENT_ID)).detail
    assert "EXO_CERTIFICATE_PATH" in detail and "KEY_VAULT_URL" in detail


def test_key_vault_halves_without_each_other_are_named() -> None:
    assert "EXO_CERTIFICATE_NAME" in config_error(Settings(
        exo_auth_mode="certificate", exo_client_id=CLIENT_ID, key_vault_url="https://kv.vault.azure.net")).detail
    assert "KEY_VAULT_URL" in config_error(Settings(
        exo_auth_mode="certificate", exo_client_id=CLIENT_ID, exo_certificate_name="exo-app")).detail


def test_an_unreadable_or_broken_certificate_file_names_the_variable(tmp_path: Path) -> None:
    missing = Settings(exo_auth_mode="certificate", exo_client_id=CLIENT_ID,
                       exo_certificate_path=str(tmp_path / "absent.pem"))
    assert "EXO_CERTIFICATE_PATH" in config_error(missing).detail
    broken = tmp_path / "broken.pem"
    broken.write_text("not a pem")
    assert "EXO_CERTIFICATE_PATH" in config_error(Settings(
        exo_auth_mode="certificate", exo_client_id=CLIENT_ID, exo_certificate_path=str(broken))).detail


def test_certificate_file_mode_builds_a_provider_with_the_settings_authority(tmp_path: Path) -> None:
    pem, _ = make_pem()
    path = tmp_path / "app.pem"
    path.write_bytes(pem)
    tokens = token_provider_from_settings(Settings(
        exo_auth_mode="certificate", exo_client_id=CLIENT_ID, exo_certificate_path=str(path),
        entra_authority_host=HOST))
    assert tokens.authority_host == HOST and tokens.client_id == CLIENT_ID


def test_secret_and_federated_modes_build_providers_without_network() -> None:
    assert token_provider_from_settings(Settings(exo_auth_mode="secret", exo_client_id=CLIENT_ID,
                                                 exo_client_secret=SECRET)).client_id == CLIENT_ID
    assert token_provider_from_settings(Settings(exo_auth_mode="federated", exo_client_id=CLIENT_ID,
                                                 managed_identity_client_id="mi")).client_id == CLIENT_ID


def test_importing_auth_and_building_a_provider_loads_neither_msal_nor_azure_sdks() -> None:
    code = (
        "import sys\n"
        "from shared.auth import token_provider_from_settings\n"
        "from shared.settings import Settings\n"
        "token_provider_from_settings(Settings(exo_auth_mode='federated', exo_client_id='x'))\n"
        "print(sorted(m for m in ('msal', 'azure.identity', 'azure.keyvault.secrets') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- federated assertion


@dataclass
class FakeAccessToken:
    token: str
    expires_on: int


class FakeManagedIdentity:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str) -> FakeAccessToken:
        self.scopes.append(scopes)
        return FakeAccessToken(f"mi-token-{len(self.scopes)}", 10_000)


def test_federated_assertion_is_reused_until_near_expiry() -> None:
    now = [1_000.0]
    identity = FakeManagedIdentity()
    assertion = ManagedIdentityAssertion(credential=identity, refresh_margin=300, clock=lambda: now[0])
    assert assertion() == assertion() == "mi-token-1"
    assert identity.scopes == [("api://AzureADTokenExchange/.default",)]
    now[0] = 9_701.0  # inside the margin before expires_on=10_000
    assert assertion() == "mi-token-2"


def test_federated_assertion_failure_maps_to_credential_invalid() -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class Refusing:
        def get_token(self, *scopes: str) -> FakeAccessToken:
            raise ClientAuthenticationError("ManagedIdentityCredential authentication unavailable")

    with pytest.raises(AuthError) as info:
        ManagedIdentityAssertion(credential=Refusing())()
    assert info.value.code is ErrorCode.CREDENTIAL_INVALID


def test_federated_assertion_errors_surface_through_the_provider() -> None:
    from azure.core.exceptions import ServiceRequestError

    class Unreachable:
        def get_token(self, *scopes: str) -> FakeAccessToken:
            raise ServiceRequestError("IMDS unreachable")

    with pytest.raises(TransientError) as info:
        provider(FakeEntra(), credential=ManagedIdentityAssertion(credential=Unreachable())).get_token(TENANT)
    assert info.value.code is ErrorCode.NETWORK_ERROR


def test_a_key_vault_certificate_secret_is_read_as_pkcs12_or_pem() -> None:
    from cryptography.hazmat.primitives.serialization import pkcs12

    pem, cert = make_pem()
    key = serialization.load_pem_private_key(pem[:pem.index(b"-----BEGIN CERTIFICATE")], password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    pfx = pkcs12.serialize_key_and_certificates(b"exo-app", key, cert, None, serialization.NoEncryption())
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()
    as_pkcs12 = certificate_credential_from_secret(base64.b64encode(pfx).decode(), "application/x-pkcs12")
    as_pem = certificate_credential_from_secret(pem.decode(), "application/x-pem-file")
    assert as_pkcs12["thumbprint"] == as_pem["thumbprint"] == thumbprint
    with pytest.raises(ValueError, match="neither PEM nor base64"):
        certificate_credential_from_secret("not base64 ***", "")


def test_missing_service_principal_means_the_app_is_not_in_the_tenant() -> None:
    error = error_from_msal_result({
        "error": "invalid_client",
        "error_description": "AADSTS7000229: The client application 11111111-1111-1111-1111-111111111111 is "
                             f"missing service principal in the tenant {TENANT}.",
        "error_codes": [7000229],
    })
    assert error.code is ErrorCode.APP_NOT_IN_TENANT
