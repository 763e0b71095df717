"""The pure parts of `make chaos`: the mutated notices it sends and the lines it prints."""

from __future__ import annotations

import json
import random
from collections import Counter

from bench.harness import Tenant, make_tenant
from chaos.mutate import mutants
from chaos.report import scenario_line, summary
from chaos.scenarios import Result
from shared.notice import NOTICE_ID_PATTERN


def _tenants() -> list[Tenant]:
    rng = random.Random(3)
    return [make_tenant(i, rng, "U") for i in range(4)]


def test_mutants_are_reproducible_and_cover_every_mutation() -> None:
    first = list(mutants(200, _tenants(), seed=5))
    again = list(mutants(200, _tenants(), seed=5))
    assert first == again
    kinds = Counter(m.kind for m in first)
    assert {"drop_key", "duplicate_key", "wrong_type", "odd_unicode", "huge_number", "odd_notice_id",
            "calendar_edge", "not_json", "invalid_utf8", "valid"} <= set(kinds)


def test_a_mutant_names_only_an_id_the_schema_accepts() -> None:
    for mutant in mutants(400, _tenants(), seed=9):
        if mutant.notice_id is not None:
            assert NOTICE_ID_PATTERN.fullmatch(mutant.notice_id), mutant


def test_the_odd_texts_reach_the_wire_as_json_escapes() -> None:
    bodies = [m.body for m in mutants(400, _tenants(), seed=1) if m.kind == "odd_unicode"]
    assert any("\\ud800" in b for b in bodies if isinstance(b, str))  # a lone surrogate, escaped
    assert all(isinstance(b, str) and b.isascii() for b in bodies)


def test_valid_mutants_are_valid_json_with_their_id() -> None:
    for mutant in mutants(170, _tenants(), seed=2):
        if mutant.kind == "valid":
            assert isinstance(mutant.body, str)
            assert json.loads(mutant.body)["notice_id"] == mutant.notice_id


def test_the_summary_line_has_the_exact_form_ci_reads() -> None:
    results = [Result("a", notices=200, crashes=3, recovery_s=[1.0, 3.0]),
               Result("b", notices=10, lost=["x"], duplicates=2)]
    assert summary(results) == "chaos: 2 scenarios, 210 notices, 1 lost, 2 duplicate connectors, 3 crashes injected"
    assert "recovery median 2.0s max 3.0s" in scenario_line(results[0])
    assert scenario_line(results[0]).startswith("ok ")
    assert scenario_line(results[1]).startswith("FAIL")
