"""The build step pyproject.toml cannot say: copy the shipped data into the wheel.

``configs/`` and the shipped learned policies live at the repository root (the layout is
fixed), outside every package. A wheel carries copies under ``cluster/_data`` so an
installed ``orchestrator`` finds them from any directory (``cluster/package_data.py``).
The shipped models are the versions ``.gitignore`` re-includes (``!artifacts/policies/K/N``):
one list, which also decides what git tracks and what ``ray job submit --working-dir .``
uploads. An editable install reads everything in place and copies nothing.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cluster.package_data import shipped_refs  # noqa: E402 - the one parser of the shipped list


def _tracked(files: list[Path]) -> list[Path]:
    """In a git checkout, only the files git tracks (a local, uncommitted config stays out)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "configs", "artifacts/policies"], cwd=HERE,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # an sdist, or no git: what is there
        return files
    tracked = {HERE / p for p in out.decode().split("\0") if p}
    return [p for p in files if p in tracked]


def data_files() -> list[Path]:
    """Every file the wheel ships as data, relative to the repository root."""
    out = [p for p in (HERE / "configs").rglob("*") if p.is_file()]
    for ref in shipped_refs(HERE):
        out += [p for p in (HERE / "artifacts" / "policies" / ref).rglob("*") if p.is_file()]
    return [p.relative_to(HERE) for p in sorted(_tracked(out)) if "__pycache__" not in p.parts]


class BuildWithData(build_py):
    """``build_py`` that also copies the shipped data into ``cluster/_data``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "cluster" / "_data"
        for rel in data_files():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(HERE / rel, dest / rel)

    def get_source_files(self) -> list[str]:
        # so that an sdist carries the data too (and a wheel built from it has it)
        return [*super().get_source_files(), *map(str, data_files()), ".gitignore"]


setup(cmdclass={"build_py": BuildWithData})
