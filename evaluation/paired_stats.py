"""Statistics over evaluation seeds: a bootstrap interval of the mean, and paired wins and margins.

Every policy meets the same tasks and network draws on a seed, so two policies are
compared seed by seed (paired), not mean against mean.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

N_RESAMPLES = 10_000
CONFIDENCE = 0.95


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, n_resamples: int = N_RESAMPLES,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over seeds (``scipy.stats.bootstrap``), deterministic for ``seed``.

    The percentile method, not BCa: with a handful of seeds the resampled means
    take few distinct values and BCa's bias correction is unstable. With so few
    seeds any bootstrap interval is too narrow rather than too wide; read it as
    the spread over seeds, not as a guarantee. NaN for fewer than two values; a
    point when every value is the same.
    """
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    if len(x) < 2 or not np.isfinite(x).all():
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    r = bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                  method="percentile", rng=np.random.default_rng(seed), vectorized=True)
    return float(r.confidence_interval.low), float(r.confidence_interval.high)


def paired_wins(policy: Sequence[float], reference: Sequence[float]) -> int:
    """Seeds on which ``policy``'s objective is strictly lower than ``reference``'s (same seed order)."""
    p, r = np.asarray(policy, dtype=float), np.asarray(reference, dtype=float)
    return int((p < r).sum())


def paired_margin_pct(policy: Sequence[float], reference: Sequence[float]) -> float:
    """Mean over seeds of ``(reference - policy) / reference`` in %: positive when ``policy`` is better."""
    p, r = np.asarray(policy, dtype=float), np.asarray(reference, dtype=float)
    return float(np.mean((r - p) / r) * 100.0) if len(p) else float("nan")
