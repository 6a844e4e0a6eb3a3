"""MLflow as a view onto the built-in registry: the shipped versions registered with aliases, and a
registered model that MLflow itself loads and that places tasks feasibly."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")

from cluster.alibaba import load_cluster_any  # noqa: E402
from cluster.package_data import data_path  # noqa: E402
from rl_env.mlflow_tracking import MODEL_NAMES, champion_ref, register  # noqa: E402
from scheduler import model_registry  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402

SHIPPED = model_registry.SHIPPED_MODELS


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory but what we name
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_shipped_versions_register_with_aliases_and_load_as_placers(store, tmp_path):
    rl_ref = model_registry.load("rl", "latest", SHIPPED).ref
    out = register(["rf:latest", "rl:latest"], store, champion=rl_ref, root=SHIPPED)
    assert [(r.name, r.version) for r in out] == [(MODEL_NAMES["rf"], "1"), (MODEL_NAMES["rl"], "1")]
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    mv = client.get_model_version_by_alias(MODEL_NAMES["rl"], "champion")
    assert mv.tags["orchestrator.ref"] == rl_ref
    assert client.get_model_version_by_alias(MODEL_NAMES["rl"], f"r{rl_ref.split(':')[1]}").version == mv.version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "mlflow.db"]  # no ./mlruns

    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAMES['rl']}@champion")
    tasks = pd.DataFrame([{"cpu_milli": 2000, "mem_mib": 2048, "gpu_count": 0, "slo_ms": 500.0, "work": 0.2,
                           "priority": 5}] * 4 + [{"cpu_milli": 4000, "mem_mib": 8192, "gpu_count": 1,
                                                   "slo_ms": 2000.0, "work": 1.0, "priority": 3}])
    plan = model.predict(tasks)
    spec = load_cluster_any(data_path("configs/cluster/local.yaml"))
    gpu_nodes = {n.name for n in spec.nodes if n.devices}
    assert len(plan) == 5 and plan["node"].notna().all()
    assert plan["node"].iloc[-1] in gpu_nodes  # the whole-GPU task went where GPUs are

    # exporting the same version again moves its aliases to the new MLflow version
    again = register(["rl:latest"], store, root=SHIPPED)
    assert again[0].version == "2"
    assert str(client.get_model_version_by_alias(MODEL_NAMES["rl"], f"r{rl_ref.split(':')[1]}").version) == "2"
    assert str(client.get_model_version_by_alias(MODEL_NAMES["rl"], "champion").version) == "1"


def test_champion_is_the_routers_configured_policy(tmp_path):
    shipped = (REPO_ROOT / "configs" / "serve.yaml").read_text()
    assert "policy: rf\n" in shipped
    assert champion_ref(REPO_ROOT / "configs" / "serve.yaml") == model_registry.load("rf", "latest").ref
    for policy, kind in (("rl", "rl"), ("auto", "rf")):  # auto's learned member is the forest
        cfg = tmp_path / f"{policy}.yaml"
        cfg.write_text(shipped.replace("policy: rf\n", f"policy: {policy}\n"))
        assert champion_ref(cfg) == model_registry.load(kind, "latest").ref
    fixed = tmp_path / "ff.yaml"
    fixed.write_text(shipped.replace("policy: rf\n", "policy: fastest-feasible\n"))
    assert champion_ref(fixed) is None


@pytest.mark.parametrize("models, why", [("rollout:1", "only rf, rl versions"), ("rf:99", "no rf model version 99")])
def test_export_cli_refuses_what_it_cannot_register(store, tmp_path, models, why):
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "policy", "export", "--mlflow", "--mlflow-uri",
                        store, "--models", models], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert r.returncode == 2 and f"--models: {models!r}: " in r.stderr and why in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "--mlflow-uri" not in r.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was touched
