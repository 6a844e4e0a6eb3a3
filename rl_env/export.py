"""Export a trained RLlib module to the policy registry as a plain torch module.

The artifact (``artifacts/policies/rl/<version>/``) holds ``policy.pt`` (the policy
head's ``state_dict``: tensors only), ``meta.json`` (architecture spec, feature
schema and names, training config and metrics, the command and seed that made
it) and optionally ``curves.csv`` (learning curves). Serving rebuilds
:class:`scheduler.policy_net.PolicyNet` from the spec; no RLlib, no Ray.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

from scheduler import model_registry
from scheduler.policy_net import PolicyNet, save_policy

POLICY_FILE = "policy.pt"
CURVES_FILE = "curves.csv"


def module_dir(checkpoint: str | Path) -> Path:
    """The RLModule folder inside an Algorithm checkpoint (or ``checkpoint`` if it is one)."""
    from ray.rllib.core import (COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE,
                                DEFAULT_MODULE_ID)

    p = Path(checkpoint)
    nested = p / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
    if nested.is_dir():
        return nested
    if (p / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID).is_dir():  # a Learner checkpoint
        return p / COMPONENT_RL_MODULE / DEFAULT_MODULE_ID
    return p


def load_rl_module(checkpoint: str | Path):
    """The trained :class:`rl_env.module.MaskedPlacementModule` of a checkpoint."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    return RLModule.from_checkpoint(str(module_dir(checkpoint)))


def to_policy_net(module: Any) -> PolicyNet:
    """A detached plain-torch copy of the module's policy head, in eval mode on CPU."""
    pi = getattr(module, "pi", None)
    if not isinstance(pi, PolicyNet):
        raise TypeError(f"{type(module).__name__} has no PolicyNet head 'pi': export needs a "
                        "rl_env.module.MaskedPlacementModule")
    net = copy.deepcopy(pi).cpu()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def export_policy(net: PolicyNet, meta: Mapping[str, Any], root: str | Path | None = None,
                  curves: str | Path | None = None) -> Path:
    """Write ``net`` as a new ``rl`` version of the registry and return its folder."""
    files: dict[str, Any] = {POLICY_FILE: lambda p: save_policy(net, str(p))}
    if curves is not None and Path(curves).is_file():
        files[CURVES_FILE] = Path(curves).read_bytes()
    body = dict(meta)
    body["architecture"] = net.spec.to_dict()
    body.setdefault("format", "torch state_dict of scheduler.policy_net.PolicyNet")
    return model_registry.save("rl", files, body, root)


def export_checkpoint(checkpoint: str | Path, meta: Mapping[str, Any], root: str | Path | None = None,
                      curves: str | Path | None = None) -> Path:
    """Load the module of ``checkpoint`` and export its policy (see :func:`export_policy`)."""
    return export_policy(to_policy_net(load_rl_module(checkpoint)), {**meta, "checkpoint": str(checkpoint)},
                         root, curves)
