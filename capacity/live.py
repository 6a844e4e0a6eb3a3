"""Capacity views of a running router: its history's demand forecast beside what happened, and the
latest recommendation that ``orchestrator capacity recommend`` wrote.

Why here and pure: the router answers ``GET /v1/capacity/forecast`` and ``/v1/capacity/recommendation``
by calling these (no HTTP, no database: records come in as the history's rows), and the Streamlit
"Capacity" page draws exactly what they return, so the page, the API and a test see one answer.

Only whole intervals are actuals: the interval in progress is the forecast's first step. Beside the
forecast, one backtest from the origin ``horizon`` intervals back scores each model against what then
arrived (MAE, MAPE, MASE, interval coverage), so a reader sees how far the forecast is to be trusted.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from capacity.series import GROUPINGS, parse_interval
from cluster.config import UsageError

#: the resolutions a router forecast may ask for (bounded: each one is a fit of every series)
INTERVALS = ("15min", "1h", "1D")
MAX_HORIZON = 168
#: fewest whole intervals a forecast is made from; a backtest needs ``horizon + max(8, 2 * horizon)``
MIN_INTERVALS = 4
DEFAULT_MODELS = ("snaive", "ets")
RECOMMENDATION_FILE = "recommendation.json"


class NotEnoughHistory(ValueError):
    """The history holds too few whole intervals to forecast from (a state, not a bad request)."""


def _iso(ts: pd.Timestamp) -> str:
    t = pd.Timestamp(ts)
    return (t.tz_localize("UTC") if t.tzinfo is None else t).isoformat()


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) or pd.isna(x) else round(float(x), 6)


def _points(df: pd.DataFrame, cols: Sequence[str]) -> list[dict[str, Any]]:
    return [{"ds": _iso(r["ds"]), **{c: _num(r[c]) for c in cols}} for _, r in df.iterrows()]


def history_forecast(records: Iterable[Mapping[str, Any]], *, interval: str = "1h", horizon: int = 24,
                     models: Sequence[str] = DEFAULT_MODELS, levels: tuple[int, ...] = (80, 95),
                     groupings: Sequence[str] = ("totals", "kinds"), now: float | None = None,
                     truncated: bool = False) -> dict[str, Any]:
    """Forecast the next ``horizon`` intervals of each demand series in ``records`` (history rows).

    Returns a JSON-able document: the window read, and per series its whole-interval actuals, the
    forecast of every model with its intervals, and (when the history is long enough) the backtest
    from ``horizon`` intervals back with each model's errors. Raises :class:`NotEnoughHistory` when
    fewer than :data:`MIN_INTERVALS` whole intervals are held, ``ValueError`` for a bad argument.
    """
    from capacity.backtest import backtest
    from capacity.forecast import forecast
    from capacity.sources import from_history

    if interval not in INTERVALS:
        raise ValueError(f"interval: one of {', '.join(INTERVALS)}, got {interval!r}")
    if not 1 <= horizon <= MAX_HORIZON:
        raise ValueError(f"horizon: 1 to {MAX_HORIZON} intervals, got {horizon}")
    step = parse_interval(interval)
    now = time.time() if now is None else float(now)
    rows = list(records)
    if not rows:
        raise NotEnoughHistory("the history holds no tasks yet: nothing to forecast from")
    demand = from_history(rows, interval=step, until=now)
    current = pd.Timestamp(now, unit="s").floor(step)  # the interval in progress: the forecast's first step
    whole = demand.series([g for g in groupings if g in GROUPINGS])
    # the oldest interval may be partly covered (the router started, retention trimmed or the row cap
    # cut within it): it is left out, as is the one in progress
    whole = whole[(whole["ds"] < current) & (whole["ds"] > whole["ds"].min())]
    n = int(whole["ds"].nunique())
    if n < MIN_INTERVALS:
        raise NotEnoughHistory(f"the history holds {n} whole interval(s) of {interval} (tasks from "
                               f"{_iso(demand.frame['ds'].min())}, the first one partly covered); a forecast needs "
                               f"at least {MIN_INTERVALS}: wait, or ask for a shorter interval")
    counted = int(whole.loc[whole["unique_id"] == "arrivals", "y"].sum())
    whole = whole[whole.groupby("unique_id")["y"].transform(lambda y: bool((y != 0).any())).astype(bool)]
    if whole.empty:
        raise NotEnoughHistory(f"no task arrived in the {n} whole intervals of {interval} held: nothing to forecast")
    needs = horizon + max(8, 2 * horizon)  # capacity.backtest.plan's shortest training span, plus the window
    bands = ["mean", *(f"{s}_{lv}" for lv in levels for s in ("lo", "hi"))]
    fcs, bts, skipped = [], [], {}
    for m in models:  # one at a time: a model the history is too short for is skipped, with the reason
        try:
            fcs.append(forecast(whole, step, horizon, (m,), levels).frame)
            if n >= needs:
                bts.append(backtest(whole, step, (horizon,), test_span=horizon, models=(m,), levels=levels,
                                    max_windows=1))
        except (ValueError, UsageError) as exc:
            skipped[m] = f"{exc}".splitlines()[0][:200]
    if not fcs:
        raise NotEnoughHistory(f"no model could forecast {horizon} intervals of {interval} from {n} whole "
                               f"intervals: {skipped}")
    fc = pd.concat(fcs, ignore_index=True)
    cv = pd.concat([b.cv for b in bts], ignore_index=True) if bts else None
    table = pd.concat([b.table for b in bts]) if bts else None
    series = []
    for uid, actual in whole.groupby("unique_id", sort=False):
        f = fc[fc["unique_id"] == uid]
        entry: dict[str, Any] = {"id": uid, "metric": f["metric"].iloc[0], "by": f["by"].iloc[0],
                                 "group": f["group"].iloc[0], "actual": _points(actual, ["y"]),
                                 "forecast": {m: _points(g, bands) for m, g in f.groupby("model", sort=False)}}
        if table is not None:
            entry["backtest"] = {m: _points(g, ["y", *bands])
                                 for m, g in cv[cv["unique_id"] == uid].groupby("model", sort=False)}
            t = table.xs(uid, level="unique_id").reset_index()
            entry["errors"] = [{"model": r["model"], **{k: _num(r.get(k)) for k in
                                ("mae", "mape", "mase", *(f"cov_{lv}" for lv in levels))}} for _, r in t.iterrows()]
        series.append(entry)
    first = pd.Timestamp(min(float(r["accepted_at"]) for r in rows), unit="s")
    return {"interval": interval, "horizon": horizon, "models": list(fc["model"].unique()), "skipped": skipped,
            "levels": list(levels), "generated_at": _iso(pd.Timestamp(now, unit="s")), "forecast_from": _iso(current),
            "history": {"tasks": len(rows), "tasks_counted": counted, "first_accepted": _iso(first),
                        "whole_intervals": n, "truncated": truncated},
            "backtest": None if table is None else {"origin": _iso(current - horizon * step), "horizon": horizon},
            "backtest_needs": needs, "series": series}


def recommendation_document(high, low, peak: float, trough: float | None, *, cluster: str, workload: str,
                            policy: str, slo_miss_pct: float, seeds: Sequence[int], window_s: float,
                            diff: str, worker_groups: list[dict], bundles: list[dict], command: str) -> dict:
    """What ``capacity recommend`` found, as the JSON the router serves and the page shows."""
    from capacity.recommend import what_if_row

    def row(w) -> dict:
        return {k: (_num(v) if isinstance(v, float) else v) for k, v in what_if_row(w).items()}

    return {"created_at": _iso(pd.Timestamp.now(tz="UTC")), "command": command, "cluster": cluster,
            "workload": workload, "policy": policy, "slo_miss_target_pct": slo_miss_pct, "seeds": list(seeds),
            "window_s": window_s, "peak_rate_per_s": _num(peak), "trough_rate_per_s": _num(trough),
            "feasible": high.feasible, "now": row(high.current), "recommended": row(high.best),
            "saving_per_hour": _num(high.saving_per_hour),
            "recommended_mig_layouts_as_now": (None if high.shipped_layout_best in (None, high.best)
                                               else row(high.shipped_layout_best)),
            "trough": None if low is None else row(low.best),
            "what_ifs": len(high.tried), "search_s": _num(high.search_s),
            "cluster_diff": diff, "worker_groups": worker_groups, "request_resources": bundles}


def read_recommendation(folder: str | Path) -> dict[str, Any]:
    """The recommendation ``capacity recommend --out FOLDER`` wrote; ``FileNotFoundError`` names the command."""
    path = Path(folder) / RECOMMENDATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no recommendation at {path}: run `orchestrator capacity recommend --out {folder}` "
                                "(the router serves the latest one written there)")
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    missing = [k for k in ("created_at", "command", "policy", "feasible", "now", "recommended", "cluster_diff")
               if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not written by `capacity recommend`")
    try:
        created = pd.Timestamp(doc["created_at"]).timestamp()
    except (TypeError, ValueError):
        raise ValueError(f"{path}: created_at is not a time: {doc['created_at']!r}") from None
    doc["age_s"] = round(time.time() - created, 1)
    return doc
