"""The router's HTTP API over real policies, validation and history, with a fake node view.

What needs Ray (running tasks, Serve, batching, restarts) is in
``tests/integration/test_serve_router.py``.
"""
from __future__ import annotations

import json
import time

import pytest

from cluster.vocabulary import SHARE_KINDS, STATUSES
from tests.learned_registry import learned_registry  # noqa: F401  (autouse: rf:latest exists)
from tests.serve_app.router_fakes import TOKEN, make_client, make_service


@pytest.fixture
def svc(tmp_path):
    s, ray = make_service(tmp_path)
    s.fake_ray = ray
    yield s
    s.close()


@pytest.fixture
def client(svc):
    return make_client(svc)


def _loc(r) -> list:
    return r.json()["detail"][0]["loc"]


def test_route_returns_a_full_decision(client) -> None:
    r = client.post("/v1/route", json={"description": "real-time fraud detection"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["placed"] and d["node"] == "edge-1" and d["pool"] == "edge" and d["tier"] == "edge"
    assert d["share"] == {"kind": "cpu", "amount": 0, "text": "CPU only"}
    assert d["policy"] == "fastest-feasible" and d["policy_version"] is None
    assert set(d["inferred"]) == {"priority", "slo_ms", "cost_sensitivity"}
    assert d["scores"]["edge-1"] == max(d["scores"].values())  # the chosen node scores highest
    assert d["decision_ms"] > 0 and d["explanation"].startswith("edge-1")
    assert d["task_id"].startswith("t-")


def test_gpu_shares_and_pool_restriction(client) -> None:
    d = client.post("/v1/route", json={"mig_profile": "1g.10gb", "cpu_milli": 500}).json()
    assert d["node"] == "gpu-mig-1" and d["share"]["kind"] == "mig" and d["share"]["amount"] == "1g.10gb"
    assert set(d["scores"]) == {"gpu-mig-1"}  # only the MIG node can host it
    d = client.post("/v1/route", json={"description": "nightly batch ETL", "pool": "gpu-ts"}).json()
    assert d["pool"] == "gpu-ts"
    r = client.post("/v1/route", json={"mig_profile": "1g.10gb", "pool": "edge"})
    assert r.status_code == 409 and "in pool edge" in r.json()["detail"]


@pytest.mark.parametrize("body, field", [
    ({"priority": 0}, "priority"),
    ({"priority": 11}, "priority"),
    ({"priority": "high"}, "priority"),
    ({"priority": True}, "priority"),
    ({"priority": 5.5}, "priority"),
    ({"slo_ms": -1}, "slo_ms"),
    ({"slo_ms": 0}, "slo_ms"),
    ({"cpu_milli": -5}, "cpu_milli"),
    ({"cpu_milli": 10**12}, "cpu_milli"),
    ({"mem_mib": -1}, "mem_mib"),
    ({"gpu_milli": 1000}, "gpu_milli"),
    ({"gpu_count": 65}, "gpu_count"),
    ({"mig_profile": "9g.90gb"}, "mig_profile"),
    ({"gpu_models": "V100"}, "gpu_models"),
    ({"work": -1.0}, "work"),
    ({"cost_sensitivity": 0}, "cost_sensitivity"),
    ({"description": "x" * 2001}, "description"),
    ({"id": "x" * 129}, "id"),
    ({"id": "a/b"}, "id"),
    ({"kind": ""}, "kind"),
    ({"pool": "moon"}, "pool"),
    ({"colour": "red"}, "colour"),
    ({"gpu_milli": 250, "mig_profile": "1g.10gb"}, "gpu_milli"),
    ({"cpu_milli": 0}, "cpu_milli"),
])
def test_bad_input_is_a_4xx_naming_the_field(client, body, field) -> None:
    for path in ("/v1/route", "/v1/tasks"):
        r = client.post(path, json=body)
        assert r.status_code == 422, (path, body, r.text)
        assert _loc(r)[-1] == field, r.json()
        assert r.json()["detail"][0]["msg"]


def test_malformed_and_oversized_bodies(client) -> None:
    hdr = {"content-type": "application/json"}
    r = client.post("/v1/route", content=b'{"priority": ', headers=hdr)
    assert r.status_code == 400 and r.json()["detail"][0]["type"] == "json_invalid"
    r = client.post("/v1/route", content=b'{"slo_ms": NaN}', headers=hdr)
    assert r.status_code == 422 and _loc(r)[-1] == "slo_ms"
    r = client.post("/v1/route", content=b"[" * 200_000, headers=hdr)
    assert 400 <= r.status_code < 500
    r = client.post("/v1/route", json=[1, 2])
    assert r.status_code == 422
    r = client.post("/v1/route/batch", content=b" " * (9 << 20), headers=hdr)
    assert r.status_code == 413
    r = client.put("/v1/policy", content=b" " * (9 << 20), headers=hdr)  # a route FastAPI answers
    assert r.status_code == 413
    r = client.put("/v1/policy", content=iter([b" " * (5 << 20)] * 2), headers=hdr)  # chunked, no length
    assert r.status_code == 413


def test_infeasible_is_409_and_hosts_down_is_503(svc, client) -> None:
    r = client.post("/v1/route", json={"mig_profile": "7g.80gb"})
    assert r.status_code == 409 and "no node can host" in r.json()["detail"] and "7g.80gb" in r.json()["detail"]
    r = client.post("/v1/tasks", json={"cpu_milli": 64_000})
    assert r.status_code == 409 and svc.history.count() == 0  # refused, not accepted
    svc.fake_ray.dead.add("gpu-mig-1")
    time.sleep(0.1)  # the node view is re-read when older than refresh_s (0.05 s here)
    r = client.post("/v1/route", json={"mig_profile": "1g.10gb", "cpu_milli": 500})
    assert r.status_code == 503 and "gpu-mig-1" in r.json()["detail"] and r.headers["retry-after"]
    r = client.post("/v1/tasks", json={"mig_profile": "1g.10gb", "cpu_milli": 500})
    assert r.status_code == 503 and svc.history.count() == 0
    nodes = {n["name"]: n for n in client.get("/v1/cluster").json()["nodes"]}
    assert not nodes["gpu-mig-1"]["alive"] and not nodes["gpu-mig-1"]["usable"] and nodes["edge-1"]["alive"]
    assert client.get("/healthz").json()["nodes_usable"] == 3


def test_a_drained_node_takes_no_new_task_and_the_drain_names_a_bad_node(svc, client) -> None:
    """PUT /v1/cluster/draining (admin): exactly the nodes named drain; [] ends it; an unknown name is a 422;
    the cloud pool's standby slot (test_small.yaml's scaling) shows as one, not as a node that is down."""
    admin = {"Authorization": f"Bearer {TOKEN}"}
    nodes = {n["name"]: n for n in client.get("/v1/cluster").json()["nodes"]}
    assert nodes["cloud-add1"]["standby"] and not nodes["cloud-add1"]["alive"] and not nodes["cloud-1"]["standby"]
    health = client.get("/healthz").json()
    assert (health["nodes_total"], health["nodes_standby"], health["status"]) == (4, 1, "ok")
    pinned = {"cpu_milli": 500, "pool": "cloud"}
    assert client.post("/v1/route", json=pinned).json()["node"] == "cloud-1"
    assert client.put("/v1/cluster/draining", json={"nodes": ["cloud-1"]}).status_code == 401
    r = client.put("/v1/cluster/draining", json={"nodes": ["cloud-1", "cloud-9"]}, headers=admin)
    assert r.status_code == 422 and _loc(r) == ["body", "nodes"] and "cloud-9" in r.json()["detail"][0]["msg"]
    r = client.put("/v1/cluster/draining", json={"nodes": ["cloud-1"]}, headers=admin)
    assert r.status_code == 200 and r.json()["previous_draining"] == []
    drained = {n["name"]: n for n in r.json()["nodes"]}["cloud-1"]
    assert drained["draining"] and drained["alive"] and not drained["usable"]
    assert drained["problem"].startswith("draining")
    r = client.post("/v1/route", json=pinned)  # its pool's only other node is a slot not started
    assert r.status_code == 503 and "cloud-1 (draining" in r.json()["detail"] and "cloud-add1 (standby" in r.json()["detail"]
    assert client.post("/v1/route", json={"cpu_milli": 500}).json()["node"] != "cloud-1"
    r = client.put("/v1/cluster/draining", json={"nodes": []}, headers=admin)
    assert r.status_code == 200 and r.json()["previous_draining"] == ["cloud-1"]
    assert client.post("/v1/route", json=pinned).json()["node"] == "cloud-1"


def test_batch_keeps_order_and_plan_spreads(client) -> None:
    tasks = [{"id": f"b{i}", "description": "medical image segmentation"} for i in range(12)]
    plain = client.post("/v1/route/batch", json={"tasks": tasks}).json()
    assert [d["task_id"] for d in plain["decisions"]] == [t["id"] for t in tasks]
    assert len({d["node"] for d in plain["decisions"]}) == 1  # each as if sent alone: the same answer
    plan = client.post("/v1/route/batch", json={"tasks": tasks, "plan": True}).json()
    assert plan["plan"] and len({d["node"] for d in plan["decisions"]}) > 1  # capacity taken spreads them
    assert plain["decisions"][0]["node"] == plan["decisions"][0]["node"]
    mixed = client.post("/v1/route/batch", json={"tasks": [{"mig_profile": "7g.80gb"}, {"cpu_milli": 100}]})
    assert mixed.status_code == 200
    a, b = mixed.json()["decisions"]
    assert not a["placed"] and a["status"] == 409 and b["placed"]
    r = client.post("/v1/route/batch", json={"tasks": [{"cpu_milli": 100}, {"priority": 99}]})
    assert r.status_code == 422 and _loc(r) == ["body", "tasks", 1, "priority"]
    assert client.post("/v1/route/batch", json={"tasks": []}).status_code == 422


def test_batch_size_limit(tmp_path) -> None:
    svc, _ = make_service(tmp_path, max_batch=3)
    try:
        r = make_client(svc).post("/v1/route/batch", json={"tasks": [{"cpu_milli": 100}] * 4})
        assert r.status_code == 422 and "at most 3" in r.json()["detail"][0]["msg"]
    finally:
        svc.close()


def test_policy_switch_needs_the_admin_token(svc, client) -> None:
    assert client.get("/v1/policy").json()["policy"] == "fastest-feasible"
    body = {"policy": "least-loaded"}
    r = client.put("/v1/policy", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert client.put("/v1/policy", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.put("/v1/policy", json=body, headers={"Authorization": "Basic " + TOKEN}).status_code == 401
    assert client.get("/v1/policy").json()["policy"] == "fastest-feasible"
    r = client.put("/v1/policy", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["policy"] == "least-loaded" and r.json()["previous"] == "fastest-feasible"
    assert client.post("/v1/route", json={"cpu_milli": 100}).json()["policy"] == "least-loaded"


def test_no_admin_token_configured_refuses_with_how_to(svc) -> None:
    r = make_client(svc, token=None).put("/v1/policy", json={"policy": "least-loaded"},
                                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 403 and "ORCH_ADMIN_TOKEN" in r.json()["detail"]


def test_learned_policy_versions(svc, client) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    info = client.get("/v1/policy").json()
    assert info["learned"]["rf"] == [1]
    r = client.put("/v1/policy", json={"policy": "rf"}, headers=auth)
    assert r.status_code == 200 and r.json()["policy"] == "rf:1" and r.json()["version"] == 1
    d = client.post("/v1/route", json={"description": "real-time fraud detection"}).json()
    assert d["policy"] == "rf:1" and d["policy_version"] == 1
    assert d["confidence"] is not None and abs(sum(d["probabilities"].values()) - 1) < 1e-6
    r = client.put("/v1/policy", json={"policy": "rf", "version": 99}, headers=auth)
    assert r.status_code == 422 and _loc(r) == ["body", "version"] and "99" in r.json()["detail"][0]["msg"]
    r = client.put("/v1/policy", json={"policy": "least-loaded", "version": "2"}, headers=auth)
    assert r.status_code == 422 and _loc(r) == ["body", "version"]
    r = client.put("/v1/policy", json={"policy": "magic"}, headers=auth)
    assert r.status_code == 422 and _loc(r) == ["body", "policy"] and "known:" in r.json()["detail"][0]["msg"]
    assert client.get("/v1/policy").json()["policy"] == "rf:1"  # refused switches change nothing


def test_task_listing_filters_and_pages(svc, client) -> None:
    h = svc.history
    for i in range(5):
        h.accept(f"k{i}", {"id": f"k{i}"}, policy="least-loaded", priority=5, slo_ms=100.0, kind="generic",
                 accepted_at=1000.0 + i)
        h.update(f"k{i}", "succeeded" if i % 2 else "failed", pool="edge" if i < 3 else "cloud",
                 reason=None if i % 2 else "NodeDiedError on node edge-1; after 3 attempt(s)", attempts=1)
    h.flush()
    page = client.get("/v1/tasks", params={"limit": 2}).json()
    assert page["total"] == 5 and [r["task_id"] for r in page["items"]] == ["k4", "k3"] and page["next_offset"] == 2
    page = client.get("/v1/tasks", params={"limit": 2, "offset": 4}).json()
    assert [r["task_id"] for r in page["items"]] == ["k0"] and page["next_offset"] is None
    assert client.get("/v1/tasks", params={"status": "failed"}).json()["total"] == 3
    assert client.get("/v1/tasks", params={"pool": "cloud"}).json()["total"] == 2
    assert client.get("/v1/tasks", params={"since": 1001, "until": 1003}).json()["total"] == 2
    assert client.get("/v1/tasks", params={"policy": "rf"}).json()["total"] == 0
    assert client.get("/v1/tasks", params={"status": "lost"}).status_code == 422
    assert client.get("/v1/tasks", params={"limit": 0}).status_code == 422
    assert client.get("/v1/tasks", params={"since": "nan"}).status_code == 422
    rec = client.get("/v1/tasks/k0").json()
    assert rec["status"] == "failed" and "NodeDiedError" in rec["reason"] and rec["attempts"] == 1
    assert [e["status"] for e in rec["events"]] == ["accepted", "failed"]
    assert client.get("/v1/tasks/none-such").status_code == 404


def test_metrics_count_decisions_by_policy_and_pool(svc, client) -> None:
    client.post("/v1/route", json={"description": "real-time fraud detection"})
    client.post("/v1/route/batch", json={"tasks": [{"mig_profile": "1g.10gb", "cpu_milli": 100}] * 3})
    client.post("/v1/route", json={"mig_profile": "7g.80gb"})
    sink = svc.metrics.sink
    assert sink.total("orch_decisions_total", pool="edge", endpoint="route") == 1
    assert sink.total("orch_decisions_total", pool="gpu-mig", endpoint="batch") == 3
    assert sink.total("orch_decisions_total", pool="none") == 1
    assert sum(len(v) for (n, _), v in sink.observations.items() if n == "orch_decision_latency_seconds") == 5


def test_openapi_documents_every_operation(client) -> None:
    doc = client.get("/openapi.json").json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops >= {("POST", "/v1/route"), ("POST", "/v1/route/batch"), ("POST", "/v1/tasks"),
                   ("GET", "/v1/tasks"), ("GET", "/v1/tasks/{task_id}"), ("GET", "/v1/cluster"),
                   ("GET", "/v1/policy"), ("PUT", "/v1/policy"), ("GET", "/healthz")}
    task = doc["components"]["schemas"]["TaskIn"]
    assert task["additionalProperties"] is False
    assert json.dumps(task["properties"]["priority"]).count("10") >= 1


def test_openapi_names_the_vocabularys_statuses_and_share_kinds(client) -> None:
    """Clients generated from the document accept every status the router writes, and no other."""
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert schemas["TaskOut"]["properties"]["status"]["enum"] == list(STATUSES)
    assert schemas["ShareOut"]["properties"]["kind"]["enum"] == list(SHARE_KINDS)
    (query,) = [p for p in doc["paths"]["/v1/tasks"]["get"]["parameters"] if p["name"] == "status"]
    assert [s["enum"] for s in query["schema"]["anyOf"] if "enum" in s] == [list(STATUSES)]


def test_fast_path_answers_as_fastapi_does(client) -> None:
    """Valid bodies of the hot routes skip FastAPI's routing (``FastPath``); a query string sends
    the same request through FastAPI. The answers must not differ."""
    def both(path: str, body: dict) -> tuple[dict, dict]:
        fast = client.post(path, json=body)
        slow = client.post(f"{path}?through=fastapi", json=body)
        assert fast.status_code == slow.status_code, (fast.text, slow.text)
        a, b = fast.json(), slow.json()
        for d in (a, b, *a.get("decisions", ()), *b.get("decisions", ()), a.get("decision", {}),
                  b.get("decision", {})):
            d.pop("decision_ms", None)
        return a, b

    a, b = both("/v1/route", {"id": "same-1", "description": "real-time fraud detection"})
    assert a == b and a["node"] == "edge-1"
    a, b = both("/v1/route/batch", {"tasks": [{"id": "x1", "cpu_milli": 100},
                                              {"id": "x2", "mig_profile": "7g.80gb"}], "plan": True})
    assert a == b and a["decisions"][1]["status"] == 409
    a, b = both("/v1/route", {"id": "x3", "mig_profile": "7g.80gb"})  # an ApiError raised in the handler
    assert a == b and "no node can host" in a["detail"]
    a, b = both("/v1/tasks", {"id": "x4", "cpu_milli": 64_000})
    assert a == b and "no node can host" in a["detail"]


def test_fast_path_hands_everything_else_over_unchanged() -> None:
    from fastapi.testclient import TestClient

    from serve_app.api import FastPath
    from serve_app.guard import Guard, Limits
    from serve_app.errors import ApiError, JSONResponse
    from serve_app.models import TaskIn

    seen: list[tuple[str, bytes]] = []

    async def app(scope, receive, send) -> None:  # stands for FastAPI: records what reaches it
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        seen.append((scope["path"], body))
        await JSONResponse({"app": True})(scope, receive, send)

    async def handler(task: TaskIn, authorization: str | None) -> JSONResponse:
        if authorization is not None:
            return JSONResponse({"fast": task.priority, "authorization": authorization})
        if task.priority == 9:
            raise ApiError(409, "nine is taken", extra={"task_id": "t"})
        if task.priority == 8:
            raise RuntimeError("a bug")
        return JSONResponse({"fast": task.priority})

    client = TestClient(Guard(FastPath(app, {"/v1/route": (TaskIn, handler)}), limits=lambda: Limits(max_body_bytes=64),
                              who=lambda auth, host: host))
    assert client.post("/v1/route", json={"priority": 3}).json() == {"fast": 3}
    assert client.post("/v1/route", json={"priority": 3}, headers={"Authorization": "Bearer k"}).json() == {
        "fast": 3, "authorization": "Bearer k"}  # the handler gets the credential
    assert not seen
    r = client.post("/v1/route", json={"priority": 9})
    assert r.status_code == 409 and r.json() == {"detail": "nine is taken", "task_id": "t"}
    r = client.post("/v1/route", json={"priority": 8})
    assert r.status_code == 500 and r.json() == {"detail": "internal error in the router (logged)"}
    raw = b'{"priority": 11}'  # refused by the model: the app gets the very bytes
    assert client.post("/v1/route", content=raw, headers={"content-type": "application/json"}).json() == {"app": True}
    assert seen.pop() == ("/v1/route", raw)
    for r in (client.post("/v1/route?x=1", json={"priority": 3}),
              client.post("/v1/route", content=b'{"priority": 3}', headers={"content-type": "text/plain"}),
              client.post("/v1/other", json={"priority": 3}),
              client.get("/v1/route")):
        assert r.json() == {"app": True}
    assert len(seen) == 4
    r = client.post("/v1/route", content=iter([b'{"description": "', b"x" * 100, b'"}']),
                    headers={"content-type": "application/json"})  # chunked, no length: counted as read
    assert r.status_code == 413 and "64 bytes" in r.json()["detail"]


def test_trimmed_tasks_stay_countable_through_the_aggregates_call(tmp_path) -> None:
    """Retention deletes old final tasks; their daily totals are read back over HTTP (admin only),
    filtered by day or status, and a malformed filter names its field."""
    svc, _ = make_service(tmp_path, history_max_rows=5)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    for i in range(12):
        svc.history.accept(f"a{i}", {"description": "x"}, policy="fgd", accepted_at=time.time(), kind="demo")
        svc.history.update(f"a{i}", "succeeded" if i % 3 else "failed", pool="edge", cost=0.5, latency_ms=100.0,
                           slo_met=True)
    svc.history.flush()
    assert svc.history.trim() == 7
    client = make_client(svc)
    admin = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/v1/history/aggregates").status_code == 401  # an API key is not the admin
    rows = client.get("/v1/history/aggregates", headers=admin).json()
    assert sum(r["tasks"] for r in rows) == 7 and {r["day"] for r in rows} == {day}
    assert {r["status"] for r in rows} <= {"succeeded", "failed"}
    ok = client.get(f"/v1/history/aggregates?day={day}&status=succeeded", headers=admin).json()
    assert sum(r["tasks"] for r in ok) == sum(r["tasks"] for r in rows if r["status"] == "succeeded")
    assert all(r["pool"] == "edge" and r["policy"] == "fgd" and r["cost_sum"] == 0.5 * r["tasks"] for r in ok)
    for day in ("yesterday", "2026-13-45"):
        bad = client.get(f"/v1/history/aggregates?day={day}", headers=admin)
        assert bad.status_code == 422 and "day" in json.dumps(bad.json())
    assert client.get("/v1/tasks?limit=1000").json()["total"] == 5
