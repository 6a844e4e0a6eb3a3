"""The raylet environment, arguments and folders the launcher sets (no cluster needed)."""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cluster import launcher
from cluster.procs import in_ephemeral_range
from cluster.ray_resources import cluster_resources
from cluster.topology import load_cluster
from tests.conftest import CONFIGS


def test_each_raylet_keeps_as_many_spare_workers_as_it_has_cpus() -> None:
    # Ray 2.60 prestarts up to num_workers_soft_limit idle workers beyond the busy ones whenever
    # an owner queues tasks: twice the CPUs grew every node's pool to ~3x its CPUs under the router.
    spec = load_cluster(CONFIGS / "cluster" / "test_small.yaml")
    for res in cluster_resources(spec):
        env = launcher._node_env({}, res)
        assert env["RAY_num_workers_soft_limit"] == str(res.num_cpus), res.name
        assert env["RAY_idle_worker_killing_time_threshold_ms"] == str(launcher.IDLE_WORKER_KEEP_MS)


def test_an_operator_setting_wins_and_a_node_without_cpus_keeps_rays_default() -> None:
    spec = load_cluster(CONFIGS / "cluster" / "test_small.yaml")
    res = cluster_resources(spec)[1]
    env = launcher._node_env({"RAY_num_workers_soft_limit": "16"}, res)
    assert env["RAY_num_workers_soft_limit"] == "16"
    assert "RAY_num_workers_soft_limit" not in launcher._node_env({}, replace(res, num_cpus=0))


def test_every_raylet_port_is_pinned_fresh_and_outside_the_ephemeral_range(tmp_path) -> None:
    # a port inside the range can be taken by one of Ray's own connections before the raylet binds it
    res = cluster_resources(load_cluster(CONFIGS / "cluster" / "test_small.yaml"))[0]
    ports = []
    for _ in range(2):
        args = launcher._worker_args(res, "127.0.0.1:6379", tmp_path, 128, "127.0.0.1")
        mine = {a.split("=")[0]: int(a.split("=")[1]) for a in args if a.split("=")[0] in launcher.RAYLET_PORT_FLAGS}
        assert set(mine) == set(launcher.RAYLET_PORT_FLAGS) and len(set(mine.values())) == len(mine)
        ports += list(mine.values())
    assert not any(in_ephemeral_range(p) for p in ports)


def test_a_failed_ray_start_is_retried_with_new_arguments(monkeypatch, tmp_path) -> None:
    tries: list[list[str]] = []

    def fake_start(args: list[str], env: dict, log, cancel=None) -> tuple[int, float]:
        tries.append(args)
        if len(tries) == 1:
            raise launcher.LauncherError("The current node timed out during startup")
        return 4242, 0.1

    monkeypatch.setattr(launcher, "_ray_start", fake_start)
    made = iter([["--dashboard-agent-listen-port=21000"], ["--dashboard-agent-listen-port=21001"]])
    sid, _ = launcher._ray_start_retry(lambda: next(made), {}, tmp_path / "n.log")
    assert sid == 4242 and tries == [["--dashboard-agent-listen-port=21000"], ["--dashboard-agent-listen-port=21001"]]


def test_a_start_cancelled_by_an_interrupted_launch_is_not_retried(monkeypatch, tmp_path) -> None:
    import threading

    tries: list[list[str]] = []

    def fake_start(args: list[str], env: dict, log, cancel=None) -> tuple[int, float]:
        tries.append(args)
        assert cancel is not None and cancel.is_set()
        raise launcher.LauncherError("ray start cancelled: the launch was interrupted")

    monkeypatch.setattr(launcher, "_ray_start", fake_start)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(launcher.LauncherError, match="cancelled"):
        launcher._ray_start_retry(lambda: ["--x"], {}, tmp_path / "n.log", cancel=cancel)
    assert tries == [["--x"]]


def test_a_failed_start_names_the_errors_ray_logged(monkeypatch, tmp_path) -> None:
    # ray start only says the raylet did not register in time; the why is in the session's logs,
    # which CI deletes with its temporary folder, so the launcher's error carries the error lines
    logs = tmp_path / "ray" / "session_latest" / "logs"
    logs.mkdir(parents=True)
    old = logs / "raylet.out"
    old.write_text("[2026-11-28 10:00:00,000 E 11 11] (raylet) an error of an earlier start\n")
    os.utime(old, (1, 1))
    fake_ray = tmp_path / "fake_ray_start.sh"  # stands in for `python -m ray.scripts.scripts start`
    fake_ray.write_text(f"""#!/bin/sh
echo '[2026-11-28 15:00:00,000 I 42 42] (raylet) main.cc:283: Setting cluster ID' > {logs}/raylet.1.out
echo '[2026-11-28 15:00:01,000 E 42 42] (raylet) node_manager.cc:1: Failed to register with GCS' >> {logs}/raylet.1.out
echo 'a warning printed at start-up' > {logs}/raylet.1.err
for i in $(seq 1 10); do echo "more start-up noise $i" >> {logs}/raylet.1.err; done
echo '[2026-11-28 15:00:02,000 C 42 42] (raylet) main.cc:9: Check failed: the reason a raylet crashed' >> {logs}/raylet.1.err
for i in $(seq 1 40); do echo "raylet(+0x$i) a backtrace frame" >> {logs}/raylet.1.err; done
echo 'Exception: The current node timed out during startup.'
exit 1
""")
    fake_ray.chmod(0o755)
    monkeypatch.setattr(launcher.sys, "executable", str(fake_ray))
    with pytest.raises(launcher.LauncherError) as info:
        launcher._ray_start([f"--temp-dir={tmp_path / 'ray'}"], dict(os.environ), tmp_path / "node.log")
    msg = str(info.value)
    assert "timed out during startup" in msg
    assert "raylet.1.out: [2026-11-28 15:00:01,000 E 42 42] (raylet) node_manager.cc:1: Failed to register" in msg
    assert "Setting cluster ID" not in msg and "earlier start" not in msg
    # a crash's reason is the first line of its .err, before a backtrace longer than any tail shown
    assert "raylet.1.err: [2026-11-28 15:00:02,000 C 42 42] (raylet) main.cc:9: Check failed: the reason" in msg
    assert "raylet(+0x40)" not in msg


def _state(tmp_path, listen: str = "127.0.0.1") -> launcher.LaunchState:
    return launcher.LaunchState(config="c.yaml", state_dir=str(tmp_path), temp_dir=str(tmp_path / "ray"),
                                token_file="t", gcs_port=1, dashboard_host="127.0.0.1", dashboard_port=2,
                                client_port=3, listen=listen)


def test_every_node_has_a_temp_dir_of_its_own(tmp_path) -> None:
    # Ray picks socket names (plasma_store, plasma_store.1 ...) free in the session folder, and two
    # raylets starting into one folder could pick the same: a folder per node rules that out
    st = _state(tmp_path)
    plan = cluster_resources(load_cluster(CONFIGS / "cluster" / "local.yaml"))
    dirs = [launcher.node_temp_dir(st, r.name) for r in plan]
    assert launcher.node_temp_dir(st, launcher.HEAD_NAME) == tmp_path / "ray"
    assert len(set(dirs)) == len(dirs) and all(d.parent == tmp_path / "ray" for d in dirs)
    assert launcher.node_temp_dir(st, "../a b").parent == tmp_path / "ray"  # a name cannot leave the folder
    args = launcher._worker_args(plan[0], "127.0.0.1:1", dirs[0], 64, st.listen)
    assert f"--temp-dir={dirs[0]}" in args and "--include-log-monitor=False" not in args  # own logs, own monitor


def test_a_state_dir_too_long_for_rays_socket_paths_is_refused_before_anything_starts() -> None:
    launcher.check_socket_paths([Path("/tmp/orch-ray-1000/ray/edge-1")])
    # the state dirs the tests, the demo test and the benchmarks make (tempfile's 8 random characters),
    # with a node name of 63 characters: every node's folder fits
    for made in ("/tmp/orch-demo-abcdefgh/ray", "/tmp/orch-ray-bench-abcdefgh", "/tmp/orch-ray-it-abcdefgh",
                 "/tmp/orch-ba-abcdefgh", f"/tmp/orch-ray-{4194304}"):
        st = _state(Path(made))
        launcher.check_socket_paths([launcher.node_temp_dir(st, "n" * 63)])
    with pytest.raises(launcher.LauncherError, match="107 bytes"):
        launcher.check_socket_paths([Path("/tmp") / ("x" * 60) / "ray" / "edge-1"])


def test_a_retried_start_is_recorded_in_the_state(monkeypatch, tmp_path) -> None:
    # a retry hides a failed start: the state keeps it so that tests can insist on none
    logs: list[Path] = []

    def fake_start(args: list[str], env: dict, log: Path, cancel=None) -> tuple[int, float]:
        logs.append(log)
        if len(logs) == 1:
            raise launcher.LauncherError("ray start failed\nraylet.out: bind: Address already in use")
        return 7, 0.1

    monkeypatch.setattr(launcher, "_ray_start", fake_start)
    st, seen = _state(tmp_path), []
    sid, _ = launcher._ray_start_retry(lambda: [], {}, tmp_path / "edge-1.log",
                                       launcher._on_retry(st, "edge-1", lambda name, s: seen.append(name)))
    assert sid == 7 and st.retries == ["edge-1: raylet.out: bind: Address already in use"]
    assert seen == ["edge-1 (retrying)"] and logs == [tmp_path / "edge-1.log", tmp_path / "edge-1.retry.log"]


def test_listen_is_normalised_and_checked_before_anything_starts() -> None:
    assert launcher.checked_listen("localhost") == launcher.checked_listen("127.0.0.2") == "127.0.0.1"
    assert launcher.checked_listen("0.0.0.0") == "0.0.0.0"
    for bad in ("foo", "::", "203.0.113.7"):  # a name, IPv6 (Ray binds IPv4 here), not this host's
        with pytest.raises(launcher.LauncherError, match="--listen"):
            launcher.checked_listen(bad)


def test_a_node_is_up_once_its_dashboard_agent_listens_too(monkeypatch, tmp_path) -> None:
    # its raylet no longer waits for the agent (ray_compat.raylet_command_with_listen_port), and the
    # agent runs the node's jobs: the launcher waits for it, under its own limit, not Ray's 30 s
    import socket

    res = cluster_resources(load_cluster(CONFIGS / "cluster" / "local.yaml"))[0]
    assert launcher._agent_port(launcher._worker_args(res, "127.0.0.1:1", tmp_path, 64, "127.0.0.1")) > 0
    fake_ray = tmp_path / "fake_ray_start.sh"  # a ray start that succeeds; its raylet is faked below
    fake_ray.write_text("#!/bin/sh\nexit 0\n")
    fake_ray.chmod(0o755)
    monkeypatch.setattr(launcher.sys, "executable", str(fake_ray))
    monkeypatch.setattr(launcher, "session_pids", lambda sid, *a: [sid])
    monkeypatch.setattr(launcher, "cmdline", lambda pid: "raylet/raylet")
    with socket.socket() as agent:
        agent.bind(("127.0.0.1", 0))
        agent.listen()
        args = [f"--temp-dir={tmp_path / 'ray'}", f"--dashboard-agent-listen-port={agent.getsockname()[1]}"]
        sid, _ = launcher._ray_start(args, dict(os.environ), tmp_path / "node.log", timeout_s=10)
        assert sid > 0
    with pytest.raises(launcher.LauncherError, match="did not listen on port .*: not within 3 s"):
        launcher._ray_start(args, dict(os.environ), tmp_path / "node.log", timeout_s=3)
    monkeypatch.setattr(launcher, "cmdline", lambda pid: "")  # the raylet died (with its agent): at once
    t0 = time.monotonic()
    with pytest.raises(launcher.LauncherError, match="its raylet exited"):
        launcher._ray_start(args, dict(os.environ), tmp_path / "node.log", timeout_s=60)
    assert time.monotonic() - t0 < 30
