"""Demand series: exact sums of the generated tasks, the rate profile's shapes, the traces and history records."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from capacity.series import parse_id, parse_interval
from capacity.sources import from_alibaba, from_azure, from_history, from_workload
from cluster.config import ConfigError, UsageError
from simulations.workloads import WORKLOADS_DIR, draw, generate, load_workload
from tests.capacity.conftest import write_workload
from tests.conftest import TRACES, alibaba_trace


def test_workload_series_is_exactly_the_sum_of_the_generated_tasks(small_workload: Path) -> None:
    spec = load_workload(small_workload)
    tasks = generate(spec)
    assert 10_000 < len(tasks) < 30_000
    want: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(4))
    for t in tasks:
        share = (f"mig:{t.mig_profile}" if t.mig_profile else "whole" if t.gpu_count else
                 "slice" if t.gpu_milli else "cpu")
        want[(int(t.arrival // 3600), t.kind, share)] += [1, t.cpu_milli / 1000 * t.work, t.mem_mib / 1024 * t.work,
                                                          t.gpu_amount * t.work]
    demand = from_workload(spec, interval=pd.Timedelta("1h"))
    f = demand.frame
    assert demand.n_intervals == 24 and set(f["pool"]) == {"any"}
    assert set(f["share"]) == {"cpu", "slice", "mig:3g.40gb", "whole"}
    got = {(int((r.ds - f["ds"].min()) / pd.Timedelta("1h")), r.kind, r.share):
           np.array([r.arrivals, r.cpu_s, r.mem_gb_s, r.gpu_s]) for r in f.itertuples()}
    assert {k for k, v in got.items() if v[0]} == set(want)
    for k, v in want.items():
        assert got[k][0] == v[0]  # arrivals: exact
        np.testing.assert_allclose(got[k][1:], v[1:], rtol=1e-9)
    assert f["arrivals"].sum() == len(tasks)


def test_draw_gives_generate_s_stream_for_files_with_and_without_a_profile(small_workload: Path) -> None:
    for spec in (load_workload(small_workload), load_workload(WORKLOADS_DIR / "mixed.yaml")):
        d, tasks = draw(spec, 3), generate(spec, 3)
        assert np.array_equal(d.arrivals, [t.arrival for t in tasks])
        assert np.array_equal(d.work, [t.work for t in tasks])
        assert [spec.scenarios[j].kind for j in d.which] == [t.kind for t in tasks]


def test_daily_seasonality_shows_in_the_series(tmp_path: Path) -> None:
    """Amplitude 0.5 peaking at 14:00: the 14:00 hour carries about (1 + 0.5) / (1 - 0.5) = 3x the 02:00 hour."""
    p = write_workload(tmp_path, days=6, rate=0.5, profile="rate_profile:\n  daily_amplitude: 0.5\n  peak_hour: 14\n")
    by_hour = from_workload(p).totals()["arrivals"].groupby(lambda ds: ds.hour).mean()
    assert by_hour.idxmax() in (13, 14, 15) and by_hour.idxmin() in (1, 2, 3)
    assert 2.6 < by_hour[14] / by_hour[2] < 3.4
    assert by_hour.mean() == pytest.approx(0.5 * 3600, rel=0.03)  # the profile keeps the mean rate


def test_weekly_profile_trend_and_the_shipped_three_weeks(tmp_path: Path) -> None:
    spec = load_workload(WORKLOADS_DIR / "weekly_mixed.yaml")
    assert spec.duration_s == 21 * 86400 and spec.rate_profile is not None
    assert spec.rate_profile.start.weekday() == 0
    d = from_workload(spec, duration_s=2 * 86400)  # two days of it: the full file is 3 million tasks
    assert d.n_intervals == 48 and d.frame["ds"].min() == pd.Timestamp("2026-01-05")
    p = write_workload(tmp_path, days=14, rate=0.05, profile="rate_profile:\n  weekly_amplitude: 0.5\n"
                                                           "  peak_weekday: 2.5\n  trend_per_day: 0.05\n")
    daily = from_workload(p, interval=pd.Timedelta("1D")).totals()["arrivals"]
    assert daily.iloc[7:].sum() > 1.2 * daily.iloc[:7].sum()  # 5% a day of growth
    assert daily.iloc[2] > 1.8 * daily.iloc[6]  # Wednesday vs Sunday


def test_rate_profile_errors_name_the_field(tmp_path: Path) -> None:
    for bad, field in (("  daily_amplitude: 2\n", "rate_profile.daily_amplitude"),
                       ("  bursts: {per_day: 1, factor: 2}\n", "rate_profile.bursts.duration_s"),
                       ("  start: yesterday\n", "rate_profile.start"), ("  spikes: 3\n", "rate_profile.spikes")):
        with pytest.raises(ConfigError) as exc:
            load_workload(write_workload(tmp_path, profile="rate_profile:\n" + bad))
        assert field in str(exc.value)


def test_alibaba_daily_series_spans_about_149_days() -> None:
    d = from_alibaba(alibaba_trace("openb_pod_list_default.csv"))
    assert 148 <= d.n_intervals <= 151
    assert d.frame["arrivals"].sum() == 8152
    assert set(d.frame["kind"]) == {"LS", "BE", "Burstable", "Guaranteed"}
    assert {"slice", "whole"} <= set(d.frame["share"])
    assert d.totals()["gpu_s"].sum() > 0


def test_azure_trace_gives_real_minute_arrivals() -> None:
    folder = TRACES / "azure_llm_inference_2023"
    if not folder.is_dir():
        pytest.skip(f"trace {folder} not present")
    d = from_azure(folder, interval=pd.Timedelta("1min"))
    assert 55 <= d.n_intervals <= 58 and set(d.frame["kind"]) == {"code", "conv"}
    assert d.metrics == ("arrivals", "context_tokens", "generated_tokens")
    assert 25_000 < d.frame["arrivals"].sum() <= 8_819 + 19_366
    assert {"arrivals/kind=code", "arrivals/kind=conv", "context_tokens"} <= set(d.series()["unique_id"])


def test_history_records_as_plain_dicts() -> None:
    task = {"kind": "imaging", "cpu_milli": 2000, "mem_mib": 4096, "gpu_milli": 250, "gpu_count": 0,
            "mig_profile": None, "work": 1.0}
    t0 = 1_767_571_200.0  # 2026-01-05 00:00 UTC
    records = [
        {"accepted_at": t0 + 10, "kind": "imaging", "pool": "gpu-ts", "share": "slice:250", "exec_ms": 2000.0,
         "task": json.dumps(task)},
        {"accepted_at": t0 + 20, "kind": "imaging", "pool": "gpu-mig", "share": "mig:2g.20gb", "exec_ms": 700.0,
         "task": task},
        {"accepted_at": t0 + 3700, "kind": "imaging", "pool": None, "share": None, "exec_ms": None, "status": "rejected",
         "task": task},
        {"accepted_at": t0 + 3800, "kind": "etl", "pool": "cloud", "share": "cpu", "cpu_milli": 4000, "mem_mib": 1024,
         "work": 10.0},
    ]
    d = from_history(records)
    f = d.frame.set_index(["ds", "kind", "pool", "share"])
    h0, h1 = pd.Timestamp("2026-01-05 00:00"), pd.Timestamp("2026-01-05 01:00")
    assert d.n_intervals == 2
    assert f.loc[(h0, "imaging", "gpu-ts", "slice"), "gpu_s"] == pytest.approx(0.25 * 2.0)
    assert f.loc[(h0, "imaging", "gpu-mig", "mig:2g.20gb"), "gpu_s"] == pytest.approx(2 / 7 * 0.7)
    assert f.loc[(h1, "imaging", "any", "slice"), ["arrivals", "cpu_s"]].tolist() == [1, pytest.approx(2.0)]
    assert f.loc[(h1, "etl", "cloud", "cpu"), "cpu_s"] == pytest.approx(40.0)
    assert set(d.series(["totals", "pools"])["unique_id"]) >= {"arrivals/pool=gpu-ts", "arrivals/pool=any", "gpu_s"}


def test_series_ids_and_intervals() -> None:
    assert parse_id("gpu_s/share=mig:1g.10gb") == ("gpu_s", {"share": "mig:1g.10gb"})
    assert parse_id("arrivals") == ("arrivals", {})
    assert parse_interval("15min") == pd.Timedelta(minutes=15)
    for bad in ("soon", "-1h", "0s"):
        with pytest.raises(UsageError, match="--interval"):
            parse_interval(bad)
