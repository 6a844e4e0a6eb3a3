"""The forecasting models, all from maintained libraries, and how each is set up for a series.

Why these: the seasonal-naive forecast is the baseline every other model must beat;
``AutoETS`` (statsforecast) picks an exponential-smoothing model by AICc per series; ``MSTL``
(statsforecast) takes several seasonalities at once (the day and the week of an hourly series)
with an AutoETS trend; ``lgbm`` is one LightGBM model for all series of a source (a global
model, as the seed used), on lags, a rolling mean and calendar features, through mlforecast,
with conformal prediction intervals (mlforecast's ``PredictionIntervals``: quantiles of the
errors of earlier windows, per lead).

Model-based intervals (snaive, ets, mstl) assume their error model; the conformal ones of
``lgbm`` assume only that recent errors resemble the next. The backtest reports the coverage
of both.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass

import pandas as pd

from cluster.config import UsageError

os.environ.setdefault("NIXTLA_ID_AS_COL", "1")      # statsforecast: ids as a column, no warning
os.environ.setdefault("NIXTLA_NUMBA_CACHE", "1")    # compile statsforecast's numba code once, on disk
# their own use of pandas APIs that pandas 3 deprecates: theirs to fix, nothing a user can act on
for _category in (DeprecationWarning, FutureWarning):
    warnings.filterwarnings("ignore", category=_category, module=r"(mlforecast|utilsforecast|statsforecast)(\.|$)")

MODELS = ("snaive", "ets", "mstl", "lgbm")
STATS = ("snaive", "ets", "mstl")
DAY = pd.Timedelta("1D")


def require_forecasters() -> None:
    """The forecasting libraries are an extra: without them, one line that says how to get them."""
    missing = [m for m in ("statsforecast", "mlforecast", "lightgbm") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"capacity: {', '.join(missing)} not installed "
                         "(pip install 'ai-workload-orchestrator[capacity]')")


@dataclass(frozen=True)
class Setup:
    """What the models need to know: frequency, seasons that fit, horizon, shortest training length."""

    interval: pd.Timedelta
    seasons: tuple[int, ...]
    h: int
    n_train: int
    levels: tuple[int, ...] = (80, 95)

    @property
    def freq(self) -> str:
        """The pandas frequency both libraries take (``h``, ``D``, ``10s``)."""
        return pd.tseries.frequencies.to_offset(self.interval).freqstr

    @property
    def season(self) -> int:
        """The main season (the day of a sub-daily series, the week of a daily one; 1 when none fits)."""
        return self.seasons[0] if self.seasons else 1

    @property
    def calib_windows(self) -> int:
        """Windows of LightGBM's conformal calibration: half the training span, 2 to 24 (fewer leave
        too few errors per lead for a 95% quantile)."""
        return max(2, min(24, (self.n_train // 2) // self.h))

    @property
    def lags(self) -> list[int]:
        """1-3 steps back, one and two seasons back where the calibration leaves room for them."""
        room = (self.n_train - self.calib_windows * self.h) // 2
        lags = {1, 2, 3} if self.seasons else {1, 2, 3, 6, 12}
        lags |= {k * s for s in self.seasons for k in (1, 2) if k * s <= room}
        return sorted(x for x in lags if x <= max(room, 3))


def setup_for(interval: pd.Timedelta, n_train: int, h: int, levels: tuple[int, ...] = (80, 95)) -> Setup:
    """The seasons (a day, a week) that are whole numbers of intervals and fit twice into ``n_train``."""
    seasons = []
    for span in (DAY, 7 * DAY):
        s = span / interval
        if float(s).is_integer() and 1 < s and 2 * s <= n_train:
            seasons.append(int(s))
    return Setup(interval=interval, seasons=tuple(seasons), h=h, n_train=n_train, levels=tuple(levels))


def stats_model(name: str, setup: Setup):
    """A statsforecast model by name; None when it does not apply (MSTL without a season that fits)."""
    from statsforecast.models import MSTL, AutoETS, SeasonalNaive

    if name == "snaive":
        return SeasonalNaive(season_length=setup.season, alias="snaive")
    if name == "ets":  # statsforecast's ETS is seasonal up to a season of 24
        return AutoETS(season_length=setup.season if setup.season <= 24 else 1, alias="ets")
    if name == "mstl":
        if not setup.seasons:
            return None
        return MSTL(season_length=list(setup.seasons), trend_forecaster=AutoETS(model="ZZN"), alias="mstl")
    raise ValueError(f"not a statsforecast model: {name!r}")


def lgbm_forecaster(setup: Setup, *, n_estimators: int = 150, seed: int = 0):
    """The global LightGBM model in an mlforecast pipeline (per-series standardisation, lags,
    a rolling mean of the last season, hour and weekday features where the data has them)."""
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean
    from mlforecast.target_transforms import LocalStandardScaler

    window = setup.season if setup.season > 1 else 6
    dates = (["hour", "day_of_week"] if setup.interval < DAY else ["day_of_week"]) if setup.seasons else []
    model = lgb.LGBMRegressor(n_estimators=n_estimators, learning_rate=0.05, num_leaves=31, min_child_samples=10,
                              subsample=1.0, colsample_bytree=1.0, random_state=seed, n_jobs=1, verbosity=-1)
    return MLForecast(models={"lgbm": model}, freq=setup.freq, lags=setup.lags,
                      lag_transforms={1: [RollingMean(window_size=window)]}, date_features=dates,
                      target_transforms=[LocalStandardScaler()])


def intervals(setup: Setup):
    """mlforecast's conformal intervals for ``setup``'s horizon."""
    from mlforecast.utils import PredictionIntervals

    return PredictionIntervals(n_windows=setup.calib_windows, h=setup.h)


def long_predictions(wide: pd.DataFrame, names: list[str], levels: tuple[int, ...],
                     keep: tuple[str, ...] = ("unique_id", "ds")) -> pd.DataFrame:
    """statsforecast/mlforecast's wide output (``m``, ``m-lo-80`` ...) as one row per model:
    ``keep`` columns, ``model, mean, lo_80, hi_80 ...``; negative demand clipped to 0."""
    parts = []
    for m in names:
        if m not in wide.columns:
            continue
        part = wide[list(keep)].copy()
        part["model"] = m
        part["mean"] = wide[m].to_numpy(float)
        for lv in levels:
            for side in ("lo", "hi"):
                col = f"{m}-{side}-{lv}"
                part[f"{side}_{lv}"] = wide[col].to_numpy(float) if col in wide.columns else float("nan")
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    value_cols = ["mean", *(f"{s}_{lv}" for lv in levels for s in ("lo", "hi"))]
    out[value_cols] = out[value_cols].clip(lower=0)
    return out
