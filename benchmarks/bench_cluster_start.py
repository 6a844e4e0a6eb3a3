"""Benchmark: the local cluster's start time and first-try starts, raylets one at a time against two at once.

Each round starts ``configs/cluster/test_small.yaml`` (head + 4 raylets) with the launcher
in a fresh state dir on fresh ports, waits until every node is registered, and stops
it. A start "needed a retry" when a ``ray start`` failed once and was run again
(``LaunchState.retries``): before each raylet had a temp dir of its own, two raylets
starting at once could pick the same socket name and one aborted (7 of 7 starts here).
Baseline: one raylet at a time (``parallel=1``), which cannot race. ``--runs 20`` is the
issue-17 check (``tests/integration/test_cluster_start.py`` runs it as a test).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster import launcher  # noqa: E402
from cluster.procs import cmdline, free_fixed_port  # noqa: E402

TEST_CLUSTER = ROOT / "configs" / "cluster" / "test_small.yaml"
RUNS = 2


@dataclass
class StartRun:
    """One start and stop of the cluster."""

    seconds: float
    retries: list[str] = field(default_factory=list)
    error: str | None = None  # the start failed even with its retry
    left: list[str] = field(default_factory=list)  # "pid command" of each process alive after `down`

    @property
    def first_try(self) -> bool:
        return self.error is None and not self.retries and not self.left


def start_stop(config: Path, runs: int, parallel: int = 2,
               report: Callable[[int, StartRun], None] = lambda i, r: None) -> list[StartRun]:
    """Start and stop ``config`` ``runs`` times, each in its own state dir on fresh ports."""
    out = []
    for i in range(runs):
        sdir = Path(tempfile.mkdtemp(prefix="orch-st-", dir="/tmp"))  # short: Unix socket paths
        port = free_fixed_port(span=2, host="0.0.0.0")
        t0 = time.monotonic()
        run = StartRun(0.0)
        try:
            res = launcher.up(config, state_dir=sdir, port=port, dashboard_port=port + 1,
                              token_file=sdir / "auth_token", parallel=parallel)
            run.retries = list(res.state.retries)
        except launcher.LauncherError as exc:
            run.error = str(exc)
        run.seconds = time.monotonic() - t0
        st = launcher.LaunchState.load(sdir)
        sids = [r.sid for r in st.nodes.values()] if st else []
        launcher.down(sdir)
        run.left = [f"{p} {cmdline(p)[:80]}" for s in sids for p in launcher.session_pids(s)]
        shutil.rmtree(sdir, ignore_errors=True)
        out.append(run)
        report(i, run)
    return out


#: ``ray start``'s command line imported as Ray's ``ray`` does it, and as the launcher's ``ray start`` does
CLI_IMPORTS = {"Ray's `ray` (baseline)": "import ray.scripts.scripts",
               "the launcher's `ray start`": "from cluster.ray_compat import ray_node_cli; ray_node_cli()"}


def cli_import_seconds(code: str, runs: int = 3) -> float:
    """Median wall seconds of a fresh interpreter running ``code`` (what each node's start pays first)."""
    import subprocess

    secs = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
        secs.append(time.perf_counter() - t0)
    return statistics.median(secs)


def summary(label: str, runs: list[StartRun]) -> str:
    secs = [r.seconds for r in runs if r.error is None]
    first = sum(r.first_try for r in runs)
    times = (f"median {statistics.median(secs):5.1f} s, min {min(secs):5.1f}, max {max(secs):5.1f}" if secs
             else "no start succeeded")
    return f"{label:26s} {times}; first try {first}/{len(runs)}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_cluster_start", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=RUNS, help="starts per setting")
    p.add_argument("--config", type=Path, default=TEST_CLUSTER)
    args = p.parse_args(argv or [])

    def report(i: int, r: StartRun) -> None:
        why = f" retries: {r.retries}" if r.retries else (f" FAILED: {r.error.splitlines()[0]}" if r.error else "")
        print(f"  run {i + 1}: {r.seconds:5.1f} s{why}{f' left: {r.left}' if r.left else ''}", flush=True)

    print("ray start's command line imported in a fresh interpreter (median of 3), once per node started:")
    for label, code in CLI_IMPORTS.items():
        print(f"  {label:30s} {cli_import_seconds(code):5.2f} s", flush=True)
    print(f"{args.config.name}: {args.runs} starts and stops per setting", flush=True)
    print("one raylet at a time (baseline):", flush=True)
    one = start_stop(args.config, args.runs, parallel=1, report=report)
    print("two raylets at once (the default):", flush=True)
    two = start_stop(args.config, args.runs, parallel=2, report=report)
    print(summary("one at a time", one))
    print(summary("two at once", two))
    ok = [r.seconds for r in one if r.error is None], [r.seconds for r in two if r.error is None]
    if all(ok):
        print(f"{'ratio one/two':26s} {statistics.median(ok[0]) / statistics.median(ok[1]):5.2f}x")
    return 0 if all(r.first_try for r in one + two) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
