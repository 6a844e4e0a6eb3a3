"""``GET /v1/capacity/forecast`` and ``/v1/capacity/recommendation`` over a real history and a real
``capacity recommend`` run (the router's node view is the fake of ``router_fakes``)."""
from __future__ import annotations

import json
import time

import pytest

from capacity.cli import main as capacity_main
from tests.serve_app.router_fakes import fill_demand, make_client, make_service

pytest.importorskip("statsforecast")
DAYS = 5


@pytest.fixture
def svc(tmp_path):
    s, _ = make_service(tmp_path, capacity_dir=str(tmp_path / "recommend"))
    yield s
    s.close()


def test_forecast_of_the_history_beside_its_actuals(svc) -> None:
    now = time.time()
    times = fill_demand(svc, DAYS, 12.0, now, quiet_hours=2)
    svc.history.accept("in-progress", {"kind": "fraud_scoring"}, kind="fraud_scoring", status="running",
                       accepted_at=now - 1)  # in the hour in progress: not an actual yet
    svc.history.flush()
    client = make_client(svc, key=None)  # a read: no key needed
    r = client.get("/v1/capacity/forecast", params={"interval": "1h", "horizon": 12})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["history"]["tasks"] == len(times) + 1 and not doc["history"]["truncated"] and not doc["cached"]
    by_id = {s["id"]: s for s in doc["series"]}
    assert {"arrivals", "arrivals/kind=fraud_scoring", "arrivals/kind=llm_inference"} <= set(by_id)
    assert "gpu_s" not in by_id  # no GPU task arrived: an all-zero series is not forecast
    total = by_id["arrivals"]
    # actuals: whole hours after the oldest (which may be partly covered) and before the one in progress
    hour = 3600.0
    first_whole = (min(times) // hour + 1) * hour
    expected = sum(1 for t in times if t >= first_whole)
    assert len(total["actual"]) == doc["history"]["whole_intervals"] == DAYS * 24 - 1
    assert sum(p["y"] for p in total["actual"]) == expected == doc["history"]["tasks_counted"]
    assert [p["y"] for p in total["actual"][-2:]] == [0, 0]  # the quiet last two hours are demand too
    assert total["actual"][-1]["ds"] < doc["forecast_from"] == total["forecast"]["ets"][0]["ds"]
    assert doc["models"] == ["snaive", "ets"] and doc["skipped"] == {}
    for model in ("snaive", "ets"):
        pts = total["forecast"][model]
        assert len(pts) == 12 and all(p["lo_95"] <= p["lo_80"] <= p["mean"] <= p["hi_80"] <= p["hi_95"] for p in pts)
    # five days of hours is enough to backtest 12 hours: predictions against what then arrived
    assert doc["backtest"]["horizon"] == 12
    assert {e["model"] for e in total["errors"]} == {"snaive", "ets"}
    assert all(e["mae"] >= 0 and 0 <= e["cov_95"] <= 1 for e in total["errors"])
    bt = total["backtest"]["ets"]
    assert [p["y"] for p in bt] == [p["y"] for p in total["actual"][-12:]]
    again = client.get("/v1/capacity/forecast", params={"interval": "1h", "horizon": 12}).json()
    assert again["cached"] and again["series"] == doc["series"]


def test_a_model_the_history_is_too_short_for_is_skipped_with_the_reason(tmp_path) -> None:
    svc, _ = make_service(tmp_path, capacity_max_rows=50)
    try:
        fill_demand(svc, 1, 12.0)
        r = make_client(svc, key=None).get("/v1/capacity/forecast", params={"horizon": 24, "models": "lgbm,mstl"})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["models"] == ["snaive"] and set(doc["skipped"]) == {"lgbm", "mstl"}
        assert doc["history"]["truncated"] and doc["history"]["tasks"] == 50  # the newest 50 rows only
        assert doc["backtest"] is None and doc["backtest_needs"] == 72
    finally:
        svc.close()


@pytest.mark.parametrize("params, field", [
    ({"interval": "7min"}, "interval"), ({"horizon": 0}, "horizon"), ({"horizon": 169}, "horizon"),
    ({"horizon": "day"}, "horizon"), ({"models": "prophet"}, "models"), ({"models": ","}, "models"),
])
def test_bad_forecast_arguments_name_the_field(svc, params, field) -> None:
    r = make_client(svc, key=None).get("/v1/capacity/forecast", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["query", field]


def test_too_little_history_and_a_busy_forecaster_say_so(svc) -> None:
    client = make_client(svc, key=None)
    r = client.get("/v1/capacity/forecast")
    assert r.status_code == 409 and "no tasks" in r.json()["detail"]
    svc.history.accept("t-1", {"kind": "x"}, kind="x", status="succeeded", accepted_at=time.time() - 60)
    svc.history.flush()
    r = client.get("/v1/capacity/forecast", params={"interval": "1D"})
    assert r.status_code == 409 and "at least 4" in r.json()["detail"]
    assert svc.capacity._slot.acquire(blocking=False)  # another forecast is computing
    try:
        r = client.get("/v1/capacity/forecast", params={"interval": "15min"})
        assert r.status_code == 429 and r.headers["Retry-After"] and "one is computed at a time" in r.text
    finally:
        svc.capacity._slot.release()


def test_recommendation_is_the_one_the_command_wrote(svc, tmp_path) -> None:
    client = make_client(svc, key=None)
    folder = tmp_path / "recommend"
    r = client.get("/v1/capacity/recommendation")
    assert r.status_code == 404 and "orchestrator capacity recommend" in r.json()["detail"]
    assert capacity_main(["capacity", "recommend", "--workload", "configs/workloads/gpu_heavy.yaml", "--rate", "6",
                          "--window", "60", "--seeds", "1", "--policy", "fastest-feasible", "--max-nodes", "3",
                          "--out", str(folder)]) == 0
    doc = client.get("/v1/capacity/recommendation").json()
    assert doc["feasible"] and doc["policy"] == "fastest-feasible"
    assert doc["cluster_diff"] == (folder / "cluster.diff").read_text()
    assert doc["saving_per_hour"] == pytest.approx(doc["now"]["cost_per_hour"] - doc["recommended"]["cost_per_hour"],
                                                   abs=1e-4)
    assert doc["worker_groups"] and doc["request_resources"] and doc["age_s"] >= 0
    for broken in ({"created_at": "not a time"}, {**doc, "created_at": "not a time"}, {**doc, "created_at": [1]}):
        (folder / "recommendation.json").write_text(json.dumps(broken))
        r = client.get("/v1/capacity/recommendation")
        assert r.status_code == 503 and "cannot be read" in r.json()["detail"], r.text
