"""The one policy interface, ``select(task, state) -> Decision``, and the registry.

Every placement policy (heuristics, RandomForest, RL) is an adapter to
:class:`Policy`; the simulator, the RL env baselines and the router call only
``select``. :class:`ScoringPolicy` implements the Kubernetes-style "filter, then
score" skeleton so that a heuristic is just a ``score`` function.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from cluster.state import ClusterState, Share, fits_now_list, fits_now_mask, share_for, share_groups
from scheduler.task import Task


@dataclass(slots=True)
class Decision:
    """Where a task goes and why.

    ``node`` is -1 when no node can host the task (``explanation`` says why).
    ``scores`` has one entry per node of the cluster (NaN where infeasible);
    higher is better. ``device`` pins a GPU for slice shares (packing policies).
    """

    node: int
    share: Share | None
    scores: np.ndarray
    explanation: str
    policy: str
    queued: bool = False
    device: int | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = field(default=None)

    @property
    def placed(self) -> bool:
        return self.node >= 0


@runtime_checkable
class Policy(Protocol):
    """A placement policy. ``reset`` re-seeds any randomness (deterministic runs).

    A policy may also say ``pure = True``: its decision is a function of the task and
    the state alone, so callers may reuse it for an equal task against the same state
    (the router's batches do; see :attr:`ScoringPolicy.pure`).
    """

    name: str

    def select(self, task: Task, state: ClusterState) -> Decision: ...

    def reset(self, seed: int | None = None) -> None: ...


Candidates = tuple[np.ndarray, list[Share], np.ndarray]

#: On a cluster of up to this many nodes "fits now" is tested in plain Python (:meth:`_Shape.fits_now`):
#: numpy's per-call overhead (about a microsecond) costs more than a loop over a handful of nodes.
#: Above it the test is vectorised (the two paths give the same candidates:
#: ``tests/test_scalar_vector.py``). Up to this many statically feasible nodes, :func:`filter_nodes`
#: reuses cached candidate arrays per fits-now pattern.
SCALAR_MAX_NODES = 32
#: At most this many fits-now patterns are remembered per task shape (bounds the memory).
MAX_PATTERNS = 4096
#: At most this many task shapes are remembered (the cache starts over when full).
MAX_SHAPES = 65_536


class _Shape:
    """Static feasibility of one task shape, plus the candidates seen per fits-now pattern."""

    __slots__ = ("nodes", "shares", "_groups", "node_list", "cpu_only", "by_pattern")

    def __init__(self, nodes: list[int], shares: list[Share]) -> None:
        self.nodes = _frozen(np.array(nodes, dtype=np.int64))
        self.shares = shares
        self._groups: dict[Share, np.ndarray] | None = None
        self.node_list = nodes
        self.cpu_only = all(s[0] == "cpu" for s in shares)
        #: (fits-now pattern, queue_aware) -> the result of :func:`_candidates` for it
        self.by_pattern: dict[tuple, tuple[Candidates, bool]] = {}

    def fits_now(self, task: Task, state: ClusterState) -> list[bool] | np.ndarray:
        """Whether ``task`` fits now on each feasible node: a plain list on a cluster of at most
        :data:`SCALAR_MAX_NODES` nodes (a loop beats numpy's per-call overhead there), else numpy's
        mask (listing a large cluster's free capacities would cost more than the mask saves, however
        few nodes are feasible)."""
        if state.n_nodes <= SCALAR_MAX_NODES:
            return fits_now_list(state, task, self.node_list, self.shares, self.cpu_only)
        return fits_now_mask(state, task, self.nodes, self.groups)

    @property
    def groups(self) -> dict[Share, np.ndarray]:
        """``{share: positions}`` (:func:`share_groups`), built when first needed: a stream of
        all-distinct shapes (the router's batches) would otherwise pay for it on every task."""
        if self._groups is None:
            self._groups = share_groups(self.shares)
        return self._groups


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # cached and handed to every policy: nobody may write to it
    return a


_NAN_ROWS: dict[int, np.ndarray] = {}


def nan_row(n: int) -> np.ndarray:
    """A fresh array of ``n`` NaNs (a copy of a cached one: cheaper than ``np.full``)."""
    row = _NAN_ROWS.get(n)
    if row is None:
        row = _NAN_ROWS[n] = _frozen(np.full(n, np.nan))
    return row.copy()


class FeasibilityCache:
    """Static feasibility per task shape: which nodes could ever host it, and with what share.

    Tasks of a workload come in few shapes, so caching by shape keeps the filter
    out of the simulator's hot path.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, _Shape] = {}
        self._by_result: dict[tuple, _Shape] = {}
        self._spec = None
        self._cpu_caps: list[int] = []
        self._mem_caps: list[int] = []

    def static(self, task: Task, state: ClusterState) -> tuple[np.ndarray, list[Share]]:
        nodes, shares, _ = self.entry(task, state)
        return nodes, shares

    def entry(self, task: Task, state: ClusterState) -> tuple[np.ndarray, list[Share], dict[Share, np.ndarray]]:
        """``(nodes, shares, {share: positions})``: :meth:`static` plus the shares grouped."""
        sh = self.shape(task, state)
        return sh.nodes, sh.shares, sh.groups

    def shape(self, task: Task, state: ClusterState) -> _Shape:
        """The cached :class:`_Shape` of ``task`` (built on first sight of its shape)."""
        if self._spec is not state.spec:
            self._cache.clear()
            self._by_result.clear()
            self._spec = state.spec
            self._cpu_caps = sorted({nd.cpu_milli for nd in state.spec.nodes})
            self._mem_caps = sorted({nd.mem_mib for nd in state.spec.nodes})
        # A node can host the CPU and memory asked iff its capacity is at least that, so tasks asking
        # amounts between the same two node capacities have the same feasible nodes: the key holds
        # where the amounts fall among the capacities, not the amounts (distinct tasks share entries).
        key = (bisect_left(self._cpu_caps, task.cpu_milli), bisect_left(self._mem_caps, task.mem_mib),
               task.gpu_milli, task.gpu_count, task.mig_profile, task.gpu_models)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= MAX_SHAPES:  # a long-lived router sees unboundedly many shapes
                self._cache.clear()
                self._by_result.clear()
            nodes, shares = [], []
            for i in range(state.n_nodes):
                s = share_for(state, i, task)
                if s is not None:
                    nodes.append(i)
                    shares.append(s)
            # many shapes have the same feasible nodes and shares (4 GB or 5 GB of memory): they
            # share one _Shape, its arrays and its per-pattern candidates
            result = (tuple(nodes), tuple(shares))
            hit = self._by_result.get(result)
            if hit is None:
                hit = self._by_result[result] = _Shape(nodes, shares)
            self._cache[key] = hit
        return hit


def _candidates(nodes: np.ndarray, shares: list[Share], now: np.ndarray, groups: "dict | list[Share]",
                queue_aware: bool) -> tuple[Candidates, bool]:
    """The filter rule of :func:`filter_nodes`, given the fits-now mask (``groups``: the shares
    grouped, or the shares themselves; only whether they are all one share matters)."""
    if queue_aware:
        return (nodes, shares, now), not now.any()
    if now.all():
        return (nodes, shares, now), False
    if now.any():
        keep = np.flatnonzero(now)
        one = len(groups) == 1 if isinstance(groups, dict) else all(x == shares[0] for x in shares)
        kept = [shares[0]] * len(keep) if one else [shares[k] for k in keep]
        return (nodes[keep], kept, now[keep]), False
    return (nodes, shares, now), True


def filter_nodes(task: Task, state: ClusterState, cache: FeasibilityCache,
                 queue_aware: bool = False) -> tuple[Candidates, bool]:
    """Feasible candidates: nodes where the task fits now, else every node it could queue on.

    Returns ((node indices, shares, fits-now mask), queued) where ``queued`` says
    that nothing fits now and the task will wait in the chosen node's queue.
    ``queue_aware`` policies (the oracle) get every statically feasible node, to
    weigh waiting for a fast node against starting now on a slow one.

    The returned arrays may be cached and shared between calls: they are read-only.
    """
    sh = cache.shape(task, state)
    fits = sh.fits_now(task, state)
    if type(fits) is list:
        key = (tuple(fits), queue_aware)
    elif len(sh.node_list) <= SCALAR_MAX_NODES:  # a big cluster, few feasible nodes: still few patterns
        key = (fits.tobytes(), queue_aware)
    else:
        return _candidates(sh.nodes, sh.shares, fits, sh.groups, queue_aware)
    # few fits-now patterns per shape, each worked out once (and one object, so a batch groups by it)
    hit = sh.by_pattern.get(key)
    if hit is None:
        (nodes, shares, now), queued = _candidates(sh.nodes, sh.shares, np.array(fits, dtype=bool),
                                                   sh.shares, queue_aware)
        hit = ((_frozen(nodes), shares, _frozen(now)), queued)
        if len(sh.by_pattern) < MAX_PATTERNS:
            sh.by_pattern[key] = hit
    return hit


def why_infeasible(task: Task, state: ClusterState) -> str:
    """A sentence on why no node can ever host ``task``."""
    need = task.gpu_need
    parts = [f"cpu {task.cpu_milli}m", f"memory {task.mem_mib} MiB"]
    if need != "none":
        parts.append({"fraction": f"{task.gpu_milli / 1000:.3g} GPU", "whole": f"{task.gpu_count} GPU(s)",
                      "mig": f"MIG {task.mig_profile}"}[need])
    if task.gpu_models:
        parts.append(f"GPU model in {list(task.gpu_models)}")
    return f"no node can host {', '.join(parts)}"


class ScoringPolicy:
    """Filter, then score: subclasses implement :meth:`score` over the candidates."""

    name = "scoring"
    #: phrase for the explanation: "<node> chosen: <reason> (<score>)"
    reason = "highest score"
    #: score every statically feasible node, not only those where the task fits now
    queue_aware = False
    #: ``select`` is a function of the task and the state alone (no randomness, nothing
    #: remembered between calls), so equal tasks against one state may share a decision
    #: (the router's batches do). False unless a policy says so.
    pure = False
    #: optional tie-break: among candidates with the top score the lowest ``node_rank[node]``
    #: wins (a per-seed node permutation in trace replays); None keeps the lowest index.
    node_rank: np.ndarray | None = None

    def __init__(self, seed: int | None = 0) -> None:
        self._feasible = FeasibilityCache()
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        """Higher is better; one value per candidate."""
        raise NotImplementedError

    def pick_device(self, task: Task, state: ClusterState, node: int, share: Share) -> int | None:
        """GPU within the chosen node for slice shares; None lets the allocator best-fit."""
        return None

    def score_many(self, tasks: Sequence[Task], state: ClusterState, cand: Candidates) -> np.ndarray:
        """:meth:`score` of each task against the same candidates, one row per task (a policy
        overrides it to score a group at once; the rows must equal :meth:`score`'s bit for bit)."""
        return np.array([np.asarray(self.score(t, state, cand), dtype=float) for t in tasks], dtype=float)

    def select(self, task: Task, state: ClusterState) -> Decision:
        cand, _ = filter_nodes(task, state, self._feasible, self.queue_aware)
        if len(cand[0]) == 0:
            return self._infeasible(task, state)
        return self._select_among(task, state, cand)

    def _select_among(self, task: Task, state: ClusterState, cand: Candidates) -> Decision:
        s = self.score(task, state, cand)
        if not isinstance(s, np.ndarray) or s.dtype != np.float64:
            s = np.asarray(s, dtype=float)
        nodes = cand[0]
        n = state.n_nodes
        if len(nodes) == n:  # every node is a candidate (candidates are in index order)
            scores = s.copy()
        else:
            scores = nan_row(n)
            scores[nodes] = s
        return self._chosen(task, state, cand, s, int(s.argmax()), scores)

    def select_many(self, tasks: Sequence[Task], state: ClusterState) -> list[Decision]:
        """``[self.select(t, state) for t in tasks]``, bit for bit, in fewer numpy calls.

        A pure policy's tasks that share their candidates (the same feasible nodes, shares
        and fits-now pattern: on a small cluster the filter hands out one cached object for
        them) are scored as one matrix by :meth:`score_many`; a batch of distinct tasks
        then pays per task only for its filter and its :class:`Decision`. Other policies
        (random draws, rotation) decide one task after another, as ``select`` would.
        """
        if not self.pure or len(tasks) < 2 or type(self).select is not ScoringPolicy.select:
            return [self.select(t, state) for t in tasks]
        out: list[Decision | None] = [None] * len(tasks)
        groups: dict[int, tuple[tuple[Candidates, bool], list[int]]] = {}
        for k, t in enumerate(tasks):
            hit = filter_nodes(t, state, self._feasible, self.queue_aware)
            g = groups.get(id(hit))
            if g is None:
                g = groups[id(hit)] = (hit, [])  # holds ``hit``, so its id is not reused meanwhile
            g[1].append(k)
        n = state.n_nodes
        for (cand, _), ks in groups.values():
            nodes = cand[0]
            if len(nodes) == 0:
                for k in ks:
                    out[k] = self._infeasible(tasks[k], state)
                continue
            if len(ks) == 1:  # alone (always so above SCALAR_MAX_NODES candidates): score's own path
                out[ks[0]] = self._select_among(tasks[ks[0]], state, cand)
                continue
            group = [tasks[k] for k in ks]
            s = self.score_many(group, state, cand)
            if len(nodes) == n:
                full = s.copy()
            else:
                full = np.full((len(ks), n), np.nan)
                full[:, nodes] = s
            best = s.argmax(axis=1).tolist()
            for r, k in enumerate(ks):
                out[k] = self._chosen(group[r], state, cand, s[r], best[r], full[r])
        return out  # type: ignore[return-value]

    def _infeasible(self, task: Task, state: ClusterState) -> Decision:
        return Decision(-1, None, np.full(state.n_nodes, np.nan), why_infeasible(task, state), self.name)

    def _chosen(self, task: Task, state: ClusterState, cand: Candidates, s: np.ndarray, k: int,
                scores: np.ndarray) -> Decision:
        """The decision for candidate ``k`` (the first top score; ``node_rank`` breaks ties).

        A policy whose own rule breaks ties (or picks among the best at random) overrides
        this and hands its pick to :meth:`_decision`.
        """
        if self.node_rank is not None and len(s) > 1:
            top = np.flatnonzero(s == s[k])
            if len(top) > 1:
                k = int(top[np.argmin(self.node_rank[cand[0][top]])])
        return self._decision(task, state, cand, s, k, scores)

    def _decision(self, task: Task, state: ClusterState, cand: Candidates, s: np.ndarray, k: int,
                  scores: np.ndarray, reason: str | None = None) -> Decision:
        """The :class:`Decision` placing ``task`` on candidate ``k``, explained by ``reason``."""
        nodes, shares, now = cand
        node, share = nodes.item(k), shares[k]
        name = state.spec.nodes[node].name
        queued = not now.item(k)
        wait = " (queued: waits for capacity)" if queued else ""
        return Decision(node, share, scores, f"{name}: {reason or self.reason} ({s.item(k):.3g}){wait}",
                        self.name, queued=queued, device=self.pick_device(task, state, node, share))


def select_many(policy: "Policy", tasks: Sequence[Task], state: ClusterState) -> list[Decision]:
    """``policy``'s decisions for ``tasks``, each against ``state`` as if it came alone (its own
    ``select_many`` when it has one, else ``select`` per task)."""
    many = getattr(policy, "select_many", None)
    if many is not None:
        return many(tasks, state)
    return [policy.select(t, state) for t in tasks]


PolicyFactory = Callable[..., Policy]
_REGISTRY: dict[str, PolicyFactory] = {}


def register(name: str) -> Callable[[PolicyFactory], PolicyFactory]:
    """Class decorator: make a policy constructible by ``name`` from YAML or the CLI.

    A name already taken is an error: YAML and saved results name policies, and a second
    registration would silently change what an existing name runs.
    """

    def deco(factory: PolicyFactory) -> PolicyFactory:
        taken = _REGISTRY.get(name)
        if taken is not None:
            raise ValueError(f"policy name {name!r} is taken by {taken.__module__}.{taken.__qualname__}; "
                             f"register {factory.__module__}.{factory.__qualname__} under another name")
        _REGISTRY[name] = factory
        return factory

    return deco


def _load_builtins() -> None:
    import scheduler.policies  # noqa: F401  (registers the built-in policies)


def available_policies() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def make_policy(name: str, **params: Any) -> Policy:
    """Build a registered policy; unknown names raise a KeyError listing the known ones.

    ``kind:version`` (``rf:latest``, ``rl:3``) passes ``version=`` to the factory, for
    learned policies loaded from the model registry.
    """
    _load_builtins()
    base, _, version = name.partition(":")
    if base not in _REGISTRY:
        raise KeyError(f"unknown policy {base!r} (known: {', '.join(sorted(_REGISTRY))})")
    if version:
        params["version"] = version
    policy = _REGISTRY[base](**params)
    policy.name = name
    return policy
