"""Tables as a person reads them: named columns, few digits, only what fits on a screen.

Plain pandas (no Streamlit) so the shaping is tested without a browser. The view shows
these through ``st.table``, which lays every row out in the page (no inner scroll)
and wraps text, so a table is cut neither at the bottom nor on the right.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Callable

import pandas as pd
from pandas.io.formats.style import Styler

#: summary columns as the view heads them (the CSV download keeps the raw names)
SUMMARY_NAMES = {"latency mean ms": "latency mean (ms)", "p50 ms": "p50 (ms)", "p99 ms": "p99 (ms)",
                 "cost total $": "cost total ($)", "cost per task $": "cost per task ($)",
                 "GPU alloc %": "GPU alloc %"}
#: node-health columns shown (the API's labels and Ray resource maps are left to the JSON)
NODE_COLUMNS = {"name": "node", "pool": "pool", "tier": "tier", "node_class": "class", "alive": "alive",
                "usable": "usable", "load": "load", "running": "running", "queued": "queued",
                "cpu_free_milli": "CPU free (milli)", "gpu_free_milli": "GPU free (milli)",
                "mig_free": "MIG free", "network_ms": "network (ms)", "draining": "draining", "problem": "problem"}
#: task-history columns shown
HISTORY_COLUMNS = {"accepted_at": "accepted (UTC)", "task_id": "task", "status": "status", "kind": "kind",
                   "priority": "priority", "policy": "policy", "pool": "pool", "node": "node", "share": "share",
                   "latency_ms": "latency (ms)", "slo_met": "SLO met", "cost": "cost ($)"}


def number(x: Any) -> str:
    """A figure with about four significant digits, thousands separated; a dash when missing."""
    if x is None or isinstance(x, str):
        return "–" if x is None else x
    if isinstance(x, bool):
        return "yes" if x else "no"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "–"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def styled(df: pd.DataFrame) -> Styler:
    """``df`` with its figures shortened by :func:`number` (numbers stay numbers, so they align right)."""
    return df.style.format(number).hide(axis="index")


def summary_view(table: pd.DataFrame) -> pd.DataFrame:
    """The summary table as shown: the result-set column only when more than one set is compared."""
    out = table.rename(columns=SUMMARY_NAMES)
    if "result set" in out and out["result set"].nunique() <= 1:
        out = out.drop(columns="result set")
    return out


def packing_view(df: pd.DataFrame) -> pd.DataFrame:
    """A packing result (policy rows, seed columns) with every column named: ``42`` becomes ``seed 42``."""
    names = {"median": "median %", "published": "published %", "diff": "median - published",
             "seconds": "seconds per replay"}
    out = df.rename(columns=lambda c: f"seed {c}" if str(c).strip().lstrip("-").isdigit() else names.get(c, c))
    return out.rename_axis("policy").reset_index()


def _short(v: Any) -> Any:
    if isinstance(v, dict):
        return ", ".join(f"{k} ×{n}" for k, n in v.items()) or "–"
    if isinstance(v, (list, tuple)):
        return "–".join(number(x) for x in v)
    return v


def node_view(items: list[dict]) -> pd.DataFrame:
    """Node health, one row per node, with the columns of :data:`NODE_COLUMNS` as short text."""
    df = pd.DataFrame(items)
    cols = [c for c in NODE_COLUMNS if c in df]
    return df[cols].map(_short).rename(columns=NODE_COLUMNS)


def pool_health(items: list[dict]) -> pd.DataFrame:
    """Per pool: nodes, alive, usable, mean load, tasks running and queued (a big cluster's one screen), and the
    standby slots it may scale into that are not started (not counted as nodes: they are not an outage)."""
    df = pd.DataFrame(items)
    if df.empty:
        return df
    standby = df["standby"].fillna(False).astype(bool) if "standby" in df else pd.Series(False, index=df.index)
    idle_slot = standby & ~df["alive"].astype(bool)
    g = df[~idle_slot].groupby("pool", sort=True)
    slots = idle_slot.groupby(df["pool"], sort=True).sum()
    return pd.DataFrame({"nodes": g.size(), "alive": g["alive"].sum(), "usable": g["usable"].sum(),
                         "mean load": g["load"].mean(), "running": g["running"].sum(),
                         "queued": g["queued"].sum(), "standby slots": slots}).fillna(0).reset_index()


def when(ts: Any) -> str:
    """Unix seconds as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "–"


def history_view(rows: pd.DataFrame) -> pd.DataFrame:
    """Task history with the columns of :data:`HISTORY_COLUMNS` (times readable)."""
    cols = [c for c in HISTORY_COLUMNS if c in rows]
    out = rows[cols].copy()
    if "accepted_at" in out:
        out["accepted_at"] = out["accepted_at"].map(when)
    return out.rename(columns=HISTORY_COLUMNS)


def fetch_all(page: Callable[[int, int], dict], limit: int = 1000, cap: int = 100_000) -> tuple[list[dict], int]:
    """Every row a paged endpoint holds (``page(offset, limit)`` answers ``items``, ``total`` and
    ``next_offset``), newest first, up to ``cap`` rows; returns (rows, total). Tasks accepted while
    it pages shift the offsets: a row seen twice is kept once (by ``task_id``)."""
    rows: list[dict] = []
    seen: set[str] = set()
    offset: int | None = 0
    total = 0
    while offset is not None and len(rows) < cap:
        got = page(offset, min(limit, cap - len(rows)))
        items = got.get("items", [])
        fresh = [r for r in items if r.get("task_id") not in seen]
        seen.update(r.get("task_id") for r in fresh)
        rows += fresh
        total = int(got.get("total", len(rows)))
        offset = got.get("next_offset")
        if not items:
            break
    return rows, total


def cost_by_pool_policy(rows: pd.DataFrame) -> pd.DataFrame:
    """Cost per (pool, policy): total, per task, and the tasks counted; unplaced tasks under "(none)"."""
    cols = ["pool", "policy", "tasks", "cost total ($)", "cost per task ($)"]
    if rows.empty or "cost" not in rows:
        return pd.DataFrame(columns=cols)
    df = rows.assign(pool=rows.get("pool", pd.Series(index=rows.index, dtype=object)).fillna("(none)"),
                     policy=rows["policy"].fillna("(none)"), cost=pd.to_numeric(rows["cost"], errors="coerce"))
    g = df.groupby(["pool", "policy"])["cost"]
    out = pd.DataFrame({"tasks": g.size(), "cost total ($)": g.sum(), "cost per task ($)": g.mean()})
    return out.reset_index()[cols]


def cost_window(rows: list[dict], total: int) -> str:
    """The sentence saying which tasks a cost table covers."""
    if not rows:
        return "No tasks in the router's history yet."
    times = [r.get("accepted_at") for r in rows if r.get("accepted_at") is not None]
    span = f", accepted {when(min(times))} to {when(max(times))} UTC" if times else ""
    if len(rows) >= total:
        return f"Covers all {total:,} tasks in the router's history{span}."
    return f"Covers the newest {len(rows):,} of {total:,} tasks in the router's history{span}."
