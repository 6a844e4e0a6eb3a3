"""The RLlib (new API stack) module PPO trains: a masked policy head and a separate value net.

Like RLlib's action-masking example module it reads ``Dict(observations,
action_mask)`` observations and pushes masked logits to ``FLOAT_MIN``, so
exploration never samples a class that cannot host the task and the PPO loss
never pushes probability onto one. Unlike it, the policy head is a plain
:class:`scheduler.policy_net.PolicyNet`, so export is a ``state_dict`` copy that
serving loads without RLlib (:mod:`rl_env.export`). Policy and value nets share
no layers: the value loss (returns of hundreds of objective units) cannot drown
the policy gradient.

Node-level observations (``observations`` of shape ``(K, F)``: one row per candidate
node and share, :class:`rl_env.node_env.NodeClusterEnv`) get a per-row scorer
(``PolicyNet`` at level ``node``) and a value net over the candidates' masked mean and
max, so neither depends on the cluster's size.

``model_config``: ``hiddens`` (default ``[64, 64]``) and ``activation``
(``tanh`` | ``relu`` | ``silu``).
"""
from __future__ import annotations

from typing import Any

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from scheduler.policy_net import NetSpec, PolicyNet, mlp


class MaskedPlacementModule(TorchRLModule, ValueFunctionAPI):
    """PPO module over ``HeteroCluster-v0`` observations (see the module docstring)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        space = self.observation_space
        if not hasattr(space, "spaces") or {"observations", "action_mask"} - set(space.spaces):
            raise ValueError("MaskedPlacementModule needs Dict(observations=Box, action_mask=Box) "
                             f"observations, got {space}")
        cfg = dict(self.model_config or {})
        shape = space["observations"].shape
        self.net_spec = NetSpec(in_dim=int(shape[-1]), n_actions=int(self.action_space.n),
                                hiddens=tuple(int(h) for h in cfg.get("hiddens", (64, 64))),
                                activation=str(cfg.get("activation", "tanh")),
                                level="node" if len(shape) == 2 else "class")
        self.pi = PolicyNet(self.net_spec)
        vf_in = 2 * self.net_spec.in_dim if self.net_spec.level == "node" else self.net_spec.in_dim
        self.vf = mlp(vf_in, self.net_spec.hiddens, 1, self.net_spec.activation)

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        return {Columns.ACTION_DIST_INPUTS: self.pi.masked_logits(obs["observations"], obs["action_mask"])}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward(batch, **kwargs)

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None):
        obs = batch[Columns.OBS]
        x = obs["observations"]
        if self.net_spec.level == "node":
            x = pooled(x, obs["action_mask"])
        return self.vf(x).squeeze(-1)


def pooled(rows: Any, mask: Any) -> Any:
    """The candidates' mean and max per feature (padded rows left out): ``(B, K, F) -> (B, 2F)``."""
    import torch

    m = mask.unsqueeze(-1)
    n = m.sum(-2)
    mean = (rows * m).sum(-2) / n.clamp(min=1.0)
    top = torch.where(m > 0, rows, torch.full_like(rows, -1e9)).amax(-2)
    top = torch.where(n > 0, top, torch.zeros_like(top))
    return torch.cat([mean, top], -1)
