"""The one objective: end-to-end latency against the SLO, SLO misses, and dollar cost.

Per task, lower is better::

    score = w_latency * min(latency_ms / slo_ms, 10)
          + w_slo_miss * (priority / 5) * [latency_ms > slo_ms]
          + w_cost * (cost_sensitivity / 5) * cost / cost_ref

Latency is normalised by the task's own SLO so that a batch job and a fraud check
weigh alike; a miss is charged more for high-priority tasks; cost is charged more for
cost-sensitive tasks. Weights come from ``configs/objective.yaml`` (or any YAML
with the same fields). The RL reward is the negative score.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cluster.config import load_yaml

DEFAULT_OBJECTIVE = Path(__file__).resolve().parent.parent / "configs" / "objective.yaml"


@dataclass(frozen=True)
class Objective:
    """Weights of the objective; see the module docstring for the formula."""

    latency: float = 1.0
    slo_miss: float = 2.0
    cost: float = 1.0
    cost_ref: float = 0.05

    def score(self, latency_ms: float, slo_ms: float, priority: int, cost: float,
              cost_sensitivity: int) -> float:
        """Score of one task (lower is better)."""
        ratio = latency_ms / slo_ms
        return (self.latency * min(ratio, 10.0)
                + self.slo_miss * (priority / 5.0) * (ratio > 1.0)
                + self.cost * (cost_sensitivity / 5.0) * cost / self.cost_ref)

    def scores(self, latency_ms: np.ndarray, slo_ms: np.ndarray, priority: np.ndarray,
               cost: np.ndarray, cost_sensitivity: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`score` over many tasks."""
        ratio = latency_ms / slo_ms
        return (self.latency * np.minimum(ratio, 10.0)
                + self.slo_miss * (priority / 5.0) * (ratio > 1.0)
                + self.cost * (cost_sensitivity / 5.0) * cost / self.cost_ref)


def load_objective(path: str | Path = DEFAULT_OBJECTIVE) -> Objective:
    """Load weights through the validating loader (errors name file and field)."""
    f = load_yaml(path)
    f.check_keys({"latency", "slo_miss", "cost", "cost_ref"})
    return Objective(
        latency=f.num("latency", 1.0, min=0),
        slo_miss=f.num("slo_miss", 2.0, min=0),
        cost=f.num("cost", 1.0, min=0),
        cost_ref=f.num("cost_ref", 0.05, min=0, strict_min=True),
    )
