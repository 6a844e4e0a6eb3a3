"""Expected latency and cost of a task on candidate nodes, from the simulator's own model.

Used by the SLO-aware heuristic and the one-step oracle, so that both judge a
placement exactly as the simulator will play it out (up to the network draw,
for which the tier mean is used).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cluster.booking import projected_start
from cluster.performance import cost, exec_seconds, gpu_devices_held, speed
from cluster.state import ClusterState, Share, pick_device
from scheduler.task import Task


def sharers_at_start(state: ClusterState, i: int, share: Share) -> int:
    """Tasks on the device a time slice would join now, itself included (1 for other shares)."""
    if share[0] == "slice" and (state.gpu_free[i] >= share[1]).any():
        return int(state.gpu_tasks[i, pick_device(state, i, int(share[1]))]) + 1
    return 1


def expected_exec_s(task: Task, state: ClusterState, i: int, share: Share) -> float:
    """Execution seconds if started now, counting time-slice neighbours it would join."""
    return exec_seconds(state.spec.nodes[i], task, share, sharers_at_start(state, i, share))


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


def expected_parts(task: Task, state: ClusterState, i: int, share: Share) -> dict[str, float]:
    """What the model expects of ``task`` started on node ``i`` with ``share`` now, part by part
    (queue, tier-mean network, execution, their sum, in ms; cost in $): the router records it beside
    the measured outcome, which is what calibrating the model compares."""
    ex = expected_exec_s(task, state, i, share)
    queue_s = max(projected_start(state, i, task, share) - state.now, 0.0)
    net = float(state.net_mean_ms[i])
    return {"queue_ms": queue_s * 1000.0, "network_ms": net, "exec_ms": ex * 1000.0,
            "latency_ms": queue_s * 1000.0 + net + ex * 1000.0,
            "cost": cost(state.spec.tiers[state.spec.nodes[i].tier], task, share, ex)}


def expected_many(tasks: Sequence[Task], state: ClusterState, nodes: np.ndarray, shares: list[Share],
                  fits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`expected_lists` of several tasks against the same candidates and fits-now mask, as
    (tasks x candidates) arrays, equal to it bit for bit (the same operations in the same order; ``tests/test_scalar_vector.py``).

    A candidate's wait, time-slice neighbours and speed are the node's, not the task's (but for
    a MIG share's speed, and the wait where the task does not start at once), so a column is a
    few whole-array operations; the router's batches decide hundreds of distinct tasks at once.
    """
    g, c = len(tasks), len(shares)
    work = np.array([t.work for t in tasks], dtype=float)
    cpu = np.array([t.cpu_milli for t in tasks], dtype=float) / 1000.0
    mem = np.array([t.mem_mib for t in tasks], dtype=float) / 1024.0
    lat = np.empty((g, c))
    cst = np.empty((g, c))
    now = state.now
    spec_nodes = state.spec.nodes
    for col, (i, share, free) in enumerate(zip(nodes.tolist(), shares, fits.tolist())):
        nd = spec_nodes[i]
        sharers = sharers_at_start(state, i, share)
        if share[0] == "mig" or nd.work_factors:  # the speed depends on each task's need (MIG) or kind (calibrated)
            ex = work / np.array([speed(nd, t, share, sharers) for t in tasks])
        else:
            ex = work / speed(nd, tasks[0], share, sharers)
        if free and not state.queues[i]:
            wait = 0.0
        else:
            wait = np.array([projected_start(state, i, t, share) - now for t in tasks])
        lat[:, col] = wait * 1000.0 + state.net_mean_ms[i] + ex * 1000.0
        tier = state.spec.tiers[nd.tier]
        rate = (cpu * tier.price_cpu_second + mem * tier.price_gb_second
                + gpu_devices_held(share) * tier.price_gpu_second)
        cst[:, col] = tier.price_per_task + rate * ex
    return lat, cst
