"""The one objective: end-to-end latency against the SLO, SLO misses, and dollar cost.

Per task, lower is better::

    score = w_latency * L(latency_ms / slo_ms)
          + w_slo_miss * (priority / 5) * [latency_ms > slo_ms]
          + w_cost * (cost_sensitivity / 5) * cost / cost_ref

    L(r) = r                          for r <= knee (default 10)
         = knee * (1 + ln(r / knee))  beyond it

Latency is normalised by the task's own SLO so that a batch job and a fraud check
weigh alike; a miss is charged more for high-priority tasks; cost is charged more for
cost-sensitive tasks. Weights come from ``configs/objective.yaml`` (or any YAML
with the same fields). The RL reward is the negative score.

Why ``L`` is not capped: with a cap, parking a task forever cost the same as 10x its
SLO, so a policy could starve tasks for free (on the Alibaba replay the oracle left
hundreds of tasks waiting for days and still ranked first). Past the knee, waiting keeps
costing, logarithmically, so one lost task still cannot swamp a run (100x the SLO costs
33, 10^6x costs 125, against 10 at the knee). ``L`` is continuous, increasing, and its
slope is continuous too (1 at the knee on both sides): there is no point past which more
waiting becomes suddenly cheaper.

A task the run ended before it finished (:meth:`Objective.unfinished_score`) counts as
a miss, charged the latency term of its waiting so far. The simulator ends a run when
the last task finishes (every task is then charged its true latency, the strictest
end) unless it is given a horizon (:class:`simulations.engine.OnlineSimulator`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cluster.config import Collector, load_yaml
from cluster.package_data import DATA_ROOT

DEFAULT_OBJECTIVE = DATA_ROOT / "configs" / "objective.yaml"


@dataclass(frozen=True)
class Objective:
    """Weights of the objective; see the module docstring for the formula."""

    latency: float = 1.0
    slo_miss: float = 2.0
    cost: float = 1.0
    cost_ref: float = 0.05
    #: latency / SLO ratio past which the latency term grows logarithmically
    latency_knee: float = 10.0

    def latency_term(self, ratio: float) -> float:
        """``L(ratio)``: linear up to the knee, logarithmic beyond (never capped)."""
        k = self.latency_knee
        return ratio if ratio <= k else k * (1.0 + math.log(ratio / k))

    def score(self, latency_ms: float, slo_ms: float, priority: int, cost: float,
              cost_sensitivity: int) -> float:
        """Score of one task (lower is better)."""
        ratio = latency_ms / slo_ms
        return (self.latency * self.latency_term(ratio)
                + self.slo_miss * (priority / 5.0) * (ratio > 1.0)
                + self.cost * (cost_sensitivity / 5.0) * cost / self.cost_ref)

    def unfinished_score(self, waited_ms: float, slo_ms: float, priority: int, cost: float,
                         cost_sensitivity: int) -> float:
        """Score of a task still queued or running when the run ended: a miss, whatever it waited."""
        missed_anyway = self.slo_miss * (priority / 5.0) if waited_ms <= slo_ms else 0.0
        return self.score(waited_ms, slo_ms, priority, cost, cost_sensitivity) + missed_anyway

    def scores(self, latency_ms: np.ndarray, slo_ms: np.ndarray, priority: np.ndarray,
               cost: np.ndarray, cost_sensitivity: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`score` over many tasks (equal to it: ``tests/test_scalar_vector.py``)."""
        ratio = latency_ms / slo_ms
        k = self.latency_knee
        term = np.where(ratio > k, k * (1.0 + np.log(np.maximum(ratio, k) / k)), ratio)
        return (self.latency * term
                + self.slo_miss * (priority / 5.0) * (ratio > 1.0)
                + self.cost * (cost_sensitivity / 5.0) * cost / self.cost_ref)


def load_objective(path: str | Path = DEFAULT_OBJECTIVE) -> Objective:
    """Load weights through the validating loader (errors name file and field)."""
    f = load_yaml(path)
    f.collect = errs = Collector()  # every bad weight at once
    errs(f.check_keys, {"latency", "slo_miss", "cost", "cost_ref", "latency_knee"})
    objective = Objective(
        latency=f.num("latency", 1.0, min=0),
        slo_miss=f.num("slo_miss", 2.0, min=0),
        cost=f.num("cost", 1.0, min=0),
        cost_ref=f.num("cost_ref", 0.05, min=0, strict_min=True),
        latency_knee=f.num("latency_knee", 10.0, min=0, strict_min=True),
    )
    errs.check()
    return objective
