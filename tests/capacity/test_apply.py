"""Applying a recommendation: which raylets start and which drain, refused changes named, and the
order the router sees (drain, wait for idle, stop, end the drain). The router here is a stand-in that
keeps a node table; the real router and raylets are driven in
tests/integration/test_serve_router.py::test_capacity_apply_scales_a_pool_up_and_down_under_load."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from capacity import apply as ap
from capacity.recommend import build, cluster_yaml, current_shape
from cluster.topology import load_cluster, with_standby
from tests.conftest import LOCAL_YAML

ALL = {"edge-1", "edge-2", "cloud-1", "cloud-2", "gpu-mig-1", "gpu-ts-1"}


@pytest.fixture
def slots(tmp_path: Path):
    doc = yaml.safe_load(LOCAL_YAML.read_text())
    doc["scaling"] = {"cloud": {"max_nodes": 4}, "gpu-mig": {"max_nodes": 2}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    return with_standby(load_cluster(tmp_path / "c.yaml"))


def test_a_pool_grows_into_its_slots_and_shrinks_from_its_last_node(slots) -> None:
    p = ap.plan(slots, ALL, {"cloud": 4, "edge": 1})
    assert p.start == ["cloud-add1", "cloud-add2"] and p.drain == ["edge-2"]
    assert p.before == {"cloud": 2, "edge": 2} and p.after == {"cloud": 4, "edge": 1}
    assert p.cost_after > p.cost_before > 0
    p = ap.plan(slots, ALL | {"cloud-add1", "cloud-add2"}, {"cloud": 1})
    assert p.drain == ["cloud-add2", "cloud-add1", "cloud-2"] and not p.start  # the slots leave first
    assert ap.plan(slots, ALL - {"cloud-1"}, {"cloud": 2}).start == ["cloud-1"]  # its own node before a slot
    assert ap.plan(slots, ALL, {"cloud": 2}).empty


@pytest.mark.parametrize("target, says", [
    ({"cloud": 5}, "scaling.cloud.max_nodes"),
    ({"gpu-big": 1}, "no such pool"),
    ({"edge": 0, "cloud": 0, "gpu-mig": 0, "gpu-ts": 0}, "keep at least one"),
])
def test_what_cannot_be_applied_is_refused_by_name(slots, target, says) -> None:
    with pytest.raises(ap.ApplyError, match=says):
        ap.plan(slots, ALL, target)


def test_a_recommendation_gives_counts_and_a_layout_change_is_refused(slots, tmp_path: Path) -> None:
    spec = load_cluster(LOCAL_YAML)
    grown = build(spec, current_shape(spec).with_count("cloud", 3).with_count("edge", 1))
    (tmp_path / "rec.yaml").write_text(cluster_yaml(grown))
    assert ap.target_counts(load_cluster(tmp_path / "rec.yaml"), slots) == {
        "edge": 1, "cloud": 3, "gpu-mig": 1, "gpu-ts": 1}
    other = build(spec, current_shape(spec).with_layout("gpu-mig", (("7g.80gb",), ("7g.80gb",))))
    with pytest.raises(ap.LayoutChange, match="pool gpu-mig: .*MIG layout"):
        ap.target_counts(other, slots)


def test_with_the_layouts_kept_the_counts_are_those_of_the_search_s_best_with_them(tmp_path: Path) -> None:
    import json

    doc = {"recommended_mig_layouts_as_now": {"nodes_edge": 1, "nodes_cloud": 0, "nodes_gpu-mig": 3, "nodes_gpu-ts": 0,
                                              "layout_gpu-mig": "3g.40gb,2g.20gb,1g.10gb,1g.10gb", "gpus": 6}}
    (tmp_path / "recommendation.json").write_text(json.dumps(doc))
    assert ap.counts_with_layouts_as_now(tmp_path / "recommendation.json") == {
        "edge": 1, "cloud": 0, "gpu-mig": 3, "gpu-ts": 0}
    (tmp_path / "recommendation.json").write_text(json.dumps({"recommended_mig_layouts_as_now": None}))
    assert ap.counts_with_layouts_as_now(tmp_path / "recommendation.json") is None  # the recommendation kept them
    (tmp_path / "recommendation.json").write_text(json.dumps({"recommended_mig_layouts_as_now": {"nodes_edge": "x"}}))
    with pytest.raises(ap.ApplyError, match="no node count per pool"):
        ap.counts_with_layouts_as_now(tmp_path / "recommendation.json")
    (tmp_path / "recommendation.json").write_text("{}")
    with pytest.raises(ap.ApplyError, match="no recommended_mig_layouts_as_now"):
        ap.counts_with_layouts_as_now(tmp_path / "recommendation.json")
    with pytest.raises(ap.ApplyError, match="cannot be read"):
        ap.counts_with_layouts_as_now(tmp_path / "missing.json")


class FakeRouter:
    """The router's node table and drain call; busy nodes finish after a few polls; ``down`` polls fail (its
    replica restarting) and ``forget`` makes it drop its drains once (a restarted router has none)."""

    def __init__(self, slots, running: set[str], busy_polls: int = 2) -> None:
        self.nodes = {n.name: {"name": n.name, "alive": n.name in running, "usable": n.name in running,
                               "draining": False, "running": 0, "queued": 0} for n in slots.nodes}
        self.calls: list[str] = []
        self.busy_polls = busy_polls
        self.down = 0
        self.forget = False
        self.forced_stops = 0

    def cluster(self) -> dict:
        if self.down:
            self.down -= 1
            raise ConnectionError("the router at http://test is not answering")
        if self.forget and any(v["draining"] for v in self.nodes.values()):
            self.forget = False
            self.set_draining([], record=False)
        for v in self.nodes.values():
            if v["draining"] and v["running"]:
                self.busy_polls -= 1
                if self.busy_polls <= 0:
                    v["running"] = 0
        return {"nodes": [dict(v) for v in self.nodes.values()]}

    def set_draining(self, nodes: list[str], record: bool = True) -> dict:
        if record:
            self.calls.append(f"drain {','.join(nodes) or '-'}")
        for name, v in self.nodes.items():
            v["draining"] = name in nodes
            v["usable"] = v["alive"] and not v["draining"]
        return {"nodes": list(self.nodes.values())}

    def start(self, names: list[str]) -> list[str]:
        self.calls.append(f"start {','.join(names)}")
        for n in names:
            self.nodes[n].update(alive=True, usable=not self.nodes[n]["draining"])
        return names

    def stop(self, name: str) -> bool:
        if self.nodes[name]["running"]:
            self.forced_stops += 1
        self.calls.append(f"stop {name}")
        self.nodes[name].update(alive=False, usable=False, running=0)
        return True


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(ap, "POLL_S", 0.0)


def test_a_node_leaves_only_after_the_router_drained_it(slots, fast) -> None:
    router = FakeRouter(slots, ALL | {"cloud-add1"})
    router.nodes["edge-2"]["running"] = 3
    p = ap.plan(slots, ALL | {"cloud-add1"}, {"cloud": 4, "edge": 1})
    out = ap.apply(p, start_nodes=router.start, stop_node=router.stop, router=router)
    assert router.calls == ["drain -", "start cloud-add2", "drain edge-2", "stop edge-2", "drain -"]
    assert out.started == ["cloud-add2"] and out.stopped == ["edge-2"] and router.forced_stops == 0


def test_a_drain_that_does_not_finish_ends_and_the_node_stays_unless_forced(slots, fast) -> None:
    p = ap.plan(slots, ALL, {"edge": 1})
    router = FakeRouter(slots, ALL, busy_polls=10**9)
    router.nodes["edge-2"]["running"] = 1
    with pytest.raises(TimeoutError, match="edge-2 .1 running"):
        ap.apply(p, start_nodes=router.start, stop_node=router.stop, router=router, drain_timeout_s=0.01)
    assert router.calls == ["drain -", "drain edge-2", "drain -"] and router.nodes["edge-2"]["usable"]
    router.calls.clear()
    said: list[str] = []
    ap.apply(p, start_nodes=router.start, stop_node=router.stop, router=router, drain_timeout_s=0.01, force=True,
             progress=said.append)
    assert router.calls == ["drain -", "drain edge-2", "stop edge-2", "drain -"] and router.forced_stops == 1
    assert any("stopping them anyway (--force)" in m for m in said)
    with pytest.raises(ap.ApplyError, match="router"):
        ap.apply(p, start_nodes=router.start, stop_node=router.stop, router=None)


def test_a_router_that_restarts_mid_drain_is_waited_for_and_drained_again(slots, fast) -> None:
    router = FakeRouter(slots, ALL, busy_polls=3)
    router.nodes["edge-2"]["running"] = 1
    router.down, router.forget = 0, True
    p = ap.plan(slots, ALL, {"edge": 1})
    calls = []
    orig = router.cluster

    def flaky() -> dict:  # after the drain is sent: two polls unanswered, then a router without the drain
        calls.append(1)
        if len(calls) == 2:
            router.down = 2
        return orig()

    router.cluster = flaky
    out = ap.apply(p, start_nodes=router.start, stop_node=router.stop, router=router)
    assert out.stopped == ["edge-2"] and router.forced_stops == 0
    assert router.calls.count("drain edge-2") == 2 and router.calls[-1] == "drain -"


def test_an_interrupted_run_leaves_no_drain_and_the_next_ends_an_old_one(slots, fast) -> None:
    router = FakeRouter(slots, ALL)
    p = ap.plan(slots, ALL, {"edge": 1})

    def broken(name: str) -> bool:
        raise RuntimeError("raylet would not stop")

    with pytest.raises(RuntimeError):
        ap.apply(p, start_nodes=router.start, stop_node=broken, router=router)
    assert not any(v["draining"] for v in router.nodes.values())
    router.set_draining(["cloud-2"])  # as a run killed outright would leave it
    keep = ap.plan(slots, ALL, {"cloud": 2})
    assert keep.empty and ap.stale_drains(router, keep) == ["cloud-2"]
    ap.apply(keep, start_nodes=router.start, stop_node=router.stop, router=router)
    assert router.nodes["cloud-2"]["usable"] and not router.nodes["cloud-2"]["draining"]


def test_a_node_the_router_does_not_know_is_refused_before_anything_changes(slots, fast) -> None:
    router = FakeRouter(slots, ALL)
    del router.nodes["cloud-add1"]  # a router started before the YAML's scaling grew the pool
    with pytest.raises(ap.ApplyError, match="no node cloud-add1: restart it"):
        ap.apply(ap.plan(slots, ALL, {"cloud": 3}), start_nodes=router.start, stop_node=router.stop, router=router)
    assert router.calls == []
