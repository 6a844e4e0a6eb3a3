"""Cluster variants for training over, and evaluating on, clusters a policy never saw.

More of every node (``xK``), a pool less (``no:POOL``), or a cluster drawn at random from
the pools (``rand:N``: node counts, node sizes, GPU counts, MIG layouts and time-slice
replicas, and a load level). All work on any loaded :class:`ClusterSpec` (a YAML topology
or a trace node list) and keep what the loader guarantees: at least one node, unique node
names and valid MIG layouts (the tiers stay as loaded; a tier without nodes is valid there
too). They raise ``ValueError`` saying what is wrong.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from cluster.topology import MIG_PROFILES, ClusterSpec, GpuDevice, NodeSpec, validate_mig_layout

RANDOM_PREFIX = "rand:"
#: CPUs and memory of a random cluster's node: its pool node's times one of these (test_small's
#: nodes are 1/8 to 1/2 of local.yaml's; a tier's node may also be twice as big)
SIZE_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)
#: a random cluster's load, relative to its capacity against the original's: from under- to overloaded
LOAD_LEVELS = (0.5, 2.5)
#: time-slice replicas a random GPU device may offer (local.yaml's 4, or half as many)
SLICE_REPLICAS = (2, 4)
#: draws of node counts tried before a cluster is given up (each keeps both kinds of node with odds >= 1/4
#: per pool that has them, so this is never reached by a spec the loader accepts)
MAX_DRAWS = 1000
#: the random stream of ``rand:N`` (N is the seed within it)
_STREAM = 0x7A11


def scale_cluster(spec: ClusterSpec, factor: int) -> ClusterSpec:
    """``factor`` copies of every node (``factor=2`` doubles each tier); copies are named ``<name>-copy<k>``.

    A copy sits right after its original, so the node order by pool and tier is kept.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"must be a positive integer, got {factor!r}")
    if factor == 1:
        return spec
    nodes = []
    for nd in spec.nodes:
        nodes.append(nd)
        nodes += [replace(nd, name=f"{nd.name}-copy{k}") for k in range(1, factor)]
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        clash = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"copies would clash with existing node names {clash}")
    return replace(spec, name=f"{spec.name}-x{factor}", nodes=tuple(nodes), pools=spec.pools)


def drop_pools(spec: ClusterSpec, pools: list[str] | tuple[str, ...]) -> ClusterSpec:
    """``spec`` without the nodes of ``pools``; unknown pools, or dropping every node, raise."""
    unknown = [p for p in pools if p not in spec.pools]
    if unknown:
        raise ValueError(f"unknown pool(s) {', '.join(map(repr, unknown))} (pools of {spec.name}: "
                         f"{', '.join(spec.pools)})")
    nodes = tuple(n for n in spec.nodes if n.pool not in pools)
    if not nodes:
        raise ValueError(f"dropping {', '.join(pools)} leaves {spec.name} without nodes")
    kept_pools = tuple(p for p in spec.pools if p not in pools)
    return replace(spec, name=f"{spec.name}-no-{'-'.join(pools)}", nodes=nodes, pools=kept_pools)


def random_cluster(spec: ClusterSpec, seed: int) -> tuple[ClusterSpec, float]:
    """A cluster drawn from ``spec``'s pools, and the factor its workloads' load scales by.

    So that a learned policy meets clusters unlike the one it is evaluated on (the issue's
    randomised clusters: node counts, pool mixes, MIG layouts, load levels), per pool 0 to
    twice its nodes (a GPU node and a CPU-only node stay where ``spec`` has both), each a copy of one of the pool's nodes in
    turn with CPUs and memory times one of :data:`SIZE_SCALES` and CPU speed times 0.7-1.3;
    a GPU node holds 1 to one more than its devices, a MIG device a random layout no further
    instance fits into, a time-sliced one :data:`SLICE_REPLICAS` replicas (no node is made
    smaller than 1 CPU and 1 GiB). The load factor is the drawn cluster's capacity against
    ``spec``'s (the mean of its ratios of CPUs on nodes without GPUs and of GPU devices; the
    CPUs of GPU nodes, which serve their GPU work first, are not counted) times a level drawn
    from :data:`LOAD_LEVELS`, so both idle and overloaded clusters are met. Deterministic in
    ``seed``: ``rand:N`` names the same cluster in a training config and in its meta.
    """
    rng = np.random.default_rng([_STREAM, int(seed)])
    pools: dict[str, list[NodeSpec]] = {}
    for n in spec.nodes:
        pools.setdefault(n.pool, []).append(n)
    # redrawn until the cluster keeps a GPU node and a CPU-only one where spec has them (a cluster
    # that rejects a whole kind of task teaches nothing about placing it)
    kinds = {bool(n.devices) for n in spec.nodes}
    counts = {p: 0 for p in pools}
    for _ in range(MAX_DRAWS):
        drawn = {bool(m[k % len(m)].devices) for p, m in pools.items() for k in range(counts[p])}
        if drawn == kinds:
            break
        counts = {p: int(rng.integers(0, 2 * len(m) + 1)) for p, m in pools.items()}
    else:
        raise ValueError(f"no draw of {spec.name}'s pools in {MAX_DRAWS} kept both a GPU node and a CPU-only one")
    nodes: list[NodeSpec] = []
    for pool, members in pools.items():
        for k in range(counts[pool]):  # names are unique: k is, per pool, and pools share no node
            base = members[k % len(members)]
            nodes.append(_random_node(base, f"{base.name}-r{k + 1}", rng))
    ratios = []
    cpu = sum(n.cpu_milli for n in spec.nodes if not n.devices)
    if cpu:
        ratios.append(sum(n.cpu_milli for n in nodes if not n.devices) / cpu)
    devices = sum(n.gpu_count for n in spec.nodes)
    if devices:
        ratios.append(sum(n.gpu_count for n in nodes) / devices)
    level = float(rng.uniform(*LOAD_LEVELS))
    out = replace(spec, name=f"{spec.name}-rand{seed}", nodes=tuple(nodes),
                  pools=tuple(p for p in pools if counts[p]), max_nodes=(), standby=())
    return out, float(np.mean(ratios)) * level


def _random_node(base: NodeSpec, name: str, rng: np.random.Generator) -> NodeSpec:
    scale = SIZE_SCALES[int(rng.integers(len(SIZE_SCALES)))]
    devices = base.devices
    if devices:
        dev = devices[0]
        count = int(rng.integers(1, len(devices) + 2))
        if dev.sharing == "mig":
            devices = tuple(GpuDevice(dev.model, "mig", dev.granularity, _random_mig_layout(rng)) for _ in range(count))
        elif dev.sharing == "time-slicing":
            replicas = SLICE_REPLICAS[int(rng.integers(len(SLICE_REPLICAS)))]
            devices = tuple(GpuDevice(dev.model, dev.sharing, 1000 // replicas) for _ in range(count))
        else:
            devices = tuple(dev for _ in range(count))
    return replace(base, name=name, cpu_milli=max(1000, round(base.cpu_milli * scale)),
                   mem_mib=max(1024, round(base.mem_mib * scale)),
                   cpu_speed=round(base.cpu_speed * float(rng.uniform(0.7, 1.3)), 3), devices=devices)


def _random_mig_layout(rng: np.random.Generator) -> tuple[str, ...]:
    """Profiles drawn one at a time among those that still fit, until none does (largest first)."""
    lay: list[str] = []
    while fits := [p for p in MIG_PROFILES if validate_mig_layout(lay + [p]) is None]:
        lay.append(fits[int(rng.integers(len(fits)))])
    return tuple(sorted(lay, key=lambda p: -MIG_PROFILES[p][0]))


def parse_variant(text: str) -> tuple[int, tuple[str, ...]]:
    """``xK`` -> (K, ()); ``no:POOL[+POOL]`` -> (1, pools); ``rand:N`` -> (1, ()) (its factor is
    drawn: :func:`variant`): a cluster variant as training configs name it."""
    t = text.strip()
    if t.startswith("x") and t[1:].isdigit() and int(t[1:]) >= 1:
        return int(t[1:]), ()
    if t.startswith("no:") and t[3:]:
        return 1, tuple(p for p in t[3:].split("+") if p)
    if t.startswith(RANDOM_PREFIX) and _digits(t[len(RANDOM_PREFIX):]):
        return 1, ()
    raise ValueError(f"expected xK (e.g. x2), no:POOL (e.g. no:gpu-mig) or rand:N (e.g. rand:3), got {text!r}")


def expand_variants(names: "list[str] | tuple[str, ...]") -> list[str]:
    """``names`` with each ``rand:A-B`` written out as ``rand:A`` ... ``rand:B`` (a config lists many
    random clusters in one entry); others as they are."""
    out: list[str] = []
    for name in names:
        t = name.strip()
        lo, sep, hi = t[len(RANDOM_PREFIX):].partition("-")
        if t.startswith(RANDOM_PREFIX) and sep and _digits(lo) and _digits(hi):
            if int(hi) < int(lo) or int(hi) - int(lo) >= 10_000:
                raise ValueError(f"{name!r}: a range A-B of at most 10,000 with A <= B")
            out += [f"{RANDOM_PREFIX}{k}" for k in range(int(lo), int(hi) + 1)]
        elif t.startswith(RANDOM_PREFIX) and _digits(t[len(RANDOM_PREFIX):]):
            out.append(f"{RANDOM_PREFIX}{int(t[len(RANDOM_PREFIX):])}")  # rand:03 is rand:3
        else:
            out.append(t)
    return out


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def variant(spec: ClusterSpec, text: str) -> tuple[ClusterSpec, float]:
    """The variant ``text`` names (:func:`parse_variant`) of ``spec``, and the factor its load scales by
    (``xK`` holds K times the nodes, so it is run at K times the load; ``rand:N`` see :func:`random_cluster`)."""
    t = text.strip()
    if t.startswith(RANDOM_PREFIX):
        parse_variant(t)
        return random_cluster(spec, int(t[len(RANDOM_PREFIX):]))
    factor, pools = parse_variant(text)
    scaled = scale_cluster(spec, factor)
    return (drop_pools(scaled, list(pools)) if pools else scaled), factor
