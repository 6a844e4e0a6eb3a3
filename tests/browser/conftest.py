"""A real Streamlit server and a real headless Chromium (Debian's), driven by Playwright.

Nothing is mocked: the view reads a small result set that a real simulation run
writes, and the router URL points at a closed port so the pages must show their
"router down" sentences. Skipped, with the reason, when Chromium is not installed
(`.ci/run` installs it).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chromium import chromium
from tests.conftest import REPO_ROOT

ADMIN_SECRET = "test-secret-7f3a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def result_root(tmp_path_factory) -> Path:
    """One real, small comparison run (3 policies, 60 s of the mixed workload)."""
    from cluster.topology import load_cluster
    from simulations.compare import compare_policies
    from simulations.workloads import generate, load_workload

    root = tmp_path_factory.mktemp("results")
    spec = load_cluster(REPO_ROOT / "configs" / "cluster" / "local.yaml")
    tasks = generate(load_workload(REPO_ROOT / "configs" / "workloads" / "mixed.yaml"), seed=3, duration_s=60)
    compare_policies(spec, tasks, ["least-loaded", "fastest-feasible", "fgd"], seed=3, out=root / "small",
                     progress=False)
    return root


@pytest.fixture(scope="session")
def streamlit_url(result_root: Path):
    port = _free_port()
    env = {**os.environ, "ORCH_RESULTS": str(result_root), "ORCH_ADMIN_TOKEN": ADMIN_SECRET,
           "ORCH_ROUTER_URL": f"http://127.0.0.1:{_free_port()}"}  # nothing listens there
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
