"""Ports the launcher and the router pick, and the ones a process listens on (no cluster needed)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from cluster import procs
from cluster.procs import ephemeral_ports, free_fixed_port, in_ephemeral_range, listening_sockets


def test_fixed_ports_are_picked_outside_the_ephemeral_range() -> None:
    lo, hi = ephemeral_ports()
    assert in_ephemeral_range(lo) and in_ephemeral_range(hi) and not in_ephemeral_range(lo - 1)
    assert in_ephemeral_range(lo - 1, span=2)  # a range that reaches into it
    base = free_fixed_port(span=2)
    assert not in_ephemeral_range(base, span=2)
    for p in (base, base + 1):
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_a_taken_port_is_never_picked() -> None:
    base = free_fixed_port(span=2, host="0.0.0.0")
    with socket.socket() as held:
        held.bind(("0.0.0.0", base))
        assert free_fixed_port(lo=base, hi=base + 2, host="0.0.0.0") == base + 1  # the only base left


def test_listening_sockets_names_the_address_each_process_listens_on() -> None:
    # what the exposure test reads for Ray's processes; IPv4-mapped IPv6 addresses read as IPv4
    with socket.socket() as v4, socket.socket(socket.AF_INET6) as v6, socket.socket() as idle:
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6.bind(("::", 0))
        v6.listen()
        idle.bind(("127.0.0.1", 0))  # bound, not listening: not reported
        mine = {(a, p) for pid, a, p in listening_sockets([os.getpid()])}
        # (servers an earlier test of this process left listening may be there too)
        assert {("127.0.0.1", v4.getsockname()[1]), ("::", v6.getsockname()[1])} <= mine
        assert not {p for _, p in mine} & {idle.getsockname()[1]}


def test_a_session_process_whose_command_line_is_already_gone_counts_until_it_is_a_zombie(monkeypatch) -> None:
    # an exiting process drops its command line before it lets go of its ports: a stop that
    # stopped waiting then returned while Prometheus still ran (seen under a two-worker suite)
    p = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert procs.session_pids(p.pid, ("sleep",)) == [p.pid]
        monkeypatch.setattr(procs, "cmdline", lambda pid: "")
        assert procs.session_pids(p.pid, ("sleep",)) == [p.pid]
        p.kill()  # not reaped: it turns zombie, still in /proc, and no longer counts
        deadline = time.monotonic() + 5
        while procs.session_pids(p.pid, ("sleep",)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert procs.session_pids(p.pid, ("sleep",)) == []
        assert Path(f"/proc/{p.pid}").exists()
    finally:
        p.kill()
        p.wait()


def test_the_first_stop_signal_raises_and_later_ones_wait_for_the_cleanup_it_set_off() -> None:
    """``cluster up``'s guard: SIGTERM ends the block as an exit (143) whose cleanup a second SIGTERM or
    Ctrl-C cannot cut short; afterwards the handlers are what they were."""
    import signal

    from cluster.procs import interruptible_once

    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    cleaned = []
    with pytest.raises(SystemExit) as stopped:
        with interruptible_once():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises before this ends
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # during the cleanup: ignored
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.1)
                cleaned.append(True)
    assert stopped.value.code == 128 + signal.SIGTERM and cleaned == [True]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
