"""`python -m localrun` (what `make run` runs): the product, end to end, on this machine.

FOR LOCAL USE ONLY. Azure Functions Core Tools cannot be installed here, so this runner stands
in for the Functions host: it serves the HTTP functions of `function_app.py` and drives its
queue triggers with host.json's settings. In Azure, and locally with Core Tools
(`func start`), the same `function_app.py` runs unchanged and none of this is used.

From a fresh clone it starts Azurite (in memory), the bundled Exchange Online + Entra ID
simulator and a DNS server for SPF (or uses the Exchange endpoint in EXO_ADMIN_API_URL and
ENTRA_AUTHORITY_HOST when both are set, with the EXO_* credentials given), submits the four
notices in samples/ (three on the queue as the contract system sends them, one POSTed as an
operator would), shows their status live until each is final, then keeps serving the API
until Ctrl-C. While it runs, `.run/local.env` holds the stack's settings, so `python -m shared
list` in another terminal (from the same directory) works with nothing configured.

    python -m localrun                      # serve on 127.0.0.1:7071 (LOCAL_PORT) until Ctrl-C
    python -m localrun --once               # exit when the samples are final: 0 iff all succeeded
    python -m localrun --port 0 --timeout 120
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from .azurite import PROJECT_DIR, AzuriteError
from .hostconfig import HostConfigError
from .samples import Sample, load_samples, prepare_tenants
from .stack import DEFAULT_PORT, LocalStack
from .status import ApiClient, StatusBoard, watch

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
HTTP_SAMPLE = "mailgates-only.json"  # the sample an operator POSTs; the others come on the queue
THROTTLED_SAMPLE = "both-cs36502-mgs.json"  # the tenant Exchange throttles, so a retry shows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m localrun",
        description="Run the Function App locally (Azurite, Exchange simulator, Functions runner) and "
                    "provision the sample notices. For local use only.",
    )
    parser.add_argument("--once", action="store_true",
                        help="exit when every sample is final: 0 if all succeeded, else 1")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds to wait for the samples to become final (default 180)")
    parser.add_argument("--port", type=int, default=None,
                        help=f"HTTP port on 127.0.0.1 (default LOCAL_PORT or {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--run-dir", type=Path, default=Path(".run"),
                        help="working files: Azurite, simulator CA, functions.log (default .run)")
    parser.add_argument("--samples", type=Path, default=PROJECT_DIR / "samples",
                        help="folder of sample notices (*.json)")
    parser.add_argument("--no-samples", action="store_true", help="only start the stack and serve")
    return parser


def _port(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.port is not None:
        return int(args.port)
    text = environ.get("LOCAL_PORT", "").strip()
    if not text:
        return DEFAULT_PORT
    try:
        return int(text)
    except ValueError:
        raise SystemExit(f"error: LOCAL_PORT={text!r} is not a port number") from None


def _log_to(path: Path) -> None:
    """The functions' and host's log goes to a file: the terminal belongs to the status table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("azure.core.pipeline.policies.http_logging_policy", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _banner(out: TextIO, stack: LocalStack, log_path: Path) -> None:
    """Where everything is, and commands to paste; the key is shown once, here, for the operator."""
    host = stack.running_host
    api = host.api_url
    header = '-H "x-functions-key: $FUNCTION_KEY"'
    lines = [
        "",
        "Local Functions runner: for local use only. In Azure, and with Core Tools (`func start`),",
        "the same function_app.py runs unchanged.",
        f"  API        {api}",
        f"  Exchange   {stack.simulator.url} (simulator)" if stack.simulator is not None
        else f"  Exchange   {os.environ.get('EXO_ADMIN_API_URL')} (EXO_ADMIN_API_URL)",
    ]
    if stack.azurite is not None:
        lines.append(f"  Storage    Azurite in memory: queues :{stack.azurite.queue_port}, "
                     f"tables :{stack.azurite.table_port}")
    lines += [
        f"  Settings   {stack.local_env_path} (read by `python -m shared ...`; removed on stop)",
        f"  Log        {log_path}",
        "  Function key (new each start; send it as the x-functions-key header or ?code=):",
        f"    export FUNCTION_KEY='{host.function_key}'",
        "  Status page (open in a browser; it keeps the key for the tab, so reload works, and drops it from the URL):",
        f"    {api}/status#code={host.function_key}",
        "Try:",
        "  .venv/bin/python -m shared list",
        f"  curl -s {api}/health",
        f"  curl -s {header} '{api}/activations?top=20'",
        f"  curl -s {header} '{api}/activations?status=succeeded'",
        f"  curl -s {header} {api}/activations/ACT-2026-0001",
        f"  curl -s -X POST {header} --data-binary @samples/{HTTP_SAMPLE} {api}/activations",
        f"  curl -s -X POST {header} {api}/activations/ACT-2026-0001/retry",
        "",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def submit_samples(stack: LocalStack, samples: Sequence[Sample], out: TextIO) -> bool:
    """Queue the samples as the contract system does, and POST one as an operator does."""
    from shared import runtime

    host = stack.running_host
    client = ApiClient(host.api_url, host.function_key)
    ok = True
    for sample in samples:
        if sample.path.name == HTTP_SAMPLE:
            reply = client.request("POST", "/activations", sample.text.encode("utf-8"))
            location = reply.headers.get("Location") or reply.headers.get("location")
            if reply.status == 202 and location:
                print(f"POST  {sample.notice_id:<14} -> {reply.status} Location: {location}", file=out)
            else:
                print(f"POST  {sample.notice_id:<14} -> {reply.status} (expected 202 with Location): "
                      f"{reply.body!r}", file=out)
                ok = False
        else:
            runtime.queue().send_notice(sample.text)
            print(f"QUEUE {sample.notice_id:<14} -> {runtime.settings().activation_queue} "
                  f"({sample.path.name})", file=out)
    return ok


def run(args: argparse.Namespace, stop: threading.Event, out: TextIO = sys.stdout) -> int:
    """Start the stack, provision the samples, show their outcome, serve; always stop what was started."""
    from shared import runtime
    from shared.settings import SettingsError

    log_path = args.run_dir / "functions.log"
    _log_to(log_path)
    try:
        samples: list[Sample] = [] if args.no_samples else load_samples(args.samples)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: cannot read the sample notices in {args.samples}: {exc}", file=out)
        return EXIT_FAILED
    stack = LocalStack(run_dir=args.run_dir, port=_port(args, os.environ))
    print("Starting Azurite" + (", the Exchange simulator and DNS" if stack.use_simulator else "") + " ...",
          file=out, flush=True)
    try:
        try:
            stack.start()
        except OSError as exc:
            print(f"error: cannot start the local stack: {exc} (is the port in use? try --port 0)", file=out)
            return EXIT_FAILED
        if stop.is_set():
            return EXIT_INTERRUPTED
        if not stack.use_simulator and samples:
            print("Note: EXO_ADMIN_API_URL and ENTRA_AUTHORITY_HOST are set, so the samples go to that Exchange "
                  "endpoint; their tenant ids are fictitious unless you edit them.", file=out)
        if stack.simulator is not None and stack.dns is not None and samples:
            throttled = next((s for s in samples if s.path.name == THROTTLED_SAMPLE), None)
            # One more throttled call than the engine retries in process, so the throttle
            # outlasts the run and the operator sees retry_scheduled, then succeeded.
            prepare_tenants(stack.simulator, stack.dns, samples,
                            required_include=runtime.settings().spf_required_include,
                            throttled=throttled, throttle_count=runtime.settings().exo_call_retries + 1)
        _banner(out, stack, log_path)
        all_succeeded = True
        if samples:
            submitted = submit_samples(stack, samples, out)
            host = stack.running_host
            client = ApiClient(host.api_url, host.function_key)
            board = StatusBoard([s.notice_id for s in samples], out)
            print("", file=out)
            docs, done = watch(client.list_activations, board, timeout=args.timeout, stop=stop,
                               on_error=lambda exc: board.note(f"status look-up failed: {exc}"))
            board.final(docs)
            all_succeeded = submitted and done and all(
                docs.get(s.notice_id, {}).get("status") == "succeeded" for s in samples)
            if stop.is_set():
                return EXIT_INTERRUPTED
            if not done:
                print(f"Not every sample became final within {args.timeout:.0f}s.", file=out)
            else:
                print("All samples succeeded." if all_succeeded else "Some samples did not succeed; "
                      f"see `curl {host.api_url}/activations/<notice_id>` and {log_path}.", file=out)
        if args.once:
            return EXIT_OK if all_succeeded else EXIT_FAILED
        print(f"\nServing {stack.running_host.api_url} until Ctrl-C.", file=out, flush=True)
        stop.wait()
        return EXIT_OK
    except (AzuriteError, HostConfigError, SettingsError) as exc:
        print(f"error: {exc}", file=out)
        return EXIT_FAILED
    finally:
        print("Stopping ...", file=out, flush=True)
        stack.stop()
        print("Stopped.", file=out, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Ctrl-C and SIGTERM ask for a clean stop, so Azurite and the servers never outlive the run."""
    args = _parser().parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        return run(args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    # `function_app` lives at the project root, which is not on sys.path when run from elsewhere.
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    sys.exit(main())
