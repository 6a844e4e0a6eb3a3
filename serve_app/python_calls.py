"""The router's side of the Python API (:mod:`orchestrator.work`): a function and its task, from a Serve handle.

Inside the cluster the function itself travels (Ray pickles it; the cluster's token is the
trust boundary), so it needs no allow-list: over HTTP only the router's ``entry_points``
run (:mod:`serve_app.entry_points`). The task is accepted, recorded, placed, booked and run
exactly as ``POST /v1/tasks`` does it (:func:`serve_app.api.accept`), charged to the client
:data:`HANDLE_CLIENT` (every driver shares its quota). Refusals come back as
``{"error": {"status", "detail"}}`` (the API's 4xx body), not as an exception the caller would
have to unpickle; a failure of the router itself (its history unwritable) raises, as a 5xx would.
"""
from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Callable, Mapping

from pydantic import ValidationError

from cluster.vocabulary import FINAL
from serve_app.api import accept, ended
from serve_app.auth import Principal
from serve_app.errors import ApiError
from serve_app.models import TaskIn
from serve_app.service import RouterService

#: the admission client (rate, in-flight quota) of every Python API call
HANDLE_CLIENT = "python-api"


def function_name(fn: Callable[..., Any]) -> str:
    """What a record names the function by (its module and qualified name)."""
    return f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def replayed(record: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to a retried id: its record and kept value once it ended; a 409 while it runs, or
    when its value was not kept (the caller would otherwise mistake the note for the value)."""
    tid, status = record.get("task_id"), record.get("status")
    if status not in FINAL:
        return {"error": {"status": 409, "detail": f"task id {tid!r} is {status}: the first run with this id is "
                                                  "under way (GET /v1/tasks/{id} shows it); a new run needs a new id"}}
    value = record.get("result")
    if status == "succeeded" and isinstance(value, Mapping) and set(value) == {"not_kept"}:
        return {"error": {"status": 409, "detail": f"task id {tid!r} already ran; its value was not kept "
                                                  f"({value['not_kept']}): submit with a new id to run it again"}}
    return {"record": dict(record), "value": value, "replayed": True}


async def run_function(svc: RouterService, fields: Mapping[str, Any] | None, fn: Callable[..., Any],
                       args: tuple = (), kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Place and run ``fn(*args, **kwargs)`` as the task ``fields`` describe (``POST /v1/tasks``'s body
    without ``entry_point``); once it ended ``{"record": ..., "value": ...}`` (``value``: what the function
    returned, any picklable object), or ``{"error": {...}}`` when the task was refused or never placed."""
    try:
        if not callable(fn):
            raise ApiError(422, f"fn must be callable, got a {type(fn).__name__}", loc=["fn"])
        if fields is not None and not isinstance(fields, Mapping):
            raise ApiError(422, f"task must be a mapping of task fields, got a {type(fields).__name__}", loc=["task"])
        kwargs = dict(kwargs or {})
        if any(not isinstance(k, str) for k in kwargs):
            raise ApiError(422, "keyword argument names must be strings", loc=["kwargs"])
        body = TaskIn.model_validate(dict(fields or {}))
        if body.entry_point is not None or body.args is not None:
            raise ApiError(422, "entry_point and args name allow-listed work over HTTP; the Python API sends "
                                "the function itself", loc=["task", "entry_point" if body.entry_point else "args"])
        who = Principal(HANDLE_CLIENT)
        svc.admission.charge(who, 1)
        task, pool = svc.parse_task(body.fields(), prefix=("task",), work=True)
        existing, (view, fut, status) = await accept(svc, who, task, pool, body.deadline_s,
                                                     {"python_call": function_name(fn)},
                                                     partial(fn, *args, **kwargs))
    except ValidationError as exc:
        return {"error": {"status": 422, "detail": [{"loc": ["task", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                                                    for e in exc.errors(include_url=False)]}}
    except ApiError as exc:
        return {"error": {"status": exc.status, **exc.body()}}
    if existing is not None:  # a retried id: what the record kept of the value
        return replayed(existing)
    if fut is None:
        return {"error": {"status": status, "detail": view["explanation"]}, "decision": view}
    await asyncio.shield(asyncio.wrap_future(fut))  # the caller going away does not stop the task
    return {"record": await ended(svc, task, view, fut), "value": fut.result().value}
