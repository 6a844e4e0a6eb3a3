"""The FGD fragmentation measure on hand-made nodes, the typical shapes, and the incremental index."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cluster.state import ClusterState, allocate
from cluster.topology import ClusterSpec, GpuDevice, NodeSpec, TierSpec
from scheduler.task import Task
from simulations.fragmentation import (FragmentationIndex, Shape, TargetWorkload, cluster_fragmentation,
                                       node_fragmentation, shape_of, typical_shapes)

TRACE = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "alibaba_gpu_v2023"

FREE = [1000, 500, 200, 0]  # 1700 milli free in all


def frag(shape: tuple, gpu_free=FREE, cpu=8000, model_ok=True) -> float:
    wl = TargetWorkload([(shape, 1.0)])
    type_ok = np.full((1, wl.n_gpu_shapes), model_ok)
    return float(node_fragmentation(np.array([cpu]), np.array([gpu_free]), wl, type_ok)[0])


def test_cpu_only_shape_counts_every_free_gpu_milli():
    assert frag((1000, 0, 0)) == 1700


def test_gpu_model_the_node_lacks_counts_every_free_gpu_milli():
    shape = (1000, 300, 1)
    assert frag(shape, model_ok=False) == 1700
    assert frag(shape, model_ok=True) == 200


def test_shape_that_fits_counts_only_gpus_too_small_for_it():
    assert frag((1000, 300, 1)) == 200  # the 200 and the empty GPU
    assert frag((1000, 1000, 1)) == 700  # 500 + 200
    assert frag((1000, 500, 1)) == 200  # free == request is not a fragment


def test_shape_that_does_not_fit_counts_every_free_gpu_milli():
    assert frag((1000, 1000, 2)) == 1700  # only one whole GPU free
    assert frag((9000, 300, 1)) == 1700  # CPU too short
    assert frag((1000, 300, 1), gpu_free=[100, 100, -1, -1]) == 200  # -1 = absent device


def test_node_fragmentation_is_the_weighted_sum_over_shapes():
    wl = TargetWorkload([((1000, 0, 0), 1.0), ((1000, 300, 1), 1.0)])  # weights renormalised to 0.5
    assert node_fragmentation(np.array([8000]), np.array([FREE]), wl)[0] == pytest.approx(950)


def test_model_constraint_uses_the_node_gpu_model():
    tier = TierSpec("gpu", "gpu", (0.0, 0.0), 0, 0, 0, 0)
    nodes = tuple(NodeSpec(f"n{m}", "gpu", "gpu", 8000, 1 << 20, 1.0, m, 1.0, 0.6,
                           tuple(GpuDevice(m, "milli", 1) for _ in range(2))) for m in ("T4", "V100"))
    st = ClusterState.from_spec(ClusterSpec("t", {"gpu": tier}, nodes))
    st.gpu_free[:] = [[1000, 200], [1000, 200]]
    shapes = [(Shape(1000, 300, 1, ("V100",)), 1.0)]
    # T4 node: all 1200 free is fragment; V100 node: only the 200
    assert cluster_fragmentation(st, shapes) == pytest.approx(1200 + 200)


def test_typical_shapes_sorts_by_count_cuts_at_coverage_and_renormalises():
    tasks = [(4000, 500, 1)] * 50 + [(2000, 1000, 1)] * 30 + [(1000, 0, 0)] * 15 + [(8000, 1000, 8)] * 5
    out = typical_shapes(tasks, coverage=0.9)
    assert [s for s, _ in out] == [Shape(4000, 500, 1), Shape(2000, 1000, 1), Shape(1000, 0, 0)]
    assert [w for _, w in out] == pytest.approx([50 / 95, 30 / 95, 15 / 95])
    # equal counts: the larger shape first
    tie = typical_shapes([(1000, 0, 0), (2000, 0, 0)], coverage=0.5)
    assert tie == [(Shape(2000, 0, 0), 1.0)]


def test_shape_of_tasks():
    assert shape_of(Task(id="a", cpu_milli=3000, gpu_milli=250)) == Shape(3000, 250, 1)
    assert shape_of(Task(id="b", cpu_milli=3000, gpu_count=2)) == Shape(3000, 1000, 2)
    assert shape_of(Task(id="c", cpu_milli=3000)) == Shape(3000, 0, 0)


def test_index_updates_only_changed_nodes_and_matches_full_recompute():
    tier = TierSpec("gpu", "gpu", (0.0, 0.0), 0, 0, 0, 0)
    nodes = tuple(NodeSpec(f"n{i}", "gpu", "gpu", 32000, 1 << 20, 1.0, "T4", 1.0, 0.6,
                           tuple(GpuDevice("T4", "milli", 1) for _ in range(g))) for i, g in enumerate([2, 4, 8] * 5))
    st = ClusterState.from_spec(ClusterSpec("t", {"gpu": tier}, nodes))
    shapes = [((2000, 300, 1), 0.4), ((4000, 1000, 1), 0.3), ((8000, 1000, 2), 0.2), ((1000, 0, 0), 0.1)]
    idx = FragmentationIndex(TargetWorkload(shapes))
    idx.sync(st)
    rng = np.random.default_rng(0)
    for j in range(60):
        i = int(rng.integers(st.n_nodes))
        milli = int(rng.integers(1, 1000))
        d = np.flatnonzero(st.gpu_free[i] >= milli)
        if len(d) and st.cpu_free[i] >= 1000:
            allocate(st, i, Task(id=str(j), cpu_milli=1000, mem_mib=1, gpu_milli=milli), ("slice", milli), int(d[0]))
            assert list(idx.sync(st)) == [i]
        assert idx.total == pytest.approx(cluster_fragmentation(st, shapes))


@pytest.mark.skipif(not (TRACE / "openb_pod_list_default.csv").is_file(), reason="Alibaba trace not present")
def test_typical_shapes_of_the_alibaba_trace():
    from simulations.packing import load_packing_pods

    pods = load_packing_pods(str(TRACE / "openb_pod_list_default.csv"))
    out = typical_shapes(pods)
    assert len(out) == 35
    assert sum(w for _, w in out) == pytest.approx(1.0)
    cpu_only = [w for s, w in out if s.gpu_count == 0]
    assert len(cpu_only) == 5 and sum(cpu_only) == pytest.approx(0.136, abs=0.002)
    (s1, w1), (s2, w2) = out[:2]
    assert (s1.cpu_milli, s1.gpu_milli, s1.gpu_count) == (3152, 810, 1)
    assert (s2.cpu_milli, s2.gpu_milli, s2.gpu_count) == (11300, 1000, 1)
    assert w1 == pytest.approx(0.135, abs=0.001) and w2 == pytest.approx(0.1125, abs=0.001)
    kept = {s for s, _ in out}
    assert sum(shape_of(t) in kept for t in pods) / len(pods) == pytest.approx(0.9526, abs=1e-4)
