"""The mapping from the cluster model to Ray: node resources and labels, and task options.

One place decides how a topology node becomes a Ray node and how a placed task
asks Ray for exactly the node and share the policy chose, so the launcher, the
KubeRay renderer, the live-state reader and the executor cannot drift apart.

Per node (``ray start``):

* ``--num-cpus`` and ``--memory`` from the config (logical: an emulated 32-core
  node on a laptop holds 32 CPUs' worth of tasks);
* ``--num-gpus`` = device count for exclusive, time-sliced and milli-shared GPUs;
  a task's slice is a fractional ``num_gpus``, which Ray packs best-fit on one
  device, the same rule as :func:`cluster.state.pick_device`;
* MIG devices are not Ray GPUs: each profile is a custom resource counting its
  instances on the node (``{"mig_1g.10gb": 2}``), so a MIG task can never take a
  whole device or more instances than the layout has;
* labels ``node-name``, ``tier``, ``pool``, ``node-class`` and, on GPU nodes,
  ``gpu-model`` and ``gpu-sharing``, plus the node's own ``labels:`` from YAML.

Ray itself only adds ``node:<ip>`` (the same for every emulated node of one host)
and the ``ray.io/node-id`` label, so the node name label is what identifies a node.

Per task: the CPU, memory and GPU share as Ray resources, pinned to the node with
a hard ``NodeAffinitySchedulingStrategy`` when its Ray node id is known (a task
sent to a node that has died then fails at once with ``TaskUnschedulableError``;
a label selector on a dead node would stay pending forever, measured on Ray 2.60),
else with ``label_selector={"node-name": ...}``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cluster.config import ConfigError
from cluster.state import Share
from cluster.topology import ClusterSpec, NodeSpec, node_class

if TYPE_CHECKING:
    from scheduler.task import Task

MIB = 1 << 20
#: Labels this module sets; a node's own ``labels:`` may not reuse them.
LABEL_NODE = "node-name"
LABEL_TIER = "tier"
LABEL_POOL = "pool"
LABEL_CLASS = "node-class"
LABEL_GPU_MODEL = "gpu-model"
LABEL_SHARING = "gpu-sharing"
LABEL_ROLE = "orchestrator-role"
RESERVED_LABELS = frozenset({LABEL_NODE, LABEL_TIER, LABEL_POOL, LABEL_CLASS, LABEL_GPU_MODEL,
                             LABEL_SHARING, LABEL_ROLE})
#: Name of the head node, which runs no tasks (0 CPUs) and carries the control processes.
HEAD_NAME = "head"

# Kubernetes label syntax, which Ray labels share (ray._private.label_utils).
_LABEL_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?")
_PREFIX_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Ray resource names: keep them to what both Ray and a shell-quoted JSON carry safely.
_RESOURCE_RE = re.compile(r"[A-Za-z0-9_.:\-]+")


def mig_resource(profile: str) -> str:
    """Ray custom resource of one MIG profile's instances: ``mig_1g.10gb``."""
    return f"mig_{profile}"


def label_key_error(key: str) -> str | None:
    """Why ``key`` is not a valid Ray/Kubernetes label key, or None."""
    name = key
    if "/" in key:
        prefix, name = key.rsplit("/", 1)
        if len(prefix) > 253 or not _PREFIX_RE.fullmatch(prefix):
            return f"label key prefix {prefix!r} must be a DNS subdomain"
        if prefix == "ray.io" or prefix.endswith(".ray.io"):
            return "label keys under ray.io/ are reserved by Ray"
    if len(name) > 63 or not _LABEL_RE.fullmatch(name):
        return (f"label key {key!r} must be at most 63 characters, alphanumerics with '-', '_', '.' "
                "inside, starting and ending with an alphanumeric")
    return None


def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a valid label value (empty is allowed), or None."""
    if value == "" or (len(value) <= 63 and _LABEL_RE.fullmatch(value)):
        return None
    return (f"label value {value!r} must be at most 63 characters, alphanumerics with '-', '_', '.' "
            "inside, starting and ending with an alphanumeric")


@dataclass(frozen=True)
class NodeResources:
    """What one topology node declares to Ray."""

    name: str
    num_cpus: int
    num_gpus: int
    memory_bytes: int
    custom: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def start_args(self) -> list[str]:
        """``ray start`` arguments for this node (without address, ports or temp dir)."""
        args = [f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}",
                f"--memory={self.memory_bytes}", f"--node-name={self.name}",
                "--labels=" + ",".join(f"{k}={v}" for k, v in self.labels.items())]
        if self.custom:
            args.append("--resources=" + json.dumps(self.custom, sort_keys=True))
        return args

    def ray_totals(self) -> dict[str, float]:
        """The totals Ray should report for this node (for drift checks)."""
        out: dict[str, float] = {"CPU": float(self.num_cpus), "memory": float(self.memory_bytes)}
        if self.num_gpus:
            out["GPU"] = float(self.num_gpus)
        out.update(self.custom)
        return out


def _node_error(spec: ClusterSpec, i: int, field_name: str, reason: str) -> ConfigError:
    return ConfigError(spec.source, f"nodes[{i}].{field_name}", reason)


def node_resources(spec: ClusterSpec, i: int) -> NodeResources:
    """Resources and labels of node ``i``; raises :class:`ConfigError` naming the field."""
    nd: NodeSpec = spec.nodes[i]
    if nd.name == HEAD_NAME:
        raise _node_error(spec, i, "name", f"{HEAD_NAME!r} is reserved for the Ray head node")
    if (err := label_value_error(nd.name)) is not None:
        raise _node_error(spec, i, "name", f"node names become Ray labels: {err}")
    if nd.cpu_milli % 1000:
        raise _node_error(spec, i, "cpus", f"ray start takes whole CPUs, got {nd.cpu_milli / 1000:g}")
    tier = spec.tiers[nd.tier]
    labels = {LABEL_NODE: nd.name, LABEL_TIER: nd.tier, LABEL_POOL: nd.pool,
              LABEL_CLASS: node_class(nd, tier)}
    for key, value in ((LABEL_TIER, nd.tier), (LABEL_POOL, nd.pool)):
        if (err := label_value_error(value)) is not None:
            raise _node_error(spec, i, key, err)
    custom: dict[str, float] = {}
    num_gpus = 0
    if nd.devices:
        labels[LABEL_GPU_MODEL] = str(nd.gpu_model)
        labels[LABEL_SHARING] = str(nd.sharing)
        if (err := label_value_error(str(nd.gpu_model))) is not None:
            raise _node_error(spec, i, "gpus.model", err)
        if nd.sharing == "mig":
            for dev in nd.devices:
                for prof in dev.mig_instances:
                    custom[mig_resource(prof)] = custom.get(mig_resource(prof), 0.0) + 1.0
        else:
            num_gpus = nd.gpu_count
    for key, value in nd.labels:
        if key in RESERVED_LABELS:
            raise _node_error(spec, i, f"labels.{key}", f"reserved label (set from the node's fields: "
                                                         f"{', '.join(sorted(RESERVED_LABELS))})")
        if (err := label_key_error(key)) is not None:
            raise _node_error(spec, i, f"labels.{key}", err)
        if (err := label_value_error(value)) is not None:
            raise _node_error(spec, i, f"labels.{key}", err)
        labels[key] = value
    for name in custom:
        if not _RESOURCE_RE.fullmatch(name):  # pragma: no cover - MIG names are fixed
            raise _node_error(spec, i, "gpus.mig_layout", f"bad resource name {name!r}")
    return NodeResources(nd.name, nd.cpu_milli // 1000, num_gpus, nd.mem_mib * MIB, custom, labels)


def cluster_resources(spec: ClusterSpec) -> list[NodeResources]:
    """Every node's Ray resources; validates the whole config before anything starts."""
    return [node_resources(spec, i) for i in range(len(spec.nodes))]


def head_labels() -> dict[str, str]:
    return {LABEL_NODE: HEAD_NAME, LABEL_ROLE: "head"}


# ------------------------------------------------------------------ task options


def share_resources(task: "Task", share: Share) -> dict[str, Any]:
    """Ray resource arguments (``num_cpus``, ``num_gpus``, ``memory``, ``resources``) of a share."""
    kind, amount = share
    opts: dict[str, Any] = {"num_cpus": task.cpu_milli / 1000.0, "num_gpus": 0}
    if task.mem_mib:
        opts["memory"] = task.mem_mib * MIB
    if kind == "slice":
        opts["num_gpus"] = int(amount) / 1000.0
    elif kind == "whole":
        opts["num_gpus"] = int(amount)
    elif kind == "mig":
        opts["resources"] = {mig_resource(str(amount)): 1}
    elif kind != "cpu":
        raise ValueError(f"unknown share kind {kind!r}")
    return opts


def task_options(node_name: str, task: "Task", share: Share, node_id: str | None = None) -> dict[str, Any]:
    """``.options(**...)`` that run ``task`` on ``node_name`` holding exactly ``share``.

    With ``node_id`` (the Ray node id of that node, from the live state) the task
    is pinned by a hard node affinity; without it, by the node-name label.
    """
    opts = share_resources(task, share)
    if node_id is not None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    else:
        opts["label_selector"] = {LABEL_NODE: node_name}
    return opts
