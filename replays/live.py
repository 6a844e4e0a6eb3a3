"""Replay a workload on the live Ray cluster: ``ray job submit ... -- python -m replays.live``.

The same tasks as the simulator (same workload file, seed and network-delay
draws) arrive at their arrival times divided by ``--time-compression``; at each
arrival the policy decides on the live state (:class:`cluster.live_state.LiveState`)
and the executor runs the task on the chosen node and share. Per-task records use
the simulator's schema (:class:`scheduler.record.TaskRecord`) in workload
time, so :func:`simulations.metrics.summarize` and ``compare-sim-real`` treat
both alike. Before the clock starts, Ray worker processes are warmed up on every
node the simulator expects work on (their cold start, ~1 s each on a laptop, is
not part of the workload's latency).

Inside a Ray job the cluster is the job's; run by hand it is the one
``orchestrator cluster up`` started (or ``--address``).

With ``--router URL`` the policy is not called here: each arrival is POSTed to the
HTTP router's ``POST /v1/tasks`` and the records come from its history
(:mod:`replays.router`). Either way the output folder also gets a
``summary.json`` index (``kind: replay``) that the Streamlit Compare page reads.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cluster.executor import Executor, warm_workers
from cluster.launcher import ENV_CONFIG
from cluster.live_state import LiveState
from cluster.topology import ClusterSpec
from scheduler.objective import Objective
from scheduler.policy import Policy
from scheduler.task import Task
from scheduler.record import RECORD_COLUMNS, TaskRecord
from replays.results import TIMELINE_COLUMNS_EXTRA, ReplayResult, write_result
from simulations.engine import network_draws, simulate

DEFAULT_CLUSTER = "configs/cluster/local.yaml"


def peak_concurrency(spec: ClusterSpec, records: pd.DataFrame) -> dict[tuple[int, bool], int]:
    """Most tasks running at once per (node, holds a GPU) in a simulated run."""
    index = {nd.name: i for i, nd in enumerate(spec.nodes)}
    done = records[records["status"] == "succeeded"]
    out: dict[tuple[int, bool], int] = {}
    for (node, gpu), g in done.groupby([done["node"], done["share"].str.startswith(("slice", "whole"))]):
        ev = sorted([(s, 1) for s in g["start"]] + [(f, -1) for f in g["finish"]])
        run = peak = 0
        for _, d in ev:
            run += d
            peak = max(peak, run)
        out[(index[node], bool(gpu))] = peak
    return out


def replay(spec: ClusterSpec, tasks: Sequence[Task], policy: Policy, *, seed: int = 0,
           time_compression: float = 1.0, objective: Objective | None = None, warm: bool = True,
           kernel: str = "sleep", max_retries: int = 2, live: LiveState | None = None, align: bool = True,
           progress: bool = True, on_submitted: Callable[[int, float], None] | None = None) -> ReplayResult:
    """Run ``tasks`` through ``policy`` on the connected Ray cluster (``ray.init`` done by the caller).

    ``align`` processes each arrival after every completion before it, as the simulator
    does: a task's report reaches the driver some milliseconds after it ends, so before
    deciding, the replay waits (at most 200 ms) for the reports of the tasks the live state
    predicts to have ended by then. ``on_submitted(k, wall_s)`` is called after the k-th
    submission (fault-injection tests).
    """
    from tqdm import tqdm

    objective = objective or Objective()
    tasks = list(tasks)
    live = live or LiveState(spec)
    live.refresh()
    problems = tuple(f"{nd.name}: {p}" for nd, p in zip(spec.nodes, live.problems) if p)
    if not any(live.usable):
        raise RuntimeError("no node of the config is running on this Ray cluster: " + "; ".join(problems))
    t_warm = time.monotonic()
    if warm and tasks:
        counts = peak_concurrency(spec, simulate(spec, tasks, policy, seed=seed).records)
        warm_workers(live, {k: min(v + 1, 8) for k, v in counts.items()})
    warm_s = time.monotonic() - t_warm
    unif = network_draws(seed, len(tasks))  # the simulator's network draws
    policy.reset(seed)
    samples: list[tuple] = []
    pools = spec.pools
    with Executor(live, time_compression=time_compression, kernel=kernel, max_retries=max_retries,
                  seed=seed) as ex:
        futures = []
        bar = tqdm(total=len(tasks), unit="task", desc=f"replay {policy.name}", disable=not progress)
        origin = tasks[0].arrival if tasks else 0.0
        ex.reset_clock()
        t0 = time.time()
        for k, task in enumerate(tasks):
            due = t0 + (task.arrival - origin) / time_compression
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            if align:
                _await_due(live, task.arrival - origin, time_compression)
            with live.lock:
                _, fut = ex.place(task, policy, network_u=unif[k])
                st = live.state
                load = st.load()
                util = [float(load[st.pool_of == p].mean()) for p in range(len(pools))]
                gtot = st.gpu_total.sum()
                samples.append((task.arrival, *util, float(st.gpu_used().sum() / gtot) if gtot else 0.0,
                                np.nan, int(st.queue_len.sum()), int(st.running.sum())))
            futures.append(fut)
            if on_submitted is not None:
                on_submitted(k, time.time() - t0)
        results = []
        for fut in futures:
            results.append(fut.result())
            bar.update(1)
        bar.close()
        wall = time.time() - t0
        mismatches = ex.device_mismatches
    records = pd.DataFrame.from_records(
        [TaskRecord.of_result(t, r, policy.name, objective) for t, r in zip(tasks, results)], columns=RECORD_COLUMNS)
    timeline = pd.DataFrame.from_records(samples, columns=["time", *[f"util_{p}" for p in pools],
                                                           *TIMELINE_COLUMNS_EXTRA])
    from simulations.metrics import summarize

    summary = summarize(records, timeline, pools)
    return ReplayResult(records, timeline, summary, wall_s=wall, warm_s=warm_s, problems=problems, results=results,
                        device_mismatches=mismatches)


def _await_due(live: LiveState, t: float, compression: float, timeout_s: float = 0.2) -> None:
    """Wait until no running task is predicted to end by executor time ``t`` (its report is in flight)."""
    eps = 0.001 * compression  # timer precision, in workload seconds
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with live.lock:
            due = any(h[0] <= t + eps for node in live.state.holding for h in node)
        if not due:
            return
        time.sleep(0.0005)


def load_tasks(workload: str | Path, *, seed: int | None, duration_s: float | None,
               load_factor: float | None) -> list[Task]:
    from simulations.workloads import generate, load_workload

    wl = load_workload(workload)
    return generate(wl, seed=seed, load_factor=load_factor, duration_s=duration_s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m replays.live", description=__doc__.splitlines()[0])
    add_replay_args(p)
    return p


def add_replay_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", required=True, help="workload YAML (configs/workloads/...)")
    p.add_argument("--policy", default=None,
                   help="policy name (orchestrator policies); required unless --router is given, where it "
                        "names the records and must be the router's active policy")
    p.add_argument("--router", default=None, metavar="URL",
                   help="send each arrival to the HTTP router at URL (POST /v1/tasks) instead of calling "
                        "the policy here; the router's time_compression should equal --time-compression")
    p.add_argument("--router-warmup", type=int, default=24, metavar="N",
                   help="--router: first send the workload's first N tasks at once and wait for them "
                        "(not recorded), so Ray worker start-up is not measured; 0 skips it")
    p.add_argument("--router-sample-s", type=float, default=1.0,
                   help="--router: seconds between GET /v1/cluster samples for the timeline (0: none)")
    p.add_argument("--router-wait", type=float, default=600.0,
                   help="--router: seconds to wait after the last arrival for final task records")
    p.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="--router: file holding the API key the tasks are sent with (default: $ORCH_API_KEY, "
                        "else the file $ORCH_API_KEY_FILE names; `orchestrator keys create NAME` makes one)")
    p.add_argument("--cluster", default=None,
                   help=f"cluster YAML the Ray cluster was started from (default: ${ENV_CONFIG}, set for "
                        f"jobs by `orchestrator cluster up`, else the launcher's state, else {DEFAULT_CLUSTER})")
    p.add_argument("--seed", type=int, default=None, help="workload seed (default: the workload's)")
    p.add_argument("--duration", type=float, default=None, help="seconds of arrivals (default: the workload's)")
    p.add_argument("--load-factor", type=float, default=None)
    p.add_argument("--time-compression", type=float, default=1.0,
                   help="workload seconds per wall second (sleeps shrink, measured times scale back)")
    p.add_argument("--kernel", choices=["sleep", "cpu"], default="sleep")
    p.add_argument("--no-warm", action="store_true", help="skip warming up Ray workers")
    p.add_argument("--out", default="results/replay", help="output folder (give an absolute path in a job)")
    p.add_argument("--address", default=None, help="Ray GCS address (default: the job's or the launcher's)")
    p.add_argument("--state-dir", default=None, help="launcher state folder (default /tmp/orch-ray-<uid>)")


def cluster_path(arg: str | None, state_dir: str | None = None) -> str:
    """The cluster YAML: the argument, else the one the cluster was started from (the job's
    environment, or the launcher's state on this machine), else the default."""
    if arg:
        return arg
    if os.environ.get(ENV_CONFIG):
        return os.environ[ENV_CONFIG]
    from cluster.launcher import LaunchState, default_state_dir

    st = LaunchState.load(state_dir or default_state_dir())
    return st.config if st is not None else DEFAULT_CLUSTER


def index_result(out: Path, name: str, summary: dict, meta: dict) -> None:
    """Add ``name`` to ``out/summary.json`` (the result-set index of :mod:`serve_app.results`)."""
    path = out / "summary.json"
    data: dict = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data["meta"] = {**data.get("meta", {}), **meta, "kind": "replay"}
    data.setdefault("policies", {})[name] = summary
    path.write_text(json.dumps(data, indent=2, default=float))


def _print_summary(s: dict) -> None:
    print(json.dumps({"tasks": s["tasks"], "succeeded": s["succeeded"], "failed": s["failed"],
                      "rejected": s["rejected"], "latency_ms": s["latency_ms"], "slo_miss_rate": s["slo_miss_rate"],
                      "cost_total": s["cost_total"], "placement_mix": s["placement_mix"]}, indent=2, default=float))


class UsageError(ValueError):
    """A bad flag combination or a router that does not answer: exit 2, naming the flag."""


def router_key(path: str | None) -> str:
    """The API key for ``--router``: ``--api-key-file``, else ``$ORCH_API_KEY``, else the file
    ``$ORCH_API_KEY_FILE`` names (the order of :func:`serve_app.client.api_key_from_env`)."""
    flag = "--api-key-file"
    if path is None:
        key = os.environ.get("ORCH_API_KEY", "").strip()
        if key:
            return key
        path, flag = os.environ.get("ORCH_API_KEY_FILE"), "ORCH_API_KEY_FILE"
    key = ""
    if path:
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise UsageError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    if not key:
        raise UsageError("--api-key-file: the router needs an API key to run tasks: give --api-key-file, or set "
                         "ORCH_API_KEY (an operator creates one with `orchestrator keys create NAME`)")
    return key


def run_router(args: argparse.Namespace) -> int:
    """``--router``: the replay through the HTTP router."""
    from cluster.alibaba import load_cluster_any
    from replays.router import RouterUnavailable, check_router, replay_via_router
    from simulations.workloads import load_workload

    url = args.router.rstrip("/")
    key = router_key(args.api_key_file)
    try:
        active = check_router(url)
    except RouterUnavailable as exc:
        raise UsageError(str(exc)) from None
    running = str(active.get("policy", ""))
    if args.policy and args.policy.partition(":")[0] != running.partition(":")[0]:
        raise UsageError(f"--policy {args.policy}: the router at {url} runs {running!r}; switch it "
                         "(PUT /v1/policy, admin) or leave --policy out")
    label = args.policy or running
    spec = load_cluster_any(cluster_path(args.cluster, args.state_dir))
    tasks = load_tasks(args.workload, seed=args.seed, duration_s=args.duration, load_factor=args.load_factor)
    run_tag = time.strftime("r%Y%m%d-%H%M%S-") + os.urandom(2).hex()  # unique per run: ids are idempotency keys
    print(f"replaying {len(tasks)} tasks of {args.workload} through the router at {url} ({running}), "
          f"time compression {args.time_compression:g}; task ids {run_tag}-<id>", flush=True)
    real_work = load_workload(args.workload).real_work()
    if real_work:
        names = "; ".join(f"{kind} runs {w['entry_point']}" for kind, w in real_work.items())
        print(f"real work (the router must list these in its entry_points): {names}", flush=True)
    res = replay_via_router(spec, tasks, url, label=label, time_compression=args.time_compression,
                            run_tag=run_tag, wait_s=args.router_wait,
                            warmup=0 if args.no_warm else args.router_warmup, sample_s=args.router_sample_s,
                            api_key=key, real_work=real_work)
    out = Path(args.out).resolve()
    meta = {"workload": str(args.workload), "policy": label, "cluster": spec.name, "tasks": len(tasks),
            "seed": args.seed, "time_compression": args.time_compression, "wall_s": res.wall_s,
            "warm_s": res.warm_s, "router": url, "router_policy": running,
            "router_policy_version": active.get("version"), "run_tag": run_tag}
    write_result(out, label, res, meta)
    index_result(out, label, res.summary, meta)
    _print_summary(res.summary)
    print(f"records and summary written to {out}/ ({res.wall_s:.1f} s of replay through the router, "
          f"{res.warm_s:.1f} s warm-up)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Replay as the command line asked; prints the summary; returns the exit status."""
    from cluster.launcher import connect
    from cluster.alibaba import load_cluster_any
    from scheduler.policy import make_policy
    from simulations.workloads import load_workload

    if args.router:
        return run_router(args)
    if not args.policy:
        raise UsageError("--policy is required (unless --router is given)")
    spec = load_cluster_any(cluster_path(args.cluster, args.state_dir))
    tasks = load_tasks(args.workload, seed=args.seed, duration_s=args.duration, load_factor=args.load_factor)
    policy = make_policy(args.policy)
    seed = args.seed if args.seed is not None else 0
    if load_workload(args.workload).real_work():
        print("note: this workload names real work (entry_point); the direct replay emulates it by work_s, "
              "--router runs it", file=sys.stderr)
    connect(args.state_dir, args.address)
    print(f"replaying {len(tasks)} tasks of {args.workload} with {args.policy} on {spec.name} "
          f"({len(spec.nodes)} nodes), time compression {args.time_compression:g}", flush=True)
    res = replay(spec, tasks, policy, seed=seed, time_compression=args.time_compression,
                 warm=not args.no_warm, kernel=args.kernel)
    for p in res.problems:
        print(f"warning: {p}", file=sys.stderr)
    out = Path(args.out).resolve()
    meta = {"workload": str(args.workload), "policy": args.policy, "cluster": spec.name, "tasks": len(tasks),
            "seed": seed, "time_compression": args.time_compression, "wall_s": res.wall_s, "warm_s": res.warm_s}
    write_result(out, args.policy, res, meta)
    index_result(out, args.policy, res.summary, meta)
    _print_summary(res.summary)
    print(f"records and summary written to {out}/ ({res.wall_s:.1f} s of replay, {res.warm_s:.1f} s warm-up)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from cluster.config import ConfigError
    from cluster.launcher import LauncherError
    from scheduler.task import TaskError

    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ConfigError, TaskError, KeyError, UsageError) as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, LauncherError) as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
