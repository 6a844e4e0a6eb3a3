"""What runs on the KubeRay cluster: the router as a ``RayService``, a replay as a ``RayJob``,
a ``PodMonitor`` for Prometheus, and the Dockerfile of their image.

The RayService and the RayJob carry the same cluster spec as the ``RayCluster``
(:func:`cluster.k8s.render`), so one topology YAML gives all of them. The
RayService's ``serveConfigV2`` is ``configs/serve.yaml`` (the router's Serve
config) read as YAML, not built by importing ``serve_app`` (nothing imports it):
only what a pod needs changes (HTTP on ``0.0.0.0`` for the Serve service, and
absolute in-image paths for the topology, the history and the policies). The
admin token comes from a Secret, never the manifest.
"""
from __future__ import annotations

import copy
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from cluster.config import load_yaml
from cluster.k8s import (API_VERSION, MAX_CLUSTER_NAME, PART_OF, base_name, metadata, object_name, render,
                         render_yaml)
from cluster.k8s_image import APP_DIR, dockerfile, image_path
from cluster.serve_config import is_router, router_apps
from cluster.topology import ClusterSpec

KINDS = ("raycluster", "rayservice", "rayjob", "podmonitor", "dockerfile")
FILE_NAMES = {"raycluster": "raycluster.yaml", "rayservice": "rayservice.yaml", "rayjob": "rayjob.yaml",
              "podmonitor": "podmonitor.yaml", "dockerfile": "Dockerfile"}
DEFAULT_SERVE_CONFIG = "configs/serve.yaml"
DEFAULT_WORKLOAD = "configs/workloads/cluster_smoke.yaml"
DEFAULT_POLICY = "cheapest-feasible"
#: KubeRay appends 6 characters to a RayService's or RayJob's name for its RayCluster
MAX_APP_NAME = MAX_CLUSTER_NAME - 6
SQLITE = "sqlite:///"
#: seconds the RayJob's cluster outlives the job (to copy the replay's results out of the head pod)
JOB_TTL_S = 600


@dataclass(frozen=True)
class K8sOptions:
    """What ``orchestrator cluster k8s`` renders besides the topology (paths as given on the command line)."""

    config: str
    name: str | None = None
    namespace: str | None = None
    image: str | None = None
    token_secret: str | None = None
    serve_config: str = DEFAULT_SERVE_CONFIG
    admin_secret: str | None = None
    workload: str = DEFAULT_WORKLOAD
    policy: str = DEFAULT_POLICY


def _cluster_spec(spec: ClusterSpec, opts: K8sOptions) -> dict[str, Any]:
    return render(spec, name=opts.name, namespace=opts.namespace, image=opts.image,
                  token_secret=opts.token_secret, cluster_config=image_path(opts.config))


def serve_config(opts: K8sOptions) -> dict[str, Any]:
    """``opts.serve_config`` with what changes inside a pod; raises ConfigError naming the file."""
    f = load_yaml(opts.serve_config)
    router_apps(f)  # a ConfigError naming the file when there is none
    data = copy.deepcopy(dict(f.data))
    apps = data["applications"]
    # the RayService's Serve service reaches the proxy through the pod's address
    data["http_options"] = {**(data.get("http_options") or {}), "host": "0.0.0.0"}
    for app in filter(is_router, apps):
        args = dict(app.get("args") or {})
        args["cluster"] = image_path(opts.config)
        history = str(args.get("history_url", SQLITE + "results/serve/history.db"))
        if history.startswith(SQLITE) and not history[len(SQLITE):].startswith("/"):
            args["history_url"] = SQLITE + str(APP_DIR / history[len(SQLITE):])
        args.setdefault("registry", str(APP_DIR / "artifacts" / "policies"))
        app["args"] = args
    return data


def _admin_env(serve: dict[str, Any], secret: str) -> list[dict[str, Any]]:
    """The admin token variable(s) the router reads, from ``secret`` (key ``token``; optional:
    without it the router starts and refuses admin calls)."""
    names = {str((a.get("args") or {}).get("admin_token_env", "ORCH_ADMIN_TOKEN"))
             for a in serve["applications"] if is_router(a)}
    return [{"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": "token", "optional": True}}}
            for n in sorted(names)]


def render_rayservice(spec: ClusterSpec, opts: K8sOptions) -> dict[str, Any]:
    """The router as a ``RayService``: Serve config as ``serveConfigV2``, the topology's cluster."""
    name = object_name(base_name(spec, opts.name), "-router", MAX_APP_NAME)
    serve = serve_config(opts)
    cluster = _cluster_spec(spec, opts)["spec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"] = head.get("env", []) + _admin_env(serve, opts.admin_secret or f"{name}-admin")
    return {"apiVersion": API_VERSION, "kind": "RayService", "metadata": metadata(name, opts.namespace),
            "spec": {"serveConfigV2": yaml.safe_dump(serve, sort_keys=False), "rayClusterConfig": cluster}}


def replay_entrypoint(opts: K8sOptions) -> str:
    """``python -m replays.live ...`` with the workload, topology and output inside the image."""
    out = APP_DIR / "results" / "replay" / PurePosixPath(image_path(opts.workload)).stem
    return shlex.join(["python", "-m", "replays.live", "--workload", image_path(opts.workload),
                       "--policy", opts.policy, "--cluster", image_path(opts.config), "--out", str(out)])


def render_rayjob(spec: ClusterSpec, opts: K8sOptions) -> dict[str, Any]:
    """A workload replay as a ``RayJob`` on its own copy of the cluster, shut down after the TTL."""
    name = object_name(base_name(spec, opts.name), "-replay", MAX_APP_NAME)
    return {"apiVersion": API_VERSION, "kind": "RayJob", "metadata": metadata(name, opts.namespace),
            "spec": {"entrypoint": replay_entrypoint(opts), "shutdownAfterJobFinishes": True,
                     "ttlSecondsAfterFinished": JOB_TTL_S, "rayClusterSpec": _cluster_spec(spec, opts)["spec"]}}


def render_podmonitor(spec: ClusterSpec, opts: K8sOptions) -> dict[str, Any]:
    """A ``PodMonitor`` (Prometheus operator) scraping Ray's metrics on every pod rendered here.

    It selects by :data:`cluster.k8s.PART_OF`, so the RayCluster's, the RayService's
    and the RayJob's pods all match, and it copies KubeRay's ``ray.io/cluster`` pod
    label to ``ray_io_cluster``, the label Ray's Grafana dashboards filter on.
    """
    meta = metadata(object_name(base_name(spec, opts.name), "-ray", MAX_CLUSTER_NAME), opts.namespace)
    meta["labels"]["release"] = "prometheus"  # kube-prometheus-stack's default selector: its Helm release
    relabel = [{"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
                "targetLabel": "ray_io_cluster"}]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": meta,
            "spec": {"selector": {"matchLabels": dict(PART_OF),
                                  "matchExpressions": [{"key": "ray.io/node-type", "operator": "In",
                                                        "values": ["head", "worker"]}]},
                     "podMetricsEndpoints": [{"port": "metrics", "relabelings": relabel},
                                             {"port": "dash-metrics", "relabelings": copy.deepcopy(relabel)}]}}


def is_trace_topology(config: str) -> bool:
    """A ``from_trace:`` topology (:mod:`cluster.alibaba`): its node list is a trace file the image lacks."""
    return load_yaml(config).has("from_trace")


def _header(kind: str, spec: ClusterSpec, opts: K8sOptions, obj: dict[str, Any]) -> str:
    name = obj["metadata"]["name"]
    owner = "Prometheus operator" if kind == "podmonitor" else "KubeRay"
    lines = [f"# {owner} {obj['kind']} for {spec.name} ({spec.source}), rendered by `orchestrator cluster k8s`."]
    if kind != "podmonitor":
        lines.append("# Needs KubeRay >= 1.5 and the image of `orchestrator cluster k8s --kind dockerfile`.")
    lines.append(f"# Apply: kubectl apply -f {FILE_NAMES[kind]}")
    if kind == "rayservice":
        lines += ["# Admin token (optional; without it PUT /v1/policy is refused):",
                  f"#   kubectl create secret generic {opts.admin_secret or name + '-admin'} "
                  "--from-literal=token=$(openssl rand -hex 24)",
                  f"# The router answers on service {name}-serve-svc port 8000. Its history is in the head pod",
                  f"# ({APP_DIR}/results): mount a volume there to keep it across restarts."]
    elif kind == "rayjob":
        lines += [f"# Logs: kubectl logs -f job/{name}. The results stay in the head pod,",
                  f"# under {APP_DIR}/results, for {JOB_TTL_S} s after the job (kubectl cp them out);",
                  "# then the job's cluster is deleted."]
    elif kind == "podmonitor":
        lines += ["# Scrapes Ray's metrics on every pod of the RayCluster, RayService and RayJob rendered with it.",
                  "# Set the `release` label to your kube-prometheus-stack release (its PodMonitor selector)."]
    if kind in ("rayservice", "rayjob") and is_trace_topology(opts.config):
        lines += ["# NOTE: this topology is a `from_trace:` node list: the router and the replay read the trace's",
                  f"# node list CSV, which the image does not carry; mount it in the pods under {APP_DIR}",
                  "# at the path the config names (or copy it into the image) before applying this."]
    return "\n".join(lines) + "\n"


_RENDER = {"rayservice": render_rayservice, "rayjob": render_rayjob, "podmonitor": render_podmonitor}


def render_object(kind: str, spec: ClusterSpec, opts: K8sOptions) -> dict[str, Any]:
    """One manifest (any kind but ``dockerfile``) as a mapping."""
    if kind == "raycluster":
        return _cluster_spec(spec, opts)
    return _RENDER[kind](spec, opts)


def render_text(kind: str, spec: ClusterSpec, opts: K8sOptions) -> str:
    """One file's text: a manifest as commented YAML, or the Dockerfile."""
    if kind == "dockerfile":
        return dockerfile()
    if kind == "raycluster":
        return render_yaml(spec, name=opts.name, namespace=opts.namespace, image=opts.image,
                           token_secret=opts.token_secret, cluster_config=image_path(opts.config))
    obj = render_object(kind, spec, opts)
    return _header(kind, spec, opts, obj) + yaml.dump(obj, Dumper=_Dumper, sort_keys=False)


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings as ``|`` blocks (``serveConfigV2`` stays readable)."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str)
