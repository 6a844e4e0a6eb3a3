"""Ray's default ("hybrid") placement of a task that states only its resources (Ray 2.60).

The rule of the raylet's ``HybridSchedulingPolicy`` (``hybrid_scheduling_policy.cc``,
with the defaults of ``ray_config_def.h``), as modelled here:

1. Feasible nodes split into those where the task fits now ("available") and those it
   only fits in total; a node of the second kind is considered only when no node is
   available (the task then queues there).
2. A node's score is its *critical resource utilisation* before placing the task: the
   largest used fraction of CPU and memory (Ray adds the object store, which we do
   not model; GPUs and custom resources do not count). A score below
   ``scheduler_spread_threshold`` (0.5) counts as 0: lightly used nodes are all equal.
3. Nodes are ordered by score, ties by node id; the local node wins if its score is
   the lowest; otherwise one of the ``k`` best is drawn uniformly, ``k = max(1,
   int(nodes * 0.2))`` (``scheduler_top_k_absolute``, ``scheduler_top_k_fraction``).
4. A task asking for no GPU first tries only available nodes without GPUs
   (``scheduler_avoid_gpu_nodes``); if none, every node as above.

So nodes fill in a fixed order until their CPU or memory passes 50%, then the least
utilised take over. Simplified: node ids are the config order (or the per-seed
``node_rank`` of a trace replay, which is how random Ray's node ids are); the "local
node" is the driver's, which our launcher puts on a head with no CPUs, so by default
no worker node is preferred and the head counts in the cluster size for ``k``
(``local_node`` names a worker node instead); the draw comes from ``reset(seed)``;
spillback rounds, locality and the pull manager are not modelled.
"""
from __future__ import annotations

import numpy as np

from cluster.state import ClusterState
from scheduler.policy import Candidates, Decision, ScoringPolicy, register
from scheduler.task import Task


@register("ray-default")
class RayDefault(ScoringPolicy):
    """Ray's hybrid policy: pack nodes in order up to the spread threshold, then spread."""

    def __init__(self, seed: int | None = 0, spread_threshold: float = 0.5, top_k_fraction: float = 0.2,
                 top_k_absolute: int = 1, avoid_gpu_nodes: bool = True, local_node: int | None = None) -> None:
        self.spread_threshold = float(spread_threshold)
        self.top_k_fraction = float(top_k_fraction)
        self.top_k_absolute = int(top_k_absolute)
        self.avoid_gpu_nodes = bool(avoid_gpu_nodes)
        self.local_node = local_node
        self.reason = (f"Ray hybrid: lowest CPU/memory utilisation, under {self.spread_threshold:.0%} "
                       "counted as 0 (-utilisation)")
        super().__init__(seed)

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        """Minus the critical utilisation (0 below the threshold); -inf where Ray skips the node."""
        nodes, _, now = cand
        util = np.maximum(1.0 - state.cpu_free[nodes] / state.cpu_total[nodes],
                          1.0 - state.mem_free[nodes] / state.mem_total[nodes])
        s = np.where(util < self.spread_threshold, 0.0, -util)
        if self.avoid_gpu_nodes and task.gpu_need == "none":
            first = now & (state.gpu_total[nodes] == 0)  # available nodes without GPUs, tried first
            if first.any():
                s[~first] = -np.inf
        return s

    def _chosen(self, task: Task, state: ClusterState, cand: Candidates, s: np.ndarray, k: int,
                scores: np.ndarray) -> Decision:
        nodes = cand[0]
        ok = np.flatnonzero(s > -np.inf)
        rank = nodes[ok] if self.node_rank is None else self.node_rank[nodes[ok]]
        order = ok[np.lexsort((rank, -s[ok]))]  # lowest utilisation first, then node order
        best = int(order[0])
        if self.local_node is not None:
            mine = ok[nodes[ok] == self.local_node]
            if len(mine) and s[mine[0]] == s[best]:
                return self._decision(task, state, cand, s, int(mine[0]), scores, f"{self.reason}; local node")
        n_all = state.n_nodes + (self.local_node is None)  # + the CPU-less head
        top = min(max(self.top_k_absolute, int(n_all * self.top_k_fraction)), len(order))
        if top <= 1:
            return self._decision(task, state, cand, s, best, scores)
        pick = int(order[int(self.rng.integers(top))])
        return self._decision(task, state, cand, s, pick, scores, f"{self.reason}; drawn among the {top} best")
