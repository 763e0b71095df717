"""`python -m chaos [--small] [...]`: run the reliability scenarios, print one line each and the summary.

Exit 0 when nothing was lost, no tenant got a duplicate connector and no scenario met a
problem; 1 otherwise; 2 when the stack could not be started.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from localrun.azurite import AzuriteError

from .report import details, scenario_line, summary
from .scenarios import FULL, SMALL, Result, all_scenarios, check_poison
from .stack import ChaosStack, RunnerSettings, StackError

# Product settings of the runner, by their app-setting names: back-off compressed from
# production's 30 s..1 h to seconds (as `make run` does), and MAX_ATTEMPTS 12 so that 30 %
# faults cannot plausibly exhaust the retries (see tests/e2e/test_scale.py).
PACING = {"RETRY_BASE_SECONDS": "0.5", "RETRY_MAX_SECONDS": "2", "MAX_ATTEMPTS": "12", "EXO_CALL_RETRIES": "2",
          "REPLICATION_WAIT_SECONDS": "20", "EXO_TIMEOUT_SECONDS": "20"}

FULL_BUDGET_S = 600.0
SMALL_BUDGET_S = 240.0
FUZZ_CHECK_RESERVE_S = 90.0  # list views, look-ups by id, Exchange state after the mutated notices
MIN_FUZZ_SEND_S = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="the CI size (a couple of minutes)")
    # Recovery is measured with the product's own lease and heartbeat and the host's 10-minute
    # visibility by default: a crashed run is taken over by its claim's watchdog message.
    parser.add_argument("--lease-seconds", type=float, default=0.0,
                        help="LEASE_SECONDS given to the runner (default 0: the product default)")
    parser.add_argument("--visibility-seconds", type=int, default=0,
                        help="visibility of a message being processed, in the runner (default 0: the "
                             "runner's, the Functions host's 10 minutes)")
    parser.add_argument("--product-defaults", action="store_true",
                        help="no lease or visibility override: measure recovery as deployed "
                             "(same as --lease-seconds 0 --visibility-seconds 0 --recovery-timeout 900)")
    parser.add_argument("--recovery-timeout", type=float, default=None,
                        help="seconds a notice may take to converge after a crash (default 120)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run (default 600 full, 240 small): the mutated notices "
                             "are sent only while it lasts, and the line says so when they are cut short")
    parser.add_argument("--fuzz-notices", type=int, default=None, help="mutated notices (full 10000, small 400)")
    parser.add_argument("--only", action="append", default=[], help="run only this scenario (repeatable)")
    parser.add_argument("--workdir", type=Path, default=None, help="Azurite's files and the runner's log "
                        "(default: a new temporary folder, removed when every scenario passed)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    size = SMALL if args.small else FULL
    lease, visibility, recovery = args.lease_seconds, args.visibility_seconds, args.recovery_timeout
    if args.product_defaults:
        lease, visibility, recovery = 0.0, 0, recovery or 900.0
    if recovery is not None:
        size = replace(size, recovery_timeout_s=recovery)
    if args.fuzz_notices is not None:
        size = replace(size, fuzz_notices=args.fuzz_notices)
    product = dict(PACING)
    if lease:
        product["LEASE_SECONDS"] = f"{lease:g}"
    runner = RunnerSettings(product, visibility or None)
    budget = args.budget or (SMALL_BUDGET_S if args.small else FULL_BUDGET_S)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    scenarios = [(n, s) for n, s in all_scenarios() if not args.only or n in args.only]
    print(f"chaos: {'small' if args.small else 'full'} size, {runner.describe()}, recovery bound "
          f"{size.recovery_timeout_s:.0f}s, work folder {workdir}", flush=True)
    results: list[Result] = []
    started = time.monotonic()
    try:
        with ChaosStack(workdir=workdir, runner_settings=runner) as stack:
            for name, scenario in scenarios:
                began = time.monotonic()
                if name == "mutated-notices":
                    # What is left of the budget, less the time its checks take afterwards.
                    left = budget - (began - started) - size.fuzz_settle_s - FUZZ_CHECK_RESERVE_S
                    size = replace(size, fuzz_send_budget_s=max(MIN_FUZZ_SEND_S, left))
                try:
                    result = scenario(stack, size)
                except Exception as exc:
                    result = Result(name, problems=[f"the scenario raised {type(exc).__name__}: {exc}"])
                    traceback.print_exc()
                    if not stack.runner_alive():
                        stack.start_runner()
                check_poison(result, stack)
                result.elapsed_s = time.monotonic() - began
                results.append(result)
                print(scenario_line(result), flush=True)
                for line in details(result):
                    print(line, flush=True)
    except (StackError, AzuriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok = all(r.ok for r in results)
    if ok and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
        where = "work folder removed"
    else:
        where = f"runner log {workdir / 'functions.log'}"
    print(f"chaos: finished in {time.monotonic() - started:.0f}s; {where}")
    print(summary(results), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
