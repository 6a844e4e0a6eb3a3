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
import os

from cluster.state import ClusterState
from scheduler import model_registry
from scheduler.objective import Objective, load_objective
from scheduler.policies.rollout import Future, _at
from scheduler.policy import Decision, Policy, make_policy, register
from scheduler.task import Task

#: the learned forest and every heuristic that looks at the task's fit (not random, not round-robin):
#: across the random clusters of docs/evaluation.md each of them is the best one somewhere, and a
#: member that is missing cannot be chosen (the first member also places the recent-past warm-up)
DEFAULT_MEMBERS = ("rf,fastest-feasible,best-fit,cheapest-feasible,least-loaded,gpu-clustering,gpu-packing,"
                   "dot-product,fgd,k8s-default,ray-default")
#: members loaded from the model registry (name -> registry kind): pinned to a version when built
LEARNED_MEMBERS = {"rf": "rf", "rl": "rl", "rl-sample": "rl"}
#: policies that simulate the workload's futures themselves (rollout per decision, auto per run): no
#: member of auto (it would simulate inside every simulated decision); evaluate gives them futures
LOOKAHEAD = ("rollout", "auto")


def learned_members(members: str = DEFAULT_MEMBERS, root: str | os.PathLike | None = None) -> list[str]:
    """The learned members of ``members``, each pinned to its registry version (``rf`` -> ``rf:5``):
    what ``auto`` may delegate to, so an evaluation checks their training seeds and clusters too."""
    return [_pinned(n, root) for n in _names(members) if n.partition(":")[0] in LEARNED_MEMBERS]


def _pinned(name: str, root: str | os.PathLike | None) -> str:
    """``name`` with its registry version when it is learned (a missing model raises here)."""
    base, _, version = name.partition(":")
    if base not in LEARNED_MEMBERS:
        return name
    return f"{base}:{model_registry.resolve(LEARNED_MEMBERS[base], version or 'latest', root).name}"


def _names(members: str) -> list[str]:
    names = list(dict.fromkeys(m.strip() for m in members.split(",") if m.strip()))
    if not names:
        raise ValueError("members: name at least one policy")
    bad = [n for n in names if n.partition(":")[0] in LOOKAHEAD]
    if bad:
        raise ValueError(f"members: {', '.join(bad)} cannot be a member (it simulates at every decision)")
    return names


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
                 warmup: int = 200, every: int = 2000, objective: Objective | str | None = None,
                 root: str | os.PathLike | None = None) -> None:
        names = _names(members)
        if warmup < 2 or every < 1:
            raise ValueError("warmup must be >= 2 and every >= 1")
        self.members = [_pinned(n, root) for n in names]  # a missing model fails here, not mid-run
        self._root = root
        # one instance per member for the simulated runs (each run resets it), built now so that a
        # bad member fails at construction; learned ones without the explanation nobody reads there
        self._sim: dict[str, Policy] = {n: self._make(n, explain=False) for n in self.members}
        self.name = "auto"
        self.future = future or Future()
        self.warmup, self.every = warmup, every
        self.objective = load_objective(objective) if isinstance(objective, str) else objective or load_objective()
        self.reset(seed)

    def _make(self, name: str, seed: int | None = 0, explain: bool = True) -> Policy:
        if name.partition(":")[0] in LEARNED_MEMBERS:
            params = {"root": self._root} if self._root is not None else {}
            return make_policy(name, seed=seed, **params, **({"explain": explain} if name.startswith("rf:") else {}))
        return make_policy(name, seed=seed)

    def reset(self, seed: int | None = None) -> None:
        self.seed = seed
        self._live: Policy = self._make(self.members[0], seed)
        #: each member's mean objective at the last choice, and the member chosen
        self.table: dict[str, float] = {}
        self.chosen = self.members[0]
        self._why = f"{self.chosen} (auto: before its first choice): "  # what each decision's explanation starts with
        self.future.past.clear()  # the recent past is this run's
        self._decisions = 0
        self._next_choice = self.warmup  # recent-past mode only: with streams, one choice before the first decision

    def choose(self, state: ClusterState) -> str:
        """Simulate every member over the futures on ``state``'s cluster; keep the best."""
        from simulations.engine import simulate  # the engine imports the policy registry

        if self.future.streams:
            streams = self.future.streams
            basis = f"over {len(streams)} sampled futures"
        else:  # the tasks it was asked to place, once each (a re-placed task comes again), from an empty cluster
            past = sorted({t.id: t for t in self.future.past}.values(), key=lambda t: t.arrival)
            t0 = past[0].arrival
            streams = [[_at(t, t.arrival - t0) for t in past]]
            basis = f"on its last {len(past)} tasks"
        table = {}
        for name, policy in self._sim.items():
            total = 0.0
            for k, stream in enumerate(streams):  # every member on the same futures and seeds
                r = simulate(state.spec, stream, policy, seed=k, objective=self.objective)
                score = r.summary["objective_mean"]
                total += score if math.isfinite(score) else math.inf  # nothing placed: never the best
            table[name] = total / len(streams)
        best = min(self.members, key=lambda n: (table[n], self.members.index(n)))
        if best != self.chosen:
            self._live = self._make(best, self.seed)
        self.chosen, self.table = best, table
        ranked = sorted(table, key=table.get)
        runner = f", next {ranked[1]} {table[ranked[1]]:.3g}" if len(ranked) > 1 else ""
        self._why = f"{best} (auto: simulated objective {table[best]:.3g} {basis}{runner}): "
        return best

    def select(self, task: Task, state: ClusterState) -> Decision:
        if self.future.streams:
            if not self.table:
                self.choose(state)
        elif self._decisions == self._next_choice:  # on the tasks placed so far
            self.choose(state)
            self._next_choice += self.every
        self.future.observe(task)
        self._decisions += 1
        d = self._live.select(task, state)
        d.policy = self.name
        d.explanation = self._why + d.explanation
        return d
