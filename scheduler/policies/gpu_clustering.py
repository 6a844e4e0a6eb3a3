"""GPU clustering: keep tasks of one GPU kind together on nodes.

Each GPU task has a tag: ``share-gpu`` for a fraction of one GPU, else ``k-gpu``.
Score (the FGD paper's simulator; CPU-only tasks score 0 everywhere)::

    25 * (8000 - gpu_free) // 8000  +  75 if the node hosts only this tag
                                       50 if it hosts this tag and others
                                       25 if it hosts no GPU task
                                        0 if it hosts only other tags

The state does not record which tasks a node hosts, so the policy keeps the tag
set per node itself: the tag of a decision is committed when the policy next sees
that node's GPU occupancy grown (the task was placed), and a node's tags are
cleared when it holds no GPU task any more (releases in the online simulator).
A new state object starts from empty tags. The GPU within the node is the best fit.
"""
from __future__ import annotations

import numpy as np

from cluster.state import ClusterState, gpu_free_total, share_request
from scheduler.policies.best_fit import MAX_SPEC_GPU
from scheduler.policy import Candidates, Decision, ScoringPolicy, register
from scheduler.task import Task

_MAX_TAGS = 65  # column 0: share-gpu; column k: k-gpu


def gpu_tag(share) -> int:
    """Tag column of a share: 0 for a fraction of one GPU, k for k whole GPUs, -1 for none."""
    r, k = share_request(share)
    if k == 0:
        return -1
    return 0 if (k == 1 and r < 1000) else min(k, _MAX_TAGS - 1)


def tag_name(col: int) -> str:
    return "share-gpu" if col == 0 else f"{col}-gpu"


@register("gpu-clustering")
class GpuClustering(ScoringPolicy):
    """Prefer nodes already hosting GPU tasks of the same kind."""

    reason = "clusters same-kind GPU tasks"

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._state: ClusterState | None = None
        self.tags = np.zeros((0, _MAX_TAGS), dtype=bool)
        self._pending: tuple[int, int, int] | None = None

    @staticmethod
    def _occupancy(state: ClusterState, i: int) -> int:
        return int(state.gpu_tasks[i].sum() + state.mig_used[i])

    def _sync(self, state: ClusterState) -> None:
        if self._state is not state or len(self.tags) != state.n_nodes:
            self._state = state
            self.tags = np.zeros((state.n_nodes, _MAX_TAGS), dtype=bool)
            self._ntags = np.zeros(state.n_nodes, dtype=np.int64)
            self._pending = None
        if self._pending is not None:
            node, col, occ = self._pending
            if self._occupancy(state, node) > occ and not self.tags[node, col]:
                self.tags[node, col] = True
                self._ntags[node] += 1
            self._pending = None
        tagged = np.flatnonzero(self._ntags)
        if len(tagged):
            idle = tagged[(state.gpu_tasks[tagged].sum(axis=1) == 0) & (state.mig_used[tagged] == 0)]
            if len(idle):
                self.tags[idle] = False
                self._ntags[idle] = 0

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        nodes, shares, _ = cand
        out = np.zeros(len(nodes))
        cols = np.array([gpu_tag(s) for s in shares]) if shares.count(shares[0]) != len(shares) \
            else np.full(len(nodes), gpu_tag(shares[0]))
        gpu = cols >= 0
        if not gpu.any():
            return out
        n, c = nodes[gpu], cols[gpu]
        left = gpu_free_total(state, n)
        base = 25 * (int(MAX_SPEC_GPU) - left) // int(MAX_SPEC_GPU)
        has = self.tags[n, c]
        ntag = self._ntags[n]
        bonus = np.where(has, np.where(ntag == 1, 75, 50), np.where(ntag == 0, 25, 0))
        out[gpu] = base + bonus
        return out

    def select(self, task: Task, state: ClusterState) -> Decision:
        self._sync(state)
        d = super().select(task, state)
        if d.placed and not d.queued:
            col = gpu_tag(d.share)
            if col >= 0:
                self._pending = (d.node, col, self._occupancy(state, d.node))
        return d
