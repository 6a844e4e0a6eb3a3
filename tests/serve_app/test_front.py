"""The nginx front (Debian's nginx, run for real) in front of a plain HTTP upstream.

What a client of the router would notice: whole requests pass with their body and the
client's address, a stalled body never reaches the router and is cut at its timeout, one
address cannot hold more than its share while ``/healthz`` and other addresses pass, and
oversized headers are refused. The attack at scale on a running router is
``benchmarks/bench_abuse.py``.
"""
from __future__ import annotations

import os
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_app import front

try:
    front.nginx_binary()
    HAVE_NGINX = True
except front.FrontError:
    HAVE_NGINX = False
needs_nginx = pytest.mark.skipif(not HAVE_NGINX, reason="Debian's nginx is not installed (.ci/system-deps installs it)")


class Upstream(BaseHTTPRequestHandler):
    seen: list = []

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("content-length", 0))))

    def _answer(self, body: bytes) -> None:
        Upstream.seen.append((self.command, self.path, body, self.headers.get_all("x-real-ip"),
                              self.headers.get_all("x-forwarded-for")))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def fronted(tmp_path):
    Upstream.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cfg = front.FrontConfig(port=_free_port(), body_timeout_s=1.0, header_timeout_s=1.0, max_requests_per_address=3,
                            max_header_bytes=2048)
    fr = front.start(cfg, front.upstreams("127.0.0.1", srv.server_port), tmp_path / "front")
    Upstream.seen.clear()  # start() waited for /healthz through it
    yield fr
    fr.stop()
    srv.shutdown()
    assert fr.proc.poll() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stalled(fr: front.Front, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", fr.cfg.port), source_address=(source, 0))
    s.sendall(b"POST /v1/route HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n{\"cpu_")
    return s


def _status(url: str, data: bytes | None = None, headers: dict | None = None, source: str | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@needs_nginx
def test_whole_requests_pass_with_the_clients_address_which_it_cannot_choose(fronted) -> None:
    body = b"x" * 200_000  # past the in-memory buffer: nginx spools it to its own temp folder
    assert _status(f"{fronted.url}/v1/route", body, {"X-Real-IP": "6.6.6.6", "X-Forwarded-For": "6.6.6.6"}) == 200
    method, path, got, real_ip, forwarded = Upstream.seen[-1]
    assert (method, path, got) == ("POST", "/v1/route", body)
    assert real_ip == ["127.0.0.1"] and forwarded == ["127.0.0.1"]  # replaced, not appended to


@needs_nginx
def test_a_stalled_body_never_reaches_the_router_and_is_cut_at_its_timeout(fronted) -> None:
    s = _stalled(fronted)
    s.settimeout(10)
    t0 = time.monotonic()
    assert s.recv(100) == b""  # closed, unanswered (nginx answers a timed-out body with nothing)
    assert 0.9 <= time.monotonic() - t0 < 5
    assert not Upstream.seen
    s.close()


@needs_nginx
def test_one_address_gets_its_share_while_healthz_and_other_addresses_pass(fronted) -> None:
    held = [_stalled(fronted) for _ in range(3)]
    time.sleep(0.2)
    extra = _stalled(fronted)
    extra.settimeout(5)
    answer = extra.recv(1000)
    assert answer.startswith(b"HTTP/1.1 429") and b"Retry-After: 1" in answer
    assert b'{"detail": "too many requests in progress from this address"}' in answer  # the router's shape
    assert _status(f"{fronted.url}/healthz") == 200  # a probe shares no client's cap
    other = socket.create_connection(("127.0.0.1", fronted.cfg.port), source_address=("127.0.0.2", 0))
    other.sendall(b"POST /v1/route HTTP/1.1\r\nHost: x\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{}")
    other.settimeout(5)
    assert other.recv(100).startswith(b"HTTP/1.1 200")
    assert [s[3] for s in Upstream.seen if s[0] == "POST"] == [["127.0.0.2"]]
    for s in (*held, extra, other):
        s.close()


@needs_nginx
def test_oversized_headers_are_refused_by_their_total(fronted) -> None:
    """max_header_bytes (2 KiB here) bounds all the headers together, not each line."""
    for headers in ({"X-Filler": "a" * 4096}, {f"X-F{i}": "a" * 500 for i in range(8)}):
        req = urllib.request.Request(f"{fronted.url}/v1/route", data=b"{}", headers=headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 400 and e.value.headers["content-type"] == "application/json"
        assert "too large" in json.loads(e.value.read())["detail"]  # the router's error shape
    assert not Upstream.seen
    assert _status(f"{fronted.url}/v1/route", b"{}", {"X-F1": "a" * 500, "X-F2": "a" * 500}) == 200


@needs_nginx
def test_a_garbled_request_is_a_400_in_json_and_a_sane_log(fronted) -> None:
    s = socket.create_connection(("127.0.0.1", fronted.cfg.port))
    s.sendall(b"GARBAGE\r\n\r\n")
    s.settimeout(5)
    answer = s.recv(2000)
    s.close()
    assert answer.startswith(b"HTTP/1.1 400") and b'"detail"' in answer
    assert "[error]" not in (fronted.prefix / "error.log").read_text()  # no log line per garbled request


@needs_nginx
def test_a_taken_port_or_a_port_of_the_router_is_refused_before_anything_starts(tmp_path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(front.FrontError, match="cannot listen"):
            front.check(front.FrontConfig(port=port), taken=[8000])
    with pytest.raises(front.FrontError, match="one of the router's own"):
        front.check(front.FrontConfig(port=8000), taken=[8000, 8001])


@needs_nginx
def test_another_server_on_the_port_does_not_pass_for_the_front(tmp_path) -> None:
    """start() trusts only a /healthz answer carrying this start's token: an HTTP server already on the
    port answers 200 while nginx fails to bind it."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with pytest.raises(front.FrontError):
            front.start(front.FrontConfig(port=srv.server_port), [f"127.0.0.1:{srv.server_port}"], tmp_path / "f",
                        timeout_s=8)
    finally:
        srv.shutdown()


def test_a_missing_nginx_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(front, "NGINX_PATHS", ())
    with pytest.raises(front.FrontError, match="apt-get install nginx"):
        front.nginx_binary()


def test_render_puts_every_file_under_its_folder_and_prefers_direct_ingress(tmp_path) -> None:
    text = front.render(front.FrontConfig(port=9000), front.upstreams("127.0.0.1", 8000, 8100), tmp_path)
    assert "server 127.0.0.1:8100;" in text and "server 127.0.0.1:8000 backup;" in text
    # Serve on every interface is reached on loopback, and the guard trusts what the front connects from
    assert front.upstreams("0.0.0.0", 8000) == ["127.0.0.1:8000"] and front.upstreams("::", 8000) == ["[::1]:8000"]
    assert front.peers("10.1.2.3")[-1] == "10.1.2.3" and front.peers("0.0.0.0") == front.peers("127.0.0.1")
    assert "127.0.0.1" in front.peers("localhost")  # a name is resolved: front_peers holds addresses only
    # timeouts in milliseconds: nginx refuses "0.5s"
    assert "client_body_timeout 500ms;" in front.render(front.FrontConfig(body_timeout_s=0.5), ["127.0.0.1:1"], tmp_path)
    paths = [w.rstrip(";") for w in text.split() if w.startswith("/") and w not in ("/", "/healthz")
             and not w.startswith("/.e")]  # the error pages' internal URIs
    assert paths and all(p.startswith(str(tmp_path)) for p in paths)
    with pytest.raises(front.FrontError, match="upstream"):
        front.render(front.FrontConfig(), [], tmp_path)


@needs_nginx
def test_serve_up_refuses_a_front_on_the_routers_own_port_before_deploying(tmp_path, capsys) -> None:
    from orchestrator.cli import main

    code = main(["serve", "up", "--port", "8731", "--front-port", "8731", "--state-dir", str(tmp_path)])
    assert code == 1 and "one of the router's own" in capsys.readouterr().err


def test_stop_running_leaves_an_nginx_of_another_folder_alone(tmp_path) -> None:
    """serve down's cleanup signals only the nginx started under this state folder (a recycled pid or
    the system's nginx is not ours)."""
    (tmp_path / "nginx.pid").write_text(f"{os.getpid()}\n")  # a live process whose command line is not ours
    assert front.stop_running(tmp_path) is False
    assert front.stop_running(tmp_path / "absent") is False
