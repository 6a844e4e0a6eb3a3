"""Forecasts of demand series with prediction intervals: what a recommender sizes capacity by.

Why a long table with the series' dimensions spelt out: a recommender (issue 20, item 3) asks
"the 95% upper bound of GPU-seconds on MIG 1g.10gb slices for each hour of tomorrow" and gets
it with one filter or :meth:`Forecast.upper`, whatever model made it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from capacity.models import MODELS, STATS, intervals, lgbm_forecaster, long_predictions, setup_for, stats_model
from capacity.series import parse_id
from cluster.config import UsageError


@dataclass(frozen=True)
class Forecast:
    """Forecasts of one source's series.

    ``frame``: one row per series, interval and model: ``unique_id, metric, by, group, ds, model,
    mean, lo_<L>, hi_<L>`` for each level L (``by``/``group``: the key a series is split by and its
    value, ``*`` for a total). Negative values are clipped to 0 (demand is never negative).
    """

    frame: pd.DataFrame
    interval: pd.Timedelta
    levels: tuple[int, ...]

    def upper(self, level: int = 95, model: str = "mstl") -> pd.DataFrame:
        """The ``level`` % upper bound of ``model``, one column per series, indexed by ``ds``."""
        if level not in self.levels:
            raise ValueError(f"no {level}% interval (levels: {self.levels})")
        part = self.frame[self.frame["model"] == model]
        return part.pivot(index="ds", columns="unique_id", values=f"hi_{level}")


def parse_models(text: str) -> tuple[str, ...]:
    """``"ets,lgbm"`` -> the models to run, the seasonal-naive baseline always among them."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in MODELS]
    if bad or not names:
        raise UsageError(f"--models: unknown model {bad[0] if bad else text!r} (known: {', '.join(MODELS)})")
    return tuple(m for m in MODELS if m in names or m == "snaive")


def describe(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``metric, by, group`` (from :func:`capacity.series.parse_id`) after ``unique_id``."""
    ids = {u: parse_id(u) for u in frame["unique_id"].unique()}
    out = frame.copy()
    out.insert(1, "metric", out["unique_id"].map(lambda u: ids[u][0]))
    out.insert(2, "by", out["unique_id"].map(lambda u: next(iter(ids[u][1]), "*")))
    out.insert(3, "group", out["unique_id"].map(lambda u: next(iter(ids[u][1].values()), "*")))
    return out


def forecast(series: pd.DataFrame, interval: pd.Timedelta, h: int, models: Sequence[str] = MODELS,
             levels: tuple[int, ...] = (80, 95)) -> Forecast:
    """Fit every model on all of ``series`` (``unique_id, ds, y``) and forecast ``h`` intervals ahead."""
    from statsforecast import StatsForecast

    n = int(series.groupby("unique_id").size().min())
    setup = setup_for(interval, n, h, levels)
    parts = []
    stats = [m for m in (stats_model(name, setup) for name in models if name in STATS) if m is not None]
    if stats:
        wide = StatsForecast(models=stats, freq=setup.freq, n_jobs=1).forecast(df=series, h=h, level=list(levels))
        parts.append(long_predictions(wide, [m.alias for m in stats], levels))
    if "lgbm" in models:
        fc = lgbm_forecaster(setup)
        fc.fit(series, prediction_intervals=intervals(setup))
        parts.append(long_predictions(fc.predict(h, level=list(levels)), ["lgbm"], levels))
    if not parts:
        raise ValueError(f"none of {', '.join(models)} applies: MSTL needs a day or a week of intervals that fits "
                         f"the {n} intervals held twice")
    frame = describe(pd.concat(parts, ignore_index=True).sort_values(["unique_id", "model", "ds"], ignore_index=True))
    return Forecast(frame, interval, tuple(levels))
