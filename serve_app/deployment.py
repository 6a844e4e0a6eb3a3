"""The Ray Serve application: one ``Router`` replica serving :mod:`serve_app.api`.

One replica, on purpose: it owns the placement bookkeeping of the cluster (the
executor) and is the single writer of the task history, so two replicas would
double-book capacity and race on the history. Throughput comes from making each
request cheap and batching concurrent ones, not from replicas; the proxy in front
is the ceiling (see README "Serve router"). Serve restarts the replica if it dies
or fails its health check; the new one resumes what the old one had accepted.

The replica is pinned (by default) to the Ray head, which the launcher labels
``orchestrator-role=head`` and gives no CPUs: the router takes no capacity the
policies hand out, and the history file stays on one host across restarts.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
from typing import Any, Callable

from ray import serve
from ray.serve import Application

from cluster.ray_compat import replica_binds_with_port_reuse
from cluster.ray_resources import LABEL_ROLE
from serve_app import runtime
from serve_app.api import create_api
from serve_app.auth import AdminAuth
from serve_app.config import RouterConfig, parse_router_config, resolve_admin_token
from serve_app.python_calls import run_function
from serve_app.service import RouterService

log = logging.getLogger("serve_app")

HEALTH_TIMEOUT_S = 10.0
#: requests the replica serves at once. Past it Serve queues requests, ``/healthz`` among them; a
#: request waiting for its body costs a coroutine here, so the slots are many and each client's
#: share of them is capped by :mod:`serve_app.guard` (``client_max_requests``, ``body_timeout_s``)
MAX_ONGOING = 4096


def _direct_ingress_reuses_its_port() -> None:
    """Let a restarted replica bind the fixed direct-ingress port at once.

    Ray 2.60 binds a replica's direct-ingress socket without SO_REUSEADDR, so after a
    replica dies the new one cannot bind the port while any connection the old one
    closed sits in TIME_WAIT there (60 s on Linux): Serve restarts it every few seconds
    until then, and the router is down through the proxy too (seen in the kill test:
    20-55 s). The proxy's own server sets the option through Serve's helper; this asks
    the replica's to do the same (SO_REUSEADDR and SO_REUSEPORT, as for the proxy).
    Skipped, with a warning, if Ray's internals are not what this expects.
    """
    try:
        replica_binds_with_port_reuse()
    except Exception as exc:  # noqa: BLE001 - a slower restart, not a broken router
        log.warning("direct ingress keeps Ray's default socket options (%s): a restarted router may "
                    "wait up to a minute for its direct port", exc)


_direct_ingress_reuses_its_port()


def _asgi():
    """Evaluated in the replica: the FastAPI app bound to this process's service."""
    return create_api(runtime.service, runtime.auth)


@serve.deployment(name="Router", num_replicas=1, max_ongoing_requests=MAX_ONGOING, ray_actor_options={"num_cpus": 0},
                  health_check_period_s=5, health_check_timeout_s=30, graceful_shutdown_timeout_s=20)
@serve.ingress(_asgi)
class Router:
    """The router replica: builds the service, resumes unfinished tasks, reports health."""

    def __init__(self, config: dict[str, Any], admin_sha256: str | None = None, admin_note: str = "") -> None:
        cfg = parse_router_config(config)
        if admin_sha256 is None:  # none where the app was built: look where the replica runs
            admin_sha256, admin_note = resolve_admin_token(cfg)
        svc = RouterService(cfg)
        svc.watcher.start(svc.live.mark_dead)
        runtime.install(svc, AdminAuth(admin_sha256, admin_note))
        threading.Thread(target=self._background, args=(svc,), name="router-start", daemon=True).start()

    @staticmethod
    def _background(svc: RouterService) -> None:
        """After start: resume what a previous router left unfinished, warm the workers, freeze the heap."""
        try:
            if svc.cfg.resume_unfinished:
                n = svc.resume_unfinished()
                if n:
                    log.warning("resumed %d task(s) accepted by a previous router", n)
            svc.warm_up()
        except Exception:  # noqa: BLE001 - the router serves regardless
            log.exception("router start-up work failed")
        log.info("froze %d start-up objects", freeze_startup_heap())

    async def run_function(self, fields: dict[str, Any] | None, fn: Callable[..., Any], args: tuple = (),
                           kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        """The Python API's call (:mod:`orchestrator.work`, through a Serve handle): see
        :func:`serve_app.python_calls.run_function`."""
        return await run_function(runtime.service(), fields, fn, args, kwargs)

    async def check_health(self) -> None:
        """Serve restarts the replica if tasks could no longer finish or be recorded."""
        svc = runtime.service()
        if problems := svc.problems():
            raise RuntimeError("; ".join(problems))
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.run_in_executor(None, svc.history.flush), HEALTH_TIMEOUT_S)

    def __del__(self) -> None:
        svc = runtime.uninstall()
        if svc is not None:
            svc.close()


#: allocations between young-generation collections in the replica (Python's default: 700)
GC_YOUNG_THRESHOLD = 20_000


def freeze_startup_heap() -> int:
    """Keep what the replica built at start-up out of Python's full garbage collections.

    Ray, Serve, FastAPI, the policies and the topology leave a few hundred thousand
    objects that live as long as the process; every full collection walks them all,
    and a busy router (a 1,000-task batch creates ~10,000 objects) triggers one every
    few batches: a quarter of a batch's time in process, measured. ``gc.freeze`` moves
    them to a generation the collector never scans (what the Python docs advise for
    long-lived servers); objects created later are collected as before. Returns how many.

    The youngest generation is also collected every :data:`GC_YOUNG_THRESHOLD` allocations
    instead of Python's 700: a batch's tasks, decisions and views live until its answer is
    sent, so at 700 each is scanned and promoted several times before it dies (1,000
    distinct tasks in process: 359 young collections and 2 ms of 28, against 5 and 0.6 ms).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    return gc.get_freeze_count()


def actor_options(cfg: RouterConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": 0}
    if cfg.pin_to_head:
        opts["label_selector"] = {LABEL_ROLE: "head"}
    return opts


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application for ``serve run serve_app:build_app key=value ...`` and ``configs/serve.yaml``."""
    cfg = parse_router_config(args)
    sha, note = resolve_admin_token(cfg)
    return Router.options(ray_actor_options=actor_options(cfg),
                          logging_config={"enable_access_log": cfg.access_log}).bind(cfg.to_dict(), sha, note)
