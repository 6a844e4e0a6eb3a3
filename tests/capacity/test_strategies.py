"""Scaling strategies over days: each bills what it keeps up, boots included, and is judged by simulation."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from capacity import strategies as st
from capacity.recommend import Shape, what_if
from capacity.cli import main
from cluster.topology import load_cluster
from simulations.workloads import load_workload

LOCAL = "configs/cluster/local.yaml"
WEEKLY = "configs/workloads/weekly_mixed.yaml"


@pytest.fixture(scope="module")
def backtest():
    return st.Backtest(load_cluster(LOCAL), load_workload(WEEKLY), "fastest-feasible", 0.05, window_s=30.0)


def test_plans_round_up_so_the_planned_rate_is_never_below_the_asked() -> None:
    bt = st.Backtest(load_cluster(LOCAL), load_workload(WEEKLY), "fastest-feasible", 0.05, window_s=30.0)
    a = bt.plan(1.0)
    grid = max(bt._plans)
    assert 1.0 <= grid < 1.0 * st.RATE_STEP and bt._plans[grid] == a
    n = len(bt._plans)
    assert bt.plan(grid * 0.999) == a and len(bt._plans) == n  # one search per grid point


def test_static_keeps_the_history_peak_plan_and_bills_every_hour(backtest) -> None:
    idx = pd.date_range("2026-01-10", periods=6, freq="10min")
    rates = pd.Series([0.5, 1.0, 0.8, 0.6, 0.4, 0.3], index=idx)
    history = pd.Series([2.0] * 6 + [0.5] * 6, index=pd.date_range("2026-01-09", periods=12, freq="10min"))
    steps = backtest.run("static", rates, history)
    shape = backtest.plan(2.0)
    assert all(s.counts == shape.counts for s in steps)
    hourly = sum(backtest.cost[p] * n for p, n in shape.counts)
    assert sum(s.cost for s in steps) == pytest.approx(hourly)  # six 10-minute steps: one hour
    assert sum(s.tasks for s in steps) == pytest.approx(sum(rates) * 600)
    summary = st.summarize(steps)  # where the idle dollars sit: each pool's share of the cost and its own slack
    pools = [p for p, n in shape.counts if n]
    assert sum(summary[f"{p}_cost_%"] for p in pools) == pytest.approx(100.0)
    assert sum(summary[f"{p}_cost_%"] * summary[f"{p}_slack_%"] for p in pools) / 100 == pytest.approx(summary["slack_%"])


def test_forecast_bills_the_boot_of_nodes_it_adds_before_the_hour(backtest) -> None:
    idx = pd.date_range("2026-01-10", periods=12, freq="10min")
    rates = pd.Series([0.3] * 6 + [3.0] * 6, index=idx)
    upper = pd.Series([0.3, 3.0], index=pd.date_range("2026-01-10", periods=2, freq="1h"))
    steps = backtest.run("forecast", rates, rates, upper)
    low, high = backtest.plan(0.3).counts, backtest.plan(3.0).counts
    assert steps[0].counts == low and steps[6].counts == high
    added = st._added(low, high)
    boot = sum(backtest.cost[p] * n * backtest.delays.of(backtest.spec, p) / 3600 for p, n in added.items())
    run = sum(backtest.cost[p] * n for p, n in high) / 6
    assert steps[6].cost == pytest.approx(run + boot)


def test_reactive_adds_where_tasks_waited_serves_after_the_boot_and_bills_it_from_the_ask(backtest) -> None:
    idx = pd.date_range("2026-01-10", periods=4, freq="10min")
    rates = pd.Series([0.3, 6.0, 6.0, 6.0], index=idx)
    steps = backtest.run("reactive", rates, rates)
    j1 = backtest.judge(steps[1].counts, 6.0)
    assert j1.miss > 0.05  # step 1 is overloaded with what step 0 kept up, so a node is asked for ...
    pool = max(j1.queued_ms, key=j1.queued_ms.get)  # ... where its tasks waited longest
    up1, up2 = dict(steps[1].counts), dict(steps[2].counts)
    # asked for at the end of step 1, booting through step 2 (billed, not serving), serving from step 3
    assert up2.get(pool, 0) <= up1.get(pool, 0)
    assert dict(steps[3].counts)[pool] == up2[pool] + 1
    serving = sum(backtest.cost[p] * n for p, n in steps[2].counts) / 6
    assert steps[2].cost == pytest.approx(serving + backtest.cost[pool] / 6)


def test_forecast_plus_reactive_adds_a_node_where_an_underestimated_hour_waits_and_drops_it_when_not_needed(backtest):
    """The forecast said 0.3/s for two hours; the first came at 6/s. The plain forecast keeps its plan
    and misses; the hybrid asks for a node where tasks queued (billed while booting, serving after),
    and gives it back after the first step that would have met the target without it."""
    idx = pd.date_range("2026-01-10", periods=12, freq="10min")
    rates = pd.Series([6.0] * 6 + [0.3] * 6, index=idx)
    upper = pd.Series([0.3, 0.3], index=pd.date_range("2026-01-10", periods=2, freq="1h"))
    plain = backtest.run("forecast", rates, rates, upper)
    both = backtest.run("forecast+reactive", rates, rates, upper)
    low = backtest.plan(0.3).counts
    assert all(s.counts == low for s in plain)
    j0 = backtest.judge(low, 6.0)
    assert j0.miss > 0.05
    pool = max(j0.queued_ms, key=j0.queued_ms.get)
    boot_steps = -(-backtest.delays.of(backtest.spec, pool) // 600)  # 10-minute steps the boot spans
    first_up = 1 + int(boot_steps)
    assert both[0].counts == low and dict(both[first_up].counts)[pool] == dict(low)[pool] + 1
    assert both[1].cost == pytest.approx(sum(backtest.cost[p] * n for p, n in low) / 6 + backtest.cost[pool] / 6)
    assert sum(s.missed for s in both[:6]) < sum(s.missed for s in plain[:6])
    assert both[6].counts != low and all(s.counts == low for s in both[7:])  # 0.3/s meets it without: it left


class _Scripted(st.Backtest):
    """Plans and what-ifs by rule, to follow the bookkeeping exactly: a step misses everything
    while the time-sliced pool has fewer nodes than its rate asks for (rate 1: one, rate 2: two)."""

    def __init__(self, plans: dict[float, int]) -> None:
        super().__init__(load_cluster(LOCAL), load_workload(WEEKLY), "fastest-feasible", 0.05, window_s=30.0)
        self.plans = plans

    def plan(self, rate: float):
        from capacity.recommend import Shape

        return Shape((("edge", 1), ("cloud", 0), ("gpu-mig", 0), ("gpu-ts", self.plans[rate])))

    def judge(self, counts, rate):
        short = dict(counts)["gpu-ts"] < rate
        return st.Judged(1.0 if short else 0.0, {}, {"gpu-ts": 1.0} if short else {}, {})


def test_a_node_the_plan_adds_where_an_added_node_is_up_is_that_node_not_a_second_boot() -> None:
    """Hour 0 is forecast at rate 1 but comes at 2: a time-sliced node is added. Hour 1's plan asks for
    two: the added node is the plan's second (no second boot billed, two serve, not three)."""
    bt = _Scripted({1.0: 1, 2.0: 2})
    idx = pd.date_range("2026-01-10", periods=12, freq="10min")
    rates = pd.Series(2.0, index=idx)
    upper = pd.Series([1.0, 2.0], index=pd.date_range("2026-01-10", periods=2, freq="1h"))
    steps = bt.run("forecast+reactive", rates, rates, upper)
    ts = [dict(s.counts)["gpu-ts"] for s in steps]
    assert ts == [1, 1] + [2] * 10  # asked at the end of step 0, booting through step 1 (300 s)
    node = bt.cost["gpu-ts"]
    run = (bt.cost["edge"] + 2 * node) / 6
    assert steps[1].cost == pytest.approx((bt.cost["edge"] + node) / 6 + node / 6)  # billed while booting
    assert steps[6].cost == pytest.approx(run)  # the plan's second node is the one already up: no boot
    assert all(s.missed == 0 for s in steps[2:])


def test_each_grid_rates_plan_is_searched_from_the_one_below_whatever_was_asked_first(monkeypatch) -> None:
    """Neighbouring rates' plans differ by a node or two: grid point k's search starts from k-1's plan
    (the first from the cluster's own counts), so a plan does not depend on the rates asked before it."""
    starts = []
    real = st.recommend

    def spy(*args, start=None, **kwargs):
        starts.append(start)
        return real(*args, start=start, **kwargs)

    monkeypatch.setattr(st, "recommend", spy)
    up = st.Backtest(load_cluster(LOCAL), load_workload(WEEKLY), "fastest-feasible", 0.05, window_s=30.0)
    high = up.plan(1.2)
    grid = sorted(up._plans)
    assert grid[0] == st.RATE_FLOOR and grid[-1] >= 1.2 > grid[-2] and len(starts) == len(grid)
    assert starts[0] is None and starts[1:] == [up._plans[r] for r in grid[:-1]]
    assert up.plan(0.6) == up._plans[min(r for r in grid if r >= 0.6)] and len(starts) == len(grid)  # planned already
    down = st.Backtest(load_cluster(LOCAL), load_workload(WEEKLY), "fastest-feasible", 0.05, window_s=30.0)
    down.plan(0.6)
    assert down.plan(1.2) == high and down._plans == up._plans


def test_hindsight_serves_each_step_with_the_plan_for_its_own_rate_booted_ahead(backtest) -> None:
    """Each step planned for its own rate, its nodes up on time, their boots billed once."""
    idx = pd.date_range("2026-01-10", periods=4, freq="10min")
    rates = pd.Series([0.3, 0.3, 3.0, 3.0], index=idx)
    steps = backtest.run("hindsight", rates, rates)
    low, high = backtest.plan(0.3), backtest.plan(3.0)
    assert steps[0].counts == low.counts
    assert steps[2].counts == high.counts
    # what a plan promises: its misses, averaged over the plan's what-if streams at its grid rate, meet the target
    grid = min(r for r in backtest._plans if r >= 3.0)
    streams = st.plan_streams(backtest.workload, grid, backtest.window_s, backtest.seed)
    assert what_if(backtest.spec, Shape(steps[2].counts, backtest.layouts), streams, "fastest-feasible", 0.05).meets
    run = backtest._cost(steps[2].counts) / 6
    boot = sum(backtest.cost[p] * n * backtest.delays.of(backtest.spec, p) / 3600
               for p, n in st._added(low.counts, steps[2].counts).items())
    assert boot > 0 and steps[2].cost == pytest.approx(run + boot)
    assert steps[3].cost == pytest.approx(run)  # up already: no second boot


def test_the_sub_hour_peak_is_how_far_a_step_rises_above_its_hours_mean() -> None:
    """An hourly bound covers the hour's mean; a burst in one 10-minute step of each hour needs more."""
    idx = pd.date_range("2026-01-01", periods=6 * 48, freq="10min")
    flat = pd.Series(2.0, index=idx)
    assert st.sub_hour_peak(flat) == 1.0
    bursty = flat.where(idx.minute != 20, 4.0)  # one step an hour at twice the rest: its hour's mean is 7/3
    assert st.sub_hour_peak(bursty, 95) == pytest.approx(4.0 / (14.0 / 6.0))
    assert st.sub_hour_peak(bursty, 50) == 1.0  # never below the mean: a plan is not cut under its bound


def test_summary_and_targets_name_each_figure() -> None:
    t = pd.DataFrame({"cost_$": [100.0, 80.0, 60.0], "slo_miss_%": [1.0, 3.0, 1.0], "slack_%": [60.0, 40.0, 20.0],
                      "mean_nodes": [5, 4, 3], "max_nodes": [5, 6, 5]}, index=["static", "reactive", "forecast"])
    lines = st.target_lines(t)
    assert "40.0% cheaper (target >= 30% cheaper: met)" in lines[0] and "no worse: met" in lines[0]
    assert "fewer: met" in lines[1] and "no more: met" in lines[1]
    assert "slack 20.0% (target <= 25%: met)" in lines[2] and len(lines) == 3
    bound = pd.concat([t, t.loc[["forecast"]].rename(index={"forecast": "hindsight"}).assign(**{"cost_$": 75.0})])
    assert st.target_lines(bound)[-1].startswith("hindsight (each step planned for its own actual rate): 25.0% "
                                                 "cheaper than static peak, SLO misses 1.000% vs 1.000%")
    both = pd.concat([t, t.loc[["forecast"]].rename(index={"forecast": "forecast+reactive"})
                      .assign(**{"slo_miss_%": 4.0, "cost_$": 120.0})])
    lines = st.target_lines(both)
    assert len(lines) == 6 and lines[3].startswith("forecast+reactive vs static peak: 20.0% dearer (target >= 30% "
                                                   "cheaper: NOT met)") and "no worse: NOT met" in lines[3]


@pytest.mark.parametrize("argv, flag", [
    (["--step", "7min"], "--step"),
    (["--days", "0"], "--days"),
    (["--history-days", "1"], "--history-days"),
    (["--load-factor", "0"], "--load-factor"),
    (["--policy", "magic"], "--policy"),
    (["--policy", "fastest-feasible:3"], "--policy"),
    (["--model", "bogus"], "--model"),
    (["--max-nodes", "1"], "--max-nodes"),
    (["--forecast-slo-miss", "2,x"], "--forecast-slo-miss"),
    (["--forecast-slo-miss", "100"], "--forecast-slo-miss"),
])
def test_bad_flags_exit_2_naming_the_flag(argv: list[str], flag: str, tmp_path: Path, capsys) -> None:
    assert main(["capacity", "strategies", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "orchestrator: error:" in err and flag in err


def test_strategies_end_to_end(tmp_path: Path, capsys) -> None:
    assert main(["capacity", "strategies", "--days", "1", "--history-days", "2", "--step", "1h", "--model", "snaive",
                 "--policy", "fastest-feasible", "--window", "10", "--forecast-slo-miss", "2,2,5",
                 "--out", str(tmp_path / "o"), "--markdown", str(tmp_path / "s.md")]) == 0
    out = capsys.readouterr().out
    assert "forecast vs static peak" in out and "forecast @2% vs static peak" in out
    table = pd.read_csv(tmp_path / "o" / "strategies.csv", index_col=0)
    tighter = [f"{n} @2%" for n in st.PLANNED]
    assert list(table.index) == [*st.STRATEGIES, *tighter] and (table["cost_$"] > 0).all()
    steps = pd.read_csv(tmp_path / "o" / "strategy_steps.csv")
    assert len(steps) == len(table) * 24
    page = (tmp_path / "s.md").read_text()
    assert "queues do not carry" in page and "MIG layouts, the same for every strategy: gpu-mig " in page


def test_every_strategy_runs_on_the_peak_layout_and_tighter_targets_plan_their_own_rows(monkeypatch) -> None:
    """One MIG layout for every row (a scaler changes node counts, not layouts); ``@2%`` rows plan for 2%."""
    spec, wl = load_cluster(LOCAL), load_workload(WEEKLY)
    cut = (("4g.40gb", "2g.20gb"),) * 2  # not the shipped layout
    asked, seen, seeds = [], set(), set()
    monkeypatch.setattr(st, "peak_layouts", lambda *a, **k: asked.append(k["seed"]) or (("gpu-mig", cut),))
    real = st.simulate_on

    def spy(cluster, tasks, policy, seed, **kw):
        seen.update(tuple(d.mig_instances for d in n.devices) for n in cluster.nodes if n.pool == "gpu-mig")
        seeds.add(seed)
        return real(cluster, tasks, policy, seed, **kw)

    monkeypatch.setattr(st, "simulate_on", spy)
    res = st.compare(spec, wl, "fastest-feasible", 0.05, days=1, history_days=2, step=pd.Timedelta("1h"),
                     model="snaive", window_s=10.0, forecast_miss=[0.02], seed=7)
    assert asked == [7] and seeds == {7}  # the what-if seed reaches the layout search and every judged step
    assert res.layouts == (("gpu-mig", cut),) and seen == {cut}
    assert list(res.summary.index) == [*st.STRATEGIES, *(f"{n} @2%" for n in st.PLANNED)]
    assert {m for m, _ in res.plans} == {0.05, 0.02}
    for pool in ("edge", "cloud", "gpu-mig", "gpu-ts"):  # every pool has its share, 0 where never paid
        assert res.summary[f"{pool}_cost_%"].notna().all()
    assert res.summary.filter(like="_cost_%").sum(axis=1).round(6).eq(100).all()


def test_layouts_say_whose_they_are_and_why_a_peak_kept_the_clusters_own() -> None:
    spec = load_cluster(LOCAL)
    own = st.current_shape(spec).layouts
    assert st.layouts_text(own, spec).endswith("(the cluster's own)")
    assert st.layouts_text(own, spec, "no cluster met it").endswith("(the cluster's own: no cluster met it)")
    other = (("gpu-mig", (("4g.40gb", "2g.20gb"),) * 2),)
    assert st.layouts_text(other, spec) == "gpu-mig 4g.40gb,2g.20gb | 4g.40gb,2g.20gb (recommended for the peak hour)"


def test_a_series_that_starts_between_hours_is_forecast_from_its_own_start(tmp_path: Path, capsys, monkeypatch) -> None:
    from tests.capacity.conftest import DAILY, write_workload

    monkeypatch.setattr(st, "peak_layouts", lambda *a, **k: pytest.fail("--no-layouts searched a layout"))

    w = write_workload(tmp_path, days=4, rate=0.3, profile=DAILY.replace("rate_profile:\n",
                                                                        "rate_profile:\n  start: '2026-01-05T06:30:00'\n"))
    assert main(["capacity", "strategies", "--workload", str(w), "--days", "1", "--history-days", "3", "--step",
                 "30min", "--model", "snaive", "--policy", "fastest-feasible", "--window", "20", "--no-layouts",
                 "--out", str(tmp_path / "o")]) == 0
    assert "MIG layouts: gpu-mig 3g.40gb,2g.20gb,1g.10gb,1g.10gb | 4g.40gb,2g.20gb,1g.10gb (the cluster's own)" \
        in capsys.readouterr().out
    steps = pd.read_csv(tmp_path / "o" / "strategy_steps.csv", parse_dates=["start"])
    assert steps["start"].min() == pd.Timestamp("2026-01-08T06:30:00")
