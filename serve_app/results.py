"""Result sets for the comparison view: discover, load and reduce them to what is plotted.

A result set is a folder with a ``summary.json`` written by ``orchestrator simulate``
(or ``evaluate``, or a cluster replay): per policy ``records_<policy>.csv`` and
``timeline_<policy>.csv``. A packing run (``packing.csv``) is a result set too.
Everything here is plain pandas so it can be tested without a browser.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class ResultSet:
    """One run folder: its summaries and (lazily) its per-task records and timelines."""

    path: Path
    kind: str  # "simulation" | "replay" | "packing"
    meta: dict = field(default_factory=dict)
    summaries: dict[str, dict] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.kind})"

    @property
    def policies(self) -> list[str]:
        return list(self.summaries)

    def records(self, policy: str) -> pd.DataFrame:
        p = self.path / f"records_{policy}.csv"
        return pd.read_csv(p) if p.is_file() else pd.DataFrame()

    def timeline(self, policy: str) -> pd.DataFrame:
        p = self.path / f"timeline_{policy}.csv"
        return pd.read_csv(p) if p.is_file() else pd.DataFrame()

    def packing(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "packing.csv", index_col=0)


def load_result_set(path: str | Path) -> ResultSet | None:
    """The result set in ``path``, or None if the folder holds none."""
    p = Path(path)
    if (p / "summary.json").is_file():
        try:
            data = json.loads((p / "summary.json").read_text())
        except json.JSONDecodeError:
            return None
        meta = data.get("meta", {})
        kind = meta.get("kind") or ("replay" if meta.get("replay") or "replay" in p.name else "simulation")
        return ResultSet(p, kind, meta, data.get("policies", {}))
    if (p / "packing.csv").is_file():
        return ResultSet(p, "packing")
    return None


def discover(root: str | Path, max_depth: int = 3) -> list[ResultSet]:
    """Every result set under ``root`` (newest first)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for marker in ("summary.json", "packing.csv"):
        for f in root.glob("**/" + marker):
            if len(f.relative_to(root).parts) <= max_depth + 1:
                rs = load_result_set(f.parent)
                if rs is not None and all(r.path != rs.path for r in found):
                    found.append(rs)
    return sorted(found, key=lambda r: r.path.stat().st_mtime, reverse=True)


def summary_table(sets: list[tuple[ResultSet, str]]) -> pd.DataFrame:
    """One row per (result set, policy): the figures users compare first."""
    rows = []
    for rs, pol in sets:
        s = rs.summaries[pol]
        lat = s.get("latency_ms", {})
        rows.append({
            "result set": rs.path.name, "policy": pol, "tasks": s.get("tasks"),
            "objective": s.get("objective_mean"), "latency mean ms": lat.get("mean"),
            "p50 ms": lat.get("p50"), "p99 ms": lat.get("p99"),
            "SLO miss %": 100 * s.get("slo_miss_rate", np.nan), "cost total $": s.get("cost_total"),
            "cost per task $": s.get("cost_per_task"), "rejected": s.get("rejected"),
            "failed": s.get("failed"), "GPU alloc %": 100 * s.get("gpu_alloc_ratio_mean", np.nan),
        })
    return pd.DataFrame(rows)


def latency_cdf(records: pd.DataFrame, points: int = 200) -> pd.DataFrame:
    """(latency_ms, fraction of tasks at or below it) for the succeeded tasks."""
    lat = np.sort(records.loc[records["status"] == "succeeded", "latency_ms"].to_numpy(dtype=float))
    if len(lat) == 0:
        return pd.DataFrame(columns=["latency_ms", "fraction"])
    idx = np.unique(np.linspace(0, len(lat) - 1, min(points, len(lat))).astype(int))
    return pd.DataFrame({"latency_ms": lat[idx], "fraction": (idx + 1) / len(lat)})


def slo_miss_by_priority(records: pd.DataFrame) -> pd.DataFrame:
    """SLO miss rate per priority (rejected and failed tasks count as misses)."""
    if records.empty:
        return pd.DataFrame(columns=["priority", "miss_rate", "tasks"])
    missed = ~records["slo_met"].astype(bool)
    g = missed.groupby(records["priority"])
    return pd.DataFrame({"miss_rate": g.mean(), "tasks": g.size()}).reset_index()


def placement_mix(records: pd.DataFrame) -> pd.DataFrame:
    """Share of succeeded tasks per (pool, share kind)."""
    done = records[records["status"] == "succeeded"]
    if done.empty:
        return pd.DataFrame(columns=["pool", "share", "fraction"])
    kind = done["share"].astype(str).str.split(":").str[0]
    mix = done.groupby([done["pool"], kind]).size() / len(done)
    return mix.rename("fraction").reset_index()


def sim_vs_real(sim: ResultSet, real: ResultSet) -> pd.DataFrame:
    """Relative error of each headline metric, for policies present in both sets."""
    rows = []
    for pol in sim.policies:
        if pol not in real.summaries:
            continue
        a, b = sim.summaries[pol], real.summaries[pol]
        for name, get in (("latency mean", lambda s: s["latency_ms"]["mean"]),
                          ("latency p99", lambda s: s["latency_ms"]["p99"]),
                          ("SLO miss rate", lambda s: s["slo_miss_rate"]),
                          ("cost total", lambda s: s["cost_total"])):
            try:
                x, y = float(get(a)), float(get(b))
            except (KeyError, TypeError, ValueError):
                continue
            rel = (y - x) / x if x else np.nan
            rows.append({"policy": pol, "metric": name, "simulated": x, "real": y, "relative error": rel})
    return pd.DataFrame(rows)
