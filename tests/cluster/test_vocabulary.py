"""The shared words: every share kind written one exact way, statuses in life-cycle order."""
from __future__ import annotations

import pytest

from cluster.state import CPU_SHARE, PROFILE_NAMES, ClusterState, share_for
from cluster.topology import load_cluster
from cluster.vocabulary import FINAL, SHARE_KINDS, STATUSES, share_text
from scheduler.task import make_task
from tests.conftest import CONFIGS


def _read(text: str):
    """The share a text names, read back as a user of a records CSV or the history would."""
    kind, _, amount = text.partition(":")
    return (kind, 0) if kind == "cpu" else (kind, amount if kind == "mig" else int(amount))


#: every share a node can give: CPU only, each GPU milli, whole counts, each MIG profile
EVERY_SHARE = [CPU_SHARE, *(("slice", m) for m in range(1, 1001)), *(("whole", k) for k in range(1, 9)),
               *(("mig", p) for p in PROFILE_NAMES)]


@pytest.mark.parametrize("share, text", [(("cpu", 0), "cpu"), (("slice", 250), "slice:250"),
                                         (("slice", 1000), "slice:1000"), (("whole", 2), "whole:2"),
                                         (("mig", "1g.10gb"), "mig:1g.10gb")])
def test_each_share_kind_has_one_exact_text(share, text) -> None:
    assert share_text(share) == text
    assert share_text(share).partition(":")[0] in SHARE_KINDS


def test_share_text_round_trips_for_every_share_and_kind() -> None:
    texts = [share_text(s) for s in EVERY_SHARE]
    assert [_read(t) for t in texts] == EVERY_SHARE
    assert {t.partition(":")[0] for t in texts} == set(SHARE_KINDS)


def test_no_share_has_no_text() -> None:
    assert share_text(None) is None


@pytest.mark.parametrize("config", ["local.yaml", "test_small.yaml"])
def test_shares_the_shipped_clusters_give_read_back_exactly(config) -> None:
    state = ClusterState.from_spec(load_cluster(CONFIGS / "cluster" / config))
    shapes = [{}, {"gpu_milli": 100}, {"gpu_milli": 250}, {"gpu_milli": 300}, {"gpu_milli": 700},
              {"gpu_count": 1}, *({"mig_profile": p} for p in PROFILE_NAMES)]
    seen = set()
    for kw in shapes:
        t = make_task({"id": "t", "cpu_milli": 100, "mem_mib": 64, **kw}, infer=False)
        for i in range(len(state.spec.nodes)):
            share = share_for(state, i, t)
            if share is not None:
                assert _read(share_text(share)) == share
                seen.add(share[0])
    assert {"cpu", "slice"} <= seen


def test_statuses_follow_the_life_cycle_and_end_in_the_final_ones() -> None:
    assert STATUSES[:3] == ("accepted", "placed", "running")
    assert STATUSES[3:] == FINAL == ("succeeded", "failed", "rejected", "cancelled")
