"""The objective: SLO misses cost more for important tasks, cheaper is better, loader errors are named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cluster.config import ConfigError
from scheduler.objective import DEFAULT_OBJECTIVE, Objective, load_objective

OBJ = Objective()


def test_shipped_weights_load() -> None:
    obj = load_objective()
    assert obj == load_objective(DEFAULT_OBJECTIVE)
    assert obj.latency > 0 and obj.slo_miss > 0 and obj.cost > 0 and obj.cost_ref > 0


@pytest.mark.parametrize("obj", [OBJ, load_objective()])
def test_missing_the_slo_costs_more_for_higher_priority(obj: Objective) -> None:
    def s(prio: int) -> float:
        return obj.score(latency_ms=1500, slo_ms=1000, priority=prio, cost=0.01, cost_sensitivity=5)

    assert s(10) > s(5) > s(1)
    # meeting the SLO: priority does not matter
    met = [obj.score(500, 1000, p, 0.01, 5) for p in (1, 5, 10)]
    assert met[0] == met[1] == met[2]


def test_missing_the_slo_is_a_step_not_just_a_slope() -> None:
    just_met = OBJ.score(1000, 1000, 5, 0.0, 5)
    just_missed = OBJ.score(1001, 1000, 5, 0.0, 5)
    assert just_missed - just_met > 1.0  # the miss penalty, not the 0.001 latency change


def test_cheaper_is_better_all_else_equal() -> None:
    assert OBJ.score(200, 1000, 5, 0.01, 5) < OBJ.score(200, 1000, 5, 0.02, 5)
    # and more so for cost-sensitive tasks
    gap = lambda cs: OBJ.score(200, 1000, 5, 0.02, cs) - OBJ.score(200, 1000, 5, 0.01, cs)  # noqa: E731
    assert gap(9) > gap(5) > gap(1) > 0


def test_faster_is_better() -> None:
    assert OBJ.score(100, 1000, 5, 0.01, 5) < OBJ.score(900, 1000, 5, 0.01, 5)


def test_waiting_past_the_knee_keeps_costing_but_slowly() -> None:
    """Starving a task is never free (no cap), yet one lost task cannot swamp a run (log growth)."""
    s = lambda ms: OBJ.score(ms, 1000, 5, 0.0, 5) - OBJ.score(1001, 1000, 5, 0.0, 5)  # noqa: E731  latency term - 1.001
    at_knee, x100, days = s(10_000), s(100_000), s(866 * 86_400_000)
    assert at_knee == pytest.approx(10 - 1.001)
    assert x100 == pytest.approx(10 * (1 + np.log(10)) - 1.001)  # 33.0: more than 10x's 10, far less than 100
    assert at_knee < x100 < days < 300  # 866 days of waiting on a 1 s SLO: about 237
    # continuous with a continuous slope at the knee: no point where more waiting turns cheaper
    eps = 1e-3
    assert s(10_000 + eps) - s(10_000) == pytest.approx(s(10_000) - s(10_000 - eps), rel=1e-3)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(min_value=0.0, max_value=1e12), b=st.floats(min_value=0.0, max_value=1e12))
def test_latency_term_is_monotone(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert OBJ.score(lo, 1000, 5, 0.0, 5) <= OBJ.score(hi, 1000, 5, 0.0, 5)


def test_an_unfinished_task_is_a_miss_charged_its_waiting_so_far() -> None:
    # waited less than its SLO when the run ended: still a miss
    assert OBJ.unfinished_score(500, 1000, 5, 0.0, 5) == pytest.approx(0.5 + OBJ.slo_miss)
    assert OBJ.unfinished_score(50_000, 1000, 5, 0.0, 5) == OBJ.score(50_000, 1000, 5, 0.0, 5)


def test_weights_change_the_score() -> None:
    no_cost = Objective(cost=0.0)
    assert no_cost.score(200, 1000, 5, 0.01, 5) == no_cost.score(200, 1000, 5, 10.0, 5)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "objective.yaml"
    p.write_text(text)
    return p


def test_partial_file_uses_defaults(tmp_path: Path) -> None:
    assert load_objective(write(tmp_path, "slo_miss: 5\n")) == Objective(slo_miss=5.0)


@pytest.mark.parametrize("text, field", [
    ("latncy: 1\n", "latncy"),
    ("latency: -1\n", "latency"),
    ("cost: fast\n", "cost"),
    ("slo_miss: true\n", "slo_miss"),
    ("cost_ref: 0\n", "cost_ref"),
    ("latency_knee: 0\n", "latency_knee"),
    ("latency: 1\nlatency_weight: 2\n", "latency_weight"),
    ("- 1\n- 2\n", "<file>"),
    ("latency: [1\n", "<file>"),
])
def test_load_objective_errors_name_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_objective(p)
    assert (info.value.file, info.value.field) == (str(p), field)


def test_load_objective_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_objective(tmp_path / "none.yaml")
    assert info.value.field == "<file>" and info.value.file == str(tmp_path / "none.yaml")
