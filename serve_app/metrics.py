"""The router's metrics, exported through Ray's Prometheus endpoint (``ray.util.metrics``).

Every node's metrics agent serves what the processes on it record; Ray prefixes
custom metric names with ``ray_`` (README "Metrics and dashboards"). Names follow
Prometheus' conventions so that PromQL and Grafana units work without a scale factor:
times in seconds (``_seconds``), money in ``_dollars``, counters end in ``_total`` (named so
here: Ray exports a counter under that name either way, and with ``_total`` its legacy
OpenCensus exporter adds no deprecated gauge twin).

* ``ray_orch_decisions_total`` (counter; policy, pool, endpoint): placement decisions,
  ``pool="none"`` when not placed;
* ``ray_orch_decision_latency_seconds`` (histogram; policy): time the policy took for one task;
* ``ray_orch_tasks_accepted_total`` (counter; policy): tasks accepted by ``POST /v1/tasks``;
* ``ray_orch_tasks_finished_total`` (counter; pool, status): tasks that ended, by outcome;
* ``ray_orch_task_latency_seconds`` (histogram; pool): end-to-end latency of succeeded tasks;
* ``ray_orch_task_cost_dollars_total`` (counter; pool): cost of finished tasks;
* ``ray_orch_slo_misses_total`` (counter; priority): succeeded tasks over their SLO;
* ``ray_orch_tasks_in_flight`` (gauge): tasks accepted and not yet finished;
* ``ray_orch_shadow_decisions_total`` (counter; policy, agrees): decisions of the shadow policy,
  by whether it chose what the active one did (``true``, ``false``; ``error`` when it failed) (its decision time is under the
  ``ray_orch_decision_latency_seconds`` histogram with ``policy="shadow:<name>"``);
* ``ray_orch_requests_refused_total`` (counter; reason): requests answered 429 by admission
  control (``rate``, ``in_flight``, ``fair_share``, ``queue``), per client name deliberately
  not: a metric label per key would let any key holder grow the exporter's series.

The router measures in milliseconds (its records' ``*_ms`` fields); :class:`RouterMetrics`
converts at this boundary, so callers and records keep their units.

Outside a Ray worker (unit tests, a dry run) the same calls land in an in-memory
:class:`MemorySink`, which tests read back; nothing pretends to have exported.

In a Ray worker the calls go through a :class:`BufferedSink`: one ``ray.util.metrics``
record costs 10-20 us here, which per decision of a 1,000-task batch (or the eight
records of one task's life) is a large share of the request's own work. The buffer
adds counter increments up and keeps the last gauge value in memory, and a background
thread hands them, and the histogram observations, to Ray every ``flush_s`` (Ray
itself exports every few seconds, so Prometheus sees no difference beyond that delay).
"""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Protocol

#: 10 us .. 100 ms: a heuristic decides in tens of microseconds, a forest in milliseconds
DECISION_S_BUCKETS = [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.1]
#: 10 ms .. 1 h: an edge alert to a training job
TASK_S_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600]

DECISIONS = "orch_decisions_total"
DECISION_LATENCY = "orch_decision_latency_seconds"
ACCEPTED = "orch_tasks_accepted_total"
FINISHED = "orch_tasks_finished_total"
TASK_LATENCY = "orch_task_latency_seconds"
COST = "orch_task_cost_dollars_total"
SLO_MISSES = "orch_slo_misses_total"
IN_FLIGHT = "orch_tasks_in_flight"
REFUSED = "orch_requests_refused_total"
SHADOW = "orch_shadow_decisions_total"

#: name -> (type, description, tag keys, histogram buckets)
SPECS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    DECISIONS: ("counter", "Placement decisions by policy, chosen pool and endpoint", ("policy", "pool", "endpoint"),
                None),
    DECISION_LATENCY: ("histogram", "Time to decide one task (seconds)", ("policy",), DECISION_S_BUCKETS),
    ACCEPTED: ("counter", "Tasks accepted by POST /v1/tasks", ("policy",), None),
    FINISHED: ("counter", "Tasks that ended, by pool and final status", ("pool", "status"), None),
    TASK_LATENCY: ("histogram", "End-to-end latency of succeeded tasks (seconds)", ("pool",), TASK_S_BUCKETS),
    COST: ("counter", "Cost of finished tasks (US dollars)", ("pool",), None),
    SLO_MISSES: ("counter", "Succeeded tasks that missed their latency SLO", ("priority",), None),
    IN_FLIGHT: ("gauge", "Tasks accepted and not yet finished", (), None),
    REFUSED: ("counter", "Requests refused by admission control (429), by reason", ("reason",), None),
    SHADOW: ("counter", "Decisions of the shadow policy, by whether the active one chose the same",
             ("policy", "agrees"), None),
}


def exported_series() -> set[str]:
    """The series names Prometheus scrapes for :data:`SPECS` (Ray's ``ray_`` prefix, histogram suffixes)."""
    suffixes = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {f"ray_{name}{s}" for name, (kind, *_rest) in SPECS.items() for s in suffixes[kind]}


class Sink(Protocol):
    def inc(self, name: str, value: float, tags: dict[str, str]) -> None: ...

    def observe(self, name: str, value: float, tags: dict[str, str]) -> None: ...

    def set(self, name: str, value: float, tags: dict[str, str]) -> None: ...


class RaySink:
    """``ray.util.metrics`` objects, created once per process."""

    def __init__(self) -> None:
        from ray.util import metrics as m

        self._m = {}
        for name, (kind, desc, keys, buckets) in SPECS.items():
            if kind == "counter":
                self._m[name] = m.Counter(name, desc, tag_keys=keys)
            elif kind == "histogram":
                self._m[name] = m.Histogram(name, desc, boundaries=buckets, tag_keys=keys)
            else:
                self._m[name] = m.Gauge(name, desc, tag_keys=keys)

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        self._m[name].inc(value, tags)

    def observe(self, name: str, value: float, tags: dict[str, str]) -> None:
        self._m[name].observe(value, tags)

    def set(self, name: str, value: float, tags: dict[str, str]) -> None:
        self._m[name].set(value, tags)

    def observe_all(self, name: str, values: list[float], tags: dict[str, str]) -> None:
        """Observe every value under one tag set, checking the tags once: a buffered flush of a
        busy second holds thousands of decision times, and ``Histogram.observe`` re-checks the
        tags on each (5-6 us here, against 2-3 us for the record itself)."""
        metric = self._m[name]
        record = getattr(getattr(metric, "_metric", None), "record", None)
        if record is None or getattr(metric, "_discard_metric", False) or not values:
            for x in values:
                metric.observe(x, tags)
            return
        metric.observe(values[0], tags)  # Ray's own checks of the value and the tags, once
        final = {**getattr(metric, "_default_tags", {}), **tags}
        for x in values[1:]:
            record(float(x), tags=final)


class MemorySink:
    """In-process totals (counters and gauges) and observation lists (histograms)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple], float] = defaultdict(float)
        self.observations: dict[tuple[str, tuple], list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    @staticmethod
    def _key(name: str, tags: dict[str, str]) -> tuple[str, tuple]:
        return name, tuple(sorted(tags.items()))

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        with self._lock:
            self.values[self._key(name, tags)] += value

    def observe(self, name: str, value: float, tags: dict[str, str]) -> None:
        with self._lock:
            self.observations[self._key(name, tags)].append(value)

    def set(self, name: str, value: float, tags: dict[str, str]) -> None:
        with self._lock:
            self.values[self._key(name, tags)] = value

    def total(self, name: str, **tags: str) -> float:
        """Sum of a counter over the series matching ``tags``."""
        return sum(v for (n, t), v in self.values.items()
                   if n == name and all((k, v2) in t for k, v2 in tags.items()))


class BufferedSink:
    """Aggregates in memory and flushes to ``target`` from a daemon thread every ``flush_s``.

    Counters are summed per tag set, gauges keep their last value, histogram
    observations are kept as they are (each is observed on flush, so buckets, count
    and sum are exact). What was recorded since the last flush is lost if the process
    is killed, as the process's own counters would be.
    """

    def __init__(self, target: Sink, flush_s: float = 1.0, *, thread: bool = True) -> None:
        self.target = target
        self.flush_s = flush_s
        self._counts: dict[tuple[str, tuple], float] = defaultdict(float)
        self._gauges: dict[tuple[str, tuple], float] = {}
        self._obs: dict[tuple[str, tuple], list[float]] = defaultdict(list)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if thread:
            self._thread = threading.Thread(target=self._loop, name="router-metrics", daemon=True)
            self._thread.start()

    def inc(self, name: str, value: float, tags: dict[str, str]) -> None:
        key = (name, tuple(tags.items()))
        with self._lock:
            self._counts[key] += value

    def observe(self, name: str, value: float, tags: dict[str, str]) -> None:
        key = (name, tuple(tags.items()))
        with self._lock:
            self._obs[key].append(value)

    def observe_many(self, name: str, values: list[float], tags: dict[str, str]) -> None:
        key = (name, tuple(tags.items()))
        with self._lock:
            self._obs[key].extend(values)

    def set(self, name: str, value: float, tags: dict[str, str]) -> None:
        with self._lock:
            self._gauges[(name, tuple(tags.items()))] = value

    def flush(self) -> None:
        """Hand everything recorded so far to the target sink."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, defaultdict(float)
                gauges, self._gauges = self._gauges, {}
                obs, self._obs = self._obs, defaultdict(list)
            for (name, tags), v in counts.items():
                self.target.inc(name, v, dict(tags))
            for (name, tags), v in gauges.items():
                self.target.set(name, v, dict(tags))
            many = getattr(self.target, "observe_all", None)
            for (name, tags), xs in obs.items():
                t = dict(tags)
                if many is not None:
                    many(name, xs, t)
                    continue
                for x in xs:
                    self.target.observe(name, x, t)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - metrics must never stop the router
                import logging

                logging.getLogger("serve_app").exception("flushing metrics failed")

    def close(self) -> None:
        self._stop.set()
        self.flush()


class RouterMetrics:
    """What the router records; see the module docstring for the exported names."""

    def __init__(self, sink: Sink | None = None) -> None:
        if sink is None:
            import ray

            sink = BufferedSink(RaySink()) if ray.is_initialized() else MemorySink()
        self.sink = sink

    def decisions(self, policy: str, endpoint: str, pools: dict[str, int], ms: list[float]) -> None:
        """One call per request: counts per chosen pool, one latency observation (in seconds) per decision."""
        for pool, n in pools.items():
            self.sink.inc(DECISIONS, n, {"policy": policy, "pool": pool, "endpoint": endpoint})
        tags = {"policy": policy}
        seconds = [x / 1000.0 for x in ms]
        many = getattr(self.sink, "observe_many", None)
        if many is not None:
            many(DECISION_LATENCY, seconds, tags)
            return
        for x in seconds:
            self.sink.observe(DECISION_LATENCY, x, tags)

    def shadow(self, policy: str, agrees: bool | None, ms: float) -> None:
        """One shadow decision; ``agrees`` None: the shadow policy failed (``agrees="error"``)."""
        self.sink.inc(SHADOW, 1, {"policy": policy, "agrees": "error" if agrees is None else str(agrees).lower()})
        self.sink.observe(DECISION_LATENCY, ms / 1000.0, {"policy": f"shadow:{policy}"})

    def accepted(self, policy: str) -> None:
        self.sink.inc(ACCEPTED, 1, {"policy": policy})

    def finished(self, pool: str | None, status: str, latency_ms: float | None, cost: float | None,
                 priority: int, slo_met: bool | None) -> None:
        pool = pool or "none"
        self.sink.inc(FINISHED, 1, {"pool": pool, "status": status})
        if cost:
            self.sink.inc(COST, cost, {"pool": pool})
        if status == "succeeded" and latency_ms is not None:
            self.sink.observe(TASK_LATENCY, latency_ms / 1000.0, {"pool": pool})
            if slo_met is False:
                self.sink.inc(SLO_MISSES, 1, {"priority": str(priority)})

    def refused(self, reason: str) -> None:
        self.sink.inc(REFUSED, 1, {"reason": reason})

    def in_flight(self, n: int) -> None:
        self.sink.set(IN_FLIGHT, n, {})

    def close(self) -> None:
        """Flush what a buffering sink holds."""
        close = getattr(self.sink, "close", None)
        if close is not None:
            close()
