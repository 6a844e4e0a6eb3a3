"""What every HTTP request passes before the API sees it: size, time and per-client limits.

A slow or stalled client must not hold the router. Serve's HTTP servers (the proxy
and the replica's direct ingress, both uvicorn) read headers without a size limit
and bodies without a time limit, and a replica serves at most
``max_ongoing_requests`` at once (1,000 then): 1,000 connections that each sent a
``POST``'s headers and part of its body and then stalled held all of them, and
``/healthz`` timed out on both ports. So here, per request:

* headers over ``max_header_bytes`` are answered ``431`` at once;
* a body over ``max_body_bytes`` is ``413`` (by ``Content-Length`` before any of it
  is read, else as it arrives);
* a body not fully received ``body_timeout_s`` after the request began is ``408``,
  which ends the request and frees its slot;
* a client (its API key's name, else anonymous by address) with ``client_max_requests``
  requests in progress gets ``429`` at once, before its body is read: a staller can
  only fill its own share of the replica, and ``/healthz`` is never counted.

Behind the nginx front (:mod:`serve_app.front`) every request comes from the front, so an
anonymous client is counted by the address the front saw, its ``X-Real-IP``, taken only
from the configured ``front_peers`` (``serve up --front-port`` sets them; the front sets the
header, never appends to it) and only when it is an IP address: without a front no
caller chooses the address it is counted under.

The credential is looked up without being checked (a wrong key counts as anonymous
here; the route refuses it with 401 afterwards), so this costs a dict lookup.
"""
from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from fastapi import HTTPException
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.errors import ApiError, JSONResponse

#: paths never counted against a client's requests in progress (a load balancer's probe)
UNCOUNTED = ("/healthz",)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8 << 20
    max_header_bytes: int = 16 << 10
    body_timeout_s: float = 5.0
    client_max_requests: int = 256
    #: peers whose ``X-Real-IP`` names the client (the front's addresses; empty: never)
    front_peers: frozenset[str] = frozenset()


class Guard:
    """ASGI middleware applying :class:`Limits` (``limits()`` read per request: the service's config).

    ``who(authorization, client_host)`` names the client a request is counted under.
    """

    def __init__(self, app: ASGIApp, limits: Callable[[], Limits],
                 who: Callable[[str | None, str], str]) -> None:
        self.app = app
        self.limits = limits
        self.who = who
        self.in_progress: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lim = self.limits()
        size = len(scope.get("query_string", b""))
        authorization = real_ip = None
        for name, value in scope.get("headers", ()):
            size += len(name) + len(value) + 4
            if name == b"content-length":
                if not value.isdigit():
                    await _answer(send, 400, "Content-Length is not a number of bytes")
                    return
                if int(value) > lim.max_body_bytes:
                    await _answer(send, 413, f"request body over {lim.max_body_bytes} bytes")
                    return
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"x-real-ip":
                real_ip = value.decode("latin-1")
        if size > lim.max_header_bytes:
            await _answer(send, 431, f"request headers over {lim.max_header_bytes} bytes")
            return
        client = None
        if scope.get("path") not in UNCOUNTED:
            host = (scope.get("client") or ("?",))[0]
            if real_ip and host in lim.front_peers and is_ip(real_ip):
                host = real_ip
            client = self.who(authorization, host)
            if self.in_progress[client] >= lim.client_max_requests:
                await _answer(send, 429, f"{client} has {lim.client_max_requests} requests in progress, its limit",
                              {"Retry-After": "1"})
                return
            self.in_progress[client] += 1
        started = False

        async def sending(msg: dict) -> None:
            nonlocal started
            started = True
            await send(msg)

        try:
            await self.app(scope, _bounded(receive, lim, asyncio.get_running_loop().time()), sending)
        except StarletteHTTPException as exc:  # a limit hit where nothing answers it (FastAPI does)
            if started:
                raise
            await _answer(send, exc.status_code, str(exc.detail))
        finally:
            if client is not None:
                left = self.in_progress[client] - 1
                if left:
                    self.in_progress[client] = left
                else:
                    del self.in_progress[client]


def is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _bounded(receive: Receive, lim: Limits, started: float) -> Receive:
    """``receive`` that raises 413 past the size limit and 408 past the body deadline (FastAPI
    re-raises an HTTPException from here as it is; :class:`serve_app.api.FastPath` answers it)."""
    seen = 0
    done = False
    deadline = started + lim.body_timeout_s

    async def bounded() -> dict:
        nonlocal seen, done
        if done:  # the body is in: what follows is the wait for a disconnect, which may be long
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                msg = await receive()
        except TimeoutError:
            raise HTTPException(408, f"request body not received within {lim.body_timeout_s:g} s") from None
        if msg["type"] == "http.request":
            seen += len(msg.get("body", b""))
            if seen > lim.max_body_bytes:
                raise HTTPException(413, f"request body over {lim.max_body_bytes} bytes")
            done = not msg.get("more_body", False)
        return msg

    return bounded


async def _answer(send: Send, status: int, msg: str, headers: dict[str, str] | None = None) -> None:
    err = ApiError(status, msg, headers=headers)
    resp = JSONResponse(err.body(), status_code=status, headers=headers)
    await resp({"type": "http"}, None, send)  # type: ignore[arg-type]
