"""Promotion of the shadow policy and the automatic rollback of a bad one.

The router service, HTTP app, policies and history are real; Ray is the executor tests' fake
backend, finished by the test with a measured execution time that meets or misses each task's
SLO, so the live SLO-miss rates the rollback compares are the test's to set.
"""
from __future__ import annotations

import time

import pytest

from orchestrator.cli import main
from serve_app.promotion import PromotionGuard, PromotionRefused
from tests.cluster.test_executor import FakeRay as FakeBackend
from tests.cluster.test_executor import wait_for
from tests.learned_registry import learned_registry  # noqa: F401  (autouse: rf:latest exists)
from tests.serve_app.router_fakes import TOKEN, make_client, make_service

ADMIN = {"Authorization": f"Bearer {TOKEN}"}
WINDOW = 4
TASK = {"cpu_milli": 500, "mem_mib": 100, "work": 0.1, "slo_ms": 1000}


def test_the_guard_judges_a_promotion_on_the_new_policys_own_verdicts() -> None:
    g: PromotionGuard[str] = PromotionGuard(window=3, margin=0.1)
    with pytest.raises(PromotionRefused, match="old has 0 SLO verdicts of the 3"):
        g.promote("OLD", "old", "new")
    for missed in (False, False, True):  # the champion misses one in three
        assert g.outcome("old", missed) is None
    assert g.promote("OLD", "old", "new").baseline == pytest.approx(1 / 3)
    with pytest.raises(PromotionRefused, match="still being judged"):
        g.promote("OLD", "old", "other")
    assert g.outcome("new", True) is None and g.outcome("old", True) is None  # the old one's verdicts do not count
    assert g.outcome("new", True) is None
    condemned = g.outcome("new", False)  # the third of its own: 2 in 3 missed, against 1 in 3 (+0.1)
    assert condemned is not None and condemned.old == "OLD"
    assert [e["event"] for e in g.log] == ["promoted", "rolled back"] and g.watch is None
    assert g.log[-1]["miss_rate"] == pytest.approx(2 / 3, abs=1e-4) and g.log[-1]["policy"] == "old"
    assert g.promote("OLD", "old", "again").new_name == "again"  # judged: a new promotion may start
    for missed in (True, False, False):  # one in three, as the champion: kept
        g.outcome("again", missed)
    assert g.log[-1]["event"] == "kept" and g.watch is None


def _finish_all(backend: FakeBackend, exec_s: float) -> None:
    """Finish every submitted, unfinished task after ``exec_s`` seconds of (reported) execution."""
    for ref in backend.sent:
        if not ref.done:
            now = time.time()
            ref.finish((now, 0.0, exec_s, now + exec_s, ref.node, (), None))


def _run(c, backend, svc, ids, exec_s) -> None:
    for tid in ids:
        assert c.post("/v1/tasks", json={**TASK, "id": tid}).status_code == 202
    wait_for(lambda: len(backend.sent) >= len(ids))
    _finish_all(backend, exec_s)
    wait_for(lambda: all((svc.history.get(t) or {}).get("status") == "succeeded" for t in ids))


def test_a_promoted_policy_that_misses_more_slos_is_rolled_back(tmp_path) -> None:
    backend = FakeBackend()
    svc, _ = make_service(tmp_path, backend=backend, shadow_policy="least-loaded", promotion_window=WINDOW)
    try:
        c = make_client(svc)
        refused = c.post("/v1/policy/promote", headers=ADMIN)
        assert refused.status_code == 409 and "fastest-feasible has 0 SLO verdicts" in refused.json()["detail"]
        _run(c, backend, svc, [f"a{i}" for i in range(WINDOW)], 0.01)  # the champion meets every SLO
        r = c.post("/v1/policy/promote", headers=ADMIN)
        assert r.status_code == 200, r.text
        info = r.json()
        assert (info["policy"], info["previous"], info["shadow"]) == ("least-loaded", "fastest-feasible",
                                                                      "fastest-feasible")
        assert info["promotion"]["watching"]["baseline_miss_rate"] == 0.0
        _run(c, backend, svc, [f"b{i}" for i in range(WINDOW)], 5.0)  # the challenger's tasks miss theirs
        wait_for(lambda: svc.policies.active.name == "fastest-feasible")
        state = c.get("/v1/policy").json()
        assert state["shadow"] is None and state["promotion"]["watching"] is None
        assert [e["event"] for e in state["promotion"]["log"]] == ["promoted", "rolled back"]
        assert state["promotion"]["log"][-1]["miss_rate"] == 1.0
        assert svc.history.get("b0")["policy"] == "least-loaded"  # what it placed stays its record
        assert c.post("/v1/policy/promote", headers=ADMIN).status_code == 409  # nothing in shadow now
    finally:
        svc.close()


def test_a_promoted_policy_as_good_as_the_old_one_is_kept(tmp_path) -> None:
    backend = FakeBackend()
    svc, _ = make_service(tmp_path, backend=backend, shadow_policy="least-loaded", promotion_window=WINDOW)
    try:
        c = make_client(svc)
        _run(c, backend, svc, [f"a{i}" for i in range(WINDOW)], 0.01)
        assert c.post("/v1/policy/promote", headers=ADMIN).status_code == 200
        _run(c, backend, svc, [f"b{i}" for i in range(WINDOW)], 0.01)
        wait_for(lambda: c.get("/v1/policy").json()["promotion"]["watching"] is None)
        state = c.get("/v1/policy").json()
        assert state["policy"] == "least-loaded" and state["promotion"]["log"][-1]["event"] == "kept"
    finally:
        svc.close()


def test_the_promote_command_needs_the_admin_token_and_a_router(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.delenv("ORCH_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("ORCH_ADMIN_TOKEN_FILE", raising=False)
    assert main(["policy", "promote", "--router", "http://127.0.0.1:9"]) == 2
    assert "ORCH_ADMIN_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("ORCH_ADMIN_TOKEN", TOKEN)
    assert main(["policy", "promote", "--router", "http://127.0.0.1:9"]) == 2
    assert "--router http://127.0.0.1:9" in capsys.readouterr().err
