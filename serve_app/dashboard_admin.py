"""The Admin page: sign in, switch the router's policy, node health, task history and cost."""
from __future__ import annotations

import hmac

import pandas as pd
import streamlit as st

from cluster.vocabulary import STATUSES
from serve_app.client import RouterClient, RouterError
from serve_app.dashboard_common import GRAFANA, RAY_DASHBOARD, admin_secret, answers, client, download, table
from serve_app.dashboard_tables import (cost_by_pool_policy, cost_window, fetch_all, history_view, node_view,
                                        pool_health)
from serve_app.prom_queries import prometheus_url

#: nodes listed one per row in the page; a bigger cluster gets its per-pool table and a scrolling grid
NODES_IN_PAGE = 40
#: history rows listed (the cost table covers the whole history, see :func:`_history_rows`)
HISTORY_ROWS = 100
#: tasks read for the cost table at most (50 pages); past it the caption names the window covered
COST_CAP = 50_000


def page_admin() -> None:
    st.header("Admin")
    secret, source = admin_secret()
    if secret is None:
        st.warning(source)
        return
    if not st.session_state.get("admin_ok"):
        st.caption(f"Sign in with the admin secret this view read from {source}.")
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
    st.caption(f"Admin secret read from {source}.")
    _links()
    cl = client()
    try:
        pol = cl.policy()
        nodes = cl.cluster()
    except RouterError as exc:
        st.error(f"The router is not available: {exc}")
        return
    _policy(cl, pol)
    _nodes(nodes)
    _history(cl)


def _links() -> None:
    """Links to the services that answer now; the others named as not running, without a link."""
    services = [("Ray dashboard", RAY_DASHBOARD, "ORCH_RAY_DASHBOARD"), ("Grafana", GRAFANA, "ORCH_GRAFANA_URL"),
                ("Prometheus", prometheus_url(), "ORCH_PROMETHEUS_URL")]
    live = {url: answers(url) for _, url, _ in services}
    up = [f"[{name}]({url})" for name, url, _ in services if live[url]]
    down = [f"{name} (`{url}`, set `{env}`)" for name, url, env in services if not live[url]]
    if up:
        st.markdown("Running: " + " · ".join(up))
    if down:
        st.caption("Not answering: " + "; ".join(down))


def _policy(cl: RouterClient, pol: dict) -> None:
    st.subheader("Policy")
    if st.session_state.get("switched"):
        st.success(st.session_state.pop("switched"))
    active = pol.get("policy")
    st.write(f"In use: **{active}**" + (f" v{pol['version']}" if pol.get("version") else ""))
    known = list(pol.get("available") or [])
    if active not in known:
        known.insert(0, active)
    with st.form("switch"):
        # keyed by the active policy: after a switch the box starts again from the new one
        new = st.selectbox("Switch to", known, index=known.index(active), key=f"switch-{active}")
        version = st.text_input("Version (learned policies; blank = latest)")
        go = st.form_submit_button("Switch")
    if go:
        try:
            cl.set_policy(new, version or None)
        except RouterError as exc:
            st.error(f"Switch refused: {exc}")
            return
        st.session_state["switched"] = f"Now using {new}."
        st.rerun()


def _nodes(nodes: dict | list) -> None:
    st.subheader("Node health")
    items = nodes.get("nodes", []) if isinstance(nodes, dict) else nodes
    if not items:
        st.info("The router reports no nodes.")
        return
    table(pool_health(items))
    view = node_view(items)
    if len(view) <= NODES_IN_PAGE:
        table(view)
    else:
        st.caption(f"{len(view):,} nodes: scroll in the table, or download it.")
        st.dataframe(view, hide_index=True)
    download(view, "nodes")


@st.cache_data(ttl=30, show_spinner="Reading the router's history ...")
def _history_rows(url: str, status: str | None, pool: str | None, policy: str | None) -> tuple[list[dict], int]:
    """Every task the history holds for these filters (newest first, paged 1,000 at a time)."""
    cl = RouterClient(url, retries=1, backoff_s=0.2)
    return fetch_all(lambda off, lim: cl.tasks(status=status, pool=pool, policy=policy, limit=lim, offset=off),
                     cap=COST_CAP)


def _history(cl: RouterClient) -> None:
    st.subheader("Task history")
    c1, c2, c3 = st.columns(3)
    status = c1.selectbox("Status", ["", *STATUSES]) or None
    pool = c2.text_input("Pool") or None
    policy = c3.text_input("Policy") or None
    try:  # the list live; the cost table from every page of the history, read at most every 30 s
        page = cl.tasks(status=status, pool=pool, policy=policy, limit=HISTORY_ROWS)
        rows, total = _history_rows(cl.url, status, pool, policy)
    except RouterError as exc:
        st.error(str(exc))
        return
    newest = pd.DataFrame(page.get("items", []))
    filters = ", ".join(f"{k} {v}" for k, v in (("status", status), ("pool", pool), ("policy", policy)) if v)
    st.caption(f"{page.get('total', len(newest)):,} tasks{' with ' + filters if filters else ''}; the newest "
               f"{len(newest):,} below.")
    if not newest.empty:
        # a client's task id can be 130 characters: a fixed width keeps the other columns in view
        st.dataframe(history_view(newest), hide_index=True,
                     column_config={"task": st.column_config.TextColumn(width="medium")})
    st.subheader("Cost by pool and policy")
    st.caption(cost_window(rows, total) + (f" Filtered by {filters}." if filters else "")
               + " Tasks the router's retention has trimmed are not counted.")
    hist = pd.DataFrame(rows)
    cost = cost_by_pool_policy(hist)
    if not cost.empty:
        table(cost)
        download(cost, "cost_by_pool_policy")
