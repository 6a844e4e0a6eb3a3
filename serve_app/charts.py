"""Altair charts for the Compare, Metrics, Capacity and Loop pages, readable with a dozen policies at once.

One colour per run, the same in every chart (:func:`run_colours`, assigned in the order
the runs are offered, so unticking a policy does not recolour the others); time series
drawn as steps (the simulator samples state at events, and a straight line between two
samples invents states that never were) with one panel per pool instead of every pool
overlaid; a click on a legend entry fades the other runs. No Streamlit here, so the specs
are checked without a browser.
"""
from __future__ import annotations

from typing import Sequence

import altair as alt
import pandas as pd

#: Vega's tableau20, its ten dark tones first and then its ten light ones, then ten of category20b's
#: dark tones: neighbours in a legend differ in hue, and thirty runs get thirty distinct colours
PALETTE = [
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#b279a2", "#439894", "#d67195", "#9e765f", "#79706e", "#b79a20",
    "#9ecae9", "#ffbf79", "#88d27a", "#ff9d98", "#d6a5c9", "#83bcb6", "#fcbfd2", "#d8b5a5", "#bab0ac", "#f2cf5b",
    "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#a55194",
]
#: SVG, not canvas: a legend's colours are then in the page, for people's tools and the browser tests
SVG = {"embedOptions": {"renderer": "svg"}}


def run_colours(runs: Sequence[str]) -> alt.Scale:
    """A colour per run, by its position in ``runs`` (cycling past :data:`PALETTE`'s thirty)."""
    runs = list(dict.fromkeys(runs))
    return alt.Scale(domain=runs, range=[PALETTE[i % len(PALETTE)] for i in range(len(runs))])


def legend_height(scale: alt.Scale, floor: int = 220) -> int:
    """A chart tall enough for its legend: Vega cuts a legend that outgrows its chart."""
    return max(floor, 19 * len(scale.domain) + 40)


def _legend_pick(field: str = "run") -> alt.SelectionParameter:
    return alt.selection_point(fields=[field], bind="legend")


def _run_colour(scale: alt.Scale, title: str = "policy") -> alt.Color:
    return alt.Color("run:N", scale=scale, title=title, legend=alt.Legend(symbolLimit=0, labelLimit=260))


def latency_cdf_chart(cdf: pd.DataFrame, scale: alt.Scale) -> alt.Chart:
    pick = _legend_pick()
    return alt.Chart(cdf).mark_line(interpolate="step-after").encode(
        x=alt.X("latency_ms:Q", scale=alt.Scale(type="log"), title="end-to-end latency (ms, log)"),
        y=alt.Y("fraction:Q", title="fraction of tasks"), color=_run_colour(scale),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.12)),
        tooltip=["run", "latency_ms", "fraction"],
    ).add_params(pick).properties(height=legend_height(scale, 320), usermeta=SVG)


def slo_chart(slo: pd.DataFrame, scale: alt.Scale) -> alt.Chart:
    """Miss rate per priority, a bar per run inside each priority."""
    return alt.Chart(slo).mark_bar().encode(
        x=alt.X("priority:O", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("run:N", scale=alt.Scale(domain=scale.domain)),
        y=alt.Y("miss_rate:Q", title="miss rate", axis=alt.Axis(format="%")), color=_run_colour(scale),
        tooltip=["run", "priority", alt.Tooltip("miss_rate:Q", format=".1%"), "tasks"],
    ).properties(height=legend_height(scale), usermeta=SVG)


def cost_chart(cost: pd.DataFrame, scale: alt.Scale) -> alt.Chart:
    """Cost per task, a bar per run (``cost``: ``run`` and ``cost per task $``), names on the axis."""
    return alt.Chart(cost).mark_bar().encode(
        y=alt.Y("run:N", sort=scale.domain, title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)),
        x=alt.X("cost per task $:Q", title="cost per task ($)"), color=_run_colour(scale).legend(None),
        tooltip=["run", alt.Tooltip("cost per task $:Q", format=".4g")],
    ).properties(height=alt.Step(22), usermeta=SVG)


def placement_mix_chart(mix: pd.DataFrame, runs: Sequence[str]) -> alt.Chart:
    """Share of succeeded tasks per pool, a stacked bar per run (colour is the pool here)."""
    return alt.Chart(mix).mark_bar().encode(
        y=alt.Y("run:N", sort=list(runs), title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)),
        x=alt.X("fraction:Q", stack="zero", title="share of succeeded tasks", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1], clamp=True)),
        color=alt.Color("pool:N", scale=alt.Scale(scheme="tableau10")),
        tooltip=["run", "pool", "share", alt.Tooltip("fraction:Q", format=".1%")],
    ).properties(height=alt.Step(22), usermeta=SVG)


def step_chart(df: pd.DataFrame, y: str, title: str, scale: alt.Scale, *, by_pool: bool = False,
               height: int = 110) -> alt.Chart | alt.VConcatChart:
    """A time series per run drawn as steps; with ``by_pool`` one panel per pool, stacked (a
    vertical concat, not a facet: a facet cannot take the page's width, a concat's panels can)."""
    pick = _legend_pick()

    def panel(data: pd.DataFrame, h: int, x_title: str | None, first: bool = True) -> alt.Chart:
        chart = alt.Chart(data).mark_line(interpolate="step-after", strokeWidth=1.6).encode(
            x=alt.X("time:Q", title=x_title), y=alt.Y(f"{y}:Q", title=title),
            color=_run_colour(scale), opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)),
            tooltip=["run", "time", alt.Tooltip(f"{y}:Q", format=".3g")],
        ).properties(width="container", height=h)
        return chart.add_params(pick) if first else chart  # one definition; the other panels refer to it

    if not by_pool:
        return panel(df, legend_height(scale), "simulated time (s)").properties(usermeta=SVG)
    pools = list(dict.fromkeys(df["pool"]))
    panels = [panel(df[df["pool"] == p], height, "simulated time (s)" if i == len(pools) - 1 else None, i == 0)
              .properties(title=alt.Title(p, anchor="start", fontSize=13)) for i, p in enumerate(pools)]
    return alt.vconcat(*panels, spacing=12).resolve_scale(x="shared", y="shared").properties(usermeta=SVG)


def utilisation_long(tl: pd.DataFrame) -> pd.DataFrame:
    """A timeline's ``util_<pool>`` columns as rows: ``time``, ``run``, ``pool``, ``utilisation``."""
    cols = [c for c in tl.columns if c.startswith("util_")]
    long = tl.melt(id_vars=["time", "run"], value_vars=cols, var_name="pool", value_name="utilisation")
    long["pool"] = long["pool"].str.removeprefix("util_")
    return long


def prom_chart(df: pd.DataFrame, unit: str, legend: str) -> alt.Chart:
    """One Prometheus panel: a line per series over wall-clock time."""
    return alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=12)).encode(
        x=alt.X("time:T", title=None, axis=alt.Axis(format="%H:%M")), y=alt.Y("value:Q", title=unit),
        color=alt.Color("series:N", title=legend, scale=alt.Scale(range=PALETTE)),
        tooltip=[alt.Tooltip("time:T", format="%H:%M:%S"), "series", alt.Tooltip("value:Q", format=".4g")],
    ).properties(height=220, usermeta=SVG)


def forecast_frame(series: dict, model: str, level: int) -> pd.DataFrame:
    """One series of ``GET /v1/capacity/forecast`` as long rows: ``ds, part, value, lo, hi`` where
    ``part`` is ``actual``, ``forecast`` (``model``'s, with its ``level`` % band) or ``backtest``
    (``model``'s forecast from ``horizon`` intervals back, beside the actuals it is scored on)."""
    rows = [{"ds": p["ds"], "part": "actual", "value": p["y"], "lo": None, "hi": None} for p in series["actual"]]
    for part in ("backtest", "forecast"):
        for p in (series.get(part) or {}).get(model, []):
            rows.append({"ds": p["ds"], "part": part, "value": p["mean"], "lo": p.get(f"lo_{level}"),
                         "hi": p.get(f"hi_{level}")})
    df = pd.DataFrame(rows, columns=["ds", "part", "value", "lo", "hi"])
    df["ds"] = pd.to_datetime(df["ds"], utc=True)
    return df


def forecast_chart(df: pd.DataFrame, unit: str, level: int) -> alt.LayerChart:
    """Actuals, the forecast and the backtest as lines, each forecast in its ``level`` % band."""
    parts = alt.Scale(domain=["actual", "backtest", "forecast"], range=["#333333", "#f58518", "#4c78a8"])
    base = alt.Chart(df).encode(x=alt.X("ds:T", title="interval start (UTC)"))
    band = base.transform_filter("datum.part != 'actual'").mark_area(opacity=0.2, interpolate="step-after").encode(
        y=alt.Y("lo:Q", title=unit), y2="hi:Q", color=alt.Color("part:N", scale=parts, title=None))
    line = base.mark_line(interpolate="step-after").encode(
        y=alt.Y("value:Q", title=unit), color=alt.Color("part:N", scale=parts, title=None),
        strokeDash=alt.condition("datum.part == 'backtest'", alt.value([5, 3]), alt.value([1, 0])),
        tooltip=["ds:T", "part:N", alt.Tooltip("value:Q", format=",.2f"), alt.Tooltip("lo:Q", format=",.2f"),
                 alt.Tooltip("hi:Q", format=",.2f")])
    return alt.layer(band, line).properties(height=320, usermeta=SVG,
                                            title=f"shaded: the {level}% prediction interval")


def calibration_chart(long: pd.DataFrame) -> alt.Chart:
    """Per node class, the measured mean latency beside the model's before and after calibration (bars)."""
    order = ["measured", "model before", "model after"]
    return alt.Chart(long).mark_bar().encode(
        x=alt.X("node class:N", title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("latency:N", sort=order),
        y=alt.Y("ms:Q", title="mean latency of held-out tasks (ms)"),
        color=alt.Color("latency:N", title=None, scale=alt.Scale(domain=order, range=["#333333", "#e45756",
                                                                                     "#54a24b"])),
        tooltip=["node class", "latency", alt.Tooltip("ms:Q", format=",.1f")],
    ).properties(height=260, usermeta=SVG)


def objective_chart(df: pd.DataFrame) -> alt.LayerChart:
    """Each policy's mean objective (lower is better) with its 95% interval over tasks, the champion first."""
    order = list(df["policy"])
    base = alt.Chart(df).encode(y=alt.Y("policy:N", sort=order, title=None,
                                        axis=alt.Axis(labelLimit=260, labelOverlap=False)))
    rule = base.mark_rule(strokeWidth=2).encode(x=alt.X("CI low:Q", title="mean objective per task (lower is better)",
                                                        scale=alt.Scale(zero=False)), x2="CI high:Q",
                                                color=alt.Color("policy:N", scale=run_colours(order), legend=None))
    point = base.mark_point(filled=True, size=70).encode(
        x="mean objective:Q", color=alt.Color("policy:N", scale=run_colours(order), legend=None),
        tooltip=["policy", alt.Tooltip("mean objective:Q", format=".3f"), alt.Tooltip("CI low:Q", format=".3f"),
                 alt.Tooltip("CI high:Q", format=".3f"), alt.Tooltip("SLO miss %:Q", format=".1f")])
    return alt.layer(rule, point).properties(height=alt.Step(28), usermeta=SVG)
