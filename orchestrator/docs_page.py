"""Generated Markdown pages for ``docs/``: a dated header naming the command, and tables.

Every measurement in ``docs/`` is written by the command that measured it, never
typed by hand, so a reader can tell when, where and how each figure was made and
rerun it. The benchmarks, the packing reproduction and sim-vs-real all start
their page with :func:`header` and write their tables with :func:`table`.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def command_line(prog: str, argv: Sequence[str] | None = None) -> str:
    """The command as a user would retype it: ``prog`` then ``argv`` (default: this process's arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return " ".join([prog, *(shlex.quote(a) for a in argv)])


def revision() -> str:
    """The checkout's short commit, ``+changes`` when its code differs from it (Markdown aside); else ``unknown``."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)*.md")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+changes" if dirty else "")


def header(title: str, command: str, *, now: _dt.datetime | None = None) -> list[str]:
    """A page's first lines: the title, then when, where and by which command it was generated."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    host = (f"{os.cpu_count()} CPUs (nproc), {platform.machine()}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")
    return [f"# {title}", "",
            f"Generated {now.strftime('%Y-%m-%d %H:%M UTC')} by `{command}` on revision {revision()}.", "",
            f"Host: {host}.", "",
            "Do not edit by hand: rerun the command to refresh this page.", ""]


def _cell(x: object, floatfmt: str) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (float, np.floating)):
        return "" if not np.isfinite(x) else floatfmt.format(x)
    return str(x).replace("|", "\\|")


def table(df: pd.DataFrame, floatfmt: str = "{:,.3f}") -> list[str]:
    """``df`` (index included) as a Markdown table; floats through ``floatfmt``, NaN as an empty cell."""
    names = [str(n) for n in df.index.names if n is not None] or [""]
    cols = names + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        keys = idx if isinstance(idx, tuple) else (idx,)
        lines.append("| " + " | ".join([_cell(k, floatfmt) for k in keys] + [_cell(v, floatfmt) for v in row])
                     + " |")
    return lines


def write(path: str | Path, lines: Sequence[str]) -> Path:
    """Write the page (creating its folder) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    print(f"page written to {path}")
    return path
