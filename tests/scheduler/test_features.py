"""The one feature vector: fixed layout whatever the cluster, finite, and it moves with the state."""
from __future__ import annotations

from dataclasses import replace

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


# ------------------------------------------------------------------ per-candidate features (node-level rf)

def test_candidate_rows_match_the_simulators_own_estimates(local_spec) -> None:
    """Over a busy run (queues form), each candidate row's latency, cost and one-step objective are
    scheduler.estimate's figures for that node (the queue projection, cached across decisions,
    stays exact), fits_now and the queue are the node's, and the *_vs_best columns are 0 for the best."""

    from cluster.state import fits_now_mask
    from scheduler.estimate import expected_lists
    from scheduler.features import CANDIDATE_FEATURE_NAMES, candidate_features
    from scheduler.objective import load_objective
    from scheduler.policy import FeasibilityCache, make_policy
    from simulations.engine import OnlineSimulator
    from simulations.workloads import WORKLOADS_DIR, generate, load_workload

    col = {n: i for i, n in enumerate(CANDIDATE_FEATURE_NAMES)}
    # not the shipped weights: every weight and the logarithmic branch past a low knee count
    obj = replace(load_objective(), latency=1.3, slo_miss=3.0, cost=2.0, cost_ref=0.01, latency_knee=1.5)
    tasks = generate(load_workload(WORKLOADS_DIR / "high_load.yaml"), seed=4, duration_s=60)
    sim = OnlineSimulator(local_spec, tasks, seed=4)
    ff, cache = make_policy("fastest-feasible"), FeasibilityCache()
    waited = checked = 0
    while (task := sim.next_task()) is not None:
        st = sim.state
        nodes, shares, groups = cache.entry(task, st)
        if len(nodes) > 1:
            fits = fits_now_mask(st, task, nodes, groups)
            X = candidate_features(task, st, nodes, shares, fits, obj)
            assert X.shape == (len(nodes), len(CANDIDATE_FEATURE_NAMES)) and np.isfinite(X).all()
            lat, cost = expected_lists(task, st, nodes, shares)
            slo = max(task.slo_ms, 1.0)
            np.testing.assert_allclose(X[:, col["latency_slo"]], np.log10(np.array(lat) / slo), atol=1e-5)
            np.testing.assert_allclose(X[:, col["cost_rel"]], np.array(cost) / obj.cost_ref, rtol=1e-5)
            one = [obj.score(la, slo, task.priority, c, task.cost_sensitivity) for la, c in zip(lat, cost)]
            np.testing.assert_allclose(X[:, col["one_step"]], np.log1p(one), rtol=1e-5)
            assert X[:, col["one_step_vs_best"]].min() == 0.0 and X[:, col["latency_vs_best"]].min() == 0.0
            assert X[:, col["fits_now"]].tolist() == fits.astype(float).tolist()
            assert np.allclose(X[:, col["node_queue"]], np.log1p(st.queue_len[nodes]) / 5.0)
            waited += int((X[:, col["wait_slo"]] > 0).sum())
            checked += 1
        sim.place(task, ff.select(task, st))
    assert checked > 100 and waited > 20  # queues formed and were projected


def test_candidate_layout_is_the_same_on_any_cluster(local_spec) -> None:
    """One row layout whatever the cluster: 6 nodes or every node 8 times (48)."""
    from cluster.state import ClusterState
    from cluster.variants import scale_cluster
    from scheduler.features import CANDIDATE_FEATURE_NAMES, CANDIDATE_SCHEMA_VERSION, candidate_features
    from scheduler.policy import FeasibilityCache

    assert CANDIDATE_SCHEMA_VERSION != SCHEMA_VERSION and len(set(CANDIDATE_FEATURE_NAMES)) == len(CANDIDATE_FEATURE_NAMES)
    task = make_task({"id": "c", "cpu_milli": 1000, "mem_mib": 1024})
    rows = {}
    for spec in (local_spec, scale_cluster(local_spec, 8)):
        st = ClusterState.from_spec(spec)
        nodes, shares = FeasibilityCache().static(task, st)
        X = candidate_features(task, st, nodes, shares, np.ones(len(nodes), dtype=bool))
        assert X.shape == (len(spec.nodes), len(CANDIDATE_FEATURE_NAMES))
        rows[len(spec.nodes)] = X
    # the same node in an idle cluster reads the same, but for the candidate count
    differs = np.flatnonzero(rows[6][0] != rows[48][0])
    assert [CANDIDATE_FEATURE_NAMES[i] for i in differs] == ["candidates"]


def test_compiled_candidate_rows_equal_the_plain_kernel(local_spec, monkeypatch) -> None:
    """The rows a learned policy is served and trained on come from the compiled kernel; the same
    kernel run as plain Python (the fallback without numba) gives them bit for bit, on local.yaml
    and on drawn clusters, with queues and shared time slices in play."""
    from cluster.variants import random_cluster
    from scheduler import features
    from scheduler.candidates import candidates
    from scheduler.policy import FeasibilityCache, make_policy
    from simulations.engine import OnlineSimulator
    from simulations.workloads import WORKLOADS_DIR, generate, load_workload

    import numba

    if numba.config.DISABLE_JIT:
        pytest.skip("numba's JIT is disabled: the plain kernel serves")
    kernel = features._rows_kernel()
    assert kernel is not features._candidate_rows  # numba is a dependency: served compiled
    col = {n: i for i, n in enumerate(features.CANDIDATE_FEATURE_NAMES)}
    seen = {"decisions": 0, "waits": 0, "sharers": 0}
    for spec in (local_spec, random_cluster(local_spec, 7)[0]):
        tasks = generate(load_workload(WORKLOADS_DIR / "high_load.yaml"), seed=3, duration_s=30)
        sim = OnlineSimulator(spec, tasks, seed=3)
        ff, cache = make_policy("fastest-feasible"), FeasibilityCache()
        while (task := sim.next_task()) is not None:
            st = sim.state
            nodes, shares, fits = candidates(cache, task, st)
            if len(nodes):
                X = features.candidate_features(task, st, nodes, shares, fits)
                monkeypatch.setattr(features, "_rows_kernel", lambda: features._candidate_rows)
                plain = features.candidate_features(task, st, nodes, shares, fits)
                monkeypatch.setattr(features, "_rows_kernel", lambda: kernel)
                assert np.array_equal(X, plain)
                seen["decisions"] += 1
                seen["waits"] += int((X[:, col["wait_slo"]] > 0).any())
                seen["sharers"] += int((X[:, col["device_sharers"]] > 0).any())
            sim.place(task, ff.select(task, st))
    assert seen["decisions"] > 200 and seen["waits"] > 20 and seen["sharers"] > 5, seen
    assert len(kernel.signatures) == 1  # one compiled signature: no call type compiles it again on a request
