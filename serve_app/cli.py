"""``orchestrator serve up|down|status|prometheus-config``: the router on the local cluster.

A plugin of :mod:`simulations.cli` (``serve_app.cli:add_serve``), imported lazily so
the other sub-commands never load Ray Serve. ``up`` connects to the cluster that
``orchestrator cluster up`` started (its state directory), starts Serve bound to
``--host``/``--port`` (loopback by default) and deploys the router with the
router args of ``--config`` (``configs/serve.yaml``) and the flags given.
"""
from __future__ import annotations

import argparse
import json
import sys

from serve_app.config import REPO_ROOT

DEFAULT_CONFIG = str(REPO_ROOT / "configs" / "serve.yaml")


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
    for p in (up, ssub.add_parser("down", help="stop Serve on the cluster"),
              ssub.add_parser("status", help="the router's deployment status")):
        p.add_argument("--state-dir", default=None, help="launcher state directory (default $ORCH_RAY_DIR)")
        p.add_argument("--address", default=None, help="Ray address instead of the state directory")
    prom = ssub.add_parser("prometheus-config", help="print a Prometheus config scraping the local cluster")
    prom.add_argument("--state-dir", default=None)
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
        print(f"orchestrator serve: error: {exc}", file=sys.stderr)
        return 2
    except (LauncherError, TimeoutError, RuntimeError, OSError) as exc:
        print(f"orchestrator serve: error: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from serve_app import deploy

    if args.serve_command == "up":
        router_args, http = _serve_options(args.config)
        for key, value in (("policy", args.policy), ("history_url", args.history),
                           ("admin_token_file", args.admin_token_file)):
            if value is not None:
                router_args[key] = value
        ep = deploy.Endpoint(args.host or http.get("host") or deploy.DEFAULT_HOST,
                             args.port or int(http.get("port") or deploy.DEFAULT_PORT), args.direct_port)
        print(f"deploying the router ({router_args['policy']}) on {ep.url} ...", flush=True)
        health = deploy.start(router_args, ep, state_dir=args.state_dir, address=args.address)
        print(f"router ready at {ep.url} (OpenAPI: {ep.url}/docs)"
              + (f", direct ingress {ep.direct_url}" if ep.direct_url else ""))
        print(json.dumps(health))
        return 0
    if args.serve_command == "down":
        deploy.stop(state_dir=args.state_dir, address=args.address)
        print("Serve stopped")
        return 0
    if args.serve_command == "status":
        print(json.dumps(deploy.status(state_dir=args.state_dir, address=args.address), indent=2))
        return 0
    from serve_app.monitoring import prometheus_config

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
        print(f"orchestrator serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
