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
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

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
    against a recycled session id; an empty one passes (a process of the session that is
    exiting), so a stop waits for it, and a recycled id whose process is exiting just then
    gets a signal it no longer needs. Zombies are gone.
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
        # An exiting process has already released its command line but still holds its
        # ports and files until it is a zombie: count it as live, or a stop returns early.
        exiting = not cmd and Path(f"/proc/{pid}").exists()
        if (exiting or any(m in cmd for m in markers)) and not _is_zombie(pid):
            out.append(pid)
    return out


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stop_sessions(sids: list[int], grace_s: float = 8.0, markers: tuple[str, ...] = _RAY_MARKERS,
                  kill_wait_s: float = 5.0) -> int:
    """SIGTERM every process of ``sids``, then SIGKILL what is left after ``grace_s``.

    Returns once they are gone (or after ``kill_wait_s`` more): a process takes a moment to
    exit after SIGKILL, and a caller that checks, or binds its ports, right after should not
    find it (seen: 2 of 20 ``down`` calls returned with processes still exiting).
    """
    pids = [p for s in sids for p in session_pids(s, markers)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not any(session_pids(s, markers) for s in sids):
            return len(pids)
        time.sleep(0.2)
    deadline = time.monotonic() + kill_wait_s
    while True:  # again until none is left: one may have been forked while its parent stopped
        left = [p for s in sids for p in session_pids(s, markers)]
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        if not left or time.monotonic() >= deadline:
            return len(pids)
        time.sleep(0.2)


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


def _proc_addr(hexaddr: str) -> str:
    """An address of ``/proc/net/tcp{,6}`` (host byte order, per 32-bit word) as text."""
    import ipaddress

    raw = bytes.fromhex(hexaddr)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.ip_address(raw)
    mapped = getattr(addr, "ipv4_mapped", None)
    return str(mapped or addr)


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """``(pid, address, port)`` of every TCP socket the processes ``pids`` listen on (Linux ``/proc``).

    Read from ``/proc`` rather than ``ss -p``, which names other users' processes only to root.
    """
    listen: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A":  # TCP_LISTEN
                host, port = f[1].split(":")
                listen[f[9]] = (_proc_addr(host), int(port, 16))
    out = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listen:
                out.append((pid, *listen[target[8:-1]]))
    return sorted(set(out))


@contextmanager
def interruptible_once() -> Iterator[None]:
    """Within the block, the first SIGTERM (``kill``, ``timeout``, a cancelled CI job) raises
    ``SystemExit(143)`` and the first SIGINT ``KeyboardInterrupt``; later ones are ignored until the
    block ends, so the cleanup they set off runs to its end.

    Python's default for SIGTERM is to die at once, so no ``except``/``finally`` runs: the ``ray start``
    sessions a launch had begun (each in a session of its own) would outlive it, unrecorded; a second
    Ctrl-C would cut their stopping short the same way. Only the main thread can take a signal handler;
    elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # a signal the process was started ignoring (``cluster up &`` in a script: SIGINT) stays ignored
    signals = tuple(sig for sig in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(sig) is not signal.SIG_IGN)

    def _once(signum: int, _frame) -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, _once) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
