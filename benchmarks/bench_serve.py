"""Benchmark: the Serve router over HTTP, against a naive Serve replica measured in the same run.

The naive baseline is what a first attempt looks like: a Serve replica that, per
request, validates the task, computes its features and calls sklearn
``predict_proba`` on one row of a 100-tree RandomForest (trained here on oracle
decisions). Both run behind the same Serve proxy on the same cluster, and both
are also measured on their own direct-ingress port (Serve's throughput-optimised
mode, in which the replica serves HTTP itself).

Targets (issue 5) on this 2-core machine, and how each is measured here (through the
proxy and through direct ingress alike; the summary gives a verdict per ingress):

* single decisions >= 300/s sustained: a closed loop of 16 requests in flight for 10 s
  (the rate), and an open loop offering 300 requests/s for 10 s (it must answer them
  all at that rate, p99 under a second);
* median <= 10 ms at 100 requests/s: an open loop at 100/s for 10 s (no coordinated
  omission: requests leave on schedule whether or not earlier ones were answered);
* the batch endpoint >= 20,000 decisions/s: 30 calls of 1,000 tasks, 2 in flight, per
  policy, once with 60 task shapes repeated (the router's validation cache warm) and
  once with every task different; the verdict takes the slower policy (30 calls last about
  1.5 s; over 12 calls one stall of the shared machine moved a figure by a third);
* ``POST /v1/tasks`` with no-op tasks >= 200/s accepted and run: five rounds of 1,000
  tasks (three of 500 through the proxy), 32 in flight, each timed from its first
  request until the history counts all of them succeeded; after 1,000 warm-up tasks
  (sustained, not cold start); the verdict takes the median round.

Every figure is printed beside the naive baseline measured in the same run (its rate
at 8 in flight, its median at 1 in flight) and as a ratio to it. The load generator
runs on the same two cores as the cluster, as a client on the box would.

``python -m benchmarks serve`` (or ``python benchmarks/bench_serve.py --state-dir DIR``
to reuse a running ``test_small`` cluster).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import random
import secrets
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_abuse import create_key  # noqa: E402
from cluster import launcher  # noqa: E402
from cluster.procs import free_fixed_port  # noqa: E402
from serve_app import deploy  # noqa: E402
from serve_app.loadgen import LoadResult, closed_loop, open_loop  # noqa: E402

CLUSTER = ROOT / "configs" / "cluster" / "test_small.yaml"
SINGLE_RATE_TARGET = 300.0
SINGLE_P50_TARGET_MS = 10.0
BATCH_TARGET = 20_000.0
TASKS_TARGET = 200.0
DESCRIPTIONS = ["real-time fraud detection", "medical image segmentation", "nightly batch ETL",
                "chat inference for users", "sensor anomaly alert", "route optimisation"]


def _task(i: int) -> dict:
    return {"description": DESCRIPTIONS[i % len(DESCRIPTIONS)], "priority": 1 + i % 10}


class NaiveRouter:
    """The baseline replica: validate, candidate features, sklearn ``predict`` on their rows, per request."""

    def __init__(self, model_bytes: bytes, cluster: str) -> None:
        from cluster.state import ClusterState
        from cluster.topology import load_cluster

        self.model = pickle.loads(model_bytes)
        self.state = ClusterState.from_spec(load_cluster(cluster))

    async def __call__(self, request) -> dict:
        from cluster.state import node_masks
        from scheduler.features import candidate_features
        from scheduler.task import make_task

        task = make_task({"id": "naive", **(await request.json())})
        feasible, fits, shares = node_masks(self.state, task)
        nodes = np.flatnonzero(feasible)
        if not len(nodes):
            return {"node": None}
        X = candidate_features(task, self.state, nodes, [shares[i] for i in nodes], fits[nodes])
        regret = self.model.predict(X)
        k = int(regret.argmin())
        return {"node": self.state.spec.nodes[int(nodes[k])].name, "regret": float(regret[k])}


def train_naive_model():
    """A 100-tree sklearn forest of the one-step oracle's regrets on 60 s of mixed work (one thread, as per
    request; the labels do not change its cost)."""
    from cluster.topology import load_cluster
    from rl_env.train_rf import DAggerForest, Episode
    from simulations.workloads import generate, load_workload

    spec = load_cluster(CLUSTER)
    wl = load_workload(ROOT / "configs" / "workloads" / "mixed.yaml")
    est = DAggerForest(n_estimators=100, max_depth=None, min_samples_leaf=1, rounds=0, teacher="oracle",
                       progress=False)
    est.fit(spec, [Episode("mixed", generate(wl, seed=s, duration_s=60), s) for s in (1, 2)])
    return est.model_


def deploy_naive(model) -> None:
    from ray import serve

    app = serve.deployment(NaiveRouter, name="Naive", num_replicas=1, max_ongoing_requests=1000,
                           ray_actor_options={"num_cpus": 0, "label_selector": {"orchestrator-role": "head"}})
    serve.run(app.bind(pickle.dumps(model), str(CLUSTER)), name="naive", route_prefix="/naive", blocking=False)


def _put_policy(url: str, token: str, policy: str) -> None:
    req = urllib.request.Request(f"{url}/v1/policy", data=json.dumps({"policy": policy}).encode(), method="PUT",
                                 headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    urllib.request.urlopen(req, timeout=60).read()


def _get(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url, timeout=60).read())


def _row(name: str, r: LoadResult, unit: str = "req/s", scale: float = 1.0) -> dict:
    bad = sum(v for k, v in r.statuses.items() if k >= 300) + len(r.errors)
    return {"name": name, "rate": r.rate * scale, "p50": r.median_ms, "p99": r.pct(99), "unit": unit, "bad": bad,
            "max": 1000.0 * max(r.latencies, default=float("nan"))}


def _for(seconds: float, make) -> Iterator[dict]:
    """Bodies ``make(i)`` until ``seconds`` have passed (a closed loop that runs for a time, not a count)."""
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        yield make(i)
        i += 1


async def measure_singles(base: str, label: str, seconds: float, rows: list) -> None:
    """Throughput (16 in flight for ``seconds``), the median at 100 req/s, and 300 req/s held open loop."""
    r = await closed_loop(f"{base}", _for(seconds, _task), concurrency=16)
    rows.append(_row(f"{label}: closed loop, 16 in flight, {seconds:.0f} s", r))
    r = await open_loop(f"{base}", _task, rate=100, seconds=seconds)
    rows.append(_row(f"{label}: open loop at 100 req/s", r))
    r = await open_loop(f"{base}", _task, rate=SINGLE_RATE_TARGET, seconds=seconds)
    rows.append(_row(f"{label}: open loop at {SINGLE_RATE_TARGET:.0f} req/s", r))


def _distinct_task(rng: random.Random) -> dict:
    """A task body unlike the others (no two share a validated template in the router's cache)."""
    return {"description": rng.choice(DESCRIPTIONS), "priority": rng.randint(1, 10),
            "cpu_milli": rng.randint(100, 4000), "mem_mib": rng.randint(64, 16_000)}


async def measure_batch(url: str, label: str, rows: list, size: int = 1000, calls: int = 30) -> None:
    """``calls`` batches of ``size``: the same 60 task shapes every call (the router's template cache
    warm, as with a real workload's few shapes), then tasks that are all different (cache missing)."""
    body = {"tasks": [_task(i) for i in range(size)]}
    await closed_loop(url, [body], concurrency=1)  # warm the template cache
    r = await closed_loop(url, (body for _ in range(calls)), concurrency=2)
    rows.append(_row(f"{label}: {size} tasks per call, 60 shapes", r, "decisions/s", size))
    rng = random.Random(7)
    bodies = [{"tasks": [_distinct_task(rng) for _ in range(size)]} for _ in range(calls)]
    r = await closed_loop(url, bodies, concurrency=2)
    rows.append(_row(f"{label}: {size} tasks per call, all distinct", r, "decisions/s", size))


async def _run_tasks(router: str, n: int, tag: str) -> tuple[LoadResult, int, float]:
    """Send ``n`` no-op tasks 32 at a time; wait until they succeeded: (load, succeeded, seconds)."""
    total0 = _get(f"{router}/v1/tasks?status=succeeded&limit=1")["total"]
    bodies = ({"id": f"{tag}-{os.getpid()}-{i}", "cpu_milli": 1000, "mem_mib": 1, "work": 0.0} for i in range(n))
    t0 = time.perf_counter()
    r = await closed_loop(f"{router}/v1/tasks", bodies, concurrency=32)
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline:
        done = _get(f"{router}/v1/tasks?status=succeeded&limit=1")["total"] - total0
        if done >= r.ok():
            break
        await asyncio.sleep(0.2)
    return r, done, time.perf_counter() - t0


async def measure_tasks(router: str, n: int, rows: list, ingress: str, warm: int = 1000, rounds: int = 3) -> dict:
    """No-op tasks (no work, network delay compressed 1000x): accepted/s, and accepted-and-finished/s.

    One CPU each, so the cluster's 14 CPUs run 14 at once. ``warm`` tasks first bring
    the cluster to its steady state: under such a stream Ray grows each node's worker
    pool for a while (each new worker costs about a second of CPU on these 2 cores),
    and the first 2,000 tasks of a fresh cluster run 15-25% slower than later ones.
    Then ``rounds`` rounds of ``n / rounds`` tasks; the verdict takes the median round
    (one round swings by +-20% with the machine's other load, and the first rounds of a
    young cluster still pay for Ray growing its worker pools).
    """
    if warm:
        await _run_tasks(router, warm, f"warm-{ingress.split()[0]}")  # Ray workers started, caches warm
    runs = []
    for k in range(rounds):
        r, done, run_s = await _run_tasks(router, n // rounds, f"bench-{ingress.split()[0]}-{k}")
        runs.append((done / run_s, r, done, run_s, _ray_workers()))
        rows.append({"name": f"POST /v1/tasks no-op {ingress}: accepted and run, round {k + 1}", "rate": done / run_s,
                     "p50": float("nan"), "p99": float("nan"), "unit": "tasks/s", "bad": r.ok() - done})
    rate, r, done, run_s, _ = sorted(runs, key=lambda x: x[0])[len(runs) // 2]
    rows.append(_row(f"POST /v1/tasks no-op {ingress}: accepted (median round)", r))
    rows.append({"name": f"POST /v1/tasks no-op {ingress}: accepted and run (median round)", "rate": rate,
                 "p50": float("nan"), "p99": float("nan"), "unit": "tasks/s", "bad": r.ok() - done})
    return {"accepted": sum(x[1].ok() for x in runs), "succeeded": sum(x[2] for x in runs),
            "seconds": sum(x[3] for x in runs), "rounds": [x[0] for x in runs], "workers": [x[4] for x in runs]}


def _ray_workers() -> int:
    """Idle Ray task workers on this machine (the pool Ray grew for the stream; Linux /proc)."""
    n = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            n += comm.read_text().startswith("ray::IDLE")
        except OSError:  # the process ended meanwhile
            continue
    return n


def _print(rows: list[dict]) -> None:
    print(f"{'measurement':66s} {'rate':>10s} {'':12s} {'p50 ms':>8s} {'p99 ms':>8s} {'failed':>7s}")
    for r in rows:
        print(f"{r['name']:66s} {r['rate']:10,.0f} {r['unit']:12s} {r['p50']:8.1f} {r['p99']:8.1f} {r['bad']:7d}")


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


#: the shipped learned policies, each measured as the router's policy
LEARNED = ("rl", "rf")
LEARNED_AT_100 = "POST /v1/route direct ingress, shipped {}: open loop at 100 req/s"
#: issue 16: the router's single-decision median through direct ingress with the shipped learned policy
LEARNED_P50_TARGET_MS = 3.0
#: auto as the router's policy: its first choice (after 200 decisions) falls inside this loop, in its worker
AUTO_AT_100 = "POST /v1/route direct ingress, auto (first choice inside the loop): open loop at 100 req/s"


def summary(rows: list[dict], tasks: dict[str, dict]) -> list[str]:
    """One line per issue-5 target: measured, target, the naive baseline of this run and the ratio."""
    by = {r["name"]: r for r in rows}
    naive = by["naive baseline (sklearn per request), via proxy: 8 in flight"]
    naive1 = by["naive baseline, via proxy: 1 in flight (unloaded median)"]
    out = [f"naive baseline (same run): {naive['rate']:,.0f} req/s at 8 in flight (p50 {naive['p50']:.1f} ms); "
           f"unloaded median {naive1['p50']:.1f} ms"]
    for ingress in ("via proxy", "direct ingress"):
        closed = next(r for n, r in by.items() if n.startswith(f"POST /v1/route {ingress}: closed loop"))
        held = by[f"POST /v1/route {ingress}: open loop at {SINGLE_RATE_TARGET:.0f} req/s"]
        at100 = by[f"POST /v1/route {ingress}: open loop at 100 req/s"]
        held_ok = held["rate"] >= 0.98 * SINGLE_RATE_TARGET and not held["bad"] and held["p99"] < 1000
        out.append(f"single decisions, {ingress}: {closed['rate']:,.0f}/s closed loop "
                   f"({closed['rate'] / naive['rate']:.1f}x naive); {SINGLE_RATE_TARGET:.0f} req/s offered: "
                   f"{held['rate']:,.0f}/s answered, p99 {held['p99']:.1f} ms, {held['bad']} failed; target "
                   f">= {SINGLE_RATE_TARGET:.0f}/s sustained: {_verdict(closed['rate'] >= SINGLE_RATE_TARGET and held_ok)}")
        out.append(f"median at 100 req/s, {ingress}: {at100['p50']:.1f} ms (naive unloaded median "
                   f"{naive1['p50']:.1f} ms, {naive1['p50'] / at100['p50']:.1f}x); target <= "
                   f"{SINGLE_P50_TARGET_MS:.0f} ms: {_verdict(at100['p50'] <= SINGLE_P50_TARGET_MS and not at100['bad'])}")
    for kind in LEARNED:
        r = by.get(LEARNED_AT_100.format(kind))
        if r is not None:
            out.append(f"median at 100 req/s with the shipped {kind}, direct ingress: {r['p50']:.1f} ms "
                       f"(fastest-feasible {by['POST /v1/route direct ingress: open loop at 100 req/s']['p50']:.1f} "
                       f"ms); target <= {LEARNED_P50_TARGET_MS:.0f} ms: "
                       f"{_verdict(r['p50'] <= LEARNED_P50_TARGET_MS and not r['bad'])}")
    r, rf = by.get(AUTO_AT_100), by.get(LEARNED_AT_100.format("rf"))
    if r is not None and rf is not None:
        landed = f"it had chosen {r['chosen']}" if r.get("chosen") else "its choice had NOT landed by the loop's end"
        out.append(f"auto at 100 req/s, direct ingress, its first choice made meanwhile in its worker ({landed}): "
                   f"p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, slowest {r['max']:.1f} ms, {r['bad']} failed "
                   f"(the shipped rf alone: p50 {rf['p50']:.1f}, p99 {rf['p99']:.1f}, slowest {rf['max']:.1f} ms)")
    for kind in ("60 shapes", "all distinct"):
        batch = max((r for r in rows if r["name"].startswith("POST /v1/route/batch") and r["name"].endswith(kind)),
                    key=lambda r: r["rate"])
        worst = min((r for r in rows if r["name"].startswith("POST /v1/route/batch") and r["name"].endswith(kind)),
                    key=lambda r: r["rate"])
        out.append(f"batch endpoint, {kind}: {batch['rate']:,.0f} decisions/s best policy, {worst['rate']:,.0f} "
                   f"worst ({batch['rate'] / naive['rate']:.0f}x / {worst['rate'] / naive['rate']:.0f}x naive); "
                   f"target >= {BATCH_TARGET:,.0f}/s: {_verdict(worst['rate'] >= BATCH_TARGET)} (worst policy)")
    for ingress, t in tasks.items():
        acc = by[f"POST /v1/tasks no-op {ingress}: accepted (median round)"]
        run_rate = by[f"POST /v1/tasks no-op {ingress}: accepted and run (median round)"]["rate"]
        out.append(f"POST /v1/tasks no-op, {ingress}: median round {acc['rate']:,.0f}/s accepted, {run_rate:,.0f}/s "
                   f"accepted and run (rounds: {', '.join(f'{x:,.0f}' for x in t['rounds'])}; "
                   f"{t['succeeded']}/{t['accepted']} succeeded in {t['seconds']:.1f} s; "
                   f"{run_rate / naive['rate']:.1f}x the naive decision rate; idle Ray workers after each round: "
                   f"{', '.join(map(str, t['workers']))}); "
                   f"target >= {TASKS_TARGET:.0f}/s accepted and run: "
                   f"{_verdict(run_rate >= TASKS_TARGET and t['succeeded'] == t['accepted'])}")
    return out


def run(state_dir: Path, quick: bool = False) -> int:
    from ray import serve

    token = secrets.token_hex(16)
    os.environ["ORCH_ADMIN_TOKEN"] = token
    hist = Path(tempfile.mkdtemp(prefix="bench-serve-")) / "history.db"
    ep = deploy.Endpoint("127.0.0.1", launcher.free_port(), free_fixed_port(span=2))
    print("training the naive baseline's 100-tree forest ...", flush=True)
    model = train_naive_model()
    print(f"deploying the router (proxy {ep.url}, direct {ep.direct_url}) and the baseline ...", flush=True)
    # time_compression 1000: the emulated network delay of a task (50-600 ms) sleeps 0.05-0.6 ms, so the
    # no-op task measurement times the router, the history and Ray, not sleeps
    deploy.start({"policy": "fastest-feasible", "history_url": f"sqlite:///{hist}", "warm_workers": 4,
                  "time_compression": 1000.0},
                 ep, state_dir=state_dir, direct_span=2)
    deploy_naive(model)
    naive_direct = f"http://127.0.0.1:{ep.direct_port + 1}"
    deploy.wait_healthy(ep.url)
    # the load generator's key: a quota far above what it sends, so admission control is paid, not hit
    os.environ["ORCH_API_KEY"] = create_key(ep.url, token, "bench", rate_per_s=1e6, burst=10_000_000,
                                            max_in_flight=10_000_000)
    seconds = 4.0 if quick else 10.0
    rows: list[dict] = []

    async def go() -> dict:
        base = await closed_loop(f"{ep.url}/naive", _for(seconds, _task), concurrency=8)
        rows.append(_row("naive baseline (sklearn per request), via proxy: 8 in flight", base))
        base1 = await closed_loop(f"{ep.url}/naive", (_task(i) for i in range(100)), concurrency=1)
        rows.append(_row("naive baseline, via proxy: 1 in flight (unloaded median)", base1))
        base_d = await closed_loop(f"{naive_direct}/naive", _for(seconds, _task), concurrency=8)
        rows.append(_row("naive baseline, direct ingress: 8 in flight", base_d))
        await measure_singles(f"{ep.url}/v1/route", "POST /v1/route via proxy", seconds, rows)
        await measure_singles(f"{ep.direct_url}/v1/route", "POST /v1/route direct ingress", seconds, rows)
        for kind in LEARNED:  # the shipped learned policies (rl: the router's default; issue 16: median <= 3 ms)
            _put_policy(ep.url, token, kind)
            r = await open_loop(f"{ep.direct_url}/v1/route", _task, rate=100, seconds=seconds)
            rows.append(_row(LEARNED_AT_100.format(kind), r))
        _put_policy(ep.url, token, "auto")  # a new instance: its warm-up and first choice happen in this loop
        row = _row(AUTO_AT_100, await open_loop(f"{ep.direct_url}/v1/route", _task, rate=100, seconds=seconds))
        after = await closed_loop(f"{ep.direct_url}/v1/route", (_task(i) for i in range(3)), concurrency=1,
                                  keep_bodies=True)
        row["chosen"] = next((b["explanation"].partition(" ")[0] for b in after.bodies if "simulated objective"
                              in b.get("explanation", "")), None)  # None: the choice had not landed by then
        rows.append(row)
        for policy in ("fastest-feasible", "least-loaded"):
            _put_policy(ep.url, token, policy)
            await measure_batch(f"{ep.direct_url}/v1/route/batch", f"POST /v1/route/batch, {policy}", rows)
        _put_policy(ep.url, token, "least-loaded")
        out = {"direct ingress": await measure_tasks(ep.direct_url, 600 if quick else 5000, rows, "direct ingress",
                                                     rounds=3 if quick else 5)}
        out["via proxy"] = await measure_tasks(ep.url, 600 if quick else 1500, rows, "via proxy", warm=0)
        return out

    try:
        tasks = asyncio.run(go())
    finally:
        serve.shutdown()
    print(f"\nload average (1/5/15 min) at the end: {os.getloadavg()} - other work shares these 2 cores")
    _print(rows)
    print()
    for line in summary(rows, tasks):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", help="reuse the test_small cluster of this launcher state dir")
    p.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    args = p.parse_args(argv or [])
    if args.state_dir:
        return run(Path(args.state_dir), args.quick)
    sdir = Path(tempfile.mkdtemp(prefix="orch-bs-", dir="/tmp"))  # short: Unix socket paths
    print("starting a test_small cluster ...", flush=True)
    try:  # `down` also when `up` fails half-way (a loaded machine can time a raylet out)
        launcher.up(CLUSTER, state_dir=sdir, port=launcher.free_port(), dashboard_port=launcher.free_port())
        return run(sdir, args.quick)
    finally:
        import ray

        ray.shutdown()
        launcher.down(sdir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
