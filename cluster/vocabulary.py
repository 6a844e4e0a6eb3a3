"""Words every layer shares: task statuses, share kinds and the one text form of a GPU share.

In ``cluster/`` because it is the lowest layer: the simulator, the live replays, the
router, its history store and its HTTP client all import these instead of spelling
them out, so a status or a share reads the same in records CSVs, the history, the
API and the dashboard.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no import at run time: the router's HTTP client needs only these words
    from cluster.state import Share

#: how a task names real work: ``package.module:function``, identifiers only (no path, no attribute
#: after the colon); the router runs only those of its allow-list (serve_app.entry_points)
ENTRY_POINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def args_problem(args: object) -> str | None:
    """Why ``args`` cannot be a function's keyword arguments (a mapping of identifiers), or None."""
    if not isinstance(args, dict):
        return f"must be a JSON object of keyword arguments, got {type(args).__name__}"
    bad = [k for k in args if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        return f"keys must be Python identifiers (keyword arguments), got {bad[0]!r}"
    return None


#: a task's life cycle in the router: accepted -> placed -> running -> succeeded | failed,
#: rejected when no placement is feasible, or cancelled (by its owner, an admin or a deadline)
#: from any status before a final one
STATUSES = ("accepted", "placed", "running", "succeeded", "failed", "rejected", "cancelled")
#: statuses a task never leaves
FINAL = ("succeeded", "failed", "rejected", "cancelled")
#: a record's status for a task still queued or running when a run ended (a miss, charged its waiting)
UNFINISHED = "unfinished"
#: the statuses of a task's record (:class:`scheduler.record.TaskRecord`): the final ones, or unfinished
RECORD_STATUSES = (*FINAL, UNFINISHED)
#: the first element of a :data:`cluster.state.Share`
SHARE_KINDS = ("cpu", "slice", "whole", "mig")


@lru_cache(maxsize=None)  # a cluster has a handful of distinct shares (milli, counts, profiles)
def share_text(share: Share | None) -> str | None:
    """A share as records, the history and the metrics write it: ``cpu``, ``slice:250``
    (GPU milli, as a task's ``gpu_milli``), ``whole:2``, ``mig:1g.10gb``; None for no share.

    The kind is the text before the colon, so a column of these groups by kind with one split.
    """
    if share is None:
        return None
    kind, amount = share
    return kind if kind == "cpu" else f"{kind}:{amount}"
