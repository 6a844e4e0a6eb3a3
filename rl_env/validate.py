"""Greedy rollouts of a policy network on fixed episodes: how training picks its best checkpoint.

Training returns are noisy (each episode draws a workload, load and seed) and
reward a stochastic policy; what ships is the greedy policy. So every few
iterations the trainer plays the greedy policy on the same validation episodes
(seeds outside the training range and the evaluation seeds) and ranks checkpoints
by their mean objective.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from rl_env.config import EnvConfig
from rl_env.node_env import make_env
from scheduler.policy_net import PolicyNet


def greedy_rollouts(net: PolicyNet, env_config: EnvConfig,
                    episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Play ``net`` greedily on each episode (``reset`` options); mean objective and SLO miss rate."""
    env = make_env(env_config)
    out = []
    was_training = net.training
    net.eval()
    try:
        for opts in episodes:
            obs, _ = env.reset(options=dict(opts))
            while True:
                with torch.inference_mode():
                    x = torch.from_numpy(obs["observations"])[None]
                    m = torch.from_numpy(obs["action_mask"])[None]
                    a = int(net.masked_logits(x, m).argmax(-1))
                obs, _, terminated, _, info = env.step(a)
                if terminated:
                    out.append(info["episode"])
                    break
    finally:
        net.train(was_training)
    return {"objective": float(np.mean([e["objective_mean"] for e in out])),
            "slo_miss_rate": float(np.mean([e["slo_miss_rate"] for e in out])),
            "episodes": out}
