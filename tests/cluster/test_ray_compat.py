"""The private Ray APIs of :mod:`cluster.ray_compat` are still what the code expects.

Each test fails with a message naming what to re-read in Ray's source when Ray moves
or changes one of them (no cluster is started here).
"""
from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cluster import ray_compat
from tests.conftest import REPO_ROOT

RECHECK = ("re-read every symbol of cluster.ray_compat.PRIVATE_APIS in the new Ray's source, then update "
           "RAY_VERSION_CHECKED")


def test_the_installed_ray_is_the_one_the_private_calls_were_checked_against() -> None:
    import ray

    assert ray.__version__ == ray_compat.RAY_VERSION_CHECKED, (
        f"Ray {ray.__version__} is installed, cluster/ray_compat.py was checked against "
        f"{ray_compat.RAY_VERSION_CHECKED}: {RECHECK}")


@pytest.mark.parametrize("module, name", ray_compat.PRIVATE_APIS, ids=lambda x: x)
def test_every_private_symbol_still_exists(module: str, name: str) -> None:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is gone ({exc}): {RECHECK}")
    assert hasattr(mod, name), f"{module}.{name} is gone: {RECHECK}"


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_private_signatures_are_the_ones_called() -> None:
    from ray._private.state import available_resources_per_node
    from ray._raylet import AuthenticationTokenLoader, Config, InnerGcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve._private.controller import ServeController
    from ray.serve._private.replica import start_asgi_http_server
    from ray.serve.config import HTTPOptions

    assert _params(available_resources_per_node) == [], RECHECK
    assert _params(Config.initialize) == ["config_list"], RECHECK
    assert callable(AuthenticationTokenLoader.instance) and callable(AuthenticationTokenLoader.reset_cache), RECHECK
    # GcsClient forwards its calls to InnerGcsClient (it has no methods of its own to inspect)
    assert "timeout" in _params(InnerGcsClient.get_all_node_info), RECHECK
    fields = {f.name for f in GcsNodeInfo.DESCRIPTOR.fields}
    assert {"labels", "node_manager_address", "state"} <= fields and isinstance(GcsNodeInfo.ALIVE, int), RECHECK
    assert isinstance(SERVE_CONTROLLER_NAME, str) and isinstance(SERVE_NAMESPACE, str), RECHECK
    assert _params(ServeController.get_http_config) == ["self"], RECHECK
    assert {"host", "port"} <= set(HTTPOptions.model_fields), RECHECK
    reuse = inspect.signature(start_asgi_http_server).parameters.get("enable_so_reuseport")
    assert reuse is not None and reuse.kind is inspect.Parameter.KEYWORD_ONLY, RECHECK


def test_a_raylet_is_told_its_agents_pinned_listen_port_and_nothing_else_changes() -> None:
    agent = "--dashboard_agent_command=python agent.py --grpc-port=21001 --listen-port=21002 --x"
    cmd = ["raylet", "--node_manager_port=21000", agent]
    assert ray_compat.raylet_command_with_listen_port(cmd) == [*cmd, "--dashboard_agent_listen_port=21002"]
    told = [*cmd, "--dashboard_agent_listen_port=7"]
    assert ray_compat.raylet_command_with_listen_port(told) == told  # already told: as it is
    unpinned = ["raylet", agent.replace("21002", "0")]
    assert ray_compat.raylet_command_with_listen_port(unpinned) == unpinned  # the agent picks: the raylet must wait


# a raylet's command as ``ray.init`` builds it (Ray 2.60's ``start_raylet``), cut to the flags that matter here
INIT_RAYLET = ["raylet", "--node_manager_port=0", "--metrics-agent-port=0", "--metrics_export_port=0",
               "--runtime_env_agent_port=0",
               "--dashboard_agent_command=python agent.py --metrics-export-port=0 --grpc-port=0 --listen-port=52365 "
               "--gcs-address=127.0.0.1:6379",
               "--runtime_env_agent_command=python runtime_env_agent.py --runtime-env-agent-port=0 --log-dir=x"]


def test_a_local_instances_raylet_gets_every_agent_port_pinned_in_its_flags_and_its_agents_commands() -> None:
    asked: list[int] = []
    out = ray_compat.raylet_command_with_agent_ports(INIT_RAYLET, lambda n: asked.append(n) or 30000)
    assert asked == [4]
    assert out == ["raylet", "--node_manager_port=0", "--metrics-agent-port=30000", "--metrics_export_port=30001",
                   "--runtime_env_agent_port=30002",
                   "--dashboard_agent_command=python agent.py --metrics-export-port=30001 --grpc-port=30000 "
                   "--listen-port=30003 --gcs-address=127.0.0.1:6379",
                   "--runtime_env_agent_command=python runtime_env_agent.py --runtime-env-agent-port=30002 "
                   "--log-dir=x",
                   "--dashboard_agent_listen_port=30003"]  # so the raylet waits for no port file at all


def test_a_raylet_whose_ports_are_pinned_already_only_learns_its_listen_port() -> None:
    pinned = [a.replace("=0", "=2100") for a in INIT_RAYLET]  # as the launcher's `ray start` gives them
    pinned[-2] = pinned[-2].replace("--listen-port=52365", "--listen-port=2104")
    out = ray_compat.raylet_command_with_agent_ports(pinned, lambda n: pytest.fail("no port needed"))
    assert out == [*pinned, "--dashboard_agent_listen_port=2104"]


def test_pinning_applies_to_raylets_within_the_block_only(monkeypatch) -> None:
    from ray._private import ray_constants, services

    seen = []
    monkeypatch.setattr(services, "start_ray_process", lambda command, process_type, *a, **k: seen.append(command))
    with ray_compat.raylets_with_agent_ports_pinned(lambda n: 30000):
        services.start_ray_process(INIT_RAYLET, ray_constants.PROCESS_TYPE_RAYLET)
        services.start_ray_process(["gcs_server", "--metrics-agent-port=0"], ray_constants.PROCESS_TYPE_GCS_SERVER)
    services.start_ray_process(INIT_RAYLET, ray_constants.PROCESS_TYPE_RAYLET)
    assert "--metrics-agent-port=30000" in seen[0]
    assert seen[1:] == [["gcs_server", "--metrics-agent-port=0"], INIT_RAYLET]


def test_a_raylet_whose_agent_flag_is_not_found_once_is_left_to_ray() -> None:
    """All or nothing: a port pinned in the raylet's flags but not in its agent's would be a port the
    raylet registers and no agent binds."""
    moved = [a.replace("--runtime-env-agent-port=0", "--runtime-env-agent-port 0") for a in INIT_RAYLET]
    out = ray_compat.raylet_command_with_agent_ports(moved, lambda n: pytest.fail("no port needed"))
    assert out == [*moved, "--dashboard_agent_listen_port=52365"]  # only the port its agent was given


def test_the_pinning_ends_with_its_block_even_when_ray_init_fails(monkeypatch) -> None:
    from ray._private import services

    ray_start = services.start_ray_process
    with pytest.raises(RuntimeError):
        with ray_compat.raylets_with_agent_ports_pinned(lambda n: 30000):
            assert services.start_ray_process is not ray_start
            raise RuntimeError("ray.init failed")
    assert services.start_ray_process is ray_start


def test_ray_init_still_leaves_its_agents_ports_to_them() -> None:
    """Why the pinning exists: ``ray.init``'s node passes 0 for the ports nobody gave, and Ray's
    ``start_raylet`` writes them under the flag names the pinning rewrites, in the commands it reads."""
    from ray._private import node, services

    assert "metrics_agent_port=ray_params.metrics_agent_port or 0" in inspect.getsource(node.Node), RECHECK
    src = inspect.getsource(services.start_raylet)
    head, rest = src.split("runtime_env_agent_command = [", 1)
    runtime_env_agent, raylet = rest.split("\n    ]", 1)
    dashboard_agent = head.split("dashboard_agent_command = [", 1)[1].split("\n    ]", 1)[0]
    agents = dashboard_agent + runtime_env_agent
    for raylet_flag, agent_flag in ray_compat.AGENT_PORT_FLAGS:
        assert f'"{raylet_flag}={{' in raylet and f'"{agent_flag}={{' in agents, (raylet_flag, agent_flag, RECHECK)
    assert '"--listen-port={' in dashboard_agent, RECHECK
    assert all(f'"{prefix}{{' in raylet or f'"{prefix}"' in raylet for prefix in ray_compat._AGENT_COMMANDS), RECHECK
    constants = importlib.import_module("ray._private.ray_constants")
    assert constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT == ray_compat.DEFAULT_AGENT_LISTEN_PORT, RECHECK


def test_ray_still_starts_raylets_without_the_listen_port_through_the_patched_function() -> None:
    """Why the patch exists, and that it takes: Ray's ``start_raylet`` gives the agent its listen port but
    not the raylet, and launches it through the module's ``start_ray_process`` (looked up at call time)."""
    from ray._private import services

    src = inspect.getsource(services.start_raylet)
    assert "--listen-port=" in src and "dashboard_agent_listen_port=" not in src.replace(
        "dashboard_agent_listen_port: Optional", ""), RECHECK
    assert "start_ray_process(\n        command,\n        ray_constants.PROCESS_TYPE_RAYLET" in src, RECHECK
    assert _params(services.start_ray_process)[:2] == ["command", "process_type"], RECHECK


def test_the_launch_patch_applies_once_and_passes_other_processes_through(monkeypatch) -> None:
    from ray._private import ray_constants, services

    seen = []
    monkeypatch.setattr(services, "start_ray_process", lambda command, process_type, *a, fate_share, **k: seen.append(
        (process_type, command, fate_share)))
    ray_compat.raylet_told_its_agents_listen_port()
    ray_compat.raylet_told_its_agents_listen_port()  # a second call does not wrap twice
    agent = "--dashboard_agent_command=a --listen-port=5"
    services.start_ray_process(["raylet", agent], ray_constants.PROCESS_TYPE_RAYLET, fate_share=True)
    services.start_ray_process(["gcs_server", agent], ray_constants.PROCESS_TYPE_GCS_SERVER, fate_share=False)
    assert seen == [(ray_constants.PROCESS_TYPE_RAYLET, ["raylet", agent, "--dashboard_agent_listen_port=5"], True),
                    (ray_constants.PROCESS_TYPE_GCS_SERVER, ["gcs_server", agent], False)]


def test_the_launchers_ray_start_tells_raylets_their_listen_port(monkeypatch) -> None:
    from ray._private import services
    from ray.scripts import scripts

    monkeypatch.setattr(services, "start_ray_process", lambda *a, **k: None)
    monkeypatch.setattr(scripts, "main", lambda: getattr(services.start_ray_process, "tells_listen_port", False))
    monkeypatch.setattr(scripts, "ray_constants", scripts.ray_constants)  # ray_cli_main swaps it
    assert ray_compat.ray_cli_main() is True
    raylet = (Path(services.__file__).parent.parent / "core" / "src" / "ray" / "raylet" / "raylet").read_bytes()
    assert b"dashboard_agent_listen_port" in raylet, RECHECK  # gflags aborts on a flag it does not know


def test_the_launchers_ray_start_offers_start_without_importing_serve_jobs_or_state() -> None:
    """Each node's `ray start` skips the command groups it does not run (seconds of imports on a
    small machine), and leaves them importable. Run in a child: imports are process-wide."""
    code = textwrap.dedent("""
        import sys
        from cluster import ray_compat
        sys.argv = ["ray", "start", "--help"]
        try:
            ray_compat.ray_cli_main()
        except SystemExit as e:
            assert not e.code, e.code
        cli = sys.modules["ray.scripts.scripts"].cli
        seen = ["start" in cli.commands, "job" in cli.commands, "ray.serve" in sys.modules,
                [m for m in ray_compat.OPTIONAL_CLI_MODULES if m in sys.modules]]
        import ray.serve.scripts
        print(seen)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--address" in out.stdout  # `ray start --help` itself
    assert out.stdout.strip().splitlines()[-1] == "[True, False, False, []]", RECHECK


def test_refresh_makes_an_imported_ray_read_the_new_token_and_mode(tmp_path) -> None:
    """Without the refresh Ray keeps the token it read first (its cache), so a process that talks to
    two clusters would send the wrong one. Run in a child: Ray's auth cache is process-wide."""
    (tmp_path / "a").write_text("token-a")
    (tmp_path / "b").write_text("token-b")
    code = textwrap.dedent(f"""
        import os
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH={str(tmp_path / 'a')!r})
        os.environ.pop("RAY_AUTH_TOKEN", None)
        import ray
        from ray._raylet import AuthenticationTokenLoader
        from cluster.ray_compat import refresh_auth_config
        read = lambda: AuthenticationTokenLoader.instance().get_raw_token()
        seen = [read()]
        os.environ["RAY_AUTH_TOKEN_PATH"] = {str(tmp_path / 'b')!r}
        seen.append(read())
        refresh_auth_config()
        seen.append(read())
        del os.environ["RAY_AUTH_MODE"]
        refresh_auth_config()
        seen.append(read())
        print(seen)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "['token-a', 'token-a', 'token-b', '']", RECHECK


def test_local_only_mode_keeps_loopback_and_the_cli_can_still_add_a_node() -> None:
    """A loopback cluster rests on three things Ray 2.60 does: in local-only mode it keeps 127.0.0.1
    (out of it, Linux gets the host's address), the mode is read at import (so a refresh), and
    ``ray start --address`` checks it in ``ray.scripts.scripts`` alone. Run in a child: it is process-wide."""
    name, value = ray_compat.LOCAL_ONLY_ENV
    code = textwrap.dedent(f"""
        import os
        os.environ[{name!r}] = {value!r}
        from ray._private import ray_constants, services
        from ray.scripts import scripts
        from cluster import ray_compat
        seen = [ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, services.resolve_ip_for_localhost("127.0.0.1")]
        scripts.main = lambda: (scripts.ray_constants.ENABLE_RAY_CLUSTER, ray_constants.ENABLE_RAY_CLUSTER)
        seen.append(ray_compat.ray_cli_main())  # the CLI's check lifted, the rest of Ray still local-only
        del os.environ[{name!r}]
        ray_compat.refresh_local_only()
        seen.append(ray_constants.ENABLE_RAY_CLUSTER)
        print(seen)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"[{name!r}, '127.0.0.1', (True, False), True]", RECHECK


def test_the_replica_patch_passes_port_reuse_and_is_idempotent(monkeypatch) -> None:
    from ray.serve._private import replica

    from serve_app.loadgen import run_sync  # not asyncio.run: a browser test may leave a loop running here

    seen = []

    async def fake(app, options, *, event_loop, enable_so_reuseport=False):
        seen.append(enable_so_reuseport)
        return "started"

    monkeypatch.setattr(replica, "start_asgi_http_server", fake)
    assert not ray_compat.replica_reuses_port()
    ray_compat.replica_binds_with_port_reuse()
    ray_compat.replica_binds_with_port_reuse()  # a second call does not wrap twice
    assert ray_compat.replica_reuses_port()
    assert run_sync(replica.start_asgi_http_server(None, None, event_loop=None)) == "started"
    assert seen == [True]


def test_the_replica_patch_refuses_a_function_without_the_option(monkeypatch) -> None:
    from ray.serve._private import replica

    async def other(app, options, *, event_loop):
        return "started"

    monkeypatch.setattr(replica, "start_asgi_http_server", other)
    with pytest.raises(TypeError, match="enable_so_reuseport"):
        ray_compat.replica_binds_with_port_reuse()
    assert replica.start_asgi_http_server is other
