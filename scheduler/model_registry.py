"""Versioned on-disk registry of trained placement models (RandomForest, RL).

Layout: ``<root>/<kind>/<version>/`` holding the model file(s) and ``meta.json``;
versions are 1, 2, 3 ... and ``"latest"`` is the highest. The root is, in order:
the ``root`` argument, the ``ORCH_REGISTRY`` environment variable, then
``artifacts/policies`` (in the checkout, or the working directory of an installed package).
With neither argument nor variable, reads also see the shipped models
(:data:`cluster.package_data.SHIPPED_MODELS`, the checkout's own folder or the wheel's copy),
and a new version is numbered above them, so ``rf:1`` names one model wherever it is read.

Every artifact records the feature schema it was trained on
(:data:`scheduler.features.SCHEMA_VERSION` and the feature names), so a model
trained on another feature layout is refused at load time (:func:`check_schema`)
instead of silently mis-reading its inputs.

A version is written into a hidden temporary folder and renamed into place once
complete (``meta.json`` last), so a reader never sees half an artifact and two
concurrent trainings never get the same number.

Typical use::

    path = save("rf", {"forest.npz": lambda p: forest.save(p)},
                {"config": {...}, "metrics": {...}, "seed": 0})
    model = load("rf", "latest")          # schema checked; model.path / model.meta
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from cluster.package_data import SHIPPED_MODELS, work_path
from scheduler.features import (CANDIDATE_FEATURE_NAMES, CANDIDATE_SCHEMA_VERSION, FEATURE_NAMES,
                                SCHEMA_VERSION)

REGISTRY_ENV = "ORCH_REGISTRY"
#: where models are read and written by default (in a checkout: where the shipped ones are too)
DEFAULT_ROOT = work_path("artifacts/policies")
META_FILE = "meta.json"
#: training command per kind, named in "no model" and "retrain" errors
TRAIN_COMMANDS = {"rf": "orchestrator train rf", "rl": "orchestrator train rl"}
#: kinds whose models read another feature layout than :func:`scheduler.features.feature_vector`'s:
#: kind -> (schema version, feature names); the rf scores candidates (per task-and-node rows)
KIND_SCHEMAS = {"rf": (CANDIDATE_SCHEMA_VERSION, CANDIDATE_FEATURE_NAMES)}

_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: A file to write: bytes, text, or a callable that writes the file at the given path.
Writer = Union[bytes, str, Callable[[Path], Any]]
Version = Union[int, str]


class RegistryError(Exception):
    """Base class of registry errors (bad kind or version, unreadable artifact)."""


class ModelNotFoundError(RegistryError, FileNotFoundError):
    """No model of that kind (or that version) in the registry."""


class SchemaMismatchError(RegistryError):
    """The model was trained on another feature schema than this build computes."""


@dataclass(frozen=True)
class Artifact:
    """A resolved registry entry: its folder and its metadata."""

    kind: str
    version: int
    path: Path
    meta: dict

    @property
    def ref(self) -> str:
        """``kind:version``, the name ``make_policy`` accepts."""
        return f"{self.kind}:{self.version}"

    def file(self, name: str) -> Path:
        """Path of one of the artifact's files; a clear error when it is missing."""
        p = self.path / name
        if not p.is_file():
            raise RegistryError(f"model {self.ref} at {self.path} has no {name!r} "
                                f"(files: {', '.join(sorted(f.name for f in self.path.iterdir()))})")
        return p


def registry_root(root: str | os.PathLike | None = None) -> Path:
    """The registry root: ``root``, else ``$ORCH_REGISTRY``, else ``artifacts/policies`` (:data:`DEFAULT_ROOT`)."""
    if root is not None:
        return Path(root)
    env = os.environ.get(REGISTRY_ENV)
    return Path(env) if env else work_path("artifacts/policies")


def _roots(root: str | os.PathLike | None) -> list[Path]:
    """Where reads look, in order: the root, then the shipped models unless a root was named."""
    r = registry_root(root)
    default = work_path("artifacts/policies").resolve()
    named = (root is not None and r.resolve() != default) or os.environ.get(REGISTRY_ENV)
    if named or r.resolve() == SHIPPED_MODELS.resolve():
        return [r]
    return [r, SHIPPED_MODELS]


def _check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND_RE.match(kind):
        raise RegistryError(f"bad model kind {kind!r}: lower-case letters, digits, '-' or '_' (e.g. 'rf', 'rl')")
    return kind


def _parse_version(version: Version) -> int | None:
    """``None`` for latest, else a positive int."""
    if isinstance(version, str):
        v = version.strip().lower()
        if v in ("latest", ""):
            return None
        v = v[1:] if v.startswith("v") else v
        if not v.isdigit():
            raise RegistryError(f"bad model version {version!r}: 'latest' or a positive integer")
        version = int(v)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryError(f"bad model version {version!r}: 'latest' or a positive integer")
    return version


def _missing(kind: str, root: Path, what: str = "") -> ModelNotFoundError:
    cmd = TRAIN_COMMANDS.get(kind, f"orchestrator train {kind}")
    return ModelNotFoundError(f"no {kind} model{what} in {root}: run {cmd}"
                              f" (or point {REGISTRY_ENV} at a registry that has one)")


def _complete(base: Path) -> dict[int, Path]:
    if not base.is_dir():
        return {}
    return {int(p.name): p for p in base.iterdir() if p.name.isdigit() and (p / META_FILE).is_file()}


def _found(kind: str, root: str | os.PathLike | None) -> dict[int, Path]:
    """version -> folder over :func:`_roots` (the first root holding a version wins)."""
    _check_kind(kind)
    out: dict[int, Path] = {}
    for r in reversed(_roots(root)):
        out.update(_complete(r / kind))
    return out


def versions(kind: str, root: str | os.PathLike | None = None) -> list[int]:
    """Complete versions of ``kind`` (those with a ``meta.json``), ascending."""
    return sorted(_found(kind, root))


def resolve(kind: str, version: Version = "latest", root: str | os.PathLike | None = None) -> Path:
    """Folder of ``kind:version`` (``"latest"`` = highest); :class:`ModelNotFoundError` if absent."""
    r = registry_root(root)
    v = _parse_version(version)
    found = _found(kind, root)
    if v is None:
        if not found:
            raise _missing(kind, r)
        v = max(found)
    if v not in found:
        have = sorted(found)
        raise _missing(kind, r, f" version {v}" + (f" (have {', '.join(map(str, have))})" if have else ""))
    return found[v]


def pinned(name: str, root: str | os.PathLike | None = None) -> str:
    """A learned policy's name with its version resolved (``rf`` -> ``rf:5``, ``rl:latest`` -> ``rl:11``), so that
    what it names cannot change when a new version is saved; any other policy's name as it is."""
    kind, _, version = name.partition(":")
    if kind not in ("rf", "rl"):
        return name
    return f"{kind}:{resolve(kind, version or 'latest', root).name}"


def load_meta(kind: str, version: Version = "latest", root: str | os.PathLike | None = None) -> dict:
    """The ``meta.json`` of ``kind:version``."""
    return _read_meta(resolve(kind, version, root))


def _read_meta(path: Path) -> dict:
    try:
        return json.loads((path / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RegistryError(f"unreadable {path / META_FILE}: {e}") from e


def schema_of(kind: str, meta: Mapping[str, Any] | None = None) -> tuple[str, tuple[str, ...]]:
    """(schema version, feature names) this build computes for models of ``kind``; a network whose
    ``architecture`` (in ``meta``) scores candidate nodes reads the per-candidate rows."""
    if meta is not None and (meta.get("architecture") or {}).get("level") == "node":
        return CANDIDATE_SCHEMA_VERSION, CANDIDATE_FEATURE_NAMES
    return KIND_SCHEMAS.get(kind, (SCHEMA_VERSION, FEATURE_NAMES))


def check_schema(meta: Mapping[str, Any], schema: str | None = None,
                 feature_names: tuple[str, ...] | list[str] | None = None) -> None:
    """Raise :class:`SchemaMismatchError` unless ``meta`` was trained on this feature schema
    (default: this build's for the artifact's kind, :func:`schema_of`).

    Checks the schema version and, when recorded, the feature names (a changed
    layout whose version was not bumped is caught too).
    """
    kind = meta.get("kind", "?")
    own_schema, own_names = schema_of(kind, meta)
    schema = own_schema if schema is None else schema
    feature_names = own_names if feature_names is None else feature_names
    ref = f"{kind}:{meta.get('version', '?')}"
    cmd = TRAIN_COMMANDS.get(kind, f"orchestrator train {kind}")
    got = meta.get("feature_schema")
    if got is None:
        raise SchemaMismatchError(f"model {ref} records no feature schema: retrain with {cmd}")
    if str(got) != str(schema):
        raise SchemaMismatchError(f"model {ref} was trained on feature schema {got}, this build uses "
                                  f"{schema}: retrain with {cmd}")
    names = meta.get("feature_names")
    if names is not None and list(names) != list(feature_names):
        diff = sorted(set(names) ^ set(feature_names))
        detail = f"differing: {', '.join(diff[:6])}" if diff else "same names, different order"
        raise SchemaMismatchError(f"model {ref} was trained on other features than this build's schema "
                                  f"{schema} ({detail}): retrain with {cmd}")


def load(kind: str, version: Version = "latest", root: str | os.PathLike | None = None,
         *, check: bool = True) -> Artifact:
    """Resolve ``kind:version`` and read its metadata; the feature schema is checked unless ``check=False``."""
    path = resolve(kind, version, root)
    meta = _read_meta(path)
    if check:
        check_schema(meta)
    return Artifact(kind, int(path.name), path, meta)


def _command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith("orchestrator"):
        argv[0] = "orchestrator"
    return shlex.join(argv)


def save(kind: str, files: Mapping[str, Writer], meta: Mapping[str, Any] | None = None,
         root: str | os.PathLike | None = None) -> Path:
    """Write a new version of ``kind`` and return its folder.

    Args:
        files: file name -> bytes, text, or ``writer(path)`` that writes the file.
        meta: extra metadata (e.g. ``config``, ``metrics``, ``seed``, ``command``).
            ``kind``, ``version``, ``created`` are always set here;
            ``feature_schema``/``feature_names`` default to this build's and
            ``command`` to this process's command line.
    """
    _check_kind(kind)
    if not files:
        raise RegistryError("an artifact needs at least one model file")
    for name in files:
        if name == META_FILE or not _FILE_RE.match(name):
            raise RegistryError(f"bad artifact file name {name!r}")
    base = registry_root(root) / kind
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))
    try:
        for name, writer in files.items():
            p = tmp / name
            if isinstance(writer, bytes):
                p.write_bytes(writer)
            elif isinstance(writer, str):
                p.write_text(writer)
            else:
                writer(p)
            if not p.is_file():
                raise RegistryError(f"writer for {name!r} did not create the file")
        body = dict(meta or {})
        schema, names = schema_of(kind, body)
        body.setdefault("feature_schema", schema)
        body.setdefault("feature_names", list(names))
        body.setdefault("command", _command())
        body["kind"] = kind
        body["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        body["files"] = sorted(files)
        # Claim the next number by renaming; a concurrent writer that took it makes us try the next.
        shipped = [v for r in _roots(root)[1:] for v in _complete(r / kind)]
        for _ in range(1000):
            v = max([0, *shipped, *(int(p.name) for p in base.iterdir() if p.name.isdigit())]) + 1
            body["version"] = v
            (tmp / META_FILE).write_text(json.dumps(body, indent=2, sort_keys=True, default=_json_default))
            try:
                os.rename(tmp, base / str(v))
            except OSError:
                if (base / str(v)).exists():
                    continue
                raise
            return base / str(v)
        raise RegistryError(f"could not claim a version number under {base}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _json_default(o: Any) -> Any:
    """numpy scalars/arrays and paths in metadata become plain JSON."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"meta value of type {type(o).__name__} is not JSON-serialisable")
