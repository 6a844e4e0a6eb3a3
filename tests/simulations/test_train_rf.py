"""``orchestrator train rf`` end to end on a tiny budget, into a temporary registry."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scheduler import model_registry as reg
from scheduler.features import SCHEMA_VERSION
from scheduler.forest import FlatForest
from scheduler.policies.rf import FOREST_FILE, SKLEARN_FILE, RandomForestPolicy
from scheduler.policy import make_policy
from simulations.cli import main
from simulations.engine import simulate
from simulations.train_rf import Episode, Rollout, agreement_report, rollout
from simulations.workloads import WORKLOADS_DIR, generate, load_workload


@pytest.fixture
def tiny_workload(tmp_path):
    """mixed.yaml's scenarios at high load over a 25 s window."""
    p = tmp_path / "tiny.yaml"
    p.write_text(f"name: tiny\nscenarios_from: {WORKLOADS_DIR / 'mixed.yaml'}\n"
                 "duration_s: 25\nrate_per_s: 5.0\nload_factor: 2.0\nseed: 1\n")
    return p


def test_tiny_training_run_yields_a_loadable_policy(tiny_workload, tmp_path, local_spec, capsys, monkeypatch):
    root = tmp_path / "registry"
    rc = main(["train", "rf", "--workload", str(tiny_workload), "--seeds", "1-2", "--rounds", "1",
               "--trees", "8", "--max-depth", "10", "--random-state", "3", "--registry", str(root)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "held-out agreement with the oracle" in out and "confusion matrix" in out
    assert "oracle" in out and "least-loaded" in out  # heuristics side by side

    art = reg.load("rf", "latest", root=root)
    assert art.version == 1 and (art.path / FOREST_FILE).is_file() and (art.path / SKLEARN_FILE).is_file()
    m = art.meta
    assert m["feature_schema"] == SCHEMA_VERSION and m["seed"] == 3 and "train rf" in m["command"]
    assert m["config"]["trees"] == 8 and m["config"]["seeds"] == [1, 2] and m["config"]["rounds"] == 1
    met = m["metrics"]
    assert 0.5 < met["holdout_accuracy"] <= 1.0 and met["holdout_decisions"] > 50
    cm = np.array(met["confusion_matrix"])
    assert cm.sum() == met["holdout_decisions"] and np.trace(cm) / cm.sum() == pytest.approx(met["holdout_accuracy"])
    assert [r["round"] for r in met["rounds"]] == [0, 1]
    assert "tiny/rf (new)" in met["simulation"] and "tiny/oracle" in met["simulation"]
    json.dumps(m)  # plain JSON throughout

    # the saved sklearn model and the flat forest agree exactly
    import joblib

    model = joblib.load(art.path / SKLEARN_FILE)
    flat = FlatForest.load(art.path / FOREST_FILE)
    X = np.random.default_rng(0).random((64, flat.n_features), dtype=np.float32)
    assert np.array_equal(flat.predict_proba(X), model.predict_proba(X))

    # the artifact places held-out tasks, every one on a node that can host it
    policy = RandomForestPolicy(root=root)
    tasks = generate(load_workload(tiny_workload), seed=50)
    res = simulate(local_spec, tasks, policy, seed=50)
    assert res.summary["rejected"] == 0 and res.summary["succeeded"] == len(tasks)

    # a second run, into the registry ORCH_REGISTRY names (no --registry), is version 2 and "latest"
    monkeypatch.setenv(reg.REGISTRY_ENV, str(root))
    assert main(["train", "rf", "--workload", str(tiny_workload), "--seeds", "1", "--rounds", "0",
                 "--trees", "4", "--max-depth", "0"]) == 0
    assert reg.resolve("rf", root=root).name == "2"
    assert reg.load_meta("rf", root=root)["config"]["max_depth"] is None  # 0 means unbounded


def test_bad_seed_arguments_exit_2(tiny_workload, tmp_path, capsys):
    assert main(["train", "rf", "--workload", str(tiny_workload), "--seeds", "x-y",
                 "--registry", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["train", "rf", "--workload", str(tiny_workload), "--seeds", "901",
                 "--registry", str(tmp_path)]) == 2
    assert "overlap" in capsys.readouterr().err


def test_rollout_labels_are_the_oracles_choices(local_spec):
    wl = load_workload(WORKLOADS_DIR / "high_load.yaml")
    ep = Episode("high_load", generate(wl, seed=9, duration_s=20), 9)
    r = rollout(local_spec, ep, make_policy("oracle"))
    assert len(r.y) == len(ep.tasks)  # every task of this mix is feasible somewhere
    assert np.array_equal(r.taken, r.y)  # the oracle drove
    assert r.mask[np.arange(len(r.y)), r.y].all()  # the oracle's class can host the task
    rep = agreement_report(_perfect(r), [r], [r])
    assert rep["holdout_accuracy"] == 1.0 and rep["on_policy_agreement"] == 1.0
    both = Rollout.concat([r, r])
    assert len(both.y) == 2 * len(r.y)


def _perfect(r: Rollout) -> FlatForest:
    """A forest that has memorised the rows (1-NN-like: fully grown, no bootstrap)."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(n_estimators=1, bootstrap=False, max_features=None, random_state=0)
    return FlatForest.from_sklearn(model.fit(r.X, r.y))
