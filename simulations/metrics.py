"""Summary metrics of per-task records: latency percentiles, SLO misses, cost, utilisation.

One function for the simulator, the cluster replay and the live history, so that
sim-vs-real comparisons compare like with like.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from cluster.vocabulary import UNFINISHED


def _f(x: float) -> float:
    return float(x) if np.isfinite(x) else float("nan")


def _nanmean(a: np.ndarray) -> float:
    """The mean of the non-NaN values (NaN when none), as pandas' ``mean()`` gives it, without numpy's
    warning for an all-NaN slice (silencing it per call would reset which warnings were already shown)."""
    k = int(np.count_nonzero(~np.isnan(a)))
    return float(np.nansum(a) / k) if k else float("nan")


def summarize(records: pd.DataFrame, timeline: pd.DataFrame | None = None,
              pools: Sequence[str] = ()) -> dict:
    """Summary dict of a run (JSON-serialisable).

    Keys: tasks, succeeded, rejected, failed, unfinished, latency_ms {mean,p50,p95,p99,
    p999,max}, slo_miss_rate, slo_miss_by_priority, cost_total, cost_per_task,
    objective_mean, throughput_per_s, placement_mix (share of tasks per pool),
    utilisation (mean per pool), gpu_alloc_ratio_mean, fragmentation_mean.

    Tasks still queued or running when the run ended (``unfinished``) count in the
    objective, the latency figures (at their waiting so far, a lower bound) and the SLO
    misses: leaving a task unfinished must not make a run look better.
    """
    # numpy on the columns: pandas' masks, groupbys and value counts cost ~11 ms a call whatever the
    # size (capacity's what-ifs summarise thousands of short runs); these give the same figures
    col = lambda name: records[name].to_numpy()  # noqa: E731
    status = col("status")
    done = status == "succeeded"
    scored = done | (status == UNFINISHED)
    n = len(records)
    lat = records["latency_ms"].to_numpy(dtype=float)[scored]
    pct = (lambda q: _f(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    # A rejected or failed task missed its SLO.
    missed = ~col("slo_met").astype(bool)
    prio = col("priority")
    known = ~pd.isna(prio)  # grouped as pandas does: a task without a priority is in no group
    prios, at = np.unique(prio[known].astype(float), return_inverse=True)
    by_prio = {int(p): float(m) for p, m in zip(prios, np.bincount(at, missed[known]) / np.bincount(at))}
    n_done = int(done.sum())
    finish, arrival = col("finish")[done].astype(float), col("arrival").astype(float)
    span = (np.nanmax(finish) - np.nanmin(arrival)) if n_done and not np.isnan(finish).all() else float("nan")
    placed = col("pool")[done]
    placed = placed[~pd.isna(placed)]
    pool_names, per_pool = np.unique(placed.astype(str), return_counts=True)
    # share kind ("cpu", "slice", ...) per task: count the few distinct shares, then split those
    held = col("share")[done]
    shares, per_share = np.unique(held[~pd.isna(held)].astype(str), return_counts=True)
    kinds: dict[str, int] = {}
    for text, k in zip(shares.tolist(), per_share.tolist()):
        kind = text.split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + k
    n_kinds = sum(kinds.values())
    cost, score = col("cost").astype(float), col("score").astype(float)
    with np.errstate(all="ignore"):
        out = {
            "tasks": n,
            "succeeded": n_done,
            "rejected": int((status == "rejected").sum()),
            "failed": int((status == "failed").sum()),
            "unfinished": int(scored.sum()) - n_done,
            "latency_ms": {"mean": _f(lat.mean()) if len(lat) else float("nan"),
                           "p50": pct(50), "p95": pct(95), "p99": pct(99), "p999": pct(99.9),
                           "max": _f(lat.max()) if len(lat) else float("nan")},
            "slo_miss_rate": float(missed.mean()) if n else float("nan"),
            "slo_miss_by_priority": by_prio,
            "cost_total": float(np.nansum(cost[scored])),  # a started, unfinished task is billed too
            "cost_per_task": _nanmean(cost[done]) if n_done else float("nan"),
            "objective_mean": _f(_nanmean(score[scored])) if scored.any() else float("nan"),
            "throughput_per_s": float(n_done / span) if span > 0 else float("nan"),
            "placement_mix": {k: float(v / len(placed)) for k, v in zip(pool_names.tolist(), per_pool.tolist())},
            "share_mix": {k: float(v / n_kinds) for k, v in sorted(kinds.items())},
        }
        if timeline is not None and len(timeline):
            out["utilisation"] = {p: _nanmean(timeline[f"util_{p}"].to_numpy(dtype=float)) for p in pools
                                  if f"util_{p}" in timeline}
            out["gpu_alloc_ratio_mean"] = _nanmean(timeline["gpu_alloc_ratio"].to_numpy(dtype=float))
            out["fragmentation_mean"] = _f(_nanmean(timeline["fragmentation"].to_numpy(dtype=float)))
    return out


def summary_row(policy: str, s: dict) -> dict:
    """Flatten a summary into one table row for side-by-side comparison."""
    row = {
        "policy": policy,
        "objective": s["objective_mean"],
        "lat_mean_ms": s["latency_ms"]["mean"],
        "lat_p50_ms": s["latency_ms"]["p50"],
        "lat_p95_ms": s["latency_ms"]["p95"],
        "lat_p99_ms": s["latency_ms"]["p99"],
        "lat_p999_ms": s["latency_ms"]["p999"],
        "lat_max_ms": s["latency_ms"]["max"],
        "slo_miss_%": 100 * s["slo_miss_rate"],
        "cost_total_$": s["cost_total"],
        "cost_task_$": s["cost_per_task"],
        "rejected": s["rejected"],
        "unfinished": s["unfinished"],
    }
    for pool, frac in s.get("utilisation", {}).items():
        row[f"util_{pool}_%"] = 100 * frac
    if "gpu_alloc_ratio_mean" in s:
        row["gpu_alloc_%"] = 100 * s["gpu_alloc_ratio_mean"]
    return row
