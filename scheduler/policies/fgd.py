"""Fragmentation Gradient Descent (FGD, Weng et al., USENIX ATC 2023) and its fragmentation measure.

The measure (the paper's "fragmentation" of a node for a target workload):
for each typical task shape ``m = (cpu c, milli per GPU r, GPUs k, models)`` with
weight ``p_m`` and a node with free GPU milli ``g_i`` and free CPU ``c_n``:

* CPU-only shape, or a GPU model the node does not have: every free GPU milli is
  a fragment, ``F_m = sum g_i``;
* the shape fits (``#{i: g_i >= r} >= k`` and ``c_n >= c``): the GPUs too small
  for it are fragments, ``F_m = sum_{g_i < r} g_i``;
* otherwise ``F_m = sum g_i``.

``F_node = sum_m p_m F_m``. Memory is ignored; MIG devices are invisible to the
measure (their ``gpu_free`` is -1), so a MIG node only counts its CPU.

Writing ``S = sum g_i`` and ``high_m = sum_{g_i >= r_m} g_i`` (weights summing to 1)
this is ``F = S - sum_m p_m fit_m high_m``, which is what the kernels compute for
many nodes at once. FGD places a task where ``F`` drops most (grows least):
``score = int(100 * sigmoid((F_before - F_after) / 1000))``, and for a fractional
task tries every GPU that fits and takes the best one (lowest index on ties).

Speed: :class:`FragmentationIndex` keeps ``S``, ``high``, the fit counts and ``F``
per node and recomputes only nodes whose free capacity changed (found by diffing
the state against a snapshot, so releases are seen too); the FGD policy also
caches each node's score per task shape and rescores only changed nodes.

This module lives in ``scheduler`` because the policy needs it and ``scheduler``
must not import ``simulations``; :mod:`simulations.fragmentation` re-exports it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from cluster.state import ClusterState, Share, share_request
from cluster.topology import MIG_PROFILES
from scheduler.policy import Candidates, ScoringPolicy, register
from scheduler.task import Task

#: decimal places kept of a fragmentation delta before the sigmoid, so that deltas
#: equal in exact arithmetic give equal integer scores (ties then go to node rank)
_DELTA_DECIMALS = 6


@dataclass(frozen=True, order=True)
class Shape:
    """A task shape for the target workload: memory is not part of it.

    ``gpu_milli`` is per GPU (1000 for whole GPUs, 0 for CPU-only), ``gpu_count``
    is 0 for CPU-only tasks, ``gpu_models`` empty means any GPU model.
    """

    cpu_milli: int
    gpu_milli: int
    gpu_count: int
    gpu_models: tuple[str, ...] = ()


def shape_of(task: Task) -> Shape:
    """The :class:`Shape` of a task (a MIG profile counts as its compute fraction)."""
    need = task.gpu_need
    if need == "none":
        return Shape(task.cpu_milli, 0, 0, tuple(task.gpu_models))
    if need == "whole":
        return Shape(task.cpu_milli, 1000, task.gpu_count, tuple(task.gpu_models))
    if need == "mig":
        return Shape(task.cpu_milli, MIG_PROFILES[task.mig_profile][0] * 1000 // 7, 1, tuple(task.gpu_models))
    return Shape(task.cpu_milli, task.gpu_milli, 1, tuple(task.gpu_models))


def _as_shape(x: Any) -> Shape:
    if isinstance(x, Shape):
        return x
    if isinstance(x, Task):
        return shape_of(x)
    x = tuple(x)
    models = x[3] if len(x) > 3 else ()
    if isinstance(models, str):
        models = tuple(m for m in models.split("|") if m)
    return Shape(int(x[0]), int(x[1]), int(x[2]), tuple(models or ()))


def typical_from_counts(counts: Mapping[Shape, float], coverage: float = 0.95) -> list[tuple[Shape, float]]:
    """Most frequent shapes until their share reaches ``coverage``, weights renormalised to 1.

    Sorted by count, then (equal counts) the larger shape by (cpu, milli, count, models) first.
    """
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    total = float(sum(counts.values()))
    if total <= 0:
        return []
    order = sorted(counts.items(), key=lambda kv: (kv[1], kv[0].cpu_milli, kv[0].gpu_milli,
                                                   kv[0].gpu_count, "|".join(kv[0].gpu_models)),
                   reverse=True)
    chosen: list[tuple[Shape, float]] = []
    acc = 0.0
    for shape, cnt in order:
        chosen.append((shape, float(cnt)))
        acc += cnt
        if acc >= coverage * total - 1e-9:
            break
    return [(s, c / acc) for s, c in chosen]


def typical_shapes(tasks: Iterable[Any], coverage: float = 0.95) -> list[tuple[Shape, float]]:
    """The target workload ("typical pods") of a task list: ``[(shape, weight)]``, weights sum to 1.

    Each task (a :class:`Task`, :class:`Shape` or ``(cpu, milli, count[, models])``)
    counts once; see :func:`typical_from_counts` for the cut.
    """
    return typical_from_counts(Counter(_as_shape(t) for t in tasks), coverage)


class TargetWorkload:
    """Typical shapes compiled to arrays for the vectorised kernels."""

    def __init__(self, shapes: Sequence[tuple[Any, float]]) -> None:
        if not shapes:
            raise ValueError("a target workload needs at least one (shape, weight)")
        pairs = [(_as_shape(s), float(w)) for s, w in shapes]
        tot = sum(w for _, w in pairs)
        if tot <= 0 or any(w < 0 for _, w in pairs):
            raise ValueError("target workload weights must be >= 0 and not all 0")
        self.shapes = [(s, w / tot) for s, w in pairs]
        gpu = [(s, w) for s, w in self.shapes if s.gpu_milli > 0 and s.gpu_count > 0]
        self.c = np.array([s.cpu_milli for s, _ in gpu], dtype=np.int64)
        self.r = np.array([s.gpu_milli for s, _ in gpu], dtype=np.int64)
        self.k = np.array([s.gpu_count for s, _ in gpu], dtype=np.int64)
        self.w = np.array([w for _, w in gpu], dtype=float)
        self.models = [s.gpu_models for s, _ in gpu]
        self._type_ok: tuple[Any, np.ndarray] | None = None

    @property
    def n_gpu_shapes(self) -> int:
        return len(self.r)

    def type_ok(self, state: ClusterState) -> np.ndarray:
        """(N, M) bool: node ``n`` has a GPU model shape ``m`` accepts (static, cached per spec)."""
        if self._type_ok is None or self._type_ok[0] is not state.spec:
            ok = np.ones((state.n_nodes, self.n_gpu_shapes), dtype=bool)
            for m, models in enumerate(self.models):
                if models:
                    ok[:, m] = [nd.gpu_model in models for nd in state.spec.nodes]
            self._type_ok = (state.spec, ok)
        return self._type_ok[1]


def _components(wl: TargetWorkload, g0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``S`` (B,), fit count (B, M) and ``high`` (B, M) of free-GPU rows ``g0`` (>= 0)."""
    ge = g0[:, :, None] >= wl.r[None, None, :]
    cnt = ge.sum(axis=1)
    high = np.einsum("bg,bgm->bm", g0, ge.astype(np.int64))
    return g0.sum(axis=1), cnt, high


def _frag(wl: TargetWorkload, S: np.ndarray, cnt: np.ndarray, high: np.ndarray,
          cpu: np.ndarray, type_ok: np.ndarray) -> np.ndarray:
    """``F = S - sum_m w_m fit_m high_m`` over the leading axes."""
    fit = (cnt >= wl.k) & (cpu[..., None] >= wl.c) & type_ok
    return S - (fit * high) @ wl.w


def node_fragmentation(cpu_free: np.ndarray, gpu_free: np.ndarray, shapes: Sequence[tuple[Any, float]] | TargetWorkload,
                       type_ok: np.ndarray | None = None) -> np.ndarray:
    """Fragmentation (milli GPU) of each node for the target workload ``shapes``.

    Args:
        cpu_free: (B,) free CPU milli per node.
        gpu_free: (B, G) free milli per GPU; -1 marks absent (or MIG) devices.
        shapes: ``[(shape, weight)]`` (see :func:`typical_shapes`) or a :class:`TargetWorkload`.
        type_ok: optional (B, M) bool, node has a model GPU shape ``m`` accepts
            (M = GPU shapes in order); all True when omitted.
    """
    wl = shapes if isinstance(shapes, TargetWorkload) else TargetWorkload(shapes)
    cpu = np.atleast_1d(np.asarray(cpu_free, dtype=np.int64))
    g0 = np.maximum(np.atleast_2d(np.asarray(gpu_free, dtype=np.int64)), 0)
    if type_ok is None:
        type_ok = np.ones((len(cpu), wl.n_gpu_shapes), dtype=bool)
    S, cnt, high = _components(wl, g0)
    return _frag(wl, S, cnt, high, cpu, type_ok)


class FragmentationIndex:
    """Per-node fragmentation of a cluster state, recomputed only where capacity changed.

    :meth:`sync` diffs the state's ``cpu_free`` / ``gpu_free`` against a snapshot
    (a new state object triggers a full rebuild); :meth:`update` recomputes given
    nodes when the caller knows what changed. ``version[n]`` counts the changes of
    node ``n`` (score caches compare it).
    """

    def __init__(self, workload: TargetWorkload) -> None:
        self.wl = workload
        self.state: ClusterState | None = None

    def rebuild(self, state: ClusterState) -> None:
        self.state = state
        self.cpu = state.cpu_free.copy()
        self.gpu = state.gpu_free.copy()
        self.g0 = np.maximum(self.gpu, 0)
        self.type_ok = self.wl.type_ok(state)
        self.S, self.cnt, self.high = _components(self.wl, self.g0)
        self.F = _frag(self.wl, self.S, self.cnt, self.high, self.cpu, self.type_ok)
        self.version = np.zeros(state.n_nodes, dtype=np.int64)
        self.epoch = getattr(self, "epoch", -1) + 1

    def sync(self, state: ClusterState) -> np.ndarray:
        """Bring the cache up to date with ``state``; returns the nodes that changed."""
        if self.state is not state or len(self.cpu) != state.n_nodes:
            self.rebuild(state)
            return np.arange(state.n_nodes)
        changed = (state.cpu_free != self.cpu) | (state.gpu_free != self.gpu).any(axis=1)
        nodes = np.flatnonzero(changed)
        if len(nodes):
            self.update(nodes)
        return nodes

    def update(self, nodes: np.ndarray | Sequence[int]) -> None:
        """Recompute ``nodes`` from the tracked state."""
        st = self.state
        nodes = np.asarray(nodes, dtype=np.int64)
        self.cpu[nodes] = st.cpu_free[nodes]
        self.gpu[nodes] = st.gpu_free[nodes]
        g0 = np.maximum(self.gpu[nodes], 0)
        self.g0[nodes] = g0
        S, cnt, high = _components(self.wl, g0)
        self.S[nodes], self.cnt[nodes], self.high[nodes] = S, cnt, high
        self.F[nodes] = _frag(self.wl, S, cnt, high, self.cpu[nodes], self.type_ok[nodes])
        self.version[nodes] += 1

    @property
    def total(self) -> float:
        return float(self.F.sum())

    # ------------------------------------------------------------ FGD scoring

    def fgd_scores(self, nodes: np.ndarray, cpu_req: int, share: Share) -> tuple[np.ndarray, np.ndarray]:
        """FGD score per node (int-valued floats) and the GPU to use (-1: allocator's choice)."""
        r, k = share_request(share)
        kind = share[0]
        wl = self.wl
        cpu_a = self.cpu[nodes] - cpu_req
        F = self.F[nodes]
        tok = self.type_ok[nodes]
        B = len(nodes)
        if kind == "slice":
            g = self.g0[nodes]  # (B, G)
            valid = g >= r
            ga = g - r
            ge_b = g[:, :, None] >= wl.r
            ge_a = ga[:, :, None] >= wl.r
            cnt_a = self.cnt[nodes][:, None, :] - ge_b + ge_a
            high_a = (self.high[nodes][:, None, :] - g[:, :, None] * ge_b + ga[:, :, None] * ge_a)
            fit = (cnt_a >= wl.k) & (cpu_a[:, None, None] >= wl.c) & tok[:, None, :]
            F_a = (self.S[nodes] - r)[:, None] - (fit * high_a) @ wl.w  # (B, G)
            score = _sigmoid_score(F[:, None] - F_a)
            score = np.where(valid, score, -1.0)
            best = np.argmax(score, axis=1)
            return score[np.arange(B), best], np.where(valid.any(axis=1), best, -1)
        g = self.g0[nodes].copy()
        if kind == "whole" and k:
            # k GPUs from the ascending-free ones that fit: for whole GPUs the fully free ones
            free = np.where(g >= r, g, 10**9)
            order = np.argsort(free, axis=1, kind="stable")[:, :k]
            rows = np.arange(B)[:, None]
            g[rows, order] = np.maximum(g[rows, order] - r, 0)
        S, cnt, high = _components(wl, g)
        F_a = _frag(wl, S, cnt, high, cpu_a, tok)
        return _sigmoid_score(F - F_a), np.full(B, -1, dtype=np.int64)


def _sigmoid_score(delta: np.ndarray) -> np.ndarray:
    x = np.round(delta, _DELTA_DECIMALS) / 1000.0
    return np.trunc(100.0 / (1.0 + np.exp(-x)))


def _schedule_point(n: int) -> bool:
    """Tasks seen after which the default target workload is recomputed: 1, 2, 4, ... 512, then every 512."""
    return (n & (n - 1)) == 0 if n <= 512 else n % 512 == 0


@register("fgd")
class FGD(ScoringPolicy):
    """Fragmentation Gradient Descent: place where the target workload's fragmentation grows least.

    Args:
        seed: unused (FGD is deterministic); kept for the common constructor.
        target_workload: ``[(shape, weight)]`` typical tasks (see
            :func:`typical_shapes`; shapes may be :class:`Shape` or
            ``(cpu_milli, gpu_milli per GPU, gpu_count[, models])``). When absent
            the policy uses the typical shapes (95% coverage) of the tasks it has
            been asked to place so far, recomputed after 1, 2, 4, ..., 512 tasks
            and then every 512 tasks.
        coverage: coverage for the default target workload.
    """

    reason = "least fragmentation growth"

    def __init__(self, seed: int | None = 0, target_workload: Sequence[tuple[Any, float]] | None = None,
                 coverage: float = 0.95) -> None:
        self.coverage = coverage
        self._fixed = target_workload is not None
        self._seen: Counter = Counter()
        self._index = FragmentationIndex(TargetWorkload(target_workload)) if target_workload else None
        super().__init__(seed)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._epoch = -1
        if not self._fixed:
            self._seen = Counter()
            self._index = None
        elif self._index is not None:
            self._index.state = None

    @property
    def target_workload(self) -> list[tuple[Shape, float]]:
        return [] if self._index is None else list(self._index.wl.shapes)

    def _observe(self, task: Task) -> None:
        if self._fixed:
            return
        self._seen[shape_of(task)] += 1
        n = sum(self._seen.values())
        if self._index is None or _schedule_point(n):
            self._index = FragmentationIndex(TargetWorkload(typical_from_counts(self._seen, self.coverage)))
            self._cache.clear()

    def select(self, task: Task, state: ClusterState):  # noqa: D102 (see ScoringPolicy)
        self._observe(task)
        return super().select(task, state)

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        nodes, shares, _ = cand
        idx = self._index
        idx.sync(state)
        if idx.epoch != self._epoch:
            self._cache.clear()
            self._epoch = idx.epoch
        out = np.empty(len(nodes))
        groups = {shares[0]: slice(None)} if shares.count(shares[0]) == len(shares) else None
        if groups is None:
            groups = {}
            for pos, s in enumerate(shares):
                groups.setdefault(s, []).append(pos)
        for share, pos in groups.items():
            sub = nodes[pos]
            key = (share, task.cpu_milli)
            entry = self._cache.get(key)
            if entry is None:
                n = state.n_nodes
                entry = (np.zeros(n), np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64))
                self._cache[key] = entry
            sc, dev, ver = entry
            stale = sub[ver[sub] != idx.version[sub]]
            if len(stale):
                s_new, d_new = idx.fgd_scores(stale, task.cpu_milli, share)
                sc[stale], dev[stale], ver[stale] = s_new, d_new, idx.version[stale]
            out[pos] = sc[sub]
        return out

    def pick_device(self, task: Task, state: ClusterState, node: int, share: Share) -> int | None:
        if share[0] != "slice":
            return None
        sc, dev, ver = self._cache[(share, task.cpu_milli)]
        d = int(dev[node])
        return d if d >= 0 else None
