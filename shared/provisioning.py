"""One activation, end to end: preflight, SPF, plan, apply, validate; returns an Outcome.

The engine owns the order of operations and the decisions between them; every call to the
outside goes through one client per system (Exchange, DNS), so the same engine runs under the
queue worker, the `apply` command and the tests. It never schedules retries itself: a
transient error ends the run with `outcome.retryable`, and the caller (worker or CLI) decides
when to try again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from .connectors import ConnectorSpec, desired_connectors
from .errors import ErrorCode, ExchangeError, ProvisioningError, TransientError
from .exchange import (
    AcceptedDomain,
    CallRecord,
    Connector,
    ConnectorExistsError,
    ConnectorNotFoundError,
    ExchangeAdminClient,
    JournalRule,
    TokenProvider,
    ValidationTask,
)
from .journal import JournalAction, JournalRulePlan, ensure_rule, remove_rule
from .notice import ActivationNotice
from .outcome import ConnectorOutcome, Event, Outcome, Status, Validation, now_iso
from .plan import (
    Action,
    ConnectorPlan,
    Plan,
    diff,
    make_plan,
    needs_validation,
    timestamp,
    validated_parameters,
    write_parameters,
)
from .removal import OwnConnectors, RemovalAction, RemovalPlan, plan_removals
from .services import ENTERPRISE_AUDIT, connector_names, removal_order, requested, spf_applies
from .settings import Settings
from .spf import SpfResolver, check_domains

WRITE_CMDLETS = frozenset({
    "New-OutboundConnector", "Set-OutboundConnector", "Remove-OutboundConnector",
    "New-JournalRule", "Set-JournalRule", "Enable-JournalRule", "Remove-JournalRule", "Set-TransportConfig",
})
ClientFactory = Callable[[str, Callable[[CallRecord], None]], ExchangeAdminClient]
EventSink = Callable[[Event], None]
T = TypeVar("T")
CALL_RETRY_MAX_SECONDS = 10.0


class ProvisioningEngine:
    """Runs activations against Exchange Online; safe to share between threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        token_provider: TokenProvider | None = None,
        client_factory: ClientFactory | None = None,
        spf_resolver: SpfResolver | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if client_factory is None:
            if token_provider is None:
                raise ValueError("either token_provider or client_factory is required")
            client_factory = _default_factory(settings, token_provider)
        self._settings = settings
        self._client_factory = client_factory
        self._spf_resolver = spf_resolver
        self._sleep = sleep
        self._clock = clock

    def run(self, notice: ActivationNotice, *, on_event: EventSink | None = None) -> Outcome:
        """Provision one notice. Provisioning errors end up in the outcome; bugs propagate.

        A terminate notice runs the termination instead (its connectors removed), with the same
        Outcome, so the worker's records, claims and retries serve both without knowing which.
        """
        outcome = Outcome(notice_id=notice.notice_id, tenant_id=notice.tenant_id, action=notice.action)
        run = _TerminationRun(self, notice, outcome, on_event) if notice.terminates else _Run(
            self, notice, outcome, on_event)
        try:
            run.execute()
        except ProvisioningError as exc:
            run.fail(exc)
        finally:
            run.close()
        outcome.finished_at = now_iso()
        run.emit("finished", f"{'termination' if notice.terminates else 'activation'} {outcome.status.value}",
                 status=outcome.status.value)
        return outcome


class _Run:
    """The state of one engine run; exists so each step can be a small method."""

    def __init__(self, engine: ProvisioningEngine, notice: ActivationNotice, outcome: Outcome,
                 on_event: EventSink | None) -> None:
        self.engine = engine
        self.settings = engine._settings
        self.notice = notice
        self.outcome = outcome
        self.on_event = on_event
        self.specs = [] if notice.terminates else desired_connectors(notice, self.settings)
        outcome.connectors = [ConnectorOutcome(name=s.name, service=s.service) for s in self.specs]
        self.client: ExchangeAdminClient | None = None

    # -- events ---------------------------------------------------------------------------
    def emit(self, kind: str, message: str, *, duration_ms: float | None = None, **data: Any) -> None:
        event = Event(kind=kind, message=message, duration_ms=duration_ms, data=data)
        self.outcome.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _on_call(self, record: CallRecord) -> None:
        if record.cmdlet in WRITE_CMDLETS and record.ok:
            self.outcome.writes += 1
        answer = record.status if record.status is not None else "no response"
        self.emit("exchange.call", f"{record.cmdlet} -> {answer}",
                  duration_ms=round(record.duration_ms, 1), cmdlet=record.cmdlet, status=record.status,
                  ok=record.ok, error_code=record.error_code)

    # -- outcome --------------------------------------------------------------------------
    def fail(self, exc: ProvisioningError) -> None:
        out = self.outcome
        out.error = exc.to_dict()
        out.retryable = exc.retryable
        out.retry_after = exc.retry_after
        # The status if no retry follows; the worker's lifecycle decides from POLICY whether one does.
        out.status = Status.NEEDS_ATTENTION if exc.needs_attention else Status.FAILED
        self.emit("error", exc.detail, code=exc.code.value, retryable=exc.retryable)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    # -- steps ----------------------------------------------------------------------------
    def execute(self) -> None:
        notice = self.notice
        self.emit("started", f"provisioning {', '.join(notice.services)} for tenant {notice.tenant_id}",
                  services=list(notice.services))
        self.client = self.engine._client_factory(notice.tenant_id, self._on_call)
        actual, domains = self.preflight()
        self.check_recipients(domains)
        self.check_spf(domains)
        journal = self.journal_preflight()
        plan = make_plan(self.specs, actual, own_names=connector_names(self.settings))
        self.record_plan(plan)
        if plan.blocked:
            names = ", ".join(sorted({c.name for c in plan.conflicts}))
            raise ProvisioningError(
                ErrorCode.CONFLICTING_CONNECTOR,
                "; ".join(c.reason for c in plan.conflicts),
                extra_hint=f"Connector(s): {names}",
            )
        for item, result in zip(plan.connectors, self.outcome.connectors, strict=True):
            self.apply(item, result, actual)
        if journal is not None:
            self.ensure_journal_rule(*journal)
        self.outcome.status = Status.SUCCEEDED

    def preflight(self) -> tuple[list[Connector], list[AcceptedDomain]]:
        assert self.client is not None
        started = self.engine._clock()
        client = self.client
        actual = self.call(client.list_outbound_connectors)
        domains = self.call(client.list_accepted_domains)
        self.emit("preflight", f"{len(actual)} outbound connector(s), {len(domains)} accepted domain(s)",
                  duration_ms=_ms(started, self.engine._clock()),
                  connectors=[c.name for c in actual], accepted_domains=[d.domain_name for d in domains])
        return actual, domains

    def check_recipients(self, domains: Sequence[AcceptedDomain]) -> None:
        own = {d.domain_name.casefold() for d in domains}
        for spec in self.specs:
            for recipient in spec.validation_recipients:
                if recipient.rsplit("@", 1)[1].casefold() in own:
                    raise ProvisioningError(
                        ErrorCode.RECIPIENT_IN_TENANT,
                        f"validation recipient {recipient} of '{spec.name}' is in an accepted domain of the tenant",
                    )

    def check_spf(self, domains: Sequence[AcceptedDomain]) -> None:
        policy = self.settings.spf_policy
        # SPF matters for mail MailGates relays on the customer's behalf, not for journal reports:
        # each service's definition says whether it applies.
        if policy == "off" or not spf_applies(self.notice.services):
            return
        names = [d.domain_name for d in domains if not d.domain_name.casefold().endswith(".onmicrosoft.com")]
        if not names:
            self.emit("spf", "no custom accepted domain to check")
            return
        resolver = self.engine._spf_resolver
        if resolver is None:
            from .spf import DnsPythonResolver

            resolver = DnsPythonResolver.from_settings(self.settings)
        started = self.engine._clock()
        results = check_domains(names, required_include=self.settings.spf_required_include, resolver=resolver)
        findings = [(r.domain, code, detail) for r in results for code, detail in r.findings]
        self.emit("spf", f"checked {len(results)} domain(s), {len(findings)} finding(s)",
                  duration_ms=_ms(started, self.engine._clock()), results=[r.to_dict() for r in results])
        for domain, code, detail in findings:
            self.outcome.warnings.append({"code": code.value, "domain": domain, "message": detail})
        if policy == "block" and findings:
            domain, code, detail = findings[0]
            raise ProvisioningError(code, f"{domain}: {detail}")  # POLICY: lookup failures retry

    # -- Enterprise Audit's journal rule (EA_JOURNAL_RULE=ensure) ------------------------------
    def journal_preflight(self) -> tuple[list[JournalRule], str | None] | None:
        """The tenant's journal rules and NDR address, read before anything is written.

        Exchange Online needs an address for undeliverable journal reports before journal rules
        work: a tenant without one, and a notice without `journal_ndr_address`, stops here with
        nothing written (needs attention), rather than after the connectors changed.
        """
        if self.settings.ea_journal_rule != "ensure" or ENTERPRISE_AUDIT.key not in self.notice.services:
            return None
        assert self.client is not None
        client = self.client
        rules = self.call(client.list_journal_rules)
        ndr_to = self.call(client.get_journaling_report_ndr_to)
        self.emit("journal.preflight", f"{len(rules)} journal rule(s); undeliverable reports to {ndr_to or 'nobody'}",
                  journal_rules=[r.name for r in rules], journaling_report_ndr_to=ndr_to)
        if ndr_to is None and self.notice.journal_ndr_address is None:
            raise ProvisioningError(
                ErrorCode.JOURNAL_NDR_MISSING,
                "the tenant has no address for undeliverable journal reports (JournalingReportNdrTo) and the "
                "notice gives no journal_ndr_address; nothing was written",
                needs_attention=True,
            )
        return rules, ndr_to

    def ensure_journal_rule(self, rules: list[JournalRule], ndr_to: str | None) -> None:
        """After the Enterprise Audit connector exists, so journal reports already have their route."""
        assert self.client is not None and self.notice.journal_report_address is not None
        client = self.client
        if ndr_to is None:
            address = self.notice.journal_ndr_address
            assert address is not None
            self.call(lambda: client.set_journaling_report_ndr_to(address))
            self.emit("journal.ndr_set", f"undeliverable journal reports go to {address}", address=address)
        name = self.settings.ea_journal_rule_name
        plan = ensure_rule(name, self.notice.journal_report_address, rules)
        if plan.action is JournalAction.CREATE:
            recipient = self.notice.journal_report_address
            try:
                self.call(lambda: client.create_journal_rule(name, recipient))
            except ConnectorExistsError as exc:
                # Made a moment ago (another delivery, an admin): converge on it, never a second one.
                plan = ensure_rule(name, recipient, self.call(client.list_journal_rules))
                if plan.action is JournalAction.CREATE:
                    raise ProvisioningError(ErrorCode.REPLICATION_TIMEOUT,
                                            f"journal rule '{name}' exists but is not listed yet",
                                            retryable=True) from exc
            else:
                self.emit("journal_rule.created", f"created journal rule '{name}' to {recipient}",
                          journal_rule=name)
                return
        if plan.changes:
            self.call(lambda: client.update_journal_rule(name, plan.changes))
        if plan.enable:
            self.call(lambda: client.enable_journal_rule(name))
        if plan.writes_needed:
            self.emit("journal_rule.updated", f"updated journal rule '{name}': "
                      + ", ".join([*sorted(plan.changes), *(["Enabled"] if plan.enable else [])]), journal_rule=name)
        else:
            self.emit("journal_rule.unchanged", f"journal rule '{name}' already as desired", journal_rule=name)

    def record_plan(self, plan: Plan) -> None:
        for warning in plan.warnings:
            self.outcome.warnings.append({"code": warning.code, "message": warning.message, **warning.data})
        self.emit("plan", ", ".join(f"{p.spec.name}: {p.action.value}" for p in plan.connectors),
                  connectors=[{"name": p.spec.name, "action": p.action.value, "changes": sorted(p.changes),
                               "needs_validation": p.needs_validation} for p in plan.connectors],
                  conflicts=[c.name for c in plan.conflicts])

    def apply(self, item: ConnectorPlan, result: ConnectorOutcome, actual: Sequence[Connector]) -> None:
        assert self.client is not None
        spec = item.spec
        action, changes, validate = item.action, item.changes, item.needs_validation
        current = next((c for c in actual if c.name.casefold() == item.identity.casefold()), None)
        if action is Action.CREATE:
            try:
                client = self.client
                self.call(lambda: client.create_outbound_connector(spec))
                self.emit("connector.created", f"created '{spec.name}'", connector=spec.name)
            except ConnectorExistsError:
                # The name exists although the listing did not show it: ours in test mode (which
                # the listing leaves out), or made a moment ago by another delivery or an admin.
                # Converge on it instead of failing, and never create a second one.
                action, changes, validate, current = self.converge_existing(spec)
        elif action is Action.UPDATE:
            parameters = write_parameters(changes, validate=validate)
            self.with_replication(lambda: self.client_update(item.identity, parameters))
            self.emit("connector.updated", f"updated '{spec.name}': {', '.join(sorted(changes))}",
                      connector=spec.name, changes=sorted(changes))
        else:
            self.emit("connector.unchanged", f"'{spec.name}' already as desired", connector=spec.name)
        result.action = action
        result.changed = sorted(changes) if action is Action.UPDATE else []
        if not validate:
            # Validated already for these recipients, and nothing that routes mail changed
            # (plan.needs_validation): a wizard-made connector is adopted without a test message.
            result.validation = Validation.ALREADY_VALIDATED
            self.record_kept_validation(spec, current)
            return
        self.validate(spec, result)

    def client_update(self, identity: str, changes: dict[str, Any]) -> None:
        assert self.client is not None
        client = self.client
        self.call(lambda: client.update_outbound_connector(identity, changes))

    def record_kept_validation(self, spec: ConnectorSpec, current: Connector | None) -> None:
        """Say whose validation an already-validated connector keeps: Exchange's, not this run's.

        A finished record is what operators and auditors read; `already_validated` alone could
        pass for a test this product ran. The event names when Exchange says the connector was
        validated, for which recipients, and where it was made (`AdminUI`: the wizard).
        """
        when = current.last_validated_at if current is not None else None
        stamp = now_iso(when) if when is not None else (current.last_validation_timestamp if current else None)
        recipients = list(current.validation_recipients) if current is not None else []
        self.emit("validation.kept",
                  f"'{spec.name}' keeps the validation Exchange holds ({stamp or 'time not recorded'}, "
                  f"{', '.join(recipients) or 'no recipients recorded'}); not by this run, no test message sent",
                  connector=spec.name, last_validation_timestamp=stamp, validation_recipients=recipients,
                  connector_source=current.connector_source if current is not None else "")

    def converge_existing(self, spec: ConnectorSpec) -> tuple[Action, dict[str, Any], bool, Connector]:
        assert self.client is not None
        current = self.with_replication(lambda: self._require(spec.name))
        changes = diff(spec, current)
        validate = needs_validation(spec, current, changes)
        if changes:
            parameters = write_parameters(changes, validate=validate)
            self.with_replication(lambda: self.client_update(spec.name, parameters))
            self.emit("connector.updated", f"'{spec.name}' existed; updated {', '.join(sorted(changes))}",
                      connector=spec.name, changes=sorted(changes))
            return Action.UPDATE, changes, validate, current
        self.emit("connector.unchanged", f"'{spec.name}' existed already as desired", connector=spec.name)
        return Action.UNCHANGED, {}, validate, current

    def _require(self, name: str) -> Connector:
        """The connector New- says exists: first among those in test mode, then the others.

        Get-OutboundConnector leaves out connectors in test mode unless asked for them alone
        (`-IncludeTestModeConnectors $true`), so a connector of ours in test mode is the usual
        reason the listing missed a name that exists; one made a moment ago is the other.
        """
        assert self.client is not None
        client = self.client
        found = self.call(lambda: client.get_outbound_connector(name, test_mode=True))
        if found is None:
            found = self.call(lambda: client.get_outbound_connector(name))
        if found is None:
            raise ConnectorNotFoundError(ErrorCode.EXCHANGE_REJECTED, f"outbound connector '{name}' not found")
        return found

    def validate(self, spec: ConnectorSpec, result: ConnectorOutcome) -> None:
        assert self.client is not None
        client = self.client
        started = self.engine._clock()
        recipients = list(spec.validation_recipients)
        # Each Validate sends a test message, so it is repeated in-process only when Exchange
        # said it did not process the request; a timeout or a dropped connection goes to the
        # queue's back-off, since the message may already be on its way.
        tasks = self.with_replication(
            lambda: self.call(lambda: client.validate_outbound_connector(spec.name, recipients),
                              retry_if=_not_processed))
        result.tasks = [{"task": t.task_name, "successful": t.successful, "details": t.details,
                         **({"parent": " > ".join(t.path)} if t.path else {})} for t in tasks]
        failed = [t for t in tasks if not t.successful]
        if failed or not tasks:
            result.validation = Validation.FAILED
            names = ", ".join(t.task_name for t in failed)
            self.emit("validation.failed", f"'{spec.name}' validation failed: {names or 'no tasks'}",
                      duration_ms=_ms(started, self.engine._clock()), connector=spec.name, tasks=result.tasks)
            if result.action in (Action.CREATE.value, Action.UPDATE.value):
                # The wizard validates before it saves; here the connector already exists. A
                # MailGates `*` connector left on would send all of the customer's mail to a
                # smart host Exchange could not reach, so what this run set up is switched off
                # until a retry validates it (the next plan turns it back on).
                self.client_update(spec.name, {"Enabled": False})
                result.disabled = True
                self.emit("connector.disabled", f"'{spec.name}' turned off until it validates", connector=spec.name)
            # Exchange's own words for each failed leaf (e.g. "450 4.4.317 Cannot connect to
            # remote server …") are what the operator acts on: message and hint both carry them.
            reasons = "; ".join(_task_text(t) for t in failed)
            raise ProvisioningError(
                ErrorCode.VALIDATION_FAILED,
                f"validation of '{spec.name}' failed: {reasons or 'Exchange returned no tasks'}",
                needs_attention=True,
                extra_hint=f"Failed task(s) / 失敗したタスク: {_short(reasons, 600)}" if failed else "",
            )
        stamp = timestamp(datetime.now(UTC))
        params = validated_parameters(spec, stamp)
        changes = {k: v for k, v in params.items() if k != "Identity"}
        self.with_replication(lambda: self.client_update(spec.name, changes))
        result.validation = Validation.PASSED
        self.emit("validation.passed", f"'{spec.name}' validated with {', '.join(recipients)}",
                  duration_ms=_ms(started, self.engine._clock()), connector=spec.name, tasks=result.tasks,
                  last_validation_timestamp=stamp)

    def call(self, step: Callable[[], T], *, retry_if: Callable[[TransientError], bool] | None = None) -> T:
        """Retry a throttled or briefly unavailable call a few times, in-process.

        Most throttling clears within seconds; going back through the queue for it would cost a
        whole new run (two reads and a token check) per blip. Waits longer than
        CALL_RETRY_MAX_SECONDS, and repeated failures, are left to the queue's back-off.
        `retry_if` narrows which transient errors are retried here at all.
        """
        attempt = 0
        while True:
            try:
                return step()
            except TransientError as exc:
                attempt += 1
                if attempt > self.settings.exo_call_retries or (retry_if is not None and not retry_if(exc)):
                    raise
                delay = exc.retry_after if exc.retry_after is not None else 0.5 * 2 ** (attempt - 1)
                if delay > CALL_RETRY_MAX_SECONDS:
                    raise
                self.emit("exchange.retry", f"{exc.code.value}; retrying in {delay:.1f}s", delay_s=delay,
                          code=exc.code.value)
                self.engine._sleep(delay)

    def with_replication(self, step: Callable[[], T]) -> T:
        """Run a step that may see a just-created connector as missing, for a bounded time.

        Exchange Online replicates a new connector across its directory servers; for a few
        seconds after New-OutboundConnector, Set/Validate may answer "not found".
        """
        deadline = self.engine._clock() + self.settings.replication_wait_seconds
        delay = 0.5
        while True:
            try:
                return step()
            except ConnectorNotFoundError as exc:
                if self.engine._clock() + delay > deadline:
                    raise ProvisioningError(
                        ErrorCode.REPLICATION_TIMEOUT,
                        f"{exc.detail} (still not visible after {self.settings.replication_wait_seconds:.0f}s)",
                    ) from exc
                self.emit("replication.wait", f"not visible yet; retrying in {delay:.1f}s", delay_s=delay)
                self.engine._sleep(delay)
                delay = min(delay * 2, 8.0)


class _TerminationRun(_Run):
    """A contract that ends: remove our connectors of the ended services, MailGates first.

    The decision (which connectors are ours, the order, what blocks) is `removal.plan_removals`;
    this only reads the tenant and carries the decision out.
    """

    def execute(self) -> None:
        notice = self.notice
        own = own_connectors(self.settings)
        self.outcome.connectors = [ConnectorOutcome(name=own.name_of(s), service=s)
                                   for s in _removal_order(notice.services)]
        self.emit("started", f"terminating {', '.join(notice.services)} for tenant {notice.tenant_id}",
                  services=list(notice.services), action=notice.action)
        self.client = self.engine._client_factory(notice.tenant_id, self._on_call)
        plan = plan_removals(notice.services, self.read_connectors(), own=own)
        journal = self.journal_removal()
        self.record_removals(plan)
        refusals = [(r.name, r.reason) for r in plan.refusals]
        if journal is not None and journal.refusal:
            refusals.append((journal.name, journal.refusal))
        if refusals:
            names = ", ".join(sorted({name for name, _ in refusals}))
            raise ProvisioningError(
                ErrorCode.CONNECTOR_NOT_OURS,
                "; ".join(reason for _, reason in refusals) + "; nothing was removed",
                needs_attention=True,
                extra_hint=f"Connector(s) / rule: {names}",
            )
        results = {c.service: c for c in self.outcome.connectors}
        for removal in plan.removals:
            if removal.service == ENTERPRISE_AUDIT.key and journal is not None:
                # The rule goes before the connector its journal reports ride on.
                self.remove_journal_rule(journal)
                journal = None
            result = results[removal.service]
            if removal.action is RemovalAction.ABSENT:
                result.action = RemovalAction.ABSENT
                self.emit("connector.absent", f"'{removal.name}' is not there; nothing to remove",
                          connector=removal.name)
                continue
            identity = removal.identity or removal.name
            assert self.client is not None
            try:
                self.call(partial(self.client.remove_outbound_connector, identity))
            except ConnectorNotFoundError:
                # Listed a moment ago, gone now (another delivery of this notice, or an admin):
                # the end state is the one wanted.
                if result.action != RemovalAction.REMOVED:
                    result.action = RemovalAction.ABSENT
                self.emit("connector.absent", f"'{identity}' was already removed", connector=identity)
                continue
            result.action = RemovalAction.REMOVED
            self.emit("connector.removed", f"removed '{identity}'" + (" (in test mode)" if removal.test_mode else ""),
                      connector=identity, test_mode=removal.test_mode)
        self.outcome.status = Status.SUCCEEDED

    def journal_removal(self) -> JournalRulePlan | None:
        """Our journal rule, when Enterprise Audit ends and the product manages the rule."""
        if self.settings.ea_journal_rule != "ensure" or ENTERPRISE_AUDIT.key not in self.notice.services:
            return None
        assert self.client is not None
        rules = self.call(self.client.list_journal_rules)
        return remove_rule(self.settings.ea_journal_rule_name, rules,
                           journal_domains=self.settings.allowed_journal_domains)

    def remove_journal_rule(self, plan: JournalRulePlan) -> None:
        assert self.client is not None
        if plan.action is not JournalAction.REMOVE:
            self.emit("journal_rule.absent", f"journal rule '{plan.name}' is not there; nothing to remove",
                      journal_rule=plan.name)
            return
        try:
            self.call(partial(self.client.remove_journal_rule, plan.name))
        except ConnectorNotFoundError:
            self.emit("journal_rule.absent", f"journal rule '{plan.name}' was already removed", journal_rule=plan.name)
            return
        self.emit("journal_rule.removed", f"removed journal rule '{plan.name}'", journal_rule=plan.name)

    def read_connectors(self) -> list[Connector]:
        """Every outbound connector, in test mode or not: two listings.

        Get-OutboundConnector returns only connectors not in test mode, or with
        `-IncludeTestModeConnectors $true` only those in it; a test-mode `*` connector of ours
        left behind would come back into service if an admin turned test mode off. Two listings
        cost the same for one service or both, fewer than looking up each name both ways.
        """
        assert self.client is not None
        client = self.client
        started = self.engine._clock()
        actual = self.call(client.list_outbound_connectors)
        actual += self.call(lambda: client.list_outbound_connectors(test_mode=True))
        self.emit("preflight", f"{len(actual)} outbound connector(s), test mode included",
                  duration_ms=_ms(started, self.engine._clock()), connectors=[c.name for c in actual])
        return actual

    def record_removals(self, plan: RemovalPlan) -> None:
        self.emit("plan", ", ".join(f"{r.name}: {r.action.value}" for r in plan.removals) or "nothing to remove",
                  removals=[{"service": r.service, "name": r.name, "action": r.action.value,
                             "identity": r.identity, "test_mode": r.test_mode} for r in plan.removals],
                  refusals=[{"service": r.service, "name": r.name, "reason": r.reason} for r in plan.refusals])


def own_connectors(settings: Settings) -> OwnConnectors:
    """What makes a connector ours, from the settings (names and allow-lists)."""
    return OwnConnectors.from_settings(settings)


def _removal_order(services: Sequence[str]) -> list[str]:
    return [s.key for s in requested(services, order=removal_order())]


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 1)


# Answers in which Exchange says it did not run the request: throttling (429, the concurrency
# limit, a busy server) and 503 Service Unavailable. A 500/502/504, a timeout or a dropped
# connection leave open whether the cmdlet ran.
_NOT_PROCESSED_STATUSES = frozenset({429, 503})


def _not_processed(exc: TransientError) -> bool:
    """Whether a failed Validate certainly sent no test message, so repeating it is safe."""
    if not isinstance(exc, ExchangeError):
        return False  # no answer from Exchange at all (timeout, connection dropped)
    return exc.status_code in _NOT_PROCESSED_STATUSES or exc.code is ErrorCode.THROTTLED


def _task_text(task: ValidationTask) -> str:
    name = " > ".join((*task.path, task.task_name)) if task.path else task.task_name
    return f"{name}: {task.details}" if task.details else name


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _default_factory(settings: Settings, token_provider: TokenProvider) -> ClientFactory:
    from .exchange import https_session

    # One HTTP session for every tenant: connection reuse matters more than isolation here,
    # since every tenant talks to the same Exchange endpoint.
    session = https_session(timeout=settings.exo_timeout_seconds)

    def factory(tenant_id: str, on_call: Callable[[CallRecord], None]) -> ExchangeAdminClient:
        return ExchangeAdminClient(
            tenant_id,
            credential=token_provider,
            endpoint=settings.exo_admin_api_url,
            session=session,
            timeout=settings.exo_timeout_seconds,
            validate_timeout=settings.exo_validate_timeout_seconds,
            allowed_smart_hosts=settings.allowed_smart_hosts,
            allowed_journal_domains=settings.allowed_journal_domains,
            on_call=on_call,
            own_connector_names=connector_names(settings),
            journal_rule_name=settings.ea_journal_rule_name,
        )

    return factory


# The Exchange clients a run uses, for other readers of the same tenants (shared/drift.py).
client_factory = _default_factory
