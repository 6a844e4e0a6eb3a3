"""Shared test fixtures: the repository paths, the local cluster, and the shared traces."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cluster.topology import ClusterSpec, load_cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
LOCAL_YAML = CONFIGS / "cluster" / "local.yaml"
#: ../shared/traces beside the checkout (see DESIGN.md "Data in ../shared/traces").
TRACES = REPO_ROOT.parent / "shared" / "traces"

_LOCAL_DATA = yaml.safe_load(LOCAL_YAML.read_text())


@pytest.fixture(scope="session")
def local_spec() -> ClusterSpec:
    """configs/cluster/local.yaml, loaded once (ClusterSpec is frozen)."""
    return load_cluster(LOCAL_YAML)


@pytest.fixture
def local_data() -> dict:
    """A fresh, mutable copy of local.yaml's mapping, to mutate into bad configs."""
    return copy.deepcopy(_LOCAL_DATA)


@pytest.fixture(scope="session")
def traces() -> Path:
    """The shared trace folder; skips the test when it is not beside the checkout."""
    if not TRACES.is_dir():
        pytest.skip(f"shared traces not present at {TRACES}")
    return TRACES


def alibaba_trace(name: str) -> Path:
    """A file of the Alibaba v2023 trace; skips the test when it is not present."""
    p = TRACES / "alibaba_gpu_v2023" / name
    if not p.is_file():
        pytest.skip(f"trace {p} not present")
    return p


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    """Write a small CSV (``header`` ends with a newline) for loader tests."""
    path.write_text(header + "".join(r + "\n" for r in rows))
    return path


def assert_placed_feasibly(spec: ClusterSpec, tasks, records) -> None:
    """Every task succeeded, each on a node that can host it (a share exists for it there)."""
    from cluster.state import ClusterState, share_for

    assert (records["status"] == "succeeded").all()
    names = {n.name: i for i, n in enumerate(spec.nodes)}
    state = ClusterState.from_spec(spec)
    by_id = {t.id: t for t in tasks}
    for tid, node in zip(records["task_id"], records["node"]):
        assert share_for(state, names[node], by_id[tid]) is not None
