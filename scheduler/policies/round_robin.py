"""Round-robin: the next feasible node after the last one chosen."""
from __future__ import annotations

from cluster.state import ClusterState
from scheduler.policy import Candidates, Decision, ScoringPolicy, register
from scheduler.task import Task


@register("round-robin")
class RoundRobin(ScoringPolicy):
    reason = "next in turn"

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.next = 0

    def score(self, task: Task, state: ClusterState, cand: Candidates):
        return -((cand[0] - self.next) % state.n_nodes)

    def select(self, task: Task, state: ClusterState) -> Decision:
        d = super().select(task, state)
        if d.placed:
            self.next = (d.node + 1) % state.n_nodes
        return d
