"""The core benchmark's correctness checks: a replay of a finished activation plans no write.

The replay rows are the simulator's (`exosim.state`, in memory): these tests hold the bench to
that, and show that its checks fail when a replay would write.
"""

from __future__ import annotations

from dataclasses import replace

from bench import core
from bench.harness import iter_notice_texts, make_tenants
from shared.connectors import ConnectorSpec, desired_connectors
from shared.notice import parse_notice
from shared.plan import make_plan
from shared.settings import Settings

SETTINGS = Settings()


def _specs(count: int) -> list[list[ConnectorSpec]]:
    texts = iter_notice_texts(count, make_tenants(4, seed=9))
    return [desired_connectors(parse_notice(text, SETTINGS), SETTINGS) for text in texts]


def test_a_replay_against_what_a_fresh_run_leaves_in_the_simulator_plans_no_write() -> None:
    result = core.throughput(SETTINGS, notices=30, repeats=1)
    assert result.replays_without_writes == 30
    assert result.synthetic_mismatches == 0
    assert core.failed_checks(result) == []


def test_the_deployed_rows_carry_the_validation_a_fresh_run_stamps() -> None:
    for specs in _specs(3):  # both services, then each one alone
        for spec, row in zip(specs, core.as_deployed(specs, settings=SETTINGS), strict=True):
            assert row.name == spec.name
            assert row.is_validated
            assert row.last_validated_at == core.DEPLOYED_AT
            assert row.validation_recipients == spec.validation_recipients


def test_a_replay_that_would_write_is_a_failed_check() -> None:
    # Rows flagged validated without the time the product stamps (what the bench once built)
    # are not a validation the planner keeps: every replay against them plans a write.
    unstamped = [[replace(c, last_validation_timestamp=None) for c in core.as_deployed(specs, settings=SETTINGS)]
                 for specs in _specs(6)]
    texts = list(iter_notice_texts(6, make_tenants(4, seed=9)))
    _, quiet = core._timed(texts, unstamped, SETTINGS)
    assert quiet == 0
    result = core.CoreResult(notices=6, fresh_per_s=1.0, replay_per_s=1.0, replay_over_fresh_time=1.0,
                             replays_without_writes=quiet, synthetic_mismatches=0)
    assert core.failed_checks(result) == ["core: 6 replay plan(s) wanted a write"]


def test_streamed_rows_that_drift_from_the_simulators_are_a_failed_check() -> None:
    specs = _specs(1)[0]
    deployed = core.as_deployed(specs, settings=SETTINGS)
    assert core.same_rows(core.as_created(specs), deployed)
    assert not core.same_rows([replace(c, validation_recipients=()) for c in core.as_created(specs)], deployed)
    result = core.CoreResult(notices=1, fresh_per_s=1.0, replay_per_s=1.0, replay_over_fresh_time=1.0,
                             replays_without_writes=1, synthetic_mismatches=1)
    assert core.failed_checks(result)[0].startswith("core: 1 notice(s) whose streamed rows differ")


def test_the_memory_stream_plans_replays_without_writes_too() -> None:
    own = core.own_names(SETTINGS)
    assert all(not make_plan(specs, core.as_created(specs), own_names=own).writes_needed for specs in _specs(9))
