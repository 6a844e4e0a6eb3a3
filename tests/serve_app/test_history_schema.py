"""The history's schema versions: a new database records the current one, an older SQLite
file is migrated with its rows intact, and a newer one is refused rather than misread."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from serve_app.history import HistoryError, open_store
from serve_app.history_schema import VERSION, prepare
from serve_app.history_sql import parse_url
from serve_app.keys import KeyStore
from tests.postgres import postgres_url  # noqa: F401 - a fixture

#: the history file's schema before versions were recorded (version 1), exactly as it was:
#: history.py's _SCHEMA, retention.py's SCHEMA and keys.py's _SCHEMA
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    status TEXT, reason TEXT, policy TEXT, policy_version TEXT, pool TEXT, node TEXT, tier TEXT, share TEXT, confidence REAL, queue_ms REAL, network_ms REAL, exec_ms REAL, latency_ms REAL, decision_ms REAL, cost REAL, score REAL, slo_met TEXT, kind TEXT, priority TEXT, slo_ms REAL, accepted_at REAL, finished_at REAL, attempts TEXT,
    task TEXT, features TEXT, decision TEXT
);
CREATE TABLE IF NOT EXISTS events (
    task_id TEXT NOT NULL, at REAL NOT NULL, status TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status);
CREATE INDEX IF NOT EXISTS tasks_accepted ON tasks(accepted_at);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id);

CREATE TABLE IF NOT EXISTS task_aggregates (
    day TEXT NOT NULL, pool TEXT NOT NULL, policy TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    tasks INTEGER NOT NULL, latency_n INTEGER NOT NULL, latency_ms_sum REAL NOT NULL, latency_ms_max REAL,
    cost_sum REAL NOT NULL, slo_n INTEGER NOT NULL, slo_met INTEGER NOT NULL,
    PRIMARY KEY (day, pool, policy, kind, status)
);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks(finished_at);

CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    rate_per_s REAL, burst INTEGER, max_in_flight INTEGER,
    created_at REAL NOT NULL, revoked_at REAL
);
"""


def _old_file(path: Path) -> Path:
    """A version-1 history: two tasks with their events (out of time order once), an aggregate, a key."""
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.executescript(OLD_SCHEMA)
        c.executemany("INSERT INTO tasks (task_id, status, policy, pool, slo_met, priority, latency_ms, accepted_at, "
                      "finished_at, attempts, task) VALUES (?, ?, 'rf', 'edge', ?, 9, ?, ?, ?, 0, ?)",
                      [("done", "succeeded", 1, 12.5, 1000.0, 1001.0, '{"id": "done"}'),
                       ("live", "running", None, None, 1002.0, None, '{"id": "live"}')])
        c.executemany("INSERT INTO events VALUES (?, ?, ?, ?)",
                      [("done", 1000.0, "accepted", None), ("live", 1002.0, "accepted", None),
                       ("done", 1001.0, "running", "placed on edge-1"), ("done", 1000.5, "succeeded", None),
                       ("live", 1003.0, "running", None)])
        c.execute("INSERT INTO task_aggregates VALUES ('1970-01-01', 'edge', 'rf', 'fraud', 'failed', 3, 3, 30.0, "
                  "20.0, 0.5, 3, 1)")
        c.execute("INSERT INTO api_keys VALUES ('team-a', 'ab12', 5.0, NULL, NULL, 1000.0, NULL)")
    return path


def _version(url: str) -> int:
    engine = parse_url(url).engine()
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version FROM schema_version")).scalar_one()
    finally:
        engine.dispose()


def test_an_old_history_file_is_migrated_with_its_rows_intact(tmp_path: Path) -> None:
    url = f"sqlite:///{_old_file(tmp_path / 'h.db')}"
    h = open_store(url)
    assert _version(url) == VERSION
    done = h.get("done")
    assert done["status"] == "succeeded" and done["slo_met"] is True and done["task"] == {"id": "done"}
    assert done["latency_ms"] == 12.5 and int(done["priority"]) == 9
    # events keep the order they were written in (their rowid), not their times
    assert [(e["status"], e["detail"]) for e in h.events("done")] == [
        ("accepted", None), ("running", "placed on edge-1"), ("succeeded", None)]
    assert [r["task_id"] for r in h.unfinished()] == ["live"] and h.count() == 2
    assert h.aggregates() == [{"day": "1970-01-01", "pool": "edge", "policy": "rf", "kind": "fraud",
                               "status": "failed", "tasks": 3, "latency_n": 3, "latency_ms_sum": 30.0,
                               "latency_ms_max": 20.0, "cost_sum": 0.5, "slo_n": 3, "slo_met": 1}]
    h.update("live", "succeeded", latency_ms=3.0, durable=True)  # and it goes on being written
    assert [e["status"] for e in h.events("live")] == ["accepted", "running", "succeeded"]
    h.close()
    assert [k.name for k in KeyStore(tmp_path / "h.db").list()] == ["team-a"]
    with sqlite3.connect(tmp_path / "h.db") as c:
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert "events_v1" not in {r[0] for r in c.execute("SELECT name FROM sqlite_master")}


def test_the_key_store_migrates_an_old_file_too(tmp_path: Path) -> None:
    url = f"sqlite:///{_old_file(tmp_path / 'h.db')}"
    assert [k.name for k in KeyStore(url).list()] == ["team-a"]
    assert _version(url) == VERSION
    h = open_store(url)  # already current: nothing to do, nothing lost
    assert len(h.events("done")) == 3
    h.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_new_database_records_its_version_and_a_newer_one_is_refused(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    open_store(url).close()
    assert _version(url) == VERSION
    engine = parse_url(url).engine()
    try:
        assert prepare(engine) == VERSION  # opening again: no step runs
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": VERSION + 1})
    finally:
        engine.dispose()
    with pytest.raises(HistoryError, match=f"schema version {VERSION + 1}, newer than this code's {VERSION}"):
        open_store(url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_2_history_gains_the_result_column_with_its_rows_intact(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Version 3 added ``tasks.result`` (what a real task's function returned); a version-2 database
    (today's schema without that column) is brought up in place and records results from then on."""
    url = f"sqlite:///{tmp_path / 'h.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    h = open_store(url)
    h.accept("old", {"id": "old"})
    h.update("old", "succeeded", latency_ms=5.0, durable=True)
    h.close()
    engine = parse_url(url).engine()
    try:
        with engine.begin() as conn:  # back to version 2
            conn.execute(sa.text("ALTER TABLE tasks DROP COLUMN result"))
            conn.execute(sa.text("UPDATE schema_version SET version = 2"))
    finally:
        engine.dispose()
    assert _version(url) == 2
    h = open_store(url)
    assert _version(url) == VERSION == 3
    assert h.get("old")["latency_ms"] == 5.0 and h.get("old")["result"] is None
    h.accept("new", {"id": "new"})
    h.update("new", "succeeded", result={"rows": 3}, durable=True)
    assert h.get("new")["result"] == {"rows": 3}
    h.close()
