"""A per-run lower bound on the objective: every task alone on its best node.

For each task, every node that could ever host it (:func:`cluster.state.share_for`,
the filter every policy uses) is scored as if the task ran there alone: no queue,
nobody sharing its GPU, the very network delay the simulator draws for that task on
that node's tier (:func:`simulations.engine.network_draws`), and the execution time
and cost of :mod:`cluster.performance`; the task's bound is the lowest
:meth:`Objective.score` over those nodes. The run's bound is the mean over the tasks
that have such a node, the aggregation of the simulator's summary ``objective``
(:func:`simulations.metrics.summarize`: the mean score of placed tasks).

Why no policy can score below it, task by task: in the simulator a task's latency is
its queueing (>= 0) plus that same network draw plus its execution time, and its
execution is slowest-or-equal when it shares a device (co-location factors are at
most 1, validated by the GPU model loader); its cost is the tier's per-task price plus
non-negative rates times that execution time, so also lowest alone. Policies place
with the share ``share_for`` offers (the filter step); a larger share of the same
device (a bigger slice, more whole GPUs, a bigger MIG instance) would run no faster
and cost more. The score does not decrease when latency or cost grows, so the best
node's score alone is at most any policy's score for that task. The caveat is the
shared aggregation: a policy that rejects tasks it could place is averaged over fewer
tasks (the tables show rejections beside it).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from cluster.performance import cost, exec_seconds
from cluster.state import ClusterState, share_for
from cluster.topology import ClusterSpec
from scheduler.objective import Objective
from scheduler.task import Task
from simulations.engine import network_draws


def task_bounds(spec: ClusterSpec, tasks: Sequence[Task], *, seed: int = 0,
                objective: Objective | None = None) -> np.ndarray:
    """Each task's best score alone (NaN where no node can ever host it), in ``tasks``' order.

    ``seed`` is the simulation seed: it fixes the network draws as in :func:`simulations.engine.simulate`.
    """
    objective = objective or Objective()
    state = ClusterState.from_spec(spec)
    # identical nodes (same tier and hardware, other name) give identical bounds: score one of each
    kinds: dict = {}
    for i, nd in enumerate(spec.nodes):
        kinds.setdefault(replace(nd, name="", labels=()), i)
    reps = list(kinds.values())
    unif = network_draws(seed, len(tasks))
    out = np.full(len(tasks), np.nan)
    for k, task in enumerate(tasks):
        best = np.inf
        for i in reps:
            share = share_for(state, i, task)
            if share is None:
                continue
            node = spec.nodes[i]
            tier = spec.tiers[node.tier]
            lo, hi = tier.network_ms
            ex = exec_seconds(node, task, share)
            latency_ms = lo + unif[k] * (hi - lo) + ex * 1000.0
            s = objective.score(latency_ms, task.slo_ms, task.priority, cost(tier, task, share, ex),
                                task.cost_sensitivity)
            best = min(best, s)
        if best < np.inf:
            out[k] = best
    return out


def lower_bound(spec: ClusterSpec, tasks: Sequence[Task], *, seed: int = 0,
                objective: Objective | None = None) -> float:
    """Mean of :func:`task_bounds` over placeable tasks (NaN when none): compare with a summary's ``objective``."""
    b = task_bounds(spec, tasks, seed=seed, objective=objective)
    b = b[np.isfinite(b)]
    return float(b.mean()) if len(b) else float("nan")
