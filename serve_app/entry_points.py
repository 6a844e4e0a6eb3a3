"""Real work over HTTP: the functions a task may name, from the router's allow-list.

``POST /v1/tasks`` may carry ``entry_point`` (``"module:function"``) and ``args`` (a JSON
object of keyword arguments); the router books the task as any other and its node runs
``function(**args)`` instead of the emulated work. Only names written in the router
config's ``entry_points`` run. A request's name is looked up in that list as a string and
nothing a client sends is imported, resolved or evaluated, so no dotted attribute, other
module or path can reach code the operator did not list. The listed functions are
imported once, when the router starts; one that does not import stops the deploy, naming
the field.

What a function returns is kept in the task's record as ``result`` when it is JSON and at
most :data:`MAX_RESULT_BYTES` (else a note of its type and size); a function that raises
ends the task ``failed`` with the exception's type and message.
"""
from __future__ import annotations

import importlib
import inspect
from functools import partial
from typing import Any, Callable, Sequence

import orjson

from cluster.config import ConfigError
from cluster.vocabulary import ENTRY_POINT, args_problem

#: largest ``args`` object (JSON bytes) a task may carry; it is stored with the task
MAX_ARGS_BYTES = 64 << 10
#: largest return value (JSON bytes) kept in a record
MAX_RESULT_BYTES = 64 << 10


class EntryPointRefused(ValueError):
    """A task named an entry point this router does not run, or arguments it cannot take."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def check_names(names: Sequence[Any], fail: Callable[[str, str], None]) -> tuple[str, ...]:
    """The allow-list's names as given, each well formed; ``fail(field, reason)`` for a bad one."""
    out = []
    for i, name in enumerate(names):
        if not isinstance(name, str) or not ENTRY_POINT.fullmatch(name):
            fail(f"entry_points[{i}]", f"must be 'package.module:function', got {name!r}")
            continue
        out.append(name)
    return tuple(out)


class EntryPoints:
    """The router's allow-list, its functions imported (see the module docstring)."""

    def __init__(self, names: Sequence[str], source: str | None = None) -> None:
        self.functions: dict[str, Callable[..., Any]] = {}
        for i, name in enumerate(names):
            module, _, attr = name.partition(":")
            try:
                fn = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(source, f"entry_points[{i}]", f"{name} does not import: {exc}") from None
            if not callable(fn):
                raise ConfigError(source, f"entry_points[{i}]", f"{name} is a {type(fn).__name__}, not a function")
            self.functions[name] = fn

    def prepare(self, name: str, args: Any) -> tuple[dict[str, Any], Callable[[], Any]]:
        """(the arguments as the task stores them, ``function(**those)`` ready to run on a node) of an
        allowed ``name``. The function gets exactly what is stored, so a resumed task runs the same call."""
        fn = self.functions.get(name)
        if fn is None:
            listed = ", ".join(sorted(self.functions)) or "none: its entry_points list is empty"
            raise EntryPointRefused("entry_point", f"{name!r} is not on this router's allow-list "
                                                   f"(entry_points in its config; allowed: {listed})")
        stored = stored_args({} if args is None else args)
        try:
            inspect.signature(fn).bind(**stored)
        except TypeError as exc:
            raise EntryPointRefused("args", f"{name} does not take them: {exc}") from None
        except ValueError:  # no signature to read (a builtin): the call itself will tell
            pass
        return stored, partial(fn, **stored)


def stored_args(args: Any) -> dict[str, Any]:
    """``args`` as JSON the history can store and give back unchanged: a mapping of identifiers, finite
    numbers, integers of at most 64 bits, at most :data:`MAX_ARGS_BYTES`."""
    problem = args_problem(args)
    if problem:
        raise EntryPointRefused("args", problem)
    try:
        text = orjson.dumps(args)
    except orjson.JSONEncodeError as exc:  # an integer beyond 64 bits, nesting beyond 254 levels
        raise EntryPointRefused("args", f"not storable as JSON: {exc}") from None
    if len(text) > MAX_ARGS_BYTES:
        raise EntryPointRefused("args", f"{len(text)} bytes of JSON; at most {MAX_ARGS_BYTES} (send data by reference)")
    stored = orjson.loads(text)
    if stored != args:  # orjson writes NaN and infinities as null
        raise EntryPointRefused("args", "NaN and infinite numbers are not JSON")
    return stored


def stored_result(value: Any) -> Any:
    """What a record keeps of a function's return value: the value when it is JSON of at most
    :data:`MAX_RESULT_BYTES`, else a note saying why it is not kept."""
    if value is None:
        return None
    nbytes = getattr(value, "nbytes", None)  # an array: its size is known without serialising it
    if isinstance(nbytes, int) and nbytes > MAX_RESULT_BYTES:
        return {"not_kept": f"a {type(value).__name__} of {nbytes} bytes, more than {MAX_RESULT_BYTES}"}
    try:
        text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return {"not_kept": f"a {type(value).__name__} is not JSON"}
    if len(text) > MAX_RESULT_BYTES:
        return {"not_kept": f"{len(text)} bytes of JSON, more than {MAX_RESULT_BYTES}"}
    return orjson.loads(text)
