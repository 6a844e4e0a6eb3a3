"""The real cluster: placement checked from inside tasks, shares enforced by Ray, replay and jobs end to end.

Tests run in file order on one cluster (see conftest.py); the raylet-kill test is
last because it leaves a node down.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cluster import launcher, procs
from cluster.executor import Executor, warm_workers
from cluster.live_state import LiveState
from cluster.ray_resources import LABEL_NODE, LABEL_TIER, task_options
from cluster.state import check_invariants
from cluster.vocabulary import FINAL
from scheduler.policy import Decision, make_policy
from scheduler.task import make_task
from orchestrator.cli import main
from replays.live import load_tasks, replay
from tests.conftest import CONFIGS, LOCAL_YAML, REPO_ROOT
from tests.integration.conftest import TEST_YAML

pytestmark = pytest.mark.integration
SMOKE = CONFIGS / "workloads" / "cluster_smoke.yaml"


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    run = peak = 0
    for _, d in events:
        run += d
        peak = max(peak, run)
    return peak


@pytest.fixture(scope="module")
def driver(real_cluster):
    """This process as a Ray driver of the test cluster, for this module only."""
    import ray

    launcher.connect(real_cluster.state_dir)
    yield real_cluster
    ray.shutdown()


@pytest.fixture(scope="module")
def live(driver) -> LiveState:
    lv = LiveState(driver.spec)
    lv.refresh()
    assert all(lv.usable), lv.problems
    return lv


# ---------------------------------------------------------------------------- no cluster needed


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["nodes"][2]["gpus"]["mig_layout"][0].extend(["3g.40gb"]), "nodes[2].gpus.mig_layout[0]"),
    (lambda d: d["nodes"][0].update(tier="fog"), "nodes[0].tier"),
    (lambda d: d["nodes"][1].update(cpus=-4), "nodes[1].cpus"),
])
def test_bad_config_exits_2_before_starting_anything(tmp_path: Path, capsys, mutate, field) -> None:
    data = yaml.safe_load(TEST_YAML.read_text())
    mutate(data)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    state_dir = tmp_path / "state"
    before = set(procs.all_pids())
    rc = main(["cluster", "up", "--config", str(bad), "--state-dir", str(state_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and field in err and "Traceback" not in err
    assert not state_dir.exists()
    # only processes of this start (their temp dirs are under its state dir): the suite's other
    # xdist worker may start Ray processes of its own meanwhile
    started = [p for p in set(procs.all_pids()) - before if str(state_dir) in procs.cmdline(p)]
    assert not started


# ---------------------------------------------------------------------------- launcher


def test_up_again_reports_the_running_cluster_and_status_lists_every_node(real_cluster, capsys) -> None:
    sd = str(real_cluster.state_dir)
    assert main(["cluster", "up", "--config", str(TEST_YAML), "--state-dir", sd]) == 0
    out = capsys.readouterr().out
    assert "already running (nothing to start)" in out and real_cluster.dashboard in out
    assert main(["cluster", "up", "--config", str(LOCAL_YAML), "--state-dir", sd]) == 1  # another config
    assert "run `orchestrator cluster down` first" in capsys.readouterr().err
    assert main(["cluster", "status", "--state-dir", sd]) == 0
    out = capsys.readouterr().out
    for name in ("head", "edge-1", "cloud-1", "gpu-mig-1", "gpu-ts-1"):
        assert any(line.startswith(name) and " yes " in line for line in out.splitlines()), name
    assert "mig_1g.10gb" in out and "site=factory-7" in out
    assert main(["cluster", "env", "--state-dir", sd]) == 0
    env = capsys.readouterr().out
    assert "RAY_AUTH_MODE=token" in env and str(real_cluster.state_dir / "auth_token") in env


# ---------------------------------------------------------------------------- placement and shares


def test_tasks_land_on_the_node_tier_and_share_asked_for(live: LiveState) -> None:
    import ray

    def probe():
        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), ctx.get_assigned_resources(), list(ctx.get_accelerator_ids().get("GPU", []))

    cases = [  # (node, task fields, share, expected assigned resources)
        ("edge-1", {"cpu_milli": 500, "mem_mib": 256}, ("cpu", 0), {"CPU": 0.5, "memory": 256 * 2**20}),
        ("cloud-1", {"cpu_milli": 2000, "mem_mib": 0}, ("cpu", 0), {"CPU": 2.0}),
        ("gpu-mig-1", {"cpu_milli": 1000, "mem_mib": 0, "mig_profile": "1g.10gb"}, ("mig", "1g.10gb"),
         {"CPU": 1.0, "mig_1g.10gb": 1.0}),
        ("gpu-mig-1", {"cpu_milli": 1000, "mem_mib": 0, "mig_profile": "3g.40gb"}, ("mig", "3g.40gb"),
         {"CPU": 1.0, "mig_3g.40gb": 1.0}),
        ("gpu-ts-1", {"cpu_milli": 500, "mem_mib": 0, "gpu_milli": 200}, ("slice", 250), {"CPU": 0.5, "GPU": 0.25}),
        ("gpu-ts-1", {"cpu_milli": 1000, "mem_mib": 0, "gpu_count": 1}, ("whole", 1), {"CPU": 1.0, "GPU": 1.0}),
    ]
    labels = {n["NodeID"]: n["Labels"] for n in ray.nodes() if n["Alive"]}
    from cluster.state import share_for

    # One at a time: Ray grants leases of different shapes in no fixed order, so a GPU slice and
    # a whole GPU sent together may get each other's device from Ray (the bookkeeping's device
    # choice is only Ray's when the requests reach it in order; README "Known limits").
    results = []
    with Executor(live) as ex:
        for k, (node, fields, share, _) in enumerate(cases):
            t = make_task({"id": f"probe-{k}", "work": 0.0, **fields}, infer=False)
            # the share the policies would compute for this node (0.2 GPU rounds up to a 0.25 time-slice)
            assert share_for(live.state, live.index(node), t) == share
            fut = ex.submit(t, Decision(live.index(node), share, np.empty(0), "test", "test"), fn=probe)
            results.append(fut.result(timeout=120))
        assert ex.device_mismatches == 0
    for (node, _, share, assigned), r in zip(cases, results):
        assert r.status == "succeeded", r.reason
        node_id, got, gpus = r.value
        assert node_id == live.node_id(live.index(node)) and r.node == node and r.reason == ""
        assert labels[node_id][LABEL_NODE] == node
        assert labels[node_id][LABEL_TIER] == live.spec.nodes[live.index(node)].tier
        assert got == pytest.approx(assigned), (node, share, got)
        assert len(gpus) == (1 if share[0] in ("slice", "whole") else 0)
        if gpus:
            assert r.device == int(gpus[0])
    check_invariants(live.state)
    assert int(live.state.running.sum()) == 0


def test_a_task_that_raises_fails_with_its_error_and_the_others_finish(live: LiveState) -> None:
    """Outcomes are fetched in bulk: one task's error must reach that task alone, named by its own type."""
    def boom(*_args):
        raise ValueError("bad input")

    i = live.index("cloud-1")
    with Executor(live) as ex:
        futs = [ex.submit(make_task({"id": f"e{k}", "cpu_milli": 500, "mem_mib": 0, "work": 0.0}, infer=False),
                          Decision(i, ("cpu", 0), np.empty(0), "test", "test"), fn=boom if k == 2 else None)
                for k in range(6)]
        results = [f.result(timeout=120) for f in futs]
    assert [r.status for r in results] == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 3
    assert results[2].reason == "task raised ValueError: bad input" and results[2].attempts == 1


def test_mig_instances_are_never_oversubscribed(live: LiveState) -> None:
    import ray

    def hold(seconds: float):
        start = time.time()
        time.sleep(seconds)
        return start, time.time()

    remote = ray.remote(max_retries=0)(hold)
    i = live.index("gpu-mig-1")
    t1 = make_task({"id": "m1", "cpu_milli": 100, "mem_mib": 0, "mig_profile": "1g.10gb"}, infer=False)
    t3 = make_task({"id": "m3", "cpu_milli": 100, "mem_mib": 0, "mig_profile": "3g.40gb"}, infer=False)
    # Plain Ray tasks straight on the node, bypassing the executor: Ray itself enforces the layout.
    o1 = remote.options(**task_options("gpu-mig-1", t1, ("mig", "1g.10gb"), live.node_id(i)))
    o3 = remote.options(**task_options("gpu-mig-1", t3, ("mig", "3g.40gb"), live.node_id(i)))
    one = [o1.remote(0.6) for _ in range(6)]
    three = [o3.remote(0.4) for _ in range(3)]
    iv1, iv3 = ray.get(one, timeout=120), ray.get(three, timeout=120)
    assert max_overlap(iv1) == 2  # the layout has two 1g.10gb instances: both used, never a third
    assert max_overlap(iv3) == 1


def test_fractional_shares_pack_as_configured(live: LiveState) -> None:
    import ray

    def hold(seconds: float):
        start = time.time()
        time.sleep(seconds)
        return start, time.time(), int(ray.get_runtime_context().get_accelerator_ids()["GPU"][0])

    i = live.index("gpu-ts-1")  # 2 V100, time-slicing with 4 replicas: eight 0.25 shares
    warm_workers(live, {(i, True): 8})
    t = make_task({"id": "q", "cpu_milli": 250, "mem_mib": 0, "gpu_milli": 250}, infer=False)
    opts = ray.remote(max_retries=0)(hold).options(**task_options("gpu-ts-1", t, ("slice", 250), live.node_id(i)))
    out = ray.get([opts.remote(1.2) for _ in range(9)], timeout=180)
    per_gpu = {g: [(s, e) for s, e, gg in out if gg == g] for g in {g for _, _, g in out}}
    assert set(per_gpu) == {0, 1}
    assert all(max_overlap(iv) <= 4 for iv in per_gpu.values())  # never more than 4 quarters on a device
    assert max(max_overlap(iv) for iv in per_gpu.values()) == 4  # and Ray does pack 4 on one
    assert max_overlap([(s, e) for s, e, _ in out]) <= 8


def test_a_running_task_is_cancelled_and_its_node_runs_the_next_within_a_second(live: LiveState,
                                                                               tmp_path: Path) -> None:
    """Issue 17: a 30-day task can be cancelled and frees its node. The cancel is forced (the worker
    exits), so a body that never yields stops too, and Ray frees its CPU for the task waiting behind."""
    started = tmp_path / "started"

    def forever(path: str) -> None:
        open(path, "w").close()
        time.sleep(30 * 86400)

    i = live.index("edge-1")  # 2 CPUs: one 2-CPU task at a time
    warm_workers(live, {(i, False): 2})  # the next task finds an idle worker: no cold start is timed
    d = Decision(i, ("cpu", 0), np.empty(0), "test", "test")
    shape = {"cpu_milli": 2000, "mem_mib": 0, "work": 0.0}
    with Executor(live) as ex:
        long = ex.submit(make_task({"id": "forever", **shape}, infer=False), d, fn=forever, args=(str(started),))
        nxt = ex.submit(make_task({"id": "next", **shape}, infer=False), d)
        deadline = time.monotonic() + 60
        while not started.exists():
            assert time.monotonic() < deadline, "the long task never started"
            time.sleep(0.02)
        t_cancel = ex.now()
        assert ex.cancel("forever", "cancelled by the test")
        r = long.result(timeout=0)
        assert r.status == "cancelled" and r.node == "edge-1" and r.reason == "cancelled by the test"
        n = nxt.result(timeout=60)
        assert n.status == "succeeded" and n.node == "edge-1", n.reason
        print(f"next task started {n.start - t_cancel:.3f} s after the cancel")
        assert n.start - t_cancel < 1.0
        assert not ex.cancel("forever", "again") and ex.drain(10)
    check_invariants(live.state)
    assert int(live.state.running.sum()) == 0 and int(live.state.queue_len.sum()) == 0


# ---------------------------------------------------------------------------- replay and jobs


def test_simulator_and_cluster_agree(real_cluster, live) -> None:
    from replays.sim_vs_real import compare, format_report

    tasks = load_tasks(SMOKE, seed=None, duration_s=20, load_factor=None)
    cmp = compare(real_cluster.spec, tasks, "cheapest-feasible", time_compression=2.0, progress=False)
    report = format_report(cmp)
    print(report)
    assert cmp.placement_match, report
    assert cmp.latency_error <= 0.15, report
    assert cmp.real.summary["failed"] == 0 and len(cmp.real.records) == len(tasks)


def test_ray_job_submit_runs_the_replay_end_to_end(real_cluster, tmp_path: Path) -> None:
    """A job of the checkout (`--working-dir .`) finds the shipped learned policies in its own upload:
    Ray uploads what .gitignore does not exclude, and the shipped models are re-included there. One
    job: the replay places on the cluster with `rf` (the router's default), then `rl`, loaded from the
    same upload, places the same workload in the simulator (its decisions on the live cluster are not
    covered here). A second job for `rl` would cost its own client, supervisor, driver and workers (most of
    a job's time on 2 cores) to run the same replay code."""
    env = {**os.environ, **launcher.client_env(real_cluster.state)}
    env.pop("RAY_ADDRESS", None)
    env.pop("ORCH_REGISTRY", None)  # the job must find the models in its own upload, not in a test folder
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ray = str(Path(sys.executable).parent / "ray")
    replay_out, sim_out, log_file = tmp_path / "replay", tmp_path / "sim", tmp_path / "job.log"
    live = ["python", "-m", "replays.live", "--workload", "configs/workloads/cluster_smoke.yaml",
            "--policy", "rf:latest", "--duration", "4", "--time-compression", "4", "--no-warm", "--out", str(replay_out)]
    sim = ["python", "-m", "orchestrator.cli", "simulate", "--cluster", "configs/cluster/test_small.yaml",
           "--workload", "configs/workloads/cluster_smoke.yaml", "--policies", "rl:latest", "--out", str(sim_out)]
    sid = f"test-replay-{uuid.uuid4().hex[:8]}"
    cmd = [ray, "job", "submit", "--address", real_cluster.dashboard, "--submission-id", sid,
           "--working-dir", str(REPO_ROOT), "--", "bash", "-c", f"{shlex.join(live)} && {shlex.join(sim)}"]
    with log_file.open("w") as log:  # a file, not a pipe: the client never stalls on a full pipe
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        proc.wait(timeout=300)
    finally:  # nothing of a failed or timed-out submission is left running into the next tests
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            subprocess.run([ray, "job", "stop", "--address", real_cluster.dashboard, sid], env=env,
                           capture_output=True, timeout=60)
    log = log_file.read_text()
    assert proc.returncode == 0, log[-3000:]
    n = len(load_tasks(SMOKE, seed=None, duration_s=4, load_factor=None))
    records = pd.read_csv(replay_out / "records_rf:latest.csv")
    assert len(records) == n and (records["status"] == "succeeded").all()
    meta = json.loads((replay_out / "summary_rf:latest.json").read_text())["meta"]
    assert meta["cluster"] == "test_small"  # the job found the cluster's config through the launcher's env
    rl = json.loads((sim_out / "summary.json").read_text())["policies"]["rl:latest"]
    assert rl["tasks"] > 0 and rl["succeeded"] == rl["tasks"], rl


def test_every_task_gets_a_final_record_when_a_raylet_dies(real_cluster, live: LiveState) -> None:
    tasks = load_tasks(SMOKE, seed=5, duration_s=12, load_factor=None)
    killed: list[int] = []

    def kill_edge(k: int, wall_s: float) -> None:
        if k == len(tasks) // 3 and not killed:
            killed.append(launcher.kill_node("edge-1", real_cluster.state_dir))

    fresh = LiveState(real_cluster.spec)
    res = replay(real_cluster.spec, tasks, make_policy("cheapest-feasible"), seed=5, time_compression=3.0,
                 live=fresh, progress=False, on_submitted=kill_edge, warm=False)
    assert killed
    recs = res.records
    assert len(recs) == len(tasks) and set(recs["task_id"]) == {t.id for t in tasks}
    assert set(recs["status"]) <= set(FINAL)
    assert (recs.loc[recs["status"] != "succeeded", "reason"].str.len() > 0).all()
    touched = [r for r in res.results if r.attempts > 1 or r.status == "failed"]
    assert touched, "the raylet kill should have hit some task"
    assert all("edge-1" in r.nodes_tried for r in touched)
    moved = [r for r in touched if r.status == "succeeded"]
    assert all(r.node != "edge-1" for r in moved)
    assert not fresh.usable[fresh.index("edge-1")]
    # `cluster join` brings the node back (a new raylet, a new Ray node id) and the live state takes it again.
    address = f"127.0.0.1:{real_cluster.state.gcs_port}"
    assert main(["cluster", "join", "--address", address, "--node", "edge-1", "--config", str(TEST_YAML),
                 "--state-dir", str(real_cluster.state_dir),
                 "--token-file", real_cluster.state.token_file]) == 0
    deadline = time.monotonic() + 30
    while not fresh.usable[fresh.index("edge-1")] and time.monotonic() < deadline:
        time.sleep(0.5)
        fresh.refresh()
    assert fresh.usable[fresh.index("edge-1")], fresh.problems
