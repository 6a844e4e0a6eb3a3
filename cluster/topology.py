"""Cluster topology: tiers (network and prices), nodes, GPU devices and how they are shared.

Units inside the package are integers where accounting must be exact: CPU in
millicores, memory in MiB, GPU in milli-GPUs (1000 = one whole device).

GPU sharing modes per device:

* ``exclusive``: whole devices only (a fractional task takes a whole device);
* ``time-slicing``: ``replicas`` equal shares (granularity ``1000 // replicas`` milli);
  co-located tasks slow each other by the Gavel co-location factor;
* ``milli``: arbitrary milli-GPU packing (the Alibaba GPU-sharing model), sum <= 1000;
* ``mig``: a fixed layout of isolated MIG instances (A100/H100 profiles).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from cluster.config import Collector, ConfigError, Fields, load_yaml
from cluster.package_data import DATA_ROOT

SHARING_MODES = ("exclusive", "time-slicing", "milli", "mig")
TIER_KINDS = ("edge", "cloud", "gpu")

#: MIG profiles of the 80 GB A100/H100: (compute slices of 7, memory slices of 8).
MIG_PROFILES: dict[str, tuple[int, int]] = {
    "1g.10gb": (1, 1),
    "2g.20gb": (2, 2),
    "3g.40gb": (3, 4),
    "4g.40gb": (4, 4),
    "7g.80gb": (7, 8),
}
MIG_COMPUTE_SLICES = 7
MIG_MEMORY_SLICES = 8


def validate_mig_layout(layout: list[str]) -> str | None:
    """Return why a per-device MIG layout is impossible, or None when it is valid."""
    if not layout:
        return "a MIG device needs at least one instance"
    for prof in layout:
        if prof not in MIG_PROFILES:
            return f"unknown MIG profile {prof!r} (known: {', '.join(MIG_PROFILES)})"
    compute = sum(MIG_PROFILES[p][0] for p in layout)
    memory = sum(MIG_PROFILES[p][1] for p in layout)
    if compute > MIG_COMPUTE_SLICES:
        return f"layout {layout} uses {compute} compute slices, a device has {MIG_COMPUTE_SLICES}"
    if memory > MIG_MEMORY_SLICES:
        return f"layout {layout} uses {memory} memory slices, a device has {MIG_MEMORY_SLICES}"
    return None


def mig_fraction(profile: str) -> float:
    """Compute share of one device that a MIG profile holds (1g = 1/7)."""
    return MIG_PROFILES[profile][0] / MIG_COMPUTE_SLICES


@dataclass(frozen=True)
class TierSpec:
    """Network latency (uniform low..high ms) and prices of one tier."""

    name: str
    kind: str
    network_ms: tuple[float, float]
    price_per_task: float
    price_cpu_second: float
    price_gb_second: float
    price_gpu_second: float

    @property
    def network_mean_ms(self) -> float:
        return (self.network_ms[0] + self.network_ms[1]) / 2


@dataclass(frozen=True)
class GpuDevice:
    """One physical GPU of a node."""

    model: str
    sharing: str
    granularity: int  # smallest milli unit a task can hold on this device
    mig_instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    """One node: capacity, tier, speed and its GPU devices."""

    name: str
    tier: str
    pool: str
    cpu_milli: int
    mem_mib: int
    cpu_speed: float
    gpu_model: str | None
    gpu_speed: float
    colocation_factor: float
    devices: tuple[GpuDevice, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    #: (task kind, factor) pairs: a calibrated node's measured execution of that kind against the model's
    #: (``orchestrator calibrate``; :func:`cluster.performance.speed` divides by it); empty: the model as is
    work_factors: tuple[tuple[str, float], ...] = ()

    @property
    def gpu_count(self) -> int:
        return len(self.devices)

    @property
    def sharing(self) -> str | None:
        return self.devices[0].sharing if self.devices else None


@dataclass(frozen=True)
class ClusterSpec:
    """A whole cluster as loaded from YAML (or built from a trace node list)."""

    name: str
    tiers: dict[str, TierSpec]
    nodes: tuple[NodeSpec, ...]
    source: str = "<built>"
    pools: tuple[str, ...] = field(default=())
    #: per pool, the most nodes it may scale to (the YAML's ``scaling``; pools not named: their node count)
    max_nodes: tuple[tuple[str, int], ...] = ()
    #: nodes that exist only as slots to scale into (:func:`with_standby`); none in a loaded file
    standby: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.pools:
            object.__setattr__(self, "pools", tuple(dict.fromkeys(n.pool for n in self.nodes)))

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


GPU_MODELS_FILE = DATA_ROOT / "configs" / "cluster" / "gpu_models.yaml"


def load_gpu_models(path: str | Path = GPU_MODELS_FILE) -> dict[str, tuple[float, float]]:
    """``{MODEL: (speed vs V100, co-location factor)}`` from the GPU model table."""
    f = load_yaml(path)
    out = {}
    for name, sec in f.mapping_sections("models"):
        sec.check_keys({"speed", "colocation_factor", "source"})
        out[name] = (sec.num("speed", min=0, strict_min=True),
                     sec.num("colocation_factor", min=0, max=1, strict_min=True))
    return out


def _parse_tier(name: str, f: Fields) -> TierSpec:
    f.check_keys({"kind", "network_ms", "price_per_task", "price_cpu_second",
                  "price_gb_second", "price_gpu_second"})
    kind = f.str("kind", name if name in TIER_KINDS else None, choices=set(TIER_KINDS))
    net = f.section("network_ms")
    net.check_keys({"low", "high"})
    low = net.num("low", min=0)
    high = net.num("high", min=0)
    if high < low:
        raise net.error("high", f"must be >= low ({low}), got {high}")
    return TierSpec(
        name=name, kind=kind, network_ms=(low, high),
        price_per_task=f.num("price_per_task", 0.0, min=0),
        price_cpu_second=f.num("price_cpu_second", 0.0, min=0),
        price_gb_second=f.num("price_gb_second", 0.0, min=0),
        price_gpu_second=f.num("price_gpu_second", 0.0, min=0),
    )


def _parse_gpus(f: Fields, models: dict[str, tuple[float, float]]) -> tuple[str, tuple[GpuDevice, ...]]:
    f.check_keys({"model", "count", "sharing", "replicas", "mig_layout"})
    model = f.str("model")
    if model not in models:
        raise f.error("model", f"unknown GPU model {model!r}; add it to {GPU_MODELS_FILE.name} "
                               f"(known: {', '.join(sorted(models))})")
    count = f.int("count", min=0, max=64)
    sharing = f.str("sharing", "exclusive", choices=set(SHARING_MODES))
    devices: list[GpuDevice] = []
    if sharing == "mig":
        layouts = f.raw("mig_layout")
        if not isinstance(layouts, list) or len(layouts) != count:
            raise f.error("mig_layout", f"must be a list of {count} per-device layouts (one per GPU)")
        for i, layout in enumerate(layouts):
            if not isinstance(layout, list) or not all(isinstance(p, str) for p in layout):
                raise f.error(f"mig_layout[{i}]", "must be a list of MIG profile names")
            why = validate_mig_layout(layout)
            if why:
                raise f.error(f"mig_layout[{i}]", why)
            devices.append(GpuDevice(model, "mig", 1000, tuple(layout)))
    else:
        if f.has("mig_layout"):
            raise f.error("mig_layout", f"only valid with sharing: mig, not {sharing!r}")
        if sharing == "time-slicing":
            replicas = f.int("replicas", min=2, max=4)
            gran = 1000 // replicas
        else:
            if f.has("replicas"):
                raise f.error("replicas", "only valid with sharing: time-slicing")
            gran = 1000 if sharing == "exclusive" else 1
        devices = [GpuDevice(model, sharing, gran) for _ in range(count)]
    return model, tuple(devices)


def _parse_node(f: Fields, tiers: dict[str, TierSpec], models: dict[str, tuple[float, float]]) -> NodeSpec:
    f.check_keys({"name", "tier", "pool", "cpus", "memory_gb", "cpu_speed", "gpus", "labels"})
    name = f.str("name")
    tier = f.str("tier", choices=set(tiers))
    model, devices, speed, coloc = None, (), 0.0, 1.0
    if f.has("gpus"):
        model, devices = _parse_gpus(f.section("gpus"), models)
        speed, coloc = models[model]
    cpu_milli = int(round(f.num("cpus", min=0, strict_min=True) * 1000))
    mem_mib = int(round(f.num("memory_gb", min=0, strict_min=True) * 1024))
    if cpu_milli < 1:
        raise f.error("cpus", "must be at least 0.001 (one millicore)")
    if mem_mib < 1:
        raise f.error("memory_gb", "must be at least 1 MiB")
    labels = f.section("labels", {})
    for k, v in labels.data.items():
        if not isinstance(v, str):
            raise labels.error(str(k), f"label values must be strings, got {v!r}")
    return NodeSpec(
        name=name, tier=tier, pool=f.str("pool", tier),
        cpu_milli=cpu_milli,
        mem_mib=mem_mib,
        cpu_speed=f.num("cpu_speed", 1.0, min=0, strict_min=True),
        gpu_model=model, gpu_speed=speed, colocation_factor=coloc, devices=devices,
        labels=tuple(sorted(labels.data.items())),
    )


def load_cluster(path: str | Path) -> ClusterSpec:
    """Load and validate a cluster topology YAML; raises :class:`ConfigError`."""
    f = load_yaml(path)
    errs = Collector()  # every bad tier, node and field is reported at once
    errs(f.check_keys, {"name", "tiers", "nodes", "gpu_models", "scaling"})
    models = errs(load_gpu_models, f.raw("gpu_models")) if f.has("gpu_models") else load_gpu_models()
    tiers, bad_tiers = {}, set()
    for name, sec in errs(lambda: list(f.mapping_sections("tiers")), default=[]):
        tier = errs(_parse_tier, name, sec)
        if tier is None:
            bad_tiers.add(name)
        else:
            tiers[name] = tier
    if not tiers and not bad_tiers:
        errs.errors.append(f.error("tiers", "at least one tier is required"))
    nodes = []
    for i, sec in enumerate(errs(lambda: list(f.sections("nodes")), default=[])):
        if models is not None and sec.data.get("tier") not in bad_tiers:  # else its tier's error says it
            node = errs(_parse_node, sec, tiers, models)
            if node is not None:
                nodes.append((i, node))
    if not nodes and not errs.errors:
        errs.errors.append(f.error("nodes", "at least one node is required"))
    seen: set[str] = set()
    for i, n in nodes:
        if n.name in seen:
            errs.errors.append(ConfigError(path, f"nodes[{i}].name", f"duplicate node name {n.name!r}"))
        seen.add(n.name)
        if n.devices and tiers[n.tier].kind != "gpu":
            errs.errors.append(ConfigError(path, f"nodes[{i}].gpus", f"GPUs on a {tiers[n.tier].kind!r} tier node"))
    name = errs(f.str, "name", Path(path).stem)
    scaling = errs(_parse_scaling, f, [n for _, n in nodes]) if f.has("scaling") else ()
    errs.check()
    nodes = [n for _, n in nodes]
    return ClusterSpec(name=name, tiers=tiers, nodes=tuple(nodes), source=str(path), max_nodes=scaling or ())


#: the most nodes one pool may scale to (each is a raylet on the emulated cluster)
MAX_POOL_NODES = 64


def _parse_scaling(f: Fields, nodes: list[NodeSpec]) -> tuple[tuple[str, int], ...]:
    """``scaling: {POOL: {max_nodes: N}}``: how far ``orchestrator capacity apply`` may grow each pool
    (KubeRay's ``maxReplicas``); at least the pool's node count in the file."""
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.pool] = counts.get(n.pool, 0) + 1
    out = []
    for pool, sec in f.mapping_sections("scaling"):
        if pool not in counts:
            raise f.error(f"scaling.{pool}", f"no such pool (pools: {', '.join(counts)})")
        sec.check_keys({"max_nodes"})
        out.append((pool, sec.int("max_nodes", min=counts[pool], max=MAX_POOL_NODES)))
    return tuple(out)


def added_node_name(pool: str, k: int) -> str:
    """The name of the ``k``-th node (from 1) a pool grows by beyond its file's nodes."""
    return f"{pool}-add{k}"


def pool_max(spec: ClusterSpec) -> dict[str, int]:
    """Per pool, the most nodes it may have: its ``scaling.max_nodes``, never fewer than the nodes it has
    (standby included; a file's ``max_nodes`` is refused below them, a built spec may keep an old one)."""
    out: dict[str, int] = {}
    for n in spec.nodes:
        out[n.pool] = out.get(n.pool, 0) + 1
    for pool, m in spec.max_nodes:
        out[pool] = max(m, out.get(pool, 0))
    return out


def resized_nodes(spec: ClusterSpec, counts: Mapping[str, int]) -> tuple[list[NodeSpec], list[str]]:
    """Each pool at ``counts[pool]`` nodes (0 when absent): its own nodes up to the count, in file
    order, then copies of its first node named by :func:`added_node_name` (names already taken are
    skipped), listed after its last own node. Returns the nodes and the names of those added.

    One rule for a pool's growth, shared by the router's standby slots and the capacity search's
    candidate clusters, so a recommended node and the slot that starts it have the same name."""
    first: dict[str, NodeSpec] = {}
    for n in spec.nodes:
        first.setdefault(n.pool, n)
    names = {n.name for n in spec.nodes}
    last = {n.pool: i for i, n in enumerate(spec.nodes)}
    kept: dict[str, int] = {}
    nodes: list[NodeSpec] = []
    added: list[str] = []
    for i, nd in enumerate(spec.nodes):
        p = nd.pool
        if kept.get(p, 0) < counts.get(p, 0):
            kept[p] = kept.get(p, 0) + 1
            nodes.append(nd)
        k = 0
        while i == last[p] and kept.get(p, 0) < counts.get(p, 0):
            k += 1
            name = added_node_name(p, k)
            if name not in names:
                kept[p] = kept.get(p, 0) + 1
                nodes.append(replace(first[p], name=name))
                added.append(name)
    return nodes, added


def with_standby(spec: ClusterSpec) -> ClusterSpec:
    """``spec`` with a standby slot per node each pool may grow by (up to its :func:`pool_max`, by
    :func:`resized_nodes`): the router's view of a cluster that scales, whose node indices stay fixed
    while nodes start and stop (a slot not started is a node that is not running)."""
    nodes, added = resized_nodes(spec, pool_max(spec))
    if not added:
        return spec
    return replace(spec, nodes=tuple(nodes), standby=tuple(spec.standby) + tuple(added))


#: Node classes that every cluster maps onto, so that learned policies and their
#: features have a fixed shape whatever the cluster's size.
NODE_CLASSES = ("edge", "cloud", "gpu-mig", "gpu-shared", "gpu-whole")


def node_class(node: NodeSpec, tier: TierSpec) -> str:
    """The class of a node: its tier kind, and for GPU nodes how devices are shared."""
    if not node.devices:
        return "cloud" if tier.kind == "gpu" else tier.kind
    sharing = node.sharing
    if sharing == "mig":
        return "gpu-mig"
    if sharing in ("time-slicing", "milli"):
        return "gpu-shared"
    return "gpu-whole"
