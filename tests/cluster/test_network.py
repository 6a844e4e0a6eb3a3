"""Where a cluster's Ray processes listen, and what its clients need (no cluster needed)."""
from __future__ import annotations

import json

import pytest

from cluster import launcher
from cluster.network import ALL_INTERFACES, LOOPBACK, is_loopback, join_listen, node_ip_args, ray_env
from cluster.ray_compat import LOCAL_ONLY_ENV

NAME, VALUE = LOCAL_ONLY_ENV


@pytest.mark.parametrize("listen, args, local_only", [
    (LOOPBACK, [f"--node-ip-address={LOOPBACK}"], True),
    ("localhost", [f"--node-ip-address={LOOPBACK}"], True),
    (ALL_INTERFACES, [], False),  # Ray picks the address it advertises
    ("10.1.2.3", ["--node-ip-address=10.1.2.3"], False),
])
def test_a_loopback_cluster_runs_local_only_and_any_other_never(listen, args, local_only) -> None:
    assert node_ip_args(listen) == args
    env = ray_env({NAME: VALUE, "PATH": "/bin"}, listen)  # e.g. a shell set up for a loopback cluster
    assert env.get("PATH") == "/bin" and (env.get(NAME) == VALUE) == local_only
    assert (NAME in ray_env({}, listen)) == local_only


def test_a_joining_node_listens_as_its_head_implies_unless_told() -> None:
    assert join_listen("127.0.0.1:6380", None) == LOOPBACK
    assert join_listen("[::1]:6380", None) == LOOPBACK
    assert join_listen("10.0.0.5:6380", None) == ALL_INTERFACES
    assert join_listen("10.0.0.5:6380", "10.0.0.9") == "10.0.0.9"
    assert is_loopback("127.0.0.2") and not is_loopback("head.example") and not is_loopback(ALL_INTERFACES)


def test_clients_of_a_loopback_cluster_get_local_only_mode(tmp_path) -> None:
    # without it ray.init turns 127.0.0.1 into the host's address, where a loopback GCS does not listen
    st = launcher.LaunchState(config="c.yaml", state_dir=str(tmp_path), temp_dir=str(tmp_path / "ray"),
                              token_file="t", gcs_port=6380, dashboard_host=LOOPBACK, dashboard_port=8265,
                              client_port=1)
    assert launcher.client_env(st)[NAME] == VALUE and launcher.client_env(st)["RAY_ADDRESS"] == "127.0.0.1:6380"
    st.listen = ALL_INTERFACES
    assert NAME not in launcher.client_env(st)


def test_a_state_file_from_before_reads_as_a_loopback_cluster_without_retries(tmp_path) -> None:
    st = launcher.LaunchState(config="c.yaml", state_dir=str(tmp_path), temp_dir=str(tmp_path / "ray"),
                              token_file="t", gcs_port=6380, dashboard_host=LOOPBACK, dashboard_port=8265,
                              client_port=1, listen=ALL_INTERFACES, retries=["edge-1: bind"])
    st.save()
    path = tmp_path / launcher.STATE_FILE
    data = json.loads(path.read_text())
    del data["listen"], data["retries"]
    path.write_text(json.dumps(data))
    old = launcher.LaunchState.load(tmp_path)
    assert old is not None and old.listen == LOOPBACK and old.retries == []
