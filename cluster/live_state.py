"""The simulator's :class:`ClusterState` for a live Ray cluster, cheap enough per decision.

Two sources, each for what it knows best:

* Ray (``ray.nodes()`` and the per-node available resources, about a millisecond
  together, re-read at most every ``refresh_s``): which topology nodes are alive,
  their Ray node ids (for pinning tasks), their totals (checked against the
  config) and Ray's own view of what is free (reported by :meth:`LiveState.nodes`);
* the executor's own bookkeeping: the same :func:`cluster.state.allocate` /
  :func:`~cluster.state.release` calls, per-node FIFO queues and predicted finish
  times the simulator keeps, so a policy sees exactly the state shape, accounting
  and queue projection it was written and trained against, with no lag from
  Ray's resource reports.

A node that is dead, missing, or whose Ray totals differ from the config is taken
out of policies' reach by swapping, in ``state.spec``, its :class:`NodeSpec` for a
*tombstone* that can host nothing (no CPU, memory or GPU): node indices stay
stable, the arrays stay as they are, and the feasibility cache (keyed by spec)
resets by itself. Topology nodes map to Ray nodes by the ``node-name`` label;
nodes without one (KubeRay pods of a worker group share their labels) are matched
to unclaimed Ray nodes of the same ``pool`` in node-id order.

A cluster that scales (``scaling`` in its YAML) is held with a *standby* slot per node
each pool may grow by (:func:`cluster.topology.with_standby`): a slot not started is a
node that is not running, so starting or stopping raylets never renumbers nodes. A
node being *drained* (:meth:`LiveState.set_draining`, before ``capacity apply`` stops
it) is taken out of reach the same way while its running tasks finish; the executor
re-places the tasks waiting in its queue.

Work placed on these nodes outside the executor is visible in :meth:`nodes` (Ray's
available resources) but not subtracted from the policy's view.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from cluster.ray_compat import available_resources_per_node
from cluster.ray_resources import LABEL_NODE, LABEL_POOL, node_resources
from cluster.state import ClusterState
from cluster.topology import ClusterSpec, NodeSpec, node_class


@dataclass(frozen=True)
class RayNode:
    """What Ray reports about one node."""

    node_id: str
    alive: bool
    labels: dict[str, str]
    total: dict[str, float]
    available: dict[str, float] = field(default_factory=dict)


def topology_nodes(spec: ClusterSpec, dead: set[str] | frozenset[str] = frozenset()) -> list[RayNode]:
    """What Ray would report of a cluster started from ``spec``, every node alive but those named in ``dead``:
    the node view of a router without a cluster (tests, in-process benchmarks)."""
    from cluster.ray_resources import node_resources

    out = []
    for i, nd in enumerate(spec.nodes):
        res = node_resources(spec, i)
        out.append(RayNode(f"ray-{nd.name}", nd.name not in dead, dict(res.labels), res.ray_totals(), res.ray_totals()))
    return out


def read_ray_nodes(with_available: bool = True) -> list[RayNode]:
    """Every node the GCS knows (dead ones too), with its free resources when asked and alive."""
    import ray

    avail = available_resources_per_node() if with_available else {}
    return [RayNode(n["NodeID"], bool(n["Alive"]), dict(n.get("Labels") or {}), dict(n["Resources"]),
                    dict(avail.get(n["NodeID"], {}))) for n in ray.nodes()]


@dataclass
class NodeView:
    """One topology node as the router's ``/v1/cluster`` and ``cluster status`` show it."""

    name: str
    tier: str
    pool: str
    node_class: str
    alive: bool
    usable: bool
    node_id: str | None
    problem: str
    network_ms: tuple[float, float]
    load: float
    running: int
    queued: int
    cpu_free_milli: int
    gpu_free_milli: int
    mig_free: dict[str, int]
    labels: dict[str, str]
    ray_total: dict[str, float]
    ray_available: dict[str, float]
    standby: bool = False  # a slot beyond the file's nodes that its pool scales into (runs once apply starts it)
    draining: bool = False  # no new placements; its running tasks finish (capacity apply)


def _tombstone(nd: NodeSpec) -> NodeSpec:
    return dataclasses.replace(nd, cpu_milli=0, mem_mib=0, devices=())


def _totals_problem(expected: dict[str, float], total: dict[str, float]) -> str:
    for key, want in expected.items():
        got = total.get(key, 0.0)
        if not math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-3):
            return f"Ray reports {key}={got:g}, the config says {want:g}"
    return ""


class LiveState:
    """The bookkeeping :class:`ClusterState` of a live cluster plus Ray's node view.

    ``state`` is the one object policies read and the executor writes; hold
    ``lock`` around ``policy.select`` and any write. :meth:`snapshot` refreshes the
    Ray view when it is older than ``refresh_s`` and returns ``state``.
    """

    def __init__(self, spec: ClusterSpec, *, refresh_s: float = 0.5,
                 reader: Callable[[bool], list[RayNode]] = read_ray_nodes,
                 clock: Callable[[], float] | None = None) -> None:
        self.spec = spec
        self.state = ClusterState.from_spec(spec)
        self.lock = threading.RLock()
        self.refresh_s = refresh_s
        self._reader = reader
        t0 = time.monotonic()
        self.clock = clock or (lambda: time.monotonic() - t0)
        n = len(spec.nodes)
        self._expected = [node_resources(spec, i).ray_totals() for i in range(n)]
        self.node_ids: list[str | None] = [None] * n
        self.usable = [True] * n
        self.alive = [False] * n
        self.problems = [""] * n
        self._ray: list[RayNode | None] = [None] * n
        self._last = -math.inf
        self._index = {nd.name: i for i, nd in enumerate(spec.nodes)}
        self._dead_ids: set[str] = set()
        self._standby = frozenset(spec.standby)
        self.draining: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ reading
    def index(self, name: str) -> int:
        return self._index[name]

    def node_id(self, i: int) -> str | None:
        return self.node_ids[i]

    def snapshot(self) -> ClusterState:
        """The state to hand to ``policy.select`` (refreshed if stale); ``now`` is the live clock."""
        if time.monotonic() - self._last >= self.refresh_s:
            self.refresh()
        self.state.now = self.clock()
        return self.state

    def mark_dead(self, node_id: str | None) -> None:
        """Stop using a Ray node at once (a task saw it die; the GCS may take a second to agree).

        A node restarted under the same name gets a new Ray node id and is used again.
        """
        if node_id is None:
            return
        with self.lock:
            self._dead_ids.add(node_id)
            self._apply([rn for rn in self._ray if rn is not None])

    def set_draining(self, names: "set[str] | frozenset[str] | list[str]") -> list[str]:
        """Drain exactly ``names`` from now on (an empty set ends every drain); returns the names drained
        before. Raises KeyError naming a node the topology does not have."""
        unknown = sorted(set(names) - set(self._index))
        if unknown:
            raise KeyError(", ".join(unknown))
        with self.lock:
            old, self.draining = self.draining, frozenset(names)
            self._apply([rn for rn in self._ray if rn is not None])
        return sorted(old)

    def refresh(self, with_available: bool = False) -> list[int]:
        """Re-read Ray now; return the nodes that stopped being usable since the last read.

        Ray's per-node available resources (only for :meth:`nodes`) cost a second GCS
        call, so the per-decision path skips them.
        """
        nodes = self._reader(with_available)
        with self.lock:
            self._last = time.monotonic()
            return self._apply(nodes)

    def _apply(self, nodes: list[RayNode]) -> list[int]:
        with self.lock:
            nodes = [rn if rn.node_id not in self._dead_ids else dataclasses.replace(rn, alive=False)
                     for rn in nodes]
            matched = self._match(nodes)
            lost = []
            changed = False
            for i, nd in enumerate(self.spec.nodes):
                rn = matched[i]
                alive = rn is not None and rn.alive
                problem = "" if alive else ("standby: not started (orchestrator capacity apply starts it)"
                                            if nd.name in self._standby else
                                            "not running (no alive Ray node with this name)")
                if alive and not problem:
                    problem = _totals_problem(self._expected[i], rn.total)
                if alive and not problem and nd.name in self.draining:
                    problem = "draining: no new placements, its running tasks finish"
                usable = alive and not problem
                if self.usable[i] and not usable:
                    lost.append(i)
                changed |= usable != self.usable[i]
                self.usable[i], self.alive[i], self.problems[i] = usable, alive, problem
                self.node_ids[i] = rn.node_id if alive else None
                self._ray[i] = rn
            if changed:
                nodes_spec = tuple(nd if self.usable[i] else _tombstone(nd) for i, nd in enumerate(self.spec.nodes))
                self.state.spec = dataclasses.replace(self.spec, nodes=nodes_spec)
            return lost

    def _match(self, nodes: list[RayNode]) -> list[RayNode | None]:
        by_name: dict[str, RayNode] = {}
        for rn in nodes:
            name = rn.labels.get(LABEL_NODE)
            if name is None:
                continue
            if name not in by_name or (rn.alive and not by_name[name].alive):
                by_name[name] = rn
        out: list[RayNode | None] = [by_name.get(nd.name) for nd in self.spec.nodes]
        spare: dict[str, list[RayNode]] = {}
        for rn in sorted(nodes, key=lambda r: r.node_id):
            if rn.alive and LABEL_NODE not in rn.labels and LABEL_POOL in rn.labels:
                spare.setdefault(rn.labels[LABEL_POOL], []).append(rn)
        for i, nd in enumerate(self.spec.nodes):
            if (out[i] is None or not out[i].alive) and spare.get(nd.pool):
                out[i] = spare[nd.pool].pop(0)
        return out

    def nodes(self) -> list[NodeView]:
        """Per node: health, load, free shares, network latency and Ray's own figures."""
        self.refresh(with_available=True)
        st = self.state
        out = []
        with self.lock:
            for i, nd in enumerate(self.spec.nodes):
                tier = self.spec.tiers[nd.tier]
                rn = self._ray[i]
                gpu = st.gpu_free[i]
                out.append(NodeView(
                    name=nd.name, tier=nd.tier, pool=nd.pool, node_class=node_class(nd, tier),
                    alive=self.alive[i], usable=self.usable[i], node_id=self.node_ids[i],
                    problem=self.problems[i], network_ms=tier.network_ms, load=float(st.util[i]),
                    running=int(st.running[i]), queued=int(st.queue_len[i]),
                    cpu_free_milli=int(st.cpu_free[i]), gpu_free_milli=int(gpu[gpu >= 0].sum()),
                    mig_free={p: int(st.mig_free[i, k]) for p, k in _profile_items() if st.mig_free[i, k] or
                              p in st.mig_profiles[i]},
                    labels=dict(rn.labels) if rn else {}, ray_total=dict(rn.total) if rn else {},
                    ray_available=dict(rn.available) if rn and rn.alive else {},
                    standby=nd.name in self._standby, draining=nd.name in self.draining))
        return out


def _profile_items() -> list[tuple[str, int]]:
    from cluster.state import PROFILE_INDEX

    return list(PROFILE_INDEX.items())
