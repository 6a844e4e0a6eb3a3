"""The executor's bookkeeping against a fake Ray: FIFO queues, pipelining, re-placement, no lost task.

Real-Ray behaviour (placement, shares, node death) is in tests/integration; here the
executor gets a fake backend that records submissions, and the test completes them by hand.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import cluster.executor as executor_mod
from cluster.executor import Executor
from cluster.live_state import LiveState
from scheduler.policy import Decision, make_policy
from scheduler.task import make_task
from tests.cluster.test_live_state import Reader, ray_nodes


class NodeDiedError(Exception):
    """Named like Ray's, which is how the executor classifies it."""


class TaskCancelledError(Exception):
    """What ``ray.get`` raises for a task cancelled before or while it ran (named like Ray's)."""


class WorkerCrashedError(Exception):
    """What ``ray.get`` raises for a task whose worker a forced cancel killed (named like Ray's)."""


class FakeRef:
    """A submitted task; the test finishes it (with a result tuple or an exception)."""

    def __init__(self, args: tuple, node: str, finished: threading.Condition) -> None:
        self.args = args
        self.node = node
        self.outcome = None
        self.done = False
        self._finished = finished

    def finish(self, value=None) -> None:
        now = time.time()
        self.callback(value if value is not None else (now, 0.0, 0.0, now, self.node, (), None))

    def callback(self, outcome) -> None:
        with self._finished:
            self.outcome, self.done = outcome, True
            self._finished.notify_all()


class FakeRay:
    """The executor's :class:`cluster.ray_backend.Backend`, faked: ``sent`` holds every submission in
    order; nothing finishes until the test says so."""

    def __init__(self) -> None:
        self.sent: list[FakeRef] = []
        self.cancelled: list[FakeRef] = []
        self.forced: list[FakeRef] = []  # those of ``cancelled`` cancelled with force
        self._finished = threading.Condition()

    def submitter(self, node_name: str, task, share, node_id: str, mig_slot=None):
        self.slots = [*getattr(self, "slots", []), mig_slot]

        def submit(*args) -> FakeRef:
            ref = FakeRef(args, node_id, self._finished)
            self.sent.append(ref)
            return ref

        return submit

    def wait(self, refs: list, timeout: float) -> list:
        """``ray.wait`` on fake refs: the finished ones, waiting up to ``timeout`` for one."""
        with self._finished:
            self._finished.wait_for(lambda: any(r.done for r in refs), timeout)
            return [r for r in refs if r.done]

    def outcomes(self, refs: list) -> list:
        return [r.outcome for r in refs]

    def cancel(self, ref: FakeRef, force: bool = False) -> None:
        self.cancelled.append(ref)
        if force:
            self.forced.append(ref)


@pytest.fixture
def fake_ray() -> FakeRay:
    return FakeRay()


@pytest.fixture
def setup(local_spec, fake_ray):
    reader = Reader(ray_nodes(local_spec))
    live = LiveState(local_spec, reader=reader, refresh_s=0.05)
    live.refresh()
    made = []

    def make(**kw) -> Executor:
        ex = Executor(live, backend=fake_ray, **kw)
        made.append(ex)
        return ex

    yield live, reader, fake_ray.sent, make
    for ex in made:
        ex.close()


def wait_for(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def task(k: int, **kw):
    return make_task({"id": f"t{k}", "mem_mib": 0, "work": 0.0, **kw}, infer=False)


def decide(live: LiveState, name: str, share) -> Decision:
    return Decision(live.index(name), share, np.empty(0), "test", "test")


def test_admit_under_the_lock_says_which_wait_and_sends_on_flush(setup) -> None:
    """The router decides and books under ``live.lock`` and submits to Ray after releasing it."""
    live, _, sent, make = setup
    ex = make(pipeline_depth=0)
    d = decide(live, "edge-1", ("cpu", 0))  # 4 CPUs
    with live.lock:
        waits = [ex.admit(task(k, cpu_milli=2000), d)[1] for k in range(3)]
        assert not sent  # nothing reaches Ray while the lock is held
    assert waits == [False, False, True]
    ex.flush()
    assert len(sent) == 2
    for ref in list(sent):
        ref.finish()
    wait_for(lambda: len(sent) == 3)
    sent[2].finish()
    assert ex.drain(5)


def test_fifo_queue_without_pipelining(setup) -> None:
    live, _, sent, make = setup
    ex = make(pipeline_depth=0)
    i = live.index("edge-1")  # 4 CPUs
    futs = [ex.submit(task(k, cpu_milli=2000), decide(live, "edge-1", ("cpu", 0))) for k in range(3)]
    assert len(sent) == 2 and int(live.state.running[i]) == 2 and int(live.state.queue_len[i]) == 1
    sent[0].finish()
    wait_for(lambda: len(sent) == 3)
    assert int(live.state.queue_len[i]) == 0 and int(live.state.running[i]) == 2
    sent[1].finish()
    sent[2].finish()
    results = [f.result(timeout=5) for f in futs]
    assert [r.status for r in results] == ["succeeded"] * 3
    assert [r.queued for r in results] == [False, False, True]
    assert int(live.state.running[i]) == 0 and int(live.state.cpu_free[i]) == 4000


def test_same_shape_cpu_tasks_are_pipelined_and_booked_when_they_start(setup) -> None:
    live, _, sent, make = setup
    ex = make()
    i = live.index("edge-1")
    futs = [ex.submit(task(k, cpu_milli=2000), decide(live, "edge-1", ("cpu", 0))) for k in range(5)]
    assert len(sent) == 5  # 2 running + 3 handed to Ray behind them
    assert int(live.state.running[i]) == 2 and int(live.state.queue_len[i]) == 3
    sent[0].finish()
    wait_for(lambda: int(live.state.queue_len[i]) == 2)
    assert int(live.state.running[i]) == 2 and len(sent) == 5  # booked, not sent again
    for ref in sent[1:]:
        ref.finish()
    assert all(f.result(timeout=5).status == "succeeded" for f in futs)
    assert int(live.state.cpu_free[i]) == 4000 and int(live.state.queue_len[i]) == 0


def test_a_different_shape_stops_the_pipeline(setup) -> None:
    live, _, sent, make = setup
    ex = make()
    d = decide(live, "edge-1", ("cpu", 0))
    ex.submit(task(0, cpu_milli=4000), d)
    ex.submit(task(1, cpu_milli=1000), d)
    ex.submit(task(2, cpu_milli=2000), d)
    assert len(sent) == 2  # the running one and the first queued run; the 2-CPU task waits here


def test_gpu_slices_are_never_pipelined(setup) -> None:
    live, _, sent, make = setup
    ex = make()
    i = live.index("gpu-ts-1")  # 2 V100, time-sliced in 4
    futs = [ex.submit(task(k, cpu_milli=1000, gpu_milli=250), decide(live, "gpu-ts-1", ("slice", 250)))
            for k in range(9)]
    assert len(sent) == 8 and int(live.state.queue_len[i]) == 1
    assert sorted(int(x) for x in live.state.gpu_tasks[i, :2]) == [4, 4]
    assert sent[0].args[3] is True  # the body is told to report its GPU
    sent[0].finish()
    wait_for(lambda: len(sent) == 9)
    for ref in sent[1:]:
        ref.finish()
    assert all(f.result(timeout=5).status == "succeeded" for f in futs)


def test_none_vanish_when_a_node_dies(setup) -> None:
    live, reader, sent, make = setup
    ex = make(pipeline_depth=0)
    policy = make_policy("cheapest-feasible")
    i = live.index("edge-1")
    futs = [ex.submit(task(k, cpu_milli=2000), decide(live, "edge-1", ("cpu", 0)), policy=policy)
            for k in range(3)]
    assert len(sent) == 2 and int(live.state.queue_len[i]) == 1  # two running, one waiting for edge-1
    dead_id = live.node_id(i)
    reader.nodes = [n for n in reader.nodes if n.node_id != dead_id]
    for ref in sent[:2]:
        ref.finish(NodeDiedError("node died"))
    # the two running tasks and the queued one are re-placed on other nodes
    wait_for(lambda: sum(ref.node != dead_id for ref in sent) == 3)
    for ref in [r for r in sent if r.node != dead_id]:
        ref.finish()
    results = [f.result(timeout=5) for f in futs]
    assert [r.status for r in results] == ["succeeded"] * 3
    assert all(r.node != "edge-1" for r in results)
    assert all(r.attempts == 2 and r.nodes_tried[0] == "edge-1" for r in results)
    assert not live.usable[i]


def test_a_task_pipelined_to_a_dead_node_is_cancelled_in_ray_and_re_placed(setup, fake_ray) -> None:
    live, reader, sent, make = setup
    ex = make()
    policy = make_policy("cheapest-feasible")
    i = live.index("edge-1")
    futs = [ex.submit(task(k, cpu_milli=2000), decide(live, "edge-1", ("cpu", 0)), policy=policy)
            for k in range(3)]
    assert len(sent) == 3 and int(live.state.queue_len[i]) == 1  # two running, one handed to Ray behind them
    dead_id = live.node_id(i)
    reader.nodes = [n for n in reader.nodes if n.node_id != dead_id]
    for ref in sent[:2]:
        ref.finish(NodeDiedError("node died"))
    wait_for(lambda: sum(ref.node != dead_id for ref in sent) == 3)
    assert fake_ray.cancelled == [sent[2]]  # handed to Ray for edge-1: cancelled there, so it runs once
    for ref in [r for r in sent if r.node != dead_id]:
        ref.finish()
    assert [f.result(timeout=5).status for f in futs] == ["succeeded"] * 3


def test_without_a_policy_a_dead_node_fails_the_task_with_the_reason(setup) -> None:
    live, reader, sent, make = setup
    ex = make()
    fut = ex.submit(task(0, cpu_milli=1000), decide(live, "cloud-1", ("cpu", 0)))
    sent[0].finish(NodeDiedError("node died"))
    r = fut.result(timeout=5)
    assert r.status == "failed" and "NodeDiedError on node cloud-1" in r.reason and "no policy" in r.reason


def test_retries_are_bounded(setup) -> None:
    live, _, sent, make = setup
    ex = make(max_retries=1)
    fut = ex.place(task(0, cpu_milli=1000), make_policy("round-robin"))[1]
    sent[0].finish(NodeDiedError("died"))
    wait_for(lambda: len(sent) == 2)
    sent[1].finish(NodeDiedError("died again"))
    r = fut.result(timeout=5)
    assert r.status == "failed" and r.attempts == 2 and "after 2 attempt(s)" in r.reason


def test_user_errors_fail_without_retry_and_rejections_resolve(setup) -> None:
    live, _, sent, make = setup
    ex = make()
    fut = ex.place(task(0, cpu_milli=1000), make_policy("round-robin"))[1]
    sent[0].finish(ValueError("bad input"))
    r = fut.result(timeout=5)
    assert r.status == "failed" and "task raised ValueError: bad input" in r.reason and len(sent) == 1
    nowhere = Decision(-1, None, np.empty(0), "no node can host it", "test")
    rej = ex.submit(task(1, cpu_milli=1000), nowhere).result(timeout=1)
    assert rej.status == "rejected" and rej.reason == "no node can host it"
    assert ex.drain(1)


def test_measured_times_scale_with_compression_and_cost_is_charged(setup) -> None:
    live, _, sent, make = setup
    ex = make(time_compression=10.0)
    t = task(0, cpu_milli=1000, work=2.0)
    fut = ex.submit(t, decide(live, "cloud-1", ("cpu", 0)), network_u=0.5)
    net_s, exec_s = sent[0].args[0], sent[0].args[1]
    assert net_s == pytest.approx(0.350 / 10) and exec_s == pytest.approx(2.0 / 10)  # cloud: 200..500 ms
    now = time.time()
    sent[0].callback((now, net_s, exec_s, now + net_s + exec_s, sent[0].node, (), None))
    r = fut.result(timeout=5)
    assert r.network_ms == pytest.approx(350.0) and r.exec_ms == pytest.approx(2000.0)
    assert r.cost == pytest.approx(0.025 + 0.00004 * 2.0)


def test_no_op_tasks_carry_no_arguments(local_spec, fake_ray) -> None:
    """Arguments equal to the body's defaults are not sent: a zero-length task is a plain no-op call."""
    import dataclasses

    from cluster.topology import ClusterSpec

    tiers = {k: dataclasses.replace(t, network_ms=(0.0, 0.0)) for k, t in local_spec.tiers.items()}
    quiet = ClusterSpec(local_spec.name, tiers, local_spec.nodes, local_spec.source, pools=local_spec.pools)
    live = LiveState(quiet, reader=Reader(ray_nodes(quiet)))
    live.refresh()
    with Executor(live, backend=fake_ray) as ex:
        ex.submit(task(0, cpu_milli=1000), decide(live, "cloud-1", ("cpu", 0)))
        ex.submit(task(1, cpu_milli=1000, work=1.0), decide(live, "cloud-1", ("cpu", 0)))
        assert fake_ray.sent[0].args == () and fake_ray.sent[1].args == (0.0, 1.0)
        for ref in fake_ray.sent:
            ref.finish()
        assert ex.drain(5)


def test_the_same_task_object_submitted_twice_is_two_runs(setup) -> None:
    live, _, sent, make = setup
    ex = make(pipeline_depth=0)
    t = task(0, cpu_milli=4000)
    d = decide(live, "edge-1", ("cpu", 0))
    futs = [ex.submit(t, d), ex.submit(t, d), ex.submit(t, d)]
    assert len(sent) == 1 and int(live.state.queue_len[live.index("edge-1")]) == 2
    for k in range(3):
        wait_for(lambda: len(sent) == k + 1)
        sent[k].finish()
    assert [f.result(timeout=5).status for f in futs] == ["succeeded"] * 3
    assert [f.result().queued for f in futs] == [False, True, True]


class _WarmRay(FakeRay):
    """The backend for :func:`warm_workers`: each node answers its rounds from a script."""

    def __init__(self, script: dict[str, list]) -> None:
        super().__init__()
        self.script = script  # node id -> per round: worker pids, or an exception to raise
        self.asked: list[str] = []

    def holder(self, node_name: str, node_id: str, gpu: bool):
        def submit(hold_s, modules=()):
            self.modules = modules
            return node_id
        return submit

    def get(self, refs, timeout=None):
        node = refs[0]
        self.asked.append(node)
        answer = self.script[node].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_warm_up_rounds_until_distinct_workers_and_leaves_a_dead_node_out(setup) -> None:
    """The router warms every node in the background: a node that dies mid-warm-up must not stop
    the others, and one whose tasks never come back must not hold the router's start-up forever."""
    live, _, _, _ = setup
    a, b, c = (live.index(n) for n in ("edge-1", "cloud-1", "gpu-ts-1"))
    ida, idb, idc = live.node_ids[a], live.node_ids[b], live.node_ids[c]
    fake = _WarmRay({ida: [[11, 11], [11, 12]],  # one worker ran both at first; two distinct next round
                     idb: [RuntimeError("node died")],
                     idc: [[31, 32]]})
    got = executor_mod.warm_workers(live, {(a, False): 2, (b, False): 2, (c, False): 2}, hold_s=0, backend=fake,
                                    modules=("orchestrator.examples.real_work",))
    assert got == {(a, False): 2, (b, False): 0, (c, False): 2}
    assert fake.modules == ("orchestrator.examples.real_work",)  # each warm-up task loads the entry points' code
    assert fake.asked.count(ida) == 2 and fake.asked.count(idb) == 1 and fake.asked.count(idc) == 1

    slow = _WarmRay({ida: [[11], TimeoutError()], idc: [[31]]})  # Ray's GetTimeoutError is a TimeoutError
    got = executor_mod.warm_workers(live, {(a, False): 2, (c, False): 1}, hold_s=0, timeout_s=5, backend=slow)
    assert got == {(a, False): 1, (c, False): 1}  # out of time: what was warmed so far, no error


def test_a_finished_task_outside_the_watched_window_is_found_by_the_sweep(setup, monkeypatch) -> None:
    """The completion thread watches each node's oldest submissions (running + a slack); a later one
    that finishes first (not how Ray runs a node's queue, but nothing may rely on it) must still
    complete, through the periodic sweep of every submission."""
    monkeypatch.setattr(executor_mod, "FULL_SCAN_S", 0.2)
    live, _, sent, make = setup
    ex = make()
    futs = [ex.submit(task(k, cpu_milli=4000), decide(live, "edge-1", ("cpu", 0))) for k in range(14)]
    assert len(sent) == 14  # one running, thirteen pipelined behind it
    assert len(ex._window()) == 1 + executor_mod.WINDOW_SLACK
    sent[12].finish()  # outside the window
    assert futs[12].result(timeout=5).status == "succeeded"
    for ref in sent[:12] + sent[13:]:
        ref.finish()
    assert [f.result(timeout=5).status for f in futs] == ["succeeded"] * 14
    assert ex.drain(5) and not any(ex._in_ray)


# ---------------------------------------------------------------------------- cancel


def test_cancel_a_queued_task_frees_its_place_and_the_tasks_behind_it_run(setup, fake_ray) -> None:
    live, _, sent, make = setup
    ex = make(pipeline_depth=0)
    i = live.index("edge-1")  # 4 CPUs
    d = decide(live, "edge-1", ("cpu", 0))
    policy = make_policy("cheapest-feasible")
    futs = [ex.submit(task(k, cpu_milli=c), d, policy=policy) for k, c in enumerate((4000, 2000, 2000))]
    assert len(sent) == 1 and int(live.state.queue_len[i]) == 2
    assert ex.cancel("t1", "cancelled by its owner")
    r = futs[1].result(timeout=0)  # resolved by the call itself
    assert (r.status, r.reason, r.node, r.pool, r.share) == ("cancelled", "cancelled by its owner", "edge-1",
                                                             "edge", ("cpu", 0))
    assert r.queued and r.attempts == 1 and r.queue_ms >= 0 and r.start != r.start  # never started
    assert int(live.state.queue_len[i]) == 1 and ex.in_flight == 2
    assert not fake_ray.cancelled  # never handed to Ray: nothing to stop there
    sent[0].finish()
    wait_for(lambda: len(sent) == 2)  # t2, behind the cancelled one, starts
    sent[1].finish()
    assert [f.result(timeout=5).status for f in futs] == ["succeeded", "cancelled", "succeeded"]
    assert ex.drain(5) and len(sent) == 2 and int(live.state.cpu_free[i]) == 4000


def test_cancel_a_pipelined_task_stops_it_in_ray_and_keeps_the_pipeline_in_order(setup, fake_ray) -> None:
    live, _, sent, make = setup
    ex = make()
    i = live.index("edge-1")
    futs = [ex.submit(task(k, cpu_milli=2000), decide(live, "edge-1", ("cpu", 0))) for k in range(4)]
    assert len(sent) == 4 and ex._sent_q[i] == 2  # two running, two handed to Ray behind them
    assert ex.cancel("t2", "deadline passed")
    assert fake_ray.cancelled == fake_ray.forced == [sent[2]]
    assert ex._sent_q[i] == 1 and int(live.state.queue_len[i]) == 1
    sent[2].finish(TaskCancelledError("cancelled"))  # Ray's report of the cancel: stale, not a node failure
    sent[0].finish()
    wait_for(lambda: int(live.state.queue_len[i]) == 0)  # t3 booked as started, not sent again
    assert ex._sent_q[i] == 0 and len(sent) == 4
    sent[1].finish()
    sent[3].finish()
    assert [f.result(timeout=5).status for f in futs] == ["succeeded", "succeeded", "cancelled", "succeeded"]
    assert ex.drain(5) and live.usable[i] and int(live.state.cpu_free[i]) == 4000


@pytest.mark.parametrize("report", [TaskCancelledError("cancelled"), WorkerCrashedError("worker killed"), None],
                         ids=["task-cancelled", "worker-crashed", "raced-result"])
def test_cancel_a_running_task_frees_its_node_at_once_and_ignores_what_ray_reports_later(
        setup, fake_ray, report) -> None:
    live, _, sent, make = setup
    ex = make(pipeline_depth=0)
    i = live.index("edge-1")
    d = decide(live, "edge-1", ("cpu", 0))
    policy = make_policy("cheapest-feasible")
    futs = [ex.submit(task(k, cpu_milli=4000, work=3600.0), d, policy=policy) for k in range(2)]
    assert len(sent) == 1 and ex.in_flight == 2
    assert ex.cancel("t0", "cancelled by an admin")
    # the waiting task started in the freed capacity before cancel returned: no wait for Ray's report
    assert len(sent) == 2 and int(live.state.queue_len[i]) == 0 and int(live.state.running[i]) == 1
    assert fake_ray.forced == [sent[0]] and ex.in_flight == 1
    r = futs[0].result(timeout=0)
    assert r.status == "cancelled" and r.node == "edge-1" and not r.queued and r.attempts == 1
    assert r.start == r.start and r.queue_ms >= 0 and r.finish >= r.start
    sent[0].finish(report)  # stale: no re-placement, no node marked dead, no second result
    sent[1].finish()
    assert futs[1].result(timeout=5).status == "succeeded"
    assert futs[0].result().status == "cancelled" and len(sent) == 2 and live.usable[i]
    assert ex.drain(5) and ex.in_flight == 0 and int(live.state.cpu_free[i]) == 4000


def test_cancel_unknown_finished_rejected_or_already_cancelled_is_false(setup) -> None:
    live, _, sent, make = setup
    ex = make()
    assert not ex.cancel("nope", "x")
    fut = ex.submit(task(0, cpu_milli=1000), decide(live, "cloud-1", ("cpu", 0)))
    sent[0].finish()
    assert fut.result(timeout=5).status == "succeeded"
    assert not ex.cancel("t0", "too late")
    nowhere = Decision(-1, None, np.empty(0), "no node can host it", "test")
    assert ex.submit(task(1, cpu_milli=1000), nowhere).result(timeout=1).status == "rejected"
    assert not ex.cancel("t1", "x")
    fut = ex.submit(task(2, cpu_milli=1000), decide(live, "cloud-1", ("cpu", 0)))
    assert ex.cancel("t2", "first") and not ex.cancel("t2", "second")
    assert fut.result(timeout=0).reason == "first" and ex.drain(1) and not ex._by_task


def test_a_cancelled_task_is_not_re_placed_when_its_node_dies(setup) -> None:
    live, reader, sent, make = setup
    ex = make(pipeline_depth=0)
    policy = make_policy("cheapest-feasible")
    i = live.index("edge-1")
    d = decide(live, "edge-1", ("cpu", 0))
    futs = [ex.submit(task(k, cpu_milli=4000), d, policy=policy) for k in range(3)]
    assert ex.cancel("t1", "cancelled by its owner")  # waiting behind t0
    dead_id = live.node_id(i)
    reader.nodes = [n for n in reader.nodes if n.node_id != dead_id]
    sent[0].finish(NodeDiedError("node died"))
    # t0 (running) and t2 (stranded in the queue) are re-placed; the cancelled t1 is not
    wait_for(lambda: sum(ref.node != dead_id for ref in sent) == 2)
    for ref in [r for r in sent if r.node != dead_id]:
        ref.finish()
    assert [f.result(timeout=5).status for f in futs] == ["succeeded", "cancelled", "succeeded"]
    assert ex.drain(5) and len(sent) == 3 and futs[1].result().attempts == 1


def test_a_task_cancelled_while_flush_submits_it_is_stopped_in_ray(setup, fake_ray) -> None:
    """The router cancels under the lock while another thread is inside ``flush`` submitting that very
    task: the canceller sees no ref yet, so the flush must see the bumped token and stop it itself."""
    live, _, sent, make = setup
    ex = make()
    submitter = fake_ray.submitter

    def racing_submitter(*a):
        submit = submitter(*a)

        def submit_and_race(*args):
            ref = submit(*args)
            with live.lock:
                assert ex.withdraw("t0", "cancelled meanwhile")
            return ref

        return submit_and_race

    fake_ray.submitter = racing_submitter
    fut = ex.submit(task(0, cpu_milli=1000), decide(live, "cloud-1", ("cpu", 0)))
    assert fut.result(timeout=0).status == "cancelled"
    assert fake_ray.forced == [sent[0]] and not any(ex._in_ray) and ex.drain(1)


def test_queued_by_pool_counts_waiting_tasks_and_their_expected_seconds(setup) -> None:
    from cluster.performance import exec_seconds

    live, _, sent, make = setup
    ex = make(pipeline_depth=0)
    assert ex.queued_by_pool() == {p: (0, 0.0) for p in live.spec.pools}
    edge1, edge2 = (live.spec.nodes[live.index(n)] for n in ("edge-1", "edge-2"))
    ts = [task(0, cpu_milli=4000, work=9.0), task(1, cpu_milli=2000, work=3.0), task(2, cpu_milli=2000, work=1.5),
          task(3, cpu_milli=4000, work=1.0), task(4, cpu_milli=4000, work=2.0)]
    futs = [ex.submit(t, decide(live, n, ("cpu", 0)))
            for t, n in zip(ts, ("edge-1", "edge-1", "edge-1", "edge-2", "edge-2"))]
    assert len(sent) == 2  # t0 on edge-1, t3 on edge-2; t1, t2 and t4 wait
    ex_s = [exec_seconds(edge1, t, ("cpu", 0)) for t in ts[:3]] + [exec_seconds(edge2, t, ("cpu", 0)) for t in ts[3:]]
    got = ex.queued_by_pool()
    assert got["edge"][0] == 3 and got["edge"][1] == pytest.approx(ex_s[1] + ex_s[2] + ex_s[4])
    assert all(v == (0, 0.0) for p, v in got.items() if p != "edge")
    assert ex.cancel("t1", "x")
    assert ex.queued_by_pool()["edge"] == (2, pytest.approx(ex_s[2] + ex_s[4]))
    sent[0].finish()  # t2 starts on edge-1
    wait_for(lambda: len(sent) == 3)
    assert ex.queued_by_pool()["edge"] == (1, pytest.approx(ex_s[4]))
    sent[1].finish()  # t3 ends: t4 starts on edge-2
    wait_for(lambda: len(sent) == 4)
    assert ex.queued_by_pool()["edge"] == (0, 0.0) and ex._queued_s == [0.0] * len(live.spec.nodes)
    for ref in sent[2:]:
        ref.finish()
    assert [f.result(timeout=5).status for f in futs] == ["succeeded", "cancelled", "succeeded", "succeeded",
                                                          "succeeded"]


def test_a_drained_node_finishes_its_running_tasks_and_its_queued_ones_move_without_a_retry(setup) -> None:
    """``capacity apply`` drains a node before stopping it: what runs there finishes there, what waits in its
    queue is re-placed at once (attempts stay 1: a drain is not a failure), and nothing new lands there."""
    live, reader, sent, make = setup
    ex = make(pipeline_depth=0)
    policy = make_policy("cheapest-feasible")  # prefers edge nodes
    i = live.index("edge-1")
    futs = [ex.submit(task(k, cpu_milli=2000), decide(live, "edge-1", ("cpu", 0)), policy=policy)
            for k in range(3)]
    assert len(sent) == 2 and int(live.state.queue_len[i]) == 1
    live.set_draining({"edge-1"})
    ex.replace_stranded()
    assert not live.usable[i] and live.problems[i].startswith("draining")
    assert int(live.state.queue_len[i]) == 0 and len(sent) == 3 and sent[2].node != live.node_id(i)
    for ref in sent:
        ref.finish()
    results = [f.result(timeout=5) for f in futs]
    assert [r.status for r in results] == ["succeeded"] * 3
    assert [r.node for r in results[:2]] == ["edge-1", "edge-1"] and results[2].node != "edge-1"
    assert [r.attempts for r in results] == [1, 1, 1]
    d = policy.select(task(9, cpu_milli=500), live.snapshot())
    assert d.placed and d.node != i
    live.set_draining(set())
    assert live.usable[i] and live.problems[i] == ""


def test_a_drain_leaves_what_ray_already_has_and_moves_only_what_it_does_not(setup) -> None:
    """Pipelined tasks were handed to Ray and may have started: they finish on the drained node (stopping them
    would interrupt work); the tasks not yet sent move."""
    live, reader, sent, make = setup
    ex = make(pipeline_depth=2)
    policy = make_policy("cheapest-feasible")
    i = live.index("edge-1")
    futs = [ex.submit(task(k, cpu_milli=2000), decide(live, "edge-1", ("cpu", 0)), policy=policy)
            for k in range(6)]
    assert len(sent) == 4 and int(live.state.queue_len[i]) == 4  # two running, two pipelined, two not sent
    live.set_draining({"edge-1"})
    ex.replace_stranded()
    assert int(live.state.queue_len[i]) == 2 and len(sent) == 6 and not ex._stops
    assert all(ref.node != live.node_id(i) for ref in sent[4:])
    for ref in sent:
        ref.finish()
    results = [f.result(timeout=5) for f in futs]
    assert [r.node == "edge-1" for r in results] == [True] * 4 + [False] * 2
    assert all(r.status == "succeeded" and r.attempts == 1 for r in results)


def test_a_warm_up_task_runs_each_modules_warm_hook_and_survives_a_failing_one(tmp_path, monkeypatch) -> None:
    """What a worker runs to warm up: the entry points' modules imported and their ``warm()`` called, so the
    first real task does not pay for a model; a module that fails to warm is left to its first task."""
    import os
    import sys

    from cluster.task_body import hold

    (tmp_path / "warm_ok.py").write_text("LOADED = []\ndef warm():\n    LOADED.append('model')\n")
    (tmp_path / "warm_bad.py").write_text("def warm():\n    raise RuntimeError('no GPU here')\n")
    (tmp_path / "warm_none.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    t0 = time.monotonic()
    assert hold(0.2, ("warm_bad", "warm_none", "warm_ok", "no_such_module_xyz")) == os.getpid()
    assert sys.modules["warm_ok"].LOADED == ["model"] and time.monotonic() - t0 >= 0.2


#: ``nvidia-smi -L`` on an A100 host split as local.yaml's gpu-mig-1 (the format NVIDIA's tool prints; no GPU
#: here, so the listing is recorded text, not this machine's)
NVIDIA_SMI_L = """GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 3g.40gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)
  MIG 2g.20gb     Device  1: (UUID: MIG-0e2b7d35-8b44-5b0a-9a4e-8d2f1c6b1a10)
  MIG 1g.10gb     Device  2: (UUID: MIG-1a1a1a1a-0000-5000-8000-000000000001)
  MIG 1g.10gb     Device  3: (UUID: MIG-1a1a1a1a-0000-5000-8000-000000000002)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-7e6f0b3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b)
  MIG 4g.40gb     Device  0: (UUID: MIG-4a4a4a4a-0000-5000-8000-000000000004)
  MIG 2g.20gb     Device  1: (UUID: MIG-2b2b2b2b-0000-5000-8000-000000000002)
  MIG 1g.10gb     Device  2: (UUID: MIG-1b1b1b1b-0000-5000-8000-000000000003)
"""


def test_a_function_on_a_mig_slice_sees_only_its_instance(setup, fake_ray, monkeypatch) -> None:
    """The second 1g.10gb slice of GPU 0 is the host's second 1g.10gb MIG device of GPU 0: the function runs with
    CUDA_VISIBLE_DEVICES set to that UUID (Ray sets it for GPUs only), in workers of that slot alone (CUDA reads the
    variable once per process); a fifth task waits for a freed slot rather than being handed to Ray early; a slot
    the host does not have fails the task, naming it, rather than showing the function every device."""
    from cluster import task_body as tb

    devices = tb.mig_devices(NVIDIA_SMI_L)
    assert [p for p, _ in devices[0]] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"] and len(devices[1]) == 3
    assert tb.mig_uuid(devices, 0, "1g.10gb", 1).endswith("000000000002")
    assert tb.mig_uuid(devices, 1, "3g.40gb", 0) is None
    live, _, sent, make = setup
    ex = make()
    seen = []
    look = lambda: seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))  # noqa: E731
    futs = [ex.submit(task(k, cpu_milli=500), decide(live, "gpu-mig-1", ("mig", "1g.10gb")), fn=look)
            for k in range(4)]  # gpu-mig-1 has three 1g.10gb slices: two on GPU 0, one on GPU 1
    assert [ref.args[-1] for ref in sent] == [(0, "1g.10gb", 0), (0, "1g.10gb", 1), (1, "1g.10gb", 0)]
    assert fake_ray.slots == [(0, "1g.10gb", 0), (0, "1g.10gb", 1), (1, "1g.10gb", 0)]  # a worker pool per slot
    monkeypatch.setattr(tb, "_MIG_LIST", devices)
    monkeypatch.setattr(tb, "_NODE_ID", live.node_id(live.index("gpu-mig-1")))  # run here, not in a Ray worker
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    sent[1].finish(tb.task_body(*sent[1].args))
    wait_for(lambda: len(sent) == 4)
    assert sent[3].args[-1] == (0, "1g.10gb", 1)  # the freed slot, only once it was free
    for ref in (sent[0], sent[3]):
        ref.finish(tb.task_body(*ref.args))
    monkeypatch.setattr(tb, "_MIG_LIST", {0: devices[0], 1: devices[1][:2]})  # a host whose GPU 1 lacks the 1g
    with pytest.raises(RuntimeError, match="no 1g.10gb MIG instance number 0 on GPU 1"):
        tb.task_body(*sent[2].args)
    sent[2].finish(RuntimeError("the host has no 1g.10gb MIG instance number 0 on GPU 1"))
    out = [f.result(timeout=5) for f in futs]
    assert [r.status for r in out] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert seen == [devices[0][3][1], devices[0][2][1], devices[0][3][1]] and os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv(tb.MIG_SLOT_ENV, "0/1g.10gb/0")  # a worker started for another slot refuses this one
    with pytest.raises(RuntimeError, match="serves MIG slot 0/1g.10gb/0"):
        tb.task_body(0.0, 0.0, "sleep", False, look, (), (0, "1g.10gb", 1))
    monkeypatch.setattr(tb, "_MIG_LIST", {})  # no NVIDIA tools (this machine): nothing is set
    tb.task_body(0.0, 0.0, "sleep", False, look, (), (0, "1g.10gb", 0))
    assert seen[-1] == ""
