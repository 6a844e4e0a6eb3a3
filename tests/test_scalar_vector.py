"""Every scalar fast path equals its vector form, over random busy states: one harness.

Where numpy's per-call overhead costs more than the work on a few nodes, a plain-Python
form sits beside the array form in the same module. Each pair must give the same
answer, bit for bit where the code says so, on states with running tasks, FIFO queues,
time slices, whole GPUs and MIG instances:

* fit (:mod:`cluster.state`): :func:`gpu_fits` / ``_gpu_fits_mask``, :func:`fits_now` /
  :func:`fits_now_list` / :func:`fits_now_mask` / :meth:`NodeFree.fits`;
* one node's accounting (:mod:`cluster.state`): :class:`NodeFree` / :func:`allocate` and
  :func:`release`, and the queue projection on it (:mod:`cluster.booking`:
  :func:`projected_start` / a :class:`Forward` roll of a state copy);
* the candidate filter (:mod:`scheduler.policy`) and the node-level policies' candidates
  (:mod:`scheduler.candidates`): the scalar path on clusters up to ``SCALAR_MAX_NODES`` nodes / the
  vectorised one; a batch (``score_many``) / each task alone (``score``);
* estimate (:mod:`scheduler.estimate`): :func:`expected_lists` / :func:`expected_many`;
* features (:mod:`scheduler.features`): :class:`FeatureBuilder` / ``_vectorised``;
* the objective (:mod:`scheduler.objective`): ``score`` / ``scores``.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import scheduler.policy as policy_mod
from cluster.booking import Forward, projected_start, sharers
from cluster.state import (PROFILE_NAMES, ClusterState, NodeFree, _gpu_fits_mask, allocate, feasible_nodes,
                           fits_now, fits_now_list, fits_now_mask, gpu_fits, release, share_for)
from cluster.topology import load_cluster
from scheduler import features
from scheduler.candidates import candidates
from scheduler.estimate import expected_lists, expected_many
from scheduler.features import feature_vector
from scheduler.objective import Objective
from scheduler.policy import FeasibilityCache, ScoringPolicy, available_policies, filter_nodes, make_policy, \
    select_many
from scheduler.task import Task
from simulations.engine import simulate
from simulations.workloads import WORKLOADS_DIR, generate, load_workload
from tests.conftest import LOCAL_YAML

LOCAL = load_cluster(LOCAL_YAML)

#: (cpu milli, memory MiB, GPU milli, GPU count, MIG profile, GPU models): every kind of need on
#: local.yaml (CPU only, slices on the time-sliced node or a MIG instance, whole GPUs, MIG
#: profiles, a model constraint) and some that fit few nodes or none
SHAPES = [
    (500, 512, 0, 0, None, ()), (4000, 8192, 0, 0, None, ()), (2000, 4096, 0, 0, None, ()),
    (0, 0, 100, 0, None, ()), (1000, 1024, 250, 0, None, ()), (1000, 2048, 300, 0, None, ()),
    (4000, 16384, 500, 0, None, ()), (500, 1024, 750, 0, None, ()), (8000, 32768, 0, 1, None, ()),
    (1000, 1024, 0, 2, None, ()), (500, 1024, 0, 0, "1g.10gb", ()), (500, 1024, 0, 0, "2g.20gb", ()),
    (500, 1024, 0, 0, "3g.40gb", ()), (500, 1024, 0, 0, "4g.40gb", ()), (1000, 1024, 250, 0, None, ("V100",)),
    (1000, 1024, 250, 0, None, ("A100",)), (30000, 200 * 1024, 0, 0, None, ()), (10**7, 1, 0, 0, None, ()),
]
#: every share a node may be asked about, feasible there or not
SHARES = [("cpu", 0), *(("slice", m) for m in (250, 500, 750, 1000)), ("whole", 1), ("whole", 2),
          *(("mig", p) for p in PROFILE_NAMES)]


def shaped(k: int, name: str, work: float = 1.0, priority: int = 5, slo_ms: float = 1000.0) -> Task:
    cpu, mem, milli, count, profile, models = SHAPES[k % len(SHAPES)]
    return Task(id=name, cpu_milli=cpu, mem_mib=mem, gpu_milli=milli, gpu_count=count, mig_profile=profile,
                gpu_models=models, work=work, priority=priority, slo_ms=slo_ms)


TASKS = st.builds(lambda k, w, p, s, n: shaped(k, f"p{n}", w, p, s), st.integers(0, len(SHAPES) - 1),
                  st.floats(0.001, 900.0), st.integers(1, 10), st.floats(5.0, 9e5), st.integers(0, 10**6))


@st.composite
def busy_states(draw, max_tasks: int = 200) -> ClusterState:
    """local.yaml part-way through a run: up to ``max_tasks`` tasks placed on random feasible
    nodes through the booking core (started, or queued behind others: work of up to 300 s
    arrives every 0.2 s on average), time moving on, some finished.

    Drawn as a count and a seed (a list of that many drawn steps would mostly be short).
    """
    n = draw(st.integers(0, max_tasks))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    state = ClusterState.from_spec(LOCAL)
    state.now = now = float(rng.integers(0, 1000))
    roll = Forward(state)
    for j in range(n):
        now += float(rng.integers(0, 40)) / 100.0
        roll.advance(now)
        state.now = now
        task = shaped(int(rng.integers(len(SHAPES))), f"b{j}", work=float(rng.uniform(0.1, 300.0)),
                      priority=int(rng.integers(1, 11)))
        cand = feasible_nodes(state, task)
        if cand:
            i, share, _ = cand[int(rng.integers(len(cand)))]
            roll.place(i, task, share, now, float(rng.integers(0, 200)) / 1000.0)
    return state


def everything(state: ClusterState) -> tuple:
    """All a state holds, comparable: to show a check left it untouched."""
    return (state.cpu_free.tolist(), state.mem_free.tolist(), state.gpu_free.tolist(), state.gpu_tasks.tolist(),
            state.mig_free.tolist(), state.mig_used.tolist(), state.gpu_held.tolist(), state.util.tolist(),
            state.running.tolist(), state.queue_len.tolist(), state.now, repr(state.mig_slots),
            [[id(x) for x in q] for q in state.queues], [[id(h) for h in hs] for hs in state.holding])


# ---------------------------------------------------------------- fit


@settings(max_examples=60, deadline=None)
@given(state=busy_states(), probes=st.lists(TASKS, min_size=1, max_size=12))
def test_every_form_of_the_fit_test_agrees(state, probes) -> None:
    n = state.n_nodes
    free = [NodeFree(state, i) for i in range(n)]
    for share in SHARES:
        mask = _gpu_fits_mask(state, np.arange(n), share).tolist()
        assert mask == [gpu_fits(share, state.gpu_free[i], state.mig_free[i]) for i in range(n)], share
        assert mask == [gpu_fits(share, state.gpu_free[i].tolist(), state.mig_free[i].tolist()) for i in range(n)]
    for task in probes:
        pairs = [(i, s) for i in range(n) if (s := share_for(state, i, task)) is not None]
        nodes, shares = [i for i, _ in pairs], [s for _, s in pairs]
        scalar = fits_now_list(state, task, nodes, shares)
        assert scalar == [fits_now(state, i, task, s) for i, s in pairs]
        assert scalar == [free[i].fits(task, s) for i, s in pairs]
        if pairs:
            assert scalar == fits_now_mask(state, task, np.array(nodes), shares).tolist()
            assert scalar == fits_now_mask(state, task, np.array(nodes), policy_mod.share_groups(shares)).tolist()
        if all(s[0] == "cpu" for s in shares):
            assert scalar == fits_now_list(state, task, nodes, shares, cpu_only=True)


# ---------------------------------------------------------------- one node's accounting


def row(state: ClusterState, i: int) -> tuple:
    return (state.cpu_free.item(i), state.mem_free.item(i), state.gpu_free[i].tolist(), state.gpu_tasks[i].tolist(),
            state.mig_free[i].tolist(), repr(state.mig_slots[i]))


def scalar_row(free: NodeFree) -> tuple:
    return free.cpu, free.mem, free.gpu, free.tasks, free.mig, repr(free.slots)


def held_fields(a) -> tuple:
    return a.node, a.cpu, a.mem, a.devices, a.mig, a.share, a.gpu_milli


NODE_OPS = st.lists(st.tuples(st.booleans(), st.integers(0, 10**6), st.integers(-1, 3)), min_size=1, max_size=60)


@settings(max_examples=80, deadline=None)
@given(state=busy_states(), node=st.integers(0, 5), ops=NODE_OPS)
def test_node_free_allocates_and_releases_as_the_arrays_do(state, node, ops) -> None:
    """NodeFree against allocate/release on a copy: the same Allocation (device and MIG instance),
    the same refusals, the same free row after every step, with the node's own running tasks
    (allocated in the original state) freed in both."""
    original = everything(state)
    vec, free = state.copy(), NodeFree(state, node)
    live = [(h[1], h[1]) for h in state.holding[node]]  # (array side, scalar side)
    n_dev = state.gpu_free.shape[1]
    for is_alloc, a, d in ops:
        if is_alloc or not live:
            task = shaped(a, f"o{a}")
            share = share_for(state, node, task) or SHARES[a % len(SHARES)]
            device = None if d < 0 else d % n_dev
            try:
                want = allocate(vec, node, task, share, device)
            except ValueError:
                with pytest.raises(ValueError):
                    free.allocate(task, share, device)
            else:
                got = free.allocate(task, share, device)
                assert held_fields(got) == held_fields(want)
                assert free.sharers(got) == sharers(vec, node, want)
                live.append((want, got))
        else:
            want, got = live.pop(a % len(live))
            release(vec, want)
            free.release(got)
        assert scalar_row(free) == row(vec, node)
    assert everything(state) == original


def _rolled_start(state: ClusterState, i: int, task: Task, share) -> float:
    """When ``task``, queued on node ``i`` now, starts in a :class:`Forward` roll of a copy."""
    roll = Forward(state.copy())
    if roll.place(i, task, share, state.now, 0.0):
        return state.now
    t = state.now
    while any(item[0] is task for item in roll.state.queues[i]):
        t = roll.next_finish()
        if t == math.inf:
            return t
        roll.advance(t)
    return t


@settings(max_examples=60, deadline=None)
@given(state=busy_states(), probes=st.lists(TASKS, min_size=1, max_size=6))
def test_the_queue_projection_is_a_forward_roll_of_a_copy(state, probes) -> None:
    """projected_start (NodeFree, one node replayed alone) gives the start a roll of the whole
    state (numpy accounting, the simulator's) gives, and touches nothing. Up to the last bit: a
    replayed task's finish is ``start + (seconds + execution)``, the simulator's
    ``(start + seconds) + execution``."""
    original = everything(state)
    for task in probes:
        for i in range(state.n_nodes):
            share = share_for(state, i, task)
            if share is not None:
                want = _rolled_start(state, i, task, share)
                assert projected_start(state, i, task, share) == pytest.approx(want, rel=1e-12), (i, share)
    assert everything(state) == original


# ---------------------------------------------------------------- the candidate filter


@settings(max_examples=40, deadline=None)
@given(state=busy_states(), probes=st.lists(TASKS, min_size=1, max_size=12))
def test_both_filter_paths_give_the_same_candidates(state, probes) -> None:
    scalar_cache, vector_cache = FeasibilityCache(), FeasibilityCache()
    for task in probes:
        for queue_aware in (False, True):
            (na, sa, fa), qa = filter_nodes(task, state, scalar_cache, queue_aware)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(policy_mod, "SCALAR_MAX_NODES", -1)
                (nb, sb, fb), qb = filter_nodes(task, state, vector_cache, queue_aware)
            assert na.tolist() == nb.tolist() and sa == sb and fa.tolist() == fb.tolist() and qa == qb
            assert not na.flags.writeable and not fa.flags.writeable  # cached: read-only
        # the node-level policies' candidates (scheduler.candidates): the same switch, scalar fits / the mask
        ca = candidates(scalar_cache, task, state)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(policy_mod, "SCALAR_MAX_NODES", -1)
            cb = candidates(vector_cache, task, state)
        assert ca[0].tolist() == cb[0].tolist() and ca[1] == cb[1] and ca[2].tolist() == cb[2].tolist()
        assert ca[2].dtype == cb[2].dtype == np.bool_


def test_a_big_cluster_with_few_feasible_nodes_reuses_one_candidate_set_per_pattern() -> None:
    """local.yaml eight times over (48 nodes: the vector fits test) and a MIG task only its 16 MIG nodes
    can host: the candidates are the scalar path's, and the same object each time (a router batch
    scores the tasks sharing it together)."""
    from cluster.variants import variant

    big, _ = variant(load_cluster(LOCAL_YAML), "x8")
    state = ClusterState.from_spec(big)
    assert state.n_nodes > policy_mod.SCALAR_MAX_NODES
    task = Task(id="m", kind="mig", arrival=0.0, work=1.0, cpu_milli=1000, mem_mib=1024, mig_profile="1g.10gb")
    cache = FeasibilityCache()
    first = filter_nodes(task, state, cache)
    assert 0 < len(first[0][0]) <= policy_mod.SCALAR_MAX_NODES and filter_nodes(task, state, cache) is first
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(policy_mod, "SCALAR_MAX_NODES", 10**6)
        (n, s, f), q = filter_nodes(task, state, FeasibilityCache())
    assert first[0][0].tolist() == n.tolist() and first[0][1] == s and first[0][2].tolist() == f.tolist()
    assert first[1] == q and not first[0][0].flags.writeable


@pytest.mark.parametrize("name", ["least-loaded", "round-robin", "cheapest-feasible", "fastest-feasible",
                                  "best-fit", "random", "oracle"])
def test_simulation_records_do_not_depend_on_the_filter_path(name, monkeypatch) -> None:
    tasks = generate(load_workload(WORKLOADS_DIR / "high_load.yaml"), seed=4, duration_s=40)
    scalar = simulate(LOCAL, tasks, make_policy(name), seed=4).records
    monkeypatch.setattr(policy_mod, "SCALAR_MAX_NODES", -1)
    vector = simulate(LOCAL, tasks, make_policy(name), seed=4).records
    assert len(scalar) == len(tasks)
    assert scalar.equals(vector)


def _same(a, b) -> bool:
    return (a.node == b.node and a.share == b.share and a.explanation == b.explanation and a.queued == b.queued
            and a.device == b.device and a.policy == b.policy and a.confidence == b.confidence
            and a.probabilities == b.probabilities and np.array_equal(a.scores, b.scores, equal_nan=True))


#: every registered policy that needs no trained model
POLICIES = [p for p in available_policies() if p not in ("rf", "rl", "rl-sample")]


@pytest.mark.parametrize("name", POLICIES)
@settings(max_examples=10, deadline=None)
@given(state=busy_states(), probes=st.lists(TASKS, min_size=1, max_size=30), repeats=st.integers(0, 20))
def test_a_batch_gets_what_each_task_gets_alone(name, state, probes, repeats) -> None:
    """select_many (a pure scoring policy scores tasks sharing their candidates as one matrix,
    ``score_many``) decides every task as ``select`` does alone: node, share, every score,
    the explanation, queued, device."""
    tasks = probes + [Task(f"r{j}", cpu_milli=1000, mem_mib=2048, work=float(j)) for j in range(repeats)]
    alone, together = make_policy(name, seed=1), make_policy(name, seed=1)
    want = [alone.select(t, state) for t in tasks]
    got = select_many(together, tasks, state)
    bad = [(t.id, w.explanation, g.explanation) for t, w, g in zip(tasks, want, got) if not _same(w, g)]
    assert bad == [], bad[:3]


def test_fastest_and_least_loaded_score_groups_as_matrices() -> None:
    """The two policies the router's batch benchmark runs do score groups at once (not row by row)."""
    for name in ("fastest-feasible", "least-loaded"):
        pol = make_policy(name)
        assert type(pol).score_many is not ScoringPolicy.score_many and pol.pure


# ---------------------------------------------------------------- estimate


@settings(max_examples=60, deadline=None)
@given(state=busy_states(), shape=st.integers(0, len(SHAPES) - 1),
       varied=st.lists(st.tuples(st.floats(0.001, 900.0), st.integers(1, 10)), min_size=1, max_size=8))
def test_expected_many_is_expected_lists_bit_for_bit(state, shape, varied) -> None:
    tasks = [shaped(shape, f"e{k}", w, p) for k, (w, p) in enumerate(varied)]
    (nodes, shares, fits), _ = filter_nodes(tasks[0], state, FeasibilityCache())
    lat, cst = expected_many(tasks, state, nodes, shares, fits)
    assert lat.shape == cst.shape == (len(tasks), len(nodes))
    for k, task in enumerate(tasks):
        one_lat, one_cst = expected_lists(task, state, nodes, shares, fits)
        assert np.array_equal(lat[k], np.array(one_lat, dtype=float)) and np.array_equal(cst[k], np.array(one_cst))
        assert (one_lat, one_cst) == expected_lists(task, state, nodes, shares)  # without the fits mask


# ---------------------------------------------------------------- features


@settings(max_examples=60, deadline=None)
@given(state=busy_states(), probes=st.lists(TASKS, min_size=1, max_size=12))
def test_feature_builder_is_the_array_definition_bit_for_bit(state, probes) -> None:
    from cluster.state import node_masks

    for task in probes:
        feasible, fits, _ = node_masks(state, task)
        want = features._vectorised(task, state, np.asarray(feasible, bool), np.asarray(fits, bool))
        assert np.array_equal(feature_vector(task, state), want)
        assert np.array_equal(feature_vector(task, state, feasible, fits), want)
        assert np.array_equal(feature_vector(task, state, feasible.tolist(), fits.tolist()), want)
    assert features.builder(state).fast
    # a copy of the state carries the original's builder: it must still read the copy's numbers
    other = copy.copy(state)  # shares the cached builder, whose .state is the original
    other.queue_len = state.queue_len + 7
    task = probes[0]
    feasible, fits, _ = node_masks(other, task)
    assert np.array_equal(feature_vector(task, other), features._vectorised(task, other, feasible, fits))
    assert not np.array_equal(feature_vector(task, other), feature_vector(task, state))


# ---------------------------------------------------------------- the objective

finite = st.floats(min_value=0.0, max_value=1e12, allow_nan=False)  # far past the knee too


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(finite, st.floats(min_value=1.0, max_value=1e7), st.integers(1, 10),
                               st.floats(min_value=0.0, max_value=100.0), st.integers(1, 10)),
                     min_size=1, max_size=30))
def test_vectorised_scores_equal_score(rows) -> None:
    obj = Objective()
    lat, slo, prio, cost, cs = (np.array(col) for col in zip(*rows))
    vec = obj.scores(lat, slo, prio, cost, cs)
    assert vec.shape == (len(rows),)
    for k, row_ in enumerate(rows):
        assert vec[k] == pytest.approx(obj.score(*row_), rel=1e-12, abs=1e-12)
