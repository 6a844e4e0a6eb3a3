"""Forecast errors: MAE, MAPE, MASE and the empirical coverage of prediction intervals.

Why written out here (the models are not): the definitions decide what the report claims,
so they are short, tested on a hand-made example, and stated once:

* MAE: mean |y - yhat|;
* MAPE: mean |y - yhat| / |y| in percent, over the points with y != 0 (undefined at zero demand,
  so those points are left out and counted in ``zero_share``);
* MASE (Hyndman and Koehler, 2006; as in the M4 competition): |y - yhat| scaled by the mean
  |y_t - y_{t-m}| of the series up to the forecast origin (the in-sample error of the seasonal
  naive forecast of season ``m``), averaged. The seasonal-naive forecast itself scores 1.0 where
  its errors in the test match those in the past; a model better than it scores lower on the same
  points, so "better than seasonal naive by MASE" is the comparison of two MASEs;
* coverage at level L: the share of actuals inside the model's L% interval.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, float) - np.asarray(yhat, float))))


def mape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Percent; NaN when every actual is zero."""
    y, yhat = np.asarray(y, float), np.asarray(yhat, float)
    nz = y != 0
    return float(np.mean(np.abs(y[nz] - yhat[nz]) / np.abs(y[nz])) * 100) if nz.any() else float("nan")


def seasonal_scale(history: np.ndarray, m: int) -> float:
    """Mean |y_t - y_{t-m}| over ``history``: the in-sample seasonal-naive error (NaN when too short or zero)."""
    h = np.asarray(history, float)
    if len(h) <= m:
        return float("nan")
    s = float(np.mean(np.abs(h[m:] - h[:-m])))
    return s if s > 0 else float("nan")


def mase(y: np.ndarray, yhat: np.ndarray, history: np.ndarray, m: int) -> float:
    """MASE of one forecast window against the history before its origin."""
    return mae(y, yhat) / seasonal_scale(history, m)


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    y = np.asarray(y, float)
    return float(np.mean((y >= np.asarray(lo, float)) & (y <= np.asarray(hi, float))))


def scales(series: pd.DataFrame, cutoffs: pd.DataFrame, m: int) -> pd.Series:
    """The MASE scale of each (``unique_id``, ``cutoff``) row of ``cutoffs``, from the history in
    ``series`` (``unique_id, ds, y``) up to and including the cutoff, vectorised with cumulative sums."""
    out = []
    for uid, g in series.sort_values("ds").groupby("unique_id", sort=False):
        y = g["y"].to_numpy(float)
        d = np.abs(y[m:] - y[:-m]) if len(y) > m else np.empty(0)
        csum = np.concatenate([[0.0], np.cumsum(d)])
        want = cutoffs[cutoffs["unique_id"] == uid]
        pos = np.searchsorted(g["ds"].to_numpy(), want["cutoff"].to_numpy(), side="right")  # points up to cutoff
        n = np.maximum(pos - m, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.where(n > 0, csum[np.minimum(n, len(d))] / np.maximum(n, 1), np.nan)
        s[s == 0] = np.nan
        out.append(pd.Series(s, index=want.index))
    return pd.concat(out) if out else pd.Series(dtype=float)


def score(cv: pd.DataFrame, series: pd.DataFrame, m: int, levels: tuple[int, ...]) -> pd.DataFrame:
    """Errors per series and model of a long backtest table (``unique_id, ds, cutoff, model, y, mean,
    lo_L, hi_L``): MAE, MAPE, MASE, coverage per level, and the points and share of zeros scored."""
    cv = cv.copy()
    keys = cv[["unique_id", "cutoff"]].drop_duplicates()
    keys["scale"] = scales(series, keys, m)
    cv = cv.merge(keys, on=["unique_id", "cutoff"], how="left")
    cv["ae"] = (cv["y"] - cv["mean"]).abs()
    cv["scaled"] = cv["ae"] / cv["scale"]
    cv["ape"] = np.where(cv["y"] != 0, cv["ae"] / cv["y"].abs().where(cv["y"] != 0) * 100, np.nan)
    for lv in levels:
        cv[f"cov_{lv}"] = ((cv["y"] >= cv[f"lo_{lv}"]) & (cv["y"] <= cv[f"hi_{lv}"])).astype(float)
        cv.loc[cv[f"lo_{lv}"].isna() | cv[f"hi_{lv}"].isna(), f"cov_{lv}"] = np.nan
    g = cv.groupby(["unique_id", "model"], sort=True)
    table = pd.DataFrame({"mae": g["ae"].mean(), "mape": g["ape"].mean(), "mase": g["scaled"].mean(),
                          **{f"cov_{lv}": g[f"cov_{lv}"].mean() for lv in levels},
                          "points": g["y"].size(), "zero_share": g["y"].apply(lambda y: float((y == 0).mean()))})
    return table
