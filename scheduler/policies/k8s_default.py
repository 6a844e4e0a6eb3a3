"""The Kubernetes default scheduler's resource scoring (kube-scheduler, default profile).

Filter, then score, as kube-scheduler does with its default plugin weights:
``NodeResourcesFit`` with the ``LeastAllocated`` strategy (weight 1) plus
``NodeResourcesBalancedAllocation`` (weight 1), over CPU and memory (the default
resources, weight 1 each). With ``requested`` = what the node's tasks ask plus this
task, and integer arithmetic as in the Go source::

    LeastAllocated     = (sum_r (alloc_r - requested_r) * 100 // alloc_r) // 2   (0 if over)
    BalancedAllocation = int((1 - |f_cpu - f_mem| / 2) * 100),  f_r = min(requested_r / alloc_r, 1)
    score              = LeastAllocated + BalancedAllocation                     (0-200)

Ties go to a uniformly drawn node among the best (``selectHost``), seeded by
``reset(seed)``. GPUs are not scored (extended resources are not in the default
scoring resources); the filter (the task fits now, MIG profile or slice free) plays the
device plugin's part. The other default score plugins (taints, affinities, topology
spread, image locality, volumes) are constant for a task that states only its
resources; ``percentageOfNodesToScore`` (above 100 nodes k8s scores only a rotating
share of the feasible ones) is not modelled: every feasible node is scored.

When nothing fits now, kube-scheduler leaves the pod Pending and binds it to the first
node where it fits once capacity frees up. Tasks here must wait in one node's queue, so
the closest rule is the node expected to start it first (the simulator's own replay of
that node's queue, :func:`cluster.booking.projected_start`).
"""
from __future__ import annotations

import numpy as np

from cluster.booking import projected_start
from cluster.state import ClusterState
from scheduler.policy import Candidates, Decision, ScoringPolicy, register
from scheduler.task import Task

MAX_NODE_SCORE = 100


def least_allocated(alloc: np.ndarray, requested: np.ndarray) -> np.ndarray:
    """``leastRequestedScore`` per node: free share after placing, 0-100, 0 when over capacity."""
    return np.where(requested > alloc, 0, (alloc - requested) * MAX_NODE_SCORE // alloc)


@register("k8s-default")
class K8sDefault(ScoringPolicy):
    """LeastAllocated + BalancedAllocation: spread, and keep CPU and memory use level."""

    reason = "k8s LeastAllocated + BalancedAllocation (0-200)"
    pending_reason = "k8s would hold it Pending; the node expected to start it first (-s to start)"

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        nodes, shares, now = cand
        if not now.any():  # nothing fits now: minus the expected wait on each node
            return -np.array([projected_start(state, i, task, share) - state.now
                              for i, share in zip(nodes.tolist(), shares)])
        cpu_alloc, mem_alloc = state.cpu_total[nodes], state.mem_total[nodes]
        cpu_req = cpu_alloc - state.cpu_free[nodes] + task.cpu_milli
        mem_req = mem_alloc - state.mem_free[nodes] + task.mem_mib
        least = (least_allocated(cpu_alloc, cpu_req) + least_allocated(mem_alloc, mem_req)) // 2
        f_cpu = np.minimum(cpu_req / cpu_alloc, 1.0)
        f_mem = np.minimum(mem_req / mem_alloc, 1.0)
        balanced = np.trunc((1.0 - np.abs((f_cpu - f_mem) / 2)) * MAX_NODE_SCORE)
        return least + balanced

    def _chosen(self, task: Task, state: ClusterState, cand: Candidates, s: np.ndarray, k: int,
                scores: np.ndarray) -> Decision:
        top = np.flatnonzero(s == s[k])
        if len(top) > 1:  # selectHost: a uniform draw among the nodes with the top score
            k = int(top[int(self.rng.integers(len(top)))])
        return self._decision(task, state, cand, s, k, scores, None if cand[2].any() else self.pending_reason)
