"""Where the files the package ships live: ``configs/`` and the shipped learned policies.

A checkout (or an editable install) reads them in place, at the repository root. A built
wheel carries copies under ``cluster/_data`` (``setup.py`` puts them there), so
``--cluster configs/cluster/local.yaml`` names the same file from any directory. A path
that exists as given always wins: a user's own config is never shadowed by a shipped one.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "_data"
#: running from an installed wheel (data under ``cluster/_data``), not from a checkout
INSTALLED = _PACKAGED.is_dir()
#: the folder holding ``configs/`` and ``artifacts/policies/`` (the shipped models)
DATA_ROOT = _PACKAGED if INSTALLED else Path(__file__).resolve().parent.parent
#: the shipped learned policies (a registry root: ``<kind>/<version>/``)
SHIPPED_MODELS = DATA_ROOT / "artifacts" / "policies"


_SHIPPED_LINE = re.compile(r"^!artifacts/policies/([a-z][a-z0-9_-]*/[0-9]+)/?$")


def shipped_refs(repo_root: Path) -> list[str]:
    """``kind/version`` of each shipped model: the checkout's ``.gitignore`` re-include lines
    (``!artifacts/policies/rl/2``), the one list of what git tracks, Ray job uploads carry, the
    wheel (``setup.py``) and the image (``cluster k8s --kind dockerfile``) ship."""
    lines = (repo_root / ".gitignore").read_text().splitlines()
    return [m.group(1) for m in map(_SHIPPED_LINE.match, (ln.strip() for ln in lines)) if m]


def data_path(path: str | os.PathLike) -> Path:
    """``path`` as given when it is absolute or exists, else the shipped file of that name
    (``configs/...``); a name neither place has comes back as given, for the error to name."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    shipped = DATA_ROOT / p
    return shipped if shipped.exists() else p


def work_root() -> Path:
    """Where relative output paths (``results/``, ``artifacts/policies``) land: the checkout,
    or the working directory of an installed package (never inside site-packages)."""
    return Path.cwd() if INSTALLED else DATA_ROOT


def work_path(path: str | os.PathLike) -> Path:
    """An output path: absolute as given, else under :func:`work_root`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else work_root() / p
