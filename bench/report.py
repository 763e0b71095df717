"""The benchmark's targets, and its table and JSON report.

Targets are ratios of two figures measured in the same run, never absolute times: a shared
machine can be twice as slow this minute as the last, but both sides of a ratio see roughly
the same machine. A missed target is reported, not fatal; only a failed correctness check
(a notice that did not succeed, a replay that wrote, a duplicate connector) fails the run.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """`value <op> limit`, e.g. replay calls / fresh calls <= 0.25."""

    op: str
    limit: float

    def met(self, value: float) -> bool:
        compare: dict[str, Callable[[float, float], bool]] = {
            "<=": operator.le, ">=": operator.ge, "==": operator.eq,
        }
        return compare[self.op](value, self.limit)

    def __str__(self) -> str:
        return f"{self.op} {self.limit:g}"


# The documented targets (docs/benchmarks.md explains each).
TARGETS: dict[str, Target] = {
    "core.replay_over_fresh_time": Target("<=", 1.5),
    "core.memory_peak_10k_over_1k": Target("<=", 1.5),
    "engine.replay_over_fresh_calls": Target("<=", 0.25),
    "engine.replay_over_fresh_time": Target("<=", 0.5),
    "engine.token_requests_per_tenant": Target("==", 1),
    "worker.duplicate_over_single_calls": Target("<=", 1.0),
    "worker.faults_over_healthy_time": Target("<=", 3.0),
    "worker.faults_over_healthy_calls": Target("<=", 2.0),
    "worker.memory_peak_4x_over_1x": Target("<=", 1.5),
    # entities read per page of 50 over the page size: a page of 50 reads at most 55
    "listing.status_page_over_page_size": Target("<=", 1.1),
    "listing.status_deep_page_over_page_size": Target("<=", 1.1),
    "listing.rare_status_page_over_page_size": Target("<=", 1.1),
    "listing.all_page_over_page_size": Target("<=", 1.1),
    "listing.tenant_page_reads_over_items": Target("<=", 2.2),  # a thin tenant row, then the activation row
    "listing.summary_reads": Target("<=", 9),
    "listing.write_transactions": Target("==", 1),
}


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, with its target when it has one."""

    key: str
    label: str
    value: float
    unit: str = ""
    digits: int = 2

    @property
    def target(self) -> Target | None:
        return TARGETS.get(self.key)

    @property
    def verdict(self) -> str:
        target = self.target
        if target is None:
            return ""
        return "met" if target.met(self.value) else "MISSED"

    def to_dict(self) -> dict[str, Any]:
        target = self.target
        return {"key": self.key, "label": self.label, "value": round(self.value, 4), "unit": self.unit,
                "target": str(target) if target else None, "met": target.met(self.value) if target else None}


def table(rows: Sequence[Row]) -> str:
    """A plain-text table that reads well in a terminal and in a CI log."""
    cells = [(r.label, f"{r.value:,.{r.digits}f}{(' ' + r.unit) if r.unit else ''}",
              str(r.target) if r.target else "", r.verdict) for r in rows]
    header = ("figure", "measured", "target", "")
    widths = [max(len(c[i]) for c in [header, *cells]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join((c[0].ljust(widths[0]), c[1].rjust(widths[1]), c[2].ljust(widths[2]), c[3])).rstrip()
              for c in cells]
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
