"""Warm start: imitate a teacher's choices (node classes, or candidate nodes) before PPO takes over.

Why: from a random start PPO falls into a trap on these clusters. Random
placement parks batch jobs on the edge, so latency-critical tasks sent there
queue and the policy learns to send them to the cloud (each missing its SLO on
network delay alone); once nothing latency-critical uses the edge, parking batch
work there costs nothing, and the policy stays there. Cloning a registered
heuristic (``fastest-feasible`` by default: it keeps latency-critical work on the
edge) starts PPO past the trap; label smoothing keeps the cloned policy
stochastic so PPO still explores (a fully confident clone barely moves).

The teacher's node decision is mapped to the env's action: its node class, or at
node level (:mod:`rl_env.node_env`) the candidate row of its node and share. The
demonstrations come from training-distribution episodes of the env itself. The
``rollout`` teacher (:mod:`scheduler.policies.rollout`) samples its futures from the
episode's own workload at the episode's load (streams of seeds no run uses), as it
does when it labels the RandomForest's data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rl_env.config import EnvConfig
from rl_env.node_env import make_env
from rl_env.teacher import make_teacher
from scheduler.policies.rollout import HORIZON_TASKS
from scheduler.features import layout
from scheduler.policy import Policy
from scheduler.policy_net import PolicyNet


#: the seed of DAgger round ``r`` is the run's seed plus ``r`` times this
DAGGER_SEED_STEP = 7919


@dataclass(frozen=True)
class Imitation:
    """Warm-start settings (``init:`` in an experiment file); ``teacher`` None disables it."""

    teacher: str | None = "fastest-feasible"
    steps: int = 30_000
    epochs: int = 3
    label_smoothing: float = 0.2
    lr: float = 1e-3
    batch_size: int = 256
    #: DAgger (Ross et al. 2011): rounds after the first let the clone drive while the teacher
    #: labels, so it learns what to do in the states its own mistakes lead to
    rounds: int = 1
    #: the rollout teacher's horizon (sampled arrivals per future), when ``teacher`` is rollout
    horizon: int = HORIZON_TASKS
    #: a forest teacher (``rf``, ``rf:N``) at node level: learn its whole ranking, the softmax of
    #: its negated predicted regrets at this temperature over the candidate rows, instead of its
    #: choice alone (logit matching, Hinton et al. 2015); None: the choice, label-smoothed
    temperature: float | None = None


def demonstrations(env_config: EnvConfig, teacher: str, steps: int, seed: int = 0,
                   driver: PolicyNet | None = None, horizon: int = HORIZON_TASKS,
                   temperature: float | None = None) -> tuple[np.ndarray, ...]:
    """``steps`` (observation, mask, teacher action, soft target) rows from the env's own episodes;
    the teacher's choices are played unless a ``driver`` network is given (its greedy choices are).
    The soft targets (see :attr:`Imitation.temperature`) are an empty array without a temperature."""
    env = make_env(env_config)
    node_level = env.config.level == "node"
    if temperature is not None and not (node_level and teacher.partition(":")[0] == "rf"):
        raise ValueError("soft targets (init.temperature) need a forest teacher (rf, rf:N) at node level")
    obs_l, mask_l, act_l, soft_l = [], [], [], []
    obs, _ = env.reset(seed=seed)
    policy = _teacher(teacher, env, seed, horizon)
    while len(act_l) < steps:
        decision = policy.select(env._task, env.sim.state)
        if node_level:
            a = env.action_of(decision.node, decision.share)
        else:
            a = int(layout(env.sim.state).cls[decision.node])
        if a is not None:  # a candidate the prefilter cut is not a row to learn; the env falls back
            obs_l.append(obs["observations"])
            mask_l.append(obs["action_mask"])
            act_l.append(a)
            if temperature is not None:  # the env's rows are the forest's own (the same candidates and features)
                soft_l.append(_soft_target(policy, obs["observations"], obs["action_mask"], temperature))
        if driver is not None:
            with torch.inference_mode():
                a = int(driver.masked_logits(torch.from_numpy(obs["observations"])[None],
                                             torch.from_numpy(obs["action_mask"])[None]).argmax(-1))
        obs, _, terminated, _, _ = env.step(-1 if a is None else a)
        if terminated:
            obs, _ = env.reset()
            policy = _teacher(teacher, env, seed + len(act_l), horizon)
    soft = np.stack(soft_l) if soft_l else np.zeros((0,), np.float32)
    return np.stack(obs_l), np.stack(mask_l), np.asarray(act_l, dtype=np.int64), soft


def _soft_target(forest_policy: Any, rows: np.ndarray, mask: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(-predicted regret / temperature) over the feasible rows, 0 elsewhere."""
    ok = mask > 0
    z = -forest_policy.forest.predict_rows(rows[ok])[0] / temperature
    p = np.exp(z - z.max())
    out = np.zeros(len(mask), np.float32)
    out[ok] = p / p.sum()
    return out


def _teacher(name: str, env, seed: int, horizon: int = HORIZON_TASKS) -> Policy:
    """The teacher for the env's current episode (the rollout teacher's futures are the episode's workload)."""
    streams = ()
    if name == "rollout":
        from simulations.workloads import future_streams

        ep = env.episode
        wl = next(w for w in env.workloads if w.name == ep["workload"])
        streams = future_streams(wl, load_factor=ep["load_factor"])
    policy = make_teacher(name, seed, env.objective, streams, horizon_tasks=horizon)
    policy.reset(seed)
    return policy


def clone(net: PolicyNet, data: tuple[np.ndarray, ...], cfg: Imitation,
          seed: int = 0) -> dict[str, float]:
    """Fit ``net`` to the teacher (masked cross-entropy against its soft targets where ``data``
    has them, else its label-smoothed choices); returns loss and accuracy (of the choice)."""
    x, m, a = (torch.from_numpy(d) for d in data[:3])
    soft = torch.from_numpy(data[3]) if len(data) > 3 and len(data[3]) else None
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(a)
    loss_sum = acc = 0.0
    net.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        loss_sum = acc = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            logits = net.masked_logits(x[idx], m[idx])
            # smoothing spreads mass over feasible classes only (masked logits are ~-inf)
            logp = torch.log_softmax(logits, -1)
            if soft is not None:
                target = soft[idx]
            else:
                target = torch.nn.functional.one_hot(a[idx], logits.shape[-1]).float()
                feasible = m[idx] / m[idx].sum(-1, keepdim=True)
                target = (1 - cfg.label_smoothing) * target + cfg.label_smoothing * feasible
            loss = -(target * torch.where(m[idx] > 0, logp, torch.zeros_like(logp))).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            acc += float((logits.argmax(-1) == a[idx]).sum())
    return {"loss": loss_sum / n, "accuracy": acc / n, "samples": n}


def imitate(net: PolicyNet, env_config: EnvConfig, cfg: Imitation, seed: int = 0) -> dict[str, float]:
    """Clone the teacher into ``net``: ``cfg.rounds`` rounds of DAgger, the rows of all rounds pooled."""
    data = demonstrations(env_config, cfg.teacher, cfg.steps, seed, horizon=cfg.horizon,
                          temperature=cfg.temperature)
    stats = clone(net, data, cfg, seed)
    for r in range(1, cfg.rounds):
        new = demonstrations(env_config, cfg.teacher, cfg.steps, seed + DAGGER_SEED_STEP * r, driver=net,
                             horizon=cfg.horizon, temperature=cfg.temperature)
        # how often the clone, driving, already chose as the teacher would (before refitting)
        stats_r = {f"round{r}_agreement": _agreement(net, new)}
        data = tuple(np.concatenate([a, b]) for a, b in zip(data, new))
        stats = {**stats, **stats_r, **clone(net, data, cfg, seed + r)}
    return {**stats, "rounds": cfg.rounds}


def _agreement(net: PolicyNet, data: tuple[np.ndarray, ...]) -> float:
    x, m, a = (torch.from_numpy(d) for d in data[:3])
    with torch.inference_mode():
        return float((net.masked_logits(x, m).argmax(-1) == a).float().mean())


def warm_start(algorithm: Any, env_config: EnvConfig, cfg: Imitation, seed: int = 0) -> dict[str, float]:
    """Clone the teacher into the learner's policy head and push the weights to the env runners."""

    def fit(learner: Any) -> dict[str, float]:
        from ray.rllib.core import DEFAULT_MODULE_ID

        return imitate(learner.module[DEFAULT_MODULE_ID].pi, env_config, cfg, seed)

    results = algorithm.learner_group.foreach_learner(fit)
    first = next(iter(results))
    stats = first.get() if hasattr(first, "get") else first
    algorithm.env_runner_group.sync_weights(from_worker_or_learner_group=algorithm.learner_group,
                                            inference_only=True)
    return stats
