"""The feasibility cache behind :func:`scheduler.policy.filter_nodes`: bounded, shared by task
shapes with the same feasible nodes, and always the answer of :func:`cluster.state.share_for`.

(That its scalar and vectorised fits-now paths agree is in ``tests/test_scalar_vector.py``.)
"""
from __future__ import annotations

import numpy as np

import scheduler.policy as policy_mod
from cluster.state import ClusterState, share_for
from cluster.topology import load_cluster
from scheduler.policy import FeasibilityCache, filter_nodes
from scheduler.task import Task
from simulations.workloads import WORKLOADS_DIR

LOCAL = load_cluster(WORKLOADS_DIR.parent / "cluster" / "local.yaml")


def _random_task(rng: np.random.Generator, j: int) -> Task:
    kind = int(rng.integers(6))
    return Task(id=str(j), cpu_milli=int(rng.integers(0, 9)) * 500, mem_mib=int(rng.integers(1, 5)) * 1024,
                gpu_milli=[0, 250, 500, 0, 0, 750][kind], gpu_count=[0, 0, 0, 1, 0, 0][kind],
                mig_profile=[None, None, None, None, "1g.10gb", None][kind],
                gpu_models=("V100",) if kind == 5 and rng.random() < 0.5 else ())


def test_the_shape_cache_stays_bounded_and_answers_the_same_after_starting_over(monkeypatch) -> None:
    """A long-lived router sees unboundedly many task shapes: the cache must not grow without end."""
    monkeypatch.setattr(policy_mod, "MAX_SHAPES", 8)
    st = ClusterState.from_spec(LOCAL)
    cache, fresh = FeasibilityCache(), FeasibilityCache()
    rng = np.random.default_rng(11)
    for j in range(60):
        task = _random_task(rng, j)
        (nodes, shares, now), queued = filter_nodes(task, st, cache)
        (n2, s2, now2), q2 = filter_nodes(task, st, fresh)
        assert np.array_equal(nodes, n2) and shares == s2 and np.array_equal(now, now2) and queued == q2
        assert len(cache._cache) <= 8


def test_shapes_with_the_same_feasible_nodes_share_one_entry() -> None:
    """Distinct tasks (a router's batch) mostly differ in ways that do not change which nodes
    could host them: they share one cache entry, and get the same candidates a lone task would."""
    st = ClusterState.from_spec(LOCAL)
    cache = FeasibilityCache()
    a = Task(id="a", cpu_milli=1000, mem_mib=1024)
    b = Task(id="b", cpu_milli=1100, mem_mib=2000)
    big = Task(id="big", cpu_milli=1000, mem_mib=200 * 1024)  # fits fewer nodes (or none)
    assert cache.shape(a, st) is cache.shape(b, st)
    assert cache.shape(big, st) is not cache.shape(a, st)
    rng = np.random.default_rng(5)
    for j in range(200):
        task = _random_task(rng, j)
        (nodes, shares, now), queued = filter_nodes(task, st, cache)
        (n2, s2, now2), q2 = filter_nodes(task, st, FeasibilityCache())
        assert np.array_equal(nodes, n2) and shares == s2 and np.array_equal(now, now2) and queued == q2
    assert len(cache._by_result) < len(cache._cache)


def test_feasibility_cache_shared_by_amounts_between_capacities_matches_share_for() -> None:
    """The cache keys CPU and memory by where they fall among node capacities; at, just under and
    just over every capacity, and in between, it must give exactly the nodes and shares
    ``share_for`` gives."""
    st = ClusterState.from_spec(LOCAL)
    cache = FeasibilityCache()
    cpus = sorted({nd.cpu_milli for nd in LOCAL.nodes})
    mems = sorted({nd.mem_mib for nd in LOCAL.nodes})
    amounts = lambda caps: sorted({max(0, c + d) for c in caps for d in (-1, 0, 1)} | {1, caps[-1] * 2})  # noqa: E731
    rng = np.random.default_rng(2)
    checked = 0
    for cpu in amounts(cpus):
        for mem in amounts(mems):
            base = _random_task(rng, checked)
            task = Task(id=f"b{checked}", cpu_milli=cpu, mem_mib=mem, gpu_milli=base.gpu_milli,
                        gpu_count=base.gpu_count, mig_profile=base.mig_profile, gpu_models=base.gpu_models)
            if cpu == 0 and task.gpu_need == "none":
                continue
            pairs = [(i, s) for i in range(st.n_nodes) if (s := share_for(st, i, task)) is not None]
            nodes, shares = cache.static(task, st)
            assert (nodes.tolist(), shares) == ([i for i, _ in pairs], [s for _, s in pairs]), (cpu, mem)
            checked += 1
    assert checked > 100 and len(cache._by_result) < checked
