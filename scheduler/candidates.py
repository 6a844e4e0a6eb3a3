"""The candidates a node-level policy scores: every statically feasible (node, share), bounded.

The RandomForest, the node-level RL policy and its training env all score the same
list, so a policy trained in the env sees at serving time exactly the candidates
(and in the same order) it learnt on. On a big cluster only the ``k`` best by a
cheap rule are kept (:data:`PREFILTERS`): by turns the least loaded plus queued, the
fastest and the most utilised, each where the task fits now first (the last two: where it
would start at once, no queue ahead) (``mixed``), or only the least loaded plus queued
(``spread``, the rule ``rl:2`` was trained with). A policy trained with a rule is served
with that rule as it is now: an RL model trained with ``mixed`` before the start-at-once
ordering (none is shipped) would see a slightly different cut on clusters beyond 64 nodes.
"""
from __future__ import annotations

import numpy as np

from cluster.state import ClusterState
from scheduler.features import layout
from scheduler.policy import FeasibilityCache
from scheduler.task import Task

#: candidates scored at most per decision (big clusters: the best by the cheap prefilter rule)
MAX_CANDIDATES = 64
#: prefilter rules: ``mixed`` keeps spreading, fastest and packing choices within reach (on the
#: 1,213-node Alibaba cluster, spreading alone hid the fast GPUs and the tight fits from the forest)
PREFILTERS = ("mixed", "spread")
DEFAULT_PREFILTER = "mixed"

#: (nodes, shares, fits-now mask), aligned
Candidates = tuple[np.ndarray, list, np.ndarray]


def rank(state: ClusterState, nodes: np.ndarray, fits: np.ndarray) -> np.ndarray:
    """Positions of ``nodes`` best first by the cheap rule: fits now, then least loaded plus queued."""
    return np.lexsort((state.util[nodes] + state.queue_len[nodes], ~fits))


def prefilter(state: ClusterState, nodes: np.ndarray, shares: list, fits: np.ndarray, k: int,
              rule: str = DEFAULT_PREFILTER) -> Candidates:
    """At most ``k`` candidates, in their order: all of them when there are no more than ``k``.

    Else those where the task fits now first; ``spread`` keeps the least loaded plus queued,
    ``mixed`` draws in turn from three orders so that each kind of choice a heuristic would
    make stays within reach of the scorer: the least loaded plus queued (spreading), the
    fastest node (then least loaded) and the most utilised (packing, best-fit), the last two
    with the nodes where it would start at once (fits, no queue) first. Ties: the lowest index."""
    if len(nodes) <= k:
        return nodes, shares, fits
    if rule not in PREFILTERS:
        raise ValueError(f"prefilter rule {rule!r} is not one of {PREFILTERS}")
    spread = rank(state, nodes, fits)
    if rule == "spread":
        keep = np.sort(spread[:k])
    else:
        # "now" is where the task would start at once: it fits and no queue is ahead of it (FIFO); packing
        # ranks those by utilisation alone (a queue counted as load put the busiest queues first)
        util, queue = state.util[nodes], state.queue_len[nodes]
        later = ~fits | (queue > 0)
        lay = layout(state)
        on_cpu = np.fromiter((s[0] == "cpu" for s in shares), bool, len(shares))
        speed = np.where(on_cpu, lay.cpu_speed[nodes], lay.speed[nodes])
        merged = np.stack([spread, np.lexsort((util + queue, -speed, later)),
                           np.lexsort((queue, -util, later))]).ravel(order="F")
        _, first = np.unique(merged, return_index=True)  # one from each order in turn, each node once
        keep = np.sort(merged[np.sort(first)[:k]])
    return nodes[keep], [shares[j] for j in keep.tolist()], fits[keep]


def candidates(feasible: FeasibilityCache, task: Task, state: ClusterState, k: int = MAX_CANDIDATES,
               rule: str = DEFAULT_PREFILTER) -> Candidates:
    """The scored candidates of ``task`` now: at most ``k``, cut by ``rule`` (see :func:`prefilter`)."""
    sh = feasible.shape(task, state)
    nodes, shares = sh.nodes, sh.shares
    if not len(nodes):
        return nodes, shares, np.zeros(0, dtype=bool)
    fits = sh.fits_now(task, state)
    if type(fits) is list:
        fits = np.array(fits, dtype=bool)
    return prefilter(state, nodes, shares, fits, k, rule)
