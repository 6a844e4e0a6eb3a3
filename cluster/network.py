"""Where the launcher's Ray processes listen: loopback on one host, every interface when hosts join.

Ray 2.60 has no bind-address option. Every server it starts (GCS, raylet node and
object managers, core workers, the dashboard and runtime-env agents, the metrics
exporters, the Ray Client server) decides from the node's IP alone: loopback binds
127.0.0.1, anything else binds every interface (or the node IP) and is advertised to
the other nodes. On Linux, Ray turns a loopback node IP (and a loopback GCS address
given to ``ray start`` or ``ray.init``) into the host's address unless it runs in
local-only mode (:data:`cluster.ray_compat.LOCAL_ONLY_ENV`); so a loopback cluster sets
that mode in every process it starts and every client it configures (:func:`ray_env`).

"listen" is that choice, made once per cluster and recorded in its state:

* ``127.0.0.1`` (the default): one host, nothing reachable from outside it;
* ``0.0.0.0``: other hosts join; Ray picks the address it advertises;
* an address of this host: other hosts join and reach this host's nodes there.

Every node of one host takes the same choice: a node advertising loopback would be
unreachable from the other hosts' nodes (object transfers, leases, owners' calls).
"""
from __future__ import annotations

import ipaddress
import socket

from cluster.ray_compat import LOCAL_ONLY_ENV

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def node_ip_args(listen: str) -> list[str]:
    """The ``ray start`` flag that gives a node the listening scope ``listen`` (see the module docstring)."""
    if is_loopback(listen):
        return [f"--node-ip-address={LOOPBACK}"]
    if listen == ALL_INTERFACES:
        return []
    return [f"--node-ip-address={listen}"]


def ray_env(env: dict[str, str], listen: str) -> dict[str, str]:
    """``env`` for a Ray process or client of a cluster listening on ``listen``: local-only mode
    on loopback, and never inherited otherwise (a shell set up for a loopback cluster)."""
    out = dict(env)
    name, value = LOCAL_ONLY_ENV
    out.pop(name, None)
    if is_loopback(listen):
        out[name] = value
    return out


def join_listen(head_address: str, local_listen: str | None) -> str:
    """The scope of a node joining ``head_address``: the one asked for (``local_listen``), else
    loopback for a head on this host's loopback, else every interface (the head is elsewhere)."""
    if local_listen is not None:
        return local_listen
    return LOOPBACK if is_loopback(head_address.rsplit(":", 1)[0].strip("[]")) else ALL_INTERFACES


def host_address() -> str | None:
    """This host's address as another host would reach it (the route out), or None with only loopback.

    A UDP ``connect`` sends nothing; it only asks the kernel which source address it would use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 80))  # as Ray's own node-IP detection does
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(addr) or addr == ALL_INTERFACES else addr
