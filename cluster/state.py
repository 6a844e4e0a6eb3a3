"""Cluster state and exact resource accounting, shared by simulator, policies and router.

The state is arrays (one row per node) so that policies can score every node at
once with numpy, plus the per-node bookkeeping the simulator needs (queues,
running tasks). Policies only read it; :func:`allocate` and :func:`release` are
the only writers of free capacity, and :mod:`cluster.booking` the only caller
that starts, queues, finishes or takes back a task (idempotently).

A *share* says how a task holds a GPU on a node:

* ``("cpu", 0)``: no GPU;
* ``("slice", milli)``: part of one time-sliced or milli-shared device;
* ``("whole", k)``: k fully free, unpartitioned devices;
* ``("mig", profile)``: one free MIG instance of that profile.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from cluster.topology import MIG_PROFILES, ClusterSpec, mig_fraction

if TYPE_CHECKING:
    from scheduler.task import Task

Share = tuple[str, "int | str"]
CPU_SHARE: Share = ("cpu", 0)
PROFILE_NAMES = tuple(MIG_PROFILES)
PROFILE_INDEX = {p: i for i, p in enumerate(PROFILE_NAMES)}
#: MIG profiles from small to large compute, for "smallest instance that fits".
_PROFILES_BY_SIZE = sorted(PROFILE_NAMES, key=lambda p: MIG_PROFILES[p])
#: GPU milli a MIG instance of each profile counts for (its compute share of 1000).
MIG_MILLI = {p: MIG_PROFILES[p][0] * 1000 // 7 for p in PROFILE_NAMES}


class Allocation:
    """What one running task holds; never changed after :func:`allocate` made it.

    Immutable so that a state's copy may share it: whether it is still held is a
    fact about a state (it is in that state's ``holding``), not about the object.
    """

    __slots__ = ("node", "cpu", "mem", "devices", "mig", "share", "gpu_milli")

    def __init__(self, node: int, cpu: int, mem: int, devices: tuple[tuple[int, int], ...],
                 mig: tuple[int, int, str] | None, share: Share) -> None:
        self.node = node
        self.cpu = cpu
        self.mem = mem
        self.devices = devices  # ((device index, milli), ...)
        self.mig = mig  # (device index, instance index, profile)
        self.share = share
        #: GPU milli held (MIG instances count their compute share)
        self.gpu_milli = (MIG_MILLI[mig[2]] if mig is not None
                          else sum(m for _, m in devices) if devices else 0)

    @property
    def gpu_fraction(self) -> float:
        """GPU devices held, for pricing (a 1g MIG slice is 1/7 of a device)."""
        if self.mig is not None:
            return mig_fraction(self.mig[2])
        return sum(m for _, m in self.devices) / 1000.0

    def describe(self) -> str:
        kind, amount = self.share
        if kind == "cpu":
            return "cpu only"
        if kind == "mig":
            return f"MIG {amount} on GPU {self.mig[0]}"
        if kind == "whole":
            return f"{amount} whole GPU(s) {[d for d, _ in self.devices]}"
        return f"{amount / 1000:.3g} of GPU {self.devices[0][0]} (time-sliced)"


@dataclass
class ClusterState:
    """Mutable free capacity and queues of a cluster; build with :meth:`from_spec`."""

    spec: ClusterSpec
    cpu_free: np.ndarray
    mem_free: np.ndarray
    gpu_free: np.ndarray  # (N, G) free milli on shareable devices; -1 = absent or MIG
    gpu_tasks: np.ndarray  # (N, G) tasks on each device (time-slicing interference)
    granularity: np.ndarray  # (N, G)
    mig_free: np.ndarray  # (N, P) free MIG instances per profile
    mig_slots: list[dict[str, list[tuple[int, int]]]]
    mig_profiles: list[frozenset[str]]  # MIG profiles each node's layout has (static)
    queue_len: np.ndarray
    running: np.ndarray
    queues: list[deque] = field(default_factory=list)  # per node: (task, share, network s) waiting
    holding: list[list] = field(default_factory=list)  # per node: [finish time, Allocation] running
    now: float = 0.0
    # static, for vectorised scoring
    cpu_total: np.ndarray = field(default=None)
    mem_total: np.ndarray = field(default=None)
    gpu_total: np.ndarray = field(default=None)  # milli over all devices (MIG included)
    mig_used: np.ndarray = field(default=None)  # milli of MIG compute held, per node
    tier_of: np.ndarray = field(default=None)  # tier kind index: 0 edge, 1 cloud, 2 gpu
    pool_of: np.ndarray = field(default=None)
    net_mean_ms: np.ndarray = field(default=None)
    # derived, maintained by allocate/release
    gpu_held: np.ndarray = field(default=None)  # GPU milli held per node
    util: np.ndarray = field(default=None)  # see load()
    #: node -> its queue replayed to the end (:func:`cluster.booking.projected_start`), kept while the
    #: node's future is what the replay predicted; None (off) unless the simulator or a lookahead turns it
    #: on (:meth:`cache_replays`); a copy of a state with it on starts with an empty one
    replay_cache: dict | None = None

    def __post_init__(self) -> None:
        if self.gpu_held is None:
            self.gpu_held = np.zeros(len(self.cpu_free), dtype=np.int64)
        if self.util is None:
            self.util = np.zeros(len(self.cpu_free))
        # (cpu, memory, GPU milli) totals per node as Python ints, for :meth:`_refresh`
        self._totals = (None if self.cpu_total is None else
                        list(zip(self.cpu_total.tolist(), self.mem_total.tolist(), self.gpu_total.tolist())))

    @classmethod
    def from_spec(cls, spec: ClusterSpec) -> "ClusterState":
        n = len(spec.nodes)
        g = max((nd.gpu_count for nd in spec.nodes), default=0) or 1
        gpu_free = np.full((n, g), -1, dtype=np.int64)
        gran = np.full((n, g), 1000, dtype=np.int64)
        mig_free = np.zeros((n, len(PROFILE_NAMES)), dtype=np.int64)
        slots: list[dict[str, list[tuple[int, int]]]] = []
        for i, nd in enumerate(spec.nodes):
            node_slots: dict[str, list[tuple[int, int]]] = {}
            for d, dev in enumerate(nd.devices):
                gran[i, d] = dev.granularity
                if dev.sharing == "mig":
                    for s, prof in enumerate(dev.mig_instances):
                        node_slots.setdefault(prof, []).append((d, s))
                        mig_free[i, PROFILE_INDEX[prof]] += 1
                else:
                    gpu_free[i, d] = 1000
            for lst in node_slots.values():
                lst.reverse()  # pop() hands out the lowest device first
            slots.append(node_slots)
        kinds = {"edge": 0, "cloud": 1, "gpu": 2}
        return cls(
            spec=spec,
            cpu_free=np.array([nd.cpu_milli for nd in spec.nodes], dtype=np.int64),
            mem_free=np.array([nd.mem_mib for nd in spec.nodes], dtype=np.int64),
            gpu_free=gpu_free,
            gpu_tasks=np.zeros((n, g), dtype=np.int64),
            granularity=gran,
            mig_free=mig_free,
            mig_slots=slots,
            mig_profiles=[frozenset(sl) for sl in slots],
            queue_len=np.zeros(n, dtype=np.int64),
            running=np.zeros(n, dtype=np.int64),
            queues=[deque() for _ in range(n)],
            holding=[[] for _ in range(n)],
            cpu_total=np.array([nd.cpu_milli for nd in spec.nodes], dtype=np.int64),
            mem_total=np.array([nd.mem_mib for nd in spec.nodes], dtype=np.int64),
            gpu_total=np.array([nd.gpu_count * 1000 for nd in spec.nodes], dtype=np.int64),
            mig_used=np.zeros(n, dtype=np.int64),
            tier_of=np.array([kinds[spec.tiers[nd.tier].kind] for nd in spec.nodes], dtype=np.int64),
            pool_of=np.array([spec.pools.index(nd.pool) for nd in spec.nodes], dtype=np.int64),
            net_mean_ms=np.array([spec.tiers[nd.tier].network_mean_ms for nd in spec.nodes]),
        )

    @property
    def n_nodes(self) -> int:
        return len(self.spec.nodes)

    def gpu_used(self) -> np.ndarray:
        """Allocated GPU milli per node (shared devices plus MIG compute held); read-only view."""
        return self.gpu_held

    def load(self) -> np.ndarray:
        """Per-node utilisation in [0, 1], the busiest of CPU, memory and GPU; read-only view.

        Kept up to date by :func:`allocate` and :func:`release` (one node each), so
        policies read it per decision for free.
        """
        return self.util

    def cache_replays(self) -> None:
        """Remember each node's queue replay (see :attr:`replay_cache`) while it stays exact.

        For a state whose every change goes through :mod:`cluster.booking` and whose finish
        times are known (the simulator's, and a lookahead's copy of it): there a replay predicts
        the node's future exactly, so finishes at their times and queue drains keep it, a task
        joining the queue extends it, and a task started past the queue or taken out of it drops
        it (:func:`cluster.booking.start_or_queue`, :func:`~cluster.booking.unqueue`). A running
        task taken back early (:func:`~cluster.booking.finish` before its time) must be followed
        by :meth:`touched`; lookaheads never do that. A rollout
        asks the projection of the same long queues thousands of times. Not for a live state,
        whose finish times are predictions and whose free capacity is rewritten from the cluster.
        """
        if self.replay_cache is None:
            self.replay_cache = {}

    def touched(self, i: int) -> None:
        """Node ``i``'s future changed in a way its replay did not predict: forget the replay."""
        if self.replay_cache:
            self.replay_cache.pop(i, None)

    def _refresh(self, i: int) -> None:
        # Python ints and floats (.item(), cached totals): this runs twice per task
        ct, mt, gt = self._totals[i]
        cpu = 1.0 - self.cpu_free.item(i) / ct
        mem = 1.0 - self.mem_free.item(i) / mt
        gpu = self.gpu_held.item(i) / gt if gt else 0.0
        self.util[i] = max(cpu, mem, gpu)

    def copy(self) -> "ClusterState":
        """An independent copy for a forward simulation (lookahead, a batch plan).

        Copies what booking changes: free capacity, the derived per-node arrays, queues,
        running tasks (``holding``), free MIG slots and ``now``. Shares what never changes
        (the spec, totals, and the immutable :class:`Allocation` and queue items), so
        nothing done to the copy reaches this state, and the cost is a few numpy copies
        plus one small list per node.
        """
        new = object.__new__(ClusterState)
        d = new.__dict__
        d.update(self.__dict__)
        for name in _CHANGING_ARRAYS:
            d[name] = d[name].copy()
        # a node without MIG devices has no slots, ever: its empty dict is never written, so shared
        d["mig_slots"] = [{p: s.copy() for p, s in slots.items()} if slots else slots for slots in self.mig_slots]
        d["queues"] = list(map(deque, self.queues))
        d["holding"] = list(map(list.copy, self.holding))
        if self.replay_cache is not None:  # a queue joined extends its replay in place: never shared
            d["replay_cache"] = {}
        return new


#: per-node arrays that booking changes (everything a copy must not share)
_CHANGING_ARRAYS = ("cpu_free", "mem_free", "gpu_free", "gpu_tasks", "mig_free", "queue_len", "running",
                    "mig_used", "gpu_held", "util")


# ---------------------------------------------------------------- feasibility


def share_for(state: ClusterState, i: int, task: "Task") -> Share | None:
    """The share ``task`` would hold on node ``i``, or None if the node can never host it.

    Static feasibility: total capacity, GPU model constraint and MIG layout, not
    what is free right now (a task may queue for a node it fits).
    """
    nd = state.spec.nodes[i]
    if task.cpu_milli > nd.cpu_milli or task.mem_mib > nd.mem_mib:
        return None
    need = task.gpu_need
    if need == "none":
        return CPU_SHARE
    if not nd.devices or (task.gpu_models and nd.gpu_model not in task.gpu_models):
        return None
    if nd.sharing == "mig":
        if need == "mig":
            return ("mig", task.mig_profile) if task.mig_profile in state.mig_profiles[i] else None
        frac = 1.0 if need == "whole" else task.gpu_milli / 1000.0
        if need == "whole" and task.gpu_count > 1:
            return None
        for prof in _PROFILES_BY_SIZE:
            if mig_fraction(prof) >= frac - 1e-9 and prof in state.mig_profiles[i]:
                return ("mig", prof)
        return None
    if need == "mig":
        return None
    if need == "whole" or nd.sharing == "exclusive":
        k = task.gpu_count or 1
        return ("whole", k) if k <= nd.gpu_count else None
    gran = nd.devices[0].granularity
    milli = -(-task.gpu_milli // gran) * gran
    return ("slice", milli)


def gpu_fits(share: Share, gpu_row: "Sequence[int]", mig_row: "Sequence[int]") -> bool:
    """Whether the GPU part of ``share`` fits one node's free devices (rows: lists or arrays).

    The scalar definition of a GPU fit; :func:`_gpu_fits_mask` is its vectorised
    twin over many nodes (equal: ``tests/test_scalar_vector.py``).
    """
    kind, amount = share
    if kind == "cpu":
        return True
    if kind == "mig":
        return mig_row[PROFILE_INDEX[amount]] > 0
    if kind == "whole":
        return sum(1 for g in gpu_row if g == 1000) >= amount
    return any(g >= amount for g in gpu_row)


def fits_now(state: ClusterState, i: int, task: "Task", share: Share) -> bool:
    """Whether ``task`` with ``share`` can start on node ``i`` with what is free now."""
    if task.cpu_milli > state.cpu_free.item(i) or task.mem_mib > state.mem_free.item(i):
        return False
    return share[0] == "cpu" or gpu_fits(share, state.gpu_free[i], state.mig_free[i])


def fits_now_list(state: ClusterState, task: "Task", nodes: "Sequence[int]",
                  shares: "Sequence[Share]", cpu_only: bool | None = None) -> list[bool]:
    """:func:`fits_now` for each of ``nodes`` (``shares[k]`` on ``nodes[k]``), in plain Python.

    The scalar twin of :func:`fits_now_mask` for small clusters, where numpy's per-call
    overhead costs more than a loop over a few nodes (equal: ``tests/test_scalar_vector.py``).
    ``cpu_only`` says that every share is ``CPU_SHARE`` (worked out from ``shares`` when None).
    """
    cpu = state.cpu_free.tolist()
    mem = state.mem_free.tolist()
    c, m = task.cpu_milli, task.mem_mib
    if cpu_only is None:
        cpu_only = all(s[0] == "cpu" for s in shares)
    if cpu_only:
        return [c <= cpu[i] and m <= mem[i] for i in nodes]
    gpu, mig = state.gpu_free, state.mig_free
    return [c <= cpu[i] and m <= mem[i] and (s[0] == "cpu" or bool(gpu_fits(s, gpu[i], mig[i])))
            for i, s in zip(nodes, shares)]


def best_fit(gpu_row: "Sequence[int]", milli: int) -> int | None:
    """The device a slice of ``milli`` takes: least free that still fits, the lowest index
    among equals (None: none fits). One node's few devices: a plain loop beats numpy."""
    best, least = None, 10**9
    for d, g in enumerate(gpu_row):
        if milli <= g < least:
            best, least = d, g
    return best


def pick_device(state: ClusterState, i: int, milli: int) -> int:
    """Default device choice for a slice on node ``i``: :func:`best_fit`."""
    d = best_fit(state.gpu_free[i].tolist(), milli)
    if d is None:
        raise ValueError(f"no device on node {i} has {milli} milli free")
    return d


def allocate(state: ClusterState, i: int, task: "Task", share: Share,
             device: int | None = None, *, checked: bool = False) -> Allocation:
    """Take ``share`` for ``task`` on node ``i``; raises ValueError if it does not fit.

    ``checked=True`` skips the fit test when the caller has just made it (the
    simulator's hot path); the device-level checks below still apply.
    """
    if not checked and not fits_now(state, i, task, share):
        raise ValueError(f"task {task.id} does not fit on node {state.spec.nodes[i].name} now")
    kind, amount = share
    devices: tuple[tuple[int, int], ...] = ()
    mig = None
    if kind == "cpu":
        pass
    elif kind == "slice":
        d = pick_device(state, i, amount) if device is None else device
        if state.gpu_free[i, d] < amount:
            raise ValueError(f"device {d} of node {i} has {state.gpu_free[i, d]} milli free, need {amount}")
        state.gpu_free[i, d] -= amount
        state.gpu_tasks[i, d] += 1
        devices = ((d, amount),)
    elif kind == "whole":
        free = np.flatnonzero(state.gpu_free[i] == 1000)[:amount]
        state.gpu_free[i, free] = 0
        state.gpu_tasks[i, free] += 1
        devices = tuple((int(d), 1000) for d in free)
    elif kind == "mig":
        d, s = state.mig_slots[i][amount].pop()
        state.mig_free[i, PROFILE_INDEX[amount]] -= 1
        state.mig_used[i] += MIG_MILLI[amount]
        mig = (d, s, amount)
    state.cpu_free[i] -= task.cpu_milli
    state.mem_free[i] -= task.mem_mib
    state.running[i] += 1
    alloc = Allocation(i, task.cpu_milli, task.mem_mib, devices, mig, share)
    if alloc.gpu_milli:
        state.gpu_held[i] += alloc.gpu_milli
    state._refresh(i)
    return alloc


def release(state: ClusterState, alloc: Allocation) -> None:
    """Give back what ``alloc`` holds, once (:func:`cluster.booking.finish` is the idempotent form)."""
    i = alloc.node
    state.cpu_free[i] += alloc.cpu
    state.mem_free[i] += alloc.mem
    state.running[i] -= 1
    for d, m in alloc.devices:
        state.gpu_free[i, d] += m
        state.gpu_tasks[i, d] -= 1
    if alloc.mig is not None:
        d, s, prof = alloc.mig
        state.mig_slots[i][prof].append((d, s))
        state.mig_free[i, PROFILE_INDEX[prof]] += 1
        state.mig_used[i] -= MIG_MILLI[prof]
    if alloc.gpu_milli:
        state.gpu_held[i] -= alloc.gpu_milli
    state._refresh(i)


class NodeFree:
    """One node's free capacity in plain Python: :func:`allocate` and :func:`release`'s scalar
    form, for replaying one node alone (:class:`cluster.booking.NodeReplay`, the queue projection).

    A projection allocates and releases up to a few hundred times on one node per call,
    where numpy's per-element indexing costs more than the accounting itself. Same fit
    test, same device choice, same :class:`Allocation` (MIG instance included) and the
    same free CPU, memory, device milli, device sharers and MIG counts as the arrays'
    row, bit for bit (``tests/test_scalar_vector.py``). The original state is never
    touched; utilisation, GPU held and running counts are not kept (a replay reads free
    capacity only). Allocations of the original state free here too.
    """

    __slots__ = ("node", "cpu", "mem", "gpu", "tasks", "mig", "slots")

    def __init__(self, state: ClusterState, i: int) -> None:
        self.node = i
        self.cpu: int = state.cpu_free.item(i)
        self.mem: int = state.mem_free.item(i)
        self.gpu: list[int] = state.gpu_free[i].tolist()
        self.tasks: list[int] = state.gpu_tasks[i].tolist()
        self.mig: list[int] = state.mig_free[i].tolist()
        slots = state.mig_slots[i]  # a node without MIG devices has none, ever: shared, never written
        self.slots = {p: s.copy() for p, s in slots.items()} if slots else slots

    def copy(self) -> "NodeFree":
        new = object.__new__(NodeFree)
        new.node, new.cpu, new.mem = self.node, self.cpu, self.mem
        new.gpu, new.tasks, new.mig = self.gpu.copy(), self.tasks.copy(), self.mig.copy()
        new.slots = {p: s.copy() for p, s in self.slots.items()} if self.slots else self.slots
        return new

    def fits(self, task: "Task", share: Share) -> bool:
        """:func:`fits_now` on this node."""
        if task.cpu_milli > self.cpu or task.mem_mib > self.mem:
            return False
        return share[0] == "cpu" or gpu_fits(share, self.gpu, self.mig)

    def allocate(self, task: "Task", share: Share, device: int | None = None, *,
                 checked: bool = False) -> Allocation:
        """:func:`allocate` on this node; raises ValueError (changing nothing) if it does not fit."""
        if not checked and not self.fits(task, share):
            raise ValueError(f"task {task.id} does not fit on node {self.node} now")
        kind, amount = share
        devices: tuple[tuple[int, int], ...] = ()
        mig = None
        if kind == "slice":
            d = best_fit(self.gpu, amount) if device is None else device
            if d is None or self.gpu[d] < amount:
                raise ValueError(f"no room for {amount} milli on device {d} of node {self.node}")
            self.gpu[d] -= amount
            self.tasks[d] += 1
            devices = ((d, amount),)
        elif kind == "whole":
            devices = tuple((d, 1000) for d, g in enumerate(self.gpu) if g == 1000)[:amount]
            for d, _ in devices:
                self.gpu[d] = 0
                self.tasks[d] += 1
        elif kind == "mig":
            d, s = self.slots[amount].pop()
            self.mig[PROFILE_INDEX[amount]] -= 1
            mig = (d, s, amount)
        self.cpu -= task.cpu_milli
        self.mem -= task.mem_mib
        return Allocation(self.node, task.cpu_milli, task.mem_mib, devices, mig, share)

    def release(self, alloc: Allocation) -> None:
        """:func:`release` on this node (of an allocation made here or in the original state)."""
        self.cpu += alloc.cpu
        self.mem += alloc.mem
        for d, m in alloc.devices:
            self.gpu[d] += m
            self.tasks[d] -= 1
        if alloc.mig is not None:
            d, s, prof = alloc.mig
            self.slots[prof].append((d, s))
            self.mig[PROFILE_INDEX[prof]] += 1

    def sharers(self, alloc: Allocation) -> int:
        """Tasks on the time-sliced device ``alloc`` joined (itself included); 1 for other shares."""
        return self.tasks[alloc.devices[0][0]] if alloc.share[0] == "slice" else 1


def feasible_nodes(state: ClusterState, task: "Task") -> list[tuple[int, Share, bool]]:
    """Every node that can host ``task``: (node index, share, fits now)."""
    out = []
    for i in range(state.n_nodes):
        share = share_for(state, i, task)
        if share is not None:
            out.append((i, share, fits_now(state, i, task, share)))
    return out


def node_masks(state: ClusterState, task: "Task") -> tuple[np.ndarray, np.ndarray, list]:
    """Per node: can host (static), fits now, and the share it would hold (None if not)."""
    n = state.n_nodes
    feasible = np.zeros(n, dtype=bool)
    fits = np.zeros(n, dtype=bool)
    shares: list = [None] * n
    for i, s, now in feasible_nodes(state, task):
        feasible[i] = True
        shares[i] = s
        fits[i] = now
    return feasible, fits, shares


def check_invariants(state: ClusterState) -> None:
    """Raise AssertionError if any device or node is over-allocated (used by tests)."""
    assert (state.cpu_free >= 0).all() and (state.cpu_free <= state.cpu_total).all(), "cpu"
    assert (state.mem_free >= 0).all() and (state.mem_free <= state.mem_total).all(), "memory"
    shared = state.gpu_free[state.gpu_free != -1]
    assert ((shared >= 0) & (shared <= 1000)).all(), "gpu milli"
    assert (state.mig_free >= 0).all(), "mig"
    for i, node_slots in enumerate(state.mig_slots):
        held: Iterable = [s for lst in node_slots.values() for s in lst]
        assert len(set(held)) == len(list(held)), f"MIG instance listed free twice on node {i}"


# ------------------------------------------------- vectorised helpers (packing policies)


def _gpu_fits_mask(state: ClusterState, nodes: np.ndarray, share: Share) -> np.ndarray:
    kind, amount = share
    if kind == "cpu":
        return np.ones(len(nodes), dtype=bool)
    if kind == "mig":
        return state.mig_free[nodes, PROFILE_INDEX[amount]] > 0
    rows = state.gpu_free[nodes]
    if kind == "whole":
        return (rows == 1000).sum(axis=1) >= amount
    return (rows >= amount).any(axis=1)


def share_groups(shares: "Iterable[Share]") -> dict[Share, np.ndarray]:
    """Positions of each distinct share in ``shares`` (for :func:`fits_now_mask`)."""
    groups: dict[Share, list[int]] = {}
    for pos, s in enumerate(shares):
        groups.setdefault(s, []).append(pos)
    return {s: np.asarray(p, dtype=np.int64) for s, p in groups.items()}


def fits_now_mask(state: ClusterState, task: "Task", nodes: np.ndarray,
                  shares: "Share | Iterable[Share] | dict[Share, np.ndarray]") -> np.ndarray:
    """Vectorised :func:`fits_now` over ``nodes``: one bool per node.

    ``shares`` is one share for every node, a sequence with one share per node, or
    the ``{share: positions}`` mapping of :func:`share_groups` (fastest when cached).
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    ok = state.cpu_free[nodes] >= task.cpu_milli
    ok &= state.mem_free[nodes] >= task.mem_mib
    if isinstance(shares, tuple) and len(shares) == 2 and isinstance(shares[0], str):
        groups = {shares: None}
    else:
        groups = shares if isinstance(shares, dict) else share_groups(shares)
    if len(groups) == 1:
        (share,) = groups
        if share[0] != "cpu":  # the hot path: CPU-only tasks need no GPU check
            ok &= _gpu_fits_mask(state, nodes, share)
        return ok
    for share, pos in groups.items():
        ok[pos] &= _gpu_fits_mask(state, nodes[pos], share)
    return ok


def gpu_free_total(state: ClusterState, nodes: np.ndarray | None = None) -> np.ndarray:
    """Free GPU milli per node: free milli of shared devices plus MIG compute not held."""
    if nodes is None:
        return state.gpu_total - state.gpu_used()
    g = state.gpu_free[nodes]
    used = np.where(g >= 0, 1000 - g, 0).sum(axis=1) + state.mig_used[nodes]
    return state.gpu_total[nodes] - used


def share_request(share: Share) -> tuple[int, int]:
    """``(milli per GPU, GPU count)`` a share asks for: ``("whole", 2)`` is (1000, 2)."""
    kind, amount = share
    if kind == "cpu":
        return 0, 0
    if kind == "whole":
        return 1000, int(amount)
    if kind == "mig":
        return MIG_MILLI[str(amount)], 1
    return int(amount), 1
