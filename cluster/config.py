"""The one validating YAML loader: every config error names the file and the field.

All config sections (cluster, workload, objective, experiment) are read through
:class:`Fields`, a small cursor over a mapping that knows its file and dotted
path, so that a bad value reads as ``configs/cluster/local.yaml: nodes[2].gpus.count:
must be >= 0, got -1`` instead of a traceback.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from cluster.package_data import data_path


class UsageError(Exception):
    """Bad command-line input: the commands print it as ``<prog>: error: ...`` and exit 2.

    Here, the lowest layer, so that every command's checks raise the one class the entry
    point catches (whichever module runs as ``__main__``).
    """


class ConfigError(ValueError):
    """A config value is missing or invalid; carries the file and the field path."""

    def __init__(self, file: str | Path | None, field: str, reason: str) -> None:
        self.file = str(file) if file is not None else "<config>"
        self.field = field
        self.reason = reason
        super().__init__(f"{self.file}: {field}: {reason}")


class ConfigErrors(ConfigError):
    """Every error a loader found, reported together: one fix-and-retry round, not one per field.
    ``file``/``field``/``reason`` are the first's; ``errors`` holds them all."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = [x for e in errors for x in (e.errors if isinstance(e, ConfigErrors) else [e])]
        first = self.errors[0]
        self.file, self.field, self.reason = first.file, first.field, first.reason
        ValueError.__init__(self, f"{len(self.errors)} config errors:\n" + "\n".join(f"  {e}" for e in self.errors))


class Collector:
    """Runs a loader's independent checks and keeps going past a bad one.

    ``errs(fn, *args)`` returns ``fn(*args)``, or ``default`` after recording its
    :class:`ConfigError`; :meth:`check` then raises them all (the one itself when alone).
    """

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def __call__(self, fn: Any, *args: Any, default: Any = None) -> Any:
        try:
            return fn(*args)
        except ConfigError as exc:
            self.errors.append(exc)
            return default

    def check(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)


def load_yaml(path: str | Path) -> "Fields":
    """Read a YAML mapping from ``path`` (as given, else the shipped file) into a :class:`Fields` cursor."""
    p = data_path(path)
    if not p.is_file():
        raise ConfigError(p, "<file>", "no such file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(p, "<file>", f"not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(p, "<file>", "top level must be a mapping")
    return Fields(data, file=p, path="")


_MISSING = object()


class Fields:
    """Typed, path-aware access to one mapping of a config file.

    With a :class:`Collector` (``collect``), a bad or missing value is recorded there and a
    stand-in (the default, else a value of the asked type) comes back, so a loader reads on and
    reports every bad field at once when it calls ``collect.check()``.
    """

    def __init__(self, data: Mapping[str, Any], file: str | Path | None, path: str,
                 collect: "Collector | None" = None) -> None:
        self.data = data
        self.file = file
        self.path = path
        self.collect = collect

    def fail(self, key: str, reason: str, stand_in: Any) -> Any:
        """Raise the error for ``key``, or record it and return ``stand_in`` when collecting."""
        err = self.error(key, reason)
        if self.collect is None:
            raise err
        self.collect.errors.append(err)
        return stand_in

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self._name(key), reason)

    def check_keys(self, allowed: set[str]) -> None:
        """Reject unknown keys (all of them at once): a typo must not silently become a default."""
        bad = [self.error(str(key), f"unknown field (allowed: {', '.join(sorted(allowed))})")
               for key in self.data if key not in allowed]
        if bad:
            raise bad[0] if len(bad) == 1 else ConfigErrors(bad)

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise self.error(key, "required field is missing")
            return default
        return self.data[key]

    def _value(self, key: str, default: Any, stand_in: Any) -> tuple[Any, bool]:
        """(the value or default, True) or (a stand-in, False) once a missing field is reported."""
        if key not in self.data and default is _MISSING:
            return self.fail(key, "required field is missing", stand_in), False
        return self.data.get(key, default), True

    def str(self, key: str, default: Any = _MISSING, choices: set[str] | None = None) -> str:
        fallback = default if isinstance(default, str) and default else min(choices) if choices else "?"
        value, ok = self._value(key, default, fallback)
        if not ok:
            return value
        if not isinstance(value, str) or not value:
            return self.fail(key, f"must be a non-empty string, got {value!r}", fallback)
        if choices is not None and value not in choices:
            return self.fail(key, f"must be one of {sorted(choices)}, got {value!r}", fallback)
        return value

    def num(self, key: str, default: Any = _MISSING, *, min: float | None = None,
            max: float | None = None, strict_min: bool = False) -> float:
        ok_default = isinstance(default, (int, float)) and not isinstance(default, bool)
        fallback = (float(default) if ok_default else float(min) + (1 if strict_min else 0) if min is not None
                    else float(max) if max is not None else 0.0)
        value, ok = self._value(key, default, fallback)
        if not ok:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.fail(key, f"must be a number, got {value!r}", fallback)
        if value != value or value in (float("inf"), float("-inf")):
            return self.fail(key, f"must be a finite number, got {value}", fallback)
        if min is not None and (value <= min if strict_min else value < min):
            return self.fail(key, f"must be {'>' if strict_min else '>='} {min}, got {value}", fallback)
        if max is not None and value > max:
            return self.fail(key, f"must be <= {max}, got {value}", fallback)
        return float(value)

    def int(self, key: str, default: Any = _MISSING, *, min: int | None = None,
            max: int | None = None) -> int:
        ok_default = isinstance(default, int) and not isinstance(default, bool)
        fallback = default if ok_default else (min if min is not None else 0)
        value, ok = self._value(key, default, fallback)
        if not ok:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            return self.fail(key, f"must be an integer, got {value!r}", fallback)
        if min is not None and value < min:
            return self.fail(key, f"must be >= {min}, got {value}", fallback)
        if max is not None and value > max:
            return self.fail(key, f"must be <= {max}, got {value}", fallback)
        return value

    def section(self, key: str, default: Any = _MISSING) -> "Fields":
        value = self.raw(key, default)
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a mapping, got {type(value).__name__}")
        return Fields(value, self.file, self._name(key), self.collect)

    def items(self, key: str, default: Any = _MISSING) -> Iterator[tuple[int, Any, str]]:
        """Yield (index, value, dotted name) for a list field."""
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            yield i, item, f"{self._name(key)}[{i}]"

    def sections(self, key: str, default: Any = _MISSING) -> Iterator["Fields"]:
        """Yield a cursor per mapping of a list field."""
        for _, item, name in self.items(key, default):
            if not isinstance(item, Mapping):
                raise ConfigError(self.file, name, f"must be a mapping, got {type(item).__name__}")
            yield Fields(item, self.file, name, self.collect)

    def mapping_sections(self, key: str) -> Iterator[tuple[str, "Fields"]]:
        """Yield (name, cursor) for a mapping of mappings (e.g. ``tiers:``)."""
        sec = self.section(key)
        for name, item in sec.data.items():
            if not isinstance(item, Mapping):
                raise sec.error(str(name), f"must be a mapping, got {type(item).__name__}")
            yield str(name), Fields(item, self.file, sec._name(str(name)), self.collect)


def read_csv_rows(path: str | Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """CSV rows as dicts (trace files); a missing file or column raises :class:`ConfigError`."""
    import csv

    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, "<file>", "no such file")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for col in required:
            if col not in header:
                raise ConfigError(p, col, f"missing column (have: {', '.join(header) or 'none'})")
        return list(reader)
