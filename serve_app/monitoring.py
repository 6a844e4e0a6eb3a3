"""``configs/monitoring/``: the Prometheus config filled in for the local cluster, the dashboard's queries."""
from __future__ import annotations

import json
from pathlib import Path

from cluster.launcher import LauncherError, LaunchState, default_state_dir
from cluster.package_data import DATA_ROOT

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
