"""Gymnasium environment over the simulator core, RLlib PPO training through Tune, export.

Importing this package registers ``HeteroCluster-v0`` (actions: node classes) and
``HeteroClusterNodes-v0`` (actions: candidate nodes) with Gymnasium, so
``gymnasium.make("HeteroCluster-v0", config={...})`` works. RLlib and torch are
imported only by :mod:`rl_env.train`, :mod:`rl_env.module` and :mod:`rl_env.export`.
"""
from __future__ import annotations

import gymnasium as gym

ENV_ID = "HeteroCluster-v0"
NODE_ENV_ID = "HeteroClusterNodes-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="rl_env.env:HeteroClusterEnv")
if NODE_ENV_ID not in gym.registry:
    gym.register(id=NODE_ENV_ID, entry_point="rl_env.node_env:NodeClusterEnv")
