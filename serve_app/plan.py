"""Batch decisions as a plan: each decision takes the capacity the ones before it took.

The plan runs on a private copy of the live state, booking each placed task the
way the executor would (the share if it fits now, else a place in the node's
queue, with the predicted finish time the queue projection reads), so a batch of
a thousand identical tasks spreads out instead of all naming the same node.
Nothing is reserved on the cluster.
"""
from __future__ import annotations

import dataclasses
from collections import deque

from cluster.performance import exec_seconds
from cluster.state import ClusterState, allocate, fits_now
from scheduler.policy import Decision
from scheduler.task import Task


def scratch_copy(state: ClusterState) -> ClusterState:
    """A copy whose free capacity, queues and holdings can change without touching ``state``."""
    return dataclasses.replace(
        state,
        cpu_free=state.cpu_free.copy(), mem_free=state.mem_free.copy(), gpu_free=state.gpu_free.copy(),
        gpu_tasks=state.gpu_tasks.copy(), mig_free=state.mig_free.copy(),
        mig_slots=[{p: list(s) for p, s in slots.items()} for slots in state.mig_slots],
        queue_len=state.queue_len.copy(), running=state.running.copy(),
        queues=[deque(q) for q in state.queues], holding=[list(h) for h in state.holding],
        mig_used=state.mig_used.copy(), gpu_held=state.gpu_held.copy(), util=state.util.copy(),
    )


def book(state: ClusterState, task: Task, d: Decision) -> None:
    """Take what ``d`` places ``task`` on in ``state`` (a scratch copy), as the executor would."""
    if not d.placed:
        return
    i, share = d.node, d.share
    nd = state.spec.nodes[i]
    net_s = state.net_mean_ms[i] / 1000.0
    if not state.queues[i] and fits_now(state, i, task, share):
        alloc = allocate(state, i, task, share, None, checked=True)
        state.holding[i].append([state.now + net_s + exec_seconds(nd, task, share), alloc])
    else:
        state.queues[i].append((task, share, net_s + exec_seconds(nd, task, share)))
        state.queue_len[i] += 1
