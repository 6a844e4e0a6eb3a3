"""Task history: every accepted task, its life cycle, decision, timings and cost.

Behind :class:`HistoryStore`, chosen by a connection URL: the embedded SQLite file
(``sqlite:///results/history.db``, the default) or a PostgreSQL database
(``postgresql://user@host:port/db``). Either has exactly one writer thread that
group-commits: callers hand it writes and, for the ones that must be durable before an
acknowledgement (``accepted``), wait until the transaction holding them is committed.
Many concurrent requests then share one commit instead of paying one each. The loop is
one (:class:`SQLHistory`); what differs between the databases is the small seam of
:mod:`serve_app.history_sql`, and the schema (and its versions) is :mod:`serve_app.history_schema`.

SQLite's durability: ``synchronous=FULL`` by default. In WAL mode both settings keep every
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

PostgreSQL's durability is the server's ``synchronous_commit`` (on by default: a commit
returns once its WAL is flushed). Measured here against a local PostgreSQL 15 (TCP, fsync
on; the same loads, best of three, two runs): 2,400-2,600 accepts/s with 8 submitters,
3,300-4,200 handing all in at once; a trim chunk of 1,000 tasks 11-13 ms. Several routers
may share one database: one at a time trims it (:mod:`serve_app.retention`).

The file is created 0600 (:mod:`serve_app.private`); retention (what is trimmed,
how often, and the daily aggregates kept of it) is in :mod:`serve_app.retention`.

Life cycle: ``accepted`` -> ``placed`` -> ``running`` -> ``succeeded`` | ``failed``
(``rejected`` when no placement is feasible, ``cancelled`` by its owner, the admin or its
deadline). Each change is also an event row,
so the history shows when each step happened.
"""
from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from serve_app.history_schema import COLUMNS, HistoryError
from serve_app.history_sql import PostgresBackend, SQLiteBackend, Synchronous, Target, parse_url
from serve_app.history_store import SQLHistory
from serve_app.retention import Retention

__all__ = ["COLUMNS", "HistoryError", "HistoryStore", "PostgresHistory", "SQLHistory", "SQLiteHistory", "open_store"]


class HistoryStore(Protocol):
    """What the router and the views need from a task history."""

    def accept(self, task_id: str, task: dict, **fields: Any) -> None:
        """Record a new task durably (returns once committed)."""

    def accept_later(self, task_id: str, task: dict, **fields: Any) -> Future:
        """Hand in a new task; the future is done once it is committed (or failed). A server
        awaits it without holding a thread, so every request waiting shares one commit."""

    def update(self, task_id: str, status: str, *, durable: bool = False, **fields: Any) -> None:
        """Move a task to ``status`` and set fields; ``durable`` waits for the commit."""

    def update_later(self, task_id: str, status: str, **fields: Any) -> Future:
        """:meth:`update` without waiting; the future is done at that write's commit (or failed with its
        error), so whoever needs this one write committed can await it without holding a thread."""

    def get(self, task_id: str) -> dict | None: ...

    def query(self, *, status: str | None = None, pool: str | None = None, policy: str | None = None,
              since: float | None = None, until: float | None = None, search: str | None = None,
              limit: int = 100, offset: int = 0) -> list[dict]: ...

    def demand_rows(self, since: float, limit: int) -> list[dict]:
        """The newest ``limit`` tasks accepted since ``since``: arrival, kind, pool, share, run time, task."""

    def shadow_rows(self, since: float, limit: int) -> list[dict]:
        """The newest ``limit`` tasks accepted since ``since`` decided with a shadow: policy, status, score,
        SLO verdict, decision."""

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


class SQLiteHistory(SQLHistory):
    """The embedded default: a SQLite file in WAL mode, created 0600 (:mod:`serve_app.private`).

    Args:
        path: the database file.
        synchronous: ``"FULL"`` (default) or ``"NORMAL"``; see the module docstring.
        batch_max, retention: see :class:`SQLHistory`.
    """

    def __init__(self, path: str | Path, *, batch_max: int = 512, retention: Retention | None = None,
                 synchronous: Synchronous = "FULL") -> None:
        db = SQLiteBackend(path, synchronous)
        self.path = db.path
        self.synchronous = synchronous
        super().__init__(db, batch_max=batch_max, retention=retention)


class PostgresHistory(SQLHistory):
    """A PostgreSQL database, by a ``postgresql://`` URL (SQLAlchemy Core over psycopg 3): for
    several routers sharing one history, or a history kept on a database server.

    Args:
        url: ``postgresql://user@host:port/database`` (or ``postgresql+psycopg://``); a password is
            better left to ``PGPASSWORD`` or ``~/.pgpass`` than put in the URL.
        batch_max, retention: see :class:`SQLHistory`.
    """

    def __init__(self, url: str | Target, *, batch_max: int = 512, retention: Retention | None = None) -> None:
        target = url if isinstance(url, Target) else parse_url(url)
        if target.kind != "postgresql":
            raise HistoryError(f"not a PostgreSQL URL: {target.kind}")
        super().__init__(PostgresBackend(target), batch_max=batch_max, retention=retention)


def open_store(url: str, *, retention: Retention | None = None, synchronous: Synchronous = "FULL") -> HistoryStore:
    """Open a history store from a connection URL: ``sqlite:///PATH`` (the embedded default) or
    ``postgresql://user@host:port/database``. ``retention`` (default: keep everything) applies
    to both; ``synchronous`` to SQLite only (PostgreSQL's is the server's ``synchronous_commit``)."""
    target = parse_url(url)
    if target.kind == "postgresql":
        if synchronous not in ("NORMAL", "FULL"):
            raise HistoryError(f"history synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        return PostgresHistory(target, retention=retention)
    return SQLiteHistory(target.path, retention=retention, synchronous=synchronous)
