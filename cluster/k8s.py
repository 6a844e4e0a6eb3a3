"""Render a KubeRay ``RayCluster`` (apiVersion ``ray.io/v1``) for a topology.

One worker group per pool (a pool whose nodes differ in shape is split into
``<pool>-<k>`` groups, since every pod of a group is identical). Each group
carries:

* ``labels`` (the group-level field of KubeRay >= 1.5, which becomes the Ray
  node labels; KubeRay rejects ``rayStartParams.labels``): tier, pool, node
  class, GPU model and sharing, and the nodes' own labels. Pods of a group share
  their labels, so there is no ``node-name`` label: the live-state reader matches
  topology nodes to the group's Ray nodes by pool;
* ``rayStartParams`` with the Ray resources (``num-cpus``, ``num-gpus``,
  ``memory``, ``resources`` for MIG instances), as ``ray start`` strings;
* container CPU and memory requests and limits, and GPU limits:
  ``nvidia.com/gpu`` for exclusive, time-sliced and milli-shared devices (the
  sharing itself is Ray's fractional ``num_gpus`` inside the pod, so the pod needs
  whole devices: do not also enable the device plugin's time-slicing for them),
  or one ``nvidia.com/mig-<profile>`` per MIG profile (the NVIDIA device plugin's
  ``mixed`` strategy).

Token authentication stays on through ``spec.authOptions`` (KubeRay >= 1.5,
Ray >= 2.52). The head runs no tasks (``num-cpus: "0"``). Every container names
Ray's metrics port (``metrics``, and the dashboard's ``dash-metrics`` on the head)
and every pod carries :data:`PART_OF`, which is what the PodMonitor of
:mod:`cluster.k8s_apps` selects; the head also names Serve's port for a RayService.
The same spec is the ``rayClusterConfig`` of the RayService and the
``rayClusterSpec`` of the RayJob (:mod:`cluster.k8s_apps`).
"""
from __future__ import annotations

import json
from typing import Any

import yaml

from cluster.k8s_image import PACKAGE, default_image, ray_version
from cluster.ray_resources import LABEL_NODE, NodeResources, cluster_resources
from cluster.topology import ClusterSpec

API_VERSION = "ray.io/v1"
KIND = "RayCluster"
#: pod label of every Ray pod rendered here (the PodMonitor's selector)
PART_OF = {"app.kubernetes.io/part-of": PACKAGE}
#: Ray's metrics export port (KubeRay's default), and the head's dashboard metrics port
METRICS_PORT = {"name": "metrics", "containerPort": 8080}
DASH_METRICS_PORT = {"name": "dash-metrics", "containerPort": 44227}
SERVE_PORT = {"name": "serve", "containerPort": 8000}
#: KubeRay's longest RayCluster name (63 less its "-serve-svc" suffix)
MAX_CLUSTER_NAME = 53
#: node names listed in a worker group's annotation before it only counts them
MAX_LISTED_NODES = 8


def _mig_k8s(resource: str) -> str:
    """``mig_1g.10gb`` -> ``nvidia.com/mig-1g.10gb``."""
    return "nvidia.com/mig-" + resource.removeprefix("mig_")


def _container(name: str, image: str, cpus: int, mem_bytes: int, gpus: dict[str, int],
               env: dict[str, str]) -> dict[str, Any]:
    mem = f"{max(1, mem_bytes >> 20)}Mi"
    requests: dict[str, Any] = {"cpu": str(max(cpus, 1)), "memory": mem}
    limits: dict[str, Any] = {"cpu": str(max(cpus, 1)), "memory": mem}
    for key, n in gpus.items():
        limits[key] = str(n)
        requests[key] = str(n)
    out: dict[str, Any] = {"name": name, "image": image, "resources": {"requests": requests, "limits": limits},
                           "ports": [dict(METRICS_PORT)],
                           # KubeRay's recommended hook: let Ray stop cleanly before the pod goes.
                           "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}}}
    if env:
        out["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return out


def _start_params(res: NodeResources) -> dict[str, str]:
    """``ray start`` flags as KubeRay wants them: a string per flag, ``resources`` as JSON."""
    params = {"num-cpus": str(res.num_cpus), "num-gpus": str(res.num_gpus), "memory": str(res.memory_bytes),
              "metrics-export-port": str(METRICS_PORT["containerPort"])}
    if res.custom:
        params["resources"] = json.dumps({k: int(v) if float(v).is_integer() else v
                                          for k, v in sorted(res.custom.items())})
    return params


def _shape(res: NodeResources) -> tuple:
    labels = tuple(sorted((k, v) for k, v in res.labels.items() if k != LABEL_NODE))
    return (res.num_cpus, res.num_gpus, res.memory_bytes, tuple(sorted(res.custom.items())), labels)


def _nodes_note(names: list[str]) -> str:
    """The group's node names for people reading the manifest (a trace cluster's groups hold hundreds)."""
    if len(names) <= MAX_LISTED_NODES:
        return ",".join(names)
    return ",".join(names[:MAX_LISTED_NODES]) + f",... ({len(names)} nodes)"


def worker_groups(spec: ClusterSpec, image: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The ``workerGroupSpecs``: one group per pool and node shape, identical nodes as replicas (``maxReplicas``:
    the pool's ``scaling.max_nodes`` where it has one shape)."""
    by_pool: dict[str, list[NodeResources]] = {}
    for nd, res in zip(spec.nodes, cluster_resources(spec)):
        by_pool.setdefault(nd.pool, []).append(res)
    groups = []
    limits = dict(spec.max_nodes)
    for pool, members in by_pool.items():
        shapes: dict[tuple, list[NodeResources]] = {}
        for res in members:
            shapes.setdefault(_shape(res), []).append(res)
        for k, same in enumerate(shapes.values()):
            res = same[0]
            name = pool if len(shapes) == 1 else f"{pool}-{k}"
            gpus: dict[str, int] = {}
            if res.num_gpus:
                gpus["nvidia.com/gpu"] = res.num_gpus
            for r, n in res.custom.items():
                if r.startswith("mig_"):
                    gpus[_mig_k8s(r)] = int(n)
            n = len(same)
            # a pool of one shape may grow to its scaling.max_nodes: maxReplicas bounds the group's scaling (by
            # hand, or KubeRay's autoscaler where enableInTreeAutoscaling is turned on; it is off as rendered)
            top = max(n, limits.get(pool, n)) if len(shapes) == 1 else n
            groups.append({
                "groupName": _dns(name),
                "replicas": n, "minReplicas": n, "maxReplicas": top,
                "labels": {k: v for k, v in res.labels.items() if k != LABEL_NODE},
                "rayStartParams": _start_params(res),
                "template": {"metadata": {"labels": dict(PART_OF),
                                          "annotations": {"orchestrator/nodes": _nodes_note([r.name for r in same])}},
                             "spec": {"containers": [_container("ray-worker", image, res.num_cpus,
                                                                res.memory_bytes, gpus, env or {})]}},
            })
    return groups


def _dns(name: str) -> str:
    """A DNS-1123 label from a pool name (worker group names become pod name parts)."""
    out = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower()).strip("-")
    return out[:63] or "group"


def object_name(base: str, suffix: str = "", limit: int = MAX_CLUSTER_NAME) -> str:
    """A DNS-1035 label (KubeRay's rule for its objects' names) of at most ``limit`` characters."""
    stem = _dns(base)
    if not stem[0].isalpha():
        stem = "o-" + stem
    return stem[:limit - len(suffix)].rstrip("-") + suffix


def base_name(spec: ClusterSpec, name: str | None = None) -> str:
    return name or f"orchestrator-{spec.name}"


def metadata(name: str, namespace: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/name": PACKAGE}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def render(spec: ClusterSpec, *, name: str | None = None, namespace: str | None = None,
           image: str | None = None, head_cpus: int = 2, head_memory_gb: int = 8,
           token_secret: str | None = None, cluster_config: str | None = None) -> dict[str, Any]:
    """The ``RayCluster`` manifest of ``spec`` as a mapping (validates the config first).

    ``cluster_config``: the topology's path inside the image, given to every node as
    ``ORCH_CLUSTER_CONFIG`` (as ``orchestrator cluster up`` does), where the router
    and the replay read it by default.
    """
    version = ray_version()
    image = image or default_image()
    env = {"ORCH_CLUSTER_CONFIG": cluster_config} if cluster_config else {}
    auth: dict[str, Any] = {"mode": "token"}
    if token_secret:
        auth["secretName"] = token_secret
    head = _container("ray-head", image, head_cpus, head_memory_gb << 30, {}, env)
    head["ports"] = [{"containerPort": 6379, "name": "gcs-server"}, {"containerPort": 8265, "name": "dashboard"},
                     {"containerPort": 10001, "name": "client"}, dict(SERVE_PORT), dict(METRICS_PORT),
                     dict(DASH_METRICS_PORT)]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(object_name(base_name(spec, name)), namespace),
        "spec": {
            "rayVersion": version,
            "authOptions": auth,
            "enableInTreeAutoscaling": False,
            "headGroupSpec": {
                "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0",
                                   "metrics-export-port": str(METRICS_PORT["containerPort"])},
                "labels": {"orchestrator-role": "head"},
                "template": {"metadata": {"labels": dict(PART_OF)}, "spec": {"containers": [head]}},
            },
            "workerGroupSpecs": worker_groups(spec, image, env),
        },
    }


def render_yaml(spec: ClusterSpec, **kwargs: Any) -> str:
    header = (f"# KubeRay RayCluster for {spec.name} ({spec.source}), rendered by `orchestrator cluster k8s`.\n"
              f"# Image: build it with the Dockerfile of `orchestrator cluster k8s --kind dockerfile`.\n"
              "# Needs KubeRay >= 1.5 (group labels, authOptions) and the NVIDIA device plugin\n"
              "# (mixed MIG strategy for nvidia.com/mig-* resources). Apply: kubectl apply -f <this file>\n")
    return header + yaml.safe_dump(render(spec, **kwargs), sort_keys=False)
