"""Start, inspect and stop a real Ray cluster emulating a topology on this machine.

``up`` starts a head (0 CPUs: it carries the GCS, the dashboard and job drivers,
never placed tasks) plus one raylet per topology node, each with the resources
and labels of :mod:`cluster.ray_resources`. Everything lives under one state
directory (default ``/tmp/orch-ray-<uid>``, or ``$ORCH_RAY_DIR``): Ray's own
``--temp-dir``, the ``ray start`` logs and ``state.json``, which records the
ports and, per node, the session id of the processes it started. Each ``ray
start`` runs in a new session, and every process Ray spawns for that node (GCS,
raylet, agents, workers) inherits the session id, so ``down`` stops exactly
those and nothing else on the machine: never ``ray stop``, which would also stop
other users' clusters.

Each node gets its own Ray temp dir (:func:`node_temp_dir`), and with it its own
socket and log names: see :func:`node_temp_dir` for why. On one host every Ray
server listens on loopback only; ``listen`` opens them to other hosts
(:mod:`cluster.network`).

Token authentication stays on: the token file (Ray's default ``~/.ray/auth_token``,
created with mode 0600 when missing) is passed to every process through
``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH``; :func:`connect` and
:func:`client_env` give clients the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from cluster.network import ALL_INTERFACES, LOOPBACK, is_loopback, join_listen, node_ip_args, ray_env
from cluster.package_data import data_path
from cluster.procs import (cmdline, free_fixed_port, free_port, port_free, port_open, session_pids,  # noqa: F401
                           stop_sessions)  # free_port: callers pick head ports with launcher.free_port()
from cluster.ray_compat import (LOCAL_ONLY_ENV, GcsNodeTable, available_resources_per_node, refresh_auth_config,
                                refresh_local_only)
from cluster.ray_resources import HEAD_NAME, LABEL_NODE, NodeResources, cluster_resources, head_labels
from cluster.topology import ClusterSpec, load_cluster, with_standby

DEFAULT_PORT = 6380
DEFAULT_DASHBOARD_PORT = 8265
DEFAULT_OBJECT_STORE_MB = 100
STATE_FILE = "state.json"
#: Environment variables a client of the cluster needs (see :func:`client_env`).
ENV_CONFIG = "ORCH_CLUSTER_CONFIG"
ENV_STATE_DIR = "ORCH_RAY_DIR"


class LauncherError(RuntimeError):
    """The cluster could not be started, reached or stopped (not a config error)."""


def default_state_dir() -> Path:
    env = os.environ.get(ENV_STATE_DIR)
    return Path(env) if env else Path(f"/tmp/orch-ray-{os.getuid()}")


def default_token_file() -> Path:
    """Ray's default token location, so plain ``RAY_AUTH_MODE=token ray job submit`` works."""
    return Path.home() / ".ray" / "auth_token"


@dataclass
class NodeRecord:
    """One ``ray start`` this launcher ran: enough to find and stop its processes."""

    name: str
    sid: int
    started_s: float
    labels: dict[str, str] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class LaunchState:
    """``state.json``: what ``up`` or ``join`` started on this machine."""

    config: str
    state_dir: str
    temp_dir: str
    token_file: str
    gcs_port: int
    dashboard_host: str
    dashboard_port: int
    client_port: int
    head_ip: str = "127.0.0.1"
    started_at: float = 0.0
    up_seconds: float = 0.0
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    joined_to: str | None = None  # set by join(): the remote head this machine joined
    listen: str = LOOPBACK  # where this host's Ray servers listen (cluster.network)
    retries: list[str] = field(default_factory=list)  # "node: last error line" per `ray start` tried twice

    @property
    def gcs_address(self) -> str:
        """Where a client on this machine reaches the GCS (the head's IP from elsewhere)."""
        return self.joined_to or f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.dashboard_host}:{self.dashboard_port}"

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: str | Path) -> "LaunchState | None":
        path = Path(state_dir) / STATE_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        data["nodes"] = {k: NodeRecord(**v) for k, v in data.get("nodes", {}).items()}
        return cls(**data)


# ------------------------------------------------------------------ processes


def raylet_pid(rec: NodeRecord) -> int | None:
    """The raylet process of a node started by this launcher, or None if it is not running."""
    return _session_raylet(rec.sid)


def _session_raylet(sid: int) -> int | None:
    """The raylet process of the ``ray start`` session ``sid``, or None if it is not running."""
    for pid in session_pids(sid):
        if "raylet/raylet" in cmdline(pid):
            return pid
    return None


def ensure_token(path: str | Path) -> Path:
    """Create a 256-bit token file (mode 0600) if it does not exist; return its path."""
    p = Path(path).expanduser()
    if not p.is_file() or not p.read_text().strip():
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return p


def _process_env(token_file: Path, config: str, state_dir: Path, listen: str) -> dict[str, str]:
    env = ray_env(os.environ.copy(), listen)
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(var, None)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), RAY_USAGE_STATS_ENABLED="0")
    env[ENV_CONFIG] = config
    env[ENV_STATE_DIR] = str(state_dir)
    # Job entrypoints (`python -m ...`) and workers resolve `python` to this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


#: how long a raylet keeps an idle worker above its soft limit (Ray's default: 10 s)
IDLE_WORKER_KEEP_MS = 120_000


def _node_env(env: dict[str, str], res: NodeResources) -> dict[str, str]:
    """A raylet's environment: spare idle workers up to its CPUs, each kept for two minutes.

    Ray kills idle workers above ``num_workers_soft_limit`` after
    ``idle_worker_killing_time_threshold_ms``; with its 10 s default it killed them
    between bursts and started new ones in the next (measured: 9-31 s of worker
    start-up CPU in a 2,000-task router burst, against 6.7 s once the workers stayed).

    The soft limit also sets how many spare workers a raylet prestarts while an
    owner reports queued tasks (Ray 2.60: up to ``min(soft limit, backlog)`` idle
    ones beyond the busy ones), and the router always has a queue. It is set to the
    node's CPUs, Ray's own default, written out because an emulated node's CPUs are
    logical. Twice the CPUs, as here before, grew every node's pool to about three
    times its CPUs under the router (14 CPUs: 48 workers, each ~1 s of CPU to start
    and ~100 MB): ``POST /v1/tasks`` rounds 2-6 of 1,000 no-op tasks on a fresh
    cluster ran 134-236 tasks/s, against 220-266 with 4 on every node (32 workers).
    """
    out = dict(env)
    if res.num_cpus > 0:
        out.setdefault("RAY_num_workers_soft_limit", str(res.num_cpus))
    out.setdefault("RAY_idle_worker_killing_time_threshold_ms", str(IDLE_WORKER_KEEP_MS))
    return out


def _ray_start_retry(make_args: Callable[[], list[str]], env: dict[str, str], log: Path,
                     on_retry: Callable[[str], None] | None = None,
                     cancel: threading.Event | None = None) -> tuple[int, float]:
    """:func:`_ray_start`, once more on failure: ``ray start`` gives a raylet 30 s to register
    with the GCS, which a loaded 2-core machine can miss. ``make_args`` is called per try, so
    the retry asks for ports of its own (the first try's may be what failed). ``on_retry``
    gets the first try's error: callers record it (``LaunchState.retries``), since a retry
    hides a failure that the next start may not survive. A cancelled start is not retried."""
    t0 = time.monotonic()
    try:
        sid, _ = _ray_start(make_args(), env, log, cancel=cancel)
    except LauncherError as exc:
        if cancel is not None and cancel.is_set():
            raise
        if on_retry is not None:
            on_retry(str(exc))
        sid, _ = _ray_start(make_args(), env, log.with_suffix(".retry.log"), cancel=cancel)
    return sid, time.monotonic() - t0


#: the ports a raylet and its agents bind, each pinned by :func:`raylet_port_args`
RAYLET_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
                     "--runtime-env-agent-port", "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port")


def raylet_port_args() -> list[str]:
    """Fresh ports for every socket a raylet and its agents bind, below the kernel's ephemeral range.

    Left to Ray, they are picked free in the ephemeral range and bound later (the dashboard
    agent's default, 52365, is even one per host): with several raylets starting at once on
    one machine, and the hundreds of connections Ray opens meanwhile, one can be taken first,
    and the raylet dies with "bind: Address already in use" (seen as the start-up flake of
    the emulated cluster). One block of consecutive free ports per raylet, fresh on a retry.
    """
    base = free_fixed_port(span=len(RAYLET_PORT_FLAGS), host="0.0.0.0")
    return [f"{flag}={base + k}" for k, flag in enumerate(RAYLET_PORT_FLAGS)]


def _ray_start(args: list[str], env: dict[str, str], log: Path, timeout_s: float = 180,
               cancel: threading.Event | None = None) -> tuple[int, float]:
    """Run ``ray start`` in a new session; return (session id, seconds). Raises LauncherError.

    However it ends short of a node that is up (a failure, a timeout, ``cancel`` set by a launch that
    was interrupted, or an interrupt in this thread), its session is stopped first: it runs in a
    session of its own, which would outlive the launcher unrecorded.
    """
    t0, since = time.monotonic(), time.time()
    cmd = [sys.executable, "-m", "cluster.ray_start", "start", *args]  # Ray's `ray start` (see there)
    _check_cancel(cancel)  # a launch interrupted before this start began: none begins
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            while (rc := _wait(proc, 0.5)) is None:
                if time.monotonic() - t0 > timeout_s:
                    raise LauncherError(f"ray start timed out after {timeout_s:.0f} s (log: {log})"
                                        f"{_ray_log_errors(args, since)}")
                _check_cancel(cancel)
            if rc != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise LauncherError(f"ray start failed with exit status {rc} (log: {log}):\n{tail}"
                                    f"{_ray_log_errors(args, since)}")
            port = _agent_port(args)
            if port:
                # the raylet registered without waiting for its dashboard agent (cluster.ray_compat.
                # raylet_command_with_listen_port): the node is up once the agent answers too (it runs jobs)
                while not port_open(LOOPBACK, port):  # the agent binds loopback beside the node's address
                    gone = _session_raylet(proc.pid) is None
                    if gone or time.monotonic() - t0 > timeout_s:
                        why = "its raylet exited" if gone else f"not within {timeout_s:.0f} s of ray start"
                        raise LauncherError(f"the dashboard agent of this node did not listen on port {port}: {why} "
                                            f"(log: {log}){_ray_log_errors(args, since)}")
                    _check_cancel(cancel)
                    time.sleep(0.2)
        except BaseException:
            proc.kill()
            stop_sessions([proc.pid], grace_s=2)
            raise
        return proc.pid, time.monotonic() - t0


def _wait(proc: subprocess.Popen, seconds: float) -> int | None:
    """``proc``'s exit status, or None if it still runs after ``seconds``."""
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise LauncherError("ray start cancelled: the launch was interrupted")


def _agent_port(args: list[str]) -> int:
    """The port ``args`` pin the node's dashboard agent's HTTP server to (0: not pinned)."""
    return int(_arg(args, "--dashboard-agent-listen-port") or 0)


def _arg(args: list[str], flag: str) -> str | None:
    """The value of ``flag=value`` in ``args``, or None."""
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")), None)


def _ray_log_errors(args: list[str], since: float, limit: int = 12, crash_lines: int = 8) -> str:
    """Error lines Ray's raylets and GCS logged since ``since`` (wall clock), for a failed start.

    ``ray start`` itself only says that a raylet did not register in time; why is in the
    session's logs, which a CI run deletes with its temporary folder. Of each ``.err`` file
    (what a crashed process wrote) the lines from its first check failure (or its start) on,
    where the reason stands before the backtrace; of the ``.out`` logs the last ``limit``
    error, fatal and check-failure lines (Ray's ``E``, ``F`` and ``C``).
    """
    temp = _arg(args, "--temp-dir")
    logs = Path(temp) / "session_latest" / "logs" if temp else None
    if logs is None or not logs.is_dir():
        return ""
    logged: list[str] = []
    crashed: list[str] = []
    for f in sorted(logs.glob("raylet*.*")) + sorted(logs.glob("gcs_server.*")):
        try:
            if f.suffix not in (".out", ".err") or f.stat().st_mtime < since - 2.0:  # coarse mtimes
                continue
            lines = f.read_text(errors="replace").splitlines()
        except OSError:
            continue
        if f.suffix == ".err":
            err = [x for x in lines if x.strip()]
            first = next((k for k, x in enumerate(err) if " C " in x[:40] or "Check failed" in x), 0)
            crashed.extend(f"{f.name}: {line[:300]}" for line in err[first:first + crash_lines])
        else:  # "[date time E pid tid]" lines, and F and C
            logged.extend(f"{f.name}: {line[:300]}" for line in lines if any(m in line[:40] for m in (" E ", " F ", " C ")))
    if not logged and not crashed:
        return f"\n(no error lines in Ray's logs under {logs})"
    return f"\nRay's logs ({logs}), error lines:\n" + "\n".join(logged[-limit:] + crashed)


# ------------------------------------------------------------------ client side


def client_env(state: LaunchState) -> dict[str, str]:
    """Environment a client (driver, ``ray job submit``) needs to reach this cluster (a loopback
    cluster's drivers run in Ray's local-only mode, or Ray would look for the GCS on the host's address)."""
    return ray_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state.token_file,
                    "RAY_ADDRESS": state.gcs_address, ENV_CONFIG: state.config}, state.listen)


def connect(state_dir: str | Path | None = None, address: str | None = None, **init_kwargs) -> str:
    """``ray.init`` against the launcher's cluster (or ``address``) with token auth set up.

    Inside a ``ray job submit`` job, the job's ``RAY_ADDRESS`` and auth environment
    win. Returns the address used. Idempotent while connected.
    """
    import logging

    import ray

    if ray.is_initialized():
        return address or os.environ.get("RAY_ADDRESS", "")
    st = LaunchState.load(state_dir or default_state_dir())
    target = address or os.environ.get("RAY_ADDRESS") or ""
    host = target.rsplit(":", 1)[0].strip("[]")
    if target and target != "auto" and "://" not in target:
        # loopback: else Ray rewrites 127.0.0.1 to the host's address, where no GCS listens;
        # another host: out of local-only mode, whatever an earlier loopback cluster left in the env
        _use_listen(LOOPBACK if is_loopback(host) else ALL_INTERFACES)
    if address is None and not os.environ.get("RAY_ADDRESS"):
        if st is None:
            raise LauncherError(f"no cluster state in {state_dir or default_state_dir()}; run "
                                "`orchestrator cluster up` or pass --address")
        address = st.gcs_address
        _use_token(st.token_file)  # this cluster's token, whatever an earlier one left in the env
        os.environ[ENV_CONFIG] = st.config
        _use_listen(st.listen)
    elif os.environ.get("RAY_AUTH_MODE") != "token":  # a job, or an explicit address: its own token env
        os.environ["RAY_AUTH_MODE"] = "token"
        refresh_auth_config()
    init_kwargs.setdefault("logging_level", logging.WARNING)
    init_kwargs.setdefault("log_to_driver", False)
    ray.init(address=address, **init_kwargs)
    return address or os.environ.get("RAY_ADDRESS", "auto")


def _use_token(token_file: str | Path) -> None:
    """Point this process's Ray client at the cluster's token (before ``ray.init``)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    if "RAY_AUTH_TOKEN" not in os.environ:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    refresh_auth_config()


def _use_listen(listen: str) -> None:
    """Put this process's Ray in local-only mode for a loopback cluster, out of it otherwise
    (before ``ray.init``; :mod:`cluster.network`)."""
    name = LOCAL_ONLY_ENV[0]
    value = ray_env({}, listen).get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    refresh_local_only()


def _wait_registered(address: str, names: list[str], timeout_s: float, token_file: str | Path) -> str:
    """Block until every node name is alive in the GCS; return the head's IP.

    Reads the GCS node table with a bare GCS client, not ``ray.init``: the caller
    may be a driver of another cluster (or of this one), and starting a job here
    would leave worker processes behind.
    """
    _use_token(token_file)
    table = GcsNodeTable(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            nodes = table.alive(timeout_s=5)
        except Exception:  # noqa: BLE001 - the GCS may still be coming up
            nodes = []
        alive = {labels.get(LABEL_NODE): ip for labels, ip in nodes}
        missing = [n for n in names if n not in alive]
        if not missing:
            return alive.get(HEAD_NAME, "127.0.0.1")
        if time.monotonic() > deadline:
            raise LauncherError(f"nodes not registered after {timeout_s:.0f} s: {', '.join(missing)}")
        time.sleep(0.2)


# ------------------------------------------------------------------ commands


@dataclass
class UpResult:
    state: LaunchState
    started: list[str]
    already_running: bool
    seconds: float


def node_temp_dir(st: LaunchState, name: str) -> Path:
    """The Ray temp dir of node ``name``: the head's is ``st.temp_dir``, each other node's a folder in it.

    Ray names a node's Unix sockets (``sockets/plasma_store``, ``raylet``) and log files by
    taking the first of ``name``, ``name.1``, ``name.2`` ... not yet on disk in the session
    folder (``Node._make_inc_temp``); the socket appears only when the raylet binds it.
    Raylets started together into one folder can pick the same name, and the second to
    bind aborts with ``bind: Address already in use`` in ``plasma::PlasmaStore``: the
    start-up flake, which hit 7 of 7 starts of test_small.yaml with two raylets at once
    (each rescued by the retry, 30 s later). ``ray start`` in Ray 2.60 has no flag for the
    socket names (``RayParams`` has them; the CLI does not set them) but takes a temp dir
    per node, and a folder per node makes every name a node picks its own, whatever starts
    at once. Starting raylets one after another would also avoid the race, but costs the
    parallel start (test_small: 24-30 s one at a time, 16-19 s two at a time here). Each
    raylet then runs its own log monitor over its own logs (about 80 MB each), as on
    separate hosts. The folder is named by a short digest of the node's name (Unix socket
    paths are limited to 107 bytes; a node name may have 63 characters), and
    ``<temp dir>/nodes/<name>`` links to it for people reading logs.
    """
    if name == HEAD_NAME:
        return Path(st.temp_dir)
    return Path(st.temp_dir) / ("n" + hashlib.sha1(name.encode()).hexdigest()[:6])


def link_node_dir(st: LaunchState, name: str) -> None:
    """``<temp dir>/nodes/<name>`` -> the node's own temp dir (:func:`node_temp_dir`), for its logs."""
    by_name = Path(st.temp_dir) / "nodes"
    by_name.mkdir(parents=True, exist_ok=True)
    link = by_name / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if not link.is_symlink():
        link.symlink_to(node_temp_dir(st, name), target_is_directory=True)


def _pid_digits() -> int:
    try:
        return len(Path("/proc/sys/kernel/pid_max").read_text().strip())
    except OSError:
        return 7  # Linux's largest pid_max, 4194304


#: the longest Unix socket path Ray makes under a node's temp dir: session_<date>_<time>_<us>_<pid>/sockets/..
#: (a node alone in its folder gets ``plasma_store``; ``.1`` after a restart left the old socket behind)
_SOCKET_TAIL = len("/session_2026-01-01_00-00-00_000000_") + _pid_digits() + len("/sockets/plasma_store.1")
_UNIX_PATH_MAX = 107


def check_socket_paths(temp_dirs: list[Path]) -> None:
    """Raise :class:`LauncherError` before anything starts when a node's socket paths would be too
    long for Linux (Ray would fail the node's start after the head is up)."""
    for d in temp_dirs:
        if len(str(d).encode()) + _SOCKET_TAIL > _UNIX_PATH_MAX:
            raise LauncherError(f"Ray's socket paths under {d} would exceed {_UNIX_PATH_MAX} bytes; "
                                "use a shorter --state-dir (or node names)")


def _worker_args(res: NodeResources, address: str, temp_dir: Path, object_store_mb: int,
                 listen: str) -> list[str]:
    return [f"--address={address}", *res.start_args(), f"--temp-dir={temp_dir}",
            f"--object-store-memory={object_store_mb * (1 << 20)}", "--disable-usage-stats",
            *node_ip_args(listen), *raylet_port_args()]


def running_nodes(state: LaunchState) -> set[str]:
    """The nodes this machine started whose raylet runs."""
    return {name for name, rec in state.nodes.items() if raylet_pid(rec) is not None}


def checked_listen(listen: str) -> str:
    """``listen`` as the launcher records it: loopback spelled 127.0.0.1, else 0.0.0.0 or an IPv4
    address of this host (:class:`LauncherError` naming ``--listen`` otherwise, before anything starts)."""
    if is_loopback(listen):
        return LOOPBACK
    if listen == ALL_INTERFACES:
        return listen
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((listen, 0))
    except (OSError, UnicodeError, ValueError):
        raise LauncherError(f"--listen {listen}: not an IPv4 address of this host (give 127.0.0.1, 0.0.0.0 "
                            "or one of this host's addresses)") from None
    return listen


def up(config: str | Path, *, state_dir: str | Path | None = None, port: int = DEFAULT_PORT,
       dashboard_host: str = "127.0.0.1", dashboard_port: int = DEFAULT_DASHBOARD_PORT,
       token_file: str | Path | None = None, object_store_mb: int = DEFAULT_OBJECT_STORE_MB,
       parallel: int = 2, timeout_s: float = 180, nodes: list[str] | None = None, listen: str | None = None,
       progress: Callable[[str, float], None] | None = None) -> UpResult:
    """Start the cluster of ``config`` (or start the nodes of it that are not running).

    The whole config is validated first (:class:`ConfigError` naming file and
    field), then the ports are checked; only then does any process start. A second
    call with the same config reports the running cluster; with another config (or
    another ``listen``) it raises :class:`LauncherError`. ``nodes`` starts only those
    nodes here (the head always), for clusters whose other nodes ``join`` from other
    hosts, which needs a ``listen`` other than loopback (:mod:`cluster.network`). ``listen``
    None keeps a running cluster's, and is loopback for a new one.
    """
    t0 = time.monotonic()
    listen = None if listen is None else checked_listen(listen)
    spec: ClusterSpec = load_cluster(config)
    plan = cluster_resources(spec)  # raises ConfigError before anything starts
    if nodes is not None:
        unknown = sorted(set(nodes) - {r.name for r in plan})
        if unknown:
            from cluster.config import ConfigError

            raise ConfigError(config, "--nodes", f"not in the config: {', '.join(unknown)}")
        plan = [r for r in plan if r.name in nodes]
    config_abs = str(data_path(config).resolve())
    sdir = Path(state_dir or default_state_dir()).resolve()
    progress = progress or (lambda name, s: None)

    st = LaunchState.load(sdir)
    if st is not None:
        head = st.nodes.get(HEAD_NAME)
        head_alive = head is not None and raylet_pid(head) is not None and port_open("127.0.0.1", st.gcs_port)
        if head_alive and (st.config != config_abs or listen not in (None, st.listen)):
            raise LauncherError(f"a cluster from {st.config} listening on {st.listen} is running (state in "
                                f"{sdir}); run `orchestrator cluster down` first")
        if not head_alive:
            stop_sessions([r.sid for r in st.nodes.values()], grace_s=3)
            (sdir / STATE_FILE).unlink(missing_ok=True)
            st = None
    if st is not None:
        running = running_nodes(st)
        missing = [r for r in plan if r.name not in running]
        if missing:
            stale = [st.nodes[r.name].sid for r in missing if r.name in st.nodes]
            stop_sessions(stale, grace_s=3)
        try:
            _start_workers(st, missing, object_store_mb, parallel, progress)
            _wait_registered(f"127.0.0.1:{st.gcs_port}", [r.name for r in plan], timeout_s, st.token_file)
        except (KeyboardInterrupt, SystemExit):  # interrupted: stop what this call started, as a fresh start does
            started = [r.name for r in missing if r.name in st.nodes]
            stop_sessions([st.nodes.pop(n).sid for n in started], grace_s=3)
            st.save()
            raise
        st.save()
        return UpResult(st, [r.name for r in missing], True, time.monotonic() - t0)

    listen = listen or LOOPBACK
    # probed on every interface, whatever ``listen``: a port taken on any address is taken
    for what, p, host in (("--port", port, "0.0.0.0"), ("--dashboard-port", dashboard_port, dashboard_host)):
        if not port_free(p, host):
            raise LauncherError(f"{what} {p} is in use (another Ray cluster?); pick another port")
    client_port = free_fixed_port(span=3, host="0.0.0.0")
    sdir.mkdir(parents=True, exist_ok=True)
    os.chmod(sdir, 0o700)
    temp_dir = sdir / "ray"
    (sdir / "logs").mkdir(exist_ok=True)
    token = ensure_token(token_file or default_token_file())
    st = LaunchState(config=config_abs, state_dir=str(sdir), temp_dir=str(temp_dir), token_file=str(token),
                      gcs_port=port, dashboard_host=dashboard_host, dashboard_port=dashboard_port,
                      client_port=client_port, started_at=time.time(), listen=listen)
    check_socket_paths([node_temp_dir(st, n) for n in (HEAD_NAME, *[r.name for r in plan])])
    env = _process_env(token, config_abs, sdir, listen)
    # The autoscaler's and the dashboard's metrics servers default to fixed ports (44217, 44227):
    # a second cluster on the host would find them taken. Both are published in the GCS for Prometheus.
    env.update(AUTOSCALER_METRIC_PORT=str(client_port + 1), DASHBOARD_METRIC_PORT=str(client_port + 2))
    labels = ",".join(f"{k}={v}" for k, v in head_labels().items())
    head_args = ["--head", f"--port={port}", f"--dashboard-host={dashboard_host}",
                 f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={client_port}",
                 f"--temp-dir={temp_dir}", "--num-cpus=0", "--num-gpus=0",
                 f"--object-store-memory={object_store_mb * (1 << 20)}", f"--labels={labels}",
                 f"--node-name={HEAD_NAME}", "--disable-usage-stats", *node_ip_args(listen)]
    try:
        sid, secs = _ray_start_retry(lambda: [*head_args, *raylet_port_args()], env,
                                     sdir / "logs" / f"{HEAD_NAME}.log", _on_retry(st, HEAD_NAME, progress))
        st.nodes[HEAD_NAME] = NodeRecord(HEAD_NAME, sid, secs, head_labels(), {"CPU": 0.0})
        st.save()
        progress(HEAD_NAME, secs)
        _start_workers(st, plan, object_store_mb, parallel, progress)
        st.head_ip = _wait_registered(f"127.0.0.1:{port}", [HEAD_NAME, *[r.name for r in plan]], timeout_s,
                                      token)
    except BaseException:
        stop_sessions([r.sid for r in st.nodes.values()], grace_s=3)
        (sdir / STATE_FILE).unlink(missing_ok=True)
        raise
    st.up_seconds = time.monotonic() - t0
    st.save()
    return UpResult(st, [HEAD_NAME, *[r.name for r in plan]], False, st.up_seconds)


def _on_retry(st: LaunchState, name: str, progress: Callable[[str, float], None]) -> Callable[[str], None]:
    """Record a node's retried start in the state (what tests and benchmarks check) and report it."""
    t0 = time.monotonic()

    def note(error: str) -> None:
        st.retries.append(f"{name}: {(error.strip().splitlines() or [''])[-1][:300]}")
        progress(f"{name} (retrying)", time.monotonic() - t0)

    return note


def _start_workers(st: LaunchState, plan: list[NodeResources], object_store_mb: int, parallel: int,
                   progress: Callable[[str, float], None]) -> None:
    """Start the raylets of ``plan``, ``parallel`` at once (safe: each has its own temp dir and ports)."""
    if not plan:
        return
    base_env = _process_env(Path(st.token_file), st.config, Path(st.state_dir), st.listen)
    address = f"127.0.0.1:{st.gcs_port}"
    logs = Path(st.state_dir) / "logs"

    cancel = threading.Event()  # set when the launch is interrupted: starts under way stop at once

    def start(res: NodeResources) -> tuple[NodeResources, int, float]:
        env = _node_env(base_env, res)
        temp = node_temp_dir(st, res.name)
        link_node_dir(st, res.name)
        sid, secs = _ray_start_retry(lambda: _worker_args(res, address, temp, object_store_mb, st.listen), env,
                                     logs / f"{res.name}.log", _on_retry(st, res.name, progress), cancel)
        return res, sid, secs

    errors: list[BaseException] = []
    recorded: set[Future] = set()

    def record(fut: Future) -> None:
        try:
            res, sid, secs = fut.result()
        except BaseException as exc:  # keep going: record what started so it can be stopped
            recorded.add(fut)
            errors.append(exc)
            return
        st.nodes[res.name] = NodeRecord(res.name, sid, secs, res.labels, res.ray_totals())
        recorded.add(fut)
        st.save()
        progress(res.name, secs)

    pool = ThreadPoolExecutor(max_workers=max(1, parallel))
    futures: list[Future] = []
    try:
        for r in plan:
            futures.append(pool.submit(start, r))
        for fut in as_completed(futures):
            record(fut)
    except BaseException:
        cancel.set()  # interrupted: the starts under way stop their own sessions
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # no further start begins
        for fut in futures:  # a start that ended up before it saw the cancel: recorded, so the caller stops it
            if fut not in recorded and fut.done() and not fut.cancelled():
                record(fut)
    if errors:
        raise errors[0]


ATTACHED_DIR = "attached"


def attach(state_dir: str | Path | None, name: str, sid: int, marker: str) -> Path:
    """Record a long-lived process session that belongs to this cluster (for example the
    driver that holds the Serve router's Ray job open), so that :func:`down` stops it too.
    ``marker`` is a piece of its command line (a guard against a recycled session id)."""
    d = Path(state_dir or default_state_dir()) / ATTACHED_DIR
    d.mkdir(parents=True, exist_ok=True)
    f = d / name
    f.write_text(json.dumps({"sid": sid, "marker": marker}))
    return f


def stop_attached(state_dir: str | Path | None, name: str | None = None, grace_s: float = 5.0) -> list[str]:
    """Stop the attached session ``name`` (every one when None); returns the names stopped."""
    d = Path(state_dir or default_state_dir()) / ATTACHED_DIR
    files = [d / name] if name else (sorted(d.glob("*")) if d.is_dir() else [])
    stopped = []
    for f in files:
        try:
            rec = json.loads(f.read_text())
            sid, marker = int(rec["sid"]), str(rec["marker"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if stop_sessions([sid], grace_s=grace_s, markers=(marker,)):
            stopped.append(f.name)
        f.unlink(missing_ok=True)
    return stopped


def down(state_dir: str | Path | None = None, *, keep_logs: bool = False, grace_s: float = 2.0) -> list[str]:
    """Stop every process ``up``/``join`` started, and those attached to it (and nothing else);
    return the node names."""
    sdir = Path(state_dir or default_state_dir())
    st = LaunchState.load(sdir)
    if st is None:
        return []
    stop_attached(sdir, grace_s=grace_s)
    stop_sessions([r.sid for r in st.nodes.values()], grace_s=grace_s)
    (sdir / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(st.temp_dir, ignore_errors=True)
    if not keep_logs:
        shutil.rmtree(sdir / "logs", ignore_errors=True)
    return list(st.nodes)


@contextmanager
def _state_lock(state_dir: str | Path | None) -> Iterator[None]:
    """One writer of ``state.json`` at a time among the commands that add or remove nodes (two ``capacity
    apply`` runs at once would otherwise drop each other's node records, and leak their raylets)."""
    import fcntl

    sdir = Path(state_dir or default_state_dir())
    with open(sdir / ".nodes.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def running_cluster(state_dir: str | Path | None = None) -> tuple[LaunchState, ClusterSpec]:
    """The local cluster this machine started (its state) and its topology with the standby slots its
    pools may scale into (:func:`cluster.topology.with_standby`); raises :class:`LauncherError` if none runs."""
    sdir = Path(state_dir or default_state_dir())
    st = LaunchState.load(sdir)
    head = st.nodes.get(HEAD_NAME) if st is not None else None
    if st is None or st.joined_to or head is None or raylet_pid(head) is None:
        raise LauncherError(f"no local cluster is running from {sdir} (this host's head): "
                            "`orchestrator cluster up` starts one")
    return st, with_standby(load_cluster(st.config))


def start_nodes(names: list[str], state_dir: str | Path | None = None, *,
                object_store_mb: int = DEFAULT_OBJECT_STORE_MB, parallel: int = 2, timeout_s: float = 180,
                progress: Callable[[str, float], None] | None = None) -> list[str]:
    """Start these nodes of the running cluster, standby slots included (a pool scaling up); those already
    running are left alone. Returns the names started, once the GCS has registered them."""
    with _state_lock(running_cluster(state_dir)[0].state_dir):
        return _start_nodes(names, state_dir, object_store_mb, parallel, timeout_s, progress)


def _start_nodes(names: list[str], state_dir: str | Path | None, object_store_mb: int, parallel: int,
                 timeout_s: float, progress: Callable[[str, float], None] | None) -> list[str]:
    st, spec = running_cluster(state_dir)
    plan = {r.name: r for r in cluster_resources(spec)}
    unknown = sorted(set(names) - set(plan))
    if unknown:
        raise LauncherError(f"no node {', '.join(unknown)} in {st.config} or its scaling slots")
    running = running_nodes(st)
    todo = [plan[n] for n in dict.fromkeys(names) if n not in running]
    stop_sessions([st.nodes[r.name].sid for r in todo if r.name in st.nodes], grace_s=2)  # dead incarnations
    check_socket_paths([node_temp_dir(st, r.name) for r in todo])
    _start_workers(st, todo, object_store_mb, parallel, progress or (lambda name, s: None))
    _wait_registered(f"127.0.0.1:{st.gcs_port}", [r.name for r in todo], timeout_s, st.token_file)
    st.save()
    return [r.name for r in todo]


def stop_node(name: str, state_dir: str | Path | None = None, grace_s: float = 5.0) -> bool:
    """Stop one node's raylet and every process of its session (a drained node leaving: capacity apply),
    and forget it; False if it was not running."""
    if name == HEAD_NAME:
        raise LauncherError("the head cannot be stopped alone: `orchestrator cluster down` stops the cluster")
    with _state_lock(running_cluster(state_dir)[0].state_dir):
        st, _ = running_cluster(state_dir)
        rec = st.nodes.pop(name, None)
        if rec is None:
            return False
        was = raylet_pid(rec) is not None
        stop_sessions([rec.sid], grace_s=grace_s)
        st.save()
        return was


def kill_node(name: str, state_dir: str | Path | None = None, sig: int = signal.SIGKILL) -> int:
    """Kill one emulated node's raylet (fault injection); returns the pid killed."""
    st = LaunchState.load(state_dir or default_state_dir())
    if st is None or name not in st.nodes:
        raise LauncherError(f"no node {name!r} started from {state_dir or default_state_dir()}")
    pid = raylet_pid(st.nodes[name])
    if pid is None:
        raise LauncherError(f"node {name!r} is not running")
    os.kill(pid, sig)
    return pid


def join(address: str, node: str, config: str | Path, *, state_dir: str | Path | None = None,
         token_file: str | Path | None = None, object_store_mb: int = DEFAULT_OBJECT_STORE_MB,
         listen: str | None = None) -> NodeRecord:
    """Start one raylet for ``node`` of ``config`` joining the head at ``address`` (HOST:PORT).

    Used on another host (copy the head's token file there first, or pass
    ``token_file``); recorded in this host's state so that ``down`` stops it.
    ``listen`` defaults to this host's cluster's, else to what ``address`` implies
    (:func:`cluster.network.join_listen`).
    """
    spec = load_cluster(config)
    plan = {r.name: r for r in cluster_resources(spec)}
    if node not in plan:
        from cluster.config import ConfigError

        raise ConfigError(config, "--node", f"no node {node!r} in the config (known: {', '.join(plan)})")
    token = Path(token_file or default_token_file()).expanduser()
    if not token.is_file():
        raise LauncherError(f"no token file at {token}: copy the head's token (ray get-auth-token) there "
                            "or pass --token-file")
    sdir = Path(state_dir or default_state_dir()).resolve()
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / "logs").mkdir(exist_ok=True)
    st = LaunchState.load(sdir)
    if st is None:
        st = LaunchState(config=str(data_path(config).resolve()), state_dir=str(sdir), temp_dir=str(sdir / "ray"),
                          token_file=str(token), gcs_port=int(address.rsplit(":", 1)[1]),
                          dashboard_host="", dashboard_port=0, client_port=0, joined_to=address,
                          started_at=time.time(), listen=join_listen(address, listen))
    elif listen is not None and listen != st.listen:
        raise LauncherError(f"this host's nodes listen on {st.listen}; its nodes must all listen alike")
    temp = node_temp_dir(st, node)
    check_socket_paths([temp])
    link_node_dir(st, node)
    if node in st.nodes:
        if raylet_pid(st.nodes[node]) is not None:
            raise LauncherError(f"node {node!r} is already running here")
        stop_sessions([st.nodes[node].sid], grace_s=2)  # what is left of an earlier, dead incarnation
    res = plan[node]
    env = _node_env(_process_env(token, str(data_path(config).resolve()), sdir, st.listen), res)
    sid, secs = _ray_start_retry(lambda: _worker_args(res, address, temp, object_store_mb, st.listen),
                                 env, sdir / "logs" / f"{node}.log", _on_retry(st, node, lambda name, s: None))
    rec = NodeRecord(node, sid, secs, res.labels, res.ray_totals())
    st.nodes[node] = rec
    st.save()
    return rec


@dataclass
class NodeStatus:
    """One row of ``cluster status``."""

    name: str
    alive: bool
    node_id: str | None
    labels: dict[str, str]
    total: dict[str, float]
    available: dict[str, float]


def status(state_dir: str | Path | None = None, address: str | None = None) -> tuple[LaunchState | None,
                                                                                    list[NodeStatus]]:
    """The cluster's nodes as Ray sees them: alive, labels, total and free resources."""
    import ray

    st = LaunchState.load(state_dir or default_state_dir())
    if st is None and address is None:
        raise LauncherError(f"no cluster state in {state_dir or default_state_dir()}; run "
                            "`orchestrator cluster up` first or pass --address")
    if st is not None and not port_open("127.0.0.1" if not st.joined_to else st.gcs_address.rsplit(":", 1)[0],
                                        int(st.gcs_address.rsplit(":", 1)[1])):
        raise LauncherError(f"the cluster recorded in {st.state_dir} is not reachable at {st.gcs_address}; "
                            "`orchestrator cluster up` restarts it")
    was = ray.is_initialized()
    connect(state_dir, address)
    try:
        avail = available_resources_per_node()
        rows = []
        seen = set()
        for n in sorted(ray.nodes(), key=lambda n: (not n["Alive"], n["Labels"].get(LABEL_NODE, ""))):
            name = n["Labels"].get(LABEL_NODE, n.get("NodeName", n["NodeID"][:8]))
            if name in seen:  # a dead incarnation of a node that came back
                continue
            seen.add(name)
            rows.append(NodeStatus(name, bool(n["Alive"]), n["NodeID"], dict(n["Labels"]),
                                   dict(n["Resources"]), dict(avail.get(n["NodeID"], {}))))
        return st, rows
    finally:
        if not was:
            ray.shutdown()
