"""The services the product provisions, one definition each, in one ordered registry.

Everything that differs between MailGates and Enterprise Audit is here: the service's key in
a notice's `services`, the notice fields it reads and how they are checked, the connector it
wants, the routing the allow-list admits for it, whether SPF matters to it, and (by its place
in `SERVICES`) when its connector is removed. The rest of the product reads these definitions
and names no service itself: the notice parser validates each requested service's section,
`connectors.py` builds the desired connectors, `removal.py` orders removals and decides what is
ours, the Exchange client's allow-list guard admits only routing some definition allows, and
the engine asks whether SPF applies.

Pure: definitions are data and functions of their arguments (a notice, settings, allow-lists);
nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .fields import FieldError, Messages, email, err, external_address, string
from .settings import Settings
from .text import display

if TYPE_CHECKING:
    from .notice import ActivationNotice


def norm(name: str) -> str:
    """A host or RecipientDomains entry about to be sent, as the guard compares it (case, spaces, a final dot)."""
    return name.strip().lower().rstrip(".")


def _read(name: str) -> str:
    """A host or RecipientDomains entry as read from Exchange, as removal compares it.

    Stricter than `norm`: removing is the most dangerous write the product makes, and an entry
    with spaces around it is not one this product wrote, so it does not count as ours.
    """
    return name.casefold().rstrip(".")


@dataclass(frozen=True)
class AllowLists:
    """The allow-lists from settings that every route is judged against (normalised)."""

    smart_hosts: frozenset[str]
    journal_domains: frozenset[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "smart_hosts", frozenset(norm(h) for h in self.smart_hosts))
        object.__setattr__(self, "journal_domains", frozenset(norm(d) for d in self.journal_domains))

    @classmethod
    def from_settings(cls, settings: Settings) -> AllowLists:
        return cls(settings.allowed_smart_hosts, settings.allowed_journal_domains)


@dataclass(frozen=True)
class Route:
    """How a service's connector may route mail, given the allow-lists.

    Where mail goes is decided by the smart hosts of a smart-host connector, and by the
    recipient domains of an MX-routed one (Exchange looks up the recipients' own MX): that
    part, the destination, must be allow-listed for a connector to route as ours.
    """

    use_mx_record: bool
    smart_hosts: frozenset[str]        # normalised; empty for MX routing
    recipient_domains: frozenset[str]  # normalised RecipientDomains entries
    destination: str                   # what the destination is, for messages: "journal domain"
    setting: str                       # the setting that allow-lists it, for messages


class Routed(Protocol):
    """The routing of a connector, as read from Exchange or about to be sent to it."""

    @property
    def name(self) -> str: ...
    @property
    def recipient_domains(self) -> tuple[str, ...]: ...
    @property
    def smart_hosts(self) -> tuple[str, ...]: ...
    @property
    def use_mx_record(self) -> bool: ...


@dataclass(frozen=True)
class Desired:
    """What a service's connector carries beyond the settings every connector shares."""

    recipient_domains: tuple[str, ...]
    smart_hosts: tuple[str, ...]
    use_mx_record: bool
    validation_recipients: tuple[str, ...]


class SectionCheck(Protocol):
    """Validate a service's fields of a notice: their values (None when bad), errors appended."""

    def __call__(self, obj: Mapping[str, Any], errors: list[FieldError], *, settings: Settings,
                 tenant_domain: str | None) -> dict[str, str | None]: ...


@dataclass(frozen=True)
class Service:
    """One service: everything the product must know to provision or remove it."""

    key: str                      # in a notice's `services`, records, events and the outcome
    title: str                    # how operators, messages and the status page name it
    short: str                    # in narrow tables (the local stack's status table "EA+MG", the status page)
    fields: tuple[str, ...]       # the notice keys it reads (ignored when it is not requested)
    check: SectionCheck           # validates those fields
    connector_name: Callable[[Settings], str]
    desired: Callable[[ActivationNotice, Settings], Desired]  # raises ValueError off the allow-list
    route: Callable[[AllowLists], Route]
    spf: bool                     # whether the tenant's SPF must authorise the service's mail

    def routing_fault(self, connector: Routed, allow: AllowLists) -> str:
        """Why `connector` does not route as this service's would, or "" when it does.

        Only the destination counts (see `Route`): a connector that sends its mail where ours
        would is ours to remove, whatever else an admin changed on it.
        """
        route = self.route(allow)
        name = connector.name
        if route.use_mx_record:
            if not connector.use_mx_record:
                return f"'{name}' routes through smart host(s), not by MX record as {self.title}'s does"
            domains = list(connector.recipient_domains)
            off = [d for d in domains if _read(d) not in route.recipient_domains]
            if off or not domains:
                shown = ", ".join(off) or "no recipient domains"
                return f"'{name}' is for {shown}, not a {route.destination} on {route.setting}"
            return ""
        if connector.use_mx_record or not connector.smart_hosts:
            return f"'{name}' routes by MX record, not through a {self.title} smart host"
        off = [h for h in connector.smart_hosts if _read(h) not in route.smart_hosts]
        if off:
            return f"'{name}' routes to smart host(s) {', '.join(off)}, not on {route.setting}"
        return ""

    def admits(self, connector: Routed, allow: AllowLists) -> bool:
        """Whether `connector` routes exactly as this service's may: destination, method and domains."""
        route = self.route(allow)
        hosts = {norm(h) for h in connector.smart_hosts}
        domains = {norm(d) for d in connector.recipient_domains}
        # MX routing names no smart host; smart-host routing names at least one.
        hosts_ok = not hosts if route.use_mx_record else bool(hosts) and hosts <= route.smart_hosts
        return (connector.use_mx_record is route.use_mx_record and hosts_ok
                and bool(domains) and domains <= route.recipient_domains)

    def ours_rule(self, allow: AllowLists) -> str:
        """The routing that makes a connector with our name ours, as `plan` tells it."""
        route = self.route(allow)
        if route.use_mx_record:
            return "MX routing for: " + ", ".join(sorted(route.recipient_domains))
        return "smart host(s) all among: " + ", ".join(sorted(route.smart_hosts))


# --------------------------------------------------------------------------- MailGates


def _check_mx_host(obj: Mapping[str, Any], errors: list[FieldError], settings: Settings) -> str | None:
    value = string(obj, "mx_host", errors, required=True, why_en=" for mailgates", why_ja="（mailgates の場合）")
    if value is None:
        return None
    host = value.lower()
    if host.endswith("."):
        host = host[:-1]
    if host not in settings.allowed_smart_hosts:
        allowed = ", ".join(sorted(settings.allowed_smart_hosts))
        errors.append(err("mx_host", "host_not_allowed",
                          f"'{display(value)}' is not a MailGates host; use the MX record on the activation notice, "
                          f"one of: {allowed}.",
                          f"'{display(value)}' は MailGates のホストではありません。"
                          f"開通通知書の MX レコード（{allowed} のいずれか）を指定してください。"))
        return None
    return host


def _check_mailgates(obj: Mapping[str, Any], errors: list[FieldError], *, settings: Settings,
                     tenant_domain: str | None) -> dict[str, str | None]:
    return {
        "mx_host": _check_mx_host(obj, errors, settings),
        # Mail to a journal domain rides the more specific Enterprise Audit connector, so a
        # MailGates test message there would never reach MailGates and validation would fail.
        "validation_recipient": external_address(
            obj, "validation_recipient", errors, required=True, why_en=" for mailgates", why_ja="（mailgates の場合）",
            example="adm@example.com", tenant_domain=tenant_domain, journal_domains=settings.allowed_journal_domains,
            in_tenant=Messages(
                "'validation_recipient' must be outside the tenant (not *.onmicrosoft.com or the tenant's "
                "domain); use an external mailbox that can send and receive mail.",
                "'validation_recipient' はテナント外のアドレス（*.onmicrosoft.com やテナントのドメイン以外）で、"
                "送受信できる外部のメールアドレスを指定してください。"),
            in_journal_domain=Messages(
                "'validation_recipient' must not be in an Enterprise Audit journal domain; use an external mailbox "
                "that can send and receive mail.",
                "'validation_recipient' に Enterprise Audit のジャーナル ドメインは使えません。送受信できる外部の"
                "メールアドレスを指定してください。")),
    }


def _desired_mailgates(notice: ActivationNotice, settings: Settings) -> Desired:
    assert notice.mx_host is not None and notice.validation_recipient is not None
    _require_allowed(notice.mx_host, settings.allowed_smart_hosts, "smart host")
    return Desired(recipient_domains=("*",), smart_hosts=(notice.mx_host,), use_mx_record=False,
                   validation_recipients=(notice.validation_recipient,))


MAILGATES = Service(
    key="mailgates",
    title="MailGates",
    short="MG",
    fields=("mx_host", "validation_recipient"),
    check=_check_mailgates,
    connector_name=lambda settings: settings.mg_connector_name,
    desired=_desired_mailgates,
    # Every domain (`*`) through one of the allow-listed MailGates smart hosts.
    route=lambda allow: Route(use_mx_record=False, smart_hosts=allow.smart_hosts, recipient_domains=frozenset({"*"}),
                              destination="smart host", setting="ALLOWED_SMART_HOSTS"),
    # MailGates relays the customer's outbound mail from its own servers: recipients check the
    # customer's SPF record against them (shared/spf.py).
    spf=True,
)


# --------------------------------------------------------------------------- Enterprise Audit


def _check_journal(obj: Mapping[str, Any], errors: list[FieldError], settings: Settings) -> str | None:
    value = string(obj, "journal_report_address", errors, required=True,
                   why_en=" for enterprise_audit", why_ja="（enterprise_audit の場合）")
    if value is None:
        return None
    address = email(value)
    if address is None:
        errors.append(err("journal_report_address", "invalid_email",
                          "'journal_report_address' must be an address like xxxxxx@cs-365.cybermail.jp "
                          "(the journal report destination on the activation notice).",
                          "'journal_report_address' は xxxxxx@cs-365.cybermail.jp のような形式で指定してください"
                          "（開通通知書のジャーナルレポート送信先）。"))
        return None
    domain = address.rsplit("@", 1)[1]
    if domain not in settings.allowed_journal_domains:
        allowed = ", ".join(sorted(settings.allowed_journal_domains))
        errors.append(err("journal_report_address", "domain_not_allowed",
                          f"journal domain '{domain}' is not an Enterprise Audit domain; use one of: {allowed}.",
                          f"ジャーナル ドメイン '{domain}' は Enterprise Audit のドメインではありません。次のいずれかを"
                          f"指定してください: {allowed}"))
        return None
    return address


def _check_enterprise_audit(obj: Mapping[str, Any], errors: list[FieldError], *, settings: Settings,
                            tenant_domain: str | None) -> dict[str, str | None]:
    return {
        "journal_report_address": _check_journal(obj, errors, settings),
        # Where Exchange sends undeliverable journal reports. Like the journaling mailbox it
        # can't be an Exchange Online mailbox (Set-TransportConfig.md), so not `*.onmicrosoft.com`
        # or the tenant's domain; and not in a journal domain, because it receives exactly the
        # reports that the journal destination could not take.
        "journal_ndr_address": external_address(
            obj, "journal_ndr_address", errors, required=False, example="journal-ndr@example.com",
            tenant_domain=tenant_domain, journal_domains=settings.allowed_journal_domains,
            in_tenant=Messages(
                "'journal_ndr_address' must be outside Exchange Online (not *.onmicrosoft.com or the "
                "tenant's domain); use an external mailbox that is monitored.",
                "'journal_ndr_address' は Exchange Online 外（*.onmicrosoft.com やテナントのドメイン以外）の、"
                "確認できる外部のメールアドレスを指定してください。"),
            in_journal_domain=Messages(
                "'journal_ndr_address' must not be in an Enterprise Audit journal domain: it receives the "
                "reports that domain could not take. Use another external mailbox.",
                "'journal_ndr_address' に Enterprise Audit のジャーナル ドメインは使えません（そのドメインが"
                "受け取れなかったレポートの送信先です）。別の外部メールアドレスを指定してください。")),
    }


def _desired_enterprise_audit(notice: ActivationNotice, settings: Settings) -> Desired:
    assert notice.journal_report_address is not None and notice.journal_domain is not None
    _require_allowed(notice.journal_domain, settings.allowed_journal_domains, "journal domain")
    return Desired(recipient_domains=(f"*.{notice.journal_domain}",), smart_hosts=(), use_mx_record=True,
                   validation_recipients=(notice.journal_report_address,))


ENTERPRISE_AUDIT = Service(
    key="enterprise_audit",
    title="Enterprise Audit",
    short="EA",
    fields=("journal_report_address", "journal_ndr_address"),
    check=_check_enterprise_audit,
    connector_name=lambda settings: settings.ea_connector_name,
    desired=_desired_enterprise_audit,
    # Only the journal domain and its subdomains (`*.<domain>`), by the domain's own MX record.
    route=lambda allow: Route(use_mx_record=True, smart_hosts=frozenset(),
                              recipient_domains=frozenset(f"*.{d}" for d in allow.journal_domains),
                              destination="journal domain", setting="ALLOWED_JOURNAL_DOMAINS"),
    # Journal reports go to the archive by MX; no recipient judges them by the customer's SPF.
    spf=False,
)


def _require_allowed(value: str, allowed: frozenset[str], what: str) -> None:
    # A second gate behind notice validation: a notice built in code (not parsed) must not
    # be able to route a tenant's mail anywhere off the allow-list either.
    if value not in allowed:
        raise ValueError(f"{what} {value!r} is not on the allow-list")


# --------------------------------------------------------------------------- the registry

# In removal order: MailGates' `*` connector goes first, so journal reports never lose their
# more specific route while `*` still exists. Activation runs the list backwards, for the same
# reason: Enterprise Audit's connector exists before the `*` one is created.
SERVICES: tuple[Service, ...] = (MAILGATES, ENTERPRISE_AUDIT)


def activation_order(registry: Sequence[Service] = SERVICES) -> tuple[Service, ...]:
    """The order connectors are created in, and the canonical order of a notice's `services`."""
    return tuple(reversed(registry))


def removal_order(registry: Sequence[Service] = SERVICES) -> tuple[Service, ...]:
    """The order connectors are removed in when contracts end."""
    return tuple(registry)


def keys(registry: Sequence[Service] = SERVICES) -> tuple[str, ...]:
    """Every service key, in activation (canonical) order."""
    return tuple(s.key for s in activation_order(registry))


def requested(services: Iterable[str], *, order: Sequence[Service]) -> tuple[Service, ...]:
    """The definitions of `services`, in `order` (activation_order() or removal_order())."""
    wanted = set(services)
    return tuple(s for s in order if s.key in wanted)


def by_key(key: str, registry: Sequence[Service] = SERVICES) -> Service:
    for service in registry:
        if service.key == key:
            return service
    raise KeyError(key)


def connector_names(settings: Settings, registry: Sequence[Service] = SERVICES) -> tuple[str, ...]:
    """The names of every connector the product manages, in activation order."""
    return tuple(s.connector_name(settings) for s in activation_order(registry))


def spf_applies(services: Iterable[str], registry: Sequence[Service] = SERVICES) -> bool:
    """Whether any of `services` sends mail that recipients judge by the customer's SPF record."""
    return any(s.spf for s in requested(services, order=registry))


def admitting(connector: Routed, allow: AllowLists, registry: Sequence[Service] = SERVICES) -> Service | None:
    """The service whose routing `connector` has exactly, or None: the guard's test of a new connector."""
    return next((s for s in registry if s.admits(connector, allow)), None)


def routable_smart_hosts(allow: AllowLists, registry: Sequence[Service] = SERVICES) -> frozenset[str]:
    """Every smart host some service may route to: what a partial update may name."""
    return frozenset().union(*(s.route(allow).smart_hosts for s in registry))


def routable_recipient_domains(allow: AllowLists, registry: Sequence[Service] = SERVICES) -> frozenset[str]:
    """Every RecipientDomains entry some service may use: what a partial update may name."""
    return frozenset().union(*(s.route(allow).recipient_domains for s in registry))
