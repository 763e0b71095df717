"""What to change in a tenant so that its outbound connectors match the desired ones.

Pure: desired specs and the tenant's current connectors in, a `Plan` out. This is where the
product decides whether it may touch a tenant at all (conflicts) and what the fewest writes
are (diff), so it carries most of the rules and most of the tests.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from .connectors import OWNERSHIP_MARKER, ConnectorSpec


class ActualConnector(Protocol):
    """The fields of a connector as read from Exchange that planning looks at."""

    @property
    def name(self) -> str: ...
    @property
    def connector_type(self) -> str: ...
    @property
    def recipient_domains(self) -> tuple[str, ...]: ...
    @property
    def smart_hosts(self) -> tuple[str, ...]: ...
    @property
    def use_mx_record(self) -> bool: ...
    @property
    def tls_settings(self) -> str | None: ...
    @property
    def enabled(self) -> bool: ...
    @property
    def is_transport_rule_scoped(self) -> bool: ...
    @property
    def test_mode(self) -> bool: ...
    @property
    def tls_domain(self) -> str | None: ...
    @property
    def is_validated(self) -> bool: ...
    @property
    def validation_recipients(self) -> tuple[str, ...]: ...
    @property
    def comment(self) -> str: ...
    @property
    def last_validation_timestamp(self) -> str | None: ...


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class ConnectorPlan:
    """One desired connector: what to do to it, and whether it must be validated again."""

    spec: ConnectorSpec
    action: Action
    changes: dict[str, Any] = field(default_factory=dict)
    current_name: str | None = None  # differs from spec.name when an admin renamed ours
    needs_validation: bool = True

    @property
    def identity(self) -> str:
        """The name Exchange knows the connector by before this plan runs."""
        return self.current_name or self.spec.name


@dataclass(frozen=True)
class Conflict:
    """A foreign connector that would take mail ours must carry: nothing may be written."""

    name: str
    recipient_domains: tuple[str, ...]
    blocks: str  # which of our connectors it competes with
    reason: str


@dataclass(frozen=True)
class PlanWarning:
    """Something the operator should know that does not stop provisioning."""

    code: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    connectors: tuple[ConnectorPlan, ...]
    conflicts: tuple[Conflict, ...] = ()
    warnings: tuple[PlanWarning, ...] = ()

    @property
    def blocked(self) -> bool:
        return bool(self.conflicts)

    @property
    def writes_needed(self) -> bool:
        return any(c.action is not Action.UNCHANGED or c.needs_validation for c in self.connectors)


@dataclass(frozen=True)
class Operation:
    """One cmdlet call, exactly as it would be sent to Exchange."""

    cmdlet: str
    parameters: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"CmdletName": self.cmdlet, "Parameters": self.parameters}


def make_plan(desired: Sequence[ConnectorSpec], actual: Sequence[ActualConnector], *,
              own_names: Iterable[str] = ()) -> Plan:
    """Diff desired against actual and find conflicts. No I/O; deterministic.

    `own_names` are the names of every connector this product manages (both services), so
    that an Enterprise Audit-only notice never mistakes the tenant's MailGates connector,
    made by an earlier notice or by the vendor's manual procedure, for a competitor.
    """
    own = {name_key(name) for name in own_names} | {name_key(spec.name) for spec in desired}
    conflicts: list[Conflict] = []
    warnings: list[PlanWarning] = []
    owned: set[int] = set()
    plans: list[ConnectorPlan] = []

    for spec in desired:
        index = _find_ours(spec, actual, exclude=owned)
        if index is None:
            plans.append(ConnectorPlan(spec, Action.CREATE, changes=spec.new_parameters()))
            continue
        owned.add(index)
        current = actual[index]
        changes = diff(spec, current)
        # Exchange names are case-insensitive; any other difference (spaces, width) is renamed.
        renamed = current.name.casefold() != spec.name.casefold()
        if renamed:
            changes["Name"] = spec.name
        action = Action.UPDATE if changes else Action.UNCHANGED
        plans.append(ConnectorPlan(
            spec,
            action,
            changes=changes,
            current_name=current.name if renamed else None,
            needs_validation=needs_validation(spec, current, changes),
        ))

    for index, connector in enumerate(actual):
        if index in owned or _is_ours(connector, own) or not connector.enabled or connector.test_mode:
            continue
        if connector.is_transport_rule_scoped:
            # It only takes mail a transport rule sends it, so it cannot compete for routing;
            # the operator should still know that some mail may leave another way.
            warnings.append(PlanWarning(
                "RULE_SCOPED_CONNECTOR",
                f"Outbound connector '{connector.name}' is used by transport rules; mail those rules route "
                "to it does not pass through MailGates.",
                {"connector": connector.name, "domains": list(connector.recipient_domains)},
            ))
            continue
        for spec in desired:
            found = _competition(spec, connector)
            if found is True:
                conflicts.append(Conflict(
                    name=connector.name,
                    recipient_domains=tuple(connector.recipient_domains),
                    blocks=spec.name,
                    reason=_conflict_reason(spec, connector),
                ))
            elif found:
                warnings.append(PlanWarning(
                    "MAIL_BYPASSES_MAILGATES",
                    f"Outbound connector '{connector.name}' routes mail for {', '.join(found)} itself; "
                    "that mail will not pass through MailGates.",
                    {"connector": connector.name, "domains": list(found)},
                ))
    return Plan(tuple(plans), tuple(conflicts), tuple(warnings))


def diff(spec: ConnectorSpec, current: ActualConnector) -> dict[str, Any]:
    """Only the Set-OutboundConnector parameters whose values differ.

    Lists compare as sets and names case-insensitively, as Exchange treats them; smart hosts
    left on a connector that routes by MX are ignored because Exchange ignores them too.
    """
    changes: dict[str, Any] = {}
    if current.connector_type.casefold() != spec.connector_type.casefold():
        changes["ConnectorType"] = spec.connector_type
    if _folded(current.recipient_domains) != _folded(spec.recipient_domains):
        changes["RecipientDomains"] = list(spec.recipient_domains)
    if current.use_mx_record != spec.use_mx_record:
        changes["UseMXRecord"] = spec.use_mx_record
        if spec.use_mx_record and current.smart_hosts:
            # Exchange refuses MX routing while smart hosts are still set: clear them together.
            changes["SmartHosts"] = None
    if not spec.use_mx_record and _folded(current.smart_hosts) != _folded(spec.smart_hosts):
        changes["SmartHosts"] = list(spec.smart_hosts)
    if (current.tls_settings or "").casefold() != spec.tls_settings.casefold():
        changes["TlsSettings"] = spec.tls_settings
        if current.tls_domain and spec.tls_settings.casefold() != "domainvalidation":
            # A TlsDomain is only allowed with DomainValidation: clear it with the change.
            changes["TlsDomain"] = None
    if current.enabled != spec.enabled:
        changes["Enabled"] = spec.enabled
    if current.is_transport_rule_scoped != spec.is_transport_rule_scoped:
        changes["IsTransportRuleScoped"] = spec.is_transport_rule_scoped
    if current.test_mode != spec.test_mode:
        changes["TestMode"] = spec.test_mode
    if OWNERSHIP_MARKER not in (current.comment or ""):
        changes["Comment"] = spec.comment
    return changes


def operations(plan: Plan, *, now: datetime | None = None) -> list[Operation]:
    """The cmdlets the plan sends, in order: per connector write, validate, stamp."""
    stamp = timestamp(now)
    ops: list[Operation] = []
    for item in plan.connectors:
        spec = item.spec
        if item.action is Action.CREATE:
            ops.append(Operation("New-OutboundConnector", spec.new_parameters()))
        elif item.action is Action.UPDATE:
            ops.append(Operation("Set-OutboundConnector", {
                "Identity": item.identity, **write_parameters(item.changes, validate=item.needs_validation)}))
        if item.needs_validation:
            ops.append(Operation("Validate-OutboundConnector",
                                 {"Identity": spec.name, "Recipients": list(spec.validation_recipients)}))
            ops.append(Operation("Set-OutboundConnector", validated_parameters(spec, stamp)))
    return ops


def validated_parameters(spec: ConnectorSpec, stamp: str) -> dict[str, Any]:
    """Validate-OutboundConnector does not mark a connector validated; this Set does."""
    return {
        "Identity": spec.name,
        "IsValidated": True,
        "ValidationRecipients": list(spec.validation_recipients),
        "LastValidationTimestamp": stamp,
    }


def timestamp(now: datetime | None = None) -> str:
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def covers(pattern: str, domain: str) -> bool:
    """Whether a RecipientDomains entry routes mail for `domain`.

    `*.contoso.com` covers contoso.com and every subdomain (Microsoft's documented example);
    `*` covers everything; a plain entry covers only itself.
    """
    pattern, domain = pattern.casefold().rstrip("."), domain.casefold().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        base = pattern[2:]
        return domain == base or domain.endswith("." + base)
    return pattern == domain


def overlaps(a: str, b: str) -> bool:
    """Whether two RecipientDomains entries can match the same recipient domain."""
    a_base = a.casefold()[2:] if a.startswith("*.") else a.casefold()
    b_base = b.casefold()[2:] if b.startswith("*.") else b.casefold()
    return covers(a, b_base) or covers(b, a_base)


def _folded(values: Sequence[str]) -> frozenset[str]:
    return frozenset(v.casefold().rstrip(".") for v in values)


def name_key(name: str) -> str:
    """A connector name as people type it: case, width and spaces do not matter.

    The vendor's procedure itself writes the MailGates name both as `MAILGATESΣ 送信コネクタ`
    and, on its review screen, `MAILGATES Σ 送信コネクタ`; a connector made by hand under
    either spelling is ours, and is renamed to the configured name.
    """
    return "".join(unicodedata.normalize("NFKC", name).casefold().split())


def _is_ours(connector: ActualConnector, own_names: set[str]) -> bool:
    return name_key(connector.name) in own_names or OWNERSHIP_MARKER in (connector.comment or "")


def _find_ours(spec: ConnectorSpec, actual: Sequence[ActualConnector], *, exclude: set[int]) -> int | None:
    for index, connector in enumerate(actual):
        if index not in exclude and connector.name.casefold() == spec.name.casefold():
            return index
    for index, connector in enumerate(actual):
        if index not in exclude and name_key(connector.name) == name_key(spec.name):
            return index
    # An admin may have renamed our connector: the ownership marker in its Comment still
    # identifies it, and renaming it back beats creating a second `*` connector.
    for index, connector in enumerate(actual):
        if index not in exclude and spec.comment in (connector.comment or ""):
            return index
    return None


# Set-OutboundConnector parameters that name or describe a connector without changing how it
# routes mail: writing them leaves an earlier validation standing.
_LABEL_PARAMETERS = frozenset({"Name", "Comment"})


def needs_validation(spec: ConnectorSpec, current: ActualConnector, changes: Mapping[str, Any]) -> bool:
    """Whether `current`, after `changes`, must be validated again (a test message is sent).

    Not when it is validated for exactly the desired recipients and the changes only name or
    label it (our ownership Comment, our spelling of the name): that is a connector an admin
    made with the wizard, which validates before it saves, or one an earlier run finished.
    Any change to routing, TLS, scope, test mode or Enabled needs a new validation.
    """
    if any(key not in _LABEL_PARAMETERS for key in changes):
        return True
    return not _validated_for(current, spec.validation_recipients)


def write_parameters(changes: Mapping[str, Any], *, validate: bool) -> dict[str, Any]:
    """The Set-OutboundConnector parameters (without Identity) that apply `changes`.

    A write that needs a new validation also clears IsValidated: Set- leaves that flag as it
    was (it is a stored property an admin or this product sets, not something Exchange derives),
    so a run stopped between this write and the validation (throttled, a crash) would leave
    the old route's validation standing for the new route, and the next run would take it as
    valid and never send the test message. Cleared, the next run validates.
    """
    return {**changes, "IsValidated": False} if validate else dict(changes)


def _validated_for(current: ActualConnector, recipients: Sequence[str]) -> bool:
    # IsValidated is a flag any admin can set (Set-OutboundConnector -IsValidated); the wizard
    # and this product always stamp LastValidationTimestamp with it, so a flag without a time
    # is not taken as a validation.
    return (current.is_validated and bool((current.last_validation_timestamp or "").strip())
            and _folded(current.validation_recipients) == _folded(recipients))


def _competition(spec: ConnectorSpec, foreign: ActualConnector) -> bool | tuple[str, ...]:
    """True when `foreign` blocks `spec`; a tuple of domains when it only narrows it.

    A foreign `*` competes with any connector of ours (two `*` connectors: Exchange can prefer
    neither, and the procedure warns that an enabled connector makes validation fail). A
    foreign connector covering our journal domain would steal journal reports. A narrower
    foreign connector beside MailGates `*` only diverts mail for its own domains.
    """
    domains = tuple(foreign.recipient_domains)
    if any(d.strip() == "*" for d in domains):
        return True
    if "*" in spec.recipient_domains:
        return domains  # narrower than ours: mail to these bypasses MailGates
    if any(overlaps(ours, theirs) for ours in spec.recipient_domains for theirs in domains):
        return True
    return ()


def _conflict_reason(spec: ConnectorSpec, foreign: ActualConnector) -> str:
    domains = ", ".join(foreign.recipient_domains)
    return (f"enabled outbound connector '{foreign.name}' (RecipientDomains: {domains}) would take mail "
            f"that '{spec.name}' must carry")
