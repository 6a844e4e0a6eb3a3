"""The rollout policy: what a roll charges, determinism, sampled futures, and improving on its base."""
from __future__ import annotations

import numpy as np
import pytest

from cluster.performance import cost, exec_seconds
from cluster.state import CPU_SHARE, ClusterState
from cluster.topology import load_cluster
from scheduler.objective import load_objective
from scheduler.policies.rollout import Future, Rollout
from scheduler.policy import make_policy
from scheduler.task import Task
from simulations.engine import OnlineSimulator, simulate
from simulations.workloads import generate, load_workload


@pytest.fixture(scope="module")
def spec():
    return load_cluster("configs/cluster/local.yaml")


def busy(spec, n: int = 250) -> OnlineSimulator:
    """A simulator part-way through an overloaded GPU run (queues on several nodes)."""
    sim = OnlineSimulator(spec, generate(load_workload("configs/workloads/gpu_heavy_high.yaml"), seed=3), seed=3)
    pol = make_policy("fastest-feasible")
    for _ in range(n):
        t = sim.next_task()
        sim.place(t, pol.select(t, sim.state))
    return sim


def test_a_roll_charges_the_task_its_objective_on_that_node(spec) -> None:
    state = ClusterState.from_spec(spec)
    task = Task("t", 0.0, priority=7, slo_ms=500.0, cpu_milli=1000, mem_mib=1024, work=0.2, cost_sensitivity=5)
    pol = Rollout(samples=1)
    obj = load_objective()
    for i, nd in enumerate(spec.nodes):
        ex = exec_seconds(nd, task, CPU_SHARE)
        want = obj.score(state.net_mean_ms[i] + ex * 1000.0, 500.0, 7, cost(spec.tiers[nd.tier], task, CPU_SHARE, ex), 5)
        assert pol.roll(task, state, i, CPU_SHARE, [], 0) == pytest.approx(want, rel=1e-12)
    assert state.running.sum() == 0  # rolls play on copies


def test_a_roll_pays_for_the_tasks_it_makes_wait(spec) -> None:
    """Tasks already queued and sampled future tasks count: a roll's value is more than the task's own."""
    sim = busy(spec)
    task = sim.next_task()
    pol = Rollout(samples=1)
    nodes, shares = pol._feasible.static(task, sim.state)
    i, share = int(nodes[0]), shares[0]
    alone = pol.roll(task, sim.state, i, share, [], 0)
    future = generate(load_workload("configs/workloads/gpu_heavy_high.yaml"), seed=99, duration_s=5)
    shifted = [Task(f"f{k}", sim.state.now + f.arrival, f.priority, f.slo_ms, f.cpu_milli, f.mem_mib, f.gpu_milli,
                    f.gpu_count, f.mig_profile, f.gpu_models, f.work, f.cost_sensitivity) for k, f in enumerate(future)]
    assert pol.roll(task, sim.state, i, share, shifted, 0) > alone > 0


def test_decisions_are_feasible_deterministic_and_explained(spec) -> None:
    sim = busy(spec)
    task = sim.next_task()
    a, b = Rollout(seed=5, samples=2, horizon_tasks=10), Rollout(seed=5, samples=2, horizon_tasks=10)
    for _ in range(2):  # a few observed tasks give the recent-past future something to replay
        a.future.observe(task)
        b.future.observe(task)
    da, db = a.select(task, sim.state), b.select(task, sim.state)
    assert da.node == db.node and da.share == db.share
    np.testing.assert_array_equal(da.scores, db.scores)
    nodes, shares = a._feasible.static(task, sim.state)
    assert (da.node, da.share) in list(zip(nodes.tolist(), shares))
    assert "fastest-feasible would pick" in da.explanation or "only feasible" in da.explanation


def test_futures_are_windows_shifted_to_now() -> None:
    stream = [Task(f"s{k}", float(k), work=0.1) for k in range(100)]
    fut = Future([stream])
    rng = np.random.default_rng(0)
    got = fut.sample(rng, now=1000.0, horizon_s=10.0, max_tasks=6)
    assert 1 <= len(got) <= 6 and all(1000.0 < t.arrival <= 1010.0 for t in got)
    assert [t.arrival for t in got] == sorted(t.arrival for t in got)
    past = Future(window=5)
    assert past.sample(rng, 0.0, 10.0, 10) == []  # nothing seen yet: no future arrivals
    for t in stream[:20]:
        past.observe(t)
    assert {t.id for t in past.sample(rng, 50.0, 100.0, 10)} <= {f"s{k}" for k in range(15, 20)}


def test_rollout_improves_on_its_base_under_overload(spec) -> None:
    """Over an overloaded stretch of the GPU-heavy mix, looking ahead beats the greedy base."""
    wl = load_workload("configs/workloads/gpu_heavy_high.yaml")
    tasks = [t for t in generate(wl, seed=2) if t.arrival < 25.0]
    base = simulate(spec, tasks, make_policy("fastest-feasible"), seed=2).summary["objective_mean"]
    pol = make_policy("rollout", samples=2, horizon_tasks=20,
                      future=Future([generate(wl, seed=10_000 + k, duration_s=60) for k in range(2)]))
    rolled = simulate(spec, tasks, pol, seed=2).summary["objective_mean"]
    assert rolled < base


def test_a_roll_charges_what_playing_every_task_to_its_end_would(spec) -> None:
    """The roll stops at its last sampled arrival and pays the tasks still running or waiting from
    their known finishes and their queues' replays: the same total as playing on to the end."""
    from cluster.booking import Forward

    sim = busy(spec, n=300)
    task = sim.next_task()
    pol = Rollout(samples=1)
    wl = load_workload("configs/workloads/gpu_heavy_high.yaml")
    future = [Task(f"f{k}", sim.state.now + f.arrival, f.priority, f.slo_ms, f.cpu_milli, f.mem_mib, f.gpu_milli,
                   f.gpu_count, f.mig_profile, f.gpu_models, f.work, f.cost_sensitivity)
              for k, f in enumerate(generate(wl, seed=98, duration_s=6))]
    obj = load_objective()
    nodes, shares = pol._feasible.static(task, sim.state)
    for i, share in zip(nodes.tolist(), shares):
        st = sim.state.copy()
        total = 0.0

        def paid(t, node, done, held, started):
            nonlocal total
            if done is not None:
                c = cost(spec.tiers[spec.nodes[node].tier], done, held[1].share, held[2])
                total += obj.score((held[0] - done.arrival) * 1000.0, done.slo_ms, done.priority, c,
                                   done.cost_sensitivity)

        fw = Forward(st, on_finish=paid)
        net = (st.net_mean_ms / 1000.0).tolist()
        fw.place(i, task, share, st.now, net[i])
        base = make_policy("fastest-feasible")
        for ft in future:
            fw.advance(ft.arrival)
            st.now = ft.arrival
            d = base.select(ft, st)
            if d.placed:
                fw.place(d.node, ft, d.share, ft.arrival, net[d.node], d.device)
        fw.advance(float("inf"))
        assert st.queue_len.sum() == 0
        assert pol.roll(task, sim.state, i, share, future, 0) == pytest.approx(total, rel=1e-9)


def test_several_bases_do_as_well_as_the_best_of_them(spec) -> None:
    """On the light smoke mix the cheap base is right and the fast one is not: rolled out with both,
    each candidate valued by the better base, rollout matches or beats the better of the two."""
    wl = load_workload("configs/workloads/cluster_smoke.yaml")
    tasks = generate(wl, seed=103)
    bases = {b: simulate(spec, tasks, make_policy(b), seed=103).summary["objective_mean"]
             for b in ("fastest-feasible", "cheapest-feasible")}
    pol = make_policy("rollout", base="fastest-feasible,cheapest-feasible", samples=2,
                      future=Future([generate(wl, seed=10_000 + k) for k in range(2)]))
    assert [b.name for b in pol.bases] == ["fastest-feasible", "cheapest-feasible"]
    rolled = simulate(spec, tasks, pol, seed=103).summary["objective_mean"]
    assert rolled <= min(bases.values()) < max(bases.values())
    with pytest.raises(ValueError, match="base"):
        make_policy("rollout", base=" , ")
