"""Fastest-feasible (SLO-aware): the lowest expected end-to-end latency, queues included."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cluster.state import ClusterState
from scheduler.estimate import expected_lists, expected_many
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task


@register("fastest-feasible")
class FastestFeasible(ScoringPolicy):
    """Looks past "fits now": a free slow node can lose to a fast node that frees up soon."""

    pure = True  # the decision depends on the task and the state only (see ScoringPolicy.pure)
    reason = "lowest expected latency (-ms)"

    def score(self, task: Task, state: ClusterState, cand: Candidates):
        lat, cst = expected_lists(task, state, *cand)
        return np.array([-x - 1e-6 * c for x, c in zip(lat, cst)])

    def score_many(self, tasks: Sequence[Task], state: ClusterState, cand: Candidates) -> np.ndarray:
        lat, cst = expected_many(tasks, state, *cand)
        return -lat - 1e-6 * cst
