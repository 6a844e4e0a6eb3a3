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
from functools import lru_cache
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from cluster.performance import cost as task_cost
from cluster.booking import Forward, Held
from cluster.state import ClusterState
from cluster.topology import ClusterSpec
from scheduler.objective import Objective
from scheduler.policy import Decision, Policy
from scheduler.task import Task

RECORD_COLUMNS = [
    "task_id", "kind", "policy", "status", "reason", "arrival", "priority", "slo_ms",
    "cost_sensitivity", "gpu_need", "node", "pool", "tier", "share", "queued", "start", "finish",
    "queue_ms", "network_ms", "exec_ms", "latency_ms", "slo_met", "cost", "score",
]


@dataclass
class SimResult:
    """Per-task records, a timeline of utilisation, and the summary."""

    records: pd.DataFrame
    timeline: pd.DataFrame
    summary: dict = field(default_factory=dict)


@lru_cache(maxsize=None)
def _share_text(share) -> str:
    kind, amount = share
    if kind == "cpu":
        return "cpu"
    if kind == "slice":
        return f"slice:{int(amount) / 1000:g}"
    return f"{kind}:{amount}"


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
                 policy_name: str = "") -> None:
        self.spec = spec
        self.objective = objective or Objective()
        self.tasks = list(tasks)
        self.state = ClusterState.from_spec(spec)
        self.policy_name = policy_name
        self.fragmentation = fragmentation
        # Python floats: the per-task arithmetic stays out of numpy scalars (same values)
        self._unif = np.random.default_rng(seed).random(len(self.tasks)).tolist()
        self._tiers = [spec.tiers[n.tier] for n in spec.nodes]
        self._net_range = [(t.network_ms[0], t.network_ms[1] - t.network_ms[0]) for t in self._tiers]
        self._labels = [(n.name, n.pool, n.tier) for n in spec.nodes]
        self.records: list[tuple] = []
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
            self.records.append((task.id, task.kind, self.policy_name, "rejected", d.explanation,
                                 task.arrival, task.priority, task.slo_ms, task.cost_sensitivity,
                                 task.gpu_need, "", "", "", "", False, np.nan, np.nan, np.nan, np.nan,
                                 np.nan, np.nan, False, 0.0, np.nan))
            return
        lo, span = self._net_range[i]
        net = self._net[id(task)] = lo + self._unif[k] * span
        self._roll.place(i, task, d.share, task.arrival, net / 1000.0, d.device)

    def finish(self) -> SimResult:
        """Run every remaining task to completion and summarise."""
        self._roll.advance(math.inf)
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
        self.records.append((
            task.id, task.kind, self.policy_name, "succeeded", "", task.arrival, task.priority,
            task.slo_ms, task.cost_sensitivity, task.gpu_need, name, pool, tier,
            _share_text(share), started > task.arrival, started, t, queue_ms, net_ms, ex * 1000.0,
            latency, latency <= task.slo_ms, c,
            self.objective.score(latency, task.slo_ms, task.priority, c, task.cost_sensitivity)))

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
             progress: Callable[[int], None] | None = None) -> SimResult:
    """Run ``tasks`` (sorted by arrival) through ``policy`` on ``spec``.

    Args:
        seed: seeds the network-delay draws and the policy (``policy.reset(seed)``).
        fragmentation: optional measure sampled on the timeline (GPU milli).
        progress: called with the number of tasks handled, every 1,000 tasks.
    """
    sim = OnlineSimulator(spec, tasks, seed=seed, objective=objective, timeline_points=timeline_points,
                          fragmentation=fragmentation, policy_name=policy.name)
    policy.reset(seed)
    state = sim.state
    n = 0
    while (task := sim.next_task()) is not None:
        sim.place(task, policy.select(task, state))
        n += 1
        if progress is not None and n % 1000 == 0:
            progress(n)
    return sim.finish()
