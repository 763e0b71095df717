"""The Exchange Online + Entra ID simulator, spoken to over real HTTPS with plain `requests`.

These tests pin the behaviours the product's clients rely on (docs/exchange-protocol.md) so
that a client test passing against the simulator means something: discovery as MSAL reads
it, each AADSTS error, each cmdlet's Exchange semantics and quirks, every injectable fault,
paging, the control API and the counters. No project client is used here on purpose: the
simulator is checked against the protocol, not against the code it is meant to test.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msal
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from exosim import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Simulator
from exosim.options import TenantOptions
from exosim.state import CmdletError, TenantState, parse_domain_pattern

pytestmark = pytest.mark.functional

SCOPE = "https://outlook.office365.com/.default"
ANCHOR = "APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{tenant}"
NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
ALREADY_EXISTS = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAlreadyExistsException"
DATA_VALIDATION = "Microsoft.Exchange.Data.DataValidationException"
PARAMETER_BINDING = "System.Management.Automation.ParameterBindingException"

CONNECTOR_FIELDS = {
    "Identity",
    "Name",
    "Guid",
    "ConnectorType",
    "ConnectorSource",
    "Comment",
    "Enabled",
    "UseMXRecord",
    "SmartHosts",
    "RecipientDomains",
    "TlsSettings",
    "TlsDomain",
    "IsTransportRuleScoped",
    "RouteAllMessagesViaOnPremises",
    "CloudServicesMailEnabled",
    "AllAcceptedDomains",
    "SenderRewritingEnabled",
    "TestMode",
    "IsValidated",
    "LastValidationTimestamp",
    "ValidationRecipients",
    "WhenCreated",
    "WhenChanged",
}

MAILGATES: dict[str, Any] = {
    "Name": "MAILGATESΣ 送信コネクタ",
    "ConnectorType": "Partner",
    "RecipientDomains": ["*"],
    "UseMXRecord": False,
    "SmartHosts": ["mgf.cybermail.jp"],
    "TlsSettings": "CertificateValidation",
    "Enabled": True,
    "IsTransportRuleScoped": False,
    "Comment": "MailGates",
}
ENTERPRISE_AUDIT: dict[str, Any] = {
    "Name": "Enterprise Audit送信コネクタ",
    "ConnectorType": "Partner",
    "RecipientDomains": ["*.cs-365.cybermail.jp"],
    "UseMXRecord": True,
    "TlsSettings": "CertificateValidation",
    "Enabled": True,
    "IsTransportRuleScoped": False,
}


class Exo:
    """A deliberately naive client of the two endpoints: just enough HTTP to test the server."""

    def __init__(self, sim: Simulator, tenant: str) -> None:
        self.sim = sim
        self.tenant = tenant
        self.http = requests.Session()
        self._token: str | None = None

    def request_token(self, tenant: str | None = None, **form: str) -> requests.Response:
        data = {"grant_type": "client_credentials", "client_id": DEFAULT_CLIENT_ID, "scope": SCOPE, **form}
        if "client_assertion" not in data and "client_secret" not in data:
            data["client_secret"] = DEFAULT_CLIENT_SECRET
        data = {key: value for key, value in data.items() if value is not None}
        return self.http.post(self.sim.token_endpoint(tenant or self.tenant), data=data, verify=self.sim.ca_file)

    def forget_token(self) -> None:
        """Ask for a new token on the next call, as a client does after dropping its cache."""
        self._token = None

    def token(self) -> str:
        if self._token is None:
            response = self.request_token()
            assert response.status_code == 200, response.text
            self._token = response.json()["access_token"]
        return self._token

    def invoke(
        self,
        cmdlet: str,
        parameters: dict[str, Any] | None = None,
        *,
        url: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        sent = {"Authorization": f"Bearer {self.token()}", "X-AnchorMailbox": ANCHOR.format(tenant=self.tenant)}
        sent.update(headers or {})
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters or {}}}
        return self.http.post(
            url or self.sim.invoke_url(self.tenant), json=body, headers=sent, verify=self.sim.ca_file, **kwargs
        )

    def ok(self, cmdlet: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        response = self.invoke(cmdlet, parameters)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["value"]
        return rows

    def control(self, method: str, path: str, body: object = None) -> requests.Response:
        return self.http.request(method, f"{self.sim.url}/_sim/{path}", json=body, verify=self.sim.ca_file)


def inner(response: requests.Response) -> dict[str, str]:
    """`error.innererror.internalexception` (shape 1)."""
    exception: dict[str, str] = response.json()["error"]["innererror"]["internalexception"]
    return exception


@pytest.fixture
def exo(simulator: Simulator, exo_tenant: str) -> Iterator[Exo]:
    client = Exo(simulator, exo_tenant)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def app_certificate() -> tuple[rsa.RSAPrivateKey, str]:
    """An RSA key and self-signed certificate, as the product's app certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exosim test app")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(claims: dict[str, Any], key: rsa.RSAPrivateKey | None = None, header: dict[str, Any] | None = None) -> str:
    """A compact JWS: RS256-signed with `key`, or with a junk signature when no key is given."""
    head = {"alg": "RS256", "typ": "JWT", **(header or {})}
    signing_input = f"{_b64(json.dumps(head).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = (
        key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()) if key is not None else b"junk-signature"
    )
    return f"{signing_input}.{_b64(signature)}"


def x5t(certificate_pem: str) -> str:
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    return _b64(certificate.fingerprint(hashes.SHA1()))  # x5t is SHA-1 by definition


# --- Entra ID: discovery and tokens -------------------------------------------------------------


def test_discovery_document_points_every_endpoint_at_the_simulator(exo: Exo) -> None:
    response = exo.http.get(
        f"{exo.sim.authority(exo.tenant)}/v2.0/.well-known/openid-configuration", verify=exo.sim.ca_file
    )
    assert response.status_code == 200
    config = response.json()
    base = f"{exo.sim.url}/{exo.tenant}"
    assert config["issuer"] == f"{base}/v2.0"
    assert config["token_endpoint"] == f"{base}/oauth2/v2.0/token"
    assert config["authorization_endpoint"] == f"{base}/oauth2/v2.0/authorize"
    assert config["jwks_uri"].startswith(exo.sim.url)
    keys = exo.http.get(config["jwks_uri"], verify=exo.sim.ca_file)
    assert keys.json() == {"keys": []}


def test_msal_acquires_a_token_with_the_default_secret_and_instance_discovery_off(exo: Exo) -> None:
    http = requests.Session()
    http.verify = exo.sim.ca_file
    http.trust_env = False  # a REQUESTS_CA_BUNDLE in the environment would override `verify`
    app = msal.ConfidentialClientApplication(
        DEFAULT_CLIENT_ID,
        client_credential=DEFAULT_CLIENT_SECRET,
        authority=exo.sim.authority(exo.tenant),
        instance_discovery=False,
        http_client=http,
    )
    result = app.acquire_token_for_client([SCOPE])
    assert result.get("token_type") == "Bearer", result
    assert result["expires_in"] == 3599
    assert exo.sim.token_requests(exo.tenant) == 1
    assert [entry.kind for entry in exo.sim.log_for(exo.tenant)] == ["discovery", "token"]
    # the token works on the admin API
    exo._token = result["access_token"]
    assert exo.invoke("Get-OutboundConnector").status_code == 200


def test_msal_certificate_assertion_is_verified_against_the_registered_certificate(
    exo: Exo, app_certificate: tuple[rsa.RSAPrivateKey, str]
) -> None:
    key, certificate_pem = app_certificate
    client_id = str(uuid.uuid4())
    exo.sim.register_client(client_id, certificate_pem=certificate_pem)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    http = requests.Session()
    http.verify = exo.sim.ca_file
    http.trust_env = False
    app = msal.ConfidentialClientApplication(
        client_id,
        client_credential={"private_key": key_pem, "public_certificate": certificate_pem},  # PS256 + x5t#S256
        authority=exo.sim.authority(exo.tenant),
        instance_discovery=False,
        http_client=http,
    )
    assert "access_token" in app.acquire_token_for_client([SCOPE])

    # RS256 with x5t, signed by hand, is accepted too ...
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": exo.sim.token_endpoint(exo.tenant),
        "exp": time.time() + 600,
        "jti": str(uuid.uuid4()),
    }
    assertion = make_jwt(claims, key, {"x5t": x5t(certificate_pem)})
    response = exo.request_token(
        client_id=client_id,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=assertion,
    )
    assert response.status_code == 200, response.text
    # ... but a forged signature is not
    forged = make_jwt(
        claims, rsa.generate_private_key(public_exponent=65537, key_size=1024), {"x5t": x5t(certificate_pem)}
    )
    response = exo.request_token(
        client_id=client_id,
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=forged,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["error_codes"] == [700027]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"iss": "someone-else"}, "iss"),
        ({"exp": 1_000_000}, "expired"),
        ({"aud": "https://elsewhere.example/other/oauth2/v2.0/token"}, "aud"),
    ],
)
def test_certificate_assertion_with_bad_claims_is_401_invalid_client_700027(
    exo: Exo, change: dict[str, Any], reason: str
) -> None:
    claims = {
        "iss": DEFAULT_CLIENT_ID,
        "sub": DEFAULT_CLIENT_ID,
        "aud": exo.sim.token_endpoint(exo.tenant),
        "exp": time.time() + 600,
        **change,
    }
    response = exo.request_token(
        client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        client_assertion=make_jwt(claims),
    )
    assert response.status_code == 401
    body = response.json()
    assert (body["error"], body["error_codes"]) == ("invalid_client", [700027])
    assert body["error_description"].startswith("AADSTS700027: ")
    assert reason in body["error_description"]


def test_federated_assertion_is_accepted_only_for_a_client_with_federation(exo: Exo) -> None:
    managed_identity_token = make_jwt(
        {"aud": "api://AzureADTokenExchange", "iss": "https://login.example/mi", "sub": "mi", "exp": time.time() + 600}
    )
    form = {
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": managed_identity_token,
    }
    assert exo.request_token(**form).status_code == 200  # the default client has federation on
    other = str(uuid.uuid4())
    exo.sim.register_client(other, secret="s")
    refused = exo.request_token(client_id=other, **form)
    assert (refused.status_code, refused.json()["error_codes"]) == (401, [700027])
    expired = make_jwt({"aud": "api://AzureADTokenExchange", "sub": "mi", "exp": time.time() - 5})
    response = exo.request_token(client_assertion=expired, client_assertion_type=form["client_assertion_type"])
    assert response.status_code == 401


def test_wrong_secret_is_401_invalid_client_7000215(exo: Exo) -> None:
    response = exo.request_token(client_secret="not-the-secret")
    body = response.json()
    assert response.status_code == 401
    assert body["error"] == "invalid_client"
    assert body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215: ")
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)


def test_expired_secret_is_401_invalid_client_7000222(exo: Exo) -> None:
    exo.sim.register_client("old-app", secret="old", secret_expired=True)
    response = exo.request_token(client_id="old-app", client_secret="old")
    assert (response.status_code, response.json()["error_codes"]) == (401, [7000222])


def test_unknown_client_is_400_unauthorized_client_700016(exo: Exo) -> None:
    response = exo.request_token(client_id=str(uuid.uuid4()))
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert response.json()["error_codes"] == [700016]


def test_tenant_without_consent_refuses_the_app_with_700016_or_65001(exo: Exo) -> None:
    exo.sim.configure_tenant(exo.tenant, consent=False)
    response = exo.request_token()
    assert (response.status_code, response.json()["error"], response.json()["error_codes"]) == (
        400,
        "unauthorized_client",
        [700016],
    )
    exo.sim.configure_tenant(exo.tenant, consent_error=65001)
    assert exo.request_token().json()["error_codes"] == [65001]


def test_nonexistent_tenant_is_400_invalid_request_90002_at_token_and_discovery(exo: Exo) -> None:
    exo.sim.configure_tenant(exo.tenant, exists=False)
    response = exo.request_token()
    assert (response.status_code, response.json()["error"], response.json()["error_codes"]) == (
        400,
        "invalid_request",
        [90002],
    )
    discovery = exo.http.get(
        f"{exo.sim.authority(exo.tenant)}/v2.0/.well-known/openid-configuration", verify=exo.sim.ca_file
    )
    assert discovery.status_code == 400
    assert "AADSTS90002" in discovery.json()["error_description"]


def test_tenants_are_created_on_first_use_only_for_guid_ids(exo: Exo) -> None:
    assert exo.request_token(tenant=str(uuid.uuid4())).status_code == 200
    assert exo.request_token(tenant="contoso.onmicrosoft.com").json()["error_codes"] == [90002]
    exo.sim.configure_tenant("contoso.onmicrosoft.com")
    assert exo.request_token(tenant="contoso.onmicrosoft.com").status_code == 200


def test_token_for_another_resource_or_without_default_suffix_is_refused(exo: Exo) -> None:
    wrong_resource = exo.request_token(scope="https://graph.microsoft.com/.default")
    assert (wrong_resource.status_code, wrong_resource.json()["error_codes"]) == (400, [500011])
    no_default = exo.request_token(scope="https://outlook.office365.com/Exchange.ManageAsApp")
    assert (no_default.status_code, no_default.json()["error"]) == (400, "invalid_scope")


def test_token_requests_are_counted_per_tenant_failed_ones_included(exo: Exo) -> None:
    other = str(uuid.uuid4())
    exo.request_token()
    exo.request_token(client_secret="wrong")
    exo.request_token(tenant=other)
    assert exo.sim.token_requests(exo.tenant) == 2
    assert exo.sim.token_requests(other) == 1
    assert exo.sim.token_requests() == 3


def test_token_success_body_is_bearer_3599_with_an_opaque_token(exo: Exo) -> None:
    body = exo.request_token().json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == 3599
    assert body["access_token"].count(".") == 0  # opaque, not a JWT


# --- Exchange admin API: access --------------------------------------------------------------------


def test_invoke_needs_a_live_token_issued_for_that_tenant(exo: Exo) -> None:
    no_token = exo.invoke("Get-OutboundConnector", headers={"Authorization": ""})
    assert no_token.status_code == 401
    assert "WWW-Authenticate" in no_token.headers
    other = Exo(exo.sim, str(uuid.uuid4()))
    foreign = exo.invoke("Get-OutboundConnector", headers={"Authorization": f"Bearer {other.token()}"})
    assert foreign.status_code == 401
    assert exo.invoke("Get-OutboundConnector").status_code == 200
    exo.sim.expire_tokens(exo.tenant)
    assert exo.invoke("Get-OutboundConnector").status_code == 401


def test_tokens_stay_valid_across_a_reset(exo: Exo) -> None:
    exo.token()
    exo.sim.reset()
    assert exo.invoke("Get-OutboundConnector").status_code == 200
    exo.sim.reset(revoke_tokens=True)
    assert exo.invoke("Get-OutboundConnector").status_code == 401


def test_anchor_mailbox_must_name_the_tenant(exo: Exo) -> None:
    response = exo.invoke("Get-OutboundConnector", headers={"X-AnchorMailbox": ANCHOR.format(tenant=uuid.uuid4())})
    assert response.status_code == 400
    assert "X-AnchorMailbox" in response.json()["error"]["message"]
    missing = exo.invoke("Get-OutboundConnector", headers={"X-AnchorMailbox": ""})
    assert missing.status_code == 400


def test_malformed_body_is_400(exo: Exo) -> None:
    response = exo.http.post(
        exo.sim.invoke_url(exo.tenant),
        data=b"{not json",
        headers={"Authorization": f"Bearer {exo.token()}", "X-AnchorMailbox": ANCHOR.format(tenant=exo.tenant)},
        verify=exo.sim.ca_file,
    )
    assert response.status_code == 400


def test_unknown_cmdlet_is_command_not_found(exo: Exo) -> None:
    response = exo.invoke("Get-Mailbox")
    assert response.status_code == 400
    assert inner(response)["type"] == "System.Management.Automation.CommandNotFoundException"
    assert "'Get-Mailbox' is not recognized" in inner(response)["message"]


# --- connector cmdlets -------------------------------------------------------------------------


def test_new_connector_returns_a_row_with_every_documented_field(exo: Exo) -> None:
    (row,) = exo.ok("New-OutboundConnector", MAILGATES)
    assert set(row) >= CONNECTOR_FIELDS
    assert row["Name"] == row["Identity"] == MAILGATES["Name"]
    assert uuid.UUID(row["Guid"])
    assert row["SmartHosts"] == ["mgf.cybermail.jp"]
    assert row["RecipientDomains"] == ["*"]
    assert row["ValidationRecipients"] == []
    assert row["IsValidated"] is False
    assert row["LastValidationTimestamp"] is None
    assert row["WhenCreated"].endswith("Z")
    assert dt.datetime.fromisoformat(row["WhenChanged"]).tzinfo is not None
    assert exo.ok("Get-OutboundConnector") == [row]


def test_new_connector_defaults_to_partner_with_mx_routing(exo: Exo) -> None:
    (row,) = exo.ok("New-OutboundConnector", {"Name": "Plain", "RecipientDomains": "contoso.com"})
    assert row["ConnectorType"] == "Partner"
    assert row["UseMXRecord"] is True
    assert row["Enabled"] is True
    assert row["RecipientDomains"] == ["contoso.com"]  # a single value binds as a one-item list
    assert row["TlsSettings"] is None


def test_connector_names_are_unique_case_insensitively(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    response = exo.invoke("New-OutboundConnector", {**MAILGATES, "Name": "mailgatesσ 送信コネクタ"})
    assert response.status_code == 400
    assert inner(response)["type"] == ALREADY_EXISTS
    assert len(exo.sim.connectors(exo.tenant)) == 1


def test_connector_name_is_limited_to_64_characters(exo: Exo) -> None:
    assert exo.invoke("New-OutboundConnector", {"Name": "n" * 64}).status_code == 200
    response = exo.invoke("New-OutboundConnector", {"Name": "n" * 65})
    assert response.status_code == 400
    assert inner(response)["type"] == DATA_VALIDATION
    assert "maximum length is 64" in inner(response)["message"]


def test_new_without_name_is_a_missing_mandatory_parameter(exo: Exo) -> None:
    response = exo.invoke("New-OutboundConnector", {"RecipientDomains": ["*"]})
    assert response.status_code == 400
    assert inner(response)["type"] == PARAMETER_BINDING
    assert "missing mandatory parameters: Name" in inner(response)["message"]


def test_smart_hosts_are_required_when_mx_routing_is_off(exo: Exo) -> None:
    response = exo.invoke("New-OutboundConnector", {"Name": "No hosts", "UseMXRecord": False})
    assert response.status_code == 400
    assert inner(response)["type"] == DATA_VALIDATION
    assert "SmartHosts" in inner(response)["message"]


@pytest.mark.parametrize("flag", ["SenderRewritingEnabled", "AllAcceptedDomains", "RouteAllMessagesViaOnPremises"])
def test_on_premises_only_flags_are_refused_on_a_partner_connector(exo: Exo, flag: str) -> None:
    response = exo.invoke("New-OutboundConnector", {"Name": "Partner", "RecipientDomains": ["*"], flag: True})
    assert response.status_code == 400
    assert inner(response)["type"] == DATA_VALIDATION
    assert flag in inner(response)["message"] and "OnPremises" in inner(response)["message"]
    accepted = exo.invoke(
        "New-OutboundConnector",
        {"Name": "Hybrid", "ConnectorType": "OnPremises", "RecipientDomains": ["*"], flag: True},
    )
    assert accepted.status_code == 200, accepted.text


@pytest.mark.parametrize("parameter", ["ValidationRecipients", "IsValidated"])
def test_new_connector_has_no_validation_parameters(exo: Exo, parameter: str) -> None:
    value: object = ["adm@example.com"] if parameter == "ValidationRecipients" else True
    response = exo.invoke("New-OutboundConnector", {**MAILGATES, parameter: value})
    assert response.status_code == 400
    assert inner(response) == {
        "message": f"A parameter cannot be found that matches parameter name '{parameter}'.",
        "type": PARAMETER_BINDING,
        "stacktrace": "",
    }


def test_unknown_parameter_is_a_parameter_binding_error_and_names_are_case_insensitive(exo: Exo) -> None:
    response = exo.invoke("Get-OutboundConnector", {"Bogus": 1})
    assert inner(response)["type"] == PARAMETER_BINDING
    (row,) = exo.ok("New-OutboundConnector", {"name": "lower", "recipientdomains": ["*.example.org"]})
    assert row["Name"] == "lower"


def test_boolean_parameters_take_json_booleans_only(exo: Exo) -> None:
    response = exo.invoke("New-OutboundConnector", {"Name": "x", "Enabled": "true"})
    assert response.status_code == 400
    assert "System.Boolean" in inner(response)["message"]


def test_connector_type_is_an_enumeration(exo: Exo) -> None:
    response = exo.invoke("New-OutboundConnector", {"Name": "x", "ConnectorType": "Internet"})
    assert response.status_code == 400
    assert "Partner, OnPremises" in inner(response)["message"]


@pytest.mark.parametrize("domains", [["*"], ["*.contoso.com"], ["contoso.com", "*.fabrikam.co.jp"]])
def test_recipient_domains_accept_all_a_leading_wildcard_or_a_plain_domain(exo: Exo, domains: list[str]) -> None:
    (row,) = exo.ok("New-OutboundConnector", {"Name": "d", "RecipientDomains": domains})
    assert row["RecipientDomains"] == domains


@pytest.mark.parametrize("domain", ["a.*.contoso.com", "*contoso.com", "contoso.*", "bad domain.com", ""])
def test_recipient_domains_refuse_a_wildcard_that_does_not_lead(exo: Exo, domain: str) -> None:
    response = exo.invoke("New-OutboundConnector", {"Name": "d", "RecipientDomains": [domain]})
    assert response.status_code == 400
    assert "RecipientDomains" in inner(response)["message"]


def test_set_changes_only_the_given_parameters(exo: Exo) -> None:
    (before,) = exo.ok("New-OutboundConnector", MAILGATES)
    assert exo.ok("Set-OutboundConnector", {"Identity": MAILGATES["Name"], "SmartHosts": ["mgs.cybermail.jp"]}) == []
    (after,) = exo.ok("Get-OutboundConnector", {"Identity": MAILGATES["Name"]})
    changed = {key for key in CONNECTOR_FIELDS if before[key] != after[key]} - {"WhenChanged"}
    assert changed == {"SmartHosts"}
    assert after["SmartHosts"] == ["mgs.cybermail.jp"]


def test_set_can_rename_but_not_onto_another_connectors_name(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    exo.ok("New-OutboundConnector", ENTERPRISE_AUDIT)
    clash = exo.invoke(
        "Set-OutboundConnector", {"Identity": MAILGATES["Name"], "Name": ENTERPRISE_AUDIT["Name"].upper()}
    )
    assert inner(clash)["type"] == ALREADY_EXISTS
    exo.ok("Set-OutboundConnector", {"Identity": MAILGATES["Name"], "Name": "Renamed"})
    assert sorted(row["Name"] for row in exo.ok("Get-OutboundConnector")) == sorted(
        ["Renamed", ENTERPRISE_AUDIT["Name"]]
    )


def test_set_that_changes_nothing_warns_like_exchange(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    response = exo.invoke("Set-OutboundConnector", {"Identity": MAILGATES["Name"], "Enabled": True})
    assert response.status_code == 200
    assert "no settings" in response.json()["@adminapi.warnings"][0]
    assert exo.sim.writes(exo.tenant)[-1]["changed"] is False


def test_set_validation_properties_after_validate(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    exo.ok(
        "Set-OutboundConnector",
        {
            "Identity": MAILGATES["Name"],
            "IsValidated": True,
            "ValidationRecipients": ["adm@example.com"],
            "LastValidationTimestamp": "2026-04-01T09:30:00Z",
        },
    )
    (row,) = exo.ok("Get-OutboundConnector", {"Identity": MAILGATES["Name"]})
    assert row["IsValidated"] is True
    assert row["ValidationRecipients"] == ["adm@example.com"]
    # As the service renders it: seven fractional digits and no zone (the time is UTC).
    assert row["LastValidationTimestamp"] == "2026-04-01T09:30:00.0000000"


def test_multivalued_parameters_accept_add_and_remove(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    exo.ok(
        "Set-OutboundConnector",
        {"Identity": MAILGATES["Name"], "SmartHosts": {"Add": ["mgs.cybermail.jp"], "Remove": ["mgf.cybermail.jp"]}},
    )
    assert exo.sim.connectors(exo.tenant)[0]["SmartHosts"] == ["mgs.cybermail.jp"]


def test_identity_matches_the_name_case_insensitively_or_the_guid(exo: Exo) -> None:
    (row,) = exo.ok("New-OutboundConnector", ENTERPRISE_AUDIT)
    exo.ok("New-OutboundConnector", MAILGATES)
    assert exo.ok("Get-OutboundConnector", {"Identity": "ENTERPRISE AUDIT送信コネクタ"}) == [row]
    assert exo.ok("Get-OutboundConnector", {"Identity": row["Guid"].upper()}) == [row]


def test_get_with_an_identity_that_matches_nothing_returns_every_connector(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    exo.ok("New-OutboundConnector", ENTERPRISE_AUDIT)
    assert len(exo.ok("Get-OutboundConnector", {"Identity": "No such connector"})) == 2
    exo.sim.configure_tenant(exo.tenant, unknown_identity_returns_all=False)
    response = exo.invoke("Get-OutboundConnector", {"Identity": "No such connector"})
    assert response.status_code == 404
    assert inner(response)["type"] == NOT_FOUND


@pytest.mark.parametrize(
    ("cmdlet", "extra"),
    [
        ("Set-OutboundConnector", {"Enabled": False}),
        ("Remove-OutboundConnector", {"Confirm": False}),
        ("Validate-OutboundConnector", {"Recipients": ["adm@example.com"]}),
    ],
)
def test_changing_an_unknown_connector_is_404_not_found(exo: Exo, cmdlet: str, extra: dict[str, Any]) -> None:
    response = exo.invoke(cmdlet, {"Identity": "Ghost", **extra})
    assert response.status_code == 404
    assert inner(response)["type"] == NOT_FOUND
    assert "couldn't be found" in inner(response)["message"]
    assert response.json()["error"]["details"][0]["message"].startswith(f"|{NOT_FOUND}|")


def test_remove_deletes_the_connector(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    assert exo.ok("Remove-OutboundConnector", {"Identity": MAILGATES["Name"], "Confirm": False}) == []
    assert exo.ok("Get-OutboundConnector") == []


def leaves(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leaf tasks of an OutboundConnectorValidationResult tree."""
    found: list[dict[str, Any]] = []
    for result in results:
        found.extend(leaves(result["SubTaskResults"]) if result["SubTaskResults"] else [result])
    return found


def test_validate_answers_the_nested_result_of_the_admin_api_schema(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", {**MAILGATES, "SmartHosts": ["mgf.cybermail.jp", "mgs.cybermail.jp"]})
    results = exo.ok(
        "Validate-OutboundConnector",
        {"Identity": MAILGATES["Name"], "Recipients": ["adm@example.com", "b@example.net"]},
    )

    def shape(result: dict[str, Any]) -> Any:
        return (result["TaskName"], [shape(sub) for sub in result["SubTaskResults"]])

    assert [shape(r) for r in results] == [
        ("Check connectivity to the smart hosts", [("Check connectivity to 'mgf.cybermail.jp'", []),
                                                   ("Check connectivity to 'mgs.cybermail.jp'", [])]),
        ("Send test email", [("Send test email to adm@example.com", []), ("Send test email to b@example.net", [])]),
    ]
    every = results + leaves(results)
    assert all(set(r) >= {"TaskName", "IsTaskSuccessful", "TaskDetail", "SubTaskResults"} for r in every)
    assert all(r["IsTaskSuccessful"] is True for r in every)
    (connector,) = exo.ok("Get-OutboundConnector")
    assert connector["IsValidated"] is False  # Validate- never stamps the connector


def test_validate_of_an_mx_connector_only_sends_test_email(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", ENTERPRISE_AUDIT)
    results = exo.ok(
        "Validate-OutboundConnector",
        {"Identity": ENTERPRISE_AUDIT["Name"], "Recipients": ["journal01@cs-365.cybermail.jp"]},
    )
    assert [(r["TaskName"], r["IsTaskSuccessful"]) for r in leaves(results)] == [
        ("Send test email to journal01@cs-365.cybermail.jp", True)]


def test_each_validate_sends_one_test_message_per_recipient(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    for _ in range(2):
        exo.ok("Validate-OutboundConnector", {"Identity": MAILGATES["Name"], "Recipients": ["adm@example.com"]})
    sent = exo.sim.test_messages(exo.tenant)
    assert [(m["connector"], m["recipient"]) for m in sent] == [(MAILGATES["Name"], "adm@example.com")] * 2


def test_validate_reports_unreachable_smart_hosts_and_recipients(exo: Exo) -> None:
    exo.sim.configure_tenant(
        exo.tenant, unreachable_hosts=["mgf.cybermail.jp"], unreachable_recipients=["gone@example.com"]
    )
    exo.ok("New-OutboundConnector", {**MAILGATES, "SmartHosts": ["mgf.cybermail.jp", "mgs.cybermail.jp"]})
    results = exo.ok(
        "Validate-OutboundConnector",
        {"Identity": MAILGATES["Name"], "Recipients": ["adm@example.com", "gone@example.com"]},
    )
    rows = leaves(results)
    assert [row["IsTaskSuccessful"] for row in rows] == [False, True, True, False]
    assert [r["IsTaskSuccessful"] for r in results] == [False, False]  # a parent fails with any leaf
    assert rows[0]["TaskDetail"].startswith("450 4.4.317 Cannot connect to remote server")
    assert "gone@example.com" in rows[3]["TaskDetail"]
    exo.sim.configure_tenant(exo.tenant, unreachable_hosts=["mgf.cybermail.jp", "mgs.cybermail.jp"])
    rows = leaves(exo.ok("Validate-OutboundConnector",
                         {"Identity": MAILGATES["Name"], "Recipients": ["adm@example.com"]}))
    assert [row["IsTaskSuccessful"] for row in rows] == [False, False, False]
    # with no smart host reachable, no test message could leave
    assert len(exo.sim.test_messages(exo.tenant)) == 2


def test_validate_fails_while_a_foreign_star_connector_is_enabled(exo: Exo) -> None:
    exo.sim.seed_connector(
        exo.tenant, Name="Existing relay", RecipientDomains=["*"], UseMXRecord=False, SmartHosts=["relay.example.com"]
    )
    exo.ok("New-OutboundConnector", MAILGATES)
    rows = leaves(exo.ok("Validate-OutboundConnector",
                         {"Identity": MAILGATES["Name"], "Recipients": ["adm@example.com"]}))
    assert rows[-1]["IsTaskSuccessful"] is False
    assert "Existing relay" in rows[-1]["TaskDetail"]
    exo.ok("Set-OutboundConnector", {"Identity": "Existing relay", "Enabled": False})
    rows = leaves(exo.ok("Validate-OutboundConnector",
                         {"Identity": MAILGATES["Name"], "Recipients": ["adm@example.com"]}))
    assert rows[-1]["IsTaskSuccessful"] is True


def test_the_more_specific_connector_wins_the_journal_domain(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", ENTERPRISE_AUDIT)
    exo.ok("New-OutboundConnector", MAILGATES)
    journal = {"Recipients": ["journal01@cs-365.cybermail.jp"]}
    audit = leaves(exo.ok("Validate-OutboundConnector", {"Identity": ENTERPRISE_AUDIT["Name"], **journal}))
    assert audit[-1]["IsTaskSuccessful"] is True
    star = leaves(exo.ok("Validate-OutboundConnector", {"Identity": MAILGATES["Name"], **journal}))
    assert star[-1]["IsTaskSuccessful"] is False
    assert ENTERPRISE_AUDIT["Name"] in star[-1]["TaskDetail"]


def test_latency_can_be_set_per_cmdlet(exo: Exo, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(exo.sim.backend, "sleep", waits.append)  # record the waits instead of waiting
    exo.sim.configure_tenant(exo.tenant, latency_ms=20, cmdlet_latency_ms={"validate-outboundconnector": 40_000})
    exo.ok("New-OutboundConnector", MAILGATES)
    exo.ok("Validate-OutboundConnector", {"Identity": MAILGATES["Name"], "Recipients": ["adm@example.com"]})
    assert waits == [0.02, 40.0]
    assert exo.sim.tenant_info(exo.tenant)["options"]["cmdlet_latency_ms"] == {"Validate-OutboundConnector": 40_000}
    with pytest.raises(ValueError, match="unknown cmdlet"):
        exo.sim.configure_tenant(exo.tenant, cmdlet_latency_ms={"Validate-Connector": 1})


def test_validate_needs_recipients(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    response = exo.invoke("Validate-OutboundConnector", {"Identity": MAILGATES["Name"]})
    assert "Recipients" in inner(response)["message"]


def test_accepted_domains_default_to_the_initial_onmicrosoft_domain(exo: Exo) -> None:
    (row,) = exo.ok("Get-AcceptedDomain")
    assert row["DomainName"] == f"{exo.tenant.replace('-', '')[:8]}.onmicrosoft.com"
    assert (row["DomainType"], row["Default"], row["InitialDomain"]) == ("Authoritative", True, True)


def test_accepted_domains_are_configurable(exo: Exo) -> None:
    exo.sim.configure_tenant(exo.tenant, accepted_domains=["contoso.co.jp", "contoso.onmicrosoft.com"])
    rows = exo.ok("Get-AcceptedDomain")
    assert [(r["DomainName"], r["Default"], r["InitialDomain"]) for r in rows] == [
        ("contoso.co.jp", True, False),
        ("contoso.onmicrosoft.com", False, True),
    ]


def test_exchange_rules_need_no_http_and_follow_the_tenants_clock() -> None:
    now = [1_000.0]
    state = TenantState("tenant", lambda: now[0], TenantOptions(replication_lag=5))
    state.invoke("New-OutboundConnector", MAILGATES)
    assert state.invoke("Get-OutboundConnector", {}).rows == []
    with pytest.raises(CmdletError) as missing:
        state.invoke("Remove-OutboundConnector", {"Identity": MAILGATES["Name"]})
    assert missing.value.status == 404
    now[0] += 5
    assert [row["Name"] for row in state.invoke("Get-OutboundConnector", {}).rows] == [MAILGATES["Name"]]
    assert [parse_domain_pattern(d) for d in ("*", "*.Contoso.com", "a.*.b", "*x.com")] == [
        "*",
        "*.contoso.com",
        None,
        None,
    ]


# --- paging and error shapes -------------------------------------------------------------------


def test_rows_beyond_the_page_size_follow_odata_next_link_with_the_same_body(exo: Exo) -> None:
    exo.sim.configure_tenant(exo.tenant, page_size=2)
    for index in range(5):
        exo.ok("New-OutboundConnector", {"Name": f"c{index}", "RecipientDomains": [f"d{index}.example.com"]})
    names: list[str] = []
    url: str | None = None
    pages = 0
    while True:
        response = exo.invoke("Get-OutboundConnector", url=url)
        assert response.status_code == 200
        page = response.json()
        names += [row["Name"] for row in page["value"]]
        pages += 1
        url = page.get("@odata.nextLink")
        if url is None:
            break
        assert url.startswith(f"{exo.sim.url}/adminapi/beta/{exo.tenant}/InvokeCommand?")
    assert (pages, names) == (3, [f"c{index}" for index in range(5)])
    assert sum(entry.page for entry in exo.sim.log_for(exo.tenant)) == 2


def test_an_unknown_skip_token_is_an_expired_pagination_error(exo: Exo) -> None:
    response = exo.invoke("Get-OutboundConnector", url=f"{exo.sim.invoke_url(exo.tenant)}?$skiptoken=nope")
    assert response.status_code == 400
    assert "Expired or Invalid pagination request" in inner(response)["message"]


@pytest.mark.parametrize("shape", ["inner", "details", "details-json", "message"])
def test_cmdlet_errors_come_in_each_of_exchanges_body_shapes(exo: Exo, shape: str) -> None:
    exo.sim.configure_tenant(exo.tenant, error_shape=shape)
    response = exo.invoke("Remove-OutboundConnector", {"Identity": "Ghost"})
    assert response.status_code == 404
    error = response.json()["error"]
    text = "The operation couldn't be performed because object 'Ghost' couldn't be found"
    if shape == "inner":
        assert error["innererror"]["internalexception"]["message"].startswith(text)
    elif shape == "details":
        assert "innererror" not in error
        assert error["details"][0]["message"].startswith(f"|{NOT_FOUND}|{text}")
    elif shape == "details-json":
        detail = json.loads(error["details"][0]["message"])
        assert detail["TypeName"] == NOT_FOUND and detail["Message"].startswith(text)
    else:
        assert set(error) == {"code", "message"} and error["message"].startswith(text)


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", [7, None])
def test_throttling_is_429_with_or_without_retry_after(exo: Exo, retry_after: int | None) -> None:
    exo.sim.fail_next(exo.tenant, 1, "throttle", retry_after=retry_after)
    response = exo.invoke("Get-OutboundConnector")
    assert response.status_code == 429
    assert response.headers.get("Retry-After") == (None if retry_after is None else str(retry_after))
    assert exo.invoke("Get-OutboundConnector").status_code == 200


def test_service_unavailable_is_503(exo: Exo) -> None:
    exo.sim.fail_next(exo.tenant, 1, "unavailable")
    assert exo.invoke("Get-OutboundConnector").status_code == 503


def test_transient_exception_is_a_400_naming_the_exception_type(exo: Exo) -> None:
    exo.sim.fail_next(exo.tenant, 1, "transient")
    response = exo.invoke("Get-OutboundConnector")
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["message"].startswith(
        "|Microsoft.Exchange.Data.Storage.TransientException|"
    )


def test_concurrency_limit_text_can_arrive_in_any_shape(exo: Exo) -> None:
    exo.sim.fail_next(exo.tenant, 1, "concurrency")
    exo.sim.fail_next(exo.tenant, 1, "concurrency", shape="message", status=429)
    first = exo.invoke("Get-OutboundConnector")
    assert first.status_code == 400
    assert (
        "maximum number of concurrent requests" in json.loads(first.json()["error"]["details"][0]["message"])["Message"]
    )
    second = exo.invoke("Get-OutboundConnector")
    assert second.status_code == 429
    assert "maximum number of concurrent requests" in second.json()["error"]["message"]


def test_more_calls_in_flight_than_allowed_get_the_concurrency_failure(exo: Exo) -> None:
    exo.sim.configure_tenant(exo.tenant, max_concurrent=1, latency_ms=300)
    token = exo.token()
    statuses: list[int] = []

    def call() -> None:
        client = Exo(exo.sim, exo.tenant)
        client._token = token
        statuses.append(client.invoke("Get-OutboundConnector").status_code)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 400, 400]
    faults = [entry.fault for entry in exo.sim.log_for(exo.tenant)]
    assert faults.count("concurrency") == 2


def test_latency_delays_every_call(exo: Exo) -> None:
    exo.token()
    exo.sim.configure_tenant(exo.tenant, latency_ms=150)
    started = time.perf_counter()
    exo.invoke("Get-OutboundConnector")
    assert time.perf_counter() - started >= 0.15
    assert exo.sim.log[-1].duration_ms >= 150


def test_random_transient_failures_are_reproducible_from_the_seed(exo: Exo) -> None:
    def run() -> list[int]:
        exo.sim.configure_tenant(exo.tenant, transient_rate=0.5, seed=42)
        exo.sim.configure_tenant(exo.tenant, seed=0)
        exo.sim.configure_tenant(exo.tenant, seed=42)  # a seed change restarts the sequence
        return [exo.invoke("Get-OutboundConnector").status_code for _ in range(16)]

    first = run()
    assert run() == first
    assert 200 in first and any(status != 200 for status in first)
    exo.sim.configure_tenant(exo.tenant, transient_rate=0.0)
    assert {exo.invoke("Get-OutboundConnector").status_code for _ in range(5)} == {200}


def test_fail_next_fails_exactly_n_matching_calls(exo: Exo) -> None:
    exo.sim.configure_tenant(exo.tenant, fail_next=2, fault={"kind": "server_busy"})
    assert [exo.invoke("Get-OutboundConnector").status_code for _ in range(3)] == [500, 500, 200]
    exo.sim.fail_next(exo.tenant, 1, "unavailable", cmdlet="New-OutboundConnector")
    assert exo.invoke("Get-OutboundConnector").status_code == 200
    assert exo.invoke("New-OutboundConnector", MAILGATES).status_code == 503
    assert exo.sim.writes(exo.tenant) == []
    assert exo.invoke("New-OutboundConnector", MAILGATES).status_code == 200


def test_a_token_without_the_exchange_permission_gets_401_naming_the_app(exo: Exo) -> None:
    exo.sim.configure_tenant(exo.tenant, permission_granted=False)
    response = exo.invoke("Get-OutboundConnector")
    assert response.status_code == 401
    assert DEFAULT_CLIENT_ID in response.json()["error"]["message"]
    assert "Exchange.ManageAsApp" in response.json()["error"]["message"]


def test_role_missing_401_is_the_older_spelling_of_a_missing_permission(exo: Exo) -> None:
    options = exo.sim.configure_tenant(exo.tenant, role_missing=401)["options"]
    assert (options["permission_granted"], options["role_missing"]) == (False, None)
    assert exo.invoke("Get-OutboundConnector").status_code == 401


@pytest.mark.parametrize(("missing", "granted", "status"), [
    ({"role_missing": 403, "role_missing_gzip": False}, {"role_missing": None}, 403),
    ({"permission_granted": False}, {"permission_granted": True}, 401),
])
def test_role_and_permission_travel_in_the_token_issued_before_the_grant(
        exo: Exo, missing: dict[str, Any], granted: dict[str, Any], status: int) -> None:
    exo.sim.configure_tenant(exo.tenant, **missing)
    assert exo.invoke("Get-OutboundConnector").status_code == status
    exo.sim.configure_tenant(exo.tenant, **granted)  # the customer grants it now
    # the token issued before the grant still lacks it...
    assert exo.invoke("Get-OutboundConnector").status_code == status
    # ...a new one has it
    exo.forget_token()
    assert exo.invoke("Get-OutboundConnector").status_code == 200
    assert exo.sim.token_requests(exo.tenant) == 2


def test_a_role_removed_after_the_token_was_issued_still_works_for_that_token(exo: Exo) -> None:
    assert exo.invoke("Get-OutboundConnector").status_code == 200
    exo.sim.configure_tenant(exo.tenant, role_missing=403, role_missing_gzip=False)
    assert exo.invoke("Get-OutboundConnector").status_code == 200
    exo.forget_token()
    assert exo.invoke("Get-OutboundConnector").status_code == 403


def test_a_refused_call_is_answered_without_the_cmdlets_latency(exo: Exo, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(exo.sim.backend, "sleep", waits.append)
    exo.sim.configure_tenant(exo.tenant, role_missing=403, role_missing_gzip=False, latency_ms=5_000)
    assert exo.invoke("Get-OutboundConnector").status_code == 403
    assert waits == []


@pytest.mark.parametrize("false_gzip", [True, False])
def test_missing_role_as_403_has_a_nul_body_sometimes_under_a_false_gzip_header(exo: Exo, false_gzip: bool) -> None:
    exo.sim.configure_tenant(exo.tenant, role_missing=403, role_missing_gzip=false_gzip)
    response = exo.invoke("Get-OutboundConnector", stream=True)
    raw = response.raw.read(decode_content=False)
    assert response.status_code == 403
    assert raw and set(raw) == {0}
    assert (response.headers.get("Content-Encoding") == "gzip") is false_gzip
    if false_gzip:
        with pytest.raises(OSError):
            gzip.decompress(raw)


def test_a_dropped_connection_is_a_connection_error(exo: Exo) -> None:
    exo.token()
    exo.sim.fail_next(exo.tenant, 1, "disconnect")
    with pytest.raises(requests.ConnectionError):
        exo.invoke("Get-OutboundConnector")
    assert exo.invoke("Get-OutboundConnector").status_code == 200


def test_token_endpoint_faults_are_entra_shaped_and_transient(exo: Exo) -> None:
    exo.sim.fail_next(exo.tenant, 1, "unavailable", target="token", retry_after=3)
    response = exo.request_token()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"
    assert response.json()["error"] == "temporarily_unavailable"
    assert exo.request_token().status_code == 200


def test_replication_lag_hides_a_new_connector_from_reads_but_not_from_name_checks(exo: Exo) -> None:
    exo.sim.seed_connector(exo.tenant, **ENTERPRISE_AUDIT)
    exo.sim.configure_tenant(exo.tenant, replication_lag=30)
    exo.ok("New-OutboundConnector", MAILGATES)
    # the quirk shows even here: an unknown identity lists every visible connector
    assert [row["Name"] for row in exo.ok("Get-OutboundConnector", {"Identity": MAILGATES["Name"]})] == [
        ENTERPRISE_AUDIT["Name"]
    ]
    assert exo.invoke("Set-OutboundConnector", {"Identity": MAILGATES["Name"], "Enabled": False}).status_code == 404
    again = exo.invoke("New-OutboundConnector", MAILGATES)
    assert inner(again)["type"] == ALREADY_EXISTS
    assert len(exo.sim.connectors(exo.tenant)) == 2  # Exchange holds it all along
    exo.sim.replicate(exo.tenant)
    assert len(exo.ok("Get-OutboundConnector")) == 2


def test_replication_lag_ends_by_itself(exo: Exo) -> None:
    exo.sim.configure_tenant(exo.tenant, replication_lag=0.3)
    exo.ok("New-OutboundConnector", MAILGATES)
    assert exo.ok("Get-OutboundConnector") == []
    time.sleep(0.35)
    assert len(exo.ok("Get-OutboundConnector")) == 1


def test_seeded_connectors_replace_the_tenants_connectors_and_follow_exchange_rules(exo: Exo) -> None:
    foreign = {"Name": "Foreign", "RecipientDomains": ["*"], "UseMXRecord": False, "SmartHosts": ["relay.example.com"]}
    exo.sim.configure_tenant(exo.tenant, connectors=[foreign, {**ENTERPRISE_AUDIT, "IsValidated": True}])
    assert [row["Name"] for row in exo.ok("Get-OutboundConnector")] == ["Foreign", ENTERPRISE_AUDIT["Name"]]
    assert exo.sim.connectors(exo.tenant)[1]["IsValidated"] is True
    assert exo.sim.writes(exo.tenant) == []  # seeding is not a write by the product
    with pytest.raises(ValueError, match="SmartHosts"):
        exo.sim.seed_connector(exo.tenant, Name="Broken", UseMXRecord=False)


def test_unknown_tenant_options_are_refused(simulator: Simulator, exo_tenant: str) -> None:
    with pytest.raises(ValueError, match="replication_lagg"):
        simulator.configure_tenant(exo_tenant, replication_lagg=3)
    with pytest.raises(ValueError, match="unknown fault kind"):
        simulator.fail_next(exo_tenant, 1, "meteor")


# --- observability -----------------------------------------------------------------------------


def test_log_records_kind_cmdlet_parameters_status_and_duration(exo: Exo) -> None:
    exo.token()
    exo.invoke("New-OutboundConnector", MAILGATES)
    exo.invoke("Remove-OutboundConnector", {"Identity": "Ghost"})
    token, created, missing = exo.sim.log_for(exo.tenant)
    assert (token.kind, token.status, token.client_id) == ("token", 200, DEFAULT_CLIENT_ID)
    assert (created.kind, created.cmdlet, created.parameters, created.status) == (
        "invoke",
        "New-OutboundConnector",
        MAILGATES,
        200,
    )
    assert missing.status == 404 and missing.error is not None and "Ghost" in missing.error
    assert all(entry.duration_ms >= 0 and entry.time > 0 for entry in (token, created, missing))


def test_counters_and_writes_track_calls_and_reset_log_clears_them(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    exo.ok("Set-OutboundConnector", {"Identity": MAILGATES["Name"], "Comment": "x"})
    exo.ok("Get-OutboundConnector")
    exo.invoke("Remove-OutboundConnector", {"Identity": "Ghost"})
    assert exo.sim.calls(exo.tenant) == {
        "New-OutboundConnector": 1,
        "Set-OutboundConnector": 1,
        "Get-OutboundConnector": 1,
        "Remove-OutboundConnector": 1,
    }
    assert [(w["cmdlet"], w["identity"]) for w in exo.sim.writes()] == [
        ("New-OutboundConnector", MAILGATES["Name"]),
        ("Set-OutboundConnector", MAILGATES["Name"]),
    ]
    exo.sim.reset_log()
    assert (exo.sim.log, exo.sim.calls(), exo.sim.writes(), exo.sim.token_requests()) == ([], {}, [], 0)
    assert len(exo.sim.connectors(exo.tenant)) == 1  # state is kept


def test_concurrent_clients_on_many_tenants_do_not_interfere(simulator: Simulator) -> None:
    tenants = [str(uuid.uuid4()) for _ in range(6)]
    errors: list[str] = []

    def provision(tenant: str) -> None:
        client = Exo(simulator, tenant)
        for index in range(5):
            response = client.invoke(
                "New-OutboundConnector", {"Name": f"c{index}", "RecipientDomains": ["*.x.example"]}
            )
            if response.status_code != 200:
                errors.append(response.text)

    threads = [threading.Thread(target=provision, args=(tenant,)) for tenant in tenants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert all(len(simulator.connectors(tenant)) == 5 for tenant in tenants)
    assert sum(len(simulator.writes(tenant)) for tenant in tenants) == 30


# --- control API and the command line ----------------------------------------------------------


def test_control_api_drives_the_same_state_as_the_python_api(exo: Exo) -> None:
    configured = exo.control(
        "POST",
        f"tenants/{exo.tenant}",
        {"replication_lag": 0, "accepted_domains": ["contoso.com"], "connectors": [ENTERPRISE_AUDIT]},
    )
    assert configured.status_code == 200, configured.text
    assert configured.json()["options"]["replication_lag"] == 0
    assert exo.control("POST", f"tenants/{exo.tenant}", {"no_such_option": 1}).status_code == 400
    connectors = exo.control("GET", f"tenants/{exo.tenant}/connectors").json()["value"]
    assert [row["Name"] for row in connectors] == [ENTERPRISE_AUDIT["Name"]]
    seeded = exo.control("POST", f"tenants/{exo.tenant}/connectors", {"Name": "Foreign", "RecipientDomains": ["*"]})
    assert seeded.status_code == 200
    domains = exo.control("GET", f"tenants/{exo.tenant}/accepted-domains").json()["value"]
    assert domains[0]["DomainName"] == "contoso.com"

    fault = exo.control("POST", f"tenants/{exo.tenant}/faults", {"kind": "throttle", "count": 1, "retry_after": 2})
    assert fault.status_code == 200
    assert exo.invoke("Get-OutboundConnector").status_code == 429
    assert len(exo.ok("Get-OutboundConnector")) == 2

    stats = exo.control("GET", "stats").json()
    assert stats["calls"][exo.tenant] == {"Get-OutboundConnector": 2}
    assert stats["token_requests"][exo.tenant] == 1
    tenant_stats = exo.control("GET", f"tenants/{exo.tenant}/stats").json()
    assert tenant_stats["calls"] == {"Get-OutboundConnector": 2}
    log = exo.control("GET", f"log?tenant={exo.tenant}").json()["entries"]
    assert [entry["status"] for entry in log] == [200, 429, 200]
    assert exo.control("DELETE", "log").status_code == 200
    assert exo.sim.log == []

    assert exo.control("POST", "clients", {"client_id": "ops-app", "secret": "s3"}).status_code == 200
    assert exo.request_token(client_id="ops-app", client_secret="s3").status_code == 200
    assert exo.control("POST", "tokens/expire", {"tenant": exo.tenant}).json()["expired"] >= 1
    assert exo.control("POST", "reset").status_code == 200
    assert exo.sim.connectors(exo.tenant) == []
    assert exo.control("GET", "health").json() == {"status": "ok"}
    assert exo.control("GET", "nope").status_code == 404


def test_one_command_starts_an_https_simulator_that_prints_a_ready_line(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "exosim", "--port", "0", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("exosim listening on https://127.0.0.1:"), line
        url = line.split()[3]
        ca_file = line.split("ca=")[1].split()[0]
        assert ca_file == str(tmp_path / "ca.pem")
        assert requests.get(f"{url}/_sim/health", verify=ca_file, timeout=5).json() == {"status": "ok"}
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{url}/_sim/health", verify=True, timeout=5)  # only the throw-away CA vouches for it
        info = json.loads((tmp_path / "exosim.json").read_text())
        assert info["url"] == url
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


# --- test mode, rows as the service writes them, Prefer, refused pages, plain-text throttling -----


def test_listings_and_lookups_split_connectors_by_test_mode_as_documented(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    exo.ok("New-OutboundConnector", {**ENTERPRISE_AUDIT, "TestMode": True})
    names = [row["Name"] for row in exo.ok("Get-OutboundConnector")]
    assert names == [MAILGATES["Name"]]
    assert [row["Name"] for row in exo.ok("Get-OutboundConnector", {"IncludeTestModeConnectors": False})] == names
    assert [row["Name"] for row in exo.ok("Get-OutboundConnector", {"IncludeTestModeConnectors": True})] == [
        ENTERPRISE_AUDIT["Name"]]
    assert exo.ok("Get-OutboundConnector", {"Identity": ENTERPRISE_AUDIT["Name"]}) == []
    (found,) = exo.ok("Get-OutboundConnector",
                      {"Identity": ENTERPRISE_AUDIT["Name"], "IncludeTestModeConnectors": True})
    assert found["TestMode"] is True
    # Set, Validate and Remove find a connector in test mode by Identity like any other.
    exo.ok("Set-OutboundConnector", {"Identity": ENTERPRISE_AUDIT["Name"], "TestMode": False})
    assert {row["Name"] for row in exo.ok("Get-OutboundConnector")} == {MAILGATES["Name"], ENTERPRISE_AUDIT["Name"]}


def test_rows_carry_annotations_seven_digit_times_and_the_unmanaged_modes(exo: Exo) -> None:
    exo.ok("New-OutboundConnector", MAILGATES)
    exo.ok("Set-OutboundConnector", {"Identity": MAILGATES["Name"], "IsValidated": True,
                                     "ValidationRecipients": ["adm@example.com"],
                                     "LastValidationTimestamp": "2026-07-24T18:59:12Z"})
    (row,) = exo.ok("Get-OutboundConnector")
    for prop in ("SmartHosts", "RecipientDomains", "ValidationRecipients"):
        assert row[f"{prop}@odata.type"] == "#Collection(String)"
        assert isinstance(row[prop], list)
    assert (row["MtaStsMode"], row["SmtpDaneMode"]) == ("Opportunistic", "Opportunistic")
    assert row["LastValidationTimestamp"] == "2026-07-24T18:59:12.0000000"
    for prop in ("WhenCreated", "WhenChanged", "WhenCreatedUTC", "WhenChangedUTC"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", row[prop]), row[prop]


def test_a_wizard_made_connector_can_be_seeded_as_the_admin_center_leaves_it(exo: Exo) -> None:
    exo.sim.seed_connector(exo.tenant, **MAILGATES, ConnectorSource="AdminUI", IsValidated=True,
                           ValidationRecipients=["adm@example.com"],
                           LastValidationTimestamp="2026-07-24T18:59:12.0000000")
    (row,) = exo.ok("Get-OutboundConnector")
    assert (row["ConnectorSource"], row["IsValidated"], row["LastValidationTimestamp"]) == (
        "AdminUI", True, "2026-07-24T18:59:12.0000000")


def test_prefer_maxpagesize_lowers_the_page_size(exo: Exo) -> None:
    for index in range(3):
        exo.ok("New-OutboundConnector", {"Name": f"c{index}", "RecipientDomains": [f"d{index}.example.com"]})
    assert "@odata.nextLink" not in exo.invoke("Get-OutboundConnector").json()
    page = exo.invoke("Get-OutboundConnector", headers={"Prefer": "odata.maxpagesize=2"}).json()
    assert [row["Name"] for row in page["value"]] == ["c0", "c1"]
    assert "@odata.nextLink" in page
    exo.sim.configure_tenant(exo.tenant, page_size=1)
    page = exo.invoke("Get-OutboundConnector", headers={"Prefer": "odata.maxpagesize=1000"}).json()
    assert len(page["value"]) == 1  # never more than the server's own page size


def test_next_links_can_be_refused_as_expired_as_a_live_capture_saw(exo: Exo) -> None:
    exo.sim.configure_tenant(exo.tenant, page_size=1, refuse_next_links=1)
    for index in range(2):
        exo.ok("New-OutboundConnector", {"Name": f"c{index}", "RecipientDomains": [f"d{index}.example.com"]})
    first = exo.invoke("Get-OutboundConnector").json()["@odata.nextLink"]
    refused = exo.invoke("Get-OutboundConnector", url=first)
    assert refused.status_code == 400
    assert inner(refused)["message"] == "Expired or Invalid pagination request. Default Expiry time is 00:30:00"
    assert exo.invoke("Get-OutboundConnector", url=first).status_code == 400  # that cursor is gone for good
    second = exo.invoke("Get-OutboundConnector").json()["@odata.nextLink"]
    assert [row["Name"] for row in exo.invoke("Get-OutboundConnector", url=second).json()["value"]] == ["c1"]


def test_plain_text_throttling_comes_with_rate_limit_headers_and_no_json(exo: Exo) -> None:
    exo.sim.fail_next(exo.tenant, 1, "throttle_text", retry_after=9)
    response = exo.invoke("Get-OutboundConnector")
    assert response.status_code == 429
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == ("You have reached the maximum number of concurrent requests per tenant. "
                             "Please wait and try again.")
    assert response.headers["Rate-Limit-Remaining"] == "0"
    assert response.headers["Rate-Limit-Reset"] == "9"
    assert "Retry-After" not in response.headers
    assert response.headers["X-ExceptionType"].endswith("PSRemotingTransportException")
