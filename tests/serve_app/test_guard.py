"""The request guard: stalled bodies end in 408, a client's requests in progress are capped, big headers 431.

Driven as ASGI directly, so a test can stall a body mid-way as a slow client would
(an HTTP test client always sends the whole body); the attack on a running router
is measured in ``benchmarks/bench_abuse.py``.
"""
from __future__ import annotations

import asyncio
import json

from serve_app.guard import Guard, Limits


async def _echo(scope, receive, send) -> None:
    """Reads the whole body, answers 200 with its length."""
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


def _scope(path: str = "/v1/route", headers: list | None = None, host: str = "10.0.0.1") -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": headers or [], "client": (host, 5000)}


class Conn:
    """One client connection: ``parts`` are sent as body messages, then it stalls (or ends)."""

    def __init__(self, parts: list[bytes], stall: bool) -> None:
        self.q: asyncio.Queue = asyncio.Queue()
        for i, p in enumerate(parts):
            self.q.put_nowait({"type": "http.request", "body": p, "more_body": stall or i < len(parts) - 1})
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        return await self.q.get()

    async def send(self, msg: dict) -> None:
        self.sent.append(msg)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)

    @property
    def body(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


def _run_guard(lim: Limits, app=_echo) -> Guard:
    return Guard(app, lambda: lim, who=lambda auth, host: auth or f"anonymous@{host}")


def test_a_stalled_body_is_answered_408_and_frees_its_slot() -> None:
    async def go() -> None:
        g = _run_guard(Limits(body_timeout_s=0.2))
        stalled = Conn([b'{"cpu_'], stall=True)
        await asyncio.wait_for(g(_scope(), stalled.receive, stalled.send), 5)
        assert stalled.status == 408 and "0.2 s" in stalled.body["detail"]
        assert not g.in_progress  # its slot is free again
        ok = Conn([b'{"cpu_', b'milli": 1}'], stall=False)
        await g(_scope(), ok.receive, ok.send)
        assert ok.status == 200

    asyncio.run(go())


def test_a_client_at_its_cap_gets_429_before_its_body_while_others_and_healthz_pass() -> None:
    async def go() -> None:
        g = _run_guard(Limits(body_timeout_s=5.0, client_max_requests=3))
        stallers = [Conn([b"{"], stall=True) for _ in range(3)]
        held = [asyncio.create_task(g(_scope(), c.receive, c.send)) for c in stallers]
        await asyncio.sleep(0.05)
        assert g.in_progress["anonymous@10.0.0.1"] == 3
        fourth = Conn([b"{}"], stall=False)
        await g(_scope(), fourth.receive, fourth.send)
        assert fourth.status == 429 and "3 requests in progress" in fourth.body["detail"]
        other = Conn([b"{}"], stall=False)  # another client, and a probe from the same one
        await g(_scope(headers=[(b"authorization", b"Bearer k2")], host="10.0.0.1"), other.receive, other.send)
        probe = Conn([b""], stall=False)
        await g(_scope("/healthz"), probe.receive, probe.send)
        assert other.status == 200 and probe.status == 200
        for t in held:
            t.cancel()

    asyncio.run(go())


def test_oversized_headers_and_bodies_are_refused_before_the_app() -> None:
    async def go() -> None:
        g = _run_guard(Limits(max_header_bytes=1024, max_body_bytes=100))
        big = Conn([b"{}"], stall=False)
        await g(_scope(headers=[(b"x-filler", b"a" * 2000)]), big.receive, big.send)
        assert big.status == 431
        declared = Conn([b"{}"], stall=False)
        await g(_scope(headers=[(b"content-length", b"101")]), declared.receive, declared.send)
        assert declared.status == 413
        garbled = Conn([b"{}"], stall=False)
        await g(_scope(headers=[(b"content-length", b"ten")]), garbled.receive, garbled.send)
        assert garbled.status == 400
        assert not g.in_progress

    asyncio.run(go())


def test_behind_the_front_clients_are_counted_by_the_address_it_saw_and_no_one_else_chooses_it() -> None:
    async def go() -> None:
        g = _run_guard(Limits(body_timeout_s=5.0, client_max_requests=2, front_peers=frozenset({"127.0.0.1"})))
        front = lambda ip: _scope(headers=[(b"x-real-ip", ip)], host="127.0.0.1")  # noqa: E731
        stallers = [Conn([b"{"], stall=True) for _ in range(2)]
        held = [asyncio.create_task(g(front(b"203.0.113.7"), c.receive, c.send)) for c in stallers]
        await asyncio.sleep(0.05)
        assert g.in_progress["anonymous@203.0.113.7"] == 2
        same = Conn([b"{}"], stall=False)  # the same client again, through the front: over its cap
        await g(front(b"203.0.113.7"), same.receive, same.send)
        other = Conn([b"{}"], stall=False)  # another client through the same front: its own count
        await g(front(b"198.51.100.2"), other.receive, other.send)
        assert same.status == 429 and other.status == 200
        spoof = Conn([b"{"], stall=True)  # a remote peer naming an address: counted as itself
        t = asyncio.create_task(g(_scope(headers=[(b"x-real-ip", b"198.51.100.9")], host="10.0.0.5"),
                                  spoof.receive, spoof.send))
        await asyncio.sleep(0.05)
        assert "anonymous@10.0.0.5" in g.in_progress and "anonymous@198.51.100.9" not in g.in_progress
        garbled = Conn([b"{"], stall=True)  # from the front, but not an address: counted as the front
        t2 = asyncio.create_task(g(front(b"not-an-ip"), garbled.receive, garbled.send))
        await asyncio.sleep(0.05)
        assert g.in_progress["anonymous@127.0.0.1"] == 1
        for task in (*held, t, t2):
            task.cancel()
        # without a front configured the header is nobody's to choose, loopback callers included
        plain = _run_guard(Limits(body_timeout_s=5.0))
        local = Conn([b"{"], stall=True)
        t3 = asyncio.create_task(plain(front(b"203.0.113.7"), local.receive, local.send))
        await asyncio.sleep(0.05)
        assert list(plain.in_progress) == ["anonymous@127.0.0.1"]
        t3.cancel()

    asyncio.run(go())
