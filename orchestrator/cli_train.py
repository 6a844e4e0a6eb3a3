"""``orchestrator train rf|rl`` and ``orchestrator evaluate``: learned policies.

Each sub-command's work lives with what it trains: the RandomForest in
:mod:`rl_env.train_rf` (distilled from the rollout teacher),
the RLlib policy in :mod:`rl_env.train`, the held-out comparison in
:mod:`evaluation.evaluate`; they are imported only when their command runs.
"""
from __future__ import annotations

import argparse
import importlib

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
    rl.add_argument("--experiment", default="configs/experiments/ppo_nodes.yaml",
                    help="experiment YAML: env, PPO settings, trials, validation seeds")
    rl.add_argument("--registry", default="artifacts/policies",
                    help="model registry folder the new version is written to (relative: under the checkout, or the "
                         "working directory of an installed package)")
    rl.set_defaults(func=_lazy("rl_env.train:cli"))
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
    e.add_argument("--load-scale", type=float, default=None, metavar="X",
                   help="multiply every workload's arrival rate (load_factor) by X")
    e.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="(workload, seed) runs at once, one process each (same tables; decision times "
                        "then share the machine)")
    e.set_defaults(func=_lazy("evaluation.evaluate:cli"))
