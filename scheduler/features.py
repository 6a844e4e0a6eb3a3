"""The one feature module: (task, cluster state) -> the vector every learned policy uses.

The RandomForest, the RL environment's observation and the router all call
:func:`feature_vector`, and every trained model stores :data:`SCHEMA_VERSION`
beside it so that a model trained on another layout is refused at load time.

The layout is fixed whatever the cluster's size: cluster figures are aggregated
per node class (edge, cloud, gpu-mig, gpu-shared, gpu-whole; see
:data:`cluster.topology.NODE_CLASSES`).
"""
from __future__ import annotations

import math

import numpy as np

from cluster.state import ClusterState
from cluster.topology import NODE_CLASSES, node_class
from scheduler.task import Task

SCHEMA_VERSION = "1"

_TASK = ["priority", "latency_requirement", "gpu_requirement", "cost_sensitivity",
         "cpu_request", "mem_request", "work_log", "need_none", "need_fraction", "need_whole", "need_mig"]
_TIER = ["edge_load", "cloud_load", "gpu_load", "edge_network", "cloud_network", "gpu_network"]
_PER_CLASS = ["feasible", "fits_now", "free_cpu", "free_gpu", "queue", "speed"]
FEATURE_NAMES: tuple[str, ...] = tuple(
    _TASK + _TIER + [f"{c}_{f}" for c in NODE_CLASSES for f in _PER_CLASS])
N_FEATURES = len(FEATURE_NAMES)

_KIND_INDEX = {"edge": 0, "cloud": 1, "gpu": 2}


class _Layout:
    """Static per-cluster arrays (node class membership), cached on the spec."""

    def __init__(self, state: ClusterState) -> None:
        spec = self.spec = state.spec
        self.cls = np.array([NODE_CLASSES.index(node_class(n, spec.tiers[n.tier])) for n in spec.nodes])
        self.members = [np.flatnonzero(self.cls == c) for c in range(len(NODE_CLASSES))]
        self.kind_members = [np.flatnonzero(state.tier_of == k) for k in range(3)]
        self.kind_net = [float(state.net_mean_ms[m].mean()) / 1000 if len(m) else 0.0
                         for m in self.kind_members]
        self.speed = np.array([n.gpu_speed if n.devices else n.cpu_speed for n in spec.nodes])


def layout(state: ClusterState) -> _Layout:
    """The state's node-class layout, computed once per state object."""
    lay = getattr(state, "_feature_layout", None)
    if lay is None or lay.spec is not state.spec:
        lay = _Layout(state)
        state._feature_layout = lay  # type: ignore[attr-defined]
    return lay


def task_features(task: Task) -> list[float]:
    need = task.gpu_need
    return [
        task.priority / 10.0,
        math.log10(max(task.slo_ms, 1.0)) / 7.0,
        min(task.gpu_amount, 8.0) / 8.0,
        task.cost_sensitivity / 10.0,
        task.cpu_milli / 32000.0,
        task.mem_mib / 262144.0,
        math.log10(max(task.work, 1e-3)) / 4.0,
        float(need == "none"), float(need == "fraction"), float(need == "whole"), float(need == "mig"),
    ]


def feature_vector(task: Task, state: ClusterState, feasible: np.ndarray | None = None,
                   fits: np.ndarray | None = None) -> np.ndarray:
    """Features of placing ``task`` now; ``feasible``/``fits`` are per-node masks if known."""
    lay = layout(state)
    if feasible is None or fits is None:
        from cluster.state import fits_now, share_for

        feasible = np.zeros(state.n_nodes, dtype=bool)
        fits = np.zeros(state.n_nodes, dtype=bool)
        for i in range(state.n_nodes):
            s = share_for(state, i, task)
            if s is not None:
                feasible[i] = True
                fits[i] = fits_now(state, i, task, s)
    load = state.load()
    out = task_features(task)
    for k in range(3):
        m = lay.kind_members[k]
        out.append(float(load[m].mean()) if len(m) else 1.0)
    out.extend(lay.kind_net)
    free_cpu = state.cpu_free / state.cpu_total
    gtot = state.gpu_total
    free_gpu = np.divide(gtot - state.gpu_used(), gtot, out=np.zeros(state.n_nodes), where=gtot > 0)
    for m in lay.members:
        if len(m) == 0:
            out.extend([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            continue
        out.extend([
            float(feasible[m].any()), float(fits[m].any()),
            float(free_cpu[m].max()), float(free_gpu[m].max()),
            math.log1p(float(state.queue_len[m].sum())) / 5.0,
            float(lay.speed[m].max()) / 5.0,
        ])
    return np.asarray(out, dtype=np.float32)
