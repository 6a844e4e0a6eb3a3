"""Compare policies on one workload: same tasks, same seed, side by side.

Writes, under ``out``: ``records_<policy>.csv`` (per task), ``timeline_<policy>.csv``
(utilisation, GPU allocation and fragmentation over time), ``summary.json`` (all
policies) and ``comparison.csv`` (the printed table). The Streamlit view and
``orchestrator evaluate`` read the same files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from cluster.config import UsageError
from cluster.topology import ClusterSpec
from scheduler.objective import Objective
from scheduler.policy import Policy, make_policy
from scheduler.task import Task
from simulations.engine import SimResult, simulate
from simulations.fragmentation import TargetWorkload, cluster_fragmentation, typical_shapes
from simulations.metrics import summary_row


def compare_policies(spec: ClusterSpec, tasks: Sequence[Task], policies: Sequence[str], *, seed: int = 0,
                     objective: Objective | None = None, out: str | Path | None = None,
                     progress: bool = True, meta: dict | None = None,
                     make: Callable[[str], Policy] = make_policy) -> tuple[pd.DataFrame, dict[str, SimResult]]:
    """Simulate every policy on ``tasks``; return the comparison table and the results.

    ``make`` builds a policy from its name (evaluation passes one that wraps it in a timer).
    """
    from tqdm import tqdm

    target = TargetWorkload(typical_shapes(tasks))
    frag = lambda st: cluster_fragmentation(st, target)  # noqa: E731
    results: dict[str, SimResult] = {}
    bar = tqdm(total=len(policies) * len(tasks), unit="task", desc="simulate", disable=not progress)
    for name in policies:
        policy = make(name)
        bar.set_postfix_str(name)
        done = [0]

        def tick(n: int) -> None:
            bar.update(n - done[0])
            done[0] = n

        results[name] = simulate(spec, tasks, policy, seed=seed, objective=objective,
                                 fragmentation=frag, progress=tick)
        bar.update(len(tasks) - done[0])
    bar.close()
    table = pd.DataFrame([summary_row(n, r.summary) for n, r in results.items()]).set_index("policy")
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name, r in results.items():
            r.records.to_csv(out / f"records_{name}.csv", index=False)
            r.timeline.to_csv(out / f"timeline_{name}.csv", index=False)
        summary = {"meta": {"cluster": spec.name, "tasks": len(tasks), "seed": seed, **(meta or {})},
                   "policies": {n: r.summary for n, r in results.items()}}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        table.to_csv(out / "comparison.csv")
    return table, results


def parse_policies(text: str) -> list[str]:
    """``--policies a,b:3``: the names, each a registered policy (a version only for learned ones);
    raises :class:`cluster.config.UsageError` naming the flag."""
    from scheduler.policy import available_policies

    names = [p.strip() for p in text.split(",") if p.strip()]
    known = available_policies()
    from scheduler.model_registry import TRAIN_COMMANDS

    for n in names:
        base, _, version = n.partition(":")
        if base not in known:
            raise UsageError(f"--policies: unknown policy {n!r} (known: {', '.join(known)})")
        if version and base not in TRAIN_COMMANDS:
            raise UsageError(f"--policies: {n!r}: only learned policies ({', '.join(TRAIN_COMMANDS)}) take a version")
    if not names:
        raise UsageError("--policies: give at least one policy")
    return names


def print_table(df: pd.DataFrame) -> None:
    """A results table on stdout, every column, three decimals."""
    with pd.option_context("display.max_columns", 50, "display.width", 200, "display.float_format",
                           "{:,.3f}".format):
        print(df.to_string())
