"""The booking core: start-or-queue, FIFO drain, idempotent take-back, state copies, forward rolls."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cluster import booking
from cluster.booking import Forward
from cluster.state import CPU_SHARE, ClusterState, check_invariants, feasible_nodes, share_for
from scheduler.policy import make_policy
from scheduler.task import Task, make_task
from simulations.engine import OnlineSimulator
from simulations.workloads import generate, load_workload
from tests.cluster.test_state import SHAPES, snapshot

EDGE = 0  # local.yaml: edge-1, 4 CPUs and 8 GiB


def task(id: str = "t", **kw) -> Task:
    return make_task({"id": id, "cpu_milli": 1000, "mem_mib": 512, **kw}, infer=False)


def full(state: ClusterState) -> tuple:
    """Everything booking may change, comparable (queues and running tasks by identity)."""
    return (*snapshot(state), state.queue_len.tolist(), state.gpu_held.tolist(), state.util.tolist(), state.now,
            [[id(x) for x in q] for q in state.queues], [[id(h) for h in hs] for hs in state.holding])


def busy_state(local_spec, n: int = 400, workload: str = "high_load") -> OnlineSimulator:
    """A simulator part-way through a loaded run (queues and running tasks on several nodes)."""
    wl = load_workload(f"configs/workloads/{workload}.yaml")
    sim = OnlineSimulator(local_spec, generate(wl, seed=4, load_factor=2.0), seed=4)
    pol = make_policy("random", seed=4)
    k = 0
    while k < n or not (sim.state.queue_len.sum() and sim.state.running.sum()):
        t = sim.next_task()
        sim.place(t, pol.select(t, sim.state))
        k += 1
    return sim


def test_start_or_queue_starts_when_it_fits_and_waits_behind_a_queue(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    big = booking.start_or_queue(state, EDGE, task("a", cpu_milli=3000), CPU_SHARE, 0.0, 0.5)
    assert big is not None and big[0] == 0.5 + big[2] and state.running[EDGE] == 1
    assert booking.start_or_queue(state, EDGE, task("b", cpu_milli=2000), CPU_SHARE, 0.0, 0.1) is None
    # c fits the free CPU, but b waits ahead of it: FIFO, no overtaking
    assert booking.start_or_queue(state, EDGE, task("c", cpu_milli=500), CPU_SHARE, 0.0, 0.1) is None
    assert state.queue_len[EDGE] == 2 and [it[0].id for it in state.queues[EDGE]] == ["b", "c"]
    assert state.cpu_free[EDGE] == 1000


def test_drain_starts_the_queue_head_in_order_while_it_fits(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    a = booking.start(state, EDGE, task("a", cpu_milli=4000), CPU_SHARE, 0.0, 0.0)
    for name, cpu in (("b", 2000), ("c", 2000), ("d", 1000)):
        booking.enqueue(state, EDGE, task(name, cpu_milli=cpu), CPU_SHARE, 0.25)
    assert booking.finish(state, a)
    started = booking.drain(state, EDGE, 7.0)
    assert [item[0].id for item, _ in started] == ["b", "c"]  # d fits no more: it waits for b or c
    assert all(h[0] == 7.0 + 0.25 + h[2] for _, h in started)
    assert state.queue_len[EDGE] == 1 and state.cpu_free[EDGE] == 0
    check_invariants(state)


def test_finish_and_unqueue_are_idempotent(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    held = booking.start(state, EDGE, task("a", cpu_milli=4000), CPU_SHARE, 0.0, 0.0)
    item = booking.enqueue(state, EDGE, task("b"), CPU_SHARE, 0.0)
    assert booking.unqueue(state, EDGE, item)
    after_unqueue = full(state)
    assert not booking.unqueue(state, EDGE, item) and full(state) == after_unqueue
    assert booking.finish(state, held)
    after_finish = full(state)
    assert not booking.finish(state, held) and full(state) == after_finish
    assert state.cpu_free[EDGE] == state.cpu_total[EDGE] and state.queue_len[EDGE] == 0


def test_unqueue_takes_that_item_not_an_equal_one(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    booking.start(state, EDGE, task("a", cpu_milli=4000), CPU_SHARE, 0.0, 0.0)
    t = task("b")
    first = booking.enqueue(state, EDGE, t, CPU_SHARE, 0.1)
    second = booking.enqueue(state, EDGE, t, CPU_SHARE, 0.1)  # a re-submission of the same task
    assert first == second and booking.unqueue(state, EDGE, second)
    assert list(state.queues[EDGE]) == [first] and state.queues[EDGE][0] is first


def test_a_copy_is_independent_of_its_original(local_spec) -> None:
    sim = busy_state(local_spec)
    state = sim.state
    assert state.queue_len.sum() > 0 and state.running.sum() > 0
    before = full(state)
    copy = state.copy()
    assert full(copy)[:-2] == before[:-2]
    # everything a lookahead does, on the copy: finish all, take back, place new work
    roll = Forward(copy)
    roll.advance(copy.now + 30.0)
    for i, q in enumerate(copy.queues):
        if q:
            booking.unqueue(copy, i, q[-1])
    for k, t in enumerate(SHAPES):
        i, share, _ = feasible_nodes(copy, t)[0]
        roll.place(i, t, share, copy.now, 0.01 * k)
    roll.advance(math.inf)
    assert copy.running.sum() == 0 and (copy.cpu_free == copy.cpu_total).all()
    assert full(state) == before, "the original changed"
    # the original still releases its own allocations exactly (no flag was flipped through the copy)
    sim.finish()
    assert (state.cpu_free == state.cpu_total).all() and (state.mem_free == state.mem_total).all()
    assert state.running.sum() == 0 and state.mig_used.sum() == 0 and (state.util == 0).all()
    assert state.gpu_free[state.gpu_free >= 0].min() == 1000


def test_a_forward_roll_from_a_copy_replays_the_simulator_exactly(local_spec) -> None:
    """What a lookahead relies on: rolling a copied state gives the simulator's own future."""
    sim = busy_state(local_spec, n=300, workload="gpu_heavy_high")
    copy = sim.state.copy()
    roll = Forward(copy)
    pol = make_policy("least-loaded")
    steps = 0
    while (t := sim.next_task()) is not None and steps < 300:
        roll.advance(t.arrival)
        copy.now = t.arrival
        assert full(copy)[:-2] == full(sim.state)[:-2]
        d = pol.select(t, sim.state)
        sim.place(t, d)
        if d.placed:
            roll.place(d.node, t, d.share, t.arrival, sim._net[id(t)] / 1000.0, d.device)
        steps += 1
    assert steps == 300


def test_node_replay_replays_one_node_without_touching_the_state(local_spec) -> None:
    sim = busy_state(local_spec)
    state = sim.state
    i = int(np.argmax(state.queue_len))
    before = full(state)
    replay = booking.NodeReplay(state, i)
    assert replay.run(state.queues[i]) is None
    t = replay.wait(task("probe", cpu_milli=100), CPU_SHARE)
    assert state.now <= t < math.inf and full(state) == before


# ------------------------------------------------------------------ property test

OPS = st.lists(st.tuples(st.sampled_from(["place", "finish", "unqueue", "drain"]), st.integers(0, 10**6),
                         st.integers(0, 10**6)), min_size=1, max_size=120)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_random_bookings_keep_the_accounting_exact(local_spec, ops) -> None:
    state = ClusterState.from_spec(local_spec)
    totals = (state.cpu_free.copy(), state.mem_free.copy(), state.gpu_free.copy(), state.mig_free.copy())
    now = 0.0
    for op, a, b in ops:
        now += 0.5
        state.now = now
        running = [h for hs in state.holding for h in hs]
        if op == "place" or not running:
            t = SHAPES[a % len(SHAPES)]
            i, share, _ = feasible_nodes(state, t)[b % len(feasible_nodes(state, t))]
            booking.start_or_queue(state, i, t, share, now, 0.1)
        elif op == "finish":
            h = running[a % len(running)]
            assert booking.finish(state, h) and not booking.finish(state, h)
            booking.drain(state, h[1].node, now)
        elif op == "unqueue":
            waiting = [(i, it) for i, q in enumerate(state.queues) for it in q]
            if waiting:
                i, it = waiting[a % len(waiting)]
                assert booking.unqueue(state, i, it) and not booking.unqueue(state, i, it)
        else:
            booking.drain(state, a % state.n_nodes, now)
        check_invariants(state)
        assert (state.queue_len == [len(q) for q in state.queues]).all()
        assert (state.running == [len(h) for h in state.holding]).all()
    for i in range(state.n_nodes):
        booking.clear_queue(state, i)
    for h in [h for hs in state.holding for h in hs]:
        assert booking.finish(state, h)
    assert (state.cpu_free == totals[0]).all() and (state.mem_free == totals[1]).all()
    assert (state.gpu_free == totals[2]).all() and (state.mig_free == totals[3]).all()
    assert (state.util == 0).all() and state.gpu_held.sum() == 0 and state.queue_len.sum() == 0


def test_start_refuses_what_does_not_fit(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    with pytest.raises(ValueError):
        booking.start(state, EDGE, task("huge", cpu_milli=5000), CPU_SHARE, 0.0, 0.0)
    assert state.running.sum() == 0 and not state.holding[EDGE]


def test_cached_queue_replays_give_the_uncached_projection(local_spec) -> None:
    """A lookahead's copy keeps each queue's replay across finishes, drains and new arrivals:
    every projection along a roll must equal the one replayed from scratch, to the last bit (a
    replay sums a queued task's start, network and execution in the order the roll does)."""
    from cluster.booking import projected_start, waiting_starts

    sim = busy_state(local_spec, n=300, workload="gpu_heavy_high")
    cached, plain = sim.state.copy(), sim.state.copy()
    plain.replay_cache = None  # the simulator's state keeps replays, and so does its copy: not this one
    cached.cache_replays()
    rolls = Forward(cached), Forward(plain)
    pol = make_policy("fastest-feasible")
    probes = [sim.tasks[k] for k in range(0, 60, 7)]
    checked = 0
    for t in sim.tasks[sim._k:sim._k + 250]:
        for st, roll in zip((cached, plain), rolls):
            roll.advance(t.arrival)
            st.now = t.arrival
        for p in probes:
            for i in range(cached.n_nodes):
                share = share_for(cached, i, p)
                if share is not None:
                    assert projected_start(cached, i, p, share) == projected_start(plain, i, p, share)
                    checked += 1
        d = pol.select(t, plain)
        if d.placed:
            for st, roll in zip((cached, plain), rolls):
                roll.place(d.node, t, d.share, t.arrival, 0.3, d.device)
    for i in range(cached.n_nodes):
        got, want = waiting_starts(cached, i), waiting_starts(plain, i)
        assert [g[0] for g in got] == [w[0] for w in want]
        assert [x for g in got for x in g[1:]] == [x for w in want for x in w[1:]]
    assert checked > 1000 and cached.queue_len.sum() > 0


def test_a_copy_never_extends_its_originals_cached_replays(local_spec) -> None:
    from cluster.booking import enqueue, projected_start

    sim = busy_state(local_spec, n=300, workload="gpu_heavy_high")
    state = sim.state.copy()
    state.cache_replays()
    probe = sim.tasks[0]
    i = max(range(state.n_nodes), key=lambda k: state.queue_len[k])
    share = share_for(state, i, probe)
    assert share is not None and state.queue_len[i] > 0
    before = projected_start(state, i, probe, share)
    cached = state.replay_cache[i]
    done = len(cached.starts)
    other = state.copy()
    assert other.replay_cache == {}
    projected_start(other, i, probe, share)
    for _ in range(30):
        enqueue(other, i, probe, share, 0.1)
    assert len(other.replay_cache[i].starts) == done + 30  # the copy's own replay grew
    assert state.replay_cache[i] is cached and len(cached.starts) == done
    assert projected_start(state, i, probe, share) == before
