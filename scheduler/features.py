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

from cluster.state import ClusterState, node_masks
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
    """Static per-cluster arrays (node class and tier-kind membership), cached on the state."""

    def __init__(self, state: ClusterState) -> None:
        spec = self.spec = state.spec
        n = state.n_nodes
        self.cls = np.array([NODE_CLASSES.index(node_class(nd, spec.tiers[nd.tier])) for nd in spec.nodes])
        self.members = [np.flatnonzero(self.cls == c) for c in range(len(NODE_CLASSES))]
        self.class_of = np.zeros((len(NODE_CLASSES), n), dtype=bool)
        self.class_of[self.cls, np.arange(n)] = True
        self.has_class = self.class_of.any(axis=1)
        self.kind_of = np.zeros((3, n))
        self.kind_of[state.tier_of, np.arange(n)] = 1.0
        counts = self.kind_of.sum(axis=1)
        self.kind_has = counts > 0
        self.kind_weight = self.kind_of / np.maximum(counts, 1)[:, None]
        self.kind_members = [np.flatnonzero(state.tier_of == k) for k in range(3)]
        self.kind_net = [float(state.net_mean_ms[m].mean()) / 1000 if len(m) else 0.0
                         for m in self.kind_members]
        self.speed = np.array([nd.gpu_speed if nd.devices else nd.cpu_speed for nd in spec.nodes]) / 5.0


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
        feasible, fits, _ = node_masks(state, task)
    # Per node class, in a handful of array operations (this runs on every decision):
    # any node can host / fits now, the best free CPU and GPU share, the queue, the speed.
    load = state.load()
    kind_load = np.where(lay.kind_has, lay.kind_weight @ load, 1.0)
    free_cpu = state.cpu_free / state.cpu_total
    gtot = state.gpu_total
    free_gpu = np.divide(gtot - state.gpu_used(), gtot, out=np.zeros(state.n_nodes), where=gtot > 0)
    per_node = np.stack([feasible, fits, free_cpu, free_gpu, lay.speed])  # (5, N)
    best = np.where(lay.class_of[:, None, :], per_node[None, :, :], -np.inf).max(axis=2)  # (C, 5)
    queue = np.log1p(lay.class_of @ state.queue_len) / 5.0
    per_class = np.column_stack([best[:, :4], queue, best[:, 4]])
    per_class[~lay.has_class] = 0.0
    out = np.concatenate([task_features(task), kind_load, lay.kind_net, per_class.ravel()])
    return out.astype(np.float32)
