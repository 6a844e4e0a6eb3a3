"""The router's capacity views: a forecast of its own history's demand, and the latest recommendation.

Why a holder with a cache and one slot: a forecast fits every model to every series (seconds of
CPU), and the router's CPU is for placing tasks. One forecast is computed at a time; a request for
another while it runs is refused (429, with when to retry) instead of queueing behind it, and each
answer is kept ``capacity_cache_s`` so a page refreshed by many viewers costs one fit. The fits
themselves are :mod:`capacity.live`'s; this module only reads the history and holds the result.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from cluster.package_data import work_path
from serve_app.errors import ApiError
from serve_app.history import HistoryStore

#: how far back a forecast of each resolution reads the history (the store's retention may hold less)
#: (``1D`` reaches past the default 30-day retention: it sees what the history keeps)
LOOKBACK_S = {"15min": 7 * 86_400.0, "1h": 28 * 86_400.0, "1D": 365 * 86_400.0}


class CapacityViews:
    """Forecasts of ``history``'s demand (cached, one at a time) and the recommendation in ``folder``."""

    def __init__(self, history: HistoryStore, folder: str | Path, *, cache_s: float, max_rows: int) -> None:
        self.history = history
        self.folder = work_path(folder) if not Path(folder).is_absolute() else Path(folder)
        self.cache_s = cache_s
        self.max_rows = max_rows
        self._cache: dict[tuple, tuple[float, dict[str, Any]]] = {}
        self._slot = threading.Lock()
        self._running_since = 0.0

    def forecast(self, interval: str, horizon: int, models: tuple[str, ...]) -> dict[str, Any]:
        """The forecast document of :func:`capacity.live.history_forecast`; 409 with too little history,
        429 while another forecast is being computed."""
        from capacity.live import history_forecast
        from capacity.models import require_forecasters
        from cluster.config import UsageError

        step = pd.Timedelta(interval).total_seconds()
        # an answer is good until its TTL or the end of the interval in progress, whichever is first
        key = (interval, horizon, models, time.time() // step)
        hit = self._cache.get(key)
        if hit is not None and time.time() - hit[0] < self.cache_s:
            return {**hit[1], "cached": True}
        try:
            require_forecasters()
        except UsageError as exc:
            raise ApiError(503, f"this router cannot forecast: {str(exc).removeprefix('capacity: ')}") from None
        if not self._slot.acquire(blocking=False):
            busy = max(1, int(time.time() - self._running_since))
            raise ApiError(429, f"a capacity forecast has been computing for {busy} s; one is computed at a time: "
                                "retry shortly", headers={"Retry-After": "5"})
        self._running_since = now = time.time()
        try:
            since = now // step * step - LOOKBACK_S[interval]  # on an interval's start: no partial first interval
            rows = self.history.demand_rows(since, self.max_rows + 1)
            truncated = len(rows) > self.max_rows
            try:
                doc = history_forecast(rows[:self.max_rows], interval=interval, horizon=horizon, models=models,
                                       now=now, truncated=truncated)
            except ValueError as exc:  # NotEnoughHistory, or a fit the history cannot support
                raise ApiError(409, str(exc)) from None
            doc["seconds"] = round(time.time() - now, 3)
            self._cache = {k: v for k, v in self._cache.items() if time.time() - v[0] < self.cache_s}
            self._cache[key] = (now, doc)
            return {**doc, "cached": False}
        finally:
            self._slot.release()

    def recommendation(self) -> dict[str, Any]:
        """The latest ``capacity recommend`` result in the configured folder; 404 naming the command."""
        from capacity.live import read_recommendation

        try:
            return read_recommendation(self.folder)
        except FileNotFoundError as exc:
            raise ApiError(404, str(exc)) from None
        except (ValueError, KeyError, TypeError) as exc:  # a hand-edited or foreign file: say which
            raise ApiError(503, f"the recommendation in {self.folder} cannot be read: {exc}") from None
