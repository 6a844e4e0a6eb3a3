"""Benchmark: RandomForest inference, the flat numpy fast path against sklearn, same run.

Targets (issue 4): one decision's probabilities in at most 50 us (median) and a
batch of 1,000 rows in at most 5 ms, with probabilities equal to sklearn's. The
forests are trained here on oracle decisions on ``local.yaml`` (mixed +
high_load) and timed on held-out decision rows, in blocks (fast path, then
sklearn) so that each keeps its own caches warm. Two sizes: the training default
of :mod:`rl_env.train_rf` and a 100-tree unbounded forest for comparison.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cluster.topology import load_cluster  # noqa: E402
from scheduler.forest import FlatForest  # noqa: E402
from scheduler.policy import make_policy  # noqa: E402
from rl_env.train_rf import DAggerForest, Episode, Rollout, rollout  # noqa: E402
from rl_env.train_rf_args import TrainArgs  # noqa: E402
from simulations.workloads import generate, load_workload  # noqa: E402

SINGLE_TARGET_US = 50.0
BATCH_TARGET_MS = 5.0


def _episodes(seeds) -> list[Episode]:
    out = []
    for name in ("mixed", "high_load"):
        wl = load_workload(ROOT / "configs" / "workloads" / f"{name}.yaml")
        out += [Episode(name, generate(wl, seed=s), s) for s in seeds]
    return out


def _median_us(fn, rows, blocks: int, per_block: int) -> list[float]:
    times = []
    for b in range(blocks):
        for x in rows[(b * per_block) % len(rows):][:per_block]:
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return times


def bench_forest(label: str, model, rows: np.ndarray) -> bool:
    flat = FlatForest.from_sklearn(model)
    exact = np.array_equal(flat.predict_proba(rows), model.predict_proba(rows))
    fast_t: list[float] = []
    sk_t: list[float] = []
    for b in range(6):  # interleaved blocks: both see the same machine load
        fast_t += _median_us(flat.predict_proba_one, rows[b * 300:], 1, 300)
        sk_t += _median_us(lambda x: model.predict_proba(x[None, :]), rows[b * 300:], 1, 15)
    fast_us, sk_us = 1e6 * np.median(fast_t), 1e6 * np.median(sk_t)
    batch = rows[:1000]
    fb, sb = [], []
    for _ in range(15):
        t = time.perf_counter()
        flat.predict_proba(batch)
        fb.append(time.perf_counter() - t)
        if len(sb) < 5:
            t = time.perf_counter()
            model.predict_proba(batch)
            sb.append(time.perf_counter() - t)
    fast_ms, sk_ms = 1e3 * np.median(fb), 1e3 * np.median(sb)
    ok1, ok2 = fast_us <= SINGLE_TARGET_US, fast_ms <= BATCH_TARGET_MS
    print(f"{label}: {flat.n_trees} trees, {flat.n_nodes:,} nodes, depth {flat.max_depth}; "
          f"probabilities equal sklearn's on {len(rows):,} rows: {exact}")
    print(f"  one row     fast {fast_us:8.1f} us   sklearn {sk_us:9.1f} us   {sk_us / fast_us:6.0f}x faster   "
          f"target {SINGLE_TARGET_US:.0f} us: {'ok' if ok1 else 'BELOW TARGET'}")
    print(f"  1,000 rows  fast {fast_ms:8.2f} ms   sklearn {sk_ms:9.2f} ms   {sk_ms / fast_ms:6.1f}x faster   "
          f"target {BATCH_TARGET_MS:.0f} ms: {'ok' if ok2 else 'BELOW TARGET'}")
    return exact and ok1 and ok2


def bench_decision(spec, model, ep: Episode) -> None:
    """Whole ``select`` (masks, features, forest, explanation) against the oracle it imitates."""
    from scheduler.policies.rf import RandomForestPolicy
    from simulations.engine import simulate

    per = {}
    for name, pol in (("rf", RandomForestPolicy(forest=FlatForest.from_sklearn(model))),
                      ("rf, no explanation", RandomForestPolicy(forest=FlatForest.from_sklearn(model),
                                                                explain=False)),
                      ("oracle", make_policy("oracle"))):
        t = time.perf_counter()
        simulate(spec, ep.tasks, pol, seed=ep.seed, timeline_points=10)
        per[name] = 1e6 * (time.perf_counter() - t) / len(ep.tasks)
    print("  whole decision in the simulator (high_load, per task incl. simulation): "
          + ", ".join(f"{k} {v:.0f} us" for k, v in per.items()))


def main(argv: list[str] | None = None) -> int:
    spec = load_cluster(ROOT / "configs" / "cluster" / "local.yaml")
    t = time.perf_counter()
    train = _episodes([1, 2, 3])
    est = DAggerForest(rounds=1, progress=False).fit(spec, train)
    held = _episodes([901])
    oracle = make_policy("oracle")
    rows = Rollout.concat([rollout(spec, ep, oracle) for ep in held]).X
    print(f"trained on {len(est.y_):,} oracle-labelled decisions (1 DAgger round) in "
          f"{time.perf_counter() - t:.1f} s; timing on {len(rows):,} held-out decision rows")
    ok = bench_forest(f"default forest ({TrainArgs.trees} trees, depth <= {TrainArgs.max_depth}, "
                      f">= {TrainArgs.min_samples_leaf} per leaf)", est.model_, rows)
    bench_decision(spec, est.model_, held[1])
    from sklearn.ensemble import RandomForestClassifier

    big = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(est.X_, est.y_)
    bench_forest("100 trees, unbounded depth", big, rows)
    if not ok:
        print("(default forest missed a target: figures are reported, not enforced, on this shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
