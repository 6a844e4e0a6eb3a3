"""Batch decisions as a plan: each decision takes the capacity the ones before it took.

The plan runs on a private copy of the live state (:meth:`ClusterState.copy`),
booking each placed task the way the executor would (the share if it fits now,
else a place in the node's queue, with the predicted finish time the queue
projection reads), so a batch of a thousand identical tasks spreads out instead
of all naming the same node. Nothing is reserved on the cluster.
"""
from __future__ import annotations

from cluster.booking import book_predicted
from cluster.state import ClusterState
from scheduler.policy import Decision
from scheduler.task import Task


def book(state: ClusterState, task: Task, d: Decision) -> None:
    """Take what ``d`` places ``task`` on in ``state`` (a copy), as the executor would
    (:func:`cluster.booking.book_predicted`)."""
    if d.placed:
        book_predicted(state, d.node, task, d.share)
