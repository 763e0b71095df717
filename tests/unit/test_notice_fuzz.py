"""A short fuzzing run of the notice parser with every `make test`; `make fuzz` runs the long one.

See tests/fuzz.py for what is generated and checked. The budget here keeps the module to a few
seconds on two shared cores; a finding here or in `make fuzz` is a bug in shared/notice.py.
"""

from __future__ import annotations

import pytest

from shared.notice import ActivationNotice, NoticeError
from tests.fuzz import STRATEGIES, Campaign, check, main
from tests.hostile import SAMPLE, hostile_notices


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_short_fuzzing_run_finds_nothing(name: str) -> None:
    campaign = Campaign(examples=150)
    campaign.run(name, STRATEGIES[name])
    assert campaign.cases[name] >= 100  # the cases really ran


def test_the_checks_accept_a_valid_notice_and_each_hostile_one_as_an_error() -> None:
    assert isinstance(check(SAMPLE), ActivationNotice)
    for case in hostile_notices():
        assert isinstance(check(case.body), NoticeError), case.name


def test_the_campaign_reports_its_cases_time_and_findings() -> None:
    lines: list[str] = []
    assert main(["--examples", "30"], out=lines.append) == 0
    assert lines[-1].startswith("30 cases in ") and lines[-1].endswith("findings: none")
