"""A tiny-budget end-to-end run: Tune grid of two PPO trials -> best checkpoint -> registry -> policy."""
from __future__ import annotations

import csv

import pytest

pytest.importorskip("ray.rllib")

from cluster.state import share_for  # noqa: E402
from rl_env.experiment import experiment_from_mapping  # noqa: E402
from rl_env.train import train  # noqa: E402
from scheduler.policy import make_policy  # noqa: E402
from simulations.engine import simulate  # noqa: E402
from simulations.workloads import generate, load_workload  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402


@pytest.mark.timeout(400)
def test_tiny_training_yields_a_loadable_feasible_policy(tmp_path, local_spec) -> None:
    exp = experiment_from_mapping({
        "name": "tiny", "seed": 0,
        "env": {"workloads": ["configs/workloads/high_load.yaml"], "episode_s": 10},
        "validation": {"seeds": [201], "every": 1},
        "init": {"imitate": "fastest-feasible", "steps": 200, "epochs": 1},
        "ppo": {"lr": {"grid": [1e-3, 3e-4]}, "train_batch_size": 128, "minibatch_size": 64, "num_epochs": 1},
        "resources": {"envs_per_runner": 2},
        "stop": {"env_steps": 256},
        "storage": str(tmp_path / "runs"),
    })
    report = train(exp, registry=tmp_path / "registry")
    # two trials ran, curves kept, best checkpoint exported with its provenance
    assert len(report.trials) == 2 and all(t["error"] is None for t in report.trials)
    rows = list(csv.DictReader(report.curves.open()))
    assert {r["params"] for r in rows} == {"lr=0.001", "lr=0.0003"} and any(r["val_objective"] for r in rows)
    meta = report_meta = make_policy("rl:latest", root=tmp_path / "registry").artifact.meta
    assert meta["seed"] == 0 and meta["command"] and meta["feature_schema"]
    assert meta["best_trial"]["params"] in ("lr=0.001", "lr=0.0003")
    assert {"policy.pt", "curves.csv"} <= set(report_meta["files"])
    assert sum(f.stat().st_size for f in report.artifact.iterdir()) < 300_000
    # the served policy places every task feasibly
    policy = make_policy("rl:latest", root=tmp_path / "registry")
    tasks = generate(load_workload(REPO_ROOT / "configs/workloads/gpu_heavy_high.yaml"), seed=3, duration_s=15)
    res = simulate(local_spec, tasks, policy, seed=3)
    assert (res.records["status"] == "succeeded").all()
    nodes = {n.name: i for i, n in enumerate(local_spec.nodes)}
    from cluster.state import ClusterState

    state = ClusterState.from_spec(local_spec)
    by_id = {t.id: t for t in tasks}
    for tid, node in zip(res.records["task_id"], res.records["node"]):
        assert share_for(state, nodes[node], by_id[tid]) is not None
