"""The Metrics page: the live router's key series, from Prometheus when one runs."""
from __future__ import annotations

import streamlit as st

from serve_app.charts import prom_chart
from serve_app.prom_queries import URL_ENV, PromClient, PromError, router_panels

SPANS = {"15 minutes": 900, "5 minutes": 300, "1 hour": 3600, "6 hours": 21_600, "24 hours": 86_400}


@st.cache_data(ttl=15, show_spinner=False)
def _ready(url: str) -> bool:
    return PromClient(url).probe()


def page_metrics() -> None:
    st.header("Router metrics")
    prom = PromClient()
    if not _ready(prom.url):
        st.info(f"No Prometheus answers at {prom.url} (set `{URL_ENV}`), so there are no router series to show.")
        return
    span = SPANS[st.selectbox("Window", list(SPANS))]
    st.caption(f"From [Prometheus]({prom.url}), summed over every router replica and Ray session.")
    panels = router_panels()
    for row in range(0, len(panels), 2):
        for col, panel in zip(st.columns(2), panels[row:row + 2]):
            with col:
                st.subheader(panel.title)
                try:
                    df = prom.panel(panel, span)
                except PromError as exc:
                    st.error(str(exc))
                    continue
                if df.empty:
                    st.caption("No samples in this window: the router has not recorded this series yet.")
                else:
                    st.altair_chart(prom_chart(df, panel.unit, panel.legend or "quantile"), width="stretch")
