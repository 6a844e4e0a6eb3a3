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
from evaluation.evaluate import cli, evaluate, quality_checks
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


def test_runs_in_parallel_processes_give_the_same_tables(tmp_path, local_spec) -> None:
    workloads = [_tiny("high_load", tmp_path)]
    pols = ["fastest-feasible", "least-loaded"]
    one, _, _ = evaluate(local_spec, workloads, [101, 102], pols, tmp_path / "one", progress=False)
    two, _, _ = evaluate(local_spec, workloads, [101, 102], pols, tmp_path / "two", progress=False, jobs=2)
    cols = [c for c in one.columns if c != "decision_us"]
    pd.testing.assert_frame_equal(one[cols], two[cols])
    assert (tmp_path / "two" / "high_load" / "seed_102" / "records_least-loaded.csv").is_file()


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
    from orchestrator.cli import UsageError

    args.seeds = "1500"
    with pytest.raises(UsageError, match="training seeds"):
        cli(args)
    args.seeds = "101"
    assert cli(args) == 0
    checks = json.loads((tmp_path / "out" / "checks.json").read_text())
    assert checks and checks[0]["policy"] == "rl:latest" and "beats_every_heuristic" in checks[0]


# ------------------------------------------------------------ the sceptic's statistics


def _rf_with_seeds(root, training: list[int], holdout: list[int]) -> None:
    """Register a tiny forest whose meta records the training and held-out seeds (as train_rf does)."""
    from scheduler.policies.rf import FOREST_FILE
    from tests.learned_registry import build_tiny_rf

    build_tiny_rf(root)
    path = model_registry.resolve("rf", "latest", root)
    meta = json.loads((path / "meta.json").read_text())
    meta["config"] = {"seeds": training, "holdout_seeds": holdout}
    (path / "meta.json").write_text(json.dumps(meta))
    assert (path / FOREST_FILE).is_file()


def _main(*argv: str) -> int:
    from orchestrator.cli import main

    return main(list(argv))


def _tiny_yaml(tmp_path) -> str:
    wl = tmp_path / "tiny.yaml"
    wl.write_text("name: tiny\nscenarios_from: " + str(REPO_ROOT / "configs/workloads/mixed.yaml") +
                  "\nduration_s: 4\nrate_per_s: 5\n")
    return str(wl)


def test_evaluation_seeds_must_avoid_every_seed_the_artifacts_saw(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ORCH_REGISTRY", str(tmp_path / "registry"))
    _rf_with_seeds(tmp_path / "registry", [1, 2, 3, 4], [901, 902])
    base = ["evaluate", "--policies", "rf,least-loaded", "--cluster", str(REPO_ROOT / "configs/cluster/local.yaml"),
            "--workload", _tiny_yaml(tmp_path), "--out", str(tmp_path / "out")]
    assert _main(*base, "--seeds", "3,50") == 2
    err = capsys.readouterr().err
    assert "--seeds: 3 already used by rf:" in err and "config.seeds" in err and "training" in err
    assert _main(*base, "--seeds", "902") == 2
    assert "config.holdout_seeds" in capsys.readouterr().err
    assert _main(*base, "--seeds", "101,102") == 0
    out = capsys.readouterr().out
    assert "evaluation seeds: 101,102" in out and "training seeds (config.seeds): 1-4" in out
    assert "validation seeds (config.holdout_seeds): 901,902" in out
    md = (tmp_path / "out" / "evaluation.md").read_text()
    assert md.startswith("Generated by `orchestrator evaluate --policies rf,least-loaded")
    assert "seeds 101,102" in md and "config.holdout_seeds" in md


def test_rl_checkpoint_selection_seeds_are_refused(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ORCH_REGISTRY", str(tmp_path / "registry"))
    net = PolicyNet(NetSpec(N_FEATURES, N_ACTIONS, (8,)))
    model_registry.save("rl", {"policy.pt": lambda p: save_policy(net, str(p))},
                        {"architecture": net.spec.to_dict(), "env": {"seed_range": [1000, 2000]},
                         "validation": {"seeds": [201, 202]}})
    base = ["evaluate", "--policies", "rl-sample,least-loaded", "--workload", _tiny_yaml(tmp_path),
            "--out", str(tmp_path / "out")]
    assert _main(*base, "--seeds", "202") == 2
    err = capsys.readouterr().err
    assert "checkpoint selection" in err and "validation.seeds" in err


def test_bootstrap_interval_holds_the_mean_and_repeats_for_a_seed() -> None:
    from evaluation.paired_stats import bootstrap_ci

    x = [3.1, 2.4, 3.9, 2.8, 3.3]
    lo, hi = bootstrap_ci(x, seed=5)
    assert lo < sum(x) / len(x) < hi
    assert min(x) <= lo and hi <= max(x)
    assert bootstrap_ci(x, seed=5) == (lo, hi)
    assert bootstrap_ci(x, seed=6) != (lo, hi)  # the seed drives the resampling
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert all(v != v for v in bootstrap_ci([2.0]))  # NaN: no interval from one seed


def test_wins_margins_bound_and_timing_on_a_tiny_run(tmp_path, local_spec) -> None:
    from evaluation.paired_stats import paired_wins

    assert paired_wins([1.0, 2.0, 3.0], [1.5, 2.0, 2.5]) == 1  # ties are not wins
    workloads = [_tiny("high_load", tmp_path)]
    pols = ["oracle", "fastest-feasible", "least-loaded", "round-robin"]
    runs, summary, _ = evaluate(local_spec, workloads, [101, 102], pols, tmp_path, progress=False)
    s = summary.loc["high_load"]
    means = runs.groupby("policy")["objective"].mean()
    best = min(["fastest-feasible", "least-loaded", "round-robin"], key=means.get)  # the oracle is no heuristic
    assert (s["best_heuristic"] == best).all()
    ref = runs[runs["policy"] == best].set_index("seed")["objective"]
    for p in pols:
        mine = runs[runs["policy"] == p].set_index("seed")["objective"]
        if p == best:
            assert pd.isna(s.loc[p, "wins"])
            continue
        assert s.loc[p, "wins"] == sum(mine[k] < ref[k] for k in (101, 102))
        expect = 100 * ((ref - mine) / ref).mean()
        assert s.loc[p, "margin_pct"] == pytest.approx(expect)
        assert s.loc[p, "ci_low"] <= s.loc[p, "objective"] <= s.loc[p, "ci_high"]
    # one bound per seed, below every policy, and each policy's gap to it
    assert (runs["objective"] >= runs["bound"]).all()
    bound = runs.drop_duplicates("seed")["bound"].mean()
    assert s["bound"].iloc[0] == pytest.approx(bound)
    assert s.loc[best, "gap_pct"] == pytest.approx(100 * (s.loc[best, "objective"] / bound - 1))
    # every decision timed: one per task, a positive duration
    n_tasks = runs.groupby("seed")["decisions"].max()
    assert (runs["decisions"] == runs["seed"].map(n_tasks)).all() and (runs["decision_us"] > 0).all()
    md = (tmp_path / "evaluation.md").read_text()
    assert "### high_load" in md and f"Best heuristic on these seeds: {best}" in md
    for p in pols:
        assert f"| {p} | " in md
    assert f"| {best} | " in md and "(best heuristic)" in md
    on_disk = pd.read_csv(tmp_path / "summary.csv", index_col=[0, 1])
    assert on_disk.loc[("high_load", "oracle"), "wins"] == s.loc["oracle", "wins"]


def test_cluster_variants_from_the_command_line(tmp_path, capsys) -> None:
    base = ["evaluate", "--policies", "least-loaded", "--workload", _tiny_yaml(tmp_path), "--seeds", "101",
            "--out", str(tmp_path / "out")]
    assert _main(*base, "--drop-pool", "gpu-nope") == 2
    assert "--drop-pool: unknown pool(s) 'gpu-nope'" in capsys.readouterr().err
    assert _main(*base, "--scale-cluster", "0") == 2
    assert "--scale-cluster: must be a positive integer" in capsys.readouterr().err
    assert _main(*base, "--load-scale", "-4") == 2
    assert "--load-scale: must be a positive number" in capsys.readouterr().err
    assert _main(*base, "--scale-cluster", "2", "--load-scale", "4", "--drop-pool", "gpu-mig") == 0
    out = capsys.readouterr().out
    assert "dropped pool(s) gpu-mig: 1 node(s) removed (gpu-mig-1)" in out
    assert "every node x2 (each tier 2x): 5 -> 10 nodes" in out
    assert "tiny load_factor 1 -> 4" in out
    summary = json.loads((tmp_path / "out" / "tiny" / "seed_101" / "summary.json").read_text())
    assert summary["meta"]["load_factor"] == 4
    recs = pd.read_csv(tmp_path / "out" / "tiny" / "seed_101" / "records_least-loaded.csv")
    assert "gpu-mig" not in set(recs["pool"].dropna()) and "edge-1-copy1" in set(recs["node"])


def test_variants_double_every_tier_and_drop_a_pool(local_spec) -> None:
    from collections import Counter

    from cluster.variants import drop_pools, scale_cluster

    x2 = scale_cluster(local_spec, 2)
    assert Counter(n.tier for n in x2.nodes) == {t: 2 * c for t, c in Counter(n.tier for n in local_spec.nodes).items()}
    assert len({n.name for n in x2.nodes}) == len(x2.nodes) and x2.pools == local_spec.pools
    less = drop_pools(local_spec, ["gpu-ts"])
    assert "gpu-ts" not in less.pools and all(n.pool != "gpu-ts" for n in less.nodes)
    with pytest.raises(ValueError, match="without nodes"):
        drop_pools(local_spec, list(local_spec.pools))


def test_seed_uses_read_from_meta_and_unrecorded_roles_noted() -> None:
    from evaluation.held_out import seed_uses_of

    uses, notes = seed_uses_of("rl:3", "rl", {"env": {"seeds": [5, 6], "seed_range": [1000, 2000]}})
    assert [(u.field, u.seeds) for u in uses] == [("env.seeds", (5, 6))]  # explicit seeds replace the range
    assert uses[0].overlap([6, 1500]) == [6]
    assert notes == ["rl:3 records no checkpoint selection seeds: disjointness from them is unverified"]
    uses, notes = seed_uses_of("rf:1", "rf", {"note": "tiny"})
    assert uses == [] and len(notes) == 2


def test_random_cluster_from_the_command_line_and_refused_where_a_policy_trained_on_it(
        tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ORCH_REGISTRY", str(tmp_path / "registry"))
    _rf_with_seeds(tmp_path / "registry", [1, 2], [901])
    path = model_registry.resolve("rf", "latest", tmp_path / "registry")
    meta = json.loads((path / "meta.json").read_text())
    meta["config"].update(variants=["x1", "rand:1-8"], cluster="configs/cluster/local.yaml")
    (path / "meta.json").write_text(json.dumps(meta))
    base = ["evaluate", "--policies", "rf,least-loaded", "--workload", _tiny_yaml(tmp_path), "--seeds", "101",
            "--out", str(tmp_path / "out")]
    assert _main(*base, "--random-cluster", "4-9") == 2
    assert "--random-cluster: 4-8 among the clusters rf:" in capsys.readouterr().err
    for bad in ("-1", "soon", "-3-5", "1,,2"):
        assert _main(*base, f"--random-cluster={bad}") == 2
        assert "--random-cluster: expected cluster numbers" in capsys.readouterr().err
    for bad in ("0-4000000000", "9-2"):  # refused before any list is built
        assert _main(*base, f"--random-cluster={bad}") == 2
        assert "1000 clusters at most" in capsys.readouterr().err
    # the same numbers drawn from another cluster file are other clusters: not refused
    small = str(REPO_ROOT / "configs/cluster/test_small.yaml")
    assert _main(*base, "--cluster", small, "--random-cluster", "5") == 0
    assert "cluster test_small-rand5" in capsys.readouterr().out
    assert _main(*base, "--random-cluster", "1001") == 0
    out = capsys.readouterr().out
    assert "cluster local-rand1001" in out and "random cluster 1001 drawn from its pools" in out
    md = (tmp_path / "out" / "evaluation.md").read_text()
    assert "--random-cluster 1001" in md
    # a range: one evaluation per cluster, then the learned policy's margins across them
    assert _main(*base, "--random-cluster", "1001-1002,1002") == 0  # each cluster once
    md = (tmp_path / "out" / "random_clusters.md").read_text()
    assert "`rand:1002`: cluster local-rand1002" in md and "| rand:1001 | tiny |" in md
    assert "| rf | 2 |" in md
    assert (tmp_path / "out" / "rand_1002" / "evaluation.md").is_file()


def test_auto_gets_sampled_futures_of_the_workload_never_the_run(tmp_path, local_spec, monkeypatch) -> None:
    import evaluation.evaluate as ev
    from simulations.workloads import future_streams

    asked = []

    def recorded(wl, n=4, load_factor=None):
        asked.append((wl.name, n))
        return future_streams(wl, n=n, load_factor=load_factor)

    monkeypatch.setattr(ev, "future_streams", recorded)
    runs, _, _ = evaluate(local_spec, [_tiny("high_load", tmp_path)], [101], ["auto", "fastest-feasible"], tmp_path,
                          progress=False)
    assert asked == [("high_load", 4)]  # auto's four futures (the heuristic gets none)
    assert set(runs["policy"]) == {"auto", "fastest-feasible"} and (runs["decisions"] > 0).all()


def test_with_no_futures_auto_judges_on_its_own_recent_past_as_in_the_router(tmp_path, local_spec,
                                                                              monkeypatch) -> None:
    import evaluation.evaluate as ev
    from dataclasses import replace

    from scheduler.objective import Objective
    from scheduler.policy import make_policy
    from simulations.engine import simulate
    from simulations.workloads import generate

    asked = []
    monkeypatch.setattr(ev, "future_streams", lambda wl, n=4, load_factor=None: asked.append(n) or [])
    wl = replace(_tiny("high_load", tmp_path), duration_s=60.0)  # past auto's 200-task warm-up
    runs, _, _ = evaluate(local_spec, [wl], [101], ["auto"], tmp_path / "o", progress=False, futures=0)
    assert asked == []  # nothing sampled from the workload
    alone = make_policy("auto", seed=101)
    score = simulate(local_spec, generate(wl, seed=101), alone, seed=101, objective=Objective()).summary
    assert alone.table  # it chose on the tasks it had placed
    assert runs.loc[runs["policy"] == "auto", "objective"].item() == pytest.approx(score["objective_mean"])


@pytest.mark.parametrize("bad", ["-1", "65"])
def test_a_bad_futures_count_is_refused_naming_the_flag(bad, tmp_path, capsys) -> None:
    from orchestrator.cli import main

    assert main(["evaluate", "--futures", bad, "--out", str(tmp_path / "x")]) == 2
    assert "--futures" in capsys.readouterr().err
