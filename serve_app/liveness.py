"""Notice a dead node in about a second instead of the GCS's ~15 s.

The GCS declares a node dead only after several missed health checks (about 15 s
with Ray's defaults); until then the node looks alive and policies keep sending
work there. A raylet that has exited, though, refuses TCP connections on its
node-manager port at once. This prober connects to every node's port every
``period_s`` and marks a node whose port *refuses* the connection dead in the live
state (:meth:`cluster.live_state.LiveState.mark_dead`, the executor's own path), so
placement and ``/v1/cluster`` see it immediately. A connection that merely times
out (a busy or partitioned host) proves nothing and is left to the GCS. A node
restarted under the same name has a new Ray node id and is used again.
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Callable

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


class NodeProber:
    """Background thread: probe each alive node's raylet port; mark refusers dead."""

    def __init__(self, mark_dead: Callable[[str], None], *, period_s: float = 0.5,
                 nodes: Callable[[], list[tuple[str, str, int]]] = ray_node_ports) -> None:
        self._mark_dead = mark_dead
        self._nodes = nodes
        self.period_s = period_s
        self.marked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-prober", daemon=True)

    def start(self) -> "NodeProber":
        self._thread.start()
        return self

    def probe_once(self) -> list[str]:
        """One round; returns the node ids found dead."""
        dead = [nid for nid, host, port in self._nodes() if nid not in self.marked and refuses(host, port)]
        for nid in dead:
            log.warning("node %s refuses connections on its raylet port: marked dead", nid[:12])
            self._mark_dead(nid)
            self.marked.append(nid)
        return dead

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.probe_once()
            except Exception:  # noqa: BLE001 - the GCS may be briefly unreachable; next round
                log.debug("node probe failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
