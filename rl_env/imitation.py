"""Warm start: imitate a heuristic's node-class choices before PPO takes over.

Why: from a random start PPO falls into a trap on these clusters. Random
placement parks batch jobs on the edge, so latency-critical tasks sent there
queue and the policy learns to send them to the cloud (each missing its SLO on
network delay alone); once nothing latency-critical uses the edge, parking batch
work there costs nothing, and the policy stays there. Cloning a registered
heuristic (``fastest-feasible`` by default: it keeps latency-critical work on the
edge) starts PPO past the trap; label smoothing keeps the cloned policy
stochastic so PPO still explores (a fully confident clone barely moves).

The teacher's node decision is mapped to its node class, the env's action; the
demonstrations come from training-distribution episodes of the env itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rl_env.config import EnvConfig
from rl_env.env import HeteroClusterEnv
from scheduler.features import layout
from scheduler.policy import make_policy
from scheduler.policy_net import PolicyNet


@dataclass(frozen=True)
class Imitation:
    """Warm-start settings (``init:`` in an experiment file); ``teacher`` None disables it."""

    teacher: str | None = "fastest-feasible"
    steps: int = 30_000
    epochs: int = 3
    label_smoothing: float = 0.2
    lr: float = 1e-3
    batch_size: int = 256


def demonstrations(env_config: EnvConfig, teacher: str, steps: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``steps`` (observation, mask, teacher action) triples from the env's own episodes."""
    env = HeteroClusterEnv(env_config)
    policy = make_policy(teacher)
    policy.reset(seed)
    obs_l, mask_l, act_l = [], [], []
    obs, _ = env.reset(seed=seed)
    cls = layout(env.sim.state).cls
    while len(act_l) < steps:
        decision = policy.select(env._task, env.sim.state)
        a = int(cls[decision.node])
        obs_l.append(obs["observations"])
        mask_l.append(obs["action_mask"])
        act_l.append(a)
        obs, _, terminated, _, _ = env.step(a)
        if terminated:
            obs, _ = env.reset()
    return np.stack(obs_l), np.stack(mask_l), np.asarray(act_l, dtype=np.int64)


def clone(net: PolicyNet, data: tuple[np.ndarray, np.ndarray, np.ndarray], cfg: Imitation,
          seed: int = 0) -> dict[str, float]:
    """Fit ``net`` to the teacher's actions (masked cross-entropy); returns loss and accuracy."""
    x, m, a = (torch.from_numpy(d) for d in data)
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


def warm_start(algorithm: Any, env_config: EnvConfig, cfg: Imitation, seed: int = 0) -> dict[str, float]:
    """Clone the teacher into the learner's policy head and push the weights to the env runners."""
    data = demonstrations(env_config, cfg.teacher, cfg.steps, seed)
    stats: dict[str, float] = {}

    def fit(learner: Any) -> dict[str, float]:
        from ray.rllib.core import DEFAULT_MODULE_ID

        return clone(learner.module[DEFAULT_MODULE_ID].pi, data, cfg, seed)

    results = algorithm.learner_group.foreach_learner(fit)
    first = next(iter(results))
    stats = first.get() if hasattr(first, "get") else first
    algorithm.env_runner_group.sync_weights(from_worker_or_learner_group=algorithm.learner_group,
                                            inference_only=True)
    return stats
