"""The cluster starts every time, and on one host nothing of it listens beyond loopback (issue 17).

The twenty-start test is ``slow`` (about 20 s a start; outside ``make test``):
``pytest -m slow tests/integration/test_cluster_start.py -s`` (``ORCH_START_RUNS`` sets the
count). Its clusters, like the join test's, have their own state dirs, ports and tokens,
so they never meet the package's cluster (conftest.py), which the exposure test reads.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from benchmarks.bench_cluster_start import StartRun, start_stop, summary
from cluster import launcher
from cluster.network import host_address, is_loopback, ray_env
from cluster.procs import cmdline, free_fixed_port, listening_sockets
from cluster.ray_resources import HEAD_NAME, LABEL_NODE
from tests.conftest import REPO_ROOT
from tests.integration.conftest import TEST_YAML

pytestmark = pytest.mark.integration


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_local_cluster_starts_on_the_first_try_twenty_times_in_a_row() -> None:
    # two raylets at once (the default), each start checked for a retried `ray start`: the retry
    # used to hide a raylet that aborted on a socket name another raylet had taken
    runs = int(os.environ.get("ORCH_START_RUNS", "20"))

    def report(i: int, r: StartRun) -> None:
        print(f"\n[start {i + 1}/{runs}] {r.seconds:.1f} s retries={r.retries} error={bool(r.error)}",
              file=sys.stderr, flush=True)

    done = start_stop(TEST_YAML, runs, parallel=2, report=report)
    print(f"\n[cluster start] {summary('two at once', done)}", file=sys.stderr)
    bad = {i + 1: r.retries or r.error or f"left {r.left}" for i, r in enumerate(done) if not r.first_try}
    assert not bad, f"{len(bad)} of {runs} starts were not first-try clean: {bad}"


def _ray_listeners(st: launcher.LaunchState) -> list[tuple[int, str, int]]:
    return listening_sockets([p for rec in st.nodes.values() for p in launcher.session_pids(rec.sid)])


def test_no_process_of_a_one_host_cluster_listens_beyond_loopback(real_cluster) -> None:
    """GCS, raylets, agents, metrics exporters, Ray Client, workers and this driver: all on 127.0.0.1."""
    import ray

    launcher.up(TEST_YAML, state_dir=real_cluster.state_dir)  # restarts a node an earlier test killed
    st = launcher.LaunchState.load(real_cluster.state_dir)
    assert st is not None and st.listen == "127.0.0.1"
    before = set(listening_sockets([os.getpid()]))
    launcher.connect(real_cluster.state_dir)
    try:
        @ray.remote(num_cpus=0)
        def pid() -> int:
            return os.getpid()

        workers = set(ray.get([pid.options(label_selector={LABEL_NODE: n}).remote() for n in st.nodes]))
        socks = _ray_listeners(st)
        driver = set(listening_sockets([os.getpid()])) - before
    finally:
        ray.shutdown()
    exposed = [(cmdline(p)[:70], a, port) for p, a, port in [*socks, *driver] if not is_loopback(a)]
    assert not exposed, f"listening beyond loopback: {exposed}"
    listening = {p for p, _, _ in socks}
    assert workers & listening, "no task worker's own server was among the sockets checked"
    kinds = " ".join(cmdline(p) for p in listening)
    for kind in ("gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent", "dashboard.py", "monitor.py",
                 "ray.util.client.server"):
        assert kind in kinds, f"no {kind} among the processes checked"
    assert driver, "the driver's own server was not found"


def test_a_cluster_opened_with_listen_takes_a_node_joining_from_another_host() -> None:
    """``up --listen ADDR`` with the head alone, then ``join`` at ADDR from another state dir (another
    host, as far as the launcher knows); a task then runs on the joined node."""
    addr = host_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address")
    head_dir = Path(tempfile.mkdtemp(prefix="orch-jh-", dir="/tmp"))
    other_dir = Path(tempfile.mkdtemp(prefix="orch-jo-", dir="/tmp"))
    port = free_fixed_port(span=2, host="0.0.0.0")
    try:
        res = launcher.up(TEST_YAML, state_dir=head_dir, port=port, dashboard_port=port + 1, nodes=[],
                          token_file=head_dir / "auth_token", listen=addr)
        assert res.state.head_ip == addr and res.state.retries == []
        gcs = [a for p, a, pt in _ray_listeners(res.state) if pt == port]
        assert gcs and not any(is_loopback(a) for a in gcs), gcs  # reachable from elsewhere
        rec = launcher.join(f"{addr}:{port}", "edge-1", TEST_YAML, state_dir=other_dir,
                            token_file=head_dir / "auth_token")
        other = launcher.LaunchState.load(other_dir)
        assert rec.name == "edge-1" and other is not None and other.joined_to == f"{addr}:{port}"
        code = textwrap.dedent(f"""
            import ray
            ray.init(log_to_driver=False)

            @ray.remote(num_cpus=1)
            def where() -> str:
                return ray.get_runtime_context().get_node_id()

            ran_on = ray.get(where.options(label_selector={{{LABEL_NODE!r}: "edge-1"}}).remote(), timeout=120)
            nodes = {{n["Labels"][{LABEL_NODE!r}]: n for n in ray.nodes() if n["Alive"]}}
            print(nodes["edge-1"]["NodeID"] == ran_on, sorted((k, n["NodeManagerAddress"]) for k, n in nodes.items()))
        """)
        env = ray_env({**os.environ, **launcher.client_env(res.state)}, res.state.listen)
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1] == f"True {sorted([('edge-1', addr), (HEAD_NAME, addr)])}"
    finally:
        launcher.down(other_dir)
        launcher.down(head_dir)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(other_dir, ignore_errors=True)


@pytest.mark.parametrize("during", ["head", "edge-1"])
def test_a_terminated_cluster_up_stops_every_node_it_had_started(during: str) -> None:
    """SIGTERM (``kill``, ``timeout``, a cancelled job) while a node starts: ``cluster up`` stops what it had
    started, the node under way included (each ``ray start`` runs in a session of its own, which outlived
    the launcher before), and says so; nothing is left recorded or running."""
    import signal
    import time

    from cluster.procs import all_pids

    state_dir = Path(tempfile.mkdtemp(prefix="orch-term-", dir="/tmp"))
    port = free_fixed_port(span=2, host="0.0.0.0")
    mine = lambda: [p for p in all_pids() if str(state_dir) in cmdline(p) and p != os.getpid()]  # noqa: E731
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "cluster", "up", "--config", str(TEST_YAML),
                             "--nodes", "edge-1", "--state-dir", str(state_dir), "--port", str(port),
                             "--dashboard-port", str(port + 1)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        log = state_dir / "logs" / f"{during}.log"
        deadline = time.monotonic() + 180
        while not log.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.is_file(), proc.communicate()[0] if proc.poll() is not None else f"no {log} in 180 s"
        time.sleep(1.0)  # its `ray start` is under way
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 128 + signal.SIGTERM, out
        assert "cluster up interrupted: the nodes it had started are stopped" in out and "Traceback" not in out
        assert launcher.LaunchState.load(state_dir) is None
        deadline = time.monotonic() + 10  # processes a session's stop signalled may take a moment to go
        while mine() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not mine(), [cmdline(p)[:200] for p in mine()]
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in mine():
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(state_dir, ignore_errors=True)
