"""Bounded task history: trim old final tasks, keep their totals as daily aggregates.

The history would otherwise grow forever (about 1.5 MB a minute at 15 tasks/s).
Only final tasks (:data:`cluster.vocabulary.FINAL`) are ever trimmed: an unfinished
one is what a restarted router resumes. Before a task and its events are deleted it
is folded into ``task_aggregates`` (one row per UTC day of ``finished_at``, pool,
policy, kind and status), so totals over all time stay answerable after the rows go.

The SQL here runs on the history's one writer connection, a chunk per transaction,
so a trim never holds the writer (and the accepts queued behind it) for long. It is the
same on SQLite and PostgreSQL but for what the :class:`~serve_app.history_sql.Backend`
supplies (the UTC-day expression, SQLite's index hint, SQLite's vacuum, and PostgreSQL's
lock that lets one router at a time trim a database several share).
"""
from __future__ import annotations

import logging
import math
import sqlite3
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serve_app.history_schema import FINAL_ARGS, FINAL_IN

if TYPE_CHECKING:
    from serve_app.history_sql import Backend

log = logging.getLogger("serve_app")

#: the grouping of an aggregate row; a missing pool, policy or kind is stored as ''
GROUP = ("day", "pool", "policy", "kind", "status")
#: the sums of an aggregate row
SUMS = ("tasks", "latency_n", "latency_ms_sum", "latency_ms_max", "cost_sum", "slo_n", "slo_met")

_FOLD = """
INSERT INTO task_aggregates (day, pool, policy, kind, status, tasks, latency_n, latency_ms_sum, latency_ms_max,
                             cost_sum, slo_n, slo_met)
SELECT {day}, COALESCE(pool, ''), COALESCE(policy, ''),
       COALESCE(kind, ''), status, COUNT(*), COUNT(latency_ms), COALESCE(SUM(latency_ms), 0), MAX(latency_ms),
       COALESCE(SUM(cost), 0), COUNT(slo_met), COUNT(CASE WHEN slo_met = 1 THEN 1 END)
FROM tasks WHERE task_id IN (SELECT task_id FROM trim_ids) GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (day, pool, policy, kind, status) DO UPDATE SET
    tasks = task_aggregates.tasks + excluded.tasks, latency_n = task_aggregates.latency_n + excluded.latency_n,
    latency_ms_sum = task_aggregates.latency_ms_sum + excluded.latency_ms_sum,
    latency_ms_max = CASE WHEN task_aggregates.latency_ms_max IS NULL
                               OR excluded.latency_ms_max > task_aggregates.latency_ms_max
                          THEN excluded.latency_ms_max ELSE task_aggregates.latency_ms_max END,
    cost_sum = task_aggregates.cost_sum + excluded.cost_sum, slo_n = task_aggregates.slo_n + excluded.slo_n,
    slo_met = task_aggregates.slo_met + excluded.slo_met
"""
_DAY_OF = "COALESCE(finished_at, accepted_at, 0)"


@dataclass(frozen=True)
class Retention:
    """How much finished history to keep. The default keeps everything (no trimming).

    Sizing: a finished task takes 1.2-1.7 KB of file with its events (1,170 bytes in
    ``python -m benchmarks history``; 1.5 MB a minute at 15 tasks/s in the router), so
    ``Retention(max_age_s=30 * 86400, max_rows=500_000)`` bounds the file near 0.6-0.9 GB:
    the row bound binds under load (it is nine hours at 15 tasks/s), the age bound when quiet.

    Attributes:
        max_age_s: trim final tasks that finished more than this many seconds ago; None: no age bound.
        max_rows: keep at most this many final tasks (the newest by ``finished_at``); None: no count
            bound. Unfinished tasks never count and are never trimmed.
        every_s: how often the writer trims (only when a bound is set); the store's ``trim()`` also
            trims on demand.
        chunk: most tasks folded and deleted per transaction: a thousand took 5 ms of writer
            time here on a small file (``python -m benchmarks history``), 10 ms on a 600,000-task
            one, during which accepts queue (and then share one commit).
    """

    max_age_s: float | None = None
    max_rows: int | None = None
    every_s: float = 60.0
    chunk: int = 1000

    def __post_init__(self) -> None:
        if self.max_age_s is not None and not self.max_age_s > 0:
            raise ValueError(f"retention max_age_s must be > 0 or None, not {self.max_age_s!r}")
        if self.max_rows is not None and (isinstance(self.max_rows, bool) or self.max_rows < 0):
            raise ValueError(f"retention max_rows must be >= 0 or None, not {self.max_rows!r}")
        if not (self.every_s > 0 and math.isfinite(self.every_s)):
            raise ValueError(f"retention every_s must be a positive number of seconds, not {self.every_s!r}")
        if self.chunk < 1:
            raise ValueError(f"retention chunk must be >= 1, not {self.chunk!r}")

    @property
    def bounded(self) -> bool:
        """Whether there is anything to trim by."""
        return self.max_age_s is not None or self.max_rows is not None


def count_final(db: Backend, conn: Any) -> int:
    """How many final tasks the history holds: a scan of the status index (40 ms for 600,000
    here), so once per trimming pass, not once per chunk."""
    with db.transaction(conn):
        return db.run(conn, f"SELECT COUNT(*) FROM tasks WHERE status IN {FINAL_IN}", FINAL_ARGS).fetchone()[0]


def trim_chunk(db: Backend, conn: Any, retention: Retention, final_rows: int, now: float | None = None) -> int:
    """Fold and delete up to ``retention.chunk`` final tasks beyond the bounds, in one
    transaction; the number deleted. ``final_rows``: :func:`count_final` less what this pass
    deleted so far. Fewer than a chunk deleted means the history is within its bounds."""
    now = time.time() if now is None else now
    # SQLite's hint (db.by_finished): walk finished_at's index oldest first and stop at the chunk,
    # where its planner would pick the status index and sort every final task for each chunk
    pick = f"INSERT INTO trim_ids SELECT task_id FROM tasks{db.by_finished} WHERE status IN {FINAL_IN}"
    with db.transaction(conn):
        db.run(conn, "CREATE TEMP TABLE IF NOT EXISTS trim_ids (task_id TEXT PRIMARY KEY)")
        db.run(conn, "DELETE FROM trim_ids")
        left = retention.chunk
        if retention.max_age_s is not None:
            left -= db.run(conn, f"{pick} AND finished_at < :cut ORDER BY finished_at LIMIT :n",
                           {**FINAL_ARGS, "cut": now - retention.max_age_s, "n": left}).rowcount
        over = final_rows - (retention.chunk - left) - (retention.max_rows or 0)  # those picked by age go too
        if retention.max_rows is not None and left > 0 and over > 0:
            db.run(conn, f"{pick} AND task_id NOT IN (SELECT task_id FROM trim_ids) ORDER BY finished_at LIMIT :n",
                   {**FINAL_ARGS, "n": min(left, over)})
        n = db.run(conn, "SELECT COUNT(*) FROM trim_ids").fetchone()[0]
        if n:
            db.run(conn, _FOLD.format(day=db.day.format(_DAY_OF)))
            db.run(conn, "DELETE FROM events WHERE task_id IN (SELECT task_id FROM trim_ids)")
            db.run(conn, "DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM trim_ids)")
        return n


def vacuum_step(conn: sqlite3.Connection, pages: int = 2000) -> int:
    """Hand up to ``pages`` free pages back to the file system when more than a quarter of the
    file is free (a file made with ``auto_vacuum=INCREMENTAL`` only); the pages freed.

    In steady state the pages a trim frees are reused by the next inserts and the file
    stays flat without this; it shrinks the file after a bound was tightened.
    """
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    total = conn.execute("PRAGMA page_count").fetchone()[0]
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2 or free * 4 <= total:
        return 0
    # executescript steps the pragma to its end; execute() would free one page (it yields a row per page)
    conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
    return free - conn.execute("PRAGMA freelist_count").fetchone()[0]


def read_aggregates(db: Backend, **filters: str | None) -> list[dict]:
    """Aggregate rows matching ``filters`` (equality on any of :data:`GROUP`), oldest day first;
    '' (a missing pool, policy or kind) reads back as None."""
    bad = set(filters) - set(GROUP)
    if bad:
        raise ValueError(f"unknown aggregate filter(s) {sorted(bad)}: use {', '.join(GROUP)}")
    args = {k: v for k, v in filters.items() if v is not None}
    where = (" WHERE " + " AND ".join(f"{k} = :{k}" for k in args)) if args else ""
    rows = db.rows(f"SELECT {', '.join(GROUP + SUMS)} FROM task_aggregates{where} ORDER BY {', '.join(GROUP)}", args)
    return [{**{k: r[k] for k in GROUP + SUMS}, **{k: r[k] or None for k in GROUP[1:4]}} for r in rows]


class TrimSchedule:
    """The history writer's trimming schedule: a pass every ``every_s`` (or on demand), one chunk per step."""

    def __init__(self, retention: Retention, db: Backend) -> None:
        self.retention = retention
        self.db = db
        self.waiters: list[Future] = []
        self.removed = 0
        self.final_rows = 0  # final tasks left, counted at the start of a pass
        self.active = False
        self.due = self._next()

    def _next(self) -> float:
        return time.monotonic() + self.retention.every_s if self.retention.bounded else math.inf

    def wait(self) -> float | None:
        """How long the writer may block on its queue: 0 mid-pass, None when no pass is ever due."""
        if self.active or self.waiters:
            return 0.0
        return None if self.due == math.inf else max(0.0, self.due - time.monotonic())

    def step(self, conn: Any) -> None:
        """Run one chunk if a pass is on or due; end the pass when a chunk comes back short."""
        if not (self.active or self.waiters or time.monotonic() >= self.due):
            return
        try:
            if not self.active:
                if not self.db.claim_trim(conn):  # another router is trimming this database: its pass does it
                    self.finish()
                    return
                self.active = True
                if self.retention.max_rows is not None:
                    self.final_rows = count_final(self.db, conn)
            n = trim_chunk(self.db, conn, self.retention, self.final_rows) if self.retention.bounded else 0
            self.removed += n
            self.final_rows -= n
            if n < self.retention.chunk:
                self.db.end_trim(conn, done=True)
                self.finish()
        except Exception as exc:  # the writer goes on; the next pass tries again
            log.exception("trimming the task history failed")
            try:
                self.db.end_trim(conn, done=False)
            except Exception:  # noqa: BLE001 - a lost connection took the claim with it
                log.debug("ending a failed trimming pass failed too", exc_info=True)
            self.finish(exc)

    def finish(self, exc: BaseException | None = None) -> None:
        """End the pass: settle whoever asked for it and schedule the next."""
        if self.removed:
            log.info("task history: %d final tasks folded into aggregates and deleted", self.removed)
        waiters, removed = self.waiters, self.removed
        self.waiters, self.removed, self.active, self.due = [], 0, False, self._next()
        for fut in waiters:
            if exc is None:
                fut.set_result(removed)
            else:
                fut.set_exception(exc)
