"""Decisions, nodes, task results and history rows as JSON-ready dicts.

Built by hand rather than through FastAPI's encoder: this runs once per decision
on the hot path, and NaN (an infeasible node's score, a failed task's latency)
must become ``null`` because JSON has no NaN.
"""
from __future__ import annotations

import math
from typing import Any

from cluster.state import Share
from cluster.topology import ClusterSpec, node_class
from scheduler.objective import Objective
from scheduler.policy import Decision
from scheduler.record import TaskRecord
from scheduler.task import Task


def finite(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing or not finite."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def share_view(share: Share | None) -> dict[str, Any] | None:
    if share is None:
        return None
    kind, amount = share
    if kind == "cpu":
        text = "CPU only"
    elif kind == "slice":
        text = f"{int(amount) / 1000:g} of one GPU (shared)"
    elif kind == "whole":
        text = f"{amount} whole GPU(s)"
    else:
        text = f"MIG {amount} instance"
    return {"kind": kind, "amount": amount if kind == "mig" else int(amount), "text": text}


_ROWS: dict[int, tuple[ClusterSpec, list[tuple[str, str, str, str]], list[str]]] = {}


def _node_rows(spec: ClusterSpec) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """((name, pool, tier, node class) per node, the names), computed once per topology."""
    hit = _ROWS.get(id(spec))
    if hit is None or hit[0] is not spec:
        rows = [(nd.name, nd.pool, nd.tier, node_class(nd, spec.tiers[nd.tier])) for nd in spec.nodes]
        hit = (spec, rows, [r[0] for r in rows])
        _ROWS[id(spec)] = hit
    return hit[1], hit[2]


_SHARE_VIEWS: dict[Share, dict[str, Any]] = {}


def _share_view_cached(share: Share) -> dict[str, Any]:
    """:func:`share_view`, built once per share (a cluster has a handful): the views are answered
    as JSON and never changed, so decisions may hold the same dict."""
    v = _SHARE_VIEWS.get(share)
    if v is None:
        if len(_SHARE_VIEWS) >= 4096:  # MIG and slice amounts are few; bound it all the same
            _SHARE_VIEWS.clear()
        v = _SHARE_VIEWS[share] = share_view(share)
    return v


def decision_view(d: Decision, task: Task, spec: ClusterSpec, ms: float, policy: str,
                  version: int | None) -> dict[str, Any]:
    """One decision as the API returns it (``spec``: the full topology, not the live view).

    Dict literals, not updates: a batch builds a thousand of these per call."""
    rows, names = _node_rows(spec)
    probs = d.probabilities
    tail = {"scores": {k: s for k, s in zip(names, d.scores.tolist()) if s == s},  # NaN: infeasible
            "confidence": finite(d.confidence),
            "probabilities": None if probs is None else {k: float(v) for k, v in probs.items()},
            "explanation": d.explanation, "policy": policy, "policy_version": version,
            "decision_ms": round(ms, 4), "inferred": list(task.inferred)}
    if not d.placed:
        return {"task_id": task.id, "placed": False, **tail}
    name, pool, tier, cls = rows[d.node]
    return {"task_id": task.id, "placed": True, "node": name, "pool": pool, "tier": tier, "node_class": cls,
            "share": _share_view_cached(d.share), "device": d.device, "queued": bool(d.queued), **tail}


def result_fields(res: Any, task: Task, objective: Objective) -> dict[str, Any]:
    """History columns of a finished :class:`cluster.executor.TaskResult`: its
    :class:`~scheduler.record.TaskRecord` with None for what it has not got (SLO and score only
    when it succeeded), plus the attempts."""
    rec = TaskRecord.of_result(task, res, "", objective)
    latency = finite(rec.latency_ms)
    out: dict[str, Any] = {
        "reason": rec.reason or None, "node": rec.node or None, "pool": rec.pool or None, "tier": rec.tier or None,
        "share": rec.share or None, "queue_ms": finite(rec.queue_ms), "network_ms": finite(rec.network_ms),
        "exec_ms": finite(rec.exec_ms), "latency_ms": latency, "cost": finite(rec.cost),
        "attempts": int(res.attempts),
    }
    if rec.status == "succeeded" and latency is not None:
        out["slo_met"] = rec.slo_met
        out["score"] = finite(rec.score)
    return out


#: history columns stored as text (SQLite affinity) that the API types as integers
_INT_COLUMNS = ("priority", "attempts")


def record_view(row: dict[str, Any], events: list[dict] | None = None) -> dict[str, Any]:
    """A history row for the API: NaN-free, integers typed, with its life-cycle events when given."""
    out = {k: (finite(v) if isinstance(v, float) else v) for k, v in row.items()}
    for k in _INT_COLUMNS:
        if isinstance(out.get(k), str) and out[k].lstrip("-").isdigit():
            out[k] = int(out[k])
    if events is not None:
        out["events"] = events
    return out
