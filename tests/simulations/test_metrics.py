"""A run's summary (``simulations.metrics.summarize``) is the one pandas gives, on numpy for speed."""
from __future__ import annotations

import numpy as np

from benchmarks.bench_summary import _same, pandas_summary
from scheduler.policy import make_policy
from simulations.engine import simulate
from simulations.metrics import summarize
from simulations.workloads import WORKLOADS_DIR, generate, load_workload


def test_the_summary_is_pandas_own_with_unfinished_rejected_and_unprioritised_tasks(local_spec) -> None:
    tasks = generate(load_workload(WORKLOADS_DIR / "high_load.yaml"), seed=4, duration_s=30)
    res = simulate(local_spec, tasks, make_policy("cheapest-feasible"), seed=4, horizon_s=2.0)
    recs = res.records
    assert (recs["status"] == "unfinished").any()
    mixed = recs.copy()
    k = len(mixed) // 4
    mixed.loc[mixed.index[:k], ["status", "pool", "share", "cost", "node"]] = ["rejected", None, None, np.nan, None]
    mixed.loc[mixed.index[k:k + 3], "priority"] = np.nan  # a history row without one: in no priority's group
    for records, timeline in ((recs, res.timeline), (mixed, res.timeline), (mixed, None), (recs.iloc[:0], None)):
        _same(pandas_summary(records, timeline, local_spec.pools), summarize(records, timeline, local_spec.pools))
    assert summarize(mixed)["rejected"] == k
