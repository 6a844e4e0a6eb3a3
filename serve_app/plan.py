"""Batch decisions as a plan: each decision takes the capacity the ones before it took.

The plan runs on a private copy of the live state (:meth:`ClusterState.copy`),
booking each placed task the way the executor would (the share if it fits now,
else a place in the node's queue, with the predicted finish time the queue
projection reads), so a batch of a thousand identical tasks spreads out instead
of all naming the same node. Nothing is reserved on the cluster.
"""
from __future__ import annotations

from cluster.booking import start_or_queue
from cluster.performance import exec_seconds
from cluster.state import ClusterState
from scheduler.policy import Decision
from scheduler.task import Task


def book(state: ClusterState, task: Task, d: Decision) -> None:
    """Take what ``d`` places ``task`` on in ``state`` (a copy), as the executor would.

    The predicted hold is the network delay plus the execution time alone (no
    time-slice neighbours), what the executor's queue entries carry.
    """
    if not d.placed:
        return
    i, share = d.node, d.share
    net_s = state.net_mean_ms[i] / 1000.0
    ex = exec_seconds(state.spec.nodes[i], task, share)
    start_or_queue(state, i, task, share, state.now, net_s, exec_s=ex, queued_s=net_s + ex)
