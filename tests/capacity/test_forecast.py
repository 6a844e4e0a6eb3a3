"""Metrics on hand-made examples, the seasonal-naive MASE of 1.0, and a short backtest and forecast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity.backtest import backtest, horizon_label
from capacity.forecast import forecast, parse_models
from capacity.metrics import coverage, mae, mape, mase, scales, seasonal_scale
from capacity.sources import from_workload
from cluster.config import UsageError
from tests.capacity.conftest import DAILY, write_workload


def test_metrics_on_a_hand_made_example() -> None:
    y, yhat = np.array([100.0, 200.0, 0.0]), np.array([110.0, 150.0, 5.0])
    assert mae(y, yhat) == pytest.approx((10 + 50 + 5) / 3)
    assert mape(y, yhat) == pytest.approx((10 + 25) / 2)  # the zero actual is left out
    assert np.isnan(mape([0.0, 0.0], [1.0, 2.0]))
    hist = np.array([1.0, 2.0, 4.0, 3.0, 5.0])  # |diffs| at m = 2: 3, 1, 1 -> 5/3
    assert seasonal_scale(hist, 2) == pytest.approx(5 / 3)
    assert mase([6.0, 7.0], [5.0, 5.0], hist, 2) == pytest.approx(1.5 / (5 / 3))
    assert coverage([1, 5, 9], [0, 6, 8], [2, 7, 10]) == pytest.approx(2 / 3)
    series = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2026-01-05", periods=5, freq="h"), "y": hist})
    keys = pd.DataFrame({"unique_id": ["a", "a"], "cutoff": series["ds"].iloc[[2, 4]].to_numpy()})
    assert scales(series, keys, 2).tolist() == pytest.approx([3.0, 5 / 3])  # history up to each cutoff


def test_seasonal_naive_scores_mase_one_and_mape_by_hand() -> None:
    """On y = t (hourly, season 24) the seasonal-naive forecast is off by exactly 24 at every lead, as is
    its in-sample error: MASE 1.0; MAPE is 24 / y averaged over the test points."""
    n = 24 * 6
    series = pd.DataFrame({"unique_id": "line", "ds": pd.date_range("2026-01-05", periods=n, freq="h"),
                           "y": np.arange(1.0, n + 1)})
    bt = backtest(series, pd.Timedelta("1h"), [1, 24], test_span=48, models=("snaive",), max_windows=48)
    t = bt.table.xs("snaive", level="model")
    assert t["mase"].tolist() == pytest.approx([1.0, 1.0])
    assert t["mae"].tolist() == pytest.approx([24.0, 24.0])
    test_y = np.arange(n - 48 + 1.0, n + 1)
    assert t["mape"].tolist() == pytest.approx([np.mean(24 / test_y) * 100] * 2)
    assert t["windows"].tolist() == [48, 2]
    assert list(t.index.get_level_values("horizon")) == ["1h", "1d"]


def test_a_backtest_of_every_model_on_a_short_synthetic_series(tmp_path: Path) -> None:
    demand = from_workload(write_workload(tmp_path, days=5, rate=0.05, profile=DAILY))
    series = demand.series(["totals"])
    bt = backtest(series, demand.interval, [1, 6], test_span=12, models=parse_models("ets,mstl,lgbm"), max_windows=4)
    t = bt.table
    assert set(t.index.get_level_values("model")) == {"snaive", "ets", "mstl", "lgbm"}
    assert set(t.index.get_level_values("horizon")) == {"1h", "6h"}
    assert t[["mape", "mase"]].notna().all().all()
    assert ((t[["cov_80", "cov_95"]] >= 0) & (t[["cov_80", "cov_95"]] <= 1)).all().all()
    assert (t["cov_95"] >= t["cov_80"] - 1e-9).all()  # a wider interval covers at least as much
    assert len(bt.cv) == 4 * 4 * (4 * 1 + 2 * 6)  # series x models x (windows x horizon, per horizon)
    assert set(zip(t.index.get_level_values("horizon"), t["windows"])) == {("1h", 4), ("6h", 2)}
    best = bt.best()
    assert set(best.columns) >= {"best", "mase", "snaive_mase", "beats_snaive"}


def test_forecast_gives_intervals_around_the_mean_for_each_series(tmp_path: Path) -> None:
    demand = from_workload(write_workload(tmp_path, days=4, rate=0.05, profile=DAILY))
    series = demand.series(["totals"])
    fc = forecast(series, demand.interval, 6, models=parse_models("ets,lgbm"))
    f = fc.frame
    assert len(f) == 4 * 3 * 6  # metrics x models x horizon
    assert set(f["metric"]) == {"arrivals", "cpu_s", "mem_gb_s", "gpu_s"} and set(f["by"]) == {"*"}
    assert f["ds"].min() == series["ds"].max() + pd.Timedelta("1h")
    for lv in (80, 95):
        assert (f[f"lo_{lv}"] <= f["mean"] + 1e-6).all() and (f["mean"] <= f[f"hi_{lv}"] + 1e-6).all()
    assert (f["hi_95"] >= f["hi_80"] - 1e-6).all() and (f["lo_80"] >= 0).all()
    up = fc.upper(95, "lgbm")
    assert up.shape == (6, 4)


def test_models_and_horizon_labels() -> None:
    assert parse_models("lgbm") == ("snaive", "lgbm")
    with pytest.raises(UsageError, match="--models"):
        parse_models("prophet")
    assert horizon_label(24, pd.Timedelta("1h")) == "1d"
    assert horizon_label(6, pd.Timedelta("10s")) == "1min"
    assert horizon_label(7, pd.Timedelta("1D")) == "7d"


def test_a_series_without_a_mase_scale_has_no_best_model_rather_than_an_error() -> None:
    """A series flat before its first cutoff (a kind that appears late) has no MASE for any model."""
    from capacity.page import error_table

    idx = pd.MultiIndex.from_product([["late", "steady"], ["1h"], ["snaive", "mstl"]],
                                     names=["unique_id", "horizon", "model"])
    t = pd.DataFrame({"mape": [50.0, 40.0, 10.0, 8.0], "mase": [np.nan, np.nan, 1.0, 0.7]}, index=idx)
    out = error_table(t, ["snaive", "mstl"])
    assert pd.isna(out.loc[("late", "1h"), "best"]) and out.loc[("steady", "1h"), "best"] == "mstl"
