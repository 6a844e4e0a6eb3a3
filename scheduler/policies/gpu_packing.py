"""GPU packing: fill partly used GPUs first, then free GPUs on used nodes, then idle nodes.

Score (the FGD paper's simulator; CPU-only tasks score 0 everywhere):

* every GPU of the node is free: ``max(33 - n_gpus, n_gpus)``;
* the task needs fully free GPUs (taking, for each of its k GPUs, the fitting GPU
  with the least free milli): ``max(50 - fully_free_used, 33)``;
* it fits on partly used GPUs: ``max(100 - (sum free_i * 100 // 1000) // 10, 50)``
  over the GPUs it would use.

MIG nodes count as "all free" when no MIG instance is held, else as case two with
one GPU. The GPU within the node is the best fit.
"""
from __future__ import annotations

import numpy as np

from cluster.state import ClusterState, share_request
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task


def packing_scores(state: ClusterState, nodes: np.ndarray, share) -> np.ndarray:
    """Packing score of ``nodes`` for one share (see module docstring)."""
    r, k = share_request(share)
    if share[0] == "cpu" or k == 0:
        return np.zeros(len(nodes))
    g = state.gpu_free[nodes]
    n_gpu = np.array([state.spec.nodes[i].gpu_count for i in nodes]) if share[0] == "mig" else None
    if share[0] == "mig":
        idle = state.mig_used[nodes] == 0
        return np.where(idle, np.maximum(33 - n_gpu, n_gpu), 49).astype(float)
    present = g >= 0
    n = present.sum(axis=1)
    all_free = ((g == 1000) | ~present).all(axis=1)
    case3 = np.maximum(33 - n, n)
    if k > 1 or r >= 1000:
        used_free = np.maximum(50 - k, 33)
        return np.where(all_free, case3, used_free).astype(float)
    gmin = np.where(g >= r, g, 10**9).min(axis=1)  # the fitting GPU with least free milli
    case2 = 49
    case1 = np.maximum(100 - (gmin * 100 // 1000) // 10, 50)
    return np.where(all_free, case3, np.where(gmin >= 1000, case2, case1)).astype(float)


@register("gpu-packing")
class GpuPacking(ScoringPolicy):
    """Prefer GPUs already shared, then used nodes, then idle nodes."""

    reason = "packs onto used GPUs"

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        nodes, shares, _ = cand
        if shares.count(shares[0]) == len(shares):
            return packing_scores(state, nodes, shares[0])
        out = np.empty(len(nodes))
        for pos, (i, s) in enumerate(zip(nodes, shares)):
            out[pos] = packing_scores(state, np.array([i]), s)[0]
        return out
