"""A private, short-lived local Ray instance for training, that never joins another cluster.

Why: ``ray.init()`` attaches to whatever cluster ``/tmp/ray/ray_current_cluster``
names (on this machine, the emulated multi-node cluster of ``cluster/``), and a
fresh local instance in token mode writes ``~/.ray/auth_token`` when none exists,
which would switch other Ray processes started without ``RAY_AUTH_MODE`` to token
mode. :func:`local_ray` starts its own instance (``address="local"``), with a
random token in a private file unless the caller configured authentication, with
its workers at normal priority (Ray's default nice 15 starves trials on a busy
machine), with 120 s for its GCS to start (Ray's 30 s was missed on a busy 2-core
machine), with its agents' ports pinned (``ray.init`` leaves them to the agents, and
the raylet then waits for their port files, at most a fixed 30 s, which a loaded machine
can exceed: :func:`cluster.ray_compat.raylet_command_with_agent_ports`), and always shuts
it down. The pinned ports are probed free below the ephemeral range and bound a moment
later, as the launcher's are; a port taken in between fails ``ray.init`` (no retry here).
The raylet's own metrics client may give up on a slow agent; training reads no Ray metrics.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cluster.procs import free_fixed_port
from cluster.ray_compat import raylets_with_agent_ports_pinned, refresh_auth_config

_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_NICENESS = "RAY_worker_niceness"
#: how long ``ray.init`` waits for its GCS to publish its port (Ray's default, 30 s, was missed in
#: CI beside an emulated cluster's start on a 2-core machine)
_GCS_WAIT = ("RAY_gcs_server_port_wait_time_s", "120")


@contextmanager
def local_ray(num_cpus: int = 2, object_store_mb: int = 512) -> Iterator[None]:
    """Run the body inside a private local Ray instance of ``num_cpus`` CPUs."""
    import ray

    saved = {k: os.environ.get(k) for k in (*_AUTH_VARS, _NICENESS, _GCS_WAIT[0])}
    # Ray starts workers at nice 15; trials are the work here, not background chores.
    os.environ.setdefault(_NICENESS, "0")
    os.environ.setdefault(*_GCS_WAIT)
    tmp = None
    if not any(saved[k] for k in _AUTH_VARS):
        tmp = tempfile.TemporaryDirectory(prefix="orch-rl-ray-")
        token = Path(tmp.name) / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        refresh_auth_config()
    try:
        with raylets_with_agent_ports_pinned(lambda n: free_fixed_port(span=n, host="0.0.0.0")):
            ray.init(address="local", num_cpus=num_cpus, num_gpus=0, include_dashboard=False,
                     object_store_memory=object_store_mb * 1024 * 1024, log_to_driver=False,
                     configure_logging=True, logging_level="WARNING")
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if tmp is not None:
            refresh_auth_config()
            tmp.cleanup()
