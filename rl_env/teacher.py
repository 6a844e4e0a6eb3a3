"""The teachers learned policies copy: the rollout policy over sampled futures, the oracle, or a heuristic.

The RandomForest regresses a teacher's per-candidate values (:mod:`rl_env.train_rf`) and the
node-level RL policy starts by cloning its choices (:mod:`rl_env.imitation`); both build it here.
"""
from __future__ import annotations

from typing import Sequence

from scheduler.objective import Objective
from scheduler.policies.oracle import Oracle
from scheduler.policies.rollout import HORIZON_S, HORIZON_TASKS, Future
from scheduler.policy import Policy, make_policy
from scheduler.task import Task

#: sampled futures per candidate of the rollout teacher
TEACHER_SAMPLES = 4
#: the default teacher's base: one heuristic, as rf:1 and rf:2 were distilled (the policy ``rollout``
#: rolls three, and ``train rf`` two by default, ``--teacher-base``: each base is one more labelling pass)
TEACHER_BASE = "fastest-feasible"


def make_teacher(name: str, seed: int = 0, objective: Objective | None = None,
                 streams: Sequence[Sequence[Task]] = (), samples: int = TEACHER_SAMPLES,
                 horizon_tasks: int = HORIZON_TASKS, horizon_s: float = HORIZON_S,
                 base: str = TEACHER_BASE) -> Policy:
    """The labelling policy: ``rollout`` rolling every candidate over futures from ``streams`` with
    the ``base`` heuristics (comma-separated; each candidate valued by the best), the one-step
    oracle, the registry's forest (``rf``, ``rf:N``), or any registered policy (its per-node scores
    are the values)."""
    if name == "rollout":
        return make_policy("rollout", seed=seed, top_k=1 << 30, samples=samples, future=Future(streams),
                           objective=objective, base=base, horizon_tasks=horizon_tasks,
                           horizon_s=horizon_s)
    if name == "oracle":
        return Oracle(seed=seed, objective=objective)
    if name.partition(":")[0] == "rf":  # the registry's forest, without the explanation it would word
        return make_policy(name, seed=seed, explain=False)
    return make_policy(name, seed=seed)
