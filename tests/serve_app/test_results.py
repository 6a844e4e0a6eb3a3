"""Result sets for the comparison view: discovery and the reductions it plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serve_app.results import (discover, latency_cdf, load_result_set, placement_mix, sim_vs_real,
                               slo_miss_by_priority, summary_table)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, local_spec) -> Path:
    from simulations.compare import compare_policies
    from simulations.workloads import generate, load_workload
    from tests.conftest import CONFIGS

    out = tmp_path_factory.mktemp("res") / "run"
    tasks = generate(load_workload(CONFIGS / "workloads" / "mixed.yaml"), seed=5, duration_s=40)
    compare_policies(local_spec, tasks, ["least-loaded", "cheapest-feasible"], seed=5, out=out, progress=False)
    return out


def test_discover_finds_runs_and_ignores_other_folders(run_dir: Path, tmp_path: Path) -> None:
    (run_dir.parent / "empty").mkdir()
    sets = discover(run_dir.parent)
    assert [s.path for s in sets] == [run_dir]
    assert sets[0].policies == ["least-loaded", "cheapest-feasible"]
    assert discover(tmp_path / "missing") == []
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "summary.json").write_text("{not json")
    assert load_result_set(bad) is None


def test_reductions_agree_with_the_records(run_dir: Path) -> None:
    rs = load_result_set(run_dir)
    rec = rs.records("least-loaded")
    cdf = latency_cdf(rec)
    assert cdf["fraction"].is_monotonic_increasing and cdf["fraction"].iloc[-1] == 1.0
    assert cdf["latency_ms"].iloc[-1] == pytest.approx(rec["latency_ms"].max())
    slo = slo_miss_by_priority(rec)
    assert slo["tasks"].sum() == len(rec)
    mix = placement_mix(rec)
    assert mix["fraction"].sum() == pytest.approx(1.0)
    assert set(mix["pool"]) <= {"edge", "cloud", "gpu-mig", "gpu-ts"}
    table = summary_table([(rs, "least-loaded"), (rs, "cheapest-feasible")])
    assert list(table["policy"]) == ["least-loaded", "cheapest-feasible"]
    assert table["SLO miss %"].iloc[0] == pytest.approx(100 * (1 - rec["slo_met"].mean()))


def test_sim_vs_real_relative_errors(run_dir: Path, tmp_path: Path) -> None:
    sim = load_result_set(run_dir)
    real_dir = tmp_path / "replay"
    real_dir.mkdir()
    data = json.loads((run_dir / "summary.json").read_text())
    data["meta"]["kind"] = "replay"
    data["policies"]["least-loaded"]["latency_ms"]["mean"] *= 1.1
    (real_dir / "summary.json").write_text(json.dumps(data))
    diff = sim_vs_real(sim, load_result_set(real_dir))
    row = diff[(diff.policy == "least-loaded") & (diff.metric == "latency mean")].iloc[0]
    assert row["relative error"] == pytest.approx(0.1)
    assert np.isfinite(diff["relative error"]).any()
