"""``orchestrator evaluate``: every policy on held-out seeds, with the statistics a sceptic asks for.

For each workload and seed it runs :func:`simulations.compare.compare_policies`
(same tasks, same network draws for every policy: a paired comparison) into
``<out>/<workload>/seed_<n>/`` (per-task records, timelines, summary: the files
the comparison view reads), timing each policy's decisions
(:class:`evaluation.timing.TimedPolicy`) and computing the run's lower bound
(:mod:`simulations.bound`). It then writes:

* ``<out>/evaluation.csv``: one row per workload, seed and policy (objective and the
  summary columns, the bound, the decision time, the margin to the best heuristic);
* ``<out>/summary.csv``: per workload and policy, the mean over seeds, its 95%
  bootstrap interval, wins and paired margin against the best heuristic, the bound
  and the gap to it, the decision time (:mod:`evaluation.report`);
* ``<out>/evaluation.md``: the same as Markdown tables under a header naming the
  command, date, cluster and seeds, for the docs to include as generated;
* ``<out>/checks.json``: per learned policy and workload, whether it beats every
  heuristic and misses no more SLOs than the oracle.

``--jobs N`` runs N (workload, seed) pairs at once, each in a process of its own (spawned,
one thread each): the same tables; decision times are then measured on a shared machine.

``--futures 0`` gives the lookahead policies no sampled futures, so ``auto`` judges on its own
recent past as it does in the router (where no workload generator exists), not on the workload's;
here a choice is used at once, in the router once its worker has made it.

Held out: the learned policies' artifacts record their training and
checkpoint-selection seeds (:mod:`evaluation.held_out`); they are printed, and an
evaluation seed among them is refused.

``--random-cluster A-B`` evaluates on each cluster drawn at random from the cluster's
pools (:func:`cluster.variants.random_cluster`) into ``<out>/rand_<n>/`` (the files
above), then writes ``<out>/random_clusters.md`` and ``.csv``: per cluster and workload
each learned policy's margin over that cell's best heuristic, and per policy how often it
is ahead or within 1%. A random cluster a learned policy trained or was chosen on is
refused like a seed.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from cluster.topology import ClusterSpec
from scheduler.objective import Objective
from scheduler.policies.auto import LOOKAHEAD
from scheduler.policies.rollout import Future
from scheduler.policy import Policy, make_policy
from simulations.bound import lower_bound
from simulations.compare import compare_policies
from evaluation.report import best_heuristic, is_heuristic, markdown, summarize_runs
from evaluation.held_out import LEARNED_KINDS, SeedUse, format_seeds, learned_seed_uses, random_clusters_used
from evaluation.timing import TimedPolicy
from simulations.processes import run_all
from simulations.workloads import WorkloadSpec, future_streams, generate, load_workload

DEFAULT_WORKLOADS = ("configs/workloads/high_load.yaml", "configs/workloads/gpu_heavy_high.yaml")
LEARNED = tuple(LEARNED_KINDS)
#: ``--futures`` at most (each future is a whole run of the workload, simulated per member or candidate)
MAX_FUTURES = 64

__all__ = ["evaluate", "quality_checks", "is_heuristic", "cli"]


def evaluate(spec: ClusterSpec, workloads: Sequence[WorkloadSpec], seeds: Sequence[int],
             policies: Sequence[str], out: str | Path, *, objective: Objective | None = None,
             progress: bool = True, header: Sequence[str] | None = None, jobs: int = 1,
             futures: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Run every policy on every (workload, seed); return (per-run table, per-workload summary, quality checks).

    ``header``: the Markdown file's opening lines (default: one line naming the date, cluster and seeds).
    ``jobs``: (workload, seed) runs at once, in processes of their own (the tables are the same;
    decision times are then measured on a machine that many runs share).
    ``futures``: the futures each lookahead policy samples (default :data:`LOOKAHEAD`'s; 0: none, so it
    judges on its own recent past, as the router's ``auto`` does).
    """
    out = Path(out)
    objective = objective or Objective()
    work = [(spec, wl, seed, tuple(policies), objective, out, progress, futures) for wl in workloads for seed in seeds]
    rows = list(run_all(_run, work, jobs))
    runs = pd.concat(rows, ignore_index=True)
    summary = summarize_runs(runs)
    best = summary.reset_index().drop_duplicates("workload").set_index("workload")["best_heuristic"]
    ref = runs.set_index(["workload", "seed", "policy"])["objective"]
    runs["best_heuristic"] = runs["workload"].map(best)
    ref_obj = [ref.get((w, s, b), float("nan")) for w, s, b in zip(runs["workload"], runs["seed"],
                                                                   runs["best_heuristic"])]
    runs["margin_vs_best_%"] = [100.0 * (r - o) / r for r, o in zip(ref_obj, runs["objective"])]
    checks = quality_checks(summary)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "evaluation.csv", index=False)
    summary.to_csv(out / "summary.csv")
    (out / "checks.json").write_text(json.dumps(checks, indent=2))
    if header is None:
        header = [f"Evaluation of {len(policies)} policies on {spec.name} ({len(spec.nodes)} nodes), "
                  f"seeds {format_seeds(seeds)}, {_today()}."]
    (out / "evaluation.md").write_text(markdown(summary, header))
    return runs, summary, checks


def _run(spec: ClusterSpec, wl: WorkloadSpec, seed: int, policies: Sequence[str], objective: Objective,
         out: Path, progress: bool, futures: int | None = None) -> pd.DataFrame:
    """One (workload, seed): every policy on the same tasks; its rows of the per-run table."""
    tasks = generate(wl, seed=seed)
    if progress:
        print(f"{wl.name} seed {seed}: {len(tasks)} tasks, {len(policies)} policies", flush=True)
    timed: dict[str, TimedPolicy] = {}

    def make(name: str) -> Policy:
        # a lookahead samples futures from the workload's own generator, never this run's tasks (none:
        # it judges on the run's tasks it has already placed, as the router's auto does)
        base = name.partition(":")[0]
        n = (LOOKAHEAD[base] if futures is None else futures) if base in LOOKAHEAD else 0
        params = {"future": Future(future_streams(wl, n=n))} if n else {}
        timed[name] = TimedPolicy(make_policy(name, **params))
        return timed[name]

    table, _ = compare_policies(spec, tasks, list(policies), seed=seed, objective=objective,
                                out=out / wl.name / f"seed_{seed}", progress=progress, make=make,
                                meta={"workload": wl.source, "load_factor": wl.load_factor,
                                      **({"futures": futures} if futures is not None else {})})
    t = table.reset_index()
    t.insert(0, "seed", seed)
    t.insert(0, "workload", wl.name)
    t["bound"] = lower_bound(spec, tasks, seed=seed, objective=objective)
    t["decision_us"] = [timed[p].us_per_decision for p in t["policy"]]
    t["decisions"] = [timed[p].decisions for p in t["policy"]]
    return t


def quality_checks(summary: pd.DataFrame) -> list[dict]:
    """Per learned policy and workload: objective below every heuristic's, SLO miss <= the oracle's."""
    checks = []
    for wl, g in summary.groupby(level="workload", sort=False):
        g = g.droplevel("workload")
        best = best_heuristic(g["objective"])
        for p in g.index:
            if p.partition(":")[0] not in LEARNED:
                continue
            row = {"workload": wl, "policy": p, "objective": float(g.loc[p, "objective"]),
                   "slo_miss_%": float(g.loc[p, "slo_miss_%"])}
            if best is not None:
                row.update(best_heuristic=best, best_heuristic_objective=float(g.loc[best, "objective"]),
                           beats_every_heuristic=bool(row["objective"] < g.loc[best, "objective"]))
            if "oracle" in g.index:
                row.update(oracle_slo_miss_pct=float(g.loc["oracle", "slo_miss_%"]),
                           slo_no_worse_than_oracle=bool(row["slo_miss_%"] <= g.loc["oracle", "slo_miss_%"]))
            checks.append(row)
    return checks


def _today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _usable(policies: list[str]) -> list[str]:
    """Drop learned policies with no artifact (saying how to get one), and ``auto`` when one of its
    learned members has none; others must exist."""
    from scheduler.model_registry import RegistryError

    keep = []
    for p in policies:
        if p.partition(":")[0] in (*LEARNED, "auto"):  # auto builds its learned members
            try:
                make_policy(p)
            except (RegistryError, FileNotFoundError) as e:
                print(f"skipping {p}: {e}", flush=True)
                continue
        keep.append(p)
    return keep


def _check_held_out(seeds: Sequence[int], uses: Sequence[SeedUse]) -> None:
    from cluster.config import UsageError

    for u in uses:
        hit = u.overlap(seeds)
        if hit:
            raise UsageError(f"--seeds: {format_seeds(hit)} already used by {u.artifact} as {u.role} seeds "
                             f"(meta field {u.field}); evaluate on seeds outside them")


def _variants(args: argparse.Namespace, spec: ClusterSpec,
              workloads: list[WorkloadSpec]) -> tuple[ClusterSpec, list[WorkloadSpec], list[str]]:
    """Apply ``--drop-pool``, ``--scale-cluster``, ``--random-cluster`` and ``--load-scale``, in this order;
    return them and what changed."""
    from collections import Counter

    from cluster.variants import drop_pools, random_cluster, scale_cluster
    from cluster.config import UsageError

    def apply(flag: str, fn, *a):
        try:
            return fn(*a)
        except ValueError as e:
            raise UsageError(f"{flag}: {e}") from None

    changes = []
    drop = getattr(args, "drop_pool", None) or []
    if drop:
        gone = [n.name for n in spec.nodes if n.pool in drop]
        spec = apply("--drop-pool", drop_pools, spec, drop)
        changes.append(f"dropped pool(s) {', '.join(drop)}: {len(gone)} node(s) removed ({', '.join(gone)})")
    scale = getattr(args, "scale_cluster", None)
    if scale is not None and scale != 1:
        before = len(spec.nodes)
        spec = apply("--scale-cluster", scale_cluster, spec, scale)
        changes.append(f"every node x{scale} (each tier {scale}x): {before} -> {len(spec.nodes)} nodes")
    rand = getattr(args, "random_cluster", None)
    if rand is not None:
        spec, factor = apply("--random-cluster", random_cluster, spec, rand)
        pools = Counter(n.pool for n in spec.nodes)
        changes.append(f"random cluster {rand} drawn from its pools: " + ", ".join(f"{c} {p}" for p, c in pools.items())
                       + f" ({len(spec.nodes)} nodes), arrival rate x{factor:.3g} for its capacity and load level")
        workloads = [replace(w, load_factor=w.load_factor * factor) for w in workloads]
    load = getattr(args, "load_scale", None)
    if load is not None:
        if not (math.isfinite(load) and load > 0):
            raise UsageError(f"--load-scale: must be a positive number, got {load}")
        if load != 1:
            changes.append("arrival rate x{:g}: ".format(load) + ", ".join(
                f"{w.name} load_factor {w.load_factor:g} -> {w.load_factor * load:g}" for w in workloads))
            workloads = [replace(w, load_factor=w.load_factor * load) for w in workloads]
    return spec, workloads, changes


def _command(args: argparse.Namespace, workload_paths: Sequence[str]) -> str:
    parts = ["orchestrator evaluate", f"--policies {args.policies}", f"--cluster {args.cluster}"]
    parts += [f"--workload {w}" for w in workload_paths]
    parts.append(f"--seeds {args.seeds}")
    if getattr(args, "scale_cluster", None) not in (None, 1):
        parts.append(f"--scale-cluster {args.scale_cluster}")
    parts += [f"--drop-pool {p}" for p in getattr(args, "drop_pool", None) or []]
    if getattr(args, "random_cluster", None) is not None:
        parts.append(f"--random-cluster {args.random_cluster}")
    if getattr(args, "load_scale", None) not in (None, 1):
        parts.append(f"--load-scale {args.load_scale:g}")
    if getattr(args, "jobs", 1) > 1:
        parts.append(f"--jobs {args.jobs}")
    if getattr(args, "futures", None) is not None:
        parts.append(f"--futures {args.futures}")
    parts.append(f"--out {args.out}")
    return " ".join(parts)


def cli(args: argparse.Namespace) -> int:
    """Entry point of ``orchestrator evaluate``."""
    from cluster.config import UsageError
    from simulations.compare import parse_policies
    from simulations.packing import parse_seeds

    jobs = getattr(args, "jobs", 1)
    if jobs < 1:
        raise UsageError(f"--jobs: must be at least 1, got {jobs}")
    futures = getattr(args, "futures", None)
    if futures is not None and not 0 <= futures <= MAX_FUTURES:
        raise UsageError(f"--futures: from 0 to {MAX_FUTURES}, got {futures}")
    policies = _usable(parse_policies(args.policies))
    if not policies:
        raise UsageError("--policies: none of the policies can be built")
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        raise UsageError(f"--seeds: expected e.g. 101-103 or 1,2,5, got {args.seeds!r}") from None
    if not seeds:
        raise UsageError(f"--seeds: no seed in {args.seeds!r}")
    uses, notes = learned_seed_uses(policies)
    _check_held_out(seeds, uses)
    rands = _random_clusters(args, policies)
    if len(rands) == 1:
        _cli_one(args, policies, seeds, uses, notes, rands[0], args.out)
        return 0
    rows = []
    for n in rands:  # one evaluation per cluster, each in a folder of its own, then the table across them
        summary, line = _cli_one(args, policies, seeds, uses, notes, n, str(Path(args.out) / f"rand_{n}"))
        rows.append(summary.reset_index().assign(cluster=n, description=line))
    table = pd.concat(rows, ignore_index=True)
    table.to_csv(Path(args.out) / "random_clusters.csv", index=False)
    md = random_cluster_table(table, f"Generated by `{_command(args, list(args.workload or DEFAULT_WORKLOADS))}` "
                                     f"on {_today()}; evaluation seeds {format_seeds(seeds)}.")
    (Path(args.out) / "random_clusters.md").write_text(md)
    print("\n" + md)
    return 0


#: ``--random-cluster``: N, A-B, or a comma-separated list of them
_CLUSTER_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*", re.ASCII)
#: random clusters one command evaluates at most
MAX_RANDOM_CLUSTERS = 1000


def _random_clusters(args: argparse.Namespace, policies: Sequence[str]) -> list[int | None]:
    """``--random-cluster`` as cluster numbers, each once (``[None]``: the cluster as loaded); refuses
    a random cluster a learned policy trained or was chosen on (drawn from the same cluster file, with
    no pool dropped or node scaled first)."""
    from cluster.config import UsageError

    text = getattr(args, "random_cluster", None)
    if text is None:
        return [None]
    text = str(text).strip()
    if not _CLUSTER_LIST.fullmatch(text):
        raise UsageError(f"--random-cluster: expected cluster numbers >= 0 like 1001, 1001-1010 or 5,9, got {text!r}")
    spans = [(int(lo), int(hi or lo)) for lo, _, hi in (part.partition("-") for part in text.split(","))]
    if any(hi < lo for lo, hi in spans) or sum(hi - lo + 1 for lo, hi in spans) > MAX_RANDOM_CLUSTERS:
        raise UsageError(f"--random-cluster: {text!r}: ranges A-B with A <= B, {MAX_RANDOM_CLUSTERS} clusters at most")
    rands = sorted({n for lo, hi in spans for n in range(lo, hi + 1)})
    if getattr(args, "drop_pool", None) or getattr(args, "scale_cluster", None) not in (None, 1):
        return rands  # drawn from a variant: not the clusters any artifact trained on
    try:
        used = random_clusters_used(policies, args.cluster)
    except ValueError as e:
        raise UsageError(f"--random-cluster: {e}") from None
    for artifact, mine in used.items():
        hit = sorted(set(rands) & mine)
        if hit:
            raise UsageError(f"--random-cluster: {format_seeds(hit)} among the clusters {artifact} trained or was "
                             f"chosen on (rand:N of {args.cluster} in its meta); evaluate on others")
    return rands


def _cli_one(args: argparse.Namespace, policies: list[str], seeds: list[int], uses: list[SeedUse],
             notes: list[str], rand: int | None, out: str) -> tuple[pd.DataFrame, str]:
    """One cluster's evaluation (the loaded one, its variant, or random cluster ``rand``), printed and
    written to ``out``; returns its summary and the line describing the cluster."""
    from cluster.alibaba import load_cluster_any
    from scheduler.objective import load_objective
    from simulations.compare import print_table

    args = argparse.Namespace(**{**vars(args), "random_cluster": rand, "out": out})
    paths = list(args.workload or DEFAULT_WORKLOADS)
    spec, workloads, changes = _variants(args, load_cluster_any(args.cluster),
                                         [load_workload(w) for w in paths])
    seed_lines = [f"evaluation seeds: {format_seeds(seeds)}"] + [u.describe() for u in uses] + notes
    cluster_line = f"cluster {spec.name} ({args.cluster}, {len(spec.nodes)} nodes)"
    print(cluster_line + "".join(f"; {c}" for c in changes))
    print("\n".join(seed_lines), flush=True)
    header = [f"Generated by `{_command(args, paths)}` on {_today()}: {cluster_line}"
              + "".join(f"; {c}" for c in changes) + f"; evaluation seeds {format_seeds(seeds)}.", "",
              "Seeds the learned policies saw, disjoint from the evaluation seeds: "
              + ("; ".join(u.describe() for u in uses) if uses else "no learned policy in this run")
              + "".join(f"; {n}" for n in notes) + "."]
    runs, summary, checks = evaluate(spec, workloads, seeds, policies, args.out, objective=load_objective(),
                                     header=header, jobs=getattr(args, "jobs", 1),
                                     futures=getattr(args, "futures", None))
    print(f"\nmean over seeds {format_seeds(seeds)} ({len(seeds)} runs per workload):")
    cols = ["objective", "ci_low", "ci_high", "wins", "margin_pct", "gap_pct", "slo_miss_%", "rejected",
            "decision_us"]
    print_table(summary[[c for c in cols if c in summary]])
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
    print(f"tables in {args.out}/ (evaluation.md, evaluation.csv, summary.csv, checks.json); per-task records "
          f"under {args.out}/<workload>/seed_<n>/")
    return summary, "; ".join([cluster_line, *changes])


def random_cluster_table(table: pd.DataFrame, header: str) -> str:
    """Markdown: per random cluster and workload, each learned or lookahead policy's paired margin over
    that cell's best heuristic; then per such policy how many cells it wins, how many it is within 1%
    of, its mean and its worst margin (where it is worst)."""
    scored = [p for p in dict.fromkeys(table["policy"]) if p.partition(":")[0] in (*LEARNED, *LOOKAHEAD)]
    if not scored:
        return header + "\n\nNo learned or lookahead policy in this run: each cluster's tables are in its own folder.\n"
    cells = table.drop_duplicates(["cluster", "workload"])[["cluster", "workload", "best_heuristic", "description"]]
    margin = table.set_index(["cluster", "workload", "policy"])["margin_pct"]
    lines = [header, "", "Clusters:", ""]
    lines += [f"- `rand:{c}`: {d}" for c, d in cells.drop_duplicates("cluster")[["cluster", "description"]]
              .itertuples(index=False)]
    lines += ["", "Cells are the paired margin over the best heuristic of that cluster and workload "
              "(positive: the policy is better).", "",
              "| cluster | workload | best heuristic | " + " | ".join(scored) + " |",
              "|---|---|---|" + "---|" * len(scored)]
    for c, w, b, _ in cells.itertuples(index=False):
        lines.append(f"| rand:{c} | {w} | {b} | "
                     + " | ".join(f"{margin.get((c, w, p), float('nan')):+.1f}%" for p in scored) + " |")
    lines += ["", "| policy | cells | ahead | within 1% | mean margin | worst margin |", "|---|---|---|---|---|---|"]
    for p in scored:
        m = margin.xs(p, level="policy").dropna()
        if m.empty:
            continue
        worst = m.idxmin()
        lines.append(f"| {p} | {len(m)} | {int((m > 0).sum())} | {int((m >= -1).sum())} | {m.mean():+.1f}% | "
                     f"{m.min():+.1f}% (rand:{worst[0]} {worst[1]}) |")
    return "\n".join(lines) + "\n"
