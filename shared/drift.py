"""Drift: a succeeded activation's connectors read again and compared with what its notice asks for.

Customers and their partners edit connectors in the Exchange admin center; a changed smart
host or TLS setting silently breaks the service. The drift check finds that:

- The comparison is `plan.make_plan`'s diff, the same one a run uses to decide what to set:
  desired from `connectors.desired_connectors` for the notice, actual from the listing. A
  parameter the run would set back is a difference; a connector the run would create is
  missing. There is no second diff.
- Each tenant is read once: the plain listing and the test-mode listing, because a connector
  in test mode is invisible to the plain one (Get-OutboundConnector `-IncludeTestModeConnectors`)
  and one of ours switched into test mode routes nothing, which is drift (`TestMode` differs).
- The tenant's newest activation is its desired state. A tenant whose newest activation is a
  termination, or is not (or no longer) succeeded, is not checked.
- Finding or not finding drift is a lifecycle event (`DriftFound`), so every status change
  goes through `lifecycle.transition`: a finding marks the activation `drifted` with the
  differences; no finding writes nothing. With DRIFT_REPAIR the drifted activation is
  re-provisioned (`DriftRepair`), a real new run that returns it to `succeeded`.
- A drift check never writes to Exchange: its only access is `ConnectorReader`, which sends
  nothing but the cmdlets in READ_CMDLETS.
- A check of every tenant (the timer, `POST /api/drift` without a scope) is a fan-out: the
  tenants are listed page by page from the index and each gets a drift-check message on the
  activation queue (`queueing.DriftEnvelope`), which the queue trigger runs as one tenant's
  check. Thousands of tenants, two reads each, would outlive any one invocation's timeout; as
  messages they run in parallel, each retried and poisoned like any other message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import telemetry
from .connectors import ConnectorSpec, desired_connectors
from .errors import ProvisioningError
from .exchange import Connector
from .lifecycle import Result
from .notice import NoticeError, parse_notice
from .outcome import Status
from .plan import Action, ActualConnector, make_plan
from .services import connector_names

if TYPE_CHECKING:
    from .exchange import ExchangeAdminClient, TokenProvider
    from .settings import Settings
    from .store import ActivationRecord, ActivationStore
    from .worker import Worker

log = logging.getLogger("activation.drift")

# The only cmdlets the drift path may send: reads.
READ_CMDLETS = frozenset({"Get-OutboundConnector"})
# The activation statuses a drift check reads (a drifted one may since have been set right).
CHECKED_STATUSES = (Status.SUCCEEDED, Status.DRIFTED)
# Where a Set-OutboundConnector parameter of plan.diff is read on a listed connector.
_ATTRIBUTES = {
    "Name": "name", "ConnectorType": "connector_type", "RecipientDomains": "recipient_domains",
    "UseMXRecord": "use_mx_record", "SmartHosts": "smart_hosts", "TlsSettings": "tls_settings",
    "TlsDomain": "tls_domain", "Enabled": "enabled", "IsTransportRuleScoped": "is_transport_rule_scoped",
    "TestMode": "test_mode", "Comment": "comment",
}

ClientFactory = Callable[[str], "ExchangeAdminClient"]


class ReadOnlyViolation(ValueError):
    """Code in the drift path asked for a cmdlet that is not a read: a bug, refused before sending."""


@dataclass(frozen=True)
class Difference:
    """One way a tenant's connector differs from the activation's: a parameter, or missing."""

    connector: str
    service: str
    parameter: str | None  # None: the connector is missing
    desired: Any = None
    actual: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the pure comparison ---------------------------------------------------------------------
def differences(desired: Sequence[ConnectorSpec], actual: Sequence[ActualConnector], *,
                own_names: Sequence[str] = ()) -> list[Difference]:
    """What the next run would change, as differences (desired and actual per parameter). No I/O."""
    plan = make_plan(desired, actual, own_names=own_names)
    by_name = {c.name.casefold(): c for c in actual}
    found: list[Difference] = []
    for item in plan.connectors:
        spec = item.spec
        if item.action is Action.CREATE:
            found.append(Difference(spec.name, spec.service, None))
            continue
        current = by_name.get(item.identity.casefold())
        for parameter, value in item.changes.items():
            attribute = _ATTRIBUTES.get(parameter)
            seen = getattr(current, attribute) if current is not None and attribute else None
            found.append(Difference(spec.name, spec.service, parameter, _plain(value), _plain(seen)))
    return found


def _plain(value: Any) -> Any:
    """JSON-ready: the listing's tuples as lists."""
    return list(value) if isinstance(value, tuple | list) else value


# -- the one Exchange access -----------------------------------------------------------------
class ConnectorReader:
    """A read-only view of one tenant's outbound connectors: the drift check's only way to Exchange.

    It holds the client privately and sends only READ_CMDLETS, so no code in the drift path
    can reach a write, whatever it is given.
    """

    def __init__(self, client: ExchangeAdminClient) -> None:
        self._client = client

    def read(self, cmdlet: str, parameters: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        if cmdlet not in READ_CMDLETS:
            raise ReadOnlyViolation(f"the drift check sends only {', '.join(sorted(READ_CMDLETS))}, not {cmdlet}")
        return self._client.invoke(cmdlet, parameters)

    def connectors(self) -> list[Connector]:
        """Every outbound connector: the plain listing and the test-mode one (two reads)."""
        rows = [*self.read("Get-OutboundConnector"),
                *self.read("Get-OutboundConnector", {"IncludeTestModeConnectors": True})]
        seen: set[str] = set()
        out: list[Connector] = []
        for row in rows:
            connector = Connector.from_row(row)
            if connector.name.casefold() not in seen:
                seen.add(connector.name.casefold())
                out.append(connector)
        return out


# -- the runner ------------------------------------------------------------------------------
@dataclass
class TenantCheck:
    """What the check did for one tenant (the API's and the CLI's report)."""

    tenant_id: str
    notice_id: str
    result: str  # drifted | in_sync | skipped | error | stale
    differences: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""
    repair: str | None = None  # the repair's lifecycle result, when DRIFT_REPAIR is on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftReport:
    checks: list[TenantCheck] = field(default_factory=list)

    @property
    def drifted(self) -> list[TenantCheck]:
        return [c for c in self.checks if c.result == Result.DRIFTED.value]

    def to_dict(self) -> dict[str, Any]:
        return {"checked": len(self.checks), "drifted": len(self.drifted),
                "checks": [c.to_dict() for c in self.checks]}


class DriftChecker:
    """Reads succeeded activations' tenants, compares, and records each finding through the worker."""

    def __init__(self, settings: Settings, *, store: ActivationStore, worker: Worker,
                 client_factory: ClientFactory) -> None:
        self._settings = settings
        self._store = store
        self._worker = worker
        self._client_factory = client_factory

    def run(self, *, tenant_id: str | None = None, notice_id: str | None = None,
            requested_by: str | None = None) -> DriftReport:
        """Check every tenant with a succeeded activation (or only `tenant_id`, or `notice_id`'s)."""
        report = DriftReport()
        for tenant, record in self._targets(tenant_id=tenant_id, notice_id=notice_id):
            report.checks.append(self._check(tenant, record, requested_by=requested_by))
        return report

    def fan_out(self, *, requested_by: str | None = None) -> int:
        """Queue one drift-check message per tenant with a succeeded (or drifted) activation;
        returns how many. Reads the index page by page; sends nothing to Exchange."""
        from .queueing import DriftEnvelope

        queued = 0
        for tenant, _ in self._targets(tenant_id=None, notice_id=None):
            try:
                envelope = DriftEnvelope(tenant, requested_by[:256] if requested_by else None)
            except ValueError:
                log.warning("drift check: tenant id %r cannot be checked (not a GUID); skipped", tenant)
                continue
            self._worker.queue.send_drift_check(envelope)
            queued += 1
        log.info("drift check: %d tenant(s) queued", queued)
        return queued

    # -- which activations --------------------------------------------------------------------
    def _targets(self, *, tenant_id: str | None, notice_id: str | None) -> Iterator[tuple[str, ActivationRecord]]:
        if notice_id is not None:
            record = self._store.get(notice_id)
            if record is not None:
                yield record.tenant_id, record
            return
        seen: set[str] = set()
        for status in CHECKED_STATUSES:
            for record in self._pages(status=status, tenant_id=tenant_id):
                if record.tenant_id and record.tenant_id not in seen:
                    seen.add(record.tenant_id)
                    yield record.tenant_id, record

    def _pages(self, *, status: Status, tenant_id: str | None) -> Iterator[ActivationRecord]:
        """Activations by status, one bounded page at a time (the store's query, with its index)."""
        continuation: str | None = None
        while True:
            page = self._store.list_activations(status=status.value, tenant_id=tenant_id,
                                                top=self._settings.drift_page_size, continuation=continuation)
            yield from page.items
            if page.continuation is None:
                return
            continuation = page.continuation

    def _newest(self, tenant_id: str) -> ActivationRecord | None:
        """The tenant's newest activation: its desired state (a later notice supersedes earlier ones)."""
        newest: ActivationRecord | None = None
        continuation: str | None = None
        while True:
            page = self._store.list_activations(tenant_id=tenant_id, top=self._settings.drift_page_size,
                                                continuation=continuation)
            for record in page.items:
                if record.content_hash and (newest is None or _created(record) > _created(newest)):
                    newest = record
            if page.continuation is None:
                return newest
            continuation = page.continuation

    # -- one tenant ---------------------------------------------------------------------------
    def _check(self, tenant_id: str, record: ActivationRecord, *, requested_by: str | None) -> TenantCheck:
        listed = self._newest(tenant_id)
        # A list item carries the listed fields only; the desired state is in the stored notice.
        newest = (self._store.get(listed.notice_id) if listed is not None else None) or record
        # Every line logged while checking is about the tenant's newest activation.
        with telemetry.activation_scope(newest.notice_id, tenant_id, attempt=newest.attempts, step="drift"):
            return self._check_newest(tenant_id, newest, requested_by=requested_by)

    def _check_newest(self, tenant_id: str, newest: ActivationRecord, *, requested_by: str | None) -> TenantCheck:
        check = TenantCheck(tenant_id, newest.notice_id, "skipped")
        if newest.status not in CHECKED_STATUSES:
            check.detail = f"the tenant's newest activation {newest.notice_id} is {newest.status.value}"
            return check
        if newest.notice.get("action") == "terminate":
            check.detail = f"the tenant's newest activation {newest.notice_id} is a termination"
            return check
        try:
            notice = parse_notice(newest.notice_json, self._settings)
            desired = desired_connectors(notice, self._settings)
        except (NoticeError, ValueError) as exc:
            check.result, check.detail = "error", f"the stored notice no longer gives connectors: {exc}"[:500]
            return check
        try:
            with self._client_factory(tenant_id) as client:
                actual = ConnectorReader(client).connectors()
        except ProvisioningError as exc:
            log.warning("drift check of tenant %s could not read its connectors: %s", tenant_id, exc.detail)
            check.result, check.detail = "error", f"{exc.code.value}: {exc.detail}"[:500]
            return check
        found = [d.to_dict() for d in differences(
            desired, actual, own_names=connector_names(self._settings))]
        check.differences = found
        result = self._worker.record_drift(newest.notice_id, found, requested_by=requested_by)
        check.result = result.value
        if result is Result.DRIFTED and self._settings.drift_repair:
            check.repair = self._worker.repair_drift(newest.notice_id, requested_by=requested_by or "drift check").value
        return check


def _created(record: ActivationRecord) -> str:
    return record.created_at.isoformat() if record.created_at is not None else ""


def client_factory_from_settings(settings: Settings, token_provider: TokenProvider | None = None) -> ClientFactory:
    """Exchange clients as a run builds them (same endpoint, token, allow-lists), with no call log.

    Built on the first tenant checked, not here: queuing a check of every tenant needs no
    Exchange credential, so an operator's command line without one can still ask for it.
    """
    from .auth import token_provider_from_settings
    from .provisioning import client_factory

    made: list[Callable[..., ExchangeAdminClient]] = []

    def factory(tenant_id: str) -> ExchangeAdminClient:
        if not made:
            made.append(client_factory(settings, token_provider or token_provider_from_settings(settings)))
        return made[0](tenant_id, lambda _call: None)

    return factory


__all__ = ["READ_CMDLETS", "ConnectorReader", "Difference", "DriftChecker", "DriftReport", "ReadOnlyViolation",
           "TenantCheck", "client_factory_from_settings", "differences"]
