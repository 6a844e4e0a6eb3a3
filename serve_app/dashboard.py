"""Streamlit view: compare placement policies side by side, submit a task, administer the router,
watch its metrics, see its demand forecast and the recommended cluster, and follow its learning loop.

Run: ``streamlit run serve_app/dashboard.py --server.port 8501``. Environment:
``ORCH_RESULTS`` (result sets folder, default ``results``), ``ORCH_ROUTER_URL``
(default ``http://127.0.0.1:8000``), ``ORCH_ADMIN_TOKEN`` or ``ORCH_ADMIN_TOKEN_FILE``
(the operator's secret; without one the Admin page stays locked), ``ORCH_RAY_DASHBOARD``
and ``ORCH_GRAFANA_URL`` (linked when they answer), ``ORCH_PROMETHEUS_URL`` (the Metrics
page, default ``http://127.0.0.1:9090``). Every failure is shown as a sentence, never a trace.
The pages live in ``dashboard_compare``, ``dashboard_admin``, ``dashboard_metrics``,
``dashboard_capacity`` and ``dashboard_loop``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts only this folder on the path
    sys.path.insert(0, str(ROOT))

from cluster.vocabulary import FINAL  # noqa: E402
from serve_app.client import DEFAULT_URL, RouterError  # noqa: E402
from serve_app.dashboard_admin import page_admin  # noqa: E402
from serve_app.dashboard_capacity import page_capacity  # noqa: E402
from serve_app.dashboard_common import client  # noqa: E402
from serve_app.dashboard_compare import page_compare  # noqa: E402
from serve_app.dashboard_loop import page_loop  # noqa: E402
from serve_app.dashboard_metrics import page_metrics  # noqa: E402

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
    cl = client()
    try:
        with st.spinner("Placing ..."):
            out = cl.run(task, wait=True, timeout_s=20) if run else cl.route(task)
    except RouterError as exc:
        hint = (" Type your API key in the sidebar (an admin makes one with `orchestrator keys create NAME`)."
                if exc.status == 401 else "")
        st.error(f"Could not place the task: {exc}{hint}")
        return
    _show_outcome(out)
    if run and out.get("status") not in FINAL and out.get("task_id"):
        try:  # still placed or running after the router's wait: follow it to its end
            with st.spinner(f"Task {out['task_id']} is {out.get('status')}; waiting for its result ..."):
                rec = cl.wait_final(out["task_id"], timeout_s=300)
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
                            width="stretch")


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


# ------------------------------------------------------------------ main

PAGES = {"Compare": page_compare, "Submit": page_submit, "Admin": page_admin, "Metrics": page_metrics,
         "Capacity": page_capacity, "Loop": page_loop}


def main() -> None:
    st.set_page_config(page_title="AI Workload Orchestrator", layout="wide")
    st.sidebar.title("AI Workload Orchestrator")
    page = st.sidebar.radio("Page", list(PAGES))
    st.session_state.setdefault("router_url", DEFAULT_URL)
    st.sidebar.text_input("Router URL", key="router_url")
    st.sidebar.text_input("API key", key="api_key", type="password",
                          help="The key work is sent with (orchestrator keys create NAME). Empty: the key this "
                               "view was started with ($ORCH_API_KEY or $ORCH_API_KEY_FILE), if any.")
    try:
        PAGES[page]()
    except Exception as exc:  # the last line of defence: a sentence, not a traceback
        st.error(f"Something went wrong on this page: {type(exc).__name__}: {exc}")


main()
