"""``GET /v1/loop`` over a real history and the reports the loop's own commands write (the router's node
view is the fake of ``router_fakes``): what the Loop page shows, figure by figure."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from orchestrator.cli import main
from serve_app import loop_tables as lt
from serve_app import loop_views
from serve_app.metrics import SHADOW
from simulations import calibration as cal
from tests.cluster.test_executor import FakeRay as FakeBackend
from tests.serve_app.router_fakes import make_client, make_service
from tests.serve_app.test_shadow import TASKS, _records
from tests.simulations import test_calibration, test_history_replay

LOCAL = str(test_calibration.LOCAL)


def _store(svc, tid: str, accepted_at: float, decision: dict, *, champion: str = "rf:5", **fields) -> None:
    """A finished task whose decision is ``decision`` (with its shadow's), as the router records one."""
    svc.history.accept(tid, {"id": tid}, accepted_at=accepted_at, policy=champion, kind="demo")
    svc.history.update(tid, fields.pop("status", "succeeded"), decision={"policy": champion, **decision}, **fields)


def _choice(latency_ms: float, score: float) -> dict:
    return {"queue_ms": 0.0, "network_ms": 10.0, "exec_ms": latency_ms - 10.0, "latency_ms": latency_ms,
            "cost": 0.001, "score": score}


def test_every_empty_part_names_the_command_that_fills_it(tmp_path) -> None:
    svc, _ = make_service(tmp_path, loop_dir=str(tmp_path / "loop"))
    try:
        c = make_client(svc, key=None)  # a read: no key needed
        doc = c.get("/v1/loop").json()
        assert doc["champion"] == "fastest-feasible" and doc["challenger"] is None
        assert doc["shadow"]["pairs"] == [] and doc["shadow"]["decisions_read"] == 0
        for name in ("calibration", "counterfactual", "retrain"):
            part = doc[name]
            assert part["report"] is None and str(tmp_path / "loop") in part["note"]
            command = "orchestrator " + ("calibrate" if name == "calibration" else name)
            assert f"`{command} --history URL" in part["note"]
        # a hand-edited or foreign file is a sentence too; NaN (an empty interval) reads as null
        (tmp_path / "loop" / "calibration").mkdir(parents=True)
        (tmp_path / "loop" / "calibration" / "report.json").write_text("{not json")
        (tmp_path / "loop" / "retrain").mkdir()
        (tmp_path / "loop" / "retrain" / "retrain.json").write_text("[1, 2]")
        (tmp_path / "loop" / "counterfactual").mkdir()
        (tmp_path / "loop" / "counterfactual" / "counterfactual.json").write_text(
            json.dumps({"history": "postgresql://orch:s3cret@db/orch",
                        "policies": {"rf": {"objective": float("nan"), "ci": [1.0, float("inf")]}}}))
        r = c.get("/v1/loop")
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["calibration"]["report"] is None and "is not JSON" in doc["calibration"]["note"]
        assert doc["retrain"]["report"] is None and "a JSON list" in doc["retrain"]["note"]
        assert doc["counterfactual"]["report"]["policies"]["rf"] == {"objective": None, "ci": [1.0, None]}
        assert doc["counterfactual"]["report"]["history"] == "postgresql://orch:***@db/orch"  # no password to anyone
        bad = c.get("/v1/loop", params={"hours": 0})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "hours"]
    finally:
        svc.close()


def test_calibration_measured_against_the_model_per_node_class(tmp_path) -> None:
    """A history whose true execution factors are known: per node class, the held-out tasks' measured mean
    latency is what they measured, and the fitted profile brings the model's mean closer to it."""
    rows = test_calibration.records()
    url = test_calibration.write_history(tmp_path / "measured.db", rows)
    loop = tmp_path / "loop"
    assert main(["calibrate", "--history", url, "--cluster", LOCAL, "--out", str(loop / "calibration")]) == 0
    svc, _ = make_service(tmp_path, loop_dir=str(loop))
    try:
        part = make_client(svc, key=None).get("/v1/loop").json()["calibration"]
    finally:
        svc.close()
    rep = part["report"]
    assert part["note"] is None and part["written_at"] == pytest.approx(time.time(), abs=120)
    assert rep["history"] == url and rep["held_out"]["tasks"] == 120
    # the held-out tasks are the newest 30% of the succeeded ones (t0000 failed)
    held = sorted((r for r in rows if r["task_id"] != "t0000"), key=lambda r: r["accepted_at"])[-120:]
    by_class = lt.calibration_by_class(rep).set_index("node class")
    assert set(by_class.index) == {"edge", "cloud", "gpu-mig"}
    for cls, row in by_class.iterrows():
        mine = [r["queue_ms"] + r["network_ms"] + r["exec_ms"] for r in held if r["decision"]["node_class"] == cls]
        assert row["tasks"] == len(mine)
        assert row["measured mean (ms)"] == pytest.approx(np.mean(mine), abs=1e-3)
        assert row["error after %"] < row["error before %"], cls  # calibration helped every class
        assert abs(row["model after (ms)"] - row["measured mean (ms)"]) < abs(
            row["model before (ms)"] - row["measured mean (ms)"])
    bars = lt.calibration_long(lt.calibration_by_class(rep))
    assert len(bars) == 3 * len(by_class) and set(bars["latency"]) == {"measured", "model before", "model after"}
    overall = lt.calibration_overall(rep)
    assert list(overall["model"]) == ["before", "after"] * 2 and overall["count"].iloc[0] == 120
    factors = lt.factors(rep).set_index("node class")
    assert list(factors.columns) == sorted(test_calibration.KIND) and factors.index[-1] == "(every class)"
    assert factors.loc["edge", "fraud_scoring"] == pytest.approx(
        test_calibration.NODE["edge-1"] * test_calibration.KIND["fraud_scoring"], rel=0.05)
    assert "| edge |" in (loop / "calibration" / "report.md").read_text()  # the page's figures in the report too


def test_shadow_agreement_over_the_recent_history(tmp_path, monkeypatch) -> None:
    """Challengers' decisions as the router records them: least-loaded beside fastest-feasible through the
    real task path (counted by the metric as they were made), and a pair of learned policies written as
    a record of an earlier router, with a failing decision, one too old for the window and one without
    a shadow."""
    backend = FakeBackend()
    svc, _ = make_service(tmp_path, backend=backend, shadow_policy="least-loaded")
    try:
        c = make_client(svc)
        for body in TASKS:
            assert c.post("/v1/tasks", json=body).status_code == 202
        _records(svc, [b["id"] for b in TASKS])
        now = time.time()
        _store(svc, "a", now - 60, {"expected": _choice(100, 1.0), "shadow": {"policy": "rl:2", "agrees": True}},
               score=0.9, slo_met=True)
        _store(svc, "b", now - 50, {"expected": _choice(100, 1.0),
                                    "shadow": {"policy": "rl:2", "agrees": False, "expected": _choice(80, 0.5)}},
               score=1.1, slo_met=False)
        _store(svc, "c", now - 40, {"expected": _choice(200, 0.5),
                                    "shadow": {"policy": "rl:2", "agrees": False, "expected": _choice(300, 1.5)}},
               status="failed")
        _store(svc, "d", now - 30, {"shadow": {"policy": "rl:2", "error": "RuntimeError: bug"}}, score=2.0,
               slo_met=True)
        _store(svc, "old", now - 7200, {"shadow": {"policy": "rl:2", "agrees": True}})
        _store(svc, "none", now - 20, {"expected": _choice(100, 1.0)})
        svc.history.flush()
        doc = c.get("/v1/loop", params={"hours": 1}).json()
        assert doc["challenger"] == "least-loaded"
        sh = doc["shadow"]
        assert sh["decisions_read"] == len(TASKS) + 4 and not sh["truncated"]
        live, learned = sh["pairs"]  # most decisions first
        agreed = svc.metrics.sink.total(SHADOW, policy="least-loaded", agrees="true")
        assert (live["champion"], live["challenger"], live["decisions"]) == ("fastest-feasible", "least-loaded",
                                                                            len(TASKS))
        assert live["agreements"] == agreed and live["disagreements"] == len(TASKS) - agreed > 0
        assert live["errors"] == 0 and live["compared"] == live["disagreements"]
        assert live["agreement_pct"] == pytest.approx(100.0 * agreed / len(TASKS), abs=0.01)
        assert learned == {
            "champion": "rf:5", "challenger": "rl:2", "decisions": 4, "agreements": 1, "disagreements": 2,
            "errors": 1, "agreement_pct": pytest.approx(33.33), "compared": 2, "challenger_better": 1,
            "champion_expected_ms": 150.0, "challenger_expected_ms": 190.0, "champion_expected_score": 0.75,
            "challenger_expected_score": 1.0, "champion_measured_score": pytest.approx(4.0 / 3, abs=1e-4),
            "champion_slo_met_pct": pytest.approx(66.67)}
        table = lt.shadow_agreement(sh["pairs"])
        assert list(table["challenger"]) == ["least-loaded", "rl:2"] and list(table["errors"]) == [0, 1]
        assert list(lt.shadow_expected(sh["pairs"])["score, challenger"])[-1] == 1.0
        wider = c.get("/v1/loop", params={"hours": 3}).json()["shadow"]
        assert wider["pairs"][1]["decisions"] == 5  # the older record is in a three-hour window
        monkeypatch.setattr(loop_views, "MAX_SHADOW_ROWS", 3)
        few = c.get("/v1/loop", params={"hours": 3}).json()["shadow"]
        assert few["truncated"] and few["decisions_read"] == 3
        # the newest three: tasks sent through the router after the records dated a minute back
        assert [(p["challenger"], p["decisions"]) for p in few["pairs"]] == [("least-loaded", 3)]
    finally:
        svc.close()


def test_counterfactual_report_and_the_promotion_log(tmp_path) -> None:
    url, tasks = test_history_replay.write_history(tmp_path / "h.db")
    loop = tmp_path / "loop"
    assert main(["counterfactual", "--history", url, "--cluster", LOCAL, "--policies", "fastest-feasible,random",
                 "--seeds", "1-2", "--out", str(loop / "counterfactual")]) == 0
    svc, _ = make_service(tmp_path, loop_dir=str(loop), promotion_window=2)
    try:
        for _ in range(2):
            svc.promotions.outcome("fastest-feasible", False)
        svc.set_shadow("least-loaded")
        svc.promote()
        doc = make_client(svc, key=None).get("/v1/loop").json()
    finally:
        svc.close()
    written = json.loads((loop / "counterfactual" / "counterfactual.json").read_text())
    rep = doc["counterfactual"]["report"]
    assert rep["policies"] == written["policies"] and rep["tasks"] == len(tasks)
    df = lt.objectives(rep)
    assert list(df["policy"]) == ["fastest-feasible", "random"]
    rnd = written["policies"]["random"]
    assert df["vs champion"].iloc[1] == rnd["vs_first"] and df["CI low"].iloc[0] == written["policies"][
        "fastest-feasible"]["ci"][0]
    assert rnd["vs_first_ci"][0] > 0  # at high load random is clearly worse, task by task
    assert lt.verdict(rep, "random") == "random is worse than fastest-feasible task by task (the whole interval is " \
                                        "above zero)"
    assert (doc["champion"], doc["challenger"]) == ("least-loaded", "fastest-feasible")
    promo = doc["promotion"]
    assert promo["watching"]["policy"] == "least-loaded" and promo["watching"]["progress"] == "0 of 2 verdicts"
    log = lt.promotion_log(promo["log"])
    assert log.iloc[0][["event", "policy", "previous", "baseline miss rate %"]].tolist() == [
        "promoted", "least-loaded", "fastest-feasible", 0.0]
