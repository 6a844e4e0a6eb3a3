"""Benchmark: one FGD packing replay of the Alibaba trace, against baselines timed in the same run.

Prints absolute seconds and ratios for:

* FGD (cached: per-node fragmentation and per-shape node scores, only changed
  nodes recomputed), one full seed (about 10,800 pods on 1,213 nodes);
* the same replay with the ``random`` policy (the floor: filter + allocate + logging);
* naive FGD (the same vectorised kernel, but every node's fragmentation and every
  candidate's score recomputed for every pod) on the first ``--naive-pods`` pods,
  compared per pod with cached FGD on the same pods.

Usage: ``python benchmarks/bench_packing.py [--trace DIR] [--seed 42] [--naive-pods 1500]``
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster.state import ClusterState  # noqa: E402
from scheduler.policies.fgd import FGD  # noqa: E402
from scheduler.policy import Candidates  # noqa: E402
from scheduler.task import Task  # noqa: E402
from simulations.packing import load_packing_cluster, load_packing_pods, run_packing  # noqa: E402
from simulations.fragmentation import typical_shapes  # noqa: E402

DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "alibaba_gpu_v2023"


class NaiveFGD(FGD):
    """FGD without caches: rebuilds every node's fragmentation and rescores every candidate per pod."""

    def score(self, task: Task, state: ClusterState, cand: Candidates) -> np.ndarray:
        nodes, shares, _ = cand
        idx = self._index
        idx.rebuild(state)
        s, dev = idx.fgd_scores(nodes, task.cpu_milli, shares[0])
        self._last = (nodes, dev)
        return s

    def pick_device(self, task, state, node, share):
        if share[0] != "slice":
            return None
        nodes, dev = self._last
        d = int(dev[np.flatnonzero(nodes == node)[0]])
        return d if d >= 0 else None


def _timed(pods: Path, nodes: Path, name: str, seed: int, **kw):
    t = time.perf_counter()
    res = run_packing(pods, nodes, name, seed, track_fragmentation=False, **kw)
    return res, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--naive-pods", type=int, default=1500)
    args = ap.parse_args(argv)
    pods = args.trace / "openb_pod_list_default.csv"
    nodes = args.trace / "openb_node_list_gpu_node.csv"
    if not pods.is_file() or not nodes.is_file():
        print(f"trace not found under {args.trace}", file=sys.stderr)
        return 2
    t = time.perf_counter()
    spec = load_packing_cluster(str(nodes))
    tasks = load_packing_pods(str(pods))
    typical = typical_shapes(tasks)
    print(f"loaded {len(tasks)} pods, {len(spec.nodes)} nodes, {len(typical)} typical shapes "
          f"in {time.perf_counter() - t:.2f} s")

    # warm the feasibility caches once so neither timing pays for them
    fgd = FGD(target_workload=typical)
    _timed(pods, nodes, "fgd", args.seed, policy=fgd, max_pods=200)

    res_f, sec_f = _timed(pods, nodes, "fgd", args.seed, policy=FGD(target_workload=typical))
    res_r, sec_r = _timed(pods, nodes, "random", args.seed)
    n = len(res_f.arrived)
    print(f"FGD    full seed {args.seed}: {sec_f:7.2f} s  ({n} pods, {sec_f / n * 1e6:6.0f} us/pod, "
          f"unallocated {res_f.unallocated_at():.2f}%)")
    print(f"random full seed {args.seed}: {sec_r:7.2f} s  ({len(res_r.arrived)} pods, "
          f"{sec_r / len(res_r.arrived) * 1e6:6.0f} us/pod, unallocated {res_r.unallocated_at():.2f}%)")
    print(f"ratio FGD / random: {sec_f / sec_r:.2f}x")

    k = min(args.naive_pods, n)
    _, sec_c = _timed(pods, nodes, "fgd", args.seed, policy=FGD(target_workload=typical), max_pods=k)
    res_n, sec_n = _timed(pods, nodes, "fgd", args.seed, policy=NaiveFGD(target_workload=typical), max_pods=k)
    same = bool((res_n.node == res_f.node[:k]).all())
    print(f"first {k} pods: cached FGD {sec_c:.2f} s, naive FGD {sec_n:.2f} s "
          f"-> speed-up {sec_n / sec_c:.1f}x (same placements: {same}); naive full seed would take "
          f"about {sec_n / k * n:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
