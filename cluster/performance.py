"""The timing and cost model shared by the simulator, the oracle and the live executor.

Execution time is ``task.work`` (seconds on the reference device) divided by the
speed of what the task holds:

* CPU only: the node's ``cpu_speed``;
* whole GPUs: the GPU model's speed (Gavel ratio vs V100);
* a MIG instance: model speed x min(1, instance compute / compute the task needs),
  isolated from neighbours;
* a time-slice: model speed x the co-location factor when other tasks share the
  device. Gavel measured pairs; for k > 2 tasks we assume the device's aggregate
  throughput stays at the measured pair's, so each of k gets ``2 * f2 / k``.
  A task's speed is fixed when it starts (by the neighbours it starts next to); a
  neighbour that joins later runs slower but does not slow it down. This keeps
  finish times known at start, which makes the queue projection exact.

Cost is the tier's per-task price plus resource-seconds: CPU cores, memory GB and
GPU devices held (a quarter GPU or a 1g MIG slice pays its fraction).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from cluster.state import Share
from cluster.topology import NodeSpec, TierSpec, mig_fraction

if TYPE_CHECKING:
    from scheduler.task import Task


def colocation_speed(factor_pair: float, k: int) -> float:
    """Per-task speed on a time-sliced device shared by ``k`` tasks (1.0 alone)."""
    if k <= 1:
        return 1.0
    if k == 2:
        return factor_pair
    return 2.0 * factor_pair / k


def speed(node: NodeSpec, task: "Task", share: Share, sharers: int = 1) -> float:
    """Relative speed of ``task`` on ``node`` holding ``share`` with ``sharers`` on its device (divided
    by the node's calibrated factor for the task's kind, when it has one)."""
    kind, amount = share
    if kind == "cpu":
        s = node.cpu_speed
    elif kind == "whole":
        s = node.gpu_speed
    elif kind == "mig":
        need = task.gpu_amount if task.gpu_need != "whole" else 1.0
        s = node.gpu_speed * min(1.0, mig_fraction(str(amount)) / max(need, 1e-9))
    else:
        s = node.gpu_speed * colocation_speed(node.colocation_factor, sharers)
    if node.work_factors:
        for k, factor in node.work_factors:
            if k == task.kind:
                return s / factor
    return s


def exec_seconds(node: NodeSpec, task: "Task", share: Share, sharers: int = 1) -> float:
    """Execution time of ``task`` in seconds."""
    return task.work / speed(node, task, share, sharers)


def gpu_devices_held(share: Share) -> float:
    kind, amount = share
    if kind == "cpu":
        return 0.0
    if kind == "mig":
        return mig_fraction(str(amount))
    if kind == "whole":
        return float(amount)
    return int(amount) / 1000.0


def cost(tier: TierSpec, task: "Task", share: Share, seconds: float) -> float:
    """Dollar cost of running ``task`` for ``seconds`` on ``tier`` holding ``share``."""
    rate = (task.cpu_milli / 1000.0 * tier.price_cpu_second
            + task.mem_mib / 1024.0 * tier.price_gb_second
            + gpu_devices_held(share) * tier.price_gpu_second)
    return tier.price_per_task + rate * seconds
