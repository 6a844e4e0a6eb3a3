"""What a live replay produces, shared by the direct replay, the router replay and sim-vs-real.

Its own module so that :mod:`replays.live` and :mod:`replays.router` both build
:class:`ReplayResult` without importing each other.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cluster.executor import TaskResult
from simulations.engine import SimResult

#: timeline columns after the per-pool utilisation, as the simulator writes them
TIMELINE_COLUMNS_EXTRA = ["gpu_alloc_ratio", "fragmentation", "queued", "running"]


@dataclass
class ReplayResult(SimResult):
    """Records, timeline and summary of a replay, plus how long it took."""

    wall_s: float = 0.0
    warm_s: float = 0.0
    problems: tuple[str, ...] = ()
    results: list[TaskResult] = field(default_factory=list)  # the executor's view: attempts, nodes tried
    device_mismatches: int = 0  # GPU tasks Ray ran on another device than the bookkeeping booked


def write_result(out: Path, name: str, res: SimResult, meta: dict) -> None:
    """``records_<name>.csv``, ``timeline_<name>.csv`` and ``summary_<name>.json`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    res.records.to_csv(out / f"records_{name}.csv", index=False)
    res.timeline.to_csv(out / f"timeline_{name}.csv", index=False)
    (out / f"summary_{name}.json").write_text(json.dumps({"meta": meta, "summary": res.summary}, indent=2,
                                                         default=float))
