"""Trace replay: the Alibaba GPU-sharing pod lists (cluster-trace-gpu-v2023) as tasks.

Source: alibaba/clusterdata cluster-trace-gpu-v2023 (Weng et al., "Beware of
Fragmentation", USENIX ATC 2023), files ``openb_pod_list_*.csv`` read by
:func:`simulations.pod_list.read_pod_list` (the reader packing mode uses too; its
notes give the layouts and the defaults of missing columns). The online replay
needs the time columns ``creation_time, deletion_time, scheduled_time`` (seconds):
a pod list without them (the ``multigpu*`` files) is refused with a
:class:`ConfigError` that names the column; packing mode replays it.

Mapping to :class:`scheduler.task.Task`:

* GPU need: ``num_gpu == 1`` and ``gpu_milli < 1000`` is a fraction
  (``gpu_milli``); otherwise ``num_gpu >= 1`` is ``gpu_count = num_gpu`` whole
  devices (``gpu_milli`` is a per-device share and only meaningful for one GPU);
  ``num_gpu == 0`` is CPU only. ``gpu_spec`` ``"A|B"`` becomes ``gpu_models``.
* Arrival: ``creation_time / time_compression``, re-based so the first kept pod
  arrives at 0.
* Work: the trace has no duration column, so ``deletion_time - scheduled_time``
  is the proxy (seconds on the reference device), clipped to [1 s, 30 days].
  Pods still ``Running`` at the end of the trace are censored there; we keep them.
  Pods without a scheduled time (``Pending``) or with a negative duration are
  skipped and counted in :attr:`TraceTasks.skipped`.
* QoS (``Burstable`` when the column or cell is empty) -> priority, cost
  sensitivity and SLO. The trace has no latency targets, so the SLO is a
  completion deadline: ``stretch * work + slack`` (clipped to the 7-day task maximum).
  LS must finish close to its run time, BE may wait an hour and run 3x slower:

  - LS:         priority 8, cost sensitivity 3, SLO 1.2 x work + 30 s, kind ``alibaba-ls``
  - Guaranteed: priority 7, cost sensitivity 4, SLO 1.5 x work + 120 s
  - Burstable:  priority 5, cost sensitivity 5, SLO 2.0 x work + 600 s
  - BE:         priority 2, cost sensitivity 8, SLO 3.0 x work + 3600 s, kind ``alibaba-be``
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.config import ConfigError
from scheduler.task import MAX_SLO_MS, MAX_WORK_S, Task, TaskError, make_task
from simulations.pod_list import TIME_COLUMNS, Pod, read_pod_list

MIN_WORK_S = 1.0


@dataclass(frozen=True)
class QosClass:
    """How one Kubernetes QoS class maps to task priority, cost and SLO."""

    priority: int
    cost_sensitivity: int
    slo_stretch: float
    slo_slack_s: float

    def slo_ms(self, work_s: float) -> float:
        return min((self.slo_stretch * work_s + self.slo_slack_s) * 1000.0, MAX_SLO_MS)


QOS: dict[str, QosClass] = {
    "LS": QosClass(8, 3, 1.2, 30.0),
    "Guaranteed": QosClass(7, 4, 1.5, 120.0),
    "Burstable": QosClass(5, 5, 2.0, 600.0),
    "BE": QosClass(2, 8, 3.0, 3600.0),
}


class TraceTasks(list):
    """The tasks of a trace (a plain ``list[Task]``) plus what was left out and why."""

    def __init__(self, tasks: list[Task], skipped: dict[str, int], source: str) -> None:
        super().__init__(tasks)
        self.skipped_reasons = dict(skipped)
        self.source = source

    @property
    def skipped(self) -> int:
        """Rows of the file that did not become tasks."""
        return sum(self.skipped_reasons.values())


def _task_fields(path: Path, pod: Pod, work: float) -> dict:
    """The :func:`make_task` fields of a pod that will replay (its QoS class checked here)."""
    if pod.qos not in QOS:
        raise ConfigError(path, f"qos (line {pod.line})", f"must be one of {sorted(QOS)}, got {pod.qos!r}")
    qos = QOS[pod.qos]
    gpu_milli, gpu_count = pod.gpu_share
    fields = {"id": pod.name, "cpu_milli": pod.cpu_milli, "mem_mib": pod.memory_mib,
              "priority": qos.priority, "cost_sensitivity": qos.cost_sensitivity,
              "slo_ms": qos.slo_ms(work), "work": work, "kind": f"alibaba-{pod.qos.lower()}",
              "gpu_models": pod.gpu_models}
    if gpu_milli:
        fields["gpu_milli"] = gpu_milli
    elif gpu_count:
        fields["gpu_count"] = gpu_count
    return fields


def load_alibaba_pods(path: str | Path, *, time_compression: float = 1.0,
                      limit: int | None = None) -> TraceTasks:
    """Load an ``openb_pod_list_*.csv`` as tasks sorted by arrival.

    Args:
        path: the pod list CSV.
        time_compression: arrivals are divided by this (e.g. 1000 replays 149
            days of submissions in about 3.6 hours); work is not compressed.
        limit: keep only the first ``limit`` tasks by arrival.

    Returns:
        A :class:`TraceTasks` (a list of tasks) whose ``skipped`` counts the rows
        left out, by reason in ``skipped_reasons`` (missing or negative times).

    Raises:
        ConfigError: a missing file, required column or time column, or a bad cell.
    """
    if not time_compression > 0:
        raise ValueError(f"time_compression must be > 0, got {time_compression}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    pods = read_pod_list(path)
    pods.require(TIME_COLUMNS, "the online trace replay")
    p = pods.path
    skipped: dict[str, int] = {}
    kept: list[tuple[float, dict]] = []
    for pod in pods.pods:
        created, sched, deleted = pod.creation_time, pod.scheduled_time, pod.deletion_time
        if created is None or sched is None or deleted is None:
            skipped["missing time"] = skipped.get("missing time", 0) + 1
            continue
        if deleted < sched or deleted < created or created < 0:
            skipped["negative time"] = skipped.get("negative time", 0) + 1
            continue
        kept.append((created, _task_fields(p, pod, min(max(deleted - sched, MIN_WORK_S), MAX_WORK_S))))
    kept.sort(key=lambda cf: cf[0])  # stable: ties keep file order
    if limit is not None:
        kept = kept[:limit]
    t0 = kept[0][0] if kept else 0.0
    tasks = []
    for (created, fields) in kept:
        try:
            tasks.append(make_task({**fields, "arrival": (created - t0) / time_compression}, infer=False))
        except TaskError as exc:
            raise ConfigError(p, f"{exc.field} (pod {fields['id']})", exc.reason) from None
    return TraceTasks(tasks, skipped, str(p))
