"""The history database's one schema (SQLAlchemy Core tables) and its versions.

Both stores, SQLite and PostgreSQL, are created from these :class:`~sqlalchemy.Table`
definitions, so the two cannot drift; the API keys (:mod:`serve_app.keys`) live in the
same database. The version is a one-row ``schema_version`` table in both databases.
Opening a database runs :func:`prepare`: a new one gets every table at :data:`VERSION`;
an older one is brought up by the steps of :data:`STEPS`, in one transaction.

Versions:
    1. the SQLite file before versions were recorded (``tasks``, ``events`` without an id,
       ``task_aggregates``, ``api_keys``; no ``schema_version`` table).
    2. ``events.id``, the order of a task's events in both databases (SQLite's rowid before);
       ``schema_version``. PostgreSQL support starts here, so every step before it is SQLite's.
    3. ``tasks.result``: what a task's function returned (real work, :mod:`serve_app.entry_points`).
"""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import BigInteger, Column, Double, Index, Integer, MetaData, Table, Text

from cluster.vocabulary import FINAL

VERSION = 3

#: columns a task row has besides its JSON blobs; updates may set any of these
COLUMNS = (
    "status", "reason", "policy", "policy_version", "pool", "node", "tier", "share", "confidence",
    "queue_ms", "network_ms", "exec_ms", "latency_ms", "decision_ms", "cost", "score", "slo_met", "kind",
    "priority", "slo_ms", "accepted_at", "finished_at", "attempts",
)
JSON = ("task", "features", "decision", "result")
#: what a task stores of its real work (an entry point and its args, or a Python API function's name)
WORK_KEYS = ("args", "entry_point", "python_call")
#: keys of a record's stored task JSON that are not task fields (the router's, beside the task's own)
TASK_EXTRA_KEYS = ("pool", "inferred", "owner", "deadline_at", *WORK_KEYS)
#: the final statuses as named parameters, for ``status IN FINAL_IN`` with ``FINAL_ARGS``
FINAL_ARGS = {f"final{i}": s for i, s in enumerate(FINAL)}
FINAL_IN = "(" + ", ".join(f":{k}" for k in FINAL_ARGS) + ")"


class HistoryError(ValueError):
    """A bad store URL, a bad update (unknown status or field), or a database this code cannot use."""


#: text compared and sorted byte by byte in PostgreSQL too, as SQLite's BINARY collation does
Key = Text().with_variant(Text(collation="C"), "postgresql")
#: SQLite's INTEGER (a rowid alias as a primary key), PostgreSQL's BIGINT
Count = BigInteger().with_variant(Integer(), "sqlite")
_KEYS = ("status", "policy", "pool", "kind")
_INTS = ("slo_met", "priority", "attempts")


def _column_type(name: str) -> sa.types.TypeEngine:
    if name.endswith(("_ms", "_at")) or name in ("cost", "score", "confidence"):
        return Double()
    return Integer() if name in _INTS else Key if name in _KEYS else Text()


metadata = MetaData()

tasks = Table(
    "tasks", metadata,
    Column("task_id", Key, primary_key=True),
    *(Column(c, _column_type(c)) for c in COLUMNS),
    *(Column(c, Text) for c in JSON),
    Index("tasks_status", "status"), Index("tasks_accepted", "accepted_at"), Index("tasks_finished", "finished_at"),
)
events = Table(
    "events", metadata,
    Column("id", Count, primary_key=True, autoincrement=True),
    Column("task_id", Key, nullable=False), Column("at", Double, nullable=False),
    Column("status", Key, nullable=False), Column("detail", Text),
    Index("events_task", "task_id"),
)
task_aggregates = Table(
    "task_aggregates", metadata,
    *(Column(c, Key, primary_key=True) for c in ("day", "pool", "policy", "kind", "status")),
    Column("tasks", Count, nullable=False), Column("latency_n", Count, nullable=False),
    Column("latency_ms_sum", Double, nullable=False), Column("latency_ms_max", Double),
    Column("cost_sum", Double, nullable=False), Column("slo_n", Count, nullable=False),
    Column("slo_met", Count, nullable=False),
)
api_keys = Table(
    "api_keys", metadata,
    Column("name", Key, primary_key=True), Column("sha256", Text, nullable=False, unique=True),
    Column("rate_per_s", Double), Column("burst", Integer), Column("max_in_flight", Integer),
    Column("created_at", Double, nullable=False), Column("revoked_at", Double),
)
schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

#: SQL that takes a database from version k to k + 1, by k. Written out (not derived from the
#: tables above): a step must keep doing what it did when the tables change again.
STEPS: dict[int, tuple[str, ...]] = {
    1: (
        "DROP INDEX IF EXISTS events_task",
        "ALTER TABLE events RENAME TO events_v1",
        "CREATE TABLE events (id INTEGER NOT NULL PRIMARY KEY, task_id TEXT NOT NULL, at REAL NOT NULL, "
        "status TEXT NOT NULL, detail TEXT)",
        "INSERT INTO events (id, task_id, at, status, detail) SELECT rowid, task_id, at, status, detail "
        "FROM events_v1",
        "DROP TABLE events_v1",
        "CREATE INDEX events_task ON events (task_id)",
        "CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at)",  # a file from before retention
    ),
    2: ("ALTER TABLE tasks ADD COLUMN result TEXT",),
}
#: any number: PostgreSQL's lock serialising the preparation of one database by several routers
_PREPARE_LOCK = 0x6869_7374  # "hist"


def version_of(conn: sa.Connection) -> int:
    """The schema version of the database: 0 when it holds no history yet."""
    names = set(sa.inspect(conn).get_table_names())
    if "schema_version" in names:
        return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)
    return 1 if "tasks" in names else 0


def prepare(engine: sa.Engine) -> int:
    """Create the schema in a new database or migrate an older one to :data:`VERSION`, in one
    transaction (so a failed step leaves the database as it was); the version found."""
    with engine.connect().execution_options(immediate=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PREPARE_LOCK})
        found = version_of(conn)
        if found > VERSION:
            raise HistoryError(f"the history database has schema version {found}, newer than this code's "
                               f"{VERSION}: run a newer orchestrator")
        for step in range(found, VERSION) if found else ():
            for sql in STEPS[step]:
                conn.exec_driver_sql(sql)
        metadata.create_all(conn)  # a new database; tables a step added; a key-only file's history tables
        if found < VERSION:
            conn.execute(schema_version.delete())
            conn.execute(schema_version.insert().values(version=VERSION))
    return found
