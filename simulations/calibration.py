"""Calibrate the simulator's timing model to measured outcomes: the router's history.

Every finished task's record holds what the model expected at decision time
(``decision.expected``: queue, network, execution) beside what was measured
(:mod:`serve_app.record_schema`). The model's execution time is ``work / speed(node, share)``;
reality differs by kind of work (a task's declared ``work`` is an estimate, most of all for
real code) and by where it runs (a real function may not use the GPU the model credits it
with; a host may be slower than its node's ``cpu_speed``). So, per node class and task kind,
the factor ``measured / expected`` execution is fitted as the median of the ratios, the most
robust location there is: the tasks that met a cold worker (imports, a model built on first
call: seconds instead of a fraction of one) and those that shared the host's cores with other
real work do not move it, where a mean, or even Huber's M-estimator with its scale fitted on
such tails, was pulled 7-60% off on the held-out tasks of a real run; a class without :data:`MIN_TASKS` tasks of a kind falls back to the kind's factor
over every class, a kind without them to 1. Each tier's network range becomes the 10th-90th
percentile of what was measured there (the simulator draws uniformly in a tier's range).

The profile is a small YAML file. :func:`apply_cluster` gives the calibrated cluster: each
node carries its class's factors (``NodeSpec.work_factors``, which
:func:`cluster.performance.speed` divides by) and each tier its range; ``orchestrator simulate
--calibration`` and the RL env's ``calibration`` key load it. Fitting uses the older part of
the history; the report compares the model's per-task latency with the measured one on the
newer part (held out), before and after, so a profile is judged on tasks it did not see.
Deterministic: the same history and arguments give the same profile and report.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cluster.config import ConfigError, load_yaml
from cluster.topology import NODE_CLASSES, ClusterSpec, node_class

FORMAT = 1
#: a node class and kind (or a kind over every class) needs this many fitted tasks for a factor of its own
MIN_TASKS = 5
#: fraction of the history (the newest tasks) held out for the report
HOLDOUT = 0.3


@dataclass(frozen=True)
class Profile:
    """A calibration: execution factors per node class and kind (and per kind over every class), network per tier."""

    work: dict[str, dict[str, float]]
    kind_work: dict[str, float]
    network_ms: dict[str, tuple[float, float]]
    fitted_on: dict[str, Any]

    def factor(self, node_class: str, kind: str) -> float:
        """measured / expected execution of ``kind`` on a node of ``node_class`` (1.0 where nothing was fitted)."""
        return self.work.get(node_class, {}).get(kind, self.kind_work.get(kind, 1.0))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "work": {c: dict(k) for c, k in self.work.items()}, "kind_work": dict(self.kind_work),
                "network_ms": {k: list(v) for k, v in self.network_ms.items()}, "fitted_on": dict(self.fitted_on)}


@dataclass(frozen=True)
class Sample:
    """One finished task of the history: where it ran, what the model expected, what was measured."""

    task_id: str
    accepted_at: float
    node: str
    node_class: str
    tier: str
    kind: str
    expected: Mapping[str, float]
    queue_ms: float
    network_ms: float
    exec_ms: float

    @property
    def latency_ms(self) -> float:
        return self.queue_ms + self.network_ms + self.exec_ms


def samples(records: Iterable[Mapping[str, Any]]) -> tuple[list[Sample], int]:
    """The usable records (succeeded at the first attempt, measured, with the model's expectation and
    the node class it ran on), oldest first, and how many others were skipped. A re-placed task's
    decision and expectation describe its first node, its measured times the last: not a pair."""
    out, skipped = [], 0
    for r in records:
        exp = (r.get("decision") or {}).get("expected") if isinstance(r.get("decision"), dict) else None
        parts = [r.get("queue_ms"), r.get("network_ms"), r.get("exec_ms")]
        cls = (r.get("decision") or {}).get("node_class") if isinstance(r.get("decision"), dict) else None
        decided = (r.get("decision") or {}).get("node") if isinstance(r.get("decision"), dict) else None
        if (r.get("status") != "succeeded" or not isinstance(exp, Mapping) or not r.get("node") or not cls
                or int(r.get("attempts") or 1) > 1 or decided != r.get("node")
                or any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in parts)
                or not all(isinstance(exp.get(k), (int, float)) and math.isfinite(exp[k]) and exp[k] >= 0
                           for k in ("queue_ms", "network_ms", "exec_ms"))
                or exp["exec_ms"] <= 0 or parts[2] <= 0):
            skipped += 1
            continue
        out.append(Sample(str(r["task_id"]), float(r.get("accepted_at") or 0.0), str(r["node"]), str(cls),
                          str(r.get("tier") or ""), str(r.get("kind") or "generic"), dict(exp),
                          float(parts[0]), float(parts[1]), float(parts[2])))
    out.sort(key=lambda s: (s.accepted_at, s.task_id))
    return out, skipped


def split(data: Sequence[Sample], holdout: float = HOLDOUT) -> tuple[list[Sample], list[Sample]]:
    """(fit, held out): the newest ``holdout`` fraction is held out."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be between 0 and 1, got {holdout}")
    cut = int(round(len(data) * (1.0 - holdout)))
    return list(data[:cut]), list(data[cut:])


def fit(data: Sequence[Sample], source: str = "", min_tasks: int = MIN_TASKS) -> Profile:
    """The profile of ``data`` (see the module docstring)."""
    if len(data) < 2 * min_tasks:
        raise ValueError(f"{len(data)} usable tasks; calibration needs at least {2 * min_tasks}")
    ratios: dict[tuple[str, str], list[float]] = {}
    for s in data:
        ratios.setdefault((s.node_class, s.kind), []).append(math.log(s.exec_ms / s.expected["exec_ms"]))
    by_kind: dict[str, list[float]] = {}
    for (_, kind), logs in ratios.items():
        by_kind.setdefault(kind, []).extend(logs)
    kind_work = {k: _factor(v) for k, v in sorted(by_kind.items()) if len(v) >= min_tasks}
    work: dict[str, dict[str, float]] = {}
    for (cls, kind), logs in sorted(ratios.items()):
        if len(logs) >= min_tasks:
            work.setdefault(cls, {})[kind] = _factor(logs)
    network: dict[str, tuple[float, float]] = {}
    for tier in sorted({s.tier for s in data if s.tier}):
        ms = np.array([s.network_ms for s in data if s.tier == tier])
        if len(ms) >= min_tasks:
            network[tier] = (round(float(np.percentile(ms, 10)), 3), round(float(np.percentile(ms, 90)), 3))
    return Profile(work, kind_work, network,
                   {"source": source, "tasks": len(data), "from": data[0].task_id, "to": data[-1].task_id,
                    "accepted_from": data[0].accepted_at, "accepted_to": data[-1].accepted_at,
                    "method": f"median of measured/expected execution per node class and kind (at least {min_tasks} tasks, else the kind's over every class, "
                              "else 1); network: 10th-90th percentile per tier"})


def _factor(logs: Sequence[float]) -> float:
    """exp of the median of ``logs``: the most robust location (half the tasks may be outliers)."""
    return round(float(math.exp(np.median(np.asarray(logs, dtype=float)))), 6)


def predicted_latency(s: Sample, profile: Profile | None) -> float:
    """The model's latency for ``s`` at decision time; with ``profile``, as the calibrated model
    would have expected it (execution, and the queue ahead of it on its node, scaled by the factor
    of its class and kind; network at the calibrated tier mean)."""
    e = s.expected
    if profile is None:
        return float(e["queue_ms"] + e["network_ms"] + e["exec_ms"])
    f = profile.factor(s.node_class, s.kind)
    lo_hi = profile.network_ms.get(s.tier)
    net = (lo_hi[0] + lo_hi[1]) / 2.0 if lo_hi else float(e["network_ms"])
    return float(e["queue_ms"] * f + net + e["exec_ms"] * f)


def errors(data: Sequence[Sample], profile: Profile | None) -> dict[str, float]:
    """Sim-vs-real error of the model's per-task latency on ``data``: relative error of the mean and
    of the 95th percentile, and the median absolute per-task error (all in %)."""
    pred = np.array([predicted_latency(s, profile) for s in data])
    real = np.array([s.latency_ms for s in data])
    return {"tasks": len(data),
            "mean_pct": round(100.0 * abs(pred.mean() - real.mean()) / real.mean(), 2),
            "p95_pct": round(100.0 * abs(np.percentile(pred, 95) - np.percentile(real, 95)) / np.percentile(real, 95), 2),
            "median_task_pct": round(100.0 * float(np.median(np.abs(pred - real) / real)), 2),
            "measured_mean_ms": round(float(real.mean()), 3), "predicted_mean_ms": round(float(pred.mean()), 3)}


def errors_by_class(data: Sequence[Sample], profile: Profile) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`errors` per node class, before and after ``profile``: an overall figure can hide a class the
    model is far off on (and one the profile made worse), which is where a reader looks next."""
    groups: dict[str, list[Sample]] = {}
    for s in data:
        groups.setdefault(s.node_class, []).append(s)
    return {cls: {"before": errors(g, None), "after": errors(g, profile)} for cls, g in sorted(groups.items())}


# ---------------------------------------------------------------- loading and applying


def save(profile: Profile, path: str | Path) -> None:
    import yaml

    Path(path).write_text("# written by `orchestrator calibrate` (simulations/calibration.py)\n"
                          + yaml.safe_dump(profile.to_dict(), sort_keys=False))


def load(path: str | Path) -> Profile:
    """A saved profile; a bad file is a :class:`ConfigError` naming the field."""
    f = load_yaml(path)
    f.check_keys({"format", "work", "kind_work", "network_ms", "fitted_on"})
    if f.int("format", FORMAT) != FORMAT:
        raise f.error("format", f"this build reads calibration format {FORMAT}")

    def factors(raw: Any, key: str) -> dict[str, float]:
        if not isinstance(raw, Mapping):
            raise f.error(key, f"must be a mapping of task kind to factor, got {raw!r}")
        out = {}
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e6:
                raise f.error(f"{key}.{k}", f"must be a positive factor, got {v!r}")
            out[str(k)] = float(v)
        return out

    raw_work = f.raw("work", {})
    if not isinstance(raw_work, Mapping):
        raise f.error("work", f"must be a mapping of node class to factors per kind, got {raw_work!r}")
    work = {}
    for cls, kinds in raw_work.items():
        if cls not in NODE_CLASSES:
            raise f.error(f"work.{cls}", f"unknown node class (known: {', '.join(NODE_CLASSES)})")
        work[str(cls)] = factors(kinds, f"work.{cls}")
    raw_net = f.raw("network_ms", {})
    if not isinstance(raw_net, Mapping):
        raise f.error("network_ms", f"must be a mapping of tier to [low, high], got {raw_net!r}")
    network = {}
    for tier, pair in raw_net.items():
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
                or not 0 <= pair[0] <= pair[1]):
            raise f.error(f"network_ms.{tier}", f"must be [low, high] milliseconds, got {pair!r}")
        network[str(tier)] = (float(pair[0]), float(pair[1]))
    fitted = f.raw("fitted_on", {})
    return Profile(work, factors(f.raw("kind_work", {}), "kind_work"), network,
                   dict(fitted) if isinstance(fitted, Mapping) else {})


def apply_cluster(spec: ClusterSpec, profile: Profile) -> ClusterSpec:
    """``spec`` with each node carrying its class's execution factors per kind (every kind the
    profile knows: the class's own, else the kind's over every class) and each calibrated tier
    its measured network range; tiers the profile does not name are unchanged."""
    kinds = sorted(set(profile.kind_work) | {k for per in profile.work.values() for k in per})
    nodes = []
    for n in spec.nodes:
        cls = node_class(n, spec.tiers[n.tier])
        nodes.append(dataclasses.replace(n, work_factors=tuple((k, profile.factor(cls, k)) for k in kinds)))
    tiers = {name: dataclasses.replace(t, network_ms=profile.network_ms[name]) if name in profile.network_ms else t
             for name, t in spec.tiers.items()}
    return dataclasses.replace(spec, nodes=tuple(nodes), tiers=tiers, name=f"{spec.name}-calibrated")


def calibrated(spec: ClusterSpec, path: str | Path | None) -> ClusterSpec:
    """``spec`` calibrated by the profile at ``path`` (checked against it); ``spec`` itself when None."""
    if path is None:
        return spec
    profile = load(path)
    check_cluster(profile, spec, path)
    return apply_cluster(spec, profile)


def check_cluster(profile: Profile, spec: ClusterSpec, path: str | Path) -> None:
    """A profile naming tiers the cluster does not have was fitted on another cluster: refused, naming them."""
    unknown = sorted(set(profile.network_ms) - set(spec.tiers))
    if unknown:
        raise ConfigError(path, "network_ms", f"tiers {', '.join(unknown)} are not in cluster {spec.name}")
