"""The live state: Ray nodes matched to topology nodes, dead or drifted nodes out of policies' reach."""
from __future__ import annotations

import dataclasses

import pytest

from cluster.live_state import LiveState, RayNode
from cluster.ray_resources import LABEL_NODE, node_resources
from cluster.state import share_for
from scheduler.policy import make_policy
from scheduler.task import make_task


def ray_nodes(spec, *, labels: bool = True) -> list[RayNode]:
    out = []
    for i, nd in enumerate(spec.nodes):
        res = node_resources(spec, i)
        lab = dict(res.labels) if labels else {k: v for k, v in res.labels.items() if k != LABEL_NODE}
        out.append(RayNode(f"{i:02d}" + "ab" * 27, True, lab, res.ray_totals(), {"CPU": 1.0}))
    return out


class Reader:
    """A stand-in for Ray's node table that a test can change."""

    def __init__(self, nodes: list[RayNode]) -> None:
        self.nodes = nodes
        self.calls = 0

    def __call__(self, with_available: bool = False) -> list[RayNode]:
        self.calls += 1
        return list(self.nodes)


def test_all_alive_nodes_are_usable_and_keep_the_spec(local_spec) -> None:
    live = LiveState(local_spec, reader=Reader(ray_nodes(local_spec)))
    live.refresh()
    assert all(live.usable) and all(p == "" for p in live.problems)
    assert live.state.spec is local_spec
    assert live.node_id(live.index("edge-2")) == "01" + "ab" * 27


def test_a_dead_node_becomes_a_tombstone_policies_cannot_pick(local_spec) -> None:
    nodes = ray_nodes(local_spec)
    reader = Reader(nodes)
    live = LiveState(local_spec, reader=reader)
    live.refresh()
    i = live.index("edge-1")
    reader.nodes = [dataclasses.replace(n, alive=False) if n.labels[LABEL_NODE] == "edge-1" else n for n in nodes]
    lost = live.refresh()
    assert lost == [i] and not live.usable[i] and "not running" in live.problems[i]
    st = live.state
    assert st.spec is not local_spec and len(st.spec.nodes) == len(local_spec.nodes)  # indices stable
    task = make_task({"id": "t", "cpu_milli": 500, "mem_mib": 256}, infer=False)
    assert share_for(st, i, task) is None
    policy = make_policy("cheapest-feasible")  # would pick an edge node: the cheapest tier
    for _ in range(5):
        d = policy.select(task, live.snapshot())
        assert d.placed and d.node != i
    # it comes back (a restarted raylet has a new node id)
    reader.nodes = nodes
    assert live.refresh() == [] and live.usable[i] and live.state.spec.nodes[i] == local_spec.nodes[i]


def test_missing_node_and_resource_drift_are_reported(local_spec) -> None:
    nodes = ray_nodes(local_spec)
    drifted = [n for n in nodes if n.labels[LABEL_NODE] != "cloud-2"]
    k = next(j for j, n in enumerate(drifted) if n.labels[LABEL_NODE] == "gpu-ts-1")
    drifted[k] = dataclasses.replace(drifted[k], total={**drifted[k].total, "GPU": 1.0})
    live = LiveState(local_spec, reader=Reader(drifted))
    live.refresh()
    assert not live.usable[live.index("cloud-2")] and not live.alive[live.index("cloud-2")]
    ts = live.index("gpu-ts-1")
    assert live.alive[ts] and not live.usable[ts] and "GPU=1" in live.problems[ts]


def test_mark_dead_stops_using_a_node_before_the_gcs_agrees(local_spec) -> None:
    live = LiveState(local_spec, reader=Reader(ray_nodes(local_spec)))
    live.refresh()
    i = live.index("cloud-1")
    live.mark_dead(live.node_id(i))
    assert not live.usable[i]
    live.refresh()  # Ray still says alive, same node id: stays out
    assert not live.usable[i]


def test_kuberay_pods_without_node_names_are_matched_by_pool(local_spec) -> None:
    live = LiveState(local_spec, reader=Reader(ray_nodes(local_spec, labels=False)))
    live.refresh()
    assert all(live.usable)
    assert len(set(live.node_ids)) == len(local_spec.nodes)


def test_snapshot_is_cached_and_nodes_view(local_spec) -> None:
    reader = Reader(ray_nodes(local_spec))
    live = LiveState(local_spec, reader=reader, refresh_s=60)
    for _ in range(50):
        live.snapshot()
    assert reader.calls == 1
    views = {v.name: v for v in live.nodes()}
    mig = views["gpu-mig-1"]
    assert mig.alive and mig.usable and mig.node_class == "gpu-mig" and mig.mig_free["1g.10gb"] == 3
    assert views["edge-1"].network_ms == (50.0, 150.0) and views["edge-1"].ray_available == {"CPU": 1.0}


@pytest.mark.parametrize("bad", ["nope"])
def test_index_of_unknown_node_raises(local_spec, bad) -> None:
    with pytest.raises(KeyError):
        LiveState(local_spec, reader=Reader([])).index(bad)


def test_standby_slots_are_not_running_until_started_and_an_unknown_drain_is_refused(tmp_path) -> None:
    """A pool that may scale (``scaling``) is held with slots: not running, said so, until a raylet of
    that name joins; the node indices never change."""
    import yaml

    from cluster.topology import load_cluster, with_standby
    from tests.conftest import CONFIGS

    doc = yaml.safe_load((CONFIGS / "cluster" / "test_small.yaml").read_text())
    doc["scaling"] = {"cloud": {"max_nodes": 3}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    spec = with_standby(load_cluster(tmp_path / "c.yaml"))
    assert [n.name for n in spec.nodes][1:4] == ["cloud-1", "cloud-add1", "cloud-add2"]
    reader = Reader([n for n in ray_nodes(spec) if n.labels[LABEL_NODE] not in spec.standby])
    live = LiveState(spec, reader=reader)
    live.refresh()
    j = live.index("cloud-add1")
    assert not live.usable[j] and live.problems[j].startswith("standby: not started")
    reader.nodes = ray_nodes(spec)[:3] + reader.nodes[2:]  # cloud-add1's raylet joined
    live.refresh()
    assert live.usable[j] and live.index("cloud-add1") == j
    views = {v.name: v for v in live.nodes()}
    assert views["cloud-add1"].standby and not views["cloud-1"].standby and not views["cloud-add1"].draining
    with pytest.raises(KeyError, match="cloud-9"):
        live.set_draining({"cloud-add1", "cloud-9"})
    assert live.draining == frozenset()
