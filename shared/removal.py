"""What to remove from a tenant when a contract ends: the removal decision, pure.

A contract lives for years and then ends. When MailGates ends, its `*` connector must go:
left behind, it would route all of the customer's outbound mail to a smart host that no
longer relays it. Removing is the most dangerous write the product makes, so the rules are
narrow and live here, beside the activation diff (`plan.py`), with no I/O:

- A connector is ours only if it has our name (as `plan.name_key` reads names) AND routing
  this product would create, as the service's definition says (`services.py`,
  `Service.routing_fault`): for MailGates, smart hosts that are all on ALLOWED_SMART_HOSTS;
  for Enterprise Audit, MX routing for recipient domains that are all
  `*.<journal domain on ALLOWED_JOURNAL_DOMAINS>`. A connector with our name and other
  routing was made or changed by someone else for another purpose: it is left alone and the
  termination ends `needs_attention` (FOREIGN_CONNECTOR_ROUTING), with nothing removed at all.
- The ownership marker in Comment does not make a connector ours here: activation uses it to
  adopt a renamed connector rather than create a second one, but removing a connector an
  admin renamed would delete something people now know by another name.
- MailGates goes first, then Enterprise Audit (the registry's order): the reverse of
  activation, so journal reports never lose their more specific route while the `*`
  connector still exists.
- A connector that is already gone is nothing to do (`absent`), so a replay writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .plan import ActualConnector, Operation, name_key
from .services import ENTERPRISE_AUDIT, SERVICES, AllowLists, Service, by_key, removal_order
from .settings import Settings

# Removal order: the registry's (services.py), the reverse of activation's.
REMOVAL_ORDER = tuple(s.key for s in removal_order())


class RemovalAction(StrEnum):
    """What termination does to one service's connector (the outcome's connector action)."""

    REMOVE = "remove"    # planned; the outcome records REMOVED once Exchange has done it
    REMOVED = "removed"
    ABSENT = "absent"    # not there (already removed, or never created): nothing to do


@dataclass(frozen=True)
class Removal:
    """One ended service: its connector's configured name, and what to do."""

    service: str
    name: str
    action: RemovalAction
    identity: str | None = None  # the name Exchange knows it by (our spelling may differ)
    test_mode: bool = False


@dataclass(frozen=True)
class Refusal:
    """A connector with our name that is not ours by routing: it blocks every removal."""

    service: str
    name: str
    reason: str


@dataclass(frozen=True)
class RemovalPlan:
    removals: tuple[Removal, ...]
    refusals: tuple[Refusal, ...] = ()
    # Our journal rule (EA_JOURNAL_RULE=ensure), removed just before Enterprise Audit's connector.
    journal_rule: str | None = None

    @property
    def blocked(self) -> bool:
        return bool(self.refusals)


@dataclass(frozen=True)
class OwnConnectors:
    """The names and the allow-listed routing that make a connector ours (from Settings)."""

    names: Mapping[str, str] = field(hash=False)  # service key -> its connector's configured name
    smart_hosts: frozenset[str]
    journal_domains: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings, registry: Sequence[Service] = SERVICES) -> OwnConnectors:
        return cls(names={s.key: s.connector_name(settings) for s in registry},
                   smart_hosts=settings.allowed_smart_hosts, journal_domains=settings.allowed_journal_domains)

    def name_of(self, service: str) -> str:
        """The configured name of `service`'s connector; KeyError for a service it has no name for."""
        return self.names[service]

    @property
    def allow_lists(self) -> AllowLists:
        return AllowLists(self.smart_hosts, self.journal_domains)


def plan_removals(services: Iterable[str], actual: Sequence[ActualConnector], *, own: OwnConnectors,
                  registry: Sequence[Service] = SERVICES) -> RemovalPlan:
    """The connectors to remove for the ended `services`, MailGates first. No I/O.

    `actual` must hold the tenant's connectors both in and out of test mode: a test-mode `*`
    connector of ours left behind would come back into service if an admin turned test mode off.
    """
    ended = set(services)
    removals: list[Removal] = []
    refusals: list[Refusal] = []
    for definition in removal_order(registry):
        service = definition.key
        if service not in ended:
            continue
        name = own.name_of(service)
        matches = [c for c in actual if name_key(c.name) == name_key(name)]
        if not matches:
            removals.append(Removal(service, name, RemovalAction.ABSENT))
            continue
        for connector in matches:
            reason = definition.routing_fault(connector, own.allow_lists)
            if reason:
                refusals.append(Refusal(service, connector.name, reason))
            else:
                removals.append(Removal(service, name, RemovalAction.REMOVE, identity=connector.name,
                                        test_mode=connector.test_mode))
    return RemovalPlan(tuple(removals), tuple(refusals))


def foreign_routing(service: str, connector: ActualConnector, *, own: OwnConnectors) -> str:
    """Why a connector with our name does not route as ours would, or "" when it does."""
    return by_key(service).routing_fault(connector, own.allow_lists)


def removal_operations(plan: RemovalPlan) -> list[Operation]:
    """The cmdlets a removal plan sends, in order; none at all when it is blocked."""
    if plan.blocked:
        return []
    ops: list[Operation] = []
    for removal in plan.removals:
        if removal.service == ENTERPRISE_AUDIT.key and plan.journal_rule:
            ops.append(Operation("Remove-JournalRule", {"Identity": plan.journal_rule, "Confirm": False}))
        if removal.action is RemovalAction.REMOVE:
            ops.append(Operation("Remove-OutboundConnector", {"Identity": removal.identity or removal.name,
                                                              "Confirm": False}))
    return ops


def expected_removals(services: Iterable[str], *, own: OwnConnectors, journal_rule: str | None = None) -> RemovalPlan:
    """The removals for a tenant that has our connectors of `services`, as activation left them.

    What `plan` shows for a terminate notice without reading the tenant (no I/O).
    """
    ended = set(services)
    return RemovalPlan(tuple(Removal(s, own.name_of(s), RemovalAction.REMOVE, identity=own.name_of(s))
                             for s in REMOVAL_ORDER if s in ended),
                       journal_rule=journal_rule if ENTERPRISE_AUDIT.key in ended else None)
