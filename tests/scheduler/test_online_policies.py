"""Every registered policy gives a valid, explained Decision; the heuristics do what their names say."""
from __future__ import annotations

import numpy as np
import pytest

from cluster.state import ClusterState, allocate, check_invariants, fits_now, share_for
from scheduler.estimate import expected
from scheduler.objective import load_objective
from scheduler.policy import Decision, available_policies, make_policy
from scheduler.task import Task, make_task
from simulations.engine import simulate
from simulations.workloads import WORKLOADS_DIR, generate, load_workload

POLICIES = available_policies()
EDGE1, EDGE2, CLOUD1, CLOUD2, MIG, TS = range(6)


def task(id: str = "t", **kw) -> Task:
    return make_task({"id": id, "cpu_milli": 500, "mem_mib": 512, **kw}, infer=False)


TASKS = [
    task("cpu"),
    task("cpu-big", cpu_milli=12000, mem_mib=32 * 1024),
    task("frac", gpu_milli=250, cpu_milli=2000),
    task("frac-v100", gpu_milli=500, gpu_models=("V100",)),
    task("whole", gpu_count=1, cpu_milli=8000),
    task("mig", mig_profile="3g.40gb"),
]


def busy_state(spec) -> ClusterState:
    """Partly used cluster: a full edge node, a used GPU slice and MIG instance, tasks finishing later."""
    state = ClusterState.from_spec(spec)
    state.now = 100.0
    placed = [(EDGE1, task("a", cpu_milli=4000), ("cpu", 0)), (CLOUD1, task("b", cpu_milli=10000), ("cpu", 0)),
              (TS, task("c", gpu_milli=750), ("slice", 750)), (MIG, task("d", mig_profile="4g.40gb"),
                                                                 ("mig", "4g.40gb"))]
    for k, (i, t, share) in enumerate(placed):
        state.holding[i].append([101.0 + k, allocate(state, i, t, share)])
    return state


def check_decision(d: Decision, name: str, t: Task, state: ClusterState) -> None:
    assert isinstance(d, Decision) and d.policy == name
    assert isinstance(d.explanation, str) and d.explanation.strip()
    assert d.scores.shape == (state.n_nodes,)
    feasible = np.array([share_for(state, i, t) is not None for i in range(state.n_nodes)])
    assert np.isnan(d.scores[~feasible]).all(), "an infeasible node got a score"
    assert d.placed, d.explanation
    assert feasible[d.node] and not np.isnan(d.scores[d.node])
    assert d.share == share_for(state, d.node, t)
    assert d.queued == (not fits_now(state, d.node, t, d.share))
    if d.device is not None:
        assert d.share[0] == "slice" and state.gpu_free[d.node, d.device] >= d.share[1]


def test_the_built_in_policies_are_registered() -> None:
    assert {"round-robin", "least-loaded", "cheapest-feasible", "fastest-feasible", "oracle", "random",
            "best-fit", "dot-product", "gpu-packing", "gpu-clustering", "fgd"} <= set(POLICIES)


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("t", TASKS, ids=lambda t: t.id)
def test_decision_on_an_empty_cluster(local_spec, name: str, t: Task) -> None:
    state = ClusterState.from_spec(local_spec)
    d = make_policy(name).select(t, state)
    check_decision(d, name, t, state)
    assert not d.queued
    feasible = [share_for(state, i, t) is not None for i in range(state.n_nodes)]
    if name == "rollout":  # it rolls out only its top_k candidates (plus the base's choice): the rest stay NaN
        assert 1 <= (~np.isnan(d.scores)).sum() <= min(sum(feasible), make_policy(name).top_k + 1)
        return
    assert (~np.isnan(d.scores)).tolist() == feasible  # on an empty cluster every feasible node is scored


@pytest.mark.parametrize("name", POLICIES)
@pytest.mark.parametrize("t", TASKS, ids=lambda t: t.id)
def test_decision_on_a_busy_cluster(local_spec, name: str, t: Task) -> None:
    state = busy_state(local_spec)
    d = make_policy(name).select(t, state)
    check_decision(d, name, t, state)


@pytest.mark.parametrize("name", POLICIES)
def test_queues_only_when_nothing_fits_now(local_spec, name: str) -> None:
    state = busy_state(local_spec)
    t = task("whole2", gpu_count=2)  # only the time-sliced node could host it, and one device is used
    d = make_policy(name).select(t, state)
    check_decision(d, name, t, state)
    assert d.node == TS and d.queued and "queued" in d.explanation


@pytest.mark.parametrize("name", POLICIES)
def test_nothing_can_host_the_task(local_spec, name: str) -> None:
    state = ClusterState.from_spec(local_spec)
    for t in (task("g64", gpu_count=64), task("h100", gpu_milli=250, gpu_models=("H100",)),
              task("7g", mig_profile="7g.80gb"), task("cpu", cpu_milli=64000)):
        d = make_policy(name).select(t, state)
        assert d.node == -1 and not d.placed and d.share is None
        assert np.isnan(d.scores).all() and d.scores.shape == (state.n_nodes,)
        assert "no node can host" in d.explanation


@pytest.mark.parametrize("name", POLICIES)
def test_decisions_can_be_allocated_and_are_reproducible(local_spec, name: str) -> None:
    """Place a stream of tasks by the policy's word: every non-queued decision fits, same seed same nodes."""
    rng = np.random.default_rng(3)
    stream = [TASKS[int(k)] for k in rng.integers(0, len(TASKS), 40)]
    runs = []
    for _ in range(2):
        state = ClusterState.from_spec(local_spec)
        policy = make_policy(name)
        policy.reset(11)
        nodes = []
        for t in stream:
            d = policy.select(t, state)
            check_decision(d, name, t, state)
            nodes.append(d.node)
            if not d.queued:
                allocate(state, d.node, t, d.share, device=d.device)
                check_invariants(state)
        runs.append(nodes)
    assert runs[0] == runs[1]


def test_unknown_policy_lists_known_names() -> None:
    with pytest.raises(KeyError) as info:
        make_policy("nope")
    msg = str(info.value)
    assert "nope" in msg and all(n in msg for n in POLICIES)


def test_a_policy_name_cannot_be_registered_twice() -> None:
    """A second registration must not silently change what a name in a YAML file runs."""
    from scheduler.policy import register

    class Impostor:
        def __init__(self, **_kw) -> None:
            pass

    with pytest.raises(ValueError, match="'round-robin' is taken by scheduler.policies.round_robin"):
        register("round-robin")(Impostor)
    assert type(make_policy("round-robin")).__module__ == "scheduler.policies.round_robin"


def test_round_robin_cycles(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    rr = make_policy("round-robin")
    assert [rr.select(task(), state).node for _ in range(8)] == [0, 1, 2, 3, 4, 5, 0, 1]
    rr.reset(0)
    # GPU tasks only cycle over the GPU nodes
    assert [rr.select(task(gpu_milli=250), state).node for _ in range(4)] == [MIG, TS, MIG, TS]


def test_cheapest_feasible_puts_a_small_cpu_task_on_the_edge(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    d = make_policy("cheapest-feasible").select(task(work=0.05), state)
    assert state.spec.tiers[state.spec.nodes[d.node].tier].kind == "edge"
    # a full edge pushes it to the next cheapest feasible node, without queueing
    state = busy_state(local_spec)
    allocate(state, EDGE2, task(cpu_milli=4000), ("cpu", 0))
    d = make_policy("cheapest-feasible").select(task(work=0.05), state)
    assert d.node not in (EDGE1, EDGE2) and not d.queued


def test_fastest_feasible_avoids_the_slow_edge_for_long_cpu_work(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    long = task(work=30.0, slo_ms=60_000)
    d = make_policy("fastest-feasible").select(long, state)
    assert state.spec.nodes[d.node].cpu_speed == 1.0 and d.node not in (EDGE1, EDGE2)
    # but a tiny task is won on network latency: the edge is closest
    d = make_policy("fastest-feasible").select(task(work=0.01), state)
    assert d.node in (EDGE1, EDGE2)


class _OracleCheck:
    """Wraps the oracle in a simulation and checks each choice against an independent evaluation."""

    name = "oracle"

    def __init__(self) -> None:
        self.oracle = make_policy("oracle")
        self.objective = load_objective()
        self.checked = 0

    def reset(self, seed=None) -> None:
        self.oracle.reset(seed)

    def select(self, t: Task, state: ClusterState) -> Decision:
        d = self.oracle.select(t, state)
        nodes = np.array([i for i in range(state.n_nodes) if share_for(state, i, t) is not None])
        shares = [share_for(state, int(i), t) for i in nodes]
        lat, cost = expected(t, state, nodes, shares)
        obj = np.array([self.objective.score(lat[k], t.slo_ms, t.priority, cost[k], t.cost_sensitivity)
                        for k in range(len(nodes))])
        chosen = int(np.flatnonzero(nodes == d.node)[0])
        assert obj[chosen] == pytest.approx(obj.min(), rel=1e-9, abs=1e-12), (t.id, obj, d.explanation)
        assert np.allclose(d.scores[nodes], -obj)
        self.checked += 1
        return d


def test_oracle_picks_the_lowest_expected_objective(local_spec) -> None:
    wl = load_workload(WORKLOADS_DIR / "mixed.yaml")
    tasks = generate(wl, seed=5, duration_s=30, load_factor=2.0)
    check = _OracleCheck()
    result = simulate(local_spec, tasks, check, seed=5)
    assert check.checked == len(tasks) and len(result.records) == len(tasks)
    assert result.records["queued"].any()  # the comparison covered waiting as well as free nodes
