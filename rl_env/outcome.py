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
task starts: a :class:`cluster.booking.NodeReplay`, the booking core on a copy of
that node), so predicting a newly queued task costs O(log n) instead of a replay
of the whole queue (which at high load holds hundreds of tasks). A task that
starts at once needs no replay at all. The env also checks every prediction
against the record the simulator writes when the task finishes and pays any
difference then, so an engine change can never silently break "episode return = minus the total objective" (tests assert the
difference is zero).
"""
from __future__ import annotations

from dataclasses import dataclass

from cluster.booking import NodeReplay
from cluster.performance import cost as task_cost
from cluster.performance import exec_seconds
from cluster.state import ClusterState, Share, fits_now, pick_device
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


class OutcomePredictor:
    """Exact outcome of each placement: route every ``sim.place`` of an episode through :meth:`place`."""

    def __init__(self, state: ClusterState, objective: Objective) -> None:
        self.state = state
        self.objective = objective
        spec = state.spec
        self._nodes = spec.nodes
        self._tiers = [spec.tiers[n.tier] for n in spec.nodes]
        self._tails: dict[int, NodeReplay] = {}

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
            tail.hold_until(start + network / 1000.0 + ex)  # the engine's finish time
        # the engine's own expressions, in its order, so that scores match to the last bit
        latency = (start - task.arrival) * 1000.0 + network + ex * 1000.0
        c = task_cost(self._tiers[node], task, share, ex)
        score = self.objective.score(latency, task.slo_ms, task.priority, c, task.cost_sensitivity)
        return Outcome(start, latency, c, score)

    def _plan(self, task: Task, node: int, share: Share,
              device: int | None) -> tuple[float, int, NodeReplay | None]:
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
            tail = self._tails[node] = NodeReplay(state, node)
            tail.run(state.queues[node])  # waiting before this predictor saw them (the engine queues network s)
        start, sharers = tail.take(task, share)
        return start, sharers, tail


def network_ms(sim: OnlineSimulator, task: Task) -> float:
    """The network delay (ms) the engine drew for ``task`` in ``place`` (until it finishes).

    Reads the engine's private per-task draw: ``OnlineSimulator`` has no public
    accessor for it yet. Tests pin this (scores predicted at placement equal the
    engine's records), so an engine change fails loudly.
    """
    return sim._net[id(task)]  # noqa: SLF001
