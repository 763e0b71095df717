"""Enterprise Audit's journal rule: the fewest writes to one enabled Global rule, and safe removal."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.journal import JournalAction, ensure_rule, remove_rule

NAME = "Enterprise Audit ジャーナル ルール"
ADDRESS = "jr-1@cs-365.cybermail.jp"
DOMAINS = frozenset({"cs-365.cybermail.jp", "cs-365-02.cybermail.jp"})


@dataclass(frozen=True)
class Rule:
    name: str = NAME
    journal_email_address: str = ADDRESS
    scope: str = "Global"
    enabled: bool = True


@pytest.mark.parametrize(("rules", "action", "changes", "enable"), [
    ([], JournalAction.CREATE, {}, False),
    ([Rule(name="Other rule")], JournalAction.CREATE, {}, False),
    ([Rule()], JournalAction.UNCHANGED, {}, False),
    ([Rule(name=NAME.upper(), journal_email_address=ADDRESS.upper())], JournalAction.UNCHANGED, {}, False),
    ([Rule(enabled=False)], JournalAction.UPDATE, {}, True),
    ([Rule(journal_email_address="old@cs-365.cybermail.jp")], JournalAction.UPDATE,
     {"JournalEmailAddress": ADDRESS}, False),
    ([Rule(scope="External", enabled=False)], JournalAction.UPDATE, {"Scope": "Global"}, True),
])
def test_ensure(rules: list[Rule], action: JournalAction, changes: dict[str, str], enable: bool) -> None:
    plan = ensure_rule(NAME, ADDRESS, rules)
    assert (plan.action, plan.changes, plan.enable) == (action, changes, enable)
    assert plan.writes_needed is (action is not JournalAction.UNCHANGED)


@pytest.mark.parametrize(("rules", "action", "refused"), [
    ([], JournalAction.ABSENT, ""),
    ([Rule(name="Customer's own rule", journal_email_address="vault@contoso.example")], JournalAction.ABSENT, ""),
    ([Rule()], JournalAction.REMOVE, ""),
    ([Rule(journal_email_address="jr@cs-365-02.cybermail.jp", enabled=False)], JournalAction.REMOVE, ""),
    ([Rule(journal_email_address="vault@contoso.example")], JournalAction.ABSENT, "vault@contoso.example"),
    ([Rule(journal_email_address="Journal Mailbox")], JournalAction.ABSENT, "Journal Mailbox"),
])
def test_remove(rules: list[Rule], action: JournalAction, refused: str) -> None:
    plan = remove_rule(NAME, rules, journal_domains=DOMAINS)
    assert plan.action is action
    assert (refused in plan.refusal) and bool(plan.refusal) is bool(refused)
