"""The candidates a node-level policy scores on a big cluster: what the prefilter keeps."""
import numpy as np
import pytest

from cluster import booking
from cluster.state import CPU_SHARE, ClusterState
from cluster.variants import scale_cluster
from scheduler.candidates import PREFILTERS, candidates, prefilter
from scheduler.policy import FeasibilityCache
from scheduler.task import make_task


@pytest.fixture()
def big(local_spec):
    return scale_cluster(local_spec, 4)  # 24 nodes: 8 edge, 8 cloud, 4 MIG, 4 time-sliced


def _names(state, nodes):
    return [state.spec.nodes[i].name for i in nodes.tolist()]


def test_mixed_keeps_the_fastest_and_the_tightest_fit_that_spreading_alone_drops(big):
    """A CPU task on 24 nodes, 3 kept: spreading keeps the three emptiest (the first edge boxes, slow);
    the mixed rule keeps one of those, the fastest node and the most loaded node where it still fits
    (a slow edge box here, so the fastest pick is its own)."""
    state = ClusterState.from_spec(big)
    busy = [i for i, n in enumerate(big.nodes) if n.name == "edge-2-copy3"][0]
    filler = make_task({"id": "filler", "cpu_milli": 1000, "mem_mib": 512})
    booking.start(state, busy, filler, CPU_SHARE, 0.0, 0.0)
    task = make_task({"id": "cpu", "cpu_milli": 500, "mem_mib": 512})
    feas = FeasibilityCache()

    spread = candidates(feas, task, state, 3, "spread")[0]
    assert _names(state, spread) == ["edge-1", "edge-1-copy1", "edge-1-copy2"]
    mixed, _, fits = candidates(feas, task, state, 3, "mixed")
    assert fits.all() and len(mixed) == 3
    names = _names(state, mixed)
    assert "edge-1" in names and "edge-2-copy3" in names  # the emptiest, and the tightest fit
    fastest = max(n.cpu_speed for n in big.nodes)
    assert [big.nodes[i].cpu_speed for i in mixed.tolist()].count(fastest) == 1  # and a node as fast as any
    assert big.nodes[mixed[-1]].cpu_speed == fastest > big.nodes[busy].cpu_speed


def test_nodes_where_the_task_waits_come_last_and_small_sets_are_kept_whole(big):
    state = ClusterState.from_spec(big)
    task = make_task({"id": "cpu", "cpu_milli": 500, "mem_mib": 512})
    nodes = np.arange(len(big.nodes))
    shares = [CPU_SHARE] * len(nodes)
    fits = np.ones(len(nodes), dtype=bool)
    fits[6:] = False
    for rule in PREFILTERS:
        kept, _, kfits = prefilter(state, nodes, shares, fits, 6, rule)
        assert kept.tolist() == [0, 1, 2, 3, 4, 5] and kfits.all()
        assert prefilter(state, nodes[:5], shares[:5], fits[:5], 6, rule)[0].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="prefilter rule 'best'"):
        prefilter(state, nodes, shares, fits, 6, "best")


def test_the_packing_pick_is_a_busy_node_where_the_task_starts_now_not_one_with_a_queue(big):
    """A node that fits the task but has a queue would make it wait (FIFO): the packing order keeps the
    most utilised node where it starts at once; a queue is not load to pack onto."""
    state = ClusterState.from_spec(big)
    name = {n.name: i for i, n in enumerate(big.nodes)}
    packed, queued = name["edge-2-copy3"], name["edge-2-copy2"]
    booking.start(state, packed, make_task({"id": "f1", "cpu_milli": 2000, "mem_mib": 512}), CPU_SHARE, 0.0, 0.0)
    booking.start(state, queued, make_task({"id": "r", "cpu_milli": 2000, "mem_mib": 512}), CPU_SHARE, 0.0, 0.0)
    booking.start_or_queue(state, queued, make_task({"id": "q", "cpu_milli": 4000, "mem_mib": 512}), CPU_SHARE,
                           0.0, 0.0)  # waits for the whole node: the task below fits there, but behind it
    assert int(state.queue_len[queued]) == 1
    task = make_task({"id": "cpu", "cpu_milli": 500, "mem_mib": 512})
    nodes, shares, fits = candidates(FeasibilityCache(), task, state, 3, "mixed")
    assert packed in nodes.tolist() and queued not in nodes.tolist()
