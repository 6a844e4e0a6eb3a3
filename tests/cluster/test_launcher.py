"""The raylet environment the launcher sets (no cluster needed)."""
from __future__ import annotations

from dataclasses import replace

from cluster import launcher
from cluster.ray_resources import cluster_resources
from cluster.topology import load_cluster
from tests.conftest import CONFIGS


def test_each_raylet_keeps_as_many_spare_workers_as_it_has_cpus() -> None:
    # Ray 2.60 prestarts up to num_workers_soft_limit idle workers beyond the busy ones whenever
    # an owner queues tasks: twice the CPUs grew every node's pool to ~3x its CPUs under the router.
    spec = load_cluster(CONFIGS / "cluster" / "test_small.yaml")
    for res in cluster_resources(spec):
        env = launcher._node_env({}, res)
        assert env["RAY_num_workers_soft_limit"] == str(res.num_cpus), res.name
        assert env["RAY_idle_worker_killing_time_threshold_ms"] == str(launcher.IDLE_WORKER_KEEP_MS)


def test_an_operator_setting_wins_and_a_node_without_cpus_keeps_rays_default() -> None:
    spec = load_cluster(CONFIGS / "cluster" / "test_small.yaml")
    res = cluster_resources(spec)[1]
    env = launcher._node_env({"RAY_num_workers_soft_limit": "16"}, res)
    assert env["RAY_num_workers_soft_limit"] == "16"
    assert "RAY_num_workers_soft_limit" not in launcher._node_env({}, replace(res, num_cpus=0))
