"""orchestrator evaluate: held-out comparison tables, per-task records and the quality checks."""
from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest
from scheduler import model_registry
from scheduler.actions import N_ACTIONS
from scheduler.features import N_FEATURES
from scheduler.policy_net import NetSpec, PolicyNet, save_policy
from simulations.evaluate import cli, evaluate, quality_checks
from simulations.workloads import load_workload
from tests.conftest import REPO_ROOT


def _tiny(name: str, tmp_path):
    wl = load_workload(REPO_ROOT / f"configs/workloads/{name}.yaml")
    from dataclasses import replace

    return replace(wl, duration_s=6.0)


def test_tables_records_and_checks(tmp_path, local_spec) -> None:
    workloads = [_tiny("high_load", tmp_path), _tiny("gpu_heavy_high", tmp_path)]
    runs, summary, checks = evaluate(local_spec, workloads, [101, 102],
                                     ["oracle", "fastest-feasible", "least-loaded"], tmp_path, progress=False)
    assert len(runs) == 2 * 2 * 3
    assert set(summary.index.get_level_values("workload")) == {"high_load", "gpu_heavy_high"}
    for wl in ("high_load", "gpu_heavy_high"):
        for seed in (101, 102):
            d = tmp_path / wl / f"seed_{seed}"
            assert (d / "records_oracle.csv").is_file() and (d / "summary.json").is_file()
    assert pd.read_csv(tmp_path / "summary.csv").shape[0] == 6
    assert checks == []  # no learned policy in the run


def test_quality_checks_compare_with_heuristics_and_oracle() -> None:
    idx = pd.MultiIndex.from_tuples([("w", "rl:latest"), ("w", "oracle"), ("w", "fastest-feasible"),
                                     ("w", "least-loaded")], names=["workload", "policy"])
    s = pd.DataFrame({"objective": [2.0, 4.0, 2.5, 3.0], "slo_miss_%": [20.0, 50.0, 25.0, 30.0]}, index=idx)
    (c,) = quality_checks(s)
    assert c["beats_every_heuristic"] and c["best_heuristic"] == "fastest-feasible"
    assert c["slo_no_worse_than_oracle"]
    s.loc[("w", "rl:latest"), "objective"] = 2.6
    assert not quality_checks(s)[0]["beats_every_heuristic"]


def test_cli_skips_missing_learned_policies_and_refuses_training_seeds(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ORCH_REGISTRY", str(tmp_path / "registry"))
    wl = tmp_path / "tiny.yaml"
    wl.write_text("name: tiny\nscenarios_from: " + str(REPO_ROOT / "configs/workloads/mixed.yaml") +
                  "\nduration_s: 5\nrate_per_s: 5\n")
    args = argparse.Namespace(policies="rl:latest,least-loaded", cluster=str(REPO_ROOT / "configs/cluster/local.yaml"),
                              workload=[str(wl)], seeds="101", out=str(tmp_path / "out"))
    assert cli(args) == 0
    assert "skipping rl:latest" in capsys.readouterr().out
    # with an RL artifact, seeds inside its training range are refused
    net = PolicyNet(NetSpec(N_FEATURES, N_ACTIONS, (8,)))
    model_registry.save("rl", {"policy.pt": lambda p: save_policy(net, str(p))},
                        {"architecture": net.spec.to_dict(), "env": {"seed_range": [1000, 2000]}})
    from simulations.cli import UsageError

    args.seeds = "1500"
    with pytest.raises(UsageError, match="training seeds"):
        cli(args)
    args.seeds = "101"
    assert cli(args) == 0
    checks = json.loads((tmp_path / "out" / "checks.json").read_text())
    assert checks and checks[0]["policy"] == "rl:latest" and "beats_every_heuristic" in checks[0]
