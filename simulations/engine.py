"""Discrete-event simulator of a heterogeneous cluster in online mode (arrivals and departures).

Pure core: no Ray, no wall clock; deterministic for a seed. Events are task
arrivals (in arrival order) and finishes (a heap). Each node has a FIFO queue: a
task placed on a node where it does not fit yet waits there, and starts as soon
as the tasks ahead of it have started and it fits. A started task holds its
resources for its network delay plus its execution time (the live executor does
the same: the built-in task body sleeps the network delay, then works).

The only policy call is ``policy.select(task, state)``.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from cluster.performance import cost as task_cost
from cluster.performance import exec_seconds
from cluster.state import ClusterState, allocate, fits_now, release
from cluster.topology import ClusterSpec
from scheduler.objective import Objective
from scheduler.policy import Policy
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


def _share_text(share) -> str:
    kind, amount = share
    if kind == "cpu":
        return "cpu"
    if kind == "slice":
        return f"slice:{int(amount) / 1000:g}"
    return f"{kind}:{amount}"


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
    objective = objective or Objective()
    tasks = list(tasks)
    state = ClusterState.from_spec(spec)
    policy.reset(seed)
    rng = np.random.default_rng(seed)
    unif = rng.random(len(tasks))
    nodes = spec.nodes
    tiers = [spec.tiers[n.tier] for n in nodes]
    pool_names = spec.pools
    records: list[tuple] = []
    heap: list[tuple] = []
    seq = 0
    horizon = tasks[-1].arrival if tasks else 0.0
    sample_dt = max(horizon / max(timeline_points, 1), 1e-9)
    next_sample = 0.0
    samples: list[tuple] = []
    net_of: dict[int, float] = {}

    def start(task: Task, i: int, share, device: int | None, t: float) -> None:
        nonlocal seq
        alloc = allocate(state, i, task, share, device)
        sharers = int(state.gpu_tasks[i, alloc.devices[0][0]]) if share[0] == "slice" else 1
        ex = exec_seconds(nodes[i], task, share, sharers)
        finish = t + net_of[id(task)] / 1000.0 + ex
        entry = [finish, alloc]
        state.holding[i].append(entry)
        heapq.heappush(heap, (finish, seq, i, task, entry, t, ex))
        seq += 1

    def finish_one() -> None:
        t, _, i, task, entry, started, ex = heapq.heappop(heap)
        state.now = t
        release(state, entry[1])
        state.holding[i].remove(entry)
        net_ms = net_of.pop(id(task))
        queue_ms = (started - task.arrival) * 1000.0
        latency = queue_ms + net_ms + ex * 1000.0
        share = entry[1].share
        c = task_cost(tiers[i], task, share, ex)
        records.append((task.id, task.kind, policy.name, "succeeded", "", task.arrival, task.priority,
                        task.slo_ms, task.cost_sensitivity, task.gpu_need, nodes[i].name,
                        nodes[i].pool, nodes[i].tier, _share_text(share), started > task.arrival,
                        started, t, queue_ms, net_ms, ex * 1000.0, latency, latency <= task.slo_ms, c,
                        objective.score(latency, task.slo_ms, task.priority, c, task.cost_sensitivity)))
        q = state.queues[i]
        while q and fits_now(state, i, q[0][0], q[0][1]):
            qt, qs, _ = q.popleft()
            state.queue_len[i] -= 1
            start(qt, i, qs, None, t)

    def sample(t: float) -> None:
        load = state.load()
        util = [float(load[state.pool_of == p].mean()) for p in range(len(pool_names))]
        gtot = state.gpu_total.sum()
        ratio = float(state.gpu_used().sum() / gtot) if gtot else 0.0
        frag = fragmentation(state) if fragmentation is not None else float("nan")
        samples.append((t, *util, ratio, frag, int(state.queue_len.sum()), int(state.running.sum())))

    for k, task in enumerate(tasks):
        t = task.arrival
        while heap and heap[0][0] <= t:
            finish_one()
        while t >= next_sample:
            sample(next_sample)
            next_sample += sample_dt
        state.now = t
        d = policy.select(task, state)
        if not d.placed:
            records.append((task.id, task.kind, policy.name, "rejected", d.explanation, t, task.priority,
                            task.slo_ms, task.cost_sensitivity, task.gpu_need, "", "", "", "", False,
                            np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, False, 0.0, np.nan))
            continue
        i = d.node
        lo, hi = tiers[i].network_ms
        net_of[id(task)] = lo + unif[k] * (hi - lo)
        q = state.queues[i]
        if not q and fits_now(state, i, task, d.share):
            start(task, i, d.share, d.device, t)
        else:
            hold = net_of[id(task)] / 1000.0 + exec_seconds(nodes[i], task, d.share)
            q.append((task, d.share, hold))
            state.queue_len[i] += 1
        if progress is not None and k % 1000 == 999:
            progress(k + 1)
    while heap:
        finish_one()
    sample(state.now)
    recs = pd.DataFrame.from_records(records, columns=RECORD_COLUMNS)
    timeline = pd.DataFrame.from_records(
        samples, columns=["time", *[f"util_{p}" for p in pool_names], "gpu_alloc_ratio",
                          "fragmentation", "queued", "running"])
    from simulations.metrics import summarize

    return SimResult(recs, timeline, summarize(recs, timeline, pool_names))
