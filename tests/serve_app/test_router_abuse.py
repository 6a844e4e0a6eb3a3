"""The router under abuse, over real policies, history, keys and executor bookkeeping.

Ray is faked twice, as in the other router tests: the node view (``router_fakes``)
and the executor's backend (the executor tests' fake, on which nothing finishes
until a test says so), so accepted tasks stay in flight exactly as long as a test
needs. Real-Ray behaviour (a cancelled task's worker stopping) is in tests/integration.
"""
from __future__ import annotations

import threading
import time

import pytest

from tests.cluster.test_executor import FakeRay as FakeBackend
from tests.cluster.test_executor import wait_for
from tests.learned_registry import learned_registry  # noqa: F401  (autouse: rf:latest exists)
from tests.serve_app.router_fakes import TOKEN, api_key, make_client, make_service

ADMIN = {"Authorization": f"Bearer {TOKEN}"}
#: a small CPU task that the 2-CPU edge node runs two of at a time
SMALL = {"cpu_milli": 1000, "mem_mib": 100, "work": 1.0, "pool": "edge"}


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def _service(tmp_path, backend, **args):
    svc, _ = make_service(tmp_path, backend=backend, **{"key_refresh_s": 0.1, **args})
    return svc


@pytest.fixture
def svc(tmp_path, backend):
    s = _service(tmp_path, backend)
    yield s
    s.close()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_work_needs_a_key_and_nothing_unauthenticated_is_recorded(svc) -> None:
    anon = make_client(svc, key=None)
    r = anon.post("/v1/tasks", json=SMALL)
    assert r.status_code == 401 and "orchestrator keys create" in r.json()["detail"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert anon.post("/v1/tasks", json=SMALL, headers=_auth("ork_guessed")).status_code == 401
    assert anon.post("/v1/tasks", json=SMALL, headers={"Authorization": "Basic eDp5"}).status_code == 401
    assert anon.delete("/v1/tasks/x").status_code == 401
    assert anon.get("/v1/tasks").json()["total"] == 0  # nothing was accepted
    assert anon.post("/v1/route", json=SMALL).status_code == 200  # a decision runs nothing: open by default
    ok = make_client(svc)
    r = ok.post("/v1/tasks", json={**SMALL, "id": "k1"})
    assert r.status_code == 202, r.text
    assert svc.history.get("k1")["task"]["owner"] == "tests"


def test_closed_route_needs_a_key_too(tmp_path, backend) -> None:
    svc = _service(tmp_path, backend, open_route=False)
    try:
        assert make_client(svc, key=None).post("/v1/route", json=SMALL).status_code == 401
        assert make_client(svc, key=None).post("/v1/route/batch", json={"tasks": [SMALL]}).status_code == 401
        assert make_client(svc).post("/v1/route", json=SMALL).status_code == 200
    finally:
        svc.close()


def test_admin_creates_lists_and_revokes_keys(svc) -> None:
    c = make_client(svc, key=None)
    assert c.post("/v1/keys", json={"name": "team-a"}).status_code == 401  # no admin token
    r = c.post("/v1/keys", json={"name": "team-a", "rate_per_s": 5, "burst": 10}, headers=ADMIN)
    assert r.status_code == 201, r.text
    secret = r.json()["key"]
    assert secret.startswith("ork_") and r.json()["rate_per_s"] == 5
    assert c.post("/v1/keys", json={"name": "team-a"}, headers=ADMIN).status_code == 409  # one active key per name
    assert c.post("/v1/keys", json={"name": "bad name"}, headers=ADMIN).status_code == 422
    listed = c.get("/v1/keys", headers=ADMIN).json()
    assert [k["name"] for k in listed] == ["team-a"] and listed[0].get("key") is None
    assert secret not in str(listed)
    row = svc.keys.list()[0]
    assert row.sha256 != secret and secret not in str(row)  # only the digest is stored
    assert c.post("/v1/tasks", json=SMALL, headers=_auth(secret)).status_code == 202
    assert c.post("/v1/keys", json={"name": "x"}, headers=_auth(secret)).status_code == 401  # a key is not admin
    assert c.delete("/v1/keys/team-a", headers=ADMIN).json()["active"] is False
    assert c.delete("/v1/keys/team-a", headers=ADMIN).status_code == 404
    time.sleep(0.15)  # key_refresh_s
    assert c.post("/v1/tasks", json=SMALL, headers=_auth(secret)).status_code == 401


def test_a_flooding_key_gets_429_with_retry_after_and_another_key_is_served(svc) -> None:
    flood = make_client(svc, key=None)
    fk = api_key(svc, "flood", rate_per_s=1.0, burst=3)
    codes = [flood.post("/v1/route", json=SMALL, headers=_auth(fk)) for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    r = codes[-1]
    assert r.json()["limit"] == "rate" and "flood" in r.json()["detail"] and int(r.headers["Retry-After"]) >= 1
    assert make_client(svc).post("/v1/route", json=SMALL).status_code == 200  # another key: its own bucket
    r = flood.post("/v1/route/batch", json={"tasks": [SMALL] * 4}, headers=_auth(fk))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tasks"]  # over the burst: never
    assert svc.metrics.sink.values[("orch_requests_refused_total", (("reason", "rate"),))] == 1


def test_fair_share_stops_the_flooder_and_keeps_room_for_others(tmp_path, backend) -> None:
    svc = _service(tmp_path, backend, max_in_flight=8, pool_max_queued=1000)
    try:
        flood, other = make_client(svc, key="flood"), make_client(svc, key="other")
        codes = [flood.post("/v1/tasks", json=SMALL).status_code for _ in range(6)]
        assert codes == [202] * 4 + [429] * 2  # alone, it holds half the router (its fair share)
        r = flood.post("/v1/tasks", json=SMALL)
        assert r.json()["limit"] == "fair_share" and "fair share" in r.json()["detail"]
        # two clients: 8 / 2 each, so the newcomer gets its 4 and the router is full
        assert [other.post("/v1/tasks", json=SMALL).status_code for _ in range(5)] == [202] * 4 + [429]
        assert flood.post("/v1/tasks", json=SMALL).status_code == 429
    finally:
        svc.close()


def test_full_pool_queues_refuse_more_work(tmp_path, backend) -> None:
    svc = _service(tmp_path, backend, pool_max_queued=2)
    try:
        c = make_client(svc)
        big = {**SMALL, "cpu_milli": 2000}  # the edge node runs one at a time
        assert [c.post("/v1/tasks", json=big).status_code for _ in range(3)] == [202, 202, 202]  # 1 runs, 2 wait
        r = c.post("/v1/tasks", json=big)
        assert r.status_code == 429 and r.json()["limit"] == "queue" and "edge (2 tasks" in r.json()["detail"]
        assert c.post("/v1/tasks", json={**big, "pool": "cloud"}).status_code == 202  # another pool has room
    finally:
        svc.close()


def test_bounds_on_work_and_deadline_name_the_field(tmp_path, backend) -> None:
    svc = _service(tmp_path, backend, max_work_s=3600, max_deadline_s=600)
    try:
        c = make_client(svc)
        r = c.post("/v1/tasks", json={**SMALL, "work": 2_592_000})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "work"]
        r = c.post("/v1/tasks", json={**SMALL, "deadline_s": 601})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "deadline_s"]
        assert c.get("/v1/tasks").json()["total"] == 0
    finally:
        svc.close()


def test_plan_must_be_a_real_boolean(svc) -> None:
    r = make_client(svc).post("/v1/route/batch", json={"tasks": [SMALL], "plan": "yes"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "plan"]


def test_cancel_frees_the_node_and_a_restart_does_not_resurrect(tmp_path, backend) -> None:
    svc = _service(tmp_path, backend)
    try:
        owner, stranger = make_client(svc, key="owner"), make_client(svc, key="stranger")
        big = {**SMALL, "cpu_milli": 2000, "work": 80_000.0}  # 22 hours, under max_work_s
        assert owner.post("/v1/tasks", json={**big, "id": "long"}).status_code == 202
        r = owner.post("/v1/tasks", json={**big, "id": "next"})
        assert r.status_code == 202 and r.json()["status"] == "placed"  # waits for the long one
        assert svc.executor.queued_by_pool()["edge"][0] == 1
        assert stranger.delete("/v1/tasks/long").status_code == 403
        assert owner.delete("/v1/tasks/none-such").status_code == 404
        r = owner.delete("/v1/tasks/long")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert "cancelled by owner" in r.json()["reason"]
        assert backend.forced == [backend.sent[0]]  # its Ray task is stopped, not left to run
        assert svc.executor.queued_by_pool()["edge"][0] == 0  # capacity freed at once: "next" started
        assert owner.delete("/v1/tasks/long").status_code == 409
        assert make_client(svc, key=None).delete("/v1/tasks/next", headers=ADMIN).json()["status"] == "cancelled"
    finally:
        svc.close()
    again = _service(tmp_path, FakeBackend())
    try:
        assert again.resume_unfinished() == 0
        assert again.history.get("long")["status"] == "cancelled"
    finally:
        again.close()


def test_a_task_past_its_deadline_is_cancelled(svc, backend) -> None:
    c = make_client(svc)
    assert c.post("/v1/tasks", json={**SMALL, "id": "late", "deadline_s": 0.2}).status_code == 202
    wait_for(lambda: svc.history.get("late")["status"] == "cancelled", timeout=10)
    assert "deadline" in svc.history.get("late")["reason"]
    assert svc.admission.in_flight["tests"] == 0  # its seat was given back


def test_openapi_declares_both_bearer_schemes(svc) -> None:
    doc = make_client(svc).get("/openapi.json").json()
    assert set(doc["components"]["securitySchemes"]) == {"apiKey", "adminToken"}
    assert doc["paths"]["/v1/tasks"]["post"]["security"] == [{"apiKey": []}]
    assert doc["paths"]["/v1/policy"]["put"]["security"] == [{"adminToken": []}]
    assert "429" in doc["paths"]["/v1/tasks"]["post"]["responses"]


#: every admin operation of the router (the admin token's, not a client key's)
ADMIN_OPERATIONS = {("put", "/v1/policy"), ("get", "/v1/keys"), ("post", "/v1/keys"), ("delete", "/v1/keys/{name}"),
                    ("get", "/v1/history/aggregates"), ("put", "/v1/shadow"), ("post", "/v1/policy/promote"),
                    ("put", "/v1/cluster/draining")}


def test_openapi_declares_the_admin_token_on_every_admin_operation_and_only_there(svc) -> None:
    """A generated client sends the admin token exactly where the router asks for it."""
    doc = make_client(svc).get("/openapi.json").json()
    declared = {(m, p) for p, ops in doc["paths"].items() for m, op in ops.items()
                if {"adminToken": []} in op.get("security", [])}
    assert declared == ADMIN_OPERATIONS
    for m, p in ADMIN_OPERATIONS:
        assert doc["paths"][p][m]["security"] == [{"adminToken": []}], (m, p)
    # and the router asks for it there: a client's key is refused by each
    keyed = make_client(svc)  # the admin token is configured; this client sends its API key
    body = {("put", "/v1/policy"): {"policy": "least-loaded"}, ("post", "/v1/keys"): {"name": "x"},
            ("put", "/v1/shadow"): {"policy": None}, ("put", "/v1/cluster/draining"): {"nodes": []}}
    for m, p in sorted(ADMIN_OPERATIONS):
        r = keyed.request(m.upper(), p.replace("{name}", "tests"), json=body.get((m, p)))
        assert r.status_code in (401, 403), (m, p, r.status_code)
        ok = keyed.request(m.upper(), p.replace("{name}", "tests"), json=body.get((m, p)), headers=ADMIN)
        assert ok.status_code < 300 or ((m, p) == ("post", "/v1/policy/promote") and ok.status_code == 409), (m, p, ok.text)


def test_route_says_queued_when_tasks_would_make_it_wait(tmp_path, backend) -> None:
    """A task that fits its node now still waits behind that node's queue: /v1/route says so, as
    POST /v1/tasks does."""
    svc = _service(tmp_path, backend)
    try:
        c = make_client(svc)
        assert c.post("/v1/tasks", json=SMALL).json()["status"] == "running"  # 1 of the edge node's 2 CPUs
        assert c.post("/v1/tasks", json={**SMALL, "cpu_milli": 2000}).json()["status"] == "placed"  # waits
        half = {**SMALL, "cpu_milli": 500}  # fits in the free CPU, but the queue is first
        assert c.post("/v1/route", json=half).json()["queued"] is True
        assert c.post("/v1/route/batch", json={"tasks": [half]}).json()["decisions"][0]["queued"] is True
        assert c.post("/v1/tasks", json=half).json()["status"] == "placed"
    finally:
        svc.close()


def test_the_queue_bound_holds_for_the_pool_a_policy_would_choose(tmp_path, backend) -> None:
    """Without a pool restriction the policy must not pile work into a pool whose queue is full
    while another can take it: cheapest-feasible prefers the edge node for every task."""
    svc = _service(tmp_path, backend, pool_max_queued=2, policy="cheapest-feasible")
    try:
        c = make_client(svc)
        big = {"cpu_milli": 2000, "mem_mib": 100, "work": 1.0}
        codes = [c.post("/v1/tasks", json=big).status_code for _ in range(20)]
        queued = svc.executor.queued_by_pool()
        assert all(n <= 2 for n, _ in queued.values()), queued
        assert codes.count(202) >= 8 and set(codes) <= {202, 429}  # the other pools took the rest
    finally:
        svc.close()


def test_a_restart_cancels_what_passed_its_deadline_and_counts_the_rest_for_their_owner(tmp_path, backend) -> None:
    svc = _service(tmp_path, backend)
    h, before = svc.history, svc.started_at - 1.0
    task = {"id": "x", "cpu_milli": 100, "mem_mib": 64, "work": 1.0, "pool": "edge"}
    h.accept("late", {**task, "id": "late", "owner": "alice", "deadline_at": time.time() - 1}, accepted_at=before)
    h.accept("due", {**task, "id": "due", "owner": "alice", "deadline_at": time.time() + 3600}, accepted_at=before)
    h.flush()
    try:
        assert svc.resume_unfinished() == 1
        h.flush()
        assert h.get("late")["status"] == "cancelled" and "deadline passed" in h.get("late")["reason"]
        assert h.get("due")["status"] == "running" and svc.admission.in_flight["alice"] == 1
        assert make_client(svc, key=None).delete("/v1/tasks/due", headers=ADMIN).json()["status"] == "cancelled"
        assert svc.admission.in_flight["alice"] == 0  # the seat went back with the task
    finally:
        svc.close()


def test_a_task_whose_only_pool_filled_after_admission_still_goes_there(tmp_path, backend) -> None:
    """Only the MIG node hosts a 1g.10gb task: when its queue fills between admission and placement
    (a flood, or a resume), the task waits there rather than being refused by the other pools."""
    svc = _service(tmp_path, backend, pool_max_queued=1)
    try:
        c = make_client(svc)
        mig = {"mig_profile": "1g.10gb", "cpu_milli": 100, "mem_mib": 64, "work": 1.0}
        assert [c.post("/v1/tasks", json=mig).json()["status"] for _ in range(3)] == ["running", "running", "placed"]
        assert c.post("/v1/tasks", json=mig).status_code == 429  # admission: its only pool is full
        task, pool = svc.parse_task({**mig, "id": "raced"})
        svc.history.accept("raced", {**task.to_dict(), "pool": None, "owner": "tests"})
        svc.admission.restore("tests")
        view, fut, status = svc.start(task, pool, owner="tests")
        assert status == 202 and view["pool"] == "gpu-mig" and view["queued"]
    finally:
        svc.close()


def test_a_waited_answer_is_already_the_record_even_on_a_slow_disk(svc, backend, monkeypatch) -> None:
    """``?wait=true`` answers once the task's ending is committed: a ``GET`` right after it reads
    ``succeeded``, not the ``running`` of a record still queued for the writer."""
    commit = svc.history._commit

    def slow_disk(conn, batch) -> None:  # each commit 0.3 s: a busy disk, a far database server
        time.sleep(0.3)
        commit(conn, batch)

    monkeypatch.setattr(svc.history, "_commit", slow_disk)

    def run_it() -> None:
        wait_for(lambda: backend.sent, 10.0)
        backend.sent[0].finish()

    runner = threading.Thread(target=run_it)
    runner.start()
    c = make_client(svc)
    r = c.post("/v1/tasks?wait=true&timeout_s=20", json={**SMALL, "id": "waited"})
    runner.join(timeout=20)
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    rec = c.get("/v1/tasks/waited").json()
    assert rec["status"] == "succeeded" and rec["events"][-1]["status"] == "succeeded", rec
