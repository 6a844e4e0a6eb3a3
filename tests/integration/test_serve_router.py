"""The router on Ray Serve on a real local cluster, over real HTTP.

The integration package's cluster (configs/cluster/test_small.yaml) and one router
deployment for the module; the router is started and stopped by ``python -m
serve_app.cli`` in a subprocess, so this process never becomes a Ray driver and
only speaks HTTP, reads the history file and kills processes. Tests run in file order: the
destructive ones (router replica killed under load, a node killed) come last.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster import launcher
from cluster.network import host_address
from cluster.vocabulary import FINAL
from orchestrator.examples import real_work
from tests.conftest import CONFIGS, REPO_ROOT

SMALL = CONFIGS / "cluster" / "test_small.yaml"
TOKEN = "integration-admin-token-9d2c41"
# router_live: also selectable on its own (`make test-router`); part of `make test`.
pytestmark = [pytest.mark.timeout(900), pytest.mark.router_live]


@dataclass
class Router:
    url: str  # through the Serve proxy
    direct: str  # the replica's own port (throughput-optimised direct ingress)
    history: Path
    state_dir: Path
    host_ip: str
    front: str | None = None  # the nginx front (serve_app.front), where nginx is installed


#: the API key the module's router made for these tests (``router`` fixture)
KEY: dict[str, str] = {}


def _call(url: str, method: str = "GET", body=None, headers=None, timeout: float = 60):
    """One call; without ``headers`` it carries the tests' API key."""
    data = None if body is None else json.dumps(body).encode()
    auth = {"Authorization": f"Bearer {KEY['key']}"} if headers is None and KEY else {}
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **auth, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


def _serve_cli(state_dir: Path, *args: str, env=None, timeout: float = 300) -> str:
    st = launcher.LaunchState.load(state_dir)
    env = {**os.environ, **launcher.client_env(st), **(env or {})}  # this cluster's address and token
    p = subprocess.run([sys.executable, "-m", "serve_app.cli", "serve", *args, "--state-dir", str(state_dir)],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def cluster_dir(real_cluster) -> Path:
    """The integration package's test_small cluster (tests/integration/conftest.py), every node up."""
    launcher.up(SMALL, state_dir=real_cluster.state_dir)  # restarts any node an earlier test killed
    return real_cluster.state_dir


def _run(coro):
    """The load generator's coroutine, run in a thread of its own (``serve_app.loadgen.run_sync``): an
    earlier test (Playwright's sync API) may have left an event loop running in this one."""
    from serve_app.loadgen import run_sync

    return run_sync(coro)


@pytest.fixture(scope="module")
def router(cluster_dir: Path, tmp_path_factory) -> Router:
    history = tmp_path_factory.mktemp("serve-history") / "history.db"
    cfg = tmp_path_factory.mktemp("serve-cfg") / "serve.yaml"
    cfg.write_text(json.dumps({"applications": [{"import_path": "serve_app:build_app", "args": {
        "policy": "least-loaded", "history_url": f"sqlite:///{history}", "time_compression": 20.0,
        "refresh_s": 0.25, "warm_workers": 1, "entry_points": list(real_work.ENTRY_POINTS),
        "warm_entry_points": False}}]}))  # torch in every warmed worker would slow the module; the hook: test_executor
    from cluster.procs import free_fixed_port

    # the direct-ingress port outside the ephemeral range, so no outgoing connection can hold it while
    # the router restarts after the kill below (cluster.procs.free_fixed_port; TIME_WAIT: serve_app.deployment)
    port, direct = launcher.free_port(), free_fixed_port()
    from serve_app import front

    try:
        front.nginx_binary()
        front_port: int | None = launcher.free_port()
    except front.FrontError:
        front_port = None  # its test says why it is skipped
    _serve_cli(cluster_dir, "up", "--config", str(cfg), "--port", str(port), "--direct-port", str(direct),
               *(("--front-port", str(front_port)) if front_port else ()), env={"ORCH_ADMIN_TOKEN": TOKEN})
    st = launcher.LaunchState.load(cluster_dir)
    url = f"http://127.0.0.1:{port}"
    status, made, _ = _call(f"{url}/v1/keys", "POST", {"name": "integration"}, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 201, made
    KEY["key"] = made["key"]
    before = os.environ.get("ORCH_API_KEY")
    os.environ["ORCH_API_KEY"] = made["key"]  # the load generator's sessions send it
    # the host's own address to probe: the cluster's node IP is loopback (cluster.network)
    yield Router(url, f"http://127.0.0.1:{direct}", history, cluster_dir, host_address() or st.head_ip,
                 f"http://127.0.0.1:{front_port}" if front_port else None)
    KEY.clear()
    if before is None:
        os.environ.pop("ORCH_API_KEY", None)
    else:
        os.environ["ORCH_API_KEY"] = before
    _serve_cli(cluster_dir, "down", timeout=120)
    if front_port:  # the front stopped with the router: nothing answers on its port
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{front_port}/healthz", timeout=5).close()
            except urllib.error.HTTPError:
                pass  # nginx still answering (a 502 without its router)
            except (urllib.error.URLError, OSError) as exc:
                if isinstance(getattr(exc, "reason", exc), ConnectionRefusedError):
                    break  # nothing listens: gone (a timeout is not proof)
            assert time.monotonic() < deadline, "the front outlived `serve down`"
            time.sleep(0.2)


def _router_pid(router: Router, timeout: float = 60) -> int:
    """The router replica's process id, from /healthz (retried while Serve restarts it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, body, _ = _call(f"{router.url}/healthz", timeout=10)
            if status == 200 and body:
                return int(body["pid"])
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, "no healthy router"
        time.sleep(0.5)


def _wait_final(router: Router, ids: list[str], timeout: float = 120) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            recs = {i: _call(f"{router.url}/v1/tasks/{i}")[1] for i in ids}
        except (OSError, ValueError):  # the router restarting: ask again
            recs = {i: None for i in ids}
        if all(r and r.get("status") in FINAL for r in recs.values()):
            return recs
        if time.monotonic() > deadline:
            pending = {i: r.get("status") if r else None for i, r in recs.items()
                       if not r or r.get("status") not in FINAL}
            raise AssertionError(f"tasks not finished after {timeout} s: {pending}")
        time.sleep(0.5)


# ---------------------------------------------------------------- API over Serve


def test_route_through_proxy_and_direct_ingress(router: Router) -> None:
    for base in (router.url, router.direct):
        status, d, _ = _call(f"{base}/v1/route", "POST", {"description": "medical image segmentation"})
        assert status == 200 and d["placed"] and d["pool"] in ("gpu-mig", "gpu-ts"), d
    status, d, _ = _call(f"{router.url}/v1/route", "POST", {"mig_profile": "7g.80gb"})
    assert status == 409 and "7g.80gb" in d["detail"]
    status, d, _ = _call(f"{router.url}/v1/route", "POST", {"priority": 0})
    assert status == 422 and d["detail"][0]["loc"] == ["body", "priority"]


def test_the_front_forwards_to_the_router_with_the_clients_address(router: Router) -> None:
    if router.front is None:
        pytest.skip("Debian's nginx is not installed (.ci/system-deps installs it)")
    status, health, _ = _call(f"{router.front}/healthz")
    assert status == 200 and health["pid"] == _router_pid(router)
    status, d, _ = _call(f"{router.front}/v1/route", "POST", {"description": "medical image segmentation"})
    assert status == 200 and d["placed"] and d["pool"] in ("gpu-mig", "gpu-ts"), d
    status, d, _ = _call(f"{router.front}/v1/route", "POST", {"priority": 0})  # the router's own 422, passed on
    assert status == 422 and d["detail"][0]["loc"] == ["body", "priority"]


def test_concurrent_singles_are_batched_and_agree(router: Router) -> None:
    from serve_app.loadgen import closed_loop

    bodies = [{"id": f"c{i}", "cpu_milli": 500, "priority": 1 + i % 10} for i in range(120)]
    res = _run(closed_loop(f"{router.url}/v1/route", bodies, concurrency=24, keep_bodies=True))
    assert res.statuses == {200: 120} and not res.errors
    assert sorted(b["task_id"] for b in res.bodies) == sorted(b["id"] for b in bodies)
    # routing does not reserve: the same state, the same answer whether batched or not
    assert len({b["node"] for b in res.bodies}) == 1
    status, batch, _ = _call(f"{router.url}/v1/route/batch", "POST", {"tasks": bodies[:50], "plan": True})
    assert status == 200 and len(batch["decisions"]) == 50 and len({d["node"] for d in batch["decisions"]}) > 1


def test_tasks_run_and_their_life_cycle_is_recorded(router: Router) -> None:
    status, out, _ = _call(f"{router.url}/v1/tasks?wait=true", "POST",
                           {"id": "life-1", "description": "real-time fraud detection", "work": 0.2})
    assert status == 200 and out["status"] == "succeeded", out
    assert out["latency_ms"] > 0 and out["cost"] > 0 and out["node"] and out["attempts"] == 1
    status, rec, _ = _call(f"{router.url}/v1/tasks/life-1")
    assert [e["status"] for e in rec["events"]][0] == "accepted" and rec["events"][-1]["status"] == "succeeded"
    assert {e["status"] for e in rec["events"]} <= {"accepted", "placed", "running", "succeeded"}
    assert rec["features"] and rec["decision"]["node"] == rec["node"] and rec["slo_met"] in (True, False)
    status, again, headers = _call(f"{router.url}/v1/tasks", "POST",
                                   {"id": "life-1", "description": "real-time fraud detection", "work": 0.2})
    assert status == 200 and again["status"] == "succeeded" and headers.get("idempotent-replay") == "true"
    status, other, _ = _call(f"{router.url}/v1/tasks", "POST", {"id": "life-1", "cpu_milli": 100})
    assert status == 409 and "different task" in other["detail"][0]["msg"]  # an id is one task
    status, acc, headers = _call(f"{router.url}/v1/tasks", "POST", {"id": "life-2", "cpu_milli": 200, "work": 0.1})
    assert status == 202 and acc["status"] in ("placed", "running") and headers["location"] == "/v1/tasks/life-2"
    _wait_final(router, ["life-2"])
    page = _call(f"{router.url}/v1/tasks?status=succeeded&pool={rec['pool']}&limit=1")[1]
    assert page["total"] >= 1 and len(page["items"]) == 1


def test_work_needs_a_key_and_a_month_long_task_can_be_cancelled(router: Router) -> None:
    assert _call(f"{router.url}/v1/tasks", "POST", {"cpu_milli": 100}, {})[0] == 401
    assert _call(f"{router.url}/v1/tasks", "POST", {"cpu_milli": 100}, {"Authorization": "Bearer ork_x"})[0] == 401
    long = {"id": "month-1", "pool": "edge", "cpu_milli": 2000, "work": 86_400.0}  # the whole edge node
    assert _call(f"{router.url}/v1/tasks", "POST", long)[0] == 202
    status, nxt, _ = _call(f"{router.url}/v1/tasks", "POST", {"id": "after-month", "pool": "edge",
                                                             "cpu_milli": 2000, "work": 0.05})
    assert status == 202 and nxt["status"] == "placed"  # waits behind the long one
    status, out, _ = _call(f"{router.url}/v1/tasks/month-1", "DELETE")
    assert status == 200 and out["status"] == "cancelled", out
    done = _wait_final(router, ["after-month"], timeout=60)  # the node was freed: the next one ran
    assert done["after-month"]["status"] == "succeeded"
    assert _call(f"{router.url}/v1/tasks/month-1", "DELETE")[0] == 409


def test_allow_listed_functions_run_on_the_cluster_and_their_results_are_recorded(router: Router) -> None:
    """The example workloads' real code on Ray workers, through HTTP; a raising one fails with its error."""
    etl, fraud = real_work.ENTRY_POINTS[2], real_work.ENTRY_POINTS[1]
    status, out, _ = _call(f"{router.url}/v1/tasks?wait=true", "POST",
                           {"id": "real-etl", "description": "batch ETL aggregation", "cpu_milli": 500, "work": 0.5,
                            "entry_point": etl, "args": {"rows": 5000, "days": 2}})
    assert status == 200 and out["status"] == "succeeded", out
    assert out["result"]["rows"] == 5000 and set(out["result"]["revenue"]) <= {"north", "south", "east", "west"}
    assert out["exec_ms"] > 0 and out["node"]
    status, out, _ = _call(f"{router.url}/v1/tasks?wait=true", "POST",
                           {"id": "real-bad", "cpu_milli": 500, "work": 0.5, "entry_point": fraud,
                            "args": {"transactions": 0}})
    assert status == 200 and out["status"] == "failed", out
    assert out["reason"].startswith("task raised ValueError: transactions must be an integer"), out["reason"]
    status, out, _ = _call(f"{router.url}/v1/tasks", "POST", {"cpu_milli": 100, "entry_point": "os:system",
                                                             "args": {"command": "touch /tmp/owned"}})
    assert status == 403 and "allow-list" in out["detail"][0]["msg"]


def test_the_python_api_runs_a_drivers_function_through_the_router(router: Router) -> None:
    """A driver connected to the cluster (as a Ray job is) sends its own functions through a Serve handle."""
    script = """
import json, ray
from orchestrator.work import TaskFailed, placed, submit
ray.init()
h = submit(lambda x, k=1: x * k, 21, task={"id": "py-it-1", "cpu_milli": 100, "work": 0.1}, k=2)
out = {"value": h.result(timeout_s=120), "record": h.outcome()}

@placed(cpu_milli=100, work=0.1)
def boom():
    raise RuntimeError("no such table")

try:
    boom.submit().result(timeout_s=120)
except TaskFailed as exc:
    out["failed"] = exc.record["reason"]
print("RESULT " + json.dumps(out))
"""
    st = launcher.LaunchState.load(router.state_dir)
    p = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env={**os.environ, **launcher.client_env(st)},
                       capture_output=True, text=True, timeout=300)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert p.returncode == 0 and line, p.stdout[-3000:] + p.stderr[-3000:]
    out = json.loads(line[len("RESULT "):])
    assert out["value"] == 42 and out["record"]["status"] == "succeeded" and out["record"]["node"]
    assert out["failed"] == "task raised RuntimeError: no such table"
    status, rec, _ = _call(f"{router.url}/v1/tasks/py-it-1")
    assert status == 200 and rec["task"]["owner"] == "python-api" and rec["result"] == 42


def test_cluster_view(router: Router) -> None:
    status, c, _ = _call(f"{router.url}/v1/cluster")
    assert status == 200 and c["cluster"] == "test_small"
    names = {n["name"]: n for n in c["nodes"]}
    assert set(names) == {"edge-1", "cloud-1", "cloud-add1", "gpu-mig-1", "gpu-ts-1"}
    standby = names.pop("cloud-add1")  # the slot test_small.yaml's scaling lets the cloud pool grow into
    assert standby["standby"] and not standby["alive"] and standby["problem"].startswith("standby: not started")
    assert all(n["alive"] and n["usable"] and not n["standby"] for n in names.values())
    assert names["gpu-mig-1"]["mig_free"] and names["edge-1"]["network_ms"] == [50.0, 150.0]
    assert names["gpu-ts-1"]["ray_total"]["GPU"] == 2.0


def test_only_the_configured_address_is_served(router: Router) -> None:
    if router.host_ip.startswith("127."):
        pytest.skip("this machine has no non-loopback address to probe")
    for base in (router.url, router.direct):
        port = int(base.rsplit(":", 1)[1])
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((router.host_ip, port)) != 0, f"port {port} answers on {router.host_ip}"


def test_policy_switch_under_load_drops_nothing(router: Router) -> None:
    from serve_app.loadgen import closed_loop

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert _call(f"{router.url}/v1/policy", "PUT", {"policy": "fastest-feasible"})[0] == 401
    assert _call(f"{router.url}/v1/policy", "PUT", {"policy": "fastest-feasible"},
                 {"Authorization": "Bearer wrong-token-000000"})[0] == 401

    async def load_and_switch():
        switched: list = []

        def bodies():  # keeps sending until 50 requests after the switch was answered
            after = 0
            while after < 50:
                after += bool(switched)
                yield {"cpu_milli": 300}

        load = asyncio.create_task(closed_loop(f"{router.url}/v1/route", bodies(), concurrency=16,
                                               keep_bodies=True))
        await asyncio.sleep(0.3)
        switched.append(await asyncio.to_thread(_call, f"{router.url}/v1/policy", "PUT",
                                                {"policy": "fastest-feasible"}, auth))
        return await load, switched[0]

    res, switched = _run(load_and_switch())
    assert switched[0] == 200 and switched[1]["policy"] == "fastest-feasible"
    assert set(res.statuses) == {200} and not res.errors
    used = {b["policy"] for b in res.bodies}
    assert "fastest-feasible" in used and used <= {"least-loaded", "fastest-feasible"}
    assert _call(f"{router.url}/v1/policy", "PUT", {"policy": "least-loaded"}, auth)[0] == 200


def test_auto_in_the_router_chooses_in_a_worker_process_while_requests_are_answered(router: Router) -> None:
    """The router gives auto a background worker (spawned inside the Serve replica): after its 200-task
    warm-up the decisions go on under the warm-up member, then name the member its simulation chose."""
    from serve_app.loadgen import closed_loop

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert _call(f"{router.url}/v1/policy", "PUT", {"policy": "auto"}, auth)[0] == 200
    try:
        shapes = [{"cpu_milli": 300}, {"cpu_milli": 1500, "work": 2.0}, {"cpu_milli": 500, "gpu_milli": 500}]
        res = _run(closed_loop(f"{router.url}/v1/route", (shapes[i % 3] for i in range(260)), concurrency=8,
                               keep_bodies=True))
        assert set(res.statuses) == {200} and not res.errors
        assert {b["policy"] for b in res.bodies} == {"auto"}
        # in line, decision 201 would wait for the choice and come from its winner: here it and the later
        # ones come from the warm-up member while the worker (spawned, importing, simulating) is at it
        before = sum("(auto: before its first choice)" in b["explanation"] for b in res.bodies)
        assert before > 200, before
        chosen = None
        for _ in range(120):  # the worker imports the simulator and the forest first: seconds
            body = _call(f"{router.url}/v1/route", "POST", shapes[0])[1]
            if "auto: simulated objective" in body["explanation"]:
                chosen = body["explanation"]
                break
            time.sleep(0.5)
        assert chosen is not None, body["explanation"]
        assert "on its last 200 tasks" in chosen  # it chose on the tasks it was asked to place
    finally:
        assert _call(f"{router.url}/v1/policy", "PUT", {"policy": "least-loaded"}, auth)[0] == 200


# ---------------------------------------------------------------- metrics in a real Prometheus


def test_capacity_apply_scales_a_pool_up_and_down_under_load(router: Router) -> None:
    """`orchestrator capacity apply` grows the cloud pool into its standby slot (test_small.yaml's
    ``scaling``) and drains it back while tasks keep arriving: the router places on the new node without
    a restart, the leaving node finishes what it runs, no task is lost, and nothing lands there after."""
    import threading

    st = launcher.LaunchState.load(router.state_dir)
    env = {**os.environ, **launcher.client_env(st), "ORCH_ADMIN_TOKEN": TOKEN}

    def apply(n: int) -> dict:
        p = subprocess.run([sys.executable, "-m", "orchestrator.cli", "capacity", "apply", "--pool", f"cloud={n}",
                            "--router", router.url, "--state-dir", str(router.state_dir), "--drain-timeout", "120"],
                           cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(p.stdout[p.stdout.index("{\n"):])

    sent: list[tuple[str, float]] = []
    stop = threading.Event()

    def load() -> None:  # about 4 CPU-seconds a second into a pool of 4 CPUs: it wants the second node
        i = 0
        while not stop.is_set():
            tid = f"scale-{i}"
            status, out, _ = _call(f"{router.url}/v1/tasks", "POST",
                                   {"id": tid, "pool": "cloud", "cpu_milli": 1000, "work": 20.0})
            assert status == 202, out
            sent.append((tid, time.monotonic()))
            i += 1
            stop.wait(0.25)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(1.0)
        grown = apply(2)
        assert grown["started"] == ["cloud-add1"]
        time.sleep(1.5)
        shrunk = apply(1)
        assert shrunk["stopped"] == ["cloud-add1"]
        left = time.monotonic()
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(30)
    recs = _wait_final(router, [t for t, _ in sent], timeout=180)
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in recs.values()), \
        {t: (r["status"], r["attempts"], r.get("reason")) for t, r in recs.items()
         if r["status"] != "succeeded" or r["attempts"] != 1}  # none stopped part-way and run again
    on_new = [t for t, r in recs.items() if r["node"] == "cloud-add1"]
    assert on_new, "no task ran on the node the pool grew by"
    late = [t for t, at in sent if at > left]
    assert late and all(recs[t]["node"] == "cloud-1" for t in late), [(t, recs[t]["node"]) for t in late]
    nodes = {n["name"]: n for n in _call(f"{router.url}/v1/cluster")[1]["nodes"]}
    assert nodes["cloud-add1"]["standby"] and not nodes["cloud-add1"]["alive"] and not nodes["cloud-add1"]["draining"]
    assert "cloud-add1" not in launcher.LaunchState.load(router.state_dir).nodes
    print(f"{len(sent)} tasks, {len(on_new)} on cloud-add1 while it ran; none lost; seconds: up {grown['seconds']}, "
          f"down {shrunk['seconds']}")


def test_prometheus_scrapes_the_router_series(router: Router, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus; .ci/run does)")
    from cluster.monitoring import dashboard_queries, prometheus_config

    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(prometheus_config(router.state_dir))
    port = launcher.free_port()
    proc = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        for i in range(20):  # decisions and finished tasks to report
            _call(f"{router.url}/v1/route", "POST", {"cpu_milli": 100})
        _call(f"{router.url}/v1/tasks?wait=true", "POST", {"cpu_milli": 100, "work": 0.05})
        wanted = ["ray_orch_decisions_total", "ray_orch_decision_latency_seconds_bucket", "ray_orch_tasks_accepted_total",
                  "ray_orch_task_latency_seconds_bucket", "ray_orch_task_cost_dollars_total"]
        found: dict[str, list] = {}
        deadline = time.monotonic() + 180  # Ray exports every few seconds; a loaded box is slower
        while time.monotonic() < deadline and len(found) < len(wanted):
            _call(f"{router.url}/v1/route", "POST", {"cpu_milli": 100})
            for name in wanted:
                if name in found:
                    continue
                try:
                    _, body, _ = _call(f"http://127.0.0.1:{port}/api/v1/query?query={name}", timeout=5)
                except (OSError, ValueError):  # not up yet, or a plain-text 503 while it starts
                    continue
                if body and body.get("data", {}).get("result"):
                    found[name] = body["data"]["result"]
            time.sleep(2)
        assert set(found) == set(wanted), f"missing series: {set(wanted) - set(found)}"
        # one latency observation per decision: the buffered flush hands Ray every value it holds
        counts: list[float] = []
        until = time.monotonic() + 60
        while time.monotonic() < until:
            counts = [_scalar(port, f"sum({name})") for name in
                      ("ray_orch_decision_latency_seconds_count", "ray_orch_decisions_total")]
            if counts[0] == counts[1] >= 21:
                break
            time.sleep(2)
        assert counts[0] == counts[1] >= 21, counts
        pools = {r["metric"].get("pool") for r in found["ray_orch_decisions_total"]}
        assert pools & {"edge", "cloud", "gpu-mig", "gpu-ts"}
        # seconds: the decision buckets end at 0.1 s (100 ms); a counter is exported once, as _total
        les = {r["metric"].get("le") for r in found["ray_orch_decision_latency_seconds_bucket"]}
        assert {"0.001", "0.1", "+Inf"} <= les, les
        assert all(n.endswith("_total") for n in _names(port, "ray_orch_") if "_tasks_in_flight" not in n
                   and not n.endswith(("_bucket", "_sum", "_count")))
        # every query of the Grafana dashboard is valid PromQL over these series
        for expr in dashboard_queries():
            q = urllib.parse.quote(expr.replace("$__rate_interval", "1m").replace("$__range", "10m")
                                   .replace("$session", ".*"))
            status, body, _ = _call(f"http://127.0.0.1:{port}/api/v1/query?query={q}", timeout=10)
            assert status == 200 and body["status"] == "success", (expr, body)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _names(port: int, prefix: str) -> list[str]:
    """The metric names Prometheus holds that start with ``prefix``."""
    _, body, _ = _call(f"http://127.0.0.1:{port}/api/v1/label/__name__/values", timeout=10)
    return [n for n in (body or {}).get("data", []) if n.startswith(prefix)]


def _scalar(port: int, expr: str) -> float:
    """The value of a PromQL expression with one result (NaN when it has none yet)."""
    _, body, _ = _call(f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=10)
    result = (body or {}).get("data", {}).get("result") or []
    return float(result[0]["value"][1]) if result else float("nan")


# ---------------------------------------------------------------- property-based fuzz of the OpenAPI document


def test_openapi_fuzz_finds_no_server_error(router: Router) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{router.url}/openapi.json")
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @settings(max_examples=45, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=schema.as_strategy(mode))
        def fuzz(case) -> None:
            if case.method == "POST" and case.path == "/v1/tasks":
                case.query = {"wait": "false"}  # never wait on a generated task; keep generated work short
                if isinstance(case.body, dict) and isinstance(case.body.get("work"), (int, float)):
                    case.body["work"] = min(abs(case.body["work"]), 0.5)
            resp = case.call(base_url=router.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            if resp.status_code >= 500:
                failures.append(f"{case.method} {case.path} {case.query} {case.body!r:.300} -> "
                                f"{resp.status_code} {resp.text[:300]}")

        fuzz()
    assert not failures, "\n".join(failures[:10])
    _call(f"{router.url}/v1/policy", "PUT", {"policy": "least-loaded"}, {"Authorization": f"Bearer {TOKEN}"})
    _call(f"{router.url}/v1/cluster/draining", "PUT", {"nodes": []}, {"Authorization": f"Bearer {TOKEN}"})


# ---------------------------------------------------------------- faults


def test_killing_the_router_loses_no_acknowledged_task(router: Router) -> None:
    from serve_app.loadgen import post_with_retry
    import aiohttp

    n = 40  # 2-CPU tasks: a few Ray workers serve them all (each cold worker costs seconds here)
    acked: dict[str, int] = {}
    killed: list[int] = []
    retried = 0

    async def client(i: int, s) -> None:
        nonlocal retried
        status, body, tries = await post_with_retry(s, f"{router.url}/v1/tasks",
                                                    {"id": f"kill-{i}", "cpu_milli": 2000, "work": 0.05},
                                                    deadline_s=180)
        acked[f"kill-{i}"] = status
        retried += tries > 1

    async def load() -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout, headers={"Authorization": f"Bearer {KEY['key']}"}) as s:
            sem = asyncio.Semaphore(8)

            async def one(i):
                async with sem:
                    await client(i, s)
                    await asyncio.sleep(0.02)

            await asyncio.gather(*(one(i) for i in range(n)))

    async def main() -> None:
        task = asyncio.create_task(load())
        while len(acked) < n // 3:
            await asyncio.sleep(0.05)
        pid = await asyncio.to_thread(_router_pid, router)
        os.kill(pid, signal.SIGKILL)  # the router replica process
        killed.append(pid)
        await task

    t0 = time.monotonic()
    _run(main())
    print(f"\nall {n} clients answered {time.monotonic() - t0:.1f} s after the load started ({retried} retried)")
    assert len(acked) == n and set(acked.values()) <= {200, 202}, acked  # every client got through by retrying
    con = sqlite3.connect(router.history)
    stored = {r[0] for r in con.execute("SELECT task_id FROM tasks WHERE task_id LIKE 'kill-%'")}
    con.close()
    assert stored == set(acked), f"acknowledged but not in the history: {sorted(set(acked) - stored)[:10]}"
    recs = _wait_final(router, sorted(acked), timeout=180)
    print(f"all finished {time.monotonic() - t0:.1f} s after the load started")
    assert all(r["status"] == "succeeded" for r in recs.values()), \
        {i: (r["status"], r.get("reason")) for i, r in recs.items() if r["status"] != "succeeded"}
    assert killed[0] != _router_pid(router)


def test_a_dead_node_shows_down_and_its_tasks_move_or_fail_with_a_reason(router: Router) -> None:
    # Long enough to be running when the node dies. The pinned ones never finish (400 s of work at 20x
    # compression is 20 s; they fail when the node dies, so their length costs no time): with 2 s, a
    # loaded box could finish them before the kill landed. The free ones are re-run elsewhere: 2 s.
    pinned = [f"pin-{i}" for i in range(2)]  # may only run in the cloud pool, whose one node dies
    free = [f"free-{i}" for i in range(4)]  # 3 CPUs: cloud-1 or a GPU node can take them
    for i in pinned:
        status, out, _ = _call(f"{router.url}/v1/tasks", "POST",
                               {"id": i, "cpu_milli": 1000, "work": 400.0, "pool": "cloud"})
        assert status == 202 and out["node"] == "cloud-1", out
    on_cloud = []
    for i in free:
        status, out, _ = _call(f"{router.url}/v1/tasks", "POST", {"id": i, "cpu_milli": 3000, "work": 40.0})
        assert status == 202, out
        if out["node"] == "cloud-1":
            on_cloud.append(i)
    time.sleep(1.0)
    launcher.kill_node("cloud-1", router.state_dir)
    t0 = time.monotonic()
    while True:
        try:
            nodes = {n["name"]: n for n in _call(f"{router.url}/v1/cluster", timeout=5)[1]["nodes"]}
        except OSError:  # a slow answer on a loaded box: ask again
            nodes = {"cloud-1": {"alive": True}}
        if not nodes["cloud-1"]["alive"]:
            break
        assert time.monotonic() - t0 < 15, "cloud-1 still shown alive 15 s after its raylet was killed"
        time.sleep(0.2)
    print(f"cloud-1 shown down {time.monotonic() - t0:.1f} s after the kill; on it: {pinned + on_cloud}")
    recs = _wait_final(router, pinned + free, timeout=180)
    for i in pinned:  # nowhere else to go: failed, saying which node was lost and why
        assert recs[i]["status"] == "failed" and "cloud-1" in recs[i]["reason"], recs[i]
    for i in on_cloud:  # re-placed on another node
        r = recs[i]
        assert r["status"] == "succeeded" and r["node"] != "cloud-1" and r["attempts"] >= 2, r
    assert all(recs[i]["status"] == "succeeded" for i in free), {i: recs[i] for i in free}
    status, d, _ = _call(f"{router.url}/v1/route", "POST", {"cpu_milli": 100, "pool": "cloud"})
    assert status == 503 and "cloud-1" in d["detail"]
    launcher.up(SMALL, state_dir=router.state_dir)  # restart the missing node for whatever runs next
