"""`python -m shared …`: the operator's command line.

Exit codes are part of the interface (scripts branch on them): 0 success, 2 invalid notice,
usage or a missing or bad setting, 3 needs attention, 4 failed (or storage unreachable).

Settings come from the environment and, for what it leaves unset, from `.run/local.env`, the
file `make run` writes for the stack it started (`Settings.from_env(local_env=...)` has the
rules). Whatever goes wrong outside the product's own outcomes, a setting or an unreachable
storage account, is one line on stderr, never a traceback; and a reader that stops reading
(`python -m shared list | head -1`) ends the output quietly, not the command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO, cast

from .connectors import desired_connectors
from .errors import HINTS, ErrorCode, label_ja
from .index import rank
from .notice import GUID_PATTERN, ActivationNotice, NoticeError, parse_notice
from .plan import make_plan, operations
from .render import plan_json, plan_powershell, plan_text, removal_json, removal_powershell, removal_text
from .services import connector_names
from .settings import LOCAL_ENV_FILE, Settings, SettingsError, local_env_values, trust_local_env_ca

if TYPE_CHECKING:
    from .outcome import Event, Outcome

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_NEEDS_ATTENTION = 3
EXIT_FAILED = 4


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None,
         local_env: Path | None = LOCAL_ENV_FILE) -> int:
    """Run one command. `local_env`: the local stack's settings file to fall back on (None: none)."""
    own_streams = stdout is None
    stdin = stdin or sys.stdin
    stdout = stdout or cast(TextIO, _ClosedPipeQuiet(sys.stdout))
    stderr = stderr or cast(TextIO, _ClosedPipeQuiet(sys.stderr))
    try:
        return _run(_parser().parse_args(argv), stdin, stdout, stderr, local_env)
    finally:
        if own_streams:
            # argparse writes --help and usage errors to sys.stdout/sys.stderr directly.
            for stream in (stdout, stderr, sys.stdout, sys.stderr):
                _flush_quietly(stream)


def _run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO, local_env: Path | None) -> int:
    try:
        settings = Settings.from_env(local_env=local_env)
        if local_env is not None:
            trust_local_env_ca(local_env)  # `apply` against the simulator the file points at
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=stderr)
        return EXIT_INVALID
    try:
        return int(args.handler(args, settings, stdin, stdout, stderr))
    except SettingsError as exc:
        print(f"configuration error: {exc}{_local_stack_hint(local_env)}", file=stderr)
        return EXIT_INVALID
    except Exception as exc:
        from azure.core.exceptions import AzureError

        if not isinstance(exc, AzureError):
            raise
        # Storage refused or could not be reached: the operator needs the endpoint and why.
        source = _settings_source(local_env, exc)
        print(f"storage error: {one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}{source}",
              file=stderr)
        return EXIT_FAILED


def _local_stack_hint(local_env: Path | None) -> str:
    if local_env is None or local_env.exists():
        return ""
    return f" (or start the local stack with `make run` in this directory: its {local_env} is read here)"


def _settings_source(local_env: Path | None, exc: Exception) -> str:
    if local_env is None:
        return ""
    try:
        taken = local_env_values(local_env)
    except SettingsError:
        return ""
    if any(name.startswith("AzureWebJobsStorage") for name in taken):
        return f" (storage settings from {local_env}: is `make run` still running?)"
    return ""


class _ClosedPipeQuiet:
    """A text stream that falls silent once its reader has gone (`| head`), instead of raising.

    Every command finishes what it started (an `apply` halfway through a tenant must not stop
    because nobody reads its progress any more); only the output is dropped. The descriptor is
    pointed at /dev/null, so the interpreter's own flush at exit has nothing to fail on either.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self._gone = True
        _redirect_to_devnull(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _flush_quietly(stream: Any) -> None:
    try:
        stream.flush()
    except BrokenPipeError:
        _redirect_to_devnull(stream)
    except (OSError, ValueError):
        pass


def _redirect_to_devnull(stream: Any) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real descriptor (a test's StringIO): nothing will flush to it later
    finally:
        os.close(devnull)


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: stored text (Exchange's
# words, a customer's name) must not move the cursor, recolour the terminal or break a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(value: object) -> str:
    """`value` as text that stays on one terminal line and cannot send escape sequences."""
    return _CONTROL.sub(" ", "" if value is None else str(value))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shared",
        description="Provision Exchange Online outbound connectors from MailGates / Enterprise Audit "
        "activation notices.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="show the connectors and Exchange calls a notice leads to (no I/O)")
    plan.add_argument("notice", help="notice JSON file, or - for standard input")
    plan.add_argument("--format", choices=("text", "json", "powershell"), default="text")
    plan.add_argument("--at", metavar="TIMESTAMP", type=_timestamp,
                      help="validation timestamp to show in the operations (default: now, UTC)")
    plan.set_defaults(handler=_cmd_plan)

    apply = sub.add_parser("apply", help="provision one notice now against the configured Exchange endpoint")
    apply.add_argument("notice", help="notice JSON file, or - for standard input")
    apply.add_argument("--json", action="store_true", help="print the outcome as JSON instead of live steps")
    apply.add_argument("--max-attempts", type=int, default=None,
                       help="attempts for transient errors (default: MAX_ATTEMPTS)")
    apply.add_argument("--max-wait", type=float, default=300.0,
                       help="give up retrying transient errors after this many seconds (default 300)")
    apply.set_defaults(handler=_cmd_apply)

    submit = sub.add_parser("submit", help="validate a notice and put it on the activation queue")
    submit.add_argument("notice", help="notice JSON file, or - for standard input")
    submit.set_defaults(handler=_cmd_submit)

    status = sub.add_parser("status", help="show an activation's status, connectors, error and history")
    status.add_argument("notice_id")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_cmd_status)

    listing = sub.add_parser("list", help="list activations, newest created first")
    listing.add_argument("--status", choices=[s.value for s in _statuses()])
    listing.add_argument("--tenant-id")
    listing.add_argument("--q", help="search: a notice id prefix, a customer name prefix, or a contract id")
    listing.add_argument("--top", type=int, default=50)
    listing.add_argument("--continuation")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_cmd_list)

    summary = sub.add_parser("summary", help="count activations per status (from counters, not a scan)")
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(handler=_cmd_summary)

    reindex = sub.add_parser("reindex", help="index every activation row (once after upgrading, or to repair)")
    reindex.set_defaults(handler=_cmd_reindex)

    retry = sub.add_parser("retry", help="start a fresh series of attempts for an activation")
    retry.add_argument("notice_id")
    retry.set_defaults(handler=_cmd_retry)

    drift = sub.add_parser("drift", help="re-read succeeded activations' connectors and mark (or repair) drift")
    drift.add_argument("--tenant-id", help="check only this tenant (GUID)")
    drift.add_argument("--notice-id", help="check only this activation's tenant")
    drift.add_argument("--json", action="store_true")
    drift.set_defaults(handler=_cmd_drift)

    consent = sub.add_parser("consent-url", help="print the admin-consent URL a customer's admin opens")
    consent.add_argument("tenant", metavar="TENANT",
                         help="the customer's tenant ID (GUID), or one of its domains (contoso.onmicrosoft.com)")
    consent.set_defaults(handler=_cmd_consent_url)
    return parser


def _statuses() -> list[Any]:
    from .outcome import Status

    return list(Status)


def _timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("the timestamp needs an offset, e.g. 2026-11-30T00:00:00Z")
    return parsed


def read_notice_source(path: str, stdin: TextIO) -> bytes:
    """The raw bytes of a notice file or of standard input (`-`)."""
    if path == "-":
        return stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode("utf-8")
    return Path(path).read_bytes()


def load_notice(path: str, settings: Settings, stdin: TextIO, stdout: TextIO, stderr: TextIO,
                *, json_errors: bool) -> ActivationNotice | None:
    """Parse a notice, printing field errors (and JSON errors if asked) when it is invalid."""
    try:
        raw = read_notice_source(path, stdin)
    except OSError as exc:
        print(f"notice: cannot read {path}: {exc.strerror or exc}", file=stderr)
        if json_errors:
            print(json.dumps({"errors": [{"field": "$", "code": "unreadable", "message": str(exc),
                                          "message_ja": "開通通知ファイルを読み込めません。パスを確認してください。"}]},
                             ensure_ascii=False), file=stdout)
        return None
    try:
        return parse_notice(raw, settings)
    except NoticeError as exc:
        for error in exc.errors:
            print(error.line(), file=stderr)
        if json_errors:
            print(json.dumps({"errors": [e.to_dict() for e in exc.errors]}, ensure_ascii=False, indent=2), file=stdout)
        return None


def _cmd_plan(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    notice = load_notice(args.notice, settings, stdin, stdout, stderr, json_errors=args.format == "json")
    if notice is None:
        return EXIT_INVALID
    if notice.terminates:
        return _plan_termination(notice, settings, args.format, stdout)
    specs = desired_connectors(notice, settings)
    ops = operations(make_plan(specs, []), now=args.at)
    journal_rule = (settings.ea_journal_rule_name if settings.ea_journal_rule == "ensure"
                    and notice.journal_report_address is not None else None)
    if journal_rule is not None and notice.journal_report_address is not None:
        from .journal import journal_operations

        ops += journal_operations(journal_rule, notice.journal_report_address,
                                  ndr_address=notice.journal_ndr_address)
    if args.format == "json":
        stdout.write(plan_json(notice, specs, ops) + "\n")
    elif args.format == "powershell":
        # Every service's connector, not only the requested ones': the script must not mistake
        # the tenant's other connector of ours for a foreign competitor, as the engine's plan does not.
        stdout.write(plan_powershell(notice, specs, own_names=connector_names(settings), journal_rule=journal_rule))
    else:
        stdout.write(plan_text(notice, specs, ops))
    return EXIT_OK


def _plan_termination(notice: ActivationNotice, settings: Settings, fmt: str, stdout: TextIO) -> int:
    from .provisioning import own_connectors
    from .removal import expected_removals

    own = own_connectors(settings)
    plan = expected_removals(notice.services, own=own, journal_rule=settings.ea_journal_rule_name
                             if settings.ea_journal_rule == "ensure" else None)
    render = {"json": removal_json, "powershell": removal_powershell}.get(fmt, removal_text)
    stdout.write(render(notice, plan, own=own) + ("\n" if fmt == "json" else ""))
    return EXIT_OK


def _cmd_apply(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    notice = load_notice(args.notice, settings, stdin, stdout, stderr, json_errors=args.json)
    if notice is None:
        return EXIT_INVALID
    # Imported here so that `plan` never loads MSAL, requests or DNS code.
    from .applying import apply_with_retries

    def show(event: Event) -> None:
        took = f"  ({event.duration_ms:.0f} ms)" if event.duration_ms is not None else ""
        print(f"{event.at[11:23]}  {event.kind:<20} {event.message}{took}", file=stdout, flush=True)

    outcome = apply_with_retries(
        notice, settings,
        on_event=None if args.json else show,
        max_attempts=args.max_attempts or settings.max_attempts,
        max_wait=args.max_wait,
        on_retry=None if args.json else lambda delay, attempt: print(
            f"{'':12}  {'retry':<20} transient error; attempt {attempt + 1} in {delay:.1f}s", file=stdout, flush=True),
    )
    if args.json:
        print(json.dumps(outcome.to_dict(), ensure_ascii=False, indent=2), file=stdout)
    else:
        _print_summary(outcome, stdout)
    return exit_code(outcome)


def exit_code(outcome: Outcome) -> int:
    from .outcome import Status

    if outcome.status is Status.SUCCEEDED:
        return EXIT_OK
    if outcome.status is Status.NEEDS_ATTENTION:
        return EXIT_NEEDS_ATTENTION
    if outcome.status is Status.REJECTED:
        return EXIT_INVALID
    return EXIT_FAILED


def _print_summary(outcome: Outcome, stdout: TextIO) -> None:
    print(f"\n{outcome.notice_id}: {outcome.status.value}", file=stdout)
    for connector in outcome.connectors:
        action = connector.action or "pending"
        print(f"  {connector.name}: {action}, validation {connector.validation.value}", file=stdout)
    for warning in outcome.warnings:
        print(f"  warning {warning.get('code')}: {warning.get('message')}", file=stdout)
    if outcome.error:
        print(f"  error {outcome.error['code']}: {outcome.error['message']}", file=stdout)
        print(f"  hint: {outcome.error['hint_en']}", file=stdout)
        print(f"  対処: {outcome.error['hint_ja']}", file=stdout)


def _cmd_submit(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    notice = load_notice(args.notice, settings, stdin, stdout, stderr, json_errors=False)
    if notice is None:
        return EXIT_INVALID
    from .queueing import ActivationQueue

    # The same plain UTF-8 JSON text the contract system sends (host.json: messageEncoding none).
    queue = ActivationQueue.from_settings(settings)
    queue.send_notice(notice.canonical_json())
    print(f"queued {notice.notice_id} on {settings.activation_queue}", file=stdout)
    return EXIT_OK


def _cmd_status(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    from .api import ActivationApi
    from .store import ActivationStore

    api = ActivationApi(ActivationStore.from_settings(settings), _no_worker)
    response = api.get(args.notice_id)
    if response.status != 200:
        print(response.body["error"]["message"], file=stderr)
        return EXIT_INVALID if response.status == 400 else EXIT_FAILED
    doc = response.body
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2), file=stdout)
        return EXIT_OK
    _print_status(doc, stdout)
    return EXIT_OK


def _print_status(doc: dict[str, Any], stdout: TextIO) -> None:
    """One activation as text: stored values are shown as they are, each on its own line."""
    t = one_line
    print(f"{t(doc.get('notice_id'))}  {t(doc.get('status'))}  tenant {t(doc.get('tenant_id'))}  "
          f"attempts {t(doc.get('attempts'))}", file=stdout)
    for connector in _dicts(doc.get("connectors")):
        # The engine turns a connector off when its validation fails: say so in both languages.
        off = ", 無効化済み (disabled)" if connector.get("disabled") is True else ""
        print(f"  {t(connector.get('name'))}: {t(connector.get('action'))}, "
              f"validation {t(connector.get('validation'))}{off}", file=stdout)
    # Warnings (SPF findings under SPF_POLICY=warn) do not fail an activation, so they are easy
    # to miss; the customer still has something to fix. Each comes with its meaning and advice
    # in Japanese and English, as the error does.
    for warning in _dicts(doc.get("warnings")):
        domain = f" [{t(warning['domain'])}]" if warning.get("domain") else ""
        print(f"  warning {t(warning.get('code'))}{domain}: {t(warning.get('message'))}", file=stdout)
        for line in _warning_advice(warning.get("code")):
            print(f"    {line}", file=stdout)
    error = doc.get("error")
    if isinstance(error, dict) and error:
        print(f"  error {t(error.get('code'))}: {t(error.get('message'))}", file=stdout)
        print(f"  hint: {t(error.get('hint_en', ''))}", file=stdout)
        print(f"  対処: {t(error.get('hint_ja', ''))}", file=stdout)
    if doc.get("next_attempt_at"):
        print(f"  next attempt at {t(doc['next_attempt_at'])}", file=stdout)
    for event in _dicts(doc.get("events")):
        print(f"  {t(event.get('at'))}  {t(event.get('kind')):<20} {t(event.get('message'))}", file=stdout)
    _print_drift(doc, stdout)


def _print_drift(doc: dict[str, Any], stdout: TextIO) -> None:
    """A drifted activation's differences, desired against actual, one parameter a line."""
    t = one_line
    for warning in _dicts(doc.get("warnings")):
        if warning.get("code") != "CONNECTOR_DRIFT":
            continue
        print(f"drift found {t(warning.get('at'))}:", file=stdout)
        for difference in _dicts(warning.get("differences")):
            print(f"  {_difference_line(difference)}", file=stdout)


def _difference_line(difference: dict[str, Any]) -> str:
    t = one_line
    if difference.get("parameter") is None:
        return f"{t(difference.get('connector'))}: missing"
    return (f"{t(difference.get('connector'))}: {t(difference.get('parameter'))} "
            f"desired {t(json.dumps(difference.get('desired'), ensure_ascii=False))}, "
            f"actual {t(json.dumps(difference.get('actual'), ensure_ascii=False))}")


def _warning_advice(code: object) -> list[str]:
    """The Japanese meaning and advice, then the English advice, for a warning's code ([] if unknown)."""
    try:
        hint = HINTS[ErrorCode(str(code))]
    except (KeyError, ValueError):
        return []
    return [f"警告: {label_ja(code)}。{hint.ja}", f"hint: {hint.en}"]


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _cmd_list(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    from .api import ActivationApi
    from .store import ActivationStore

    api = ActivationApi(ActivationStore.from_settings(settings), _no_worker)
    params = {k: v for k, v in {"status": args.status, "tenant_id": args.tenant_id, "q": args.q,
                                "top": str(args.top), "continuation": args.continuation}.items() if v}
    response = api.list(params)
    if response.status != 200:
        print(response.body["error"]["message"], file=stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(response.body, ensure_ascii=False, indent=2), file=stdout)
        return EXIT_OK
    items = _dicts(response.body.get("items"))
    continuation = response.body.get("continuation")
    if items:
        print(_list_row("NOTICE_ID", "STATUS", "ATTEMPTS", "TENANT_ID", "ERROR"), file=stdout)
    for item in items:
        error = item.get("error")
        code = error.get("code", "") if isinstance(error, dict) else ""
        print(_list_row(item.get("notice_id"), item.get("status"), item.get("attempts"), item.get("tenant_id"), code),
              file=stdout)
    if not items:
        print(_nothing_matched(args, more=bool(continuation)), file=stdout)
    if continuation:
        print(f"more: --continuation {one_line(continuation)}", file=stdout)
    return EXIT_OK


def _cmd_summary(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO,
                 stderr: TextIO) -> int:
    from .api import ActivationApi
    from .store import ActivationStore

    body = ActivationApi(ActivationStore.from_settings(settings), _no_worker).summary().body
    if args.json:
        print(json.dumps(body, ensure_ascii=False, indent=2), file=stdout)
        return EXIT_OK
    # In triage order, as the list and the status page show statuses (an unknown one last).
    for status in sorted(body["counts"], key=rank):
        print(f"{status:<16} {body['counts'][status]:>8}", file=stdout)
    print(f"{'total':<16} {body['total']:>8}" + ("" if body["exact"] else
          "  (run `python -m shared reindex` once: rows from before the index are not counted)"), file=stdout)
    return EXIT_OK


def _cmd_reindex(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO,
                 stderr: TextIO) -> int:
    from .store import ActivationStore

    count = ActivationStore.from_settings(settings).reindex()
    print(f"indexed {count} activation(s)", file=stdout)
    return EXIT_OK


def _list_row(notice_id: object, status: object, attempts: object, tenant_id: object, error: object) -> str:
    t = one_line
    return f"{t(notice_id):<24} {t(status):<16} {t(attempts):>8}  {t(tenant_id):<36}  {t(error)}".rstrip()


def _nothing_matched(args: argparse.Namespace, *, more: bool) -> str:
    filters = [f"{name}={value}" for name, value in (("status", args.status), ("tenant_id", args.tenant_id),
                                                     ("q", args.q)) if value]
    where = f" with {', '.join(filters)}" if filters else ""
    if more:
        return f"No activations{where} on this page; the next page may have some."
    if args.continuation:
        return f"No more activations{where}."
    return f"No activations match{where}." if filters else "No activations yet."


def _cmd_retry(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    from .queueing import ActivationQueue
    from .store import ActivationStore
    from .worker import RetryRefused, Worker

    worker = Worker(settings, store=ActivationStore.from_settings(settings),
                    queue=ActivationQueue.from_settings(settings), engine_factory=_no_engine)
    try:
        record = worker.retry(args.notice_id)
    except RetryRefused as exc:
        print(exc.message, file=stderr)
        return EXIT_INVALID if exc.status == 409 else EXIT_FAILED
    print(f"{record.notice_id}: queued again (series {record.series})", file=stdout)
    return EXIT_OK


def _cmd_consent_url(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO,
                     stderr: TextIO) -> int:
    from .consent import admin_consent_url

    if not settings.exo_client_id:
        print("EXO_CLIENT_ID is not set: the consent URL names the provisioning app", file=stderr)
        return EXIT_INVALID
    try:
        url = admin_consent_url(args.tenant, settings.exo_client_id, authority_host=settings.entra_authority_host,
                                allow_domain=True)
    except ValueError as exc:
        print(str(exc), file=stderr)
        return EXIT_INVALID
    print(url, file=stdout)
    if not GUID_PATTERN.fullmatch(args.tenant.strip()):
        print("note: a domain works only if it is verified in the customer's tenant; the tenant ID is the form "
              "Microsoft recommends", file=stderr)
    return EXIT_OK


def _cmd_drift(args: argparse.Namespace, settings: Settings, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    from .api import ActivationApi
    from .drift import DriftChecker, client_factory_from_settings
    from .queueing import ActivationQueue
    from .store import ActivationStore
    from .worker import Worker

    store = ActivationStore.from_settings(settings)
    worker = Worker(settings, store=store, queue=ActivationQueue.from_settings(settings), engine_factory=_no_engine)
    checker = DriftChecker(settings, store=store, worker=worker,
                           client_factory=client_factory_from_settings(settings))
    scope = {k: v for k, v in (("tenant_id", args.tenant_id), ("notice_id", args.notice_id)) if v}
    response = ActivationApi(store, lambda: worker, lambda: checker).drift(
        json.dumps(scope).encode(), requested_by="command line")
    if response.status != 202:
        print(response.body["error"]["message"], file=stderr)
        return EXIT_INVALID if response.status == 400 else EXIT_FAILED
    report = response.body
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2), file=stdout)
    else:
        t = one_line
        for check in _dicts(report.get("checks")):
            repair = f" (repair: {t(check['repair'])})" if check.get("repair") else ""
            detail = f": {t(check['detail'])}" if check.get("detail") else ""
            print(f"{t(check.get('notice_id'))}  {t(check.get('result'))}{repair}  tenant "
                  f"{t(check.get('tenant_id'))}{detail}", file=stdout)
            for difference in _dicts(check.get("differences")):
                print(f"  {_difference_line(difference)}", file=stdout)
        if "queued" in report:
            print(f"{report.get('queued')} tenant(s) queued for a drift check; the queue trigger checks each "
                  "(see `list --status drifted`)", file=stdout)
        else:
            print(f"{report.get('checked')} tenant(s) checked, {report.get('drifted')} drifted", file=stdout)
    errors = [c for c in _dicts(report.get("checks")) if c.get("result") == "error"]
    return EXIT_FAILED if errors else EXIT_OK


def _no_worker() -> Any:
    raise RuntimeError("this command only reads activations")


def _no_engine() -> Any:
    raise RuntimeError("retry only queues the activation; the Function App provisions it")
