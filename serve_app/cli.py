"""``orchestrator serve up|down|status|prometheus-config``: the router on the local cluster.

A plugin of :mod:`orchestrator.cli` (``serve_app.cli:add_serve``), imported lazily so
the other sub-commands never load Ray Serve. ``up`` connects to the cluster that
``orchestrator cluster up`` started (its state directory), starts Serve bound to
``--host``/``--port`` (loopback by default) and deploys the router with the
router args of ``--config`` (``configs/serve.yaml``) and the flags given.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cluster.package_data import DATA_ROOT

DEFAULT_CONFIG = str(DATA_ROOT / "configs" / "serve.yaml")


def add_serve(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="run the HTTP placement router (Ray Serve) on the local cluster")
    ssub = s.add_subparsers(dest="serve_command", required=True)
    up = ssub.add_parser("up", help="start Serve and deploy the router")
    up.add_argument("--config", default=DEFAULT_CONFIG, help="Serve config whose serve_app args are used")
    up.add_argument("--policy", help="initial policy (overrides the config)")
    up.add_argument("--history", help="history URL, e.g. sqlite:///results/serve/history.db")
    up.add_argument("--admin-token-file", help="file holding the admin bearer token")
    up.add_argument("--host", default=None, help="address to serve HTTP on (default: the config's, else 127.0.0.1)")
    up.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's, else 8000)")
    up.add_argument("--direct-port", type=int, default=None,
                    help="also serve from the router replica itself on this port (Serve's throughput-optimised "
                         "direct ingress; about 3x the proxy's request rate here)")
    up.add_argument("--front-port", type=int, default=None,
                    help="also run the hardened nginx front (serve_app/front.py) on this port, forwarding to the "
                         "router: the one port to expose (per-address caps, header and body timeouts)")
    up.add_argument("--front-host", default=None, help="address the front listens on (default: --host's)")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the router to answer")
    up.add_argument("--hold", action="store_true", help=argparse.SUPPRESS)  # the holder process itself
    for p in (up, ssub.add_parser("down", help="stop Serve on the cluster"),
              ssub.add_parser("status", help="the router's deployment status")):
        p.add_argument("--state-dir", default=None, help="launcher state directory (default $ORCH_RAY_DIR)")
        p.add_argument("--address", default=None, help="Ray address instead of the state directory")
    prom = ssub.add_parser("prometheus-config", help="print a Prometheus config scraping the local cluster")
    prom.add_argument("--state-dir", default=None, help="launcher state directory (default $ORCH_RAY_DIR)")
    prom.add_argument("--out", default=None, help="write it here instead of stdout")
    s.set_defaults(func=run)


def _serve_options(path: str) -> tuple[dict, dict]:
    """(router args, Serve http_options) from a Serve config file."""
    import yaml

    from cluster.config import ConfigError
    from serve_app.config import load_router_config

    args = load_router_config(path).to_dict()
    try:
        with open(path) as f:
            http = (yaml.safe_load(f) or {}).get("http_options") or {}
    except OSError as exc:
        raise ConfigError(path, "<file>", str(exc)) from None
    return args, http


def run(args: argparse.Namespace) -> int:
    """Run one ``serve`` action; operational failures print one line and exit 1."""
    from cluster.launcher import LauncherError
    from serve_app.policies import PolicyChoiceError

    try:
        return _run(args)
    except PolicyChoiceError as exc:
        print(f"{ERROR}{exc}", file=sys.stderr)
        return 2
    except (LauncherError, TimeoutError, RuntimeError, OSError) as exc:
        print(f"{ERROR}{exc}", file=sys.stderr)
        return 1


READY = "router ready:"
ERROR = "orchestrator serve: error: "
HOLDER = "router-holder"


def _hold_router(args: argparse.Namespace, argv: list[str]) -> int:
    """Deploy from a background driver that stays connected, and wait until the router answers.

    The router's Ray tasks belong to the Ray job of the driver that started Serve. When
    that driver exits, Ray force-exits every idle worker of the job ("Force exiting worker
    whose job has exited" in the raylet log), so each placed task would pay a fresh
    worker start (measured 8-15 s per task under a burst instead of 0.1 s). So ``up``
    runs the deployment in a detached process that holds the job open; it is attached
    to the cluster's launcher state and stopped by ``serve down`` or ``cluster down``.
    """
    import subprocess
    import time

    from cluster.launcher import stop_attached

    sdir = _state_dir(args)
    sdir.mkdir(parents=True, exist_ok=True)
    stop_attached(sdir, HOLDER)  # a holder of an earlier deployment
    log_path = sdir / "serve-holder.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "serve_app.cli", "serve", *argv, "--hold"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + args.timeout + 60
    while True:
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        if f"\n{READY}" in f"\n{text}":
            print("\n".join(line for line in text.splitlines() if not line.startswith(READY)))
            print(f"(held open by a background driver, pid {proc.pid}, log {log_path}; "
                  "`orchestrator serve down` stops it)")
            return 0
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            sys.stdout.write(text)
            # the holder's own one-line error (no cluster, a port taken ...) is the reason to show
            said = [ln.split(ERROR, 1)[1] for ln in text.splitlines() if ln.startswith(ERROR)]
            reason = said[-1] if said else "the router did not come up"
            print(f"{ERROR}{reason} (log {log_path})", file=sys.stderr)
            return proc.returncode or 1
        time.sleep(0.5)


def _up_argv(args: argparse.Namespace) -> list[str]:
    """``serve up`` arguments that reproduce ``args`` (for the holder process)."""
    out = ["up"]
    for flag in ("config", "policy", "history", "admin_token_file", "host", "port", "direct_port", "front_port",
                 "front_host", "state_dir", "address", "timeout"):
        value = getattr(args, flag)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    return out


def _stop_holder_and_front(args: argparse.Namespace) -> None:
    """Stop an earlier deployment's holder (it stops its front on SIGTERM) and a front that outlived it."""
    from cluster.launcher import stop_attached
    from serve_app.front import stop_running

    stop_attached(_state_dir(args), HOLDER)
    stop_running(_state_dir(args) / "front")


def _state_dir(args: argparse.Namespace) -> Path:
    import os

    from cluster.launcher import default_state_dir

    return Path(args.state_dir or os.environ.get("ORCH_RAY_DIR") or default_state_dir())


def _endpoint(args: argparse.Namespace, http: dict):
    """Where the router serves: the flags, else the Serve config's ``http_options``, else the defaults."""
    from serve_app import deploy

    return deploy.Endpoint(args.host or http.get("host") or deploy.DEFAULT_HOST,
                           args.port or int(http.get("port") or deploy.DEFAULT_PORT), args.direct_port)


def _front_config(args: argparse.Namespace, host: str, cfg=None):
    """The front's settings: ``--front-port``/``--front-host`` and the guard's own limits (``cfg``: the
    router config; None: their defaults)."""
    from serve_app.config import RouterConfig
    from serve_app.front import FrontConfig

    cfg = cfg or RouterConfig()
    return FrontConfig(host=args.front_host or host, port=args.front_port, header_timeout_s=cfg.body_timeout_s,
                       body_timeout_s=cfg.body_timeout_s, max_header_bytes=cfg.max_header_bytes,
                       max_body_bytes=cfg.max_body_bytes)


def _hold(args: argparse.Namespace, where: str, fr=None) -> int:
    """In the holder: attach to the cluster's state, say ready, keep the Ray job open until stopped
    (and the front ``fr`` with it)."""
    import os
    import signal
    import time

    from cluster.launcher import attach

    attach(_state_dir(args), HOLDER, os.getsid(0), "serve_app.cli")
    print(f"{READY} {where}", flush=True)

    def stop(*_) -> None:
        if fr is not None:
            fr.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(3600)


def _run(args: argparse.Namespace) -> int:
    from serve_app import deploy
    from serve_app.config import parse_router_config

    if args.serve_command == "up" and not args.hold:
        _, http = _serve_options(args.config)  # a bad config exits 2 here, before anything starts
        if args.front_port is not None:  # and a missing nginx or an unusable port exit 1 saying why
            from serve_app import front

            _stop_holder_and_front(args)  # an earlier deployment's front may hold the port
            ep = _endpoint(args, http)
            front.check(_front_config(args, ep.host), [p for p in (ep.port, ep.direct_port) if p is not None])
        return _hold_router(args, _up_argv(args))
    if args.serve_command == "up":
        router_args, http = _serve_options(args.config)
        for key, value in (("policy", args.policy), ("history_url", args.history),
                           ("admin_token_file", args.admin_token_file)):
            if value is not None:
                router_args[key] = value
        # paths as this command resolves them: the replica's working directory is Ray's, not ours
        cfg = parse_router_config(router_args, args.config)
        router_args["history_url"] = cfg.history_path_url()
        if cfg.cluster:
            router_args["cluster"] = str(cfg.cluster_path())
        for key in ("admin_token_file", "registry"):
            if router_args.get(key):
                router_args[key] = str(Path(router_args[key]).expanduser().absolute())
        ep = _endpoint(args, http)
        if args.front_port is not None:
            from serve_app import front

            router_args["front_peers"] = front.peers(ep.host)  # the guard counts clients by the front's X-Real-IP
        print(f"deploying the router ({router_args['policy']}) on {ep.url} ...", flush=True)
        health = deploy.start(router_args, ep, state_dir=args.state_dir, address=args.address,
                              timeout_s=args.timeout)
        where = (f"router ready at {ep.url} (OpenAPI: {ep.url}/docs)"
                 + (f", direct ingress {ep.direct_url}" if ep.direct_url else ""))
        fr = None
        if args.front_port is not None:
            from serve_app import front

            limits = _front_config(args, ep.host, cfg)
            try:
                fr = front.start(limits, front.upstreams(ep.host, ep.port, ep.direct_port), _state_dir(args) / "front")
            except Exception:
                try:
                    deploy.stop(state_dir=args.state_dir, address=args.address)  # no router left without its front
                except Exception:  # noqa: BLE001 - the front's failure is the one to report
                    pass
                raise
            where += f", hardened front {fr.url}"
        print(where)
        print(json.dumps(health))
        return _hold(args, where, fr)
    if args.serve_command == "down":
        try:
            deploy.stop(state_dir=args.state_dir, address=args.address)
        finally:
            _stop_holder_and_front(args)
        print("Serve stopped")
        return 0
    if args.serve_command == "status":
        print(json.dumps(deploy.status(state_dir=args.state_dir, address=args.address), indent=2))
        return 0
    from cluster.monitoring import prometheus_config

    text = prometheus_config(args.state_dir)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"written to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m serve_app.cli serve ...``: the same commands without the ``orchestrator`` entry point."""
    from cluster.config import ConfigError

    p = argparse.ArgumentParser(prog="python -m serve_app.cli")
    add_serve(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"{ERROR}{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
