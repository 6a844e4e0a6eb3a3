"""Recommendations by simulation: the cheapest cluster that keeps SLO misses under a target.

Why simulate rather than divide demand by capacity: what a node buys depends on queueing, on
which MIG profiles a task can use, on time-slice interference and on the placement policy
itself. The simulator of this exact cluster knows all of them, so every candidate cluster is
judged by a what-if run of the demand (a stationary window of the workload's mix at the rate to
plan for: the forecast's upper bound at its peak) under the active policy.

The search (:func:`recommend`) varies per-pool node counts, each pool's nodes copied from its
first node, and for MIG pools the layout of each GPU:

1. **grow**: while the target is missed, add the node that removes the most misses per dollar;
2. **shrink**: while some node can go with the target still met, remove the one saving most;
   when none can, swap one for a node of a cheaper pool if that still meets it (a GPU node's
   CPU work may need a CPU node once the GPU node is gone: removals alone never find that);
3. **MIG layouts**: every pool of MIG nodes tries the valid per-GPU layouts built from the
   profiles the workload can use (:func:`mig_layouts`), screened at the current counts and with
   one node fewer in that pool (where a better layout earns its keep); the few best of each
   screening are grown and shrunk again, and the cheapest cluster meeting the target wins (ties:
   fewer misses).

A node costs what its resources cost while it is up (:func:`node_cost_per_hour`: the tier's
per-second CPU, memory and GPU prices), so the comparison is of provisioned capacity, not of
the per-task bills the objective charges.
"""
from __future__ import annotations

import difflib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import yaml

from cluster.topology import (MIG_PROFILES, ClusterSpec, GpuDevice, NodeSpec, mig_fraction, resized_nodes,
                              validate_mig_layout)
from scheduler.task import Task

#: after the last arrival, how long a what-if run lets tasks finish; still unfinished then is a miss
DRAIN_S = 60.0
#: layouts kept from each screening (at the current counts, and with one node fewer in the pool) for the
#: full grow-and-shrink search
LAYOUTS_SHRUNK = 3
#: most per-node layouts screened: beyond it (nodes of many GPUs) every GPU of a node gets the same layout
MAX_LAYOUTS = 100

Layout = tuple[tuple[str, ...], ...]  # per GPU of a node, its MIG instances


@dataclass(frozen=True)
class Shape:
    """What the search varies: node count per pool, and per MIG pool the layout of each GPU."""

    counts: tuple[tuple[str, int], ...]
    layouts: tuple[tuple[str, Layout], ...] = ()

    def count(self, pool: str) -> int:
        return dict(self.counts)[pool]

    def with_count(self, pool: str, n: int) -> "Shape":
        return replace(self, counts=tuple((p, n if p == pool else c) for p, c in self.counts))

    def with_layout(self, pool: str, layout: Layout) -> "Shape":
        return replace(self, layouts=tuple((p, layout if p == pool else lay) for p, lay in self.layouts))


@dataclass(frozen=True)
class WhatIf:
    """One candidate cluster judged by simulation (means over the seeds)."""

    shape: Shape
    cost_per_hour: float
    slo_miss: float  #: share of tasks that missed their SLO (rejected and unfinished included)
    objective: float
    nodes: int
    gpus: int
    meets: bool


@dataclass
class Recommendation:
    """The search's answer: the current cluster's what-if, the recommended one's, and every one tried."""

    current: WhatIf | None  #: None when the search started from another shape (:func:`recommend`'s ``start``)
    best: WhatIf
    spec: ClusterSpec  #: the recommended cluster
    tried: list[WhatIf] = field(default_factory=list)
    search_s: float = 0.0
    feasible: bool = True  #: False when no cluster within the bounds met the target (best: fewest misses)
    shipped_layout_best: WhatIf | None = None  #: the cheapest meeting the target with the current layouts

    @property
    def saving_per_hour(self) -> float:
        """Dollars an hour the recommendation saves on the current cluster (NaN when that was not judged)."""
        return math.nan if self.current is None else self.current.cost_per_hour - self.best.cost_per_hour


# ---------------------------------------------------------------------------------------------
# Costs and clusters
# ---------------------------------------------------------------------------------------------

def node_cost_per_hour(spec: ClusterSpec, node: NodeSpec) -> float:
    """Dollars an hour for keeping ``node`` up: its cores, memory and GPUs at its tier's per-second prices."""
    t = spec.tiers[node.tier]
    return 3600.0 * (node.cpu_milli / 1000.0 * t.price_cpu_second + node.mem_mib / 1024.0 * t.price_gb_second
                     + len(node.devices) * t.price_gpu_second)


def cluster_cost_per_hour(spec: ClusterSpec) -> float:
    """Dollars an hour for every node of ``spec``."""
    return sum(node_cost_per_hour(spec, n) for n in spec.nodes)


def templates(spec: ClusterSpec) -> dict[str, NodeSpec]:
    """Each pool's first node: what a pool's added nodes are copies of."""
    out: dict[str, NodeSpec] = {}
    for n in spec.nodes:
        out.setdefault(n.pool, n)
    return out


def is_mig(node: NodeSpec) -> bool:
    """Every GPU of the node is split into MIG instances (its layout is something to search)."""
    return bool(node.devices) and all(d.sharing == "mig" for d in node.devices)


def current_shape(spec: ClusterSpec) -> Shape:
    """``spec`` as a shape: its node count per pool and, per MIG pool, its first node's layout."""
    counts: dict[str, int] = {}
    for n in spec.nodes:
        counts[n.pool] = counts.get(n.pool, 0) + 1
    lays = tuple((p, _layout_of(t)) for p, t in templates(spec).items() if is_mig(t))
    return Shape(tuple(counts.items()), lays)


def _layout_of(node: NodeSpec) -> Layout:
    return tuple(d.mig_instances for d in node.devices)


def build(spec: ClusterSpec, shape: Shape) -> ClusterSpec:
    """``spec`` with each pool holding ``shape``'s count of nodes.

    A pool keeps its own nodes up to the count, in file order, and grows by copies of its first
    node named ``<pool>-add<k>``, listed after its last own node; a pool at 0 is left out. A MIG
    pool whose shape layout differs from its first node's gets that layout on every node;
    otherwise each node keeps its own (so the shape of ``spec`` itself builds ``spec``).
    """
    now = dict(current_shape(spec).layouts)
    lays = {p: lay for p, lay in shape.layouts if lay != now.get(p)}
    nodes, _ = resized_nodes(spec, dict(shape.counts))
    nodes = [_with_layout(n, lays[n.pool]) if n.pool in lays else n for n in nodes]
    if not nodes:
        raise ValueError("a cluster needs at least one node")
    return replace(spec, nodes=tuple(nodes), pools=tuple(p for p, n in shape.counts if n > 0))


def _with_layout(node: NodeSpec, layout: Layout) -> NodeSpec:
    dev = node.devices[0]
    return replace(node, devices=tuple(GpuDevice(dev.model, "mig", dev.granularity, tuple(lay)) for lay in layout))


def mig_layouts(profiles: Sequence[str], gpus: int) -> list[Layout]:
    """Per-node layouts: for each of ``gpus`` devices a valid layout of ``profiles`` that no further
    instance fits into (a free slice would be capacity paid for and never offered), as unordered
    combinations (device order does not change what a node holds); when those would be more than
    :data:`MAX_LAYOUTS`, one layout for every device of the node."""
    profs = sorted(set(profiles), key=lambda p: MIG_PROFILES[p])
    if not profs:
        return []
    singles: set[tuple[str, ...]] = set()

    def extend(lay: tuple[str, ...], start: int) -> None:
        grown = False
        for j in range(start, len(profs)):
            nxt = lay + (profs[j],)
            if validate_mig_layout(list(nxt)) is None:
                grown = True
                extend(nxt, j)
        if lay and not grown and all(validate_mig_layout(list(lay + (p,))) is not None for p in profs):
            singles.add(tuple(sorted(lay, key=lambda p: -MIG_PROFILES[p][0])))

    extend((), 0)
    ordered = sorted(singles)
    if math.comb(len(ordered) + gpus - 1, gpus) > MAX_LAYOUTS:
        return [(lay,) * gpus for lay in ordered]
    return [tuple(c) for c in itertools.combinations_with_replacement(ordered, gpus)]


def usable_profiles(tasks: Sequence[Task], spec: ClusterSpec, pool: str) -> list[str]:
    """The MIG profiles some task can run on, on a node of ``pool``: placement's own rule
    (:func:`cluster.state.share_for`, GPU model and size included) asked of a probe node that offers
    every profile, so each task names the smallest instance it fits."""
    from cluster.state import ClusterState, share_for

    node = templates(spec)[pool]
    dev = node.devices[0]
    probe = replace(node, devices=(GpuDevice(dev.model, "mig", dev.granularity, tuple(MIG_PROFILES)),))
    state = ClusterState.from_spec(replace(spec, nodes=(probe,), pools=(pool,)))
    out: set[str] = set()
    seen: set[tuple] = set()
    for t in tasks:
        key = (t.cpu_milli, t.mem_mib, t.gpu_milli, t.gpu_count, t.mig_profile, t.gpu_models)
        if key in seen:
            continue
        seen.add(key)
        share = share_for(state, 0, t)
        if share is not None and share[0] == "mig":
            out.add(str(share[1]))
    return sorted(out, key=lambda p: MIG_PROFILES[p])


# ---------------------------------------------------------------------------------------------
# What-if runs and the search
# ---------------------------------------------------------------------------------------------

def simulate_on(cluster: ClusterSpec, tasks: Sequence[Task], policy: str, seed: int, objective=None,
                timeline_points: int = 2):
    """One what-if run: ``tasks`` on ``cluster`` (a :func:`build`) under ``policy``; tasks still
    unfinished :data:`DRAIN_S` after the last arrival count as misses."""
    from scheduler.policy import make_policy
    from simulations.engine import simulate

    return simulate(cluster, tasks, make_policy(policy, seed=seed), seed=seed, objective=objective,
                    timeline_points=timeline_points, horizon_s=DRAIN_S)


def what_if(spec: ClusterSpec, shape: Shape, streams: Sequence[Sequence[Task]], policy: str,
            target_miss: float, objective=None, seeds: Sequence[int] | None = None) -> WhatIf:
    """Simulate ``streams`` (one per seed of ``seeds``, default 0, 1, ...) on ``spec`` reshaped to ``shape``."""
    seeds = list(range(len(streams))) if seeds is None else list(seeds)
    cluster = build(spec, shape)
    miss, obj = [], []
    for seed, tasks in zip(seeds, streams):
        s = simulate_on(cluster, tasks, policy, seed, objective).summary
        miss.append(s["slo_miss_rate"])
        obj.append(s["objective_mean"])
    m = sum(miss) / len(miss)
    return WhatIf(shape, cluster_cost_per_hour(cluster), m, sum(obj) / len(obj), len(cluster.nodes),
                  sum(len(n.devices) for n in cluster.nodes), m <= target_miss)


def _cheapest(whatifs) -> WhatIf | None:
    ok = [w for w in whatifs if w.meets]
    return min(ok, key=lambda w: (w.cost_per_hour, w.slo_miss, w.objective)) if ok else None


class Search:
    """The grow, shrink and layout steps over one demand, remembering every what-if."""

    def __init__(self, spec: ClusterSpec, streams: Sequence[Sequence[Task]], policy: str, target_miss: float,
                 max_nodes: int, objective=None, progress: Callable[[WhatIf], None] | None = None,
                 seeds: Sequence[int] | None = None) -> None:
        self.spec, self.streams, self.policy, self.seeds = spec, streams, policy, seeds
        self.target, self.max_nodes, self.objective = target_miss, max_nodes, objective
        self.tmpl = templates(spec)
        self.cost = {p: node_cost_per_hour(spec, n) for p, n in self.tmpl.items()}
        self.seen: dict[Shape, WhatIf] = {}
        self.progress = progress

    def judge(self, shape: Shape) -> WhatIf:
        hit = self.seen.get(shape)
        if hit is None:
            hit = self.seen[shape] = what_if(self.spec, shape, self.streams, self.policy, self.target, self.objective,
                                                     self.seeds)
            if self.progress:
                self.progress(hit)
        return hit

    def grow(self, shape: Shape) -> WhatIf:
        cur = self.judge(shape)
        while not cur.meets:
            options = []
            for p, _ in shape.counts:
                if cur.shape.count(p) < self.max_nodes:
                    w = self.judge(cur.shape.with_count(p, cur.shape.count(p) + 1))
                    options.append(((cur.slo_miss - w.slo_miss) / self.cost[p] if self.cost[p] > 0 else math.inf, w))
            if not options:
                break
            gain, w = max(options, key=lambda o: (o[0], -o[1].slo_miss))
            if gain <= 0 and not w.meets:  # no single node helps: take the one with fewest misses
                w = min((o[1] for o in options), key=lambda x: (x.slo_miss, x.cost_per_hour))
                if w.slo_miss >= cur.slo_miss:
                    break
            cur = w
        return cur

    def shrink(self, cur: WhatIf) -> WhatIf:
        while True:
            options = []
            for p, n in cur.shape.counts:
                if n > 0 and sum(c for _, c in cur.shape.counts) > 1:
                    w = self.judge(cur.shape.with_count(p, n - 1))
                    if w.meets:
                        options.append(w)
            if not options:
                options = [w for w in self._swaps(cur) if w.meets and w.cost_per_hour < cur.cost_per_hour]
            if not options:
                return cur
            cur = min(options, key=lambda w: (w.cost_per_hour, w.slo_miss))

    def _swaps(self, cur: WhatIf) -> list[WhatIf]:
        """``cur`` with one node of a pool traded for one node of a cheaper pool."""
        counts = dict(cur.shape.counts)
        out = []
        for p, n in counts.items():
            for q, m in counts.items():
                if n > 0 and m < self.max_nodes and self.cost[q] < self.cost[p]:
                    out.append(self.judge(cur.shape.with_count(p, n - 1).with_count(q, m + 1)))
        return out

    def layouts(self, cur: WhatIf, profiles: Sequence[str], pools: Sequence[str]) -> WhatIf:
        best = cur
        for pool in pools:
            n = best.shape.count(pool)
            if n == 0:  # no node of the pool: its layout changes nothing
                continue
            gpus = len(self.tmpl[pool].devices)
            options = [lay for lay in mig_layouts(profiles, gpus) if lay != dict(best.shape.layouts)[pool]]
            # screen every layout at the counts found so far and with one node fewer in the pool, then
            # search counts for the best few of each (the two screenings' shapes differ in that count)
            bases = [best.shape] + ([best.shape.with_count(pool, n - 1)] if n > 1 else [])
            screened: list[WhatIf] = []
            for base in bases:
                ranked = sorted((self.judge(base.with_layout(pool, lay)) for lay in options),
                                key=lambda w: (not w.meets, w.slo_miss, w.objective))
                screened += ranked[:LAYOUTS_SHRUNK]
            for w in screened:
                w = self.shrink(self.grow(w.shape))
                if w.meets and (w.cost_per_hour, w.slo_miss) < (best.cost_per_hour, best.slo_miss):
                    best = w
        return best


def recommend(spec: ClusterSpec, streams: Sequence[Sequence[Task]], policy: str = "fastest-feasible",
              target_miss: float = 0.05, max_nodes: int = 8, layouts: bool = True, objective=None,
              progress: Callable[[WhatIf], None] | None = None, seeds: Sequence[int] | None = None,
              start: Shape | None = None) -> Recommendation:
    """The cheapest cluster shape found that keeps SLO misses of ``streams`` (drawn with ``seeds``) at
    most ``target_miss`` (see the module docstring); ``max_nodes`` bounds each pool. The search is
    greedy, not exhaustive: the answer is the cheapest meeting the target among the shapes it tried.

    ``start``: the node counts the search grows and shrinks from (default the cluster's own; its
    layouts are the cluster's), e.g. the answer for a neighbouring demand, so that a search for a
    demand far above the cluster's does not climb to it through overloaded what-ifs one node at a
    time. ``current`` is then None: the cluster's own shape is not judged."""
    if not streams or not any(streams):
        raise ValueError("no tasks to plan for")
    if not 0.0 <= target_miss < 1.0:
        raise ValueError(f"target_miss must be in [0, 1), got {target_miss}")
    t0 = time.perf_counter()
    s = Search(spec, streams, policy, target_miss, max_nodes, objective, progress, seeds)
    own = current_shape(spec)
    if start is None:
        start = own
    elif {p for p, _ in start.counts} != {p for p, _ in own.counts}:
        raise ValueError(f"start: pools {sorted(p for p, _ in start.counts)} are not the cluster's "
                         f"{sorted(p for p, _ in own.counts)}")
    else:
        start = Shape(tuple((p, dict(start.counts)[p]) for p, _ in own.counts), own.layouts)
    too_many = [p for p, n in start.counts if n > max_nodes]
    if too_many:
        raise ValueError(f"pools {too_many} already hold more than max_nodes={max_nodes} nodes")
    current = s.judge(start) if start == own else None
    best = s.shrink(s.grow(start))
    shipped = _cheapest(s.seen.values())  # before any layout is tried: the best with the layouts as they are
    if layouts and start.layouts and best.meets:
        for pool, _ in start.layouts:
            profiles = usable_profiles([t for st in streams for t in st], spec, pool)
            best = s.layouts(best, profiles, [pool])
    meeting = _cheapest(s.seen.values())  # the greedy path may have passed a cheaper one than it ended on
    feasible = meeting is not None
    # nothing within the bounds met the target: the fewest misses, then the cheapest
    best = meeting if feasible else min(s.seen.values(), key=lambda w: (w.slo_miss, w.cost_per_hour))
    return Recommendation(current, best, build(spec, best.shape), list(s.seen.values()),
                          time.perf_counter() - t0, feasible, shipped)


def demand_streams(workload, rate_per_s: float, window_s: float, seeds: Sequence[int]) -> list[list[Task]]:
    """The workload's mix arriving at a steady ``rate_per_s`` for ``window_s``, one stream per seed
    (its rate profile, if any, is dropped: the rate is the one to plan for)."""
    from simulations.workloads import generate

    if not rate_per_s > 0 or not window_s > 0:
        raise ValueError(f"rate and window must be > 0, got {rate_per_s}, {window_s}")
    steady = replace(workload, rate_profile=None, rate_per_s=rate_per_s, load_factor=1.0)
    return [generate(steady, seed=s, duration_s=window_s) for s in seeds]


# ---------------------------------------------------------------------------------------------
# What a recommendation is handed over as
# ---------------------------------------------------------------------------------------------

def cluster_document(spec: ClusterSpec) -> dict:
    """``spec`` as a cluster YAML document that :func:`cluster.topology.load_cluster` reads back equal."""
    tiers = {name: {"kind": t.kind, "network_ms": {"low": t.network_ms[0], "high": t.network_ms[1]},
                    "price_per_task": t.price_per_task, "price_cpu_second": t.price_cpu_second,
                    "price_gb_second": t.price_gb_second, "price_gpu_second": t.price_gpu_second}
             for name, t in spec.tiers.items()}
    nodes = []
    for n in spec.nodes:
        doc: dict = {"name": n.name, "tier": n.tier}
        if n.pool != n.tier:
            doc["pool"] = n.pool
        doc.update(cpus=_num(n.cpu_milli / 1000), memory_gb=_num(n.mem_mib / 1024), cpu_speed=n.cpu_speed)
        if n.devices:
            d = n.devices[0]
            gpus: dict = {"model": d.model, "count": len(n.devices), "sharing": d.sharing}
            if d.sharing == "time-slicing":
                gpus["replicas"] = 1000 // d.granularity
            if d.sharing == "mig":
                gpus["mig_layout"] = [list(x.mig_instances) for x in n.devices]
            doc["gpus"] = gpus
        if n.labels:
            doc["labels"] = dict(n.labels)
        nodes.append(doc)
    out = {"name": spec.name, "tiers": tiers, "nodes": nodes}
    counts = {p: sum(n.pool == p for n in spec.nodes) for p in spec.pools}
    scaling = {p: {"max_nodes": max(m, counts[p])} for p, m in spec.max_nodes if counts.get(p)}
    if scaling:  # a pool the recommendation grew past its bound keeps room for what it has
        out["scaling"] = scaling
    return out


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


def cluster_yaml(spec: ClusterSpec) -> str:
    return yaml.safe_dump(cluster_document(spec), sort_keys=False, default_flow_style=None, width=120)


def cluster_diff(before: ClusterSpec, after: ClusterSpec) -> str:
    """A unified diff of the two clusters' YAML (both written by :func:`cluster_yaml`)."""
    return "".join(difflib.unified_diff(cluster_yaml(before).splitlines(True), cluster_yaml(after).splitlines(True),
                                        fromfile=f"{before.name} (now)", tofile=f"{after.name} (recommended)"))


def replica_bounds(low: ClusterSpec, high: ClusterSpec) -> list[dict]:
    """KubeRay worker groups of ``high`` with ``minReplicas`` from ``low`` (the trough's cluster) and
    ``maxReplicas``/``replicas`` from ``high`` (the peak's), matched by group name."""
    from cluster.k8s import worker_groups
    from cluster.k8s_image import default_image

    image = default_image()
    lows = {g["groupName"]: g["replicas"] for g in worker_groups(low, image)}
    out = []
    for g in worker_groups(high, image):
        out.append({"groupName": g["groupName"], "minReplicas": min(lows.get(g["groupName"], 0), g["replicas"]),
                    "maxReplicas": g["replicas"], "replicas": g["replicas"]})
    return out


def autoscaler_bundles(spec: ClusterSpec) -> list[dict[str, float]]:
    """One resource bundle per node of ``spec``: the argument of ``ray.autoscaler.sdk.request_resources(
    bundles=...)`` that asks Ray's autoscaler to hold this cluster before the peak arrives."""
    from cluster.ray_resources import cluster_resources

    return [res.ray_totals() for res in cluster_resources(spec)]


def plan_rates(frame, level: int = 95, model: str = "mstl", source: str | None = None) -> tuple[float, float]:
    """(peak, trough) arrivals per second to plan for, from a ``capacity forecast`` table (its
    ``forecast.csv``): the peak is the highest ``level`` % upper bound of the total-arrivals series
    over the horizon, the trough its lowest mean. Raises ``ValueError`` saying what is missing."""
    import pandas as pd

    part = frame[(frame["metric"] == "arrivals") & (frame["by"] == "*") & (frame["model"] == model)]
    if source is not None and "source" in part:
        part = part[part["source"] == source]
    if part.empty:
        models = sorted(frame["model"].unique()) if "model" in frame else []
        raise ValueError(f"no total-arrivals forecast by model {model!r}{f' for source {source!r}' if source else ''} "
                         f"(models: {', '.join(models)})")
    if "source" in part and part["source"].nunique() > 1:
        raise ValueError(f"forecasts of several sources ({', '.join(sorted(part['source'].unique()))}): name one")
    col = f"hi_{level}"
    if col not in part:
        raise ValueError(f"no {level}% upper bound (columns: {', '.join(c for c in part.columns if c.startswith('hi_'))})")
    ds = pd.to_datetime(part["ds"]).sort_values().unique()
    if len(ds) < 2:
        raise ValueError("a forecast of at least two intervals is needed to know the interval")
    step = (ds[1] - ds[0]) / pd.Timedelta(seconds=1)
    return float(part[col].max()) / step, float(part["mean"].clip(lower=0).min()) / step


def what_if_row(w: WhatIf) -> dict:
    """A what-if as a CSV row: counts per pool, layouts, cost and misses."""
    row: dict = {f"nodes_{p}": n for p, n in w.shape.counts}
    row.update({f"layout_{p}": " | ".join(",".join(g) for g in lay) for p, lay in w.shape.layouts})
    row.update(cost_per_hour=w.cost_per_hour, slo_miss_pct=100 * w.slo_miss, objective=w.objective,
               nodes=w.nodes, gpus=w.gpus, meets=w.meets)
    return row


def summary_table(high: Recommendation, low: Recommendation | None, peak: float, trough: float | None):
    """Now against recommended (at the peak, and at the trough when planned for), one row each."""
    import pandas as pd

    rows = {f"now, at the peak ({peak:.2f}/s)": high.current, f"recommended for the peak ({peak:.2f}/s)": high.best}
    if high.shipped_layout_best is not None and high.shipped_layout_best is not high.best:
        rows["recommended, MIG layouts as now"] = high.shipped_layout_best
    if low is not None:
        rows[f"recommended for the trough ({trough:.2f}/s)"] = low.best
    return pd.DataFrame({k: what_if_row(w) for k, w in rows.items()}).T
