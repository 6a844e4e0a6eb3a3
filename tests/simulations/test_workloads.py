"""Synthetic workload generator: shipped mixes, determinism, Poisson rate, mix, config errors."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.config import ConfigError
from scheduler.task import make_task
from simulations.workloads import WORKLOADS_DIR, generate, load_workload

MIXED = WORKLOADS_DIR / "mixed.yaml"
MIXED_KINDS = {"fraud_scoring", "iot_alerts", "medical_imaging", "llm_inference",
               "route_optimisation", "batch_etl", "fine_tuning"}

SCENARIO = """
  - kind: scoring
    weight: 3
    priority: 9
    slo_ms: 300
    cpus: 0.5
    work_s: {dist: constant, mean: 0.02}
  - kind: imaging
    weight: 1
    priority: 7
    slo_ms: 3000
    cpus: 2
    memory_gb: 8
    gpu: {fraction: 0.25}
    work_s: {dist: uniform, low: 0.5, high: 1.5}
"""


def write(tmp_path: Path, text: str, name: str = "w.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def small_spec(tmp_path: Path, extra: str = "", scenarios: str = SCENARIO):
    return load_workload(write(tmp_path, f"name: t\nduration_s: 100\nrate_per_s: 10\n{extra}"
                                         f"scenarios:{scenarios}"))


# ---------------------------------------------------------------- shipped files


@pytest.mark.parametrize("name", ["mixed", "high_load", "gpu_heavy"])
def test_shipped_workloads_load_and_generate(name: str) -> None:
    spec = load_workload(WORKLOADS_DIR / f"{name}.yaml")
    tasks = generate(spec, 0)
    assert spec.name == name
    assert 60 <= spec.duration_s <= 900
    assert len(tasks) > 200
    assert {t.kind for t in tasks} <= {s.kind for s in spec.scenarios}


def test_mixed_has_the_user_scenarios() -> None:
    spec = load_workload(MIXED)
    by_kind = {s.kind: s for s in spec.scenarios}
    assert set(by_kind) == MIXED_KINDS
    fraud = by_kind["fraud_scoring"]
    assert (fraud.priority, fraud.slo_ms, fraud.gpu_milli, fraud.gpu_count) == (9, 300, 0, 0)
    assert fraud.work.expected < 0.1
    assert by_kind["llm_inference"].gpu_milli == 500
    assert by_kind["medical_imaging"].gpu_milli == 250
    assert by_kind["fine_tuning"].gpu_count == 1
    assert by_kind["batch_etl"].cost_sensitivity == 9
    assert by_kind["batch_etl"].slo_ms == 3_600_000


def test_high_load_is_mixed_at_two_to_three_times_the_rate() -> None:
    mixed = load_workload(MIXED)
    high = load_workload(WORKLOADS_DIR / "high_load.yaml")
    assert high.scenarios == mixed.scenarios
    assert 2.0 <= high.effective_rate / mixed.effective_rate <= 3.0


def test_gpu_heavy_asks_for_more_gpu_than_mixed() -> None:
    def gpu_share(spec) -> float:
        w = spec.weights()
        return sum(p for s, p in zip(spec.scenarios, w) if s.gpu_milli or s.gpu_count or s.mig_profile)

    heavy = load_workload(WORKLOADS_DIR / "gpu_heavy.yaml")
    assert gpu_share(heavy) > gpu_share(load_workload(MIXED)) + 0.2
    assert any(s.mig_profile for s in heavy.scenarios)


# ---------------------------------------------------------------- generation


def test_same_seed_same_tasks_other_seed_other_tasks() -> None:
    spec = load_workload(MIXED)
    a, b, c = generate(spec, 11), generate(spec, 11), generate(spec, 12)
    assert a == b
    assert [t.arrival for t in a] != [t.arrival for t in c]


def test_default_seed_comes_from_the_file() -> None:
    spec = load_workload(MIXED)
    assert generate(spec) == generate(spec, spec.seed)


def test_arrivals_sorted_inside_the_window_and_ids_unique() -> None:
    spec = load_workload(MIXED)
    tasks = generate(spec, 3)
    arrivals = [t.arrival for t in tasks]
    assert arrivals == sorted(arrivals)
    assert 0 <= arrivals[0] and arrivals[-1] < spec.duration_s
    assert len({t.id for t in tasks}) == len(tasks)
    for n, t in enumerate(tasks):
        assert t.id == f"{t.kind}-{n}"


@pytest.mark.parametrize("load_factor", [0.5, 1.0, 2.5])
def test_arrival_rate_matches_rate_times_load_factor(load_factor: float) -> None:
    spec = load_workload(MIXED)
    expected = spec.rate_per_s * load_factor * spec.duration_s
    counts = [len(generate(spec, seed, load_factor=load_factor)) for seed in range(5)]
    # Poisson: the mean of 5 runs is within 4 standard errors of rate * duration.
    assert abs(np.mean(counts) - expected) < 4 * math.sqrt(expected / 5)


def test_inter_arrival_gaps_are_exponential() -> None:
    spec = load_workload(MIXED)
    tasks = generate(spec, 1, load_factor=20)
    gaps = np.diff([t.arrival for t in tasks])
    rate = spec.rate_per_s * 20
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # CV of an exponential


def test_scenario_mix_matches_weights() -> None:
    spec = load_workload(MIXED)
    tasks = generate(spec, 2, load_factor=40)
    n = len(tasks)
    counts = Counter(t.kind for t in tasks)
    for s, p in zip(spec.scenarios, spec.weights()):
        assert abs(counts[s.kind] - n * p) < 5 * math.sqrt(n * p * (1 - p)) + 1, s.kind


def test_tasks_carry_the_scenario_fields_and_stay_valid() -> None:
    spec = load_workload(MIXED)
    by_kind = {s.kind: s for s in spec.scenarios}
    for t in generate(spec, 4)[:300]:
        s = by_kind[t.kind]
        assert (t.priority, t.slo_ms, t.cpu_milli, t.gpu_milli, t.gpu_count) == \
            (s.priority, s.slo_ms, s.cpu_milli, s.gpu_milli, s.gpu_count)
        d = t.to_dict()
        d.pop("inferred")
        assert make_task(d, infer=False) == t


def test_work_distribution_means(tmp_path: Path) -> None:
    spec = load_workload(MIXED)
    tasks = generate(spec, 5, load_factor=20)
    for s in spec.scenarios:
        work = np.array([t.work for t in tasks if t.kind == s.kind])
        if len(work) > 500:
            assert work.mean() == pytest.approx(s.work.expected, rel=0.1), s.kind
    small = generate(small_spec(tmp_path), 0)
    assert {t.work for t in small if t.kind == "scoring"} == {0.02}
    imaging = [t.work for t in small if t.kind == "imaging"]
    assert imaging and min(imaging) >= 0.5 and max(imaging) <= 1.5


def test_duration_override_shortens_the_window() -> None:
    spec = load_workload(MIXED)
    tasks = generate(spec, 0, duration_s=30)
    assert tasks and tasks[-1].arrival < 30


def test_hundred_thousand_tasks_in_one_call() -> None:
    """Scale check (its speed is benchmarked in benchmarks/bench_online.py, not timed here)."""
    spec = load_workload(MIXED)
    lf = 100_000 / spec.expected_tasks
    tasks = generate(spec, 0, load_factor=lf)
    assert len(tasks) > 95_000
    assert len({t.id for t in tasks}) == len(tasks)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), load_factor=st.floats(0.05, 5.0))
def test_any_seed_gives_sorted_arrivals_in_window(seed: int, load_factor: float) -> None:
    spec = load_workload(MIXED)
    tasks = generate(spec, seed, load_factor=load_factor, duration_s=20)
    arrivals = [t.arrival for t in tasks]
    assert arrivals == sorted(arrivals)
    assert all(0 <= a < 20 for a in arrivals)


# ---------------------------------------------------------------- config errors


def assert_config_error(path: Path, field: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_workload(path)
    assert info.value.file == str(path)
    assert info.value.field == field, str(info.value)
    assert str(path) in str(info.value) and field in str(info.value)
    return info.value


@pytest.mark.parametrize("text, field", [
    ("name: t\nduration_s: 10\nrate_per_s: 1\nrate: 2\nscenarios:" + SCENARIO, "rate"),
    ("name: t\nduration_s: -1\nrate_per_s: 1\nscenarios:" + SCENARIO, "duration_s"),
    ("name: t\nduration_s: 10\nrate_per_s: 0\nscenarios:" + SCENARIO, "rate_per_s"),
    ("name: t\nduration_s: 10\nrate_per_s: 1\nload_factor: fast\nscenarios:" + SCENARIO, "load_factor"),
    ("name: t\nduration_s: 10\nscenarios:" + SCENARIO, "rate_per_s"),
    ("name: t\nduration_s: 10\nrate_per_s: 1\nscenarios: []\n", "scenarios"),
    ("name: t\nduration_s: 10\nrate_per_s: 1\n", "scenarios"),
])
def test_top_level_errors_name_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    assert_config_error(write(tmp_path, text), field)


BASE = "name: t\nduration_s: 10\nrate_per_s: 1\nscenarios:\n  - kind: a\n    weight: 1\n" \
       "    priority: 5\n    slo_ms: 100\n    work_s: {dist: constant, mean: 1}\n"


@pytest.mark.parametrize("extra, field", [
    ("    colour: red\n", "scenarios[0].colour"),
    ("    gpu: {fraction: 1.5}\n", "scenarios[0].gpu.fraction"),
    ("    gpu: {fraction: 0.25, count: 1}\n", "scenarios[0].gpu"),
    ("    gpu: {mig: 9g.90gb}\n", "scenarios[0].gpu.mig"),
    ("    gpu: {count: 0}\n", "scenarios[0].gpu.count"),
    ("    gpu: lots\n", "scenarios[0].gpu"),
    ("    gpu_models: [V10O]\n", "scenarios[0].gpu_models[0]"),
    ("    cpus: 0\n", "scenarios[0].cpus"),
    ("    cost_sensitivity: 11\n", "scenarios[0].cost_sensitivity"),
])
def test_scenario_errors_name_file_and_field(tmp_path: Path, extra: str, field: str) -> None:
    assert_config_error(write(tmp_path, BASE + extra), field)


@pytest.mark.parametrize("old, new, field", [
    ("priority: 5", "priority: 0", "scenarios[0].priority"),
    ("weight: 1", "weight: 0", "scenarios[0].weight"),
    ("{dist: constant, mean: 1}", "{dist: gamma, mean: 1}", "scenarios[0].work_s.dist"),
    ("{dist: constant, mean: 1}", "{dist: lognormal, mean: 1}", "scenarios[0].work_s.sigma"),
    ("{dist: constant, mean: 1}", "{dist: uniform, low: 2, high: 1}", "scenarios[0].work_s.high"),
    ("{dist: constant, mean: 1}", "{dist: constant, mean: 1, sigma: 1}", "scenarios[0].work_s.sigma"),
    ("    slo_ms: 100\n", "", "scenarios[0].slo_ms"),
])
def test_bad_values_name_file_and_field(tmp_path: Path, old: str, new: str, field: str) -> None:
    assert old in BASE
    assert_config_error(write(tmp_path, BASE.replace(old, new)), field)


def test_real_work_is_named_per_kind_and_checked_at_load(tmp_path: Path) -> None:
    spec = load_workload(WORKLOADS_DIR / "real_mix.yaml")
    real = spec.real_work()
    assert set(real) == {"image_classification", "fraud_scoring", "sales_etl"}
    assert real["sales_etl"] == {"entry_point": "orchestrator.examples.real_work:aggregate_etl",
                                 "args": {"rows": 500000, "days": 7}}
    assert {t.kind for t in generate(spec, 1)} >= set(real)  # the simulator draws them as any kind
    for extra, field in [("    entry_point: os.system\n", "scenarios[0].entry_point"),
                         ("    entry_point: a.b:c.d\n", "scenarios[0].entry_point"),
                         ("    args: {rows: 1}\n", "scenarios[0].args"),
                         ("    entry_point: a.b:c\n    args: [1]\n", "scenarios[0].args"),
                         ("    entry_point: a.b:c\n    args: {not-a-name: 1}\n", "scenarios[0].args")]:
        assert_config_error(write(tmp_path, BASE + extra), field)


def test_duplicate_kind_is_rejected(tmp_path: Path) -> None:
    text = BASE + BASE.split("scenarios:\n")[1]
    assert_config_error(write(tmp_path, text), "scenarios[1].kind")


def test_scenarios_from_reuses_a_mix_and_rejects_cycles(tmp_path: Path) -> None:
    write(tmp_path, BASE, "base.yaml")
    spec = load_workload(write(tmp_path, "name: x\nduration_s: 5\nrate_per_s: 3\n"
                                         "scenarios_from: base.yaml\n", "x.yaml"))
    assert [s.kind for s in spec.scenarios] == ["a"] and spec.rate_per_s == 3
    loop = write(tmp_path, "name: l\nduration_s: 5\nrate_per_s: 3\nscenarios_from: l.yaml\n", "l.yaml")
    assert_config_error(loop, "scenarios_from")
    both = write(tmp_path, BASE + "scenarios_from: base.yaml\n", "both.yaml")
    assert_config_error(both, "scenarios")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    assert_config_error(tmp_path / "nope.yaml", "<file>")


def test_generate_rejects_bad_overrides(tmp_path: Path) -> None:
    spec = small_spec(tmp_path)
    with pytest.raises(ValueError):
        generate(spec, 0, load_factor=0)
    with pytest.raises(ValueError):
        generate(spec, 0, duration_s=-1)


def test_future_streams_are_the_workloads_own_but_never_a_runs_tasks() -> None:
    from simulations.workloads import FUTURE_SEED_BASE, future_streams

    spec = load_workload("configs/workloads/mixed.yaml")
    a, b = future_streams(spec, n=2), future_streams(spec, n=2)
    assert [[t.arrival for t in s] for s in a] == [[t.arrival for t in s] for s in b]  # deterministic
    assert [t.arrival for t in a[0]] != [t.arrival for t in a[1]]
    assert {t.kind for t in a[0]} <= {s.kind for s in spec.scenarios}
    run = generate(spec, seed=101)
    assert all([t.arrival for t in s] != [t.arrival for t in run] for s in a)
    assert [t.arrival for t in a[0]] == [t.arrival for t in generate(spec, seed=FUTURE_SEED_BASE)]


def test_every_error_of_a_workload_file_is_reported_at_once(tmp_path) -> None:
    import yaml

    from cluster.config import ConfigErrors

    data = yaml.safe_load((WORKLOADS_DIR / "mixed.yaml").read_text())
    data["rate_per_s"] = 0
    data["scenarios"][0]["weight"] = -1
    data["scenarios"][1]["slo_ms"] = "soon"
    p = tmp_path / "w.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigErrors) as info:
        load_workload(p)
    fields = [e.field for e in info.value.errors]
    assert "rate_per_s" in fields and len(fields) == 3
    assert any(f.startswith("scenarios[0]") for f in fields) and any(f.startswith("scenarios[1]") for f in fields)


@pytest.mark.parametrize("name, count, digest", [("mixed", 293, "289efde34c021d61"),
                                                  ("gpu_heavy", 235, "25d74d77ea57cadc")])
def test_a_workload_without_a_rate_profile_draws_the_same_tasks_as_before(name, count, digest) -> None:
    """Pinned to the stream generate() drew before rate profiles existed (seed 7, 60 s): evaluation
    seeds and golden figures stay comparable across versions."""
    import hashlib

    tasks = generate(load_workload(WORKLOADS_DIR / f"{name}.yaml"), seed=7, duration_s=60)
    rows = [(t.id, round(t.arrival, 9), t.kind, t.cpu_milli, t.mem_mib, t.gpu_milli, t.gpu_count, t.mig_profile,
             round(t.work, 9), t.slo_ms, t.priority) for t in tasks]
    assert (len(tasks), hashlib.sha256(repr(rows).encode()).hexdigest()[:16]) == (count, digest)
