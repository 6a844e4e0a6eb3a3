"""Shared test fixtures: the repository paths, the local cluster, and the shared traces."""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import pytest
import yaml

from cluster.topology import ClusterSpec, load_cluster

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
LOCAL_YAML = CONFIGS / "cluster" / "local.yaml"
#: ../shared/traces beside the checkout (see DESIGN.md "Data in ../shared/traces").
TRACES = REPO_ROOT.parent / "shared" / "traces"
#: where the browser tests leave their screenshots of the Streamlit view
SCREENSHOTS = Path(os.environ.get("ORCH_SCREENSHOTS", REPO_ROOT / "results" / "screenshots"))
_STARTED = time.time()

_LOCAL_DATA = yaml.safe_load(LOCAL_YAML.read_text())

#: Tests that start Ray processes: an emulated Ray cluster (the integration package's, the demo's),
#: or training's private local instance (``rl_env.ray_local``, which joins no cluster). Under
#: pytest-xdist (`make test` runs two workers with ``--dist loadgroup``) they form one unit of work,
#: which one worker runs in collection order, so two clusters are never up at once, the integration
#: package's cluster is down before the demo starts its own, and training's local Ray never starts
#: beside a cluster's; the other worker runs the rest. Running the demo's tests beside the
#: integration package's instead gains nothing: the suite is bound by CPU, so every Ray start
#: only slows (measured in a clean-clone `.ci/run`: no faster, the demo's start 33% slower).
RAY_CLUSTER_TESTS = ("tests/integration/", "tests/orchestrator/test_demo.py", "tests/rl_env/test_train_tiny.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` (or plain ``-n``) with the Ray-cluster tests as one group, each other test its own.

    Grouped by path here rather than by ``xdist_group`` marks: pytest-xdist 3.8 writes the mark's
    group into ``Item._nodeid``, which pytest 9 no longer reads, so the marks group nothing.
    xdist hands out the largest group first, so the longest chain of tests starts at once. Should a
    worker die mid-group, xdist gives the rest of it to the other worker while the dead one's cluster
    may still run: two clusters at once, for that rare run only.
    """
    if config.getvalue("dist") not in ("load", "loadgroup"):  # other modes are the caller's explicit choice
        return None
    from xdist.scheduler import LoadScopeScheduling

    class RayClusterTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "ray-cluster" if nodeid.startswith(RAY_CLUSTER_TESTS) else nodeid

    return RayClusterTestsTogether(config, log)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """The screenshots this run took, listed at its end (by the xdist controller: workers' output is dropped)."""
    if hasattr(config, "workerinput") or not SCREENSHOTS.is_dir():
        return
    shots = sorted(p for p in SCREENSHOTS.glob("*.png") if p.stat().st_mtime >= _STARTED)
    if shots:
        terminalreporter.write_sep("-", "Streamlit view screenshots")
        for p in shots:
            terminalreporter.write_line(str(p))


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
