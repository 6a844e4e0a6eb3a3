"""``orchestrator evaluate``: learned policies against the oracle and the heuristics, held out.

For each workload and seed it runs :func:`simulations.compare.compare_policies`
(same tasks, same network draws for every policy) into
``<out>/<workload>/seed_<n>/`` (per-task records, timelines, summary: the files
the comparison view reads), then writes ``<out>/evaluation.csv`` (one row per
workload, seed and policy), ``<out>/summary.csv`` (means over seeds) and
``<out>/checks.json``: for each learned policy and workload, whether its objective
beats every heuristic's and its SLO miss rate is no worse than the oracle's (the
issue's quality target), with the figures.

Held out: training episodes of ``HeteroCluster-v0`` draw seeds from ``seed_range``
(recorded in the RL artifact's meta, by default 1,000,000 and up); a requested
seed inside that range is refused.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from cluster.topology import ClusterSpec
from scheduler.objective import Objective
from simulations.compare import compare_policies
from simulations.workloads import WorkloadSpec, generate, load_workload

DEFAULT_WORKLOADS = ("configs/workloads/high_load.yaml", "configs/workloads/gpu_heavy_high.yaml")
LEARNED = ("rl", "rl-sample", "rf")
COLUMNS = ["objective", "slo_miss_%", "lat_p50_ms", "lat_p95_ms", "cost_task_$", "rejected"]


def is_heuristic(name: str) -> bool:
    base = name.partition(":")[0]
    return base not in LEARNED and base != "oracle"


def evaluate(spec: ClusterSpec, workloads: Sequence[WorkloadSpec], seeds: Sequence[int],
             policies: Sequence[str], out: str | Path, *, objective: Objective | None = None,
             progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Run every policy on every (workload, seed); return (per-run table, means, quality checks)."""
    out = Path(out)
    rows = []
    for wl in workloads:
        for seed in seeds:
            tasks = generate(wl, seed=seed)
            if progress:
                print(f"{wl.name} seed {seed}: {len(tasks)} tasks, {len(policies)} policies", flush=True)
            table, _ = compare_policies(spec, tasks, policies, seed=seed, objective=objective,
                                        out=out / wl.name / f"seed_{seed}", progress=progress,
                                        meta={"workload": wl.source, "load_factor": wl.load_factor})
            t = table.reset_index()
            t.insert(0, "seed", seed)
            t.insert(0, "workload", wl.name)
            rows.append(t)
    runs = pd.concat(rows, ignore_index=True)
    cols = [c for c in COLUMNS if c in runs]
    summary = runs.groupby(["workload", "policy"], sort=False)[cols].mean()
    checks = quality_checks(summary)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "evaluation.csv", index=False)
    summary.to_csv(out / "summary.csv")
    (out / "checks.json").write_text(json.dumps(checks, indent=2))
    return runs, summary, checks


def quality_checks(summary: pd.DataFrame) -> list[dict]:
    """Per learned policy and workload: objective below every heuristic's, SLO miss <= the oracle's."""
    checks = []
    for wl, g in summary.groupby(level="workload", sort=False):
        g = g.droplevel("workload")
        heur = [p for p in g.index if is_heuristic(p)]
        for p in g.index:
            if p.partition(":")[0] not in LEARNED:
                continue
            row = {"workload": wl, "policy": p, "objective": float(g.loc[p, "objective"]),
                   "slo_miss_%": float(g.loc[p, "slo_miss_%"])}
            if heur:
                best = min(heur, key=lambda h: g.loc[h, "objective"])
                row.update(best_heuristic=best, best_heuristic_objective=float(g.loc[best, "objective"]),
                           beats_every_heuristic=bool(row["objective"] < g.loc[best, "objective"]))
            if "oracle" in g.index:
                row.update(oracle_slo_miss_pct=float(g.loc["oracle", "slo_miss_%"]),
                           slo_no_worse_than_oracle=bool(row["slo_miss_%"] <= g.loc["oracle", "slo_miss_%"]))
            checks.append(row)
    return checks


def _usable(policies: list[str]) -> list[str]:
    """Drop learned policies with no artifact (saying how to get one); others must exist."""
    from scheduler.model_registry import RegistryError
    from scheduler.policy import make_policy

    keep = []
    for p in policies:
        if p.partition(":")[0] in LEARNED:
            try:
                make_policy(p)
            except (RegistryError, FileNotFoundError) as e:
                print(f"skipping {p}: {e}", flush=True)
                continue
        keep.append(p)
    return keep


def _training_seed_range(policies: Sequence[str]) -> tuple[int, int] | None:
    from scheduler.model_registry import RegistryError, load_meta

    for p in policies:
        base, _, version = p.partition(":")
        if base in ("rl", "rl-sample"):
            try:
                r = load_meta("rl", version or "latest").get("env", {}).get("seed_range")
            except RegistryError:
                return None
            return (int(r[0]), int(r[1])) if r else None
    return None


def cli(args: argparse.Namespace) -> int:
    """Entry point of ``orchestrator evaluate``."""
    from cluster.alibaba import load_cluster_any
    from simulations.cli import UsageError, _policies, _print_table
    from simulations.packing import parse_seeds

    policies = _usable(_policies(args.policies))
    if not policies:
        raise UsageError("--policies: none of the policies can be built")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        raise UsageError(f"--seeds: expected e.g. 101-103 or 1,2,5, got {args.seeds!r}") from None
    rng = _training_seed_range(policies)
    if rng and any(rng[0] <= s < rng[1] for s in seeds):
        raise UsageError(f"--seeds: {args.seeds} overlaps the RL policy's training seeds [{rng[0]}, {rng[1]})")
    spec = load_cluster_any(args.cluster)
    workloads = [load_workload(w) for w in (args.workload or DEFAULT_WORKLOADS)]
    runs, summary, checks = evaluate(spec, workloads, seeds, policies, args.out)
    print(f"\nmean over seeds {args.seeds} ({len(seeds)} runs per workload):")
    _print_table(summary)
    for c in checks:
        parts = []
        if "beats_every_heuristic" in c:
            verdict = "beats" if c["beats_every_heuristic"] else "DOES NOT beat"
            parts.append(f"objective {c['objective']:.3f} vs best heuristic {c['best_heuristic']} "
                         f"{c['best_heuristic_objective']:.3f}: {verdict}")
        if "slo_no_worse_than_oracle" in c:
            parts.append(f"SLO miss {c['slo_miss_%']:.1f}% vs oracle {c['oracle_slo_miss_pct']:.1f}%: "
                         f"{'ok' if c['slo_no_worse_than_oracle'] else 'WORSE'}")
        print(f"{c['workload']} {c['policy']}: " + "; ".join(parts))
    print(f"tables in {args.out}/ (evaluation.csv, summary.csv, checks.json); per-task records under "
          f"{args.out}/<workload>/seed_<n>/")
    return 0
