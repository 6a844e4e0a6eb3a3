"""Benchmark: summarising a run's records (``simulations.metrics.summarize``), against the same figures by pandas.

Why it exists: capacity's what-if search (``orchestrator capacity recommend|strategies``) simulates
thousands of short windows, and each result is summarised. Written with pandas masks, groupbys and
value counts, a summary cost about 11 ms whatever the run's size, more than the simulation of a 10 s
window itself; on numpy arrays it costs a few. The baseline, timed in the same run, is that pandas
version (kept below), and both must give the same summary, key for key.

Usage: ``python -m benchmarks.bench_summary [--repeats 200]``
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster.topology import load_cluster  # noqa: E402
from cluster.vocabulary import UNFINISHED  # noqa: E402
from scheduler.policy import make_policy  # noqa: E402
from simulations.engine import simulate  # noqa: E402
from simulations.metrics import _f, summarize  # noqa: E402
from simulations.workloads import generate, load_workload  # noqa: E402


def pandas_summary(records: pd.DataFrame, timeline: pd.DataFrame | None = None, pools=()) -> dict:
    """The summary as pandas computes it (what ``summarize`` did before): the baseline."""
    status = records["status"]
    done = records[status == "succeeded"]
    scored = records[(status == "succeeded") | (status == UNFINISHED)]
    n = len(records)
    lat = scored["latency_ms"].to_numpy(dtype=float)
    pct = (lambda q: _f(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    missed = (~records["slo_met"].astype(bool))
    by_prio = {int(p): float(g.mean()) for p, g in missed.groupby(records["priority"])}
    span = (done["finish"].max() - records["arrival"].min()) if len(done) else 0.0
    mix = done["pool"].value_counts(normalize=True).sort_index()
    shares = done["share"].value_counts()
    kinds = shares.groupby(shares.index.str.split(":").str[0]).sum()
    out = {
        "tasks": n, "succeeded": int(len(done)), "rejected": int((status == "rejected").sum()),
        "failed": int((status == "failed").sum()), "unfinished": int(len(scored) - len(done)),
        "latency_ms": {"mean": _f(lat.mean()) if len(lat) else float("nan"), "p50": pct(50), "p95": pct(95),
                       "p99": pct(99), "p999": pct(99.9), "max": _f(lat.max()) if len(lat) else float("nan")},
        "slo_miss_rate": float(missed.mean()) if n else float("nan"),
        "slo_miss_by_priority": by_prio,
        "cost_total": float(scored["cost"].sum()),
        "cost_per_task": float(done["cost"].mean()) if len(done) else float("nan"),
        "objective_mean": _f(scored["score"].mean()) if len(scored) else float("nan"),
        "throughput_per_s": float(len(done) / span) if span > 0 else float("nan"),
        "placement_mix": {str(k): float(v) for k, v in mix.items()},
        "share_mix": {str(k): float(v) for k, v in (kinds / kinds.sum()).sort_index().items()},
    }
    if timeline is not None and len(timeline):
        out["utilisation"] = {p: float(timeline[f"util_{p}"].mean()) for p in pools if f"util_{p}" in timeline}
        out["gpu_alloc_ratio_mean"] = float(timeline["gpu_alloc_ratio"].mean())
        out["fragmentation_mean"] = _f(timeline["fragmentation"].mean())
    return out


def _same(a, b, path: str = "") -> None:
    """Equal key for key (order included) and value for value (NaN equals NaN)."""
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{path}: {a} != {b}"
    else:
        assert a == b and type(a) is type(b), f"{path}: {a!r} != {b!r}"


def _per_call(fn, repeats: int) -> float:
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args(argv)
    spec = load_cluster(ROOT / "configs" / "cluster" / "local.yaml")
    print(f"{'run':<42} {'records':>7} {'pandas ms':>9} {'numpy ms':>8} {'speed-up':>8}")
    for workload, seconds, horizon in (("mixed", 10, None), ("high_load", 60, 5.0), ("mixed", 600, None)):
        tasks = generate(load_workload(ROOT / "configs" / "workloads" / f"{workload}.yaml"), seed=3,
                         duration_s=seconds)
        res = simulate(spec, tasks, make_policy("fastest-feasible"), seed=3,
                       **({"horizon_s": horizon} if horizon else {}))
        recs, tl = res.records, res.timeline
        _same(pandas_summary(recs, tl, spec.pools), summarize(recs, tl, spec.pools))
        base = _per_call(lambda: pandas_summary(recs, tl, spec.pools), args.repeats)
        ours = _per_call(lambda: summarize(recs, tl, spec.pools), args.repeats)
        label = f"{workload} {seconds} s" + (f", {horizon:g} s past the last arrival" if horizon else "")
        print(f"{label:<42} {len(recs):>7} {1e3 * base:>9.2f} {1e3 * ours:>8.2f} {base / ours:>7.1f}x")
    print("same summary as pandas gives, key for key, on every run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
