"""Counterfactual replays of the router's history: the arrivals it saw, under other policies.

``orchestrator counterfactual --history URL --policies rf,rl,fastest-feasible`` rebuilds each
accepted task of the history (its shape, declared ``work`` and kind, arriving when it was
accepted, relative to the first) and simulates the whole stream under each policy, on the
cluster (optionally calibrated: ``--calibration``, :mod:`simulations.calibration`), over a few
seeds of network draws. Every policy meets the same tasks, so they are compared task by task:
the difference of each task's objective against the first policy (the champion), averaged
over the seeds, with a 95% bootstrap interval over the tasks
(:func:`evaluation.paired_stats.bootstrap_ci`). Beside them, what the router measured of the
same tasks (its records' own scores), as a check of the simulator on this history.

What a replay cannot know: a task's pool restriction and deadline are dropped (the policies
choose among every node), and real work is simulated by its declared ``work``, as the
calibrated model expects it. Deterministic for fixed seeds.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from cluster.config import UsageError
from scheduler.task import Task, TaskError, make_task
from serve_app.history_sql import mask



def tasks_from_history(records: Iterable[Mapping[str, Any]]) -> tuple[list[Task], list[Mapping[str, Any]]]:
    """The accepted tasks of ``records`` as a simulator stream (arrival: seconds after the first acceptance),
    oldest first, and the records they came from (in the same order); records without a stored task are
    left out."""
    rows = sorted((r for r in records if isinstance(r.get("task"), Mapping) and r.get("accepted_at") is not None),
                  key=lambda r: (float(r["accepted_at"]), str(r["task_id"])))
    if not rows:
        return [], []
    from serve_app.history_schema import TASK_EXTRA_KEYS

    not_fields = (*TASK_EXTRA_KEYS, "arrival")  # the replay's arrival is the acceptance time
    t0 = float(rows[0]["accepted_at"])
    tasks, kept = [], []
    for r in rows:
        fields = {k: v for k, v in r["task"].items() if k not in not_fields}
        fields.update(id=str(r["task_id"]), arrival=float(r["accepted_at"]) - t0)
        try:
            tasks.append(make_task(fields, infer=False))
        except TaskError:  # a record written by an older router with other fields: not replayable
            continue
        kept.append(r)
    return tasks, kept


def counterfactual(spec, tasks: Sequence[Task], policies: Sequence[str], seeds: Sequence[int],
                   objective=None, build: Mapping[str, Callable[[int], Any]] | None = None) -> dict[str, Any]:
    """Each policy's mean objective (with its interval over tasks), SLO misses and paired difference from
    the first policy, over ``seeds`` (see the module docstring). ``build``: a policy by name that is
    not built by :func:`scheduler.policy.make_policy` (a model outside the registry searched), per seed."""
    from evaluation.paired_stats import bootstrap_ci
    from scheduler.objective import load_objective
    from scheduler.policy import make_policy
    from simulations.engine import simulate

    objective = objective or load_objective()
    per_task: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {"tasks": len(tasks), "seeds": list(seeds), "policies": {}}
    for name in policies:
        scores, misses, seconds = [], [], 0.0
        for seed in seeds:
            policy = build[name](seed) if build and name in build else make_policy(name, seed=seed)
            t = time.perf_counter()
            res = simulate(spec, tasks, policy, seed=seed, objective=objective, timeline_points=1)
            seconds += time.perf_counter() - t
            rec = res.records.set_index("task_id").loc[[t.id for t in tasks]]
            scores.append(rec["score"].to_numpy(dtype=float))
            misses.append(float(res.summary["slo_miss_rate"]))
        per_task[name] = np.nanmean(np.vstack(scores), axis=0)
        lo, hi = bootstrap_ci(per_task[name])
        out["policies"][name] = {"objective": float(np.nanmean(per_task[name])), "ci": [lo, hi],
                                 "slo_miss_pct": 100.0 * float(np.mean(misses)), "seconds": seconds}
    champion = policies[0]
    for name in policies[1:]:
        diff = per_task[name] - per_task[champion]
        lo, hi = bootstrap_ci(diff[np.isfinite(diff)])
        out["policies"][name].update(vs_first=float(np.nanmean(diff)), vs_first_ci=[lo, hi],
                                     better_tasks=int((diff < 0).sum()), worse_tasks=int((diff > 0).sum()))
    return out


def add_counterfactual(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("counterfactual", help="replay the router's history under other policies in the simulator "
                                              "(champion against challengers, task by task)")
    p.add_argument("--history", required=True, metavar="URL", help="the router's history (sqlite:///..., postgresql://...)")
    p.add_argument("--cluster", default="configs/cluster/local.yaml", help="the cluster the history ran on")
    p.add_argument("--calibration", metavar="PROFILE", help="a profile of `orchestrator calibrate` for the simulator")
    p.add_argument("--policies", required=True,
                   help="comma-separated; the first is the one the others are compared with (the champion)")
    p.add_argument("--seeds", default="1-3", help="network-draw seeds, e.g. 1-3")
    p.add_argument("--max-tasks", type=int, default=50_000, help="replay at most this many (the newest) tasks")
    p.add_argument("--out", default="results/counterfactual", help="folder for counterfactual.json and .md")
    p.add_argument("--markdown", metavar="PATH", help="also write the table to this page, with the command and date")
    p.set_defaults(func=cmd_counterfactual)


def history_on_cluster(args: argparse.Namespace) -> tuple[Any, list[Task], list[Mapping[str, Any]]]:
    """(the cluster of ``--cluster``, calibrated by ``--calibration``; the replayable tasks of ``--history``
    and their records); two tasks at least, else a usage error naming the history."""
    from cluster.alibaba import load_cluster_any
    from simulations.calibration import calibrated
    from simulations.calibration_cli import read_history

    spec = calibrated(load_cluster_any(args.cluster), args.calibration)
    tasks, rows = tasks_from_history(read_history(args.history, args.max_tasks, status=None))
    if len(tasks) < 2:
        raise UsageError(f"--history {args.history}: {len(tasks)} replayable tasks; at least two are needed")
    return spec, tasks, rows


def about(args: argparse.Namespace, spec, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a report says of its history: where from, which tasks, and what the router measured on them."""
    measured = [float(r["score"]) for r in rows if r.get("status") == "succeeded" and r.get("score") is not None]
    return {"history": mask(args.history), "cluster": spec.name, "calibration": args.calibration,
            "first": rows[0]["task_id"], "last": rows[-1]["task_id"],
            "measured": {"objective": float(np.mean(measured)) if measured else None, "tasks": len(measured),
                         "policies": sorted({str(r.get("policy")) for r in rows if r.get("policy")})}}


def cmd_counterfactual(args: argparse.Namespace) -> int:
    from simulations.packing import parse_seeds
    from simulations.compare import parse_policies

    policies = parse_policies(args.policies)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as exc:
        raise UsageError(f"--seeds {args.seeds}: {exc}") from None
    spec, tasks, rows = history_on_cluster(args)
    report = counterfactual(spec, tasks, policies, seeds)
    report.update(about(args, spec, rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "counterfactual.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / "counterfactual.md").write_text(text)
    if args.markdown:
        cmd = "orchestrator " + " ".join(getattr(args, "argv", []) or ["counterfactual"])
        Path(args.markdown).write_text("# Counterfactual replays of the router's history\n\n"
                                       f"Generated by `{cmd}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
                                       "\n\n" + text)
    print(text)
    return 0


def markdown(report: Mapping[str, Any]) -> str:
    pols = list(report["policies"])
    m = report["measured"]
    lines = [f"{report['tasks']} tasks of `{report['history']}` ({report['first']} .. {report['last']}) replayed on "
             f"{report['cluster']}{' (calibrated: ' + str(report['calibration']) + ')' if report['calibration'] else ''}, "
             f"seeds {', '.join(map(str, report['seeds']))}. Measured by the router on these tasks "
             f"({', '.join(m['policies']) or 'no policy recorded'}): mean objective "
             f"{m['objective']:.3f} over {m['tasks']} succeeded." if m["objective"] is not None else
             f"{report['tasks']} tasks replayed; nothing measured succeeded.", "",
             f"| policy | mean objective [95% CI over tasks] | SLO miss % | vs {pols[0]} per task [95% CI] | "
             "tasks better / worse |", "|---|---|---|---|---|"]
    for name, p in report["policies"].items():
        vs = ("-" if "vs_first" not in p else
              f"{p['vs_first']:+.3f} [{p['vs_first_ci'][0]:+.3f}, {p['vs_first_ci'][1]:+.3f}]")
        bw = "-" if "vs_first" not in p else f"{p['better_tasks']} / {p['worse_tasks']}"
        lines.append(f"| {name} | {p['objective']:.3f} [{p['ci'][0]:.3f}, {p['ci'][1]:.3f}] | "
                     f"{p['slo_miss_pct']:.1f} | {vs} | {bw} |")
    return "\n".join(lines) + "\n"
