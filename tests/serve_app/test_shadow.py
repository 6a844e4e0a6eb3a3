"""A challenger in shadow: it decides every task on the champion's state, is never acted on, and each
record keeps its choice, whether it agreed and the model's expected outcome of both.

The router service, HTTP app, policies and history are real; Ray is the executor tests' fake backend.
"""
from __future__ import annotations

import pytest

from serve_app.metrics import SHADOW
from tests.cluster.test_executor import FakeRay as FakeBackend
from tests.cluster.test_executor import wait_for
from tests.learned_registry import learned_registry  # noqa: F401  (autouse: rf:latest exists)
from tests.serve_app.router_fakes import TOKEN, make_client, make_service

ADMIN = {"Authorization": f"Bearer {TOKEN}"}
#: CPU tasks: fastest-feasible sends them to the fast cloud node, least-loaded spreads them
TASKS = [{"id": f"s{i}", "cpu_milli": 500, "mem_mib": 100, "work": 0.5} for i in range(6)]


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def _records(svc, ids):
    wait_for(lambda: all((svc.history.get(i) or {}).get("status") == "running" for i in ids))
    svc.history.flush()
    return [svc.history.get(i) for i in ids]


@pytest.mark.parametrize("shadow", ["least-loaded", "fastest-feasible"])
def test_the_shadow_decides_every_task_and_is_never_acted_on(tmp_path, backend, shadow) -> None:
    """The champion is fastest-feasible: least-loaded spreads where it packs the fast node (they disagree),
    and the champion's own rule in shadow agrees on every task."""
    svc, _ = make_service(tmp_path, backend=backend, shadow_policy=shadow)
    try:
        c = make_client(svc)
        assert c.get("/v1/policy").json()["shadow"] == shadow
        for body in TASKS:
            assert c.post("/v1/tasks", json=body).status_code == 202
        recs = _records(svc, [b["id"] for b in TASKS])
        sent = [ref.node for ref in backend.sent]
        agree = 0
        for rec, ray_node in zip(recs, sent):
            sh = rec["decision"]["shadow"]
            assert sh["policy"] == shadow and sh["decision_ms"] >= 0
            assert ray_node == f"ray-{rec['node']}"  # the champion's node ran it, whatever the shadow chose
            assert sh["agrees"] == (sh["node"] == rec["node"] and sh["share"] == rec["share"])
            assert sh["expected"]["score"] >= 0 and rec["decision"]["expected"]["score"] >= 0
            agree += sh["agrees"]
        assert agree == len(TASKS) if shadow == "fastest-feasible" else agree < len(TASKS)
        sink = svc.metrics.sink
        assert sink.total(SHADOW, policy=shadow, agrees="true") == agree
        assert sink.total(SHADOW, policy=shadow, agrees="false") == len(TASKS) - agree
    finally:
        svc.close()


def test_the_admin_starts_changes_and_stops_the_shadow(tmp_path, backend) -> None:
    svc, _ = make_service(tmp_path, backend=backend)
    try:
        c = make_client(svc)
        assert c.put("/v1/shadow", json={"policy": "rf"}).status_code in (401, 403)  # a client key is not enough
        r = c.put("/v1/shadow", json={"policy": "rf", "version": "latest"}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["shadow"].startswith("rf:") and r.json()["previous_shadow"] is None
        bad = c.put("/v1/shadow", json={"policy": "nope"}, headers=ADMIN)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "policy"]
        assert c.get("/v1/policy").json()["shadow"].startswith("rf:")  # a bad request changed nothing
        c.post("/v1/tasks", json=TASKS[0])
        assert _records(svc, ["s0"])[0]["decision"]["shadow"]["policy"].startswith("rf:")
        off = c.put("/v1/shadow", json={"policy": None}, headers=ADMIN)
        assert off.status_code == 200 and off.json()["shadow"] is None
        c.post("/v1/tasks", json=TASKS[1])
        assert "shadow" not in _records(svc, ["s1"])[0]["decision"]
    finally:
        svc.close()


class _Broken:
    """A challenger with a bug: whatever it is asked, it raises."""

    name = "broken"
    pure = True

    def select(self, task, state):
        raise RuntimeError("challenger bug")


def test_a_failing_shadow_never_decides_a_tasks_fate(tmp_path, backend) -> None:
    from jsonschema import Draft202012Validator

    from serve_app.policies import ActivePolicy
    from serve_app.record_schema import TASK_RECORD_SCHEMA

    svc, _ = make_service(tmp_path, backend=backend)
    try:
        svc.shadow = ActivePolicy(_Broken(), "broken", None, 0.0)
        c = make_client(svc)
        assert c.post("/v1/tasks", json=TASKS[0]).status_code == 202  # placed and running all the same
        rec = _records(svc, ["s0"])[0]
        assert rec["decision"]["shadow"] == {"policy": "broken", "error": "RuntimeError: challenger bug"}
        assert svc.metrics.sink.total(SHADOW, policy="broken", agrees="error") == 1
        check = Draft202012Validator(TASK_RECORD_SCHEMA)
        check.validate(c.get("/v1/tasks/s0").json())
        svc.set_shadow("least-loaded")
        c.post("/v1/tasks", json=TASKS[1])
        _records(svc, ["s1"])
        check.validate(c.get("/v1/tasks/s1").json())  # a shadow's choice is part of the documented record
        assert c.put("/v1/shadow", json={"policy": None, "version": 2}, headers=ADMIN).status_code == 422
    finally:
        svc.close()
