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
    status = records["status"]
    done = records[status == "succeeded"]
    scored = records[(status == "succeeded") | (status == UNFINISHED)]
    n = len(records)
    lat = scored["latency_ms"].to_numpy(dtype=float)
    pct = (lambda q: _f(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    # A rejected or failed task missed its SLO.
    missed = (~records["slo_met"].astype(bool))
    by_prio = {int(p): float(g.mean()) for p, g in missed.groupby(records["priority"])}
    span = (done["finish"].max() - records["arrival"].min()) if len(done) else 0.0
    mix = done["pool"].value_counts(normalize=True).sort_index()
    # share kind ("cpu", "slice", ...) per task: count the few distinct shares, then split
    # those (splitting every record's string cost as much as the rest of the summary)
    shares = done["share"].value_counts()
    kinds = shares.groupby(shares.index.str.split(":").str[0]).sum()
    out = {
        "tasks": n,
        "succeeded": int(len(done)),
        "rejected": int((status == "rejected").sum()),
        "failed": int((status == "failed").sum()),
        "unfinished": int(len(scored) - len(done)),
        "latency_ms": {"mean": _f(lat.mean()) if len(lat) else float("nan"),
                       "p50": pct(50), "p95": pct(95), "p99": pct(99), "p999": pct(99.9),
                       "max": _f(lat.max()) if len(lat) else float("nan")},
        "slo_miss_rate": float(missed.mean()) if n else float("nan"),
        "slo_miss_by_priority": by_prio,
        "cost_total": float(scored["cost"].sum()),  # a started, unfinished task is billed too
        "cost_per_task": float(done["cost"].mean()) if len(done) else float("nan"),
        "objective_mean": _f(scored["score"].mean()) if len(scored) else float("nan"),
        "throughput_per_s": float(len(done) / span) if span > 0 else float("nan"),
        "placement_mix": {str(k): float(v) for k, v in mix.items()},
        "share_mix": {str(k): float(v) for k, v in (kinds / kinds.sum()).sort_index().items()},
    }
    if timeline is not None and len(timeline):
        out["utilisation"] = {p: float(timeline[f"util_{p}"].mean()) for p in pools
                              if f"util_{p}" in timeline}
        out["gpu_alloc_ratio_mean"] = float(timeline["gpu_alloc_ratio"].mean())
        out["fragmentation_mean"] = _f(timeline["fragmentation"].mean())
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
