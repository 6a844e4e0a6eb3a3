"""Benchmark: :meth:`ClusterState.copy` of a busy cluster, against ``copy.deepcopy`` of the same state.

A lookahead (rollout) policy copies the state once per candidate at every decision,
so the copy must cost little next to a decision. Timed on busy states (tasks
running and waiting, as mid-run in the simulator) of ``local.yaml`` (6 nodes) and
of the Alibaba trace's clusters (1,213 GPU nodes from ``alibaba_openb.yaml``, and
all 1,523 nodes of the node list); the baseline, ``copy.deepcopy(state)`` (what a
caller without :meth:`copy` would write), is timed in the same run. Best of several
rounds; process CPU time, because this machine is shared.

Usage: ``python -m benchmarks copy`` (the Alibaba rows need ``../shared/traces``).
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster.state import ClusterState  # noqa: E402
from cluster.topology import ClusterSpec, load_cluster  # noqa: E402
from scheduler.policy import make_policy  # noqa: E402
from simulations.engine import OnlineSimulator  # noqa: E402
from simulations.workloads import generate, load_workload  # noqa: E402

TRACE = ROOT.parent / "shared" / "traces" / "alibaba_gpu_v2023"


def busy(spec: ClusterSpec, tasks: list, policy: str) -> ClusterState:
    """The state part-way through a run: the first two thirds of ``tasks`` placed by ``policy``."""
    sim = OnlineSimulator(spec, tasks, seed=1, timeline_points=1)
    pol = make_policy(policy, seed=1)
    for _ in range(len(tasks) * 2 // 3):
        t = sim.next_task()
        sim.place(t, pol.select(t, sim.state))
    return sim.state


def best_cpu(fn, rounds: int, number: int) -> float:
    """Best over ``rounds`` of the mean process CPU seconds per call of ``fn``."""
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, (time.process_time() - t) / number)
    return best


def report(name: str, state: ClusterState) -> None:
    ours = best_cpu(state.copy, 7, 200 if state.n_nodes < 100 else 20)
    deep = best_cpu(lambda: copy.deepcopy(state), 3, 20 if state.n_nodes < 100 else 1)
    print(f"{name:34s} {state.n_nodes:6,d} {int(state.running.sum()):8,d} {int(state.queue_len.sum()):7,d} "
          f"{ours * 1e6:10,.1f} {deep * 1e6:12,.0f} {deep / ours:9,.0f}x", flush=True)


def main() -> int:
    print(f"{'state':34s} {'nodes':>6s} {'running':>8s} {'queued':>7s} {'copy() us':>10s} "
          f"{'deepcopy us':>12s} {'speedup':>10s}")
    local = load_cluster(ROOT / "configs" / "cluster" / "local.yaml")
    wl = load_workload(ROOT / "configs" / "workloads" / "high_load.yaml")
    report("local.yaml, high_load x2 (random)", busy(local, generate(wl, seed=1, load_factor=2.0), "random"))
    if not (TRACE / "openb_node_list_gpu_node.csv").exists():
        print(f"(Alibaba rows skipped: no trace at {TRACE})")
        return 0
    from cluster.alibaba import load_cluster_any
    from simulations.packing import load_packing_cluster
    from simulations.traces import load_alibaba_pods

    pods = list(load_alibaba_pods(TRACE / "openb_pod_list_default.csv", time_compression=2000.0, limit=8000))
    ali = load_cluster_any(ROOT / "configs" / "cluster" / "alibaba_openb.yaml")
    report("alibaba_openb.yaml, trace (best-fit)", busy(ali, pods, "best-fit"))
    every = load_packing_cluster(str(TRACE / "openb_node_list_all_node.csv"))
    report("all 1,523 trace nodes (best-fit)", busy(every, pods, "best-fit"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
