"""The Capacity page: the router's demand forecast against what arrived, and the latest recommendation.

Both come from the router (``GET /v1/capacity/forecast`` and ``/v1/capacity/recommendation``), so
the page shows what an API client gets; the recommendation is the last one
``orchestrator capacity recommend`` wrote to the router's ``capacity_dir``.
"""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st
import yaml

from capacity.live import INTERVALS, MAX_HORIZON
from capacity.models import MODELS
from serve_app.charts import forecast_chart, forecast_frame
from serve_app.client import RouterError
from serve_app.dashboard_common import client, table

UNITS = {"arrivals": "tasks per interval", "cpu_s": "CPU core-seconds", "mem_gb_s": "memory GB-seconds",
         "gpu_s": "GPU-seconds (whole-device equivalents)"}


def page_capacity() -> None:
    st.header("Capacity")
    _forecast()
    st.divider()
    _recommendation()


def _forecast() -> None:
    st.subheader("Demand forecast")
    c1, c2, c3 = st.columns(3)
    interval = c1.selectbox("Interval", sorted(INTERVALS, key=lambda i: i != "1h"))
    horizon = int(c2.number_input("Horizon (intervals)", 1, MAX_HORIZON, 24))
    models = c3.multiselect("Models", MODELS, default=["snaive", "ets"],
                            help="snaive (the seasonal-naive baseline) always runs; mstl and lgbm take longer")
    try:
        with st.spinner("Fitting the models to the router's history ..."):
            doc = client().capacity_forecast(interval, horizon, ",".join(models) or "snaive")
    except RouterError as exc:
        st.info(f"No forecast: {exc}")
        return
    hist = doc["history"]
    st.caption(f"From {hist['tasks']:,} tasks accepted since {hist['first_accepted'][:16]} UTC "
               f"({hist['whole_intervals']} whole intervals{'; only the newest rows were read' if hist['truncated'] else ''}); "
               f"fitted in {doc['seconds']:.1f} s{' (kept from an earlier request)' if doc['cached'] else ''}.")
    if doc.get("skipped"):
        st.caption("Not fitted: " + "; ".join(f"{m} ({why})" for m, why in doc["skipped"].items()))
    ids = [s["id"] for s in doc["series"]]
    c1, c2, c3 = st.columns(3)
    sid = c1.selectbox("Series", ids, help="arrivals, cpu_s, mem_gb_s, gpu_s in total; arrivals/kind=... per kind")
    series = next(s for s in doc["series"] if s["id"] == sid)
    model = c2.selectbox("Model shown", list(series["forecast"]))
    level = c3.selectbox("Interval level (%)", sorted(doc["levels"], reverse=True))
    df = forecast_frame(series, model, level)
    st.altair_chart(forecast_chart(df, UNITS.get(series["metric"], series["metric"]), level), width="stretch")
    if series.get("errors"):
        st.caption(f"Backtest: each model forecast the last {doc['horizon']} whole intervals from "
                   f"{doc['backtest']['origin'][:16]} UTC, seeing only what came before; scored against what arrived.")
        err = pd.DataFrame(series["errors"]).rename(columns={"mae": "MAE", "mape": "MAPE %", "mase": "MASE",
                                                             **{f"cov_{lv}": f"{lv}% coverage" for lv in doc["levels"]}})
        table(err)
    else:
        st.caption(f"Too little history to backtest {doc['horizon']} intervals: predictions against actuals appear "
                   f"once it holds {doc['backtest_needs']} whole intervals.")


def _recommendation() -> None:
    st.subheader("Recommended cluster")
    try:
        rec = client().capacity_recommendation()
    except RouterError as exc:
        st.info(f"No recommendation: {exc}")
        return
    now, best = rec["now"], rec["recommended"]
    saving = rec.get("saving_per_hour")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Cost now ($/h)", _fmt(now.get("cost_per_hour"), ",.2f"))
    m2.metric("Recommended ($/h)", _fmt(best.get("cost_per_hour"), ",.2f"),
              delta=None if saving is None else f"{-saving:,.2f}", delta_color="inverse")
    m3.metric("SLO misses, recommended", _fmt(best.get("slo_miss_pct"), ".2f", "%"),
              help=f"target: at most {rec.get('slo_miss_target_pct')}% in the what-if runs")
    m4.metric("SLO misses now", _fmt(now.get("slo_miss_pct"), ".2f", "%"))
    if not rec["feasible"]:
        st.warning("No cluster within the search's bounds met the SLO target: this is the one with the fewest misses.")
    st.caption(f"For {rec.get('peak_rate_per_s')} arrivals/s of {rec.get('workload')} under {rec['policy']}, "
               f"{rec.get('what_ifs')} what-if clusters in {rec.get('search_s') or 0:.1f} s; written {rec['age_s'] / 60:.0f} min "
               f"ago by `{rec['command']}`.")
    rows = {"now": now, "recommended": best}
    if rec.get("recommended_mig_layouts_as_now"):
        rows["recommended, MIG layouts as now"] = rec["recommended_mig_layouts_as_now"]
    if rec.get("trough"):
        rows[f"at the trough ({rec.get('trough_rate_per_s')}/s)"] = rec["trough"]
    table(pd.DataFrame([_row(name, w) for name, w in rows.items()]))
    layouts = {k.removeprefix("layout_"): v for k, v in best.items() if k.startswith("layout_")}
    if layouts:
        st.markdown("**Suggested MIG layouts** (per GPU, `|` between GPUs): " +
                    "; ".join(f"`{p}`: {lay}" for p, lay in layouts.items()))
    st.code(rec["cluster_diff"] or "(no change)", language="diff")
    with st.expander("KubeRay worker-group bounds and the autoscaler request"):
        st.code(yaml.safe_dump(rec.get("worker_groups") or [], sort_keys=False), language="yaml")
        st.caption("`ray.autoscaler.sdk.request_resources(bundles=...)` ahead of the peak:")
        st.code(json.dumps({"bundles": rec.get("request_resources")}, indent=1), language="json")


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{unit}"


def _row(name: str, w: dict) -> dict:
    """A what-if as a narrow row: its node counts in one cell (MIG layouts are listed below the table)."""
    nodes = ", ".join(f"{k.removeprefix('nodes_')} {v}" for k, v in w.items() if k.startswith("nodes_"))
    return {"cluster": name, "nodes per pool": nodes, "GPUs": w.get("gpus"), "cost ($/h)": w.get("cost_per_hour"),
            "SLO misses (%)": w.get("slo_miss_pct"), "meets target": "yes" if w.get("meets") else "no"}
