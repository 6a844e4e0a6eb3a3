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
    pure = True  # the decision depends on the task and the state only (see ScoringPolicy.pure)
    reason = "lowest expected cost (-$)"

    def score(self, task: Task, state: ClusterState, cand: Candidates):
        nodes, shares, _ = cand
        tiers, spec_nodes = state.spec.tiers, state.spec.nodes
        out = []
        for i, share in zip(nodes.tolist(), shares):  # Python ints: a handful of candidates
            ex = expected_exec_s(task, state, i, share)
            out.append(-cost(tiers[spec_nodes[i].tier], task, share, ex) - 1e-9 * ex)
        return np.array(out, dtype=float)
