"""Benchmark: history accepts per second with ``synchronous=NORMAL`` against ``FULL``, and the trim's cost.

An accept is acknowledged once its group commit is done; FULL adds an fsync of the
WAL to every commit (surviving an OS crash or power cut, not only a process kill).
Two loads, each on a fresh file, both settings in the same run, rounds alternated,
best of three (wall time: an fsync is waiting, not CPU):

- ``requests``: 8 submitters each waiting for its accept before the next, as the
  router's requests do (a commit holds at most 8 accepts);
- ``flood``: one submitter hands in every ``accept_later`` first, then waits (commits
  of up to 512).

Then the trim: milliseconds per chunk of 1,000 finished tasks folded and deleted
(how long accepts queue behind one), and the file's bytes per finished task.

Usage: ``python -m benchmarks history`` (``--dir PATH`` to measure another disk).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from serve_app.history import SQLiteHistory  # noqa: E402
from serve_app.retention import Retention  # noqa: E402

N = 5000
SUBMITTERS = 8
TASK = {"kind": "fraud", "priority": 5, "work": 0.05, "cpu": 1, "mem_gb": 1, "slo_ms": 300}


def requests(h: SQLiteHistory, tag: str) -> None:
    """SUBMITTERS threads, each accepting its share one at a time."""
    def work(t: int) -> None:
        for k in range(t, N, SUBMITTERS):
            h.accept_later(f"{tag}{k}", TASK, kind="fraud", policy="rf").result()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(SUBMITTERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def flood(h: SQLiteHistory, tag: str) -> None:
    """Every accept handed in at once, then awaited."""
    for f in [h.accept_later(f"{tag}{k}", TASK, kind="fraud", policy="rf") for k in range(N)]:
        f.result()


def rate(folder: Path, load, synchronous: str, round_: int) -> float:
    """Accepts per second of ``load`` on a fresh store."""
    h = SQLiteHistory(folder / f"{load.__name__}-{synchronous}-{round_}.db", synchronous=synchronous)
    t = time.perf_counter()
    load(h, "t")
    took = time.perf_counter() - t
    h.close()
    return N / took


def trim_cost(folder: Path) -> tuple[float, float]:
    """(ms per chunk of 1,000 tasks trimmed, file bytes per finished task before the trim)."""
    h = SQLiteHistory(folder / "trim.db", retention=Retention(max_rows=0, every_s=3600, chunk=1000))
    for k in range(N):
        h.accept_later(f"t{k}", TASK, kind="fraud", policy="rf")
        h.update(f"t{k}", "running", pool="edge", node="edge-1", share="cpu")
        h.update(f"t{k}", "succeeded", latency_ms=12.5, cost=0.001, slo_met=True)
    h.flush()
    size = sum(p.stat().st_size for p in folder.glob("trim.db*"))
    t = time.perf_counter()
    removed = h.trim()
    took = time.perf_counter() - t
    h.close()
    return took * 1000 / (removed / 1000), size / N


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", help="folder to put the databases in (default: a temporary one)")
    args = p.parse_args(argv or [])
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        print(f"{N:,} accepts, databases in {folder} ({os.cpu_count()} CPUs)")
        print(f"{'load':10s} {'NORMAL /s':>10s} {'FULL /s':>10s} {'FULL/NORMAL':>12s}")
        for load in (requests, flood):
            best = {"NORMAL": 0.0, "FULL": 0.0}
            for r in range(3):
                for sync in (("NORMAL", "FULL") if r % 2 == 0 else ("FULL", "NORMAL")):
                    best[sync] = max(best[sync], rate(folder, load, sync, r))
            print(f"{load.__name__:10s} {best['NORMAL']:10,.0f} {best['FULL']:10,.0f} "
                  f"{best['FULL'] / best['NORMAL']:12.2f}", flush=True)
        ms, per_task = trim_cost(folder)
        print(f"trim: {ms:.1f} ms per chunk of 1,000 finished tasks; {per_task:,.0f} bytes per finished task")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
