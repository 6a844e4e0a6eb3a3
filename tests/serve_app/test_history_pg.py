"""The history by URL: the forms accepted and refused (never showing a password), and what is
PostgreSQL's own: one commit for many accepts, a writer that outlives its connection, and two
routers sharing one database. The store's semantics on both databases: test_history.py."""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
import sqlalchemy as sa

from cluster.config import ConfigError
from serve_app.config import parse_router_config
from serve_app import history_sql
from serve_app.history import HistoryError, PostgresHistory, open_store
from serve_app.history_sql import mask, parse_url
from serve_app.retention import Retention
from tests.postgres import postgres_url  # noqa: F401 - a fixture

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize("url, says", [
    ("postgres://db/x", "unsupported history URL scheme 'postgres'"),
    (f"mysql://me:{SECRET}@db/x", "unsupported history URL scheme 'mysql'"),
    (f"postgresql+psycopg2://me:{SECRET}@db/x", "unsupported history URL scheme 'postgresql+psycopg2'"),
    ("sqlite://relative.db", "bad SQLite history URL"),
    ("results/history.db", "bad history URL"),
    (f"postgresql://me:{SECRET}@db:port/x", "bad PostgreSQL history URL"),
    (f"postgresql://me:{SECRET}@db", "names no database"),
])
def test_a_bad_or_unsupported_url_says_which_forms_work_and_never_the_password(url: str, says: str) -> None:
    with pytest.raises(HistoryError) as e:
        open_store(url)
    assert says in str(e.value) and SECRET not in str(e.value)
    assert "sqlite:///" in str(e.value) or "postgresql://user@host:port/database" in str(e.value)


def test_supported_forms_and_masking() -> None:
    assert parse_url("sqlite:///results/h.db").path.as_posix() == "results/h.db"
    assert parse_url("sqlite:////var/h.db").path.as_posix() == "/var/h.db"
    for url in ("postgresql://me@db:5433/hist", "postgresql+psycopg://me@db:5433/hist"):
        t = parse_url(url)
        assert t.kind == "postgresql" and t.url.drivername == "postgresql+psycopg" and t.url.database == "hist"
    assert mask(f"postgresql://me:{SECRET}@db/x") == "postgresql://me:***@db/x"
    assert mask(f"postgresql://me:p@ss:{SECRET}@db/x?sslmode=require") == "postgresql://me:***@db/x?sslmode=require"
    assert mask(f"postgresql://me@db/x?password={SECRET}&sslmode=require") == \
        "postgresql://me@db/x?password=***&sslmode=require"
    assert mask("sqlite:///results/h.db") == "sqlite:///results/h.db"


def test_an_unreachable_server_is_a_clear_error_without_the_password(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HistoryError, match=r"cannot open the history at postgresql\+psycopg://me:\*\*\*@127.0.0.1:1/x"):
        open_store(f"postgresql://me:{SECRET}@127.0.0.1:1/x")
    assert SECRET not in caplog.text


def test_a_server_that_never_answers_is_given_up_on(monkeypatch) -> None:
    # a listening socket that takes the connection and says nothing (a hung server, or a proxy before a
    # dead one): without a connect timeout of ours psycopg waited on it 130 s (3.1: for ever), the router's start with it
    monkeypatch.setattr(history_sql, "CONNECT_TIMEOUT_S", 1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        outcome: list[BaseException] = []
        opener = threading.Thread(target=lambda: _open_into(f"postgresql://me@127.0.0.1:{port}/x", outcome), daemon=True)
        opener.start()
        opener.join(30)
        assert not opener.is_alive(), "opening the history waited on a silent server for 30 s"
    assert len(outcome) == 1 and isinstance(outcome[0], HistoryError)
    assert "cannot open the history" in str(outcome[0])


def _open_into(url: str, outcome: list[BaseException]) -> None:
    try:
        open_store(url).close()
    except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
        outcome.append(exc)


class _Captured(Exception):
    """Stops a connect once its parameters are read: nothing is listening."""


def test_a_connect_timeout_of_the_users_own_is_kept(monkeypatch) -> None:
    # the URL's connect_timeout or libpq's PGCONNECT_TIMEOUT is the user's choice; ours only fills the gap
    def sent(url: str) -> dict:
        engine = parse_url(url).engine()
        params: dict = {}

        @sa.event.listens_for(engine, "do_connect")
        def _capture(dialect, conn_rec, cargs, cparams) -> None:  # noqa: ANN001 - SQLAlchemy's hook
            params.update(cparams)
            raise _Captured

        with pytest.raises(_Captured):
            engine.connect()
        engine.dispose()
        return params

    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    assert sent("postgresql://me@127.0.0.1:1/x")["connect_timeout"] == history_sql.CONNECT_TIMEOUT_S
    assert str(sent("postgresql://me@127.0.0.1:1/x?connect_timeout=60")["connect_timeout"]) == "60"
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "60")
    assert "connect_timeout" not in sent("postgresql://me@127.0.0.1:1/x")


def test_router_config_accepts_postgresql_and_refuses_bad_urls_by_field() -> None:
    url = "postgresql://orch@db.internal:5432/history"
    cfg = parse_router_config({"history_url": url})
    assert cfg.history_url == url and cfg.history_path_url() == url
    with pytest.raises(ConfigError) as e:
        parse_router_config({"history_url": f"postgres://me:{SECRET}@db/x"})
    assert "history_url" in str(e.value) and "postgresql://" in str(e.value) and SECRET not in str(e.value)


def test_concurrent_accepts_share_a_transaction(postgres_url: str) -> None:
    """Rows one transaction wrote carry its id (xmin): 300 accepts handed in at once take a few."""
    h = open_store(postgres_url)
    futs = [h.accept_later(f"a{k}", {"id": k}) for k in range(300)]
    assert all(f.result(timeout=30) is None for f in futs)
    engine = parse_url(postgres_url).engine()
    with engine.connect() as conn:
        commits = conn.execute(sa.text("SELECT COUNT(DISTINCT xmin::text) FROM tasks")).scalar_one()
    engine.dispose()
    assert 1 <= commits <= 30, commits
    h.close()


def _drop_other_sessions(url: str) -> None:
    """The server drops every session but this one's, the history writer's too (as on a failover)."""
    engine = parse_url(url).engine()
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    engine.dispose()


def test_the_writer_outlives_a_lost_connection(postgres_url: str) -> None:
    h = open_store(postgres_url)
    h.accept("before", {"id": 1})
    _drop_other_sessions(postgres_url)
    deadline, err = time.time() + 30, None
    while time.time() < deadline:
        try:
            h.accept("after", {"id": 2})  # the batch on the dead connection fails; the next reconnects
            break
        except Exception as exc:  # noqa: BLE001 - what the dropped connection gives
            err = exc
            time.sleep(0.1)
    assert h.get("after") is not None and h.get("before") is not None, err
    h.close()


def test_a_task_s_end_lost_with_the_connection_is_written_once_the_writer_reconnects(postgres_url: str,
                                                                                     caplog) -> None:
    """Before, the update was dropped with its batch, and the task read ``running`` until a restarted
    router ran it again."""
    h = open_store(postgres_url)
    h.accept("t1", {"id": 1})
    h.update("t1", "running", durable=True)
    _drop_other_sessions(postgres_url)
    with caplog.at_level(logging.WARNING, logger="serve_app"):
        h.update("t1", "succeeded", latency_ms=5.0)  # no waiter: its batch fails on the dead connection
        deadline = time.time() + 30
        while time.time() < deadline and h.get("t1")["status"] != "succeeded":
            time.sleep(0.05)
    assert h.get("t1")["status"] == "succeeded" and h.get("t1")["latency_ms"] == 5.0
    assert "updates kept to write again" in caplog.text
    assert [e["status"] for e in h.events("t1")] == ["accepted", "running", "succeeded"]
    h.close()


def test_a_writer_that_cannot_connect_fails_its_waiters_and_tries_again(postgres_url: str) -> None:
    h = open_store(postgres_url)
    connect = h.db.writer
    h.db.writer = lambda: (_ for _ in ()).throw(ConnectionRefusedError("server away"))  # as if it were down
    with pytest.raises(ConnectionRefusedError):
        h.accept("lost", {"id": 1})  # failed, not left waiting
    h.db.writer = connect
    h.accept("kept", {"id": 2})
    assert h.get("kept") is not None and h.get("lost") is None
    h.close()


def test_two_routers_on_one_database_trim_each_task_once_and_keep_the_bound(postgres_url: str) -> None:
    """Their passes at the same moment: one trims (the other sees the claim and leaves it), so no
    task is folded twice and the newest ``max_rows`` stay (a stale count would take those too)."""
    keep = Retention(max_rows=50, every_s=3600, chunk=40)
    a, b = PostgresHistory(postgres_url, retention=keep), PostgresHistory(postgres_url, retention=keep)
    for k in range(400):
        (a if k % 2 else b).accept(f"t{k:03d}", {"id": k}, policy="rf")
        (b if k % 2 else a).update(f"t{k:03d}", "succeeded", latency_ms=1.0, cost=0.5, finished_at=1e9 + k)
    a.flush()
    b.flush()
    fa, fb = a._submit(("trim", None, None, None), wait=True), b._submit(("trim", None, None, None), wait=True)
    assert fa.result(timeout=60) + fb.result(timeout=60) == 350
    agg = a.aggregates()
    assert sum(r["tasks"] for r in agg) == 350 and sum(r["cost_sum"] for r in agg) == pytest.approx(175.0)
    assert {r["task_id"] for r in b.query(limit=100)} == {f"t{k:03d}" for k in range(350, 400)}
    assert a.trim() == 0 and b.trim() == 0  # the claim was let go: each may trim again
    a.close()
    b.close()


def test_a_router_on_a_postgresql_history_keeps_its_tasks_and_keys_there(tmp_path, postgres_url: str) -> None:
    """The whole router, not only the store: accepted work and the API keys live in PostgreSQL."""
    from tests.cluster.test_executor import FakeRay
    from tests.serve_app.router_fakes import make_client, make_service

    svc, _ = make_service(tmp_path, backend=FakeRay(), history_url=postgres_url)
    try:
        task = {"id": "pg1", "cpu_milli": 1000, "mem_mib": 100, "work": 1.0, "pool": "edge"}
        r = make_client(svc).post("/v1/tasks", json=task)
        assert r.status_code == 202, r.text
        svc.history.flush()
    finally:
        svc.close()
    assert not (tmp_path / "history.db").exists()
    engine = parse_url(postgres_url).engine()
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT status FROM tasks WHERE task_id = 'pg1'")).scalar() is not None
        assert c.execute(sa.text("SELECT name FROM api_keys")).scalars().all() == ["tests"]
    engine.dispose()
