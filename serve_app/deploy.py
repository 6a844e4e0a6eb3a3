"""Start, inspect and stop the router on a running Ray cluster (what ``orchestrator serve`` does).

Serve-level settings live here, not in the router config: where HTTP is served
(``host``/``port``, loopback by default: nothing listens on other addresses unless
the operator names them) and the optional *direct ingress* port, Serve's
throughput-optimised mode in which the router replica itself serves HTTP on a
fixed port beside the proxy (Ray 2.60's ``RAY_SERVE_THROUGHPUT_OPTIMIZED``; it
passes the controller's environment on to the proxy and the replica).

Ray 2.60's HAProxy ingress is deliberately not used: it binds its stats and
metrics ports on all interfaces and opens a world-writable admin socket, which
breaks the "only configured addresses" rule (README "Serve router").
"""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.procs import ephemeral_ports, in_ephemeral_range
from cluster.ray_compat import serve_http_options

log = logging.getLogger("serve_app")

APP_NAME = "orchestrator"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    direct_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{_bracket(self.host)}:{self.port}"

    @property
    def direct_url(self) -> str | None:
        return None if self.direct_port is None else f"http://{_bracket(self.host)}:{self.direct_port}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def controller_env(direct_port: int | None, span: int = 1) -> dict[str, str]:
    """Environment for Serve's controller (inherited by its proxy and replicas).

    ``span`` ports from ``direct_port`` on are handed to ingress replicas in order;
    the router, deployed first, gets ``direct_port`` (other apps on the same Serve,
    such as the benchmark's baseline, need one each).
    """
    if direct_port is None:
        return {}
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        # a fixed port for the one router replica, reusable at once after a restart
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(direct_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(direct_port + span),  # exclusive bound
        "RAY_SERVE_PORT_QUARANTINE_S": "0",  # the quarantine exists for HAProxy, which is not used
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    }


def start(args: dict[str, Any], endpoint: Endpoint, *, state_dir: str | Path | None = None,
          address: str | None = None, timeout_s: float = 120.0, direct_span: int = 1) -> dict[str, Any]:
    """Start Serve (if needed) and deploy the router; return its health once it answers."""
    from ray import serve

    from cluster.launcher import connect
    from serve_app.deployment import build_app

    connect(state_dir, address, namespace="serve")
    app = build_app(args)  # validates the router args before anything starts
    if endpoint.direct_port is not None and in_ephemeral_range(endpoint.direct_port, direct_span):
        lo, hi = ephemeral_ports()
        log.warning("direct-ingress port %d is inside the ephemeral port range %d-%d: an outgoing connection "
                    "can take it while the router restarts, keeping the new replica from binding it; "
                    "prefer a port below %d", endpoint.direct_port, lo, hi, lo)
    serve.start(http_options={"host": endpoint.host, "port": endpoint.port},
                proxy_location="HeadOnly",
                controller_options={"runtime_env": {"env_vars": controller_env(endpoint.direct_port,
                                                                                           direct_span)}})
    running = serve_http_options()
    if running and (running.get("host"), running.get("port")) != (endpoint.host, endpoint.port):
        raise RuntimeError(f"Serve is already running on this cluster at {running.get('host')}:"
                           f"{running.get('port')}; run `orchestrator serve down` first to move it")
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    return wait_healthy(endpoint.url, timeout_s)


def wait_healthy(url: str, timeout_s: float = 120.0) -> dict[str, Any]:
    """Poll ``GET /healthz`` until it answers 200; raise TimeoutError with the last error."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"the router at {url} did not become healthy in {timeout_s:.0f} s ({last})")


def stop(*, state_dir: str | Path | None = None, address: str | None = None, shutdown: bool = True) -> None:
    """Delete the router application (and shut Serve down when ``shutdown``)."""
    from ray import serve

    from cluster.launcher import connect

    connect(state_dir, address, namespace="serve")
    if shutdown:
        serve.shutdown()
    else:
        serve.delete(APP_NAME)


def status(*, state_dir: str | Path | None = None, address: str | None = None) -> dict[str, Any]:
    """Serve's view of the router application: status and replica states."""
    from ray import serve

    from cluster.launcher import connect

    connect(state_dir, address, namespace="serve")
    st = serve.status()
    app = st.applications.get(APP_NAME)
    if app is None:
        return {"status": "NOT_DEPLOYED", "http": serve_http_options()}
    return {"status": str(app.status.value if hasattr(app.status, "value") else app.status),
            "message": app.message,
            "deployments": {name: {"status": str(getattr(d.status, "value", d.status)),
                                   "replicas": {str(getattr(k, "value", k)): v
                                                for k, v in d.replica_states.items()}}
                            for name, d in app.deployments.items()},
            "http": serve_http_options()}
