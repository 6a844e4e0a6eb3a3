"""The small-cluster (plain Python) filter agrees with the vectorised one, decision by decision.

:func:`scheduler.policy.filter_nodes` tests "fits now" with :func:`cluster.state.fits_now_list`
and caches candidates per fits-now pattern when a task has at most ``SCALAR_MAX_NODES``
candidate nodes, and with :func:`cluster.state.fits_now_mask` above it. Both must give
the same candidates, and every policy the same decisions, whichever path runs.
"""
from __future__ import annotations

import numpy as np
import pytest

import scheduler.policy as policy_mod
from cluster.state import (ClusterState, allocate, check_invariants, fits_now, fits_now_list, fits_now_mask,
                           release, share_for)
from cluster.topology import load_cluster
from scheduler.policy import FeasibilityCache, filter_nodes, make_policy
from scheduler.task import Task
from simulations.engine import simulate
from simulations.workloads import WORKLOADS_DIR, generate, load_workload

LOCAL = load_cluster(WORKLOADS_DIR.parent / "cluster" / "local.yaml")


def _random_task(rng: np.random.Generator, j: int) -> Task:
    kind = int(rng.integers(6))
    return Task(id=str(j), cpu_milli=int(rng.integers(0, 9)) * 500, mem_mib=int(rng.integers(1, 5)) * 1024,
                gpu_milli=[0, 250, 500, 0, 0, 750][kind], gpu_count=[0, 0, 0, 1, 0, 0][kind],
                mig_profile=[None, None, None, None, "1g.10gb", None][kind],
                gpu_models=("V100",) if kind == 5 and rng.random() < 0.5 else ())


def test_fits_now_list_equals_the_mask_and_fits_now_on_a_busy_cluster() -> None:
    st = ClusterState.from_spec(LOCAL)
    rng = np.random.default_rng(5)
    held = []
    for j in range(400):
        task = _random_task(rng, j)
        pairs = [(i, s) for i in range(st.n_nodes) if (s := share_for(st, i, task)) is not None]
        if not pairs:
            continue
        nodes, shares = [i for i, _ in pairs], [s for _, s in pairs]
        scalar = fits_now_list(st, task, nodes, shares)
        assert scalar == fits_now_mask(st, task, np.array(nodes), shares).tolist()
        assert scalar == [bool(fits_now(st, i, task, s)) for i, s in pairs]
        fit = [p for p, ok in zip(pairs, scalar) if ok]
        if fit:
            i, s = fit[int(rng.integers(len(fit)))]
            held.append(allocate(st, i, task, s))
        if held and rng.random() < 0.4:
            release(st, held.pop(int(rng.integers(len(held)))))
        check_invariants(st)


def test_both_filter_paths_give_the_same_candidates(monkeypatch) -> None:
    st = ClusterState.from_spec(LOCAL)
    rng = np.random.default_rng(11)
    scalar_cache, vector_cache = FeasibilityCache(), FeasibilityCache()
    held = []
    for j in range(300):
        task = _random_task(rng, j)
        for queue_aware in (False, True):
            a = filter_nodes(task, st, scalar_cache, queue_aware)
            monkeypatch.setattr(policy_mod, "SCALAR_MAX_NODES", -1)
            b = filter_nodes(task, st, vector_cache, queue_aware)
            monkeypatch.undo()
            (na, sa, fa), qa = a
            (nb, sb, fb), qb = b
            assert na.tolist() == nb.tolist() and sa == sb and fa.tolist() == fb.tolist() and qa == qb
            assert not na.flags.writeable and not fa.flags.writeable  # cached: read-only
        (nodes, shares, now), _ = filter_nodes(task, st, scalar_cache)
        if len(nodes) and now.any():
            k = int(np.flatnonzero(now)[0])
            held.append(allocate(st, int(nodes[k]), task, shares[k]))
        if held and rng.random() < 0.4:
            release(st, held.pop(int(rng.integers(len(held)))))


@pytest.mark.parametrize("name", ["least-loaded", "round-robin", "cheapest-feasible", "fastest-feasible",
                                  "best-fit", "random", "oracle"])
def test_simulation_records_do_not_depend_on_the_filter_path(name, monkeypatch) -> None:
    tasks = generate(load_workload(WORKLOADS_DIR / "high_load.yaml"), seed=4, duration_s=40)
    scalar = simulate(LOCAL, tasks, make_policy(name), seed=4).records
    monkeypatch.setattr(policy_mod, "SCALAR_MAX_NODES", -1)
    vector = simulate(LOCAL, tasks, make_policy(name), seed=4).records
    assert len(scalar) == len(tasks)
    assert scalar.equals(vector)


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
