"""Admission control: per-client rate and concurrency, fair shares under overload, bounded queues.

What a request must get past before the router commits work (all answered
``429`` with ``Retry-After`` and the reason, nothing recorded):

* **rate** - a token bucket per client (``rate_per_s`` refill, ``burst`` size); a
  batch takes one token per task, so splitting work into batches buys nothing;
* **in flight** - a client's accepted, unfinished tasks stay under its
  ``max_in_flight``, and the router's under ``max_in_flight``;
* **fair share** - once the router holds half its ``max_in_flight``, a client may
  hold at most ``max_in_flight`` divided by the number of clients with work in flight
  (counting itself), and never more than half. A lone flooder stops at half, so the
  other half stays open to the clients that come next, and N clients can fill the
  router between them: the seat-per-flow idea of Kubernetes' API Priority and
  Fairness, without its priority levels;
* **queued work** - the pools that could host the task all hold more than
  ``pool_max_queued`` waiting tasks or ``pool_max_queued_s`` seconds of expected
  work: more would only wait.

Pure bookkeeping under one lock; the clock is injectable for tests.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from serve_app.auth import ANONYMOUS, Principal
from serve_app.errors import ApiError


@dataclass(frozen=True)
class Limits:
    """The router's admission settings (from :class:`serve_app.config.RouterConfig`)."""

    rate_per_s: float = 200.0
    burst: int = 2000
    key_max_in_flight: int = 2000
    max_in_flight: int = 10_000
    anonymous_rate_per_s: float = 100.0
    anonymous_burst: int = 256
    pool_max_queued: int = 2000
    pool_max_queued_s: float = 86_400.0


def too_many(limit: str, reason: str, retry_after_s: float) -> ApiError:
    """429 with ``Retry-After`` (whole seconds, 1 to 3600) and which ``limit`` was hit."""
    return ApiError(429, reason, type="too_many_requests", extra={"limit": limit},
                    headers={"Retry-After": str(max(1, min(3600, math.ceil(retry_after_s))))})


class Admission:
    """Token buckets and in-flight counts per client name."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic,
                 on_refuse: Callable[[str], None] | None = None) -> None:
        self.limits = limits
        self.clock = clock
        self.on_refuse = on_refuse  # told which limit refused a request (metrics)
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, at)
        self.in_flight: Counter[str] = Counter()

    def _refuse(self, limit: str, reason: str, retry_after_s: float) -> ApiError:
        if self.on_refuse is not None:
            self.on_refuse(limit)
        return too_many(limit, reason, retry_after_s)

    # ------------------------------------------------------------------ rate
    def _rate(self, who: Principal) -> tuple[float, float]:
        if who.name == ANONYMOUS and not who.admin:
            return self.limits.anonymous_rate_per_s, float(self.limits.anonymous_burst)
        q = who.quota
        return (q.rate_per_s if q.rate_per_s is not None else self.limits.rate_per_s,
                float(q.burst if q.burst is not None else self.limits.burst))

    def charge(self, who: Principal, n: int = 1) -> None:
        """Take ``n`` tokens from ``who``'s bucket, or raise 429 (the admin is not limited).

        A request larger than the bucket could ever hold is refused with 422: no wait helps it.
        """
        if who.admin:
            return
        rate, burst = self._rate(who)
        if n > burst:
            raise ApiError(422, f"{n} tasks in one call is more than {who.name}'s burst of {burst:.0f}; "
                                "split the batch", loc=["body", "tasks"])
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(who.name, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens < n:
                self._buckets[who.name] = (tokens, now)
                raise self._refuse("rate", f"rate limit: {who.name} may send {rate:g} tasks/s (burst {burst:.0f})",
                               (n - tokens) / rate)
            self._buckets[who.name] = (tokens - n, now)

    # ------------------------------------------------------------------ in flight
    def enter(self, who: Principal) -> None:
        """Count one more task in flight for ``who``, or raise 429 (see the module docstring)."""
        lim = self.limits
        with self._lock:
            total = sum(self.in_flight.values())
            mine = self.in_flight[who.name]
            if not who.admin:
                own = who.quota.max_in_flight if who.quota.max_in_flight is not None else lim.key_max_in_flight
                if mine >= own:
                    raise self._refuse("in_flight", f"{who.name} has {mine} tasks in flight, its limit", 5)
                if total >= lim.max_in_flight:
                    raise self._refuse("in_flight", f"the router holds {total} tasks in flight, its limit", 5)
                half = lim.max_in_flight // 2
                if total >= half:
                    clients = sum(1 for v in self.in_flight.values() if v > 0) + (mine == 0)
                    share = max(1, min(half, lim.max_in_flight // clients))
                    if mine >= share:
                        raise self._refuse("fair_share", f"the router is busy ({total} tasks in flight): {who.name} holds {mine}, "
                                       f"its fair share of {share} among {clients} clients", 5)
            self.in_flight[who.name] += 1

    def restore(self, owner: str) -> None:
        """Count a task already accepted (resumed after a restart), past every limit."""
        with self._lock:
            self.in_flight[owner] += 1

    def leave(self, owner: str) -> None:
        with self._lock:
            if self.in_flight[owner] > 1:
                self.in_flight[owner] -= 1
            else:
                self.in_flight.pop(owner, None)

    # ------------------------------------------------------------------ queues
    def full_pools(self, queued: Mapping[str, tuple[int, float]]) -> frozenset[str]:
        """The pools at their queue bound (no more work should wait there)."""
        lim = self.limits
        return frozenset(p for p, (n, secs) in queued.items()
                         if n >= lim.pool_max_queued or secs >= lim.pool_max_queued_s)

    def check_pools(self, pools: Iterable[str], queued: Mapping[str, tuple[int, float]]) -> None:
        """429 if every pool in ``pools`` (those that could host the task) is over its queue bound.

        ``queued[pool]`` is (tasks waiting, their expected seconds of work).
        """
        lim = self.limits
        waiting = {p: queued.get(p, (0, 0.0)) for p in pools}
        if waiting and len(self.full_pools(waiting)) == len(waiting):
            full = ", ".join(f"{p} ({n} tasks, {secs:.0f} s of work waiting)" for p, (n, secs) in waiting.items())
            raise self._refuse("queue", f"every pool that could run it has a full queue: {full} "
                                        f"(bounds: {lim.pool_max_queued} tasks or {lim.pool_max_queued_s:g} s)", 10)
