"""Trace replay: the Alibaba GPU-sharing pod lists (cluster-trace-gpu-v2023) as tasks.

Source: alibaba/clusterdata cluster-trace-gpu-v2023 (Weng et al., "Beware of
Fragmentation", USENIX ATC 2023), files ``openb_pod_list_*.csv`` with columns
``name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,
creation_time,deletion_time,scheduled_time`` (times in seconds).

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
* QoS -> priority, cost sensitivity and SLO. The trace has no latency targets,
  so the SLO is a completion deadline: ``stretch * work + slack`` (clipped to the
  7-day task maximum). LS must finish close to its run time, BE may wait an hour
  and run 3x slower:

  - LS:         priority 8, cost sensitivity 3, SLO 1.2 x work + 30 s, kind ``alibaba-ls``
  - Guaranteed: priority 7, cost sensitivity 4, SLO 1.5 x work + 120 s
  - Burstable:  priority 5, cost sensitivity 5, SLO 2.0 x work + 600 s
  - BE:         priority 2, cost sensitivity 8, SLO 3.0 x work + 3600 s, kind ``alibaba-be``
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cluster.config import ConfigError, read_csv_rows
from scheduler.task import MAX_SLO_MS, MAX_WORK_S, Task, TaskError, make_task

POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "qos",
               "creation_time", "deletion_time", "scheduled_time")
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


def _number(path: Path, line: int, row: dict[str, str], col: str) -> float | None:
    """A numeric cell, None when empty; garbage raises :class:`ConfigError` naming the line."""
    text = (row.get(col) or "").strip()
    if not text or text.lower() == "nan":
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(path, f"{col} (line {line})", f"must be a number, got {text!r}") from None


def _int(path: Path, line: int, row: dict[str, str], col: str) -> int:
    v = _number(path, line, row, col)
    if v is None or v != int(v) or v < 0:
        raise ConfigError(path, f"{col} (line {line})", f"must be a non-negative integer, got {row.get(col)!r}")
    return int(v)


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
    """
    if not time_compression > 0:
        raise ValueError(f"time_compression must be > 0, got {time_compression}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    p = Path(path)
    rows = read_csv_rows(p, POD_COLUMNS)
    skipped: dict[str, int] = {}
    kept: list[tuple[float, dict]] = []
    for line, row in enumerate(rows, start=2):
        created = _number(p, line, row, "creation_time")
        sched = _number(p, line, row, "scheduled_time")
        deleted = _number(p, line, row, "deletion_time")
        if created is None or sched is None or deleted is None:
            skipped["missing time"] = skipped.get("missing time", 0) + 1
            continue
        if deleted < sched or deleted < created or created < 0:
            skipped["negative time"] = skipped.get("negative time", 0) + 1
            continue
        qos_name = (row["qos"] or "").strip()
        if qos_name not in QOS:
            raise ConfigError(p, f"qos (line {line})", f"must be one of {sorted(QOS)}, got {qos_name!r}")
        qos = QOS[qos_name]
        num_gpu = _int(p, line, row, "num_gpu")
        gpu_milli = _int(p, line, row, "gpu_milli")
        if gpu_milli > 1000:
            raise ConfigError(p, f"gpu_milli (line {line})", f"is per GPU, must be <= 1000, got {gpu_milli}")
        spec = (row.get("gpu_spec") or "").strip()
        work = min(max(deleted - sched, MIN_WORK_S), MAX_WORK_S)
        fields = {
            "id": (row["name"] or "").strip() or f"pod-line-{line}",
            "cpu_milli": _int(p, line, row, "cpu_milli"),
            "mem_mib": _int(p, line, row, "memory_mib"),
            "priority": qos.priority, "cost_sensitivity": qos.cost_sensitivity,
            "slo_ms": qos.slo_ms(work), "work": work, "kind": f"alibaba-{qos_name.lower()}",
            "gpu_models": tuple(m for m in spec.split("|") if m) if spec.lower() != "nan" else (),
        }
        if num_gpu == 1 and 0 < gpu_milli < 1000:
            fields["gpu_milli"] = gpu_milli
        elif num_gpu >= 1:
            fields["gpu_count"] = num_gpu
        kept.append((created, fields))
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
