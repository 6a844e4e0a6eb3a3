"""Booking: every change a placed task makes to a :class:`ClusterState`, in one place.

The Kubernetes scheduler framework's Reserve/Unreserve is the model: small steps,
each idempotent where it can be repeated. A task placed on node ``i``

* starts at once when nothing waits in the node's FIFO queue and it fits
  (:func:`start_or_queue`), else waits at the queue's tail;
* when it finishes (:func:`finish`) it frees what it holds, and the head of the
  node's queue starts while it fits (:func:`drain`);
* may be taken back: :func:`finish` frees a running task, :func:`unqueue` drops a
  waiting one (:func:`clear_queue` all of a node's); both do nothing the second time.

A running task is a :data:`Held` ``(finish time, Allocation, execution seconds)``
in ``state.holding[i]``, in start order; a waiting one a :data:`QueueItem`
``(task, share, seconds)`` in ``state.queues[i]``. Both are immutable, so
:meth:`ClusterState.copy` shares them and a copy rolls forward without touching
the original: :class:`Forward` is that roll (the simulator's event loop, and a
lookahead's on a copy), :class:`NodeReplay` one node's queue replayed alone (the
queue projection, the RL environment's exact outcome). Free capacity itself only
changes through :func:`cluster.state.allocate` and :func:`cluster.state.release`.
"""
from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Callable, Iterable

from cluster.performance import exec_seconds
from cluster.state import Allocation, ClusterState, NodeFree, Share, allocate, fits_now, release

if TYPE_CHECKING:
    from scheduler.task import Task

#: a running task: (finish time, what it holds, its execution seconds)
Held = tuple[float, Allocation, float]
#: a waiting task: (task, share, seconds): its network delay in the simulator; the
#: executor and the batch plan put network plus execution there (what the queue
#: projection then reads as the network delay)
QueueItem = tuple["Task", Share, float]


def sharers(state: ClusterState, i: int, alloc: Allocation) -> int:
    """Tasks on the time-sliced device ``alloc`` joined (itself included); 1 for other shares."""
    return state.gpu_tasks.item(i, alloc.devices[0][0]) if alloc.share[0] == "slice" else 1


def start(state: ClusterState, i: int, task: "Task", share: Share, now: float, net_s: float,
          device: int | None = None, *, checked: bool = False, exec_s: float | None = None) -> Held:
    """Start ``task`` on node ``i`` at ``now``: it holds ``share`` for ``net_s`` plus its execution.

    ``exec_s`` (None: the performance model with its time-slice neighbours at start)
    and ``checked`` (the caller just tested the fit) are passed through to
    :func:`cluster.state.allocate` and the finish time. Raises ValueError if it does
    not fit.
    """
    alloc = allocate(state, i, task, share, device, checked=checked)
    if exec_s is None:
        exec_s = exec_seconds(state.spec.nodes[i], task, share, sharers(state, i, alloc))
    held = (now + net_s + exec_s, alloc, exec_s)
    state.holding[i].append(held)
    return held


def enqueue(state: ClusterState, i: int, task: "Task", share: Share, seconds: float) -> QueueItem:
    """Put ``task`` at the tail of node ``i``'s FIFO queue."""
    item = (task, share, seconds)
    state.queues[i].append(item)
    state.queue_len[i] += 1
    if state.replay_cache:
        replay = state.replay_cache.get(i)
        if replay is not None:  # the replay predicted everything before this item: extend it
            replay.run((item,))
    return item


def start_or_queue(state: ClusterState, i: int, task: "Task", share: Share, now: float, net_s: float,
                   device: int | None = None, *, exec_s: float | None = None,
                   queued_s: float | None = None) -> Held | None:
    """Start ``task`` now if nothing waits on node ``i`` and it fits, else queue it.

    Returns what it holds when it started, None when it waits (queued with
    ``queued_s``, by default ``net_s``). ``exec_s`` as in :func:`start`.
    """
    if not state.queues[i] and fits_now(state, i, task, share):
        state.touched(i)
        return start(state, i, task, share, now, net_s, device, checked=True, exec_s=exec_s)
    enqueue(state, i, task, share, net_s if queued_s is None else queued_s)
    return None


def book_predicted(state: ClusterState, i: int, task: "Task", share: Share) -> None:
    """Take node ``i``'s ``share`` for ``task`` in a plan (a copy of the state), as the executor
    would: started if it fits now, else queued, holding for the predicted network delay plus its
    execution time alone (no time-slice neighbours), what the executor's queue entries carry."""
    net_s = state.net_mean_ms[i] / 1000.0
    ex = exec_seconds(state.spec.nodes[i], task, share)
    start_or_queue(state, i, task, share, state.now, net_s, exec_s=ex, queued_s=net_s + ex)


def finish(state: ClusterState, held: Held) -> bool:
    """Free what a running task holds; False, changing nothing, if it is not running (any more)."""
    alloc = held[1]
    try:
        state.holding[alloc.node].remove(held)
    except ValueError:
        return False
    release(state, alloc)
    return True


def unqueue(state: ClusterState, i: int, item: QueueItem) -> bool:
    """Take ``item`` (that very tuple) out of node ``i``'s queue; False if it is not there."""
    q = state.queues[i]
    for k, x in enumerate(q):
        if x is item:  # by identity: an equal item of another submission of the same task may wait too
            del q[k]
            state.queue_len[i] -= 1
            state.touched(i)
            return True
    return False


def clear_queue(state: ClusterState, i: int) -> list[QueueItem]:
    """Take every waiting task out of node ``i``'s queue (it went away); returns them in order."""
    items = list(state.queues[i])
    state.queues[i].clear()
    state.queue_len[i] = 0
    state.touched(i)
    return items


def drain(state: ClusterState, i: int, now: float,
          net_s: Callable[[QueueItem], float] | None = None) -> list[tuple[QueueItem, Held]]:
    """Start at ``now``, in FIFO order, the tasks at the head of node ``i``'s queue while they fit.

    ``net_s(item)`` gives a started task's network seconds (default: the item's
    own). Returns each started (queue item, what it holds), in start order.
    """
    q = state.queues[i]
    out = []
    while q and fits_now(state, i, q[0][0], q[0][1]):
        item = q.popleft()
        state.queue_len[i] -= 1
        out.append((item, start(state, i, item[0], item[1], now, item[2] if net_s is None else net_s(item),
                                checked=True)))
    return out


FinishHook = Callable[[float, int, "Task | None", Held, "float | None"], None]


class Forward:
    """Rolls a state forward in time: running tasks finish at their known times, queues drain.

    The simulator's event loop, and a lookahead's on a :meth:`ClusterState.copy`:
    ``place`` at an arrival, ``advance(t)`` before the next one. Tasks already
    running in ``state`` join the roll with their finish times (task and start
    unknown: None). Equal finish times finish in start order, as in the simulator.

    Args:
        on_finish: called as ``on_finish(time, node, task, held, start)`` after each
            finish frees its resources and before the node's queue drains.
    """

    __slots__ = ("state", "heap", "seq", "on_finish")

    def __init__(self, state: ClusterState, on_finish: FinishHook | None = None) -> None:
        self.state = state
        self.on_finish = on_finish
        heap: list[tuple] = []
        for i, running in enumerate(state.holding):
            for held in running:
                heap.append((held[0], len(heap), i, None, held, None))
        heapq.heapify(heap)
        self.heap = heap
        self.seq = len(heap)

    def place(self, i: int, task: "Task", share: Share, now: float, net_s: float,
              device: int | None = None) -> bool:
        """:func:`start_or_queue` at ``now``; True if ``task`` started."""
        held = start_or_queue(self.state, i, task, share, now, net_s, device)
        if held is None:
            return False
        heapq.heappush(self.heap, (held[0], self.seq, i, task, held, now))
        self.seq += 1
        return True

    def next_finish(self) -> float:
        """When the next running task finishes (inf when none runs)."""
        return self.heap[0][0] if self.heap else math.inf

    def advance(self, until: float) -> None:
        """Finish every task due by ``until`` (``state.now`` becomes each finish time in turn)."""
        heap, state, hook = self.heap, self.state, self.on_finish
        while heap and heap[0][0] <= until:
            t, _, i, task, held, started = heapq.heappop(heap)
            if not finish(state, held):
                continue  # taken back meanwhile
            state.now = t
            if hook is not None:
                hook(t, i, task, held, started)
            if state.queues[i]:
                for (qt, _, _), h in drain(state, i, t):
                    heapq.heappush(heap, (h[0], self.seq, i, qt, h, t))
                    self.seq += 1


class NodeReplay:
    """Node ``i`` of a state replayed alone: when would tasks appended to its queue start?

    Its running tasks free what they hold at their finish times (equal times in start
    order); each task taken starts, in FIFO order, as soon as it fits. The accounting is
    :class:`cluster.state.NodeFree`, the scalar form of allocate/release on a copy of the
    node's free capacity, so the state itself is never touched. Exact for the simulator
    (finish times there are known at start); an estimate for the live cluster, where
    they are predictions. ``starts``, when a list, records each item taken by :meth:`run`
    as ``(item, start, execution seconds)`` (what a lookahead pays for the tasks still waiting
    when it stops looking).
    """

    __slots__ = ("node", "free", "pending", "seq", "t", "_last", "starts")

    def __init__(self, state: ClusterState, i: int) -> None:
        self.node = state.spec.nodes[i]
        self.free = NodeFree(state, i)
        self.pending = [(h[0], k, h[1]) for k, h in enumerate(state.holding[i])]
        heapq.heapify(self.pending)
        self.seq = len(self.pending)
        self.t = state.now
        self._last: Allocation | None = None
        self.starts: list[tuple[QueueItem, float, float]] | None = None

    def clone(self) -> "NodeReplay":
        """An independent copy: a cached replay is cloned to answer a projection (only a task joining
        its node's queue extends the cached one itself)."""
        new = object.__new__(NodeReplay)
        new.node, new.free, new.pending = self.node, self.free.copy(), self.pending.copy()
        new.seq, new.t, new._last, new.starts = self.seq, self.t, self._last, None
        return new

    def wait(self, task: "Task", share: Share) -> float:
        """When ``task`` would fit, freeing running tasks in finish order until it does (inf: never)."""
        free, pending, t = self.free, self.pending, self.t
        while not free.fits(task, share):
            if not pending:
                self.t = t
                return math.inf
            f, _, alloc = heapq.heappop(pending)
            free.release(alloc)
            if f > t:
                t = f
        self.t = t
        return t

    def take(self, task: "Task", share: Share) -> tuple[float, int]:
        """Start ``task`` when it fits: (its start time, tasks on its time-sliced device).

        Follow with :meth:`hold_until` (its finish). Raises ValueError if it can never fit.
        """
        t = self.wait(task, share)
        if t == math.inf:
            raise ValueError(f"task {task.id} can never fit node {self.node.name} (share {share})")
        return t, self._start(task, share)

    def _start(self, task: "Task", share: Share) -> int:
        alloc = self._last = self.free.allocate(task, share, checked=True)
        return self.free.sharers(alloc)

    def hold_until(self, finish_time: float) -> None:
        """The task just taken frees what it holds at ``finish_time``."""
        heapq.heappush(self.pending, (finish_time, self.seq, self._last))
        self.seq += 1

    def run(self, items: Iterable[QueueItem], stop: "Task | None" = None) -> float | None:
        """Take ``items`` (queue entries) in order, each holding its seconds plus its execution time.

        Returns when ``stop`` would start if it is among them (inf if an item can
        never fit), else None.
        """
        free, pending, node, wait, starts = self.free, self.pending, self.node, self.wait, self.starts
        for item in items:
            qt, qs, seconds = item
            t = wait(qt, qs)
            if qt is stop or t == math.inf:
                return t
            alloc = free.allocate(qt, qs, checked=True)  # _start and hold_until, inlined: the hot loop
            ex = exec_seconds(node, qt, qs, free.sharers(alloc))
            heapq.heappush(pending, (t + seconds + ex, self.seq, alloc))
            self.seq += 1
            if starts is not None:
                starts.append((item, t, ex))
        return None


def queue_replay(state: ClusterState, i: int) -> NodeReplay:
    """Node ``i``'s queue replayed to its end, each start recorded (:attr:`NodeReplay.starts`)."""
    replay = NodeReplay(state, i)
    replay.starts = []
    replay.run(state.queues[i])
    return replay


def waiting_starts(state: ClusterState, i: int) -> list[tuple[QueueItem, float, float]]:
    """``(item, start, execution seconds)`` of every task waiting on node ``i``, in queue order, as
    its replay predicts them (exact for the simulator); the cached replay when it covers them."""
    queue = state.queues[i]
    replay = state.replay_cache.get(i) if state.replay_cache else None
    if replay is not None:
        done = replay.starts[len(replay.starts) - len(queue):] if len(replay.starts) >= len(queue) else []
        if len(done) == len(queue) and all(d[0] is q for d, q in zip(done, queue)):
            return done
    return queue_replay(state, i).starts


def projected_start(state: ClusterState, i: int, task: "Task", share: Share) -> float:
    """Earliest time ``task`` could start on node ``i`` behind its current queue (inf: never)."""
    queue = state.queues[i]
    if not queue and fits_now(state, i, task, share):
        return state.now
    cache = state.replay_cache
    # The queue's replay does not depend on ``now`` while its head cannot start (every finish
    # still to come is later), so it can be kept until the node changes; not for a task that is
    # itself in the queue (it starts where the queue reaches it).
    if (cache is not None and queue and not fits_now(state, i, queue[0][0], queue[0][1])
            and all(it[0] is not task for it in queue)):
        done = cache.get(i)
        if done is None:
            done = cache[i] = queue_replay(state, i)
        return done.clone().wait(task, share)
    replay = NodeReplay(state, i)
    t = replay.run(queue, stop=task)
    return replay.wait(task, share) if t is None else t
