"""The Compare page: policies of one or more result sets side by side."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from serve_app.charts import (cost_chart, latency_cdf_chart, placement_mix_chart, run_colours, slo_chart,
                              step_chart, utilisation_long)
from serve_app.dashboard_common import download, results_dir, table
from serve_app.dashboard_tables import packing_view, summary_view
from serve_app.results import (ResultSet, discover, latency_cdf, placement_mix, sim_vs_real,
                               slo_miss_by_priority, summary_table)


def page_compare() -> None:
    st.header("Compare policies")
    root = results_dir()
    sets = discover(root)
    if not sets:
        st.info(f"No result sets under {root}. Run `orchestrator simulate --out {root}/run1` "
                "or `make demo` first.")
        return
    online = [r for r in sets if r.kind != "packing"]
    chosen_labels = st.multiselect("Result sets", [r.label for r in online],
                                   default=[r.label for r in online[:1]])
    chosen = [r for r in online if r.label in chosen_labels]
    pairs: list[tuple[ResultSet, str]] = []
    for rs in chosen:
        pols = st.multiselect(f"Policies in {rs.path.name}", rs.policies, default=rs.policies,
                              key=f"pol-{rs.path}")
        pairs += [(rs, p) for p in pols]
    if not pairs:
        st.warning("Choose at least one result set and policy.")
    else:
        _compare_pairs(pairs, [(rs, p) for rs in chosen for p in rs.policies])
    _compare_sim_real(online)
    packing = [r for r in sets if r.kind == "packing"]
    if packing:
        st.subheader("GPU packing (FGD reproduction)")
        rs = packing[0]
        df = packing_view(rs.packing())
        st.caption(f"{rs.path}: unallocated GPU % when arrived demand reaches 100% of capacity, one column "
                   "per seed (Weng et al., ATC 2023)")
        table(df)
        download(df, "packing")


def _describe(rs: ResultSet) -> str:
    m = rs.meta
    bits = [f"cluster {m['cluster']}" if m.get("cluster") else "", f"{m['tasks']:,} tasks" if m.get("tasks") else "",
            f"seed {m['seed']}" if m.get("seed") is not None else ""]
    return f"{rs.path.name}: " + ", ".join(b for b in bits if b)


def _compare_pairs(pairs: list[tuple[ResultSet, str]], offered: list[tuple[ResultSet, str]]) -> None:
    """``offered``: every pair the user could tick, so a run keeps its colour when others are unticked."""
    multi = len({rs.path for rs, _ in offered}) > 1

    def label(rs: ResultSet, pol: str) -> str:
        return f"{rs.path.name}/{pol}" if multi else pol

    summary = summary_table(pairs)
    st.subheader("Summary")
    st.caption("; ".join(_describe(rs) for rs in {rs.path: rs for rs, _ in pairs}.values()))
    table(summary_view(summary))
    download(summary, "summary")

    runs = [label(rs, p) for rs, p in pairs]
    scale = run_colours([label(rs, p) for rs, p in offered])
    recs = {label(rs, p): rs.records(p) for rs, p in pairs}
    cdf = pd.concat([latency_cdf(r).assign(run=k) for k, r in recs.items() if not r.empty] or [pd.DataFrame()])
    st.subheader("Latency distribution (CDF)")
    if cdf.empty:
        st.info("No per-task records in these result sets.")
    else:
        st.altair_chart(latency_cdf_chart(cdf, scale), width="stretch")
        download(cdf, "latency_cdf")
    st.subheader("SLO misses by priority")
    slo = pd.concat([slo_miss_by_priority(r).assign(run=k) for k, r in recs.items() if not r.empty]
                    or [pd.DataFrame()])
    if not slo.empty:
        st.altair_chart(slo_chart(slo, scale), width="stretch")
        download(slo, "slo_by_priority")
    st.subheader("Cost per task")
    st.altair_chart(cost_chart(summary.assign(run=runs), scale), width="stretch")
    st.subheader("Placement mix by pool")
    mix = pd.concat([placement_mix(r).assign(run=k) for k, r in recs.items() if not r.empty] or [pd.DataFrame()])
    if not mix.empty:
        st.altair_chart(placement_mix_chart(mix, runs), width="stretch")
        download(mix, "placement_mix")
    tl = pd.concat([rs.timeline(p).assign(run=label(rs, p)) for rs, p in pairs] or [pd.DataFrame()])
    if tl.empty:
        return
    st.subheader("Utilisation over time, per pool")
    st.caption("Steps: each value holds until the next sample. Click a legend entry to pick out one policy.")
    st.altair_chart(step_chart(utilisation_long(tl), "utilisation", "utilisation", scale, by_pool=True),
                    width="stretch")
    st.subheader("GPU allocation over time")
    st.altair_chart(step_chart(tl, "gpu_alloc_ratio", "GPU allocated (fraction)", scale), width="stretch")
    if "fragmentation" in tl and tl["fragmentation"].notna().any():
        st.subheader("GPU fragmentation over time")
        st.altair_chart(step_chart(tl, "fragmentation", "fragmentation (milli GPU)", scale), width="stretch")
    download(tl, "timeline")


def _compare_sim_real(online: list[ResultSet]) -> None:
    sims = [r for r in online if r.kind == "simulation"]
    reals = [r for r in online if r.kind == "replay"]
    if not sims or not reals:
        return
    st.subheader("Simulated vs measured on the cluster")
    a = st.selectbox("Simulation", [r.label for r in sims])
    b = st.selectbox("Replay", [r.label for r in reals])
    diff = sim_vs_real(next(r for r in sims if r.label == a), next(r for r in reals if r.label == b))
    if diff.empty:
        st.info("These two result sets share no policy.")
    else:
        table(diff)
        download(diff, "sim_vs_real")
