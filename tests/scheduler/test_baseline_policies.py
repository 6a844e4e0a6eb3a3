"""The baselines users run today: Ray's default (hybrid) placement and kube-scheduler's scoring.

Expected choices are worked out by hand from each rule (see the policies' docstrings) on
``configs/cluster/local.yaml``: edge-1, edge-2 (4 CPUs, 8 GiB), cloud-1, cloud-2 (16 CPUs,
64 GiB), gpu-mig-1, gpu-ts-1 (32 CPUs, 256 GiB, GPUs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cluster.state import CPU_SHARE, ClusterState, allocate
from cluster.topology import load_cluster
from scheduler.policy import make_policy
from scheduler.task import Task, make_task
from simulations.workloads import WORKLOADS_DIR

LOCAL_YAML = WORKLOADS_DIR.parent / "cluster" / "local.yaml"
EDGE1, EDGE2, CLOUD1, CLOUD2, MIG, TS = range(6)


def task(id: str = "t", **kw) -> Task:
    return make_task({"id": id, "cpu_milli": 1000, "mem_mib": 1024, **kw}, infer=False)


def place(state: ClusterState, i: int, t: Task, finish: float = 1e9) -> None:
    state.holding[i].append([finish, allocate(state, i, t, CPU_SHARE)])


def run_stream(policy, state: ClusterState, n: int, **kw) -> list[int]:
    """Place ``n`` equal tasks one after another where the policy says; the chosen nodes."""
    out = []
    for k in range(n):
        t = task(f"s{k}", **kw)
        d = policy.select(t, state)
        assert not d.queued
        place(state, d.node, t)
        out.append(d.node)
    return out


@pytest.fixture
def doubled(tmp_path: Path):
    """local.yaml with every node twice (12 workers + the head: Ray draws among the 2 best)."""
    doc = yaml.safe_load(LOCAL_YAML.read_text())
    doc["nodes"] = [{**nd, "name": f"{nd['name']}{suffix}"} for nd in doc["nodes"] for suffix in ("", "b")]
    p = tmp_path / "doubled.yaml"
    p.write_text(yaml.safe_dump(doc))
    return load_cluster(p)


# ---------------------------------------------------------------- ray-default


def test_ray_fills_nodes_in_order_until_half_used_then_spreads(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    got = run_stream(make_policy("ray-default"), state, 24)
    # 1-CPU tasks: a node takes tasks while its utilisation is below 50% (edge: 2 of 4 CPUs,
    # cloud: 8 of 16); at exactly 50% it no longer counts as 0 and the next node in order wins;
    # GPU nodes are passed over while a node without GPUs has room
    assert got[:20] == [EDGE1] * 2 + [EDGE2] * 2 + [CLOUD1] * 8 + [CLOUD2] * 8
    # then every node is at 50%: the least utilised wins, ties to the first in order
    assert got[20:] == [EDGE1, EDGE2, CLOUD1, CLOUD2]


def test_ray_counts_the_busiest_of_cpu_and_memory(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    place(state, EDGE1, task("m", cpu_milli=500, mem_mib=5 * 1024))  # 12.5% CPU, 62.5% memory
    d = make_policy("ray-default").select(task(), state)
    assert d.node == EDGE2 and d.scores[EDGE1] == -0.625 and d.scores[EDGE2] == 0.0
    # GPUs do not count: a GPU node with half its devices held but idle CPUs scores 0
    state = ClusterState.from_spec(local_spec)
    g = task("g", gpu_count=1, cpu_milli=1000)
    state.holding[TS].append([1e9, allocate(state, TS, g, ("whole", 1))])
    assert state.load()[TS] == 0.5
    assert make_policy("ray-default").select(task("g2", gpu_milli=250), state).scores[TS] == 0.0


def test_ray_uses_gpu_nodes_for_cpu_tasks_only_when_nothing_else_fits(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    for i, cpus in ((EDGE1, 4), (EDGE2, 4), (CLOUD1, 16), (CLOUD2, 16)):
        place(state, i, task(f"fill{i}", cpu_milli=cpus * 1000, mem_mib=1024), finish=10.0)
    d = make_policy("ray-default").select(task(), state)
    assert d.node == MIG and not d.queued  # first GPU node in order, both idle
    # when nothing fits now it queues on the least utilised feasible node (GPU nodes included)
    for i in (MIG, TS):
        place(state, i, task(f"fill{i}", cpu_milli=32_000, mem_mib=1024), finish=10.0)
    d = make_policy("ray-default").select(task(), state)
    assert d.queued and d.node == EDGE1  # every node at 100% CPU: the first in order


def test_ray_draws_among_the_k_best_on_a_bigger_cluster(doubled) -> None:
    state = ClusterState.from_spec(doubled)
    pol = make_policy("ray-default")
    picks = set()
    for seed in range(20):
        pol.reset(seed)
        d = pol.select(task(), state)
        picks.add(d.node)
        assert "drawn among the 2 best" in d.explanation
    assert picks == {0, 1}  # edge-1 and edge-1b: k = int(13 * 0.2) = 2 of the order edge-1, edge-1b, edge-2, ...
    pol.reset(5)
    first = [pol.select(task(), state).node for _ in range(10)]
    pol.reset(5)
    assert [pol.select(task(), state).node for _ in range(10)] == first  # seeded
    # a local node wins whenever its score is the lowest, skipping the draw
    local = make_policy("ray-default", local_node=1)
    assert {local.select(task(), state).node for _ in range(10)} == {1}
    place(state, 1, task("half", cpu_milli=2000))  # edge-1b at 50%: no longer among the lowest
    assert {local.select(task(), state).node for _ in range(10)} <= {0, 2}


# ---------------------------------------------------------------- k8s-default


def test_k8s_scores_least_allocated_plus_balanced_on_an_empty_cluster(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    d = make_policy("k8s-default").select(task(), state)
    # edge:  LeastAllocated (75 + 87) // 2 = 81, Balanced int((1 - |.25 - .125| / 2) * 100) = 93
    # cloud: (93 + 98) // 2 = 95, int((1 - |.0625 - .015625| / 2) * 100) = 97
    # gpu:   (96 + 99) // 2 = 97, int((1 - |.03125 - .00390625| / 2) * 100) = 98
    assert d.scores.tolist() == [174, 174, 192, 192, 195, 195]
    assert d.node in (MIG, TS) and "LeastAllocated" in d.explanation


def test_k8s_prefers_the_node_left_more_balanced(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    place(state, CLOUD1, task("cpu-heavy", cpu_milli=8000, mem_mib=1))
    place(state, CLOUD2, task("mem-heavy", cpu_milli=1, mem_mib=32 * 1024))
    d = make_policy("k8s-default").select(task(), state)
    # both have LeastAllocated 70: cloud-1 (43 + 98) // 2, cloud-2 (93 + 48) // 2; balance differs:
    # cloud-1 int((1 - |.5625 - .0156| / 2) * 100) = 72, cloud-2 int((1 - |.0626 - .515625| / 2) * 100) = 77
    assert d.scores[CLOUD1] == 70 + 72 and d.scores[CLOUD2] == 70 + 77


def test_k8s_breaks_ties_at_random_seeded(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    pol = make_policy("k8s-default")
    picks = []
    for seed in range(20):
        pol.reset(seed)
        picks.append(pol.select(task(), state).node)
    assert set(picks) == {MIG, TS}  # 195 each: a uniform draw, as selectHost does
    pol.reset(3)
    a = pol.select(task(), state).node
    pol.reset(3)
    assert pol.select(task(), state).node == a


def test_k8s_spreads_a_stream_of_tasks(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    got = run_stream(make_policy("k8s-default"), state, 12)
    # the GPU nodes score highest until their free share drops to the cloud nodes' level
    assert set(got[:2]) == {MIG, TS} and {EDGE1, EDGE2}.isdisjoint(got)


def test_k8s_queues_a_task_nothing_fits_on_the_node_that_frees_first(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    for i, cpus in enumerate((4, 4, 16, 16, 32, 32)):
        place(state, i, task(f"fill{i}", cpu_milli=cpus * 1000), finish=100.0 - 10 * (i == CLOUD2))
    d = make_policy("k8s-default").select(task(), state)
    assert d.queued and d.node == CLOUD2 and "Pending" in d.explanation
    assert d.scores[CLOUD2] == -90.0 and np.nanmax(d.scores) == -90.0  # seconds until it can start
