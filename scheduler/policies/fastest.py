"""Fastest-feasible (SLO-aware): the lowest expected end-to-end latency, queues included."""
from __future__ import annotations

from cluster.state import ClusterState
from scheduler.estimate import expected
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task


@register("fastest-feasible")
class FastestFeasible(ScoringPolicy):
    """Looks past "fits now": a free slow node can lose to a fast node that frees up soon."""

    reason = "lowest expected latency (-ms)"

    def score(self, task: Task, state: ClusterState, cand: Candidates):
        lat, cst = expected(task, state, cand[0], cand[1])
        return -lat - 1e-6 * cst
