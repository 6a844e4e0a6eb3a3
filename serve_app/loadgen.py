"""HTTP load against the router, and the retrying client a caller should use.

``closed_loop`` keeps N requests in flight (throughput); ``open_loop`` sends at a
fixed rate whatever the answers do (latency at a given load, no coordinated
omission). ``post_with_retry`` is how a client survives a router restart: it
resends the same body (so the same task id, which the router treats as an
idempotency key) on connection errors, 502/503/504, and a 500 that the router
did not write, until a deadline. The router answers every error as JSON (a bug
of its own included: ``{"detail": "internal error ..."}``); Serve's proxy answers
a request whose replica died under it with a plain-text ``Internal Server Error``
(Ray 2.60 maps ``RayActorError`` to 500), and such a request may or may not have
been accepted, so resending the same id is the only way to find out.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import aiohttp

from serve_app.client import api_key_from_env

RETRY_STATUSES = frozenset({502, 503, 504})
T = TypeVar("T")


def run_sync(coro: Awaitable[T]) -> T:
    """``asyncio.run(coro)`` in a thread of its own, so it works where this thread already runs an
    event loop (Streamlit, Playwright's sync API, a notebook), where ``asyncio.run`` refuses."""
    with ThreadPoolExecutor(1, thread_name_prefix="loadgen") as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class LoadResult:
    """Latencies (s) of answered requests, counts per status, errors, wall time."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bodies: list[Any] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.answered / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in ms."""
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q / 100.0 * len(xs)))] * 1000.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1000.0 if self.latencies else float("nan")

    def ok(self, codes: Iterable[int] = (200, 202)) -> int:
        return sum(self.statuses.get(c, 0) for c in codes)


def _session(concurrency: int, key: str | None = None, source: str | None = None) -> aiohttp.ClientSession:
    """A session that sends ``key``, else the API key of the environment (``$ORCH_API_KEY``, ``$ORCH_API_KEY_FILE``),
    from the local address ``source`` when given (a client of another host, on loopback)."""
    key = key or api_key_from_env()
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False,
                                local_addr=(source, 0) if source else None)
    return aiohttp.ClientSession(connector=conn,
                                 timeout=aiohttp.ClientTimeout(total=120),
                                 headers={"authorization": f"Bearer {key}"} if key else None)


async def _one(s: aiohttp.ClientSession, method: str, url: str, body: Any, res: LoadResult,
               keep: bool) -> None:
    t = time.perf_counter()
    try:
        data = None if body is None else json.dumps(body)
        async with s.request(method, url, data=data, headers={"content-type": "application/json"}) as r:
            payload = await r.read()
            res.latencies.append(time.perf_counter() - t)
            res.statuses[r.status] = res.statuses.get(r.status, 0) + 1
            if keep:
                res.bodies.append(json.loads(payload) if payload else None)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        res.errors.append(f"{type(exc).__name__}: {exc}")


async def closed_loop(url: str, bodies: Iterable[Any], *, concurrency: int = 16, method: str = "POST",
                      keep_bodies: bool = False, key: str | None = None) -> LoadResult:
    """Send every body, ``concurrency`` at a time; returns when all are answered."""
    res = LoadResult()
    it = iter(bodies)
    async with _session(concurrency, key) as s:
        async def worker() -> None:
            for body in it:
                await _one(s, method, url, body, res, keep_bodies)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        res.seconds = time.perf_counter() - t0
    return res


async def open_loop(url: str, make_body: Callable[[int], Any], *, rate: float, seconds: float,
                    method: str = "POST", max_in_flight: int = 256, key: str | None = None,
                    source: str | None = None) -> LoadResult:
    """Start one request every 1/``rate`` s for ``seconds``, answered or not (from ``source``, see
    :func:`_session`)."""
    res = LoadResult()
    n = int(rate * seconds)
    async with _session(max_in_flight, key, source) as s:
        tasks = []
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(s, method, url, make_body(i), res, False)))
        await asyncio.gather(*tasks)
        res.seconds = time.perf_counter() - t0
    return res


def _lost_upstream(status: int, content_type: str) -> bool:
    """A 500 not from the router (whose errors are all JSON): the replica died with the request."""
    return status == 500 and content_type != "application/json"


def _decode(payload: bytes) -> Any:
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")


async def post_with_retry(s: aiohttp.ClientSession, url: str, body: Any, *, deadline_s: float = 120.0,
                          backoff_s: float = 0.2) -> tuple[int, Any, int]:
    """POST until an answer that is not a transient failure: (status, JSON body, attempts).

    Raises TimeoutError when ``deadline_s`` passes with only transient failures.
    """
    end = time.monotonic() + deadline_s
    attempts = 0
    last = ""
    while time.monotonic() < end:
        attempts += 1
        try:
            async with s.post(url, data=json.dumps(body), headers={"content-type": "application/json"}) as r:
                payload = await r.read()
                if r.status not in RETRY_STATUSES and not _lost_upstream(r.status, r.content_type):
                    return r.status, _decode(payload), attempts
                last = f"HTTP {r.status}: {payload[:200].decode(errors='replace')}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(min(backoff_s * attempts, 2.0))
    raise TimeoutError(f"no answer from {url} in {deadline_s:.0f} s after {attempts} attempts ({last})")
