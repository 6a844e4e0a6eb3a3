"""Resource accounting on the local cluster: never over-allocate, MIG instances held once, exact release."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from cluster.state import (CPU_SHARE, PROFILE_INDEX, Allocation, ClusterState, allocate, check_invariants,
                           feasible_nodes, fits_now, release, share_for)
from cluster.topology import load_cluster
from scheduler.task import Task, make_task

EDGE, CLOUD, MIG, TS = 0, 2, 4, 5  # node indices in local.yaml


def task(**kw) -> Task:
    return make_task({"id": "t", "cpu_milli": 500, "mem_mib": 512, **kw}, infer=False)


#: Feasible task shapes on local.yaml: CPU only, slices, whole GPUs and MIG profiles.
SHAPES: list[Task] = [
    task(),
    task(cpu_milli=4000, mem_mib=8192),  # fills an edge node
    task(cpu_milli=0, mem_mib=0, gpu_milli=100),  # GPU only
    task(gpu_milli=250),
    task(gpu_milli=300),  # 500 on the time-sliced node, 2g.20gb on the MIG node
    task(gpu_milli=500, cpu_milli=4000, mem_mib=16384),
    task(gpu_milli=750),
    task(gpu_count=1, cpu_milli=8000, mem_mib=32768),
    task(gpu_count=2),
    task(mig_profile="1g.10gb"),
    task(mig_profile="2g.20gb"),
    task(mig_profile="3g.40gb"),
    task(mig_profile="4g.40gb"),
    task(gpu_milli=250, gpu_models=("V100",)),
    task(gpu_milli=250, gpu_models=("A100",)),
    task(cpu_milli=30000, mem_mib=200 * 1024),  # only the GPU nodes have that much
]


def snapshot(state: ClusterState) -> tuple:
    """Everything allocate/release may change, in a comparable form (free MIG slots as a set)."""
    return (state.cpu_free.tolist(), state.mem_free.tolist(), state.gpu_free.tolist(),
            state.gpu_tasks.tolist(), state.mig_free.tolist(), state.mig_used.tolist(),
            state.running.tolist(),
            [{p: sorted(s) for p, s in node.items()} for node in state.mig_slots])


def check_accounting(state: ClusterState, live: list[Allocation]) -> None:
    """Free capacity plus what live allocations hold is exactly the node's capacity."""
    check_invariants(state)
    held_mig = [(a.node, *a.mig[:2]) for a in live if a.mig is not None]
    assert len(held_mig) == len(set(held_mig)), "a MIG instance is held by two tasks"
    for i, nd in enumerate(state.spec.nodes):
        mine = [a for a in live if a.node == i]
        assert state.cpu_free[i] + sum(a.cpu for a in mine) == nd.cpu_milli
        assert state.mem_free[i] + sum(a.mem for a in mine) == nd.mem_mib
        assert state.running[i] == len(mine)
        free_slots = {s for lst in state.mig_slots[i].values() for s in lst}
        for d, dev in enumerate(nd.devices):
            on_dev = [m for a in mine for dd, m in a.devices if dd == d]
            if dev.sharing == "mig":
                held = {(a.mig[0], a.mig[1]) for a in mine if a.mig is not None and a.mig[0] == d}
                layout = {(d, s) for s in range(len(dev.mig_instances))}
                assert held.isdisjoint(free_slots), "a held MIG instance is also listed free"
                assert held | {s for s in free_slots if s[0] == d} == layout
            else:
                assert state.gpu_free[i, d] + sum(on_dev) == 1000
                assert state.gpu_tasks[i, d] == len(on_dev)
        for prof, k in PROFILE_INDEX.items():
            assert state.mig_free[i, k] == len(state.mig_slots[i].get(prof, []))


def test_shapes_are_feasible_somewhere(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    for t in SHAPES:
        assert feasible_nodes(state, t), t


OPS = st.lists(st.tuples(st.booleans(), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6)),
               min_size=1, max_size=80)


@settings(max_examples=80, deadline=None)
@given(ops=OPS)
def test_random_allocate_release_never_over_allocates(local_spec, ops) -> None:
    state = ClusterState.from_spec(local_spec)
    initial = snapshot(state)
    live: list[Allocation] = []
    for is_alloc, a, b, c in ops:
        if is_alloc or not live:
            t = SHAPES[a % len(SHAPES)]
            cand = feasible_nodes(state, t)
            i, share, now = cand[b % len(cand)]
            device = None
            if share[0] == "slice" and c % 3 == 0:  # sometimes pin a device (packing policies do)
                device = c % len(local_spec.nodes[i].devices)
            ok = now and (device is None or state.gpu_free[i, device] >= share[1])
            if ok:
                alloc = allocate(state, i, t, share, device)
                assert alloc.share == share and alloc.node == i
                live.append(alloc)
            else:
                before = snapshot(state)
                with pytest.raises(ValueError):
                    allocate(state, i, t, share, device)
                assert snapshot(state) == before, "a refused allocate changed the state"
        else:
            alloc = live.pop(a % len(live))
            release(state, alloc)  # once: booking.finish is the idempotent form (tests/cluster/test_booking.py)
        check_accounting(state, live)
    for alloc in live:
        release(state, alloc)
    assert snapshot(state) == initial
    assert (state.load() == 0).all()


def test_refused_allocate_changes_nothing(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    big = task(cpu_milli=4000, mem_mib=8192)
    allocate(state, EDGE, big, CPU_SHARE)
    before = snapshot(state)
    with pytest.raises(ValueError):
        allocate(state, EDGE, task(), CPU_SHARE)  # the edge node is full
    assert snapshot(state) == before
    # a slice pinned to a device without room
    allocate(state, TS, task(gpu_milli=750), ("slice", 750), device=0)
    before = snapshot(state)
    with pytest.raises(ValueError):
        allocate(state, TS, task(gpu_milli=500), ("slice", 500), device=0)
    assert snapshot(state) == before
    # the last 1g.10gb instances
    for _ in range(3):
        allocate(state, MIG, task(mig_profile="1g.10gb"), ("mig", "1g.10gb"))
    before = snapshot(state)
    with pytest.raises(ValueError):
        allocate(state, MIG, task(mig_profile="1g.10gb"), ("mig", "1g.10gb"))
    assert snapshot(state) == before


def test_mig_instances_are_handed_out_once_each(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    t = task(mig_profile="1g.10gb")
    allocs = [allocate(state, MIG, t, ("mig", "1g.10gb")) for _ in range(3)]  # layout has 2 + 1
    assert len({a.mig[:2] for a in allocs}) == 3
    assert not fits_now(state, MIG, t, ("mig", "1g.10gb"))
    release(state, allocs[1])
    again = allocate(state, MIG, t, ("mig", "1g.10gb"))
    assert again.mig == allocs[1].mig  # the freed instance is the one reused


def test_time_sliced_device_holds_at_most_four_quarters(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    q = task(gpu_milli=250, cpu_milli=100, mem_mib=100)
    allocs = [allocate(state, TS, q, ("slice", 250)) for _ in range(8)]
    assert sorted(d for a in allocs for d, _ in a.devices) == [0] * 4 + [1] * 4
    assert not fits_now(state, TS, q, ("slice", 250))
    assert state.gpu_tasks[TS].tolist() == [4, 4]
    assert state.load()[TS] == 1.0


def test_whole_gpu_needs_an_untouched_device(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    allocate(state, TS, task(gpu_milli=250), ("slice", 250))
    whole = task(gpu_count=1)
    assert fits_now(state, TS, whole, ("whole", 1))  # device 1 is untouched
    allocate(state, TS, whole, ("whole", 1))
    assert not fits_now(state, TS, whole, ("whole", 1))  # device 0 holds a quarter


# ---------------------------------------------------------------- share_for


def test_share_for_cpu_task_on_every_node(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    assert [share_for(state, i, task()) for i in range(6)] == [CPU_SHARE] * 6
    too_big = task(cpu_milli=8000)
    assert [share_for(state, i, too_big) is None for i in range(6)] == [True, True, False, False, False, False]


@pytest.mark.parametrize("milli, share", [(250, ("slice", 250)), (1, ("slice", 250)), (300, ("slice", 500)),
                                          (500, ("slice", 500)), (501, ("slice", 750)), (999, ("slice", 1000))])
def test_share_for_rounds_fractions_up_to_time_slices(local_spec, milli: int, share) -> None:
    state = ClusterState.from_spec(local_spec)
    assert share_for(state, TS, task(gpu_milli=milli)) == share


@pytest.mark.parametrize("milli, profile", [(100, "1g.10gb"), (143, "2g.20gb"), (250, "2g.20gb"),
                                            (300, "3g.40gb"), (500, "4g.40gb"), (571, "4g.40gb")])
def test_share_for_fraction_on_mig_takes_smallest_instance_that_fits(local_spec, milli: int, profile: str) -> None:
    state = ClusterState.from_spec(local_spec)
    assert share_for(state, MIG, task(gpu_milli=milli)) == ("mig", profile)


def test_share_for_fraction_larger_than_any_local_mig_instance(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    assert share_for(state, MIG, task(gpu_milli=600)) is None  # 4g is 4/7 < 0.6; no 7g in local.yaml


def test_share_for_whole_gpu(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    assert share_for(state, TS, task(gpu_count=1)) == ("whole", 1)
    assert share_for(state, TS, task(gpu_count=2)) == ("whole", 2)
    assert share_for(state, TS, task(gpu_count=3)) is None
    assert share_for(state, MIG, task(gpu_count=1)) is None  # no 7g.80gb instance in local.yaml
    for i in (EDGE, CLOUD):
        assert share_for(state, i, task(gpu_count=1)) is None
        assert share_for(state, i, task(gpu_milli=250)) is None


def test_share_for_mig_profile(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    assert share_for(state, MIG, task(mig_profile="3g.40gb")) == ("mig", "3g.40gb")
    assert share_for(state, MIG, task(mig_profile="7g.80gb")) is None
    assert share_for(state, TS, task(mig_profile="1g.10gb")) is None


def test_whole_gpu_on_mig_node_only_via_7g(tmp_path: Path, local_data: dict) -> None:
    data = local_data
    data["nodes"][MIG]["gpus"]["mig_layout"][1] = ["7g.80gb"]
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    state = ClusterState.from_spec(load_cluster(p))
    assert share_for(state, MIG, task(gpu_count=1)) == ("mig", "7g.80gb")
    assert share_for(state, MIG, task(gpu_count=2)) is None
    assert share_for(state, MIG, task(gpu_milli=600)) == ("mig", "7g.80gb")
    alloc = allocate(state, MIG, task(gpu_count=1), ("mig", "7g.80gb"))
    assert alloc.mig[0] == 1 and alloc.gpu_fraction == 1.0


def test_gpu_model_constraint_filters_nodes(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)

    def nodes(**kw) -> list[int]:
        return [i for i, _, _ in feasible_nodes(state, task(gpu_milli=250, **kw))]

    assert nodes() == [MIG, TS]
    assert nodes(gpu_models=("V100",)) == [TS]
    assert nodes(gpu_models=("A100",)) == [MIG]
    assert nodes(gpu_models=("A100", "V100")) == [MIG, TS]
    assert nodes(gpu_models=("H100",)) == []


def test_load_reflects_the_busiest_resource(local_spec) -> None:
    state = ClusterState.from_spec(local_spec)
    assert (state.load() == 0).all()
    allocate(state, CLOUD, task(cpu_milli=4000, mem_mib=32 * 1024), CPU_SHARE)
    assert state.load()[CLOUD] == pytest.approx(0.5)  # memory: 32 of 64 GB
    allocate(state, MIG, task(mig_profile="3g.40gb"), ("mig", "3g.40gb"))
    assert state.load()[MIG] == pytest.approx(3 / 14, abs=1e-3)  # 3 of 14 compute slices
    assert np.count_nonzero(state.load()) == 2
