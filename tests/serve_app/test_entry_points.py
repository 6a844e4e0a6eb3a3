"""Real work through the router: allow-listed entry points over HTTP, functions from the Python API.

The router service, HTTP app, history and bookkeeping are real; the executor's Ray backend is the
executor tests' fake (nothing runs until a test finishes it), so these tests run each submitted
function themselves, in this process, and hand its value (or exception) back as Ray would. The
functions running on real Ray workers are tests/integration/test_serve_router.py's.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from cluster.config import ConfigError
from orchestrator.examples import real_work
from orchestrator.work import TaskFailed, TaskRefused, WorkHandle
from serve_app.config import parse_router_config
from serve_app.entry_points import MAX_ARGS_BYTES
from serve_app.keys import RESERVED
from serve_app.python_calls import HANDLE_CLIENT, run_function
from tests.cluster.test_executor import FakeRay as FakeBackend
from tests.cluster.test_executor import wait_for
from tests.learned_registry import learned_registry  # noqa: F401  (autouse: rf:latest exists)
from tests.serve_app.router_fakes import make_client, make_service

ETL, FRAUD, IMAGES = real_work.ENTRY_POINTS[2], real_work.ENTRY_POINTS[1], real_work.ENTRY_POINTS[0]
TASK = {"cpu_milli": 500, "mem_mib": 100, "work": 0.5, "pool": "edge"}


def _deep(n: int) -> list:
    out: list = []
    for _ in range(n):
        out = [out]
    return out


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def svc(tmp_path, backend):
    s, _ = make_service(tmp_path, backend=backend, entry_points=[ETL, FRAUD])
    yield s
    s.close()


def _run_last(backend: FakeBackend) -> object:
    """Run the last submission's function here, as its Ray worker would, and finish it with the value
    (or the exception it raised)."""
    ref = backend.sent[-1]
    fn, args = ref.args[4], ref.args[5]
    start = time.time()
    try:
        value = fn(*args)
    except Exception as exc:  # noqa: BLE001 - handed back like ray.get's error
        ref.callback(exc)
        return exc
    ref.finish((start, 0.0, time.time() - start, time.time(), ref.node, (), value))
    return value


def _final(svc, task_id: str) -> dict:
    wait_for(lambda: (svc.history.get(task_id) or {}).get("status") in ("succeeded", "failed"))
    svc.history.flush()
    return svc.history.get(task_id)


def test_an_allow_listed_function_runs_and_its_result_is_recorded(svc, backend) -> None:
    c = make_client(svc)
    r = c.post("/v1/tasks", json={**TASK, "id": "etl-1", "entry_point": ETL, "args": {"rows": 2000, "days": 3}})
    assert r.status_code == 202, r.text
    value = _run_last(backend)
    rec = _final(svc, "etl-1")
    assert rec["status"] == "succeeded" and rec["result"] == value and value["rows"] == 2000
    assert rec["task"]["entry_point"] == ETL and rec["task"]["args"] == {"rows": 2000, "days": 3}
    assert rec["exec_ms"] > 0 and rec["node"] and rec["features"] and rec["decision"]["node"] == rec["node"]
    got = c.get("/v1/tasks/etl-1").json()
    assert got["result"] == value
    assert "result" not in c.get("/v1/tasks").json()["items"][0]  # listings stay small
    # the id is one task: the same body is an idempotent retry, other arguments a conflict
    again = c.post("/v1/tasks", json={**TASK, "id": "etl-1", "entry_point": ETL, "args": {"rows": 2000, "days": 3}})
    assert again.status_code == 200 and again.json()["result"] == value
    other = c.post("/v1/tasks", json={**TASK, "id": "etl-1", "entry_point": ETL, "args": {"rows": 5}})
    assert other.status_code == 409 and "args" in other.json()["detail"][0]["msg"]
    emulated = c.post("/v1/tasks", json={**TASK, "id": "etl-1"})  # the same shape without its work
    assert emulated.status_code == 409 and "entry_point" in emulated.json()["detail"][0]["msg"]


def test_a_function_that_raises_ends_failed_with_its_error_and_frees_the_node(svc, backend) -> None:
    c = make_client(svc)
    assert c.post("/v1/tasks", json={**TASK, "id": "bad", "entry_point": FRAUD,
                                     "args": {"transactions": -1}}).status_code == 202
    assert isinstance(_run_last(backend), ValueError)
    rec = _final(svc, "bad")
    assert rec["status"] == "failed" and rec["reason"].startswith("task raised ValueError: transactions must be")
    assert not any(svc.live.state.holding)  # the booking was released
    assert c.post("/v1/tasks", json={**TASK, "id": "next"}).status_code == 202  # and the router goes on


@pytest.mark.parametrize("name, status", [
    ("os:system", 403), ("subprocess:run", 403), ("builtins:eval", 403),
    ("orchestrator.examples.real_work:classify_images", 403),  # a real function, not on this router's list
    ("orchestrator.examples.real_work:_fraud_model", 403),
    ("orchestrator.examples.real_work:score_fraud.__globals__", 422),  # no attribute after the colon
    ("orchestrator.examples.real_work:os.system", 422),
    ("../../etc/passwd:x", 422), ("/tmp/evil.py:run", 422), ("orchestrator.examples.real_work", 422),
    ("os :system", 422), ("os:system\n", 422), ("", 422),
])
def test_nothing_off_the_allow_list_runs_or_is_recorded(svc, backend, name, status) -> None:
    r = make_client(svc).post("/v1/tasks", json={**TASK, "entry_point": name, "args": {}})
    assert r.status_code == status, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == "entry_point"
    if status == 403:
        assert "allow-list" in detail["msg"] and ETL in detail["msg"]
    assert backend.sent == [] and svc.history.count() == 0


@pytest.mark.parametrize("body, field, words", [
    ({"args": {"rows": 1}}, "args", "without an entry_point"),
    ({"entry_point": ETL, "args": [1, 2]}, "args", "dictionary"),
    ({"entry_point": ETL, "args": {"not-a-name": 1}}, "args", "identifiers"),
    ({"entry_point": ETL, "args": {"rows": 1, "blob": "x" * MAX_ARGS_BYTES}}, "args", "at most"),
    ({"entry_point": ETL, "args": {"rows": 10 ** 30}}, "args", "not storable as JSON"),
    ({"entry_point": ETL, "args": {"rows": 5, "nested": _deep(300)}}, "args", "not storable as JSON"),
    ({"entry_point": ETL, "args": {"row_count": 5}}, "args", "does not take them"),
])
def test_bad_arguments_are_a_422_naming_them(svc, backend, body, field, words) -> None:
    r = make_client(svc).post("/v1/tasks", json={**TASK, **body})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == field and words in detail["msg"]
    assert backend.sent == [] and svc.history.count() == 0


def test_non_finite_numbers_in_args_are_refused(svc, backend) -> None:
    """NaN parses (Python's JSON reader takes it) but would be stored as null and run as None on a resume."""
    r = make_client(svc).post("/v1/tasks", content=b'{"cpu_milli": 500, "entry_point": "%s", "args": {"rows": NaN}}'
                              % ETL.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422 and "NaN" in r.json()["detail"][0]["msg"]
    assert backend.sent == [] and svc.history.count() == 0


def test_a_decision_refuses_real_work(svc) -> None:
    c = make_client(svc)
    for path, body in (("/v1/route", {**TASK, "entry_point": ETL}), ("/v1/route/batch", {"tasks": [{**TASK, "args": {}}]})):
        r = c.post(path, json=body)
        assert r.status_code == 422 and "a decision runs nothing" in r.json()["detail"][0]["msg"], r.text


def test_a_function_that_crashes_its_worker_is_not_run_again(svc, backend) -> None:
    """Ray reports a worker lost under a user function (out of memory) as a system error: the task fails
    with the reason instead of taking down a worker on every other node in turn."""
    from tests.cluster.test_executor import WorkerCrashedError

    make_client(svc).post("/v1/tasks", json={**TASK, "id": "oom", "entry_point": ETL, "args": {"rows": 10}})
    backend.sent[-1].callback(WorkerCrashedError("the worker died"))
    rec = _final(svc, "oom")
    assert rec["status"] == "failed" and "not retried" in rec["reason"] and len(backend.sent) == 1


def test_the_allow_list_is_checked_when_the_router_starts(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"entry_points\[1\].*package.module:function"):
        parse_router_config({"entry_points": [ETL, "os.system"]})
    with pytest.raises(ConfigError, match="entry_points.*must be a list"):
        parse_router_config({"entry_points": ETL})
    with pytest.raises(ConfigError, match=r"entry_points\[0\].*does not import"):
        make_service(tmp_path, entry_points=["orchestrator.examples.no_such_module:f"])
    with pytest.raises(ConfigError, match=r"entry_points\[0\].*tuple, not a function"):
        make_service(tmp_path, entry_points=["orchestrator.examples.real_work:ENTRY_POINTS"])


def test_a_restarted_router_runs_entry_points_again_but_not_python_functions(tmp_path, backend) -> None:
    first, _ = make_service(tmp_path, backend=backend, entry_points=[ETL])
    make_client(first).post("/v1/tasks", json={**TASK, "id": "again", "entry_point": ETL, "args": {"rows": 10}})
    asyncio.run(_submit_only(first, {**TASK, "id": "lost"}))
    first.history.flush()
    first.close()
    later = FakeBackend()
    second, _ = make_service(tmp_path, backend=later, entry_points=[ETL])
    try:
        assert second.resume_unfinished() == 1
        assert _run_last(later)["rows"] == 10
        assert _final(second, "again")["result"]["rows"] == 10
        lost = second.history.get("lost")
        assert lost["status"] == "failed" and "Python API" in lost["reason"] and "with a new id" in lost["reason"]
    finally:
        second.close()


async def _submit_only(svc, fields: dict) -> None:
    """A Python API call whose function never gets to run here (the router goes down first)."""
    call = asyncio.ensure_future(run_function(svc, fields, sum, ([1, 2],)))
    await asyncio.sleep(0.3)
    call.cancel()


def _scaled_sum(rows: list, k: int = 1) -> dict:
    return {"sum": sum(rows) * k}


def test_the_python_api_places_runs_and_answers_the_value(svc, backend) -> None:
    async def go():
        call = asyncio.ensure_future(run_function(svc, {**TASK, "id": "py-1", "description": "batch etl"},
                                                  _scaled_sum, ([1, 2, 3],), {"k": 2}))
        await asyncio.to_thread(wait_for, lambda: backend.sent)
        _run_last(backend)
        return await call
    out = asyncio.run(go())
    assert out["value"] == {"sum": 12} and out["record"]["status"] == "succeeded"
    assert svc.history.get("py-1")["status"] == "succeeded"  # the answer came once its record was written
    rec = _final(svc, "py-1")
    assert rec["task"]["python_call"] == f"{__name__}._scaled_sum" and rec["result"] == {"sum": 12}
    assert rec["task"]["owner"] == "python-api"
    handle = WorkHandle(_Answered(out), "py-1")
    assert handle.result() == {"sum": 12} and handle.outcome()["node"] == rec["node"]
    again = asyncio.run(run_function(svc, {**TASK, "id": "py-1", "description": "batch etl"},
                                     _scaled_sum, ([1, 2, 3],), {"k": 2}))
    assert again.get("replayed") and again["value"] == {"sum": 12} and len(backend.sent) == 1, again  # not run twice


def test_the_python_api_answers_a_retry_of_a_running_task_with_409(svc, backend) -> None:
    async def go():
        first = asyncio.ensure_future(run_function(svc, {**TASK, "id": "py-run"}, sum, ([1],)))
        await asyncio.to_thread(wait_for, lambda: backend.sent)
        retry = await run_function(svc, {**TASK, "id": "py-run"}, sum, ([1],))
        _run_last(backend)
        return retry, await first
    retry, first = asyncio.run(go())
    assert retry["error"]["status"] == 409 and "under way" in retry["error"]["detail"]
    assert first["value"] == 1
    assert HANDLE_CLIENT in RESERVED  # no API key can take the Python API's client name


def test_the_python_api_refuses_with_the_field_and_reports_failures(svc, backend) -> None:
    bad = asyncio.run(run_function(svc, {"priority": 99}, print))
    assert bad["error"]["status"] == 422 and bad["error"]["detail"][0]["loc"] == ["task", "priority"]
    with pytest.raises(TaskRefused, match=r"\(422\): task.priority"):
        WorkHandle(_Answered(bad), "x").result()
    http_only = asyncio.run(run_function(svc, {"entry_point": ETL}, print))
    assert http_only["error"]["detail"][0]["loc"] == ["task", "entry_point"]
    assert asyncio.run(run_function(svc, {}, "not callable"))["error"]["detail"][0]["loc"] == ["fn"]
    assert asyncio.run(run_function(svc, ["cpu_milli"], print))["error"]["detail"][0]["loc"] == ["task"]
    assert asyncio.run(run_function(svc, {}, print, (), {1: 2}))["error"]["detail"][0]["loc"] == ["kwargs"]
    assert backend.sent == [] and svc.history.count() == 0

    def boom() -> None:
        raise KeyError("missing column")

    async def go():
        call = asyncio.ensure_future(run_function(svc, {**TASK, "id": "py-boom"}, boom))
        await asyncio.to_thread(wait_for, lambda: backend.sent)
        _run_last(backend)
        return await call
    out = asyncio.run(go())
    with pytest.raises(TaskFailed, match="failed: task raised KeyError: 'missing column'"):
        WorkHandle(_Answered(out), "py-boom").result()


class _Answered:
    """A DeploymentResponse that has its answer (what ``handle.run_function.remote`` gives back)."""

    def __init__(self, answer: dict) -> None:
        self.answer = answer

    def result(self, timeout_s=None) -> dict:
        return self.answer


def test_finished_records_follow_the_documented_schema(svc, backend) -> None:
    """What retraining and calibration read: features, the decision with what the model expected,
    and the measured parts, for emulated and real work alike (serve_app/record_schema.py)."""
    from jsonschema import Draft202012Validator

    from serve_app.record_schema import TASK_RECORD_SCHEMA

    Draft202012Validator.check_schema(TASK_RECORD_SCHEMA)
    check = Draft202012Validator(TASK_RECORD_SCHEMA)
    c = make_client(svc)
    c.post("/v1/tasks", json={**TASK, "id": "emulated"})
    backend.sent[-1].finish()
    c.post("/v1/tasks", json={**TASK, "id": "real", "entry_point": ETL, "args": {"rows": 100}})
    _run_last(backend)
    for tid in ("emulated", "real"):
        _final(svc, tid)
        rec = c.get(f"/v1/tasks/{tid}").json()
        check.validate(rec)
        exp = rec["decision"]["expected"]
        assert exp["exec_ms"] > 0 and exp["latency_ms"] >= exp["exec_ms"] and rec["latency_ms"] is not None
    bad = {**rec, "decision": {**rec["decision"], "expected": {"exec_ms": 1.0}}}
    assert not check.is_valid(bad)  # the schema holds the parts calibration needs
    renamed = {**{k: v for k, v in rec.items() if k != "exec_ms"}, "execution_ms": rec["exec_ms"]}
    assert not check.is_valid(renamed)  # a renamed or dropped field is caught, not silently allowed
