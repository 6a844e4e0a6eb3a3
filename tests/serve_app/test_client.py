"""The router's Python client: keys sent, idempotent calls retried with the same task id.

Against a small stand-in HTTP server (the real router's answers are tested in
test_router_api / test_router_abuse); it fails the first attempts as a crashing
replica would, which a real router cannot be made to do on cue.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_app.client import RouterClient, RouterError


class Flaky(BaseHTTPRequestHandler):
    """Answers 503, then 500 with an empty body (a proxy whose replica died), then 202."""

    seen: list[tuple[str, str, dict]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        Flaky.seen.append((self.path, self.headers.get("Authorization", ""), body))
        n = len(Flaky.seen)
        if n == 1:
            self._answer(503, {"detail": "starting"}, {"Retry-After": "0"})
        elif n == 2:
            self._answer(500, None)
        else:
            self._answer(202, {"task_id": body["id"], "status": "running"})

    def do_DELETE(self) -> None:  # noqa: N802
        Flaky.seen.append((self.path, self.headers.get("Authorization", ""), {}))
        self._answer(409, {"detail": "task 'x' has already ended (succeeded)"})

    def _answer(self, code: int, body, headers: dict | None = None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def url():
    Flaky.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_run_retries_with_one_task_id_and_sends_the_key(url, monkeypatch) -> None:
    monkeypatch.setenv("ORCH_API_KEY", "ork_from_env")
    c = RouterClient(url, backoff_s=0.01)
    out = c.run({"cpu_milli": 100}, wait=False)
    assert out["status"] == "running"
    ids = {body["id"] for _, _, body in Flaky.seen}
    assert len(Flaky.seen) == 3 and len(ids) == 1 and out["task_id"] in ids  # one task, three attempts
    assert all(auth == "Bearer ork_from_env" for _, auth, _ in Flaky.seen)


def test_a_4xx_is_not_retried_and_reads_as_a_sentence(url) -> None:
    c = RouterClient(url, api_key="ork_k", backoff_s=0.01)
    with pytest.raises(RouterError) as e:
        c.cancel("x")
    assert e.value.status == 409 and "already ended" in str(e.value) and len(Flaky.seen) == 1


def test_a_router_that_stays_down_gives_one_line(monkeypatch) -> None:
    c = RouterClient("http://127.0.0.1:9", retries=1, backoff_s=0.01)
    with pytest.raises(RouterError) as e:
        c.task("x")
    assert "not answering" in str(e.value)
