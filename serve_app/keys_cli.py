"""``orchestrator keys create|list|revoke``: the router's per-client API keys (an admin command).

Writes the key table of the router's history database directly (the router
re-reads it every ``key_refresh_s``), so it works whether or not the router is up;
``POST /v1/keys`` with the admin token does the same over HTTP. A new key's secret
is printed once (or written, mode 0600, to ``--out``); only its SHA-256 is kept.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from serve_app.cli import DEFAULT_CONFIG


def add_keys(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="create, list and revoke the router's API keys (admin)")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="create a client's key; prints its secret once")
    create.add_argument("name", help="the client (owner of the tasks sent with the key)")
    create.add_argument("--rate", type=float, default=None, help="tasks per second (default: the router's rate_per_s)")
    create.add_argument("--burst", type=int, default=None, help="tasks at once above the rate (default: router's burst)")
    create.add_argument("--max-in-flight", type=int, default=None,
                        help="accepted, unfinished tasks at most (default: the router's key_max_in_flight)")
    create.add_argument("--out", default=None, help="write the secret to this file (mode 0600) instead of stdout")
    revoke = ksub.add_parser("revoke", help="revoke a client's key (the router refuses it within key_refresh_s)")
    revoke.add_argument("name", help="the key's name (as `keys list` shows it)")
    lst = ksub.add_parser("list", help="the keys, active and revoked (never their secrets)")
    for p in (create, revoke, lst):
        p.add_argument("--config", default=DEFAULT_CONFIG, help="Serve config whose history_url holds the keys")
        p.add_argument("--history", default=None,
                       help="history URL instead (sqlite:///path/history.db or postgresql://user@host/db)")
    k.set_defaults(func=run)


def _store(args: argparse.Namespace):
    from serve_app.config import load_router_config, parse_router_config
    from serve_app.keys import KeyStore

    cfg = load_router_config(args.config)
    if args.history is not None:
        cfg = parse_router_config({**cfg.to_dict(), "history_url": args.history}, "--history")
    return KeyStore(cfg.history_path_url())


def run(args: argparse.Namespace) -> int:
    from cluster.config import ConfigError
    from serve_app.history_schema import HistoryError
    from serve_app.keys import KeyStoreError, Quota

    try:
        store = _store(args)
        if args.keys_command == "create":
            key, secret = store.create(args.name, Quota(args.rate, args.burst, args.max_in_flight))
            if args.out:
                fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                os.fchmod(fd, 0o600)  # a file that was there keeps its mode otherwise
                with os.fdopen(fd, "w") as f:
                    f.write(secret + "\n")
                print(f"key {key.name!r} created; its secret is in {args.out}")
            else:
                print(secret)
            return 0
        if args.keys_command == "revoke":
            if not store.revoke(args.name):
                print(f"orchestrator keys: error: name: no active key named {args.name!r}", file=sys.stderr)
                return 2
            print(f"key {args.name!r} revoked")
            return 0
        print(json.dumps([k.public() for k in store.list()], indent=2))
        return 0
    except KeyStoreError as exc:
        print(f"orchestrator keys: error: {exc.field}: {exc.reason}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"orchestrator keys: error: {exc}", file=sys.stderr)
        return 2
    except HistoryError as exc:  # the database cannot be opened (a server down, a file unreadable)
        print(f"orchestrator keys: error: {exc}", file=sys.stderr)
        return 1
