"""The chaos suite's index check finds what it is there to find (a fake API, no services)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from chaos.scenarios import STATUSES, _index_mismatches


@dataclass
class Reply:
    status: int
    body: Any


class FakeApi:
    """Answers /summary, /activations?status= and /activations/{id} from two views of the truth:
    what the lists say (`listed`) and what each row says (`rows`)."""

    def __init__(self, listed: dict[str, list[str]], rows: dict[str, str], counts: dict[str, int] | None = None,
                 exact: bool = True) -> None:
        self.listed, self.rows, self.exact = listed, rows, exact
        self.counts = counts if counts is not None else {s: len(listed.get(s, [])) for s in STATUSES}

    def request(self, method: str, path: str, data: Any = None) -> Reply:
        if path == "/summary":
            return Reply(200, {"counts": self.counts, "total": sum(self.counts.values()), "exact": self.exact})
        if path.startswith("/activations?"):
            status = urllib.parse.parse_qs(path.split("?", 1)[1])["status"][0]
            return Reply(200, {"items": [{"notice_id": n, "status": status} for n in self.listed.get(status, [])],
                               "continuation": None})
        notice_id = urllib.parse.unquote(path.rsplit("/", 1)[1])
        return Reply(200, {"status": self.rows[notice_id]}) if notice_id in self.rows else Reply(404, None)


class FakeStack:
    def __init__(self, api: FakeApi) -> None:
        self._api = api

    def api(self) -> FakeApi:
        return self._api


def mismatches(api: FakeApi) -> list[str]:
    return _index_mismatches(FakeStack(api))[0]  # type: ignore[arg-type]


def test_agreeing_lists_summary_and_rows_pass() -> None:
    api = FakeApi({"failed": ["A"], "succeeded": ["B"]}, {"A": "failed", "B": "succeeded"})
    assert mismatches(api) == []


def test_a_row_listed_under_an_old_status_is_found() -> None:
    api = FakeApi({"running": ["A"]}, {"A": "succeeded"})
    assert mismatches(api) == ["A is listed as running, its row says succeeded"]


def test_counts_that_differ_from_the_rows_listed_are_found() -> None:
    api = FakeApi({"failed": ["A"]}, {"A": "failed"}, counts={**dict.fromkeys(STATUSES, 0), "failed": 2})
    assert "failed: 1 listed, the summary counts 2" in mismatches(api)


def test_a_notice_under_two_statuses_and_an_inexact_summary_are_found() -> None:
    api = FakeApi({"failed": ["A"], "queued": ["A"]}, {"A": "failed"}, exact=False)
    found = mismatches(api)
    assert "A is listed as queued and as failed" in found
    assert any(m.startswith("summary total") for m in found)
