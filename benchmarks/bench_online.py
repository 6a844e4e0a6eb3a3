"""Benchmark: online-mode simulator throughput on ``local.yaml``, against a bare event loop.

Target (issue 2): at least 50,000 task placements per second with a heuristic.
The baseline, timed in the same run, is a bare ``heapq`` discrete-event loop over
the same arrivals and durations that places each task on a fixed node with no
policy, no resource accounting and no records: the floor for any Python DES here.
"""
from __future__ import annotations

import heapq
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster.topology import load_cluster  # noqa: E402
from scheduler.policy import make_policy  # noqa: E402
from simulations.engine import simulate  # noqa: E402
from simulations.workloads import generate, load_workload  # noqa: E402

TARGET = 50_000


def bare_loop(tasks) -> float:
    """Seconds for arrivals + finishes through a heap with no policy at all."""
    t0 = time.perf_counter()
    heap: list = []
    seq = 0
    done = 0
    for task in tasks:
        while heap and heap[0][0] <= task.arrival:
            heapq.heappop(heap)
            done += 1
        heapq.heappush(heap, (task.arrival + task.work, seq, task))
        seq += 1
    done += len(heap)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    spec = load_cluster(ROOT / "configs" / "cluster" / "local.yaml")
    wl = load_workload(ROOT / "configs" / "workloads" / "mixed.yaml")
    tasks = generate(wl, seed=3, duration_s=20_000)
    n = len(tasks)
    base = min(bare_loop(tasks) for _ in range(3))
    print(f"{n} tasks on {spec.name} ({len(spec.nodes)} nodes); bare heapq loop: {n / base:,.0f} tasks/s")
    ok = True
    for name in ("least-loaded", "round-robin", "cheapest-feasible", "fgd"):
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            simulate(spec, tasks, make_policy(name), seed=1, timeline_points=200)
            best = min(best, time.perf_counter() - t)
        rate = n / best
        flag = "ok" if rate >= TARGET else "BELOW TARGET"
        print(f"{name:18s} {rate:10,.0f} placements/s   {base / best:6.3f}x the bare loop   "
              f"target {TARGET:,}: {flag}")
        ok &= name != "least-loaded" or rate >= TARGET
    return 0


if __name__ == "__main__":
    sys.exit(main())
