"""Every failure the API reports, as a 4xx (or 503) that names the field and the reason.

Bodies are ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` for bad input
(FastAPI's own shape, so one client parser reads both) and ``{"detail": "..."}``
plus context for the rest. A 500 means a bug in the router: it is logged with
its traceback and answered without internals.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
import orjson
from starlette.responses import JSONResponse as _StarletteJSON

from scheduler.task import TaskError

log = logging.getLogger("serve_app")


class JSONResponse(_StarletteJSON):
    """JSON through orjson: ten times faster than the standard encoder on decision lists, and a NaN
    (an infeasible node's score, a failed task's latency) becomes null instead of invalid JSON."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ApiError(Exception):
    """An answer other than success: HTTP ``status`` with a message and optional field."""

    def __init__(self, status: int, msg: str, *, loc: Sequence[str | int] | None = None,
                 type: str = "value_error", headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.loc = list(loc) if loc is not None else None
        self.type = type
        self.headers = headers
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        detail: Any = [{"loc": self.loc, "msg": self.msg, "type": self.type}] if self.loc else self.msg
        return {"detail": detail, **self.extra}


def field_error(field_name: str, reason: str, *, prefix: Sequence[str | int] = ("body",),
                status: int = 422) -> ApiError:
    return ApiError(status, reason, loc=[*prefix, field_name])


def task_error(exc: TaskError, prefix: Sequence[str | int] = ("body",)) -> ApiError:
    return field_error(exc.field, exc.reason, prefix=prefix)


def _validation_items(exc: RequestValidationError) -> tuple[int, list[dict[str, Any]]]:
    items, status = [], 422
    for err in exc.errors():
        kind = str(err.get("type", "value_error"))
        if kind == "json_invalid":
            status = 400
        items.append({"loc": [x if isinstance(x, (str, int)) else str(x) for x in err.get("loc", ())],
                      "msg": str(err.get("msg", "invalid")), "type": kind})
    return status, items


def answer(exc: Exception) -> JSONResponse | None:
    """The answer to an error the API expects (None for anything else: a bug).

    The exception handlers below and :class:`serve_app.api.FastPath` both answer through it.
    """
    if isinstance(exc, ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
    if isinstance(exc, RequestValidationError):
        status, items = _validation_items(exc)
        return JSONResponse({"detail": items}, status_code=status)
    if isinstance(exc, TaskError):
        err = task_error(exc)
        return JSONResponse(err.body(), status_code=err.status)
    if isinstance(exc, StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
    return None


def install(api: FastAPI) -> None:
    """Register the handlers that turn exceptions into answers."""

    async def _expected(request: Request, exc: Exception) -> JSONResponse:
        return answer(exc)  # type: ignore[return-value]  (registered for expected types only)

    for kind in (ApiError, RequestValidationError, TaskError, StarletteHTTPException):
        api.add_exception_handler(kind, _expected)

    @api.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        return bug(exc, request.method, request.url.path)


def bug(exc: Exception, method: str, path: str) -> JSONResponse:
    """A router bug: logged with its traceback, answered 500 without internals."""
    log.error("unhandled error on %s %s", method, path, exc_info=exc)
    return JSONResponse({"detail": "internal error in the router (logged)"}, status_code=500)
