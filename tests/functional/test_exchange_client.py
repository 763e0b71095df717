"""ExchangeAdminClient over real HTTPS against the local Exchange Online simulator.

Every error shape and injected fault the product must classify goes over the wire here, with
real TLS (the simulator's throw-away CA, trusted only through the standard variables), real
gzip headers and real connection reuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests.adapters

from exosim import SHAPES, Simulator
from shared.auth import MsalTokenProvider
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
from shared.exchange import CallRecord, ExchangeAdminClient, https_session
from tests.support import forget_ca_bundles

pytestmark = pytest.mark.functional

MG_NAME = "MAILGATESΣ 送信コネクタ"
EA_NAME = "Enterprise Audit送信コネクタ"
MAILGATES = ConnectorSpec(service="mailgates", name=MG_NAME, recipient_domains=("*",),
                          smart_hosts=("mgf.cybermail.jp",), use_mx_record=False,
                          validation_recipients=("check@mailgates.example.jp",))
ENTERPRISE_AUDIT = ConnectorSpec(service="enterprise_audit", name=EA_NAME,
                                 recipient_domains=("*.cs-365.cybermail.jp",), smart_hosts=(),
                                 use_mx_record=True, validation_recipients=("journal@cs-365.cybermail.jp",))
@pytest.fixture
def tokens(trusted: Simulator) -> Iterator[MsalTokenProvider]:
    provider = MsalTokenProvider(client_id=trusted.client_id, credential=trusted.client_secret,
                                 authority_host=trusted.url, timeout=10)
    yield provider
    provider.close()


@pytest.fixture
def records() -> list[CallRecord]:
    return []


@pytest.fixture
def client(trusted: Simulator, tokens: MsalTokenProvider, exo_tenant: str,
           records: list[CallRecord]) -> Iterator[ExchangeAdminClient]:
    with ExchangeAdminClient(exo_tenant, credential=tokens, endpoint=trusted.url, timeout=10,
                             on_call=records.append) as exchange:
        yield exchange


def invokes(simulator: Simulator, tenant: str) -> list[Any]:
    return [entry for entry in simulator.log_for(tenant) if entry.kind == "invoke"]


# --------------------------------------------------------------------------- the happy path


def test_connectors_are_created_read_updated_validated_and_removed(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    created = client.create_outbound_connector(MAILGATES)
    assert created.name == MG_NAME and created.smart_hosts == ("mgf.cybermail.jp",) and created.guid

    client.update_outbound_connector(MG_NAME, {"SmartHosts": ["mgs.cybermail.jp"]})
    tasks = client.validate_outbound_connector(MG_NAME, ["check@mailgates.example.jp"])
    assert tasks and all(task.successful for task in tasks)
    when = datetime(2025, 4, 1, 0, 30, 15, tzinfo=UTC)
    client.mark_validated(MG_NAME, ["check@mailgates.example.jp"], when=when)

    current = client.get_outbound_connector(MG_NAME.lower())
    assert current is not None
    assert current.smart_hosts == ("mgs.cybermail.jp",)
    assert current.is_validated and current.validation_recipients == ("check@mailgates.example.jp",)
    assert current.last_validation_timestamp is not None and current.last_validation_timestamp.startswith("2025-04-01")

    client.remove_outbound_connector(MG_NAME)
    assert client.list_outbound_connectors() == []
    assert [w["cmdlet"] for w in trusted.writes(exo_tenant)] == [
        "New-OutboundConnector", "Set-OutboundConnector", "Set-OutboundConnector", "Remove-OutboundConnector"]


def test_accepted_domains_are_listed(client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, accepted_domains=["contoso.co.jp"])
    assert "contoso.co.jp" in [domain.domain_name for domain in client.list_accepted_domains()]


def test_all_pages_are_read_and_concatenated(client: ExchangeAdminClient, trusted: Simulator,
                                             exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, page_size=2)
    for index in range(5):
        trusted.seed_connector(exo_tenant, Name=f"Partner {index}", ConnectorType="Partner",
                               RecipientDomains=[f"*.bank{index}.example"], UseMXRecord=True)
    names = [connector.name for connector in client.list_outbound_connectors()]
    assert names == [f"Partner {index}" for index in range(5)]
    assert [entry.page for entry in invokes(trusted, exo_tenant)] == [False, True, True]


def test_a_refused_next_page_is_read_again_from_the_first_page(client: ExchangeAdminClient, trusted: Simulator,
                                                               exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, page_size=2, refuse_next_links=1)
    for index in range(5):
        trusted.seed_connector(exo_tenant, Name=f"Partner {index}", ConnectorType="Partner",
                               RecipientDomains=[f"*.bank{index}.example"], UseMXRecord=True)
    names = [connector.name for connector in client.list_outbound_connectors()]
    assert names == [f"Partner {index}" for index in range(5)]
    assert [(entry.page, entry.status) for entry in invokes(trusted, exo_tenant)] == [
        (False, 200), (True, 400), (False, 200), (True, 200), (True, 200)]


def test_a_next_page_refused_twice_ends_in_a_transient_error(client: ExchangeAdminClient, trusted: Simulator,
                                                             exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, page_size=1, refuse_next_links=2)
    for index in range(2):
        trusted.seed_connector(exo_tenant, Name=f"Partner {index}", ConnectorType="Partner",
                               RecipientDomains=[f"*.bank{index}.example"], UseMXRecord=True)
    with pytest.raises(TransientError) as info:
        client.list_outbound_connectors()
    assert info.value.code is ErrorCode.EXCHANGE_UNAVAILABLE
    assert len(invokes(trusted, exo_tenant)) == 4


def test_connectors_in_test_mode_are_listed_and_found_only_when_asked_for(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    trusted.seed_connector(exo_tenant, Name=MG_NAME, ConnectorType="Partner", RecipientDomains=["*"],
                           UseMXRecord=False, SmartHosts=["mgf.cybermail.jp"], TestMode=True)
    assert client.list_outbound_connectors() == []
    assert client.get_outbound_connector(MG_NAME) is None
    assert [c.name for c in client.list_outbound_connectors(test_mode=True)] == [MG_NAME]
    found = client.get_outbound_connector(MG_NAME, test_mode=True)
    assert found is not None and found.test_mode is True


def test_plain_text_throttling_waits_for_rate_limit_reset(client: ExchangeAdminClient, trusted: Simulator,
                                                          exo_tenant: str) -> None:
    trusted.fail_next(exo_tenant, 1, "throttle_text", retry_after=9)
    with pytest.raises(TransientError) as info:
        client.list_outbound_connectors()
    assert info.value.code is ErrorCode.THROTTLED and info.value.retry_after == 9.0
    assert isinstance(info.value, ExchangeError)
    assert info.value.exception_type == "System.Management.Automation.Remoting.PSRemotingTransportException"
    assert "maximum number of concurrent requests per tenant" in info.value.detail


def test_plain_text_throttling_with_another_status_is_still_throttling(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    trusted.fail_next(exo_tenant, 1, "throttle_text", status=400)
    with pytest.raises(TransientError) as info:
        client.list_outbound_connectors()
    assert info.value.code is ErrorCode.THROTTLED and info.value.retry_after is None


def test_get_by_name_ignores_the_every_connector_answer_for_an_unknown_identity(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    trusted.seed_connector(exo_tenant, Name="Customer relay", ConnectorType="Partner", RecipientDomains=["*"],
                           UseMXRecord=False, SmartHosts=["relay.customer.example"])
    assert client.get_outbound_connector(MG_NAME) is None
    assert invokes(trusted, exo_tenant)[-1].status == 200  # Exchange answered with the foreign row


def test_a_connector_just_created_reads_as_not_found_during_replication(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, replication_lag=30.0)
    client.create_outbound_connector(ENTERPRISE_AUDIT)
    with pytest.raises(ConnectorNotFoundError):
        client.validate_outbound_connector(EA_NAME, ["journal@cs-365.cybermail.jp"])
    trusted.replicate(exo_tenant)
    assert client.validate_outbound_connector(EA_NAME, ["journal@cs-365.cybermail.jp"])


def test_failed_validation_tasks_are_reported_not_raised(client: ExchangeAdminClient, trusted: Simulator,
                                                         exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, unreachable_hosts=["mgf.cybermail.jp"])
    client.create_outbound_connector(MAILGATES)
    tasks = client.validate_outbound_connector(MG_NAME, ["check@mailgates.example.jp"])
    assert any(not task.successful and "mgf.cybermail.jp" in task.task_name for task in tasks)


# --------------------------------------------------------------------------- cmdlet errors in every shape


@pytest.mark.parametrize("shape", SHAPES)
def test_an_absent_connector_is_connector_not_found_in_every_error_shape(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str, shape: str) -> None:
    trusted.configure_tenant(exo_tenant, error_shape=shape)
    with pytest.raises(ConnectorNotFoundError) as info:
        client.update_outbound_connector("Nobody", {"Enabled": False})
    assert "couldn't be found" in info.value.detail and "Error executing cmdlet" not in info.value.detail
    assert info.value.status_code == 404 and not info.value.retryable
    assert client.get_outbound_connector("Nobody") is None


@pytest.mark.parametrize("shape", SHAPES)
def test_a_taken_name_is_connector_exists_in_every_error_shape(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str, shape: str) -> None:
    trusted.configure_tenant(exo_tenant, error_shape=shape)
    client.create_outbound_connector(MAILGATES)
    with pytest.raises(ConnectorExistsError) as info:
        client.create_outbound_connector(MAILGATES)
    assert "already exists" in info.value.detail
    assert len(trusted.connectors(exo_tenant)) == 1


def test_a_parameter_exchange_refuses_is_rejected_permanently_with_its_words(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    client.create_outbound_connector(ENTERPRISE_AUDIT)
    with pytest.raises(ExchangeError) as info:  # smart-host routing without smart hosts
        client.update_outbound_connector(EA_NAME, {"UseMXRecord": False})
    err = info.value
    assert type(err) is ExchangeError and err.code is ErrorCode.EXCHANGE_REJECTED and not err.retryable
    assert err.status_code == 400 and err.exception_type


# --------------------------------------------------------------------------- transient faults


@pytest.mark.parametrize(("kind", "code"), [
    ("throttle", ErrorCode.THROTTLED),
    ("concurrency", ErrorCode.THROTTLED),
    ("server_busy", ErrorCode.THROTTLED),
    ("unavailable", ErrorCode.EXCHANGE_UNAVAILABLE),
    ("transient", ErrorCode.EXCHANGE_UNAVAILABLE),
    ("backend", ErrorCode.EXCHANGE_UNAVAILABLE),
    ("gateway_timeout", ErrorCode.EXCHANGE_UNAVAILABLE),
    ("internal", ErrorCode.EXCHANGE_UNAVAILABLE),
])
@pytest.mark.parametrize("shape", SHAPES)
def test_transient_faults_are_retryable_with_the_right_code_in_every_shape(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str, kind: str, code: ErrorCode,
        shape: Any) -> None:
    trusted.fail_next(exo_tenant, 1, kind, shape=shape)
    with pytest.raises(TransientError) as info:
        client.list_outbound_connectors()
    assert info.value.code is code and info.value.retryable
    assert info.value.retry_after is None
    assert client.list_outbound_connectors() == []  # the fault was one call only


def test_429_with_retry_after_carries_the_delay(client: ExchangeAdminClient, trusted: Simulator,
                                                exo_tenant: str) -> None:
    trusted.fail_next(exo_tenant, 1, "throttle", retry_after=7)
    with pytest.raises(TransientError) as info:
        client.list_outbound_connectors()
    assert info.value.code is ErrorCode.THROTTLED and info.value.retry_after == 7.0
    assert info.value.status_code == 429


def test_503_with_retry_after_is_unavailable_with_the_delay(client: ExchangeAdminClient, trusted: Simulator,
                                                            exo_tenant: str) -> None:
    trusted.fail_next(exo_tenant, 1, "unavailable", retry_after=30)
    with pytest.raises(TransientError) as info:
        client.list_accepted_domains()
    assert info.value.code is ErrorCode.EXCHANGE_UNAVAILABLE and info.value.retry_after == 30.0


def test_the_transient_exception_400_is_retryable(client: ExchangeAdminClient, trusted: Simulator,
                                                  exo_tenant: str) -> None:
    trusted.fail_next(exo_tenant, 1, "transient", cmdlet="New-OutboundConnector")
    with pytest.raises(TransientError) as info:
        client.create_outbound_connector(MAILGATES)
    assert info.value.status_code == 400 and info.value.code is ErrorCode.EXCHANGE_UNAVAILABLE
    assert "TransientException" in (getattr(info.value, "exception_type", None) or "")
    assert trusted.writes(exo_tenant) == []


def test_a_dropped_connection_is_a_network_error(client: ExchangeAdminClient, trusted: Simulator,
                                                 exo_tenant: str, records: list[CallRecord]) -> None:
    trusted.fail_next(exo_tenant, 1, "disconnect")
    with pytest.raises(TransientError) as info:
        client.list_outbound_connectors()
    assert info.value.code is ErrorCode.NETWORK_ERROR
    assert records[-1].status is None and records[-1].error_code == "NETWORK_ERROR"


def test_too_many_calls_in_flight_are_throttled(client: ExchangeAdminClient, trusted: Simulator,
                                                exo_tenant: str) -> None:
    import threading

    trusted.configure_tenant(exo_tenant, max_concurrent=1, latency_ms=300)
    client.list_outbound_connectors()  # token and connection ready before the race
    errors: list[ProvisioningError] = []

    def call() -> None:
        try:
            client.list_accepted_domains()
        except ProvisioningError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors and all(err.code is ErrorCode.THROTTLED for err in errors)


# --------------------------------------------------------------------------- missing role


def test_401_on_a_fresh_token_is_consent_missing_with_the_consent_url(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, permission_granted=False)
    with pytest.raises(ExchangeError) as info:
        client.list_outbound_connectors()
    err = info.value
    assert err.code is ErrorCode.CONSENT_MISSING and err.needs_attention and not err.retryable
    assert "Exchange.ManageAsApp" in err.detail
    assert f"{trusted.url}/{exo_tenant}/adminconsent?client_id={trusted.client_id}" in err.hint.en
    # the token was just issued, so it was not exchanged for another one
    assert trusted.token_requests(exo_tenant) == 1 and len(invokes(trusted, exo_tenant)) == 1


def test_a_401_on_a_cached_token_issued_before_consent_is_settled_by_one_new_token(
        client: ExchangeAdminClient, tokens: MsalTokenProvider, trusted: Simulator, exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, permission_granted=False)
    tokens.get_token(exo_tenant)  # cached now, without the permission
    trusted.configure_tenant(exo_tenant, permission_granted=True)
    assert client.list_outbound_connectors() == []
    assert trusted.token_requests(exo_tenant) == 2
    assert [entry.status for entry in invokes(trusted, exo_tenant)] == [401, 200]


def test_after_a_401_the_next_call_gets_a_new_token_that_has_the_permission(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, permission_granted=False)
    with pytest.raises(ExchangeError):
        client.list_outbound_connectors()
    trusted.configure_tenant(exo_tenant, permission_granted=True)  # the customer consents
    # the token was dropped after the 401, so the next call's new token carries the permission
    assert client.list_outbound_connectors() == []
    assert trusted.token_requests(exo_tenant) == 2
    assert [entry.status for entry in invokes(trusted, exo_tenant)] == [401, 200]


def test_after_role_missing_the_next_call_gets_a_new_token_that_has_the_role(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    trusted.configure_tenant(exo_tenant, role_missing=403)
    with pytest.raises(ExchangeError) as info:
        client.list_outbound_connectors()
    assert info.value.code is ErrorCode.ROLE_MISSING
    trusted.configure_tenant(exo_tenant, role_missing=None)  # the customer assigns the role
    assert client.list_outbound_connectors() == []
    assert trusted.token_requests(exo_tenant) == 2
    assert [entry.status for entry in invokes(trusted, exo_tenant)] == [403, 200]


@pytest.mark.parametrize("false_gzip", [True, False])
def test_403_of_nul_bytes_is_role_missing_even_under_a_false_gzip_header(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str, false_gzip: bool) -> None:
    trusted.configure_tenant(exo_tenant, role_missing=403, role_missing_gzip=false_gzip)
    with pytest.raises(ExchangeError) as info:
        client.list_outbound_connectors()
    err = info.value
    assert err.code is ErrorCode.ROLE_MISSING and err.status_code == 403 and err.needs_attention
    assert "not JSON" in err.detail and "\x00" not in err.detail


def test_a_token_exchange_no_longer_accepts_is_replaced_once(client: ExchangeAdminClient, trusted: Simulator,
                                                             exo_tenant: str) -> None:
    client.list_outbound_connectors()
    trusted.expire_tokens(exo_tenant)
    assert client.list_outbound_connectors() == []
    assert trusted.token_requests(exo_tenant) == 2
    assert [entry.status for entry in invokes(trusted, exo_tenant)] == [200, 401, 200]


def test_the_token_never_appears_in_errors_or_call_records(
        client: ExchangeAdminClient, tokens: MsalTokenProvider, trusted: Simulator, exo_tenant: str,
        records: list[CallRecord]) -> None:
    trusted.configure_tenant(exo_tenant, permission_granted=False)
    token = tokens.get_token(exo_tenant)
    with pytest.raises(ExchangeError) as info:
        client.list_outbound_connectors()
    assert token not in str(info.value.to_dict()) and token not in repr(info.value)
    assert token not in repr(records)


# --------------------------------------------------------------------------- the allow-list guard


def test_an_off_list_smart_host_is_refused_and_nothing_reaches_exchange(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    rogue = ConnectorSpec(service="mailgates", name=MG_NAME, recipient_domains=("*",),
                          smart_hosts=("mx.attacker.example",), use_mx_record=False, validation_recipients=())
    with pytest.raises(RoutingPolicyError):
        client.create_outbound_connector(rogue)
    with pytest.raises(RoutingPolicyError):
        client.update_outbound_connector(EA_NAME, {"RecipientDomains": ["*.attacker.example"]})
    with pytest.raises(ValueError, match="may send"):
        client.invoke("Set-OrganizationConfig", {"SmtpClientAuthenticationDisabled": False})
    with pytest.raises(RoutingPolicyError, match="SmtpClientAuthenticationDisabled"):
        client.invoke("Set-TransportConfig", {"SmtpClientAuthenticationDisabled": False})
    assert trusted.log_for(exo_tenant) == []
    assert trusted.calls(exo_tenant) == {} and trusted.writes(exo_tenant) == []


# --------------------------------------------------------------------------- call records


def test_each_http_call_is_recorded_for_the_event_log(client: ExchangeAdminClient, trusted: Simulator,
                                                      exo_tenant: str, records: list[CallRecord]) -> None:
    trusted.fail_next(exo_tenant, 1, "throttle", retry_after=3)
    with pytest.raises(TransientError):
        client.list_outbound_connectors()
    client.list_outbound_connectors()
    assert [(r.cmdlet, r.status, r.ok, r.error_code) for r in records] == [
        ("Get-OutboundConnector", 429, False, "THROTTLED"),
        ("Get-OutboundConnector", 200, True, None),
    ]


# --------------------------------------------------------------------------- TLS trust from the environment


def _fresh_client(simulator: Simulator, tenant: str) -> ExchangeAdminClient:
    # The token provider gets the same environment: MSAL's HTTP must honour it too.
    tokens = MsalTokenProvider(client_id=simulator.client_id, credential=simulator.client_secret,
                               authority_host=simulator.url, timeout=10)
    return ExchangeAdminClient(tenant, credential=tokens, endpoint=simulator.url, timeout=10)


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_the_ca_bundle_named_by_the_standard_variable_is_trusted(
        simulator: Simulator, exo_tenant: str, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    forget_ca_bundles(monkeypatch)
    monkeypatch.setenv(variable, simulator.ca_file)
    with _fresh_client(simulator, exo_tenant) as exchange:
        assert exchange.list_outbound_connectors() == []


def test_without_a_trusted_ca_the_call_fails_as_a_network_error_not_silently(
        simulator: Simulator, exo_tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    forget_ca_bundles(monkeypatch)
    tokens = MsalTokenProvider(client_id=simulator.client_id, credential=simulator.client_secret,
                               authority_host=simulator.url, timeout=10)
    with pytest.raises(TransientError) as info:
        tokens.get_token(exo_tenant)
    assert info.value.code is ErrorCode.NETWORK_ERROR and "SSL" in info.value.detail

    class Fixed:
        def get_token(self, tenant_id: str) -> str:
            return "not-a-real-token"

    with ExchangeAdminClient(exo_tenant, credential=Fixed(), endpoint=simulator.url) as exchange, \
            pytest.raises(TransientError) as info:
        exchange.list_outbound_connectors()
    assert info.value.code is ErrorCode.NETWORK_ERROR and "SSL" in info.value.detail
    assert simulator.log_for(exo_tenant) == []


# --------------------------------------------------------------------------- connection reuse


def test_calls_reuse_one_pooled_connection_even_after_an_undecodable_error_body(
        trusted: Simulator, tokens: MsalTokenProvider, exo_tenant: str) -> None:
    session = https_session()
    with ExchangeAdminClient(exo_tenant, credential=tokens, endpoint=trusted.url, session=session) as exchange:
        for _ in range(3):
            exchange.list_outbound_connectors()
        trusted.fail_next(exo_tenant, 1, "role_missing_403")
        with pytest.raises(ExchangeError):
            exchange.list_outbound_connectors()
        exchange.list_accepted_domains()
    adapter = session.get_adapter(trusted.url)
    assert isinstance(adapter, requests.adapters.HTTPAdapter)
    manager = adapter.poolmanager
    pools = [manager.pools[key] for key in manager.pools.keys()]  # noqa: SIM118 - the container refuses iteration
    assert [(pool.num_connections, pool.num_requests) for pool in pools] == [(1, 5)]
    session.close()


def test_a_parameter_the_product_never_sends_is_refused_before_it_reaches_exchange(
        client: ExchangeAdminClient, trusted: Simulator, exo_tenant: str) -> None:
    client.create_outbound_connector(MAILGATES)
    trusted.reset_log()
    with pytest.raises(RoutingPolicyError):
        client.update_outbound_connector(MG_NAME, {"SenderRewritingEnabled": True})
    assert trusted.log == []
