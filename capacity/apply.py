"""Apply a capacity recommendation to the running local cluster: start and drain raylets per pool.

Why through the router: a node may leave only when nothing it holds is lost, and the router is
what places work there. So a pool shrinks in three steps: the router drains the node (no new
placements; its queued tasks are re-placed elsewhere; its running ones finish), the node stops
once the router shows it idle, then the drain ends. A pool grows by starting the raylets of the
nodes it lacks: first its own nodes that are not running, then its standby slots (the cluster
YAML's ``scaling``: :func:`cluster.topology.with_standby`), which the router holds from its
start, so its live state follows without a restart. A pool shrinks from its last node (the slots
it grew into go first).

Node counts only: a recommendation whose pool nodes differ in shape from the running cluster's
(another MIG layout) is refused, naming the pool, since a layout change means restarting nodes
with other resources (``cluster down`` and ``up`` from the recommended YAML). The search also
keeps the cheapest cluster it found with the layouts as they are (:func:`counts_with_layouts_as_now`):
that one can be applied where GPU nodes cannot be restarted.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cluster.topology import ClusterSpec, NodeSpec, pool_max

#: how often the router's cluster view is read while waiting for nodes to join, drain or leave
POLL_S = 0.5


class ApplyError(ValueError):
    """The change cannot be applied as asked (names the pool or node and why)."""


class LayoutChange(ApplyError):
    """A recommended pool's nodes differ in shape (a MIG layout, resources) from the running ones."""


@dataclass
class Plan:
    """What to do: nodes to start and to drain and stop, with the counts per pool before and after."""

    start: list[str]
    drain: list[str]
    before: dict[str, int]
    after: dict[str, int]
    cost_before: float = 0.0  # $ per hour of the running nodes (:func:`capacity.recommend.node_cost_per_hour`)
    cost_after: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.start and not self.drain


@dataclass
class Outcome:
    """What was done, and how long each part took."""

    plan: Plan
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _shape(nd: NodeSpec) -> tuple:
    return nd.tier, nd.cpu_milli, nd.mem_mib, nd.cpu_speed, nd.gpu_model, nd.devices


def target_counts(recommended: ClusterSpec, slots: ClusterSpec) -> dict[str, int]:
    """Per pool, the node count of ``recommended``, checked against what ``slots`` (the running cluster with
    its standby slots) can become: every pool known, within its ``max_nodes``, nodes of the same shape."""
    first = {}
    for nd in slots.nodes:
        first.setdefault(nd.pool, nd)
    counts: dict[str, int] = {p: 0 for p in slots.pools}
    for nd in recommended.nodes:
        if nd.pool not in first:
            raise ApplyError(f"pool {nd.pool}: the recommendation has it, the running cluster does not "
                             f"(pools: {', '.join(first)})")
        if _shape(nd) != _shape(first[nd.pool]):
            raise LayoutChange(f"pool {nd.pool}: the recommendation's node {nd.name} differs in shape (resources or "
                             f"MIG layout) from the running {first[nd.pool].name}: apply changes node counts only; "
                             "restart the cluster from the recommended YAML to change a layout")
        counts[nd.pool] += 1
    return counts


def counts_with_layouts_as_now(recommendation_file: Path) -> dict[str, int] | None:
    """Per pool, the node count of the cheapest cluster the search found with the MIG layouts as they were
    (``recommendation.json``'s ``recommended_mig_layouts_as_now``); None when that is the recommendation itself
    (no layout changed, or none with the layouts as they were met the target: the YAML then says which)."""
    try:
        doc = json.loads(Path(recommendation_file).read_text())
    except (OSError, ValueError) as exc:
        raise ApplyError(f"{recommendation_file}: cannot be read ({exc}); give a `capacity recommend` folder") from None
    if not isinstance(doc, dict) or "recommended_mig_layouts_as_now" not in doc:
        raise ApplyError(f"{recommendation_file}: no recommended_mig_layouts_as_now (not written by "
                         "`capacity recommend`)")
    row = doc["recommended_mig_layouts_as_now"]
    if row is None:
        return None
    counts = row if isinstance(row, dict) else {}
    counts = {k.removeprefix("nodes_"): v for k, v in counts.items() if k.startswith("nodes_")}
    if not counts or not all(type(v) is int and v >= 0 for v in counts.values()):
        raise ApplyError(f"{recommendation_file}: recommended_mig_layouts_as_now holds no node count per pool "
                         "(nodes_<pool>: a whole number)")
    return counts


def plan(slots: ClusterSpec, running: set[str], target: Mapping[str, int]) -> Plan:
    """The nodes to start and to drain so that each pool in ``target`` runs that many nodes.

    ``slots``: the topology with its standby slots; ``running``: the node names alive now. A pool grows
    by its first nodes not running (file order, then slots), shrinks from its last running ones.
    """
    from capacity.recommend import node_cost_per_hour

    limits = pool_max(slots)
    start: list[str] = []
    drain: list[str] = []
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for pool, want in target.items():
        if pool not in limits:
            raise ApplyError(f"pool {pool}: no such pool (pools: {', '.join(limits)})")
        if want < 0 or want > limits[pool]:
            raise ApplyError(f"pool {pool}: {want} nodes asked, it may have 0 to {limits[pool]} (raise "
                             f"scaling.{pool}.max_nodes in {slots.source} to grow it further)")
        members = [n.name for n in slots.nodes if n.pool == pool]
        up = [n for n in members if n in running]
        before[pool], after[pool] = len(up), want
        if want > len(up):
            start += [n for n in members if n not in running][:want - len(up)]
        elif want < len(up):
            drain += up[want:][::-1]
    left = sum(n.name in running for n in slots.nodes if n.pool not in after)
    if not left + sum(after.values()):
        raise ApplyError("no pool would have a node: keep at least one")
    cost = {n.name: node_cost_per_hour(slots, n) for n in slots.nodes}
    cost_before = sum(cost[n] for n in running if n in cost)
    cost_after = cost_before + sum(cost[n] for n in start) - sum(cost[n] for n in drain)
    return Plan(start, drain, before, after, cost_before, cost_after)


class RouterView(Protocol):
    """The router calls apply needs (:class:`serve_app.client.RouterClient` is one)."""

    def cluster(self) -> dict: ...

    def set_draining(self, nodes: list[str]) -> dict: ...


def _nodes(router: RouterView) -> dict[str, dict]:
    return {n["name"]: n for n in router.cluster()["nodes"]}


def wait_for(router: RouterView, what: str, ok: Callable[[dict[str, dict]], list[str]], timeout_s: float,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Poll the router's cluster view until ``ok`` (the names still not there) is empty. A router that does not
    answer for a while (its replica restarting) is asked again until the deadline."""
    deadline = clock() + timeout_s
    while True:
        try:
            left = ok(_nodes(router))
        except Exception as exc:  # noqa: BLE001 - the router restarting: the next poll decides
            left = [f"(the router did not answer: {exc})"]
        if not left:
            return
        if clock() > deadline:
            raise TimeoutError(f"{what} after {timeout_s:g} s: {', '.join(left)}")
        sleep(POLL_S)


def _ray_busy(v: dict) -> bool:
    """Ray still holds CPU or GPU on the node: work the router does not book (another driver, a task being stopped)."""
    total, avail = v.get("ray_total") or {}, v.get("ray_available") or {}
    return any(total.get(k, 0.0) - avail.get(k, 0.0) > 1e-6 for k in ("CPU", "GPU")) if avail else False


def idle(names: list[str], redrain: Callable[[], object]) -> Callable[[dict[str, dict]], list[str]]:
    """Of ``names``, those still busy: tasks the router runs or queues there, or resources Ray holds there;
    ``redrain`` when the router no longer drains one (it restarted and forgot)."""
    def busy(nodes: dict[str, dict]) -> list[str]:
        if any(not nodes.get(n, {}).get("draining") for n in names):
            redrain()
            return [f"{n} (drain re-sent)" for n in names]
        return [f"{n} ({nodes[n]['running']} running, {nodes[n]['queued']} queued"
                f"{', Ray still holds resources' if _ray_busy(nodes[n]) else ''})" for n in names
                if nodes[n]["running"] or nodes[n]["queued"] or _ray_busy(nodes[n])]
    return busy


def usable(names: list[str], want: bool) -> Callable[[dict[str, dict]], list[str]]:
    """Of ``names``, those whose usability the router does not yet see as ``want``."""
    return lambda nodes: [n for n in names if bool(nodes.get(n, {}).get("usable")) != want]


def stale_drains(router: RouterView, p: Plan) -> list[str]:
    """Nodes the router still drains that ``p`` does not: left by an apply that did not finish."""
    return sorted(n for n, v in _nodes(router).items() if v.get("draining") and n not in p.drain)


def apply(p: Plan, *, start_nodes: Callable[[list[str]], list[str]], stop_node: Callable[[str], bool],
          router: RouterView | None, drain_timeout_s: float = 600.0, force: bool = False,
          join_timeout_s: float = 120.0, progress: Callable[[str], None] = lambda s: None) -> Outcome:
    """Carry out ``p``: start its nodes (and wait until the router places on them), drain its nodes
    through the router, stop them once idle, end the drain (whatever happens: an interrupted run leaves
    no node drained). Drains are apply's: a drain an earlier run left is ended first.

    A drain not done within ``drain_timeout_s`` ends (the nodes stay and serve) and raises
    :class:`TimeoutError`, unless ``force``: then the nodes stop anyway and the router re-places
    their running tasks elsewhere (its retry on a lost node, counted: a task at its retry limit
    fails). ``router`` None: only starting is allowed. A node the router does not know (its topology
    read before the YAML's ``scaling`` changed) is refused before anything changes.
    """
    out = Outcome(p)
    if p.drain and router is None:
        raise ApplyError("nodes leave only through the router's drain (nothing of theirs lost): start the router, "
                         "or give its --router URL")
    if router is not None:
        nodes = _nodes(router)
        unknown = [n for n in p.start + p.drain if n not in nodes]
        if unknown:
            raise ApplyError(f"the router has no node {', '.join(unknown)}: restart it to pick up the cluster "
                             "YAML's scaling")
        if p.drain or stale_drains(router, p):
            router.set_draining([])  # ends what an interrupted run left; checks the admin token before any change
    t0 = time.monotonic()
    if p.start:
        progress(f"starting {', '.join(p.start)}")
        out.started = start_nodes(p.start)
        if router is not None:
            wait_for(router, "the router does not place on", usable(p.start, True), join_timeout_s)
        out.seconds["start"] = time.monotonic() - t0
    if p.drain:
        t1 = time.monotonic()
        progress(f"draining {', '.join(p.drain)}")

        def redrain() -> None:
            try:
                router.set_draining(list(p.drain))
            except Exception:  # noqa: BLE001 - not answering yet: the next poll sends it again
                pass

        try:
            router.set_draining(list(p.drain))
            try:
                wait_for(router, "still busy", idle(p.drain, redrain), drain_timeout_s)
            except TimeoutError as exc:
                if not force:
                    raise TimeoutError(f"the drain did not finish: {exc}; the nodes stay and serve again (--force "
                                       "stops them anyway: the router re-places their running tasks)") from None
                progress(f"{exc}: stopping them anyway (--force)")
            out.seconds["drain"] = time.monotonic() - t1
            t2 = time.monotonic()
            for name in p.drain:
                if stop_node(name):
                    out.stopped.append(name)
            wait_for(router, "the router still sees alive",
                     lambda nodes: [n for n in p.drain if nodes.get(n, {}).get("alive")], join_timeout_s)
            out.seconds["stop"] = time.monotonic() - t2
        finally:
            try:
                router.set_draining([])
            except Exception as exc:  # noqa: BLE001 - say so: the next apply ends it
                progress(f"could not end the drain ({exc}); the next capacity apply ends it")
    out.seconds["total"] = time.monotonic() - t0
    return out
