"""A router service over a fake Ray node view, for tests of the HTTP layer without a cluster.

The fake replaces only ``ray.nodes()`` (which topology nodes are alive); policies,
the live-state bookkeeping, validation, the SQLite history and the FastAPI app are
the real ones. Nothing here runs a Ray task: tests that need one are under
``tests/integration``.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

from cluster.live_state import RayNode, topology_nodes
from cluster.topology import ClusterSpec, load_cluster
from serve_app.api import create_api
from serve_app.auth import AdminAuth
from serve_app.config import parse_router_config, token_sha256
from serve_app.keys import Quota
from serve_app.metrics import MemorySink, RouterMetrics
from serve_app.service import RouterService
from tests.conftest import CONFIGS

SMALL = CONFIGS / "cluster" / "test_small.yaml"
TOKEN = "unit-test-admin-token-5b1e"


class FakeRay:
    """``ray.nodes()`` for a topology: every node alive unless named in ``dead``."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.dead: set[str] = set()

    def __call__(self, *args, **kwargs) -> list[RayNode]:
        return topology_nodes(self.spec, self.dead)


def make_service(tmp_path: Path, backend=None, **args) -> tuple[RouterService, FakeRay]:
    """A router service over ``test_small.yaml``; ``backend`` (e.g. the executor tests' fake Ray,
    which runs nothing until the test finishes a task) lets tasks be accepted and run."""
    cfg = parse_router_config({"cluster": str(SMALL), "history_url": f"sqlite:///{tmp_path / 'history.db'}",
                               "refresh_s": 0.05, **args})
    ray = FakeRay(load_cluster(SMALL))
    return RouterService(cfg, reader=ray, metrics=RouterMetrics(MemorySink()), backend=backend), ray


def api_key(svc: RouterService, name: str = "tests", **quota) -> str:
    """A new API key of ``svc``'s router (its secret)."""
    return svc.keys.create(name, Quota(**quota))[1]


def make_client(svc: RouterService, token: str | None = TOKEN, key: str | None = "tests"):
    """A test client of ``svc``'s API that sends the API key ``key`` (created here) on every call,
    unless a call sets its own Authorization header; ``key=None`` sends none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    auth = AdminAuth(token_sha256(token) if token else None,
                     "no admin token is configured: set ORCH_ADMIN_TOKEN")
    headers = {}
    if key is not None:
        known = {k.name for k in svc.keys.list() if k.revoked_at is None}
        secret = getattr(svc, "test_keys", {}).get(key) if key in known else None
        if secret is None:
            secret = api_key(svc, key)
            svc.test_keys = {**getattr(svc, "test_keys", {}), key: secret}
        headers["Authorization"] = f"Bearer {secret}"
    return TestClient(create_api(lambda: svc, lambda: auth), headers=headers)


def fill_demand(svc: RouterService, days: int, per_hour: float, now: float | None = None, seed: int = 7,
                quiet_hours: int = 0) -> list[float]:
    """``days`` of whole hours of finished CPU tasks before ``now``'s hour, with a daily cycle around
    ``per_hour`` (busier by day), two kinds, none in the last ``quiet_hours``: the history a capacity
    forecast reads. Returns their arrival times."""
    import numpy as np

    rng = np.random.default_rng(seed)
    hour = 3600.0
    now = time.time() if now is None else now
    times = []
    for h in range(days * 24 - quiet_hours):
        start = (now // hour - days * 24 + h) * hour
        for k in range(rng.poisson(per_hour * (1 + 0.6 * np.sin(2 * np.pi * (h % 24) / 24)))):
            kind = "fraud_scoring" if k % 3 else "llm_inference"
            at = start + rng.uniform(0, hour)
            svc.history.accept(f"d-{h}-{k}", {"kind": kind, "cpu_milli": 500, "mem_mib": 512, "work": 0.05},
                               kind=kind, status="succeeded", pool="edge", share="cpu", exec_ms=50.0, accepted_at=at)
            times.append(at)
    svc.history.flush()
    return times
