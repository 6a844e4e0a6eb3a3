"""Promoting a challenger to champion, and the watch that rolls a bad promotion back.

A challenger earns a promotion in shadow (``PUT /v1/shadow``: it decides every task, never
acted on). Promoted (``POST /v1/policy/promote``), it becomes the active policy and the old
champion goes on deciding in shadow. Live outcomes then judge it: the router keeps each
policy's last ``window`` SLO verdicts (succeeded tasks, by the policy that placed them), and
once the new champion has ``window`` of its own it is compared with the old champion's rate
at the moment of promotion; worse by more than ``margin`` (absolute, 0.05 = five points of
SLO misses) and the old champion is restored. Every promotion and rollback is logged with its
figures. No HTTP here: the service calls :meth:`PromotionGuard.outcome` from the executor's
completion thread and acts on what it returns.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

P = TypeVar("P")
#: promotions and rollbacks kept in the log (newest last)
LOG_SIZE = 100


class PromotionRefused(ValueError):
    """A promotion that cannot be judged or has nothing to promote (409)."""


@dataclass
class Watch(Generic[P]):
    """A promotion under judgement: the old champion to restore and the miss rate to beat."""

    old: P
    old_name: str
    new_name: str
    baseline: float
    since: float


class PromotionGuard(Generic[P]):
    """Per-policy recent SLO verdicts, the promotion being watched and the log (see the module docstring)."""

    def __init__(self, window: int, margin: float) -> None:
        if window < 1 or not 0.0 <= margin < 1.0:
            raise ValueError("window must be >= 1 and margin in [0, 1)")
        self.window, self.margin = window, margin
        self._recent: dict[str, deque[bool]] = {}
        self.watch: Watch[P] | None = None
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self._lock = threading.Lock()

    def miss_rate(self, policy: str) -> tuple[float | None, int]:
        """(SLO-miss rate over ``policy``'s last ``window`` succeeded tasks, how many), (None, 0) without any."""
        with self._lock:
            seen = self._recent.get(policy)
            return (sum(seen) / len(seen), len(seen)) if seen else (None, 0)

    def promote(self, old: P, old_name: str, new_name: str) -> Watch[P]:
        """Start judging ``new_name`` against ``old_name``'s recent rate; refused while the old champion has
        fewer than ``window`` verdicts (nothing to judge against) or another promotion is being watched."""
        rate, n = self.miss_rate(old_name)
        with self._lock:
            if self.watch is not None:
                raise PromotionRefused(f"{self.watch.new_name} is still being judged ({self._progress()}); "
                                       "promote again once it is kept or rolled back")
            if rate is None or n < self.window:
                raise PromotionRefused(f"{old_name} has {n} SLO verdicts of the {self.window} the rollback "
                                       "compares with (promotion_window): let it run longer first")
            self._recent[new_name] = deque(maxlen=self.window)  # judged on its own tasks from now on
            self.watch = Watch(old, old_name, new_name, rate, time.time())
            self._entry("promoted", new_name, previous=old_name, baseline_miss_rate=round(rate, 4))
            return self.watch

    def outcome(self, policy: str, missed: bool) -> Watch[P] | None:
        """Record a succeeded task's SLO verdict; the watch to roll back when this verdict condemns it."""
        with self._lock:
            seen = self._recent.get(policy)
            if seen is None:
                seen = self._recent[policy] = deque(maxlen=self.window)
            seen.append(missed)
            w = self.watch
            if w is None or policy != w.new_name or len(seen) < self.window:
                return None
            rate = sum(seen) / len(seen)
            self.watch = None
            if rate > w.baseline + self.margin:
                self._entry("rolled back", w.old_name, previous=w.new_name, miss_rate=round(rate, 4),
                            baseline_miss_rate=round(w.baseline, 4))
                return w
            self._entry("kept", w.new_name, miss_rate=round(rate, 4), baseline_miss_rate=round(w.baseline, 4))
            return None

    def state(self) -> dict[str, Any]:
        """The watch in progress and the log, for ``GET /v1/policy``."""
        with self._lock:
            watching = None if self.watch is None else {
                "policy": self.watch.new_name, "against": self.watch.old_name, "since": self.watch.since,
                "baseline_miss_rate": round(self.watch.baseline, 4), "progress": self._progress()}
            return {"window": self.window, "margin": self.margin, "watching": watching, "log": list(self.log)}

    def _progress(self) -> str:
        seen = self._recent.get(self.watch.new_name) if self.watch else None
        return f"{len(seen or ())} of {self.window} verdicts"

    def _entry(self, event: str, policy: str, **figures: Any) -> None:
        self.log.append({"at": time.time(), "event": event, "policy": policy, "window": self.window,
                         "margin": self.margin, **figures})
