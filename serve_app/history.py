"""Task history: every accepted task, its life cycle, decision, timings and cost.

Behind :class:`HistoryStore` so that a server database can replace the default,
chosen by a connection URL (``sqlite:///results/history.db``). The SQLite store
runs in WAL mode with exactly one writer thread that group-commits: callers hand
it writes and, for the ones that must be durable before an acknowledgement
(``accepted``), wait until the transaction holding them is committed. Many
concurrent requests then share one commit instead of paying one each.

Durability: ``synchronous=FULL`` by default. In WAL mode both settings keep every
acknowledged accept through a process kill (the router dying); FULL also fsyncs the
WAL at each commit, so an OS crash or power cut loses nothing acknowledged either,
where NORMAL can lose the last commits before a checkpoint. Measured here
(``python -m benchmarks history``, 5,000 accepts, both settings in each run, six
runs on this shared 2-core machine): 8 submitters each awaiting its accept (as the
router's requests do), 6,000-16,000 accepts/s with NORMAL and 4,900-9,700 with FULL
(FULL/NORMAL 0.47-0.81); one submitter handing all in at once, 38,000-59,000 and
28,000-56,000 (0.71-0.97). FULL costs 0.3-0.6 ms per commit, and even its slowest
figure is a dozen times the router's HTTP ceiling (about 400 requests/s), so the
stronger promise costs nothing a client sees. ``synchronous="NORMAL"`` stays an
option for a disk whose fsync is slow.

The file is created 0600 (:mod:`serve_app.private`); retention (what is trimmed,
how often, and the daily aggregates kept of it) is in :mod:`serve_app.retention`.

Life cycle: ``accepted`` -> ``placed`` -> ``running`` -> ``succeeded`` | ``failed``
(``rejected`` when no placement is feasible, ``cancelled`` by its owner, the admin or its
deadline). Each change is also an event row,
so the history shows when each step happened.
"""
from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson

from cluster.vocabulary import FINAL, STATUSES
from serve_app.private import private_file
from serve_app.retention import SCHEMA as _AGGREGATES, Retention, TrimSchedule, read_aggregates

Synchronous = Literal["NORMAL", "FULL"]
#: bytes the WAL file is cut back to after a checkpoint (it otherwise keeps its largest size)
_WAL_LIMIT = 16 << 20
log = logging.getLogger("serve_app")

#: columns a task row has besides its JSON blobs; updates may set any of these
COLUMNS = (
    "status", "reason", "policy", "policy_version", "pool", "node", "tier", "share", "confidence",
    "queue_ms", "network_ms", "exec_ms", "latency_ms", "decision_ms", "cost", "score", "slo_met", "kind",
    "priority", "slo_ms", "accepted_at", "finished_at", "attempts",
)
_JSON = ("task", "features", "decision")


class HistoryStore(Protocol):
    """What the router and the views need from a task history."""

    def accept(self, task_id: str, task: dict, **fields: Any) -> None:
        """Record a new task durably (returns once committed)."""

    def accept_later(self, task_id: str, task: dict, **fields: Any) -> Future:
        """Hand in a new task; the future is done once it is committed (or failed). A server
        awaits it without holding a thread, so every request waiting shares one commit."""

    def update(self, task_id: str, status: str, *, durable: bool = False, **fields: Any) -> None:
        """Move a task to ``status`` and set fields; ``durable`` waits for the commit."""

    def get(self, task_id: str) -> dict | None: ...

    def query(self, *, status: str | None = None, pool: str | None = None, policy: str | None = None,
              since: float | None = None, until: float | None = None, search: str | None = None,
              limit: int = 100, offset: int = 0) -> list[dict]: ...

    def count(self, **filters: Any) -> int: ...

    def events(self, task_id: str) -> list[dict]: ...

    def unfinished(self) -> list[dict]:
        """Tasks accepted but not final: what a restarted router must resume or fail."""

    def trim(self) -> int:
        """Apply the store's retention now; the number of final tasks folded and deleted."""

    def aggregates(self, *, day: str | None = None, pool: str | None = None, policy: str | None = None,
                   kind: str | None = None, status: str | None = None) -> list[dict]:
        """Daily totals of the tasks trimmed so far (not of the rows still present)."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


class HistoryError(ValueError):
    """A bad store URL or a bad update (unknown status or field)."""


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    {", ".join(f"{c} {'REAL' if c.endswith(('_ms', '_at')) or c in ('cost', 'score', 'confidence') else 'TEXT'}"
               for c in COLUMNS)},
    task TEXT, features TEXT, decision TEXT
);
CREATE TABLE IF NOT EXISTS events (
    task_id TEXT NOT NULL, at REAL NOT NULL, status TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks(status);
CREATE INDEX IF NOT EXISTS tasks_accepted ON tasks(accepted_at);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id);
"""


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


def _decode(row: sqlite3.Row) -> dict:
    d = dict(row)
    for k in _JSON:
        if d.get(k) is not None:
            d[k] = json.loads(d[k])
    if d.get("slo_met") is not None:
        d["slo_met"] = bool(int(d["slo_met"]))
    return d


class SQLiteHistory:
    """SQLite (WAL) history with a single group-committing writer thread.

    Args:
        path: the database file, created 0600 (:func:`serve_app.private.private_file`).
        batch_max: most writes in one transaction.
        retention: what the writer trims, every ``retention.every_s``; the default keeps everything.
        synchronous: ``"FULL"`` (default) or ``"NORMAL"``; see the module docstring.
    """

    def __init__(self, path: str | Path, *, batch_max: int = 512, retention: Retention | None = None,
                 synchronous: Synchronous = "FULL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise HistoryError(f"history synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self.path = private_file(path)
        self.retention = retention or Retention()
        self.synchronous = synchronous
        self._batch_max = batch_max
        self._q: queue.Queue = queue.Queue()
        self._closed = False
        init = sqlite3.connect(self.path)
        init.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes on a new file only; an old one keeps NONE
        init.execute("PRAGMA journal_mode=WAL")
        init.executescript(_SCHEMA + _AGGREGATES)
        init.commit()
        init.close()
        self._local = threading.local()
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
        if status not in STATUSES:
            raise HistoryError(f"unknown status {status!r} (known: {', '.join(STATUSES)})")
        now = time.time()
        if status in FINAL and "finished_at" not in fields:
            fields["finished_at"] = now
        row = _encode({"status": status, **fields})
        fut = self._submit(("update", task_id, row, now), wait=durable)
        if fut is not None:
            fut.result()

    def flush(self) -> None:
        """Wait until every write handed in so far is committed."""
        self._submit(("noop", None, None, None), wait=True).result()

    def trim(self) -> int:
        """Trim to the retention bounds now (in the writer, a chunk per transaction, accepts
        going on between chunks) and wait; the tasks folded and deleted by that pass."""
        return self._submit(("trim", None, None, None), wait=True).result()

    def _submit(self, op: tuple, wait: bool) -> Future | None:
        """Queue a write for the writer thread; with ``wait``, a future done at its commit."""
        if self._closed:
            raise HistoryError("history store is closed")
        fut: Future | None = Future() if wait else None
        self._q.put((op, fut))
        return fut

    def _run(self) -> None:
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")  # the WAL shrinks back after a big trim
        trim = TrimSchedule(self.retention)
        while True:
            try:  # wake up for the next trim (chunk) even when no write comes
                item = self._q.get(timeout=trim.wait())
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
            if batch:
                trim.waiters += [fut for (kind, *_), fut in batch if kind == "trim"]
                self._commit(conn, batch)
            trim.step(conn)  # one chunk at most between two batches: accepts never wait long
        trim.finish(HistoryError("history store closed during a trim"))
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list) -> None:
        """Apply ``batch`` in one transaction, then settle its futures.

        Each write has a savepoint of its own: one that fails (an update of a task the
        retention just trimmed) fails alone, and the others of the batch still commit.
        """
        failed: dict[int, Exception] = {}
        try:
            with conn:
                conn.execute("BEGIN")  # the savepoints below nest in it: one commit for the batch
                for k, ((kind, task_id, row, at), _) in enumerate(batch):
                    conn.execute("SAVEPOINT one")
                    try:
                        self._apply(conn, kind, task_id, row, at)
                    except (HistoryError, sqlite3.IntegrityError) as exc:
                        conn.execute("ROLLBACK TO one")
                        failed[k] = exc
                        if batch[k][1] is None:
                            log.warning("history write of task %s dropped: %s", task_id, exc)
                    conn.execute("RELEASE one")
            for k, ((kind, *_), fut) in enumerate(batch):
                if fut is not None and kind != "trim":
                    if k in failed:
                        fut.set_exception(failed[k])
                    else:
                        fut.set_result(None)
        except Exception as exc:  # a failed batch must not strand its waiters
            for (kind, *_), fut in batch:
                if fut is not None and kind != "trim" and not fut.done():
                    fut.set_exception(exc)

    @staticmethod
    def _apply(conn: sqlite3.Connection, kind: str, task_id: str, row: dict, at: float) -> None:
        if kind in ("noop", "trim"):
            return
        if kind == "accept":
            cols = ["task_id", *row]
            conn.execute(f"INSERT INTO tasks ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         [task_id, *row.values()])
        else:
            sets = ", ".join(f"{k} = ?" for k in row)
            # a task that ended stays ended: a late 'running' (written after a cancel raced the start)
            # never overwrites it; a final status may still replace a final one (its fields complete)
            guard = "" if row["status"] in FINAL else f" AND status NOT IN ({', '.join('?' * len(FINAL))})"
            args = [*row.values(), task_id, *(FINAL if guard else ())]
            cur = conn.execute(f"UPDATE tasks SET {sets} WHERE task_id = ?{guard}", args)
            if cur.rowcount == 0:
                if guard and conn.execute("SELECT 1 FROM tasks WHERE task_id = ?", (task_id,)).fetchone():
                    return  # already final: nothing to record
                raise HistoryError(f"no task {task_id!r} in the history")
        conn.execute("INSERT INTO events (task_id, at, status, detail) VALUES (?, ?, ?, ?)",
                     (task_id, at, row["status"], row.get("reason")))

    # ------------------------------------------------------------------ reads
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def get(self, task_id: str) -> dict | None:
        row = self._reader().execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _decode(row) if row else None

    @staticmethod
    def _where(status=None, pool=None, policy=None, since=None, until=None, search=None) -> tuple[str, list]:
        clauses, args = [], []
        for col, val in (("status", status), ("pool", pool), ("policy", policy)):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        if since is not None:
            clauses.append("accepted_at >= ?")
            args.append(since)
        if until is not None:
            clauses.append("accepted_at < ?")
            args.append(until)
        if search:
            clauses.append("(task_id LIKE ? OR kind LIKE ? OR task LIKE ?)")
            args += [f"%{search}%"] * 3
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def query(self, *, status: str | None = None, pool: str | None = None, policy: str | None = None,
              since: float | None = None, until: float | None = None, search: str | None = None,
              limit: int = 100, offset: int = 0) -> list[dict]:
        where, args = self._where(status, pool, policy, since, until, search)
        rows = self._reader().execute(
            f"SELECT * FROM tasks{where} ORDER BY accepted_at DESC, task_id LIMIT ? OFFSET ?",
            [*args, int(limit), int(offset)]).fetchall()
        return [_decode(r) for r in rows]

    def count(self, **filters: Any) -> int:
        where, args = self._where(**filters)
        return int(self._reader().execute(f"SELECT COUNT(*) FROM tasks{where}", args).fetchone()[0])

    def events(self, task_id: str) -> list[dict]:
        rows = self._reader().execute(
            "SELECT at, status, detail FROM events WHERE task_id = ? ORDER BY rowid", (task_id,)).fetchall()
        return [dict(r) for r in rows]

    def unfinished(self) -> list[dict]:
        q = f"SELECT * FROM tasks WHERE status NOT IN ({', '.join('?' * len(FINAL))}) ORDER BY accepted_at"
        return [_decode(r) for r in self._reader().execute(q, FINAL).fetchall()]

    def aggregates(self, *, day: str | None = None, pool: str | None = None, policy: str | None = None,
                   kind: str | None = None, status: str | None = None) -> list[dict]:
        """Totals of the tasks trimmed so far, one row per UTC day (``YYYY-MM-DD`` of
        ``finished_at``), pool, policy, kind and status, oldest first: ``tasks``, ``latency_n``
        (tasks with a latency), ``latency_ms_sum``, ``latency_ms_max``, ``cost_sum``, ``slo_n``
        (tasks with an SLO verdict), ``slo_met``. Rows still in ``tasks`` are not included:
        all-time totals are these plus :meth:`query` over the present rows."""
        return read_aggregates(self._reader(), day=day, pool=pool, policy=policy, kind=kind, status=status)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._q.put(None)
        self._writer.join(timeout=10)


def open_store(url: str, *, retention: Retention | None = None, synchronous: Synchronous = "FULL") -> HistoryStore:
    """Open a history store from a connection URL; only ``sqlite:///PATH`` ships today.
    ``retention`` (default: keep everything) and ``synchronous``: see :class:`SQLiteHistory`."""
    if url.startswith("sqlite:///"):
        return SQLiteHistory(url[len("sqlite:///"):], retention=retention, synchronous=synchronous)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise HistoryError(f"unsupported history URL scheme {scheme!r}: use sqlite:///path/to/history.db")

