"""Auto: the member policy that the simulator says wins on this cluster, for this workload.

No one policy wins everywhere: on ``local.yaml`` the forest beats every heuristic, on some
clusters drawn from its pools it loses to fastest-feasible by 80% (docs/evaluation.md),
and which heuristic is best changes with the cluster and the mix. A user does not have to
guess: before its first decision ``auto`` plays each member over sampled futures of the
workload on the very cluster it serves (the simulator, from an empty cluster, each member
on the same futures and seeds) and delegates every decision to the member with the lowest
mean objective.

The futures are those of :class:`scheduler.policies.rollout.Future`: streams drawn from the
workload's own generator with seeds of their own (``orchestrator evaluate`` gives them),
never the run's actual tasks; with no streams, the policy's own recent past (the tasks it
was asked to place, replayed from an empty cluster): it places the first ``warmup`` tasks
with the first member, then chooses on what it saw, and again every ``every`` decisions.
"""
from __future__ import annotations

import math

from cluster.state import ClusterState
from scheduler.objective import Objective, load_objective
from scheduler.policies.rollout import Future, _at
from scheduler.policy import Decision, Policy, make_policy, register
from scheduler.task import Task

#: the learned forest and every heuristic that looks at the task's fit (not random, not round-robin):
#: across the random clusters of docs/evaluation.md each of them is the best one somewhere, and a
#: member that is missing cannot be chosen (the first member also places the recent-past warm-up)
DEFAULT_MEMBERS = ("rf,fastest-feasible,best-fit,cheapest-feasible,least-loaded,gpu-clustering,gpu-packing,"
                   "dot-product,fgd,k8s-default,ray-default")


@register("auto")
class Auto:
    """Delegates to the member with the lowest simulated objective (see the module docstring).

    Args:
        members: registered policies to choose from, comma-separated.
        future: where futures come from (default: the recent past).
        warmup: recent-past mode: tasks placed by the first member before the first choice.
        every: recent-past mode: decisions between two choices.
        objective: weights (default ``configs/objective.yaml``).
    """

    pure = False

    def __init__(self, seed: int | None = 0, members: str = DEFAULT_MEMBERS, future: Future | None = None,
                 warmup: int = 200, every: int = 2000, objective: Objective | str | None = None) -> None:
        names = list(dict.fromkeys(m.strip() for m in members.split(",") if m.strip()))
        if not names:
            raise ValueError("members: name at least one policy")
        if "auto" in {n.partition(":")[0] for n in names}:
            raise ValueError("members: auto cannot be its own member")
        if warmup < 2 or every < 1:
            raise ValueError("warmup must be >= 2 and every >= 1")
        self.name = "auto"
        self.members = names
        self.future = future or Future()
        self.warmup, self.every = warmup, every
        self.objective = load_objective(objective) if isinstance(objective, str) else objective or load_objective()
        #: each member's mean objective at the last choice, and the member chosen
        self.table: dict[str, float] = {}
        self.chosen = names[0]
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.seed = seed
        self._live: Policy = make_policy(self.members[0], seed=seed)
        self.chosen = self.members[0]
        self.table = {}
        self._decisions = 0
        self._next_choice = self.warmup  # recent-past mode only: with streams, one choice before the first decision

    def choose(self, state: ClusterState) -> str:
        """Simulate every member over the futures on ``state``'s cluster; keep the best."""
        from simulations.engine import simulate  # the engine imports the policy registry

        if self.future.streams:
            streams = self.future.streams
        else:
            past = list(self.future.past)
            t0 = past[0].arrival
            streams = [[_at(t, t.arrival - t0) for t in past]]
        table = {}
        for name in self.members:
            total = 0.0
            for k, stream in enumerate(streams):  # every member on the same futures and seeds
                r = simulate(state.spec, stream, make_policy(name, seed=k), seed=k, objective=self.objective)
                score = float(r.records["score"].mean())  # the run's objective: unscored tasks are NaN
                total += score if math.isfinite(score) else math.inf  # nothing placed: never the best
            table[name] = total / len(streams)
        best = min(self.members, key=lambda n: (table[n], self.members.index(n)))
        if best != self.chosen:
            self._live = make_policy(best, seed=self.seed)
        self.chosen, self.table = best, table
        return best

    def select(self, task: Task, state: ClusterState) -> Decision:
        self.future.observe(task)
        if self.future.streams:
            if not self.table:
                self.choose(state)
        elif self._decisions == self._next_choice:
            self.choose(state)
            self._next_choice += self.every
        self._decisions += 1
        d = self._live.select(task, state)
        d.policy = self.name
        if self.table:
            ranked = sorted(self.table, key=self.table.get)
            runner = f", next {ranked[1]} {self.table[ranked[1]]:.3g}" if len(ranked) > 1 else ""
            d.explanation = (f"{self.chosen} (auto: simulated objective {self.table[self.chosen]:.3g}{runner}): "
                             f"{d.explanation}")
        else:
            d.explanation = f"{self.chosen} (auto: before its first choice): {d.explanation}"
        return d

