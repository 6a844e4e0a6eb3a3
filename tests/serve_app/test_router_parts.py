"""Router config, admin-token resolution, batch plans, idempotent accepts and restart recovery."""
from __future__ import annotations

import pytest

from cluster.config import ConfigError
from cluster.state import ClusterState
from cluster.topology import load_cluster
from scheduler.policy import make_policy
from scheduler.task import make_task
from serve_app.auth import Principal
from serve_app.config import (RouterConfig, load_router_config, parse_router_config, resolve_admin_token,
                              token_sha256)
from serve_app.errors import ApiError
from serve_app.plan import book
from tests.conftest import CONFIGS, REPO_ROOT
from tests.serve_app.router_fakes import SMALL, make_service


def test_serve_yaml_carries_valid_router_args() -> None:
    cfg = load_router_config(CONFIGS / "serve.yaml")
    assert cfg.policy == "rf" and cfg.resume_unfinished  # the shipped node-level forest (the evaluation's best learned)
    from scheduler import model_registry
    from scheduler.features import CANDIDATE_SCHEMA_VERSION

    art = model_registry.load("rf", "latest", model_registry.SHIPPED_MODELS)  # shipped with the checkout
    assert art.meta["feature_schema"] == CANDIDATE_SCHEMA_VERSION and "evaluation" in art.meta
    assert cfg.history_path_url() == f"sqlite:///{REPO_ROOT / 'results/serve/history.db'}"


@pytest.mark.parametrize("args, field", [
    ({"polcy": "x"}, "polcy"),
    ({"kernel": "gpu"}, "kernel"),
    ({"time_compression": 0}, "time_compression"),
    ({"max_batch": 0}, "max_batch"),
    ({"history_url": "postgres://db/x"}, "history_url"),
    ({"admin_token_sha256": "abc"}, "admin_token_sha256"),
    ({"resume_unfinished": "maybe"}, "resume_unfinished"),
    ({"access_log": 1.5}, "access_log"),
    ({"front_peers": ["localhost"]}, "front_peers"),
    ({"front_peers": "127.0.0.1"}, "front_peers"),
])
def test_bad_router_args_name_the_field(args, field) -> None:
    with pytest.raises(ConfigError) as e:
        parse_router_config(args)
    assert e.value.field == field


def test_every_bad_router_arg_is_reported_at_once() -> None:
    from cluster.config import ConfigErrors

    with pytest.raises(ConfigErrors) as e:
        parse_router_config({"polcy": "x", "kernel": "gpu", "max_batch": 0, "access_log": 1.5,
                             "history_url": "postgresql://u:hunter2@db"}, "serve.yaml")
    assert sorted(x.field for x in e.value.errors) == ["access_log", "history_url", "kernel", "max_batch", "polcy"]
    assert "hunter2" not in str(e.value) and str(e.value).startswith("5 config errors:")


def test_every_bad_objective_weight_is_reported_at_once(tmp_path) -> None:
    from cluster.config import ConfigErrors
    from scheduler.objective import load_objective

    bad = tmp_path / "objective.yaml"
    bad.write_text("latency: -1\ncost_ref: 0\nlatenc: 2\n")
    with pytest.raises(ConfigErrors) as e:
        load_objective(bad)
    assert sorted(x.field for x in e.value.errors) == ["cost_ref", "latenc", "latency"]


def test_serve_access_log_is_off_unless_asked(monkeypatch) -> None:
    """Every task is in the history; Serve's per-request log line is opt-in (its cost is the router's)."""
    from serve_app.deployment import build_app

    monkeypatch.setenv("ORCH_ADMIN_TOKEN", "t" * 20)
    assert build_app(None)._bound_deployment.logging_config["enable_access_log"] is False  # Ray internals
    assert build_app({"access_log": "true"})._bound_deployment.logging_config["enable_access_log"] is True


def test_admin_token_resolution_order(tmp_path) -> None:
    none, how = resolve_admin_token(RouterConfig(), {})
    assert none is None and "ORCH_ADMIN_TOKEN" in how
    env = {"ORCH_ADMIN_TOKEN": "t" * 20}
    assert resolve_admin_token(RouterConfig(), env)[0] == token_sha256("t" * 20)
    f = tmp_path / "token"
    f.write_text("file-token-0123456789\n")
    assert resolve_admin_token(RouterConfig(admin_token_file=str(f)), env)[0] == token_sha256("file-token-0123456789")
    digest = token_sha256("x" * 32)
    assert resolve_admin_token(RouterConfig(admin_token_sha256=digest), env)[0] == digest
    with pytest.raises(ConfigError, match="at least 16"):
        resolve_admin_token(RouterConfig(), {"ORCH_ADMIN_TOKEN": "short"})
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_admin_token(RouterConfig(admin_token_file=str(tmp_path / "missing")), {})


def test_plan_books_on_a_copy() -> None:
    spec = load_cluster(SMALL)
    live = ClusterState.from_spec(spec)
    before = live.cpu_free.copy()
    plan = live.copy()
    pol = make_policy("least-loaded")
    task = make_task({"id": "a", "cpu_milli": 2000, "mem_mib": 1024})
    nodes = []
    for _ in range(8):
        d = pol.select(task, plan)
        book(plan, task, d)
        nodes.append(d.node)
    assert (live.cpu_free == before).all() and live.queue_len.sum() == 0  # the live state is untouched
    assert len(set(nodes)) > 1 and plan.cpu_free.sum() < before.sum()
    plan = live.copy()
    mig = make_task({"id": "m", "mig_profile": "1g.10gb", "cpu_milli": 100})
    for _ in range(3):  # the MIG node has two 1g instances: the third waits in its queue
        book(plan, mig, pol.select(mig, plan))
    i = spec.nodes.index(spec.node("gpu-mig-1"))
    assert plan.queue_len[i] == 1 and live.mig_free[i].sum() == plan.mig_free[i].sum() + 2


def test_accept_is_idempotent_and_concurrent_ids_conflict(tmp_path) -> None:
    svc, _ = make_service(tmp_path)
    try:
        task, pool = svc.parse_task({"id": "same", "cpu_milli": 100})
        me = Principal("alice")
        existing, committed = svc.begin_accept(task, pool, me)
        assert existing is None
        committed.result(timeout=30)
        again, none = svc.begin_accept(task, pool, me)
        assert none is None
        assert again["task_id"] == "same" and again["status"] == "accepted" and again["priority"] == 5
        other, _ = svc.parse_task({"id": "same", "cpu_milli": 200})  # same id, another task: 409 naming the field
        with pytest.raises(ApiError) as e:
            svc.begin_accept(other, pool, me)
        assert e.value.status == 409 and "cpu_milli" in e.value.msg
        with pytest.raises(ApiError) as e:  # another client's id: 409, and its record is not shown
            svc.begin_accept(task, pool, Principal("mallory"))
        assert e.value.status == 409 and "another client" in e.value.msg
        assert svc.begin_accept(task, pool, Principal("admin", admin=True))[0]["task_id"] == "same"
        with svc.claim("busy"):
            with pytest.raises(ApiError) as e:
                with svc.claim("busy"):
                    pass
            assert e.value.status == 409
        with svc.claim("busy"):  # released after use
            pass
    finally:
        svc.close()


def test_restart_gives_up_on_tasks_past_their_attempts(tmp_path) -> None:
    svc, _ = make_service(tmp_path, max_retries=1)
    h = svc.history
    t = make_task({"id": "r1", "cpu_milli": 100})
    before = svc.started_at - 1.0  # accepted by a previous router (this one's own are left alone)
    h.accept("r1", {**t.to_dict(), "pool": None}, policy="least-loaded", attempts=0, accepted_at=before)
    h.update("r1", "running", attempts=1)
    h.accept("bad", {"id": "bad", "priority": 99}, policy="least-loaded", accepted_at=before)
    h.accept("mine", {**t.to_dict(), "id": "mine", "pool": None}, policy="least-loaded")
    h.flush()
    assert svc.resume_unfinished() == 0
    h.flush()
    r1, bad = h.get("r1"), h.get("bad")
    assert r1["status"] == "failed" and "restarted while the task was running" in r1["reason"]
    assert bad["status"] == "failed" and "cannot resume" in bad["reason"] and "priority" in bad["reason"]
    assert h.get("mine")["status"] == "accepted"  # accepted by this router while it resumed: not run twice
    svc.close()


def test_grafana_dashboard_covers_the_three_views_with_router_metrics() -> None:
    import json
    import re

    from serve_app.metrics import exported_series
    from cluster.monitoring import GRAFANA_DASHBOARD, dashboard_queries, prometheus_config

    doc = json.loads(GRAFANA_DASHBOARD.read_text())
    rows = [p["title"] for p in doc["panels"] if p["type"] == "row"]
    assert rows == ["Workload distribution", "Execution latency", "Cost tracking"]
    used = {m for q in dashboard_queries() for m in re.findall(r"ray_orch_[a-z_]+", q)}
    assert used and used <= exported_series(), used - exported_series()
    for p in doc["panels"]:  # a latency panel reads a _seconds series and says so to Grafana
        exprs = " ".join(t.get("expr", "") for t in p.get("targets", []))
        if "latency" in exprs:
            assert "_seconds" in exprs and p["fieldConfig"]["defaults"]["unit"] == "s", p["title"]
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    text = prometheus_config(temp_dir="/x/ray")
    assert "- /x/ray/prom_metrics_service_discovery.json" in text


def test_exported_metrics_use_prometheus_base_units_and_suffixes() -> None:
    """Seconds, not milliseconds; counters end in ``_total`` (Ray exports that name as it is)."""
    from serve_app.metrics import DECISION_S_BUCKETS, SPECS, TASK_S_BUCKETS, MemorySink, RouterMetrics

    for name, (kind, desc, _keys, buckets) in SPECS.items():
        assert "_ms" not in name and "(ms)" not in desc, name
        assert name.endswith("_total") == (kind == "counter"), name
        if kind == "histogram":
            assert name.endswith("_seconds") and buckets == sorted(buckets), name
    assert DECISION_S_BUCKETS[0] == 1e-5 and TASK_S_BUCKETS[-1] == 3600
    sink = MemorySink()
    m = RouterMetrics(sink)
    m.decisions("p", "route", {"edge": 1}, [2.5])
    m.finished("edge", "succeeded", 1500.0, 0.01, 3, False)
    obs = {n: xs for (n, _), xs in sink.observations.items()}
    assert obs == {"orch_decision_latency_seconds": [0.0025], "orch_task_latency_seconds": [1.5]}
    assert sink.total("orch_slo_misses_total") == 1 and sink.total("orch_task_cost_dollars_total") == 0.01


def test_watcher_serves_cached_nodes_and_marks_only_refusing_ports_dead() -> None:
    import socket

    from cluster.live_state import RayNode
    from serve_app.liveness import NodeWatcher, refuses

    live = socket.socket()
    live.bind(("127.0.0.1", 0))
    live.listen()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there now
    reads: list[bool] = []

    def fetch(with_available: bool) -> list[RayNode]:
        reads.append(with_available)
        return [RayNode("n1", True, {}, {})]

    marked: list[str] = []
    ports = [("alive-node", "127.0.0.1", live.getsockname()[1]), ("dead-node", "127.0.0.1", dead_port)]
    w = NodeWatcher(fetch=fetch, ports=lambda: ports, period_s=60)
    assert w.reader() and w.reader() and reads == [False, False]  # not started: every read is fresh
    w.start(marked.append)
    try:
        reads.clear()
        assert w.reader() == w.reader() and reads == []  # started: served from its cache
        assert w.reader(True) and reads == [True]  # /v1/cluster reads fresh, with free resources
        assert refuses("127.0.0.1", dead_port) and not refuses(*ports[0][1:])
        assert w.probe_once() == ["dead-node"] and marked == ["dead-node"]
        assert w.probe_once() == []  # marked once
    finally:
        w.stop()
        live.close()


def test_buffered_metrics_add_up_and_keep_every_observation() -> None:
    from serve_app.metrics import BufferedSink, MemorySink, RouterMetrics

    mem = MemorySink()
    m = RouterMetrics(BufferedSink(mem, thread=False))
    m.decisions("least-loaded", "batch", {"edge": 3, "cloud": 2}, [0.1, 0.2, 0.3, 0.4, 0.5])
    m.decisions("least-loaded", "route", {"edge": 1}, [0.6])
    m.accepted("least-loaded")
    m.in_flight(4)
    m.in_flight(2)
    assert mem.total("orch_decisions_total") == 0  # nothing reaches the target before a flush
    m.sink.flush()
    assert mem.total("orch_decisions_total", pool="edge") == 4
    assert mem.total("orch_decisions_total", endpoint="batch") == 5
    assert mem.total("orch_tasks_accepted_total") == 1 and mem.total("orch_tasks_in_flight") == 2
    obs = [x for (n, _), xs in mem.observations.items() if n == "orch_decision_latency_seconds" for x in xs]
    assert sorted(obs) == pytest.approx([1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4])  # ms in, seconds out
    m.accepted("least-loaded")
    m.close()  # flushes the rest
    assert mem.total("orch_tasks_accepted_total") == 2


def test_the_replica_binds_its_direct_port_with_address_reuse() -> None:
    """A restarted replica must bind the fixed direct port although TIME_WAIT connections sit on it:
    loading the deployment (as each replica does) applies the patch of
    :func:`cluster.ray_compat.replica_binds_with_port_reuse`, tested there."""
    from cluster import ray_compat
    from serve_app import deployment  # noqa: F401

    assert ray_compat.replica_reuses_port()


def test_task_fields_are_what_model_dump_gives() -> None:
    """The request path reads a task's fields without pydantic's serializer; same result."""
    from serve_app.models import TaskIn

    full = TaskIn(id="t-1", description="llm chat", priority=7, slo_ms=250.5, cpu_milli=500, mem_mib=64,
                  mig_profile="1g.10gb", gpu_models=["A100"], work=1.5, cost_sensitivity=2, kind="chat",
                  pool="gpu-mig")
    for body in (full, TaskIn(cpu_milli=100), TaskIn()):
        assert body.fields() == body.model_dump(exclude_none=True, mode="json")
        assert type(full.fields()["mig_profile"]) is str


def test_a_task_whose_client_left_still_starts_once_committed() -> None:
    """The request awaits the commit; cancelled meanwhile, the accepted task must still run."""
    import asyncio
    import threading
    from concurrent.futures import Future

    from serve_app.api import _committed

    started = threading.Event()

    async def go() -> None:
        committed: Future = Future()
        waiter = asyncio.ensure_future(_committed(committed, started.set))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not started.is_set()
        threading.Thread(target=committed.set_result, args=(None,)).start()  # the writer thread commits
        for _ in range(100):
            if started.is_set():
                break
            await asyncio.sleep(0.01)

    asyncio.run(go())
    assert started.is_set()


@pytest.mark.parametrize("policy", ["least-loaded", "fastest-feasible", "cheapest-feasible", "best-fit",
                                    "dot-product", "oracle", "rl"])
def test_batched_tasks_get_what_each_would_get_alone(tmp_path, policy) -> None:
    """A pure policy decides each distinct body once per batch and scores tasks with the same
    candidates together; the answers must not change."""
    svc, _ = make_service(tmp_path, policy=policy)
    try:
        bodies = [{"description": "real-time fraud detection"}, {"cpu_milli": 500, "mem_mib": 64},
                  {"gpu_milli": 250, "cpu_milli": 100}, {"mig_profile": "1g.10gb", "cpu_milli": 100},
                  {"gpu_count": 1, "cpu_milli": 100}, {"cpu_milli": 10 ** 6}, {"cpu_milli": 100, "pool": "edge"}]
        items = [svc.parse_task({**bodies[i % len(bodies)], "id": f"t{i}"}) for i in range(60)]
        # distinct tasks too: those sharing their candidate nodes are scored together
        items += [svc.parse_task({"id": f"t{i}", "cpu_milli": 37 * i, "mem_mib": 11 * i, "work": i / 7,
                                  **({"pool": "edge"} if i % 5 == 0 else {})}) for i in range(60, 200)]
        assert getattr(svc.policies.active.policy, "pure", False)
        batch = svc.decide(items, endpoint="batch")
        alone = [svc.decide([item], endpoint="batch")[0] for item in items]
        strip = lambda v: {k: x for k, x in v.items() if k != "decision_ms"}  # noqa: E731
        assert [strip(v) for v in batch] == [strip(v) for v in alone]
        assert [v["task_id"] for v in batch] == [f"t{i}" for i in range(200)]
        assert any(not v["placed"] for v in batch) and any(v["placed"] for v in batch)
    finally:
        svc.close()


def test_a_stateful_policy_decides_every_repeat(tmp_path) -> None:
    svc, _ = make_service(tmp_path, policy="round-robin")
    try:
        items = [svc.parse_task({"id": f"r{i}", "cpu_milli": 100}) for i in range(4)]
        assert not getattr(svc.policies.active.policy, "pure", False)
        assert len({v["node"] for v in svc.decide(items, endpoint="batch")}) > 1  # it went round
    finally:
        svc.close()


def test_the_replica_freezes_its_start_up_heap() -> None:
    """After start-up work (even failed), what the replica built is kept out of full collections;
    garbage made later is still collected."""
    import gc
    import weakref
    from types import SimpleNamespace

    from serve_app.deployment import Router

    def fail() -> None:
        raise RuntimeError("no workers today")

    from serve_app.deployment import GC_YOUNG_THRESHOLD

    svc = SimpleNamespace(cfg=SimpleNamespace(resume_unfinished=False), warm_up=fail)
    before = gc.get_threshold()
    try:
        Router.func_or_class._background(svc)
        assert gc.get_freeze_count() > 10_000  # this test process's modules, as a replica's would be
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        class Cycle:
            pass

        cycle = Cycle()
        cycle.me = cycle
        ref = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert ref() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
