"""``configs/monitoring/``: the Prometheus config filled in for the local cluster, the dashboard's
queries, and a local Prometheus process on that config (``make demo`` starts one)."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

from cluster.launcher import LauncherError, LaunchState, default_state_dir
from cluster.package_data import DATA_ROOT
from cluster.procs import port_free

PROMETHEUS_TEMPLATE = DATA_ROOT / "configs" / "monitoring" / "prometheus.yml"
GRAFANA_DASHBOARD = DATA_ROOT / "configs" / "monitoring" / "grafana_dashboard.json"
PLACEHOLDER = "RAY_TEMP_DIR"


def ray_temp_dir(state_dir: str | Path | None = None) -> Path:
    """The Ray temp dir of the cluster the launcher started (where the discovery file is)."""
    sdir = Path(state_dir or default_state_dir())
    st = LaunchState.load(sdir)
    if st is None:
        raise LauncherError(f"no cluster state in {sdir}; run `orchestrator cluster up` first")
    return Path(st.temp_dir)


def prometheus_config(state_dir: str | Path | None = None, *, temp_dir: str | Path | None = None) -> str:
    """``configs/monitoring/prometheus.yml`` with the discovery file of this cluster."""
    where = Path(temp_dir) if temp_dir is not None else ray_temp_dir(state_dir)
    return PROMETHEUS_TEMPLATE.read_text().replace(PLACEHOLDER, str(where))


def dashboard_queries(path: str | Path = GRAFANA_DASHBOARD) -> list[str]:
    """Every PromQL expression of the Grafana dashboard (panels and template variables)."""
    doc = json.loads(Path(path).read_text())
    out = [t["expr"] for p in doc.get("panels", []) for t in p.get("targets", []) if t.get("expr")]
    return out


def prometheus_ready(url: str, timeout: float = 2.0) -> bool:
    """Whether the Prometheus at ``url`` answers ``/-/ready`` with 200 (503 while it loads its data)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/-/ready", timeout=timeout) as r:
            return r.status == 200
    except Exception:  # noqa: BLE001 - refused, 503, timeout: not ready
        return False


def first_free_port(port: int, tries: int = 20, host: str = "127.0.0.1") -> int | None:
    """``port`` or the next free one of the ``tries`` after it (None when all are taken)."""
    return next((p for p in range(port, port + tries) if port_free(p, host)), None)


def start_prometheus(binary: str, config: Path, data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    """``prometheus`` on ``config``, listening on 127.0.0.1 only, as its own session (so that the
    caller can stop exactly it, and a Ctrl-C in the caller's terminal does not)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout_s: float = 60.0) -> None:
    """Block until ``proc`` answers ``/-/ready``; a RuntimeError naming its log if it exits or stalls."""
    deadline = time.monotonic() + timeout_s
    while not prometheus_ready(url):
        if proc.poll() is not None:
            raise RuntimeError(f"Prometheus exited with status {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prometheus not ready at {url} after {timeout_s:.0f} s; see {log}")
        time.sleep(0.3)
