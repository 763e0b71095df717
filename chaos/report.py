"""The suite's output (pure): one line per scenario, then the summary line CI greps for."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from .scenarios import Result

MAX_DETAILS = 5


def scenario_line(result: Result) -> str:
    recovery = (f" recovery median {statistics.median(result.recovery_s):.1f}s max {max(result.recovery_s):.1f}s"
                if result.recovery_s else "")
    crashes = f" crashes {result.crashes}" if result.crashes else ""
    verdict = "ok  " if result.ok else "FAIL"
    return (f"{verdict} {result.name:<22} notices {result.notices:>5}  lost {len(result.lost)}  "
            f"duplicates {result.duplicates}  problems {len(result.problems)}{crashes}{recovery}  "
            f"({result.elapsed_s:.0f}s)")


def details(result: Result) -> list[str]:
    lines = [f"     note: {note}" for note in result.notes]
    lines += [f"     lost: {item}" for item in result.lost[:MAX_DETAILS]]
    if len(result.lost) > MAX_DETAILS:
        lines.append(f"     lost: ... and {len(result.lost) - MAX_DETAILS} more")
    lines += [f"     problem: {item}" for item in result.problems[:MAX_DETAILS]]
    if len(result.problems) > MAX_DETAILS:
        lines.append(f"     problem: ... and {len(result.problems) - MAX_DETAILS} more")
    return lines


def summary(results: Sequence[Result]) -> str:
    return (f"chaos: {len(results)} scenarios, {sum(r.notices for r in results)} notices, "
            f"{sum(len(r.lost) for r in results)} lost, {sum(r.duplicates for r in results)} duplicate connectors, "
            f"{sum(r.crashes for r in results)} crashes injected")
