"""Run placed tasks as Ray tasks on exactly the node and GPU share the policy chose.

The executor keeps the simulator's semantics on a real cluster:

* a task placed on a node where it does not fit yet waits in that node's FIFO
  queue (here, not in Ray: Ray would let a smaller task overtake it, and Ray's
  GPU device choice would then drift from the bookkeeping's); it is sent to Ray
  when the tasks ahead of it have started and it fits, so Ray never has a pending
  placed task and its best-fit fractional GPU choice matches
  :func:`cluster.state.pick_device`;
* the built-in task body sleeps the network delay, then works for the execution
  time of :func:`cluster.performance.exec_seconds` (node speed, MIG size,
  time-slicing neighbours at start), both divided by ``time_compression``;
  ``kernel="cpu"`` burns CPU for that time instead of sleeping; a user function
  replaces the emulated work and is timed for real;
* measured queue, network and execution times are reported in workload time
  (wall time x ``time_compression``, a user function's too), with the cost from
  :func:`cluster.performance.cost` on the measured execution time.

Ray's own retries are off (``max_retries=0``): when a node dies, its running
tasks fail with ``NodeDiedError`` and its queued tasks are found by the liveness
check; each is re-placed through its policy up to ``max_retries`` times, else it
ends ``failed`` with the reason. Every submitted task's future resolves.

:meth:`Executor.cancel` ends a task ``cancelled`` wherever it is: out of its node's
queue, or stopped in Ray (force: its worker exits, so a task that never yields,
a 30-day sleep or a user function in C, stops too); its booking is released at
once, so the node's queue starts what now fits without waiting for Ray's report,
which then arrives stale and is ignored.
"""
from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from cluster.live_state import LiveState
from cluster.performance import cost as task_cost
from cluster.performance import exec_seconds
from cluster import booking
from cluster.booking import Held, QueueItem
from cluster.ray_backend import Backend, RayBackend
from cluster.state import Allocation, Share
from cluster.task_body import BODY_DEFAULTS

if TYPE_CHECKING:
    from scheduler.policy import Decision, Policy
    from scheduler.task import Task

#: Ray errors that mean the node itself is gone (a user function runs again elsewhere after these only)
_NODE_LOST = ("NodeDiedError", "TaskUnschedulableError", "LocalRayletDiedError")
#: Ray errors after which the task may run elsewhere (the node or its worker went away).
_SYSTEM_ERRORS = ("NodeDiedError", "WorkerCrashedError", "TaskUnschedulableError", "LocalRayletDiedError",
                  "ObjectLostError", "OwnerDiedError", "RaySystemError", "ActorUnschedulableError",
                  "ObjectFetchTimedOutError", "TaskCancelledError")


@dataclass
class TaskResult:
    """Outcome of one task: where it ran, measured times (workload ms), cost, or why it failed."""

    task_id: str
    status: str  # succeeded | failed | rejected | cancelled
    reason: str = ""
    node: str | None = None
    pool: str | None = None
    tier: str | None = None
    share: Share | None = None
    device: int | None = None  # GPU index Ray assigned (slice and whole shares)
    queued: bool = False  # waited in the node's queue for capacity
    arrival: float = math.nan  # workload seconds since the executor's start
    start: float = math.nan
    finish: float = math.nan
    queue_ms: float = math.nan
    network_ms: float = math.nan
    exec_ms: float = math.nan
    cost: float = 0.0
    attempts: int = 1
    nodes_tried: tuple[str, ...] = ()
    value: Any = None

    @property
    def latency_ms(self) -> float:
        return self.queue_ms + self.network_ms + self.exec_ms


@dataclass
class _Entry:
    task: "Task"
    future: Future
    policy: "Policy | None"
    network_u: float
    fn: Callable | None
    args: tuple
    arrival_wall: float
    node: int = -1
    share: Share | None = None
    alloc: Allocation | None = None
    hold: Held | None = None  # (predicted finish, alloc, exec s) in state.holding while it runs
    qitem: QueueItem | None = None  # its (task, share, hold_s) in the node's queue while it waits
    expect_s: float = 0.0  # expected execution seconds (alone) it adds to its node's queued work while it waits
    sent: bool = False  # handed to Ray (running, or pipelined behind the node's running tasks)
    ref: Any = None
    token: int = 0  # bumped on every dispatch: completions of an earlier attempt are ignored
    queued: bool = False
    attempts: int = 0
    tried: list[str] = field(default_factory=list)
    network_ms: float = 0.0

    @property
    def pipelinable(self) -> bool:
        """CPU and MIG shares: execution time does not depend on neighbours, no GPU index to match; not a
        function on a MIG share, which is sent once booked (its MIG instance sets what it sees)."""
        return self.share is not None and (self.share[0] == "cpu" or (self.share[0] == "mig" and self.fn is None))

    @property
    def shape(self) -> tuple:
        return (self.task.cpu_milli, self.task.mem_mib, self.share)


class Executor:
    """Runs placed tasks on a live cluster; thread-safe; one completion thread.

    Args:
        live: the live state (its ``state`` is the bookkeeping this executor writes).
        time_compression: workload seconds per wall second (sleeps are divided by it,
            measured times multiplied).
        kernel: ``"sleep"`` (default) or ``"cpu"`` (burn CPU for the execution time).
        max_retries: re-placements after a node or worker failure.
        pipeline_depth: per node, how many queued tasks may already be handed to Ray
            behind the running ones (0: only tasks that fit now). Only a run of the
            same shape at the head of the node's FIFO queue, with CPU or MIG shares,
            is pipelined: Ray then starts them in that same order exactly when the
            bookkeeping says they fit, and the bookkeeping marks them started when
            the task ahead of them completes. Without this, every start waits for a
            Python round trip and a new Ray lease (about 2x slower on a 2-core box).
            GPU slices and whole GPUs are never pipelined: Ray would reuse the
            finished task's GPU, and their execution time depends on the neighbours
            present at start.
        seed: seeds the network-delay draws when the caller gives none.
        backend: submits to, waits on and reads from Ray (default :class:`RayBackend`; tests pass a fake).
    """

    def __init__(self, live: LiveState, *, time_compression: float = 1.0, kernel: str = "sleep",
                 max_retries: int = 2, pipeline_depth: int = 256, seed: int = 0,
                 backend: Backend | None = None) -> None:
        if not time_compression > 0:
            raise ValueError(f"time_compression must be > 0, got {time_compression}")
        if kernel not in ("sleep", "cpu"):
            raise ValueError(f"kernel must be 'sleep' or 'cpu', got {kernel!r}")
        self.live = live
        self.state = live.state
        self.backend: Backend = RayBackend() if backend is None else backend
        self.compression = float(time_compression)
        self.kernel = kernel
        self.max_retries = max_retries
        self.pipeline_depth = max(0, int(pipeline_depth))
        self._rng = np.random.default_rng(seed)
        self.t0 = time.time()
        live.clock = self.now
        self._events: queue.SimpleQueue = queue.SimpleQueue()  # (entry, token, error): submissions Ray refused
        self._entries: dict[int, _Entry] = {}  # id(entry) -> entry, while queued or running
        self._waiting: dict[int, _Entry] = {}  # id(queue item) -> entry, while in a node's queue
        # task id -> its entries from admission to resolution (one for the router, which never has an
        # id in flight twice; the executor itself allows the same task to run again meanwhile)
        self._by_task: dict[str, list[_Entry]] = {}
        self._queued_s = [0.0] * len(live.spec.nodes)  # per node: expect_s of the tasks in its queue
        self._inflight = 0
        self._idle = threading.Condition(live.lock)
        self._submitters: dict[tuple, Callable[..., Any]] = {}  # (node id, task shape) -> submit function
        # Ray submissions decided under the bookkeeping lock, made outside it in the same order
        # (Ray runs one node's same-shape tasks in submission order, which pipelining relies on).
        self._outbox: deque[tuple[_Entry, int, tuple]] = deque()
        self._stops: deque[tuple[Any, bool]] = deque()  # (ref, force) to cancel in Ray, also at flush
        self._send_lock = threading.Lock()
        self._sent_q = [0] * len(live.spec.nodes)  # per node: queued tasks already handed to Ray (a prefix)
        # per node, in submission order: (entry, token, ref, node) handed to Ray, not yet seen finished
        self._in_ray: list[deque[tuple[_Entry, int, Any, int]]] = [deque() for _ in live.spec.nodes]
        self._wake = threading.Event()  # set when something is handed to Ray, or on close
        self._closed = False
        #: GPU tasks that Ray ran on another device than the bookkeeping booked (should stay 0).
        self.device_mismatches = 0
        self._thread = threading.Thread(target=self._loop, name="executor", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ API
    def now(self) -> float:
        """Workload seconds since the executor started."""
        return (time.time() - self.t0) * self.compression

    def reset_clock(self) -> None:
        """Make workload time 0 now (a replay calls this when its first arrival is due)."""
        self.t0 = time.time()

    @property
    def in_flight(self) -> int:
        return self._inflight

    def submit(self, task: "Task", decision: "Decision", *, policy: "Policy | None" = None,
               network_u: float | None = None, fn: Callable | None = None, args: tuple = ()) -> Future:
        """Run ``task`` where ``decision`` says; the future resolves to a :class:`TaskResult`.

        ``policy`` re-places the task if its node dies; ``network_u`` in [0, 1) picks
        the network delay within the tier's range (drawn when None), so a replay can
        use the simulator's draws. ``decision.device`` is not enforced: Ray picks the
        GPU of a share itself (best fit, the same rule as the bookkeeping).
        """
        with self.live.lock:
            fut, _ = self.admit(task, decision, policy=policy, network_u=network_u, fn=fn, args=args)
        self.flush()
        return fut

    def place(self, task: "Task", policy: "Policy", *, network_u: float | None = None,
              fn: Callable | None = None, args: tuple = ()) -> tuple["Decision", Future]:
        """``policy.select`` on the live state and :meth:`submit`, atomically."""
        with self.live.lock:
            d = policy.select(task, self.live.snapshot())
            fut, _ = self.admit(task, d, policy=policy, network_u=network_u, fn=fn, args=args)
        self.flush()
        return d, fut

    def admit(self, task: "Task", decision: "Decision", *, policy: "Policy | None" = None,
              network_u: float | None = None, fn: Callable | None = None, args: tuple = ()) -> tuple[Future, bool]:
        """:meth:`submit` for a caller that holds ``live.lock`` (it decided on that state): books the
        task and returns (its future, whether it waits in the node's queue). Ray gets it at the next
        :meth:`flush`, which the caller makes after releasing the lock."""
        fut: Future = Future()
        u = float(self._rng.random()) if network_u is None else float(network_u)
        e = _Entry(task, fut, policy, u, fn, tuple(args), time.time())
        self._inflight += 1
        self._by_task.setdefault(task.id, []).append(e)
        self._dispatch(e, decision)
        return fut, e.qitem is not None

    def cancel(self, task_id: str, reason: str) -> bool:
        """End task ``task_id`` ``cancelled`` (with ``reason``) if it is in flight: taken out of its
        node's queue, or stopped in Ray, its capacity free at once; False if it is not in flight
        (unknown, or already ended). Takes ``live.lock`` and submits what then starts."""
        with self.live.lock:
            found = self.withdraw(task_id, reason)
        self.flush()
        return found

    def withdraw(self, task_id: str, reason: str) -> bool:
        """:meth:`cancel` for a caller that holds ``live.lock``: the Ray calls (the cancellation, and
        the tasks that start in the freed capacity) wait for the :meth:`flush` it makes after
        releasing the lock. Every run of ``task_id`` in flight ends (the router has at most one)."""
        runs = self._by_task.get(task_id)
        if not runs:
            return False
        for e in list(runs):
            self._cancel(e, reason)
        return True

    def queued_by_pool(self) -> dict[str, tuple[int, float]]:
        """Per pool (every one of the topology's): tasks waiting in its nodes' queues and their expected
        execution seconds (workload time, each alone on its node, as :func:`exec_seconds` has it), for
        admission control. O(nodes): the seconds are kept as tasks join and leave the queues."""
        nodes = self.live.spec.nodes
        out = dict.fromkeys(self.live.spec.pools, (0, 0.0))
        with self.live.lock:
            for i, n in enumerate(self.state.queue_len.tolist()):
                if n:
                    pool = nodes[i].pool
                    c, secs = out.get(pool, (0, 0.0))
                    out[pool] = (c + n, secs + self._queued_s[i])
        return out

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until nothing is in flight; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals (lock held)
    def _dispatch(self, e: _Entry, d: "Decision") -> None:
        e.attempts += 1
        e.token += 1
        e.sent, e.ref, e.qitem = False, None, None
        if not d.placed:
            self._resolve(e, TaskResult(e.task.id, "rejected", d.explanation, arrival=self._wl(e.arrival_wall),
                                        attempts=e.attempts, nodes_tried=tuple(e.tried)))
            return
        i = d.node
        if not self.live.usable[i]:
            self._retry(e, f"node {self.live.spec.nodes[i].name} is not usable ({self.live.problems[i]})")
            return
        if self._closed:
            self._finish_failed(e, "executor closed")
            return
        nd = self.live.spec.nodes[i]
        e.node, e.share = i, d.share
        e.tried.append(nd.name)
        lo, hi = self.live.spec.tiers[nd.tier].network_ms
        e.network_ms = lo + e.network_u * (hi - lo)
        self._entries[id(e)] = e
        # Ray picks the GPU of a fractional share itself (best fit, the allocator's rule), so the
        # bookkeeping books the device Ray will use rather than a policy's pin (device None).
        net_s = e.network_ms / 1000.0
        ex_s = exec_seconds(nd, e.task, e.share)
        held = booking.start_or_queue(self.state, i, e.task, e.share, self.now(), net_s, queued_s=net_s + ex_s)
        if held is not None:
            e.alloc, e.hold = held[1], held
            self._send(e)
        else:
            e.qitem = self.state.queues[i][-1]
            self._waiting[id(e.qitem)] = e
            e.queued = True
            e.expect_s = ex_s
            self._queued_s[i] += ex_s
            self._pipeline(i)

    def _send(self, e: _Entry) -> None:
        """Queue ``e`` for Ray (pinned to its node with its share); :meth:`flush` submits it."""
        i = e.node
        nd = self.live.spec.nodes[i]
        # booked: the execution time with its time-slice neighbours at start; pipelined (CPU, MIG): alone
        ex = e.hold[2] if e.hold is not None else exec_seconds(nd, e.task, e.share)
        payload: tuple = (e.network_ms / 1000.0 / self.compression, ex / self.compression, self.kernel,
                          e.share[0] in ("slice", "whole"))
        if e.fn is not None:
            payload += (e.fn, e.args)
            if e.alloc is not None and e.alloc.mig is not None:  # the function sees its MIG instance only
                d, k, prof = e.alloc.mig
                payload += ((d, prof, nd.devices[d].mig_instances[:k].count(prof)),)
        else:
            # Arguments equal to the body's defaults are not sent (each costs serialization on both
            # sides); a zero-length task then travels exactly like a plain no-op Ray task.
            while payload and payload[-1] == BODY_DEFAULTS[len(payload) - 1]:
                payload = payload[:-1]
        e.sent = True
        self._outbox.append((e, e.token, payload))

    def flush(self) -> None:
        """Make the Ray calls decided under the bookkeeping lock, without holding it: cancellations,
        then the outbox's submissions in order."""
        with self._send_lock:
            while self._stops:
                ref, force = self._stops.popleft()
                self.backend.cancel(ref, force=force)
            while self._outbox:
                e, token, payload = self._outbox.popleft()
                if token != e.token:
                    continue  # re-placed or resolved meanwhile
                i = e.node
                node_id = self.live.node_ids[i]
                slot = payload[6] if len(payload) > 6 else None  # a function's MIG instance (see _send)
                key = (node_id, e.task.cpu_milli, e.task.mem_mib, e.share, slot)
                submit = self._submitters.get(key)
                if submit is None:
                    name = self.live.spec.nodes[i].name
                    submit = self._submitters[key] = (
                        self.backend.submitter(name, e.task, e.share, node_id) if slot is None else
                        self.backend.submitter(name, e.task, e.share, node_id, mig_slot=slot))
                try:
                    ref = submit(*payload)
                except Exception as exc:  # noqa: BLE001 - e.g. the driver lost the cluster
                    self._events.put((e, token, exc))
                    self._wake.set()
                    continue
                e.ref = ref
                if token != e.token:  # cancelled (or re-placed) while it was being submitted: stop it
                    if e.ref is ref:  # (the canceller read e.ref after bumping the token, so one of us sees it)
                        e.ref = None
                    self.backend.cancel(ref, force=True)
                    continue
                self._in_ray[i].append((e, token, ref, i))
                self._wake.set()

    def _pipeline(self, i: int) -> None:
        """Hand Ray the same-shape CPU/MIG run at the head of node ``i``'s queue (see ``pipeline_depth``)."""
        q = self.state.queues[i]
        k = self._sent_q[i]
        if not q or k >= min(self.pipeline_depth, len(q)):
            return
        head = self._waiting[id(q[0])]
        if not head.pipelinable:
            return
        shape = head.shape
        while k < len(q) and k < self.pipeline_depth:
            e = self._waiting[id(q[k])]
            if not e.pipelinable or e.shape != shape:
                break
            self._send(e)
            k += 1
        self._sent_q[i] = k

    def _unbook(self, e: _Entry) -> None:
        """Drop what the bookkeeping holds for ``e`` (an allocation, or its queue place)."""
        i = e.node
        if e.hold is not None:
            booking.finish(self.state, e.hold)
            e.alloc = e.hold = None
        if e.qitem is not None:
            self._waiting.pop(id(e.qitem), None)
            if booking.unqueue(self.state, i, e.qitem):
                self._dequeued(i, e)
                if e.sent:
                    self._sent_q[i] -= 1
            e.qitem = None

    def _drain_queue(self, i: int) -> None:
        """Start, in FIFO order, what now fits on node ``i``; top up the pipeline."""
        if not self.live.usable[i]:
            return
        waiting = self._waiting
        for item, held in booking.drain(self.state, i, self.now(), lambda it: waiting[id(it)].network_ms / 1000.0):
            e = waiting.pop(id(item))
            e.qitem = None
            self._dequeued(i, e)
            e.alloc, e.hold = held[1], held
            if e.sent:
                self._sent_q[i] -= 1
            else:
                self._send(e)
        self._pipeline(i)

    def _dequeued(self, i: int, e: _Entry) -> None:
        """``e`` left node ``i``'s queue: take its seconds off the node's queued work (0 once the queue
        is empty, so float rounding never accumulates)."""
        self._queued_s[i] = self._queued_s[i] - e.expect_s if self.state.queues[i] else 0.0

    def _cancel(self, e: _Entry, reason: str) -> None:
        """End ``e`` ``cancelled``: release its booking, start what now fits, stop it in Ray."""
        i, hold, now = e.node, e.hold, self.now()
        arrival = self._wl(e.arrival_wall)
        # booked start: the predicted finish less the execution and network seconds it was booked with
        start = hold[0] - hold[2] - e.network_ms / 1000.0 if hold is not None else math.nan
        nd = self.live.spec.nodes[i] if i >= 0 else None
        self._unbook(e)
        if nd is not None:
            self._drain_queue(i)
        self._resolve(e, TaskResult(
            e.task.id, "cancelled", reason, node=nd.name if nd else None, pool=nd.pool if nd else None,
            tier=nd.tier if nd else None, share=e.share, queued=e.queued, arrival=arrival, start=start,
            finish=now, queue_ms=max(0.0, ((now if hold is None else start) - arrival) * 1000.0),
            attempts=e.attempts, nodes_tried=tuple(e.tried)))
        # After the token bump in _resolve: a flush submitting it now sees the new token, or set e.ref
        # before, and then it is read here. Force: a running task's worker exits (a task not started
        # yet is only dropped from Ray's queue), so nothing keeps the capacity just released.
        if e.sent and e.ref is not None:
            self._stops.append((e.ref, True))

    def _retry(self, e: _Entry, why: str) -> None:
        if e.policy is None or e.attempts > self.max_retries:
            left = "no policy to re-place it" if e.policy is None else f"after {e.attempts} attempt(s)"
            self._finish_failed(e, f"{why}; {left}")
            return
        try:
            self.live.refresh()
            state = self.live.snapshot()
        except Exception:  # noqa: BLE001 - the GCS briefly away: decide on the last view rather than lose the task
            state = self.live.state
            state.now = self.live.clock()
        d = e.policy.select(e.task, state)
        self._dispatch(e, d)

    def _finish_failed(self, e: _Entry, reason: str) -> None:
        nd = self.live.spec.nodes[e.node] if e.node >= 0 else None
        self._resolve(e, TaskResult(e.task.id, "failed", reason, node=nd.name if nd else None,
                                    pool=nd.pool if nd else None, tier=nd.tier if nd else None, share=e.share,
                                    queued=e.queued, arrival=self._wl(e.arrival_wall), attempts=e.attempts,
                                    nodes_tried=tuple(e.tried)))

    def _resolve(self, e: _Entry, result: TaskResult) -> None:
        self._entries.pop(id(e), None)
        runs = self._by_task.get(e.task.id)
        if runs is not None:
            runs[:] = [x for x in runs if x is not e]  # by identity (entries compare by value)
            if not runs:
                del self._by_task[e.task.id]
        e.token += 1  # whatever Ray still reports for this task is stale now
        self._inflight -= 1
        e.future.set_result(result)
        if self._inflight == 0:
            self._idle.notify_all()

    def _wl(self, wall: float) -> float:
        return (wall - self.t0) * self.compression

    # ------------------------------------------------------------------ completion thread
    def _loop(self) -> None:
        """Collect finished Ray tasks in bulk and book them, under one lock hold per round.

        The thread waits in ``ray.wait`` (the GIL released) on a window of each node's
        oldest unfinished submissions, then fetches every finished one with one
        ``ray.get``. One callback per result (``ObjectRef._on_completed``), as before,
        took the GIL from Ray's own thread and deserialized each result alone: on a
        2-core box the executor then ran no-op tasks at 1.26-1.39x plain Ray's time
        (``python -m benchmarks dispatch``), 1.16-1.22x with this loop (alternating runs).
        """
        next_check = time.monotonic() + self.live.refresh_s
        next_full = time.monotonic() + FULL_SCAN_S
        while not self._closed:
            self._wake.clear()
            full = time.monotonic() >= next_full
            if full:
                next_full = time.monotonic() + FULL_SCAN_S
            window = self._window(full)
            done: list = []
            if window:
                ready = set(self.backend.wait([w[2] for w in window], WAIT_S))
                if ready:
                    finished = [w for w in window if w[2] in ready]
                    outs = self.backend.outcomes([w[2] for w in finished])
                    done = [(w[0], w[1], out) for w, out in zip(finished, outs)]
                    self._forget(finished)
            else:
                self._wake.wait(0.1)
            try:
                while True:
                    done.append(self._events.get_nowait())  # tasks Ray refused at submission
            except queue.Empty:
                pass
            if done:
                with self.live.lock:
                    for e, token, out in done:
                        self._complete(e, token, out)
                self.flush()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.live.refresh_s
                if self._entries:
                    self._check_nodes()

    def _window(self, full: bool = False) -> list[tuple[_Entry, int, Any, int]]:
        """Per node, the oldest submissions that may have finished: Ray runs a node's tasks in
        submission order once they fit, so at most the tasks booked as running there, plus the
        pipelined ones that started since the last round (``WINDOW_SLACK``). ``full``: all of them
        (a periodic sweep, in case a task ahead never finishes)."""
        out: list[tuple[_Entry, int, Any, int]] = []
        with self._send_lock:
            for i, sent in enumerate(self._in_ray):
                if not sent:
                    continue
                if full:
                    out.extend(sent)
                else:
                    out.extend(itertools.islice(sent, len(self.state.holding[i]) + WINDOW_SLACK))
        return out

    def _forget(self, finished: list[tuple[_Entry, int, Any, int]]) -> None:
        """Drop finished submissions from their nodes' lists (mostly from the front)."""
        by_node: dict[int, set[int]] = {}
        for w in finished:
            by_node.setdefault(w[3], set()).add(id(w))
        with self._send_lock:
            for i, gone in by_node.items():
                sent = self._in_ray[i]
                left = len(gone)
                while sent and id(sent[0]) in gone:
                    sent.popleft()
                    left -= 1
                if left:
                    kept = [w for w in sent if id(w) not in gone]
                    sent.clear()
                    sent.extend(kept)

    def replace_stranded(self) -> None:
        """Re-place at once the tasks waiting for nodes that are no longer usable (a drain began), not at
        the next node check."""
        with self.live.lock:
            self._replace_stranded()
        self.flush()

    def _check_nodes(self) -> None:
        try:
            self.live.refresh()
        except Exception:  # noqa: BLE001 - the GCS may be briefly unreachable; try again later
            return
        with self.live.lock:
            self._replace_stranded()
        self.flush()

    def _replace_stranded(self) -> None:
        """Re-place the tasks waiting in the queue of a node that is no longer usable.

        A drained node is still up: what its queue already handed to Ray (pipelined) may have started
        and finishes there; the rest moves, and the move is not counted as an attempt (not a failure)."""
        for i, usable in enumerate(self.live.usable):
            q = self.state.queues[i]
            if usable or not q:
                continue
            name = self.live.spec.nodes[i].name
            drained = self.live.alive[i] and name in self.live.draining
            if drained:
                items = [it for it in list(q) if not self._waiting[id(it)].sent]
                waiting = []
                for it in items:
                    booking.unqueue(self.state, i, it)
                    e = self._waiting.pop(id(it))
                    self._dequeued(i, e)
                    waiting.append(e)
            else:
                waiting = [self._waiting.pop(id(item)) for item in booking.clear_queue(self.state, i)]
                self._sent_q[i] = 0
                self._queued_s[i] = 0.0
            for e in waiting:
                e.qitem = None
                if e.ref is not None:
                    self._stops.append((e.ref, False))  # at the caller's flush, outside the lock
                if drained:
                    e.attempts -= 1
                self._retry(e, f"node {name} {'is draining' if drained else 'went down'} while the task waited "
                               "for it")

    def _complete(self, e: _Entry, token: int, out: Any) -> None:
        """Book the outcome of one Ray task: its result tuple, or the exception it raised."""
        if token != e.token:
            return  # an attempt already re-placed or resolved
        i = e.node
        nd = self.live.spec.nodes[i]
        if e.ref is None and isinstance(out, BaseException):  # Ray refused the submission itself
            self._unbook(e)
            self._drain_queue(i)
            self._finish_failed(e, f"could not submit to Ray: {type(out).__name__}: {out}")
            return
        if isinstance(out, BaseException):
            exc = out
            name = type(exc).__name__
            cause = getattr(exc, "cause", None)
            self._unbook(e)
            if name in _SYSTEM_ERRORS or type(cause).__name__ in _SYSTEM_ERRORS:
                # The node (or its worker) is gone: stop placing there before anything else starts on it.
                lost = name in _NODE_LOST or type(cause).__name__ in _NODE_LOST
                if lost:
                    self.live.mark_dead(self.live.node_ids[i])
                self._drain_queue(i)
                if e.fn is not None and not lost:
                    # a user function may have brought its own worker down (memory): not run again elsewhere
                    self._finish_failed(e, f"{name} on node {nd.name} while its function ran (not retried: the "
                                           "function itself may have crashed its worker, e.g. out of memory)")
                else:
                    self._retry(e, f"{name} on node {nd.name}")
                self._replace_stranded()
            else:
                self._drain_queue(i)
                if cause is not None:  # ray.get raises a task's own error wrapped (RayTaskError(ValueError))
                    exc, name = cause, type(cause).__name__
                msg = str(exc).strip().splitlines()
                self._finish_failed(e, f"task raised {name}: {msg[-1] if msg else ''}"[:500])
            return
        share = e.share
        start, net_s, exec_s, end, node_id, gpu_ids, value = out
        if e.alloc is not None and e.alloc.devices and gpu_ids and int(gpu_ids[0]) != e.alloc.devices[0][0]:
            self.device_mismatches += 1  # Ray chose another GPU than the bookkeeping booked
        self._unbook(e)  # a pipelined task can finish before the bookkeeping saw it start
        self._drain_queue(i)
        c = self.compression
        ex_ms = exec_s * 1000.0 * c
        res = TaskResult(
            e.task.id, "succeeded", node=nd.name, pool=nd.pool, tier=nd.tier, share=share,
            device=int(gpu_ids[0]) if gpu_ids else None, queued=e.queued,
            arrival=self._wl(e.arrival_wall), start=self._wl(start), finish=self._wl(end),
            queue_ms=max(0.0, (start - e.arrival_wall) * 1000.0 * c),
            network_ms=net_s * 1000.0 * c, exec_ms=ex_ms,
            cost=task_cost(self.live.spec.tiers[nd.tier], e.task, share, ex_ms / 1000.0),
            attempts=e.attempts, nodes_tried=tuple(e.tried), value=value)
        expected = self.live.node_ids[i]
        if expected is not None and node_id != expected:
            res.reason = f"ran on Ray node {node_id[:12]}, expected {expected[:12]}"
        self._resolve(e, res)


#: longest wait for the next finished task before the window is looked at again (new submissions join then)
WAIT_S = 0.005
#: submissions per node beyond its running tasks that the completion thread watches
WINDOW_SLACK = 8
#: how often every unfinished submission is checked, not only each node's oldest
FULL_SCAN_S = 1.0


def warm_workers(live: LiveState, counts: dict[tuple[int, bool], int], *, hold_s: float = 0.3,
                 max_rounds: int = 6, timeout_s: float | None = None, backend: Backend | None = None,
                 modules: tuple[str, ...] = ()) -> dict[tuple[int, bool], int]:
    """Start Ray worker processes before tasks need them, so cold starts are not paid (or timed) there.

    ``counts[(node, gpu)]`` is how many concurrent tasks are expected on that node,
    split by whether they hold a GPU: Ray keeps separate worker pools for GPU and
    non-GPU tasks (measured on 2.60), and MIG shares are custom resources, so they
    run in non-GPU workers. Rounds of concurrent ``hold`` tasks run until each key
    has seen that many distinct workers. A node whose warm-up tasks fail (it died)
    is left out; ``timeout_s`` bounds the whole warm-up (the router warms while it
    serves). Returns the distinct workers seen per key. ``backend``: as :class:`Executor`'s.
    ``modules``: imported in each warm-up task, their ``warm()`` called (:func:`cluster.task_body.hold`).
    """
    backend = RayBackend() if backend is None else backend
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen: dict[tuple[int, bool], set[int]] = {k: set() for k, v in counts.items() if v > 0}
    failed: set[tuple[int, bool]] = set()
    for _ in range(max_rounds):
        refs = {}
        for (i, gpu), want in counts.items():
            node_id = live.node_ids[i]
            if want <= 0 or node_id is None or (i, gpu) in failed or len(seen[(i, gpu)]) >= want:
                continue
            submit = backend.holder(live.spec.nodes[i].name, node_id, gpu)
            refs[(i, gpu)] = [submit(hold_s, modules) for _ in range(want)]
        if not refs:
            break
        for key, rs in refs.items():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                seen[key].update(backend.get(rs, timeout=left))
            except TimeoutError:
                return {k: len(v) for k, v in seen.items()}
            except Exception:  # noqa: BLE001 - e.g. the node died: warm the others
                failed.add(key)
    return {k: len(v) for k, v in seen.items()}
