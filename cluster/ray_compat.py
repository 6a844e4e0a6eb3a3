"""Every private Ray API the project calls, in one place. Checked against Ray 2.60.0.

Ray offers no public way to do these few things, so the code reaches into
``ray._private``, ``ray._raylet``, ``ray.core.generated`` and ``ray.serve._private``
here and nowhere else. Ray may change any of them in a minor release (Ray is pinned
in pyproject.toml for that reason); ``tests/cluster/test_ray_compat.py`` checks each
symbol and signature listed in :data:`PRIVATE_APIS` and fails, naming what to
re-check, when the installed Ray is not :data:`RAY_VERSION_CHECKED`.

Imports are inside the functions: importing this module imports no Ray (nor Serve).
"""
from __future__ import annotations

import functools
import inspect
import re
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

#: The Ray release every use below was read against.
RAY_VERSION_CHECKED = "2.60.0"

#: (module, attribute) of every private Ray symbol used below; the test imports each.
PRIVATE_APIS: tuple[tuple[str, str], ...] = (
    ("ray._private.ray_constants", "ENABLE_RAY_CLUSTER"),
    ("ray._private.ray_constants", "ENABLE_RAY_CLUSTERS_ENV_VAR"),
    ("ray._private.ray_constants", "IS_WINDOWS_OR_OSX"),
    ("ray._private.ray_constants", "env_bool"),
    ("ray._private.ray_constants", "PROCESS_TYPE_RAYLET"),
    ("ray._private.ray_constants", "DEFAULT_DASHBOARD_AGENT_LISTEN_PORT"),
    ("ray._private.services", "start_ray_process"),
    ("ray._private.services", "start_raylet"),
    ("ray._private.state", "available_resources_per_node"),
    ("ray._raylet", "Config"),
    ("ray._raylet", "AuthenticationTokenLoader"),
    ("ray._raylet", "GcsClient"),
    ("ray.core.generated.gcs_pb2", "GcsNodeInfo"),
    ("ray.scripts.scripts", "main"),
    ("ray.scripts.scripts", "ray_constants"),
    ("ray.serve._private.constants", "SERVE_CONTROLLER_NAME"),
    ("ray.serve._private.constants", "SERVE_NAMESPACE"),
    ("ray.serve._private.controller", "ServeController"),
    ("ray.serve._private.replica", "start_asgi_http_server"),
)


#: Ray's local-only mode, the default on macOS and Windows: every node and client takes 127.0.0.1
#: as its IP. On Linux, without it, Ray replaces a loopback node IP and a loopback GCS address by
#: the host's address (``ray._private.services.resolve_ip_for_localhost``), so nothing can stay
#: on loopback. Read once, when Ray is imported (:func:`refresh_local_only`).
LOCAL_ONLY_ENV = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def refresh_local_only() -> None:
    """Make an already imported Ray re-read :data:`LOCAL_ONLY_ENV` (as :func:`refresh_auth_config`)."""
    if "ray" not in sys.modules:
        return
    from ray._private import ray_constants

    # the expression ray_constants itself evaluates at import
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR,
                                                              not ray_constants.IS_WINDOWS_OR_OSX)


#: The command groups ``ray.scripts.scripts`` adds only if they import (``ray job``, ``ray serve``,
#: ``ray list|get|summary|logs``). ``ray start`` needs none of them, and Serve's pulls in pandas and
#: FastAPI: seconds of imports per node the launcher starts, beside the other nodes' starts
#: (``python -m benchmarks cluster_start`` times the import both ways).
OPTIONAL_CLI_MODULES = ("ray.serve.scripts", "ray.dashboard.modules.job.cli", "ray.util.state.state_cli")


def ray_node_cli() -> Any:
    """``ray.scripts.scripts``, imported without :data:`OPTIONAL_CLI_MODULES` where it is not imported
    yet (a ``None`` in ``sys.modules`` fails their import, which Ray skips): its ``cli`` then offers no
    ``job``, ``serve`` or state commands, and those modules stay importable afterwards."""
    blocked = [m for m in OPTIONAL_CLI_MODULES if m not in sys.modules]
    sys.modules.update(dict.fromkeys(blocked))
    try:
        from ray.scripts import scripts
    finally:
        for m in blocked:
            if sys.modules.get(m, ...) is None:
                del sys.modules[m]
    return scripts


def ray_cli_main() -> int:
    """Ray's node commands (``ray start ...``), able to add a node to a cluster in local-only mode.

    In that mode ``ray start --address`` refuses to start ("Multi-node Ray clusters are not
    supported on Windows and OSX"): one ``if`` in ``ray.scripts.scripts.start`` reading
    ``ray_constants.ENABLE_RAY_CLUSTER``. That module alone gets a copy of the constants with
    the flag on; everything else, and every process the node starts, stays local-only.
    The command is :func:`ray_node_cli`'s.
    """
    import types

    from ray._private import ray_constants

    scripts = ray_node_cli()

    view = types.ModuleType(ray_constants.__name__)
    view.__dict__.update(vars(ray_constants))
    view.ENABLE_RAY_CLUSTER = True
    scripts.ray_constants = view
    raylet_told_its_agents_listen_port()
    return scripts.main()


def raylet_command_with_listen_port(command: list[str]) -> list[str]:
    """A raylet's command line, with the dashboard agent's HTTP port given to the raylet itself.

    Ray 2.60's ``start_raylet`` passes the agent its ``--listen-port`` but not the raylet its
    ``--dashboard_agent_listen_port``, so the raylet, before it registers, waits for the agent to
    write that port to a file, and aborts after a fixed 30 s (``WaitForDashboardAgentPorts``). The
    agent imports most of Ray first, which on a loaded 2-core machine takes longer. The launcher
    pins the agent's ports (:func:`cluster.launcher.raylet_port_args`), so the raylet can be told
    this one as it is told the others, and waits for none. Costs: the raylet's own metrics client
    gives up (for good) if the agent's gRPC port does not answer within its 30 tries a second,
    and where another Ray holds the port (Ray's default 52365) the raylet records it anyway
    (only job supervision reads it). Unchanged where the agent's port is left to it (0).
    """
    if any(a.startswith("--dashboard_agent_listen_port=") for a in command):
        return command
    agent = next((a for a in command if a.startswith("--dashboard_agent_command=")), "")
    m = re.search(r"--listen-port=(\d+)", agent)
    if m is None or int(m.group(1)) == 0:
        return command
    return [*command, f"--dashboard_agent_listen_port={m.group(1)}"]


def _launching_raylets_as(rewrite: Callable[[list[str]], list[str]], start: Callable[..., Any]) -> Callable[..., Any]:
    """Ray's ``start_ray_process`` (``start``) with each raylet's command line passed through ``rewrite``
    first; every other process is launched unchanged."""
    from ray._private import ray_constants

    def start_ray_process(command, process_type, *args, **kwargs):
        if process_type == ray_constants.PROCESS_TYPE_RAYLET:
            command = rewrite(list(command))
        return start(command, process_type, *args, **kwargs)

    return start_ray_process


def raylet_told_its_agents_listen_port() -> None:
    """Make this process's ``ray start`` launch raylets with :func:`raylet_command_with_listen_port`
    (once per process)."""
    from ray._private import services

    if getattr(services.start_ray_process, "tells_listen_port", False):
        return
    start_ray_process = _launching_raylets_as(raylet_command_with_listen_port, services.start_ray_process)
    start_ray_process.tells_listen_port = True
    services.start_ray_process = start_ray_process


#: (raylet flag, the agent's flag for the same port) of each agent port that ``ray.init`` leaves 0:
#: the agent then binds a port of its choice and writes it to a file the raylet waits for.
AGENT_PORT_FLAGS = (("--metrics-agent-port", "--grpc-port"), ("--metrics_export_port", "--metrics-export-port"),
                    ("--runtime_env_agent_port", "--runtime-env-agent-port"))
#: the dashboard agent's default HTTP port, one per host: another Ray on the machine may hold it
DEFAULT_AGENT_LISTEN_PORT = 52365
_AGENT_COMMANDS = ("--dashboard_agent_command=", "--runtime_env_agent_command=")


def _flag(name: str, value: int) -> str:
    """``name=value`` as one whole word of a command string."""
    return rf"(?<!\S){re.escape(name)}={value}(?!\S)"


def raylet_command_with_agent_ports(command: list[str], free_ports: Callable[[int], int]) -> list[str]:
    """A raylet's command line with every agent port it leaves to its agents (0) pinned, in its own
    flags and in the agents' commands it carries, and the dashboard agent's default HTTP port replaced.

    ``ray.init`` starts its raylet so: before it registers, the raylet waits for each agent's port
    file, at most a fixed 30 s (:func:`raylet_command_with_listen_port`), which a loaded machine can
    exceed. Pinned, as the launcher pins a node's, it waits for none. All or nothing: unless each
    pinned port's agent flag is found exactly once, the command is left to Ray (which then waits),
    so raylet and agent never disagree. ``free_ports(n)`` gives the first of ``n`` consecutive free ports.
    """
    agent_flag = dict(AGENT_PORT_FLAGS)
    agents = "\n".join(a for a in command if a.startswith(_AGENT_COMMANDS))
    unset = [f for f in agent_flag if f"{f}=0" in command]
    listen = len(re.findall(_flag("--listen-port", DEFAULT_AGENT_LISTEN_PORT), agents)) == 1
    if not (unset or listen) or any(len(re.findall(_flag(agent_flag[f], 0), agents)) != 1 for f in unset):
        return raylet_command_with_listen_port(command)
    base = free_ports(len(unset) + listen)
    pinned = [(f, agent_flag[f], base + k) for k, f in enumerate(unset)]
    out = []
    for arg in command:
        if arg.startswith(_AGENT_COMMANDS):
            for _, agent, port in pinned:
                arg = re.sub(_flag(agent, 0), f"{agent}={port}", arg)
            if listen:
                arg = re.sub(_flag("--listen-port", DEFAULT_AGENT_LISTEN_PORT), f"--listen-port={base + len(unset)}", arg)
        else:
            arg = next((f"{f}={port}" for f, _, port in pinned if arg == f"{f}=0"), arg)
        out.append(arg)
    return raylet_command_with_listen_port(out)


@contextmanager
def raylets_with_agent_ports_pinned(free_ports: Callable[[int], int]) -> Iterator[None]:
    """Within the block, raylets this process starts (``ray.init`` of a local instance) get
    :func:`raylet_command_with_agent_ports`; Ray's own launcher is back afterwards, unless something
    replaced this one meanwhile."""
    from ray._private import services

    start = services.start_ray_process
    start_ray_process = _launching_raylets_as(lambda c: raylet_command_with_agent_ports(c, free_ports), start)
    services.start_ray_process = start_ray_process
    try:
        yield
    finally:
        if services.start_ray_process is start_ray_process:
            services.start_ray_process = start


def available_resources_per_node() -> dict[str, dict[str, float]]:
    """Free resources of each live node, by node id hex (a DeveloperAPI in ``ray._private.state``;
    ``ray.available_resources()`` only gives the cluster's sum)."""
    from ray._private.state import available_resources_per_node as per_node

    return per_node()


def refresh_auth_config() -> None:
    """Make an already imported Ray re-read ``RAY_AUTH_MODE`` and its token (file or variable).

    Ray reads them once at import and caches the token; its own ``ray start`` does the
    same two calls when it switches a new local cluster to token mode. Before Ray is
    imported there is nothing to refresh: the import reads the environment.
    """
    if "ray" not in sys.modules:
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()  # the token file may have changed too


class GcsNodeTable:
    """The GCS node table through a bare GCS client: no ``ray.init``, so no job and no workers.

    Set the auth environment (and :func:`refresh_auth_config`) before constructing it.
    """

    def __init__(self, address: str) -> None:
        from ray._raylet import GcsClient

        self._client = GcsClient(address=address)

    def alive(self, timeout_s: float = 5.0) -> list[tuple[dict[str, str], str]]:
        """(labels, node manager address) of every alive node; raises if the GCS does not answer."""
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        infos = self._client.get_all_node_info(timeout=timeout_s).values()
        return [(dict(n.labels), n.node_manager_address) for n in infos if n.state == GcsNodeInfo.ALIVE]


def serve_http_options() -> dict[str, Any]:
    """Host and port of the running Serve's HTTP proxy, from its controller; {} when none runs
    (``serve.status()`` does not report them)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ctl = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        opts = ray.get(ctl.get_http_config.remote(), timeout=10)
        return {"host": opts.host, "port": opts.port}
    except Exception:  # noqa: BLE001 - no controller yet
        return {}


def replica_binds_with_port_reuse() -> None:
    """Make Serve replicas bind their direct-ingress socket with SO_REUSEADDR and SO_REUSEPORT.

    Wraps ``ray.serve._private.replica.start_asgi_http_server`` so that it is always
    called with ``enable_so_reuseport=True`` (the proxy's server already is); idempotent.
    Raises when the function is not what this expects, so the caller can say so.
    """
    from ray.serve._private import replica

    orig = replica.start_asgi_http_server
    if getattr(orig, "_orch_reuse", False):
        return
    if "enable_so_reuseport" not in inspect.signature(orig).parameters:
        raise TypeError("start_asgi_http_server has no enable_so_reuseport parameter")

    @functools.wraps(orig)  # keeps the original's signature visible (inspect follows __wrapped__)
    async def start_asgi_http_server(*args: Any, **kwargs: Any):
        kwargs["enable_so_reuseport"] = True
        return await orig(*args, **kwargs)

    start_asgi_http_server._orch_reuse = True  # type: ignore[attr-defined]
    replica.start_asgi_http_server = start_asgi_http_server


def replica_reuses_port() -> bool:
    """Whether :func:`replica_binds_with_port_reuse` is in effect in this process."""
    from ray.serve._private import replica

    return bool(getattr(replica.start_asgi_http_server, "_orch_reuse", False))
