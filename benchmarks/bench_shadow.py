"""Benchmark: what a shadow policy adds to the router's task path, against the same router without one, same run.

A router service in this process: the real policies, bookkeeping, decision records and
history (a temporary SQLite file), over a node view where every node of local.yaml is
alive and an executor backend that runs nothing (each task is withdrawn right after its
start, so every task meets the same empty cluster). Timed: ``RouterService.start`` (decide,
book, record; with a shadow also its decision and expected outcome) for the tasks of a
mixed-workload stream, in interleaved blocks so each router sees the same machine load.
The champion is the router's default policy (``rf``); the shadows are ``rl`` and
``fastest-feasible``. The difference of medians is noisy at this size (the history writer shares the
cores); the shadow's own decision time, which the router records with every task, is printed beside it.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster.live_state import topology_nodes  # noqa: E402
from cluster.topology import load_cluster  # noqa: E402
from serve_app.config import parse_router_config  # noqa: E402
from serve_app.metrics import DECISION_LATENCY, SHADOW, MemorySink, RouterMetrics  # noqa: E402
from serve_app.service import RouterService  # noqa: E402
from simulations.workloads import generate, load_workload  # noqa: E402

LOCAL = ROOT / "configs" / "cluster" / "local.yaml"
SHADOWS = (None, "rl", "fastest-feasible")
TASKS = 400
BLOCKS = 8


class NoRay:
    """An executor backend that runs nothing (tasks are withdrawn before anything would wait on them)."""

    def submitter(self, node_name, task, share, node_id):
        return lambda *payload: object()

    def wait(self, refs, timeout):
        time.sleep(min(timeout, 0.05))
        return []

    def outcomes(self, refs):
        return []

    def cancel(self, ref, force=False):
        pass

    def holder(self, node_name, node_id, gpu):
        return lambda seconds, modules=(): object()

    def get(self, refs, timeout):
        return []


def router(tmp: Path, shadow: str | None) -> RouterService:
    spec = load_cluster(LOCAL)
    cfg = parse_router_config({"cluster": str(LOCAL), "policy": "rf", "shadow_policy": shadow,
                               "history_url": f"sqlite:///{tmp / f'history-{shadow}.db'}", "warm_workers": 0})
    return RouterService(cfg, reader=lambda *a, **k: topology_nodes(spec), metrics=RouterMetrics(MemorySink()),
                         backend=NoRay())


def timed_starts(svc: RouterService, tasks, tag: str) -> list[float]:
    out = []
    for t in tasks:
        task = t.__class__(**{**{f: getattr(t, f) for f in t.__slots__}, "id": f"{tag}-{t.id}"})
        svc.history.accept_later(task.id, task.to_dict(), accepted_at=time.time())  # as POST /v1/tasks has, untimed
        t0 = time.perf_counter()
        _, fut, _ = svc.start(task, None, owner="bench")
        out.append(time.perf_counter() - t0)
        if fut is not None:
            svc.executor.cancel(task.id, "benchmark: withdrawn after its start")
    return out


def main(argv: list[str] | None = None) -> int:
    tasks = generate(load_workload(ROOT / "configs" / "workloads" / "mixed.yaml"), seed=5)[:TASKS]
    with tempfile.TemporaryDirectory() as d:
        routers = {s: router(Path(d), s) for s in SHADOWS}
        try:
            for s, svc in routers.items():  # first calls build caches and load models: not timed
                timed_starts(svc, tasks[:20], "warm")
                svc.metrics = RouterMetrics(MemorySink())  # count the timed decisions only
            times: dict[str | None, list[float]] = {s: [] for s in SHADOWS}
            order = list(SHADOWS)
            for b in range(BLOCKS):
                for s in order[b % len(order):] + order[:b % len(order)]:  # each router first in turn
                    times[s] += timed_starts(routers[s], tasks[b::BLOCKS], f"b{b}")
            for svc in routers.values():
                svc.history.flush()
            agree = {s: routers[s].metrics.sink for s in SHADOWS if s}
        finally:
            for svc in routers.values():
                svc.close()
    base = float(np.median(times[None]))
    print(f"champion rf ({routers[None].policies.active.name}), {len(tasks)} tasks of mixed.yaml per router, "
          f"{BLOCKS} interleaved blocks; RouterService.start (decide, book, record) per task:")
    print(f"  no shadow                   median {1e6 * base:8.1f} us, p90 {1e6 * np.percentile(times[None], 90):8.1f} us")
    for s in SHADOWS[1:]:
        med = float(np.median(times[s]))
        sink, name = agree[s], routers[s].shadow.name
        yes = sink.total(SHADOW, policy=name, agrees="true")
        no = sink.total(SHADOW, policy=name, agrees="false")
        own = sink.observations[(DECISION_LATENCY, (("policy", f"shadow:{name}"),))]
        print(f"  shadow {name:<20} median {1e6 * med:8.1f} us, p90 "
              f"{1e6 * np.percentile(times[s], 90):8.1f} us: {1e6 * (med - base):+.1f} us ({med / base:.2f}x); "
              f"its own decision median {1e6 * np.median(own):.1f} us; agrees with the champion on "
              f"{100 * yes / max(yes + no, 1):.0f}% of {int(yes + no)} tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
