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
    lat = np.empty(len(nodes))
    cst = np.empty(len(nodes))
    for k, (i, share) in enumerate(zip(nodes, shares)):
        i = int(i)
        ex = expected_exec_s(task, state, i, share)
        wait = projected_start(state, i, task, share) - state.now
        lat[k] = wait * 1000.0 + state.net_mean_ms[i] + ex * 1000.0
        cst[k] = cost(state.spec.tiers[state.spec.nodes[i].tier], task, share, ex)
    return lat, cst
