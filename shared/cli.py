"""`python -m shared …`: the operator's command line.

Exit codes are part of the interface (scripts branch on them): 0 success, 2 invalid notice or
usage, 3 needs attention, 4 failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .connectors import desired_connectors
from .notice import ActivationNotice, NoticeError, parse_notice
from .plan import make_plan, operations
from .render import plan_json, plan_powershell, plan_text
from .settings import Settings, SettingsError

if TYPE_CHECKING:
    from .outcome import Event, Outcome

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_NEEDS_ATTENTION = 3
EXIT_FAILED = 4


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=stderr)
        return EXIT_INVALID
    handler = args.handler
    return int(handler(args, settings, stdin, stdout, stderr))


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
    return parser


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
    specs = desired_connectors(notice, settings)
    ops = operations(make_plan(specs, []), now=args.at)
    if args.format == "json":
        stdout.write(plan_json(notice, specs, ops) + "\n")
    elif args.format == "powershell":
        stdout.write(plan_powershell(notice, specs))
    else:
        stdout.write(plan_text(notice, specs, ops))
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
        print(f"  {connector.name}: {connector.action}, validation {connector.validation.value}", file=stdout)
    for warning in outcome.warnings:
        print(f"  warning {warning.get('code')}: {warning.get('message')}", file=stdout)
    if outcome.error:
        print(f"  error {outcome.error['code']}: {outcome.error['message']}", file=stdout)
        print(f"  hint: {outcome.error['hint_en']}", file=stdout)
        print(f"  対処: {outcome.error['hint_ja']}", file=stdout)
