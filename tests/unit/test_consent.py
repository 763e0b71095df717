"""The admin consent link: its exact shape, and a clear error for each unusable input."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from shared.consent import admin_consent_url

TENANT = "3f6c2a4e-9b1d-4c8e-a7f0-5d2e1b9c8a76"
CLIENT = "a1b2c3d4-e5f6-4789-9abc-def012345678"


def test_default_authority() -> None:
    assert admin_consent_url(TENANT, CLIENT) == (
        f"https://login.microsoftonline.com/{TENANT}/adminconsent?client_id={CLIENT}"
    )


def test_ids_are_trimmed_and_lowercased() -> None:
    url = admin_consent_url(f"  {TENANT.upper()} ", CLIENT.upper())
    assert url == f"https://login.microsoftonline.com/{TENANT}/adminconsent?client_id={CLIENT}"


def test_other_authority_host_without_trailing_slash() -> None:
    url = admin_consent_url(TENANT, CLIENT, authority_host="https://login.microsoftonline.us/")
    assert url == f"https://login.microsoftonline.us/{TENANT}/adminconsent?client_id={CLIENT}"


def test_local_simulator_host_with_port() -> None:
    url = admin_consent_url(TENANT, CLIENT, authority_host="https://127.0.0.1:8443")
    assert url.startswith(f"https://127.0.0.1:8443/{TENANT}/adminconsent?")


def test_redirect_uri_is_encoded() -> None:
    redirect = "https://status.example.jp/consent/done?from=mail&lang=ja"
    url = admin_consent_url(TENANT, CLIENT, redirect_uri=redirect)
    parts = urlsplit(url)
    assert parts.path == f"/{TENANT}/adminconsent"
    assert parse_qs(parts.query) == {"client_id": [CLIENT], "redirect_uri": [redirect]}
    assert "&lang=ja" not in parts.query  # the redirect's own query is escaped, not merged


def test_redirect_to_localhost_may_be_http() -> None:
    url = admin_consent_url(TENANT, CLIENT, redirect_uri="http://localhost:8400/done")
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["http://localhost:8400/done"]


@pytest.mark.parametrize(
    "tenant",
    [
        "",
        "contoso.onmicrosoft.com",
        "common",
        "organizations",
        TENANT[:-1],
        TENANT + "0",
        "{" + TENANT + "}",
        TENANT.replace("-", ""),
        TENANT.replace("a", "g"),
        "00000000-0000-0000-0000-000000000000",
        f"{TENANT}/../common",
    ],
)
def test_bad_tenant_id_names_the_field(tenant: str) -> None:
    with pytest.raises(ValueError, match=r"^tenant_id: "):
        admin_consent_url(tenant, CLIENT)


@pytest.mark.parametrize("client", ["", "exchange-app", CLIENT[:-2], f"{CLIENT}&redirect_uri=https://evil.example"])
def test_bad_client_id_names_the_field(client: str) -> None:
    with pytest.raises(ValueError, match=r"^client_id: "):
        admin_consent_url(TENANT, client)


def test_tenant_is_checked_before_client() -> None:
    with pytest.raises(ValueError, match=r"^tenant_id: "):
        admin_consent_url("x", "y")


@pytest.mark.parametrize(
    "host",
    [
        "http://login.microsoftonline.com",
        "login.microsoftonline.com",
        "https://",
        "https://login.microsoftonline.com/common",
        "https://login.microsoftonline.com?x=1",
        "https://user:pass@login.microsoftonline.com",
    ],
)
def test_bad_authority_host_names_the_field(host: str) -> None:
    with pytest.raises(ValueError, match=r"^authority_host: "):
        admin_consent_url(TENANT, CLIENT, authority_host=host)


@pytest.mark.parametrize(
    "redirect",
    ["", "http://status.example.jp/done", "javascript:alert(1)", "https://status.example.jp/done#x", "/done"],
)
def test_bad_redirect_uri_names_the_field(redirect: str) -> None:
    with pytest.raises(ValueError, match=r"^redirect_uri: "):
        admin_consent_url(TENANT, CLIENT, redirect_uri=redirect)


@pytest.mark.parametrize(("given", "in_link"), [
    ("contoso.onmicrosoft.com", "contoso.onmicrosoft.com"),
    ("  Contoso.OnMicrosoft.com. ", "contoso.onmicrosoft.com"),
    ("mail.example.co.jp", "mail.example.co.jp"),
    (TENANT.upper(), TENANT),
])
def test_an_operator_may_name_the_tenant_by_one_of_its_domains(given: str, in_link: str) -> None:
    # Entra ID takes the tenant "in GUID or friendly name format" on the admin consent endpoint.
    url = admin_consent_url(given, CLIENT, allow_domain=True)
    assert url == f"https://login.microsoftonline.com/{in_link}/adminconsent?client_id={CLIENT}"


@pytest.mark.parametrize("tenant", [
    "", "common", "Organizations", "consumers", "contoso", "contoso.onmicrosoft.com/../common", "-a.example.com",
    "a..example.com", "contoso.onmicrosoft.com?x=1", "00000000-0000-0000-0000-000000000000", "user@contoso.com",
])
def test_a_tenant_that_is_neither_a_guid_nor_a_domain_is_refused_plainly(tenant: str) -> None:
    with pytest.raises(ValueError, match=r"^tenant: .*(GUID|all-zero)"):
        admin_consent_url(tenant, CLIENT, allow_domain=True)
