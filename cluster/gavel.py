"""GPU speed ratios and time-slicing interference from the Gavel throughput table.

Gavel (stanford-futuredata/gavel, MIT) measured per-job throughputs on K80, P100 and
V100, alone and co-located two at a time on one GPU. We reduce them to two numbers
per model, the geometric mean over job types of

* ``speed``: isolated throughput relative to V100, and
* ``colocation_factor``: a job's throughput when sharing the GPU with one other job,
  relative to running alone (time-slicing interference).

The reduced figures are stored in ``configs/cluster/gpu_models.yaml`` so the package
does not need the trace at run time; ``tests/cluster/test_gavel.py`` recomputes them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

GAVEL_MODELS = ("k80", "p100", "v100")


def _single_gpu_jobs(table: dict) -> dict[str, float]:
    return {job: row["null"] for job, row in table.items() if job.endswith(", 1)") and row["null"] > 0}


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def gavel_ratios(path: str | Path) -> dict[str, dict[str, float]]:
    """Return ``{MODEL: {"speed": s, "colocation_factor": f}}`` from ``simulation_throughputs.json``."""
    data = json.loads(Path(path).read_text())
    isolated = {m: _single_gpu_jobs(data[m]) for m in GAVEL_MODELS}
    common = set.intersection(*(set(v) for v in isolated.values()))
    out: dict[str, dict[str, float]] = {}
    for model in GAVEL_MODELS:
        speed = _geomean([isolated[model][j] / isolated["v100"][j] for j in common])
        shared = []
        for job, row in data[model].items():
            if job not in isolated[model]:
                continue
            for other, pair in row.items():
                if other != "null" and other.endswith(", 1)") and pair[0] > 0:
                    shared.append(pair[0] / row["null"])
        out[model.upper()] = {"speed": round(speed, 3), "colocation_factor": round(_geomean(shared), 3)}
    return out
