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
from typing import Sequence

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


def _work_term(work: float) -> float:
    """The ``work_log`` feature (the one task feature that varies between tasks of one shape)."""
    return math.log10(max(work, 1e-3)) / 4.0


def task_features(task: Task) -> list[float]:
    need = task.gpu_need
    return [
        task.priority / 10.0,
        math.log10(max(task.slo_ms, 1.0)) / 7.0,
        min(task.gpu_amount, 8.0) / 8.0,
        task.cost_sensitivity / 10.0,
        task.cpu_milli / 32000.0,
        task.mem_mib / 262144.0,
        _work_term(task.work),
        float(need == "none"), float(need == "fraction"), float(need == "whole"), float(need == "mig"),
    ]


def feature_vector(task: Task, state: ClusterState, feasible: "np.ndarray | Sequence[bool] | None" = None,
                   fits: "np.ndarray | Sequence[bool] | None" = None) -> np.ndarray:
    """Features of placing ``task`` now; ``feasible``/``fits`` are per-node masks if known.

    Computed by :class:`FeatureBuilder` where every node class and tier kind has fewer
    than 8 nodes (the same float32 vector, bit for bit, 5-10x faster), else by array
    operations.
    """
    if feasible is None or fits is None:
        feasible, fits, _ = node_masks(state, task)
    return builder(state).build(task, feasible, fits, state)


def builder(state: ClusterState) -> "FeatureBuilder":
    """A :class:`FeatureBuilder` for the state's cluster, kept on the state object (as :func:`layout`;
    a copy of the state may carry the original's, which is why :meth:`FeatureBuilder.build` is
    handed the state)."""
    b = getattr(state, "_feature_builder", None)
    if b is None or b.spec is not state.spec:
        b = FeatureBuilder(state)
        state._feature_builder = b  # type: ignore[attr-defined]
    return b


_INDEX = {n: i for i, n in enumerate(FEATURE_NAMES)}
_WORK_INDEX = _INDEX["work_log"]
#: task parts remembered per builder (distinct task shapes; the cache starts over when full)
MAX_TASK_PARTS = 4096


class FeatureBuilder:
    """:func:`feature_vector` for small clusters, from plain-Python loops over each class's nodes.

    Numpy on arrays of a handful of nodes is dominated by call overhead (about 50-70
    microseconds a vector); this gives the same float32 vector, bit for bit
    (``tests/test_scalar_vector.py`` and the RL env's tests assert it over many
    states), with everything static cached. Static entries (tier network, class
    speed) are read from the array definition itself, so the two cannot drift. The RL
    env keeps one per cluster and points :attr:`state` at each episode's state.
    """

    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self.spec = state.spec
        lay = layout(state)
        self.members = [m.tolist() for m in lay.members]
        self.kind_members = [m.tolist() for m in lay.kind_members]
        n = state.n_nodes
        ref = _vectorised(Task("probe"), state, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)).tolist()
        self.kind_net = [ref[_INDEX[f"{k}_network"]] for k in ("edge", "cloud", "gpu")]
        self.speed = [ref[_INDEX[f"{c}_speed"]] for c in NODE_CLASSES]
        self._kind_weight = lay.kind_weight  # tier loads summed exactly as _vectorised sums them
        self._kind_has = lay.kind_has
        self.cpu_total = state.cpu_total.tolist()
        self.gpu_total = state.gpu_total.tolist()
        self.fast = max(len(m) for m in [*self.members, *self.kind_members]) < 8
        self._task_cache: dict[tuple, list[float]] = {}

    def task_part(self, task: Task) -> list[float]:
        """``task_features(task)``, cached per shape (only the work term varies per task)."""
        key = (task.priority, task.slo_ms, task.cpu_milli, task.mem_mib, task.gpu_milli, task.gpu_count,
               task.mig_profile, task.cost_sensitivity)
        part = self._task_cache.get(key)
        if part is None:
            if len(self._task_cache) >= MAX_TASK_PARTS:  # a router sees unboundedly many shapes
                self._task_cache.clear()
            part = self._task_cache[key] = task_features(task)
        out = list(part)
        out[_WORK_INDEX] = _work_term(task.work)
        return out

    def build(self, task: Task, feasible: "np.ndarray | Sequence[bool]", fits: "np.ndarray | Sequence[bool]",
              state: ClusterState | None = None) -> np.ndarray:
        """The feature vector; ``feasible``/``fits`` hold one flag per node of the cluster.

        ``state``: any state of this builder's cluster (a copy, a later episode's);
        default :attr:`state`. Only its per-node arrays are read.
        """
        state = self.state if state is None else state
        if not self.fast:
            return _vectorised(task, state, np.asarray(feasible, dtype=bool), np.asarray(fits, dtype=bool))
        if isinstance(feasible, np.ndarray):
            feasible = feasible.tolist()
        if isinstance(fits, np.ndarray):
            fits = fits.tolist()
        out = self.task_part(task)
        out.extend(np.where(self._kind_has, self._kind_weight @ state.util, 1.0).tolist())
        out.extend(self.kind_net)
        cpu_free = state.cpu_free.tolist()
        held = state.gpu_held.tolist()
        qlen = state.queue_len.tolist()
        cpu_total, gpu_total = self.cpu_total, self.gpu_total
        for c, m in enumerate(self.members):
            if not m:
                out.extend((0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
                continue
            fe = fi = False
            fc = fg = -math.inf
            q = 0
            for i in m:
                fe = fe or feasible[i]
                fi = fi or fits[i]
                v = cpu_free[i] / cpu_total[i]
                if v > fc:
                    fc = v
                g = gpu_total[i]
                v = (g - held[i]) / g if g > 0 else 0.0
                if v > fg:
                    fg = v
                q += qlen[i]
            out.extend((float(fe), float(fi), fc, fg, math.log1p(float(q)) / 5.0, self.speed[c]))
        return np.array(out, dtype=np.float32)


def _vectorised(task: Task, state: ClusterState, feasible: np.ndarray, fits: np.ndarray) -> np.ndarray:
    """The definition of the features, in array operations (any cluster size)."""
    lay = layout(state)
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
