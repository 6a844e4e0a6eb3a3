"""The router's work, free of HTTP: decide, accept and run tasks, record them, report.

One :class:`RouterService` per router process owns the live cluster state, the
executor (the one writer of the placement bookkeeping), the active policy and
the task history; the HTTP layer (:mod:`serve_app.api`) only parses and answers.

A task sent to ``POST /v1/tasks`` goes: validated -> admissible (some usable node
could ever host it, else 409 or 503 and nothing is recorded) -> *accepted*
(committed to the history before any answer, so an acknowledged task survives a
router crash) -> decided and handed to the executor in one critical section ->
``placed`` (waiting in the node's queue) or ``running`` -> ``succeeded`` or
``failed`` with the reason, from the executor's completion thread. (A task that
waited shows ``placed`` until it ends, its ``queue_ms`` saying how long: the
executor reports no start event yet.)

A router that starts finds the tasks a previous one accepted but did not finish
and runs them again through the current policy (at-least-once execution), up to
``max_retries`` attempts, else ends them ``failed`` with the reason.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator, Sequence

import orjson

from cluster.executor import Executor, warm_workers
from cluster.live_state import LiveState, RayNode
from cluster.ray_backend import Backend
from cluster.state import ClusterState
from cluster.alibaba import load_cluster_any
from cluster.topology import with_standby
from cluster.vocabulary import FINAL, STATUSES, share_text
from scheduler.estimate import expected_parts
from scheduler.features import feature_vector
from serve_app.history import HistoryStore, open_store
from serve_app.history_schema import TASK_EXTRA_KEYS, WORK_KEYS
from serve_app.retention import Retention
from scheduler.model_registry import REGISTRY_ENV
from scheduler.objective import load_objective
from scheduler.policies.auto import shutdown_background
from scheduler.policy import Decision, FeasibilityCache, select_many, why_infeasible
from scheduler.task import Task, TaskError, make_task, task_key, with_id
from serve_app.admission import Admission, Limits
from serve_app.capacity_views import CapacityViews
from serve_app.auth import Principal
from serve_app.config import RouterConfig
from serve_app.entry_points import EntryPointRefused, EntryPoints, stored_result
from serve_app.keys import KeyStore
from serve_app.errors import ApiError, field_error, task_error
from serve_app.guard import Limits as GuardLimits
from serve_app.liveness import NodeWatcher
from serve_app.metrics import RouterMetrics
from serve_app.plan import book
from serve_app.promotion import PromotionGuard, PromotionRefused, Watch
from scheduler.policies.pool import PoolPolicy
from serve_app.policies import ActivePolicy, PolicyHolder, build_policy, learned_versions
from serve_app.views import decision_view, finite, record_view, result_fields

log = logging.getLogger("serve_app")

#: decisions per hold of the live-state lock in a batch, so the executor's completion
#: thread is never kept waiting for a whole large batch (256 distinct tasks: about 2 ms
#: in process; 128 held half as long but cost fastest-feasible 15% more per task, its
#: tasks split into twice as many scoring groups)
LOCK_CHUNK = 256
#: distinct validated task bodies kept (see :meth:`RouterService.parse_task`)
TEMPLATE_CACHE = 4096
#: bulky columns left out of task listings (``GET /v1/tasks/{id}`` has them)
_LIST_OMITS = ("features", "decision", "result")
#: a task's stored ``python_call``: its function came through the Python API (a Serve handle) and
#: lives only in the router process that took it, so a restarted router cannot run it again
PYTHON_CALL = "a function sent through the Python API (orchestrator.work)"
#: how often the router looks for tasks past their deadline
DEADLINE_CHECK_S = 0.5


class RouterService:
    """Decisions, task runs, history and metrics of one router process."""

    def __init__(self, cfg: RouterConfig, *, metrics: RouterMetrics | None = None,
                 reader: Callable[..., list[RayNode]] | None = None, history: HistoryStore | None = None,
                 backend: Backend | None = None) -> None:
        self.cfg = cfg
        if cfg.registry:
            os.environ[REGISTRY_ENV] = cfg.registry  # learned policies resolve "latest" here
        # with a slot per node each pool may scale into (``scaling``): capacity apply starts and drains them
        self.spec = with_standby(load_cluster_any(cfg.cluster_path()))
        self._static = ClusterState.from_spec(self.spec)  # the full topology, for "could it ever fit"
        self._hosts = FeasibilityCache()  # of _static, which never changes
        # In a replica the node list is read by a background thread, never on the request path
        # (serve_app.liveness); tests hand in their own reader.
        self.watcher = NodeWatcher(period_s=cfg.refresh_s) if reader is None else None
        self.live = LiveState(self.spec, refresh_s=cfg.refresh_s,
                              reader=reader if reader is not None else self.watcher.reader)
        self.executor = Executor(self.live, time_compression=cfg.time_compression, kernel=cfg.kernel,
                                 max_retries=cfg.max_retries, seed=cfg.seed, backend=backend)
        self.history = history if history is not None else open_store(
            cfg.history_path_url(), synchronous=cfg.history_synchronous,  # type: ignore[arg-type]
            retention=Retention(max_age_s=cfg.history_max_age_s, max_rows=cfg.history_max_rows))
        self.keys = KeyStore(cfg.history_path_url())
        self.capacity = CapacityViews(self.history, cfg.capacity_dir, cache_s=cfg.capacity_cache_s,
                                      max_rows=cfg.capacity_max_rows)
        self.policies = PolicyHolder(build_policy(cfg.policy, seed=cfg.seed, registry=cfg.registry))
        #: a challenger that decides every task too and is never acted on (``shadow_policy``; PUT /v1/shadow)
        self.shadow: ActivePolicy | None = (build_policy(cfg.shadow_policy, seed=cfg.seed, registry=cfg.registry)
                                            if cfg.shadow_policy else None)
        self.promotions: PromotionGuard[ActivePolicy] = PromotionGuard(cfg.promotion_window, cfg.promotion_margin)
        self.metrics = metrics if metrics is not None else RouterMetrics()
        self.admission = Admission(Limits(
            rate_per_s=cfg.rate_per_s, burst=cfg.burst, key_max_in_flight=cfg.key_max_in_flight,
            max_in_flight=cfg.max_in_flight, anonymous_rate_per_s=cfg.anonymous_rate_per_s,
            anonymous_burst=cfg.anonymous_burst, pool_max_queued=cfg.pool_max_queued,
            pool_max_queued_s=cfg.pool_max_queued_s), on_refuse=self.metrics.refused)
        self.objective = load_objective()
        self.guard_limits = GuardLimits(cfg.max_body_bytes, cfg.max_header_bytes, cfg.body_timeout_s,
                                        cfg.client_max_requests, frozenset(cfg.front_peers))
        self.pools = tuple(self.spec.pools)
        self.entry_points = EntryPoints(cfg.entry_points, "router args")
        self._pool_policies: dict[tuple[str | frozenset[str], str], tuple[ActivePolicy, PoolPolicy]] = {}
        self._templates: dict[tuple, Task] = {}
        self._claims: set[str] = set()
        self._claims_lock = threading.Lock()
        self._cancelled: set[str] = set()  # accepted, cancelled before they reached the executor
        self._final_writes: dict[str, Future] = {}  # :meth:`final_write`
        self._deadlines: list[tuple[float, str]] = []  # heap of (deadline, task id)
        self._deadline_of: dict[str, float] = {}  # the tasks in the heap not yet ended
        self._deadline_lock = threading.Lock()
        self._deadline_thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.started_at = time.time()
        self.resumed = 0

    # ------------------------------------------------------------------ input
    def parse_task(self, data: dict[str, Any], prefix: Sequence[str | int] = ("body",),
                   work: bool = False) -> tuple[Task, str | None]:
        """A validated task and its pool restriction; a bad field raises a 422 naming it. ``work``:
        the caller runs the task (its ``entry_point`` and ``args`` were taken by :meth:`real_work`);
        a decision alone refuses them, as it would run nothing.

        Validation (and inference from the description) runs once per distinct task
        body: requests repeat a few shapes, and :func:`make_task` is deterministic.
        """
        data = dict(data)  # the fields given (``TaskIn.fields()``: no None values); the caller's stays whole
        pool = data.pop("pool", None)
        for key in ("entry_point", "args"):  # the work the task runs (see :meth:`real_work`), not its shape
            if data.pop(key, None) is not None and not work:
                raise field_error(key, "a decision runs nothing: send real work to POST /v1/tasks", prefix=prefix)
        data.pop("deadline_s", None)  # the request's, not the task's (see :meth:`begin_accept`)
        if pool is not None and pool not in self.pools:
            raise field_error("pool", f"unknown pool {pool!r} (known: {', '.join(self.pools)})", prefix=prefix)
        tid = data.pop("id", None) or new_task_id()
        try:
            key = tuple(data.items())
            hash(key)
        except TypeError:  # a list value (gpu_models)
            key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in data.items())
        template = self._templates.get(key)
        if template is not None:
            return with_id(template, tid), pool
        data["id"] = tid  # after the key: the body's fields, whatever its id
        try:
            task = make_task(data)
        except TaskError as exc:
            raise task_error(exc, prefix) from None
        if len(self._templates) >= TEMPLATE_CACHE:
            self._templates.clear()
        self._templates[key] = task  # its id does not matter: a repeat gets a copy under its own
        return task, pool

    def real_work(self, data: dict[str, Any]) -> tuple[dict[str, Any], Callable[[], Any] | None]:
        """A task body's real work: (what its record stores, the call its node makes), or ({}, None)
        for emulated work. An entry point not on the allow-list is a 403, bad ``args`` a 422."""
        name, args = data.get("entry_point"), data.get("args")
        if name is None:
            if args is not None:
                raise field_error("args", "args without an entry_point: name the function they are for")
            return {}, None
        try:
            args, call = self.entry_points.prepare(name, args)
        except EntryPointRefused as exc:
            raise field_error(exc.field, str(exc), status=403 if exc.field == "entry_point" else 422) from None
        return {"entry_point": name, "args": args}, call

    # ------------------------------------------------------------------ decisions
    def _policy_for(self, active: ActivePolicy, pool: str | frozenset[str] | None, role: str = "champion"):
        """``active``'s policy restricted to ``pool`` (kept per pool and role: the shadow's beside the champion's)."""
        if pool is None:
            return active.policy
        hit = self._pool_policies.get((pool, role))
        if hit is None or hit[0] is not active:
            hit = (active, PoolPolicy(active.policy, pool))
            self._pool_policies[(pool, role)] = hit
        return hit[1]

    def _shadow_view(self, shadow: ActivePolicy, task: Task, state: ClusterState, where: str | frozenset[str] | None,
                     d: Decision) -> dict[str, Any]:
        """What the shadow policy would have done with ``task`` on the state the champion decided on (never
        acted on): its choice, whether it agrees, its decision time, and the model's expected outcome of
        its choice, beside the champion's (``expected`` in the decision view), as a counterfactual."""
        t0 = time.perf_counter()
        try:
            sd = self._policy_for(shadow, where, "shadow").select(task, state)
            ms = (time.perf_counter() - t0) * 1000.0
            agrees = sd.placed == d.placed and (not d.placed or (sd.node == d.node and sd.share == d.share))
            out: dict[str, Any] = {"policy": shadow.name, "placed": sd.placed, "agrees": agrees,
                                   "decision_ms": round(ms, 4)}
            if sd.placed:
                out.update(node=self.spec.nodes[sd.node].name, share=share_text(sd.share),
                           expected=self._expected(task, state, sd.node, sd.share))
        except Exception as exc:  # noqa: BLE001 - a challenger's bug must never decide a task's fate
            log.exception("shadow policy %s failed on task %s", shadow.name, task.id)
            self.metrics.shadow(shadow.name, None, (time.perf_counter() - t0) * 1000.0)
            return {"policy": shadow.name, "error": f"{type(exc).__name__}: {exc}"[:300]}
        self.metrics.shadow(shadow.name, agrees, ms)
        return out

    def _expected(self, task: Task, state: ClusterState, i: int, share: Any) -> dict[str, float]:
        """The model's expected outcome of ``task`` on node ``i`` now, with its objective score."""
        e = expected_parts(task, state, i, share)
        e["score"] = self.objective.score(e["latency_ms"], task.slo_ms, task.priority, e["cost"], task.cost_sensitivity)
        return e

    def decide(self, items: Sequence[tuple[Task, str | None]], *, plan: bool = False,
               endpoint: str = "route") -> list[dict[str, Any]]:
        """Decisions for ``items`` in order (see :class:`serve_app.models.BatchIn` for ``plan``).

        Nothing is run or reserved; an unplaced decision carries ``status`` 409 or 503.

        Without ``plan`` every task of a lock hold is decided against the same state, so a
        policy marked ``pure`` (its decision a function of the task and the state alone)
        decides each distinct task body once per hold and its repeats share that decision
        (a workload's tasks come in a few shapes), and distinct tasks that share their
        candidate nodes are scored together (:meth:`_decide_together`). Stateful or random
        policies decide each task in turn.
        """
        active = self.policies.active
        done: list[tuple[Task, str | None, Decision, float, bool]] = []
        scratch: ClusterState | None = None
        clock = time.perf_counter
        pure = not plan and getattr(active.policy, "pure", False)
        for start in range(0, len(items), LOCK_CHUNK):
            chunk = items[start:start + LOCK_CHUNK]
            with self.live.lock:
                state = self.live.snapshot()
                if pure:
                    done += self._waits(self._decide_together(active, chunk, state), state)
                    continue
                if plan:
                    scratch = scratch if scratch is not None else state.copy()
                    state = scratch
                for task, pool in chunk:
                    t0 = clock()
                    d = self._policy_for(active, pool).select(task, state)
                    ms = (clock() - t0) * 1000.0
                    waits = _waits_behind_queue(d, state)
                    if plan:
                        book(state, task, d)
                    done.append((task, pool, d, ms, waits))
        views, pools = [], Counter()
        built: dict[int, dict[str, Any]] = {}  # a shared decision's view, copied per task
        for task, pool, d, ms, waits in done:
            base = built.get(id(d))
            if base is None:
                v = decision_view(d, task, self.spec, ms, active.name, active.version)
                if not d.placed:
                    v["status"], v["explanation"] = self.unplaced(task, pool, d)
                if waits:
                    v["queued"] = True
                built[id(d)] = v
            else:
                v = {**base, "task_id": task.id, "decision_ms": round(ms, 4)}
            pools[v.get("pool") or "none"] += 1
            views.append(v)
        self.metrics.decisions(active.name, endpoint, pools, [x[3] for x in done])
        return views

    @staticmethod
    def _waits(done: list[tuple[Task, str | None, Decision, float]],
               state: ClusterState) -> list[tuple[Task, str | None, Decision, float, bool]]:
        """Each decision with :func:`_waits_behind_queue`."""
        return [(t, p, d, ms, _waits_behind_queue(d, state)) for t, p, d, ms in done]

    def _decide_together(self, active: ActivePolicy, chunk: Sequence[tuple[Task, str | None]],
                         state: ClusterState) -> list[tuple[Task, str | None, Decision, float]]:
        """A pure policy's decisions for ``chunk``, all against ``state``: each distinct task body once,
        through :func:`scheduler.policy.select_many` per pool (one matrix per group of tasks sharing
        their candidates); repeats share the decision. Each task is charged the chunk's policy time
        split evenly."""
        t0 = time.perf_counter()
        slot: dict[tuple, int] = {}
        by_pool: dict[str | None, list[Task]] = {}
        where: list[tuple[str | None, int]] = []
        for task, pool in chunk:
            key = (pool, task_key(task))
            k = slot.get(key)
            if k is None:
                group = by_pool.setdefault(pool, [])
                k = slot[key] = len(group)
                group.append(task)
            where.append((pool, k))
        decided = {pool: select_many(self._policy_for(active, pool), tasks, state) for pool, tasks in by_pool.items()}
        ms = (time.perf_counter() - t0) * 1000.0 / len(chunk)
        return [(task, pool, decided[pool][k], ms) for (task, _), (pool, k) in zip(chunk, where)]

    def hosts(self, task: Task, pool: str | None) -> list[int]:
        """Nodes of the topology (dead or alive) that could ever host ``task`` (cached per task shape:
        every accepted task asks, and a trace cluster has a thousand nodes)."""
        nodes = self._hosts.shape(task, self._static).node_list
        if pool is None:
            return nodes
        return [i for i in nodes if self.spec.nodes[i].pool == pool]

    def unplaced(self, task: Task, pool: str | None, d: Decision | None = None) -> tuple[int, str]:
        """Why nothing can take ``task``: (409, never fits) or (503, its hosts are down)."""
        hosts = self.hosts(task, pool)
        where = f" in pool {pool}" if pool else ""
        if not hosts:
            return 409, why_infeasible(task, self._static) + where
        down = [i for i in hosts if not self.live.usable[i]]
        if down:
            names = ", ".join(f"{self.spec.nodes[i].name} ({self.live.problems[i] or 'not usable'})" for i in down)
            if len(down) == len(hosts):
                return 503, f"every node that could host it{where} is down, draining or not started: {names}; retry later"
        return 503, (d.explanation if d is not None else "no usable node") + "; retry later"

    def admit(self, task: Task, pool: str | None) -> None:
        """Raise 409 if no node could ever host ``task``, 503 if all that could are down."""
        hosts = self.hosts(task, pool)
        if not hosts or not any(self.live.usable[i] for i in hosts):
            status, why = self.unplaced(task, pool)
            raise ApiError(status, why, headers={"Retry-After": "5"} if status == 503 else None,
                           extra={"task_id": task.id})

    # ------------------------------------------------------------------ tasks
    @contextmanager
    def claim(self, task_id: str) -> Iterator[None]:
        """Hold ``task_id`` for this request; a concurrent request with the same id gets 409."""
        with self._claims_lock:
            if task_id in self._claims:
                raise ApiError(409, "a request with this task id is in progress; retry to read its record",
                               loc=["body", "id"], type="conflict", headers={"Retry-After": "1"})
            self._claims.add(task_id)
        try:
            yield
        finally:
            with self._claims_lock:
                self._claims.discard(task_id)

    def record(self, task_id: str, events: bool = True) -> dict[str, Any] | None:
        row = self.history.get(task_id)
        if row is None:
            return None
        return record_view(row, self.history.events(task_id) if events else None)

    def begin_accept(self, task: Task, pool: str | None, who: Principal, deadline_s: float | None = None,
                     work: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, Future | None]:
        """Hand ``task`` to the history: (the earlier record, None) for a retried id (idempotent
        retry), else (None, a future done once the task is committed). One primary-key read of the history
        (tens of microseconds; WAL readers never wait for the writer), so the event loop may call it.

        A retried id must come from the same client with the same task, else 409 (a second
        task under a used id would otherwise be answered with the first one's record). A new
        task must pass admission (:mod:`serve_app.admission`: 429) and the router's bounds
        on ``work`` and ``deadline_s`` (422).

        The HTTP layer awaits the future instead of parking a thread on it, so all the
        requests waiting at a moment share one commit (a pool of threads each waiting for
        its own would cap the accepted rate at threads / commit time).

        ``work``: the real work the task stores (:meth:`real_work`; ``{"python_call": ...}`` for a
        function from the Python API), part of what a retry must repeat.
        """
        stored = {**task.to_dict(), "pool": pool, **(work or {})}
        row = self.history.get(task.id)
        if row is not None:
            self._same_task(row, stored, who)
            return record_view(row, self.history.events(task.id)), None
        if task.work > self.cfg.max_work_s:
            raise field_error("work", f"at most {self.cfg.max_work_s:g} s on this router, got {task.work:g}")
        deadline_s = self.cfg.default_deadline_s if deadline_s is None else deadline_s
        if deadline_s is not None and deadline_s > self.cfg.max_deadline_s:
            raise field_error("deadline_s", f"at most {self.cfg.max_deadline_s:g} s on this router, got {deadline_s:g}")
        self.admit(task, pool)
        self.admission.check_pools({self.spec.nodes[i].pool for i in self.hosts(task, pool)},
                                   self.executor.queued_by_pool())
        self.admission.enter(who)
        now = time.time()
        stored["owner"] = who.name
        if deadline_s is not None:
            stored["deadline_at"] = now + deadline_s
        active = self.policies.active
        try:
            committed = self.history.accept_later(task.id, stored, policy=active.name, accepted_at=now,
                                                  policy_version=_text(active.version), priority=task.priority,
                                                  slo_ms=task.slo_ms, kind=task.kind)
        except Exception:
            self.admission.leave(who.name)
            raise
        committed.add_done_callback(partial(self._counted, active.name, who.name, stored.get("deadline_at"), task.id))
        return None, committed

    @staticmethod
    def _same_task(row: dict[str, Any], stored: dict[str, Any], who: Principal) -> None:
        """409 unless a retried id comes from the task's owner (or the admin) with the same task."""
        old = row.get("task") or {}
        owner = old.get("owner")
        if not who.admin and owner is not None and owner != who.name:
            raise ApiError(409, f"task id {row['task_id']!r} is taken by another client; choose another id",
                           loc=["body", "id"], type="conflict")
        new = orjson.loads(orjson.dumps(stored))
        # the real work keys too when the retry has none: dropping them would be another task
        differ = sorted(k for k in set(new) | set(WORK_KEYS) if k != "inferred" and old.get(k) != new.get(k))
        if differ:
            raise ApiError(409, f"task id {row['task_id']!r} was used for a different task (it differs in "
                                f"{', '.join(differ)}); a retry must resend the same body, a new task needs a new id",
                           loc=["body", "id"], type="conflict")

    def _counted(self, policy: str, owner: str, deadline_at: float | None, task_id: str, committed: Future) -> None:
        if committed.exception() is None:
            self.metrics.accepted(policy)
            if deadline_at is not None:
                self._watch_deadline(deadline_at, task_id)
        else:
            self.admission.leave(owner)

    def start(self, task: Task, pool: str | None, *, owner: str, attempts_before: int = 0,
              note: str | None = None, call: Callable[[], Any] | None = None
              ) -> tuple[dict[str, Any], Future | None, int]:
        """Decide and hand an accepted task to the executor: (decision view, future, HTTP status).

        ``owner`` (the client) is counted in flight (:meth:`Admission.enter` or ``restore``) until
        the task ends here or in :meth:`_finished`. ``call``: the function its node runs instead of
        the emulated work (:meth:`real_work`)."""
        handed: list[bool] = []  # set once the executor has the task (and its callback the seat)
        try:
            out = self._start(task, pool, attempts_before, note, owner, handed, call)
        except Exception as exc:  # a router bug must not leave an accepted task unfinished
            why = f"router error while placing: {exc!r}"[:500]
            if handed:  # still running: stop it (its callback gives the seat back, now or when it ended)
                with self.live.lock:
                    self.executor.withdraw(task.id, why)
                self.executor.flush()
            else:
                self.admission.leave(owner)
            self.history.update(task.id, "failed", durable=True, reason=why)
            raise
        if out[1] is None:
            self.admission.leave(owner)
        return out

    def _start(self, task: Task, pool: str | None, attempts_before: int, note: str | None,
               owner: str, handed: list[bool], call: Callable[[], Any] | None
               ) -> tuple[dict[str, Any], Future | None, int]:
        active = self.policies.active
        clock = time.perf_counter
        with self.live.lock:
            where = self._with_room(task, pool)
            pol = self._policy_for(active, where)
            if task.id in self._cancelled:  # cancelled between its commit and now: its record says so
                self._cancelled.discard(task.id)
                return {"task_id": task.id, "placed": False, "explanation": "cancelled before it was placed",
                        "status": 409, "policy": active.name}, None, 409
            state = self.live.snapshot()
            t0 = clock()
            d = pol.select(task, state)
            ms = (clock() - t0) * 1000.0
            fut = None
            view = decision_view(d, task, self.spec, ms, active.name, active.version)
            shadow = self.shadow  # read once: PUT /v1/shadow may replace it meanwhile
            if shadow is not None:
                view["shadow"] = self._shadow_view(shadow, task, state, where, d)
            common = {"policy": active.name, "policy_version": _text(active.version), "decision": view,
                      "decision_ms": ms}
            if d.placed:
                x = feature_vector(task, state)
                view["expected"] = self._expected(task, state, d.node, d.share)  # before it is booked
                # booked on the state it was decided on; started, or in the node's FIFO queue
                fut, waiting = self.executor.admit(task, d, policy=pol, fn=call)
                handed.append(True)
                # Both under the lock, so neither a completion nor a cancel (each takes the lock)
                # comes first: the callback gives the seat back whatever fails next, and the
                # placed/running record (a queue put) is written before any final status. Added
                # before any waiter's callback, so the final write is queued before a waiter wakes.
                fut.add_done_callback(partial(self._finished, task, attempts_before, owner, active.name))
                view["queued"] = waiting
                self.history.update(task.id, "placed" if waiting else "running", reason=note, node=view["node"],
                                    pool=view["pool"], tier=view["tier"], share=share_text(d.share),
                                    confidence=finite(d.confidence), features=x, **common)
        self.executor.flush()  # Ray submission, outside the lock the completion thread needs
        self.metrics.decisions(active.name, "tasks", {view.get("pool") or "none": 1}, [ms])
        if fut is None:
            status, why = self.unplaced(task, pool, d)
            view["status"], view["explanation"] = status, why
            self.history.update(task.id, "rejected", durable=True, reason=why, attempts=attempts_before, **common)
            self.metrics.finished(None, "rejected", None, None, task.priority, None)
            return view, None, status
        self.metrics.in_flight(self.executor.in_flight)
        return view, fut, 202

    def _with_room(self, task: Task, pool: str | None) -> str | frozenset[str] | None:
        """Where a task may go: the pools that could host it (within ``pool``), less those whose
        queues are over the admission bound, unless that leaves nothing (then as asked:
        admission let it in, or a restart resumes it)."""
        full = self.admission.full_pools(self.executor.queued_by_pool())
        if not full:
            return pool
        hosting = frozenset(self.spec.nodes[i].pool for i in self.hosts(task, pool))
        room = hosting - full
        if not room or room == hosting:  # every pool it could use is full, or none is
            return pool
        return room

    def _finished(self, task: Task, attempts_before: int, owner: str, policy: str, fut: Future) -> None:
        """Executor completion (its thread): final status, timings, cost, metrics; the SLO verdict of the
        policy that placed it, which may roll a promotion back."""
        self.admission.leave(owner)
        if self._deadline_of:
            with self._deadline_lock:
                self._deadline_of.pop(task.id, None)
        try:
            res = fut.result()
            status, fields = self._final(task, res, attempts_before)
            write = self.history.update_later(task.id, status, **fields)
            self._final_writes[task.id] = write
            write.add_done_callback(lambda _: self._final_writes.pop(task.id, None))  # its failure: the writer's log
            self.metrics.finished(fields.get("pool"), status, fields["latency_ms"], fields["cost"], task.priority,
                                  fields.get("slo_met"))
            self.metrics.in_flight(self.executor.in_flight)
            if status == "succeeded" and fields.get("slo_met") is not None:
                condemned = self.promotions.outcome(policy, not fields["slo_met"])
                if condemned is not None:
                    self._roll_back(condemned)
        except Exception:  # noqa: BLE001 - a callback must not die silently
            log.exception("recording the end of task %s failed", task.id)

    def final_write(self, task_id: str) -> Future | None:
        """The write of a task's final record while it is not yet committed (None after).

        Queued by :meth:`_finished`, which the executor's future calls before any waiter on that
        future wakes: an answer that awaits this one reads as the record will."""
        return self._final_writes.get(task_id)

    def _final(self, task: Task, res: Any, attempts_before: int) -> tuple[str, dict[str, Any]]:
        """Final status and history fields of an executor result.

        The executor answers ``rejected`` when a task whose node failed finds no other
        node; the task had been accepted and started, so it ends ``failed``, naming
        the node(s) it lost and why nothing else could take it.
        """
        fields = result_fields(res, task, self.objective)
        fields["attempts"] += attempts_before
        if res.value is not None:
            fields["result"] = _kept_result(res)
        status = res.status
        if status == "rejected":
            status = "failed"
            lost = ", ".join(res.nodes_tried) or "its node"
            fields["reason"] = f"lost {lost} (node down) and no other node can take it: {res.reason}"
        return status, fields

    def result_view(self, task: Task, decision: dict[str, Any], fut: Future) -> dict[str, Any]:
        """What ``?wait=true`` answers once the task ended (its record: :meth:`final_write`)."""
        status, fields = self._final(task, fut.result(), 0)
        return {"task_id": task.id, "status": status, **fields, "policy": decision["policy"], "decision": decision}

    def resume_unfinished(self) -> int:
        """Run again what a previous router accepted but did not finish; returns how many."""
        n = 0
        for row in self.history.unfinished():
            if (row.get("accepted_at") or 0.0) >= self.started_at:
                continue  # accepted by this router while it resumed: already running here
            tid = row["task_id"]
            stored = dict(row.get("task") or {})
            pool = stored.pop("pool", None)
            owner = stored.get("owner") or "admin"  # a record from before API keys
            deadline_at = stored.get("deadline_at")
            name, args, python_call = stored.get("entry_point"), stored.get("args"), stored.get("python_call")
            for key in TASK_EXTRA_KEYS:
                stored.pop(key, None)
            tried = int(row.get("attempts") or 0) + (row["status"] != "accepted")
            if deadline_at is not None and deadline_at <= time.time():
                self.history.update(tid, "cancelled", attempts=tried,
                                    reason="its deadline passed while the router was down; not run again")
                continue
            try:
                task = make_task(stored, infer=False)
                call = None if name is None else self.entry_points.prepare(name, args)[1]
            except (TaskError, EntryPointRefused) as exc:
                self.history.update(tid, "failed", reason=f"cannot resume after a router restart: {exc}")
                continue
            if python_call:
                self.history.update(tid, "failed", attempts=tried,
                                    reason=f"the router restarted while the task was {row['status']}; "
                                           f"{PYTHON_CALL} is not kept across restarts: submit it with a new id")
                self.metrics.finished(row.get("pool"), "failed", None, None, task.priority, None)
                continue
            if tried > self.cfg.max_retries:
                self.history.update(tid, "failed", attempts=tried,
                                    reason=f"the router restarted while the task was {row['status']}; "
                                           f"not run again after {tried} attempt(s)")
                self.metrics.finished(row.get("pool"), "failed", None, None, task.priority, None)
                continue
            self.admission.restore(owner)
            if deadline_at is not None:
                self._watch_deadline(deadline_at, tid)
            try:
                self.start(task, pool, owner=owner, attempts_before=tried, call=call,
                           note=f"resumed after a router restart (it was {row['status']})")
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the others
                log.exception("resuming task %s failed", tid)
                self.history.update(tid, "failed", reason=f"could not resume after a router restart: {exc}")
                continue
            n += 1
        self.resumed += n
        return n

    def cancel(self, task_id: str, who: Principal | None, reason: str | None = None) -> dict[str, Any]:
        """Cancel a queued or running task (its owner's or the admin's call; ``who`` None: the router
        itself, at a deadline): its booking is released at once and its record says ``cancelled``,
        durably before the answer, so a restarted router never runs it again.

        404 for an unknown task, 403 for another client's, 409 for one that has already ended.
        """
        row = self.history.get(task_id)
        if row is None:
            raise ApiError(404, f"no task {task_id!r} in the history")
        owner = (row.get("task") or {}).get("owner")
        if who is not None and not who.admin and owner != who.name:
            raise ApiError(403, f"task {task_id!r} belongs to another client; only its owner or the admin may "
                                "cancel it")
        by = "the router" if who is None else who.name
        why = reason or f"cancelled by {by}"
        with self.live.lock:  # one hold: :meth:`_start` either handed it over already, or will skip it
            found = self.executor.withdraw(task_id, why)
            if not found:
                self._cancelled.add(task_id)
        self.executor.flush()  # the Ray cancellation, outside the lock
        if not found:
            self.history.flush()  # an end the executor reported just now is in the history after this
            row = self.history.get(task_id) or row
            if row["status"] in FINAL:
                with self.live.lock:
                    self._cancelled.discard(task_id)
                raise ApiError(409, f"task {task_id!r} has already ended ({row['status']})", type="conflict",
                               extra={"status": row["status"]})
            self.history.update(task_id, "cancelled", reason=why)
        self.history.flush()  # durable before the answer: a restart must not resume it
        rec = self.record(task_id)
        assert rec is not None
        return rec

    def _watch_deadline(self, at: float, task_id: str) -> None:
        with self._deadline_lock:
            heapq.heappush(self._deadlines, (at, task_id))
            self._deadline_of[task_id] = at
            if self._deadline_thread is None:
                self._deadline_thread = threading.Thread(target=self._deadline_loop, name="router-deadlines",
                                                         daemon=True)
                self._deadline_thread.start()

    def _deadline_loop(self) -> None:
        """Cancel tasks whose deadline passed (those that ended before it are skipped)."""
        while not self._closing.wait(DEADLINE_CHECK_S):
            now = time.time()
            due = []
            with self._deadline_lock:
                while self._deadlines and self._deadlines[0][0] <= now:
                    at, tid = heapq.heappop(self._deadlines)
                    if self._deadline_of.get(tid) == at:  # not ended in time (an ended one left the map)
                        del self._deadline_of[tid]
                        due.append(tid)
            for tid in due:
                try:
                    self.cancel(tid, None, reason="its deadline passed")
                except ApiError:
                    pass  # it ended in time
                except Exception:  # noqa: BLE001 - one failure must not stop the deadlines of others
                    log.exception("cancelling task %s at its deadline failed", tid)

    def query(self, *, status: str | None, pool: str | None, policy: str | None, since: float | None,
              until: float | None, limit: int, offset: int) -> dict[str, Any]:
        if status is not None and status not in STATUSES:
            raise field_error("status", f"unknown status {status!r} (known: {', '.join(STATUSES)})",
                              prefix=("query",))
        filters = {"status": status, "pool": pool, "policy": policy, "since": since, "until": until}
        rows = self.history.query(**filters, limit=limit, offset=offset)
        total = self.history.count(**filters)
        nxt = offset + len(rows)
        return {"items": [record_view({k: v for k, v in r.items() if k not in _LIST_OMITS}) for r in rows],
                "total": total, "limit": limit, "offset": offset,
                "next_offset": nxt if nxt < total else None}

    # ------------------------------------------------------------------ cluster and policy
    def cluster(self) -> dict[str, Any]:
        nodes = []
        for v in self.live.nodes():
            d = {k: getattr(v, k) for k in ("name", "tier", "pool", "node_class", "alive", "usable", "node_id",
                                            "problem", "load", "running", "queued", "cpu_free_milli",
                                            "gpu_free_milli", "mig_free", "labels", "ray_total", "ray_available",
                                            "standby", "draining")}
            d["network_ms"] = list(v.network_ms)
            d["load"] = finite(d["load"]) or 0.0
            nodes.append(d)
        return {"cluster": self.spec.name, "nodes": nodes, "in_flight": self.executor.in_flight,
                "policy": self.policies.active.name, "time": time.time()}

    def policy_info(self) -> dict[str, Any]:
        from scheduler.policy import available_policies

        a = self.policies.active
        return {"policy": a.name, "version": a.version, "since": a.since, "available": available_policies(),
                "learned": learned_versions(self.cfg.registry), "shadow": self.shadow.name if self.shadow else None,
                "promotion": self.promotions.state()}

    def promote(self) -> dict[str, Any]:
        """Make the shadow policy the active one; the old champion decides in shadow while the new one is
        judged on its first tasks (:mod:`serve_app.promotion`). :class:`PromotionRefused` without a shadow,
        or without the old champion's verdicts to judge against."""
        challenger, old = self.shadow, self.policies.active
        if challenger is None:
            raise PromotionRefused("no challenger in shadow to promote: PUT /v1/shadow first, and let it decide")
        self.promotions.promote(old, old.name, challenger.name)
        self.policies.swap(challenger)
        self.shadow = old
        log.warning("promoted %s over %s (judged on its next %d succeeded tasks)", challenger.name, old.name,
                    self.promotions.window)
        return {**self.policy_info(), "previous": old.name}

    def _roll_back(self, watch: Watch[ActivePolicy]) -> None:
        """The promoted policy missed more SLOs than the champion it replaced: restore that one."""
        self.policies.swap(watch.old)
        if self.shadow is watch.old:
            self.shadow = None
        log.warning("rolled back %s to %s: %s", watch.new_name, watch.old_name, self.promotions.log[-1])

    def set_draining(self, names: list[str]) -> dict[str, Any]:
        """Drain exactly ``names`` (none: end every drain): no new placements there, their running tasks
        finish, their queued ones are re-placed (not counted as a retry); ``capacity apply`` stops a drained
        node once ``GET /v1/cluster`` shows it idle. An unknown name is a 422 naming it."""
        try:
            before = self.live.set_draining(names)
        except KeyError as exc:
            raise ApiError(422, f"no node {exc.args[0]} in this router's topology", loc=["body", "nodes"]) from None
        log.info("draining %s (before: %s)", sorted(names) or "nothing", before or "nothing")
        self.executor.replace_stranded()
        return {**self.cluster(), "previous_draining": before}

    def set_shadow(self, name: str | None, version: str | int | None = None) -> dict[str, Any]:
        """Run ``name`` in shadow from the next task on (None: stop); built fully before it replaces the old."""
        new = None if name is None else build_policy(name, version, seed=self.cfg.seed, registry=self.cfg.registry)
        old, self.shadow = self.shadow, new
        log.info("shadow policy %s -> %s", old.name if old else None, new.name if new else None)
        return {**self.policy_info(), "previous_shadow": old.name if old else None}

    def loop(self, hours: float) -> dict[str, Any]:
        """The learning loop for ``GET /v1/loop``: the reports in ``loop_dir``, the shadow's agreement over the
        last ``hours`` of the history, the champion, challenger and promotions (:mod:`serve_app.loop_views`)."""
        from serve_app.loop_views import LoopViews

        return LoopViews(self.history, self.cfg.loop_dir).document(self.policy_info(), hours)

    def set_policy(self, name: str, version: str | int | None) -> dict[str, Any]:
        """Build the new policy fully, then swap; requests in flight finish with the old one."""
        new = build_policy(name, version, seed=self.cfg.seed, registry=self.cfg.registry)
        old = self.policies.swap(new)
        log.info("policy switched from %s to %s", old.name, new.name)
        return {**self.policy_info(), "previous": old.name}

    def warm_up(self, per_node: int | None = None, timeout_s: float = 120.0) -> int:
        """Start Ray worker processes on every usable node before the first task needs them.

        A cold worker costs seconds here (process start and imports), which would land
        in the first tasks' queue time; each warm-up task also imports the allow-listed
        entry points' modules and runs their ``warm()`` (a model loaded once per worker). ``warm_workers`` per node, at most its CPUs (the
        spare workers its raylet keeps), through :func:`cluster.executor.warm_workers`;
        returns how many distinct workers ran.
        """
        per_node = self.cfg.warm_workers if per_node is None else per_node
        if per_node <= 0:
            return 0
        with self.live.lock:
            self.live.refresh()
            counts = {(i, False): min(per_node, max(1, nd.cpu_milli // 1000))
                      for i, (nd, ok) in enumerate(zip(self.spec.nodes, self.live.usable)) if ok}
        modules = tuple(sorted({name.partition(":")[0] for name in self.entry_points.functions})
                        if self.cfg.warm_entry_points else ())
        return sum(warm_workers(self.live, counts, timeout_s=timeout_s, backend=self.executor.backend,
                                modules=modules).values())

    def executor_alive(self) -> bool:
        """Whether the executor's completion thread still runs (without it no task ever ends)."""
        thread = getattr(self.executor, "_thread", None)
        return thread is None or thread.is_alive()

    def problems(self) -> list[str]:
        """What makes this router unfit to serve (its health check fails on any)."""
        out = []
        if not self.executor_alive():
            out.append("the executor's completion thread has stopped")
        if self.watcher is not None and self.watcher.started and not self.watcher.alive:
            out.append("the node watcher has stopped (the node view would go stale)")
        return out

    def health(self) -> dict[str, Any]:
        with self.live.lock:
            self.live.snapshot()
        usable = sum(self.live.usable)
        slots = set(self.spec.standby)
        standby = sum(nd.name in slots and not alive for nd, alive in zip(self.spec.nodes, self.live.alive))
        return {"status": "ok" if usable and not self.problems() else "degraded", "policy": self.policies.active.name,
                "nodes_usable": usable, "nodes_total": len(self.spec.nodes) - standby, "nodes_standby": standby,
                "in_flight": self.executor.in_flight,
                "pid": os.getpid()}

    def close(self) -> None:
        self._closing.set()
        if self.watcher is not None:
            self.watcher.stop()
        self.executor.close()
        self.history.close()
        self.metrics.close()
        shutdown_background()  # auto's worker, with any choice under way (a no-op when none was started)


_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)


def _kept_result(res: Any) -> Any:
    """:func:`stored_result` of a task's value, once per result: the completion callback and a request
    waiting for the task both read it, and sizing a big value is not free."""
    try:
        return res.__dict__["_kept"]
    except KeyError:
        kept = res.__dict__["_kept"] = stored_result(res.value)
        return kept


def new_task_id() -> str:
    """A server-side task id: random per process, then a counter (uuid4 per task costs 15 us here)."""
    return f"t-{_ID_PREFIX}-{next(_ID_COUNTER)}"


def _waits_behind_queue(d: Decision, state: ClusterState) -> bool:
    """Whether a placed task waits though it may fit its node now: behind that node's queue (FIFO,
    as the executor runs it), which the policy's own ``queued`` (nothing fits now) does not say."""
    return d.placed and bool(state.queue_len[d.node])


def _text(v: int | None) -> str | None:
    return None if v is None else str(v)


__all__ = ["RouterService", "new_task_id"]
