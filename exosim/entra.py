"""Microsoft Entra ID's side: app registrations, client authentication, AADSTS errors.

The product authenticates to each customer tenant with the client-credentials grant of one
multi-tenant app, by secret (local development), certificate (a JWT signed with the app
certificate) or federated assertion (a managed identity's token for
`api://AzureADTokenExchange`). The checks below are the ones whose failures the product must
tell apart (docs/exchange-protocol.md §1): an unknown or unconsented app (AADSTS700016), a wrong
secret (7000215), a bad assertion (700027), a tenant that does not exist (90002).

JWTs are parsed with the standard library and verified with `cryptography` only, so the
simulator does not share a JWT library (and its bugs) with the client it tests.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from exosim.faults import HttpReply

# The resource the product asks a token for; anything else is refused, as Entra refuses a
# scope the app has no permission for.
EXCHANGE_SCOPE = "https://outlook.office365.com/.default"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience, not a secret

# The simulator's own app registration, used when a test registers nothing else.
DEFAULT_CLIENT_ID = "00000000-0000-0000-0000-0000000000a1"
DEFAULT_CLIENT_SECRET = "exosim-local-client-secret"  # noqa: S105 - a well-known local test value

TOKEN_LIFETIME_SECONDS = 3599


@dataclass(frozen=True)
class ClientRegistration:
    """One app registration and the credentials Entra would accept for it.

    `secret` None: the app has no secret. `certificate_pem` None: certificate assertions are
    checked on their claims only (so a test can use any throw-away certificate); set: the
    signature and the `x5t`/`x5t#S256` thumbprint must match it. `federation` enables the
    federated identity credential (managed identity assertion); `federated_subject`, when set,
    is the only `sub` accepted.
    """

    client_id: str
    secret: str | None = None
    secret_expired: bool = False
    certificate_pem: str | None = None
    federation: bool = False
    federated_subject: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "has_secret": self.secret is not None,
            "secret_expired": self.secret_expired,
            "has_certificate": self.certificate_pem is not None,
            "federation": self.federation,
            "federated_subject": self.federated_subject,
        }


class AadError(Exception):
    """A token-endpoint failure in Entra's response shape."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.code = code
        self.description = description

    def reply(self) -> HttpReply:
        return aad_error_reply(self.status, self.error, self.code, self.description)


def aad_error_reply(status: int, error: str, code: int, description: str) -> HttpReply:
    """Entra's error body: error, `AADSTSnnnnnn: …` description with trace ids, error_codes."""
    trace_id = str(uuid.uuid4())
    correlation_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    payload = {
        "error": error,
        "error_description": (
            f"AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {stamp}"
        ),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return HttpReply.json(status, payload, (("Cache-Control", "no-store"),))


def consent_missing(client_id: str, tenant: str, code: int) -> AadError:
    if code == 65001:
        return AadError(
            400,
            "invalid_grant",
            65001,
            f"The user or administrator has not consented to use the application with ID '{client_id}'. "
            "Send an interactive authorization request for this user and resource.",
        )
    return AadError(
        400,
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen "
        "if the application has not been installed by the administrator of the tenant or consented to by any "
        "user in the tenant. You may have sent your authentication request to the wrong tenant.",
    )


def tenant_not_found(tenant: str) -> AadError:
    return AadError(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud. Check with your subscription administrator, this may happen if there are no active "
        "subscriptions for the tenant.",
    )


def bad_assertion(reason: str) -> AadError:
    return AadError(401, "invalid_client", 700027, f"Client assertion failed validation: {reason}")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Jwt:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse_jwt(token: str) -> Jwt:
    """Split and decode a compact JWS; raises AadError 700027 when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        raise bad_assertion("the client assertion is not a JWT (expected three dot-separated parts).")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise bad_assertion("the client assertion could not be decoded.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise bad_assertion("the client assertion header and payload must be JSON objects.")
    return Jwt(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def certificate_thumbprints(certificate_pem: str) -> tuple[str, str]:
    """`x5t` (SHA-1) and `x5t#S256` (SHA-256) of a certificate, base64url as in JWT headers."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    return (
        _b64url(certificate.fingerprint(hashes.SHA1())),  # noqa: S303 - x5t is SHA-1 by definition
        _b64url(certificate.fingerprint(hashes.SHA256())),
    )


def verify_signature(certificate_pem: str, jwt: Jwt) -> bool:
    """Whether the JWT is signed by the certificate's key (RS256, PS256 or ES256)."""
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    key = certificate.public_key()
    algorithm = jwt.header.get("alg")
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm == "RS256":
            key.verify(jwt.signature, jwt.signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, rsa.RSAPublicKey) and algorithm == "PS256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            key.verify(jwt.signature, jwt.signing_input, pss, hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm == "ES256" and len(jwt.signature) == 64:
            r = int.from_bytes(jwt.signature[:32], "big")
            s = int.from_bytes(jwt.signature[32:], "big")
            key.verify(encode_dss_signature(r, s), jwt.signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def check_secret(client: ClientRegistration, secret: str) -> None:
    if client.secret is None or not hmac.compare_digest(client.secret.encode(), secret.encode()):
        raise AadError(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{client.client_id}'.",
        )
    if client.secret_expired:
        raise AadError(
            401,
            "invalid_client",
            7000222,
            f"The provided client secret keys for app '{client.client_id}' are expired. Visit the Azure portal "
            "to create new keys for your app.",
        )


def check_assertion(
    client: ClientRegistration,
    assertion: str,
    *,
    token_endpoint_paths: tuple[str, ...],
    now: float,
) -> str:
    """Accept or refuse a client assertion; returns "certificate" or "federated"."""
    jwt = parse_jwt(assertion)
    claims = jwt.claims
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise bad_assertion("the assertion has no 'exp' claim.")
    if exp <= now:
        raise bad_assertion("the assertion has expired ('exp' is in the past).")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf > now + 300:
        raise bad_assertion("the assertion is not yet valid ('nbf' is in the future).")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if TOKEN_EXCHANGE_AUDIENCE in audiences:
        if not client.federation:
            raise bad_assertion(
                f"no federated identity credential of app '{client.client_id}' matches the presented assertion."
            )
        if client.federated_subject is not None and claims.get("sub") != client.federated_subject:
            raise bad_assertion(
                f"the assertion subject '{claims.get('sub')}' does not match the federated identity credential."
            )
        return "federated"
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise bad_assertion(f"'iss' and 'sub' must both be the client id '{client.client_id}'.")
    if not any(isinstance(a, str) and a.rstrip("/").lower().endswith(token_endpoint_paths) for a in audiences):
        raise bad_assertion("the 'aud' claim is not this tenant's token endpoint.")
    if client.certificate_pem is not None:
        sha1, sha256 = certificate_thumbprints(client.certificate_pem)
        presented = jwt.header.get("x5t#S256") or jwt.header.get("x5t")
        # Some clients (MSAL among them) keep the base64 padding; the thumbprint is the same.
        if not isinstance(presented, str) or presented.rstrip("=") not in (sha1, sha256):
            raise bad_assertion(
                f"the certificate with identifier '{presented}' used to sign the client assertion is not "
                f"registered on application '{client.client_id}'."
            )
        if not verify_signature(client.certificate_pem, jwt):
            raise bad_assertion("the client assertion signature is invalid.")
    return "certificate"


def new_access_token() -> str:
    """An opaque token: the product must treat tokens as opaque, so they are not JWTs."""
    return secrets.token_urlsafe(32)
