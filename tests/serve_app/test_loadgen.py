"""The retrying client: which answers it resends the same body on, and which it returns."""
from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from serve_app.loadgen import post_with_retry, run_sync


def _serve(answers: list[web.Response]):
    seen: list[dict] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return answers.pop(0)

    app = web.Application()
    app.router.add_post("/v1/tasks", handler)
    return app, seen


async def _post(answers: list[web.Response]) -> tuple[int, object, int, list[dict]]:
    app, seen = _serve(answers)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as s:
            status, body, attempts = await post_with_retry(s, f"http://127.0.0.1:{port}/v1/tasks", {"id": "a"},
                                                           deadline_s=10, backoff_s=0.01)
    finally:
        await runner.cleanup()
    return status, body, attempts, seen


def test_resends_on_a_lost_replica_and_on_503_then_returns_the_answer() -> None:
    answers = [web.Response(status=500, text="Internal Server Error"),  # Serve's proxy: the replica died
               web.Response(status=503, text="unavailable"),
               web.json_response({"task_id": "a", "status": "placed"}, status=202)]
    status, body, attempts, seen = run_sync(_post(answers))
    assert (status, attempts) == (202, 3) and body["task_id"] == "a"
    assert seen == [{"id": "a"}] * 3  # the same body, so the same idempotency key


@pytest.mark.parametrize("answer", [
    web.json_response({"detail": "internal error in the router (logged)"}, status=500),  # a router bug
    web.json_response({"detail": [{"loc": ["body", "priority"], "msg": "bad", "type": "x"}]}, status=422),
])
def test_returns_the_routers_own_errors_without_resending(answer) -> None:
    status, body, attempts, _ = run_sync(_post([answer]))
    assert status == answer.status and attempts == 1 and "detail" in body
