"""Ports the launcher and the router pick (no cluster needed)."""
from __future__ import annotations

import socket

from cluster.procs import ephemeral_ports, free_fixed_port, in_ephemeral_range


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
