"""The KubeRay RayCluster renderer: structure against the ray.io/v1 fields KubeRay accepts.

The field sets below are KubeRay's ``RayClusterSpec``, ``HeadGroupSpec`` and
``WorkerGroupSpec`` (ray-operator/apis/ray/v1/raycluster_types.go, v1.5), and the
checks mirror its validation (controllers/ray/utils/validation.go): labels only in
the group-level ``labels`` field, resources not both in ``rayStartParams`` and
``resources``, token auth needing ``rayVersion`` >= 2.52.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from cluster.k8s import render, render_yaml
from cluster.ray_resources import label_key_error, label_value_error
from cluster.topology import load_cluster
from orchestrator.cli import main
from tests.conftest import CONFIGS, LOCAL_YAML

CLUSTER_SPEC_FIELDS = {"suspend", "managedBy", "autoscalerOptions", "headServiceAnnotations",
                       "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec", "rayVersion",
                       "workerGroupSpecs", "authOptions", "upgradeStrategy"}
HEAD_FIELDS = {"template", "headService", "enableIngress", "rayStartParams", "serviceType", "labels", "resources"}
WORKER_FIELDS = {"suspend", "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
                 "rayStartParams", "template", "scaleStrategy", "numOfHosts", "labels", "resources"}
WORKER_REQUIRED = {"groupName", "rayStartParams", "template", "minReplicas", "maxReplicas"}
RESOURCE_PARAMS = {"num-cpus", "num-gpus", "memory", "resources"}
DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE])?$")


@pytest.fixture(scope="module")
def manifest(local_spec) -> dict:
    return render(local_spec)


def _check_group(group: dict, fields: set[str]) -> None:
    assert set(group) <= fields, set(group) - fields
    params = group["rayStartParams"]
    assert all(isinstance(v, str) for v in params.values()), "rayStartParams values must be strings"
    assert "labels" not in params, "KubeRay >= 1.5 rejects rayStartParams['labels']"
    assert not (set(params) & RESOURCE_PARAMS and group.get("resources")), "resources given twice"
    for k, v in group.get("labels", {}).items():
        assert label_key_error(k) is None and label_value_error(v) is None, (k, v)
    containers = group["template"]["spec"]["containers"]
    assert containers and all(c["name"] and c["image"] for c in containers)
    for c in containers:
        for section in ("requests", "limits"):
            for key, q in c["resources"][section].items():
                assert isinstance(q, str) and QUANTITY.match(q), (key, q)


def test_top_level_structure(manifest: dict) -> None:
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    name = manifest["metadata"]["name"]
    assert len(name) <= 63 and DNS1035.fullmatch(name)
    spec = manifest["spec"]
    assert set(spec) <= CLUSTER_SPEC_FIELDS
    assert spec["authOptions"] == {"mode": "token"}
    major, minor = (int(x) for x in spec["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52), "token auth needs Ray >= 2.52"
    _check_group(spec["headGroupSpec"], HEAD_FIELDS)
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head runs no placed tasks
    for g in spec["workerGroupSpecs"]:
        assert WORKER_REQUIRED <= set(g)
        _check_group(g, WORKER_FIELDS)
        assert DNS1035.fullmatch(g["groupName"])
        assert g["replicas"] == g["minReplicas"] == g["maxReplicas"] >= 1


def test_one_worker_group_per_pool(manifest: dict, local_spec) -> None:
    groups = {g["groupName"]: g for g in manifest["spec"]["workerGroupSpecs"]}
    assert set(groups) == set(local_spec.pools)
    assert groups["edge"]["replicas"] == 2 and groups["cloud"]["replicas"] == 2
    assert groups["edge"]["labels"] == {"tier": "edge", "pool": "edge", "node-class": "edge"}
    # pods of a group share labels: no per-node name (the live state matches them by pool)
    assert all("node-name" not in g["labels"] for g in groups.values())


def test_resources_and_gpu_requests(manifest: dict) -> None:
    groups = {g["groupName"]: g for g in manifest["spec"]["workerGroupSpecs"]}
    cloud = groups["cloud"]
    assert cloud["rayStartParams"]["num-cpus"] == "16" and cloud["rayStartParams"]["num-gpus"] == "0"
    res = cloud["template"]["spec"]["containers"][0]["resources"]
    assert res["requests"]["cpu"] == "16" and res["requests"]["memory"] == "65536Mi"
    assert not any(k.startswith("nvidia.com/") for k in res["limits"])

    ts = groups["gpu-ts"]
    assert ts["rayStartParams"]["num-gpus"] == "2"
    assert ts["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert ts["labels"]["gpu-sharing"] == "time-slicing"

    mig = groups["gpu-mig"]
    assert mig["rayStartParams"]["num-gpus"] == "0"
    assert json.loads(mig["rayStartParams"]["resources"]) == {
        "mig_1g.10gb": 3, "mig_2g.20gb": 2, "mig_3g.40gb": 1, "mig_4g.40gb": 1}
    limits = mig["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert {k: v for k, v in limits.items() if k.startswith("nvidia.com/")} == {
        "nvidia.com/mig-1g.10gb": "3", "nvidia.com/mig-2g.20gb": "2",
        "nvidia.com/mig-3g.40gb": "1", "nvidia.com/mig-4g.40gb": "1"}


def test_heterogeneous_pool_is_split(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"][1]["cpus"] = 8  # edge-2 differs from edge-1
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(local_data))
    groups = [g["groupName"] for g in render(load_cluster(p))["spec"]["workerGroupSpecs"]]
    assert groups.count("edge") == 0 and {"edge-0", "edge-1"} <= set(groups)


def test_yaml_round_trip_and_options(local_spec) -> None:
    text = render_yaml(local_spec, name="demo", namespace="ml", image="example/ray:1", token_secret="tok")
    doc = yaml.safe_load(text)
    assert doc == render(local_spec, name="demo", namespace="ml", image="example/ray:1", token_secret="tok")
    assert doc["metadata"]["namespace"] == "ml" and doc["spec"]["authOptions"]["secretName"] == "tok"
    images = {c["image"] for g in doc["spec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]}
    assert images == {"example/ray:1"}


def test_cli_renders_and_bad_config_exits_2(tmp_path: Path, local_data: dict, capsys) -> None:
    out = tmp_path / "rc.yaml"
    assert main(["cluster", "k8s", "--config", str(LOCAL_YAML), "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["kind"] == "RayCluster"
    local_data["nodes"][4]["gpus"]["mig_layout"][0] = ["7g.80gb", "1g.10gb"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(local_data))
    capsys.readouterr()
    assert main(["cluster", "k8s", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "nodes[4].gpus.mig_layout[0]" in err


def test_test_cluster_renders(capsys) -> None:
    doc = render(load_cluster(CONFIGS / "cluster" / "test_small.yaml"))
    edge = next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == "edge")
    assert edge["labels"]["site"] == "factory-7"
