"""Random fit: a uniformly random feasible node; within it a uniformly random GPU that fits.

The baseline of the FGD paper's packing experiment. Whole-GPU tasks take the
lowest-index fully free GPUs (the allocator's default); MIG tasks the allocator's
instance. Deterministic for a given seed (see :meth:`reset`).
"""
from __future__ import annotations

import numpy as np

from cluster.state import ClusterState, Share
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task


@register("random")
class RandomFit(ScoringPolicy):
    """Uniform choice among the nodes where the task fits now."""

    reason = "random choice"

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        return self.rng.random(len(cand[0]))

    def pick_device(self, task: Task, state: ClusterState, node: int, share: Share) -> int | None:
        if share[0] != "slice":
            return None
        fits = np.flatnonzero(state.gpu_free[node] >= share[1])
        return int(fits[self.rng.integers(len(fits))]) if len(fits) else None
