"""``HeteroClusterNodes-v0``: the placement env whose action is a candidate node and share.

The class-level env (:mod:`rl_env.env`) asks for a node class and a fixed rule
picks the node, so on a cluster of one class every policy reduces to that rule.
Here each decision shows the policy one row of per-candidate features per
(node, share) the task could use (:func:`scheduler.features.candidate_features`, the
rows the RandomForest scores; the candidates of :func:`scheduler.candidates.candidates`,
padded to ``max_candidates``) and the action is the row. Nothing is indexed by node,
so one policy trains over several clusters (``cluster_variants``: each episode draws
one, ``xK`` at K times the load) and serves on any.

Everything else (episodes, the exact per-step reward, the correction when a task
finishes) is the class-level env's. A masked action (a padded row) places the task
on the candidate the prefilter rule ranks first (fits now, then least loaded plus
queued) and pays ``invalid_action_penalty``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from cluster.topology import ClusterSpec
from rl_env.env import POLICY_NAME, HeteroClusterEnv, _Shape
from scheduler.candidates import candidates, rank
from scheduler.features import N_CANDIDATE_FEATURES, candidate_features
from scheduler.policy import Decision
from scheduler.task import Task


#: bounds of every candidate feature (logs of ratios, shares and flags; a never-starting wait reads 6)
OBS_BOUND = 1e4


class NodeClusterEnv(HeteroClusterEnv):
    """Place each arriving task on one of its candidate nodes (see the module docstring).

    The config's ``level`` is ``node`` whatever it says (``gymnasium.make("HeteroClusterNodes-v0",
    config=...)`` need not repeat it).
    """

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        from rl_env.config import EnvConfig

        base = config.to_dict() if isinstance(config, EnvConfig) else dict(config or {})
        super().__init__({**base, **kwargs, "level": "node"})

    def _spaces(self) -> tuple[spaces.Dict, spaces.Discrete]:
        k = self.config.max_candidates
        self._clusters = self.config.clusters()
        return (spaces.Dict({"observations": spaces.Box(-OBS_BOUND, OBS_BOUND, (k, N_CANDIDATE_FEATURES), np.float32),
                             "action_mask": spaces.Box(0.0, 1.0, (k,), np.float32)}),
                spaces.Discrete(k))

    def _episode_cluster(self, options: dict[str, Any]) -> tuple[ClusterSpec, float]:
        """One of ``cluster_variants``: ``options["cluster"]`` (a variant name) or a draw."""
        name = options.get("cluster")
        names = self.config.cluster_variants
        if name is not None:
            if name not in names:
                raise ValueError(f"cluster variant {name!r} is not in this env's {list(names)}")
            return self._clusters[names.index(name)]
        if len(self._clusters) == 1:
            return self._clusters[0]
        return self._clusters[int(self.np_random.integers(len(self._clusters)))]

    def _observe(self, task: Task, shape: _Shape) -> dict[str, np.ndarray]:
        state = self.sim.state
        k = self.config.max_candidates
        self._cand = cand = candidates(self._feasibility, task, state, k, self.config.prefilter)
        n = len(cand[0])
        rows = np.zeros((k, N_CANDIDATE_FEATURES), np.float32)
        rows[:n] = candidate_features(task, state, cand[0], cand[1], cand[2], self.objective)
        mask = np.zeros(k, np.float32)
        mask[:n] = 1.0
        return {"observations": rows, "action_mask": mask}

    def _decision(self, a: int) -> tuple[Decision, bool]:
        nodes, shares, fits = self._cand
        invalid = not 0 <= a < len(nodes)
        if invalid:
            a = int(rank(self.sim.state, nodes, fits)[0])
        return Decision(int(nodes[a]), shares[a], self._no_scores, "", POLICY_NAME, queued=not bool(fits[a])), invalid

    def action_of(self, node: int, share: Any) -> int | None:
        """The action (candidate row) that places the current task on ``node`` with ``share``;
        None when the prefilter left that candidate out."""
        nodes, shares, _ = self._cand
        for j, (i, s) in enumerate(zip(nodes.tolist(), shares)):
            if i == node and s == share:
                return j
        return None


def env_class(level: str) -> type[HeteroClusterEnv]:
    """The env of an :class:`rl_env.config.EnvConfig` ``level``."""
    return NodeClusterEnv if level == "node" else HeteroClusterEnv


def make_env(config: Any) -> HeteroClusterEnv:
    """The env ``config`` (an :class:`rl_env.config.EnvConfig` or its mapping) describes."""
    from rl_env.config import EnvConfig

    cfg = EnvConfig.from_mapping(config)
    return env_class(cfg.level)(cfg)
