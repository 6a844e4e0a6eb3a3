"""Best fit: the node left with the least free CPU and GPU after placing the task.

Score (as in the FGD paper's simulator, CPU and GPU in milli, normalised by the
largest node spec, 128 cores and 8 GPUs)::

    int(100 * (1 - [0.5 (cpu_free - cpu_req) / 128000 + 0.5 (gpu_free - gpu_req) / 8000]))

``gpu_free`` is the node's total free GPU milli (MIG compute included). The GPU
within the node is the best fit too: the smallest free share that still fits.
"""
from __future__ import annotations

import numpy as np

from cluster.state import ClusterState, gpu_free_total, share_request
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task

MAX_SPEC_CPU = 128000.0
MAX_SPEC_GPU = 8000.0


def gpu_requests(shares: list) -> np.ndarray:
    """Total GPU milli each candidate's share asks for (k * r)."""
    if shares.count(shares[0]) == len(shares):
        r, k = share_request(shares[0])
        return np.full(len(shares), r * k, dtype=np.int64)
    return np.array([r * k for r, k in map(share_request, shares)], dtype=np.int64)


@register("best-fit")
class BestFit(ScoringPolicy):
    """Tightest node for CPU and GPU together; GPU best fit within it."""

    pure = True  # the decision depends on the task and the state only (see ScoringPolicy.pure)
    reason = "least capacity left over"

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        nodes, shares, _ = cand
        cpu_left = (state.cpu_free[nodes] - task.cpu_milli).astype(float)
        gpu_left = (gpu_free_total(state, nodes) - gpu_requests(shares)).astype(float)
        # same operation order as the reference (Go float64), so integer truncation ties match
        s = cpu_left / MAX_SPEC_CPU * 0.5 + gpu_left / MAX_SPEC_GPU * 0.5
        return np.trunc((1.0 - s) * 100.0)
