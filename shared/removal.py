"""What to remove from a tenant when a contract ends: the removal decision, pure.

A contract lives for years and then ends. When MailGates ends, its `*` connector must go:
left behind, it would route all of the customer's outbound mail to a smart host that no
longer relays it. Removing is the most dangerous write the product makes, so the rules are
narrow and live here, beside the activation diff (`plan.py`), with no I/O:

- A connector is ours only if it has our name (as `plan.name_key` reads names) AND routing
  this product would create: for MailGates, smart hosts that are all on
  ALLOWED_SMART_HOSTS; for Enterprise Audit, MX routing for recipient domains that are all
  `*.<journal domain on ALLOWED_JOURNAL_DOMAINS>`. A connector with our name and other
  routing was made or changed by someone else for another purpose: it is left alone and the
  termination ends `needs_attention` (FOREIGN_CONNECTOR_ROUTING), with nothing removed at all.
- The ownership marker in Comment does not make a connector ours here: activation uses it to
  adopt a renamed connector rather than create a second one, but removing a connector an
  admin renamed would delete something people now know by another name.
- MailGates goes first, then Enterprise Audit: the reverse of activation, so journal reports
  never lose their more specific route while the `*` connector still exists.
- A connector that is already gone is nothing to do (`absent`), so a replay writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .connectors import ENTERPRISE_AUDIT, MAILGATES
from .plan import ActualConnector, Operation, name_key

# Removal order: the reverse of activation's (connectors.desired_connectors).
REMOVAL_ORDER = (MAILGATES, ENTERPRISE_AUDIT)


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

    ea_name: str
    mg_name: str
    smart_hosts: frozenset[str]
    journal_domains: frozenset[str]

    def name_of(self, service: str) -> str:
        return self.mg_name if service == MAILGATES else self.ea_name


def plan_removals(services: Iterable[str], actual: Sequence[ActualConnector], *, own: OwnConnectors) -> RemovalPlan:
    """The connectors to remove for the ended `services`, MailGates first. No I/O.

    `actual` must hold the tenant's connectors both in and out of test mode: a test-mode `*`
    connector of ours left behind would come back into service if an admin turned test mode off.
    """
    ended = set(services)
    removals: list[Removal] = []
    refusals: list[Refusal] = []
    for service in REMOVAL_ORDER:
        if service not in ended:
            continue
        name = own.name_of(service)
        matches = [c for c in actual if name_key(c.name) == name_key(name)]
        if not matches:
            removals.append(Removal(service, name, RemovalAction.ABSENT))
            continue
        for connector in matches:
            reason = foreign_routing(service, connector, own=own)
            if reason:
                refusals.append(Refusal(service, connector.name, reason))
            else:
                removals.append(Removal(service, name, RemovalAction.REMOVE, identity=connector.name,
                                        test_mode=connector.test_mode))
    return RemovalPlan(tuple(removals), tuple(refusals))


def foreign_routing(service: str, connector: ActualConnector, *, own: OwnConnectors) -> str:
    """Why a connector with our name does not route as ours would, or "" when it does."""
    if service == MAILGATES:
        hosts = [h.casefold().rstrip(".") for h in connector.smart_hosts]
        if connector.use_mx_record or not hosts:
            return f"'{connector.name}' routes by MX record, not through a MailGates smart host"
        off = [h for h in connector.smart_hosts if h.casefold().rstrip(".") not in own.smart_hosts]
        if off:
            return f"'{connector.name}' routes to smart host(s) {', '.join(off)}, not on ALLOWED_SMART_HOSTS"
        return ""
    domains = list(connector.recipient_domains)
    if not connector.use_mx_record:
        return f"'{connector.name}' routes through smart host(s), not by MX record as Enterprise Audit's does"
    off = [d for d in domains if not (d.startswith("*.") and d[2:].casefold().rstrip(".") in own.journal_domains)]
    if off or not domains:
        shown = ", ".join(off) or "no recipient domains"
        return f"'{connector.name}' is for {shown}, not a journal domain on ALLOWED_JOURNAL_DOMAINS"
    return ""


def removal_operations(plan: RemovalPlan) -> list[Operation]:
    """The cmdlets a removal plan sends, in order; none at all when it is blocked."""
    if plan.blocked:
        return []
    ops: list[Operation] = []
    for removal in plan.removals:
        if removal.service == ENTERPRISE_AUDIT and plan.journal_rule:
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
                       journal_rule=journal_rule if ENTERPRISE_AUDIT in ended else None)
