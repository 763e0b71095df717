"""The service definitions: one per service, and everything else reads them.

What these pin: the registry's order is the removal order (MailGates' `*` connector first) and
activation runs it backwards; each definition's connector is admitted by its own route and by
no other; the Exchange client refuses, before sending, a new connector whose routing no
definition allows; and a further definition, made here in the test and nowhere in the
product, is picked up from the registry alone by notice validation, the desired connectors,
the allow-list guard and the removal order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from shared.connectors import ConnectorSpec, desired_connectors
from shared.errors import RoutingPolicyError
from shared.fields import FieldError, err, string
from shared.notice import ALLOWED_KEYS, SERVICES, ActivationNotice, NoticeError, parse_notice
from shared.provisioning import own_connectors
from shared.removal import REMOVAL_ORDER, expected_removals, removal_operations
from shared.services import (
    ENTERPRISE_AUDIT,
    MAILGATES,
    AllowLists,
    Desired,
    Route,
    Service,
    activation_order,
    admitting,
    by_key,
    removal_order,
    requested,
    spf_applies,
)
from shared.services import SERVICES as REGISTRY
from shared.settings import Settings
from tests.support import FakeConnector
from tests.unit.test_exchange_errors import Canned, client_with

TENANT_ID = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"
ALLOW = AllowLists.from_settings(Settings())
BOTH = parse_notice({
    "notice_id": "n-1", "tenant_id": TENANT_ID, "services": ["mailgates", "enterprise_audit"],
    "journal_report_address": "jr@cs-365.cybermail.jp", "mx_host": "mgf.cybermail.jp",
    "validation_recipient": "adm@example.com",
})


def codes(data: Mapping[str, Any], **kwargs: Any) -> list[tuple[str, str]]:
    with pytest.raises(NoticeError) as info:
        parse_notice(data, **kwargs)
    return [(e.field, e.code) for e in info.value.errors]


# --- order ------------------------------------------------------------------------------------


def test_the_registry_order_is_the_removal_order_mailgates_first() -> None:
    assert [s.key for s in REGISTRY] == [s.key for s in removal_order()] == list(REMOVAL_ORDER)
    assert REMOVAL_ORDER == ("mailgates", "enterprise_audit")
    ops = removal_operations(expected_removals(["enterprise_audit", "mailgates"], own=own_connectors(Settings())))
    assert [op.parameters["Identity"] for op in ops] == [Settings().mg_connector_name, Settings().ea_connector_name]


def test_the_service_whose_connector_takes_every_domain_is_removed_first_and_created_last() -> None:
    # Journal reports must never ride the `*` connector: the narrower route exists before it
    # and outlives it.
    star = [s for s in REGISTRY if "*" in s.route(ALLOW).recipient_domains]
    assert star == [MAILGATES]
    assert removal_order()[0] is MAILGATES and activation_order()[-1] is MAILGATES


def test_activation_runs_the_registry_backwards_and_is_the_notices_canonical_order() -> None:
    assert activation_order() == tuple(reversed(REGISTRY))
    assert SERVICES == tuple(s.key for s in activation_order()) == ("enterprise_audit", "mailgates")
    assert BOTH.services == SERVICES
    assert [spec.service for spec in desired_connectors(BOTH)] == list(SERVICES)


def test_requested_keeps_the_order_asked_for_whatever_order_the_services_came_in() -> None:
    assert requested(["enterprise_audit", "mailgates"], order=removal_order()) == (MAILGATES, ENTERPRISE_AUDIT)
    assert requested(["mailgates", "enterprise_audit"], order=activation_order()) == (ENTERPRISE_AUDIT, MAILGATES)
    assert requested(["mailgates"], order=activation_order()) == (MAILGATES,)


# --- what each definition holds ---------------------------------------------------------------


def test_every_service_field_is_a_notice_key_and_belongs_to_one_service_only() -> None:
    fields = [f for s in REGISTRY for f in s.fields]
    assert len(fields) == len(set(fields))
    assert set(fields) <= set(ALLOWED_KEYS)
    assert set(fields) == {"mx_host", "validation_recipient", "journal_report_address", "journal_ndr_address"}


def test_keys_titles_and_short_names_are_unique() -> None:
    assert len({s.key for s in REGISTRY}) == len({s.title for s in REGISTRY}) == len(REGISTRY)
    assert len({s.short for s in REGISTRY}) == len(REGISTRY)
    assert by_key("mailgates") is MAILGATES and by_key("enterprise_audit") is ENTERPRISE_AUDIT
    with pytest.raises(KeyError):
        by_key("archive")


def test_spf_applies_to_mailgates_mail_only() -> None:
    # MailGates relays the customer's own mail; journal reports are not judged by the customer's SPF.
    assert spf_applies(["mailgates"]) and spf_applies(["enterprise_audit", "mailgates"])
    assert not spf_applies(["enterprise_audit"])


def test_a_services_fields_are_checked_only_when_it_is_requested() -> None:
    base = {"notice_id": "n-1", "tenant_id": TENANT_ID}
    assert codes({**base, "services": ["mailgates"]}) == [("mx_host", "missing"), ("validation_recipient", "missing")]
    assert codes({**base, "services": ["enterprise_audit"]}) == [("journal_report_address", "missing")]
    # the other service's keys are accepted and ignored, however wrong
    notice = parse_notice({**base, "services": ["enterprise_audit"], "journal_report_address": "j@cs-365.cybermail.jp",
                           "mx_host": "smtp.example.net", "validation_recipient": "not an address"})
    assert notice.mx_host is None and notice.validation_recipient is None


@pytest.mark.parametrize(("address", "code"), [
    ("not an address", "invalid_email"),
    ("someone@contoso.onmicrosoft.com", "recipient_in_tenant"),
    ("someone@ONMICROSOFT.com", "recipient_in_tenant"),
    ("someone@cs-365.cybermail.jp", "recipient_in_journal_domain"),
    ("someone@sub.cs-365-02.cybermail.jp", "recipient_in_journal_domain"),
])
def test_both_external_addresses_refuse_the_same_addresses_with_the_same_codes(address: str, code: str) -> None:
    # validation_recipient (MailGates) and journal_ndr_address (Enterprise Audit) are one rule:
    # a mail address outside the tenant and outside every journal domain.
    settings = Settings(allowed_journal_domains=frozenset({"cs-365.cybermail.jp", "cs-365-02.cybermail.jp"}))
    data = {"notice_id": "n-1", "tenant_id": TENANT_ID, "services": ["mailgates", "enterprise_audit"],
            "journal_report_address": "jr@cs-365.cybermail.jp", "mx_host": "mgf.cybermail.jp",
            "validation_recipient": address, "journal_ndr_address": address, "tenant_domain": "contoso.onmicrosoft.com"}
    assert codes(data, settings=settings) == [("journal_ndr_address", code), ("validation_recipient", code)]


# --- routing: what the allow-list admits -------------------------------------------------------


def test_each_definitions_connector_is_admitted_by_its_own_route_and_no_other() -> None:
    ea, mg = desired_connectors(BOTH)
    assert admitting(ea, ALLOW) is ENTERPRISE_AUDIT
    assert admitting(mg, ALLOW) is MAILGATES
    assert not MAILGATES.admits(ea, ALLOW) and not ENTERPRISE_AUDIT.admits(mg, ALLOW)


@pytest.mark.parametrize("spec", [
    # a MailGates smart host, for a journal domain (each part is on an allow-list, the whole is no service's)
    ConnectorSpec("mailgates", "MG", ("*.cs-365.cybermail.jp",), ("mgf.cybermail.jp",), False, ()),
    # every domain by MX record
    ConnectorSpec("enterprise_audit", "EA", ("*",), (), True, ()),
    # a journal domain through a MailGates smart host and `*` together
    ConnectorSpec("mailgates", "MG", ("*", "*.cs-365.cybermail.jp"), ("mgf.cybermail.jp",), False, ()),
])
def test_the_guard_refuses_a_new_connector_whose_routing_no_definition_allows(spec: ConnectorSpec) -> None:
    client, adapter = client_with()
    with pytest.raises(RoutingPolicyError, match="not the routing of any service"):
        client.create_outbound_connector(spec)
    assert adapter.sent == []


def test_the_guard_refuses_new_connectors_with_entries_off_every_allow_list() -> None:
    client, adapter = client_with()
    with pytest.raises(RoutingPolicyError, match="smart host"):
        client.create_outbound_connector(
            ConnectorSpec("mailgates", "MG", ("*",), ("relay.attacker.example",), False, ()))
    with pytest.raises(RoutingPolicyError, match="recipient domain"):
        client.create_outbound_connector(ConnectorSpec("enterprise_audit", "EA", ("*.attacker.example",), (), True, ()))
    assert adapter.sent == []


def test_a_new_connector_without_use_mx_record_is_judged_as_exchange_creates_it_by_mx() -> None:
    # New-OutboundConnector's UseMXRecord defaults to $true: `*` with no UseMXRecord and no
    # smart host would route every domain by MX, which is no service's routing.
    client, adapter = client_with(Canned(body={"value": []}))
    with pytest.raises(RoutingPolicyError):
        client.invoke("New-OutboundConnector", {"Name": "X", "RecipientDomains": ["*"]})
    client.invoke("New-OutboundConnector", {"Name": "EA", "RecipientDomains": ["*.cs-365.cybermail.jp"]})
    assert len(adapter.sent) == 1


def test_the_guard_admits_every_connector_the_definitions_build() -> None:
    specs = desired_connectors(BOTH)
    client, adapter = client_with(*(Canned(body={"value": []}) for _ in specs))
    for spec in specs:
        client.create_outbound_connector(spec)
    assert [b["CmdletInput"]["Parameters"]["Name"] for b in adapter.bodies()] == [s.name for s in specs]


def test_routing_faults_say_why_in_the_words_of_the_service() -> None:
    assert MAILGATES.routing_fault(FakeConnector("MG", ("*",)), ALLOW) == (
        "'MG' routes by MX record, not through a MailGates smart host")
    assert MAILGATES.routing_fault(FakeConnector("MG", ("*",), ("smtp.example.net",), use_mx_record=False),
                                   ALLOW) == "'MG' routes to smart host(s) smtp.example.net, not on ALLOWED_SMART_HOSTS"
    assert ENTERPRISE_AUDIT.routing_fault(FakeConnector("EA", ("*.x.example",), ("mgf.cybermail.jp",),
                                                        use_mx_record=False), ALLOW) == (
        "'EA' routes through smart host(s), not by MX record as Enterprise Audit's does")
    assert ENTERPRISE_AUDIT.routing_fault(FakeConnector("EA", ("*.x.example",)), ALLOW) == (
        "'EA' is for *.x.example, not a journal domain on ALLOWED_JOURNAL_DOMAINS")
    assert ENTERPRISE_AUDIT.routing_fault(FakeConnector("EA", ("*.CS-365.cybermail.jp.",)), ALLOW) == ""


def test_removal_reads_entries_strictly_while_the_guard_trims_what_it_sends() -> None:
    # An entry with spaces around it is not one the product wrote: not ours to remove.
    padded = FakeConnector("MG", ("*",), (" mgf.cybermail.jp",), use_mx_record=False)
    assert MAILGATES.routing_fault(padded, ALLOW) == (
        "'MG' routes to smart host(s)  mgf.cybermail.jp, not on ALLOWED_SMART_HOSTS")
    client, adapter = client_with(Canned(body={"value": []}))
    client.update_outbound_connector("MG", {"SmartHosts": [" MGF.cybermail.jp. "]})
    assert len(adapter.sent) == 1


# --- a further service, defined here and nowhere in the product ---------------------------------
#
# A hypothetical partner relay: mail for one partner's domain through the partner's own relay,
# validated with the notice's validation recipient. It reads fields the notice already has:
# a service with keys of its own would also add them to ActivationNotice and ALLOWED_KEYS,
# which are typed attributes of the stored notice, not registry entries.

RELAY_HOSTS = frozenset({"relay.partner.example"})


def _check_relay(obj: Mapping[str, Any], errors: list[FieldError], *, settings: Settings,
                 tenant_domain: str | None) -> dict[str, str | None]:
    host = string(obj, "mx_host", errors, required=True, why_en=" for partner_relay")
    if host is not None and host.lower() not in RELAY_HOSTS:
        errors.append(err("mx_host", "host_not_allowed", f"'{host}' is not the partner's relay.", "…"))
        host = None
    recipient = string(obj, "validation_recipient", errors, required=True)
    return {"mx_host": host and host.lower(), "validation_recipient": recipient}


def _desired_relay(notice: ActivationNotice, settings: Settings) -> Desired:
    assert notice.mx_host is not None and notice.validation_recipient is not None
    return Desired(("*.partner.example",), (notice.mx_host,), False, (notice.validation_recipient,))


PARTNER_RELAY = Service(
    key="partner_relay",
    title="Partner Relay",
    short="PR",
    fields=("mx_host", "validation_recipient"),
    check=_check_relay,
    connector_name=lambda settings: "Partner relay connector",
    desired=_desired_relay,
    route=lambda allow: Route(use_mx_record=False, smart_hosts=RELAY_HOSTS,
                              recipient_domains=frozenset({"*.partner.example"}),
                              destination="smart host", setting="the partner's relay"),
    spf=False,
)
WITH_RELAY = (*REGISTRY, PARTNER_RELAY)
RELAY_NOTICE = {"notice_id": "n-2", "tenant_id": TENANT_ID, "services": ["partner_relay"],
                "mx_host": "relay.partner.example", "validation_recipient": "adm@example.com"}


def test_a_further_definition_is_a_service_notices_may_name_and_its_fields_are_checked() -> None:
    # the product's own registry does not know it
    assert codes(RELAY_NOTICE) == [("services", "unknown_service")]
    # with it in the registry, the notice is valid, in the registry's canonical order
    notice = parse_notice(RELAY_NOTICE, registry=WITH_RELAY)
    assert notice.services == ("partner_relay",) and notice.mx_host == "relay.partner.example"
    # and its own check runs: its error, its field
    assert codes({**RELAY_NOTICE, "mx_host": "mgf.cybermail.jp"}, registry=WITH_RELAY) == [
        ("mx_host", "host_not_allowed")]
    # the list of services offered in messages comes from the registry too
    with pytest.raises(NoticeError) as info:
        parse_notice({**RELAY_NOTICE, "services": ["archive"]}, registry=WITH_RELAY)
    assert '"partner_relay"' in info.value.errors[0].message


def test_a_further_definition_gives_its_connector_and_the_guard_admits_only_its_routing() -> None:
    notice = parse_notice(RELAY_NOTICE, registry=WITH_RELAY)
    (spec,) = desired_connectors(notice, registry=WITH_RELAY)
    assert (spec.service, spec.name, spec.recipient_domains, spec.smart_hosts, spec.use_mx_record) == (
        "partner_relay", "Partner relay connector", ("*.partner.example",), ("relay.partner.example",), False)
    # the product's guard refuses the relay's connector before anything is sent ...
    client, adapter = client_with()
    with pytest.raises(RoutingPolicyError):
        client.create_outbound_connector(spec)
    assert adapter.sent == []
    # ... a guard built from the registry with the relay admits it, and still only as its own routing
    client, adapter = client_with(Canned(body={"value": []}), Canned(body={"value": []}), services=WITH_RELAY)
    client.create_outbound_connector(spec)
    client.update_outbound_connector("Partner relay connector", {"SmartHosts": ["relay.partner.example"]})
    with pytest.raises(RoutingPolicyError, match="not the routing of any service"):
        client.create_outbound_connector(ConnectorSpec("partner_relay", "P", ("*",), ("relay.partner.example",),
                                                       False, ()))
    assert len(adapter.sent) == 2


def test_a_further_definition_takes_its_place_in_the_removal_and_activation_orders() -> None:
    assert [s.key for s in removal_order(WITH_RELAY)] == ["mailgates", "enterprise_audit", "partner_relay"]
    assert [s.key for s in activation_order(WITH_RELAY)] == ["partner_relay", "enterprise_audit", "mailgates"]
    assert not spf_applies(["partner_relay"], WITH_RELAY)
