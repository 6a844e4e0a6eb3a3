"""Streamlit view: compare placement policies side by side, submit a task, administer the router.

Run: ``streamlit run serve_app/dashboard.py --server.port 8501``. Environment:
``ORCH_RESULTS`` (result sets folder, default ``results``), ``ORCH_ROUTER_URL``
(default ``http://127.0.0.1:8000``), ``ORCH_ADMIN_TOKEN`` or ``ORCH_ADMIN_TOKEN_FILE``
(the operator's secret; without one the Admin page stays locked), ``ORCH_RAY_DASHBOARD``
and ``ORCH_GRAFANA_URL`` (links). Every failure is shown as a sentence, never a trace.
"""
from __future__ import annotations

import hmac
import os
import sys
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts only this folder on the path
    sys.path.insert(0, str(ROOT))

from cluster.vocabulary import FINAL, STATUSES  # noqa: E402
from serve_app.client import DEFAULT_URL, RouterClient, RouterError  # noqa: E402
from serve_app.results import (ResultSet, discover, latency_cdf, placement_mix,  # noqa: E402
                               sim_vs_real, slo_miss_by_priority, summary_table)

RESULTS = Path(os.environ.get("ORCH_RESULTS", ROOT / "results"))
RAY_DASHBOARD = os.environ.get("ORCH_RAY_DASHBOARD", "http://127.0.0.1:8265")
GRAFANA = os.environ.get("ORCH_GRAFANA_URL", "http://127.0.0.1:3000")

EXAMPLES: dict[str, dict] = {
    "Real-time fraud detection": {"description": "real-time fraud detection on a card payment",
                                  "cpu_milli": 500, "mem_mib": 512, "work": 0.02},
    "IoT sensor alert": {"description": "IoT sensor alert from a pipeline pressure gauge",
                         "priority": 8, "slo_ms": 400.0, "cpu_milli": 500, "mem_mib": 256, "work": 0.05},
    "Medical image segmentation": {"description": "medical image segmentation of a CT scan",
                                   "priority": 7, "slo_ms": 3000.0, "cpu_milli": 2000, "mem_mib": 8192,
                                   "work": 0.8},
    "LLM inference": {"description": "LLM inference for a support chat", "cpu_milli": 4000,
                      "mem_mib": 16384, "gpu_milli": 500, "work": 1.0, "slo_ms": 2500.0},
    "Route optimisation": {"description": "route optimisation for tomorrow's deliveries",
                           "cpu_milli": 2000, "mem_mib": 4096, "work": 1.5},
    "Nightly ETL": {"description": "nightly batch ETL of the sales warehouse", "cpu_milli": 4000,
                    "mem_mib": 8192, "work": 20.0},
    "Model fine-tuning": {"description": "model fine-tuning of a small transformer", "cpu_milli": 8000,
                          "mem_mib": 32768, "gpu_count": 1, "work": 60.0},
}


# ------------------------------------------------------------------ helpers

def _download(df: pd.DataFrame, name: str) -> None:
    st.download_button(f"Download {name} (CSV)", df.to_csv(index=False).encode(), f"{name}.csv",
                       "text/csv", key=f"dl-{name}")


def _admin_secret() -> str | None:
    token = os.environ.get("ORCH_ADMIN_TOKEN")
    path = os.environ.get("ORCH_ADMIN_TOKEN_FILE")
    if not token and path and Path(path).is_file():
        token = Path(path).read_text().strip()
    return token or None


def _client() -> RouterClient:
    # one retry: a page must say "router down" in a second, not after a client's full backoff
    return RouterClient(st.session_state.get("router_url", DEFAULT_URL), st.session_state.get("admin_token"),
                        retries=1, backoff_s=0.2)


# ------------------------------------------------------------------ Compare

def page_compare() -> None:
    st.header("Compare policies")
    sets = discover(RESULTS)
    if not sets:
        st.info(f"No result sets under {RESULTS}. Run `orchestrator simulate --out {RESULTS}/run1` "
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
        _compare_pairs(pairs)
    _compare_sim_real(online)
    packing = [r for r in sets if r.kind == "packing"]
    if packing:
        st.subheader("GPU packing (FGD reproduction)")
        rs = packing[0]
        df = rs.packing()
        st.caption(f"{rs.path}: unallocated GPU % when arrived demand reaches 100% of capacity "
                   "(Weng et al., ATC 2023)")
        st.dataframe(df)
        _download(df.reset_index(), "packing")


def _compare_pairs(pairs: list[tuple[ResultSet, str]]) -> None:
    table = summary_table(pairs)
    st.subheader("Summary")
    st.dataframe(table, hide_index=True)
    _download(table, "summary")

    def label(rs: ResultSet, pol: str) -> str:
        return pol if len({r.path for r, _ in pairs}) == 1 else f"{rs.path.name}/{pol}"

    recs = {label(rs, p): rs.records(p) for rs, p in pairs}
    cdf = pd.concat([latency_cdf(r).assign(run=k) for k, r in recs.items() if not r.empty] or [pd.DataFrame()])
    st.subheader("Latency distribution (CDF)")
    if cdf.empty:
        st.info("No per-task records in these result sets.")
    else:
        st.altair_chart(alt.Chart(cdf).mark_line().encode(
            x=alt.X("latency_ms:Q", scale=alt.Scale(type="log"), title="end-to-end latency (ms, log)"),
            y=alt.Y("fraction:Q", title="fraction of tasks"), color="run:N"), use_container_width=True)
        _download(cdf, "latency_cdf")
    c1, c2 = st.columns(2)
    with c1:
        st.subheader("SLO misses by priority")
        slo = pd.concat([slo_miss_by_priority(r).assign(run=k) for k, r in recs.items() if not r.empty]
                        or [pd.DataFrame()])
        if not slo.empty:
            st.altair_chart(alt.Chart(slo).mark_bar().encode(
                x=alt.X("priority:O"), xOffset="run:N", y=alt.Y("miss_rate:Q", title="miss rate"),
                color="run:N"), use_container_width=True)
            _download(slo, "slo_by_priority")
    with c2:
        st.subheader("Cost per task")
        cost = table[["result set", "policy", "cost per task $", "cost total $"]]
        st.altair_chart(alt.Chart(cost).mark_bar().encode(
            x=alt.X("policy:N"), y=alt.Y("cost per task $:Q"), color="result set:N"), use_container_width=True)
    st.subheader("Placement mix by pool and share")
    mix = pd.concat([placement_mix(r).assign(run=k) for k, r in recs.items() if not r.empty] or [pd.DataFrame()])
    if not mix.empty:
        st.altair_chart(alt.Chart(mix).mark_bar().encode(
            x=alt.X("run:N"), y=alt.Y("fraction:Q", stack="zero"), color="pool:N",
            tooltip=["pool", "share", "fraction"]), use_container_width=True)
        _download(mix, "placement_mix")
    tl = pd.concat([rs.timeline(p).assign(run=label(rs, p)) for rs, p in pairs] or [pd.DataFrame()])
    if not tl.empty:
        st.subheader("Utilisation over time")
        util_cols = [c for c in tl.columns if c.startswith("util_")]
        long = tl.melt(id_vars=["time", "run"], value_vars=util_cols, var_name="pool", value_name="utilisation")
        long["pool"] = long["pool"].str.removeprefix("util_")
        st.altair_chart(alt.Chart(long).mark_line().encode(
            x="time:Q", y="utilisation:Q", color="run:N", strokeDash="pool:N"), use_container_width=True)
        st.subheader("GPU allocation and fragmentation")
        g1, g2 = st.columns(2)
        with g1:
            st.altair_chart(alt.Chart(tl).mark_line().encode(x="time:Q", y=alt.Y("gpu_alloc_ratio:Q"),
                                                              color="run:N"), use_container_width=True)
        with g2:
            if tl["fragmentation"].notna().any():
                st.altair_chart(alt.Chart(tl).mark_line().encode(
                    x="time:Q", y=alt.Y("fragmentation:Q", title="fragmentation (milli GPU)"),
                    color="run:N"), use_container_width=True)
        _download(tl, "timeline")


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
        st.dataframe(diff, hide_index=True)
        _download(diff, "sim_vs_real")


# ------------------------------------------------------------------ Submit

def page_submit() -> None:
    st.header("Submit a task")
    example = st.selectbox("Example", ["(free text)", *EXAMPLES])
    base = EXAMPLES.get(example, {})
    with st.form("submit"):
        desc = st.text_area("Description", base.get("description", ""), max_chars=2000)
        explicit = st.checkbox("Set fields explicitly (otherwise they are inferred from the description)",
                               value=bool(base))
        c1, c2, c3 = st.columns(3)
        prio = c1.number_input("Priority (1-10)", 1, 10, int(base.get("priority", 5)))
        slo = c2.number_input("Latency SLO (ms)", 1.0, 3.6e6, float(base.get("slo_ms", 1000.0)))
        cost_s = c3.number_input("Cost sensitivity (1-10)", 1, 10, int(base.get("cost_sensitivity", 5)))
        cpu = c1.number_input("CPU (millicores)", 0, 128000, int(base.get("cpu_milli", 1000)))
        mem = c2.number_input("Memory (MiB)", 0, 1048576, int(base.get("mem_mib", 1024)))
        work = c3.number_input("Work (s on the reference device)", 0.0, 3600.0, float(base.get("work", 0.1)))
        gpu_kind = c1.selectbox("GPU", ["none", "fraction", "whole", "MIG profile"],
                                index=1 if "gpu_milli" in base else 2 if "gpu_count" in base else 0)
        gpu_frac = c2.number_input("GPU fraction", 0.001, 0.999, base.get("gpu_milli", 250) / 1000)
        gpu_count = c3.number_input("Whole GPUs", 1, 8, int(base.get("gpu_count", 1)))
        mig = c1.selectbox("MIG profile", ["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"])
        run = st.checkbox("Run it on the cluster (otherwise only decide where)", value=True)
        sent = st.form_submit_button("Submit")
    if not sent:
        return
    task: dict = {"description": desc} if desc else {}
    if explicit or not desc:
        task.update(priority=int(prio), slo_ms=float(slo), cost_sensitivity=int(cost_s),
                    cpu_milli=int(cpu), mem_mib=int(mem), work=float(work))
        if gpu_kind == "fraction":
            task["gpu_milli"] = int(round(gpu_frac * 1000))
        elif gpu_kind == "whole":
            task["gpu_count"] = int(gpu_count)
        elif gpu_kind == "MIG profile":
            task["mig_profile"] = mig
    client = _client()
    try:
        with st.spinner("Placing ..."):
            out = client.run(task, wait=True, timeout_s=20) if run else client.route(task)
    except RouterError as exc:
        st.error(f"Could not place the task: {exc}")
        return
    _show_outcome(out)
    if run and out.get("status") not in FINAL and out.get("task_id"):
        try:  # still placed or running after the router's wait: follow it to its end
            with st.spinner(f"Task {out['task_id']} is {out.get('status')}; waiting for its result ..."):
                rec = client.wait_final(out["task_id"], timeout_s=300)
        except RouterError as exc:
            st.error(f"Could not read the task's result: {exc}")
            return
        _show_result(rec)
    elif run:
        _show_result(out)


def _show_outcome(out: dict) -> None:
    decision = out.get("decision", out)
    placed = decision.get("placed", out.get("status") not in ("rejected", "failed"))
    if placed:
        share = decision.get("share") or {}
        st.success(f"Placed on **{decision.get('node')}** ({decision.get('pool')}, "
                   f"{share.get('text', 'cpu')}) by {decision.get('policy')}")
    else:
        st.warning(f"Not placed: {decision.get('explanation') or out.get('reason')}")
    c1, c2 = st.columns(2)
    with c1:
        conf = decision.get("confidence")
        st.metric("Confidence", f"{conf:.0%}" if isinstance(conf, (int, float)) else "n/a",
                  help=None if isinstance(conf, (int, float)) else "this policy gives no confidence for this "
                                                                    "decision; see the scores")
        st.write("**Why:**", decision.get("explanation", ""))
        if decision.get("inferred"):
            st.caption(f"Inferred from the description: {', '.join(decision['inferred'])}")
    with c2:
        probs = decision.get("probabilities") or decision.get("scores")
        if probs:
            st.altair_chart(alt.Chart(pd.DataFrame({"option": list(probs), "value": list(probs.values())}))
                            .mark_bar().encode(x="value:Q", y=alt.Y("option:N", sort="-x")),
                            use_container_width=True)


def _show_result(out: dict) -> None:
    """The measured outcome of a task that ran: status, end-to-end latency, cost."""
    st.subheader("Measured result")
    if out.get("status") not in FINAL:
        st.info(f"The task is still {out.get('status')}; its record is at GET /v1/tasks/{out.get('task_id')}.")
        return
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Status", out["status"])
    m2.metric("Latency (ms)", f"{out['latency_ms']:.0f}" if out.get("latency_ms") is not None else "-")
    m3.metric("Cost ($)", f"{out['cost']:.4f}" if out.get("cost") is not None else "-")
    slo = out.get("slo_met")
    m4.metric("SLO met", "-" if slo is None else ("yes" if slo else "no"))
    parts = [f"{k.removesuffix('_ms')} {out[k]:.0f} ms" for k in ("queue_ms", "network_ms", "exec_ms")
             if isinstance(out.get(k), (int, float))]
    if parts:
        st.caption("Measured on the cluster: " + ", ".join(parts) + f"; on {out.get('node')} ({out.get('share')})")
    if out.get("reason"):
        st.caption(out["reason"])


# ------------------------------------------------------------------ Admin

def page_admin() -> None:
    st.header("Admin")
    secret = _admin_secret()
    if secret is None:
        st.warning("No admin secret is configured. The operator sets ORCH_ADMIN_TOKEN (or "
                   "ORCH_ADMIN_TOKEN_FILE) for both the router and this view; there is no default.")
        return
    if not st.session_state.get("admin_ok"):
        with st.form("signin"):
            given = st.text_input("Admin secret", type="password")
            ok = st.form_submit_button("Sign in")
        if ok:
            if hmac.compare_digest(given.encode(), secret.encode()):
                st.session_state["admin_ok"] = True
                st.session_state["admin_token"] = given
                st.rerun()
            else:
                st.error("Wrong secret.")
        return
    st.success("Signed in.")
    st.markdown(f"[Ray dashboard]({RAY_DASHBOARD}) · [Grafana dashboard]({GRAFANA})")
    client = _client()
    try:
        pol = client.policy()
        nodes = client.cluster()
    except RouterError as exc:
        st.error(f"The router is not available: {exc}")
        return
    st.subheader("Policy")
    st.write(f"In use: **{pol.get('policy')}**" + (f" v{pol['version']}" if pol.get("version") else ""))
    known = pol.get("available") or []
    with st.form("switch"):
        new = st.selectbox("Switch to", known or [pol.get("policy")])
        version = st.text_input("Version (learned policies; blank = latest)")
        go = st.form_submit_button("Switch")
    if go:
        try:
            client.set_policy(new, version or None)
            st.success(f"Now using {new}.")
        except RouterError as exc:
            st.error(f"Switch refused: {exc}")
    st.subheader("Node health")
    items = nodes.get("nodes", nodes) if isinstance(nodes, dict) else nodes
    st.dataframe(pd.DataFrame(items), hide_index=True)
    st.subheader("Task history")
    c1, c2, c3 = st.columns(3)
    status = c1.selectbox("Status", ["", *STATUSES])
    pool = c2.text_input("Pool")
    policy = c3.text_input("Policy")
    try:
        page = client.tasks(status=status or None, pool=pool or None, policy=policy or None, limit=200)
    except RouterError as exc:
        st.error(str(exc))
        return
    hist = pd.DataFrame(page.get("items", []))
    st.caption(f"{page.get('total', len(hist))} tasks match; showing the newest {len(hist)}")
    st.dataframe(hist, hide_index=True)
    if not hist.empty and "cost" in hist:
        st.subheader("Cost by pool and policy")
        cost = hist.groupby(["pool", "policy"], dropna=False)["cost"].agg(["sum", "mean", "count"]).reset_index()
        st.dataframe(cost, hide_index=True)
        _download(cost, "cost_by_pool_policy")


# ------------------------------------------------------------------ main

PAGES = {"Compare": page_compare, "Submit": page_submit, "Admin": page_admin}


def main() -> None:
    st.set_page_config(page_title="AI Workload Orchestrator", layout="wide")
    st.sidebar.title("AI Workload Orchestrator")
    page = st.sidebar.radio("Page", list(PAGES))
    st.session_state.setdefault("router_url", DEFAULT_URL)
    st.sidebar.text_input("Router URL", key="router_url")
    try:
        PAGES[page]()
    except Exception as exc:  # the last line of defence: a sentence, not a traceback
        st.error(f"Something went wrong on this page: {type(exc).__name__}: {exc}")


main()
