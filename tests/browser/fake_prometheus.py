"""A stand-in for Prometheus's HTTP API (``/-/ready``, ``/api/v1/query_range``) with canned series.

The view's Prometheus code is also tested against the real binary (tests/serve_app/
test_views_prometheus.py); this fake answers instantly with known numbers, so the browser
tests can check the Metrics page draws every panel, and the unit tests can check the
exact queries sent. It records every query it was asked.
"""
from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

#: label values of each ``sum by (label)`` query
LABELS = {"policy": ["fgd", "least-loaded"], "pool": ["edge", "cloud", "gpu-mig"], "priority": ["5", "8"]}


def series(query: str, start: float, end: float, step: float) -> list[dict]:
    """The answer's ``result``: a series per label value of the query's ``sum by (...)``; a
    quantile query's one series gets a NaN first point (no observations yet) and a +Inf last."""
    by = re.search(r"sum by \((\w+)\)", query)
    key = by.group(1) if by else ""
    n = max(1, int((end - start) // step) + 1)
    times = [start + i * step for i in range(n)]
    if key == "le":
        vals = [0.0002 * (1 + (i % 5)) for i in range(n)]
        vals[0], vals[-1] = math.nan, math.inf
        return [{"metric": {}, "values": [[t, _text(v)] for t, v in zip(times, vals)]}]
    return [{"metric": {key: lab}, "values": [[t, _text(0.5 * (j + 1) + 0.01 * i)] for i, t in enumerate(times)]}
            for j, lab in enumerate(LABELS.get(key, ["x"]))]


def _text(v: float) -> str:
    return "NaN" if math.isnan(v) else "+Inf" if math.isinf(v) else repr(v)


class FakePrometheus:
    """``with FakePrometheus() as prom:`` serves on ``prom.url``; ``prom.queries`` lists what it was asked.
    A query naming one of ``empty`` gets no series (a counter never incremented, as a healthy
    router's SLO misses are until the first miss)."""

    def __init__(self, empty: tuple[str, ...] = ()) -> None:
        self.queries: list[dict[str, str]] = []
        self.empty = empty
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                if u.path == "/-/ready":
                    return self._send(200, b"Prometheus Server is Ready.\n", "text/plain")
                if u.path != "/api/v1/query_range":
                    return self._send(404, b"404 page not found\n", "text/plain")
                owner.queries.append(q)
                if "bad(" in q.get("query", ""):
                    body = {"status": "error", "errorType": "bad_data", "error": "parse error: unknown function"}
                    return self._send(400, json.dumps(body).encode())
                res = [] if any(e in q["query"] for e in owner.empty) else series(
                    q["query"], float(q["start"]), float(q["end"]), float(q["step"]))
                self._send(200, json.dumps({"status": "success",
                                            "data": {"resultType": "matrix", "result": res}}).encode())

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakePrometheus:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
