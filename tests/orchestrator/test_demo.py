"""``make demo``'s script end to end, isolated, then ``demo-stop``: nothing it started is left.

The demo runs on free ports (outside Ray's worker port range), its own launcher state
folder, Ray token, result folder and model registry (the shipped learned policies copied
in, so the router runs the ``rf`` a user's demo runs, and nothing trained locally leaks in),
with 5 s of mixed.yaml on test_small.yaml and no trace replay. It is a separate package from
``tests/integration``, so that package's cluster is never up at the same time.
While the demo is up: the three URLs answer, the replay through the router wrote a
record per task, Prometheus (Debian's ``prometheus``, when installed) has scraped the
router's series, and (with Debian's Chromium) the Streamlit Submit page places a task
on the live router and shows its measured result.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from cluster.procs import all_pids, cmdline, free_fixed_port, port_open
from tests.chromium import chromium
from tests import pids
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

DURATION = 5  # seconds of mixed.yaml replayed through the router: 23 tasks
PROMETHEUS = shutil.which("prometheus")
PORTS = ("DEMO_RAY_PORT", "DEMO_DASHBOARD_PORT", "DEMO_ROUTER_PORT", "DEMO_STREAMLIT_PORT", "DEMO_PROMETHEUS_PORT")


def _free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A distinct free port per name, outside Ray's worker port range (10002-19999) and the ephemeral
    range (Ray's outgoing connections could take an ephemeral one before the demo binds it)."""
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_fixed_port()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


def _answers(url: str, timeout: float = 10.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def _registry(root: Path) -> Path:
    """The shipped versions of both learned policies (the .gitignore re-includes), as a registry of the test's own."""
    from cluster.package_data import shipped_refs

    reg = root / "registry"
    refs = [r for r in shipped_refs(REPO_ROOT) if r.split("/")[0] in ("rf", "rl")]
    assert any(r.startswith("rf/") for r in refs), "no shipped rf in the checkout"
    for ref in refs:
        shutil.copytree(REPO_ROOT / "artifacts" / "policies" / ref, reg / ref)
    return reg


@pytest.fixture(scope="module")
def demo():
    """The demo, up (timed), as the dict of its settings; stopped and checked afterwards."""
    from cluster import launcher

    root = Path(tempfile.mkdtemp(prefix="orch-demo-", dir="/tmp"))  # short: Ray's Unix socket paths
    ports = _free_ports(PORTS)
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "DEMO_OUT": str(root / "out"),
           "DEMO_RAY_DIR": str(root / "ray"), "DEMO_TOKEN_FILE": str(root / "auth_token"),
           "ORCH_REGISTRY": str(_registry(root)), "DEMO_DURATION": str(DURATION), "DEMO_SKIP_TRACE": "1",
           "DEMO_REAL_DURATION": "0",  # the real-work step is covered apart (integration tests, replays, calibrate)
           "DEMO_CLUSTER": "configs/cluster/test_small.yaml",  # one node per pool: two raylets fewer to start
           "PYTHONUNBUFFERED": "1"}
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "ORCH_RAY_DIR", "ORCH_TEST_RAY_DIR", launcher.ENV_CONFIG,
              "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(k, None)
    info = {"root": root, "env": env, **ports,
            "dashboard": f"http://127.0.0.1:{ports['DEMO_DASHBOARD_PORT']}",
            "router": f"http://127.0.0.1:{ports['DEMO_ROUTER_PORT']}",
            "streamlit": f"http://127.0.0.1:{ports['DEMO_STREAMLIT_PORT']}",
            "prometheus": f"http://127.0.0.1:{ports['DEMO_PROMETHEUS_PORT']}"}
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "orchestrator.demo"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        info["up_s"] = time.monotonic() - t0
        info["log"] = proc.stdout + proc.stderr
        steps = [line for line in info["log"].splitlines() if line.startswith("==> ")]
        print(f"\n[demo] up in {info['up_s']:.0f} s; " + "; ".join(steps), file=sys.stderr)
        assert proc.returncode == 0, info["log"][-4000:]
        state = json.loads((root / "out" / "demo.json").read_text())
        st = launcher.LaunchState.load(root / "ray")
        info["state"] = state
        asked = info["prometheus"]
        if state.get("prometheus") and state["prometheus"] != asked:
            # the cluster it started first may hold the port picked free before it (Ray's exporters and workers
            # take ports from the same range): the demo moves to the next free one, and must say so
            assert f"port {info['DEMO_PROMETHEUS_PORT']} is in use: Prometheus listens on" in info["log"]
            info["prometheus"] = state["prometheus"]
        info["sids"] = [r.sid for r in st.nodes.values()] if st else []
        holder = root / "ray" / launcher.ATTACHED_DIR / "router-holder"  # `serve up`'s background driver
        if holder.is_file():
            state["router_holder_pid"] = json.loads(holder.read_text())["sid"]
        yield info
    finally:
        _stop_and_check(info)


def _stop_and_check(info: dict) -> None:
    from cluster import launcher

    root = info["root"]
    st = launcher.LaunchState.load(root / "ray")
    sids = info.get("sids") or ([r.sid for r in st.nodes.values()] if st else [])
    state = info.get("state") or {}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.demo", "stop"], cwd=REPO_ROOT, env=info["env"],
                          capture_output=True, text=True, timeout=300)
    left = [p for s in sids for p in launcher.session_pids(s)]
    own = {k: state.get(k) for k in ("streamlit_pid", "router_holder_pid", "prometheus_pid") if state.get(k)}
    if left:  # clean up for the next tests before failing
        launcher.stop_sessions(sids, grace_s=2)
    alive = {k: pid for k, pid in own.items() if pids.alive(pid)}
    alive.update({f"prometheus {pid}": pid for pid in _prometheus_pids(root)})  # recorded or not
    for pid in alive.values():
        os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not left, f"processes of the demo's cluster left after demo-stop: {left}"
    assert not alive, f"processes the demo started left after demo-stop: {alive}"
    for name in PORTS:
        assert not port_open("127.0.0.1", info[name]), f"{name} {info[name]} still open after demo-stop"


def _prometheus_pids(root: Path) -> list[int]:
    """Live prometheus processes on this demo's data (its folder is on their command line)."""
    return [pid for pid in all_pids() if "prometheus" in (c := cmdline(pid)) and str(root) in c
            and "pytest" not in c and pids.alive(pid)]


def _query(base: str, expr: str) -> list[dict]:
    """The result of an instant PromQL query (empty when it has none, or on any error)."""
    try:
        with urllib.request.urlopen(f"{base}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=10) as r:
            return json.loads(r.read()).get("data", {}).get("result") or []
    except (OSError, ValueError):
        return []


def test_the_three_urls_answer(demo) -> None:
    log = demo["log"]
    for url in (demo["dashboard"], demo["router"] + "/docs", demo["streamlit"]):
        assert url in log, f"the demo did not print {url}"
        assert _answers(url) == 200, url
    assert "make demo-stop" in log
    st = demo["state"]
    assert st["cluster"] and st["serve"] and st["streamlit_pid"] and st["router_holder_pid"]
    if PROMETHEUS is None:
        assert "prometheus is not installed" in log


def test_prometheus_scrapes_the_router(demo) -> None:
    """The demo's Prometheus is ready, in the printed summary, and holds the router's series."""
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus; .ci/run does)")
    url, st = demo["prometheus"], demo["state"]
    assert st["prometheus"] == url and st["prometheus_pid"] and url in demo["log"]
    assert _answers(url + "/-/ready") == 200
    wanted = ("ray_orch_decisions_total", "ray_orch_decision_latency_seconds_count")
    found: dict[str, list[dict]] = {}
    deadline = time.monotonic() + 60  # Ray's agents export every few seconds; the scrape is every 5 s
    while time.monotonic() < deadline and len(found) < len(wanted):
        found.update({q: r for q in wanted if q not in found and (r := _query(url, q))})
        time.sleep(2)
    assert set(found) == set(wanted), f"no {set(wanted) - set(found)} in Prometheus at {url}"
    assert {r["metric"].get("pool") for r in found["ray_orch_decisions_total"]} & {"edge", "cloud", "gpu-mig",
                                                                                     "gpu-ts"}


def test_the_replay_through_the_router_wrote_a_record_per_task(demo) -> None:
    from replays.live import load_tasks

    out = demo["root"] / "out"
    tasks = load_tasks(REPO_ROOT / "configs" / "workloads" / "mixed.yaml", seed=None, duration_s=DURATION,
                       load_factor=None)
    recs = pd.read_csv(out / "replay" / "records_rf:latest.csv")  # the router's default: the registry's rf
    assert len(recs) == len(tasks) > 0
    assert set(recs["task_id"]) == {t.id for t in tasks}
    assert (recs["status"] == "succeeded").mean() >= 0.9, recs["status"].value_counts().to_dict()
    assert recs.loc[recs["status"] == "succeeded", "latency_ms"].gt(0).all()
    index = json.loads((out / "replay" / "summary.json").read_text())
    assert index["meta"]["kind"] == "replay" and "rf:latest" in index["policies"]
    meta = json.loads((out / "replay" / "summary_rf:latest.json").read_text())["meta"]
    # every record is in the router's history under the run's id prefix
    with urllib.request.urlopen(f"{demo['router']}/v1/tasks/{meta['run_tag']}-{tasks[0].id}", timeout=10) as r:
        assert json.loads(r.read())["status"] in ("succeeded", "failed")
    assert not (out / "replay_real").exists()  # DEMO_REAL_DURATION=0 skips the real-work step
    sims = json.loads((out / "online" / "summary.json").read_text())["policies"]
    assert {"rf:latest", "rl:latest", "fgd", "oracle"} <= set(sims)
    assert "ray job submit" in demo["log"]


def test_the_router_serves_the_demo_s_capacity_recommendation(demo) -> None:
    with urllib.request.urlopen(f"{demo['router']}/v1/capacity/recommendation", timeout=10) as r:
        rec = json.loads(r.read())
    assert rec["policy"] == "fastest-feasible" and rec["workload"].endswith("mixed.yaml")
    assert rec["recommended"]["cost_per_hour"] > 0 and rec["what_ifs"] > 0
    assert _answers(f"{demo['router']}/v1/capacity/forecast?interval=1D") == 409  # minutes of history only


def test_a_second_run_reuses_what_is_running(demo) -> None:
    """Last of the cheap checks: with ``DEMO_DURATION=0`` it replays nothing, so the first run's records stay."""
    from cluster import launcher

    records = demo["root"] / "out" / "replay" / "records_rf:latest.csv"
    before = records.read_bytes()
    env = {**demo["env"], "DEMO_DURATION": "0"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.demo"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    print("\n[demo again] " + "; ".join(line for line in log.splitlines() if line.startswith("==> ")), file=sys.stderr)
    assert proc.returncode == 0, log[-4000:]
    assert "a cluster is already running" in log and "router already answering" in log
    assert "DEMO_DURATION=0: no configs/workloads/mixed.yaml replay" in log and "/ray job submit" not in log
    assert records.read_bytes() == before
    assert f"something already listens on {demo['streamlit']}" in log
    st = launcher.LaunchState.load(demo["root"] / "ray")
    assert sorted(r.sid for r in st.nodes.values()) == sorted(demo["sids"])  # nothing restarted
    state = json.loads((demo["root"] / "out" / "demo.json").read_text())
    assert state["streamlit_pid"] == demo["state"]["streamlit_pid"]
    if PROMETHEUS is not None:
        assert f"Prometheus already answering at {demo['prometheus']}" in log
        assert state["prometheus_pid"] == demo["state"]["prometheus_pid"]
    holder = demo["root"] / "ray" / launcher.ATTACHED_DIR / "router-holder"
    assert json.loads(holder.read_text())["sid"] == demo["state"]["router_holder_pid"]  # the same router
    assert state["cluster"] and state["serve"]  # still recorded as the demo's, for demo-stop


def _see(page, text: str, timeout_s: float, demo: dict) -> None:
    """Wait for ``text`` on the page; failing, say what the page and the router's history showed instead."""
    from playwright.sync_api import Error as PlaywrightError  # its TimeoutError is one

    try:
        page.wait_for_selector(f"text={text}", timeout=timeout_s * 1000)
    except PlaywrightError as waited:
        try:
            body = page.inner_text("body", timeout=5000)
        except PlaywrightError as e:
            body = f"(the page did not answer: {e}; the wait ended with: {waited})"
        history = demo["root"] / "out" / "history.db"
        pytest.fail(f"{text!r} not shown within {timeout_s:g} s; the page's text ends with:\n{body[-3000:]}\n"
                    f"router healthz: {_answers(demo['router'] + '/healthz')}; history: {_last_tasks(history)}")


def _last_tasks(db: Path) -> str:
    """The router history's last three task rows, with the column names, for a failure's message."""
    import sqlite3
    from contextlib import closing

    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            if "tasks" not in names:
                return f"no tasks table (tables: {names})"
            cols = [r[1] for r in con.execute("PRAGMA table_info(tasks)")]
            return f"{cols}: {con.execute('SELECT * FROM tasks ORDER BY rowid DESC LIMIT 3').fetchall()}"
    except sqlite3.Error as e:
        return f"unreadable ({e})"


@pytest.mark.browser
def test_submit_page_places_a_task_on_the_live_router_and_shows_the_result(demo) -> None:
    with chromium() as b:
        page = b.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(demo["streamlit"])
        page.wait_for_selector("text=AI Workload Orchestrator", timeout=60_000)
        page.get_by_text("Submit", exact=True).first.click()
        page.wait_for_selector("h2:has-text('Submit a task')", timeout=30_000)
        page.get_by_label("Example").click()
        page.get_by_role("option", name="LLM inference").click()
        page.get_by_role("button", name="Submit").click()
        _see(page, "Placed on", 90, demo)
        _see(page, "Measured result", 90, demo)
        _see(page, "Measured on the cluster", 30, demo)
        for what in ("Confidence", "Why:", "Status", "Latency (ms)", "Cost ($)", "succeeded"):
            # Streamlit sends a run's elements as they are made: wait for each rather than read once
            _see(page, what, 30, demo)
        body = page.inner_text("body")
        assert "Traceback" not in body and "Something went wrong" not in body
        assert "gpu" in body  # the LLM example needs a GPU share: a GPU pool and its share


def test_without_prometheus_the_demo_says_so_in_one_line_and_goes_on(tmp_path, monkeypatch, capsys) -> None:
    from orchestrator import demo as d

    monkeypatch.setattr(d.shutil, "which", lambda name: None)
    assert d.start_prometheus(d.Settings.from_env({"DEMO_OUT": str(tmp_path)}), {}) is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "prometheus is not installed" in out[0]


def test_a_taken_prometheus_port_moves_to_the_next_free_one_and_demo_stop_ends_it(tmp_path, monkeypatch,
                                                                                   capsys) -> None:
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus; .ci/run does)")
    from orchestrator import demo as d
    from cluster import monitoring

    monkeypatch.setattr(monitoring, "prometheus_config", lambda state_dir: "global:\n  scrape_interval: 5s\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cfg = d.Settings.from_env({"DEMO_OUT": str(tmp_path), "DEMO_PROMETHEUS_PORT": str(port)})
    st: dict = {}
    try:
        url = d.start_prometheus(cfg, st)
        assert url and url != f"http://127.0.0.1:{port}" and _answers(url + "/-/ready") == 200
        assert f"port {port} is in use: Prometheus listens on {url.rsplit(':', 1)[1]}" in capsys.readouterr().out
        assert (tmp_path / "prometheus").is_dir() and st["prometheus"] == url
        assert d.start_prometheus(cfg, st) == url  # a second run reuses it
    finally:
        taken.close()
        assert d.stop(cfg) == 0
    assert "stopped Prometheus" in capsys.readouterr().out
    assert not pids.alive(st["prometheus_pid"]) and not _prometheus_pids(tmp_path)


@pytest.mark.parametrize("var, value, why", [("DEMO_DURATION", "ten", "a number at least 0"),
                                             ("DEMO_COMPRESSION", "0", "a number above 0"),
                                             ("DEMO_ROUTER_PORT", "80000", "a TCP port, 1-65535")])
def test_a_bad_setting_exits_2_naming_it_before_anything_starts(tmp_path, var, value, why) -> None:
    env = {**os.environ, "DEMO_OUT": str(tmp_path / "out"), "DEMO_RAY_DIR": str(tmp_path / "ray"), var: value}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.demo"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and f"{var}={value!r}: {why}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "ray").exists() and not (tmp_path / "out").exists()
