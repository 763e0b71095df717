"""App-only tokens for the Exchange admin API: one MSAL confidential client per customer tenant.

The product is one multi-tenant app registration acting in thousands of customer tenants.
Each tenant gets its own `msal.ConfidentialClientApplication` (authority
`{host}/{tenant}`) whose token cache serves every call until the token nears expiry, so a
process sends one token request per tenant per token lifetime. A lock per tenant keeps
concurrent first calls from building two applications or sending two requests, while
different tenants never wait for each other.

MSAL reports Entra's refusals as result dicts (`error`, `error_codes`, `error_description`),
not exceptions; they are turned into the taxonomy of `errors.py` here, with Entra's own words
kept and the credential never repeated.

MSAL, azure-identity and azure-keyvault-secrets are imported only when a token or a
certificate is first needed, so code paths that never talk to Exchange (a status lookup)
never load them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

import requests

from .errors import AuthError, ErrorCode, ProvisioningError, TransientError
from .exchange import https_session
from .settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = [
    "EXCHANGE_SCOPE",
    "Credential",
    "ManagedIdentityAssertion",
    "MsalTokenProvider",
    "certificate_credential_from_pem",
    "certificate_credential_from_secret",
    "error_from_msal_result",
    "token_provider_from_settings",
]

EXCHANGE_SCOPE = "https://outlook.office365.com/.default"
MICROSOFT_AUTHORITY_HOST = "https://login.microsoftonline.com"
FEDERATION_SCOPE = "api://AzureADTokenExchange/.default"

# Entra's public and sovereign-cloud hosts. MSAL validates these through Microsoft's instance
# discovery; any other host (the local simulator, a test double) must switch that off, or MSAL
# would ask login.microsoftonline.com whether the host is an authority and be told no.
_MICROSOFT_HOSTS = frozenset({
    "login.microsoftonline.com",
    "login.microsoft.com",
    "login.windows.net",
    "sts.windows.net",
    "login-us.microsoftonline.com",
    "login.microsoftonline.us",
    "login.usgovcloudapi.net",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
    "login.microsoftonline.de",
})

# 700016: app not found in the tenant's directory; 7000229: no service principal in the tenant
# (arrives as invalid_client, but it means the same). Nobody consented, or the enterprise app
# was deleted: waiting cannot help, a person must act at once. 65001: the app is there but a
# permission is not consented, which, like a 401 from the admin API, may be a grant still
# propagating.
_NOT_IN_TENANT_CODES = frozenset({700016, 7000229})
_CONSENT_CODES = frozenset({65001})
_CREDENTIAL_CODES = frozenset({7000215, 7000222, 700027, 700024})
_TENANT_CODES = frozenset({90002})
_TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
_AADSTS = re.compile(r"AADSTS(\d+)")
# Entra appends per-request identifiers that only make stored errors differ from each other.
_TRACE_TAIL = re.compile(r"\s*(?:\r?\n)*\s*(?:Trace ID|Correlation ID|Timestamp):.*$", re.DOTALL | re.IGNORECASE)
_PEM_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----.+?-----END (?:[A-Z]+ )?PRIVATE KEY-----", re.DOTALL)
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")

# A client secret, a certificate ({"private_key", "thumbprint"} or {"private_key",
# "public_certificate"}), or a callable returning a client assertion JWT.
Credential = str | Mapping[str, str] | Callable[[], str]


class MsalTokenProvider:
    """App-only bearer tokens for the Exchange scope, one cached MSAL client per tenant."""

    def __init__(
        self,
        *,
        client_id: str,
        credential: Credential,
        authority_host: str = MICROSOFT_AUTHORITY_HOST,
        timeout: float = 30.0,
        http_client: requests.Session | None = None,
        scope: str = EXCHANGE_SCOPE,
        max_tenants: int = 2000,
    ) -> None:
        if not client_id:
            raise ValueError("client_id is required")
        self.client_id = client_id
        self.authority_host = authority_host.rstrip("/")
        self._credential = credential
        self._scope = scope
        # MSAL's own HTTP goes through a Session that trusts REQUESTS_CA_BUNDLE/SSL_CERT_FILE
        # and has a timeout; MSAL applies neither to a caller-supplied client by itself.
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else https_session(timeout=timeout)
        host = (urlsplit(self.authority_host).hostname or "").lower()
        self._microsoft_host = host in _MICROSOFT_HOSTS
        # One MSAL app (and token cache) per tenant, least recently used first. Bounded: an
        # instance serving thousands of tenants would otherwise keep every app for its whole
        # life (about 12 KiB each); a tenant evicted here simply asks Entra again.
        self._apps: OrderedDict[str, Any] = OrderedDict()
        self._max_tenants = max(1, max_tenants)
        self._apps_guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Per tenant, the token the last get_token fetched from Entra (not from MSAL's cache).
        self._fresh: dict[str, str] = {}

    def admin_consent_url(self, tenant_id: str) -> str:
        """Where a customer's Global Administrator grants the app its permissions."""
        return f"{self.authority_host}/{quote(tenant_id, safe='')}/adminconsent?client_id={quote(self.client_id)}"

    def get_token(self, tenant_id: str) -> str:
        """A valid access token for `tenant_id`, from MSAL's cache when it has one."""
        if not _TENANT_ID.match(tenant_id):
            raise AuthError(ErrorCode.TENANT_NOT_FOUND, f"{tenant_id!r} is not a tenant ID or domain name")
        key = tenant_id.casefold()
        with self._lock_for(key):
            app = self._cached_app(key)
            try:
                if app is None:
                    app = self._new_app(tenant_id)
                    self._remember_app(key, app)
                result = app.acquire_token_for_client(scopes=[self._scope])
            except ProvisioningError:
                raise
            except Exception as exc:
                mapped = self._error_from_exception(exc, tenant_id)
                if mapped is None:
                    raise
                raise mapped from exc
            token = result.get("access_token") if isinstance(result, Mapping) else None
            if isinstance(token, str) and token:
                with self._apps_guard:
                    if isinstance(result, Mapping) and result.get("token_source") == "identity_provider":
                        self._fresh[key] = token
                    else:
                        self._fresh.pop(key, None)
                return token
            error = error_from_msal_result(
                result if isinstance(result, Mapping) else {},
                consent_url=self.admin_consent_url(tenant_id),
            )
            if not error.retryable:
                # Start the next attempt from a fresh client: MSAL's HTTP layer would otherwise
                # replay this same 400 for a minute, hiding an admin's consent given meanwhile.
                # A throttled or failing Entra keeps the client, so MSAL's Retry-After holds.
                self._forget_app(key)
        raise error

    def token_is_fresh(self, tenant_id: str, token: str) -> bool:
        """Whether `token` is the one the last get_token for this tenant obtained from Entra.

        Such a token was issued after any grant the customer completed before it, so a 401 on
        it means the permission is really missing; a token from the cache may predate a grant.
        """
        with self._apps_guard:
            return self._fresh.get(tenant_id.casefold()) == token

    def invalidate(self, tenant_id: str) -> None:
        """Forget the tenant's cached token, so the next get_token asks Entra again.

        For a token Exchange rejected before MSAL thought it expired (revoked, clock skew).
        MSAL has no "force refresh" for client credentials, so the tenant's app is dropped.
        """
        key = tenant_id.casefold()
        with self._lock_for(key):
            self._forget_app(key)

    def close(self) -> None:
        """Release pooled connections of the Session this provider created (not an injected one)."""
        if self._owns_http:
            self._http.close()

    def _cached_app(self, key: str) -> Any:
        with self._apps_guard:
            app = self._apps.get(key)
            if app is not None:
                self._apps.move_to_end(key)
            return app

    def _remember_app(self, key: str, app: Any) -> None:
        with self._apps_guard:
            self._apps[key] = app
            self._apps.move_to_end(key)
            while len(self._apps) > self._max_tenants:
                self._apps.popitem(last=False)

    def _forget_app(self, key: str) -> None:
        with self._apps_guard:
            self._apps.pop(key, None)
            self._fresh.pop(key, None)

    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    def _new_app(self, tenant_id: str) -> Any:
        import msal  # lazy: only code that needs a token pays for MSAL

        credential: Any
        if isinstance(self._credential, str):
            credential = self._credential
        elif isinstance(self._credential, Mapping):
            credential = dict(self._credential)
        else:
            credential = {"client_assertion": self._credential}
        options: dict[str, Any] = {}
        if not self._microsoft_host:
            options["instance_discovery"] = False
        return msal.ConfidentialClientApplication(
            self.client_id,
            client_credential=credential,
            authority=f"{self.authority_host}/{tenant_id}",
            http_client=self._http,
            **options,
        )

    def _error_from_exception(self, exc: Exception, tenant_id: str) -> ProvisioningError | None:
        """The taxonomy error for an exception raised inside MSAL, or None for a bug."""
        from msal.exceptions import MsalServiceError

        if isinstance(exc, requests.RequestException | MsalServiceError | json.JSONDecodeError):
            # Connection failures, timeouts, 5xx (MSAL raises its own error for those) and a
            # body that is not JSON (a proxy's page): all worth another try.
            return TransientError(
                ErrorCode.NETWORK_ERROR,
                f"Entra ID token request for tenant {tenant_id}: {type(exc).__name__}: {_short(str(exc))}",
            )
        if isinstance(exc, ValueError):
            # MSAL turns a 4xx from the tenant's OpenID discovery into a ValueError that drops
            # Entra's body; the original is its __context__. An unknown tenant ends here.
            texts = _exception_texts(exc)
            for text in texts:
                body = _json_in(text)
                if body is not None and (body.get("error") or body.get("error_codes")):
                    return error_from_msal_result(body, consent_url=self.admin_consent_url(tenant_id))
            if any("authority configuration" in text or "OIDC Discovery failed" in text for text in texts):
                return AuthError(
                    ErrorCode.TENANT_NOT_FOUND,
                    f"Entra ID has no OpenID configuration for tenant {tenant_id}: {_short(texts[-1])}",
                )
        return None


def error_from_msal_result(result: Mapping[str, Any], *, consent_url: str = "") -> ProvisioningError:
    """The taxonomy error for MSAL's error dict (Entra's `error`, `error_codes`, description)."""
    description = _clean_description(str(result.get("error_description") or ""))
    error = str(result.get("error") or "")
    codes = {int(c) for c in result.get("error_codes") or () if isinstance(c, int | str) and str(c).isdigit()}
    codes.update(int(found) for found in _AADSTS.findall(description))
    detail = description or error or "Entra ID refused the token request without a description"

    hint = f"Admin consent URL / 管理者同意 URL: {consent_url}" if consent_url else ""
    if codes & _NOT_IN_TENANT_CODES:
        return AuthError(ErrorCode.APP_NOT_IN_TENANT, detail, needs_attention=True, extra_hint=hint)
    if codes & _CONSENT_CODES:
        return AuthError(ErrorCode.CONSENT_MISSING, detail, needs_attention=True, extra_hint=hint)
    if codes & _CREDENTIAL_CODES:
        return AuthError(ErrorCode.CREDENTIAL_INVALID, detail)
    if codes & _TENANT_CODES or error == "invalid_tenant":
        return AuthError(ErrorCode.TENANT_NOT_FOUND, detail)
    if error in _TRANSIENT_ERRORS:
        return TransientError(ErrorCode.NETWORK_ERROR, detail)
    if error == "invalid_client":
        return AuthError(ErrorCode.CREDENTIAL_INVALID, detail)
    if error == "unauthorized_client":
        # Entra's error for an app the tenant does not know (700016), when the code is missing.
        return AuthError(ErrorCode.APP_NOT_IN_TENANT, detail, needs_attention=True, extra_hint=hint)
    # An AADSTS code the product has no rule for: keep Entra's words and ask a human.
    return AuthError(ErrorCode.UNHANDLED, detail, needs_attention=True)


def _clean_description(text: str) -> str:
    return _TRACE_TAIL.sub("", text).strip()


def _exception_texts(exc: BaseException) -> list[str]:
    texts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(texts) < 5:
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    return texts


def _json_in(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- certificates


def certificate_credential_from_pem(pem: bytes | str) -> dict[str, str]:
    """MSAL's certificate credential from a PEM holding the private key and the certificate.

    The SHA-1 thumbprint (the `x5t` Entra matches against the app registration) is computed
    here, so an operator only ever supplies the one file Key Vault or `openssl` produces.
    """
    from cryptography import x509  # lazy, like MSAL
    from cryptography.hazmat.primitives import serialization

    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key_blocks = _PEM_KEY.findall(data)
    if not key_blocks:
        raise ValueError("the PEM holds no private key")
    key = serialization.load_pem_private_key(key_blocks[0], password=None)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError("the PEM holds no certificate") from exc
    return _msal_certificate(key, certificates)


def _msal_certificate(key: PrivateKeyTypes, certificates: list[Any]) -> dict[str, str]:
    """MSAL's certificate dict: the key as PKCS#8 PEM and the thumbprint of its own certificate."""
    from cryptography.hazmat.primitives import hashes, serialization

    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    leaf = next(
        (
            cert
            for cert in certificates
            if cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            == public
        ),
        None,
    )
    if leaf is None:
        raise ValueError("no certificate in the PEM matches its private key")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    # SHA-1 here names the certificate (Entra's x5t thumbprint); it protects nothing.
    return {"private_key": key_pem, "thumbprint": leaf.fingerprint(hashes.SHA1()).hex().upper()}  # noqa: S303


def _certificate_from_key_vault(vault_url: str, name: str, managed_identity_client_id: str) -> dict[str, str]:
    """The app certificate kept in Key Vault, read as a secret (that is how its key is exported)."""
    from azure.core.exceptions import (  # lazy: only certificate mode in Azure
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )
    from azure.keyvault.secrets import SecretClient

    credential = _azure_credential(managed_identity_client_id, allow_developer=True)
    client = SecretClient(vault_url=vault_url, credential=credential)
    try:
        secret = client.get_secret(name)
    except ResourceNotFoundError as exc:
        raise _config_error("EXO_CERTIFICATE_NAME", f"{name!r} is not in Key Vault {vault_url}") from exc
    except ClientAuthenticationError as exc:
        raise _config_error(
            "MANAGED_IDENTITY_CLIENT_ID", f"the identity could not authenticate to Key Vault: {_short(str(exc))}"
        ) from exc
    except ServiceRequestError as exc:
        raise TransientError(ErrorCode.NETWORK_ERROR, f"Key Vault {vault_url}: {_short(str(exc))}") from exc
    except HttpResponseError as exc:
        raise _config_error(
            "KEY_VAULT_URL", f"reading {name!r} failed (HTTP {exc.status_code}): {_short(str(exc.message))}"
        ) from exc
    finally:
        client.close()
    try:
        return certificate_credential_from_secret(secret.value or "", secret.properties.content_type or "")
    except ValueError as exc:
        raise _config_error("EXO_CERTIFICATE_NAME", f"{name!r} is not a certificate with its key: {exc}") from exc


def certificate_credential_from_secret(value: str, content_type: str) -> dict[str, str]:
    """MSAL's certificate credential from a Key Vault certificate read as a secret.

    Key Vault hands out a certificate's private key only through its secret, as PEM or as
    base64 PKCS#12 depending on the certificate's content type; both are accepted.
    """
    from cryptography.hazmat.primitives.serialization import pkcs12

    if "pkcs12" in content_type.lower() or not value.lstrip().startswith("-----"):
        try:
            data = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError("the secret is neither PEM nor base64 PKCS#12") from exc
        key, cert, extra = pkcs12.load_key_and_certificates(data, None)
        if key is None or cert is None:
            raise ValueError("the PKCS#12 holds no key or no certificate")
        return _msal_certificate(key, [cert, *extra])
    return certificate_credential_from_pem(value)


# --------------------------------------------------------------------------- federated


class _AccessToken(Protocol):
    @property
    def token(self) -> str: ...
    @property
    def expires_on(self) -> int: ...


class AzureTokenCredential(Protocol):
    """The part of azure-identity's credentials this module uses."""

    def get_token(self, *scopes: str) -> _AccessToken: ...


class ManagedIdentityAssertion:
    """A client assertion from the Function App's managed identity (workload identity federation).

    The app registration trusts the identity through a federated credential, so no secret or
    certificate exists to leak or expire. MSAL calls this for every token request it sends; the
    identity's token is reused until `refresh_margin` seconds before it expires.
    """

    def __init__(
        self,
        *,
        client_id: str | None = None,
        credential: AzureTokenCredential | None = None,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client_id = client_id
        self._credential = credential
        self._margin = refresh_margin
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._expires_on = 0.0

    def __call__(self) -> str:
        with self._lock:
            if self._token and self._clock() < self._expires_on - self._margin:
                return self._token
            if self._credential is None:
                self._credential = _azure_credential(self._client_id or "", allow_developer=False)
            from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

            try:
                access = self._credential.get_token(FEDERATION_SCOPE)
            except ClientAuthenticationError as exc:
                raise AuthError(
                    ErrorCode.CREDENTIAL_INVALID,
                    f"managed identity token for the federated credential: {_short(str(exc))}",
                ) from exc
            except ServiceRequestError as exc:
                raise TransientError(
                    ErrorCode.NETWORK_ERROR, f"managed identity endpoint: {_short(str(exc))}"
                ) from exc
            self._token, self._expires_on = access.token, float(access.expires_on)
            return self._token


def _azure_credential(managed_identity_client_id: str, *, allow_developer: bool) -> Any:
    """The user-assigned identity when named; else the system identity (or, for Key Vault
    outside Azure, whatever DefaultAzureCredential finds, such as an `az login`)."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if managed_identity_client_id:
        return ManagedIdentityCredential(client_id=managed_identity_client_id)
    if allow_developer:
        return DefaultAzureCredential()
    return ManagedIdentityCredential()


# --------------------------------------------------------------------------- settings


def token_provider_from_settings(settings: Settings) -> MsalTokenProvider:
    """The token provider EXO_AUTH_MODE asks for; a missing setting is named in the error."""
    if not settings.exo_client_id:
        raise _config_error("EXO_CLIENT_ID", "is required (the multi-tenant app's application ID)")
    credential: Credential
    mode = settings.exo_auth_mode
    if mode == "secret":
        if not settings.exo_client_secret:
            raise _config_error("EXO_CLIENT_SECRET", "is required when EXO_AUTH_MODE=secret")
        credential = settings.exo_client_secret
    elif mode == "certificate":
        credential = _certificate_from_settings(settings)
    elif mode == "federated":
        credential = ManagedIdentityAssertion(client_id=settings.managed_identity_client_id or None)
    else:
        raise _config_error("EXO_AUTH_MODE", f"{mode!r}: use certificate, secret or federated")
    return MsalTokenProvider(
        client_id=settings.exo_client_id,
        credential=credential,
        authority_host=settings.entra_authority_host,
        timeout=settings.exo_timeout_seconds,
    )


def _certificate_from_settings(settings: Settings) -> dict[str, str]:
    if settings.exo_certificate_path:
        path = Path(settings.exo_certificate_path)
        try:
            return certificate_credential_from_pem(path.read_bytes())
        except OSError as exc:
            raise _config_error("EXO_CERTIFICATE_PATH", f"{path} cannot be read: {exc.strerror}") from exc
        except ValueError as exc:
            raise _config_error("EXO_CERTIFICATE_PATH", f"{path}: {exc}") from exc
    if not settings.key_vault_url and not settings.exo_certificate_name:
        raise _config_error(
            "EXO_CERTIFICATE_PATH",
            "is required when EXO_AUTH_MODE=certificate (or set KEY_VAULT_URL and EXO_CERTIFICATE_NAME)",
        )
    if not settings.key_vault_url:
        raise _config_error("KEY_VAULT_URL", "is required with EXO_CERTIFICATE_NAME")
    if not settings.exo_certificate_name:
        raise _config_error("EXO_CERTIFICATE_NAME", "is required with KEY_VAULT_URL")
    return _certificate_from_key_vault(
        settings.key_vault_url, settings.exo_certificate_name, settings.managed_identity_client_id
    )


def _config_error(variable: str, problem: str) -> ProvisioningError:
    return ProvisioningError(ErrorCode.CONFIG_INVALID, f"{variable} {problem}", needs_attention=True)
