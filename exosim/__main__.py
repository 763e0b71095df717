"""`python -m exosim`: run the simulator until SIGINT or SIGTERM.

Prints one ready line once it accepts connections, so a script (`make run`, a benchmark) can
wait for that line and read the URL and the CA path from it:

    exosim listening on https://127.0.0.1:8443 ca=/tmp/exosim-x/ca.pem client_id=… client_secret=…
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from exosim.entra import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from exosim.simulator import Simulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exosim",
        description="Local Exchange Online + Entra ID simulator (HTTPS on loopback, throw-away CA).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8443, help="port; 0 picks a free one (default 8443)")
    parser.add_argument(
        "--state-dir",
        default=None,
        help="where ca.pem and exosim.json are written (default: a temporary directory removed at exit)",
    )
    parser.add_argument("--page-size", type=int, default=1000, help="rows per InvokeCommand page (default 1000)")
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="client id of the registered app")
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET, help="its client secret")
    parser.add_argument(
        "--no-auto-create",
        action="store_true",
        help="unknown tenants are 'not found' (AADSTS90002) until configured through the control API",
    )
    parser.add_argument("--verbose", action="store_true", help="print an access log on stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    simulator = Simulator(
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        page_size=args.page_size,
        auto_create_tenants=not args.no_auto_create,
        client_id=args.client_id,
        client_secret=args.client_secret,
        verbose=args.verbose,
    )
    with simulator:
        print(
            f"exosim listening on {simulator.url} ca={simulator.ca_file} "
            f"client_id={simulator.client_id} client_secret={simulator.client_secret}",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    print("exosim stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
