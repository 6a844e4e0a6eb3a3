"""Random clusters (``rand:N``): drawn from a cluster's pools, valid, reproducible, and run at a load for their size."""
from __future__ import annotations

from collections import Counter

import pytest

from cluster.state import ClusterState
from cluster.topology import validate_mig_layout
from cluster.variants import SIZE_SCALES, expand_variants, parse_variant, random_cluster, variant


def test_random_clusters_are_valid_reproducible_and_varied(local_spec) -> None:
    own = {n.name: n for n in local_spec.nodes}
    shapes = set()
    for seed in range(40):
        spec, factor = random_cluster(local_spec, seed)
        again, f2 = random_cluster(local_spec, seed)
        assert spec == again and factor == f2  # the name rand:N always means the same cluster
        assert factor > 0 and spec.name == f"local-rand{seed}"
        names = [n.name for n in spec.nodes]
        assert len(set(names)) == len(names)
        # a GPU node and a CPU-only node stay: no kind of task is shut out by the draw
        assert any(n.devices for n in spec.nodes) and any(not n.devices for n in spec.nodes)
        counts = Counter(n.pool for n in spec.nodes)
        assert set(spec.pools) == set(counts)
        for pool, c in counts.items():
            assert c <= 2 * sum(n.pool == pool for n in local_spec.nodes)
        for n in spec.nodes:
            base = own[n.name.rsplit("-r", 1)[0]]
            assert n.pool == base.pool and n.tier == base.tier
            assert any(n.cpu_milli == max(1000, round(base.cpu_milli * s)) for s in SIZE_SCALES)
            if n.devices:
                assert 1 <= len(n.devices) <= len(base.devices) + 1
                assert {d.sharing for d in n.devices} == {base.devices[0].sharing}
                for d in n.devices:
                    if d.sharing == "mig":
                        assert validate_mig_layout(list(d.mig_instances)) is None
        ClusterState.from_spec(spec)  # the simulator takes it as it is
        shapes.add(tuple(sorted(counts.items())))
    assert len(shapes) > 10  # pool mixes differ from draw to draw


def test_rand_variants_by_name_and_range(local_spec) -> None:
    assert variant(local_spec, "rand:7") == random_cluster(local_spec, 7)
    assert parse_variant("rand:7") == (1, ())
    assert expand_variants(["x1", "rand:3-5", "no:gpu-mig"]) == ["x1", "rand:3", "rand:4", "rand:5", "no:gpu-mig"]
    for bad in ("rand:", "rand:x", "rand:3-5"):
        with pytest.raises(ValueError, match="rand:N"):
            parse_variant(bad)
    with pytest.raises(ValueError, match="A <= B"):
        expand_variants(["rand:5-3"])


def test_a_pool_mixing_gpu_and_cpu_only_nodes_still_draws(local_spec) -> None:
    """Both kinds of node are looked for among the nodes drawn, not by a pool's first node."""
    from dataclasses import replace

    nodes = sorted(local_spec.nodes, key=lambda n: not n.devices)  # GPU nodes first, one pool
    one_pool = replace(local_spec, nodes=tuple(replace(n, pool="all") for n in nodes), pools=("all",))
    for seed in range(10):
        spec, _ = random_cluster(one_pool, seed)
        assert any(n.devices for n in spec.nodes) and any(not n.devices for n in spec.nodes)
