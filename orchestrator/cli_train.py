"""``orchestrator train rf|rl``, ``orchestrator evaluate`` and ``orchestrator policy export``: learned policies.

Each sub-command's work lives with what it trains: the RandomForest in
:mod:`rl_env.train_rf` (distilled from the rollout teacher),
the RLlib policy in :mod:`rl_env.train`, the held-out comparison in
:mod:`evaluation.evaluate`, the MLflow export in :mod:`rl_env.mlflow_tracking`; they are
imported only when their command runs.
"""
from __future__ import annotations

import argparse
import importlib

from cluster.config import UsageError
from rl_env.train_rf_args import add_arguments as add_rf_arguments


def _lazy(target: str):
    def run(args: argparse.Namespace) -> int:
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(args)

    return run


def add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a learned placement policy")
    tsub = t.add_subparsers(dest="learner", required=True)
    rf = tsub.add_parser("rf", help="node-level RandomForest distilled from the rollout teacher")
    add_rf_arguments(rf)  # every training setting, from rl_env.train_rf_args.TrainArgs
    rf.add_argument("--registry", default="artifacts/policies",
                    help="model registry folder the new version is written to (relative: under the checkout, or the "
                         "working directory of an installed package)")
    rf.set_defaults(func=_lazy("rl_env.train_rf:cli"))
    rl = tsub.add_parser("rl", help="RLlib PPO through Ray Tune (node level: HeteroClusterNodes-v0)")
    rl.add_argument("--experiment", default="configs/experiments/ppo_nodes_mix.yaml",
                    help="experiment YAML: env, PPO settings, trials, validation seeds (the default trained the "
                         "network of the shipped rl, rl:11: rl:9's, with its training range)")
    rl.add_argument("--registry", default="artifacts/policies",
                    help="model registry folder the new version is written to (relative: under the checkout, or the "
                         "working directory of an installed package)")
    track = rl.add_mutually_exclusive_group()
    track.add_argument("--mlflow-uri", default=None,
                       help="MLflow tracking URI the Tune trials are logged to (default: the local store "
                            "results/mlflow/mlflow.db, when MLflow is installed)")
    track.add_argument("--no-mlflow", action="store_true", help="do not log the trials to MLflow")
    rl.set_defaults(func=_lazy("rl_env.train:cli"))
    pol = sub.add_parser("policy", help="the learned policies' registry, seen from other tools")
    psub = pol.add_subparsers(dest="policy_command", required=True)
    ex = psub.add_parser("export", help="register rf and rl versions in MLflow (models orchestrator-rf, "
                                        "orchestrator-rl; aliases r<N> and champion)")
    ex.add_argument("--mlflow", action="store_true", required=True,
                    help="export to MLflow (the one target today; required so the command says where)")
    ex.add_argument("--mlflow-uri", default=None,
                    help="MLflow tracking and registry URI (default: the local store results/mlflow/mlflow.db)")
    ex.add_argument("--models", default="rf:latest,rl:latest",
                    help="comma-separated registry versions to register (rf:1, rl:latest ...)")
    ex.add_argument("--serve-config", default="configs/serve.yaml",
                    help="the router config whose policy gets the alias `champion`")
    ex.set_defaults(func=_lazy("orchestrator.cli_train:policy_export"))
    pr = psub.add_parser("promote", help="promote the router's shadow policy to champion (admin); the router rolls "
                                         "it back if it misses more SLOs than the old champion")
    pr.add_argument("--router", default="http://127.0.0.1:8000", help="the router's URL")
    pr.add_argument("--token-file", default=None,
                    help="file holding the admin token (default: $ORCH_ADMIN_TOKEN, else $ORCH_ADMIN_TOKEN_FILE)")
    pr.set_defaults(func=_lazy("orchestrator.cli_train:policy_promote"))
    e = sub.add_parser("evaluate", help="compare policies on held-out workloads and seeds")
    e.add_argument("--policies", default="rl:latest,rf:latest,oracle,fastest-feasible,least-loaded,cheapest-feasible",
                   help="comma-separated policy names (`orchestrator policies` lists them)")
    e.add_argument("--cluster", default="configs/cluster/local.yaml", help="cluster topology YAML")
    e.add_argument("--workload", action="append", help="workload YAML (repeatable)")
    e.add_argument("--seeds", default="101-103",
                   help="evaluation seeds, e.g. 101-110 or 101,105 (refused if a learned policy trained on one)")
    e.add_argument("--out", default="results/evaluate", help="folder for the CSV and Markdown tables")
    e.add_argument("--scale-cluster", type=int, default=None, metavar="K",
                   help="evaluate on the cluster with every node K times (K=2 doubles each tier)")
    e.add_argument("--drop-pool", action="append", metavar="POOL", help="remove a pool's nodes (repeatable)")
    e.add_argument("--random-cluster", default=None, metavar="N|A-B",
                   help="evaluate on cluster N drawn at random from the cluster's pools (node counts and sizes, "
                        "GPUs, MIG layouts, load level: cluster.variants.random_cluster), or on each of a range "
                        "like 1001-1010 with a table across them; refused if a learned policy trained on one")
    e.add_argument("--load-scale", type=float, default=None, metavar="X",
                   help="multiply every workload's arrival rate (load_factor) by X")
    e.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="(workload, seed) runs at once, one process each (same tables; decision times "
                        "then share the machine)")
    from scheduler.policies.auto import LOOKAHEAD

    e.add_argument("--futures", type=int, default=None, metavar="N",
                   help="futures of the workload each lookahead policy samples (default: "
                        + ", ".join(f"{k} {v}" for k, v in LOOKAHEAD.items()) + "); 0: none, so they judge on "
                        "their own recent past, as the router's auto does")
    e.set_defaults(func=_lazy("evaluation.evaluate:cli"))


def policy_promote(args: argparse.Namespace) -> int:
    """``orchestrator policy promote``: the router's answer (the new champion and the judgement it is under)."""
    import json

    from serve_app.client import RouterClient, RouterError, admin_token

    try:
        token = admin_token(args.token_file)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        out = RouterClient(args.router, token=token).promote()
    except RouterError as exc:
        raise UsageError(f"--router {args.router}: {exc}") from None
    print(json.dumps({k: out.get(k) for k in ("policy", "previous", "shadow", "promotion")}, indent=1))
    return 0


def policy_export(args: argparse.Namespace) -> int:
    """``orchestrator policy export --mlflow``: each version registered, its model URI printed."""
    from cluster.package_data import data_path
    from rl_env.mlflow_tracking import champion_ref, default_uri, register, require

    require()
    refs = [r.strip() for r in args.models.split(",") if r.strip()]
    if not refs:
        raise UsageError("--models: give at least one version, e.g. rf:latest,rl:latest")
    uri = args.mlflow_uri or default_uri()
    serve_config = data_path(args.serve_config)
    if not serve_config.is_file():
        raise UsageError(f"--serve-config {args.serve_config}: no such file")
    try:
        done = register(refs, uri, champion=champion_ref(serve_config))
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow's own errors (a bad URI, a server down) as one line
        raise UsageError(f"--mlflow-uri {uri}: MLflow could not register there: {type(exc).__name__}: {exc}") \
            from None
    for r in done:
        print(f"{r.ref} -> MLflow model {r.name} version {r.version} "
              f"({', '.join(f'models:/{r.name}@{a}' for a in r.aliases)})")
    print(f"MLflow store: {uri}")
    return 0
