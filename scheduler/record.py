"""The record of one task's outcome: where it ran, its times, SLO, cost and objective score.

One row per task, whoever ran it: the simulator, the live replays (direct or through
the router) and the router's history all build rows here, so their records CSVs
share one schema and :func:`simulations.metrics.summarize` reads any of them. Times
are workload seconds, durations milliseconds. A ``NamedTuple``: the simulator builds
one per task on its hot path, and a list of them goes to
``pandas.DataFrame.from_records`` as plain tuples do.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from cluster.vocabulary import UNFINISHED, share_text

if TYPE_CHECKING:
    from cluster.executor import TaskResult
    from scheduler.objective import Objective
    from scheduler.task import Task

_NAN = math.nan
_new = tuple.__new__


class TaskRecord(NamedTuple):
    """One task's outcome; build it with :meth:`succeeded`, :meth:`measured`, :meth:`not_succeeded` or
    :meth:`of_result`."""

    task_id: str
    kind: str
    policy: str
    status: str  #: one of :data:`cluster.vocabulary.RECORD_STATUSES`
    reason: str
    arrival: float
    priority: int
    slo_ms: float
    cost_sensitivity: int
    gpu_need: str
    node: str  #: "" when it never had one
    pool: str
    tier: str
    share: str  #: :func:`cluster.vocabulary.share_text`, "" when it never had one
    queued: bool  #: waited in a node's queue before it started
    start: float
    finish: float
    queue_ms: float
    network_ms: float
    exec_ms: float
    latency_ms: float
    slo_met: bool
    cost: float
    score: float  #: :meth:`scheduler.objective.Objective.score`, NaN when it did not succeed

    @classmethod
    def succeeded(cls, task: Task, policy: str, node: str, pool: str, tier: str, share: str, queued: bool,
                  start: float, finish: float, queue_ms: float, network_ms: float, exec_ms: float,
                  latency_ms: float, cost: float, objective: Objective, reason: str = "") -> TaskRecord:
        """A task that ran to the end; the arguments follow the columns. Positional and built
        with ``tuple.__new__`` because the simulator calls it once per task (keyword binding and
        the generated ``__new__`` cost as much as the rest of the record)."""
        slo = task.slo_ms
        return _new(cls, (task.id, task.kind, policy, "succeeded", reason, task.arrival, task.priority, slo,
                          task.cost_sensitivity, task.gpu_need, node, pool, tier, share, queued, start, finish,
                          queue_ms, network_ms, exec_ms, latency_ms, latency_ms <= slo, cost,
                          objective.score(latency_ms, slo, task.priority, cost, task.cost_sensitivity)))

    @classmethod
    def measured(cls, task: Task, policy: str, *, node: str, pool: str, tier: str, share: str, queued: bool,
                 queue_ms: float, network_ms: float, exec_ms: float, latency_ms: float, cost: float,
                 objective: Objective, reason: str = "") -> TaskRecord:
        """A task that ran to the end on the live cluster: it starts after its measured wait and
        finishes after its measured latency, counted from its arrival (workload time)."""
        arrival = task.arrival
        return cls.succeeded(task, policy, node, pool, tier, share, queued, arrival + queue_ms / 1000.0,
                             arrival + latency_ms / 1000.0, queue_ms, network_ms, exec_ms, latency_ms, cost,
                             objective, reason)

    @classmethod
    def not_succeeded(cls, task: Task, policy: str, status: str, reason: str, *, node: str = "",
                      pool: str = "", tier: str = "", share: str = "", queued: bool = False) -> TaskRecord:
        """A task rejected or failed: no times, its SLO missed, no cost, no score."""
        return _new(cls, (task.id, task.kind, policy, status, reason, task.arrival, task.priority, task.slo_ms,
                          task.cost_sensitivity, task.gpu_need, node, pool, tier, share, queued, _NAN, _NAN,
                          _NAN, _NAN, _NAN, _NAN, False, 0.0, _NAN))

    @classmethod
    def unfinished(cls, task: Task, policy: str, reason: str, end: float, objective: Objective, *,
                   node: str = "", pool: str = "", tier: str = "", share: str = "", queued: bool = True,
                   start: float = _NAN, network_ms: float = _NAN, exec_ms: float = _NAN,
                   cost: float = 0.0) -> TaskRecord:
        """A task still queued or running when the run ended at ``end`` (workload seconds): a miss
        charged its waiting so far (:meth:`Objective.unfinished_score`) and, once started, its cost."""
        waited = (end - task.arrival) * 1000.0
        queue_ms = (start - task.arrival) * 1000.0 if start == start else waited  # start NaN: still queued
        return _new(cls, (task.id, task.kind, policy, UNFINISHED, reason, task.arrival, task.priority,
                          task.slo_ms, task.cost_sensitivity, task.gpu_need, node, pool, tier, share, queued,
                          start, _NAN, queue_ms, network_ms, exec_ms, waited, False, cost,
                          objective.unfinished_score(waited, task.slo_ms, task.priority, cost,
                                                     task.cost_sensitivity)))

    @classmethod
    def of_result(cls, task: Task, res: TaskResult, policy: str, objective: Objective) -> TaskRecord:
        """The record of the live executor's result for ``task`` (its times are workload ms)."""
        if res.status != "succeeded":
            return cls.not_succeeded(task, policy, res.status, res.reason, node=res.node or "",
                                     pool=res.pool or "", tier=res.tier or "", share=share_text(res.share) or "",
                                     queued=res.queued)
        return cls.measured(task, policy, reason=res.reason, node=res.node, pool=res.pool, tier=res.tier,
                            share=share_text(res.share), queued=res.queued, queue_ms=res.queue_ms,
                            network_ms=res.network_ms, exec_ms=res.exec_ms, latency_ms=res.latency_ms,
                            cost=res.cost, objective=objective)


#: the records frame's columns, in order
RECORD_COLUMNS = TaskRecord._fields
