"""Router replay records: a task still running when the replay stops waiting counts as an unfinished miss."""
from __future__ import annotations

import numpy as np
import pandas as pd

from scheduler.objective import Objective
from scheduler.task import make_task
from scheduler.record import RECORD_COLUMNS
from simulations.metrics import summarize
from replays.router import record_of

OBJ = Objective()


def test_a_task_still_running_at_the_end_is_a_miss_charged_its_waiting() -> None:
    task = make_task({"id": "t", "arrival": 10.0, "slo_ms": 1000.0}, infer=False)
    done = make_task({"id": "d", "arrival": 10.0, "slo_ms": 1000.0}, infer=False)
    running = record_of(task, {"status": "running", "node": "cloud-1"}, "x", OBJ, end=12.5)
    finished = record_of(done, {"status": "succeeded", "latency_ms": 400.0, "cost": 0.0}, "x", OBJ, end=12.5)
    rec = pd.DataFrame.from_records([running, finished], columns=RECORD_COLUMNS).set_index("task_id")
    t = rec.loc["t"]
    assert t["status"] == "unfinished" and "still running" in t["reason"] and not t["slo_met"]
    assert t["latency_ms"] == 2500.0
    assert t["score"] == OBJ.unfinished_score(2500.0, 1000.0, task.priority, 0.0, task.cost_sensitivity)
    s = summarize(rec.reset_index())
    assert s["unfinished"] == 1 and s["slo_miss_rate"] == 0.5
    assert s["objective_mean"] == np.mean(rec["score"]) and s["latency_ms"]["max"] == 2500.0
    # without a known end (older callers) it stays a failure, outside the objective
    assert record_of(task, {"status": "running"}, "x", OBJ)[3] == "failed"
