"""Demand tables from each source: workload files, the Alibaba and Azure traces, history records.

Why here and not in the readers: each source needs a different mapping to the one table of
:mod:`capacity.series` (which time is the arrival, what a task's run time is, what its share
is), and these mappings are the capacity view's, not the simulator's.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from capacity.series import POOL_ANY, DemandSeries, bin_demand, from_counts
from cluster.config import ConfigError
from cluster.topology import MIG_PROFILES, mig_fraction
from simulations.rate_profile import DEFAULT_START
from simulations.workloads import Scenario, WorkloadSpec, draw, load_workload

AZURE_FILES = {"code": "AzureLLMInferenceTrace_code.csv", "conv": "AzureLLMInferenceTrace_conv.csv"}
AZURE_METRICS = ("arrivals", "context_tokens", "generated_tokens")


def _share(mig_profile: str | None, gpu_count: int, gpu_milli: int) -> tuple[str, float]:
    """A task's GPU need as (share label, GPUs in whole-device equivalents)."""
    if mig_profile:
        return f"mig:{mig_profile}", mig_fraction(mig_profile)
    if gpu_count:
        return "whole", float(gpu_count)
    if gpu_milli:
        return "slice", gpu_milli / 1000.0
    return "cpu", 0.0


def _scenario_row(s: Scenario) -> tuple[str, list[float]]:
    share, gpus = _share(s.mig_profile, s.gpu_count, s.gpu_milli)
    return share, [s.cpu_milli / 1000.0, s.mem_mib / 1024.0, gpus]


def from_workload(workload: str | Path | WorkloadSpec, *, interval: pd.Timedelta = pd.Timedelta("1h"),
                  seed: int | None = None, load_factor: float | None = None, duration_s: float | None = None,
                  pools: Mapping[str, str] | None = None) -> DemandSeries:
    """The demand of a workload's task stream (the one :func:`simulations.workloads.generate` draws
    for the same seed), summed from arrays per scenario: millions of tasks in a couple of seconds.

    ``pools`` maps a kind to the pool it is meant for (default: ``any``, not placed). The series
    starts at the rate profile's ``start`` (Monday 2026-01-05 00:00 UTC without one).
    """
    spec = workload if isinstance(workload, WorkloadSpec) else load_workload(workload)
    d = draw(spec, seed, load_factor, duration_s=duration_s)
    duration = spec.duration_s if duration_s is None else float(duration_s)
    n = int(np.ceil(duration / interval.total_seconds()))
    b = np.minimum((d.arrivals // interval.total_seconds()).astype(np.int64), n - 1)
    k = len(spec.scenarios)
    flat = d.which.astype(np.int64) * n + b
    counts = np.bincount(flat, minlength=k * n).reshape(k, n)
    work = np.bincount(flat, weights=d.work, minlength=k * n).reshape(k, n)
    rows = [_scenario_row(s) for s in spec.scenarios]
    groups = [(s.kind, (pools or {}).get(s.kind, POOL_ANY), share) for s, (share, _) in zip(spec.scenarios, rows)]
    amounts = np.array([a for _, a in rows], dtype=float)
    start = pd.Timestamp(spec.rate_profile.start if spec.rate_profile else DEFAULT_START)
    return from_counts(counts, work, groups, amounts, start=start, interval=interval, source=spec.source)


def from_alibaba(path: str | Path, *, interval: pd.Timedelta = pd.Timedelta("1D")) -> DemandSeries:
    """Pods of an Alibaba ``openb_pod_list_*.csv`` by ``creation_time``; kind = QoS class.

    Run time is ``deletion_time - scheduled_time`` (the trace has no duration column; pods never
    scheduled count as arrivals with no resource-seconds). The trace gives seconds from its
    start, not dates: the calendar is nominal (day 0 = Monday 2026-01-05).
    """
    from simulations.pod_list import read_pod_list

    pods = read_pod_list(path)
    pods.require(("creation_time",), "a demand series")
    rows = [p for p in pods.pods if p.creation_time is not None]
    if not rows:
        raise ConfigError(path, "creation_time", "no pod has a creation time")
    t = np.array([p.creation_time for p in rows], dtype=float)
    run = np.array([max(0.0, p.deletion_time - p.scheduled_time)
                    if p.deletion_time is not None and p.scheduled_time is not None else 0.0 for p in rows])
    shares = [_share(None, p.gpu_share[1], p.gpu_share[0]) for p in rows]
    keys = {"kind": np.array([p.qos for p in rows], dtype=object), "pool": np.full(len(rows), POOL_ANY, dtype=object),
            "share": np.array([s for s, _ in shares], dtype=object)}
    values = {"cpu_s": np.array([p.cpu_milli for p in rows]) / 1000.0 * run,
              "mem_gb_s": np.array([p.memory_mib for p in rows]) / 1024.0 * run,
              "gpu_s": np.array([g for _, g in shares]) * run}
    return bin_demand(t - t.min(), keys, values, start=pd.Timestamp(DEFAULT_START), interval=interval,
                      source=str(path))


def _azure_files(path: Path) -> dict[str, Path]:
    if path.is_dir():
        found = {k: path / f for k, f in AZURE_FILES.items() if (path / f).is_file()}
        if not found:
            raise ConfigError(path, "<file>", f"no {' or '.join(AZURE_FILES.values())} in this folder")
        return found
    if not path.is_file():
        raise ConfigError(path, "<file>", "no such file")
    kind = next((k for k, f in AZURE_FILES.items() if path.name == f), path.stem)
    return {kind: path}


def from_azure(path: str | Path, *, interval: pd.Timedelta = pd.Timedelta("10s")) -> DemandSeries:
    """Requests of the Azure LLM inference trace 2023 (a CSV, or its folder for both services):
    kind = ``code`` or ``conv``; metrics: arrivals and context / generated tokens (the trace has no
    run times or GPU amounts, so no resource-seconds). Times are real (UTC); the series spans the
    whole intervals that every file given covers."""
    frames = []
    for kind, f in _azure_files(Path(path)).items():
        df = pd.read_csv(f)
        missing = [c for c in ("TIMESTAMP", "ContextTokens", "GeneratedTokens") if c not in df.columns]
        if missing:
            raise ConfigError(f, missing[0], "missing column of the Azure LLM inference trace")
        frames.append(pd.DataFrame({"ts": pd.to_datetime(df["TIMESTAMP"], format="mixed"), "kind": kind,
                                    "context_tokens": df["ContextTokens"], "generated_tokens": df["GeneratedTokens"]}))
    # only intervals that every file covers whole: the services start and stop logging at different seconds
    start = max(f["ts"].min() for f in frames).ceil(interval)
    end = min(f["ts"].max() for f in frames).floor(interval)
    df = pd.concat(frames, ignore_index=True)
    df = df[(df["ts"] >= start) & (df["ts"] < end)]
    keys = {"kind": df["kind"].to_numpy(object), "pool": np.full(len(df), POOL_ANY, dtype=object),
            "share": np.full(len(df), "unknown", dtype=object)}
    values = {m: df[m].to_numpy(float) for m in AZURE_METRICS[1:]}
    return bin_demand((df["ts"] - start).dt.total_seconds().to_numpy(), keys, values, start=start, interval=interval,
                      source=str(path), metrics=AZURE_METRICS)


def _placed_share(text: str | None) -> tuple[str, float] | None:
    """A history ``share`` column (``cpu``, ``slice:250``, ``whole:2``, ``mig:1g.10gb``) as (label, GPUs)."""
    if not text:
        return None
    kind, _, amount = str(text).partition(":")
    if kind == "slice":
        return "slice", int(amount) / 1000.0
    if kind == "whole":
        return "whole", float(amount)
    if kind == "mig" and amount in MIG_PROFILES:
        return f"mig:{amount}", mig_fraction(amount)
    return ("cpu", 0.0) if kind == "cpu" else None


def _record_row(rec: Mapping[str, Any]) -> tuple[float, str, str, str, float, float, float, float]:
    task = rec.get("task", rec)
    if isinstance(task, str):
        task = json.loads(task)
    need = _share(task.get("mig_profile"), int(task.get("gpu_count") or 0), int(task.get("gpu_milli") or 0))
    share, gpus = _placed_share(rec.get("share")) or need
    run = rec["exec_ms"] / 1000.0 if rec.get("exec_ms") is not None else float(task.get("work") or 0.0)
    return (float(rec["accepted_at"]), str(rec.get("kind") or task.get("kind") or "generic"),
            str(rec.get("pool") or POOL_ANY), share, float(task.get("cpu_milli") or 0) / 1000.0,
            float(task.get("mem_mib") or 0) / 1024.0, gpus, run)


def from_history(records: Iterable[Mapping[str, Any]], *, interval: pd.Timedelta = pd.Timedelta("1h"),
                 source: str = "history", until: float | None = None) -> DemandSeries:
    """Task records as the router's history stores them (plain dicts, e.g. its ``query`` rows).

    Read: ``accepted_at`` (epoch seconds: the arrival), ``kind``, ``pool`` (``any`` while unplaced),
    ``share`` (what was booked; the task's own need when none), ``exec_ms`` (the measured run time;
    the task's ``work`` when none) and the task's ``cpu_milli``, ``mem_mib``, ``gpu_milli``,
    ``gpu_count``, ``mig_profile`` (in ``task``, a dict or its JSON text, or in the record itself).
    Every accepted task counts, rejected ones too: unmet demand is demand. ``until`` (epoch
    seconds) extends the series with empty intervals up to the one holding it: a quiet last
    hour is demand too.
    """
    rows = [_record_row(r) for r in records]
    if not rows:
        raise ValueError("no task records")
    at, kind, pool, share, cpu, mem, gpu, run = (np.array(c) for c in zip(*rows))
    start = pd.Timestamp(float(at.min()), unit="s").floor(interval)
    keys = {"kind": kind.astype(object), "pool": pool.astype(object), "share": share.astype(object)}
    values = {"cpu_s": cpu * run, "mem_gb_s": mem * run, "gpu_s": gpu * run}
    n = None
    if until is not None:  # through the interval holding ``until`` (or the last task, if later)
        n = int(np.floor((max(until, at.max()) - start.timestamp()) / interval.total_seconds())) + 1
    return bin_demand(at - start.timestamp(), keys, values, start=start, interval=interval, source=source,
                      n_intervals=n)
