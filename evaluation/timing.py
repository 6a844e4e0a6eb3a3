"""Wall-clock cost of a policy's decisions, measured around ``select`` by a delegating wrapper.

The simulator stays pure (no clock): evaluation wraps each policy in
:class:`TimedPolicy`, which the engine calls like any policy. The figure includes
the wrapper's own two clock reads (well under a microsecond) and whatever else the
machine runs at the time, so compare policies timed in the same run.
"""
from __future__ import annotations

from time import perf_counter_ns
from typing import Any, Sequence

from cluster.state import ClusterState
from scheduler.policy import Decision, Policy
from scheduler.task import Task


class TimedPolicy:
    """``policy`` with the time spent in ``select`` / ``select_many`` summed; everything else delegated."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.name = policy.name
        self.ns = 0
        self.decisions = 0

    def select(self, task: Task, state: ClusterState) -> Decision:
        t = perf_counter_ns()
        d = self.policy.select(task, state)
        self.ns += perf_counter_ns() - t
        self.decisions += 1
        return d

    def select_many(self, tasks: Sequence[Task], state: ClusterState) -> list[Decision]:
        many = getattr(self.policy, "select_many", None)
        t = perf_counter_ns()
        out = many(tasks, state) if many is not None else [self.policy.select(x, state) for x in tasks]
        self.ns += perf_counter_ns() - t
        self.decisions += len(tasks)
        return out

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed)

    def __getattr__(self, attr: str) -> Any:  # pure, artifact, ...: the wrapped policy's
        return getattr(self.policy, attr)

    @property
    def us_per_decision(self) -> float:
        """Mean microseconds per decision so far (NaN before the first)."""
        return self.ns / 1000.0 / self.decisions if self.decisions else float("nan")
