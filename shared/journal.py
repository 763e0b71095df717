"""Enterprise Audit's journal rule (EA_JOURNAL_RULE=ensure): what to change, pure.

A journal rule copies the tenant's mail to the Enterprise Audit journal report address. The
product's rule is one rule, named by EA_JOURNAL_RULE_NAME, for every message (Scope Global,
no Recipient), enabled, sending to the notice's journal report address. Exchange Online needs
an address for undeliverable journal reports (Set-TransportConfig -JournalingReportNdrTo)
before journal rules work; the engine checks it before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from .plan import Operation


class ActualJournalRule(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def journal_email_address(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def enabled(self) -> bool: ...


class JournalAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    REMOVE = "remove"
    ABSENT = "absent"


@dataclass(frozen=True)
class JournalRulePlan:
    """What to do to our rule: Set-JournalRule `changes`, then Enable-JournalRule if `enable`."""

    name: str
    action: JournalAction
    changes: dict[str, Any] = field(default_factory=dict)
    enable: bool = False
    refusal: str = ""  # termination only: a rule of our name that is not ours

    @property
    def writes_needed(self) -> bool:
        return self.action in (JournalAction.CREATE, JournalAction.REMOVE) or bool(self.changes) or self.enable


def find_rule(name: str, rules: Sequence[ActualJournalRule]) -> ActualJournalRule | None:
    """Our rule by name (case-insensitively, as Exchange compares names)."""
    return next((r for r in rules if r.name.casefold() == name.casefold()), None)


def ensure_rule(name: str, address: str, rules: Sequence[ActualJournalRule]) -> JournalRulePlan:
    """The fewest writes that leave one enabled, Global rule sending to `address`."""
    current = find_rule(name, rules)
    if current is None:
        return JournalRulePlan(name, JournalAction.CREATE)
    changes: dict[str, Any] = {}
    if current.journal_email_address.casefold() != address.casefold():
        changes["JournalEmailAddress"] = address
    if current.scope.casefold() != "global":
        changes["Scope"] = "Global"
    action = JournalAction.UPDATE if changes or not current.enabled else JournalAction.UNCHANGED
    return JournalRulePlan(name, action, changes, enable=not current.enabled)


def remove_rule(name: str, rules: Sequence[ActualJournalRule], *,
                journal_domains: frozenset[str]) -> JournalRulePlan:
    """Termination: remove our rule only when it sends to an allow-listed journal domain."""
    current = find_rule(name, rules)
    if current is None:
        return JournalRulePlan(name, JournalAction.ABSENT)
    address = current.journal_email_address
    domain = address.rsplit("@", 1)[1].casefold().rstrip(".") if address.count("@") == 1 else ""
    if domain not in journal_domains:
        return JournalRulePlan(name, JournalAction.ABSENT,
                               refusal=f"journal rule '{current.name}' sends to {address or 'no address'}, "
                                       "not a journal domain on ALLOWED_JOURNAL_DOMAINS")
    return JournalRulePlan(name, JournalAction.REMOVE)


def journal_operations(name: str, address: str, *, ndr_address: str | None) -> list[Operation]:
    """The journal calls an activation sends to a tenant without the rule (and, with
    `ndr_address`, without an address for undeliverable journal reports). For `plan`."""
    ops: list[Operation] = []
    if ndr_address is not None:
        ops.append(Operation("Set-TransportConfig", {"JournalingReportNdrTo": ndr_address}))
    ops.append(Operation("New-JournalRule", {"Name": name, "JournalEmailAddress": address, "Scope": "Global",
                                             "Enabled": True}))
    return ops
