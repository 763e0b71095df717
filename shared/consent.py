"""The admin consent link a customer's Microsoft 365 administrator opens.

Before the product can manage a customer's outbound connectors, an administrator of that
customer's Microsoft Entra tenant must consent to the multi-tenant Exchange app (its
application permission `Exchange.ManageAsApp`). Microsoft Entra ID's admin consent endpoint
does that in one page: it lists the permissions the app registration asks for, and on
"Accept" creates the app's service principal in the tenant with those permissions granted.

    {authority_host}/{tenant_id}/adminconsent?client_id={client_id}[&redirect_uri=...]

The link names the customer's tenant, not `common` or `organizations`, so the consent lands in
the tenant the activation notice is for, and a sign-in with an account of another tenant fails
instead of consenting there. Entra ID takes the tenant "in GUID or friendly name format" (its
admin consent documentation, learn.microsoft.com/entra/identity-platform/v2-admin-consent), so
an operator who only has the customer's domain (`contoso.onmicrosoft.com`, or a verified
custom domain) can build the link too; the tenant ID remains the form Microsoft recommends.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode, urlsplit

from .notice import GUID_PATTERN

DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"

_NIL_GUID = "00000000-0000-0000-0000-000000000000"
# A DNS name of two or more labels, the last alphabetic: what a tenant's domains look like.
_DOMAIN = re.compile(r"(?=.{4,253}$)((?!-)[a-z0-9-]{1,63}(?<!-)\.)+[a-z][a-z0-9-]{0,62}(?<!-)")
# Entra ID's aliases for "some tenant": a consent link must name the customer's own.
_ALIASES = frozenset({"common", "organizations", "consumers"})


def admin_consent_url(
    tenant_id: str,
    client_id: str,
    *,
    authority_host: str = DEFAULT_AUTHORITY_HOST,
    redirect_uri: str | None = None,
    allow_domain: bool = False,
) -> str:
    """Build the admin consent URL for the customer tenant `tenant_id`.

    With `allow_domain`, `tenant_id` may also be one of the tenant's domain names (lower-cased
    in the link); the product itself always passes the notice's tenant GUID.

    `client_id` is the application (client) ID of the multi-tenant Exchange app
    (EXO_CLIENT_ID). `redirect_uri`, if given, must be one of the app registration's redirect
    URIs; Entra ID sends the administrator there afterwards with `admin_consent=True` and
    `tenant=...`, or with `error=...` when consent was refused.

    Raises ValueError naming the field (tenant_id, client_id, authority_host, redirect_uri)
    whose value cannot be used.
    """
    tenant = tenant_reference(tenant_id) if allow_domain else _guid("tenant_id", tenant_id)
    client = _guid("client_id", client_id)
    host = _https_url("authority_host", authority_host, allow_path=False).rstrip("/")
    query = {"client_id": client}
    if redirect_uri is not None:
        query["redirect_uri"] = _https_url("redirect_uri", redirect_uri, allow_path=True)
    return f"{host}/{tenant}/adminconsent?{urlencode(query)}"


def tenant_reference(value: str) -> str:
    """A tenant as the authority path names it: its GUID, or one of its domain names.

    Raises ValueError saying which forms are accepted.
    """
    text = value.strip().lower()
    if GUID_PATTERN.fullmatch(text):
        return _guid("tenant", text)
    if text in _ALIASES:
        raise ValueError(f"tenant: {value!r} names no tenant in particular; give the customer's tenant ID "
                         "(GUID) or one of its domains, e.g. contoso.onmicrosoft.com")
    domain = text.rstrip(".")
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"tenant: {value!r} is neither a tenant ID (GUID), 8-4-4-4-12 hexadecimal digits, nor a "
                         "domain name of the tenant such as contoso.onmicrosoft.com")
    return domain


def _guid(field: str, value: str) -> str:
    text = value.strip()
    if not GUID_PATTERN.fullmatch(text):
        raise ValueError(
            f"{field}: {value!r} is not a GUID (expected 8-4-4-4-12 hexadecimal digits, "
            "e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47)"
        )
    if text == _NIL_GUID:
        raise ValueError(f"{field}: the all-zero GUID is not a real ID")
    return text.lower()


def _https_url(field: str, value: str, *, allow_path: bool) -> str:
    text = value.strip()
    parts = urlsplit(text)
    # Entra ID accepts plain http only for a redirect to the local machine.
    local = allow_path and parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1")
    if (parts.scheme != "https" and not local) or not parts.hostname:
        raise ValueError(f"{field}: {value!r} must be an https:// URL")
    if parts.username or parts.password:
        raise ValueError(f"{field}: {value!r} must not carry credentials")
    if not allow_path and (parts.path not in ("", "/") or parts.query or parts.fragment):
        raise ValueError(f"{field}: {value!r} must be a host only, like {DEFAULT_AUTHORITY_HOST}")
    if parts.fragment:
        raise ValueError(f"{field}: {value!r} must not contain a #fragment")
    return text
