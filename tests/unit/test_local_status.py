"""The live status table of `make run` (localrun/status.py): when it stops waiting."""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from localrun.status import StatusBoard, watch
from shared.outcome import Status


def _watch(statuses: Mapping[str, Status]) -> bool:
    docs = [{"notice_id": n, "status": s.value} for n, s in statuses.items()]
    board = StatusBoard(list(statuses), io.StringIO(), live=False)
    _, done = watch(lambda: docs, board, timeout=0, stop=threading.Event(), interval=0)
    return done


@pytest.mark.parametrize("status", list(Status))
def test_the_table_stops_waiting_exactly_at_the_products_final_statuses(status: Status) -> None:
    # One definition of "final" (outcome.FINAL_STATUSES): a drifted activation is as final as a
    # failed one, and a queued or running one is still on its way.
    assert _watch({"ACT-1": Status.SUCCEEDED, "ACT-2": status}) is status.final


def test_a_notice_not_listed_yet_keeps_the_table_waiting() -> None:
    docs: list[dict[str, Any]] = [{"notice_id": "ACT-1", "status": "succeeded"}]
    board = StatusBoard(["ACT-1", "ACT-2"], io.StringIO(), live=False)
    assert watch(lambda: docs, board, timeout=0, stop=threading.Event(), interval=0)[1] is False
