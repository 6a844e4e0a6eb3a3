"""Rolling-origin backtests: every model forecasts from many past origins; errors per series and horizon.

Why rolling origins: one split says little about a model a planner will re-run every hour.
For a horizon of H intervals the origins are H apart over the last ``test_span`` of the data
(at most ``max_windows`` of them); from each, a model sees only the data up to the origin and
forecasts the next H intervals, and the errors of all H leads are scored (:mod:`capacity.metrics`).

Refits: the seasonal-naive baseline, MSTL and LightGBM are re-estimated at every origin (LightGBM's
conformal intervals need it); AutoETS, the slowest to fit, about seven times over the test span
and rolled forward (its fitted parameters applied to the new data) in between.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from capacity.metrics import score
from capacity.models import MODELS, STATS, intervals, lgbm_forecaster, long_predictions, setup_for, stats_model
from cluster.config import UsageError


@dataclass(frozen=True)
class Backtest:
    """``cv``: every forecast (``unique_id, ds, cutoff, horizon, model, y, mean, lo_L, hi_L``);
    ``table``: errors per (``unique_id, horizon, model``) with the fit-and-forecast ``seconds``."""

    cv: pd.DataFrame
    table: pd.DataFrame

    def best(self) -> pd.DataFrame:
        """Per series and horizon: the model of lowest MASE, its MASE, the baseline's, and whether it beats it."""
        t = self.table.reset_index()
        base = t[t["model"] == "snaive"].set_index(["unique_id", "horizon"])["mase"]
        top = t.dropna(subset=["mase"]).sort_values("mase").groupby(["unique_id", "horizon"], sort=False).head(1)
        out = top.set_index(["unique_id", "horizon"])[["model", "mase", "mape"]].rename(columns={"model": "best"})
        out["snaive_mase"] = base.reindex(out.index)
        out["beats_snaive"] = out["mase"] < out["snaive_mase"]
        return out.sort_index()


def horizon_label(steps: int, interval: pd.Timedelta) -> str:
    """``24`` hourly steps -> ``"1d"``; for tables and file names."""
    td = steps * interval
    for unit, size in (("d", pd.Timedelta("1D")), ("h", pd.Timedelta("1h")), ("min", pd.Timedelta("1min"))):
        if td >= size and td % size == pd.Timedelta(0):
            return f"{td // size}{unit}"
    return f"{int(td.total_seconds())}s"


def plan(n: int, h: int, test_span: int, max_windows: int) -> tuple[int, int]:
    """(windows, shortest training length) for a horizon of ``h`` steps on series of ``n`` points."""
    if test_span < h:
        raise UsageError(f"--test-span: shorter than the horizon ({test_span} < {h} intervals)")
    windows = min(max_windows, test_span // h)
    n_train = n - windows * h
    if n_train < max(8, 2 * h):
        raise UsageError(f"--test-span: leaves {n_train} intervals to train on (series of {n}); shorten it")
    return windows, n_train


def backtest(series: pd.DataFrame, interval: pd.Timedelta, horizons: Sequence[int], *, test_span: int,
             models: Sequence[str] = MODELS, levels: tuple[int, ...] = (80, 95), max_windows: int = 72,
             progress: Callable[[str], None] | None = None) -> Backtest:
    """Backtest ``models`` on ``series`` (``unique_id, ds, y``) for each horizon (in intervals).

    ``progress(step)`` is called after each model and horizon (a tqdm bar's update, say).
    """
    from statsforecast import StatsForecast

    n = int(series.groupby("unique_id").size().min())
    cvs, tables = [], []
    for h in horizons:
        windows, n_train = plan(n, h, test_span, max_windows)
        setup = setup_for(interval, n_train, h, levels)
        label = horizon_label(h, interval)
        parts, seconds = [], {}
        for name in models:
            t0 = time.perf_counter()
            if name in STATS:
                model = stats_model(name, setup)
                if model is None:
                    continue
                refit = True if name != "ets" else max(1, windows // 7)
                wide = StatsForecast(models=[model], freq=setup.freq, n_jobs=1).cross_validation(
                    df=series, h=h, n_windows=windows, step_size=h, level=list(levels),
                    refit=True if refit == 1 else refit)
            else:
                wide = lgbm_forecaster(setup).cross_validation(
                    df=series, n_windows=windows, h=h, step_size=h, refit=True,
                    prediction_intervals=intervals(setup), level=list(levels))
            parts.append(long_predictions(wide, [name], levels, keep=("unique_id", "ds", "cutoff", "y")))
            seconds[name] = time.perf_counter() - t0
            if progress:
                progress(f"{label} {name}")
        cv = pd.concat(parts, ignore_index=True)
        table = score(cv, series, setup.season, levels)
        table["seconds"] = table.index.get_level_values("model").map(seconds)
        table["windows"] = windows
        table["season"] = setup.season
        cvs.append(cv.assign(horizon=label))
        tables.append(table.assign(horizon=label).set_index("horizon", append=True))
    cv = pd.concat(cvs, ignore_index=True)
    table = pd.concat(tables).reorder_levels(["unique_id", "horizon", "model"])
    order = {lab: i for i, lab in enumerate(horizon_label(h, interval) for h in horizons)}
    table = table.loc[sorted(table.index, key=lambda k: (k[0], order[k[1]], k[2]))]  # shortest horizon first
    return Backtest(cv, table)
