"""Per-workload summary of an evaluation and its Markdown table.

From the per-seed rows of ``orchestrator evaluate`` (one per workload, seed and
policy) it derives, per workload and policy: the mean objective over seeds with a
95% bootstrap interval, the paired record against the best heuristic of that
workload (chosen on these same seeds by mean objective: the strongest rule of thumb
a user could have picked in hindsight), the lower bound and the gap to it, and the
mean decision time.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from evaluation.held_out import LEARNED_KINDS
from evaluation.paired_stats import bootstrap_ci, paired_margin_pct, paired_wins

#: not rules of thumb: learned policies and lookahead teachers (scored against the heuristics)
NOT_HEURISTIC = (*LEARNED_KINDS, "oracle", "rollout", "auto")
#: per-seed columns averaged as they are
MEAN_COLUMNS = ["slo_miss_%", "lat_p50_ms", "lat_p95_ms", "cost_task_$", "rejected"]


def is_heuristic(name: str) -> bool:
    """A rule-of-thumb policy (what a team runs without this project's learned policies)."""
    return name.partition(":")[0] not in NOT_HEURISTIC


def best_heuristic(means: pd.Series) -> str | None:
    """The heuristic with the lowest of ``means`` (mean objective by policy, one workload), or None."""
    heur = [p for p in means.index if is_heuristic(p)]
    return min(heur, key=lambda p: means[p]) if heur else None


def summarize_runs(runs: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Per (workload, policy): mean objective, bootstrap interval, paired record vs the best heuristic, bound, time.

    ``runs`` needs columns workload, seed, policy, objective, bound, decision_us and
    decisions (the columns in :data:`MEAN_COLUMNS` are averaged when present).
    ``seed`` seeds the bootstrap resampling.
    """
    rows = []
    for wl, g in runs.groupby("workload", sort=False):
        best = best_heuristic(g.groupby("policy", sort=False)["objective"].mean())
        by_policy = {p: gp.set_index("seed")["objective"] for p, gp in g.groupby("policy", sort=False)}
        ref = by_policy[best] if best else None
        bound = float(g.drop_duplicates("seed")["bound"].mean())
        for p, obj in by_policy.items():
            gp = g[g["policy"] == p]
            lo, hi = bootstrap_ci(obj.to_numpy(), seed=seed)
            mean = float(obj.mean())
            row = {"workload": wl, "policy": p, "objective": mean, "ci_low": lo, "ci_high": hi,
                   "seeds": int(len(obj)), "best_heuristic": best or ""}
            if ref is not None and p != best:
                r = ref.reindex(obj.index)
                row.update(wins=paired_wins(obj, r), margin_pct=paired_margin_pct(obj, r))
            else:
                row.update(wins=np.nan, margin_pct=np.nan)
            row.update({c: float(gp[c].mean()) for c in MEAN_COLUMNS if c in gp})
            n = gp["decisions"].sum()
            row.update(bound=bound, gap_pct=100.0 * (mean / bound - 1.0) if bound > 0 else np.nan,
                       decision_us=float((gp["decision_us"] * gp["decisions"]).sum() / n) if n else np.nan)
            rows.append(row)
    df = pd.DataFrame(rows).set_index(["workload", "policy"])
    df["wins"] = df["wins"].astype("Int64")
    return df


def _num(x: float, fmt: str = "{:.3f}") -> str:
    return "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def markdown(summary: pd.DataFrame, header: Sequence[str]) -> str:
    """The summary as Markdown: ``header`` lines, then one table per workload (best objective first)."""
    out = [*header, ""]
    for wl, g in summary.groupby(level="workload", sort=False):
        g = g.droplevel("workload").sort_values("objective")
        best = g["best_heuristic"].iloc[0]
        n = int(g["seeds"].max())
        bound = float(g["bound"].iloc[0])
        out += [f"### {wl}", "",
                f"Best heuristic on these seeds: {best or 'none run'}. Lower bound (each task alone on its "
                f"best node): {_num(bound)}.", "",
                "| policy | objective (95% CI) | wins vs best heuristic | paired margin | gap to bound "
                "| SLO miss % | rejected | us/decision |",
                "|---|---|---|---|---|---|---|---|"]
        for p, r in g.iterrows():
            ci = f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if np.isfinite(r["ci_low"]) else ""
            if p == best:
                wins, margin = "(best heuristic)", ""
            elif not pd.isna(r["wins"]):
                wins, margin = f"{int(r['wins'])}/{n}", _num(r["margin_pct"], "{:+.1f}%")
            else:
                wins, margin = "", ""
            out.append(f"| {p} | {_num(r['objective'])}{ci} | {wins} | {margin} | "
                       f"{_num(r['gap_pct'], '{:+.0f}%')} | {_num(r.get('slo_miss_%', np.nan), '{:.1f}')} | "
                       f"{_num(r.get('rejected', np.nan), '{:g}')} | {_num(r['decision_us'], '{:,.1f}')} |")
        out.append("")
    out += ["Objective: mean per placed task over the seeds (lower is better); the interval is a percentile "
            "bootstrap of the mean over seeds. Wins: seeds where the policy's objective is strictly lower than "
            "the best heuristic's on the same tasks; paired margin: mean of (best heuristic - policy) / best "
            "heuristic over seeds (positive: the policy is better). Gap to bound: mean objective over the mean "
            "lower bound, minus 1. us/decision: wall time inside the policy's select, measured in this run."]
    return "\n".join(out) + "\n"
