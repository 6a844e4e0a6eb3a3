"""When would a task start on a node? A forward replay of that node's FIFO queue.

The one-step oracle and the SLO-aware heuristic ask this of every candidate node.
It replays the node alone: running tasks free their resources at their known
finish times, queued tasks start in FIFO order as soon as they fit (each then holds
its network delay plus its execution time, slowed by the time-slice neighbours it
starts next to, as in the simulator), and then the new task. Exact for the
simulator; an estimate for the live cluster, where finish times are predictions.
"""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

import numpy as np

from cluster.performance import exec_seconds
from cluster.state import PROFILE_INDEX, Allocation, ClusterState, Share, fits_free, fits_now

if TYPE_CHECKING:
    from scheduler.task import Task


class _NodeCopy:
    """Free capacity of one node, copied so the replay cannot touch the real state."""

    def __init__(self, state: ClusterState, i: int) -> None:
        self.cpu = int(state.cpu_free[i])
        self.mem = int(state.mem_free[i])
        self.gpu = state.gpu_free[i].copy()
        self.sharers = state.gpu_tasks[i].copy()
        self.mig = state.mig_free[i].copy()

    def fits(self, task: "Task", share: Share) -> bool:
        return fits_free(self.cpu, self.mem, self.gpu, self.mig, task, share)

    def take(self, task: "Task", share: Share) -> tuple[tuple, int]:
        """Reserve like :func:`cluster.state.allocate` (best-fit device).

        Returns an undo record and the number of tasks on the device it joined.
        """
        kind, amount = share
        self.cpu -= task.cpu_milli
        self.mem -= task.mem_mib
        if kind == "slice":
            cand = np.where(self.gpu >= amount, self.gpu, 10**9)
            d = int(cand.argmin())
            self.gpu[d] -= amount
            self.sharers[d] += 1
            return (task.cpu_milli, task.mem_mib, ((d, amount),), None), int(self.sharers[d])
        if kind == "whole":
            free = np.flatnonzero(self.gpu == 1000)[: int(amount)]
            self.gpu[free] = 0
            self.sharers[free] += 1
            return (task.cpu_milli, task.mem_mib, tuple((int(d), 1000) for d in free), None), 1
        if kind == "mig":
            self.mig[PROFILE_INDEX[amount]] -= 1
            return (task.cpu_milli, task.mem_mib, (), amount), 1
        return (task.cpu_milli, task.mem_mib, (), None), 1

    def give(self, cpu: int, mem: int, devices: tuple, mig: str | None) -> None:
        self.cpu += cpu
        self.mem += mem
        for d, m in devices:
            self.gpu[d] += m
            self.sharers[d] -= 1
        if mig is not None:
            self.mig[PROFILE_INDEX[mig]] += 1


def _undo(alloc: Allocation) -> tuple:
    return (alloc.cpu, alloc.mem, alloc.devices, alloc.mig[2] if alloc.mig else None)


def projected_start(state: ClusterState, i: int, task: "Task", share: Share) -> float:
    """Earliest time ``task`` could start on node ``i`` behind its current queue."""
    now = state.now
    queue = state.queues[i]
    if not queue and fits_now(state, i, task, share):
        return now
    node = _NodeCopy(state, i)
    pending = [(f, k, _undo(a)) for k, (f, a) in enumerate(state.holding[i])]
    heapq.heapify(pending)
    seq = len(pending)
    t = now
    spec_node = state.spec.nodes[i]
    for item_task, item_share, net_s in [*queue, (task, share, 0.0)]:
        while not node.fits(item_task, item_share):
            if not pending:
                return float("inf")  # cannot ever fit (should have been filtered)
            f, _, undo = heapq.heappop(pending)
            node.give(*undo)
            t = max(t, f)
        if item_task is task:
            return t
        undo, sharers = node.take(item_task, item_share)
        hold_s = net_s + exec_seconds(spec_node, item_task, item_share, sharers)
        heapq.heappush(pending, (t + hold_s, seq, undo))
        seq += 1
    return t
