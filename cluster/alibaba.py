"""A cluster built from the Alibaba GPU-sharing trace's node list, and a loader for either kind.

``openb_node_list_*.csv`` (cluster-trace-gpu-v2023; Weng et al., USENIX ATC 2023)
lists ``sn,cpu_milli,memory_mib,gpu,model``. GPU nodes go to a ``gpu`` tier, one
pool per GPU model (``gpu-T4``, ``gpu-G2``, ...), with ``milli`` sharing devices:
the trace's pods ask for arbitrary milli-GPU shares, which is exactly that mode.
CPU-only nodes go to a ``cloud`` tier. Tier prices and network latency are not
in the trace, so by default they are the ``gpu`` and ``cloud`` tiers of
``configs/cluster/local.yaml``, to keep costs comparable across clusters.

A cluster YAML may point at a node list instead of listing nodes::

    name: alibaba-openb
    from_trace:
      node_list: ../shared/traces/alibaba_gpu_v2023/openb_node_list_gpu_node.csv
      tiers_from: local.yaml   # optional, relative to this YAML

:func:`load_cluster_any` reads both that form and the ordinary topology YAML.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from cluster.config import ConfigError, load_yaml, read_csv_rows
from cluster.package_data import DATA_ROOT, data_path
from cluster.topology import ClusterSpec, GpuDevice, NodeSpec, TierSpec, load_cluster, load_gpu_models

REPO_ROOT = DATA_ROOT
LOCAL_CLUSTER_FILE = DATA_ROOT / "configs" / "cluster" / "local.yaml"
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")


def default_tiers(path: str | Path = LOCAL_CLUSTER_FILE) -> dict[str, TierSpec]:
    """The ``gpu`` and ``cloud`` tiers of a cluster YAML (prices and network to reuse)."""
    tiers = load_cluster(path).tiers
    for name in ("gpu", "cloud"):
        if name not in tiers:
            raise ConfigError(path, f"tiers.{name}", "required to price an Alibaba trace cluster")
    return {"gpu": tiers["gpu"], "cloud": tiers["cloud"]}


def _cell_int(path: Path, line: int, row: Mapping[str, str], col: str, *, positive: bool) -> int:
    text = (row.get(col) or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value != int(value) or value < (1 if positive else 0):
        kind = "a positive" if positive else "a non-negative"
        raise ConfigError(path, f"{col} (line {line})", f"must be {kind} integer, got {text!r}")
    return int(value)


def load_alibaba_nodes(path: str | Path, *, name: str = "alibaba-openb",
                       tiers: Mapping[str, TierSpec] | None = None,
                       gpu_models: Mapping[str, tuple[float, float]] | None = None) -> ClusterSpec:
    """Build a :class:`ClusterSpec` from an ``openb_node_list_*.csv``.

    Args:
        path: the node list CSV.
        name: the cluster name.
        tiers: ``{"gpu": TierSpec, "cloud": TierSpec}``; default :func:`default_tiers`.
        gpu_models: GPU speed table; default :func:`cluster.topology.load_gpu_models`.

    Raises:
        ConfigError: missing file or column, a bad cell, or an unknown GPU model,
            naming the file, the column and the line.
    """
    p = Path(path)
    rows = read_csv_rows(p, NODE_COLUMNS)
    tiers = dict(tiers) if tiers is not None else default_tiers()
    models = dict(gpu_models) if gpu_models is not None else load_gpu_models()
    nodes: list[NodeSpec] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        sn = (row["sn"] or "").strip()
        if not sn or sn in seen:
            raise ConfigError(p, f"sn (line {line})", f"node names must be unique and non-empty, got {sn!r}")
        seen.add(sn)
        cpu = _cell_int(p, line, row, "cpu_milli", positive=True)
        mem = _cell_int(p, line, row, "memory_mib", positive=True)
        gpus = _cell_int(p, line, row, "gpu", positive=False)
        model = (row["model"] or "").strip()
        if gpus == 0:
            nodes.append(NodeSpec(sn, "cloud", "cloud", cpu, mem, 1.0, None, 0.0, 1.0))
            continue
        if model not in models:
            raise ConfigError(p, f"model (line {line}, node {sn})",
                              f"unknown GPU model {model!r} (known: {', '.join(sorted(models))})")
        speed, coloc = models[model]
        devices = tuple(GpuDevice(model, "milli", 1) for _ in range(gpus))
        nodes.append(NodeSpec(sn, "gpu", f"gpu-{model}", cpu, mem, 1.0, model, speed, coloc, devices))
    if not nodes:
        raise ConfigError(p, "<file>", "no nodes")
    used = {n.tier for n in nodes}
    for tier in used:
        if tier not in tiers:
            raise ConfigError(p, "<tiers>", f"no {tier!r} tier given for the trace's nodes")
    return ClusterSpec(name=name, tiers={k: v for k, v in tiers.items() if k in used},
                       nodes=tuple(nodes), source=str(p))


def _resolve(rel: str, yaml_path: Path) -> Path | None:
    """Find a trace file: absolute, else cwd, repo root, the folder beside it, the YAML's folder."""
    p = Path(rel).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (Path.cwd(), REPO_ROOT, REPO_ROOT.parent, yaml_path.parent):
        if (base / p).is_file():
            return base / p
    return None


def load_cluster_any(path: str | Path) -> ClusterSpec:
    """Load a cluster YAML: a ``from_trace:`` node list, or an ordinary topology."""
    yaml_path = data_path(path)
    f = load_yaml(yaml_path)
    if not f.has("from_trace"):
        return load_cluster(yaml_path)
    f.check_keys({"name", "from_trace"})
    t = f.section("from_trace")
    t.check_keys({"node_list", "tiers_from"})
    rel = t.str("node_list")
    node_list = _resolve(rel, yaml_path)
    if node_list is None:
        raise t.error("node_list", f"no such file {rel!r} (looked in the current directory, "
                                   f"{REPO_ROOT}, {REPO_ROOT.parent} and {yaml_path.parent})")
    tiers = None
    if t.has("tiers_from"):
        tiers_file = yaml_path.parent / t.str("tiers_from")
        if not tiers_file.is_file():
            raise t.error("tiers_from", f"no such file {tiers_file}")
        tiers = default_tiers(tiers_file)
    spec = load_alibaba_nodes(node_list, name=f.str("name", yaml_path.stem), tiers=tiers)
    return ClusterSpec(name=spec.name, tiers=spec.tiers, nodes=spec.nodes, source=str(yaml_path))
