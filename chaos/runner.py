"""`python -m chaos.runner`: the local Functions runner as a process of its own, for the suite to kill.

`make run` starts Azurite and the simulator inside the runner's process; a crash test needs
the opposite: storage and Exchange that outlive the worker. This entry point serves
`function_app.py` with `localrun.host.LocalFunctionsHost` (the same host `make run` uses)
against the storage and Exchange named in its environment, on a fixed port and function key
so that a restarted runner answers at the same address, and writes `--ready-file` once it
serves. It stops on SIGTERM; the suite ends it with SIGKILL.

One harness knob, not a product setting: `CHAOS_QUEUE_VISIBILITY_SECONDS` replaces the
runner's 10-minute visibility of a message being processed (the Functions host's fixed
value), so that a killed runner's message comes back in seconds rather than minutes. The
suite says in its output whether it was set.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from localrun import queuepump
from localrun.azurite import PROJECT_DIR

VISIBILITY_VARIABLE = "CHAOS_QUEUE_VISIBILITY_SECONDS"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    parser.add_argument("--ready-file", type=Path, required=True, help="written once the host serves")
    parser.add_argument("--log-file", type=Path, required=True, help="the functions' and host's log")
    return parser


def _apply_visibility(environ: dict[str, str]) -> None:
    text = environ.get(VISIBILITY_VARIABLE, "").strip()
    if not text:
        return
    seconds = int(float(text))
    if seconds < 2:
        raise SystemExit(f"error: {VISIBILITY_VARIABLE}={text!r} must be at least 2 seconds")
    queuepump.PROCESSING_VISIBILITY_SECONDS = seconds
    queuepump.RENEW_EVERY_SECONDS = seconds / 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(filename=args.log_file, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s")
    for noisy in ("azure.core.pipeline.policies.http_logging_policy", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    environ = dict(os.environ)
    _apply_visibility(environ)
    # The key comes through the environment, not argv, so it is not in the process list.
    key = environ.pop("CHAOS_FUNCTION_KEY", "")
    if not key:
        raise SystemExit("error: CHAOS_FUNCTION_KEY is not set")
    if str(PROJECT_DIR) not in sys.path:
        sys.path.insert(0, str(PROJECT_DIR))
    import function_app
    from localrun.host import LocalFunctionsHost
    from shared import runtime

    runtime.store().ensure_tables()
    runtime.queue().ensure_queues()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host = LocalFunctionsHost(function_app.app, host_json=PROJECT_DIR / "host.json", environ=environ,
                              port=args.port, function_key=key, drain_timeout=10.0).start()
    try:
        args.ready_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
        stop.wait()
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
