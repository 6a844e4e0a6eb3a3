"""Discrete-event simulator of a heterogeneous cluster in online mode (arrivals and departures).

Pure core: no Ray, no wall clock; deterministic for a seed. Events are task
arrivals (in arrival order) and finishes (a heap). Each node has a FIFO queue: a
task placed on a node where it does not fit yet waits there, and starts as soon
as the tasks ahead of it have started and it fits. A started task holds its
resources for its network delay plus its execution time (the live executor does
the same: the built-in task body sleeps the network delay, then works).

The core is :class:`OnlineSimulator`, stepped one arrival at a time
(``next_task`` / ``place``), so the Gymnasium env can drive it decision by
decision; :func:`simulate` is the loop that asks a policy. The only policy call is
``policy.select(task, state)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from cluster.performance import cost as task_cost
from cluster import booking
from cluster.booking import Forward, Held
from cluster.state import ClusterState
from cluster.topology import ClusterSpec
from cluster.vocabulary import share_text
from scheduler.objective import Objective
from scheduler.policy import Decision, Policy
from scheduler.record import RECORD_COLUMNS, TaskRecord
from scheduler.task import Task


@dataclass
class SimResult:
    """Per-task records, a timeline of utilisation, and the summary."""

    records: pd.DataFrame
    timeline: pd.DataFrame
    summary: dict = field(default_factory=dict)


def network_draws(seed: int, n: int) -> list[float]:
    """The uniform draw in [0, 1) of each of ``n`` tasks (arrival order) for ``seed``.

    Task ``k`` placed on a node of tier ``t`` sees a network delay of
    ``t.network_ms[0] + u[k] * (t.network_ms[1] - t.network_ms[0])`` ms, whichever
    policy placed it: every policy meets the same draws (a paired comparison), and
    the replay and the lower bound (:mod:`simulations.bound`) read the same ones.
    Python floats: the per-task arithmetic stays out of numpy scalars (same values).
    """
    return np.random.default_rng(seed).random(n).tolist()


class OnlineSimulator:
    """Step-wise online simulation: ``next_task()`` then ``place(task, decision)``, repeat.

    ``next_task`` advances the clock to the next arrival, finishing every task due
    before it; ``place`` applies a decision (start now, queue, or reject). After the
    last arrival, :meth:`finish` drains the running tasks and returns the result.
    ``records`` grows as tasks finish, so a caller can read the objective of tasks
    completed between two decisions (the RL reward).
    """

    def __init__(self, spec: ClusterSpec, tasks: Iterable[Task], *, seed: int = 0,
                 objective: Objective | None = None, timeline_points: int = 200,
                 fragmentation: Callable[[ClusterState], float] | None = None,
                 policy_name: str = "", horizon_s: float | None = None) -> None:
        self.spec = spec
        self.horizon_s = horizon_s
        self.objective = objective or Objective()
        self.tasks = list(tasks)
        self.state = ClusterState.from_spec(spec)
        # every change to this state is a booking step with known finish times, the case queue
        # replays are exact in: a policy asking each node's projected start behind a long queue then
        # extends one replay instead of replaying the queue per decision (quadratic under overload)
        self.state.cache_replays()
        self.policy_name = policy_name
        self.fragmentation = fragmentation
        self._unif = network_draws(seed, len(self.tasks))
        self._tiers = [spec.tiers[n.tier] for n in spec.nodes]
        self._net_range = [(t.network_ms[0], t.network_ms[1] - t.network_ms[0]) for t in self._tiers]
        self._labels = [(n.name, n.pool, n.tier) for n in spec.nodes]
        self.records: list[TaskRecord] = []
        self._roll = Forward(self.state, self._finish_one)
        horizon = self.tasks[-1].arrival if self.tasks else 0.0
        self._sample_dt = max(horizon / max(timeline_points, 1), 1e-9)
        self._next_sample = 0.0
        self._samples: list[tuple] = []
        self._net: dict[int, float] = {}
        self._k = 0  # index of the next arrival

    # ------------------------------------------------------------------ stepping
    def next_task(self) -> Task | None:
        """Advance to the next arrival and return it (None when every task has arrived)."""
        if self._k >= len(self.tasks):
            return None
        task = self.tasks[self._k]
        t = task.arrival
        self._roll.advance(t)
        while t >= self._next_sample:
            self._sample(self._next_sample)
            self._next_sample += self._sample_dt
        self.state.now = t
        return task

    def place(self, task: Task, d: Decision) -> None:
        """Apply ``d`` for ``task`` (the task ``next_task`` returned)."""
        k = self._k
        self._k += 1
        i = d.node
        if i < 0:  # not placed
            self.records.append(TaskRecord.not_succeeded(task, self.policy_name, "rejected", d.explanation))
            return
        lo, span = self._net_range[i]
        net = self._net[id(task)] = lo + self._unif[k] * span
        self._roll.place(i, task, d.share, task.arrival, net / 1000.0, d.device)

    def finish(self) -> SimResult:
        """Run the remaining tasks to the run's end (see the module docstring) and summarise."""
        if self.horizon_s is None:
            self._roll.advance(math.inf)
        else:
            end = (self.tasks[-1].arrival if self.tasks else 0.0) + self.horizon_s
            self._roll.advance(end)
            self._end_unfinished(end)
        self._sample(self.state.now)
        return self.result()

    @property
    def done(self) -> bool:
        return self._k >= len(self.tasks) and not self._roll.heap

    def result(self) -> SimResult:
        pools = self.spec.pools
        recs = pd.DataFrame.from_records(self.records, columns=RECORD_COLUMNS)
        timeline = pd.DataFrame.from_records(
            self._samples, columns=["time", *[f"util_{p}" for p in pools], "gpu_alloc_ratio",
                                    "fragmentation", "queued", "running"])
        from simulations.metrics import summarize

        return SimResult(recs, timeline, summarize(recs, timeline, pools))

    # ------------------------------------------------------------------ internals
    def _finish_one(self, t: float, i: int, task: Task, held: Held, started: float) -> None:
        """Record a task that finished at ``t`` (its resources are free again)."""
        alloc, ex = held[1], held[2]
        net_ms = self._net.pop(id(task))
        queue_ms = (started - task.arrival) * 1000.0
        latency = queue_ms + net_ms + ex * 1000.0
        share = alloc.share
        name, pool, tier = self._labels[i]
        c = task_cost(self._tiers[i], task, share, ex)
        self.records.append(TaskRecord.succeeded(
            task, self.policy_name, name, pool, tier, share_text(share), started > task.arrival, started, t,
            queue_ms, net_ms, ex * 1000.0, latency, c, self.objective))

    def _end_unfinished(self, end: float) -> None:
        """Record every task still running or queued at ``end`` as an unfinished miss."""
        self.state.now = max(self.state.now, end)
        self.state.replay_cache = None  # running tasks are taken back before their time: replays are stale
        heap = self._roll.heap
        left = [(task, i, started, self._net.pop(id(task)), held[2], held[1].share)
                for _, _, i, task, held, started in sorted(heap, key=lambda e: e[:2])]
        for entry in heap:
            booking.finish(self.state, entry[4])
        heap.clear()
        for i, q in enumerate(self.state.queues):
            left += [(task, i, np.nan, net_s * 1000.0, np.nan, share) for task, share, net_s in q]
        for task, i, started, net_ms, ex, share in left:
            running = started == started  # not NaN
            name, pool, tier = self._labels[i]
            self.records.append(TaskRecord.unfinished(
                task, self.policy_name, f"{'running' if running else 'queued'} when the run ended at {end:.1f} s",
                end, self.objective, node=name, pool=pool, tier=tier, share=share_text(share),
                queued=not running or started > task.arrival, start=started, network_ms=net_ms,
                exec_ms=ex * 1000.0 if running else np.nan,
                cost=task_cost(self._tiers[i], task, share, ex) if running else 0.0))  # a started task is billed

    def _sample(self, t: float) -> None:
        state = self.state
        load = state.load()
        util = [float(load[state.pool_of == p].mean()) for p in range(len(self.spec.pools))]
        gtot = state.gpu_total.sum()
        ratio = float(state.gpu_used().sum() / gtot) if gtot else 0.0
        frag = self.fragmentation(state) if self.fragmentation is not None else float("nan")
        self._samples.append((t, *util, ratio, frag, int(state.queue_len.sum()), int(state.running.sum())))


def simulate(spec: ClusterSpec, tasks: Iterable[Task], policy: Policy, *, seed: int = 0,
             objective: Objective | None = None, timeline_points: int = 200,
             fragmentation: Callable[[ClusterState], float] | None = None,
             progress: Callable[[int], None] | None = None, horizon_s: float | None = None) -> SimResult:
    """Run ``tasks`` (sorted by arrival) through ``policy`` on ``spec``.

    Args:
        seed: seeds the network-delay draws and the policy (``policy.reset(seed)``).
        fragmentation: optional measure sampled on the timeline (GPU milli).
        progress: called with the number of tasks handled, every 1,000 tasks.
        horizon_s: end the run this long after the last arrival (None: when the last task
            finishes); tasks unfinished then are recorded as misses (see the module docstring).
    """
    sim = OnlineSimulator(spec, tasks, seed=seed, objective=objective, timeline_points=timeline_points,
                          fragmentation=fragmentation, policy_name=policy.name, horizon_s=horizon_s)
    policy.reset(seed)
    state = sim.state
    n = 0
    while (task := sim.next_task()) is not None:
        sim.place(task, policy.select(task, state))
        n += 1
        if progress is not None and n % 1000 == 0:
            progress(n)
    return sim.finish()
