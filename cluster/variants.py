"""Cluster variants for evaluating on clusters a policy never saw: more of every node, or a pool less.

Both work on any loaded :class:`ClusterSpec` (a YAML topology or a trace node list)
and keep what the loader guarantees: at least one node and unique node names (the
tiers stay as loaded; a tier without nodes is valid there too). They raise ``ValueError`` saying what is wrong.
"""
from __future__ import annotations

from dataclasses import replace

from cluster.topology import ClusterSpec


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


def parse_variant(text: str) -> tuple[int, tuple[str, ...]]:
    """``xK`` -> (K, ()); ``no:POOL[+POOL]`` -> (1, pools): a cluster variant as training configs name it."""
    t = text.strip()
    if t.startswith("x") and t[1:].isdigit() and int(t[1:]) >= 1:
        return int(t[1:]), ()
    if t.startswith("no:") and t[3:]:
        return 1, tuple(p for p in t[3:].split("+") if p)
    raise ValueError(f"expected xK (e.g. x2) or no:POOL (e.g. no:gpu-mig), got {text!r}")


def variant(spec: ClusterSpec, text: str) -> tuple[ClusterSpec, int]:
    """The variant ``text`` names (:func:`parse_variant`) of ``spec``, and the factor its load scales by
    (``xK`` holds K times the nodes, so it is run at K times the load)."""
    factor, pools = parse_variant(text)
    scaled = scale_cluster(spec, factor)
    return (drop_pools(scaled, list(pools)) if pools else scaled), factor
