"""The learning loop as the router sees it: calibration, shadow agreement, counterfactual, retrain, promotions.

Why one read-only view over several sources: each step of the loop is written by its own command
(``orchestrator calibrate``, ``counterfactual``, ``retrain`` into ``loop_dir``) or recorded by the
router itself (each decision's ``shadow``, the promotion log), and a reader judging a challenger wants
them side by side. A report not written yet is a sentence naming the command that writes it, never an
error: the loop is built a step at a time. The shadow's agreement is derived from the history's own
records with one bounded query (:meth:`~serve_app.history.HistoryStore.shadow_rows`), so it covers
whatever challengers decided in the window, including ones since replaced or promoted.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from cluster.package_data import work_path
from serve_app.history import HistoryStore

#: each report under ``loop_dir``: (its file, the command that writes it there)
REPORTS = {
    "calibration": ("calibration/report.json", "orchestrator calibrate --history URL --out {dir}/calibration"),
    "counterfactual": ("counterfactual/counterfactual.json",
                       "orchestrator counterfactual --history URL --policies CHAMPION,CHALLENGER "
                       "--out {dir}/counterfactual"),
    "retrain": ("retrain/retrain.json", "orchestrator retrain --history URL --out {dir}/retrain"),
}
#: the newest decisions with a shadow that one answer reads at most
MAX_SHADOW_ROWS = 20_000


class LoopViews:
    """The reports in ``folder`` and the shadow agreement of ``history`` (see the module docstring)."""

    def __init__(self, history: HistoryStore, folder: str | Path) -> None:
        self.history = history
        self.folder = Path(folder) if Path(folder).is_absolute() else work_path(folder)

    def document(self, policy: Mapping[str, Any], hours: float, now: float | None = None) -> dict[str, Any]:
        """``GET /v1/loop``: ``policy`` is the router's ``policy_info`` (champion, challenger, promotions)."""
        now = time.time() if now is None else now
        return {"folder": str(self.folder), "champion": policy["policy"], "challenger": policy.get("shadow"),
                "promotion": policy.get("promotion"), "shadow": self.shadow(now - hours * 3600.0, hours),
                **{name: self.report(name, now) for name in REPORTS}}

    def report(self, name: str, now: float | None = None) -> dict[str, Any]:
        """``{"report": the JSON or None, "path", "written_at", "note": why there is none}``."""
        rel, command = REPORTS[name]
        path = self.folder / rel
        out: dict[str, Any] = {"report": None, "path": str(path), "written_at": None, "note": None}
        try:
            text, written = path.read_text(), path.stat().st_mtime
        except FileNotFoundError:
            out["note"] = f"No {name} report in {self.folder}: `{command.format(dir=self.folder)}` writes one."
            return out
        except OSError as exc:
            out["note"] = f"The {name} report {path} cannot be read: {exc.strerror}."
            return out
        try:
            doc = json.loads(text)
        except ValueError as exc:
            out["note"] = f"The {name} report {path} is not JSON ({exc}); rerun the command that wrote it."
            return out
        if not isinstance(doc, dict):
            out["note"] = f"The {name} report {path} is not a report (a JSON {type(doc).__name__})."
            return out
        out.update(report=_masked(_finite(doc)), written_at=written)
        return out

    def shadow(self, since: float, hours: float) -> dict[str, Any]:
        """Per (champion, challenger) pair over the tasks accepted since ``since``: see :func:`agreement`."""
        rows = self.history.shadow_rows(since, MAX_SHADOW_ROWS + 1)
        truncated = len(rows) > MAX_SHADOW_ROWS
        rows = rows[:MAX_SHADOW_ROWS]
        return {"hours": hours, "since": since, "decisions_read": len(rows), "truncated": truncated,
                "first_accepted": min((r["accepted_at"] for r in rows), default=None), "pairs": agreement(rows)}


def agreement(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (champion, challenger), most decisions first: how often the challenger agreed, how often it
    failed, and on the tasks where both chose a node and they differed, the model's expected latency
    and objective score (lower is better) of each choice at decision time: the counterfactual of live
    traffic. Beside it, what the champion's choices measured (succeeded tasks: mean score, SLO met)."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        d = r.get("decision")
        sh = d.get("shadow") if isinstance(d, Mapping) else None
        if not isinstance(sh, Mapping) or not sh.get("policy"):
            continue
        a = acc.setdefault((str(r.get("policy") or d.get("policy")), str(sh["policy"])), {
            "decisions": 0, "agreements": 0, "errors": 0, "differ": 0, "champion_ms": 0.0, "challenger_ms": 0.0,
            "champion_score": 0.0, "challenger_score": 0.0, "challenger_better": 0, "measured": [], "met": []})
        a["decisions"] += 1
        if "error" in sh:
            a["errors"] += 1
        elif sh.get("agrees"):
            a["agreements"] += 1
        else:
            mine, theirs = d.get("expected"), sh.get("expected")
            if _scored(mine) and _scored(theirs):
                a["differ"] += 1
                a["champion_ms"] += mine["latency_ms"]
                a["challenger_ms"] += theirs["latency_ms"]
                a["champion_score"] += mine["score"]
                a["challenger_score"] += theirs["score"]
                a["challenger_better"] += theirs["score"] < mine["score"]
        if r.get("status") == "succeeded" and _number(r.get("score")):
            a["measured"].append(float(r["score"]))
        if r.get("status") == "succeeded" and r.get("slo_met") is not None:
            a["met"].append(bool(r["slo_met"]))
    out = []
    for (champion, challenger), a in sorted(acc.items(), key=lambda kv: (-kv[1]["decisions"], kv[0])):
        decided, n = a["decisions"] - a["errors"], a["differ"]
        out.append({
            "champion": champion, "challenger": challenger, "decisions": a["decisions"],
            "agreements": a["agreements"], "disagreements": decided - a["agreements"], "errors": a["errors"],
            "agreement_pct": round(100.0 * a["agreements"] / decided, 2) if decided else None,
            "compared": n, "challenger_better": a["challenger_better"],
            "champion_expected_ms": _mean(a["champion_ms"], n), "challenger_expected_ms": _mean(a["challenger_ms"], n),
            "champion_expected_score": _mean(a["champion_score"], n),
            "challenger_expected_score": _mean(a["challenger_score"], n),
            "champion_measured_score": _mean(sum(a["measured"]), len(a["measured"])),
            "champion_slo_met_pct": _mean(100.0 * sum(a["met"]), len(a["met"]), 2),
        })
    return out


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _scored(e: Any) -> bool:
    return isinstance(e, Mapping) and _number(e.get("latency_ms")) and _number(e.get("score"))


def _mean(total: float, n: int, digits: int = 4) -> float | None:
    return round(total / n, digits) if n else None


def _finite(x: Any) -> Any:
    """``x`` with NaN and infinities as None: JSON has neither, and a report may hold them (an empty interval)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _masked(doc: Any) -> Any:
    """``doc`` with every ``history`` URL's password shown as ``***`` (a report written before the commands masked
    it, or by hand, may hold one; the route needs no credential)."""
    from serve_app.history_sql import mask

    if isinstance(doc, dict):
        return {k: mask(v) if k == "history" and isinstance(v, str) else _masked(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_masked(v) for v in doc]
    return doc
