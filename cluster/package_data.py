"""Where the files the package ships live: ``configs/`` and the shipped learned policies.

A checkout (or an editable install) reads them in place, at the repository root. A built
wheel carries copies under ``cluster/_data`` (``setup.py`` puts them there), so
``--cluster configs/cluster/local.yaml`` names the same file from any directory. A path
that exists as given always wins: a user's own config is never shadowed by a shipped one.
"""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "_data"
#: running from an installed wheel (data under ``cluster/_data``), not from a checkout
INSTALLED = _PACKAGED.is_dir()
#: the folder holding ``configs/`` and ``artifacts/policies/`` (the shipped models)
DATA_ROOT = _PACKAGED if INSTALLED else Path(__file__).resolve().parent.parent
#: the shipped learned policies (a registry root: ``<kind>/<version>/``)
SHIPPED_MODELS = DATA_ROOT / "artifacts" / "policies"


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
