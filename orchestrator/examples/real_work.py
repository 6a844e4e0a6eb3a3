"""Three real workloads of the kinds the orchestrator places, built from its own dependencies.

Each is a plain function a task can run instead of emulated work: over HTTP as an
allow-listed entry point (``"orchestrator.examples.real_work:score_fraud"`` in the router's
``entry_points``), from Python with :func:`orchestrator.work.submit`. Models are created
here, seeded, never downloaded; data is synthetic. Each returns a small JSON summary, so
its record keeps the result.

* :func:`classify_images`: a small convolutional network (torch) classifying a batch of
  images; on the GPU its share exposes (Ray sets ``CUDA_VISIBLE_DEVICES`` for a GPU share),
  on the CPU otherwise, and it says which.
* :func:`score_fraud`: a gradient-boosted fraud model (scikit-learn), fitted once per
  worker process on synthetic labelled transactions, scoring a batch of new ones.
* :func:`aggregate_etl`: a pandas ETL step: synthetic order rows cleaned, joined to a
  dimension table and aggregated per region and day.

Bad arguments raise ``ValueError`` naming the argument (the task then ends ``failed`` with it).
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

#: the largest image tensor :func:`classify_images` builds (float32: 256 MiB)
MAX_PIXELS = 1 << 26
#: the entry-point names of the three functions, as a router config lists them
ENTRY_POINTS = tuple(f"{__name__}:{f}" for f in ("classify_images", "score_fraud", "aggregate_etl"))


def warm() -> None:
    """What a worker's first call would load, loaded ahead: torch, scikit-learn and pandas, the default
    CNN and the default fraud model. The router calls it in each worker it warms up
    (:func:`cluster.task_body.hold`), so the first task of a kind is not seconds slower than the rest."""
    import pandas  # noqa: F401

    _cnn(10, 0)
    _fraud_model(0)


def _positive(name: str, value: Any, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an integer from 1 to {most}, got {value!r}")
    return value


@lru_cache(maxsize=4)
def _cnn(classes: int, seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(32 * 16, classes))
    return net.eval()


def classify_images(batch: int = 32, size: int = 64, classes: int = 10, seed: int = 0) -> dict[str, Any]:
    """Classify ``batch`` synthetic ``size`` x ``size`` RGB images; the predicted class counts."""
    import torch

    batch, size = _positive("batch", batch, 4096), _positive("size", size, 1024)
    classes = _positive("classes", classes, 1000)
    if batch * 3 * size * size > MAX_PIXELS:  # an input tensor beyond this would not fit a worker's memory
        raise ValueError(f"batch x 3 x size^2 must be at most {MAX_PIXELS}, got {batch * 3 * size * size}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = _cnn(classes, seed).to(device)
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand((batch, 3, size, size), generator=gen).to(device)
    with torch.inference_mode():
        predicted = net(images).argmax(dim=1).cpu()
    counts = torch.bincount(predicted, minlength=classes).tolist()
    return {"images": batch, "classes": counts, "device": device,
            "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


@lru_cache(maxsize=4)
def _fraud_model(seed: int):
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _transactions(10_000, seed, np)
    return HistGradientBoostingClassifier(max_iter=40, random_state=seed).fit(X, y)


def _transactions(n: int, seed: int, np):
    """(features, labels): amount, hour, distance from home, merchant risk, card age; ~2% fraud."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 1.2, n)
    hour = rng.integers(0, 24, n)
    distance = rng.exponential(20.0, n)
    risk = rng.beta(2, 8, n)
    card_age = rng.exponential(900.0, n)
    logit = -6.0 + 0.6 * np.log1p(amount) / 3 + 1.2 * (hour < 5) + 0.02 * distance + 4.0 * risk - card_age / 2000
    y = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    return np.column_stack([amount, hour, distance, risk, card_age]), y


def score_fraud(transactions: int = 2000, threshold: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """Score ``transactions`` new synthetic transactions; how many are flagged at ``threshold``."""
    import numpy as np

    n = _positive("transactions", transactions, 1_000_000)
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold!r}")
    model = _fraud_model(seed)
    X, _ = _transactions(n, seed + 1, np)
    p = model.predict_proba(X)[:, 1]
    return {"transactions": n, "flagged": int((p >= threshold).sum()), "mean_score": round(float(p.mean()), 6),
            "max_score": round(float(p.max()), 6)}


def aggregate_etl(rows: int = 100_000, days: int = 7, seed: int = 0) -> dict[str, Any]:
    """Clean, join and aggregate ``rows`` synthetic orders over ``days`` days: revenue per region."""
    import numpy as np
    import pandas as pd

    n, days = _positive("rows", rows, 5_000_000), _positive("days", days, 366)
    rng = np.random.default_rng(seed)
    orders = pd.DataFrame({
        "store": rng.integers(0, 200, n),
        "day": rng.integers(0, days, n),
        "amount": rng.lognormal(3.0, 0.8, n).round(2),
        "status": rng.choice(["paid", "paid", "paid", "refunded", "void"], n),
    })
    orders.loc[rng.random(n) < 0.01, "amount"] = np.nan  # dirty rows, as real extracts have
    stores = pd.DataFrame({"store": np.arange(200), "region": rng.choice(["north", "south", "east", "west"], 200)})
    clean = orders.dropna(subset=["amount"])
    clean = clean[clean["status"] == "paid"].merge(stores, on="store", how="inner")
    daily = clean.groupby(["region", "day"], sort=True)["amount"].agg(["sum", "count"])
    per_region = daily.groupby(level="region")["sum"].sum().round(2)
    return {"rows": n, "kept": int(len(clean)), "dropped": int(n - len(clean)),
            "revenue": {k: float(v) for k, v in per_region.items()},
            "busiest_day": int(daily["count"].groupby(level="day").sum().idxmax())}
