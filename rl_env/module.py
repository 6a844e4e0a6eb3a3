"""The RLlib (new API stack) module PPO trains: a masked policy head and a separate value net.

Like RLlib's action-masking example module it reads ``Dict(observations,
action_mask)`` observations and pushes masked logits to ``FLOAT_MIN``, so
exploration never samples a class that cannot host the task and the PPO loss
never pushes probability onto one. Unlike it, the policy head is a plain
:class:`scheduler.policy_net.PolicyNet`, so export is a ``state_dict`` copy that
serving loads without RLlib (:mod:`rl_env.export`). Policy and value nets share
no layers: the value loss (returns of hundreds of objective units) cannot drown
the policy gradient.

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
        self.net_spec = NetSpec(in_dim=int(space["observations"].shape[0]), n_actions=int(self.action_space.n),
                                hiddens=tuple(int(h) for h in cfg.get("hiddens", (64, 64))),
                                activation=str(cfg.get("activation", "tanh")))
        self.pi = PolicyNet(self.net_spec)
        self.vf = mlp(self.net_spec.in_dim, self.net_spec.hiddens, 1, self.net_spec.activation)

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        obs = batch[Columns.OBS]
        return {Columns.ACTION_DIST_INPUTS: self.pi.masked_logits(obs["observations"], obs["action_mask"])}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward(batch, **kwargs)

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None):
        return self.vf(batch[Columns.OBS]["observations"]).squeeze(-1)
