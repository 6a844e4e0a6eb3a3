"""Recommendations by simulation: the cluster a user is handed meets the target at the least cost found."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from capacity import recommend as rec
from capacity.cli import main
from cluster.topology import MIG_COMPUTE_SLICES, MIG_PROFILES, load_cluster, validate_mig_layout
from simulations.workloads import load_workload

LOCAL = "configs/cluster/local.yaml"
GPU_HEAVY = "configs/workloads/gpu_heavy.yaml"


@pytest.fixture(scope="module")
def local():
    return load_cluster(LOCAL)


def test_the_written_cluster_reads_back_equal(local, tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(rec.cluster_yaml(local))
    again = load_cluster(p)
    assert again.nodes == local.nodes and again.tiers == local.tiers


def test_build_grows_by_copies_and_drops_empty_pools(local) -> None:
    shape = rec.current_shape(local).with_count("cloud", 4).with_count("edge", 0)
    built = rec.build(local, shape)
    clouds = [n for n in built.nodes if n.pool == "cloud"]
    assert [n.name for n in clouds] == ["cloud-1", "cloud-2", "cloud-add1", "cloud-add2"]
    assert {(n.cpu_milli, n.mem_mib) for n in clouds} == {(16000, 65536)}
    assert "edge" not in built.pools and not any(n.pool == "edge" for n in built.nodes)
    assert len({n.name for n in built.nodes}) == len(built.nodes)


def test_a_pool_of_nodes_with_different_layouts_builds_back_as_it_is(local) -> None:
    from dataclasses import replace

    from cluster.topology import GpuDevice

    mig = local.node("gpu-mig-1")
    other = replace(mig, name="gpu-mig-2", devices=tuple(GpuDevice("A100", "mig", 1000, ("3g.40gb", "3g.40gb"))
                                                         for _ in mig.devices))
    spec = replace(local, nodes=(*local.nodes[:5], other, local.nodes[5]))
    assert rec.build(spec, rec.current_shape(spec)).nodes == spec.nodes
    assert rec.cluster_diff(spec, rec.build(spec, rec.current_shape(spec))) == ""


def test_node_cost_counts_cores_memory_and_gpus(local) -> None:
    cloud = local.node("cloud-1")
    t = local.tiers["cloud"]
    assert rec.node_cost_per_hour(local, cloud) == pytest.approx(3600 * (16 * t.price_cpu_second + 64 * t.price_gb_second))
    gpu = local.node("gpu-ts-1")
    g = local.tiers["gpu"]
    assert rec.node_cost_per_hour(local, gpu) == pytest.approx(
        3600 * (32 * g.price_cpu_second + 256 * g.price_gb_second + 2 * g.price_gpu_second))


def test_mig_layouts_are_valid_full_and_cover_the_shipped_one() -> None:
    lays = rec.mig_layouts(["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb"], 2)
    assert lays and len(set(lays)) == len(lays)
    for node in lays:
        assert len(node) == 2
        for dev in node:
            assert validate_mig_layout(list(dev)) is None
            # full: no further instance of these profiles fits
            assert all(validate_mig_layout([*dev, p]) is not None for p in ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb"))
    devices = {dev for node in lays for dev in node}
    assert ("3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb") in devices and ("4g.40gb", "2g.20gb", "1g.10gb") in devices
    assert all(sum(MIG_PROFILES[p][0] for p in d) <= MIG_COMPUTE_SLICES for d in devices)


def test_usable_profiles_are_those_placement_would_pick(local) -> None:
    tasks = rec.demand_streams(load_workload(GPU_HEAVY), 4.0, 600.0, [1])[0]
    assert any(t.kind == "fine_tuning" for t in tasks)
    # 1g and 3g by name; a quarter GPU fits 2g (2/7), a half GPU 4g (4/7), a whole one (fine-tuning) 7g
    assert rec.usable_profiles(tasks, local, "gpu-mig") == ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
    # a task tied to another GPU model never lands on the A100s
    v100 = [t for t in tasks if t.gpu_milli == 250][0]
    from dataclasses import replace
    assert rec.usable_profiles([replace(v100, gpu_models=("V100",))], local, "gpu-mig") == []


def test_an_overloaded_cluster_is_grown_until_it_meets_the_target(local) -> None:
    streams = rec.demand_streams(load_workload(GPU_HEAVY), 8.0, 60.0, [1])
    r = rec.recommend(local, streams, "fastest-feasible", target_miss=0.05, max_nodes=4)
    assert not r.current.meets and r.feasible and r.best.meets and r.best.slo_miss <= 0.05
    # the answer is what a fresh what-if of the recommended cluster says
    again = rec.what_if(local, r.best.shape, streams, "fastest-feasible", 0.05)
    assert again.slo_miss == pytest.approx(r.best.slo_miss) and again.cost_per_hour == pytest.approx(r.best.cost_per_hour)
    # nothing cheaper that was tried meets the target
    assert all(not w.meets for w in r.tried if w.cost_per_hour < r.best.cost_per_hour - 1e-9)
    assert r.search_s > 0 and len(r.tried) > 5
    # the MIG layouts were searched too: the answer is never dearer than the best with the layouts as shipped
    assert len({w.shape.layouts for w in r.tried}) > 1
    assert r.shipped_layout_best is not None and r.best.cost_per_hour <= r.shipped_layout_best.cost_per_hour


def test_a_search_started_from_a_neighbouring_answer_starts_there_and_still_meets_the_target(local) -> None:
    """What the backtest does between neighbouring rates: the search begins at the given counts (with the
    cluster's own layouts), never judges the cluster's own shape, and its answer meets the target."""
    streams = rec.demand_streams(load_workload(GPU_HEAVY), 8.0, 60.0, [1])
    own = rec.current_shape(local)
    start = own.with_count("gpu-mig", 2).with_count("edge", 1)
    r = rec.recommend(local, streams, "fastest-feasible", target_miss=0.05, max_nodes=4, layouts=False,
                      start=rec.Shape(tuple(reversed(start.counts))))  # pool order and layouts are the cluster's
    assert r.tried[0].shape == start and r.current is None
    assert r.feasible and r.best.meets
    with pytest.raises(ValueError, match="start: pools"):
        rec.recommend(local, streams, "fastest-feasible", 0.05, 4, start=rec.Shape((("edge", 1),)))


def test_shrinking_trades_a_gpu_node_for_a_cheaper_node_when_removing_one_alone_misses(local, monkeypatch) -> None:
    # the search's moves on a table of what-if answers (the simulator stands aside so that the one shape
    # only a trade reaches is known): three MIG nodes meet the target, two meet it only beside a cloud
    # node that takes their CPU work, one edge node is always needed
    def what_if(spec, shape, streams, policy, target, objective=None, seeds=None):
        n = dict(shape.counts)
        ok = n["edge"] >= 1 and (n["gpu-mig"] >= 3 or (n["gpu-mig"] == 2 and n["cloud"] >= 1))
        cluster = rec.build(spec, shape)
        return rec.WhatIf(shape, rec.cluster_cost_per_hour(cluster), 0.0 if ok else 0.5, 1.0, len(cluster.nodes),
                          sum(len(nd.devices) for nd in cluster.nodes), ok)

    monkeypatch.setattr(rec, "what_if", what_if)
    s = rec.Search(local, [[]], "fastest-feasible", 0.05, max_nodes=4)
    start = rec.current_shape(local)
    three = start.with_count("edge", 1).with_count("cloud", 0).with_count("gpu-mig", 3).with_count("gpu-ts", 0)
    best = s.shrink(s.judge(three))
    assert dict(best.shape.counts) == {"edge": 1, "cloud": 1, "gpu-mig": 2, "gpu-ts": 0}
    assert best.gpus == s.judge(three).gpus - 2 and best.cost_per_hour < s.judge(three).cost_per_hour


def test_a_layout_that_saves_a_gpu_node_is_found_though_it_ranks_low_at_the_current_counts(local, monkeypatch) -> None:
    # on a table of what-if answers: at three MIG nodes every layout meets the target and one layout,
    # ``saver``, is among the worst; only with ``saver`` can two MIG nodes (and a cloud node) meet it
    lays = rec.mig_layouts(["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb"], 2)
    saver = lays[len(lays) // 2]
    assert saver != dict(rec.current_shape(local).layouts)["gpu-mig"]  # the shipped layout is never "tried"

    def what_if(spec, shape, streams, policy, target, objective=None, seeds=None):
        n, lay = dict(shape.counts), dict(shape.layouts)["gpu-mig"]
        if n["edge"] < 1 or n["gpu-mig"] < 2:
            miss = 0.5
        elif n["gpu-mig"] >= 3:
            miss = 0.02 if lay == saver else 0.01
        else:
            miss = (0.03 if n["cloud"] >= 1 else 0.07) if lay == saver else 0.2
        cluster = rec.build(spec, shape)
        return rec.WhatIf(shape, rec.cluster_cost_per_hour(cluster), miss, 1.0, len(cluster.nodes),
                          sum(len(nd.devices) for nd in cluster.nodes), miss <= target)

    monkeypatch.setattr(rec, "what_if", what_if)
    s = rec.Search(local, [[]], "fastest-feasible", 0.05, max_nodes=4)
    start = rec.current_shape(local)
    three = s.judge(start.with_count("edge", 1).with_count("cloud", 0).with_count("gpu-mig", 3).with_count("gpu-ts", 0))
    best = s.layouts(three, ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb"], ["gpu-mig"])
    assert dict(best.shape.layouts)["gpu-mig"] == saver and best.shape.count("gpu-mig") == 2
    assert best.meets and best.gpus < three.gpus and best.cost_per_hour < three.cost_per_hour


def test_an_idle_cluster_is_shrunk_and_never_costs_more(local) -> None:
    streams = rec.demand_streams(load_workload("configs/workloads/cluster_smoke.yaml"), 0.5, 60.0, [1])
    r = rec.recommend(local, streams, "fastest-feasible", target_miss=0.05, layouts=False)
    assert r.current.meets and r.best.meets
    assert r.best.cost_per_hour < r.current.cost_per_hour and r.saving_per_hour > 0


def test_unreachable_targets_say_so_and_give_the_fewest_misses(local) -> None:
    streams = rec.demand_streams(load_workload(GPU_HEAVY), 40.0, 30.0, [1])
    r = rec.recommend(local, streams, "fastest-feasible", target_miss=0.0, max_nodes=2, layouts=False)
    assert not r.feasible and r.best.slo_miss == min(w.slo_miss for w in r.tried)


def test_replica_bounds_and_autoscaler_bundles(local) -> None:
    big = rec.build(local, rec.current_shape(local).with_count("cloud", 3))
    groups = {g["groupName"]: g for g in rec.replica_bounds(local, big)}
    assert groups["cloud"] == {"groupName": "cloud", "minReplicas": 2, "maxReplicas": 3, "replicas": 3}
    bundles = rec.autoscaler_bundles(big)
    assert len(bundles) == len(big.nodes) and bundles[0]["CPU"] == 4.0
    assert any(k.startswith("mig_") for b in bundles for k in b) and any(b.get("GPU") == 2.0 for b in bundles)


def test_plan_rates_read_the_forecast_peak_and_trough() -> None:
    ds = pd.date_range("2026-01-01", periods=3, freq="1h")
    frame = pd.DataFrame({"unique_id": "arrivals", "metric": "arrivals", "by": "*", "group": "*", "ds": ds,
                          "model": "mstl", "mean": [3600.0, 7200.0, 1800.0], "hi_95": [5400.0, 10800.0, 3600.0]})
    peak, trough = rec.plan_rates(frame, 95, "mstl")
    assert peak == pytest.approx(3.0) and trough == pytest.approx(0.5)
    with pytest.raises(ValueError, match="model 'ets'"):
        rec.plan_rates(frame, 95, "ets")
    with pytest.raises(ValueError, match="80% upper bound"):
        rec.plan_rates(frame, 80, "mstl")


@pytest.mark.parametrize("argv, flag", [
    (["--rate", "0"], "--rate"),
    (["--slo-miss", "120"], "--slo-miss"),
    (["--window", "-5"], "--window"),
    (["--max-nodes", "0"], "--max-nodes"),
    (["--policy", "magic"], "--policy"),
    (["--seeds", "x"], "--seeds"),
    (["--rate", "2", "--forecast", "f.csv"], "--forecast"),
    (["--forecast", "missing.csv"], "missing.csv"),
    (["--workload", "missing.yaml"], "missing.yaml"),
    (["--max-nodes", "1"], "--max-nodes"),
])
def test_bad_flags_exit_2_naming_the_flag(argv: list[str], flag: str, tmp_path: Path, capsys) -> None:
    assert main(["capacity", "recommend", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "orchestrator: error:" in err and flag in err


def test_recommend_end_to_end_writes_what_a_user_applies(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["capacity", "recommend", "--workload", GPU_HEAVY, "--rate", "6", "--window", "60", "--seeds", "1",
                 "--policy", "fastest-feasible", "--max-nodes", "3", "--out", str(out),
                 "--markdown", str(tmp_path / "rec.md")]) == 0
    printed = capsys.readouterr().out
    assert "recommended for the peak" in printed and "what-if clusters in" in printed
    recommended = load_cluster(out / "cluster.yaml")  # a cluster file `cluster up` would take
    assert recommended.nodes
    assert (out / "cluster.diff").read_text().startswith("--- local (now)")
    groups = yaml.safe_load((out / "worker_groups.yaml").read_text())
    assert all(g["minReplicas"] <= g["maxReplicas"] for g in groups)
    assert len(json.loads((out / "request_resources.json").read_text())["bundles"]) == len(recommended.nodes)
    tried = pd.read_csv(out / "whatifs.csv")
    assert {"cost_per_hour", "slo_miss_pct", "meets"} <= set(tried.columns)
    assert "```diff" in (tmp_path / "rec.md").read_text()
    # the document the router serves (GET /v1/capacity/recommendation) says the same
    from capacity.live import read_recommendation

    doc = read_recommendation(out)
    assert doc["feasible"]  # so the recommendation is the cheapest what-if that met the target
    assert doc["recommended"]["cost_per_hour"] == pytest.approx(tried[tried["meets"]]["cost_per_hour"].min())
    assert doc["policy"] == "fastest-feasible" and doc["cluster_diff"] == (out / "cluster.diff").read_text()
    assert doc["saving_per_hour"] == pytest.approx(doc["now"]["cost_per_hour"] - doc["recommended"]["cost_per_hour"],
                                                   abs=1e-4)
    assert doc["request_resources"] == json.loads((out / "request_resources.json").read_text())["bundles"]
    assert 0 <= doc["age_s"] < 600
