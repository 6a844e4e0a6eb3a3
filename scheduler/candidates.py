"""The candidates a node-level policy scores: every statically feasible (node, share), bounded.

The RandomForest, the node-level RL policy and its training env all score the same
list, so a policy trained in the env sees at serving time exactly the candidates
(and in the same order) it learnt on. On a big cluster only the ``k`` best by a
cheap rule are kept: where the task fits now first, then the least loaded plus
queued (ties: the lowest index).
"""
from __future__ import annotations

import numpy as np

from cluster.state import ClusterState, fits_now_mask
from scheduler.policy import FeasibilityCache
from scheduler.task import Task

#: candidates scored at most per decision (big clusters: the best by the cheap prefilter rule)
MAX_CANDIDATES = 64

#: (nodes, shares, fits-now mask), aligned
Candidates = tuple[np.ndarray, list, np.ndarray]


def rank(state: ClusterState, nodes: np.ndarray, fits: np.ndarray) -> np.ndarray:
    """Positions of ``nodes`` best first by the cheap rule: fits now, then least loaded plus queued."""
    return np.lexsort((state.util[nodes] + state.queue_len[nodes], ~fits))


def prefilter(state: ClusterState, nodes: np.ndarray, shares: list, fits: np.ndarray, k: int) -> Candidates:
    """At most ``k`` candidates: those where the task fits now first, then the least loaded plus queued
    (ties: the lowest index). All of them, in their order, when there are no more than ``k``."""
    if len(nodes) <= k:
        return nodes, shares, fits
    keep = np.sort(rank(state, nodes, fits)[:k])
    return nodes[keep], [shares[j] for j in keep.tolist()], fits[keep]


def candidates(feasible: FeasibilityCache, task: Task, state: ClusterState, k: int = MAX_CANDIDATES) -> Candidates:
    """The scored candidates of ``task`` now: at most ``k`` (see :func:`prefilter`)."""
    nodes, shares, groups = feasible.entry(task, state)
    if not len(nodes):
        return nodes, shares, np.zeros(0, dtype=bool)
    return prefilter(state, nodes, shares, fits_now_mask(state, task, nodes, groups), k)
