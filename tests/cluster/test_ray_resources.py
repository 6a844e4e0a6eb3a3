"""Config -> Ray: node resources and labels, bad configs named by field, task options per share."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cluster.config import ConfigError
from cluster.ray_resources import (
    LABEL_NODE,
    MIB,
    cluster_resources,
    label_key_error,
    label_value_error,
    mig_resource,
    node_resources,
    share_resources,
    task_options,
)
from cluster.topology import load_cluster
from scheduler.task import make_task
from tests.conftest import CONFIGS


def by_name(spec):
    return {r.name: r for r in cluster_resources(spec)}


def test_local_yaml_nodes_map_to_resources_and_labels(local_spec) -> None:
    res = by_name(local_spec)
    edge = res["edge-1"]
    assert (edge.num_cpus, edge.num_gpus, edge.memory_bytes) == (4, 0, 8 * 1024 * MIB)
    assert edge.labels == {"node-name": "edge-1", "tier": "edge", "pool": "edge", "node-class": "edge"}
    assert edge.custom == {}

    mig = res["gpu-mig-1"]
    # MIG devices are not Ray GPUs; each profile is a counted custom resource over both devices.
    assert mig.num_gpus == 0
    assert mig.custom == {"mig_3g.40gb": 1, "mig_4g.40gb": 1, "mig_2g.20gb": 2, "mig_1g.10gb": 3}
    assert mig.labels["gpu-model"] == "A100" and mig.labels["gpu-sharing"] == "mig"
    assert mig.labels["node-class"] == "gpu-mig" and mig.labels["pool"] == "gpu-mig"

    ts = res["gpu-ts-1"]
    assert ts.num_gpus == 2 and ts.custom == {}
    assert ts.labels["gpu-sharing"] == "time-slicing" and ts.labels["node-class"] == "gpu-shared"


def test_start_args_carry_everything_ray_start_needs(local_spec) -> None:
    args = by_name(local_spec)["gpu-mig-1"].start_args()
    assert "--num-cpus=32" in args and "--num-gpus=0" in args and f"--memory={256 * 1024 * MIB}" in args
    assert "--node-name=gpu-mig-1" in args
    labels = next(a for a in args if a.startswith("--labels="))
    assert dict(kv.split("=") for kv in labels.removeprefix("--labels=").split(","))[LABEL_NODE] == "gpu-mig-1"
    resources = json.loads(next(a for a in args if a.startswith("--resources=")).removeprefix("--resources="))
    assert resources["mig_1g.10gb"] == 3


def test_ray_totals_are_what_status_compares(local_spec) -> None:
    totals = by_name(local_spec)["gpu-ts-1"].ray_totals()
    assert totals == {"CPU": 32.0, "memory": float(256 * 1024 * MIB), "GPU": 2.0}


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["nodes"][0].update(cpus=2.5), "nodes[0].cpus"),
    (lambda d: d["nodes"][0].update(name="head"), "nodes[0].name"),
    (lambda d: d["nodes"][0].update(name="edge 1!"), "nodes[0].name"),
    (lambda d: d["nodes"][0].update(labels={"tier": "x"}), "nodes[0].labels.tier"),
    (lambda d: d["nodes"][0].update(labels={"ray.io/zone": "x"}), "nodes[0].labels.ray.io/zone"),
    (lambda d: d["nodes"][0].update(labels={"site": "a b"}), "nodes[0].labels.site"),
])
def test_configs_ray_cannot_start_are_refused_with_the_field(tmp_path, local_data, mutate, field) -> None:
    mutate(local_data)
    path = _write(tmp_path, local_data)
    with pytest.raises(ConfigError) as info:
        cluster_resources(load_cluster(path))
    assert info.value.field == field and info.value.file == str(path)


def test_user_labels_are_kept(tmp_path, local_data) -> None:
    local_data["nodes"][0]["labels"] = {"site": "factory-7", "example.com/rack": "r12"}
    res = node_resources(load_cluster(_write(tmp_path, local_data)), 0)
    assert res.labels["site"] == "factory-7" and res.labels["example.com/rack"] == "r12"


def test_label_syntax_matches_kubernetes() -> None:
    assert label_key_error("tier") is None and label_key_error("example.com/rack") is None
    assert label_key_error("-bad") and label_key_error("a" * 64) and label_key_error("Bad_Prefix/x")
    assert label_value_error("") is None and label_value_error("1g.10gb") is None
    assert label_value_error("a b") and label_value_error("x" * 64)


def test_share_resources_per_kind() -> None:
    t = make_task({"id": "t", "cpu_milli": 1500, "mem_mib": 512, "gpu_milli": 250}, infer=False)
    assert share_resources(t, ("slice", 250)) == {"num_cpus": 1.5, "num_gpus": 0.25, "memory": 512 * MIB}
    assert share_resources(t, ("whole", 2))["num_gpus"] == 2
    mig = share_resources(t, ("mig", "1g.10gb"))
    assert mig["num_gpus"] == 0 and mig["resources"] == {mig_resource("1g.10gb"): 1}
    cpu = share_resources(make_task({"id": "c", "cpu_milli": 500, "mem_mib": 0}, infer=False), ("cpu", 0))
    assert cpu == {"num_cpus": 0.5, "num_gpus": 0}


def test_task_options_pin_the_node() -> None:
    t = make_task({"id": "t", "cpu_milli": 1000, "mem_mib": 0}, infer=False)
    by_label = task_options("edge-1", t, ("cpu", 0))
    assert by_label["label_selector"] == {"node-name": "edge-1"}
    pinned = task_options("edge-1", t, ("cpu", 0), node_id="ab" * 28)
    strategy = pinned["scheduling_strategy"]
    assert strategy.node_id == "ab" * 28 and strategy.soft is False
    assert "label_selector" not in pinned


def test_test_cluster_config_is_valid() -> None:
    spec = load_cluster(CONFIGS / "cluster" / "test_small.yaml")
    res = by_name(spec)
    assert set(res) == {"edge-1", "cloud-1", "gpu-mig-1", "gpu-ts-1"}
    assert res["gpu-mig-1"].custom == {"mig_3g.40gb": 1, "mig_2g.20gb": 1, "mig_1g.10gb": 2}
    assert res["edge-1"].labels["site"] == "factory-7"
