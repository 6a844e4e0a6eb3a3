"""The task model: what a workload asks for, validated field by field.

A task's GPU need is one of: none, a fraction of one device (``gpu_milli`` < 1000),
a whole count (``gpu_count``), or a MIG profile (``mig_profile``). ``work`` is the
task's execution time in seconds on the reference device (a whole, unshared V100
for GPU tasks; one reference vCPU core for CPU tasks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, Mapping

from cluster.topology import MIG_PROFILES
from scheduler.describe import infer_from_description

MAX_DESCRIPTION = 2000
MAX_CPU_MILLI = 1_024_000
MAX_MEM_MIB = 16 * 1024 * 1024
MAX_GPUS = 64
MAX_SLO_MS = 7 * 24 * 3600 * 1000.0
MAX_WORK_S = 30 * 24 * 3600.0


class TaskError(ValueError):
    """A task field is invalid; ``field`` names it."""

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(f"{field_name}: {reason}")


@dataclass(slots=True)
class Task:
    """One unit of work to place. Build through :func:`make_task` to validate."""

    id: str
    arrival: float = 0.0
    priority: int = 5
    slo_ms: float = 1000.0
    cpu_milli: int = 1000
    mem_mib: int = 1024
    gpu_milli: int = 0
    gpu_count: int = 0
    mig_profile: str | None = None
    gpu_models: tuple[str, ...] = ()
    work: float = 0.1
    cost_sensitivity: int = 5
    description: str | None = None
    kind: str = "generic"
    inferred: tuple[str, ...] = field(default=())

    @property
    def gpu_need(self) -> str:
        """``none`` | ``fraction`` | ``whole`` | ``mig``."""
        if self.mig_profile:
            return "mig"
        if self.gpu_count:
            return "whole"
        if self.gpu_milli:
            return "fraction"
        return "none"

    @property
    def gpu_amount(self) -> float:
        """GPU need in devices (0.25 for a quarter, 2 for two, 3/7 for 3g.40gb)."""
        if self.mig_profile:
            return MIG_PROFILES[self.mig_profile][0] / 7
        if self.gpu_count:
            return float(self.gpu_count)
        return self.gpu_milli / 1000.0

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["gpu_models"] = list(self.gpu_models)
        d["inferred"] = list(self.inferred)
        return d


_FIELDS = {f.name for f in fields(Task)} - {"inferred"}
_GPU_FIELDS = ("gpu_milli", "gpu_count", "mig_profile")
_DEFAULTS = {k: getattr(Task(id="_"), k) for k in _FIELDS}
_NUM = (float, int)
_ALL_BUT_ID = attrgetter(*[f.name for f in fields(Task)][1:])
assert fields(Task)[0].name == "id"


def task_key(task: Task) -> tuple:
    """Every field but the id: tasks with equal keys ask for the same thing."""
    return _ALL_BUT_ID(task)


def with_id(task: Task, task_id: str) -> Task:
    """A copy of a validated ``task`` under another id (``dataclasses.replace`` costs 10x more: the
    router stamps a fresh id on a cached, already validated task for every request)."""
    return Task(task_id, *_ALL_BUT_ID(task))


def _int(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    """``d[key]`` as an int in [lo, hi], or a TaskError wording why not (make_task tries the common
    case, an int in range, inline before calling this)."""
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)) or v != int(v):
        raise TaskError(key, f"must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise TaskError(key, f"must be between {lo} and {hi}, got {v}")
    return int(v)


def _num(d: Mapping[str, Any], key: str, lo: float, hi: float, strict_lo: bool = False) -> float:
    """``d[key]`` as a finite float in its bounds, or a TaskError wording why not (make_task tries
    the common case inline before calling this)."""
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise TaskError(key, f"must be a finite number, got {v!r}")
    if v < lo or (strict_lo and v == lo) or v > hi:
        lo_txt = f"> {lo}" if strict_lo else f">= {lo}"
        raise TaskError(key, f"must be {lo_txt} and <= {hi}, got {v}")
    return float(v)


def make_task(data: Mapping[str, Any], *, infer: bool = True) -> Task:
    """Validate a mapping into a :class:`Task`.

    Unknown keys are rejected. Fields left out are inferred from ``description``
    when ``infer`` is set (explicit fields always win), else defaulted.
    """
    if type(data) is not dict and not isinstance(data, Mapping):
        raise TaskError("<task>", f"must be a mapping, got {type(data).__name__}")
    if not _FIELDS.issuperset(data):
        for key in data:
            if key not in _FIELDS:
                raise TaskError(str(key), "unknown field")
    d = {**_DEFAULTS, **data}
    if "id" not in data:
        raise TaskError("id", "required field is missing")
    tid = d["id"]
    if not isinstance(tid, str) or not tid or len(tid) > 128:
        raise TaskError("id", "must be a non-empty string of at most 128 characters")
    desc = d["description"]
    if desc is not None and (not isinstance(desc, str) or len(desc) > MAX_DESCRIPTION):
        raise TaskError("description", f"must be a string of at most {MAX_DESCRIPTION} characters")
    inferred: tuple[str, ...] = ()
    if infer and desc:
        guess = infer_from_description(desc)
        if guess:
            gpu_given = "gpu_milli" in data or "gpu_count" in data or "mig_profile" in data
            for key, value in guess.items():
                if key in _GPU_FIELDS and gpu_given:
                    continue
                if key not in data:
                    d[key] = value
                    inferred += (key,)

    kind = d["kind"]
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise TaskError("kind", "must be a non-empty string of at most 64 characters")
    # Each bound is tried inline first and handed to _int/_num (which word the error) only when
    # it fails: a router validates thousands of tasks a second. The order is the fields' order,
    # so the first bad field is the one reported.
    arrival, priority, slo_ms, cpu, mem = d["arrival"], d["priority"], d["slo_ms"], d["cpu_milli"], d["mem_mib"]
    gpu_milli, gpu_count, work, cost_s = d["gpu_milli"], d["gpu_count"], d["work"], d["cost_sensitivity"]
    arrival = float(arrival) if type(arrival) in _NUM and 0.0 <= arrival <= 1e12 else _num(d, "arrival", 0.0, 1e12)
    if not (type(priority) is int and 1 <= priority <= 10):
        priority = _int(d, "priority", 1, 10)
    slo_ms = (float(slo_ms) if type(slo_ms) in _NUM and 0.0 < slo_ms <= MAX_SLO_MS
              else _num(d, "slo_ms", 0.0, MAX_SLO_MS, strict_lo=True))
    if not (type(cpu) is int and 0 <= cpu <= MAX_CPU_MILLI):
        cpu = _int(d, "cpu_milli", 0, MAX_CPU_MILLI)
    if not (type(mem) is int and 0 <= mem <= MAX_MEM_MIB):
        mem = _int(d, "mem_mib", 0, MAX_MEM_MIB)
    if not (type(gpu_milli) is int and 0 <= gpu_milli <= 999):
        gpu_milli = _int(d, "gpu_milli", 0, 999)
    if not (type(gpu_count) is int and 0 <= gpu_count <= MAX_GPUS):
        gpu_count = _int(d, "gpu_count", 0, MAX_GPUS)
    work = float(work) if type(work) in _NUM and 0.0 <= work <= MAX_WORK_S else _num(d, "work", 0.0, MAX_WORK_S)
    if not (type(cost_s) is int and 1 <= cost_s <= 10):
        cost_s = _int(d, "cost_sensitivity", 1, 10)
    task = Task(tid, arrival, priority, slo_ms, cpu, mem, gpu_milli, gpu_count, d["mig_profile"], d["gpu_models"],
                work, cost_s, desc, kind, inferred)
    if task.mig_profile is not None and (not isinstance(task.mig_profile, str)
                                         or task.mig_profile not in MIG_PROFILES):
        raise TaskError("mig_profile", f"unknown MIG profile {task.mig_profile!r} "
                                       f"(known: {', '.join(MIG_PROFILES)})")
    if (task.gpu_milli != 0) + (task.gpu_count != 0) + bool(task.mig_profile) > 1:
        raise TaskError("gpu_milli", "give only one of gpu_milli (a fraction), gpu_count (whole GPUs) "
                                     "or mig_profile")
    models = task.gpu_models
    if type(models) is tuple and not models:  # the default: nothing to check
        pass
    elif isinstance(models, str) or not isinstance(models, (list, tuple)) or \
            not all(isinstance(m, str) and m for m in models):
        raise TaskError("gpu_models", "must be a list of GPU model names")
    task.gpu_models = tuple(models)
    if task.cpu_milli == 0 and task.gpu_need == "none":
        raise TaskError("cpu_milli", "a task must ask for some CPU or GPU")
    return task


def with_arrival(task: Task, arrival: float) -> Task:
    """A copy of ``task`` arriving at ``arrival`` (trace time compression)."""
    return replace(task, arrival=arrival)
