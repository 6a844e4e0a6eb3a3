"""One-step-lookahead oracle: the placement with the best expected objective.

Scores every feasible node with the simulator's own model (queue replay, speed,
sharing slowdown, tier network mean, prices) and the configured objective. It
is greedy in time (one step), which is what the RandomForest imitates and what an
RL policy can improve on by looking further ahead.
"""
from __future__ import annotations

import numpy as np

from cluster.state import ClusterState
from scheduler.estimate import expected
from scheduler.objective import Objective, load_objective
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task


@register("oracle")
class Oracle(ScoringPolicy):
    pure = True  # the decision depends on the task and the state only (see ScoringPolicy.pure)
    reason = "best expected objective (-score)"
    queue_aware = True

    def __init__(self, seed: int | None = 0, objective: Objective | str | None = None) -> None:
        super().__init__(seed)
        if isinstance(objective, str):
            objective = load_objective(objective)
        self.objective = objective or load_objective()

    def score(self, task: Task, state: ClusterState, cand: Candidates):
        lat, cst = expected(task, state, cand[0], cand[1])
        return -self.objective.scores(lat, np.full(len(lat), task.slo_ms), np.full(len(lat), task.priority),
                                      cst, np.full(len(lat), task.cost_sensitivity))
