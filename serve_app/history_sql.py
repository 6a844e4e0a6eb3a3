"""Where the history lives: its URL forms, and the seam between the one writer loop and a database.

Two databases, one :class:`Backend` seam. The embedded SQLite file stays on the standard
``sqlite3`` module: on the writer's pattern (a savepoint, two inserts, a release, 500 to a
commit) it did 88,000-145,000 writes/s here, SQLAlchemy Core on the same file 6,100-7,600
(and SQLAlchemy's raw-SQL path 24,000-26,000), which would have cut the group-committed
accept rate several-fold. PostgreSQL goes through SQLAlchemy Core over psycopg 3 (a pool
for readers, one connection for the writer), where a network round trip per statement
dwarfs SQLAlchemy's cost. Both run the same SQL text with ``:name`` parameters; what differs
(a UTC-day expression, SQLite's index hint, case-insensitive LIKE, savepoints, vacuum, the
claim on a trimming pass) is an attribute or a method here. Both schemas come from the
tables of :mod:`serve_app.history_schema`, through SQLAlchemy.

A URL's password never reaches a log line or an error: :func:`mask` wherever one is shown.
"""
from __future__ import annotations

import os
import re
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from serve_app.history_schema import HistoryError, prepare
from serve_app.private import private_file

SUPPORTED = "sqlite:///path/to/history.db or postgresql://user@host:port/database (postgresql+psycopg://...)"
Synchronous = Literal["NORMAL", "FULL"]
#: bytes the WAL file is cut back to after a checkpoint (it otherwise keeps its largest size)
_WAL_LIMIT = 16 << 20
_SECRET = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):(?P<pw>.*)@(?P<tail>[^@]*)$")
_SECRET_PARAM = re.compile(r"(?i)\b(password=)[^&;\s]*")
#: seconds a PostgreSQL connection may take to open unless the URL sets ``connect_timeout`` or the environment
#: ``PGCONNECT_TIMEOUT``: a server that takes the TCP connection and never answers otherwise held the router's
#: start, and the history writer's reconnect after a failover, 130 s (psycopg 3.2's default) or for ever (3.1)
CONNECT_TIMEOUT_S = 5


def mask(url: Any) -> str:
    """``url`` with any password (``user:PASSWORD@``, ``?password=``) shown as ``***``."""
    text = _SECRET.sub(lambda m: f"{m['head']}:***@{m['tail']}", str(url))
    return _SECRET_PARAM.sub(r"\1***", text)


@dataclass(frozen=True)
class Target:
    """A parsed history URL: SQLite's file ``path``, or PostgreSQL's SQLAlchemy ``url``."""

    kind: Literal["sqlite", "postgresql"]
    path: Path | None = None
    url: sa.URL | None = None

    def engine(self) -> sa.Engine:
        """A SQLAlchemy engine on it: PostgreSQL through psycopg 3; SQLite with real transactions."""
        if self.kind == "postgresql":
            # an accept is acknowledged at its commit: the commit must be durable whatever the
            # database's or role's default (synchronous_commit=off would lose the last ones in a crash)
            args: dict[str, Any] = {"options": "-c synchronous_commit=on"}
            if "connect_timeout" not in self.url.query and not os.environ.get("PGCONNECT_TIMEOUT"):
                args["connect_timeout"] = CONNECT_TIMEOUT_S
            return sa.create_engine(self.url, pool_pre_ping=True, hide_parameters=True, connect_args=args)
        eng = sa.create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 10.0})

        @sa.event.listens_for(eng, "connect")
        def _connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy's BEGIN below, not the driver's implicit one

        @sa.event.listens_for(eng, "begin")
        def _begin(conn: sa.Connection) -> None:  # IMMEDIATE: take the write lock before the first read
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")

        return eng


def parse_url(url: str) -> Target:
    """Which database ``url`` names; a :class:`HistoryError` naming the scheme and the supported
    forms otherwise. PostgreSQL always goes through psycopg 3 (``postgresql+psycopg``)."""
    if not isinstance(url, str) or "://" not in url:
        raise HistoryError(f"bad history URL {mask(url)!r}: use {SUPPORTED}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise HistoryError(f"bad SQLite history URL {mask(url)!r}: use sqlite:///relative/path.db or "
                               "sqlite:////absolute/path.db")
        return Target("sqlite", path=Path(path))
    if scheme in ("postgresql", "postgresql+psycopg"):
        try:
            parsed = sa.make_url(url)
        except (sa_exc.ArgumentError, ValueError) as exc:
            raise HistoryError(f"bad PostgreSQL history URL {mask(url)!r} ({type(exc).__name__}): "
                               "use postgresql://user@host:port/database") from None
        if not parsed.database:
            raise HistoryError(f"PostgreSQL history URL {mask(url)!r} names no database: "
                               "use postgresql://user@host:port/database")
        return Target("postgresql", url=parsed.set(drivername="postgresql+psycopg"))
    raise HistoryError(f"unsupported history URL scheme {scheme!r}: use {SUPPORTED}")


def sqlite_file(path: str | Path) -> Path:
    """Create (0600) or open the SQLite file in WAL mode, incrementally vacuumable when new, with
    the history schema (:func:`~serve_app.history_schema.prepare`)."""
    path = private_file(path)
    init = sqlite3.connect(path)
    init.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes on a new file only; an old one keeps NONE
    init.execute("PRAGMA journal_mode=WAL")
    init.close()
    engine = Target("sqlite", path=path).engine()
    try:
        prepare(engine)
    finally:
        engine.dispose()
    return path


class Result(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...


class Backend(Protocol):
    """What the history's writer loop, its reads and :mod:`serve_app.retention` need of a database.

    Attributes:
        kind: ``sqlite`` or ``postgresql``.
        failures: errors of one write that fail that write alone (its savepoint rolled back).
        like: the case-insensitive LIKE (SQLite's LIKE is; PostgreSQL's is not).
        day: SQL of the UTC day (``YYYY-MM-DD``) of a Unix time ``{}``.
        by_finished: the hint that makes a trim walk the ``finished_at`` index ('' where the planner does).
    """

    kind: str
    failures: tuple[type[Exception], ...]
    like: str
    day: str
    by_finished: str

    def writer(self) -> Any:
        """A connection for the writer thread (the only one that writes tasks)."""

    def transient(self, exc: BaseException) -> bool:
        """Whether a failed batch may commit when tried again as it is: the database was away, not the writes."""

    def run(self, conn: Any, sql: str, params: dict | None = None) -> Result: ...

    def transaction(self, conn: Any) -> Any:
        """A context manager: one transaction, committed at its end, rolled back on an error."""

    def savepoint(self, conn: Any) -> Any: ...

    def rollback_to(self, conn: Any, sp: Any) -> None: ...

    def release(self, conn: Any, sp: Any) -> None: ...

    def rows(self, sql: str, params: dict | None = None) -> list:
        """Rows of a read (each supports ``dict(row)`` and ``row[name]``), on a reader connection."""

    def claim_trim(self, conn: Any) -> bool:
        """Whether this writer may run a trimming pass now: False while another router sharing
        the database runs one (its count of final tasks would go stale under the other's deletes)."""

    def end_trim(self, conn: Any, done: bool) -> None:
        """The pass is over (``done``: it completed): housekeeping, and let the next one claim."""

    def close(self, conn: Any) -> None:
        """Close the writer's connection and whatever else is held."""


class SQLiteBackend:
    """The embedded file, on ``sqlite3``: WAL, the writer's ``synchronous``, a reader per thread."""

    kind = "sqlite"
    failures: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    like = "LIKE"
    day = "date({}, 'unixepoch')"
    by_finished = " INDEXED BY tasks_finished"  # the planner would sort every final task per chunk
    #: sqlite3's OperationalError (a bad statement's too) when the file, not the write, is at fault: by its
    #: primary result code, or (an error without one) its words
    _AWAY_CODES = frozenset(getattr(sqlite3, f"SQLITE_{c}") for c in
                            ("BUSY", "LOCKED", "IOERR", "CANTOPEN", "FULL", "PROTOCOL", "READONLY"))
    _AWAY_WORDS = ("locked", "busy", "disk i/o", "unable to open", "is full", "readonly", "locking protocol")

    def transient(self, exc: BaseException) -> bool:
        if not isinstance(exc, sqlite3.OperationalError):
            return False
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF in self._AWAY_CODES
        return any(w in str(exc).lower() for w in self._AWAY_WORDS)

    def __init__(self, path: str | Path, synchronous: Synchronous = "FULL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise HistoryError(f"history synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self.synchronous = synchronous
        self.path = sqlite_file(path)
        self._local = threading.local()

    def writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")  # the WAL shrinks back after a big trim
        return conn

    def run(self, conn: sqlite3.Connection, sql: str, params: dict | None = None) -> sqlite3.Cursor:
        return conn.execute(sql, params or ())

    @contextmanager
    def transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        with conn:  # commits at the end, rolls back on an error
            conn.execute("BEGIN")  # savepoints nest in it: one commit for the batch
            yield

    def savepoint(self, conn: sqlite3.Connection) -> None:
        conn.execute("SAVEPOINT one")

    def rollback_to(self, conn: sqlite3.Connection, sp: None) -> None:
        conn.execute("ROLLBACK TO one")

    def release(self, conn: sqlite3.Connection, sp: None) -> None:
        conn.execute("RELEASE one")

    def rows(self, sql: str, params: dict | None = None) -> list[sqlite3.Row]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn.execute(sql, params or ()).fetchall()

    def claim_trim(self, conn: sqlite3.Connection) -> bool:
        return True  # one router per file

    def end_trim(self, conn: sqlite3.Connection, done: bool) -> None:
        if done:
            from serve_app.retention import vacuum_step  # retention imports this module

            vacuum_step(conn)

    def close(self, conn: sqlite3.Connection) -> None:
        conn.close()


#: any number: the advisory lock of a trimming pass over one database
_TRIM_LOCK = 0x7472_696D  # "trim"


@lru_cache(maxsize=1024)
def _text(sql: str) -> sa.TextClause:
    """Parsed once per distinct statement (the history issues a few dozen)."""
    return sa.text(sql)


class PostgresBackend:
    """A PostgreSQL database through SQLAlchemy Core and psycopg 3.

    Durability is the server's ``synchronous_commit`` (``on`` by default: a commit returns once
    its WAL is flushed), so an acknowledged accept survives the router's death and the server's.
    """

    kind = "postgresql"
    failures: tuple[type[Exception], ...] = (sa_exc.IntegrityError, sa_exc.DataError)
    like = "ILIKE"
    day = "to_char(to_timestamp({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    by_finished = ""

    def __init__(self, target: Target) -> None:
        self.url = mask(target.url.render_as_string(hide_password=True))
        self.engine = target.engine()
        try:
            prepare(self.engine)
        except sa_exc.OperationalError as exc:
            self.engine.dispose()
            raise HistoryError(f"cannot open the history at {self.url}: {exc.orig}") from None

    def writer(self) -> sa.Connection:
        return self.engine.connect()

    #: SQLSTATE classes of a server away or busy, not of a bad write: connection exception, transaction
    #: rollback (deadlock, serialization), insufficient resources, operator intervention, system error
    _AWAY_CLASSES = frozenset({"08", "40", "53", "57", "58"})

    def transient(self, exc: BaseException) -> bool:
        if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came back in time
            return True
        if not isinstance(exc, sa_exc.DBAPIError):
            return False
        if exc.connection_invalidated:
            return True
        state = getattr(exc.orig, "sqlstate", None)
        if state is None:  # the driver's own, before any server answered: the connection
            return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
        return state[:2] in self._AWAY_CLASSES

    def run(self, conn: sa.Connection, sql: str, params: dict | None = None) -> sa.CursorResult:
        return conn.execute(_text(sql), params or {})

    @contextmanager
    def transaction(self, conn: sa.Connection) -> Iterator[None]:
        with conn.begin():  # after a lost connection, the next begin reconnects
            yield

    def savepoint(self, conn: sa.Connection) -> sa.NestedTransaction:
        return conn.begin_nested()

    def rollback_to(self, conn: sa.Connection, sp: sa.NestedTransaction) -> None:
        sp.rollback()

    def release(self, conn: sa.Connection, sp: sa.NestedTransaction) -> None:
        if sp.is_active:
            sp.commit()

    def rows(self, sql: str, params: dict | None = None) -> list:
        with self.engine.connect() as conn:
            return list(conn.execute(_text(sql), params or {}).mappings())

    def claim_trim(self, conn: sa.Connection) -> bool:
        """A session lock for the whole pass (its chunks are separate transactions, accepts between)."""
        with conn.begin():
            return bool(conn.execute(_text("SELECT pg_try_advisory_lock(:k)"), {"k": _TRIM_LOCK}).scalar())

    def end_trim(self, conn: sa.Connection, done: bool) -> None:
        """Unlock; no vacuum: PostgreSQL's autovacuum reclaims what a trim deleted."""
        with conn.begin():
            conn.execute(_text("SELECT pg_advisory_unlock(:k)"), {"k": _TRIM_LOCK})

    def close(self, conn: sa.Connection) -> None:
        conn.close()
        self.engine.dispose()
