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

#: Tests that start Ray processes, in two units of work (`make test` runs two pytest-xdist workers
#: with ``--dist loadgroup``), each run by one worker in collection order: the integration package's
#: emulated cluster with training's private local instance (``rl_env.ray_local``, which joins no
#: cluster) after it, and the demo's cluster. Within a unit one cluster is up at a time, and
#: training's local Ray starts only after the package's cluster is down: its raylet still waits for
#: its agents' port files, at most Ray's fixed 30 s, which it once missed beside a cluster's start in
#: CI. The two units run at once, so the demo's cluster runs beside the package's: their raylets are
#: told their agents' ports (``cluster.ray_compat``), so neither waits on a port file, and each has
#: its own ports, state and token. Run one after another, the two made the suite's critical path.
RAY_TEST_GROUPS = {
    "ray-cluster": ("tests/integration/", "tests/rl_env/test_train_tiny.py"),
    "ray-demo": ("tests/orchestrator/test_demo.py",),
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` (or plain ``-n``) with the Ray tests in their groups, each other test its own.

    Grouped by path here rather than by ``xdist_group`` marks: pytest-xdist 3.8 writes the mark's
    group into ``Item._nodeid``, which pytest 9 no longer reads, so the marks group nothing.
    xdist hands out the largest groups first, so the two Ray groups start at once, one on each worker,
    and each worker takes the single tests once its group is nearly done. Should a
    worker die mid-group, xdist gives the rest of it to the other worker while the dead one's cluster
    may still run: one cluster more at once, for that rare run only.
    """
    if config.getvalue("dist") not in ("load", "loadgroup"):  # other modes are the caller's explicit choice
        return None
    from xdist.scheduler import LoadScopeScheduling

    class RayClusterTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((group for group, paths in RAY_TEST_GROUPS.items() if nodeid.startswith(paths)), nodeid)

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
