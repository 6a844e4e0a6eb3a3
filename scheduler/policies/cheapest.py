"""Cheapest-feasible: the lowest expected dollar cost, ties to the faster node."""
from __future__ import annotations

import numpy as np

from cluster.performance import cost
from cluster.state import ClusterState
from scheduler.estimate import expected_exec_s
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task


@register("cheapest-feasible")
class CheapestFeasible(ScoringPolicy):
    reason = "lowest expected cost (-$)"

    def score(self, task: Task, state: ClusterState, cand: Candidates):
        nodes, shares, _ = cand
        out = np.empty(len(nodes))
        for k, (i, share) in enumerate(zip(nodes, shares)):
            ex = expected_exec_s(task, state, int(i), share)
            tier = state.spec.tiers[state.spec.nodes[int(i)].tier]
            out[k] = -cost(tier, task, share, ex) - 1e-9 * ex
        return out
