"""Soak: the router at a sustained rate with 20% malformed requests, for ``--minutes``.

Issue 17's soak: no 5xx, flat memory (the replica's resident set, sampled every
``--sample-s`` and fitted by least squares after the first quarter, reported in
MB/hour beside its level), and the history within its retention bound (the router
runs with ``history_max_rows`` = ``--max-rows``, trimmed every minute; the task rows
in the file are counted at each sample).

Each second ``--rate`` requests leave on schedule (open loop): 80% are no-op
``POST /v1/tasks`` with a key (accepted and run), 20% are malformed in turn (bad
JSON, a bad field, an unknown field, a body over the limit, no key).

``python -m benchmarks soak`` runs 30 minutes; ``--minutes 5`` a shorter one.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_abuse import CLUSTER, call, create_key  # noqa: E402
from cluster import launcher  # noqa: E402
from cluster.procs import free_fixed_port  # noqa: E402
from serve_app import deploy  # noqa: E402

MALFORMED = [
    (b'{"cpu_milli": 100,', "application/json"),            # bad JSON
    (b'{"cpu_milli": -5}', "application/json"),             # a bad field
    (b'{"colour": "red"}', "application/json"),             # an unknown field
    (b'{"description": "' + b"x" * 3000 + b'"}', "application/json"),  # over the description limit
    (b'{"cpu_milli": 100}', "text/plain"),                  # not JSON's content type
]


async def soak(url: str, key: str, rate: float, seconds: float, on_sample, sample_s: float) -> dict[int, int]:
    import aiohttp

    codes: dict[int, int] = {}
    errors = 0
    n = int(rate * seconds)
    sem = asyncio.Semaphore(256)

    async def one(s: aiohttp.ClientSession, i: int) -> None:
        nonlocal errors
        if i % 5 == 4:
            body, ctype = MALFORMED[(i // 5) % len(MALFORMED)]
            headers = {"content-type": ctype, "authorization": f"Bearer {key}"}
        elif i % 50 == 3:
            body, headers = b'{"cpu_milli": 100, "work": 0.01}', {"content-type": "application/json"}  # no key
        else:
            body = b'{"cpu_milli": 100, "mem_mib": 64, "work": 0.01, "id": "s-%d"}' % i
            headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
        async with sem:
            try:
                async with s.post(f"{url}/v1/tasks", data=body, headers=headers) as r:
                    await r.read()
                    codes[r.status] = codes.get(r.status, 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                errors += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        t0 = time.perf_counter()
        next_sample = 0.0
        pending = []
        for i in range(n):
            due = t0 + i / rate
            if due - t0 >= next_sample:
                on_sample(due - t0)
                next_sample += sample_s
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(s, i)))
            if len(pending) > 4096:
                pending = [p for p in pending if not p.done()]
        await asyncio.gather(*pending)
        on_sample(time.perf_counter() - t0)
    codes[-1] = errors
    return codes


def rss_mb(pid: int) -> float:
    """Resident set of a process (Linux ``/proc``), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(state_dir: Path, minutes: float, rate: float, max_rows: int, sample_s: float) -> int:
    from ray import serve

    token = secrets.token_hex(16)
    os.environ["ORCH_ADMIN_TOKEN"] = token
    hist = Path(tempfile.mkdtemp(prefix="bench-soak-")) / "history.db"
    ep = deploy.Endpoint("127.0.0.1", launcher.free_port(), free_fixed_port())
    deploy.start({"policy": "fastest-feasible", "history_url": f"sqlite:///{hist}", "warm_workers": 2,
                  "time_compression": 1000.0, "history_max_rows": max_rows, "rate_per_s": 10 * rate},
                 ep, state_dir=state_dir)
    health = deploy.wait_healthy(ep.url)
    pid = int(health["pid"])  # the replica's process, on this host
    key = create_key(ep.url, token, "soak")
    samples: list[tuple[float, float, int]] = []  # (s, RSS MB, task rows)

    def sample(t: float) -> None:
        with sqlite3.connect(f"file:{hist}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
        samples.append((t, rss_mb(pid), rows))
        print(f"  {t:7.0f} s  RSS {samples[-1][1]:7.1f} MB  history rows {rows:,}", flush=True)

    print(f"soak: {rate:g} requests/s for {minutes:g} min against {ep.direct_url}, 20% malformed; "
          f"history_max_rows {max_rows:,}", flush=True)
    try:
        codes = asyncio.run(soak(ep.direct_url, key, rate, minutes * 60, sample, sample_s))
        time.sleep(65)  # one more trim period
        sample(minutes * 60 + 65)
    finally:
        serve.shutdown()
    t, rss, rows = (np.array(x) for x in zip(*samples))
    keep = t >= t[-1] / 4
    slope = float(np.polyfit(t[keep] / 3600, rss[keep], 1)[0]) if keep.sum() >= 2 else float("nan")
    five = sum(v for k, v in codes.items() if k >= 500)
    print(f"\nanswers: {dict(sorted(codes.items()))} (-1: connection errors)")
    print(f"5xx: {five} (target 0): {'yes' if five == 0 else 'NO'}")
    print(f"replica RSS: {rss[keep].mean():.1f} MB mean after the first quarter, slope {slope:+.1f} MB/hour "
          f"(first {rss[0]:.1f}, last {rss[-1]:.1f} MB)")
    print(f"history rows: max {int(rows.max()):,}, last {int(rows[-1]):,}, bound {max_rows:,} plus one minute "
          f"of arrivals between trims ({int(rate * 0.8 * 60):,}): "
          f"{'yes' if rows[-1] <= max_rows + rate * 60 else 'NO'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", help="reuse the test_small cluster of this launcher state dir")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=50.0, help="requests per second offered")
    p.add_argument("--max-rows", type=int, default=20_000, help="the router's history_max_rows")
    p.add_argument("--sample-s", type=float, default=30.0)
    args = p.parse_args(argv or [])
    if args.state_dir:
        return run(Path(args.state_dir), args.minutes, args.rate, args.max_rows, args.sample_s)
    sdir = Path(tempfile.mkdtemp(prefix="orch-sk-", dir="/tmp"))  # short: Unix socket paths
    print("starting a test_small cluster ...", flush=True)
    try:
        launcher.up(CLUSTER, state_dir=sdir, port=launcher.free_port(), dashboard_port=launcher.free_port())
        return run(sdir, args.minutes, args.rate, args.max_rows, args.sample_s)
    finally:
        import ray

        ray.shutdown()
        launcher.down(sdir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
