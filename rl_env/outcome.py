"""The objective score of a task, known exactly at the moment it is placed.

Why this exists: the env rewards each decision with the score of the task it
placed, at the step it placed it, instead of when the task completes seconds to
minutes (hundreds of decisions) later. That is exact, not an estimate, because
of how the simulator works: node queues are strict FIFO with head-of-line
blocking, a task holds its resources for its network delay plus an execution
time fixed when it starts, and a task placed later can never start before an
earlier one on the same node. So a task's start, its time-slice neighbours
(hence its speed), its latency and its cost depend only on what was placed
before it.

:class:`OutcomePredictor` keeps, per node whose queue is not empty, a replay of
that queue to its tail (free capacity, running finishes, the time the last queued
task starts), so predicting a newly queued task costs O(log n) instead of a replay
of the whole queue (which at high load holds hundreds of tasks). A task that
starts at once needs no replay at all. It mirrors the engine's rules (best-fit
device for slices, lowest free devices for whole GPUs, ties by start order); the
env also checks every prediction against the record the simulator writes when
the task finishes and pays any difference then, so an engine change can never
silently break "episode return = minus the total objective" (tests assert the
difference is zero).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from cluster.performance import cost as task_cost
from cluster.performance import exec_seconds
from cluster.state import PROFILE_INDEX, ClusterState, Share, fits_now, pick_device
from scheduler.objective import Objective
from scheduler.policy import Decision
from scheduler.task import Task
from simulations.engine import OnlineSimulator


@dataclass(frozen=True, slots=True)
class Outcome:
    """The placed task's future, as the simulator will play it."""

    start: float
    latency_ms: float
    cost: float
    score: float


class _Tail:
    """One node replayed up to the start of its last queued task."""

    __slots__ = ("cpu", "mem", "gpu", "tasks", "mig", "pending", "seq", "t", "_hold")

    def __init__(self, state: ClusterState, i: int) -> None:
        self.cpu = int(state.cpu_free[i])
        self.mem = int(state.mem_free[i])
        self.gpu = state.gpu_free[i].tolist()
        self.tasks = state.gpu_tasks[i].tolist()
        self.mig = state.mig_free[i].tolist()
        # Running tasks in start order (the engine's tie order for equal finish times).
        self.pending = [(f, k, a.cpu, a.mem, a.devices, a.mig[2] if a.mig else None)
                        for k, (f, a) in enumerate(state.holding[i])]
        heapq.heapify(self.pending)
        self.seq = len(self.pending)
        self.t = state.now

    def fits(self, task: Task, share: Share) -> bool:
        if task.cpu_milli > self.cpu or task.mem_mib > self.mem:
            return False
        kind, amount = share
        if kind == "cpu":
            return True
        if kind == "mig":
            return self.mig[PROFILE_INDEX[amount]] > 0
        if kind == "whole":
            return sum(1 for g in self.gpu if g == 1000) >= amount
        return any(g >= amount for g in self.gpu)

    def start(self, task: Task, share: Share) -> tuple[float, int]:
        """Replay ``task`` (appended to the queue): its start time and time-slice sharers."""
        while not self.fits(task, share):
            if not self.pending:
                raise ValueError(f"task {task.id} can never fit this node (share {share})")
            f, _, cpu, mem, devices, mig = heapq.heappop(self.pending)
            self.cpu += cpu
            self.mem += mem
            for d, m in devices:
                self.gpu[d] += m
                self.tasks[d] -= 1
            if mig is not None:
                self.mig[PROFILE_INDEX[mig]] += 1
            if f > self.t:
                self.t = f
        return self.t, self._take(task, share)

    def _take(self, task: Task, share: Share) -> int:
        self.cpu -= task.cpu_milli
        self.mem -= task.mem_mib
        kind, amount = share
        sharers = 1
        devices: tuple = ()
        mig = None
        if kind == "slice":  # best fit, lowest index on ties (cluster.state.pick_device)
            best, d = 10**9, -1
            for k, g in enumerate(self.gpu):
                if amount <= g < best:
                    best, d = g, k
            self.gpu[d] -= amount
            self.tasks[d] += 1
            sharers = self.tasks[d]
            devices = ((d, amount),)
        elif kind == "whole":  # the lowest fully free devices (cluster.state.allocate)
            free = [k for k, g in enumerate(self.gpu) if g == 1000][: int(amount)]
            for k in free:
                self.gpu[k] = 0
                self.tasks[k] += 1
            devices = tuple((k, 1000) for k in free)
        elif kind == "mig":
            self.mig[PROFILE_INDEX[amount]] -= 1
            mig = amount
        self._hold = (task.cpu_milli, task.mem_mib, devices, mig)
        return sharers

    def finish_at(self, finish: float) -> None:
        """Record when the task just taken (by :meth:`start`) releases what it holds."""
        heapq.heappush(self.pending, (finish, self.seq, *self._hold))
        self.seq += 1


class OutcomePredictor:
    """Exact outcome of each placement: route every ``sim.place`` of an episode through :meth:`place`."""

    def __init__(self, state: ClusterState, objective: Objective) -> None:
        self.state = state
        self.objective = objective
        spec = state.spec
        self._nodes = spec.nodes
        self._tiers = [spec.tiers[n.tier] for n in spec.nodes]
        self._tails: dict[int, _Tail] = {}

    def place(self, sim: OnlineSimulator, task: Task, decision: Decision) -> Outcome:
        """Apply ``decision`` through ``sim.place`` and return the task's exact outcome.

        The start time and time-slice sharers are fixed before the engine acts
        (they do not depend on the task's own network draw); the network delay the
        engine draws in ``place`` is read right after.
        """
        node, share = decision.node, decision.share
        start, sharers, tail = self._plan(task, node, share, decision.device)
        sim.place(task, decision)
        network = network_ms(sim, task)
        ex = exec_seconds(self._nodes[node], task, share, sharers)
        if tail is not None:
            tail.finish_at(start + network / 1000.0 + ex)  # the engine's finish time
        # the engine's own expressions, in its order, so that scores match to the last bit
        latency = (start - task.arrival) * 1000.0 + network + ex * 1000.0
        c = task_cost(self._tiers[node], task, share, ex)
        score = self.objective.score(latency, task.slo_ms, task.priority, c, task.cost_sensitivity)
        return Outcome(start, latency, c, score)

    def _plan(self, task: Task, node: int, share: Share,
              device: int | None) -> tuple[float, int, _Tail | None]:
        """(start time, time-slice sharers at start, the node's replay if the task waits)."""
        state = self.state
        if not state.queues[node]:
            self._tails.pop(node, None)  # the queue drained: an old replay is stale
            if fits_now(state, node, task, share):  # starts at once: no replay needed
                sharers = 1
                if share[0] == "slice":
                    d = device if device is not None else pick_device(state, node, int(share[1]))
                    sharers = int(state.gpu_tasks[node, d]) + 1
                return task.arrival, sharers, None
        tail = self._tails.get(node)
        if tail is None:
            tail = self._tails[node] = _Tail(state, node)
            nd = self._nodes[node]
            for qt, qs, hold in state.queues[node]:
                start, sharers = tail.start(qt, qs)
                # the engine queues hold = network + execution alone; it runs with its sharers
                tail.finish_at(start + hold - exec_seconds(nd, qt, qs) + exec_seconds(nd, qt, qs, sharers))
        start, sharers = tail.start(task, share)
        return start, sharers, tail


def network_ms(sim: OnlineSimulator, task: Task) -> float:
    """The network delay (ms) the engine drew for ``task`` in ``place`` (until it finishes).

    Reads the engine's private per-task draw: ``OnlineSimulator`` has no public
    accessor for it yet. Tests pin this (scores predicted at placement equal the
    engine's records), so an engine change fails loudly.
    """
    return sim._net[id(task)]  # noqa: SLF001
