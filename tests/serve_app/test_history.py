"""The task history store: durable accepts, life cycle, filters, restart and kill safety."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from serve_app.history import HistoryError, open_store


def store(tmp_path: Path):
    return open_store(f"sqlite:///{tmp_path / 'h.db'}")


def test_life_cycle_and_events(tmp_path: Path) -> None:
    h = store(tmp_path)
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


def test_filters_and_paging(tmp_path: Path) -> None:
    h = store(tmp_path)
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


def test_bad_status_field_and_url_are_refused(tmp_path: Path) -> None:
    h = store(tmp_path)
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


def test_duplicate_accept_is_refused(tmp_path: Path) -> None:
    h = store(tmp_path)
    h.accept("a", {"id": "a"})
    with pytest.raises(Exception):
        h.accept("a", {"id": "a"})
    assert h.count() == 1
    h.close()


def test_unfinished_survive_a_restart(tmp_path: Path) -> None:
    h = store(tmp_path)
    h.accept("done", {"id": "done"})
    h.update("done", "succeeded")
    h.accept("running", {"id": "running"})
    h.update("running", "running", durable=True)
    h.close()
    h2 = store(tmp_path)
    assert [r["task_id"] for r in h2.unfinished()] == ["running"]
    h2.close()


def test_concurrent_accepts_group_commit(tmp_path: Path) -> None:
    h = store(tmp_path)
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


def _writer(path: str, acked: "mp.Queue") -> None:
    h = open_store(f"sqlite:///{path}")
    k = 0
    while True:
        h.accept(f"t{k}", {"id": f"t{k}"})
        acked.put(f"t{k}")  # acknowledged only after accept() returned (committed)
        k += 1


def test_every_acknowledged_task_survives_a_kill(tmp_path: Path) -> None:
    """SIGKILL the writing process mid-load: every task it acknowledged is in the file."""
    ctx = mp.get_context("spawn")
    acked: mp.Queue = ctx.Queue()
    path = str(tmp_path / "kill.db")
    p = ctx.Process(target=_writer, args=(path, acked))
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
    h = open_store(f"sqlite:///{path}")
    missing = [t for t in got if h.get(t) is None]
    assert missing == []
    h.close()


def test_accept_later_is_done_once_committed_and_many_share_a_commit(tmp_path: Path) -> None:
    """A server awaits these futures instead of parking a thread on each: all must commit."""
    h = store(tmp_path)
    futs = [h.accept_later(f"a{k}", {"id": f"a{k}"}, policy="rf") for k in range(300)]
    for f in futs:
        assert f.result(timeout=30) is None
    assert h.count() == 300 and h.get("a299")["status"] == "accepted"
    dup = h.accept_later("a0", {"id": "a0"})
    with pytest.raises(Exception):
        dup.result(timeout=30)  # the same id twice fails its own future; the store goes on
    assert h.accept_later("b", {"id": "b"}).result(timeout=30) is None
    h.close()
