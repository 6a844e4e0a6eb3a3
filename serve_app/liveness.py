"""The live state's view of Ray's nodes, read off the request path, and dead nodes seen in a second.

Two jobs for one background thread, every ``period_s``:

* read the node list from the GCS and keep it for :class:`cluster.live_state.LiveState`
  (its ``reader``), so a decision never waits on the GCS: ``ray.nodes()`` takes
  100 ms here under load, and the live state would otherwise call it on the request
  path, holding the lock every decision needs, every ``refresh_s``;
* probe every alive node's raylet port. The GCS declares a node dead only after
  several missed health checks (about 15 s with Ray's defaults), but a raylet that
  has exited refuses TCP connections at once: a node whose port *refuses* is marked
  dead in the live state (:meth:`~cluster.live_state.LiveState.mark_dead`, the
  executor's own path), so placement and ``/v1/cluster`` see it within a second. A
  connection that merely times out (a busy or partitioned host) proves nothing and
  is left to the GCS. A node restarted under the same name has a new Ray node id and
  is used again.
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Callable

from cluster.live_state import RayNode, read_ray_nodes

log = logging.getLogger("serve_app")


def refuses(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True only when ``host:port`` actively refuses a TCP connection (no process listens)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return False
    except ConnectionRefusedError:
        return True
    except OSError as exc:
        return exc.errno == errno.ECONNREFUSED


def ray_node_ports() -> list[tuple[str, str, int]]:
    """``(node id, node-manager address, port)`` of every node the GCS thinks alive."""
    import ray

    return [(n["NodeID"], n["NodeManagerAddress"], int(n["NodeManagerPort"])) for n in ray.nodes()
            if n.get("Alive") and n.get("NodeManagerPort")]


class NodeWatcher:
    """Background reader of the node list (see the module docstring); ``reader`` is for the live state."""

    def __init__(self, *, period_s: float = 0.5, fetch: Callable[[bool], list[RayNode]] = read_ray_nodes,
                 ports: Callable[[], list[tuple[str, str, int]]] = ray_node_ports) -> None:
        self.period_s = period_s
        self._fetch = fetch
        self._ports = ports
        self._nodes: list[RayNode] | None = None
        self._mark_dead: Callable[[str], None] | None = None
        self.marked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-watcher", daemon=True)

    def reader(self, with_available: bool = False) -> list[RayNode]:
        """The latest node list; a fresh read (free resources included with ``with_available``, for
        ``/v1/cluster``) when asked, or while the background thread is not running."""
        if with_available or self._nodes is None or not self._thread.is_alive():
            nodes = self._fetch(with_available)
            self._nodes = nodes
            return nodes
        return self._nodes

    def start(self, mark_dead: Callable[[str], None]) -> "NodeWatcher":
        self._mark_dead = mark_dead
        self._thread.start()
        return self

    def probe_once(self) -> list[str]:
        """Probe the raylet ports once; returns the node ids found dead (and marks them)."""
        dead = [nid for nid, host, port in self._ports() if nid not in self.marked and refuses(host, port)]
        for nid in dead:
            log.warning("node %s refuses connections on its raylet port: marked dead", nid[:12])
            if self._mark_dead is not None:
                self._mark_dead(nid)
            self.marked.append(nid)
        return dead

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self._nodes = self._fetch(False)
                self.probe_once()
            except Exception:  # noqa: BLE001 - the GCS may be briefly unreachable; next round
                log.debug("node watch round failed", exc_info=True)

    @property
    def started(self) -> bool:
        return self._mark_dead is not None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
