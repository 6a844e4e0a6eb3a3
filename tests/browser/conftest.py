"""A real Streamlit server and a real headless Chromium (Debian's), driven by Playwright.

The view reads a comparison of the 13 heuristic policies that a real simulation run
writes (and a real packing replay when the shared traces are present). Its router URL
points at a closed port, so the pages must show their "router down" sentences; a test
that needs a router types the URL of :func:`live_router` into the sidebar: the real
FastAPI app, policies and SQLite history over a fake Ray node view
(tests/serve_app/router_fakes.py). Prometheus is :class:`FakePrometheus`; Grafana and the
Ray dashboard point at closed ports. Skipped, with the reason, when Chromium is not
installed (`.ci/run` installs it). Screenshots go to ``$ORCH_SCREENSHOTS`` (default
``results/screenshots``) and are listed at the end of the run.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from cluster.procs import free_fixed_port
from tests.browser.fake_prometheus import FakePrometheus
from tests.chromium import chromium
from tests.conftest import REPO_ROOT, SCREENSHOTS, TRACES

ADMIN_SECRET = "test-secret-7f3a"
#: the 13 heuristics `make demo` compares (its learned two need trained models)
POLICIES = ["random", "round-robin", "least-loaded", "cheapest-feasible", "fastest-feasible", "best-fit",
            "dot-product", "gpu-packing", "gpu-clustering", "fgd", "ray-default", "k8s-default", "oracle"]
#: the live router's policy: not the first of the registry's (alphabetical) list
ROUTER_POLICY = "fgd"
HISTORY_TASKS = 250
#: the counterfactual replay the Loop page shows, the champion first
LOOP_POLICIES = ["fastest-feasible", "least-loaded", "random"]


@pytest.fixture(scope="session")
def result_root(tmp_path_factory) -> Path:
    """One real comparison run (13 policies, 60 s of the mixed workload), and a packing replay."""
    from cluster.topology import load_cluster
    from simulations.compare import compare_policies
    from simulations.workloads import generate, load_workload

    root = tmp_path_factory.mktemp("results")
    spec = load_cluster(REPO_ROOT / "configs" / "cluster" / "local.yaml")
    tasks = generate(load_workload(REPO_ROOT / "configs" / "workloads" / "mixed.yaml"), seed=3, duration_s=60)
    compare_policies(spec, tasks, POLICIES, seed=3, out=root / "small", progress=False)
    trace = TRACES / "alibaba_gpu_v2023"
    if trace.is_dir():  # about 6 s: two policies, one seed, as `orchestrator simulate --mode packing` writes it
        from simulations.packing import reproduce

        df = reproduce(trace / "openb_pod_list_default.csv", trace / "openb_node_list_gpu_node.csv",
                       ["random", "fgd"], seeds=[42], progress=False)
        (root / "packing").mkdir()
        df.to_csv(root / "packing" / "packing.csv")
    return root


@pytest.fixture(scope="session")
def prometheus() -> Iterator[FakePrometheus]:
    with FakePrometheus() as prom:
        yield prom


@contextmanager
def _serving(svc) -> Iterator[str]:
    """``svc``'s real FastAPI app under uvicorn on a free port, with the browser tests' admin secret."""
    import uvicorn

    from serve_app.api import create_api
    from serve_app.auth import AdminAuth
    from serve_app.config import token_sha256

    auth = AdminAuth(token_sha256(ADMIN_SECRET), "no admin token")
    server = uvicorn.Server(uvicorn.Config(create_api(lambda: svc, lambda: auth), host="127.0.0.1",
                                           port=free_fixed_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        svc.close()


@pytest.fixture(scope="session")
def live_router(tmp_path_factory) -> Iterator[str]:
    """The router's HTTP API on a free port, using ``fgd``, with a history of 250 finished tasks."""
    from tests.serve_app.router_fakes import make_service

    svc, _ = make_service(tmp_path_factory.mktemp("router"), policy=ROUTER_POLICY)
    t0 = time.time() - 3600
    pools, pols = ["edge", "cloud", "gpu-mig", "gpu-ts"], ["fgd", "least-loaded", "fastest-feasible"]
    for i in range(HISTORY_TASKS):
        tid = f"t{i:04d}"
        svc.history.accept(tid, {"description": "browser test"}, policy=pols[i % 3], accepted_at=t0 + 10 * i,
                           kind="demo", priority=5)
        svc.history.update(tid, "succeeded", pool=pools[i % 4], node=f"{pools[i % 4]}-1", cost=0.01 * (1 + i % 4),
                           latency_ms=100.0 + i, slo_met=i % 5 != 0)
    svc.history.flush()
    with _serving(svc) as url:
        yield url


@pytest.fixture(scope="session")
def keyed_router(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A router whose decisions too need an API key (``open_route: false``), and a key of it."""
    from tests.serve_app.router_fakes import api_key, make_service

    svc, _ = make_service(tmp_path_factory.mktemp("keyed-router"), open_route=False)
    secret = api_key(svc, "browser")
    with _serving(svc) as url:
        yield url, secret


@pytest.fixture(scope="session")
def capacity_router(tmp_path_factory) -> Iterator[str]:
    """A router whose history holds four days of tasks with a daily cycle, and whose ``capacity_dir``
    holds a real ``capacity recommend`` result (gpu_heavy at 6/s, fastest-feasible, one 60 s seed)."""
    from capacity.cli import main as capacity_main
    from tests.serve_app.router_fakes import fill_demand, make_service

    root = tmp_path_factory.mktemp("capacity-router")
    assert capacity_main(["capacity", "recommend", "--workload", "configs/workloads/gpu_heavy.yaml", "--rate", "6",
                          "--window", "60", "--seeds", "1", "--policy", "fastest-feasible", "--max-nodes", "3",
                          "--out", str(root / "recommend")]) == 0
    svc, _ = make_service(root, capacity_dir=str(root / "recommend"))
    fill_demand(svc, days=4, per_hour=6.0)
    with _serving(svc) as url:
        yield url


@pytest.fixture(scope="session")
def loop_router(tmp_path_factory) -> Iterator[str]:
    """A router whose ``loop_dir`` holds a real ``orchestrator calibrate`` report (of a history whose true
    factors are known) and a real counterfactual replay, whose history holds decisions with a challenger's
    beside them, and which has promoted its challenger (the watch and the log)."""
    from orchestrator.cli import main
    from tests.serve_app.router_fakes import make_service
    from tests.simulations import test_calibration, test_history_replay

    root = tmp_path_factory.mktemp("loop-router")
    measured = test_calibration.write_history(root / "measured.db", test_calibration.records())
    assert main(["calibrate", "--history", measured, "--cluster", str(test_calibration.LOCAL),
                 "--out", str(root / "loop" / "calibration")]) == 0
    replayed, _ = test_history_replay.write_history(root / "replayed.db", 60)
    assert main(["counterfactual", "--history", replayed, "--cluster", str(test_calibration.LOCAL), "--policies",
                 ",".join(LOOP_POLICIES), "--seeds", "1", "--out", str(root / "loop" / "counterfactual")]) == 0
    svc, _ = make_service(root, loop_dir=str(root / "loop"), promotion_window=2)
    now = time.time()
    for i in range(40):  # rl:2 in shadow beside rf:5: it agrees on three tasks of four
        choice = {"latency_ms": 100.0 + i, "score": 0.5 + i / 100}
        shadow = {"policy": "rl:2", "agrees": i % 4 != 0,
                  **({} if i % 4 else {"expected": {"latency_ms": 90.0 + i, "score": 0.45 + i / 100}})}
        svc.history.accept(f"s{i:03d}", {"description": "browser test"}, policy="rf:5", accepted_at=now - 600 + i,
                           kind="demo")
        svc.history.update(f"s{i:03d}", "succeeded", score=0.6, slo_met=i % 10 != 0,
                           decision={"policy": "rf:5", "expected": choice, "shadow": shadow})
    svc.history.flush()
    for _ in range(2):
        svc.promotions.outcome("fastest-feasible", False)
    svc.set_shadow("least-loaded")
    svc.promote()
    with _serving(svc) as url:
        yield url


@pytest.fixture(scope="session")
def streamlit_url(result_root: Path, prometheus: FakePrometheus):
    port = free_fixed_port()
    env = {**os.environ, "ORCH_RESULTS": str(result_root), "ORCH_ADMIN_TOKEN": ADMIN_SECRET,
           "ORCH_ROUTER_URL": f"http://127.0.0.1:{free_fixed_port()}",  # nothing listens there
           "ORCH_GRAFANA_URL": f"http://127.0.0.1:{free_fixed_port()}",  # neither runs: no links to them
           "ORCH_RAY_DASHBOARD": f"http://127.0.0.1:{free_fixed_port()}",
           "ORCH_PROMETHEUS_URL": prometheus.url}
    env.pop("ORCH_ADMIN_TOKEN_FILE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "serve_app" / "dashboard.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode())
            time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="package")
def browser():
    """Package scope: Playwright's sync API keeps an event loop in this thread while it is open,
    and later packages (tests/demo, the router's load generators) need the thread without one."""
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser, streamlit_url):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.goto(streamlit_url)
    pg.wait_for_selector("text=AI Workload Orchestrator", timeout=60_000)
    yield pg
    ctx.close()


def screenshot(page, name: str) -> Path:
    """The whole page as a PNG. Streamlit scrolls its main column inside the window, so the
    window is first made as tall as that column's content (a plain full-page shot stops at the fold)."""
    height = page.evaluate("Math.max(...[...document.querySelectorAll('[data-testid=stMain], section.main')]"
                           ".map(e => e.scrollHeight), document.body.scrollHeight)")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": int(height) + 40})
    page.wait_for_timeout(1500)  # charts re-lay out to the new size
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    print(f"screenshot: {path}")
    return path
