"""Replay a workload through the HTTP router: ``python -m replays.live --router URL``.

The same tasks and arrival process as the direct replay (workload file, seed,
``--time-compression``), but each arrival is a ``POST /v1/tasks`` to the router,
which decides with its own active policy and runs the task on the cluster. The
replay then reads each task's final history record (``GET /v1/tasks`` paged, one
call a second) and writes records in the simulator's schema
(:class:`scheduler.record.TaskRecord`), in workload time, plus a timeline
sampled from ``GET /v1/cluster`` (every ``sample_s`` wall seconds; 0 leaves it empty).

Task ids get a per-run prefix (``<run_tag>-<workload id>``) so that a second replay
is not answered with the first one's records (``POST /v1/tasks`` is idempotent per
id); the records keep the workload ids, as the simulator's do. The router emulates
task work at its own ``time_compression`` (router config); give the replay the same
value (``make demo`` does) or measured latencies and arrivals are on different clocks.
"""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from cluster.topology import ClusterSpec
from cluster.vocabulary import FINAL
from scheduler.objective import Objective
from scheduler.record import RECORD_COLUMNS, TaskRecord
from scheduler.task import Task


class RouterUnavailable(RuntimeError):
    """The router named by ``--router`` does not answer (or answers with a server error)."""


def http(method: str, url: str, body: Any = None, timeout: float = 30.0, key: str | None = None) -> tuple[int, Any]:
    """(status, parsed JSON body) of one call, sent with the API ``key`` if given; HTTP errors are
    returned, connection errors raised."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else None
        except ValueError:
            return e.code, raw.decode(errors="replace")


def check_router(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The router's ``GET /v1/policy`` answer; :class:`RouterUnavailable` naming ``--router`` if it is down."""
    try:
        code, health = http("GET", f"{url}/healthz", timeout=timeout)
        if code == 200:
            code, pol = http("GET", f"{url}/v1/policy", timeout=timeout)
            if code == 200 and isinstance(pol, dict):
                return pol
        raise RouterUnavailable(f"--router {url}: the router answered {code} to GET /healthz or /v1/policy; "
                                "is this the placement router?")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RouterUnavailable(f"--router {url}: the router is not answering ({reason}); start it with "
                                "`orchestrator serve up` (or `make demo`)") from None


def task_body(task: Task, task_id: str, real_work: Mapping[str, dict] | None = None) -> dict[str, Any]:
    """``POST /v1/tasks`` body of a workload task: every field explicit, so nothing is inferred;
    with the ``entry_point`` and ``args`` of its kind when ``real_work`` (by kind) names them."""
    body: dict[str, Any] = {"id": task_id, "kind": task.kind, "priority": int(task.priority),
                            "slo_ms": float(task.slo_ms), "cpu_milli": int(task.cpu_milli),
                            "mem_mib": int(task.mem_mib), "gpu_milli": int(task.gpu_milli),
                            "gpu_count": int(task.gpu_count), "work": float(task.work),
                            "cost_sensitivity": int(task.cost_sensitivity)}
    if task.mig_profile:
        body["mig_profile"] = task.mig_profile
    if task.gpu_models:
        body["gpu_models"] = list(task.gpu_models)
    if task.description:
        body["description"] = task.description[:2000]
    if real_work and task.kind in real_work:
        body.update(real_work[task.kind])
    return body


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        d = body.get("detail", body)
        if isinstance(d, list):
            return "; ".join(f"{'.'.join(map(str, x.get('loc', [])))}: {x.get('msg')}" for x in d
                             if isinstance(x, dict)) or str(d)
        return str(d)
    return str(body)


def _post(url: str, body: dict[str, Any], key: str | None, retries: int = 3) -> tuple[int, Any]:
    """POST one task; connection errors are retried with the same id (the router is idempotent per id)."""
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            return http("POST", f"{url}/v1/tasks", body, timeout=60.0, key=key)
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(0.5 * (attempt + 1))
    return 0, f"the router did not answer POST /v1/tasks: {last}"


def record_of(task: Task, row: dict[str, Any] | None, label: str, objective: Objective,
              fallback_reason: str = "", end: float | None = None) -> TaskRecord:
    """One record (simulator schema, workload time) from the router's history row of ``task``.

    A task the router accepted but had not finished when the replay stopped waiting (at
    workload time ``end``) is ``unfinished``: a miss charged its waiting so far, as in the
    simulator (:meth:`Objective.unfinished_score`).
    """
    if row is not None and row.get("status") not in FINAL and end is not None and not fallback_reason:
        return TaskRecord.unfinished(task, label, f"still {row.get('status')} when the replay stopped waiting",
                                     max(end, task.arrival), objective, queued=False, **_where(row))
    if row is None or row.get("status") not in FINAL:
        status = "failed" if row is not None else "rejected"
        reason = fallback_reason or (f"still {row.get('status')} when the replay stopped waiting"
                                     if row is not None else "not accepted by the router")
        return TaskRecord.not_succeeded(task, label, status, reason, **_where(row or {}))
    decision = row.get("decision") if isinstance(row.get("decision"), dict) else {}
    queued = bool(decision.get("queued", False))
    status = row["status"]
    lat = row.get("latency_ms")
    if status != "succeeded" or lat is None:
        return TaskRecord.not_succeeded(task, label, status, row.get("reason") or "", queued=queued, **_where(row))
    return TaskRecord.measured(task, label, reason=row.get("reason") or "", queued=queued,
                               queue_ms=float(row.get("queue_ms") or 0.0), network_ms=_num(row.get("network_ms")),
                               exec_ms=_num(row.get("exec_ms")), latency_ms=float(lat),
                               cost=float(row.get("cost") or 0.0), objective=objective, **_where(row))


def _where(row: dict[str, Any]) -> dict[str, str]:
    """Node, pool, tier and share of a history row, "" for each it has not got."""
    return {k: row.get(k) or "" for k in ("node", "pool", "tier", "share")}


def _num(v: Any) -> float:
    return float(v) if v is not None else np.nan


class _Sampler(threading.Thread):
    """Samples ``GET /v1/cluster`` about once a (wall) second into timeline rows, in workload time."""

    def __init__(self, url: str, pools: Sequence[str], origin: float, compression: float,
                 every_s: float = 1.0) -> None:
        super().__init__(daemon=True, name="replay-timeline")
        self.url, self.pools, self.origin, self.compression = url, list(pools), origin, compression
        self.every_s = every_s
        self.rows: list[tuple] = []
        self.t0 = time.time()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                code, body = http("GET", f"{self.url}/v1/cluster", timeout=5.0)
            except (urllib.error.URLError, OSError, ValueError):
                code, body = 0, None
            if code == 200 and isinstance(body, dict):
                nodes = body.get("nodes", [])
                util = []
                for p in self.pools:
                    loads = [float(n.get("load", 0.0)) for n in nodes if n.get("pool") == p]
                    util.append(float(np.mean(loads)) if loads else np.nan)
                t = self.origin + (time.time() - self.t0) * self.compression
                self.rows.append((t, *util, np.nan, np.nan, int(sum(n.get("queued", 0) for n in nodes)),
                                  int(sum(n.get("running", 0) for n in nodes))))
            self.stop.wait(self.every_s)


def replay_via_router(spec: ClusterSpec, tasks: Sequence[Task], url: str, *, label: str,
                      time_compression: float = 1.0, objective: Objective | None = None,
                      run_tag: str | None = None, wait_s: float = 600.0, progress: bool = True,
                      warmup: int = 0, sample_s: float = 1.0, api_key: str | None = None,
                      real_work: Mapping[str, dict] | None = None):
    """POST ``tasks`` to the router at their (compressed) arrival times, with ``api_key``; return a ReplayResult.

    ``real_work``: per task kind, the ``entry_point`` and ``args`` its tasks run
    (:meth:`simulations.workloads.WorkloadSpec.real_work`); the other kinds are emulated.

    ``warmup`` > 0 first sends that many of the first tasks at once (ids
    ``<run_tag>-warmup-<id>``, not recorded) and waits for them: the router's Ray
    workers start then, not in the measured run (the direct replay warms workers too).
    """
    from tqdm import tqdm

    from simulations.metrics import summarize
    from replays.results import TIMELINE_COLUMNS_EXTRA, ReplayResult

    objective = objective or Objective()
    url = url.rstrip("/")
    tasks = list(tasks)
    run_tag = run_tag or time.strftime("r%Y%m%d%H%M%S")
    ids = [f"{run_tag}-{t.id}" for t in tasks]
    origin = tasks[0].arrival if tasks else 0.0
    warm_s = (warm_up(url, tasks[:warmup], f"{run_tag}-warmup", progress=progress, key=api_key, real_work=real_work)
              if warmup and tasks else 0.0)
    accepted_since = time.time() - 1.0
    sampler = _Sampler(url, spec.pools, origin, time_compression, sample_s)
    if sample_s > 0:
        sampler.start()
    answers: list[Future] = []
    bar = tqdm(total=len(tasks), unit="task", desc=f"replay via router ({label})", disable=not progress)
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=16, thread_name_prefix="replay-post") as pool:
        for task, tid in zip(tasks, ids):
            delay = t0 + (task.arrival - origin) / time_compression - time.time()
            if delay > 0:
                time.sleep(delay)
            answers.append(pool.submit(_post, url, task_body(task, tid, real_work), api_key))
        posted = [f.result() for f in answers]
    rows: dict[str, dict] = {}
    refused: dict[str, str] = {}
    for tid, (code, body) in zip(ids, posted):
        if code in (200, 202) and isinstance(body, dict):
            if body.get("status") in FINAL:
                rows[tid] = body
        else:
            refused[tid] = f"router answered {code}: {_detail(body)}"[:500]
    pending = {tid for tid in ids if tid not in rows and tid not in refused}
    bar.update(len(ids) - len(pending))
    deadline = time.time() + wait_s
    while pending and time.time() < deadline:
        found = _history_since(url, accepted_since)
        if len(pending) <= 32:  # the last few one by one too (robust to a router clock that differs)
            found += [r for r in (_one(url, tid) for tid in pending) if r is not None]
        for row in found:
            tid = row.get("task_id")
            if tid in pending and row.get("status") in FINAL:
                rows[tid] = row
                pending.discard(tid)
                bar.update(1)
        if pending:
            time.sleep(1.0)
    for tid in list(pending):  # last look: keep what the router knows of the unfinished ones
        row = _one(url, tid)
        if row is not None:
            rows[tid] = row
    bar.close()
    wall = time.time() - t0
    end = origin + wall * time_compression  # workload time when the replay stopped waiting
    sampler.stop.set()
    if sample_s > 0:
        sampler.join(timeout=5)
    records = pd.DataFrame.from_records(
        [record_of(t, rows.get(tid), label, objective, refused.get(tid, ""), end) for t, tid in zip(tasks, ids)],
        columns=RECORD_COLUMNS)
    timeline = pd.DataFrame.from_records(sampler.rows, columns=["time", *[f"util_{p}" for p in spec.pools],
                                                                *TIMELINE_COLUMNS_EXTRA])
    summary = summarize(records, timeline, spec.pools)
    return ReplayResult(records, timeline, summary, wall_s=wall, warm_s=warm_s)


def _one(url: str, tid: str) -> dict | None:
    """``GET /v1/tasks/{id}``, or None when it fails."""
    try:
        code, row = http("GET", f"{url}/v1/tasks/{urllib.parse.quote(tid)}", timeout=10.0)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return row if code == 200 and isinstance(row, dict) else None


def warm_up(url: str, tasks: Sequence[Task], prefix: str, timeout_s: float = 180.0,
            progress: bool = True, key: str | None = None, real_work: Mapping[str, dict] | None = None) -> float:
    """Send ``tasks`` at once with ``?wait=true`` and wait for them; returns the seconds it took."""
    t0 = time.time()
    if progress:
        print(f"warm-up: {len(tasks)} tasks at once through the router (ids {prefix}-<id>, not recorded)",
              flush=True)

    def one(task: Task) -> None:
        body = task_body(task, f"{prefix}-{task.id}", real_work)
        for attempt in range(3):  # a dropped connection is retried with the same id, as _post does
            try:
                http("POST", f"{url}/v1/tasks?wait=true&timeout_s={timeout_s:g}", body, timeout=timeout_s + 30,
                     key=key)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5 * (attempt + 1))
            except ValueError:  # an answer that is not JSON: the warm-up is best effort
                return

    with ThreadPoolExecutor(max_workers=min(32, len(tasks)), thread_name_prefix="replay-warm") as pool:
        list(pool.map(one, tasks))
    if progress:
        print(f"warm-up done in {time.time() - t0:.1f} s", flush=True)
    return time.time() - t0


def _history_since(url: str, since: float, page: int = 1000) -> list[dict]:
    """Every history row accepted at or after ``since`` (paged ``GET /v1/tasks``)."""
    out: list[dict] = []
    offset = 0
    while True:
        q = urllib.parse.urlencode({"since": f"{since:.3f}", "limit": page, "offset": offset})
        try:
            code, body = http("GET", f"{url}/v1/tasks?{q}", timeout=30.0)
        except (urllib.error.URLError, OSError, ValueError):
            return out
        if code != 200 or not isinstance(body, dict):
            return out
        out += body.get("items", [])
        nxt = body.get("next_offset")
        if not nxt:
            return out
        offset = nxt
