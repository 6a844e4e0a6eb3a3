"""The Loop page's tables, shaped from ``GET /v1/loop`` (plain pandas: tested without a browser).

Columns are named as a reader says them, with their units; the figures stay numbers (the page's
``st.table`` shortens them) so they align and sort as numbers in the CSV downloads.
"""
from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from serve_app.dashboard_tables import when

#: the calibration report's error figures, as the page heads them
ERRORS = {"mean_pct": "mean error %", "p95_pct": "p95 error %", "median_task_pct": "median per-task error %",
          "measured_mean_ms": "measured mean (ms)", "predicted_mean_ms": "model's mean (ms)"}


def calibration_overall(report: Mapping[str, Any]) -> pd.DataFrame:
    """Held-out then fitted tasks, before and after: the model's latency against the measured one."""
    rows = []
    for part in ("held_out", "fit"):
        for stage in ("before", "after"):
            e = report[stage][part]
            rows.append({"tasks": part.replace("_", " "), "model": stage, "count": e["tasks"],
                         **{name: e[key] for key, name in ERRORS.items()}})
    return pd.DataFrame(rows)


def calibration_by_class(report: Mapping[str, Any]) -> pd.DataFrame:
    """Per node class of the held-out tasks: measured mean latency, the model's before and after, their errors
    (empty for a report written before ``orchestrator calibrate`` kept them)."""
    rows = []
    for cls, e in (report.get("held_out_by_class") or {}).items():
        b, a = e["before"], e["after"]
        rows.append({"node class": cls, "tasks": b["tasks"], "measured mean (ms)": b["measured_mean_ms"],
                     "model before (ms)": b["predicted_mean_ms"], "model after (ms)": a["predicted_mean_ms"],
                     "error before %": b["mean_pct"], "error after %": a["mean_pct"]})
    return pd.DataFrame(rows)


def calibration_long(by_class: pd.DataFrame) -> pd.DataFrame:
    """:func:`calibration_by_class` as bars: ``node class``, ``latency`` (measured, model before/after), ``ms``."""
    cols = {"measured mean (ms)": "measured", "model before (ms)": "model before", "model after (ms)": "model after"}
    long = by_class.melt(id_vars=["node class"], value_vars=list(cols), var_name="latency", value_name="ms")
    long["latency"] = long["latency"].map(cols)
    return long


def factors(report: Mapping[str, Any]) -> pd.DataFrame:
    """The profile's execution factors (measured / modelled), a row per node class and a column per task kind;
    the last row is each kind's over every class (what a class with too few tasks of the kind gets)."""
    prof = report.get("profile") or {}
    rows = {cls: dict(per) for cls, per in (prof.get("work") or {}).items()}
    rows["(every class)"] = dict(prof.get("kind_work") or {})
    df = pd.DataFrame.from_dict(rows, orient="index")
    return df.reindex(columns=sorted(df.columns)).rename_axis("node class").reset_index()


def shadow_agreement(pairs: list[Mapping[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"champion": p["champion"], "challenger": p["challenger"], "decisions": p["decisions"],
                          "agreed": p["agreements"], "disagreed": p["disagreements"], "errors": p["errors"],
                          "agreement %": p["agreement_pct"]} for p in pairs])


def shadow_expected(pairs: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Where the two chose different nodes: the model's expected score and latency of each choice."""
    return pd.DataFrame([{"champion": p["champion"], "challenger": p["challenger"], "compared": p["compared"],
                          "challenger better": p["challenger_better"],
                          "score, champion": p["champion_expected_score"],
                          "score, challenger": p["challenger_expected_score"],
                          "latency, champion (ms)": p["champion_expected_ms"],
                          "latency, challenger (ms)": p["challenger_expected_ms"],
                          "measured score, champion": p["champion_measured_score"],
                          "SLO met %, champion": p["champion_slo_met_pct"]} for p in pairs if p["compared"]])


def objectives(report: Mapping[str, Any]) -> pd.DataFrame:
    """A counterfactual (or retrain) report's policies: mean objective with its interval, SLO misses, and the
    paired difference from the first policy (the champion) with its interval and the tasks it won and lost."""
    rows = []
    for name, p in report["policies"].items():
        lo, hi = (p.get("ci") or [None, None])[:2]
        vs_lo, vs_hi = (p.get("vs_first_ci") or [None, None])[:2]
        rows.append({"policy": name, "mean objective": p.get("objective"), "CI low": lo, "CI high": hi,
                     "SLO miss %": p.get("slo_miss_pct"), "vs champion": p.get("vs_first"),
                     "vs champion, CI low": vs_lo, "vs champion, CI high": vs_hi,
                     "tasks better": p.get("better_tasks"), "tasks worse": p.get("worse_tasks")})
    return pd.DataFrame(rows)


def verdict(report: Mapping[str, Any], name: str) -> str:
    """Whether ``name`` beat the report's first policy task by task: by the interval of the paired difference."""
    first = next(iter(report["policies"]))
    p = report["policies"].get(name) or {}
    ci = p.get("vs_first_ci") or [None, None]
    if p.get("vs_first") is None or None in ci:
        return f"{name} has no paired difference from {first}"
    if ci[1] < 0:
        return f"{name} is better than {first} task by task (the whole interval is below zero)"
    if ci[0] > 0:
        return f"{name} is worse than {first} task by task (the whole interval is above zero)"
    return f"{name} is not shown better or worse than {first} (the interval spans zero)"


def promotion_log(log: list[Mapping[str, Any]]) -> pd.DataFrame:
    """The router's promotions and rollbacks, newest first, with the SLO-miss rates they were judged on."""
    rows = [{"at (UTC)": when(e.get("at")), "event": e.get("event"), "policy": e.get("policy"),
             "previous": e.get("previous") or "–",
             "miss rate %": None if e.get("miss_rate") is None else 100.0 * e["miss_rate"],
             "baseline miss rate %": None if e.get("baseline_miss_rate") is None else 100.0 * e["baseline_miss_rate"],
             "window": e.get("window"), "margin %": None if e.get("margin") is None else 100.0 * e["margin"]}
            for e in reversed(log)]
    return pd.DataFrame(rows)
