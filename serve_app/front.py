"""The router's hardened HTTP front: Debian's nginx in front of Serve's ports.

Serve's HTTP servers (the proxy and the replica's direct ingress) are uvicorn, Python
on the router's cores: each accepts every connection and hands a request to Python
once its headers are in. :mod:`serve_app.guard` then answers a stalled body 408 and
a client over its share 429, but accepting and reading 10,000 connections opened at
once is itself Python work, and ``/healthz`` went over 100 ms on both ports while it
lasted (docs/abuse.md). nginx does that work in C, event-driven, before the router
sees anything: it reads each request whole (``proxy_request_buffering``), so a
stalled header or body never reaches Python and is closed unanswered (headers within
``header_timeout_s`` in all; a body may pause at most ``body_timeout_s`` between two
reads, so a client dripping a byte at a time holds one of its address's slots, never the
router); it caps the requests in progress per client address (429, once their headers
are in) and the headers' total size (400), answering both in the router's JSON error
shape; and it passes the client's address on in ``X-Real-IP`` (set, never appended to:
a client cannot choose it), which the guard trusts from the router config's
``front_peers`` only.

``orchestrator serve up --front-port N`` checks the port, starts the router with the
front's addresses as ``front_peers``, then runs nginx (files under the launcher state
directory, ``front/``) as a child of the router's holder, which stops it on ``serve
down``. Serve's own ports stay on loopback; the front is the one to expose.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: where Debian's package puts the binary (``/usr/sbin`` is not on every user's PATH)
NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
#: the header nginx sets to the client's address for :mod:`serve_app.guard`
REAL_IP_HEADER = "x-real-ip"
#: the header only this front adds to ``/healthz`` (its value a token of each start): proof that
#: the answer came through it and not from whatever else holds the port
FRONT_HEADER = "x-orchestrator-front"
#: the router's JSON error shape for the answers nginx gives itself
_ERRORS = {429: ((429,), "too many requests in progress from this address", True),
           413: ((413,), "request body too large", False),
           414: ((414,), "request line too long", False),
           400: ((400, 494), "bad request, or request headers too large", False)}  # 494: nginx's own code
                                                                               # for headers too large


class FrontError(RuntimeError):
    """The front could not be configured or started (the reason names what to do)."""


@dataclass(frozen=True)
class FrontConfig:
    """Limits of the front, in the units nginx takes them (defaults: the guard's own)."""

    host: str = "127.0.0.1"
    port: int = 8080
    #: requests in progress per client address, reading its body included (beyond: 429)
    max_requests_per_address: int = 64
    header_timeout_s: float = 5.0
    body_timeout_s: float = 5.0
    max_header_bytes: int = 16 << 10
    max_body_bytes: int = 8 << 20
    #: connections the one worker holds at once (open files: twice this, upstream included)
    max_connections: int = 16384
    #: how long an upstream answer may take (a batch of 10,000 plans)
    upstream_timeout_s: float = 300.0


def nginx_binary() -> str:
    """The nginx executable, or :class:`FrontError` saying how to install it."""
    found = shutil.which("nginx") or next((p for p in NGINX_PATHS if os.access(p, os.X_OK)), None)
    if not found:
        raise FrontError("the front needs nginx: sudo apt-get install nginx (Debian's package)")
    return found


def upstream_host(host: str) -> str:
    """Where the front reaches Serve bound to ``host``: loopback for a wildcard (the front runs on
    the router's host), else ``host`` itself."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def upstreams(host: str, port: int, direct_port: int | None = None) -> list[str]:
    """The router's ports as nginx upstreams: direct ingress first (the replica serves HTTP itself,
    about 3x the proxy's rate), Serve's proxy as the backup."""
    h = upstream_host(host)
    h = f"[{h}]" if ":" in h else h
    return [f"{h}:{p}" for p in (direct_port, port) if p is not None]


def peers(host: str) -> list[str]:
    """The addresses the front's connections to Serve bound to ``host`` come from: the router
    config's ``front_peers`` (a host name is resolved to its addresses)."""
    out = ["127.0.0.1", "::1", "::ffff:127.0.0.1"]
    h = upstream_host(host)
    try:
        found = [str(ipaddress.ip_address(h))]
    except ValueError:
        try:
            found = sorted({str(info[4][0]) for info in socket.getaddrinfo(h, None, proto=socket.IPPROTO_TCP)})
        except OSError as exc:
            raise FrontError(f"cannot resolve the router's host {host!r}: {exc}") from None
    return out + [a for a in found if a not in out]


def check(cfg: FrontConfig, taken: list[int]) -> None:
    """Before anything starts: nginx is installed, the port is not one of the router's (``taken``)
    and nothing listens on it (a front that cannot bind must not pass for one that did)."""
    nginx_binary()
    if cfg.port in taken:
        raise FrontError(f"the front's port {cfg.port} is one of the router's own ({', '.join(map(str, taken))}): "
                         "give it a port of its own")
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((cfg.host, cfg.port))
        except OSError as exc:
            raise FrontError(f"the front cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None


def render(cfg: FrontConfig, upstreams: list[str], prefix: Path, token: str = "") -> str:
    """nginx.conf for ``cfg`` forwarding to ``upstreams`` (``host:port``, the first preferred, the
    rest backups), with every file nginx writes under ``prefix``; ``/healthz`` answers carry
    :data:`FRONT_HEADER` with ``token``."""
    if not upstreams:
        raise FrontError("the front needs at least one upstream (the router's port)")
    p = prefix.absolute()
    servers = "\n".join(f"        server {u}{' backup' if i else ''};" for i, u in enumerate(upstreams))
    listen = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"
    header_k = max(1, cfg.max_header_bytes // 1024)
    # internal URIs, not named locations: a request too malformed to have a URI cannot be redirected
    # to a named one (nginx answers 500 and logs it), and 494 (headers too large) is its own code
    error_pages = "\n".join(
        f"        error_page {' '.join(map(str, codes))} /.e{code};\n        location = /.e{code} {{\n            internal;\n"
        f"            default_type application/json;\n"
        + ("            add_header Retry-After 1 always;\n" if retry else "")
        + f"            return {code} '{{\"detail\": \"{text}\"}}';\n        }}" for code, (codes, text, retry) in _ERRORS.items())
    files, connections = _open_files(cfg.max_connections)
    return f"""# written by serve_app/front.py: regenerate rather than edit
{_user()}worker_processes 1;
worker_shutdown_timeout 3s;   # within stop()'s grace: no worker outlives a killed master
worker_rlimit_nofile {files};
pid {p}/nginx.pid;
error_log {p}/error.log warn;
events {{
    worker_connections {connections};
}}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;

    client_header_timeout {max(1, round(cfg.header_timeout_s * 1000))}ms;
    client_body_timeout {max(1, round(cfg.body_timeout_s * 1000))}ms;
    send_timeout 30s;
    keepalive_timeout 30s;
    client_header_buffer_size 1k;
    large_client_header_buffers 1 {header_k}k;   # one buffer: the headers' total, not each line
    client_max_body_size {cfg.max_body_bytes};
    client_body_buffer_size 64k;

    limit_conn_zone $binary_remote_addr zone=per_address:10m;
    limit_conn_status 429;
    limit_conn_log_level warn;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_request_buffering on;
    proxy_buffering on;                 # a slow reader holds nginx's buffer, not the router's answer
    proxy_connect_timeout 5s;
    proxy_read_timeout {cfg.upstream_timeout_s:g}s;
    proxy_send_timeout {cfg.upstream_timeout_s:g}s;
    proxy_next_upstream error timeout;

    upstream router {{
{servers}
        keepalive 64;
    }}
    server {{
        listen {listen} backlog=4096;
{error_pages}
        location / {{
            limit_conn per_address {cfg.max_requests_per_address};
            proxy_pass http://router;
        }}
        location = /healthz {{
            # a load balancer's probe shares no client's cap (as in serve_app.guard)
            proxy_pass http://router;
            add_header {FRONT_HEADER} "{token}" always;
        }}
    }}
}}
"""


def _user() -> str:
    """Started as root, nginx would run its worker as ``nobody``, which cannot write the request
    bodies it spools under a private folder: the worker keeps the starter's user (as the router,
    Ray and everything else started with it do). Unprivileged, nginx cannot switch and needs nothing."""
    if os.geteuid() != 0:
        return ""
    import grp
    import pwd

    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"


def _with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM when the starting process dies (util-linux's ``setpriv
    --pdeathsig``, no code in the forked child of a threaded parent): no nginx outlives the router
    holder, a benchmark or a test that crashed before :meth:`Front.stop`. The signal follows the
    starting thread: start the front from the main thread."""
    setpriv = shutil.which("setpriv") or ("/usr/bin/setpriv" if os.access("/usr/bin/setpriv", os.X_OK) else None)
    return [setpriv, "--pdeathsig", "TERM", "--", *argv] if setpriv else argv


def stop_running(prefix: str | Path, grace_s: float = 5.0) -> bool:
    """Stop the nginx whose pid file is under ``prefix`` (``serve down``: the holder stops its own
    front on SIGTERM, this catches one that outlived it); True when one was running."""
    prefix = Path(prefix).absolute()
    pid_file = prefix / "nginx.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if str(prefix).encode() not in f.read().split(b"\0"):
                return False  # a recycled pid, or another nginx
        os.kill(pid, signal.SIGQUIT)
    except (OSError, ValueError, IndexError):
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    return True


def _open_files(connections: int) -> tuple[int, int]:
    """(open files to ask for, worker connections): twice the connections (each proxied one has an
    upstream), within this process's hard limit, which nginx cannot raise unprivileged."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    files = 2 * connections + 64 if hard == resource.RLIM_INFINITY else min(2 * connections + 64, hard)
    return files, max(64, min(connections, files - 64))


class Front:
    """A running nginx front (``stop()`` ends it; it also ends with the session that started it)."""

    def __init__(self, cfg: FrontConfig, proc: subprocess.Popen, prefix: Path) -> None:
        self.cfg, self.proc, self.prefix = cfg, proc, prefix

    @property
    def url(self) -> str:
        host = f"[{self.cfg.host}]" if ":" in self.cfg.host else self.cfg.host
        return f"http://{host}:{self.cfg.port}"

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in progress
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(cfg: FrontConfig, upstreams: list[str], prefix: str | Path, timeout_s: float = 30.0) -> Front:
    """Write the config under ``prefix``, check it with ``nginx -t``, run nginx in the foreground
    (a child of this process, in its session) and wait until ``/healthz`` answers through it."""
    binary = nginx_binary()
    prefix = Path(prefix).absolute()
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    token = secrets.token_hex(8)
    conf.write_text(render(cfg, upstreams, prefix, token))
    base = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    tested = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True)
    if tested.returncode:
        raise FrontError(f"nginx refused {conf}: {(tested.stderr or tested.stdout).strip()}")
    with open(prefix / "nginx.out", "ab") as out:
        proc = subprocess.Popen(_with_parent([*base, "-g", "daemon off;"]), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    front = Front(cfg, proc, prefix)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (prefix / "error.log").read_text(errors="replace").strip().splitlines()
            raise FrontError(f"nginx exited ({proc.returncode}): {log[-1] if log else 'see ' + str(prefix)}")
        try:
            with urllib.request.urlopen(f"{front.url}/healthz", timeout=5) as r:
                if r.status == 200 and r.headers.get(FRONT_HEADER) == token:
                    return front
                last = f"{r.status} without this front's {FRONT_HEADER} (another server on the port?)"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    front.stop()
    raise FrontError(f"the front at {front.url} did not answer /healthz in {timeout_s:.0f} s ({last})")
