"""The FGD paper's packing policies on hand-made milli-shared nodes, and on the local MIG / time-sliced cluster."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cluster.state import ClusterState, allocate, check_invariants, release
from cluster.topology import ClusterSpec, GpuDevice, NodeSpec, TierSpec, load_cluster
from scheduler.policy import make_policy
from scheduler.task import Task
from simulations.fragmentation import TargetWorkload, node_fragmentation

PACKING = ["random", "best-fit", "dot-product", "gpu-packing", "gpu-clustering", "fgd"]
LOCAL = Path(__file__).resolve().parents[2] / "configs" / "cluster" / "local.yaml"


def milli_cluster(*nodes: tuple[int, int]) -> ClusterState:
    """Nodes of (cpu milli, GPU count), all T4 with milli-shared GPUs."""
    tier = TierSpec("gpu", "gpu", (0.0, 0.0), 0, 0, 0, 0)
    specs = tuple(NodeSpec(f"n{i}", "gpu", "gpu", cpu, 1 << 20, 1.0, "T4", 1.0, 0.6,
                           tuple(GpuDevice("T4", "milli", 1) for _ in range(g)))
                  for i, (cpu, g) in enumerate(nodes))
    return ClusterState.from_spec(ClusterSpec("hand", {"gpu": tier}, specs))


def share_task(milli: int, cpu: int = 1000, id: str = "t") -> Task:
    return Task(id=id, cpu_milli=cpu, mem_mib=1, gpu_milli=milli)


def place(policy, task: Task, state: ClusterState):
    d = policy.select(task, state)
    assert d.placed and not d.queued, d.explanation
    return d, allocate(state, d.node, task, d.share, device=d.device)


# ----------------------------------------------------------------- GPU choice within a node


@pytest.mark.parametrize("name", ["best-fit", "dot-product", "gpu-packing", "gpu-clustering"])
def test_best_fit_gpu_within_the_node(name):
    st = milli_cluster((32000, 4))
    st.gpu_free[0] = [1000, 600, 200, 700]
    _, alloc = place(make_policy(name), share_task(250), st)
    assert alloc.devices == ((1, 250),)  # least free that still fits


def test_random_gpu_is_uniform_over_gpus_that_fit():
    seen = []
    for seed in range(300):
        st = milli_cluster((32000, 4))
        st.gpu_free[0] = [1000, 600, 200, 700]
        pol = make_policy("random")
        pol.reset(seed)
        _, alloc = place(pol, share_task(250), st)
        seen.append(alloc.devices[0][0])
    counts = np.bincount(seen, minlength=4)
    assert counts[2] == 0  # 200 free never fits 250
    assert all(60 < counts[d] < 140 for d in (0, 1, 3))


def test_fgd_gpu_is_the_one_that_grows_fragmentation_least():
    # target workload: half-GPU tasks. Putting 250 on the full GPU leaves 750 (still fits a
    # half), on the 600 or 700 GPU leaves a fragment; best fit would pick the 600 GPU.
    shapes = [((1000, 500, 1), 1.0)]
    st = milli_cluster((32000, 4))
    st.gpu_free[0] = [1000, 600, 200, 700]
    pol = make_policy("fgd", target_workload=shapes)
    d, alloc = place(pol, share_task(250), st)
    assert alloc.devices == ((0, 250),)
    # the node score is the best GPU's int(100 * sigmoid(delta / 1000)), delta = F_before - F_after
    wl = TargetWorkload(shapes)
    before = node_fragmentation(np.array([32000]), np.array([[1000, 600, 200, 700]]), wl)[0]
    after = node_fragmentation(np.array([31000]), np.array([[750, 600, 200, 700]]), wl)[0]
    assert d.scores[0] == int(100 / (1 + math.exp(-(before - after) / 1000)))


def test_whole_gpu_tasks_take_the_lowest_index_fully_free_gpus():
    for name in PACKING:
        st = milli_cluster((32000, 4))
        st.gpu_free[0] = [600, 1000, 1000, 1000]
        pol = make_policy(name, target_workload=[((1000, 500, 1), 1.0)]) if name == "fgd" else make_policy(name)
        _, alloc = place(pol, Task(id="w", cpu_milli=1000, mem_mib=1, gpu_count=2), st)
        assert [d for d, _ in alloc.devices] == [1, 2], name


# ----------------------------------------------------------------- node scores


def test_best_fit_prefers_the_node_left_tightest():
    st = milli_cluster((64000, 8), (16000, 2))
    d = make_policy("best-fit").select(share_task(500, cpu=4000), st)
    assert d.node == 1
    # int(100 * (1 - [0.5 (16000-4000)/128000 + 0.5 (2000-500)/8000]))
    assert d.scores[1] == int(100 * (1 - (0.5 * 12000 / 128000 + 0.5 * 1500 / 8000)))


def test_dot_product_prefers_the_node_least_aligned_with_the_request():
    st = milli_cluster((64000, 8), (16000, 2))
    d = make_policy("dot-product").select(share_task(500, cpu=4000), st)
    assert d.node == 1
    assert d.scores[0] == int(100 * (1 - 0.5 * (64000 / 128000 * 4000 / 128000 + 8000 / 8000 * 500 / 8000)))


def test_gpu_packing_prefers_shared_gpus_then_used_nodes_then_idle_nodes():
    st = milli_cluster((64000, 8), (64000, 8), (64000, 8))
    st.gpu_free[1] = [0] + [1000] * 7  # used node, only fully free GPUs fit
    st.gpu_free[2] = [300] + [1000] * 7  # a shared GPU with 300 free
    d = make_policy("gpu-packing").select(share_task(250), st)
    assert list(d.scores) == [max(33 - 8, 8), 49, max(100 - (300 * 100 // 1000) // 10, 50)]
    assert d.node == 2
    cpu_only = make_policy("gpu-packing").select(Task(id="c", cpu_milli=1000, mem_mib=1), st)
    assert (cpu_only.scores == 0).all()


def test_gpu_clustering_keeps_same_kind_tasks_together():
    st = milli_cluster((64000, 8), (64000, 8), (64000, 8))
    pol = make_policy("gpu-clustering")
    pol.node_rank = np.array([2, 1, 0])  # ties go to n2, then n1
    d1, _ = place(pol, share_task(300, id="s1"), st)
    assert d1.node == 2
    d2, _ = place(pol, Task(id="w1", cpu_milli=1000, mem_mib=1, gpu_count=2), st)
    assert d2.node == 1  # an idle node (25 + ...) beats a node of another kind (0 + ...)
    d3 = pol.select(share_task(300, id="s2"), st)
    assert d3.node == 2  # only share-gpu there: + 75
    assert d3.scores[2] == 25 * (8000 - 7700) // 8000 + 75
    assert d3.scores[1] == 25 * (8000 - 6000) // 8000 + 0
    assert d3.scores[0] == 25  # idle node: + 25


def test_ties_go_to_the_lowest_node_rank():
    for name in ["best-fit", "dot-product", "gpu-packing", "gpu-clustering", "fgd"]:
        st = milli_cluster((32000, 4), (32000, 4), (32000, 4))
        pol = make_policy(name, target_workload=[((1000, 500, 1), 1.0)]) if name == "fgd" else make_policy(name)
        assert pol.select(share_task(250), st).node == 0, name
        pol.node_rank = np.array([2, 0, 1])
        assert pol.select(share_task(250), st).node == 1, name


def test_fgd_default_target_workload_comes_from_tasks_seen():
    st = milli_cluster((32000, 4))
    pol = make_policy("fgd")
    place(pol, share_task(250), st)
    assert [(s.cpu_milli, s.gpu_milli, s.gpu_count) for s, _ in pol.target_workload] == [(1000, 250, 1)]


# ----------------------------------------------------------------- the small online cluster


@pytest.mark.parametrize("name", PACKING)
def test_policies_run_on_the_local_mig_and_time_sliced_cluster(name):
    spec = load_cluster(LOCAL)
    st = ClusterState.from_spec(spec)
    pol = make_policy(name)
    pol.reset(3)
    rng = np.random.default_rng(0)
    held, placed = [], set()
    for j in range(200):
        kind = int(rng.integers(5))
        task = Task(id=str(j), cpu_milli=int(rng.integers(1, 8)) * 500, mem_mib=512,
                    gpu_milli=[0, 250, 500, 0, 0][kind], gpu_count=[0, 0, 0, 1, 0][kind],
                    mig_profile=[None, None, None, None, "1g.10gb"][kind])
        d = pol.select(task, st)
        assert d.node >= 0
        if not d.queued:
            held.append(allocate(st, d.node, task, d.share, device=d.device))
            placed.add(d.share[0])
        if held and rng.random() < 0.45:
            release(st, held.pop(int(rng.integers(len(held)))))
        check_invariants(st)
    assert {"cpu", "slice", "whole", "mig"} <= placed
