"""The one history store over either database: a single group-committing writer thread, and the reads.

:class:`SQLHistory` holds everything the two databases share (the queue, the batching, the
commit with its savepoints, the life-cycle guard, the events, the trimming schedule and every
read); it reaches the database only through a :class:`~serve_app.history_sql.Backend`.
:class:`~serve_app.history.SQLiteHistory` and :class:`~serve_app.history.PostgresHistory`
only open one. Every statement is SQL text with ``:name`` parameters that both run as is.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from functools import lru_cache
from typing import Any

import orjson

from cluster.vocabulary import FINAL, STATUSES
from serve_app.history_schema import COLUMNS, FINAL_ARGS, FINAL_IN, JSON as _JSON, HistoryError
from serve_app.history_sql import Backend
from serve_app.retention import Retention, TrimSchedule, read_aggregates

log = logging.getLogger("serve_app")


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in fields.items():
        if k in _JSON:  # orjson: a tenth of json's time on a decision; NaN becomes null (valid JSON)
            out[k] = orjson.dumps(v, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        elif k in COLUMNS:
            out[k] = int(v) if k == "slo_met" and v is not None else v
        else:
            raise HistoryError(f"unknown history field {k!r}")
    return out


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (set, tuple)):
        return list(v)
    return str(v)


def _decode(row: Any) -> dict:
    d = dict(row)
    for k in _JSON:
        if d.get(k) is not None:
            d[k] = json.loads(d[k])
    if d.get("slo_met") is not None:
        d["slo_met"] = bool(int(d["slo_met"]))
    return d


@lru_cache(maxsize=256)
def _insert(cols: tuple[str, ...]) -> str:
    return f"INSERT INTO tasks (task_id, {', '.join(cols)}) VALUES (:task_id, {', '.join(':' + c for c in cols)})"


@lru_cache(maxsize=256)
def _update(cols: tuple[str, ...], final: bool) -> str:
    # a task that ended stays ended: a late 'running' (written after a cancel raced the start)
    # never overwrites it; a final status may still replace a final one (its fields complete)
    guard = "" if final else f" AND status NOT IN {FINAL_IN}"
    return f"UPDATE tasks SET {', '.join(f'{c} = :{c}' for c in cols)} WHERE task_id = :task_id{guard}"


def _fail(batch: list, exc: Exception) -> None:
    """Settle the waiters of ``batch`` (but a trim's: the trimming schedule settles those) with ``exc``."""
    for (kind, *_), fut in batch:
        if fut is not None and kind != "trim" and not fut.done():
            fut.set_exception(exc)


class _OneFailed(Exception):
    """A write of a batch tried without savepoints failed: try the batch again with them."""


#: the most updates kept waiting for the database (:class:`_Unwritten`): ends are kept before the rest
UNWRITTEN_MAX = 20_000
#: the first and the longest wait (s) before kept updates are tried again
UNWRITTEN_WAIT_S = (0.5, 30.0)
#: how long a closing store goes on trying to write its kept updates
CLOSE_TRY_S = 5.0

Kept = tuple[tuple[str, str, dict, float], None]


class _Unwritten:
    """Updates of batches that failed as a whole because the database was away (the connection lost,
    the server restarting, the file locked), kept by the writer thread to write again.

    Their waiters are told of the failure as before; the write itself goes on, because a task's end
    lost to a database restart leaves its record ``running``, and the next router runs it again.
    Accepts are not kept: their clients were answered with the error, so the task was never accepted.
    They are tried in order, in transactions of their own (a failure of theirs fails no new write),
    waiting longer after each failure until any commit shows the database back. Newer writes are not
    held behind them (a flush or an accept must not hang on a database that is away), so a newer
    update of a task may commit first; an ended task stays ended (the life-cycle guard), and a kept
    ``running`` that comes after its end is dropped, its fields and event with it.
    """

    def __init__(self) -> None:
        self.items: deque[Kept] = deque()
        self.wait_s = 0.0
        self.due = 0.0

    def keep(self, batch: list, exc: BaseException, retried: bool) -> None:
        """The updates of ``batch`` kept (``retried``: they came from here, so back to the front)."""
        kept = [(op, None) for op, _ in batch if op[0] == "update"]
        if not kept and not self.items:
            return
        if retried:
            self.items.extendleft(reversed(kept))
        else:
            self.items.extend(kept)
        self._cap()
        if self.wait_s == 0.0:  # the first failure says so; the next ones, while it lasts, do not
            log.warning("history writer: %d updates kept to write again once the database answers: %s",
                        len(self.items), exc)
        self.wait_s = min(max(2.0 * self.wait_s, UNWRITTEN_WAIT_S[0]), UNWRITTEN_WAIT_S[1])
        self.due = time.monotonic() + self.wait_s

    def _cap(self) -> None:
        over = len(self.items) - UNWRITTEN_MAX
        if over <= 0:
            return
        # an end spares the task a second run; a placed or running update only completes the record:
        # the oldest of those go first, then the oldest ends
        drop = set([i for i, (op, _) in enumerate(self.items) if op[2].get("status") not in FINAL][:over])
        drop.update([i for i in range(len(self.items)) if i not in drop][:over - len(drop)])
        self.items = deque(item for i, item in enumerate(self.items) if i not in drop)
        log.error("history writer: %d updates dropped: more than %d wait for the database", len(drop),
                  UNWRITTEN_MAX)

    def committed(self) -> None:
        """A batch committed: the database answers again, so what is kept is tried next, at once."""
        self.wait_s, self.due = 0.0, 0.0

    def wait(self, other: float | None) -> float | None:
        """How long the writer may block on its queue: ``other`` or until the next try, the sooner."""
        if not self.items:
            return other
        until = max(0.0, self.due - time.monotonic())
        return until if other is None else min(other, until)

    def take(self, n: int, now: bool = False) -> list[Kept]:
        """The next ``n`` kept updates if their wait is over (or ``now``), taken out; else none."""
        if not self.items or (not now and time.monotonic() < self.due):
            return []
        return [self.items.popleft() for _ in range(min(n, len(self.items)))]


_EVENT = "INSERT INTO events (task_id, at, status, detail) VALUES (:task_id, :at, :status, :detail)"


class SQLHistory:
    """The history on a database (:class:`~serve_app.history_sql.Backend`), written by a single
    group-committing thread; :class:`SQLiteHistory` and :class:`PostgresHistory` only open one.

    Args:
        db: the database seam.
        batch_max: most writes in one transaction.
        retention: what the writer trims, every ``retention.every_s``; the default keeps everything.
    """

    def __init__(self, db: Backend, *, batch_max: int = 512, retention: Retention | None = None) -> None:
        self.db = db
        self.retention = retention or Retention()
        self._batch_max = batch_max
        self._q: queue.Queue = queue.Queue()
        self._unwritten = _Unwritten()  # the writer thread's alone
        self._closed = False
        self._closing = threading.Lock()
        self._writer = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ writes
    def accept(self, task_id: str, task: dict, **fields: Any) -> None:
        self.accept_later(task_id, task, **fields).result()

    def accept_later(self, task_id: str, task: dict, **fields: Any) -> Future:
        now = fields.pop("accepted_at", None) or time.time()
        row = _encode({"task": task, "accepted_at": now, "status": "accepted", "attempts": 0, **fields})
        return self._submit(("accept", task_id, row, now), wait=True)

    def update(self, task_id: str, status: str, *, durable: bool = False, **fields: Any) -> None:
        fut = self._update(task_id, status, durable, fields)
        if fut is not None:
            fut.result()

    def update_later(self, task_id: str, status: str, **fields: Any) -> Future:
        return self._update(task_id, status, True, fields)  # type: ignore[return-value]

    def _update(self, task_id: str, status: str, wait: bool, fields: dict[str, Any]) -> Future | None:
        if status not in STATUSES:
            raise HistoryError(f"unknown status {status!r} (known: {', '.join(STATUSES)})")
        now = time.time()
        if status in FINAL and "finished_at" not in fields:
            fields["finished_at"] = now
        row = _encode({"status": status, **fields})
        return self._submit(("update", task_id, row, now), wait=wait)

    def flush(self) -> None:
        """Wait until every write handed in so far is committed, with the updates kept from an earlier
        failure (:class:`_Unwritten`), written first; raises when the database is still away."""
        self._submit(("noop", None, None, None), wait=True).result()

    def trim(self) -> int:
        """Trim to the retention bounds now (in the writer, a chunk per transaction, accepts
        going on between chunks) and wait; the tasks folded and deleted by that pass."""
        return self._submit(("trim", None, None, None), wait=True).result()

    def _submit(self, op: tuple, wait: bool) -> Future | None:
        """Queue a write for the writer thread; with ``wait``, a future done at its commit."""
        fut: Future | None = Future() if wait else None
        with self._closing:  # never after close's sentinel: the writer would not see it, a waiter never wake
            if self._closed:
                raise HistoryError("history store is closed")
            self._q.put((op, fut))
        return fut

    def _run(self) -> None:
        conn, trim, unwritten = None, TrimSchedule(self.retention, self.db), self._unwritten
        while True:
            try:  # wake up for the next trim (chunk), or the kept updates' next try, even when no write comes
                item = self._q.get(timeout=unwritten.wait(trim.wait()))
            except queue.Empty:
                item = ()
            if item is None:
                break
            batch = [item] if item else []
            while batch and len(batch) < self._batch_max:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                batch.append(nxt)
            trim.waiters += [fut for (kind, *_), fut in batch if kind == "trim"]
            if conn is None:
                try:
                    conn = self.db.writer()
                except Exception as exc:  # the server is away: fail who waits; the next write tries again
                    log.error("history writer: cannot reach the database: %s", exc)
                    _fail(batch, exc)
                    unwritten.keep(batch, exc, retried=False)
                    trim.finish(exc)
                    continue
            # kept updates: a chunk a pass between new batches (they must not wait long), all of them
            # before a flush, which fails with them if they cannot be written
            noops = [item for item in batch if item[0][0] == "noop"]  # the flushes
            kept, failure = unwritten.take(self._batch_max, now=bool(noops)), None
            while kept:
                failure = self._commit(conn, kept, retried=True)
                kept = unwritten.take(self._batch_max, now=True) if noops and failure is None else []
            if noops and failure is not None:
                _fail(noops, failure)
                batch = [item for item in batch if item[0][0] != "noop"]
            if batch:
                self._commit(conn, batch)
            trim.step(conn)  # one chunk at most between two batches: accepts never wait long
        deadline = time.monotonic() + CLOSE_TRY_S  # a last try, in batches, as the store closes
        while conn is not None and unwritten.items and time.monotonic() < deadline:
            if self._commit(conn, unwritten.take(self._batch_max, now=True), retried=True) is not None:
                break
        if unwritten.items:
            log.error("history writer: closed with %d updates not written", len(unwritten.items))
        trim.finish(HistoryError("history store closed during a trim"))
        if conn is not None:
            self.db.close(conn)

    def _commit(self, conn: Any, batch: list, retried: bool = False) -> BaseException | None:
        """Apply ``batch`` in one transaction, then settle its futures; the failure of the whole batch, if any.

        A write that fails (an update of a task the retention just trimmed, an id accepted
        twice) fails alone: the batch is then done again with a savepoint per write, and the
        others still commit. Only then: on PostgreSQL each savepoint is two more round trips,
        which would cost 40% of the accept rate if every batch paid for them. A batch that
        fails as a whole fails its waiters; its updates are kept (:class:`_Unwritten`) when the
        database was away, and dropped, said in the log, when the writes themselves were at fault.
        ``retried``: the batch is kept updates written again. Only a batch that wrote something
        shows the database back (a flush's alone may commit on a SQLite file another process locks).
        """
        try:
            try:
                failed = self._apply_all(conn, batch, savepoints=False)
            except _OneFailed:
                failed = self._apply_all(conn, batch, savepoints=True)
        except Exception as exc:  # a failed batch must not strand its waiters, nor lose its updates
            _fail(batch, exc)
            if self.db.transient(exc):
                self._unwritten.keep(batch, exc, retried)
            else:
                log.error("history writer: a batch of %d writes failed and is dropped: %r", len(batch), exc)
            return exc
        for k, ((kind, *_), fut) in enumerate(batch):
            if fut is not None and kind != "trim":
                if k in failed:
                    fut.set_exception(failed[k])
                else:
                    fut.set_result(None)
        if any(kind in ("accept", "update") for (kind, *_), _ in batch):
            self._unwritten.committed()
        return None

    def _apply_all(self, conn: Any, batch: list, savepoints: bool) -> dict[int, Exception]:
        """One transaction of ``batch``; the writes that failed, by position. Without
        ``savepoints`` the first failure rolls everything back (:class:`_OneFailed`)."""
        db, failed = self.db, {}
        with db.transaction(conn):
            for k, ((kind, task_id, row, at), fut) in enumerate(batch):
                sp = db.savepoint(conn) if savepoints else None
                try:
                    self._apply(conn, kind, task_id, row, at)
                except (HistoryError, *db.failures) as exc:
                    if not savepoints:
                        raise _OneFailed from exc
                    db.rollback_to(conn, sp)
                    failed[k] = exc
                    if fut is None:
                        log.warning("history write of task %s dropped: %s", task_id, exc)
                if savepoints:
                    db.release(conn, sp)
        return failed

    def _apply(self, conn: Any, kind: str, task_id: str, row: dict, at: float) -> None:
        if kind in ("noop", "trim"):
            return
        db = self.db
        if kind == "accept":
            db.run(conn, _insert(tuple(row)), {**row, "task_id": task_id})
        else:
            final = row["status"] in FINAL
            args = {**row, "task_id": task_id} if final else {**row, "task_id": task_id, **FINAL_ARGS}
            cur = db.run(conn, _update(tuple(row), final), args)
            if cur.rowcount == 0:
                if not final and db.run(conn, "SELECT 1 FROM tasks WHERE task_id = :task_id",
                                        {"task_id": task_id}).fetchone():
                    return  # already final: nothing to record
                raise HistoryError(f"no task {task_id!r} in the history")
        db.run(conn, _EVENT, {"task_id": task_id, "at": at, "status": row["status"], "detail": row.get("reason")})

    # ------------------------------------------------------------------ reads
    def get(self, task_id: str) -> dict | None:
        rows = self.db.rows("SELECT * FROM tasks WHERE task_id = :task_id", {"task_id": task_id})
        return _decode(rows[0]) if rows else None

    def _where(self, status=None, pool=None, policy=None, since=None, until=None, search=None) -> tuple[str, dict]:
        clauses, args = [], {}
        for col, val in (("status", status), ("pool", pool), ("policy", policy)):
            if val is not None:
                clauses.append(f"{col} = :{col}")
                args[col] = val
        if since is not None:
            clauses.append("accepted_at >= :since")
            args["since"] = since
        if until is not None:
            clauses.append("accepted_at < :until")
            args["until"] = until
        if search:
            like = self.db.like
            clauses.append(f"(task_id {like} :search OR kind {like} :search OR task {like} :search)")
            args["search"] = f"%{search}%"
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def query(self, *, status: str | None = None, pool: str | None = None, policy: str | None = None,
              since: float | None = None, until: float | None = None, search: str | None = None,
              limit: int = 100, offset: int = 0) -> list[dict]:
        where, args = self._where(status, pool, policy, since, until, search)
        rows = self.db.rows(f"SELECT * FROM tasks{where} ORDER BY accepted_at DESC, task_id LIMIT :limit OFFSET :offset",
                            {**args, "limit": int(limit), "offset": int(offset)})
        return [_decode(r) for r in rows]

    def demand_rows(self, since: float, limit: int) -> list[dict]:
        """The newest ``limit`` tasks accepted at or after ``since``, with only what a demand series reads
        (:func:`capacity.sources.from_history`): the capacity forecast's input, never every column."""
        rows = self.db.rows("SELECT accepted_at, kind, pool, share, exec_ms, task FROM tasks WHERE accepted_at >= :since "
                            "ORDER BY accepted_at DESC LIMIT :limit", {"since": since, "limit": int(limit)})
        return [_decode(r) for r in rows]

    def shadow_rows(self, since: float, limit: int) -> list[dict]:
        """The newest ``limit`` tasks accepted at or after ``since`` whose decision holds a shadow's
        (``decision.shadow``), with only what the shadow's agreement reads (:mod:`serve_app.loop_views`).
        ``LIKE`` on the stored JSON (which writes ``"shadow":`` exactly so, a quoted key's quotes escaped
        in any string value) reads the same in both databases."""
        rows = self.db.rows("SELECT accepted_at, policy, status, score, slo_met, decision FROM tasks "
                            "WHERE accepted_at >= :since AND decision LIKE :key ORDER BY accepted_at DESC LIMIT :limit",
                            {"since": since, "key": '%"shadow":%', "limit": int(limit)})
        return [_decode(r) for r in rows]

    def count(self, **filters: Any) -> int:
        where, args = self._where(**filters)
        return int(self.db.rows(f"SELECT COUNT(*) AS n FROM tasks{where}", args)[0]["n"])

    def events(self, task_id: str) -> list[dict]:
        rows = self.db.rows("SELECT at, status, detail FROM events WHERE task_id = :task_id ORDER BY id",
                            {"task_id": task_id})
        return [dict(r) for r in rows]

    def unfinished(self) -> list[dict]:
        rows = self.db.rows(f"SELECT * FROM tasks WHERE status NOT IN {FINAL_IN} ORDER BY accepted_at, task_id",
                            FINAL_ARGS)
        return [_decode(r) for r in rows]

    def aggregates(self, *, day: str | None = None, pool: str | None = None, policy: str | None = None,
                   kind: str | None = None, status: str | None = None) -> list[dict]:
        """Totals of the tasks trimmed so far, one row per UTC day (``YYYY-MM-DD`` of
        ``finished_at``), pool, policy, kind and status, oldest first: ``tasks``, ``latency_n``
        (tasks with a latency), ``latency_ms_sum``, ``latency_ms_max``, ``cost_sum``, ``slo_n``
        (tasks with an SLO verdict), ``slo_met``. Rows still in ``tasks`` are not included:
        all-time totals are these plus :meth:`query` over the present rows."""
        return read_aggregates(self.db, day=day, pool=pool, policy=policy, kind=kind, status=status)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the database is away: close all the same (the writer says what is lost)
            log.error("history: closing with writes not committed: %s", exc)
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._q.put(None)
        self._writer.join(timeout=10)
