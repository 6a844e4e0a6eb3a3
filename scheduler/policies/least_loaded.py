"""Least-loaded: the node with the lowest utilisation, counting its queue."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cluster.state import ClusterState
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task


@register("least-loaded")
class LeastLoaded(ScoringPolicy):
    pure = True  # the decision depends on the task and the state only (see ScoringPolicy.pure)
    reason = "lowest load (1 - utilisation - queued tasks)"

    def score(self, task: Task, state: ClusterState, cand: Candidates):
        # whole-cluster arithmetic, then the candidates: elementwise the same numbers, and
        # one gather instead of two mixed-dtype operations on gathered copies
        return (1.0 - state.load() - state.queue_len)[cand[0]]

    def score_many(self, tasks: Sequence[Task], state: ClusterState, cand: Candidates) -> np.ndarray:
        row = self.score(tasks[0], state, cand)  # the same for every task
        return np.tile(row, (len(tasks), 1))
