"""The one feature module: (task, cluster state) -> the vector every learned policy uses.

The RandomForest, the RL environment's observation and the router all call
:func:`feature_vector`, and every trained model stores :data:`SCHEMA_VERSION`
beside it so that a model trained on another layout is refused at load time.

The layout is fixed whatever the cluster's size: cluster figures are aggregated
per node class (edge, cloud, gpu-mig, gpu-shared, gpu-whole; see
:data:`cluster.topology.NODE_CLASSES`).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from cluster.booking import projected_start
from cluster.performance import gpu_devices_held, speed
from cluster.state import ClusterState, node_masks
from cluster.topology import NODE_CLASSES, node_class
from scheduler.estimate import sharers_at_start
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
        self.cpu_speed = np.array([nd.cpu_speed for nd in spec.nodes]) / 5.0  # what a task on a CPU share gets


def _kept(state: ClusterState, attr: str, make):
    """``make(state)``, built once per state object and cluster spec and kept on the state as ``attr``
    (a copy of the state carries the original's: whatever is kept reads the state it is handed)."""
    obj = getattr(state, attr, None)
    if obj is None or obj.spec is not state.spec:
        obj = make(state)
        setattr(state, attr, obj)
    return obj


def layout(state: ClusterState) -> _Layout:
    """The state's node-class layout, computed once per state object."""
    return _kept(state, "_feature_layout", _Layout)


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
    return _kept(state, "_feature_builder", FeatureBuilder)


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


# ---------------------------------------------------------------------------------------------
# Per-candidate features: the node-level RandomForest scores every (task, node) pair with them.
# ---------------------------------------------------------------------------------------------

#: bumped whenever :data:`CANDIDATE_FEATURE_NAMES` or their scaling change (the rf stores it)
CANDIDATE_SCHEMA_VERSION = "node-1"
_CLUSTER = ["edge_load", "cloud_load", "gpu_load", "queued_tasks", "candidates", "fit_now_share"]
#: what changes from decision to decision, then what depends on the task's shape and the node only
_NODE = ["fits_now", "node_queue", "wait_slo", "exec_slo", "latency_slo", "latency_vs_best",
         "cost_rel", "cost_vs_best", "one_step", "one_step_vs_best", "free_cpu", "free_mem", "free_gpu",
         "node_load", "running", "device_sharers"]
_NODE_STATIC = ["network_slo", "speed", "speed_vs_best", "share_cpu", "share_whole", "share_mig", "share_slice",
                "tier_edge", "tier_cloud", "tier_gpu"]
#: task features, cluster summaries, then the node's own: one row per candidate, the same layout
#: on a cluster of 6 nodes or 1,213 (nothing is indexed by node or node class)
CANDIDATE_FEATURE_NAMES: tuple[str, ...] = tuple(_TASK + _CLUSTER + _NODE + _NODE_STATIC)
N_CANDIDATE_FEATURES = len(CANDIDATE_FEATURE_NAMES)
_HEAD = len(_TASK) + len(_CLUSTER)  # columns shared by a decision's rows
_STATIC = _HEAD + len(_NODE)  # first column of the static part
_SHARE_KINDS = ("cpu", "whole", "mig", "slice")
#: waits the queue projection calls endless (a task that can never start there) read as this many SLOs
_NEVER_SLO = 1e6
#: queue projections remembered per cluster (they are exact while the node's running and waiting
#: tasks stay the same, so most of a busy node's are reused by the next decisions)
MAX_PROJECTIONS = 8192


class _Static:
    """The part of candidate rows that depends on the task's shape and the candidates only."""

    __slots__ = ("tails", "inv_speed", "net_ms", "cost_a", "cost_rate", "slices", "node_list", "nodes", "task")
    tails: np.ndarray

    def __init__(self, task: Task, state: ClusterState, nodes: np.ndarray, shares: Sequence) -> None:
        spec = state.spec
        self.task = np.array(task_features(task))  # shared, never written: the kernel sets the work term in its copy
        self.nodes = np.array(nodes, dtype=np.int64)  # a writable copy: the kernel is compiled for one array kind
        self.node_list = nodes.tolist()
        nd = [spec.nodes[i] for i in self.node_list]
        tiers = [spec.tiers[n.tier] for n in nd]
        spd = [speed(n, task, s, 1) for n, s in zip(nd, shares)]
        top = max(spd)
        slo = max(task.slo_ms, 1.0)
        self.inv_speed = np.array([1.0 / v for v in spd])
        net_ms = [float(state.net_mean_ms[i]) for i in self.node_list]
        self.net_ms = np.array(net_ms)
        kinds = state.tier_of[nodes].tolist()
        self.tails = np.array([[math.log10(net / slo), math.log2(v), math.log2(v / top),
                                *(float(s[0] == k) for k in _SHARE_KINDS), *(float(kind == k) for k in range(3))]
                               for net, v, s, kind in zip(net_ms, spd, shares, kinds)])
        self.cost_a = np.array([t.price_per_task for t in tiers], dtype=float)
        self.cost_rate = np.array([task.cpu_milli / 1000.0 * t.price_cpu_second + task.mem_mib / 1024.0 * t.price_gb_second
                                   + gpu_devices_held(s) * t.price_gpu_second for t, s in zip(tiers, shares)])
        self.slices = [j for j, s in enumerate(shares) if s[0] == "slice"]  # a slice's speed depends on its sharers


class CandidateFeatures:
    """:func:`candidate_features` with what repeats cached: per task shape and candidate set the
    static part of the rows, per node state its queue projection (one per cluster, on the state)."""

    def __init__(self, state: ClusterState) -> None:
        self.spec = state.spec
        self.totals = np.ascontiguousarray(np.stack([state.cpu_total, state.mem_total, state.gpu_total]))
        self._weights: dict = {}  # per objective: its weights as the kernel reads them
        self._kind_weight = layout(state).kind_weight
        self._kind_has = layout(state).kind_has
        self._static: dict[tuple, _Static] = {}
        self._projected: dict[tuple, float] = {}

    def static(self, task: Task, state: ClusterState, nodes: np.ndarray, shares: Sequence) -> _Static:
        key = (task.priority, task.slo_ms, task.cpu_milli, task.mem_mib, task.gpu_milli, task.gpu_count,
               task.mig_profile, task.gpu_models, task.cost_sensitivity, task.kind, nodes.tobytes())
        hit = self._static.get(key)
        if hit is None:
            if len(self._static) >= MAX_TASK_PARTS:
                self._static.clear()
            hit = self._static[key] = _Static(task, state, nodes, shares)
        return hit

    def wait_s(self, task: Task, state: ClusterState, i: int, share) -> float:
        """Seconds until ``task`` could start on node ``i`` behind its queue (:func:`cluster.booking.projected_start`).

        Remembered per node state: the running tasks' finish times and the queue's ends and length
        (queue items are immutable and only join at the tail, so these identify it) plus the task's
        request; an absolute start time does not change while they stay the same.
        """
        q, held = state.queues[i], state.holding[i]
        key = (i, share, task.cpu_milli, task.mem_mib, tuple([h[0] for h in held]), len(q),
               id(q[0]) if q else 0, id(q[-1]) if q else 0)
        hit = self._projected.get(key)
        if hit is None:
            if len(self._projected) >= MAX_PROJECTIONS:
                self._projected.clear()
            # the entry holds the queue's end items, so their ids in the key cannot be reused meanwhile
            hit = self._projected[key] = (projected_start(state, i, task, share), q[0] if q else None,
                                          q[-1] if q else None)
        return max(hit[0], state.now) - state.now

    def build(self, task: Task, state: ClusterState, nodes: np.ndarray, shares: Sequence, fits: Sequence[bool],
              objective) -> np.ndarray:
        st = self.static(task, state, nodes, shares)
        slo = float(max(task.slo_ms, 1.0))  # the kernel is compiled for one set of argument types
        work = float(task.work)
        if type(fits) is not np.ndarray or fits.dtype != np.bool_ or not fits.flags.carray:
            fits = np.array(fits, dtype=np.bool_)  # a contiguous writable bool array, as the kernel was compiled for
        k = len(st.node_list)
        if len(fits) != k:  # the compiled kernel does not check bounds
            raise ValueError(f"fits has {len(fits)} flags for {k} candidates")
        qlen = state.queue_len
        wait = np.zeros(k)  # seconds until it could start: projected only where it would not start at once
        fit = fits.tolist()
        later = [j for j, i in enumerate(st.node_list) if not fit[j] or qlen.item(i)]
        if later:
            never = _NEVER_SLO * slo / 1000.0
            for j in later:
                wait[j] = min(self.wait_s(task, state, st.node_list[j], shares[j]), never)
        sharers = np.zeros(k)  # log2 of a time slice's sharers where more than one, with its execution seconds
        slice_ex = np.zeros(k)
        for j in st.slices:  # a time slice joins the tasks already on its device
            i = st.node_list[j]
            n_sh = sharers_at_start(state, i, shares[j])
            if n_sh > 1:
                sharers[j] = math.log2(n_sh)
                slice_ex[j] = work / speed(state.spec.nodes[i], task, shares[j], n_sh)
        X = np.empty((k, N_CANDIDATE_FEATURES), dtype=np.float32)
        w = self._weights.get(objective)
        if w is None:
            w = self._weights[objective] = np.array([objective.latency, objective.slo_miss, objective.cost,
                                                     objective.cost_ref, objective.latency_knee], dtype=np.float64)
        _rows_kernel()(X, st.task, _work_term(work), self._kind_weight, self._kind_has, st.nodes, fits, wait, work,
                       st.inv_speed, sharers, slice_ex, st.net_ms, st.cost_a, st.cost_rate, st.tails, qlen, state.util,
                       state.running, state.cpu_free, state.mem_free, state.gpu_held, self.totals, slo,
                       float(task.priority), float(task.cost_sensitivity), w)
        return X


def _candidate_rows(X, task, work_term, kind_weight, kind_has, nodes, fits, wait, work, inv_speed, sharers, slice_ex,
                    net_ms, cost_a, cost_rate, tails, qlen, util, running, cpu_free, mem_free, gpu_held, totals, slo,
                    priority, cost_sensitivity, weights):  # pragma: no cover
    """Fill ``X`` (K, F) with a decision's candidate rows (:func:`candidate_features`): plain Python over
    arrays, compiled by :func:`_rows_kernel`. ``task``: :func:`task_features` (its work term is
    ``work_term``); ``kind_weight``/``kind_has``: :class:`_Layout`'s, for the tier loads; ``wait``: seconds
    per candidate; execution is ``work * inv_speed`` but where ``sharers`` (log2 of a time slice's
    sharers, else 0) is set, then ``slice_ex``; ``totals``: the nodes' CPU, memory and GPU totals (3, N);
    ``weights``: the objective's latency, slo_miss, cost, cost_ref and latency_knee.

    The one-step objective is :meth:`scheduler.objective.Objective.score`, operation for operation
    (a test holds them equal); every figure is computed in float64 and rounded to float32 on store.
    """
    k, n_task, n_kind = X.shape[0], task.shape[0], kind_weight.shape[0]
    n_head = n_task + n_kind
    queued = 0
    for i in range(qlen.shape[0]):
        queued += qlen[i]
    n_fit = 0
    for j in range(k):
        n_fit += fits[j]
    w_lat, w_miss, w_cost, cost_ref, knee = weights[0], weights[1], weights[2], weights[3], weights[4]
    queued_col, count_col, fit_col = math.log1p(float(queued)) / 5.0, math.log2(k) / 10.0, n_fit / k
    head = np.empty(n_head)
    for c in range(n_task):
        head[c] = task[c]
    head[_WORK_INDEX] = work_term
    for t in range(n_kind):  # the tier kind's mean load, 1 where the cluster has none of that kind
        load = 0.0
        for i in range(kind_weight.shape[1]):
            load += kind_weight[t, i] * util[i]
        head[n_task + t] = load if kind_has[t] else 1.0
    r = n_head + 3  # the first of the node's own columns
    lat_l, cost_l, one_l = np.empty(k), np.empty(k), np.empty(k)
    for j in range(k):
        for c in range(n_head):
            X[j, c] = head[c]
        X[j, n_head], X[j, n_head + 1], X[j, n_head + 2] = queued_col, count_col, fit_col
        i = nodes[j]
        ex = slice_ex[j] if sharers[j] > 0.0 else work * inv_speed[j]
        wait_ms, ex_ms = wait[j] * 1000.0, ex * 1000.0
        lat = wait_ms + net_ms[j] + ex_ms
        cost = cost_a[j] + cost_rate[j] * ex
        ratio = lat / slo
        term = ratio if ratio <= knee else knee * (1.0 + math.log(ratio / knee))
        lat_l[j] = math.log10(lat / slo)
        cost_l[j] = cost / cost_ref
        one_l[j] = (w_lat * term + w_miss * (priority / 5.0) * (ratio > 1.0)
                    + w_cost * (cost_sensitivity / 5.0) * cost / cost_ref)
        X[j, r] = 1.0 if fits[j] else 0.0
        X[j, r + 1] = math.log1p(qlen[i]) / 5.0
        X[j, r + 2] = math.log10(1.0 + wait_ms / slo)
        X[j, r + 3] = math.log10(max(ex_ms, 1e-3) / slo)
        X[j, r + 10] = cpu_free[i] / totals[0, i]
        X[j, r + 11] = mem_free[i] / totals[1, i]
        gt = totals[2, i]
        X[j, r + 12] = (gt - gpu_held[i]) / gt if gt > 0 else 0.0
        X[j, r + 13] = util[i]
        X[j, r + 14] = math.log1p(running[i]) / 5.0
        X[j, r + 15] = sharers[j]
        for c in range(tails.shape[1]):
            X[j, r + 16 + c] = tails[j, c]
    lat_min, cost_min, one_min = lat_l.min(), cost_l.min(), one_l.min()
    for j in range(k):
        X[j, r + 4], X[j, r + 5] = lat_l[j], lat_l[j] - lat_min
        X[j, r + 6], X[j, r + 7] = cost_l[j], cost_l[j] - cost_min
        X[j, r + 8], X[j, r + 9] = math.log1p(one_l[j]), math.log1p(one_l[j] - one_min)


def warm() -> None:
    """Compile (or load from numba's cache) the candidate-row kernel now, so that a policy's first
    decision does not pay for it (a policy calls this when it is built)."""
    _rows_kernel()


@functools.cache
def _rows_kernel():
    """:func:`_candidate_rows` compiled (numba), or the plain function where numba cannot serve.

    Why compiled: the rows were a plain-Python loop of about 4 us a candidate (29 us of a
    decision's 59 on local.yaml); compiled, the whole decision's rows cost a few microseconds plus
    the call (``python -m benchmarks rf``).
    """
    from scheduler.jit import compiled

    i1, f1 = np.zeros(1, np.int64), np.zeros(1)
    probe = (np.empty((1, N_CANDIDATE_FEATURES), np.float32), np.zeros(len(_TASK)), 0.0, np.zeros((3, 1)),
             np.ones(3, np.bool_), i1, np.ones(1, np.bool_), f1, 1.0, np.ones(1), f1, f1, f1, f1, f1,
             np.zeros((1, N_CANDIDATE_FEATURES - _STATIC)), i1, f1, i1, i1, i1, i1, np.ones((3, 1), np.int64),
             1.0, 1.0, 1.0, np.ones(5))
    return compiled(_candidate_rows, *probe) or _candidate_rows


def candidate_builder(state: ClusterState) -> CandidateFeatures:
    """The state's :class:`CandidateFeatures` (kept on the state object, as :func:`builder`)."""
    return _kept(state, "_candidate_builder", CandidateFeatures)


def candidate_features(task: Task, state: ClusterState, nodes: np.ndarray, shares: Sequence,
                       fits: "np.ndarray | Sequence[bool]", objective=None) -> np.ndarray:
    """One row of :data:`CANDIDATE_FEATURE_NAMES` per candidate ``(nodes[j], shares[j])``: (K, F) float32.

    ``fits``: whether the task fits each candidate now. Besides the task and a few cluster
    summaries, a row holds what the simulator's own model expects of the candidate: the wait
    (the node's queue projected, only where the task would not start at once), execution,
    latency and cost relative to the SLO and the objective's ``cost_ref``, its one-step
    objective, each also against the best candidate's (a forest judges rows one at a time;
    these say how a row compares), the node's free capacity, load and running tasks, and
    what never changes: network, speed, share and tier kind. Plain-Python loops: numpy's
    per-call overhead dominates at a handful of candidates (callers bound K on big
    clusters). ``objective``: the weights (default ``configs/objective.yaml``).
    """
    return candidate_builder(state).build(task, state, np.asarray(nodes), shares, fits,
                                          _default_objective() if objective is None else objective)


@functools.cache
def _default_objective():
    from scheduler.objective import load_objective

    return load_objective()


#: the artifact meta key of the range of candidate rows a learned model trained on (rl_env.feature_range)
RANGE_KEY = "feature_range"


def trained_range(meta: dict, ref: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lo, hi)`` per candidate column of the rows model ``ref`` trained on (``meta["feature_range"]``),
    or None when its artifact records none. Malformed: :class:`scheduler.model_registry.SchemaMismatchError`."""
    from scheduler import model_registry

    rng = meta.get(RANGE_KEY)
    if rng is None:
        return None
    lo, hi = (np.asarray(rng.get(k, ()), dtype=np.float32) for k in ("lo", "hi"))
    if lo.shape != (N_CANDIDATE_FEATURES,) or hi.shape != lo.shape or not (lo <= hi).all():
        raise model_registry.SchemaMismatchError(
            f"model {ref}: {RANGE_KEY} needs lo <= hi, {N_CANDIDATE_FEATURES} values each")
    return lo, hi


def outside_text(columns: "Sequence[int] | np.ndarray") -> str:
    """The explanation's warning for candidate columns past the training range (empty for none): where a
    learned score is least to be trusted. Networks are clipped there and trees split as at their edge."""
    names = [CANDIDATE_FEATURE_NAMES[int(i)] for i in columns]
    if not names:
        return ""
    return (f"; outside the range it trained on in {', '.join(names[:3])}"
            + (f" and {len(names) - 3} more" if len(names) > 3 else "") + ", scored at its edge")
