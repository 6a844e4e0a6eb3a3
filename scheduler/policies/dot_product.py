"""Dot product (Tetris): the node whose free-capacity vector is least aligned with the request.

Score (the FGD paper's simulator, "merge" dimensions normalised by the largest
node spec, 128 cores and 8 GPUs)::

    int(100 * (1 - ([cpu_free / 128000 * cpu_req / 128000] + [gpu_free / 8000 * gpu_req / 8000]) / 2))

``gpu_free`` is the node's total free GPU milli, ``gpu_req`` the task's (k * r).
The GPU within the node is the best fit (smallest free share that fits).
"""
from __future__ import annotations

import numpy as np

from cluster.state import ClusterState, gpu_free_total
from scheduler.policies.best_fit import MAX_SPEC_CPU, MAX_SPEC_GPU, gpu_requests
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task


@register("dot-product")
class DotProduct(ScoringPolicy):
    """Smallest dot product of normalised free capacity and request wins."""

    pure = True  # the decision depends on the task and the state only (see ScoringPolicy.pure)
    reason = "smallest free-capacity dot product"

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        nodes, shares, _ = cand
        cpu = (state.cpu_free[nodes] / MAX_SPEC_CPU) * (task.cpu_milli / MAX_SPEC_CPU)
        gpu = (gpu_free_total(state, nodes) / MAX_SPEC_GPU) * (gpu_requests(shares) / MAX_SPEC_GPU)
        return np.trunc(100.0 * (1.0 - (cpu + gpu) / 2.0))
