"""The demand table: arrivals and resource-seconds per interval, task kind, pool and GPU share.

Why one table for every source: the forecasters, the backtests and (next) the recommender
read the same shape whether the demand came from a workload file, a trace or the router's
history, so none of them knows where it came from.

:attr:`DemandSeries.frame` is dense and long: one row per interval (``ds``, its start) and
group (``kind``, ``pool``, ``share``), zeros where nothing arrived. Metrics:

* ``arrivals``: tasks that arrived in the interval;
* ``cpu_s``: CPU core-seconds; ``mem_gb_s``: memory GB-seconds;
* ``gpu_s``: GPU-seconds in whole-device equivalents (a quarter GPU for 4 s is 1, a
  ``3g.40gb`` MIG instance for 7 s is 3, as :attr:`scheduler.task.Task.gpu_amount` counts);
  divide by the share's fraction for MIG instance-seconds;
* a source may add its own (the Azure trace: ``context_tokens``, ``generated_tokens``).

``share`` is ``cpu`` | ``slice`` (a time-sliced fraction) | ``whole`` | ``mig:<profile>``, so
MIG demand is per profile. ``pool`` is where the task ran (history) or ``any`` (not placed:
workload files and traces). Each task's resource-seconds are its amounts times its run time
(work on the reference device, or the measured run time in a history) and are booked in the
interval it *arrived* in, not spread over the intervals it ran in: exact sums per arrival,
which is what a forecast of demand needs when intervals are much longer than tasks.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cluster.config import UsageError

KEYS = ("kind", "pool", "share")
RESOURCES = ("cpu_s", "mem_gb_s", "gpu_s")
METRICS = ("arrivals", *RESOURCES)
POOL_ANY = "any"
#: series groupings: the metric each splits and the key it splits by ("totals": no split)
GROUPINGS: dict[str, tuple[str, str | None]] = {
    "totals": ("*", None), "kinds": ("arrivals", "kind"), "pools": ("arrivals", "pool"), "shares": ("gpu_s", "share"),
}


@dataclass(frozen=True)
class DemandSeries:
    """Demand of one source per interval (see the module notes for the columns)."""

    frame: pd.DataFrame
    interval: pd.Timedelta
    source: str
    metrics: tuple[str, ...] = METRICS

    @property
    def n_intervals(self) -> int:
        return int(self.frame["ds"].nunique())

    def totals(self) -> pd.DataFrame:
        """Every metric summed over the groups, indexed by ``ds``."""
        return self.frame.groupby("ds")[list(self.metrics)].sum()

    def series(self, groupings: Sequence[str] = ("totals", "kinds", "shares")) -> pd.DataFrame:
        """The series to forecast, long as statsforecast and mlforecast read them: ``unique_id, ds, y``.

        ``totals`` gives one series per metric (``unique_id`` = the metric); ``kinds`` arrivals per
        kind (``arrivals/kind=fraud_scoring``), ``pools`` arrivals per pool and ``shares`` GPU-seconds
        per share (``gpu_s/share=mig:1g.10gb``). A split into one group only (it would repeat the
        total) and a series that is zero throughout are left out. :func:`parse_id` reads an id back.
        """
        parts = []
        for g in groupings:
            if g not in GROUPINGS:
                raise UsageError(f"--series: unknown grouping {g!r} (known: {', '.join(GROUPINGS)})")
            metric, key = GROUPINGS[g]
            if key is None:
                tot = self.totals()
                parts += [pd.DataFrame({"unique_id": m, "ds": tot.index, "y": tot[m].to_numpy(float)})
                          for m in self.metrics]
                continue
            if metric not in self.metrics:
                continue
            wide = self.frame.pivot_table(index="ds", columns=key, values=metric, aggfunc="sum", fill_value=0)
            if wide.shape[1] < 2:
                continue
            parts += [pd.DataFrame({"unique_id": f"{metric}/{key}={v}", "ds": wide.index, "y": wide[v].to_numpy(float)})
                      for v in wide.columns]
        out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["unique_id", "ds", "y"])
        alive = out.groupby("unique_id")["y"].transform(lambda y: bool((y != 0).any()))
        return out[alive.astype(bool)].reset_index(drop=True)


def parse_id(unique_id: str) -> tuple[str, dict[str, str]]:
    """``"gpu_s/share=mig:1g.10gb"`` -> ``("gpu_s", {"share": "mig:1g.10gb"})``: what a recommender needs."""
    metric, _, rest = unique_id.partition("/")
    dims = dict(p.split("=", 1) for p in rest.split("/") if p) if rest else {}
    return metric, dims


def parse_interval(text: str | pd.Timedelta, flag: str = "--interval") -> pd.Timedelta:
    """``"1h"``, ``"1D"``, ``"10s"``, ``"15min"`` -> a positive :class:`pandas.Timedelta` (else :class:`UsageError`)."""
    try:
        td = pd.Timedelta(text)
    except (ValueError, TypeError):
        raise UsageError(f"{flag}: not a duration such as 1h, 1D, 10s or 15min: {text!r}") from None
    if td <= pd.Timedelta(0):
        raise UsageError(f"{flag}: must be positive, got {text!r}")
    return td


def bin_demand(t_s: np.ndarray, keys: Mapping[str, np.ndarray], values: Mapping[str, np.ndarray], *,
               start: pd.Timestamp, interval: pd.Timedelta, source: str, n_intervals: int | None = None,
               metrics: tuple[str, ...] = METRICS) -> DemandSeries:
    """Sum per-task demand into intervals: ``t_s`` seconds after ``start``; ``keys`` the three
    group columns; ``values`` one array per metric besides ``arrivals`` (counted here)."""
    step = interval.total_seconds()
    b = np.floor(np.asarray(t_s, dtype=float) / step).astype(np.int64)
    if len(b) and b.min() < 0:
        raise ValueError("a task arrives before the series starts")
    n = int(n_intervals if n_intervals is not None else (b.max() + 1 if len(b) else 0))
    keep = b < n
    df = pd.DataFrame({**{k: np.asarray(keys[k], dtype=object)[keep] for k in KEYS}, "bin": b[keep],
                       "arrivals": np.ones(int(keep.sum()), dtype=np.int64),
                       **{m: np.asarray(values[m], dtype=float)[keep] for m in metrics if m != "arrivals"}})
    summed = df.groupby([*KEYS, "bin"], sort=True)[list(metrics)].sum()
    return _dense(summed, n, start, interval, source, metrics)


def _dense(summed: pd.DataFrame, n: int, start: pd.Timestamp, interval: pd.Timedelta, source: str,
           metrics: tuple[str, ...]) -> DemandSeries:
    """``summed`` (indexed by the keys and ``bin``) on the full grid of groups x intervals, zeros filled."""
    groups = summed.index.droplevel("bin").unique()
    if len(groups) == 0:
        groups = pd.MultiIndex.from_tuples([("none", POOL_ANY, "cpu")], names=list(KEYS))
    grid = pd.MultiIndex.from_tuples([(*g, i) for g in groups for i in range(n)], names=[*KEYS, "bin"])
    full = summed.reindex(grid, fill_value=0).reset_index()
    full["arrivals"] = full["arrivals"].astype(np.int64)
    full.insert(0, "ds", pd.Timestamp(start) + full.pop("bin").to_numpy() * interval)
    return DemandSeries(full.sort_values(["ds", *KEYS], ignore_index=True), interval, source, metrics)


def from_counts(counts: np.ndarray, work: np.ndarray, groups: Sequence[tuple[str, str, str]],
                amounts: np.ndarray, *, start: pd.Timestamp, interval: pd.Timedelta, source: str) -> DemandSeries:
    """The table from per-group, per-interval sums (``counts`` and ``work`` are groups x intervals;
    ``amounts`` groups x 3 as cores, GB and GPUs): the fast path for millions of workload tasks."""
    n = counts.shape[1]
    rows = {"arrivals": counts.reshape(-1).astype(np.int64)}
    for j, m in enumerate(RESOURCES):
        rows[m] = (work * amounts[:, j:j + 1]).reshape(-1)
    index = pd.MultiIndex.from_tuples([(*g, i) for g in groups for i in range(n)], names=[*KEYS, "bin"])
    summed = pd.DataFrame(rows, index=index)
    summed = summed.groupby(level=[*KEYS, "bin"]).sum()  # two scenarios may share (kind, pool, share)
    return _dense(summed, n, start, interval, source, METRICS)
