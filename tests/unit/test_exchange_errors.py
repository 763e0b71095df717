"""Exchange error extraction and mapping, and the client's wire behaviour, over a fake transport.

The fake is a requests adapter mounted on a real Session: the client's own code (headers,
streaming raw read, gzip handling, paging, allow-list guard) runs unchanged, only the socket
is replaced by canned answers.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import requests.adapters
import urllib3
from requests.structures import CaseInsensitiveDict

from shared.connectors import ConnectorSpec
from shared.errors import (
    ConnectorExistsError,
    ConnectorNotFoundError,
    ErrorCode,
    ExchangeError,
    ProvisioningError,
    RoutingPolicyError,
    TransientError,
)
from shared.exchange import (
    AcceptedDomain,
    CallRecord,
    Connector,
    ExchangeAdminClient,
    ValidationTask,
    error_from_response,
    extract_error_message,
    https_session,
    parse_exchange_time,
    parse_retry_after,
    throttle_wait,
    validation_tasks,
)

TENANT = "11111111-2222-3333-4444-555555555555"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.secret-token-value."
NOT_FOUND_TYPE = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
EXISTS_TYPE = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAlreadyExistsException"


# --------------------------------------------------------------------------- fakes


@dataclass
class Canned:
    status: int = 200
    body: bytes | dict[str, Any] = field(default_factory=lambda: {"value": []})
    headers: dict[str, str] = field(default_factory=dict)

    def entity(self) -> bytes:
        return json.dumps(self.body).encode() if isinstance(self.body, dict) else self.body


class CannedAdapter(requests.adapters.BaseAdapter):
    """Answers each request with the next canned response (or raises the next exception)."""

    def __init__(self, *answers: Canned | Exception) -> None:
        super().__init__()
        self.answers = list(answers)
        self.sent: list[requests.PreparedRequest] = []
        self.timeouts: list[object] = []

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: object = None,
             verify: object = True, cert: object = None, proxies: object = None) -> requests.Response:
        self.sent.append(request)
        self.timeouts.append(timeout)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(answer.entity()), headers=answer.headers, status=answer.status,
            preload_content=False, decode_content=False,
        )
        response = requests.Response()
        response.status_code = answer.status
        response.headers = CaseInsensitiveDict(answer.headers)
        response.raw = raw
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.body or b"{}") for r in self.sent]


class StaticToken:
    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, tenant_id: str) -> str:
        self.calls += 1
        return TOKEN


def client_with(*answers: Canned | Exception, **kwargs: Any) -> tuple[ExchangeAdminClient, CannedAdapter]:
    adapter = CannedAdapter(*answers)
    session = requests.Session()
    session.mount("https://", adapter)
    client = ExchangeAdminClient(TENANT, credential=StaticToken(), session=session, **kwargs)
    return client, adapter


def error_body(message: str = "", *, details: list[Any] | None = None, internal: dict[str, str] | None = None,
               code: str = "BadRequest") -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    if internal is not None:
        error["innererror"] = {"message": "outer", "type": "System.Management.Automation.RemoteException",
                               "internalexception": internal}
    return {"error": error}


def raised(status: int, body: bytes | dict[str, Any], headers: Mapping[str, str] | None = None) -> ProvisioningError:
    entity = json.dumps(body).encode() if isinstance(body, dict) else body
    return error_from_response(status, dict(headers or {}), entity, cmdlet="Set-OutboundConnector")


# --------------------------------------------------------------------------- extraction


def test_internal_exception_message_wins_over_details_and_top_level_message() -> None:
    body = error_body("top", details=[{"message": "|Some.Type|from details"}],
                      internal={"message": "the real reason",
                                "type": "Microsoft.Exchange.Data.DataValidationException"})
    assert extract_error_message(body) == ("the real reason", "Microsoft.Exchange.Data.DataValidationException")


def test_piped_details_message_is_split_into_type_and_text() -> None:
    body = error_body("top", details=[{"message": f"|{NOT_FOUND_TYPE}|The operation couldn't be performed because "
                                                  "object 'X' couldn't be found on 'DC01'."}])
    text, type_name = extract_error_message(body)
    assert text == "The operation couldn't be performed because object 'X' couldn't be found on 'DC01'."
    assert type_name == NOT_FOUND_TYPE


def test_piped_message_with_an_exchange_error_code_prefix_is_split_too() -> None:
    body = error_body(f"Ex6F9304|{EXISTS_TYPE}|An object with the name 'A' already exists.")
    assert extract_error_message(body) == ("An object with the name 'A' already exists.", EXISTS_TYPE)


def test_json_details_message_gives_message_and_type_name() -> None:
    details = [{"message": json.dumps({"Message": "SmartHosts is required", "TypeName": "ParameterBindingException"})}]
    assert extract_error_message(error_body("top", details=details)) == ("SmartHosts is required",
                                                                         "ParameterBindingException")


def test_top_level_message_is_used_when_nothing_more_specific_exists() -> None:
    assert extract_error_message(error_body("Plain words")) == ("Plain words", None)


def test_bodies_without_an_error_object_yield_no_message() -> None:
    assert extract_error_message(None) == ("", None)
    assert extract_error_message({"value": []}) == ("", None)
    assert extract_error_message({"error": "a string"}) == ("", None)
    assert extract_error_message(error_body("", details=[])) == ("", None)


def test_empty_internal_exception_falls_through_to_details() -> None:
    body = error_body("top", details=["|T.Y|plain string detail"], internal={"message": "  ", "type": "X"})
    assert extract_error_message(body) == ("plain string detail", "T.Y")


# --------------------------------------------------------------------------- mapping


def test_429_is_throttled_with_retry_after_in_seconds() -> None:
    err = raised(429, error_body("Too many requests"), {"Retry-After": "17"})
    assert isinstance(err, TransientError)
    assert err.code is ErrorCode.THROTTLED
    assert err.retryable and err.retry_after == 17.0 and err.status_code == 429


def test_429_without_retry_after_leaves_the_delay_to_the_back_off() -> None:
    err = raised(429, b"")
    assert err.code is ErrorCode.THROTTLED and err.retry_after is None


def test_retry_after_as_http_date_is_turned_into_seconds() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(header, now=now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_503_is_exchange_unavailable_and_retryable() -> None:
    err = raised(503, error_body("Service Unavailable"), {"Retry-After": "5"})
    assert isinstance(err, TransientError)
    assert err.code is ErrorCode.EXCHANGE_UNAVAILABLE and err.retry_after == 5.0


@pytest.mark.parametrize("status", [408, 500, 502, 504])
def test_other_transient_statuses_are_exchange_unavailable(status: int) -> None:
    err = raised(status, b"<html><body>Gateway trouble</body></html>")
    assert err.code is ErrorCode.EXCHANGE_UNAVAILABLE and err.retryable
    assert "Gateway trouble" in err.detail


def test_transient_exception_in_a_400_body_is_retryable() -> None:
    body = error_body("x", details=[{"message": "|Microsoft.Exchange.Data.Storage.TransientException|"
                                                "Try again later."}])
    err = raised(400, body)
    assert isinstance(err, TransientError)
    assert err.code is ErrorCode.EXCHANGE_UNAVAILABLE
    assert getattr(err, "exception_type", None) == "Microsoft.Exchange.Data.Storage.TransientException"


def test_too_many_concurrent_requests_text_is_throttling() -> None:
    err = raised(400, error_body("Fail to create a runspace because you have exceeded your budget to create "
                                 "runspace. The maximum number of concurrent requests is 3."))
    assert err.code is ErrorCode.THROTTLED and err.retryable


def test_server_busy_exception_is_throttling() -> None:
    err = raised(500, error_body("busy", internal={"message": "The server is busy.",
                                                   "type": "Microsoft.Exchange.Net.ServerBusyException"}))
    assert err.code is ErrorCode.THROTTLED


@pytest.mark.parametrize("marker", ["BackendCommunicationException", "CmdletProxyNotAvailableFailure",
                                    "ADServerSettingsChangedException"])
def test_other_transient_exception_names_are_retryable(marker: str) -> None:
    err = raised(400, error_body(f"|Microsoft.Exchange.{marker}|it happened"))
    assert err.code is ErrorCode.EXCHANGE_UNAVAILABLE and err.retryable


def test_401_is_consent_missing_needing_a_human_and_not_retried() -> None:
    # The token carries no Exchange.ManageAsApp: the permission, not the role (graph2otel's
    # live measurement: 401 with neither grant, 403 with the permission only).
    err = raised(401, b"")
    assert isinstance(err, ExchangeError)
    assert err.code is ErrorCode.CONSENT_MISSING
    assert err.needs_attention and not err.retryable


def test_403_with_nul_bytes_is_role_missing_with_a_readable_detail() -> None:
    err = raised(403, b"\x00" * 16, {"Content-Encoding": "gzip"})
    assert err.code is ErrorCode.ROLE_MISSING and err.needs_attention
    assert "16 bytes" in err.detail and "\x00" not in err.detail


def test_not_found_exception_type_is_connector_not_found_keeping_exchange_words() -> None:
    message = "The operation couldn't be performed because object 'MG' couldn't be found on 'DC01'."
    err = raised(404, error_body("x", details=[{"message": f"|{NOT_FOUND_TYPE}|{message}"}]))
    assert isinstance(err, ConnectorNotFoundError)
    assert message in err.detail and err.exception_type == NOT_FOUND_TYPE
    assert not err.retryable


def test_a_bare_404_from_a_wrong_url_is_not_mistaken_for_a_missing_connector() -> None:
    err = raised(404, b"<html>Not Found</html>")
    assert type(err) is ExchangeError
    assert err.code is ErrorCode.EXCHANGE_REJECTED


def test_404_with_exchange_not_found_text_but_no_type_is_connector_not_found() -> None:
    err = raised(404, error_body("The operation couldn't be performed because object 'X' couldn't be found."))
    assert isinstance(err, ConnectorNotFoundError)


def test_already_exists_exception_is_connector_exists() -> None:
    err = raised(400, error_body("x", internal={"message": "An object named 'EA' already exists.",
                                                "type": EXISTS_TYPE}))
    assert isinstance(err, ConnectorExistsError)
    assert err.code is ErrorCode.EXCHANGE_REJECTED and not err.retryable


def test_data_validation_400_is_rejected_permanently_with_exchange_text() -> None:
    details = [{"message": json.dumps({"Message": "A parameter cannot be found that matches parameter name "
                                                  "'SenderRewritingEnabled'.",
                                       "TypeName": "System.Management.Automation.ParameterBindingException"})}]
    err = raised(400, error_body("x", details=details))
    assert type(err) is ExchangeError
    assert err.code is ErrorCode.EXCHANGE_REJECTED and not err.retryable
    assert "SenderRewritingEnabled" in err.detail
    assert err.exception_type == "System.Management.Automation.ParameterBindingException"


def test_empty_and_non_json_5xx_bodies_map_cleanly() -> None:
    assert raised(500, b"").detail == "Set-OutboundConnector: HTTP 500 with an empty body"
    err = raised(502, b"\xff\xfe garbage \x00")
    assert err.code is ErrorCode.EXCHANGE_UNAVAILABLE


def test_a_token_echoed_by_the_server_is_scrubbed_from_the_detail() -> None:
    err = error_from_response(400, {}, json.dumps(error_body(f"bad header Bearer {TOKEN}")).encode(),
                              cmdlet="Get-OutboundConnector", secret=TOKEN)
    assert TOKEN not in err.detail and TOKEN not in str(err)


# --------------------------------------------------------------------------- client over the fake


def test_invoke_posts_the_protocol_body_and_headers_with_a_timeout() -> None:
    client, adapter = client_with(Canned(body={"value": [{"Name": "A"}]}), timeout=12.5)
    rows = client.invoke("Get-OutboundConnector", {"Identity": "A"})
    assert rows == [{"Name": "A"}]
    request = adapter.sent[0]
    assert request.method == "POST"
    assert request.url == f"https://outlook.office365.com/adminapi/beta/{TENANT}/InvokeCommand"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-AnchorMailbox"] == f"APP:SystemMailbox{{bb558c35-97f1-4cb9-8ff7-d53741dc928c}}@{TENANT}"
    assert adapter.bodies() == [{"CmdletInput": {"CmdletName": "Get-OutboundConnector",
                                                 "Parameters": {"Identity": "A"}}}]
    assert adapter.timeouts == [12.5]


def test_paging_posts_the_same_body_to_next_link_and_concatenates_rows() -> None:
    next_url = f"https://outlook.office365.com/adminapi/beta/{TENANT}/InvokeCommand?$skiptoken=2"
    client, adapter = client_with(
        Canned(body={"value": [{"Name": "A"}], "@odata.nextLink": next_url}),
        Canned(body={"value": [{"Name": "B"}]}),
    )
    assert [c.name for c in client.list_outbound_connectors()] == ["A", "B"]
    assert adapter.sent[1].url == next_url
    assert adapter.sent[0].body == adapter.sent[1].body
    assert adapter.sent[1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_next_link_to_another_host_is_not_followed_so_the_token_stays_home() -> None:
    client, adapter = client_with(Canned(body={"value": [], "@odata.nextLink": "https://evil.example/steal"}))
    with pytest.raises(ExchangeError, match="outside"):
        client.invoke("Get-OutboundConnector")
    assert len(adapter.sent) == 1


def test_a_repeating_next_link_stops_instead_of_looping_forever() -> None:
    url = "https://outlook.office365.com/page2"
    client, _ = client_with(Canned(body={"value": [], "@odata.nextLink": url}),
                            Canned(body={"value": [], "@odata.nextLink": url}))
    with pytest.raises(ExchangeError, match="paging"):
        client.invoke("Get-OutboundConnector")


def test_a_gzip_encoded_success_is_decoded() -> None:
    entity = gzip.compress(json.dumps({"value": [{"DomainName": "contoso.com", "Default": True}]}).encode())
    client, _ = client_with(Canned(body=entity, headers={"Content-Encoding": "gzip"}))
    assert client.list_accepted_domains() == [AcceptedDomain("contoso.com", "", True)]


def test_a_403_of_nul_bytes_under_false_gzip_is_role_missing_not_a_crash() -> None:
    client, _ = client_with(Canned(403, b"\x00" * 64, {"Content-Encoding": "gzip", "Content-Type": "text/html"}))
    with pytest.raises(ExchangeError) as info:
        client.list_outbound_connectors()
    assert info.value.code is ErrorCode.ROLE_MISSING


def test_connection_error_and_timeout_are_network_errors() -> None:
    for failure in (requests.ConnectionError("refused"), requests.ReadTimeout("slow")):
        client, _ = client_with(failure)
        with pytest.raises(TransientError) as info:
            client.invoke("Get-AcceptedDomain")
        assert info.value.code is ErrorCode.NETWORK_ERROR
        assert isinstance(info.value.__cause__, requests.RequestException)


def test_a_2xx_that_is_not_json_is_a_retryable_unavailability() -> None:
    client, _ = client_with(Canned(200, b"<html>proxy login</html>"))
    with pytest.raises(TransientError) as info:
        client.invoke("Get-AcceptedDomain")
    assert info.value.code is ErrorCode.EXCHANGE_UNAVAILABLE


def test_every_http_call_is_reported_to_on_call_without_the_token() -> None:
    records: list[CallRecord] = []
    client, _ = client_with(Canned(body={"value": []}), Canned(429, b"", {"Retry-After": "1"}), on_call=records.append)
    client.invoke("Get-AcceptedDomain")
    with pytest.raises(TransientError):
        client.invoke("Get-OutboundConnector")
    assert [(r.cmdlet, r.status, r.ok, r.error_code) for r in records] == [
        ("Get-AcceptedDomain", 200, True, None),
        ("Get-OutboundConnector", 429, False, "THROTTLED"),
    ]
    assert all(r.duration_ms >= 0 for r in records)
    assert TOKEN not in repr(records)


def test_network_failures_are_reported_with_no_status() -> None:
    records: list[CallRecord] = []
    client, _ = client_with(requests.ConnectionError("down"), on_call=records.append)
    with pytest.raises(TransientError):
        client.invoke("Get-AcceptedDomain")
    assert records[0].status is None and records[0].error_code == "NETWORK_ERROR"


# --------------------------------------------------------------------------- allow-list guard


def mailgates(host: str = "mgf.cybermail.jp") -> ConnectorSpec:
    return ConnectorSpec(service="mailgates", name="MAILGATESΣ 送信コネクタ", recipient_domains=("*",),
                         smart_hosts=(host,), use_mx_record=False, validation_recipients=("v@example.jp",))


def test_a_smart_host_off_the_allow_list_is_refused_before_anything_is_sent() -> None:
    client, adapter = client_with()
    with pytest.raises(RoutingPolicyError) as info:
        client.create_outbound_connector(mailgates("mail.attacker.example"))
    assert info.value.code is ErrorCode.ROUTING_NOT_ALLOWED and not info.value.retryable
    assert isinstance(info.value, ValueError)
    assert adapter.sent == []


def test_the_guard_ignores_parameter_name_case() -> None:
    client, adapter = client_with()
    with pytest.raises(RoutingPolicyError):
        client.update_outbound_connector("X", {"smarthosts": ["relay.attacker.example"]})
    with pytest.raises(RoutingPolicyError):
        client.update_outbound_connector("X", {"RECIPIENTDOMAINS": "*.attacker.example"})
    assert adapter.sent == []


@pytest.mark.parametrize("domains", [["contoso.com"], ["*.attacker.example"], ["a.*.cs-365.cybermail.jp"],
                                     ["*", "*.cybermail.jp"], [{"Add": "*.evil.example"}]])
def test_recipient_domains_other_than_star_or_an_allowed_journal_wildcard_are_refused(domains: list[Any]) -> None:
    client, adapter = client_with()
    with pytest.raises(RoutingPolicyError):
        client.update_outbound_connector("EA", {"RecipientDomains": domains})
    assert adapter.sent == []


def test_allowed_smart_hosts_and_journal_domains_pass_the_guard() -> None:
    client, adapter = client_with(Canned(body={"value": []}), Canned(body={"value": []}))
    client.update_outbound_connector("EA", {"RecipientDomains": ["*.CS-365.cybermail.jp."]})
    client.update_outbound_connector("MG", {"SmartHosts": ["mgs.cybermail.jp"], "RecipientDomains": ["*"]})
    assert len(adapter.sent) == 2


def test_custom_allow_lists_replace_the_defaults() -> None:
    client, adapter = client_with(Canned(body={"value": []}), allowed_smart_hosts=frozenset({"relay.example.jp"}))
    with pytest.raises(RoutingPolicyError):
        client.update_outbound_connector("MG", {"SmartHosts": ["mgf.cybermail.jp"]})
    client.update_outbound_connector("MG", {"SmartHosts": ["relay.example.jp"]})
    assert len(adapter.sent) == 1


def test_cmdlets_outside_the_allow_list_are_refused_before_sending() -> None:
    client, adapter = client_with()
    for cmdlet in ("Set-OrganizationConfig", "Remove-AcceptedDomain", "New-InboundConnector", "get-outboundconnector",
                   "New-TransportRule"):
        with pytest.raises(ValueError, match="not one this client may send"):
            client.invoke(cmdlet)
    assert adapter.sent == []


# --------------------------------------------------------------------------- typed helpers


def test_get_matches_by_name_when_exchange_returns_every_connector() -> None:
    rows = [{"Name": "Other", "Guid": "g1"}, {"Name": "mailgatesσ 送信コネクタ", "Guid": "g2"}]
    client, adapter = client_with(Canned(body={"value": rows}))
    connector = client.get_outbound_connector("MAILGATESΣ 送信コネクタ")
    assert connector is not None and connector.guid == "g2"
    assert adapter.bodies()[0]["CmdletInput"]["Parameters"] == {"Identity": "MAILGATESΣ 送信コネクタ"}


def test_get_returns_none_when_no_row_has_the_name_or_exchange_says_not_found() -> None:
    not_found = Canned(404, error_body(f"|{NOT_FOUND_TYPE}|couldn't be found"))
    client, _ = client_with(Canned(body={"value": [{"Name": "Other"}]}), not_found)
    assert client.get_outbound_connector("Mine") is None
    assert client.get_outbound_connector("Mine") is None


def test_create_sends_new_parameters_and_returns_the_new_row() -> None:
    row = {"Name": "MAILGATESΣ 送信コネクタ", "Guid": "abc", "SmartHosts": ["mgf.cybermail.jp"],
           "RecipientDomains": ["*"], "UseMXRecord": False, "Enabled": True}
    client, adapter = client_with(Canned(body={"value": [row]}))
    connector = client.create_outbound_connector(mailgates())
    assert connector.guid == "abc" and connector.smart_hosts == ("mgf.cybermail.jp",)
    sent = adapter.bodies()[0]["CmdletInput"]
    assert sent["CmdletName"] == "New-OutboundConnector"
    assert sent["Parameters"] == mailgates().new_parameters()


def test_create_of_an_existing_name_raises_connector_exists() -> None:
    client, _ = client_with(Canned(400, error_body(f"|{EXISTS_TYPE}|already exists")))
    with pytest.raises(ConnectorExistsError):
        client.create_outbound_connector(mailgates())


def test_update_of_an_absent_connector_raises_connector_not_found() -> None:
    client, adapter = client_with(Canned(404, error_body(f"|{NOT_FOUND_TYPE}|couldn't be found")))
    with pytest.raises(ConnectorNotFoundError):
        client.update_outbound_connector("Gone", {"Enabled": True})
    assert adapter.bodies()[0]["CmdletInput"]["Parameters"] == {"Identity": "Gone", "Enabled": True}


def test_update_refuses_an_identity_inside_changes() -> None:
    client, adapter = client_with()
    with pytest.raises(ValueError, match="Identity"):
        client.update_outbound_connector("A", {"identity": "B"})
    assert adapter.sent == []


def test_remove_does_not_prompt() -> None:
    client, adapter = client_with(Canned(body={"value": []}))
    client.remove_outbound_connector("MAILGATESΣ 送信コネクタ")
    assert adapter.bodies()[0]["CmdletInput"] == {"CmdletName": "Remove-OutboundConnector",
                                                  "Parameters": {"Identity": "MAILGATESΣ 送信コネクタ",
                                                                 "Confirm": False}}


def test_remove_admits_our_name_as_people_type_it() -> None:
    client, adapter = client_with(Canned(body={"value": []}))
    client.remove_outbound_connector("mailgates Σ 送信コネクタ")
    assert adapter.bodies()[0]["CmdletInput"]["Parameters"]["Identity"] == "mailgates Σ 送信コネクタ"


@pytest.mark.parametrize("parameters", [
    {"Identity": "Contoso relay", "Confirm": False},                        # someone else's connector
    {"Identity": "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "Confirm": False},  # a GUID names any connector
    {"Identity": "MAILGATESΣ 送信コネクタ"},                                # would prompt
    {"Identity": "MAILGATESΣ 送信コネクタ", "Confirm": True},
    {"Identity": "MAILGATESΣ 送信コネクタ", "Confirm": False, "WhatIf": False},
    {"Identity": ["MAILGATESΣ 送信コネクタ"], "Confirm": False},
])
def test_remove_is_refused_before_sending_unless_it_names_our_connector(parameters: dict[str, Any]) -> None:
    client, adapter = client_with(Canned(body={"value": []}))
    with pytest.raises(RoutingPolicyError, match="Remove-OutboundConnector"):
        client.invoke("Remove-OutboundConnector", parameters)
    assert adapter.sent == []


def test_remove_follows_the_configured_connector_names() -> None:
    client, adapter = client_with(Canned(body={"value": []}), own_connector_names=("Relay A", "Relay B"))
    client.remove_outbound_connector("relay b")
    with pytest.raises(RoutingPolicyError):
        client.remove_outbound_connector("MAILGATESΣ 送信コネクタ")
    assert len(adapter.sent) == 1


def test_validate_reads_the_nested_result_of_the_admin_api_as_its_leaf_tasks() -> None:
    # OutboundConnectorValidationResult {IsTaskSuccessful, TaskName, TaskDetail, SubTaskResults}
    unreachable = ("450 4.4.317 Cannot connect to remote server [Message=SocketError: TimedOut "
                   "SocketErrorCode: TimedOut] [LastAttemptedServerName=mgf.cybermail.jp]")
    rows = [
        {"TaskName": "Check connectivity", "IsTaskSuccessful": False, "TaskDetail": "",
         "SubTaskResults@odata.type": "#Collection(Exchange.OutboundConnectorValidationResult)",
         "SubTaskResults": [{"TaskName": "Check connectivity to 'mgf.cybermail.jp'", "IsTaskSuccessful": False,
                             "TaskDetail": unreachable, "SubTaskResults": []}]},
        {"TaskName": "Send test email", "IsTaskSuccessful": True, "TaskDetail": "",
         "SubTaskResults": [{"TaskName": "Send test email to v@example.jp", "IsTaskSuccessful": True,
                             "TaskDetail": "sent", "SubTaskResults": []}]},
    ]
    client, _ = client_with(Canned(body={"value": rows}))
    tasks = client.validate_outbound_connector("MG", ["v@example.jp"])
    assert tasks == [
        ValidationTask("Check connectivity to 'mgf.cybermail.jp'", False, unreachable, ("Check connectivity",)),
        ValidationTask("Send test email to v@example.jp", True, "sent", ("Send test email",)),
    ]


def test_a_leaf_that_does_not_say_it_succeeded_did_not() -> None:
    rows = [{"TaskName": "Send test email", "IsTaskSuccessful": True, "SubTaskResults": [
        {"TaskName": "to a@example.jp", "IsTaskSuccessful": None, "TaskDetail": "?"},
        {"TaskName": "to b@example.jp", "TaskDetail": "no verdict"},
        {"TaskName": "to c@example.jp", "IsTaskSuccessful": True}]}]
    assert [(t.task_name, t.successful) for t in validation_tasks(rows)] == [
        ("to a@example.jp", False), ("to b@example.jp", False), ("to c@example.jp", True)]


def test_a_parent_that_failed_is_kept_even_when_its_leaves_passed() -> None:
    rows = [{"TaskName": "Validate", "IsTaskSuccessful": False, "TaskDetail": "routing loop detected",
             "SubTaskResults": [{"TaskName": "Send test email", "IsTaskSuccessful": True}]}]
    tasks = validation_tasks(rows)
    assert [(t.task_name, t.successful, t.details) for t in tasks] == [
        ("Send test email", True, ""), ("Validate", False, "routing loop detected")]


def test_validation_tasks_of_nothing_is_nothing_and_deep_nesting_stops() -> None:
    assert validation_tasks([]) == []
    row: dict[str, Any] = {"TaskName": "leaf", "IsTaskSuccessful": True}
    for depth in range(50):
        row = {"TaskName": f"level {depth}", "IsTaskSuccessful": True, "SubTaskResults": [row]}
    tasks = validation_tasks([row])
    assert len(tasks) == 1 and tasks[0].successful and len(tasks[0].path) == 8


def test_validate_gets_its_own_timeout_and_other_cmdlets_keep_theirs() -> None:
    client, adapter = client_with(Canned(), Canned(), timeout=30.0, validate_timeout=240.0)
    client.invoke("Get-OutboundConnector")
    client.validate_outbound_connector("MG", ["v@example.jp"])
    assert adapter.timeouts == [30.0, 240.0]


def test_a_validate_that_times_out_is_not_repeated_and_says_its_mail_may_have_gone() -> None:
    client, adapter = client_with(requests.ReadTimeout("read timed out"), Canned(), validate_timeout=1.0)
    with pytest.raises(ProvisioningError) as info:
        client.validate_outbound_connector("MG", ["v@example.jp"])
    assert info.value.code is ErrorCode.NETWORK_ERROR and info.value.retryable
    assert "may have run and sent its test message" in info.value.detail
    assert len(adapter.sent) == 1


def test_validate_returns_typed_tasks() -> None:
    rows = [{"TaskName": "Check connectivity to 'mgf.cybermail.jp'", "IsTaskSuccessful": True, "Details": "ok"},
            {"TaskName": "Send test email", "IsTaskSuccessful": False, "Details": None}]
    client, adapter = client_with(Canned(body={"value": rows}))
    tasks = client.validate_outbound_connector("MG", ["v@example.jp"])
    assert tasks == [ValidationTask("Check connectivity to 'mgf.cybermail.jp'", True, "ok"),
                     ValidationTask("Send test email", False, "")]
    assert adapter.bodies()[0]["CmdletInput"]["Parameters"] == {"Identity": "MG", "Recipients": ["v@example.jp"]}


def test_mark_validated_stamps_utc_with_z() -> None:
    client, adapter = client_with(Canned(body={"value": []}))
    jst = timezone(timedelta(hours=9))
    client.mark_validated("MG", ["v@example.jp"], when=datetime(2025, 4, 1, 9, 30, 15, 123456, tzinfo=jst))
    assert adapter.bodies()[0]["CmdletInput"] == {"CmdletName": "Set-OutboundConnector", "Parameters": {
        "Identity": "MG", "IsValidated": True, "ValidationRecipients": ["v@example.jp"],
        "LastValidationTimestamp": "2025-04-01T00:30:15Z"}}
    with pytest.raises(ValueError, match="timezone"):
        client.mark_validated("MG", [], when=datetime(2025, 4, 1))


def test_connector_rows_with_missing_and_null_fields_are_read_with_safe_defaults() -> None:
    connector = Connector.from_row({"Identity": "Legacy", "SmartHosts": None, "RecipientDomains": "*",
                                    "TlsSettings": None, "Comment": None, "IsValidated": "True"})
    assert connector.name == "Legacy"
    assert connector.smart_hosts == () and connector.recipient_domains == ("*",)
    assert connector.enabled is True and connector.test_mode is False and connector.is_validated is True
    assert connector.tls_settings is None and connector.comment == "" and connector.last_validation_timestamp is None
    assert connector.raw["Identity"] == "Legacy"
    assert hash(connector) == hash(Connector.from_row({"Identity": "Legacy", "RecipientDomains": ["*"],
                                                       "IsValidated": True}))


def test_closing_a_client_leaves_an_injected_session_open() -> None:
    closed: list[bool] = []

    class Tracking(requests.Session):
        def close(self) -> None:
            closed.append(True)
            super().close()

    with ExchangeAdminClient(TENANT, credential=StaticToken(), session=Tracking()):
        pass
    assert closed == []


def test_a_tenant_id_that_would_change_the_url_path_is_refused() -> None:
    with pytest.raises(ValueError, match="URL path"):
        ExchangeAdminClient("a/../b", credential=StaticToken())


# --------------------------------------------------------------------------- texts without type names


def test_a_transient_message_without_its_type_name_is_still_retryable() -> None:
    err = raised(400, error_body("The operation couldn't be completed because of a transient failure in the "
                                 "mailbox store. Try again later."))
    assert err.retryable and err.code is ErrorCode.EXCHANGE_UNAVAILABLE


def test_server_busy_words_without_the_type_name_are_throttling() -> None:
    err = raised(500, error_body("The server is too busy to process the request. Try again later."))
    assert err.code is ErrorCode.THROTTLED


# --------------------------------------------------------------------------- a token Exchange rejects


class InvalidatingToken(StaticToken):
    def __init__(self) -> None:
        super().__init__()
        self.invalidated: list[str] = []

    def invalidate(self, tenant_id: str) -> None:
        self.invalidated.append(tenant_id)


INVALID_TOKEN = {"WWW-Authenticate": 'Bearer client_id="x", error="invalid_token"'}


def invalidating_client(*answers: Canned) -> tuple[ExchangeAdminClient, CannedAdapter, InvalidatingToken]:
    adapter = CannedAdapter(*answers)
    session = requests.Session()
    session.mount("https://", adapter)
    credential = InvalidatingToken()
    return ExchangeAdminClient(TENANT, credential=credential, session=session), adapter, credential


def test_a_token_exchange_calls_invalid_is_replaced_once_and_the_call_repeated() -> None:
    client, adapter, credential = invalidating_client(Canned(401, b"", INVALID_TOKEN), Canned(body={"value": []}))
    assert client.invoke("Get-AcceptedDomain") == []
    assert credential.invalidated == [TENANT] and credential.calls == 2 and len(adapter.sent) == 2


def test_a_second_401_is_consent_missing_and_drops_the_token_again() -> None:
    client, adapter, credential = invalidating_client(Canned(401, b"", INVALID_TOKEN),
                                                      Canned(401, b"", INVALID_TOKEN))
    with pytest.raises(ExchangeError) as info:
        client.invoke("Get-AcceptedDomain")
    assert info.value.code is ErrorCode.CONSENT_MISSING
    # one drop to retry with a new token, one so that the next attempt starts with a new one
    assert len(adapter.sent) == 2 and credential.invalidated == [TENANT, TENANT]


def test_a_401_on_a_cached_token_is_settled_by_one_new_token_whatever_its_header() -> None:
    role = {"WWW-Authenticate": 'Bearer error="insufficient_privileges"'}
    client, adapter, credential = invalidating_client(Canned(401, b"", role), Canned(body={"value": []}))
    assert client.invoke("Get-AcceptedDomain") == []
    assert credential.invalidated == [TENANT] and credential.calls == 2 and len(adapter.sent) == 2


class FreshToken(InvalidatingToken):
    """A provider that says every token it hands out was just issued by Entra."""

    consent = "https://login.example/tenant/adminconsent?client_id=app"

    def token_is_fresh(self, tenant_id: str, token: str) -> bool:
        return token == TOKEN

    def admin_consent_url(self, tenant_id: str) -> str:
        return self.consent


def fresh_client(*answers: Canned) -> tuple[ExchangeAdminClient, CannedAdapter, FreshToken]:
    adapter = CannedAdapter(*answers)
    session = requests.Session()
    session.mount("https://", adapter)
    credential = FreshToken()
    return ExchangeAdminClient(TENANT, credential=credential, session=session), adapter, credential


def test_a_401_on_a_fresh_token_is_consent_missing_at_once_with_the_consent_url() -> None:
    client, adapter, credential = fresh_client(Canned(401, b"", INVALID_TOKEN))
    with pytest.raises(ExchangeError) as info:
        client.invoke("Get-AcceptedDomain")
    err = info.value
    assert err.code is ErrorCode.CONSENT_MISSING and err.needs_attention and not err.retryable
    assert FreshToken.consent in err.hint.en and FreshToken.consent in err.hint.ja
    assert len(adapter.sent) == 1 and credential.calls == 1
    # the token is dropped all the same, so that the next attempt asks Entra again
    assert credential.invalidated == [TENANT]


@pytest.mark.parametrize("gzip", [True, False])
def test_a_403_is_role_missing_and_drops_the_cached_token(gzip: bool) -> None:
    headers = {"Content-Encoding": "gzip"} if gzip else {}
    client, adapter, credential = fresh_client(Canned(403, b"\x00" * 64, headers))
    with pytest.raises(ExchangeError) as info:
        client.invoke("Get-OutboundConnector")
    assert info.value.code is ErrorCode.ROLE_MISSING and info.value.needs_attention
    assert credential.invalidated == [TENANT] and len(adapter.sent) == 1
    assert "the next attempt gets a new one" in info.value.detail


def test_other_errors_keep_the_cached_token() -> None:
    client, _, credential = fresh_client(Canned(400, error_body("|System.ArgumentException|bad")))
    with pytest.raises(ExchangeError):
        client.invoke("Get-OutboundConnector")
    assert credential.invalidated == []


# --------------------------------------------------------------------------- TLS trust from the environment


URL = "https://outlook.office365.com/adminapi"


def merged_verify(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], verify: Any = None) -> Any:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return https_session().merge_environment_settings(URL, {}, None, verify, None)["verify"]


def test_ssl_cert_file_is_trusted_like_requests_ca_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-")
    assert merged_verify(monkeypatch, {"SSL_CERT_FILE": str(bundle)}) == str(bundle)
    assert merged_verify(monkeypatch, {"SSL_CERT_DIR": str(tmp_path)}) == str(tmp_path)
    assert merged_verify(monkeypatch, {"REQUESTS_CA_BUNDLE": str(bundle)}) == str(bundle)


def test_requests_ca_bundle_wins_over_ssl_cert_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    first, second = tmp_path / "a.pem", tmp_path / "b.pem"
    first.write_text("-")
    second.write_text("-")
    assert merged_verify(monkeypatch, {"REQUESTS_CA_BUNDLE": str(first), "SSL_CERT_FILE": str(second)}) == str(first)


def test_without_variables_or_with_a_missing_file_the_default_trust_stays(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Any) -> None:
    assert merged_verify(monkeypatch, {}) is True
    assert merged_verify(monkeypatch, {"SSL_CERT_FILE": str(tmp_path / "absent.pem")}) is True


def test_an_explicit_verify_choice_is_not_overridden(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-")
    assert merged_verify(monkeypatch, {"SSL_CERT_FILE": str(bundle)}, verify="/explicit.pem") == "/explicit.pem"
    assert merged_verify(monkeypatch, {"SSL_CERT_FILE": str(bundle)}, verify=False) is False


# --------------------------------------------------------------------------- rows as the service returns them

# A Get-OutboundConnector row as captured live (rknightion/graph2otel
# internal/collectors/m365/exchangeconnectors/exchangeconnectors_test.go), with the annotations
# the admin API writes beside multi-valued properties and enum values in another case.
LIVE_ROW: dict[str, Any] = {
    "Enabled": True, "UseMXRecord": False, "Comment": "for graph2otel test",
    "ConnectorType": "onpremises", "ConnectorSource": "adminui",
    "RecipientDomains@odata.type": "#Collection(String)", "RecipientDomains": [],
    "SmartHosts@odata.type": "#Collection(String)", "SmartHosts": ["smtp-relay.gmail.com"],
    "TlsDomain": None, "TlsSettings": "certificatevalidation", "IsTransportRuleScoped": True,
    "RouteAllMessagesViaOnPremises": False, "CloudServicesMailEnabled": True, "AllAcceptedDomains": False,
    "SenderRewritingEnabled": False, "MtaStsMode": "Opportunistic", "SmtpDaneMode": "Opportunistic",
    "TestMode": False, "ValidationRecipients@odata.type": "#Collection(String)",
    "ValidationRecipients": ["rob@m7kni.io"], "IsValidated": False,
    "LastValidationTimestamp": "2026-07-24T18:59:12.0000000", "AdminDisplayName": "",
    "Name": "outbourconnection", "Identity": "outbourconnection",
    "WhenChangedUTC": "2026-07-24T19:01:54.0000000Z", "WhenCreatedUTC": "2026-07-24T18:58:31.0000000Z",
    "Guid": "d0d71cb9-6105-410f-8193-3640e12852a5", "IsValid": True,
}


def test_a_live_row_is_read_with_exchanges_enum_spelling_and_a_utc_validation_time() -> None:
    connector = Connector.from_row(LIVE_ROW)
    assert (connector.connector_type, connector.tls_settings, connector.connector_source) == (
        "OnPremises", "CertificateValidation", "AdminUI")
    assert connector.smart_hosts == ("smtp-relay.gmail.com",)
    assert connector.recipient_domains == ()
    assert connector.validation_recipients == ("rob@m7kni.io",)
    assert connector.last_validated_at == datetime(2026, 7, 24, 18, 59, 12, tzinfo=UTC)


def test_annotations_and_unmanaged_properties_never_change_the_connector() -> None:
    bare = {key: value for key, value in LIVE_ROW.items()
            if "@" not in key and key not in ("MtaStsMode", "SmtpDaneMode")}
    assert Connector.from_row(LIVE_ROW) == Connector.from_row(bare)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-07-24T18:59:12.0000000", datetime(2026, 7, 24, 18, 59, 12, tzinfo=UTC)),
    ("2026-07-24T19:01:54.1234567Z", datetime(2026, 7, 24, 19, 1, 54, 123456, tzinfo=UTC)),
    ("2026-07-25T04:01:54.5+09:00", datetime(2026, 7, 24, 19, 1, 54, 500000, tzinfo=UTC)),
    ("2026-07-24T19:01:54-0130", datetime(2026, 7, 24, 20, 31, 54, tzinfo=UTC)),
    ("2026-07-24 19:01", datetime(2026, 7, 24, 19, 1, tzinfo=UTC)),
    ("", None),
    (None, None),
    ("yesterday", None),
    ("2026-13-40T00:00:00", None),
])
def test_exchange_times_are_read_with_or_without_a_zone_and_with_seven_digits(
        text: str | None, expected: datetime | None) -> None:
    assert parse_exchange_time(text) == expected


# --------------------------------------------------------------------------- paging and throttling


def test_listings_ask_for_pages_of_a_thousand_and_writes_do_not() -> None:
    client, adapter = client_with(Canned(), Canned(), Canned(), Canned(), Canned())
    client.list_outbound_connectors()
    client.get_outbound_connector("A")
    client.list_accepted_domains()
    client.update_outbound_connector("A", {"Enabled": True})
    client.validate_outbound_connector("A", ["a@example.com"])
    assert [r.headers.get("Prefer") for r in adapter.sent] == [
        "odata.maxpagesize=1000", "odata.maxpagesize=1000", "odata.maxpagesize=1000", None, None]


def test_test_mode_listings_and_lookups_send_the_documented_switch() -> None:
    client, adapter = client_with(Canned(), Canned(body={"value": [{"Name": "A", "TestMode": True}]}))
    assert client.list_outbound_connectors(test_mode=True) == []
    found = client.get_outbound_connector("a", test_mode=True)
    assert found is not None and found.test_mode is True
    assert [b["CmdletInput"]["Parameters"] for b in adapter.bodies()] == [
        {"IncludeTestModeConnectors": True}, {"Identity": "a", "IncludeTestModeConnectors": True}]


EXPIRED = Canned(status=400, body=error_body(
    "Error executing cmdlet",
    internal={"message": "Expired or Invalid pagination request. Default Expiry time is 00:30:00",
              "type": "System.Exception"}))
PAGE_2 = f"https://outlook.office365.com/adminapi/beta/{TENANT}/InvokeCommand?$skiptoken=2"


def test_a_refused_next_page_lists_once_more_from_the_first_page() -> None:
    client, adapter = client_with(
        Canned(body={"value": [{"Name": "A"}], "@odata.nextLink": PAGE_2}),
        EXPIRED,
        Canned(body={"value": [{"Name": "A"}], "@odata.nextLink": PAGE_2 + "b"}),
        Canned(body={"value": [{"Name": "B"}]}),
    )
    assert [c.name for c in client.list_outbound_connectors()] == ["A", "B"]
    assert [r.url for r in adapter.sent] == [client._url, PAGE_2, client._url, PAGE_2 + "b"]
    assert len({r.body for r in adapter.sent}) == 1


def test_a_next_page_refused_twice_is_a_transient_failure_not_a_partial_list() -> None:
    client, adapter = client_with(
        Canned(body={"value": [{"Name": "A"}], "@odata.nextLink": PAGE_2}), EXPIRED,
        Canned(body={"value": [{"Name": "A"}], "@odata.nextLink": PAGE_2}), EXPIRED,
    )
    with pytest.raises(TransientError) as info:
        client.list_outbound_connectors()
    assert info.value.code is ErrorCode.EXCHANGE_UNAVAILABLE
    assert "Expired or Invalid pagination request" in info.value.detail
    assert len(adapter.sent) == 4


def test_the_pagination_text_on_a_first_page_is_not_retried_as_paging() -> None:
    client, adapter = client_with(EXPIRED)
    with pytest.raises(ExchangeError) as info:
        client.list_outbound_connectors()
    assert info.value.code is ErrorCode.EXCHANGE_REJECTED
    assert len(adapter.sent) == 1


PLAIN_THROTTLE = b"You have reached the maximum number of concurrent requests per tenant. Please wait and try again."


@pytest.mark.parametrize("status", [400, 429, 503])
def test_plain_text_concurrency_throttling_is_throttled_whatever_the_status(status: int) -> None:
    error = raised(status, PLAIN_THROTTLE, {"Content-Type": "text/plain"})
    assert error.code is ErrorCode.THROTTLED
    assert error.retryable
    assert error.retry_after is None
    assert error.detail == f"Set-OutboundConnector: HTTP {status}: {PLAIN_THROTTLE.decode()}"


def test_x_exception_type_names_the_exception_of_a_plain_text_answer() -> None:
    error = raised(429, PLAIN_THROTTLE, {"X-ExceptionType": "TooManyRequestsException"})
    assert isinstance(error, ExchangeError)
    assert error.exception_type == "TooManyRequestsException"


def test_x_exception_type_alone_can_mark_a_transient_answer() -> None:
    error = raised(400, b"", {"X-ExceptionType": "Microsoft.Exchange.Data.Storage.TransientException"})
    assert error.code is ErrorCode.EXCHANGE_UNAVAILABLE
    assert error.retryable


def test_rate_limit_reset_gives_the_wait_when_retry_after_is_absent() -> None:
    error = raised(429, PLAIN_THROTTLE, {"Rate-Limit-Remaining": "0", "Rate-Limit-Reset": "12"})
    assert error.retry_after == 12.0


def test_retry_after_wins_over_rate_limit_reset() -> None:
    assert throttle_wait({"Retry-After": "3", "Rate-Limit-Reset": "40"}) == 3.0


NOW = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("reset", "expected"), [
    ("7", 7.0),
    ("0.5", 0.5),
    (str(NOW.timestamp() + 20), 20.0),
    (str(NOW.timestamp() - 20), 0.0),
    ("2026-12-01T09:00:45.0000000Z", 45.0),
    ("2026-12-01T09:00:45", 45.0),
    (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
    ("soon", None),
    ("", None),
])
def test_rate_limit_reset_is_read_as_seconds_a_unix_time_or_a_date(reset: str, expected: float | None) -> None:
    assert throttle_wait({"rate-limit-reset": reset}, now=NOW) == expected


def test_no_throttling_header_leaves_the_wait_to_the_back_off() -> None:
    assert throttle_wait({"Rate-Limit-Remaining": "0"}) is None


def test_the_guard_refuses_parameters_it_does_not_know_on_routing_cmdlets() -> None:
    client, adapter = client_with()
    with pytest.raises(RoutingPolicyError):
        client.invoke("Set-OutboundConnector", {"Identity": mailgates().name, "SmartHost": ["relay.attacker.example"]})
    assert adapter.sent == []


@pytest.mark.parametrize("garbage", ["inf", "Infinity", "1e400", "nan", "-inf", "NaN"])
@pytest.mark.parametrize("header", ["Retry-After", "Rate-Limit-Reset"])
def test_a_non_finite_wait_header_leaves_the_wait_to_the_back_off(header: str, garbage: str) -> None:
    # float() reads these; an infinite wait would be stored in the record as `Infinity`, which
    # is not JSON, and a NaN wait would retry at once. Neither is a wait the service meant.
    assert throttle_wait({header: garbage}, now=NOW) is None
    error = error_from_response(503, {header: garbage}, b"busy", cmdlet="Get-OutboundConnector")
    assert error.retry_after is None


JOURNAL_RULE = "Enterprise Audit ジャーナル ルール"


def test_the_journal_cmdlets_send_exactly_what_the_product_needs() -> None:
    client, adapter = client_with(*[Canned(body={"value": []}) for _ in range(6)])
    client.create_journal_rule(JOURNAL_RULE, "jr@cs-365.cybermail.jp")
    client.update_journal_rule(JOURNAL_RULE, {"JournalEmailAddress": "jr@cs-365-02.cybermail.jp", "Scope": "Global"})
    client.enable_journal_rule(JOURNAL_RULE)
    client.remove_journal_rule(JOURNAL_RULE)
    client.set_journaling_report_ndr_to("ndr@example.com")
    assert client.get_journaling_report_ndr_to() is None
    assert [b["CmdletInput"] for b in adapter.bodies()] == [
        {"CmdletName": "New-JournalRule", "Parameters": {"Name": JOURNAL_RULE, "JournalEmailAddress":
                                                         "jr@cs-365.cybermail.jp", "Scope": "Global", "Enabled": True}},
        {"CmdletName": "Set-JournalRule", "Parameters": {"Identity": JOURNAL_RULE, "JournalEmailAddress":
                                                         "jr@cs-365-02.cybermail.jp", "Scope": "Global"}},
        {"CmdletName": "Enable-JournalRule", "Parameters": {"Identity": JOURNAL_RULE}},
        {"CmdletName": "Remove-JournalRule", "Parameters": {"Identity": JOURNAL_RULE, "Confirm": False}},
        {"CmdletName": "Set-TransportConfig", "Parameters": {"JournalingReportNdrTo": "ndr@example.com"}},
        {"CmdletName": "Get-TransportConfig", "Parameters": {}},
    ]


@pytest.mark.parametrize(("cmdlet", "parameters"), [
    # a journal address off the allow-list copies every message of the tenant elsewhere
    ("New-JournalRule", {"Name": JOURNAL_RULE, "JournalEmailAddress": "vault@contoso.example", "Scope": "Global",
                         "Enabled": True}),
    ("Set-JournalRule", {"Identity": JOURNAL_RULE, "JournalEmailAddress": "vault@contoso.example"}),
    # another rule, another scope, a recipient filter, a disabled rule
    ("New-JournalRule", {"Name": "Other", "JournalEmailAddress": "jr@cs-365.cybermail.jp", "Scope": "Global",
                         "Enabled": True}),
    ("New-JournalRule", {"Name": JOURNAL_RULE, "JournalEmailAddress": "jr@cs-365.cybermail.jp", "Scope": "Internal",
                         "Enabled": True}),
    ("New-JournalRule", {"Name": JOURNAL_RULE, "JournalEmailAddress": "jr@cs-365.cybermail.jp", "Scope": "Global",
                         "Enabled": False}),
    ("New-JournalRule", {"Name": JOURNAL_RULE, "JournalEmailAddress": "jr@cs-365.cybermail.jp"}),
    ("Set-JournalRule", {"Identity": JOURNAL_RULE, "Recipient": "ceo@contoso.example"}),
    ("Set-JournalRule", {"Identity": JOURNAL_RULE, "Name": "Renamed"}),
    ("Enable-JournalRule", {"Identity": "Customer rule"}),
    ("Remove-JournalRule", {"Identity": "Customer rule", "Confirm": False}),
    ("Remove-JournalRule", {"Identity": JOURNAL_RULE}),
    ("Get-JournalRule", {"Identity": JOURNAL_RULE}),
    # the NDR address: one plain address, never in a journal domain
    ("Set-TransportConfig", {"JournalingReportNdrTo": "ndr@cs-365.cybermail.jp"}),
    ("Set-TransportConfig", {"JournalingReportNdrTo": ["a@example.com", "b@example.com"]}),
    ("Set-TransportConfig", {"JournalingReportNdrTo": "ndr@example.com", "MaxSendSize": "150MB"}),
    ("Get-TransportConfig", {"Identity": "x"}),
])
def test_journal_cmdlets_are_refused_before_sending_off_the_allow_list(cmdlet: str,
                                                                       parameters: dict[str, Any]) -> None:
    client, adapter = client_with(Canned(body={"value": []}))
    with pytest.raises(RoutingPolicyError, match=cmdlet):
        client.invoke(cmdlet, parameters)
    assert adapter.sent == []


def test_disable_journal_rule_is_not_a_cmdlet_the_client_sends() -> None:
    client, adapter = client_with(Canned(body={"value": []}))
    with pytest.raises(ValueError, match="Disable-JournalRule"):
        client.invoke("Disable-JournalRule", {"Identity": JOURNAL_RULE})
    assert adapter.sent == []
