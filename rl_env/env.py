"""``HeteroCluster-v0``: one placement decision per step, over the online simulator.

A thin wrapper over :class:`simulations.engine.OnlineSimulator`: the env advances
the simulator to the next arrival, shows the policy that task and the cluster,
applies the chosen node class by the rule of :func:`scheduler.actions.resolve` (what
the serving RL policy calls; the env inlines its node choice for speed and the
tests assert they agree), and returns the reward. No simulation logic of
its own.

Spaces (the layout RLlib's action-masking RLModules expect):

* observation: ``Dict(observations=Box(N_FEATURES), action_mask=Box(5))``; the
  features are :func:`scheduler.features.feature_vector` (through its
  :class:`~scheduler.features.FeatureBuilder`, kept across episodes), the
  mask is :func:`scheduler.actions.action_mask` (1 = some node of that class can
  host the task).
* action: ``Discrete(5)``, a node class of :data:`cluster.topology.NODE_CLASSES`.
  A masked action is not an error: the env places the task in the class holding
  the node the least-loaded rule prefers (fits now first, then the lowest
  utilisation plus queue), charges ``invalid_action_penalty`` objective units on
  top, and sets ``info["invalid_action"]``. Masking policies never pay it.

Reward (credit assignment): a step's reward is ``-reward_scale * score`` of the
task placed at that step, where ``score`` is the task's objective
(:mod:`scheduler.objective`). It is exact when given, not an estimate: FIFO
queues make a task's start, speed, latency and cost a function of what was
placed before it (:mod:`rl_env.outcome`). The alternatives are worse: paying
scores as tasks complete puts a decision's consequence hundreds of steps later,
among the effects of other decisions, where a discount of 0.99 all but erases it;
the oracle's expected score is what the myopic oracle already maximises. What a
placement does to *later* tasks (a batch job parked on the edge delays the fraud
checks behind it) reaches the agent through their rewards and the value function,
which is the lookahead a one-step rule lacks. Any gap between a predicted score
and the simulator's record is paid when the task finishes (tests assert it is
zero), so with ``reward_scale`` 1 the undiscounted episode return is exactly
minus the sum of the objective over the episode's placed tasks (minus penalties).

Episodes: one workload draw of ``episode_s`` seconds (default: the workload's
window) after a warm-up drawn uniformly from ``[0, warmup_s]`` seconds of the same
draw that :data:`WARMUP_POLICY` places (no steps, no reward; 0: an empty cluster),
the workload, load factor and seed drawn per episode from the env's RNG
(``reset(seed=...)`` makes it reproducible); training seeds come from ``seed_range``,
far from the small seeds used for evaluation.
Tasks no node can host are rejected without a step (no action could change it).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from cluster.state import ClusterState, fits_now_list
from cluster.topology import NODE_CLASSES, ClusterSpec
from rl_env.config import EnvConfig
from rl_env.outcome import OutcomePredictor
from scheduler.actions import N_ACTIONS, least_loaded_node
from scheduler.features import N_FEATURES, FeatureBuilder, layout
from scheduler.policy import MAX_SHAPES, Decision, FeasibilityCache, why_infeasible
from scheduler.task import Task
from simulations.engine import OnlineSimulator, SimResult
from simulations.workloads import generate_warm

if TYPE_CHECKING:
    from scheduler.policy import _Shape as FeasibleShape  # what FeasibilityCache.shape returns

#: Bounds that hold every feature of any valid task (cpu up to 1,024 cores is 32).
OBS_LOW, OBS_HIGH = -1.0, 64.0
POLICY_NAME = "rl-env"
#: places the tasks of an episode's warm-up (``EnvConfig.warmup_s``)
WARMUP_POLICY = "fastest-feasible"


class _Shape:
    """What the env derives once per feasibility-cache entry: per node share, class mask, class candidates."""

    __slots__ = ("static", "share_of", "feasible", "mask", "in_class")

    def __init__(self, static: FeasibleShape, state: ClusterState) -> None:
        self.static = static
        self.share_of: list = [None] * state.n_nodes
        for i, s in zip(static.node_list, static.shares):
            self.share_of[i] = s
        self.feasible = [s is not None for s in self.share_of]
        members = layout(state).members
        #: per node class, its nodes that can host the task (ascending)
        self.in_class = [[i for i in m.tolist() if self.feasible[i]] for m in members]
        self.mask = np.array([float(len(c) > 0) for c in self.in_class], dtype=np.float32)


class HeteroClusterEnv(gym.Env):
    """Place each arriving task on a node class of a heterogeneous cluster (see the module doc)."""

    metadata = {"render_modes": []}

    def __init__(self, config: Mapping[str, Any] | EnvConfig | None = None, **kwargs: Any) -> None:
        if isinstance(config, EnvConfig) and not kwargs:
            self.config = config
        else:
            base = config.to_dict() if isinstance(config, EnvConfig) else dict(config or {})
            self.config = EnvConfig.from_mapping({**base, **kwargs})
        if self.config.level == "node" and type(self) is HeteroClusterEnv:
            raise ValueError("level: node is HeteroClusterNodes-v0 (rl_env.node_env.make_env builds the env a "
                             "config names)")
        self.cluster, self.workloads, self.objective = self.config.load()
        self.observation_space, self.action_space = self._spaces()
        self.sim: OnlineSimulator | None = None
        self.result: SimResult | None = None  # the finished episode's simulation (records, summary)
        self.episode: dict[str, Any] = {}
        self._feasibility = FeasibilityCache()  # the policies' static filter, shared per task shape
        self._shapes: dict[FeasibleShape, _Shape] = {}
        self._builder: FeatureBuilder | None = None
        self._seed_cursor = 0
        self._warm = None  # the warm-up's policy, made on the first episode that has one
        self._label_from = -np.inf
        self._terminal_obs = {k: np.zeros(v.shape, np.float32) if k == "observations" else np.ones(v.shape, np.float32)
                              for k, v in self.observation_space.spaces.items()}

    def _spaces(self) -> tuple[spaces.Dict, spaces.Discrete]:
        """(observation space, action space): features and a mask over node classes."""
        return (spaces.Dict({"observations": spaces.Box(OBS_LOW, OBS_HIGH, (N_FEATURES,), np.float32),
                             "action_mask": spaces.Box(0.0, 1.0, (N_ACTIONS,), np.float32)}),
                spaces.Discrete(N_ACTIONS))

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None,
              options: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode; ``options`` may pin ``workload`` (index or name), ``load_factor``, ``seed``."""
        super().reset(seed=seed)
        if seed is not None:
            self._seed_cursor = 0
        options = dict(options or {})
        for _ in range(100):  # a draw with no decision to make (all rejected, or empty) is skipped
            self._start_episode(options)
            if self._advance():
                return self._obs, dict(self.episode)
            if options.get("seed") is not None:
                raise ValueError(f"episode {self.episode} has no task any node can host")
        raise RuntimeError(f"100 episodes in a row had no task to place: check {self.config.workloads}")

    def step(self, action: int) -> tuple[dict, float, bool, bool, dict]:
        if self.sim is None or self._task is None:
            raise RuntimeError("call reset() before step() (and again after an episode ends)")
        task = self._task
        decision, invalid = self._decision(int(action))
        outcome = self._predictor.place(self.sim, task, decision)
        self._predicted[task.id] = outcome.score
        cost = outcome.score + (self.config.invalid_action_penalty if invalid else 0.0)
        self.episode["steps"] += 1
        info = {"score": outcome.score, "class": NODE_CLASSES[int(layout(self.sim.state).cls[decision.node])],
                "invalid_action": invalid}
        terminated = not self._advance()
        cost += self._correction()
        if terminated:
            info["episode"] = self._summary()
            obs = self._terminal_obs
        else:
            obs = self._obs
        return obs, -self.config.reward_scale * cost, terminated, False, info

    # ------------------------------------------------------------------ internals
    def _decision(self, a: int) -> tuple[Decision, bool]:
        """The placement action ``a`` stands for, and whether ``a`` was masked (see the module doc)."""
        shape = self._shape
        invalid = not (0 <= a < N_ACTIONS and shape.mask[a] > 0)
        if invalid:
            a = self._fallback_action(shape)
        node = self._resolve_node(a, shape)
        return Decision(node, shape.share_of[node], self._no_scores, "", POLICY_NAME,
                        queued=not self._fits[node]), invalid

    def _observe(self, task: Task, shape: _Shape) -> dict[str, np.ndarray]:
        """The observation of placing ``task`` now (sets what :meth:`_decision` reads)."""
        self._fits = self._fits_now(task, shape)
        return {"observations": self._builder.build(task, shape.feasible, self._fits), "action_mask": shape.mask}

    def _episode_cluster(self, options: dict[str, Any]) -> tuple[ClusterSpec, float]:
        """The episode's cluster and the factor its load scales by (this env: its one cluster)."""
        return self.cluster, 1

    def _start_episode(self, options: dict[str, Any]) -> None:
        rng = self.np_random
        cfg = self.config
        w = options.get("workload")
        if w is None:
            wi = int(rng.integers(len(self.workloads)))
        elif isinstance(w, str):
            names = [s.name for s in self.workloads]
            if w not in names:
                raise ValueError(f"workload {w!r} is not in this env's workloads {names}")
            wi = names.index(w)
        else:
            wi = int(w)
        wl = self.workloads[wi]
        spec, factor = self._episode_cluster(options)
        lf = options.get("load_factor")  # as every draw, per the cluster itself: a variant xK runs at K times it
        if lf is None:
            lf = wl.load_factor if cfg.load_factor is None else float(rng.uniform(*cfg.load_factor))
            if cfg.load_scale != (1.0, 1.0):
                lf *= float(rng.uniform(*cfg.load_scale))
        lf = float(lf) * factor
        s = options.get("seed")
        if s is None:
            if cfg.seeds:
                s = cfg.seeds[self._seed_cursor % len(cfg.seeds)]
                self._seed_cursor += 1
            else:
                s = int(rng.integers(*cfg.seed_range))
        warm = float(rng.uniform(0.0, cfg.warmup_s)) if cfg.warmup_s > 0 else 0.0
        tasks, self._label_from = generate_warm(wl, int(s), float(lf), cfg.episode_s, warm)
        if warm > 0 and self._warm is None:
            from scheduler.policy import make_policy

            self._warm = make_policy(WARMUP_POLICY)
        self.sim = OnlineSimulator(spec, tasks, seed=int(s), objective=self.objective,
                                   timeline_points=1, policy_name=POLICY_NAME)
        state = self.sim.state
        if self._builder is None or self._builder.spec is not spec:
            self._builder = FeatureBuilder(state)
        self._builder.state = state  # static layout is per cluster; keep the shape caches
        self._no_scores = np.full(state.n_nodes, np.nan)
        self._predictor = OutcomePredictor(state, self.objective)
        self._predicted: dict[str, float] = {}
        self._seen = 0
        self.result = None
        self.correction_total = 0.0
        self._task: Task | None = None
        self.episode = {"workload": wl.name, "load_factor": float(lf), "seed": int(s), "cluster": spec.name,
                        "tasks": len(tasks), "steps": 0, "rejected": 0, "warmup_tasks": 0}

    def _advance(self) -> bool:
        """Move to the next task some node can host; False when the episode's arrivals are done."""
        sim = self.sim
        while (task := sim.next_task()) is not None:
            if task.arrival < self._label_from:
                sim.place(task, self._warm.select(task, sim.state))
                self.episode["warmup_tasks"] += 1
                continue
            shape = self._shape_of(task)
            if shape.static.node_list:
                self._task, self._shape = task, shape
                self._obs = self._observe(task, shape)
                return True
            sim.place(task, Decision(-1, None, np.full(sim.state.n_nodes, np.nan),
                                     why_infeasible(task, sim.state), POLICY_NAME))
            self.episode["rejected"] += 1
        self._task = None
        return False

    def _shape_of(self, task: Task) -> _Shape:
        static = self._feasibility.shape(task, self.sim.state)
        shape = self._shapes.get(static)
        if shape is None:
            if len(self._shapes) >= MAX_SHAPES:  # the cache starts over too: drop what only it kept
                self._shapes.clear()
            shape = self._shapes[static] = _Shape(static, self.sim.state)
        return shape

    def _fits_now(self, task: Task, shape: _Shape) -> list[bool]:
        state = self.sim.state
        fits = [False] * state.n_nodes
        st = shape.static
        for i, ok in zip(st.node_list, fits_now_list(state, task, st.node_list, st.shares, st.cpu_only)):
            fits[i] = ok
        return fits

    def _resolve_node(self, action: int, shape: _Shape) -> int:
        """The node :func:`scheduler.actions.resolve` picks for ``action``, without building its
        explanation."""
        state = self.sim.state
        return least_loaded_node(shape.in_class[action], self._fits, state.util.tolist(), state.queue_len.tolist())

    def _fallback_action(self, shape: _Shape) -> int:
        """The class of the node the least-loaded rule prefers (fits now first, then load + queue)."""
        state = self.sim.state
        best = least_loaded_node(shape.static.node_list, self._fits, state.util.tolist(), state.queue_len.tolist())
        return int(layout(state).cls[best])

    def _correction(self) -> float:
        """Score the engine recorded minus the score predicted, over tasks finished since the last step."""
        records = self.sim.records
        diff = 0.0
        for k in range(self._seen, len(records)):
            r = records[k]
            pred = self._predicted.pop(r.task_id, None)
            if pred is not None and r.score != pred:
                diff += r.score - pred
        self._seen = len(records)
        if self._task is None:  # the last arrival is placed: run the rest to completion
            self.result = self.sim.finish()
            self._seen = len(self.sim.records)
            for r in self.sim.records:
                pred = self._predicted.pop(r.task_id, None)
                if pred is not None and r.score != pred:
                    diff += r.score - pred
        self.correction_total += diff
        return diff

    def _summary(self) -> dict[str, Any]:
        """The episode's figures over the tasks the agent placed (the warm-up's are not its doing)."""
        recs = self.result.records
        if self.episode.get("warmup_tasks"):
            from simulations.metrics import summarize

            recs = recs[recs["arrival"] >= self._label_from]
            s = summarize(recs)
        else:
            s = self.result.summary
        return {**self.episode, "objective_mean": s["objective_mean"], "slo_miss_rate": s["slo_miss_rate"],
                "objective_total": float(recs["score"].sum()), "correction_total": self.correction_total}
