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
#: or a private local instance (training's ``rl_env.ray_local``, which joins no cluster). Under
#: pytest-xdist (`make test` runs two workers with ``--dist loadgroup``) they form one unit of work,
#: which one worker runs in collection order, so two clusters are never up at once, the integration
#: package's cluster is down before the demo starts its own, and no raylet starts beside another
#: (see :data:`BESIDE_NICE`); the other worker runs the rest.
RAY_CLUSTER_TESTS = ("tests/integration/", "tests/orchestrator/test_demo.py", "tests/rl_env/test_train_tiny.py")
#: Niceness of a pytest-xdist worker once it runs a test outside that group. A raylet waits at most
#: 30 s for its Python agents to report their ports and then aborts (Ray 2.60:
#: ``NodeManager::WaitForDashboardAgentPorts``, not configurable), a local head as long for its GCS,
#: and each agent imports most of Ray: 7-8 s on an idle 2-core machine, past 30 s while the other
#: worker kept the cores busy (CI: the cluster fixture's, the demo's and ``capacity apply``'s node
#: starts failed, retry included). At nice 10 the other worker gets about a tenth of a contended core.
BESIDE_NICE = 10


def _step_aside(level: int = BESIDE_NICE) -> None:
    """Lower this worker's CPU priority, and that of every process it starts from now on.

    With the kernel's autogroups (``/proc/sys/kernel/sched_autogroup_enabled``, on here) CPU is
    shared between sessions first, so a thread's niceness only weighs against its own session's,
    and ``ray start`` runs each node in a session of its own: the worker takes a session of its
    own too and sets that session's niceness. Without autogroups the thread's niceness is what
    counts, so both are set. Raising niceness needs no privilege; nothing here lowers it again.
    """
    if os.getpriority(os.PRIO_PROCESS, 0) >= level:
        return
    try:
        os.setsid()  # an xdist worker is no process group leader: it may
    except OSError:
        pass
    os.setpriority(os.PRIO_PROCESS, 0, level)
    try:
        Path("/proc/self/autogroup").write_text(str(level))
    except OSError:  # no autogroups (or no /proc): the thread's niceness above is what counts
        pass


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under xdist, the worker of the Ray group keeps the CPU first (see :data:`BESIDE_NICE`)."""
    if hasattr(item.config, "workerinput") and not item.nodeid.startswith(RAY_CLUSTER_TESTS):
        _step_aside()


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
