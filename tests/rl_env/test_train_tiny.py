"""A tiny-budget end-to-end run: Tune grid of two PPO trials of the node-level policy over two cluster
variants -> best checkpoint -> registry -> a policy that places tasks on a cluster it never trained on."""
from __future__ import annotations

import csv

import pytest

pytest.importorskip("ray.rllib")

from cluster.variants import variant  # noqa: E402
from rl_env.experiment import experiment_from_mapping  # noqa: E402
from rl_env.train import train  # noqa: E402
from scheduler.policy import make_policy  # noqa: E402
from simulations.engine import simulate  # noqa: E402
from simulations.workloads import generate, load_workload  # noqa: E402
from tests.conftest import REPO_ROOT, assert_placed_feasibly  # noqa: E402


@pytest.mark.timeout(400)
def test_tiny_training_yields_a_loadable_feasible_policy(tmp_path, local_spec) -> None:
    exp = experiment_from_mapping({
        "name": "tiny", "seed": 0,
        "env": {"workloads": ["configs/workloads/high_load.yaml"], "episode_s": 10, "level": "node",
                "cluster_variants": ["x1", "no:gpu-mig"], "max_candidates": 8},
        "validation": {"seeds": [201], "every": 1, "clusters": ["x1"]},
        "init": {"imitate": "fastest-feasible", "steps": 200, "epochs": 1, "rounds": 2},
        "ppo": {"lr": {"grid": [1e-3, 3e-4]}, "train_batch_size": 128, "minibatch_size": 64, "num_epochs": 1},
        "resources": {"envs_per_runner": 2},
        "stop": {"env_steps": 256},
        "storage": str(tmp_path / "runs"),
    })
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = train(exp, registry=tmp_path / "registry", mlflow_uri=mlflow_uri)
    # two trials ran, curves kept, best checkpoint exported with its provenance
    assert len(report.trials) == 2 and all(t["error"] is None for t in report.trials)
    rows = list(csv.DictReader(report.curves.open()))
    assert {r["params"] for r in rows} == {"lr=0.001", "lr=0.0003"} and any(r["val_objective"] for r in rows)
    meta = report_meta = make_policy("rl:latest", root=tmp_path / "registry").artifact.meta
    assert meta["seed"] == 0 and meta["command"] and meta["feature_schema"] == "node-1"
    assert meta["architecture"]["level"] == "node"
    rng = meta["feature_range"]  # served inside the rows it trained on
    assert len(rng["lo"]) == meta["architecture"]["in_dim"] and rng["rows"] > 400 and "200 decisions" in rng["source"]
    assert meta["best_trial"]["params"] in ("lr=0.001", "lr=0.0003")
    assert {"policy.pt", "curves.csv"} <= set(report_meta["files"])
    assert sum(f.stat().st_size for f in report.artifact.iterdir()) < 300_000
    # the served policy places every task feasibly, also on the cluster doubled (never trained on)
    policy = make_policy("rl:latest", root=tmp_path / "registry")
    tasks = generate(load_workload(REPO_ROOT / "configs/workloads/gpu_heavy_high.yaml"), seed=3, duration_s=15)
    for spec in (local_spec, variant(local_spec, "x2")[0]):
        assert_placed_feasibly(spec, tasks, simulate(spec, tasks, policy, seed=3).records)
    # each Tune trial was logged to MLflow with its parameters and metrics
    import mlflow

    from rl_env.mlflow_tracking import EXPERIMENT

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert len(runs) == 2 and {float(r.data.params["lr"]) for r in runs} == {1e-3, 3e-4}
    assert all(r.data.metrics for r in runs)
