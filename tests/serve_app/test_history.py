"""The task history store: durable accepts, life cycle, filters, restart and kill safety,
private files, retention (trimming with aggregates kept) and the durability setting.

The tests of what a store means run on both databases (``url``: a SQLite file, and a fresh
database on a throwaway PostgreSQL server, :mod:`tests.postgres`); those of SQLite's file
(its mode, size, vacuum, ``synchronous``) on SQLite only."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from cluster.vocabulary import FINAL, STATUSES
from serve_app.history import HistoryError, open_store
from serve_app.history_sql import parse_url
from serve_app.retention import Retention
from tests.postgres import postgres_url  # noqa: F401 - a fixture


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The history URL of each database: a SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'h.db'}"
    return request.getfixturevalue("postgres_url")


def scalar(url: str, sql: str):
    """One value read straight from the database (not through the store)."""
    import sqlalchemy as sa

    engine = parse_url(url).engine()
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


def test_life_cycle_and_events(url: str) -> None:
    h = open_store(url)
    h.accept("t1", {"id": "t1", "priority": 9}, kind="fraud", priority=9, slo_ms=300.0, policy="rf")
    h.update("t1", "placed", pool="edge", node="edge-1", share="cpu", confidence=0.93,
             decision={"probabilities": {"edge": 0.93}})
    h.update("t1", "running")
    h.update("t1", "succeeded", latency_ms=120.0, cost=0.01, slo_met=True, durable=True)
    row = h.get("t1")
    assert row["status"] == "succeeded" and row["pool"] == "edge" and row["slo_met"] is True
    assert row["task"]["priority"] == 9 and row["decision"]["probabilities"]["edge"] == 0.93
    assert row["finished_at"] >= row["accepted_at"]
    assert [e["status"] for e in h.events("t1")] == ["accepted", "placed", "running", "succeeded"]
    h.close()


def test_filters_and_paging(url: str) -> None:
    h = open_store(url)
    for k in range(30):
        h.accept(f"t{k:02d}", {"id": f"t{k:02d}"}, policy="rf" if k % 2 else "oracle", accepted_at=1000.0 + k)
        h.update(f"t{k:02d}", "succeeded" if k % 3 else "failed", pool="edge" if k < 10 else "cloud",
                 reason=None if k % 3 else "node died")
    h.flush()
    assert h.count() == 30
    assert h.count(status="failed") == 10
    assert {r["pool"] for r in h.query(pool="cloud", limit=100)} == {"cloud"}
    page1 = h.query(limit=10, offset=0)
    page2 = h.query(limit=10, offset=10)
    assert len(page1) == 10 and not {r["task_id"] for r in page1} & {r["task_id"] for r in page2}
    assert page1[0]["task_id"] == "t29"  # newest first
    assert len(h.query(since=1010.0, until=1020.0)) == 10
    assert len(h.query(policy="rf", status="failed")) == 5
    assert [r["task_id"] for r in h.query(search="t07")] == ["t07"]
    h.close()


def test_bad_status_field_and_url_are_refused(url: str) -> None:
    h = open_store(url)
    h.accept("a", {"id": "a"})
    with pytest.raises(HistoryError, match="unknown status"):
        h.update("a", "exploded")
    with pytest.raises(HistoryError, match="unknown history field"):
        h.update("a", "placed", colour="red")
    with pytest.raises(HistoryError, match="no task"):
        h.update("zzz", "placed", durable=True)
    h.close()
    with pytest.raises(HistoryError, match="unsupported history URL scheme 'postgres'"):
        open_store("postgres://db/x")


def test_duplicate_accept_is_refused(url: str) -> None:
    h = open_store(url)
    h.accept("a", {"id": "a"})
    with pytest.raises(Exception):
        h.accept("a", {"id": "a"})
    assert h.count() == 1
    h.close()


def test_unfinished_survive_a_restart(url: str) -> None:
    h = open_store(url)
    h.accept("done", {"id": "done"})
    h.update("done", "succeeded")
    h.accept("running", {"id": "running"})
    h.update("running", "running", durable=True)
    h.close()
    h2 = open_store(url)
    assert [r["task_id"] for r in h2.unfinished()] == ["running"]
    h2.close()


def test_concurrent_accepts_group_commit(url: str) -> None:
    h = open_store(url)
    n_threads, per = 8, 50

    def work(t: int) -> None:
        for k in range(per):
            h.accept(f"{t}-{k}", {"id": f"{t}-{k}"})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.count() == n_threads * per
    assert time.perf_counter() - t0 < 30
    h.close()


def _writer(url: str, acked: "mp.Queue") -> None:
    h = open_store(url)
    k = 0
    while True:
        h.accept(f"t{k}", {"id": f"t{k}"})
        acked.put(f"t{k}")  # acknowledged only after accept() returned (committed)
        k += 1


def test_every_acknowledged_task_survives_a_kill(url: str) -> None:
    """SIGKILL the writing process mid-load: every task it acknowledged is in the database."""
    ctx = mp.get_context("spawn")
    acked: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_writer, args=(url, acked))
    p.start()
    got: list[str] = []
    deadline = time.time() + 60
    while len(got) < 200 and time.time() < deadline:
        got.append(acked.get(timeout=30))
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    while not acked.empty():
        got.append(acked.get())
    assert len(got) >= 200
    h = open_store(url)
    missing = [t for t in got if h.get(t) is None]
    assert missing == []
    h.close()


def test_accept_later_is_done_once_committed_and_many_share_a_commit(url: str) -> None:
    """A server awaits these futures instead of parking a thread on each: all must commit."""
    h = open_store(url)
    futs = [h.accept_later(f"a{k}", {"id": f"a{k}"}, policy="rf") for k in range(300)]
    for f in futs:
        assert f.result(timeout=30) is None
    assert h.count() == 300 and h.get("a299")["status"] == "accepted"
    dup = h.accept_later("a0", {"id": "a0"})
    with pytest.raises(Exception):
        dup.result(timeout=30)  # the same id twice fails its own future; the store goes on
    assert h.accept_later("b", {"id": "b"}).result(timeout=30) is None
    h.close()


def test_file_and_its_wal_and_shm_are_private_even_with_umask_022(tmp_path: Path, caplog) -> None:
    old = os.umask(0o022)
    try:
        h = open_store(f"sqlite:///{tmp_path / 'h.db'}")
        h.accept("a", {"id": "a"})
        for name in ("h.db", "h.db-wal", "h.db-shm"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
        h.close()
        wide = tmp_path / "old.db"  # as an older version left it
        wide.touch()
        wide.chmod(0o644)
        open_store(f"sqlite:///{wide}").close()
    finally:
        os.umask(old)
    assert wide.stat().st_mode & 0o777 == 0o600
    assert "readable by others" in caplog.text


def _finished(h, n: int, t0: float, prefix: str = "f") -> dict[str, dict]:
    """``n`` final tasks finishing one second apart from ``t0``; their fields by id."""
    out = {}
    for k in range(n):
        tid = f"{prefix}{k:04d}"
        fields = {"pool": ("edge", "cloud", "gpu")[k % 3], "latency_ms": float(k), "cost": 0.25 * (k % 4),
                  "slo_met": k % 5 == 0, "finished_at": t0 + k}
        h.accept(tid, {"id": tid}, kind="fraud", policy="rf", accepted_at=t0 + k - 0.5)
        h.update(tid, FINAL[k % len(FINAL)], **fields)
        out[tid] = {**fields, "status": FINAL[k % len(FINAL)]}
    return out


def _unfinished(h, n: int) -> list[str]:
    ids = [f"u{k}" for k in range(n)]
    for k, tid in enumerate(ids):
        h.accept(tid, {"id": tid}, accepted_at=1.0)  # far older than any finished task
        if k % 3:
            h.update(tid, ("placed", "running")[k % 2])
    return ids


def test_trim_to_max_rows_keeps_the_newest_and_every_unfinished_task_and_folds_the_rest(url: str) -> None:
    h = open_store(url, retention=Retention(max_rows=100, every_s=3600, chunk=64))
    done = _finished(h, 500, time.time() - 1000)
    waiting = _unfinished(h, 12)
    assert h.trim() == 400  # seven chunks, accepts free to go on between them
    assert h.count() == 112 and sorted(r["task_id"] for r in h.unfinished()) == sorted(waiting)
    kept = {r["task_id"] for r in h.query(limit=1000)} - set(waiting)
    assert kept == {f"f{k:04d}" for k in range(400, 500)}  # the newest by finished_at
    gone = [done[t] for t in done if t not in kept]
    assert h.events("f0000") == [] and len(h.events("f0499")) == 2 and len(h.events(waiting[1])) == 2
    assert scalar(url, "SELECT COUNT(DISTINCT task_id) FROM events") == 112
    agg = h.aggregates()
    assert sum(a["tasks"] for a in agg) == 400
    assert sum(a["cost_sum"] for a in agg) == pytest.approx(sum(g["cost"] for g in gone))
    assert sum(a["latency_ms_sum"] for a in agg) == pytest.approx(sum(g["latency_ms"] for g in gone))
    assert sum(a["slo_met"] for a in agg) == sum(g["slo_met"] for g in gone)
    assert max(a["latency_ms_max"] for a in agg) == 399.0
    for status in FINAL:
        assert sum(a["tasks"] for a in h.aggregates(status=status)) == sum(g["status"] == status for g in gone)
    assert {a["pool"] for a in agg} == {"edge", "cloud", "gpu"} and {a["kind"] for a in agg} == {"fraud"}
    assert h.trim() == 0
    h.close()


def test_trim_by_age_takes_only_final_tasks_finished_before_the_bound(url: str) -> None:
    h = open_store(url, retention=Retention(max_age_s=86400, every_s=3600))
    old = _finished(h, 30, time.time() - 10 * 86400, prefix="old")
    _finished(h, 20, time.time() - 3600, prefix="new")
    waiting = _unfinished(h, 5)
    assert h.trim() == 30
    assert h.count() == 25 and len(h.unfinished()) == 5 and h.get("old0000") is None
    day = time.strftime("%Y-%m-%d", time.gmtime(old["old0000"]["finished_at"]))
    assert sum(a["tasks"] for a in h.aggregates(day=day)) >= 1
    assert sum(a["tasks"] for a in h.aggregates()) == 30
    h.close()
    again = open_store(url)  # aggregates and unfinished tasks outlive a restart; no retention: no trim
    assert sum(a["tasks"] for a in again.aggregates()) == 30
    assert sorted(r["task_id"] for r in again.unfinished()) == sorted(waiting) and again.trim() == 0
    again.close()


def test_every_final_status_is_trimmed_and_no_other(url: str) -> None:
    h = open_store(url, retention=Retention(max_rows=0, every_s=3600))
    for status in STATUSES:
        h.accept(status, {"id": status})
        if status != "accepted":
            h.update(status, status)
    assert h.trim() == len(FINAL)
    assert sorted(r["task_id"] for r in h.query()) == sorted(set(STATUSES) - set(FINAL))
    h.close()


def test_accepts_during_a_trim_all_commit_and_survive_it(url: str) -> None:
    h = open_store(url, retention=Retention(max_rows=0, every_s=3600, chunk=50))
    _finished(h, 2000, time.time() - 5000)
    trimmed: list[int] = []
    trimmer = threading.Thread(target=lambda: trimmed.append(h.trim()))
    trimmer.start()
    futs = [h.accept_later(f"new{k}", {"id": k}) for k in range(300)]  # queued between the chunks
    assert all(f.result(timeout=30) is None for f in futs)
    trimmer.join(timeout=60)
    assert trimmed == [2000] and h.count() == 300 and len(h.unfinished()) == 300
    h.close()


def test_the_writer_trims_on_its_own_every_every_s(url: str) -> None:
    h = open_store(url, retention=Retention(max_rows=10, every_s=0.05))
    _finished(h, 50, time.time() - 100)
    h.flush()
    deadline = time.time() + 30
    while h.count() > 10 and time.time() < deadline:
        time.sleep(0.05)
    assert h.count() == 10 and sum(a["tasks"] for a in h.aggregates()) == 40
    h.close()


def test_file_stays_bounded_while_tasks_are_written_and_trimmed(tmp_path: Path) -> None:
    h = open_store(f"sqlite:///{tmp_path / 'h.db'}", retention=Retention(max_rows=500, every_s=3600))
    db, wal = [], []
    for r in range(6):
        _finished(h, 1000, time.time() - 1000 + r, prefix=f"r{r}-")
        h.trim()
        db.append((tmp_path / "h.db").stat().st_size)
        wal.append((tmp_path / "h.db-wal").stat().st_size)
    assert h.count() == 500 and sum(a["tasks"] for a in h.aggregates()) == 5_500
    # 6,000 tasks written, at most 1,500 present at once: freed pages are reused, the file stays
    # near its size after the second round (unbounded, it grows by a round's size every round)
    assert max(db[2:]) <= 1.25 * db[1], db
    assert max(wal) <= 16 << 20, wal  # checkpoints restart the WAL; journal_size_limit cuts it back
    h.close()


def test_a_tightened_bound_gives_the_freed_space_back(tmp_path: Path) -> None:
    h = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    _finished(h, 3000, time.time() - 10_000)
    h.close()
    before = (tmp_path / "h.db").stat().st_size
    h = open_store(f"sqlite:///{tmp_path / 'h.db'}", retention=Retention(max_rows=100))
    assert h.trim() == 2900
    h.close()  # the last connection's checkpoint moves the vacuumed pages into the file
    assert (tmp_path / "h.db").stat().st_size < before / 4


def test_bad_retention_and_synchronous_are_refused(tmp_path: Path) -> None:
    for bad in ({"max_rows": -1}, {"max_age_s": 0}, {"every_s": 0}, {"chunk": 0}):
        with pytest.raises(ValueError, match="retention"):
            Retention(**bad)
    with pytest.raises(HistoryError, match="synchronous"):
        open_store(f"sqlite:///{tmp_path / 'h.db'}", synchronous="OFF")
    for mode in ("NORMAL", "FULL"):
        h = open_store(f"sqlite:///{tmp_path / f'{mode}.db'}", synchronous=mode)
        h.accept("a", {"id": "a"})
        assert h.get("a")["status"] == "accepted"
        h.close()


def test_a_failed_write_fails_alone_and_an_ended_task_stays_ended(url: str) -> None:
    """A late update of a trimmed task must not roll back the other writes of its group commit,
    and a late 'running' (a cancel that raced the start) must not reopen a cancelled task."""
    h = open_store(url)
    h.accept("ok", {"id": "ok"})
    h.accept("c", {"id": "c"})
    h.update("c", "cancelled", durable=True, reason="cancelled by its owner")
    h.update("gone", "succeeded")  # no such task (trimmed): logged, dropped
    late = h.accept_later("new", {"id": "new"})
    h.update("ok", "running")
    h.update("c", "running")  # too late: the task ended
    late.result(timeout=10)
    h.flush()
    assert h.get("new")["status"] == "accepted" and h.get("ok")["status"] == "running"
    assert h.get("c")["status"] == "cancelled" and [e["status"] for e in h.events("c")][-1] == "cancelled"
    h.close()


def _failing(h, when) -> None:
    """Make ``h``'s writer fail a whole batch with ``when(batch)``'s exception (None: write it)."""
    apply_all = h._apply_all

    def apply(conn, batch, savepoints):
        exc = when(batch)
        if exc is not None:
            raise exc
        return apply_all(conn, batch, savepoints)

    h._apply_all = apply


def test_updates_kept_while_the_file_is_locked_are_written_in_order_once_it_is_free(tmp_path: Path) -> None:
    import sqlite3

    h = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    h.accept("t", {"id": "t"})
    locked = threading.Event()
    locked.set()
    writes = lambda batch: any(op[0] == "update" for op, _ in batch)  # noqa: E731
    # a batch that writes fails (another process holds the lock); a flush's alone would commit
    _failing(h, lambda batch: sqlite3.OperationalError("database is locked") if locked.is_set() and writes(batch)
             else None)
    for status, fields in (("running", {"node": "cloud-1", "decision": {"node": "cloud-1"}}),
                           ("succeeded", {"latency_ms": 3.0})):  # two batches, each failed
        h.update("t", status, **fields)
        with pytest.raises(sqlite3.OperationalError):
            h.flush()  # fails with the kept updates it could not write
    assert h.get("t")["status"] == "accepted"
    locked.clear()
    h.flush()  # a flush writes what is kept first, in the order it was handed in
    rec = h.get("t")
    assert rec["status"] == "succeeded" and rec["latency_ms"] == 3.0 and rec["decision"] == {"node": "cloud-1"}
    assert [e["status"] for e in h.events("t")] == ["accepted", "running", "succeeded"]
    h.close()


def test_a_batch_failing_for_its_own_writes_is_dropped_and_fails_nothing_after(tmp_path: Path, caplog) -> None:
    h = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    h.accept("t", {"id": "t"})

    def bad_running(batch):  # this write fails whenever it is tried, as a value the driver cannot bind would
        if any(op[0] == "update" and op[2]["status"] == "running" for op, _ in batch):
            return ValueError("a value the driver cannot bind")
        return None

    _failing(h, bad_running)
    with caplog.at_level("ERROR", logger="serve_app"), pytest.raises(ValueError):
        h.update("t", "running", durable=True)
    for i in range(20):
        h.accept(f"a{i}", {"id": i})  # not retried into these batches
    h.update("t", "succeeded", durable=True)
    assert h.count() == 21 and h.get("t")["status"] == "succeeded"
    assert "failed and is dropped" in caplog.text and not h._unwritten.items
    h.close()


def test_a_kept_chunk_that_fails_again_goes_back_before_what_was_kept_after_it() -> None:
    from serve_app import history_store

    kept = history_store._Unwritten()
    op = lambda tid: (("update", tid, {"status": "running"}, 0.0), None)  # noqa: E731
    kept.keep([op("a"), op("b")], OSError("away"), retried=False)
    kept.keep([op("c")], OSError("away"), retried=False)
    chunk = kept.take(2, now=True)
    kept.keep(chunk, OSError("still away"), retried=True)
    assert [o[1] for o, _ in kept.items] == ["a", "b", "c"]


def test_past_the_bound_kept_ends_outlast_placed_and_running_updates(monkeypatch) -> None:
    from serve_app import history_store

    monkeypatch.setattr(history_store, "UNWRITTEN_MAX", 3)
    kept = history_store._Unwritten()
    batch = [(("update", tid, {"status": status}, 0.0), None)
             for tid, status in (("r1", "running"), ("e1", "succeeded"), ("r2", "placed"), ("e2", "failed"),
                                 ("r3", "running"))]
    kept.keep(batch, OSError("away"), retried=False)
    assert [op[1] for op, _ in kept.items] == ["e1", "e2", "r3"]
    kept.keep([(("update", "e3", {"status": "cancelled"}, 0.0), None)], OSError("away"), retried=False)
    assert [op[1] for op, _ in kept.items] == ["e1", "e2", "e3"]
    kept.keep([(("update", "e4", {"status": "succeeded"}, 0.0), None)], OSError("away"), retried=False)
    assert [op[1] for op, _ in kept.items] == ["e2", "e3", "e4"]  # ends alone: the oldest goes
