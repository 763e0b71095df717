"""Who asked: the requester of an HTTP call, from the headers App Service Authentication sets.

With App Service Authentication (Easy Auth) in front of the app, a signed-in request reaches
the code with `X-MS-CLIENT-PRINCIPAL-NAME` (a human-readable name: UPN or e-mail),
`X-MS-CLIENT-PRINCIPAL-ID` and `X-MS-CLIENT-PRINCIPAL` (Base64 JSON of the token's claims).
The platform does not let outside requests set these headers, so they are present only when
it set them (https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities).

That guarantee holds only where Easy Auth is on. So the headers are believed only with
`OPERATOR_AUTH=entra` (set by the Bicep together with authsettingsV2); with function keys
(`key`: local runs, Core Tools, the automation route) the requester is always "function key",
whatever headers the caller sent, so nobody can write a colleague's name into the history.

Pure: headers in, a Requester out.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FUNCTION_KEY = "function key"
NAME_HEADER = "x-ms-client-principal-name"
ID_HEADER = "x-ms-client-principal-id"
PRINCIPAL_HEADER = "x-ms-client-principal"
MAX_NAME = 256
MAX_PRINCIPAL_BYTES = 16 * 1024

# Claims that name a person (or, failing that, an application) in an Entra ID token, best first.
_NAME_CLAIMS = (
    "preferred_username",
    "upn",
    "email",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
    "name",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
)
_ID_CLAIMS = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
_APP_CLAIMS = ("azp", "appid")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class Requester:
    """The caller as the history records it."""

    name: str  # shown to operators: "taro@contoso.example", "app 1c2d…", or "function key"
    signed_in: bool
    principal_id: str | None = None


KEY_HOLDER = Requester(FUNCTION_KEY, signed_in=False)


def identify(headers: Mapping[str, str], *, operator_auth: str) -> Requester:
    """The requester of a call that reached the app (the platform already let it through)."""
    if operator_auth != "entra":
        return KEY_HOLDER
    lowered = {k.lower(): v for k, v in headers.items()}
    claims = _claims(lowered.get(PRINCIPAL_HEADER, ""))
    principal_id = _clean(lowered.get(ID_HEADER, "")) or _first(claims, _ID_CLAIMS)
    name = _clean(lowered.get(NAME_HEADER, "")) or _first(claims, _NAME_CLAIMS)
    if not name:
        app = _first(claims, _APP_CLAIMS)
        name = f"app {app}" if app else (f"principal {principal_id}" if principal_id else "")
    if not name:
        return KEY_HOLDER
    return Requester(name, signed_in=True, principal_id=principal_id or None)


def signed_in(headers: Mapping[str, str], *, operator_auth: str) -> bool:
    """Whether an operators' route may answer: always with keys, only signed in with Entra ID.

    With `entra` the operators' routes are anonymous to the Functions host (Easy Auth is the
    gate); refusing a call without the platform's principal headers keeps them closed if
    App Service Authentication were ever switched off.
    """
    return operator_auth != "entra" or identify(headers, operator_auth=operator_auth).signed_in


def _claims(encoded: str) -> dict[str, str]:
    """typ -> val of the X-MS-CLIENT-PRINCIPAL claims; {} for anything that is not that shape."""
    if not encoded or len(encoded) > MAX_PRINCIPAL_BYTES:
        return {}
    try:
        doc: Any = json.loads(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=False))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return {}
    claims = doc.get("claims") if isinstance(doc, dict) else None
    out: dict[str, str] = {}
    for claim in claims if isinstance(claims, list) else []:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            out.setdefault(claim["typ"], claim["val"])
    name_typ = doc.get("name_typ") if isinstance(doc, dict) else None
    if isinstance(name_typ, str) and name_typ in out:
        out.setdefault("name", out[name_typ])
    return out


def _first(claims: Mapping[str, str], names: tuple[str, ...]) -> str:
    return next((value for value in (_clean(claims.get(n, "")) for n in names) if value), "")


def _clean(value: str) -> str:
    """One printable line of at most MAX_NAME characters: it is shown on the page and in logs."""
    return _UNPRINTABLE.sub("", value).strip()[:MAX_NAME]


__all__ = ["FUNCTION_KEY", "KEY_HOLDER", "Requester", "identify", "signed_in"]
