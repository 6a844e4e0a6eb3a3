"""``make demo``: the whole system on one machine, from a fresh clone, with no manual step.

Steps (each prints what it does; a second run reuses what is already up):

1. the local heterogeneous Ray cluster (``orchestrator cluster up``);
2. the shipped learned policies: the node-level RandomForest (``artifacts/policies/rf``,
   distilled from the rollout teacher; a checkout without it trains a small one in about
   a minute, :data:`DEMO_RF`) and the RL policy (``artifacts/policies/rl``, or
   ``DEMO_TRAIN_RL=1`` trains one);
3. the Serve router (``orchestrator serve up``) with the node-level RandomForest (the best
   learned policy on docs/evaluation.md), the RL policy deciding beside it in shadow when the
   demo runs real work (the challenger: never acted on, each record keeps its choice), and the folder the demo's
   results go to as its ``loop_dir`` (the Loop page reads the calibration and replay there);
4. Prometheus, when ``prometheus`` is on PATH, scraping every node's metrics agent (the
   router's ``ray_orch_*`` series included) with ``orchestrator serve prometheus-config``'s
   config, its data in ``$DEMO_OUT/prometheus``; started before the workload so that its
   rates cover it;
5. a mixed workload submitted with ``ray job submit`` that replays through the
   router (``python -m replays.live --router ...``), then real code the same way
   (``configs/workloads/real_mix.yaml``: the example functions of
   ``orchestrator/examples/real_work.py`` run on the nodes the router chose), and the
   simulator's timing model calibrated on what the router measured (``orchestrator calibrate``; at
   the demo's compression, so the real kinds' factors include it: calibrate at compression 1), and
   that history replayed under the champion, the challenger and fastest-feasible
   (``orchestrator counterfactual``, one seed), and a small challenger forest retrained on it in a
   registry of the demo's own and judged on the same arrivals (``orchestrator retrain``);
6. the simulator comparison of every policy (rf:latest and rl:latest included) on
   the same tasks, the FGD packing replay on the Alibaba trace when
   ``../shared/traces`` is there, and a capacity recommendation for the workload's rate
   (``orchestrator capacity recommend`` into the router's ``capacity_dir``);
7. the Streamlit view, pointed at the results, the router and Prometheus (``ORCH_PROMETHEUS_URL``).

It ends with the URLs and how to stop everything: ``make demo-stop``
(``python -m orchestrator.demo stop``; ``... simulate`` runs step 6's simulator comparison alone) stops exactly what this started; what was
already running before (a cluster, a router, a Streamlit) is reused and left alone.
What it started is recorded in ``$DEMO_OUT/demo.json``.

Environment (all optional): ``DEMO_OUT`` (results and state, default
``results/demo``), ``DEMO_RAY_DIR`` (the launcher's state folder, default
``$ORCH_RAY_DIR`` or ``/tmp/orch-ray-<uid>``), ``DEMO_RAY_PORT`` (GCS, 6380),
``DEMO_DASHBOARD_PORT`` (8265), ``DEMO_ROUTER_PORT`` (8000), ``DEMO_STREAMLIT_PORT``
(8501), ``DEMO_PROMETHEUS_PORT`` (9090; the next free one when taken), ``DEMO_TOKEN_FILE``
(Ray token, default ``~/.ray/auth_token``),
``DEMO_CLUSTER`` (topology YAML), ``DEMO_WORKLOAD`` (``configs/workloads/mixed.yaml``),
``DEMO_DURATION`` (seconds of workload, default 60; 0 replays none and compares no policies: the view keeps
an earlier run's results), ``DEMO_COMPRESSION`` (workload
seconds per wall second, default 4), ``DEMO_POLICY`` (the router's, default ``rf``),
``DEMO_SHADOW`` (the challenger in shadow, default ``rl``, or ``rf`` when the router runs ``rl``;
``none``: no challenger),
``DEMO_TRAIN_RL=1`` (trains ``configs/experiments/ppo_nodes_mix.yaml``, the shipped rl's recipe: about 41 minutes on 2 cores),
``DEMO_SKIP_TRACE=1``, ``DEMO_PACKING_SEEDS`` (default ``42``), ``DEMO_REAL_DURATION`` (seconds of
``configs/workloads/real_mix.yaml``, real code through the router after the mixed workload; default 20,
0 skips it).
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cluster.config import UsageError
from cluster.procs import cmdline, port_open, stop_sessions
from rl_env.train_rf_args import TrainArgs

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: the real example workloads (orchestrator/examples/real_work.py) among emulated tasks
REAL_WORKLOAD = "configs/workloads/real_mix.yaml"
POLICIES = ("random,round-robin,least-loaded,cheapest-feasible,fastest-feasible,best-fit,dot-product,"
            "gpu-packing,gpu-clustering,fgd,ray-default,k8s-default,oracle,rf:latest,rl:latest")
PACKING_POLICIES = "random,dot-product,gpu-clustering,gpu-packing,best-fit,fgd"
TRACE = ROOT.parent / "shared" / "traces" / "alibaba_gpu_v2023" / "openb_pod_list_default.csv"
#: the RandomForest trained when none is in the registry (the shipped one is): the cluster itself,
#: 20 s windows from an empty cluster, no DAgger round, the rollout teacher rolling fastest-feasible
#: 40 arrivals ahead: about a minute
DEMO_RF = TrainArgs(variants=["x1"], duration_s=20.0, warmup_s=[0.0], rounds=0, teacher_base="fastest-feasible",
                    teacher_samples=4, teacher_horizon=40, teacher_horizon_s=30.0)


@dataclass(frozen=True)
class Settings:
    """Where the demo puts things and which ports it uses (from the environment)."""

    out: Path
    ray_dir: Path
    ray_port: int
    dashboard_port: int
    router_port: int
    streamlit_port: int
    prometheus_port: int
    token_file: str | None
    cluster: str
    workload: str
    duration: float
    compression: float
    policy: str
    train_rl: bool
    skip_trace: bool
    packing_seeds: str
    real_duration: float
    shadow: str | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        from cluster.launcher import default_state_dir

        e = os.environ if env is None else env
        out = Path(e.get("DEMO_OUT", ROOT / "results" / "demo"))
        return cls(
            out=(out if out.is_absolute() else ROOT / out).resolve(),
            ray_dir=Path(e.get("DEMO_RAY_DIR") or default_state_dir()).resolve(),
            ray_port=_port(e, "DEMO_RAY_PORT", 6380),
            dashboard_port=_port(e, "DEMO_DASHBOARD_PORT", 8265),
            router_port=_port(e, "DEMO_ROUTER_PORT", 8000),
            streamlit_port=_port(e, "DEMO_STREAMLIT_PORT", 8501),
            prometheus_port=_port(e, "DEMO_PROMETHEUS_PORT", 9090),
            token_file=e.get("DEMO_TOKEN_FILE") or None,
            cluster=e.get("DEMO_CLUSTER", "configs/cluster/local.yaml"),
            workload=e.get("DEMO_WORKLOAD", "configs/workloads/mixed.yaml"),
            duration=_seconds(e, "DEMO_DURATION", 60),
            compression=_seconds(e, "DEMO_COMPRESSION", 4, positive=True),
            policy=e.get("DEMO_POLICY", "rf"),
            train_rl=e.get("DEMO_TRAIN_RL") == "1",
            skip_trace=e.get("DEMO_SKIP_TRACE") == "1",
            packing_seeds=e.get("DEMO_PACKING_SEEDS", "42"),
            real_duration=_seconds(e, "DEMO_REAL_DURATION", 20),
            shadow=_shadow(e.get("DEMO_SHADOW"), e.get("DEMO_POLICY", "rf")),
        )

    @property
    def state_file(self) -> Path:
        return self.out / "demo.json"

    @property
    def router(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def streamlit(self) -> str:
        return f"http://127.0.0.1:{self.streamlit_port}"


# ------------------------------------------------------------------ helpers

def _port(env, name: str, default: int) -> int:
    """A TCP port from ``env[name]``; :class:`UsageError` naming the variable otherwise."""
    raw = env.get(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise UsageError(f"{name}={raw!r}: a TCP port, 1-65535")
    return port


def _seconds(env, name: str, default: float, positive: bool = False) -> float:
    """A finite number of seconds (or a ratio) from ``env[name]``, at least 0 (above 0 if ``positive``)."""
    raw = env.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise UsageError(f"{name}={raw!r}: a number {'above' if positive else 'at least'} 0")
    return value


def _shadow(given: str | None, policy: str) -> str | None:
    """The demo router's challenger: ``DEMO_SHADOW``, else the learned policy the router does not run."""
    if given is not None:
        return None if given.strip().lower() in ("", "none") else given.strip()
    return "rf" if policy.partition(":")[0] == "rl" else "rl"


def _sim_name(policy: str) -> str:
    """The simulator's name for a router policy: a learned kind without a version is its latest."""
    return f"{policy}:latest" if policy in ("rf", "rl") else policy


_T0 = time.monotonic()


def step(msg: str) -> None:
    """A step's heading, with the seconds the demo has taken so far (where the time goes)."""
    print(f"\n==> {msg} ({time.monotonic() - _T0:.0f} s in)", flush=True)


def orch(*args: str) -> list[str]:
    exe = BIN / "orchestrator"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "orchestrator.cli", *args]


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=check, **kw)


def answers(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status < 500
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False


def load_state(cfg: Settings) -> dict:
    try:
        return json.loads(cfg.state_file.read_text())
    except (OSError, ValueError):
        return {}


def save_state(cfg: Settings, st: dict) -> None:
    cfg.out.mkdir(parents=True, exist_ok=True)
    cfg.state_file.write_text(json.dumps(st, indent=2))


def has_model(kind: str) -> bool:
    from scheduler import model_registry

    try:
        model_registry.resolve(kind, "latest")
        return True
    except model_registry.RegistryError:
        return False


def cluster_running(cfg: Settings) -> bool:
    """Whether the launcher's state in ``cfg.ray_dir`` names a cluster whose head answers."""
    from cluster.launcher import HEAD_NAME, LaunchState, raylet_pid

    st = LaunchState.load(cfg.ray_dir)
    if st is None or HEAD_NAME not in st.nodes:
        return False
    return raylet_pid(st.nodes[HEAD_NAME]) is not None and port_open("127.0.0.1", st.gcs_port)


def client_env(cfg: Settings) -> dict[str, str]:
    """The environment a Ray client of the demo's cluster needs (token auth, config, PATH)."""
    from cluster.launcher import ENV_STATE_DIR, LaunchState, client_env as launcher_env

    st = LaunchState.load(cfg.ray_dir)
    env = {**os.environ, **(launcher_env(st) if st else {}), ENV_STATE_DIR: str(cfg.ray_dir)}
    env.pop("RAY_ADDRESS", None)  # `ray job submit --address <dashboard>` names the cluster
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def write_serve_config(cfg: Settings, token_file: Path) -> Path:
    """configs/serve.yaml with the demo's router args: policy, history, admin token, compression."""
    import yaml

    from cluster.config import load_yaml
    from cluster.serve_config import router_apps

    f = load_yaml(ROOT / "configs" / "serve.yaml")
    data = f.data
    app = router_apps(f)[0]
    args = app.setdefault("args", {})
    args.update(policy=cfg.policy, history_url=f"sqlite:///{cfg.out / 'history.db'}",
                admin_token_file=str(token_file), time_compression=cfg.compression,
                capacity_dir=str(cfg.out / "capacity"), loop_dir=str(cfg.out),
                # the loop (a challenger in shadow, models warmed per worker) is shown with real work only
                shadow_policy=cfg.shadow if cfg.real_duration > 0 else None, warm_entry_points=cfg.real_duration > 0)
    if os.environ.get("ORCH_REGISTRY"):
        args["registry"] = os.environ["ORCH_REGISTRY"]
    data.setdefault("http_options", {})["port"] = cfg.router_port
    path = cfg.out / "serve.yaml"
    path.write_text("# written by `make demo` (orchestrator/demo.py) from configs/serve.yaml\n"
                    + yaml.safe_dump(data, sort_keys=False))
    return path


def admin_token(cfg: Settings) -> Path:
    path = cfg.out / "admin_token"
    if not path.is_file():
        cfg.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
    return path


def api_key(cfg: Settings, serve_config: Path) -> Path:
    """A fresh API key named ``demo`` for the replay job and the Streamlit view (mode 0600 file).

    Rotated on every ``make demo``: the previous one is revoked first (one active key per name),
    so a key file left from an earlier demo never outlives its history database's key table.
    """
    path = cfg.out / "api_key"
    conf = ["--config", str(serve_config)]
    subprocess.run(orch("keys", "revoke", "demo", *conf), capture_output=True)  # none yet: exits 2, fine
    run(orch("keys", "create", "demo", "--out", str(path), *conf))
    return path


# ------------------------------------------------------------------ steps

def up(cfg: Settings) -> int:
    t_start = time.monotonic()
    st = load_state(cfg)
    st.update(out=str(cfg.out), ray_dir=str(cfg.ray_dir), router=cfg.router, dashboard=cfg.dashboard,
              streamlit=cfg.streamlit)
    sd = ["--state-dir", str(cfg.ray_dir)]

    step("1/7 local heterogeneous Ray cluster")
    if cluster_running(cfg):
        print(f"a cluster is already running (state in {cfg.ray_dir}); reusing it")
        run(orch("cluster", "up", "--config", cfg.cluster, *sd))  # restarts any node that died
    else:
        st["cluster"] = True  # recorded first: a failed start is still cleaned up by `demo-stop`
        save_state(cfg, st)
        token = ["--token-file", cfg.token_file] if cfg.token_file else []
        run(orch("cluster", "up", "--config", cfg.cluster, "--port", str(cfg.ray_port), "--dashboard-port",
                 str(cfg.dashboard_port), *token, *sd))
    from cluster.launcher import LaunchState

    launched = LaunchState.load(cfg.ray_dir)
    dashboard = launched.dashboard_url if launched else cfg.dashboard  # a reused cluster keeps its ports
    st["dashboard"] = dashboard
    save_state(cfg, st)
    env = client_env(cfg)

    step("2/7 learned policies")
    if has_model("rf"):
        print("using the RandomForest in the registry (shipped in artifacts/policies/rf; "
              "`orchestrator train rf` trains a new version)")
    else:
        run(orch("train", "rf", *DEMO_RF.argv()))
    if cfg.train_rl or not has_model("rl"):
        run(orch("train", "rl"))
    else:
        print("using the shipped RL policy (DEMO_TRAIN_RL=1 trains one)")

    step("3/7 Serve router")
    token_file = admin_token(cfg)
    if answers(cfg.router + "/healthz"):
        print(f"router already answering at {cfg.router}; reusing it")
    else:
        st["serve"] = True
        save_state(cfg, st)
        # `serve up` leaves a background driver holding the router's Ray job open (serve_app.cli
        # says why); `serve down` and `cluster down` stop it.
        run(orch("serve", "up", "--config", str(write_serve_config(cfg, token_file)), "--port",
                 str(cfg.router_port), "--state-dir", str(cfg.ray_dir)), env=env)

    key_file = api_key(cfg, write_serve_config(cfg, token_file))

    step("4/7 Prometheus scraping the cluster and the router")
    prom = start_prometheus(cfg, st)

    step("5/7 mixed workload through the router, submitted with `ray job submit`")
    replay_out = cfg.out / "replay"
    label = cfg.policy if ":" in cfg.policy else f"{cfg.policy}:latest"  # the simulator's name for it
    if cfg.duration > 0:
        run([str(BIN / "ray"), "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--",
             "python", "-m", "replays.live", "--workload", cfg.workload, "--router", cfg.router,
             "--policy", label, "--api-key-file", str(key_file),
             "--duration", f"{cfg.duration:g}", "--time-compression", f"{cfg.compression:g}",
             "--out", str(replay_out)], env=env)
    else:
        print(f"(DEMO_DURATION=0: no {cfg.workload} replay; the view shows an earlier run's, if any)", flush=True)
    if cfg.real_duration > 0:
        print(f"real code through the same router: {REAL_WORKLOAD} (a CNN classifying images, a fraud model "
              "scoring transactions, a pandas ETL, among emulated tasks)", flush=True)
        run([str(BIN / "ray"), "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--",
             "python", "-m", "replays.live", "--workload", REAL_WORKLOAD, "--router", cfg.router,
             "--policy", label, "--api-key-file", str(key_file), "--router-warmup", "8",
             "--duration", f"{cfg.real_duration:g}", "--time-compression", f"{cfg.compression:g}",
             "--out", str(cfg.out / "replay_real")], env=env)
        print("calibrating the simulator's timing model on what the router measured (orchestrator calibrate)",
              flush=True)
        run(orch("calibrate", "--history", f"sqlite:///{cfg.out / 'history.db'}", "--cluster", cfg.cluster,
                 "--out", str(cfg.out / "calibration")), env=env)
        rivals = list(dict.fromkeys([label, *([_sim_name(cfg.shadow)] if cfg.shadow else []), "fastest-feasible"]))
        print(f"replaying the router's history under {', '.join(rivals)} in the calibrated simulator "
              "(orchestrator counterfactual)", flush=True)
        cf = run(orch("counterfactual", "--history", f"sqlite:///{cfg.out / 'history.db'}", "--cluster", cfg.cluster,
                      "--calibration", str(cfg.out / "calibration" / "profile.yaml"), "--policies", ",".join(rivals),
                      "--seeds", "1", "--out", str(cfg.out / "counterfactual")), env=env, check=False)
        if cf.returncode:  # the Loop page says the replay is missing; the rest goes on
            print("(the counterfactual replay failed; see above. The rest of the demo goes on)", flush=True)
        print("a challenger forest retrained on that history, in a registry of the demo's own (the router's rf stays "
              "its champion), judged on the same arrivals (orchestrator retrain, a small forest)", flush=True)
        rt = run(orch("retrain", "--history", f"sqlite:///{cfg.out / 'history.db'}", "--cluster", cfg.cluster,
                      "--calibration", str(cfg.out / "calibration" / "profile.yaml"), "--champion", label,
                      "--registry", str(cfg.out / "retrain_registry"), "--seeds", "1", "--rounds", "0", "--trees", "10",
                      "--duration-s", "20", "--eval-seeds", "1", "--out", str(cfg.out / "retrain")),
                 env=env, check=False)
        if rt.returncode:
            print("(the retrain failed; see above. The rest of the demo goes on)", flush=True)

    step("6/7 simulator: every policy on the same tasks; FGD packing on the Alibaba trace; a capacity recommendation")
    if cfg.duration > 0:
        run([sys.executable, "-m", "orchestrator.demo", "simulate"])  # its own process: a clean exit status
    else:
        print("(DEMO_DURATION=0: no tasks to compare the policies on)", flush=True)
    if cfg.skip_trace:
        print("(DEMO_SKIP_TRACE=1: skipping the FGD packing replay)")
    elif not TRACE.is_file():
        print(f"(no trace at {TRACE}: skipping the FGD packing replay)")
    else:
        run(orch("simulate", "--mode", "packing", "--trace", str(TRACE), "--policies", PACKING_POLICIES,
                 "--seeds", cfg.packing_seeds, "--jobs", "2", "--out", str(cfg.out / "packing")))

    # the Capacity page's recommendation: fastest-feasible's what-ifs take seconds, a learned policy's minutes
    print("capacity recommendation for the workload's rate (what-ifs under fastest-feasible, for speed; "
          "`orchestrator capacity recommend` plans under the router's policy)", flush=True)
    cap = run(orch("capacity", "recommend", "--cluster", cfg.cluster, "--workload", cfg.workload, "--policy",
                   "fastest-feasible", "--window", "60", "--seeds", "1", "--out", str(cfg.out / "capacity")),
              check=False)
    if cap.returncode:  # the view still starts; its Capacity page says what is missing
        print("(the capacity recommendation failed; see above. The rest of the demo goes on)", flush=True)

    step("7/7 Streamlit view")
    if port_open("127.0.0.1", cfg.streamlit_port):
        print(f"something already listens on {cfg.streamlit}; reusing it")
    else:
        st["streamlit_pid"] = start_streamlit(cfg, token_file, key_file, dashboard, prom)
        save_state(cfg, st)
    print(f"""
The demo is up ({time.monotonic() - t_start:.0f} s).
  Ray dashboard     {dashboard}
  Router API docs   {cfg.router}/docs
  Streamlit view    {cfg.streamlit}
  Prometheus        {prom or "not started: `prometheus` is not installed"}
  Admin secret      in {token_file}
  API key (demo)    in {key_file}
Results in {cfg.out}{f" (replay through the router: {replay_out})" if replay_out.is_dir() else ""}.
Stop everything it started with `make demo-stop`.""", flush=True)
    return 0


def simulate_all(cfg: Settings) -> None:
    """Every policy in the simulator on the tasks the replay sent (same workload, seed and duration)."""
    from cluster.topology import load_cluster
    from simulations.compare import compare_policies
    from replays.live import load_tasks

    spec = load_cluster(ROOT / cfg.cluster)
    tasks = load_tasks(ROOT / cfg.workload, seed=None, duration_s=cfg.duration, load_factor=None)
    print(f"simulating {len(tasks)} tasks of {cfg.workload} with {POLICIES}", flush=True)
    table, _ = compare_policies(spec, tasks, POLICIES.split(","), seed=0, out=cfg.out / "online",
                                meta={"workload": cfg.workload, "duration_s": cfg.duration})
    cols = [c for c in ("objective", "lat_mean_ms", "lat_p99_ms", "slo_miss_%", "cost_total_$", "rejected")
            if c in table.columns]
    print(table[cols].to_string(float_format=lambda x: f"{x:,.3f}"))


def start_prometheus(cfg: Settings, st: dict) -> str | None:
    """Prometheus on the cluster's discovery file (its URL), recorded in ``st`` for ``demo-stop``;
    None, said in one line, when it is not installed. One the demo started before is reused."""
    from cluster import monitoring

    binary = shutil.which("prometheus")
    if binary is None:
        print("prometheus is not installed (Debian: apt-get install prometheus): the demo runs without it")
        return None
    pid, url = st.get("prometheus_pid"), st.get("prometheus")
    if pid and url and "prometheus" in cmdline(int(pid)) and monitoring.prometheus_ready(url):
        print(f"Prometheus already answering at {url}; reusing it")
        return url
    port = monitoring.first_free_port(cfg.prometheus_port)
    if port is None:
        raise RuntimeError(f"ports {cfg.prometheus_port}-{cfg.prometheus_port + 19} are all in use: "
                           "set DEMO_PROMETHEUS_PORT to a free one")
    if port != cfg.prometheus_port:
        print(f"port {cfg.prometheus_port} is in use: Prometheus listens on {port} (DEMO_PROMETHEUS_PORT sets it)")
    config, log, url = cfg.out / "prometheus.yml", cfg.out / "prometheus.log", f"http://127.0.0.1:{port}"
    config.write_text("# written by `make demo` (orchestrator/demo.py) from configs/monitoring/prometheus.yml\n"
                      + monitoring.prometheus_config(cfg.ray_dir))
    proc = monitoring.start_prometheus(binary, config, cfg.out / "prometheus", port, log)
    st.update(prometheus_pid=proc.pid, prometheus=url)  # recorded first: `demo-stop` stops a failed start
    save_state(cfg, st)
    monitoring.wait_ready(proc, url, log)
    print(f"Prometheus at {url} (config {config}); Ray's agents export every few seconds")
    return url


def start_streamlit(cfg: Settings, token_file: Path, key_file: Path, dashboard: str,
                    prometheus: str | None = None) -> int:
    log = open(cfg.out / "streamlit.log", "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "ORCH_RESULTS": str(cfg.out), "ORCH_ADMIN_TOKEN_FILE": str(token_file),
           "ORCH_API_KEY_FILE": str(key_file),
           "ORCH_ROUTER_URL": cfg.router, "ORCH_RAY_DASHBOARD": dashboard}
    if prometheus:
        env["ORCH_PROMETHEUS_URL"] = prometheus
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "serve_app" / "dashboard.py"), "--server.port",
         str(cfg.streamlit_port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not port_open("127.0.0.1", cfg.streamlit_port):
        if proc.poll() is not None:
            raise RuntimeError(f"Streamlit exited with status {proc.returncode}; see {cfg.out / 'streamlit.log'}")
        time.sleep(0.5)
    return proc.pid


# ------------------------------------------------------------------ stop

def stop(cfg: Settings) -> int:
    st = load_state(cfg)
    if not st:
        print(f"nothing to stop: no demo state in {cfg.state_file}")
        return 0
    if st.get("streamlit_pid"):
        pid = int(st["streamlit_pid"])  # a session leader (start_new_session); its command line says streamlit
        n = stop_sessions([pid], grace_s=10.0, markers=("streamlit",))
        print(f"stopped Streamlit (pid {pid})" if n else f"Streamlit (pid {pid}) was no longer running")
    if st.get("prometheus_pid"):
        pid = int(st["prometheus_pid"])  # a session leader too; SIGTERM lets it close its data cleanly
        n = stop_sessions([pid], grace_s=15.0, markers=("prometheus",))
        print(f"stopped Prometheus (pid {pid})" if n else f"Prometheus (pid {pid}) was no longer running")
    ray_dir = st.get("ray_dir", str(cfg.ray_dir))
    env = {**os.environ, "ORCH_RAY_DIR": ray_dir}
    if st.get("serve") and not st.get("cluster"):  # on a cluster the demo did not start: remove only Serve
        subprocess.run(orch("serve", "down", "--state-dir", ray_dir), cwd=ROOT, env=env)
    if st.get("cluster"):  # stops Serve with it (its processes, and the router's holder, belong to the cluster)
        subprocess.run(orch("cluster", "down", "--state-dir", ray_dir), cwd=ROOT, env=env)
    cfg.state_file.unlink(missing_ok=True)
    print("demo stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        cfg = Settings.from_env()
    except UsageError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    if args[:1] == ["stop"]:
        return stop(cfg)
    if args[:1] == ["simulate"]:
        if cfg.duration == 0:
            print("demo: error: DEMO_DURATION='0': no tasks to simulate; give a number above 0", file=sys.stderr)
            return 2
        simulate_all(cfg)
        return 0
    try:
        return up(cfg)
    except subprocess.CalledProcessError as exc:
        print(f"\ndemo step failed (exit {exc.returncode}): {' '.join(map(str, exc.cmd))}\n"
              "what is already up keeps running; `make demo-stop` stops it", file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as exc:
        print(f"\ndemo failed: {exc}\nwhat is already up keeps running; `make demo-stop` stops it",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
