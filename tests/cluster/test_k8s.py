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
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from cluster.k8s import render, render_yaml
from cluster.k8s_apps import FILE_NAMES, KINDS, MAX_APP_NAME, K8sOptions, render_object, render_text
from cluster.config import UsageError
from cluster.k8s_image import APP_DIR, dockerfile, ray_version
from cluster.package_data import shipped_refs
from cluster.ray_resources import label_key_error, label_value_error
from cluster.topology import load_cluster
from orchestrator.cli import main
from tests.conftest import CONFIGS, LOCAL_YAML, REPO_ROOT, alibaba_trace

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


def test_a_pool_that_may_scale_gets_its_max_nodes_as_max_replicas(tmp_path: Path, local_data: dict) -> None:
    local_data["scaling"] = {"cloud": {"max_nodes": 5}}
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(local_data))
    groups = {g["groupName"]: g for g in render(load_cluster(p))["spec"]["workerGroupSpecs"]}
    assert (groups["cloud"]["minReplicas"], groups["cloud"]["replicas"], groups["cloud"]["maxReplicas"]) == (2, 2, 5)
    assert groups["edge"]["maxReplicas"] == 2


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


# ---------------------------------------------------------------- every object, against KubeRay's own CRDs
#
# kubectl's strict field validation, offline: each CRD's openAPIV3Schema with every object that
# declares `properties` closed (unknown fields refused) unless it says otherwise, and
# `x-kubernetes-int-or-string` accepting an int or a string. CEL rules (`x-kubernetes-validations`)
# are not evaluated: the ones in these CRDs concern fields the renderer never sets (managedBy,
# deletionStrategy, gcsFaultToleranceOptions). ObjectMeta is `type: object` there (the API server
# checks it), so `_check_metadata` does the minimal checks by hand.

KUBERAY = REPO_ROOT.parent / "shared" / "schemas" / "kuberay"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayService": "ray.io_rayservices.yaml"}
DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
ALIBABA_YAML = CONFIGS / "cluster" / "alibaba_openb.yaml"
YAML_KINDS = [k for k in KINDS if k != "dockerfile"]

# The shared folder holds KubeRay's example PodMonitor (config/prometheus/podMonitor.yaml), not the
# Prometheus operator's CRD. This is the part of that CRD (prometheus-operator v0.91.0,
# monitoring.coreos.com_podmonitors.yaml, v1) these manifests use, transcribed; closed like the
# others, a field outside it is refused even where the full CRD would take it.
_RELABEL = {"type": "object", "properties": {
    "action": {"type": "string", "enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod",
                                          "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop",
                                          "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                                          "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
    "modulus": {"type": "integer"}, "regex": {"type": "string"}, "replacement": {"type": "string"},
    "separator": {"type": "string"}, "sourceLabels": {"type": "array", "items": {"type": "string"}},
    "targetLabel": {"type": "string"}}}
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
PODMONITOR_SCHEMA = {"type": "object", "required": ["spec"], "properties": {
    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
    "spec": {"type": "object", "required": ["selector"], "properties": {
        "jobLabel": {"type": "string"},
        "namespaceSelector": {"type": "object", "properties": {
            "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
        "podTargetLabels": {"type": "array", "items": {"type": "string"}},
        "sampleLimit": {"type": "integer"}, "targetLimit": {"type": "integer"},
        "selector": {"type": "object", "properties": {
            "matchExpressions": {"type": "array", "items": {"type": "object", "required": ["key", "operator"],
                                                            "properties": {
                "key": {"type": "string"}, "operator": {"type": "string"},
                "values": {"type": "array", "items": {"type": "string"}}}}},
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "podMetricsEndpoints": {"type": "array", "items": {"type": "object", "properties": {
            "port": {"type": "string"},
            "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535},
            "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True},
            "path": {"type": "string"}, "scheme": {"type": "string", "enum": ["http", "https", "HTTP", "HTTPS"]},
            "interval": _DURATION, "scrapeTimeout": _DURATION, "honorLabels": {"type": "boolean"},
            "relabelings": {"type": "array", "items": _RELABEL},
            "metricRelabelings": {"type": "array", "items": _RELABEL}}}}}}}}


def strict(schema: dict) -> dict:
    """``schema`` as kubectl's strict validation reads it (see the note above)."""
    s = dict(schema)
    if "properties" in s:
        s["properties"] = {k: strict(v) for k, v in s["properties"].items()}
        if "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            s["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = strict(s["additionalProperties"])
    if isinstance(s.get("items"), dict):
        s["items"] = strict(s["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [strict(x) for x in s[key]]
    if s.get("x-kubernetes-int-or-string") and "anyOf" not in s:
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return s


@pytest.fixture(scope="module")
def validators() -> dict:
    """kind -> a jsonschema validator of the v1 schema; skips when the shared schemas are absent."""
    jsonschema = pytest.importorskip("jsonschema")
    if not KUBERAY.is_dir():
        pytest.skip(f"KubeRay CRD schemas not present at {KUBERAY}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out = {}
    for kind, fname in CRD_FILES.items():
        crd = yaml.load((KUBERAY / fname).read_text(), Loader=loader)
        assert crd["spec"]["names"]["kind"] == kind
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        out[kind] = jsonschema.Draft7Validator(strict(v1["schema"]["openAPIV3Schema"]))
    out["PodMonitor"] = jsonschema.Draft7Validator(strict(PODMONITOR_SCHEMA))
    return out


def schema_errors(validators: dict, obj: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[obj["kind"]].iter_errors(obj)]


def _check_metadata(obj: dict) -> None:
    meta = obj["metadata"]
    assert set(meta) <= {"name", "namespace", "labels", "annotations"}, meta
    name = meta["name"]
    assert len(name) <= 63 and DNS1123.fullmatch(name), name
    if obj["apiVersion"] == "ray.io/v1":  # KubeRay: a DNS-1035 label, short enough for its service names
        assert DNS1035.fullmatch(name) and len(name) <= (53 if obj["kind"] == "RayCluster" else MAX_APP_NAME)
    if "namespace" in meta:
        assert DNS1123.fullmatch(meta["namespace"]) and len(meta["namespace"]) <= 63
    for k, v in meta.get("labels", {}).items():
        assert label_key_error(k) is None and label_value_error(v) is None, (k, v)


def _no_nulls(x: object, path: str = "") -> None:
    """A null would be dropped (or refused) by the API server: the renderer never writes one."""
    assert x is not None, path
    if isinstance(x, dict):
        for k, v in x.items():
            _no_nulls(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            _no_nulls(v, f"{path}[{i}]")


def _opts(config: Path, **kw) -> K8sOptions:
    return K8sOptions(config=str(config), **kw)


@pytest.fixture(scope="module")
def alibaba_spec():
    from cluster.alibaba import load_cluster_any

    alibaba_trace("openb_node_list_gpu_node.csv")
    return load_cluster_any(ALIBABA_YAML)


@pytest.mark.parametrize("config", ["local.yaml", "test_small.yaml", "alibaba_openb.yaml"])
@pytest.mark.parametrize("kind", YAML_KINDS)
def test_every_manifest_validates_against_its_crd(validators: dict, config: str, kind: str, request) -> None:
    path = CONFIGS / "cluster" / config
    spec = request.getfixturevalue("alibaba_spec") if config.startswith("alibaba") else load_cluster(path)
    obj = render_object(kind, spec, _opts(path, namespace="ml"))
    assert schema_errors(validators, obj) == []
    _check_metadata(obj)
    _no_nulls(obj)
    text = render_text(kind, spec, _opts(path, namespace="ml"))
    assert yaml.safe_load(text) == obj  # the file is the object


def test_strict_validation_refuses_planted_unknown_fields(validators: dict, local_spec) -> None:
    opts = _opts(LOCAL_YAML)
    rc = render_object("raycluster", local_spec, opts)
    rc["spec"]["headGroupSpec"]["rayStartParms"] = {"num-cpus": "0"}  # a typo kubectl --validate=strict refuses
    rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    errors = schema_errors(validators, rc)
    assert len(errors) == 2 and all("Additional properties are not allowed" in e for e in errors), errors
    assert any("rayStartParms" in e for e in errors) and any("imagePullPolicyy" in e for e in errors)

    job = render_object("rayjob", local_spec, opts)
    job["spec"]["entrypointt"] = "python"
    assert schema_errors(validators, job)
    svc = render_object("rayservice", local_spec, opts)
    svc["spec"]["serveConfigV2"] = {"applications": []}  # a string in the CRD
    assert schema_errors(validators, svc)
    pm = render_object("podmonitor", local_spec, opts)
    pm["spec"]["podMetricsEndpoints"][0]["portt"] = "metrics"
    assert schema_errors(validators, pm)


def test_int_or_string_takes_either(validators: dict, local_spec) -> None:
    rc = render_object("raycluster", local_spec, _opts(LOCAL_YAML))
    limits = rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["cpu"] = 4
    assert schema_errors(validators, rc) == []
    limits["cpu"] = ["4"]
    assert schema_errors(validators, rc)


def test_kuberay_example_podmonitor_passes_the_transcribed_schema(validators: dict) -> None:
    docs = list(yaml.safe_load_all((KUBERAY / "podMonitor.yaml").read_text()))
    assert len(docs) == 2
    for doc in docs:
        assert schema_errors(validators, doc) == []


def test_alibaba_trace_cluster_is_grouped(alibaba_spec) -> None:
    rc = render(alibaba_spec)
    groups = rc["spec"]["workerGroupSpecs"]
    assert len(alibaba_spec.nodes) == 1213
    assert len(groups) <= 20 and sum(g["replicas"] for g in groups) == 1213
    assert len({g["groupName"] for g in groups}) == len(groups)
    big = max(groups, key=lambda g: g["replicas"])
    note = big["template"]["metadata"]["annotations"]["orchestrator/nodes"]
    assert len(note) < 200 and note.endswith(f"({big['replicas']} nodes)")


def test_cluster_spec_is_the_same_in_all_three(local_spec) -> None:
    opts = _opts(LOCAL_YAML, admin_secret="adm")
    rc = render_object("raycluster", local_spec, opts)["spec"]
    job = render_object("rayjob", local_spec, opts)["spec"]["rayClusterSpec"]
    assert job == rc
    svc = render_object("rayservice", local_spec, opts)["spec"]["rayClusterConfig"]
    head_env = svc["headGroupSpec"]["template"]["spec"]["containers"][0].pop("env")
    rc_env = rc["headGroupSpec"]["template"]["spec"]["containers"][0].pop("env")
    assert svc == rc
    assert head_env[:len(rc_env)] == rc_env
    assert head_env[len(rc_env):] == [{"name": "ORCH_ADMIN_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "adm", "key": "token", "optional": True}}}]
    assert rc_env == [{"name": "ORCH_CLUSTER_CONFIG", "value": f"{APP_DIR}/configs/cluster/local.yaml"}]


def test_serve_config_v2_is_the_routers_serve_config(local_spec) -> None:
    from ray.serve.schema import ServeDeploySchema

    from serve_app.config import parse_router_config

    svc = render_object("rayservice", local_spec, _opts(LOCAL_YAML))
    serve = yaml.safe_load(svc["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)  # Ray Serve's own schema of a Serve config
    shipped = yaml.safe_load((CONFIGS / "serve.yaml").read_text())
    assert serve["http_options"] == shipped["http_options"] | {"host": "0.0.0.0"}
    (app,), (orig,) = serve["applications"], shipped["applications"]
    assert {k: v for k, v in app.items() if k != "args"} == {k: v for k, v in orig.items() if k != "args"}
    cfg = parse_router_config(app["args"])  # the router accepts its args
    assert cfg.cluster == f"{APP_DIR}/configs/cluster/local.yaml"
    assert cfg.history_url == f"sqlite:///{APP_DIR}/results/serve/history.db"
    assert cfg.registry == f"{APP_DIR}/artifacts/policies"
    changed = {"cluster", "history_url", "registry"}
    assert {k: v for k, v in app["args"].items() if k not in changed} == \
        {k: v for k, v in orig["args"].items() if k not in changed}
    # the router replica is pinned to the head group's label
    selector = app["deployments"][0]["ray_actor_options"]["label_selector"]
    assert selector.items() <= svc["spec"]["rayClusterConfig"]["headGroupSpec"]["labels"].items()


def test_rayjob_entrypoint_is_a_replay_the_replay_parser_accepts(local_spec) -> None:
    from replays.live import build_parser

    job = render_object("rayjob", local_spec, _opts(LOCAL_YAML, policy="least-loaded"))
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "replays.live"]
    args = build_parser().parse_args(argv[3:])
    assert args.workload == f"{APP_DIR}/configs/workloads/cluster_smoke.yaml"
    assert (REPO_ROOT / Path(args.workload).relative_to(APP_DIR)).is_file()  # the file the image carries
    assert args.cluster == f"{APP_DIR}/configs/cluster/local.yaml" and args.policy == "least-loaded"
    assert Path(args.out).is_absolute() and job["spec"]["shutdownAfterJobFinishes"] is True


def test_podmonitor_scrapes_ports_every_pod_declares(local_spec) -> None:
    opts = _opts(LOCAL_YAML)
    rc = render_object("raycluster", local_spec, opts)["spec"]
    pm = render_object("podmonitor", local_spec, opts)["spec"]
    pods = [rc["headGroupSpec"]["template"]] + [g["template"] for g in rc["workerGroupSpecs"]]
    for pod in pods:
        assert pm["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert "metrics" in ports
    head_ports = {p["name"] for p in rc["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in pm["podMetricsEndpoints"]} <= head_ports
    for group in [rc["headGroupSpec"], *rc["workerGroupSpecs"]]:
        assert group["rayStartParams"]["metrics-export-port"] == "8080"


def test_dockerfile_builds_the_package_on_the_pinned_ray_image() -> None:
    text = dockerfile()
    pin = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', (REPO_ROOT / "pyproject.toml").read_text()).group(1)
    assert ray_version() == pin
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert lines[0] == f"FROM rayproject/ray:{pin}-{py}"
    assert f"WORKDIR {APP_DIR}" in lines
    assert any(ln.startswith("RUN pip install --no-cache-dir .") for ln in lines)
    copied = [tok for ln in lines if ln.startswith("COPY ") for tok in ln.split()[2:-1]]
    assert all((REPO_ROOT / c).exists() for c in copied), copied
    assert {"pyproject.toml", "README.md", "configs", "artifacts/policies/rl/2"} <= set(copied)
    tracked = {f"artifacts/policies/{r}" for r in shipped_refs(REPO_ROOT)}
    assert {c for c in copied if c.startswith("artifacts/")} == tracked  # never a locally trained model
    assert "ORCH_REGISTRY" not in text  # the wheel built in the image carries the shipped models
    include = re.search(r"^include\s*=\s*\[(.*?)\]", (REPO_ROOT / "pyproject.toml").read_text(), re.M | re.S)
    packages = set(re.findall(r'"([A-Za-z0-9_]+)\*?"', include.group(1)))
    assert packages <= set(copied)  # every package pip installs is in the image
    pip = next(i for i, ln in enumerate(lines) if ln.startswith("RUN pip"))
    assert pip > max(i for i, ln in enumerate(lines) if ln.startswith("COPY"))


def test_dockerfile_outside_a_checkout_is_a_usage_error(tmp_path) -> None:
    with pytest.raises(UsageError, match="--kind dockerfile"):
        dockerfile(tmp_path)


def test_long_names_stay_within_kuberay_limits(local_spec) -> None:
    opts = _opts(LOCAL_YAML, name="9" + "x" * 80)
    for kind in YAML_KINDS:
        _check_metadata(render_object(kind, local_spec, opts))


# ---------------------------------------------------------------- the command


def test_cli_writes_one_file_per_object(tmp_path: Path, capsys) -> None:
    out = tmp_path / "k8s"
    assert main(["cluster", "k8s", "--config", str(LOCAL_YAML), "--kind", "all", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILE_NAMES.values())
    kinds = {yaml.safe_load((out / FILE_NAMES[k]).read_text())["kind"] for k in YAML_KINDS}
    assert kinds == {"RayCluster", "RayService", "RayJob", "PodMonitor"}
    assert (out / "Dockerfile").read_text().startswith("# The orchestrator's image")
    assert main(["cluster", "k8s", "--config", str(LOCAL_YAML), "--kind", "podmonitor", "--out", str(out)]) == 0


def test_cli_stdout_default_is_the_raycluster_and_all_is_a_stream(capsys) -> None:
    assert main(["cluster", "k8s", "--config", str(LOCAL_YAML)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["RayCluster"]
    assert main(["cluster", "k8s", "--config", str(LOCAL_YAML), "--kind", "all"]) == 0
    captured = capsys.readouterr()
    assert [d["kind"] for d in yaml.safe_load_all(captured.out)] == ["RayCluster", "RayService", "RayJob",
                                                                     "PodMonitor"]
    assert "Dockerfile" in captured.err
    assert main(["cluster", "k8s", "--kind", "dockerfile"]) == 0
    assert capsys.readouterr().out.count("FROM rayproject/ray:") == 1


def test_cli_renders_the_alibaba_trace_cluster(tmp_path: Path, alibaba_spec, capsys) -> None:
    assert main(["cluster", "k8s", "--config", str(ALIBABA_YAML), "--kind", "all", "--out", str(tmp_path)]) == 0
    assert "from_trace" in capsys.readouterr().err  # the pods need the trace file the image lacks: said once
    rc = yaml.safe_load((tmp_path / "raycluster.yaml").read_text())
    assert sum(g["replicas"] for g in rc["spec"]["workerGroupSpecs"]) == len(alibaba_spec.nodes)


@pytest.mark.parametrize("argv, flag", [
    (["--kind", "rayclusters"], "--kind"),
    (["--kind", "all", "--out", "x.yaml"], "--out"),
    (["--kind", "rayjob", "--workload", "no/such.yaml"], "--workload"),
    (["--kind", "rayservice", "--serve-config", "no/such.yaml"], "no/such.yaml"),
])
def test_cli_bad_flags_exit_2_naming_the_flag(argv: list[str], flag: str, capsys) -> None:
    try:
        code = main(["cluster", "k8s", "--config", str(LOCAL_YAML), *argv])
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    assert code == 2
    assert flag in capsys.readouterr().err
