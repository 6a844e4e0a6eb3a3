"""The lower bound: a hand-computed case, and no policy ever scoring below it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.topology import load_cluster
from cluster.variants import drop_pools, scale_cluster
from scheduler.objective import Objective
from scheduler.policy import available_policies, make_policy
from scheduler.task import make_task
from simulations.bound import lower_bound, task_bounds
from simulations.engine import simulate
from evaluation.report import is_heuristic
from simulations.workloads import generate, load_workload
from tests.conftest import CONFIGS

TWO_NODES = """
name: two
tiers:
  edge: {kind: edge, network_ms: {low: 10, high: 30}, price_per_task: 0.01, price_cpu_second: 0.0001}
  cloud: {kind: cloud, network_ms: {low: 100, high: 200}, price_per_task: 0.02, price_cpu_second: 0.00005}
nodes:
  - {name: edge-1, tier: edge, cpus: 2, memory_gb: 4, cpu_speed: 0.5}
  - {name: cloud-1, tier: cloud, cpus: 8, memory_gb: 16, cpu_speed: 1.0}
"""


def test_two_tasks_by_hand(tmp_path) -> None:
    f = tmp_path / "two.yaml"
    f.write_text(TWO_NODES)
    spec = load_cluster(f)
    # a: fits both nodes; b: 4 cores, only the cloud node can hold it
    a = make_task({"id": "a", "arrival": 0.0, "priority": 5, "slo_ms": 300, "cpu_milli": 1000, "mem_mib": 1024,
                   "work": 0.1, "cost_sensitivity": 5}, infer=False)
    b = make_task({"id": "b", "arrival": 1.0, "priority": 3, "slo_ms": 500, "cpu_milli": 4000, "mem_mib": 1024,
                   "work": 1.0, "cost_sensitivity": 1}, infer=False)
    u = np.random.default_rng(7).random(2)  # the simulator's network draws for seed 7, in arrival order
    # a on edge: 0.1 s of work at speed 0.5 = 200 ms; cost 0.01 + 1 core * 0.0001 $/s * 0.2 s
    a_edge = (10 + 20 * u[0] + 200) / 300 + 1.0 * (0.01 + 0.0001 * 0.2) / 0.05
    # a on cloud: 100 ms of work; cost 0.02 + 0.00005 * 0.1
    a_cloud = (100 + 100 * u[0] + 100) / 300 + 1.0 * (0.02 + 0.00005 * 0.1) / 0.05
    # b on cloud: 1 s of work, latency > 500 ms SLO: a miss charged 2 * 3/5; cost (4 cores) weighs 1/5
    b_cloud = (100 + 100 * u[1] + 1000) / 500 + 2.0 * 3 / 5 + 0.2 * (0.02 + 4 * 0.00005 * 1.0) / 0.05
    expected = (min(a_edge, a_cloud) + b_cloud) / 2
    assert lower_bound(spec, [a, b], seed=7) == pytest.approx(expected, rel=1e-12)
    assert task_bounds(spec, [a, b], seed=7) == pytest.approx([min(a_edge, a_cloud), b_cloud], rel=1e-12)
    # the tasks never meet, so a policy that picks each one's best node reaches the bound exactly
    res = simulate(spec, [a, b], make_policy("oracle"), seed=7)
    assert list(res.records["node"]) == ["edge-1", "cloud-1"]
    assert res.summary["objective_mean"] == pytest.approx(expected, rel=1e-12)


def test_unplaceable_tasks_are_left_out_like_the_summary(tmp_path) -> None:
    f = tmp_path / "two.yaml"
    f.write_text(TWO_NODES)
    spec = load_cluster(f)
    ok = make_task({"id": "ok", "cpu_milli": 1000, "mem_mib": 1024, "work": 0.1}, infer=False)
    huge = make_task({"id": "huge", "arrival": 1.0, "cpu_milli": 64000, "mem_mib": 1024}, infer=False)
    b = task_bounds(spec, [ok, huge], seed=0)
    assert np.isfinite(b[0]) and np.isnan(b[1])
    assert lower_bound(spec, [ok, huge], seed=0) == pytest.approx(b[0])
    assert np.isnan(lower_bound(spec, [huge], seed=0))


LOCAL = load_cluster(CONFIGS / "cluster" / "local.yaml")
CLUSTERS = {"local": LOCAL, "local-x2": scale_cluster(LOCAL, 2), "no-gpu-mig": drop_pools(LOCAL, ["gpu-mig"])}
WORKLOADS = {n: load_workload(CONFIGS / "workloads" / f"{n}.yaml")
             for n in ("mixed", "high_load", "gpu_heavy", "gpu_heavy_high")}
HEURISTICS = [p for p in available_policies() if is_heuristic(p)] + ["oracle"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster=st.sampled_from(sorted(CLUSTERS)), workload=st.sampled_from(sorted(WORKLOADS)),
       seed=st.integers(0, 10_000), load=st.floats(0.5, 4.0), duration=st.floats(3.0, 10.0))
def test_no_heuristic_scores_below_the_bound(cluster, workload, seed, load, duration) -> None:
    spec = CLUSTERS[cluster]
    tasks = generate(replace(WORKLOADS[workload], duration_s=duration), seed=seed, load_factor=load)
    objective = Objective()
    per_task = dict(zip((t.id for t in tasks), task_bounds(spec, tasks, seed=seed, objective=objective)))
    bound = lower_bound(spec, tasks, seed=seed, objective=objective)
    for name in HEURISTICS:
        res = simulate(spec, tasks, make_policy(name), seed=seed, objective=objective)
        done = res.records[res.records["status"] == "succeeded"]
        assert res.summary["rejected"] == sum(np.isnan(v) for v in per_task.values()), name
        slack = done["score"].to_numpy() - done["task_id"].map(per_task).to_numpy()
        assert (slack >= -1e-9).all(), (name, float(slack.min()))
        assert res.summary["objective_mean"] >= bound - 1e-9, name
