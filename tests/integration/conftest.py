"""One real multi-raylet Ray cluster (configs/cluster/test_small.yaml) for all integration tests.

Started once for this package through the launcher itself (free ports, its own
state and temp dir under /tmp, its own token file), so it never touches another
Ray cluster on the machine. While it is up, ``$ORCH_TEST_RAY_DIR`` points at it,
which other integration modules (the Serve router's) take as "reuse this cluster"
(their ``launcher.up`` on it restarts any node an earlier test killed). Package
scope rather than session scope, so the cluster is gone before any later test
package starts a Ray of its own. Modules that need a driver connect and disconnect
themselves. Teardown runs ``down`` and checks that no process it started is left.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster import launcher
from cluster.ray_compat import LOCAL_ONLY_ENV, refresh_auth_config, refresh_local_only
from cluster.procs import free_fixed_port
from cluster.topology import ClusterSpec, load_cluster
from tests.conftest import CONFIGS

TEST_YAML = CONFIGS / "cluster" / "test_small.yaml"
_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", launcher.ENV_CONFIG, launcher.ENV_STATE_DIR,
        "ORCH_TEST_RAY_DIR", LOCAL_ONLY_ENV[0])


@dataclass
class RealCluster:
    spec: ClusterSpec
    state: launcher.LaunchState
    state_dir: Path
    up_seconds: float

    @property
    def dashboard(self) -> str:
        return self.state.dashboard_url


@pytest.fixture(scope="package")
def real_cluster():
    import ray

    saved = {k: os.environ.get(k) for k in _ENV}
    state_dir = Path(tempfile.mkdtemp(prefix="orch-ray-it-", dir="/tmp"))  # short: Unix socket paths
    res = None
    try:
        port = free_fixed_port(span=2, host="0.0.0.0")  # outside the ephemeral range (cluster.procs)
        res = launcher.up(TEST_YAML, state_dir=state_dir, port=port, dashboard_port=port + 1,
                          token_file=state_dir / "auth_token")
        print(f"\n[integration] test cluster up in {res.seconds:.1f} s", file=sys.stderr)
        os.environ["ORCH_TEST_RAY_DIR"] = str(state_dir)
        yield RealCluster(load_cluster(TEST_YAML), res.state, state_dir, res.seconds)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        st = launcher.LaunchState.load(state_dir)
        sids = [r.sid for r in st.nodes.values()] if st else []
        launcher.down(state_dir)
        left = [p for s in sids for p in launcher.session_pids(s)]
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        refresh_auth_config()
        refresh_local_only()
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not left, f"processes left after down: {left}"
