"""One task's record: its columns in order, and what each way of ending leaves in them."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from cluster.executor import TaskResult
from scheduler.objective import Objective
from scheduler.record import RECORD_COLUMNS, TaskRecord
from scheduler.task import make_task

#: the header of every records CSV (simulator, replays): scripts read these by name and order
COLUMNS = ("task_id", "kind", "policy", "status", "reason", "arrival", "priority", "slo_ms", "cost_sensitivity",
           "gpu_need", "node", "pool", "tier", "share", "queued", "start", "finish", "queue_ms", "network_ms",
           "exec_ms", "latency_ms", "slo_met", "cost", "score")
TIMES = ("start", "finish", "queue_ms", "network_ms", "exec_ms", "latency_ms")


@pytest.fixture
def task():
    return make_task({"id": "t1", "arrival": 10.0, "slo_ms": 200.0, "priority": 3, "gpu_milli": 250}, infer=False)


def test_the_record_has_the_24_columns_in_order() -> None:
    assert RECORD_COLUMNS == COLUMNS == TaskRecord._fields


def test_a_succeeded_task_meets_its_slo_by_its_latency_and_is_scored(task) -> None:
    obj = Objective()
    ok = TaskRecord.succeeded(task, "p", "gpu-1", "gpu", "gpu", "slice:250", True, 10.05, 10.15, 50.0, 20.0,
                              80.0, 150.0, 0.5, obj)
    late = TaskRecord.succeeded(task, "p", "gpu-1", "gpu", "gpu", "slice:250", True, 10.05, 10.3, 50.0, 20.0,
                                180.0, 250.0, 0.5, obj)
    assert ok.status == "succeeded" and ok.slo_met and ok.queued and (ok.start, ok.finish) == (10.05, 10.15)
    assert ok.score == obj.score(150.0, 200.0, 3, 0.5, task.cost_sensitivity)
    assert late.slo_met is False and late.score > ok.score  # the objective is a cost: lower is better


def test_a_live_run_starts_after_its_wait_and_finishes_after_its_latency(task) -> None:
    r = TaskRecord.measured(task, "p", node="n", pool="edge", tier="edge", share="cpu", queued=False,
                            queue_ms=100.0, network_ms=20.0, exec_ms=30.0, latency_ms=150.0, cost=0.1,
                            objective=Objective())
    assert r.start == pytest.approx(10.1) and r.finish == pytest.approx(10.15)


def test_a_task_that_did_not_succeed_has_no_times_no_cost_and_missed_its_slo(task) -> None:
    r = TaskRecord.not_succeeded(task, "p", "rejected", "no node can host it")
    assert (r.status, r.reason, r.node, r.share, r.slo_met, r.cost) == ("rejected", "no node can host it", "", "",
                                                                          False, 0.0)
    assert all(math.isnan(getattr(r, c)) for c in (*TIMES, "score"))


def test_an_executor_result_becomes_the_same_record_as_the_simulator_would_write(task) -> None:
    obj = Objective()
    ok = TaskResult("t1", "succeeded", node="gpu-1", pool="gpu", tier="gpu", share=("slice", 250), queued=True,
                    queue_ms=50.0, network_ms=20.0, exec_ms=80.0, cost=0.5)
    rec = TaskRecord.of_result(task, ok, "p", obj)
    assert rec == TaskRecord.measured(task, "p", node="gpu-1", pool="gpu", tier="gpu", share="slice:250",
                                      queued=True, queue_ms=50.0, network_ms=20.0, exec_ms=80.0, latency_ms=150.0,
                                      cost=0.5, objective=obj)
    failed = TaskRecord.of_result(task, TaskResult("t1", "failed", "node lost", node="gpu-1", share=("slice", 250)),
                                  "p", obj)
    assert (failed.status, failed.reason, failed.node, failed.pool, failed.share) == ("failed", "node lost",
                                                                                      "gpu-1", "", "slice:250")


def test_records_make_a_frame_with_the_record_columns(task) -> None:
    rows = [TaskRecord.not_succeeded(task, "p", "failed", "x"),
            TaskRecord.succeeded(task, "p", "n", "edge", "edge", "cpu", False, 10.0, 10.1, 0.0, 40.0, 60.0, 100.0,
                                 0.1, Objective())]
    df = pd.DataFrame.from_records(rows, columns=RECORD_COLUMNS)
    assert tuple(df.columns) == RECORD_COLUMNS and df["slo_met"].dtype == bool and df["latency_ms"].dtype == float
