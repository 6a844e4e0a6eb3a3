"""The forest's labelled training rows: one :class:`Rollout` per labelling pass, saved and loaded.

Labelling is nearly all of a ``train rf`` run (the rollout teacher rolls every candidate
forward; the fit takes seconds), so ``train rf --save-rows`` keeps the pooled rows, each
decision tagged with its episode and DAgger round, and ``train rf --rows`` fits a forest on
saved rows (several runs pooled, other tree settings, rows of some cluster variants weighted
more) in minutes instead of an hour.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from cluster.config import UsageError
from scheduler.features import CANDIDATE_SCHEMA_VERSION, N_CANDIDATE_FEATURES

#: the layout of a rows file (bumped when its arrays change)
ROWS_FORMAT = "rf-rows-1"
_ARRAYS = ("X", "y", "group", "regret", "teacher", "taken", "reference", "episode", "round")


@dataclass
class Rollout:
    """Per candidate row: features, regret label (log1p), decision index; per decision: the
    teacher's choice, the driver's, the reference heuristic's (row positions within it), the
    raw regret of every candidate, the episode it came from (``workload@variant``, the plain
    workload name on the cluster itself) and the DAgger round that labelled it."""

    X: np.ndarray
    y: np.ndarray
    group: np.ndarray
    regret: np.ndarray
    teacher: np.ndarray
    taken: np.ndarray
    reference: np.ndarray
    workload: str = ""
    episode: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    round: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        n = len(self.teacher)
        if not len(self.episode):
            self.episode = np.full(n, self.workload)
        if not len(self.round):
            self.round = np.zeros(n, dtype=np.int64)
        rows, per = {len(self.X), len(self.y), len(self.group), len(self.regret)}, \
            {n, len(self.taken), len(self.reference), len(self.episode), len(self.round)}
        if len(rows) > 1 or len(per) > 1:
            raise ValueError(f"rows of unequal lengths: {sorted(rows)} per candidate, {sorted(per)} per decision")
        if len(self.group) and (self.group[0] != 0 or self.group[-1] != n - 1
                                or not np.isin(np.diff(self.group), (0, 1)).all()):
            raise ValueError(f"the decision index must run 0 .. {n - 1} in order")

    @property
    def decisions(self) -> int:
        return len(self.teacher)

    @staticmethod
    def concat(parts: Sequence["Rollout"]) -> "Rollout":
        offs = np.cumsum([0] + [p.decisions for p in parts])
        return Rollout(np.concatenate([p.X for p in parts]), np.concatenate([p.y for p in parts]),
                       np.concatenate([p.group + o for p, o in zip(parts, offs)]),
                       np.concatenate([p.regret for p in parts]), np.concatenate([p.teacher for p in parts]),
                       np.concatenate([p.taken for p in parts]), np.concatenate([p.reference for p in parts]),
                       episode=np.concatenate([p.episode for p in parts]),
                       round=np.concatenate([p.round for p in parts]))

    def regret_of(self, choice: np.ndarray) -> np.ndarray:
        """Raw regret (objective units) of a choice per decision (a row position within it)."""
        starts = np.searchsorted(self.group, np.arange(self.decisions))
        return self.regret[starts + choice]

    def variants(self) -> np.ndarray:
        """Per decision, the cluster variant of its episode (``x1``: the cluster itself)."""
        return np.array([e.partition("@")[2] or "x1" for e in self.episode.tolist()], dtype=str)

    def row_weights(self, weights: dict[str, float]) -> np.ndarray | None:
        """Per row, the weight of its decision's variant (1 where ``weights`` names none); None when
        ``weights`` is empty. Raises ``UsageError`` for a variant the rows do not hold."""
        if not weights:
            return None
        per = self.variants()
        missing = sorted(set(weights) - set(per.tolist()))
        if missing:
            raise UsageError(f"--variant-weights: no training rows of {missing} "
                             f"(the rows' variants: {sorted(set(per.tolist()))})")
        w = np.array([weights.get(v, 1.0) for v in per.tolist()])
        return w[self.group]


def check_writable(path: str | os.PathLike) -> None:
    """``UsageError`` unless a rows file can be written at ``path`` (its folder is created)."""
    p = Path(path)
    try:
        if p.is_dir():
            raise UsageError(f"--save-rows: {p} is a folder; name a file")
        p.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(p.parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
            raise UsageError(f"--save-rows: {p}: not writable")
    except OSError as e:
        raise UsageError(f"--save-rows: {p}: {e.strerror or e}") from None


def save_rows(path: str | os.PathLike, data: Rollout, meta: dict) -> Path:
    """Write ``data`` and ``meta`` (the run's command, config and rounds) to a compressed .npz, whole
    or not at all (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {"format": ROWS_FORMAT, "feature_schema": CANDIDATE_SCHEMA_VERSION, **meta}
    arrays = {name: getattr(data, name) for name in _ARRAYS}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:  # savez would add ".npz" to a name without it
            np.savez_compressed(fh, meta=np.array(json.dumps(head)), **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_rows(paths: Sequence[str | os.PathLike]) -> tuple[Rollout, list[dict]]:
    """The rows of every file pooled (in order), and each file's meta; ``UsageError`` names the file
    that is missing, unreadable, or of another format or feature schema."""
    parts, metas = [], []
    if len({os.path.realpath(p) for p in paths}) < len(paths):
        raise UsageError(f"--rows: a file is given twice ({', '.join(map(str, paths))}): its rows would count double")
    for p in paths:
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {name: z[name] for name in _ARRAYS}
            if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
                raise ValueError("its meta is not a mapping")
        except FileNotFoundError:
            raise UsageError(f"--rows: {p}: no such file") from None
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise UsageError(f"--rows: {p}: not a rows file written by train rf --save-rows ({e})") from None
        if meta.get("format") != ROWS_FORMAT:
            raise UsageError(f"--rows: {p}: format {meta.get('format')!r}, this build reads {ROWS_FORMAT!r}")
        if meta.get("feature_schema") != CANDIDATE_SCHEMA_VERSION or arrays["X"].shape[1:] != (N_CANDIDATE_FEATURES,):
            raise UsageError(f"--rows: {p}: feature schema {meta.get('feature_schema')!r} with "
                             f"{arrays['X'].shape[1:]} columns; this build's is {CANDIDATE_SCHEMA_VERSION!r} "
                             f"with {N_CANDIDATE_FEATURES}: label again")
        try:
            parts.append(Rollout(**arrays))
        except (ValueError, TypeError) as e:
            raise UsageError(f"--rows: {p}: {e}") from None
        metas.append(meta)
    if not parts:
        raise UsageError("--rows: no file given")
    return Rollout.concat(parts), metas


def parse_weights(items: Sequence[str]) -> dict[str, float]:
    """``["x1=3", "no:gpu-mig=2"]`` -> ``{"x1": 3.0, "no:gpu-mig": 2.0}``; ``UsageError`` on a bad item."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.strip().rpartition("=")
        try:
            w = float(value)
        except ValueError:
            w = float("nan")
        if not sep or not name or not w > 0 or not np.isfinite(w):
            raise UsageError(f"--variant-weights: expected VARIANT=W with W > 0 (e.g. x1=3), got {item!r}")
        out[name.strip()] = w
    return out
