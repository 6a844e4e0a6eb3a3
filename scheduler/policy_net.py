"""The RL placement policy's network: what training builds (torch) and serving runs (numpy).

Two levels. ``class``: one feature vector per task -> one logit per node class.
``node``: one row of per-candidate features per (node, share) the task could use ->
one logit per row, by the same weights for every row (Decima's per-node scoring),
so one network places tasks on a cluster of any size; ``n_actions`` is then the
padded number of candidates the env showed (its ``max_candidates``).

The RLlib module (:mod:`rl_env.module`) holds a :class:`PolicyNet` as its policy
head, so exporting a trained policy is copying one ``state_dict`` and a small
architecture spec (:class:`NetSpec`); serving rebuilds the same class from the
spec and needs neither RLlib nor Ray. Masking follows RLlib's action-masking
modules: ``logits + clamp(log(mask), min=FLOAT_MIN)``.

Serving runs the loaded weights in numpy (:class:`ServedNet`): a decision scores a
handful of rows, where torch's per-call dispatch costs more than the arithmetic, and
its intra-op threads keep spinning after each call on a 2-core replica that also
serves HTTP (see ``docs/serve.md``). OpenBLAS would split the products of 16 rows
or more over its threads too, at twice to ten times the single thread's time here,
so those run on one.

torch is imported here, so import this module lazily (the policy registry loads
every policy module at start-up).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch
from scipy.special import expit
from torch import nn

#: RLlib's FLOAT_MIN (ray.rllib.utils.torch_utils): the masked logit floor.
FLOAT_MIN = -3.4e38
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU}
LEVELS = ("class", "node")


@dataclass(frozen=True)
class NetSpec:
    """Architecture of a :class:`PolicyNet`: enough to rebuild it before loading weights."""

    in_dim: int
    n_actions: int
    hiddens: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    level: str = "class"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level {self.level!r} not in {LEVELS}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} not in {sorted(ACTIVATIONS)}")
        if self.in_dim < 1 or self.n_actions < 1 or any(h < 1 for h in self.hiddens):
            raise ValueError(f"bad network sizes {self}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hiddens"] = list(self.hiddens)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NetSpec":
        return cls(in_dim=int(d["in_dim"]), n_actions=int(d["n_actions"]),
                   hiddens=tuple(int(h) for h in d.get("hiddens", (64, 64))),
                   activation=str(d.get("activation", "tanh")), level=str(d.get("level", "class")))


def mlp(in_dim: int, hiddens: tuple[int, ...], out_dim: int, activation: str,
        out_gain: float = 1.0) -> nn.Sequential:
    """Linear-activation stack; the last layer scaled by ``out_gain`` (small: near-uniform start)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hiddens:
        layers += [nn.Linear(d, h), ACTIVATIONS[activation]()]
        d = h
    last = nn.Linear(d, out_dim)
    with torch.no_grad():
        last.weight.mul_(out_gain)
        last.bias.zero_()
    layers.append(last)
    return nn.Sequential(*layers)


class PolicyNet(nn.Module):
    """Features -> action logits; :meth:`masked_logits` removes actions that cannot host the task.

    ``class`` level: ``obs`` is ``(B, in_dim)``; ``node`` level: ``(B, K, in_dim)``, one row per
    candidate (any ``K``; padded rows are masked).
    """

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.per_row = spec.level == "node"
        self.body = mlp(spec.in_dim, spec.hiddens, 1 if self.per_row else spec.n_actions, spec.activation,
                        out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.body(obs)
        return out.squeeze(-1) if self.per_row else out

    def masked_logits(self, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward(obs) + torch.clamp(torch.log(mask), min=FLOAT_MIN)

    @torch.inference_mode()
    def act(self, obs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy actions and the masked class probabilities, for a batch."""
        logits = self.masked_logits(obs, mask)
        return logits.argmax(-1), torch.softmax(logits, -1)


def save_policy(net: PolicyNet, path: str) -> None:
    """Write the weights (a plain ``state_dict``; the spec goes in the artifact's meta)."""
    torch.save({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, path)


def load_policy(spec: NetSpec | Mapping[str, Any], path: str) -> PolicyNet:
    """Rebuild a :class:`PolicyNet` from its spec and load weights (tensors only, no pickled code)."""
    spec = spec if isinstance(spec, NetSpec) else NetSpec.from_dict(spec)
    net = PolicyNet(spec)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()
    return net


#: rows from which a forward pass holds BLAS to one thread (OpenBLAS splits products of 16 rows here)
SINGLE_THREAD_ROWS = 12
#: the activations in numpy, as :data:`ACTIVATIONS` computes them
_NP_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0), "silu": lambda x: x * expit(x)}


class ServedNet:
    """A loaded :class:`PolicyNet`'s forward pass in numpy float32 (the dtype it was trained in):
    the same logits as torch's up to float rounding, without torch at decision time."""

    def __init__(self, net: PolicyNet) -> None:
        from threadpoolctl import ThreadpoolController

        self.spec = net.spec
        self.per_row = net.per_row
        self.layers = [(m.weight.detach().cpu().numpy().T.copy(), m.bias.detach().cpu().numpy().copy())
                       for m in net.body if isinstance(m, nn.Linear)]
        self.activation = _NP_ACTIVATIONS[net.spec.activation]
        self._blas = ThreadpoolController()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Logits: ``(..., in_dim)`` rows -> ``(...)`` at node level, ``(..., n_actions)`` at class level."""
        h = np.asarray(obs, dtype=np.float32)
        if h.size >= SINGLE_THREAD_ROWS * self.spec.in_dim:  # about 12 us to switch: only where BLAS would split
            with self._blas.limit(limits=1, user_api="blas"):
                return self._forward(h)
        return self._forward(h)

    def _forward(self, h: np.ndarray) -> np.ndarray:
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < last:
                h = self.activation(h)
        return h[..., 0] if self.per_row else h

    def act(self, obs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Greedy actions and masked probabilities, as :meth:`PolicyNet.act` (masked entries exactly 0;
        a row with nothing allowed has no probability at all)."""
        allowed = np.asarray(mask) > 0
        logits = np.where(allowed, self(obs).astype(np.float64), -np.inf)
        top = logits.max(-1, keepdims=True)
        e = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
        total = e.sum(-1, keepdims=True)
        return logits.argmax(-1), np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def load_served(spec: NetSpec | Mapping[str, Any], path: str) -> ServedNet:
    """:func:`load_policy`, then its numpy forward pass for serving."""
    return ServedNet(load_policy(spec, path))
