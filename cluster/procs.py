"""Processes and ports of the launcher: find a ``ray start``'s processes by session, stop them.

Each ``ray start`` the launcher runs is a session leader (``start_new_session``),
and every process Ray spawns for that node inherits the session id (workers
change their process group, not their session), so a session id names exactly
one node's processes. Linux reads ``/proc``; elsewhere ``ps``.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable

_RAY_MARKERS = ("ray", "raylet", "gcs_server")


def all_pids() -> Iterable[int]:
    proc = Path("/proc")
    if proc.is_dir():
        return (int(p.name) for p in proc.iterdir() if p.name.isdigit())
    out = subprocess.run(["ps", "-A", "-o", "pid="], capture_output=True, text=True, check=False).stdout
    return (int(x) for x in out.split())


def cmdline(pid: int) -> str:
    p = Path(f"/proc/{pid}/cmdline")
    try:
        if p.exists():
            return p.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        return subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True,
                              check=False).stdout
    except OSError:
        return ""


def session_pids(sid: int, markers: tuple[str, ...] = _RAY_MARKERS) -> list[int]:
    """Live Ray processes of session ``sid`` (the ``ray start`` this launcher ran).

    The command line must contain one of ``markers`` too (Ray's, by default), a guard
    against a recycled session id.
    """
    me = os.getpid()
    out = []
    for pid in all_pids():
        if pid == me:
            continue
        try:
            if os.getsid(pid) != sid:
                continue
        except OSError:
            continue
        cmd = cmdline(pid)
        if any(m in cmd for m in markers) and not _is_zombie(pid):
            out.append(pid)
    return out


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stop_sessions(sids: list[int], grace_s: float = 8.0, markers: tuple[str, ...] = _RAY_MARKERS) -> int:
    """SIGTERM every process of ``sids``, then SIGKILL what is left after ``grace_s``."""
    pids = [p for s in sids for p in session_pids(s, markers)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        left = [p for s in sids for p in session_pids(s, markers)]
        if not left:
            return len(pids)
        time.sleep(0.2)
    for p in [p for s in sids for p in session_pids(s, markers)]:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return len(pids)


def port_free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port() -> int:
    """A TCP port free right now (for tests and the Ray client server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux; IANA's elsewhere)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 49152, 65535


def in_ephemeral_range(port: int, span: int = 1) -> bool:
    lo, hi = ephemeral_ports()
    return port <= hi and port + span - 1 >= lo


def free_fixed_port(span: int = 1, lo: int = 20_000, hi: int = 32_000, host: str = "127.0.0.1") -> int:
    """``span`` consecutive free ports outside the ephemeral range, for a port a process binds later.

    A port picked inside the ephemeral range (:func:`free_port`) can be taken before
    its process binds it, or while it restarts, by any outgoing connection on the
    machine (Ray's own gRPC clients open hundreds), and the process then cannot bind
    it until that connection ends: the router's direct-ingress port across replica
    restarts, a raylet's dashboard agent during ``ray start``. (The other cause of a
    replica unable to bind its port, TIME_WAIT connections, is handled in
    :mod:`serve_app.deployment`.)
    """
    import random

    start = random.randrange(lo, hi - span + 1)  # ports lo .. hi - 1
    for base in list(range(start, hi - span + 1)) + list(range(lo, start)):
        if in_ephemeral_range(base, span):
            continue
        try:
            socks = []
            for p in range(base, base + span):
                s = socket.socket()
                socks.append(s)
                s.bind((host, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {span} free consecutive port(s) from {lo} to {hi - 1}")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
