"""The router's key series, read from a Prometheus server through its HTTP API.

Kept apart from the Streamlit view so that the PromQL and the HTTP handling can be
tested against a plain HTTP server (or a real Prometheus) without a browser. Series
names are those :mod:`serve_app.metrics` exports (Ray adds the ``ray_`` prefix; counters
end in ``_total``, histograms in seconds with ``_bucket``). Every failure becomes a
:class:`PromError` whose text is a sentence, never a stack trace.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import requests

from cluster.monitoring import prometheus_ready

URL_ENV = "ORCH_PROMETHEUS_URL"
DEFAULT_URL = "http://127.0.0.1:9090"
#: points per chart: enough for a smooth line, few enough for one small JSON answer
POINTS = 120


def prometheus_url() -> str:
    """``$ORCH_PROMETHEUS_URL`` or the local default."""
    return (os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


class PromError(RuntimeError):
    """Prometheus is not answering, or refused a query; ``str()`` is for people."""


@dataclass(frozen=True)
class Panel:
    """One chart: its title, its queries as (name, PromQL with ``{w}`` for the rate window), the
    label naming a series (None: the query's name does), the unit on the axis and the factor from
    Prometheus's unit to it."""

    title: str
    queries: tuple[tuple[str, str], ...]
    legend: str | None
    unit: str
    scale: float = 1.0


def router_panels() -> list[Panel]:
    """Decisions per second, decision latency p50/p99, placements per pool, SLO misses."""
    q = "histogram_quantile({p}, sum by (le) (rate(ray_orch_decision_latency_seconds_bucket[{{w}}])))"
    return [
        Panel("Decisions per second", (("decisions", "sum by (policy) (rate(ray_orch_decisions_total[{w}]))"),),
              "policy", "decisions/s"),
        Panel("Decision latency", (("p50", q.format(p=0.5)), ("p99", q.format(p=0.99))), None, "ms", 1000.0),
        Panel("Placements per pool",
              (("placements", 'sum by (pool) (rate(ray_orch_decisions_total{{pool!="none"}}[{w}]))'),),
              "pool", "placements/s"),
        Panel("SLO misses", (("misses", "sum by (priority) (rate(ray_orch_slo_misses_total[{w}]))"),),
              "priority", "misses/min", 60.0),
    ]


def step_and_window(span_s: float, points: int = POINTS, scrape_s: float = 5.0) -> tuple[int, int]:
    """(query step, rate window) in whole seconds: the window covers at least four scrapes
    (the router's config scrapes every 5 s) and two steps, so no point falls between samples."""
    step = max(1, int(round(span_s / points)))
    return step, max(int(4 * scrape_s), 2 * step)


class PromClient:
    """``url``: the server; ``timeout``: seconds per call (short: a page must not hang on it)."""

    def __init__(self, url: str | None = None, timeout: float = 2.0) -> None:
        self.url = (url or prometheus_url()).rstrip("/")
        self.timeout = timeout

    def probe(self, timeout: float = 0.5) -> bool:
        """True when a Prometheus answers at :attr:`url` (its readiness endpoint)."""
        return prometheus_ready(self.url, timeout)

    def query_range(self, expr: str, start: float, end: float, step: float) -> pd.DataFrame:
        """``/api/v1/query_range`` as a long table: ``time`` (datetime, UTC), ``labels`` (dict), ``value``."""
        try:
            r = requests.get(self.url + "/api/v1/query_range", timeout=self.timeout,
                             params={"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
        except requests.RequestException:
            raise PromError(f"Prometheus at {self.url} is not answering") from None
        try:
            body = r.json()
        except ValueError:
            raise PromError(f"Prometheus at {self.url} answered {r.status_code} without JSON") from None
        if r.status_code != 200 or body.get("status") != "success":
            raise PromError(f"Prometheus refused the query ({r.status_code}): {body.get('error', body)}")
        rows = [(float(t), s.get("metric", {}), float(v))
                for s in body.get("data", {}).get("result", []) for t, v in s.get("values", [])]
        df = pd.DataFrame(rows, columns=["time", "labels", "value"])
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
        df["value"] = df["value"].astype(float)  # no samples (a counter never incremented) would be object
        return df

    def panel(self, panel: Panel, span_s: float, now: float | None = None) -> pd.DataFrame:
        """One panel's series over the last ``span_s`` seconds: ``time``, ``series``, ``value`` (in
        the panel's unit; NaN and infinite points dropped: a quantile over no observations is NaN,
        one past the last bucket +Inf)."""
        end = time.time() if now is None else now
        step, window = step_and_window(span_s)
        parts = []
        for name, expr in panel.queries:
            df = self.query_range(expr.format(w=f"{window}s"), end - span_s, end, step)
            df["series"] = [name if panel.legend is None else lab.get(panel.legend, "all") for lab in df["labels"]]
            parts.append(df)
        out = pd.concat(parts, ignore_index=True).drop(columns="labels")
        out["value"] = out["value"] * panel.scale
        return out[np.isfinite(out["value"])].reset_index(drop=True)
