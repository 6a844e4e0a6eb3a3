"""Scaling strategies compared over a multi-day demand series: static peak, reactive, forecast-driven,
and forecast-driven with a reactive net; beside them hindsight, each step planned for its actual rate.

Why piecewise what-ifs: the simulator's cluster has a fixed set of nodes, so a day of scaling is
cut into steps (10 minutes by default). Each step's nodes are judged by a what-if run of the
step's arrival rate (a stationary window of the workload's mix, :func:`capacity.recommend.what_if`
style): queues do not carry from one step to the next, which flatters every strategy alike
(stated in the report). Node start delays are real, though: a node asked for is billed from the
moment it is asked for and serves only once it is up (:class:`Delays`).

* **static**: the cluster :func:`capacity.recommend.recommend` finds for the highest hourly rate of
  the history before the backtest, kept all the time;
* **reactive**: as Ray's autoscaler does it: a step whose SLO misses exceeded the target adds a node
  to the pool where tasks queued longest (up after the start delay); a node that ran nothing for
  ``idle_steps`` steps is removed;
* **forecast**: each day of the backtest, at the hour it starts, the hourly arrivals are forecast
  (MSTL with daily and weekly seasonality by default, from statsforecast), and
  each hour gets the cluster recommended for its upper bound times the history's sub-hour peak
  (:func:`sub_hour_peak`: a step's rate above its hour's mean, which an hourly bound does not cover),
  asked for early enough to be up when the hour starts (the statsforecast models need the
  ``capacity`` extra, seasonal naive included);
* **hindsight**: not a strategy but a reference (:data:`HINDSIGHT`): each step gets the plan for its
  own actual rate, booted ahead as the forecast's are;
* **forecast+reactive**: the forecast plan, plus what reactive scaling adds on top of it: a step
  whose SLO misses exceeded the target asks for one more node where tasks queued longest (serving
  after its boot), and an added node leaves once the step's what-if without it met the target
  for ``idle_steps`` steps in a row (a busy pool never has an idle node, so the idle rule would
  keep it for good); a node the next hour's plan adds where an added node is up is that node (no
  second boot). A forecast sets the floor ahead of demand; the reaction covers the hours it
  underestimated, as production autoscalers pair a predictive and a reactive scaler.

Every strategy runs on one MIG layout per MIG pool, the one recommended for the history's peak hour
(:func:`peak_layouts`; ``layouts=False`` keeps the cluster's own): only node counts change over time.

Every plan must hold its rate on :data:`PLAN_STREAMS` what-if streams: planned on one, a cluster
that just met the target on that stream missed 9% of a step's tasks on the next.

Per strategy: cost, SLO misses (share of tasks), and slack: the share of paid capacity that sat
idle (one minus the cost-weighted utilisation of each pool), Autopilot's measure.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from capacity.recommend import (Shape, build, current_shape, demand_streams, node_cost_per_hour, recommend,
                                simulate_on, templates)
from cluster.topology import ClusterSpec

STRATEGIES = ("static", "reactive", "forecast", "forecast+reactive", "hindsight")
#: the strategies Issue 20's forecast targets are checked for
FORECASTS = ("forecast", "forecast+reactive")
#: the rows that plan ahead for a rate: repeated for each extra target of :func:`compare`
PLANNED = (*FORECASTS, "hindsight")
HINDSIGHT = ("hindsight plans each step for its own actual rate (rounded up to the plan grid, as every plan "
             "is), its nodes up on time: planning with each step's rate known, per step where the forecast "
             "strategies plan per hour for an upper bound: its cost gap to them is the forecasts' margin, their "
             "error and the hourly granularity together, and it misses more than they do")
CAVEAT = ("Each step is a what-if run of its own rate from an empty cluster: queues do not carry from step "
          "to step, which flatters every strategy alike. The reactive strategy (and forecast+reactive's reaction) "
          "decides at step boundaries, so a node it asks for serves from the first boundary after its boot (up to "
          "one step later than Ray's autoscaler would; a shorter --step narrows this), billed from the moment it is "
          "asked for; the forecast strategy asks a boot ahead, so its nodes serve on time.")
#: planned-for rates are rounded up to a geometric grid from RATE_FLOOR (arrivals/s) in steps of
#: RATE_STEP (one search per grid point: at most 10% of capacity planned beyond the rate)
RATE_FLOOR = 0.25
RATE_STEP = 1.1
#: judged rates are rounded to this share of themselves (what-ifs are reused within it)
JUDGE_ROUND = 0.02


@dataclass(frozen=True)
class Delays:
    """Seconds from asking for a node until it serves: cloud CPU nodes 1-2 min, GPU nodes 3-5 min
    (the upper ends are used: a plan must hold when boots are slow)."""

    cpu_s: float = 120.0
    gpu_s: float = 300.0

    def of(self, spec: ClusterSpec, pool: str) -> float:
        return self.gpu_s if templates(spec)[pool].devices else self.cpu_s


@dataclass(frozen=True)
class Step:
    """One step of one strategy: what was up, what it cost, how its tasks fared."""

    start: pd.Timestamp
    rate: float
    counts: tuple[tuple[str, int], ...]
    tasks: float
    missed: float
    pools: tuple[tuple[str, float, float], ...]  #: per pool: (pool, dollars paid, dollars idle)

    @property
    def cost(self) -> float:
        """Dollars over the step, nodes starting included."""
        return sum(paid for _, paid, _ in self.pools)

    @property
    def idle_cost(self) -> float:
        """Dollars of paid capacity that sat idle."""
        return sum(idle for _, _, idle in self.pools)


@dataclass
class Judged:
    """A what-if of one step: misses, per-pool utilisation, where tasks queued, which nodes ran nothing."""

    miss: float
    util: dict[str, float]
    queued_ms: dict[str, float]
    idle: dict[str, int]


#: what-if streams each plan is judged on at its rate (their misses averaged; see the module docstring)
PLAN_STREAMS = 3


class Backtest:
    """The strategies over ``rates`` (arrivals/s per step, indexed by the step's start)."""

    def __init__(self, spec: ClusterSpec, workload, policy: str, target_miss: float, *, window_s: float = 120.0,
                 seed: int = 1, max_nodes: int = 8, delays: Delays = Delays(), idle_steps: int = 1,
                 progress: Callable[[str], None] | None = None) -> None:
        self.spec, self.workload, self.policy, self.target = spec, workload, policy, target_miss
        self.window_s, self.seed, self.max_nodes, self.delays, self.idle_steps = window_s, seed, max_nodes, delays, idle_steps
        self.cost = {p: node_cost_per_hour(spec, n) for p, n in templates(spec).items()}
        self.layouts = current_shape(spec).layouts
        self._plans: dict[float, Shape] = {}
        self._judged: dict[tuple, Judged] = {}
        self.progress = progress

    # ------------------------------------------------------------------ the two caches
    def plan(self, rate: float) -> Shape:
        """The cheapest shape found meeting the target at ``rate`` rounded up to the grid
        (:data:`RATE_FLOOR` times a power of :data:`RATE_STEP`).

        Grid point k's search starts from grid point k-1's plan (the first's from the cluster's own
        counts), so every grid point up to ``rate``'s is planned, in order: neighbouring plans differ
        by a node or two, where a search from the cluster's own counts to a far demand climbs through
        overloaded what-ifs; and a plan is the same whatever rates were asked for before it."""
        k = max(0, math.ceil(math.log(max(rate, 1e-9) / RATE_FLOOR) / math.log(RATE_STEP) - 1e-9))
        prev = None
        for j in range(k + 1):
            r = round(RATE_FLOOR * RATE_STEP ** j, 6)
            if r not in self._plans:
                streams = plan_streams(self.workload, r, self.window_s, self.seed)
                self._plans[r] = recommend(self.spec, streams, self.policy, self.target, self.max_nodes,
                                           layouts=False, start=prev).best.shape
                if self.progress:
                    self.progress(f"plan for {r:.2f}/s: {dict(self._plans[r].counts)}")
            prev = self._plans[r]
        return prev

    def judge(self, counts: tuple[tuple[str, int], ...], rate: float) -> Judged:
        """The what-if of ``counts`` at ``rate`` (rounded to :data:`JUDGE_ROUND` of itself, and remembered)."""
        r = _rounded(rate)
        key = (counts, r)
        hit = self._judged.get(key)
        if hit is not None:
            return hit
        if r <= 0 or sum(n for _, n in counts) == 0:
            hit = Judged(0.0 if r <= 0 else 1.0, {}, {}, {p: n for p, n in counts})
        else:
            cluster = build(self.spec, Shape(counts, self.layouts))
            tasks = demand_streams(self.workload, r, self.window_s, [self.seed])[0]
            res = simulate_on(cluster, tasks, self.policy, self.seed, timeline_points=50)
            rec = res.records
            ran = set(rec.loc[rec["start"].notna(), "node"].astype(str))  # a task started there
            idle = {}
            for n in cluster.nodes:
                idle[n.pool] = idle.get(n.pool, 0) + (n.name not in ran)
            hit = Judged(res.summary["slo_miss_rate"], res.summary.get("utilisation", {}),
                         rec.groupby("pool")["queue_ms"].sum().to_dict(), idle)
        self._judged[key] = hit
        return hit

    # ------------------------------------------------------------------ the strategies
    def run(self, name: str, rates: pd.Series, history: pd.Series, forecast_rates: pd.Series | None = None) -> list[Step]:
        step_s = _step_seconds(rates)
        if name == "static":
            shape = self.plan(peak_rate(history))
            return [self._step(t, r, shape.counts, {}, step_s) for t, r in rates.items()]
        if name == "hindsight":
            return self._forecast(rates, rates, step_s)
        if name in FORECASTS:
            if forecast_rates is None:
                raise ValueError(f"the {name} strategy needs forecast_rates")
            missing = sorted(set(rates.index.floor("1h")) - set(forecast_rates.index))
            if missing:
                raise ValueError(f"no forecast for {missing[0]}")
            per_step = pd.Series(forecast_rates.reindex(rates.index.floor("1h")).to_numpy(), index=rates.index)
            return self._forecast(rates, per_step, step_s, react=name == "forecast+reactive")
        if name == "reactive":
            return self._reactive(rates, step_s)
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")

    def _forecast(self, rates: pd.Series, planned_rates: pd.Series, step_s: float, react: bool = False) -> list[Step]:
        """Each step served by the plan for its ``planned_rates`` entry (same index as ``rates``), the
        nodes a plan adds asked for a boot ahead."""
        out, prev = [], None
        extra: dict[str, int] = {}  # react: nodes added on top of the plan where tasks queued
        pending: list[tuple[float, str]] = []  # react: (seconds until up, pool)
        calm: dict[str, int] = {}  # react: steps in a row that met the target without one added node
        for (t, r), planned in zip(rates.items(), planned_rates.to_numpy(dtype=float)):
            counts = self.plan(planned).counts
            if prev is not None and prev != counts and self._cost(prev) <= self._cost(counts) \
                    and self.judge(prev, planned).miss <= self.target:
                counts = prev  # what is up already holds the plan's rate at no more cost: no boots
            # nodes the next plan adds are asked for a start delay ahead, so they serve from its first step
            started = _added(prev, counts) if prev is not None else {}
            prev = counts
            if not react:
                out.append(self._step(t, r, counts, started, step_s))
                continue
            planned_n = dict(counts)
            for p in list(extra):  # a node the plan adds where one added is up is that node: no boot
                take = min(started.get(p, 0), extra[p])
                if take:
                    started[p] -= take
                    extra[p] -= take
                extra[p] = max(0, min(extra[p], self.max_nodes - planned_n.get(p, 0)))
            started = {p: n for p, n in started.items() if n}
            for p in [p for s, p in pending if s <= 0]:
                if planned_n.get(p, 0) + extra.get(p, 0) < self.max_nodes:
                    extra[p] = extra.get(p, 0) + 1
            pending = [(s, p) for s, p in pending if s > 0]
            serving = _plus(counts, extra)
            j = self.judge(serving, r)
            out.append(self._step(t, r, serving, started, step_s, judged=j, booting=_booting(pending)))
            pending = [(s - step_s, p) for s, p in pending]
            self._react(j, dict(serving), pending)
            for p in [p for p, n in extra.items() if n]:
                fewer = _plus(counts, {**extra, p: extra[p] - 1})
                calm[p] = calm.get(p, 0) + 1 if self.judge(fewer, r).miss <= self.target else 0
                if calm[p] >= self.idle_steps:
                    extra[p] -= 1
                    calm[p] = 0
        return out

    def _react(self, j: Judged, up: dict[str, int], pending: list[tuple[float, str]]) -> None:
        """A step whose SLO misses exceeded the target asks for a node where tasks queued longest (one
        boot at a time per pool, at most ``max_nodes`` a pool): appended to ``pending``."""
        if j.miss > self.target and j.queued_ms:
            pool = max(j.queued_ms, key=j.queued_ms.get)
            if j.queued_ms[pool] > 0 and up.get(pool, 0) < self.max_nodes and not any(p == pool for _, p in pending):
                pending.append((self.delays.of(self.spec, pool), pool))

    def _reactive(self, rates: pd.Series, step_s: float) -> list[Step]:
        first = float(rates.iloc[0])
        up = dict(self.plan(first).counts)
        pending: list[tuple[float, str]] = []  # (seconds until up, pool)
        idle_for: dict[str, int] = {p: 0 for p in up}
        out = []
        for t, r in rates.items():
            ready = [p for s, p in pending if s <= 0]
            pending = [(s, p) for s, p in pending if s > 0]
            for p in ready:
                up[p] += 1
            counts = tuple(up.items())
            j = self.judge(counts, r)
            # a node asked for exists (and is billed) from then on; it serves from the first step after its boot
            out.append(self._step(t, r, counts, {}, step_s, judged=j, booting=_booting(pending)))
            pending = [(s - step_s, p) for s, p in pending]
            self._react(j, up, pending)
            for p, n_idle in j.idle.items():
                idle_for[p] = idle_for.get(p, 0) + 1 if n_idle > 0 else 0
                if idle_for[p] >= self.idle_steps and up.get(p, 0) > 0 and sum(up.values()) > 1:
                    up[p] -= 1
                    idle_for[p] = 0
        return out

    def _cost(self, counts: tuple[tuple[str, int], ...]) -> float:
        return sum(self.cost[p] * n for p, n in counts)

    def _step(self, t: pd.Timestamp, rate: float, counts: tuple[tuple[str, int], ...], started: dict[str, int],
              step_s: float, judged: Judged | None = None, booting: dict[str, float] | None = None) -> Step:
        j = judged or self.judge(counts, rate)
        hours = step_s / 3600.0
        paid: dict[str, float] = {}
        idle: dict[str, float] = {}  # paid for and idle: the unused part of what serves, and every booting node
        for p, n in counts:
            paid[p] = self.cost[p] * n * hours
            idle[p] = paid[p] * (1.0 - min(1.0, j.util.get(p, 0.0)))
        boots = [(p, self.cost[p] * n * self.delays.of(self.spec, p) / 3600.0) for p, n in started.items()]
        boots += [(p, self.cost[p] * f * hours) for p, f in (booting or {}).items()]
        for p, dollars in boots:
            paid[p] = paid.get(p, 0.0) + dollars
            idle[p] = idle.get(p, 0.0) + dollars
        tasks = rate * step_s
        if self.progress and t.minute == 0 and t.hour == 0:
            self.progress(f"{t:%Y-%m-%d}: {dict(counts)}")
        return Step(t, rate, counts, tasks, j.miss * tasks, tuple((p, paid[p], idle[p]) for p in paid))


def layouts_text(layouts: tuple, spec: ClusterSpec, note: str = "") -> str:
    """``layouts`` (per MIG pool, per GPU its instances) as one line, with whether they are ``spec``'s
    own (and ``note``: why, when a recommendation was asked for)."""
    if not layouts:
        return "none (no MIG pool)"
    own = dict(current_shape(spec).layouts)
    why = f": {note}" if note else ""
    return "; ".join(f"{p} {' | '.join(','.join(g) for g in lay)}" + (f" (the cluster's own{why})" if own.get(p) == lay
                                                                     else " (recommended for the peak hour)")
                     for p, lay in layouts)


def _rounded(rate: float) -> float:
    if rate <= 0:
        return 0.0
    k = round(math.log(rate) / math.log1p(JUDGE_ROUND))
    return float(f"{(1 + JUDGE_ROUND) ** k:.4g}")


def _cheaper(saving_pct: float) -> str:
    if not math.isfinite(saving_pct):
        return "no static cost to compare"
    return f"{saving_pct:.1f}% cheaper" if saving_pct >= 0 else f"{-saving_pct:.1f}% dearer"


def _booting(pending: list[tuple[float, str]]) -> dict[str, float]:
    """Nodes asked for and not up yet, per pool (billed for the step, serving nothing)."""
    out: dict[str, float] = {}
    for _, p in pending:
        out[p] = out.get(p, 0.0) + 1.0
    return out


def _plus(counts: tuple[tuple[str, int], ...], extra: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """``counts`` with ``extra`` nodes added per pool (every pool is in ``counts``: a shape lists them all)."""
    return tuple((p, n + extra.get(p, 0)) for p, n in counts)


def _added(before: tuple[tuple[str, int], ...], after: tuple[tuple[str, int], ...]) -> dict[str, int]:
    b = dict(before)
    return {p: n - b.get(p, 0) for p, n in after if n > b.get(p, 0)}


def _step_seconds(rates: pd.Series) -> float:
    if len(rates) < 2:
        raise ValueError("a backtest needs at least two steps")
    return float((rates.index[1] - rates.index[0]) / pd.Timedelta(seconds=1))


def summarize(steps: Sequence[Step], pools: Sequence[str] = ()) -> dict:
    """Cost, SLO misses (% of tasks), slack (% of paid capacity idle), node counts of one strategy, and
    per pool its share of the cost and its own slack (where the idle dollars sit): for each of
    ``pools`` (a share of 0 where nothing was paid, its slack then NaN) and any other pool paid for."""
    cost = sum(s.cost for s in steps)
    tasks = sum(s.tasks for s in steps)
    out = {"cost_$": cost, "slo_miss_%": 100.0 * sum(s.missed for s in steps) / tasks if tasks else float("nan"),
           "slack_%": 100.0 * sum(s.idle_cost for s in steps) / cost if cost else float("nan"),
           "mean_nodes": float(np.mean([sum(n for _, n in s.counts) for s in steps])),
           "max_nodes": int(max(sum(n for _, n in s.counts) for s in steps))}
    paid: dict[str, float] = {}
    idle: dict[str, float] = {}
    for s in steps:
        for p, pay, unused in s.pools:
            paid[p] = paid.get(p, 0.0) + pay
            idle[p] = idle.get(p, 0.0) + unused
    for p in sorted(set(pools) | {p for p, v in paid.items() if v > 0}):
        pay = paid.get(p, 0.0)
        out[f"{p}_cost_%"] = 100.0 * pay / cost if cost else float("nan")
        out[f"{p}_slack_%"] = 100.0 * idle.get(p, 0.0) / pay if pay > 0 else float("nan")
    return out


def hourly_upper_forecast(rates: pd.Series, start: pd.Timestamp, days: int, level: int = 95,
                          model: str = "mstl") -> pd.Series:
    """Arrivals/s forecast hour by hour for ``days`` days from ``start`` (floored to the hour), refitted
    each day on the hourly history before that day's origin (``rates``: arrivals/s per step; only the
    past of each origin is read). The ``level`` % upper bound of ``model``."""
    from capacity.forecast import forecast

    hourly = rates.resample("1h").mean()
    out = []
    for d in range(days):
        origin = start.floor("1h") + pd.Timedelta(days=d)
        past = hourly[hourly.index < origin]
        series = pd.DataFrame({"unique_id": "arrivals", "ds": past.index, "y": past.to_numpy() * 3600.0})
        fc = forecast(series, pd.Timedelta("1h"), 25, (model,), (level,)).frame  # 25: a start between hours
        part = fc[fc["model"] == model]
        out.append(pd.Series(part[f"hi_{level}"].clip(lower=0).to_numpy() / 3600.0, index=pd.to_datetime(part["ds"])))
    joined = pd.concat(out)
    return joined[~joined.index.duplicated(keep="last")]  # an hour in two forecasts: the fresher


def sub_hour_peak(history: pd.Series, level: int = 95) -> float:
    """How far a step's rate rises above its hour's mean: the ``level`` % quantile of their ratio in
    ``history`` (arrivals/s per step; at least 1). An hourly forecast's bound covers the hour's mean,
    but the capacity of a step has to hold the step's own rate (bursts, Poisson noise within the hour)."""
    hour_mean = history.groupby(history.index.floor("1h")).transform("mean")
    ratio = (history / hour_mean.where(hour_mean > 0)).dropna()
    return max(1.0, float(ratio.quantile(level / 100.0))) if len(ratio) else 1.0


@dataclass
class Result:
    """Every strategy's steps and summary, and how long each part took."""

    steps: dict[str, list[Step]] = field(default_factory=dict)
    summary: pd.DataFrame | None = None
    plans: dict[tuple[float, float], Shape] = field(default_factory=dict)  # per (target, planned rate)
    seconds: dict[str, float] = field(default_factory=dict)
    peak_factor: float = 1.0  # the forecast strategy's hourly bound times this (:func:`sub_hour_peak`)
    layouts: tuple = ()  # the MIG layout per MIG pool every strategy ran with (:func:`peak_layouts`)
    layouts_note: str = ""  # why they are the cluster's own, when a recommendation was asked for


def series_rates(workload, days_total: float, step: pd.Timedelta, seed: int | None = None,
                 load_factor: float | None = None) -> pd.Series:
    """Arrivals/s per step of the workload's own stream (its rate profile included) over ``days_total`` days."""
    from capacity.sources import from_workload

    d = from_workload(workload, interval=step, seed=seed, duration_s=days_total * 86400.0, load_factor=load_factor)
    tot = d.totals()["arrivals"]
    return tot / step.total_seconds()


def peak_rate(history: pd.Series) -> float:
    """The highest hourly mean rate of ``history`` (arrivals/s per step): what static peak plans for."""
    return float(history.resample("1h").mean().max())


def plan_streams(workload, rate: float, window_s: float, seed: int) -> list:
    """The :data:`PLAN_STREAMS` what-if streams a plan for ``rate`` must hold."""
    return demand_streams(workload, rate, window_s, [seed + 1000 * j for j in range(PLAN_STREAMS)])


def peak_layouts(spec: ClusterSpec, workload, policy: str, target_miss: float, rate: float, *, window_s: float = 120.0,
                 seed: int = 1, max_nodes: int = 8) -> tuple | None:
    """The MIG layouts :func:`capacity.recommend.recommend` finds for ``rate`` (the history's peak hour);
    None when no cluster within ``max_nodes`` met the target there.

    Why once, for every strategy: re-partitioning a GPU's MIG instances needs the GPU drained, so a
    scaler changes node counts, not layouts, from hour to hour; and all strategies on the same
    layout keeps their comparison about when capacity is up, not how a GPU is cut."""
    found = recommend(spec, plan_streams(workload, rate, window_s, seed), policy, target_miss, max_nodes, layouts=True)
    return found.best.shape.layouts if found.feasible else None


def compare(spec: ClusterSpec, workload, policy: str, target_miss: float, *, days: int = 3, history_days: int = 14,
            step: pd.Timedelta = pd.Timedelta("10min"), model: str = "mstl", level: int = 95, seed: int | None = None,
            load_factor: float | None = None, layouts: bool = True, forecast_miss: Sequence[float] = (),
            progress: Callable[[str], None] | None = None, **kwargs) -> Result:
    """The strategies (:data:`STRATEGIES`) over the last ``days`` days of ``history_days + days`` days of the
    workload; with ``layouts``, on the MIG layouts :func:`peak_layouts` finds (else the cluster's own).

    ``forecast_miss``: more SLO-miss targets for the forecast strategies and hindsight (their plans, and
    the reactive net's trigger), each giving rows named ``<strategy> @<target>%`` (:func:`row_name`).
    Static peak provisioning meets ``target_miss`` at the peak and so misses far less off-peak; a
    forecast planning for a tighter target is how it matches those misses, at a cost the rows show.
    ``seed``: the workload's draw and the what-ifs' (default: the workload's own draw, what-if seed 1)."""
    import time

    if days < 1 or history_days < 1:
        raise ValueError(f"days and history_days must be >= 1, got {days}, {history_days}")
    rates = series_rates(workload, history_days + days, step, seed, load_factor)
    cut = rates.index[0] + pd.Timedelta(days=history_days)
    history, test = rates[rates.index < cut], rates[rates.index >= cut]
    res = Result()
    t0 = time.perf_counter()
    what_if_seed = 1 if seed is None else seed
    if layouts and current_shape(spec).layouts:
        peak = peak_rate(history)
        lays = peak_layouts(spec, workload, policy, target_miss, peak, seed=what_if_seed,
                            **{k: kwargs[k] for k in ("window_s", "max_nodes") if k in kwargs})
        if lays is None:
            res.layouts_note = f"no cluster within the node bounds met the target at the peak ({peak:.2f}/s)"
        else:
            spec = build(spec, Shape(current_shape(spec).counts, lays))
        res.seconds["layouts"] = time.perf_counter() - t0
    res.layouts = current_shape(spec).layouts
    kwargs["seed"] = what_if_seed
    bt = Backtest(spec, workload, policy, target_miss, progress=progress, **kwargs)
    planners = {target_miss: bt}
    for miss in forecast_miss:
        if miss not in planners:
            planners[miss] = Backtest(spec, workload, policy, miss, progress=progress, **kwargs)
            planners[miss]._judged = bt._judged  # a what-if's outcome does not depend on the target: one cache
    t0 = time.perf_counter()
    res.peak_factor = sub_hour_peak(history, level)
    upper = hourly_upper_forecast(rates, test.index[0], days, level, model) * res.peak_factor
    res.seconds["forecasting"] = time.perf_counter() - t0
    for miss, planner in planners.items():
        for name in STRATEGIES if planner is bt else PLANNED:
            t0 = time.perf_counter()
            row = name if planner is bt else row_name(name, miss)
            res.steps[row] = planner.run(name, test, history, upper)
            res.seconds[row] = time.perf_counter() - t0
    pools = list(templates(spec))
    res.summary = pd.DataFrame({n: summarize(s, pools) for n, s in res.steps.items()}).T
    res.plans = {(m, r): shape for m, p in planners.items() for r, shape in p._plans.items()}
    return res


def row_name(strategy: str, miss: float) -> str:
    """A strategy's row when its plans keep misses at most ``miss`` (a share), not the table's target."""
    return f"{strategy} @{100.0 * miss:g}%"


def _strategy_of(row: str) -> str:
    return row.split(" @", 1)[0]


def target_lines(table: pd.DataFrame) -> list[str]:
    """Issue 20's targets for forecast-driven scaling, each with its measured figure: for each row of a
    forecast strategy in ``table`` (:data:`FORECASTS`, ``@`` rows included), then each hindsight row's
    cost and misses beside static peak's."""
    s, r = table.loc["static"], table.loc["reactive"]

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    out = []
    for name in (n for n in table.index if _strategy_of(n) in FORECASTS):
        f = table.loc[name]
        saving = _saving(f, s)
        out += [
            f"{name} vs static peak: {_cheaper(saving)} (target >= 30% cheaper: {met(saving >= 30)}); SLO misses "
            f"{f['slo_miss_%']:.3f}% vs {s['slo_miss_%']:.3f}% (target no worse: {met(f['slo_miss_%'] <= s['slo_miss_%'])})",
            f"{name} vs reactive: SLO misses {f['slo_miss_%']:.3f}% vs {r['slo_miss_%']:.3f}% (target fewer: "
            f"{met(f['slo_miss_%'] < r['slo_miss_%'])}); cost ${f['cost_$']:,.2f} vs ${r['cost_$']:,.2f} (target no more: "
            f"{met(f['cost_$'] <= r['cost_$'])})",
            f"{name} slack {f['slack_%']:.1f}% (target <= 25%: {met(f['slack_%'] <= 25)}); static {s['slack_%']:.1f}%, "
            f"reactive {r['slack_%']:.1f}%",
        ]
    for name in (n for n in table.index if _strategy_of(n) == "hindsight"):
        h = table.loc[name]
        out.append(f"{name} (each step planned for its own actual rate): {_cheaper(_saving(h, s))} than static peak, "
                   f"SLO misses {h['slo_miss_%']:.3f}% vs {s['slo_miss_%']:.3f}%, slack {h['slack_%']:.1f}%")
    return out


def _saving(row: pd.Series, static: pd.Series) -> float:
    """Percent cheaper than static peak (negative: dearer)."""
    return 100.0 * (1.0 - row["cost_$"] / static["cost_$"]) if static["cost_$"] else float("nan")
