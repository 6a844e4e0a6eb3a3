"""Hold the simulator against the live cluster: same tasks, same policy, same network draws.

``orchestrator compare-sim-real --workload W --policy P`` simulates the workload,
replays it on the running Ray cluster (:mod:`replays.live`) and prints,
per metric, both values and the relative error. The run passes when the
placement mix (tasks per pool) is identical and mean latency agrees within
``--tolerance`` (15%).

Why agreement is possible at all: the replay decides at the same arrival times,
on a live state kept with the simulator's own accounting and queues; the task
body sleeps the simulator's network draw and execution time; what differs is
only what is real (Ray dispatch and completion latency, timer precision, and
whether a task that finishes "just before" an arrival has been seen to finish).
Load-sensitive policies can diverge from the simulator when such a near-tie
changes a decision; the per-task agreement line shows how often.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from cluster.topology import ClusterSpec
from scheduler.objective import Objective
from scheduler.task import Task
from simulations.engine import SimResult, simulate
from replays.live import replay
from replays.results import ReplayResult, write_result

#: (label, path into the summary) of the metrics compared.
METRICS: list[tuple[str, tuple[str, ...]]] = [
    ("latency mean (ms)", ("latency_ms", "mean")),
    ("latency p50 (ms)", ("latency_ms", "p50")),
    ("latency p95 (ms)", ("latency_ms", "p95")),
    ("latency p99 (ms)", ("latency_ms", "p99")),
    ("SLO miss rate", ("slo_miss_rate",)),
    ("cost total ($)", ("cost_total",)),
    ("cost per task ($)", ("cost_per_task",)),
    ("objective mean", ("objective_mean",)),
    ("succeeded", ("succeeded",)),
    ("failed", ("failed",)),
]


@dataclass
class Comparison:
    """Side-by-side metrics and the verdict."""

    sim: SimResult
    real: ReplayResult
    table: pd.DataFrame
    placement_sim: dict[str, int]
    placement_real: dict[str, int]
    same_node_rate: float
    latency_error: float
    tolerance: float
    reasons: list[str] = field(default_factory=list)

    @property
    def placement_match(self) -> bool:
        return self.placement_sim == self.placement_real

    @property
    def ok(self) -> bool:
        return not self.reasons


def _get(summary: dict, path: tuple[str, ...]) -> float:
    v = summary
    for k in path:
        v = v[k]
    return float(v)


def rel_error(sim: float, real: float) -> float:
    """|real - sim| / |sim|; 0 when both are 0, inf when only sim is 0."""
    if sim == real:
        return 0.0
    if sim == 0 or not math.isfinite(sim):
        return math.inf
    return abs(real - sim) / abs(sim)


def _counts(records: pd.DataFrame) -> dict[str, int]:
    done = records[records["status"] == "succeeded"]
    return {str(k): int(v) for k, v in done["pool"].value_counts().sort_index().items()}


def compare(spec: ClusterSpec, tasks: Sequence[Task], policy_name: str, *, seed: int = 0,
            time_compression: float = 1.0, tolerance: float = 0.15, objective: Objective | None = None,
            progress: bool = True) -> Comparison:
    """Simulate and replay ``tasks`` with ``policy_name``; the caller has connected to Ray."""
    from scheduler.policy import make_policy

    objective = objective or Objective()
    sim = simulate(spec, tasks, make_policy(policy_name), seed=seed, objective=objective)
    real = replay(spec, tasks, make_policy(policy_name), seed=seed, time_compression=time_compression,
                  objective=objective, progress=progress)
    rows = []
    for label, path in METRICS:
        s, r = _get(sim.summary, path), _get(real.summary, path)
        rows.append({"metric": label, "simulator": s, "cluster": r, "rel_error": rel_error(s, r)})
    for col in ("queue_ms", "network_ms", "exec_ms"):
        s = float(sim.records[col].mean())
        r = float(real.records[col].mean())
        rows.append({"metric": f"{col.replace('_ms', '')} mean (ms)", "simulator": s, "cluster": r,
                     "rel_error": rel_error(s, r)})
    table = pd.DataFrame(rows).set_index("metric")
    a = sim.records.set_index("task_id")["node"]
    b = real.records.set_index("task_id")["node"].reindex(a.index)
    same = float((a == b).mean()) if len(a) else math.nan
    lat_err = rel_error(_get(sim.summary, ("latency_ms", "mean")), _get(real.summary, ("latency_ms", "mean")))
    cmp = Comparison(sim, real, table, _counts(sim.records), _counts(real.records), same, lat_err, tolerance)
    if not cmp.placement_match:
        cmp.reasons.append(f"placement mix differs: simulator {cmp.placement_sim}, cluster {cmp.placement_real}")
    if not lat_err <= tolerance:
        cmp.reasons.append(f"mean latency differs by {100 * lat_err:.1f}% (tolerance {100 * tolerance:.0f}%)")
    return cmp


def format_report(cmp: Comparison) -> str:
    with pd.option_context("display.float_format", "{:,.4g}".format, "display.width", 160):
        lines = [cmp.table.to_string(), ""]
    pools = sorted(set(cmp.placement_sim) | set(cmp.placement_real))
    lines.append("placement (tasks per pool): " + ", ".join(
        f"{p} {cmp.placement_sim.get(p, 0)}/{cmp.placement_real.get(p, 0)}" for p in pools)
        + f"  [simulator/cluster] -> {'identical' if cmp.placement_match else 'DIFFERENT'}")
    lines.append(f"same node per task: {100 * cmp.same_node_rate:.1f}%")
    lines.append(f"replay: {cmp.real.wall_s:.1f} s wall, {cmp.real.warm_s:.1f} s worker warm-up, "
                 f"{cmp.real.device_mismatches} GPU device mismatches")
    lines.append("PASS" if cmp.ok else "FAIL: " + "; ".join(cmp.reasons))
    return "\n".join(lines)


def markdown(comparisons: Sequence[tuple[str, Comparison]], header: Sequence[str]) -> list[str]:
    """A page of ``comparisons`` (policy, comparison): one summary row per policy, then each metric table."""
    from orchestrator import docs_page

    rows = pd.DataFrame([{"policy": p, "same node, task by task": f"{100 * c.same_node_rate:.1f}%",
                          "mean latency error": f"{100 * c.latency_error:.1f}%",
                          "placement mix": "identical" if c.placement_match else "different",
                          "verdict": "pass" if c.ok else "FAIL: " + "; ".join(c.reasons)}
                         for p, c in comparisons]).set_index("policy")
    lines = [*header, *docs_page.table(rows), ""]
    for p, c in comparisons:
        lines += [f"## {p}", "", *docs_page.table(c.table, "{:,.4g}"), "",
                  f"Replay: {c.real.wall_s:.1f} s wall, {c.real.warm_s:.1f} s worker warm-up, "
                  f"{c.real.device_mismatches} GPU device mismatches.", ""]
    return lines


def _write(out: Path, policy: str, cmp: Comparison, meta: dict) -> None:
    write_result(out, f"sim_{policy}", cmp.sim, meta)
    write_result(out, f"real_{policy}", cmp.real, meta)
    cmp.table.to_csv(out / "sim_vs_real.csv")
    (out / "verdict.json").write_text(json.dumps({"ok": cmp.ok, "reasons": cmp.reasons,
                                                  "latency_error": cmp.latency_error,
                                                  "same_node_rate": cmp.same_node_rate}, indent=2))
    print(f"written to {out}/")


def cli(args: argparse.Namespace) -> int:
    from cluster.launcher import LauncherError, connect
    from cluster.alibaba import load_cluster_any
    from scheduler.policy import available_policies
    from orchestrator import docs_page
    from orchestrator.cli import UsageError
    from replays.live import cluster_path, load_tasks

    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    for p in policies or [args.policy]:
        if p.partition(":")[0] not in available_policies():
            raise UsageError(f"--policy: unknown policy {p!r} (known: {', '.join(available_policies())})")
    spec = load_cluster_any(cluster_path(args.cluster, args.state_dir))
    tasks = load_tasks(args.workload, seed=args.seed, duration_s=args.duration, load_factor=args.load_factor)
    if not tasks:
        raise UsageError("the workload produced no tasks")
    done: list[tuple[str, Comparison]] = []
    try:
        connect(args.state_dir, args.address)
        for policy in policies:
            print(f"{len(tasks)} tasks of {args.workload}, policy {policy}, cluster {spec.name}, "
                  f"time compression {args.time_compression:g}", flush=True)
            cmp = compare(spec, tasks, policy, seed=args.seed or 0, time_compression=args.time_compression,
                          tolerance=args.tolerance)
            print(format_report(cmp))
            done.append((policy, cmp))
            if args.out:
                meta = {"workload": args.workload, "policy": policy, "cluster": spec.name, "tasks": len(tasks),
                        "time_compression": args.time_compression}
                _write(Path(args.out) / (policy if len(policies) > 1 else ""), policy, cmp, meta)
    except (RuntimeError, LauncherError) as exc:
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return 1
    if args.markdown:
        header = docs_page.header("Simulator against the live cluster",
                                  docs_page.command_line("orchestrator", getattr(args, "argv", None)))
        header += [f"{len(tasks)} tasks of `{args.workload}` on cluster {spec.name} ({len(spec.nodes)} nodes), "
                   f"time compression {args.time_compression:g}; the same tasks, seed and network draws in the "
                   f"simulator and on the Ray cluster. A policy passes when the placement mix (tasks per pool) "
                   f"is identical and mean latency agrees within {100 * args.tolerance:.0f}%.", ""]
        docs_page.write(args.markdown, markdown(done, header))
    return 0 if all(c.ok for _, c in done) else 1


def add_compare(sub: argparse._SubParsersAction) -> None:
    """``orchestrator compare-sim-real``."""
    p = sub.add_parser("compare-sim-real", help="run a workload in the simulator and on the Ray cluster, compare")
    p.add_argument("--workload", default="configs/workloads/cluster_smoke.yaml", help="workload YAML")
    p.add_argument("--policy", default="cheapest-feasible",
                   help="policy, or several comma-separated (each compared in turn; --out gets a folder per policy)")
    p.add_argument("--cluster", default=None, help="cluster YAML (default: the one `cluster up` started)")
    p.add_argument("--seed", type=int, default=None, help="workload seed (default: the workload file's)")
    p.add_argument("--duration", type=float, default=None, help="seconds of arrivals (default: the workload's)")
    p.add_argument("--load-factor", type=float, default=None,
                   help="multiply the workload's arrival rate (default: the workload file's load_factor)")
    p.add_argument("--time-compression", type=float, default=2.0,
                   help="run the workload this many times faster than its timeline on the real cluster")
    p.add_argument("--tolerance", type=float, default=0.15, help="allowed relative error of mean latency")
    p.add_argument("--out", default=None, help="write both runs' records and the comparison here")
    p.add_argument("--markdown", metavar="PATH", help="also write the comparison to this dated page "
                   "(e.g. docs/sim_vs_real.md)")
    p.add_argument("--state-dir", default=None, help="launcher state directory (default $ORCH_RAY_DIR)")
    p.add_argument("--address", default=None, help="Ray address instead of the state directory")
    p.set_defaults(func=cli)
