"""Feature contributions in words: "priority 9 pushed towards edge (+0.21)".

Learned policies explain a decision by the few features that moved the chosen
option's probability most (tree-path contributions for the RandomForest). The
features are scaled for the models (:mod:`scheduler.features`); this module
undoes that scaling so that a user reads "SLO 300 ms", not
"latency_requirement 0.354". Unknown names fall back to ``name=value``.
"""
from __future__ import annotations

import math
from typing import Callable

from cluster.topology import NODE_CLASSES

_NEED = {"need_none": "CPU only", "need_fraction": "a GPU fraction", "need_whole": "whole GPUs",
         "need_mig": "a MIG slice"}


def _num(v: float) -> str:
    return f"{v:.3g}"


def _task_text(name: str, v: float) -> str | None:
    # Inverse of scheduler.features.task_features.
    if name == "priority":
        return f"priority {round(v * 10)}"
    if name == "cost_sensitivity":
        return f"cost sensitivity {round(v * 10)}"
    if name == "latency_requirement":
        return f"SLO {_num(10 ** (v * 7.0))} ms"
    if name == "gpu_requirement":
        return f"GPU need {_num(v * 8.0)}"
    if name == "cpu_request":
        return f"CPU {_num(v * 32.0)} cores"
    if name == "mem_request":
        return f"memory {_num(v * 256.0)} GiB"
    if name == "work_log":
        return f"work {_num(10 ** (v * 4.0))} s"
    if name in _NEED:
        return ("needs " if v >= 0.5 else "does not need ") + _NEED[name]
    return None


def _cluster_text(name: str, v: float) -> str | None:
    for kind in ("edge", "cloud", "gpu"):
        if name == f"{kind}_load":
            return f"{kind} tier load {v:.0%}"
        if name == f"{kind}_network":
            return f"{kind} network {v * 1000:.0f} ms"
    for cls in NODE_CLASSES:
        if not name.startswith(cls + "_"):
            continue
        what = name[len(cls) + 1:]
        if what == "feasible":
            return f"{cls} {'can' if v >= 0.5 else 'cannot'} host it"
        if what == "fits_now":
            return f"{cls} {'has room now' if v >= 0.5 else 'is full now'}"
        if what == "free_cpu":
            return f"{cls} free CPU {v:.0%}"
        if what == "free_gpu":
            return f"{cls} free GPU {v:.0%}"
        if what == "queue":
            return f"{cls} queue {math.expm1(v * 5.0):.0f}"
        if what == "speed":
            return f"{cls} speed {_num(v * 5.0)}x"
    return None


#: inverse of scheduler.features.CandidateFeatures.build (a node-level rf row), per feature name
_CANDIDATE: dict[str, Callable[[float], str]] = {
    "fits_now": lambda v: "it fits there now" if v >= 0.5 else "it does not fit there now",
    "node_queue": lambda v: f"node queue {math.expm1(v * 5.0):.0f}",
    "queued_tasks": lambda v: f"cluster queue {math.expm1(v * 5.0):.0f}",
    "wait_slo": lambda v: f"expected wait {_num(10 ** v - 1.0)}x SLO",
    "exec_slo": lambda v: f"expected execution {_num(10 ** v)}x SLO",
    "latency_slo": lambda v: f"expected latency {_num(10 ** v)}x SLO",
    "network_slo": lambda v: f"expected network {_num(10 ** v)}x SLO",
    "latency_vs_best": lambda v: f"expected latency {_num(10 ** v)}x the best candidate's",
    "cost_rel": lambda v: f"expected cost {_num(v)}x cost_ref",
    "cost_vs_best": lambda v: f"expected cost {_num(v)} cost_ref above the cheapest",
    "one_step": lambda v: f"one-step objective {_num(math.expm1(v))}",
    "one_step_vs_best": lambda v: f"one-step objective {_num(math.expm1(v))} above the best",
    "free_cpu": lambda v: f"node free CPU {v:.0%}",
    "free_mem": lambda v: f"node free memory {v:.0%}",
    "free_gpu": lambda v: f"node free GPU {v:.0%}",
    "node_load": lambda v: f"node load {v:.0%}",
    "speed": lambda v: f"speed {_num(2 ** v)}x",
    "speed_vs_best": lambda v: f"speed {_num(2 ** v)}x the fastest candidate's",
    "running": lambda v: f"{math.expm1(v * 5.0):.0f} tasks running there",
    "device_sharers": lambda v: f"{2 ** v:.0f} tasks on its GPU slice" if v > 0 else "a GPU slice of its own",
    "candidates": lambda v: f"{2 ** (v * 10.0):.0f} candidate nodes",
    "fit_now_share": lambda v: f"it fits now on {v:.0%} of them",
}


def _candidate_text(name: str, v: float) -> str | None:
    if name in _CANDIDATE:
        return _CANDIDATE[name](v)
    if name.startswith("share_"):
        return f"{'a' if v >= 0.5 else 'not a'} {name[6:]} share"
    if name.startswith("tier_"):
        return f"{'on' if v >= 0.5 else 'not on'} the {name[5:]} tier"
    return None


def feature_text(name: str, value: float) -> str:
    """A feature and its value as a user reads it (unscaled where the scaling is known)."""
    v = float(value)
    return _task_text(name, v) or _cluster_text(name, v) or _candidate_text(name, v) or f"{name}={_num(v)}"
