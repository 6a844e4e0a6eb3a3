"""What the Streamlit view's pages share: settings from the environment, the router client,
the admin secret and where it came from, probes of the other services, downloads."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import requests
import streamlit as st

from cluster.package_data import work_path
from serve_app.client import DEFAULT_URL, RouterClient
from serve_app.dashboard_tables import styled

RAY_DASHBOARD = os.environ.get("ORCH_RAY_DASHBOARD", "http://127.0.0.1:8265")
GRAFANA = os.environ.get("ORCH_GRAFANA_URL", "http://127.0.0.1:3000")
TOKEN_ENV = "ORCH_ADMIN_TOKEN"
TOKEN_FILE_ENV = "ORCH_ADMIN_TOKEN_FILE"


def results_dir() -> Path:
    """``$ORCH_RESULTS`` (read on each run of a page), default ``results`` (in the checkout, or the
    working directory of an installed package)."""
    return Path(os.environ.get("ORCH_RESULTS") or work_path("results"))


def download(df: pd.DataFrame, name: str) -> None:
    st.download_button(f"Download {name} (CSV)", df.to_csv(index=False).encode(), f"{name}.csv",
                       "text/csv", key=f"dl-{name}")


def table(df: pd.DataFrame) -> None:
    """A table laid out in the page: every row shown, text wrapped, figures shortened."""
    st.table(styled(df), hide_index=True)


def admin_secret() -> tuple[str | None, str]:
    """(the operator's secret or None, where it was read from, or why there is none): the page
    names the source so an operator knows which secret to type; it never shows the secret."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return os.environ[TOKEN_ENV].strip(), f"the environment variable `{TOKEN_ENV}`"
    path = os.environ.get(TOKEN_FILE_ENV, "").strip()
    if not path:
        return None, (f"No admin secret is configured: the operator sets `{TOKEN_ENV}` (or `{TOKEN_FILE_ENV}`, "
                      "a file holding it) for both the router and this view; there is no default.")
    try:
        secret = Path(path).read_text().strip()
    except OSError as exc:
        return None, f"`{TOKEN_FILE_ENV}` names `{path}`, which this view cannot read ({exc.strerror})."
    if not secret:
        return None, f"`{TOKEN_FILE_ENV}` names `{path}`, which is empty."
    return secret, f"the file `{path}` (named by `{TOKEN_FILE_ENV}`)"


def client() -> RouterClient:
    """The router at the sidebar's URL, with the admin token signed in with and the sidebar's API key
    (empty: the view's own, ``$ORCH_API_KEY`` or ``$ORCH_API_KEY_FILE``). An empty URL box means the
    view's default router (``$ORCH_ROUTER_URL``): a rerun under load can send the box empty."""
    url = (st.session_state.get("router_url") or "").strip() or DEFAULT_URL
    # one retry: a page must say "router down" in a second, not after a client's full backoff
    return RouterClient(url, st.session_state.get("admin_token"),
                        api_key=(st.session_state.get("api_key") or "").strip() or None, retries=1, backoff_s=0.2)


@st.cache_data(ttl=30, show_spinner=False)
def answers(url: str, timeout: float = 0.5) -> bool:
    """True when something answers HTTP at ``url`` (any status): links are shown only to what runs."""
    try:
        requests.get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException:
        return False
    return True
