"""Expected latency and cost of a task on candidate nodes, from the simulator's own model.

Used by the SLO-aware heuristic and the one-step oracle, so that both judge a
placement exactly as the simulator will play it out (up to the network draw,
for which the tier mean is used).
"""
from __future__ import annotations

import numpy as np

from cluster.performance import cost, exec_seconds
from cluster.projection import projected_start
from cluster.state import ClusterState, Share, pick_device
from scheduler.task import Task


def expected_exec_s(task: Task, state: ClusterState, i: int, share: Share) -> float:
    """Execution seconds if started now, counting time-slice neighbours it would join."""
    sharers = 1
    if share[0] == "slice":
        row = state.gpu_free[i]
        if (row >= share[1]).any():
            sharers = int(state.gpu_tasks[i, pick_device(state, i, int(share[1]))]) + 1
    return exec_seconds(state.spec.nodes[i], task, share, sharers)


def expected(task: Task, state: ClusterState, nodes: np.ndarray,
             shares: list[Share]) -> tuple[np.ndarray, np.ndarray]:
    """(expected latency ms, expected cost $) per candidate node."""
    lat, cst = expected_lists(task, state, nodes, shares)
    return np.array(lat, dtype=float), np.array(cst, dtype=float)


def expected_lists(task: Task, state: ClusterState, nodes: np.ndarray, shares: list[Share],
                   fits: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """:func:`expected` as Python lists: for a handful of candidates, filling numpy arrays
    element by element costs more than the estimate itself (the router's per-request path).

    ``fits``: the candidates' fits-now mask when the caller has it (the filter's), so a
    node with an empty queue where the task fits is not tested again.
    """
    lat: list[float] = []
    cst: list[float] = []
    now = state.now
    net = state.net_mean_ms
    spec_nodes = state.spec.nodes
    tiers = state.spec.tiers
    queues = state.queues
    free_now = fits.tolist() if fits is not None else [False] * len(shares)
    for i, share, free in zip(nodes.tolist(), shares, free_now):
        ex = expected_exec_s(task, state, i, share)
        wait = 0.0 if free and not queues[i] else projected_start(state, i, task, share) - now
        lat.append(float(wait * 1000.0 + net[i] + ex * 1000.0))
        cst.append(cost(tiers[spec_nodes[i].tier], task, share, ex))
    return lat, cst
