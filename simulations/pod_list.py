"""The one reader of Alibaba ``openb_pod_list_*.csv`` files, for packing mode and the online replay.

Why one reader: the pod lists of cluster-trace-gpu-v2023 (alibaba/clusterdata) do not
all carry the same columns, and two parsers drifted apart on them. Upstream ships two
layouts (checked on files of every family in its ``csv/`` folder):

* full, 11 columns (``default``, ``gpushare*``, ``cpu*``, ``gpuspec*``):
  ``name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,
  creation_time,deletion_time,scheduled_time``;
* resources only, 5 columns (``multigpu*``): ``name,cpu_milli,memory_mib,num_gpu,gpu_milli``.

Columns are found by name (any order, extra columns ignored). Required (an empty
``name`` becomes ``pod-line-N``):
``name, cpu_milli, memory_mib, num_gpu, gpu_milli``; a file without one of them
raises :class:`ConfigError` naming the file and the column (the CLI exits 2).
Optional columns, and the default when the column is absent or its cell is
empty (or ``nan``, as pandas writes it):

* ``gpu_spec``: ``""``, no GPU model constraint (any model); ``"A|B"`` is A or B.
* ``qos``: ``Burstable`` (:data:`DEFAULT_QOS`), Kubernetes' class for a pod that
  states requests, and the middle of the online replay's classes (priority 5,
  neutral cost), so an unknown class neither jumps nor starves the queue.
* ``pod_phase``: ``""`` (unknown); neither mode reads it.
* ``creation_time``, ``deletion_time``, ``scheduled_time``: ``None``. Packing mode
  needs no times (pods arrive in shuffled order and never leave). The online replay
  needs all three columns (arrival, and ``deletion - scheduled`` as the run time) and
  refuses a file that lacks one with a :class:`ConfigError` that names it and points
  to packing mode; a row with an empty time cell (a ``Pending`` pod) is skipped there.

Cells are checked for every row: resources are non-negative integers, ``gpu_milli``
is per GPU so at most 1000, times are numbers; a bad cell names file, column and line.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from cluster.config import ConfigError

REQUIRED_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
TIME_COLUMNS = ("creation_time", "deletion_time", "scheduled_time")
OPTIONAL_COLUMNS = ("gpu_spec", "qos", "pod_phase", *TIME_COLUMNS)
DEFAULT_QOS = "Burstable"


@dataclass(frozen=True, slots=True)
class Pod:
    """One row of a pod list, defaults filled in; ``line`` is its line in the file (header = 1)."""

    name: str
    line: int
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_models: tuple[str, ...] = ()
    qos: str = DEFAULT_QOS
    pod_phase: str = ""
    creation_time: float | None = None
    deletion_time: float | None = None
    scheduled_time: float | None = None

    @property
    def gpu_share(self) -> tuple[int, int]:
        """``(gpu_milli, gpu_count)`` of the task: a fraction of one GPU, whole GPUs, or ``(0, 0)``.

        A share only exists for one GPU (``num_gpu == 1`` and ``gpu_milli < 1000``); with
        more GPUs ``gpu_milli`` is per device and each is taken whole.
        """
        if self.num_gpu == 1 and 0 < self.gpu_milli < 1000:
            return self.gpu_milli, 0
        return 0, self.num_gpu


@dataclass(frozen=True)
class PodList:
    """The pods of one file, in file order, and the columns that file has."""

    path: Path
    columns: tuple[str, ...]
    pods: tuple[Pod, ...]

    def require(self, columns: tuple[str, ...], purpose: str) -> None:
        """Raise :class:`ConfigError` naming the first of ``columns`` the file lacks and what needs it."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise ConfigError(self.path, missing[0],
                              f"missing column: {purpose} needs {', '.join(columns)}; this pod list has "
                              f"only {', '.join(self.columns)} (packing mode needs only {', '.join(REQUIRED_COLUMNS)})")


def _text(row: dict[str, str | None], col: str) -> str:
    """A cell stripped, ``""`` when absent, empty or pandas' ``nan``."""
    text = (row.get(col) or "").strip()
    return "" if text.lower() == "nan" else text


def _number(path: Path, line: int, row: dict[str, str | None], col: str) -> float | None:
    text = _text(row, col)
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(path, f"{col} (line {line})", f"must be a number, got {text!r}") from None
    if not math.isfinite(v):
        raise ConfigError(path, f"{col} (line {line})", f"must be a finite number, got {text!r}")
    return v


def _count(path: Path, line: int, row: dict[str, str | None], col: str) -> int:
    v = _number(path, line, row, col)
    if v is None or v != int(v) or v < 0:
        raise ConfigError(path, f"{col} (line {line})", f"must be a non-negative integer, got {row.get(col)!r}")
    return int(v)


def _pod(path: Path, line: int, row: dict[str, str | None]) -> Pod:
    gpu_milli = _count(path, line, row, "gpu_milli")
    if gpu_milli > 1000:
        raise ConfigError(path, f"gpu_milli (line {line})", f"is per GPU, must be <= 1000, got {gpu_milli}")
    return Pod(name=_text(row, "name") or f"pod-line-{line}", line=line,
               cpu_milli=_count(path, line, row, "cpu_milli"), memory_mib=_count(path, line, row, "memory_mib"),
               num_gpu=_count(path, line, row, "num_gpu"), gpu_milli=gpu_milli,
               gpu_models=tuple(m.strip() for m in _text(row, "gpu_spec").split("|") if m.strip()),
               qos=_text(row, "qos") or DEFAULT_QOS, pod_phase=_text(row, "pod_phase"),
               creation_time=_number(path, line, row, "creation_time"),
               deletion_time=_number(path, line, row, "deletion_time"),
               scheduled_time=_number(path, line, row, "scheduled_time"))


def read_pod_list(path: str | Path) -> PodList:
    """Read an ``openb_pod_list_*.csv`` of any upstream layout (see the module notes for defaults).

    Raises:
        ConfigError: no such file, a required column missing, or a bad cell (file, column, line).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, "<file>", "no such file")
    with p.open(newline="", encoding="utf-8-sig") as fh:  # a byte-order mark must not hide `name`
        reader = csv.DictReader(fh)
        columns = tuple(c.strip() for c in reader.fieldnames or ())
        reader.fieldnames = list(columns)
        for col in REQUIRED_COLUMNS:
            if col not in columns:
                raise ConfigError(p, col, f"missing required column of a pod list "
                                          f"(have: {', '.join(columns) or 'none'})")
        pods = tuple(_pod(p, line, row) for line, row in enumerate(reader, start=2))
    return PodList(p, columns, pods)
