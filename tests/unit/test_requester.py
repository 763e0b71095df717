"""Who asked: the requester recorded for a submit or a retry, from App Service Authentication headers."""

from __future__ import annotations

import base64
import json
from typing import Any

from shared.requester import FUNCTION_KEY, MAX_NAME, Requester, identify, signed_in

UPN_CLAIM = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"


def principal(*claims: tuple[str, str], name_typ: str = UPN_CLAIM, **extra: Any) -> str:
    """An X-MS-CLIENT-PRINCIPAL value in the shape App Service documents (Base64 JSON of claims)."""
    doc = {"auth_typ": "aad", "claims": [{"typ": t, "val": v} for t, v in claims], "name_typ": name_typ,
           "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role", **extra}
    return base64.b64encode(json.dumps(doc).encode("utf-8")).decode("ascii")


def test_a_signed_in_operator_is_named_by_the_principal_name_header() -> None:
    who = identify({"X-MS-CLIENT-PRINCIPAL-NAME": "taro@contoso.example",
                    "X-MS-CLIENT-PRINCIPAL-ID": "0f3c9c2e-1111-4222-8333-444455556666"}, operator_auth="entra")
    assert who == Requester("taro@contoso.example", signed_in=True,
                            principal_id="0f3c9c2e-1111-4222-8333-444455556666")


def test_header_names_are_matched_in_any_case() -> None:
    assert identify({"x-ms-client-principal-name": "hanako@contoso.example"}, operator_auth="entra").name == \
        "hanako@contoso.example"


def test_without_the_name_header_the_claims_name_the_operator() -> None:
    encoded = principal((UPN_CLAIM, "jiro@contoso.example"), ("oid", "7d1e0000-0000-4000-8000-000000000001"))
    who = identify({"X-MS-CLIENT-PRINCIPAL": encoded}, operator_auth="entra")
    assert who == Requester("jiro@contoso.example", signed_in=True,
                            principal_id="7d1e0000-0000-4000-8000-000000000001")


def test_an_application_token_is_named_by_its_client_id() -> None:
    encoded = principal(("azp", "1c2d3e4f-0000-4000-8000-000000000002"), ("oid", "aa"), name_typ="name")
    assert identify({"X-MS-CLIENT-PRINCIPAL": encoded}, operator_auth="entra").name == \
        "app 1c2d3e4f-0000-4000-8000-000000000002"


def test_function_keys_are_function_key_whatever_headers_the_caller_sends() -> None:
    # Without App Service Authentication nothing strips these headers: believing them would let
    # any key holder write a colleague's name into the history.
    spoofed = {"X-MS-CLIENT-PRINCIPAL-NAME": "boss@contoso.example", "X-MS-CLIENT-PRINCIPAL": principal()}
    who = identify(spoofed, operator_auth="key")
    assert who == Requester(FUNCTION_KEY, signed_in=False)
    assert signed_in(spoofed, operator_auth="key")  # the host checked the key: the route may answer


def test_with_entra_a_call_without_principal_headers_is_not_signed_in() -> None:
    assert not signed_in({}, operator_auth="entra")
    assert not signed_in({"x-functions-key": "abc"}, operator_auth="entra")
    assert identify({}, operator_auth="entra") == Requester(FUNCTION_KEY, signed_in=False)


def test_a_malformed_principal_header_names_nobody_and_raises_nothing() -> None:
    for value in ("%%%not-base64", base64.b64encode(b"not json").decode(), base64.b64encode(b"[1,2]").decode(),
                  principal(claims_extra=1).replace("claims", "x"), "A" * 100_000):
        assert identify({"X-MS-CLIENT-PRINCIPAL": value}, operator_auth="entra").signed_in is False


def test_names_are_one_printable_line_of_bounded_length() -> None:
    who = identify({"X-MS-CLIENT-PRINCIPAL-NAME": "eve\r\n\x00admin" + "x" * 1000}, operator_auth="entra")
    assert who.name.startswith("eveadmin")
    assert len(who.name) == MAX_NAME
    assert "\n" not in who.name and "\x00" not in who.name
