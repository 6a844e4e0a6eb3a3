"""The router of this process: the one service and admin check a replica serves.

A module of its own because Serve ships the deployment class to the replica by
value: state kept in the class's module globals would be a copy, while functions
and modules are shipped by reference and so all see this one.
"""
from __future__ import annotations

from typing import Any

from serve_app.auth import AdminAuth
from serve_app.errors import ApiError

_STATE: dict[str, Any] = {}


def install(service: Any, auth: AdminAuth) -> None:
    _STATE.update(service=service, auth=auth)


def service() -> Any:
    """The process's :class:`~serve_app.service.RouterService`; 503 while it is being built."""
    svc = _STATE.get("service")
    if svc is None:
        raise ApiError(503, "the router is starting", headers={"Retry-After": "1"})
    return svc


def auth() -> AdminAuth:
    return _STATE.get("auth") or AdminAuth(None, "the router is starting")


def uninstall() -> Any:
    _STATE.pop("auth", None)
    return _STATE.pop("service", None)
