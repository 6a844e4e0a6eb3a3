"""The one feature vector: fixed layout whatever the cluster, finite, and it moves with the state."""
from __future__ import annotations

import numpy as np
import pytest

from cluster.state import CPU_SHARE, ClusterState, allocate
from cluster.topology import ClusterSpec
from scheduler.features import FEATURE_NAMES, N_FEATURES, SCHEMA_VERSION, feature_vector
from scheduler.task import make_task
from tests.conftest import CONFIGS

TASKS = [
    make_task({"id": "cpu", "cpu_milli": 500}, infer=False),
    make_task({"id": "frac", "gpu_milli": 250, "cpu_milli": 2000}, infer=False),
    make_task({"id": "whole", "gpu_count": 2, "work": 3600.0}, infer=False),
    make_task({"id": "mig", "mig_profile": "1g.10gb", "priority": 10, "slo_ms": 50}, infer=False),
    make_task({"id": "huge", "gpu_count": 64, "cpu_milli": 1_000_000}, infer=False),  # fits nowhere
]


def named(vec: np.ndarray) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, vec.tolist()))


def test_schema_version_and_names() -> None:
    assert isinstance(SCHEMA_VERSION, str) and SCHEMA_VERSION
    assert N_FEATURES == len(FEATURE_NAMES) == len(set(FEATURE_NAMES))


@pytest.mark.parametrize("t", TASKS, ids=lambda t: t.id)
def test_vector_shape_and_finite(local_spec, t) -> None:
    v = feature_vector(t, ClusterState.from_spec(local_spec))
    assert v.shape == (len(FEATURE_NAMES),)
    assert np.isfinite(v).all()


def test_same_layout_on_a_big_trace_cluster(local_spec, traces) -> None:
    if not (traces / "alibaba_gpu_v2023" / "openb_node_list_gpu_node.csv").is_file():
        pytest.skip("Alibaba node list not present")
    from cluster.alibaba import load_cluster_any

    big = load_cluster_any(CONFIGS / "cluster" / "alibaba_openb.yaml")
    assert len(big.nodes) > 100 * len(local_spec.nodes)
    for t in TASKS:
        small_v = feature_vector(t, ClusterState.from_spec(local_spec))
        big_v = feature_vector(t, ClusterState.from_spec(big))
        assert big_v.shape == small_v.shape and np.isfinite(big_v).all()
        # the task part of the vector does not depend on the cluster
        assert (big_v[:11] == small_v[:11]).all()


def test_task_features_distinguish_tasks(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    cpu, frac, whole, mig, _ = (named(feature_vector(t, state)) for t in TASKS)
    assert (cpu["need_none"], frac["need_fraction"], whole["need_whole"], mig["need_mig"]) == (1, 1, 1, 1)
    assert mig["priority"] > cpu["priority"]
    assert mig["latency_requirement"] < cpu["latency_requirement"]
    assert whole["gpu_requirement"] > frac["gpu_requirement"] > cpu["gpu_requirement"] == 0


def test_feasibility_features(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    cpu, frac, _, mig, huge = (named(feature_vector(t, state)) for t in TASKS)
    assert cpu["edge_feasible"] == cpu["cloud_feasible"] == cpu["edge_fits_now"] == 1
    assert frac["edge_feasible"] == frac["cloud_feasible"] == 0
    assert frac["gpu-mig_feasible"] == frac["gpu-shared_feasible"] == 1
    assert mig["gpu-mig_feasible"] == 1 and mig["gpu-shared_feasible"] == 0
    assert all(huge[f"{c}_feasible"] == 0 for c in ("edge", "cloud", "gpu-mig", "gpu-shared", "gpu-whole"))


def test_loads_rise_after_allocations(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    cpu_task, frac_task = TASKS[0], TASKS[1]
    before = named(feature_vector(cpu_task, state))
    assert before["edge_load"] == before["gpu_load"] == 0.0
    allocate(state, 0, make_task({"id": "x", "cpu_milli": 3000}, infer=False), CPU_SHARE)
    allocate(state, 5, frac_task, ("slice", 250))
    after = named(feature_vector(cpu_task, state))
    assert after["edge_load"] > before["edge_load"]
    assert after["gpu_load"] > before["gpu_load"]
    assert after["gpu-shared_free_gpu"] < before["gpu-shared_free_gpu"]
    assert after["cloud_load"] == before["cloud_load"]
    # fill both edge nodes: a CPU task no longer fits there now, though it could later
    allocate(state, 0, make_task({"id": "y", "cpu_milli": 1000}, infer=False), CPU_SHARE)
    allocate(state, 1, make_task({"id": "z", "cpu_milli": 4000}, infer=False), CPU_SHARE)
    full = named(feature_vector(cpu_task, state))
    assert full["edge_fits_now"] == 0 and full["edge_feasible"] == 1 and full["edge_free_cpu"] == 0


def test_queue_length_feature(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    base = named(feature_vector(TASKS[0], state))["cloud_queue"]
    state.queue_len[2] = 5
    assert named(feature_vector(TASKS[0], state))["cloud_queue"] > base


def test_features_are_right_for_clusters_built_one_after_another(local_spec) -> None:
    """E.g. an RL run or a test suite that builds many clusters in one process."""
    wrong = []
    for k in range(100):
        spec = ClusterSpec(name=f"c{k}", tiers=local_spec.tiers, nodes=local_spec.nodes[k % 6:])
        state = ClusterState.from_spec(spec)
        try:
            v = feature_vector(TASKS[0], state)
        except IndexError:
            wrong.append(k)
            continue
        fresh = feature_vector(TASKS[0], ClusterState.from_spec(spec))  # nothing cached yet
        if not np.array_equal(v, fresh):
            wrong.append(k)
        del spec, state
    assert wrong == []


