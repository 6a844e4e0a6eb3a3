"""projected_start: when a task would start on a node, behind its running tasks and FIFO queue."""
from __future__ import annotations

import numpy as np
import pytest

from cluster.booking import projected_start
from cluster.state import CPU_SHARE, ClusterState, allocate
from cluster.topology import ClusterSpec, GpuDevice, NodeSpec, TierSpec
from scheduler.task import Task, make_task
from simulations.engine import simulate


def one_node(cpus: int = 4, devices: tuple[GpuDevice, ...] = (), net_ms: float = 0.0) -> ClusterSpec:
    kind = "gpu" if devices else "cloud"
    tier = TierSpec(kind, kind, (net_ms, net_ms), 0.0, 0.0, 0.0, 0.0)
    node = NodeSpec("n0", kind, kind, cpus * 1000, 64 * 1024, 1.0, "V100" if devices else None,
                    1.0 if devices else 0.0, 0.6, devices)
    return ClusterSpec("one", {kind: tier}, (node,))


def task(id: str = "t", **kw) -> Task:
    return make_task({"id": id, "mem_mib": 1024, **kw}, infer=False)


def run(state: ClusterState, t: Task, finish: float, share=CPU_SHARE) -> None:
    """Start ``t`` now on node 0, finishing at ``finish`` (as the simulator records it)."""
    state.holding[0].append([finish, allocate(state, 0, t, share)])


def enqueue(state: ClusterState, t: Task, hold_s: float, share=CPU_SHARE) -> None:
    """Queue ``t`` so that, once started, it holds the node ``hold_s`` seconds.

    Queue entries carry the network delay; the projection adds the execution time
    (``work`` / speed, here a cpu_speed 1.0 node), so the delay is the remainder.
    """
    state.queues[0].append((t, share, hold_s - t.work))
    state.queue_len[0] += 1


@pytest.fixture
def state() -> ClusterState:
    s = ClusterState.from_spec(one_node(cpus=4))
    s.now = 10.0
    return s


def test_empty_node_starts_now(state: ClusterState) -> None:
    assert projected_start(state, 0, task(cpu_milli=4000), CPU_SHARE) == 10.0


def test_fits_beside_running_tasks_starts_now(state: ClusterState) -> None:
    run(state, task("a", cpu_milli=2000), finish=15.0)
    assert projected_start(state, 0, task(cpu_milli=2000), CPU_SHARE) == 10.0


def test_waits_for_the_task_that_frees_enough(state: ClusterState) -> None:
    run(state, task("a", cpu_milli=2000), finish=15.0)
    run(state, task("b", cpu_milli=2000), finish=12.0)
    assert projected_start(state, 0, task(cpu_milli=1000), CPU_SHARE) == 12.0  # b frees enough
    assert projected_start(state, 0, task(cpu_milli=2000), CPU_SHARE) == 12.0
    assert projected_start(state, 0, task(cpu_milli=3000), CPU_SHARE) == 15.0  # needs both


def test_fifo_queue_ahead_is_respected(state: ClusterState) -> None:
    run(state, task("a", cpu_milli=2000), finish=15.0)
    run(state, task("b", cpu_milli=2000), finish=12.0)
    enqueue(state, task("c", cpu_milli=4000), hold_s=5.0)  # starts at 15, holds the node to 20
    # Would fit at 12 when b finishes, but FIFO: no overtaking the queued 4-core task.
    assert projected_start(state, 0, task(cpu_milli=1000), CPU_SHARE) == 20.0


def test_queue_ahead_on_a_free_node(state: ClusterState) -> None:
    enqueue(state, task("c", cpu_milli=3000), hold_s=5.0)  # starts now, at 10
    assert projected_start(state, 0, task(cpu_milli=1000), CPU_SHARE) == 10.0
    assert projected_start(state, 0, task(cpu_milli=2000), CPU_SHARE) == 15.0


def test_queued_tasks_start_in_order(state: ClusterState) -> None:
    run(state, task("a", cpu_milli=4000), finish=11.0)
    enqueue(state, task("c", cpu_milli=3000), hold_s=2.0)  # 11 .. 13
    enqueue(state, task("d", cpu_milli=2000), hold_s=4.0)  # 13 .. 17 (does not fit beside c)
    assert projected_start(state, 0, task(cpu_milli=2000), CPU_SHARE) == 13.0  # beside d
    assert projected_start(state, 0, task(cpu_milli=3000), CPU_SHARE) == 17.0


def test_projection_does_not_touch_the_state(state: ClusterState) -> None:
    run(state, task("a", cpu_milli=4000), finish=15.0)
    enqueue(state, task("c", cpu_milli=4000), hold_s=5.0)
    before = (state.cpu_free.copy(), len(state.queues[0]), [e[0] for e in state.holding[0]])
    projected_start(state, 0, task(cpu_milli=1000), CPU_SHARE)
    assert (state.cpu_free == before[0]).all() and len(state.queues[0]) == before[1]
    assert [e[0] for e in state.holding[0]] == before[2] and state.now == 10.0


def test_gpu_slices_and_mig_instances() -> None:
    devs = (GpuDevice("V100", "time-slicing", 250),)
    s = ClusterState.from_spec(one_node(cpus=16, devices=devs))
    run(s, task("a", gpu_milli=500), finish=3.0, share=("slice", 500))
    run(s, task("b", gpu_milli=250), finish=5.0, share=("slice", 250))
    assert projected_start(s, 0, task(gpu_milli=250), ("slice", 250)) == 0.0
    assert projected_start(s, 0, task(gpu_milli=500), ("slice", 500)) == 3.0
    assert projected_start(s, 0, task(gpu_count=1), ("whole", 1)) == 5.0

    mig = (GpuDevice("A100", "mig", 1000, ("4g.40gb", "3g.40gb")),)
    s = ClusterState.from_spec(one_node(cpus=16, devices=mig))
    run(s, task("a", mig_profile="3g.40gb"), finish=7.0, share=("mig", "3g.40gb"))
    assert projected_start(s, 0, task(mig_profile="4g.40gb"), ("mig", "4g.40gb")) == 0.0
    assert projected_start(s, 0, task(mig_profile="3g.40gb"), ("mig", "3g.40gb")) == 7.0


class _Recorder:
    """Places every task on node 0 and records the projected start at decision time."""

    name = "recorder"

    def __init__(self) -> None:
        from scheduler.policy import make_policy

        self.inner = make_policy("least-loaded")
        self.projected: dict[str, float] = {}

    def reset(self, seed: int | None = None) -> None:
        self.inner.reset(seed)

    def select(self, t: Task, state: ClusterState):
        d = self.inner.select(t, state)
        self.projected[t.id] = projected_start(state, d.node, t, d.share)
        return d


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gpu", ["none", "whole"])
def test_projection_matches_the_simulator(seed: int, gpu: str) -> None:
    """CPU and whole-GPU tasks: the projected start is the start the simulator then plays out."""
    devs = tuple(GpuDevice("V100", "exclusive", 1000) for _ in range(2))
    spec = one_node(cpus=8, devices=devs, net_ms=10.0)
    rng = np.random.default_rng(seed)
    tasks, t = [], 0.0
    for k in range(40):
        t += float(rng.exponential(0.3))
        kw = {"cpu_milli": int(rng.choice([1000, 2000, 4000])), "work": float(rng.uniform(0.1, 3.0))}
        if gpu == "whole" and k % 2:
            kw["gpu_count"] = int(rng.choice([1, 2]))
        tasks.append(task(f"t{k}", arrival=t, **kw))
    rec = _Recorder()
    records = simulate(spec, tasks, rec, seed=seed).records.set_index("task_id")
    assert records["queued"].any()  # the check means something only if tasks waited
    for tid, projected in rec.projected.items():
        assert projected == pytest.approx(records.loc[tid, "start"], abs=1e-9), tid


def test_projection_behind_a_queued_time_sliced_task_matches_the_simulator() -> None:
    devs = (GpuDevice("V100", "time-slicing", 500),)  # replicas 2
    spec = one_node(cpus=8, devices=devs)
    tasks = [
        task("a", arrival=0.0, gpu_milli=500, work=6.0),  # alone: runs 0 .. 6
        task("x", arrival=0.001, gpu_milli=500, work=0.6),  # shares with a: 0.6 / 0.6 = 1 s
        task("b", arrival=0.002, gpu_milli=500, work=0.6),  # queued; will share with a: 1 s, not 0.6
        task("c", arrival=0.003, gpu_milli=500, work=0.1),  # queued behind b
    ]
    rec = _Recorder()
    records = simulate(spec, tasks, rec, seed=0).records.set_index("task_id")
    assert records.loc["b", "start"] == pytest.approx(1.001)
    assert records.loc["c", "start"] == pytest.approx(2.001)
    assert rec.projected["c"] == pytest.approx(records.loc["c", "start"])  # projected: 1.601
