"""Cluster topology YAML: the shipped local cluster loads, and every bad config names file and field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cluster.config import ConfigError
from cluster.topology import (MIG_PROFILES, load_cluster, load_gpu_models, mig_fraction, node_class,
                              validate_mig_layout)
from tests.conftest import CONFIGS, LOCAL_YAML

MIG_NODE = 4  # index of gpu-mig-1 in local.yaml
TS_NODE = 5  # index of gpu-ts-1


def write(tmp_path: Path, data: dict, name: str = "cluster.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_cluster(path)
    return info.value


# ---------------------------------------------------------------- the shipped cluster


def test_local_cluster_has_every_kind_of_node(local_spec) -> None:
    kinds = [local_spec.tiers[n.tier].kind for n in local_spec.nodes]
    assert kinds.count("edge") >= 2 and kinds.count("cloud") >= 2
    gpu_nodes = [n for n in local_spec.nodes if n.devices]
    assert len(gpu_nodes) >= 2
    assert all(local_spec.tiers[n.tier].kind == "gpu" for n in gpu_nodes)
    assert sorted(n.sharing for n in gpu_nodes) == ["mig", "time-slicing"]
    assert local_spec.source == str(LOCAL_YAML) and local_spec.name == "local"
    assert len({n.name for n in local_spec.nodes}) == len(local_spec.nodes)


def test_local_cluster_units_and_gpu_figures(local_spec) -> None:
    edge = local_spec.node("edge-1")
    assert (edge.cpu_milli, edge.mem_mib, edge.cpu_speed, edge.gpu_count) == (4000, 8192, 0.6, 0)
    models = load_gpu_models()
    mig, ts = local_spec.nodes[MIG_NODE], local_spec.nodes[TS_NODE]
    assert mig.name == "gpu-mig-1" and ts.name == "gpu-ts-1"
    # MIG: each device keeps its own layout; time-slicing: replicas 4 -> quarter-GPU granularity
    assert [d.mig_instances for d in mig.devices] == [("3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"),
                                                      ("4g.40gb", "2g.20gb", "1g.10gb")]
    assert [d.granularity for d in ts.devices] == [250, 250]
    assert (ts.gpu_speed, ts.colocation_factor) == models["V100"]
    assert (mig.gpu_speed, mig.colocation_factor) == models["A100"]
    assert [node_class(n, local_spec.tiers[n.tier]) for n in local_spec.nodes] == \
        ["edge", "edge", "cloud", "cloud", "gpu-mig", "gpu-shared"]
    edge_tier = local_spec.tiers["edge"]
    assert edge_tier.network_ms == (50.0, 150.0) and edge_tier.network_mean_ms == 100.0


def test_shipped_local_yaml_round_trips_through_tmp(tmp_path: Path, local_data: dict, local_spec) -> None:
    spec = load_cluster(write(tmp_path, local_data))
    assert spec.nodes == local_spec.nodes and spec.tiers == local_spec.tiers


def test_mig_helpers() -> None:
    assert validate_mig_layout(["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]) is None
    assert validate_mig_layout(["7g.80gb"]) is None
    assert validate_mig_layout(["1g.10gb"] * 7) is None
    assert validate_mig_layout(["1g.10gb"] * 8) is not None
    assert validate_mig_layout(["3g.40gb", "3g.40gb", "1g.10gb"]) is not None  # 9 memory slices
    assert validate_mig_layout([]) is not None
    assert mig_fraction("7g.80gb") == 1.0 and mig_fraction("1g.10gb") == pytest.approx(1 / 7)
    assert set(MIG_PROFILES) >= {"1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"}


# ---------------------------------------------------------------- bad MIG layouts


@pytest.mark.parametrize("layout, words", [
    (["7g.80gb", "1g.10gb"], "compute slices"),
    (["4g.40gb", "4g.40gb"], "compute slices"),
    (["3g.40gb", "3g.40gb", "1g.10gb"], "memory slices"),
    (["5g.50gb"], "unknown MIG profile"),
    ([], "at least one"),
])
@pytest.mark.parametrize("device", [0, 1])
def test_invalid_mig_layout_names_file_and_field(tmp_path: Path, local_data: dict, layout: list[str],
                                                 words: str, device: int) -> None:
    local_data["nodes"][MIG_NODE]["gpus"]["mig_layout"][device] = layout
    p = write(tmp_path, local_data)
    err = load_error(p)
    assert err.file == str(p)
    assert err.field == f"nodes[{MIG_NODE}].gpus.mig_layout[{device}]"
    assert words in err.reason
    assert str(p) in str(err) and err.field in str(err)


def test_mig_layout_count_must_match_gpu_count(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"][MIG_NODE]["gpus"]["count"] = 3
    err = load_error(write(tmp_path, local_data))
    assert err.field == f"nodes[{MIG_NODE}].gpus.mig_layout"


def test_mig_layout_only_with_mig_sharing(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"][TS_NODE]["gpus"]["mig_layout"] = [["1g.10gb"], ["1g.10gb"]]
    err = load_error(write(tmp_path, local_data))
    assert err.field == f"nodes[{TS_NODE}].gpus.mig_layout"


def test_valid_full_device_mig_layout_loads(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"][MIG_NODE]["gpus"]["mig_layout"][1] = ["7g.80gb"]
    spec = load_cluster(write(tmp_path, local_data))
    assert spec.nodes[MIG_NODE].devices[1].mig_instances == ("7g.80gb",)


# ---------------------------------------------------------------- other bad fields


@pytest.mark.parametrize("replicas", [1, 5, 0, -2, 2.5, "4"])
def test_replicas_outside_2_to_4_rejected(tmp_path: Path, local_data: dict, replicas) -> None:
    local_data["nodes"][TS_NODE]["gpus"]["replicas"] = replicas
    p = write(tmp_path, local_data)
    err = load_error(p)
    assert (err.file, err.field) == (str(p), f"nodes[{TS_NODE}].gpus.replicas")


@pytest.mark.parametrize("replicas, granularity", [(2, 500), (3, 333), (4, 250)])
def test_replicas_set_granularity(tmp_path: Path, local_data: dict, replicas: int, granularity: int) -> None:
    local_data["nodes"][TS_NODE]["gpus"]["replicas"] = replicas
    spec = load_cluster(write(tmp_path, local_data))
    assert all(d.granularity == granularity for d in spec.nodes[TS_NODE].devices)


def test_time_slicing_needs_replicas(tmp_path: Path, local_data: dict) -> None:
    del local_data["nodes"][TS_NODE]["gpus"]["replicas"]
    err = load_error(write(tmp_path, local_data))
    assert err.field == f"nodes[{TS_NODE}].gpus.replicas" and "missing" in err.reason


def test_replicas_only_with_time_slicing(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"][TS_NODE]["gpus"]["sharing"] = "exclusive"
    err = load_error(write(tmp_path, local_data))
    assert err.field == f"nodes[{TS_NODE}].gpus.replicas"


@pytest.mark.parametrize("node, key, value, field", [
    (0, "cpus", -1, "nodes[0].cpus"),
    (0, "cpus", 0, "nodes[0].cpus"),
    (2, "cpus", "many", "nodes[2].cpus"),
    (1, "memory_gb", -8, "nodes[1].memory_gb"),
    (3, "cpu_speed", 0, "nodes[3].cpu_speed"),
    (0, "tier", "fog", "nodes[0].tier"),
    (0, "name", "", "nodes[0].name"),
    (0, "cpu", 4, "nodes[0].cpu"),  # typo of cpus
    (TS_NODE, "gpu", {"model": "V100", "count": 1}, f"nodes[{TS_NODE}].gpu"),  # typo of gpus
    (0, "labels", {"zone": 3}, "nodes[0].labels.zone"),
])
def test_bad_node_field(tmp_path: Path, local_data: dict, node: int, key: str, value, field: str) -> None:
    local_data["nodes"][node][key] = value
    p = write(tmp_path, local_data)
    err = load_error(p)
    assert (err.file, err.field) == (str(p), field)


@pytest.mark.parametrize("key, value, field", [
    ("model", "B200", f"nodes[{TS_NODE}].gpus.model"),
    ("count", -1, f"nodes[{TS_NODE}].gpus.count"),
    ("sharing", "spatial", f"nodes[{TS_NODE}].gpus.sharing"),
    ("modle", "V100", f"nodes[{TS_NODE}].gpus.modle"),
])
def test_bad_gpu_field(tmp_path: Path, local_data: dict, key: str, value, field: str) -> None:
    local_data["nodes"][TS_NODE]["gpus"][key] = value
    err = load_error(write(tmp_path, local_data))
    assert err.field == field


def test_unknown_top_level_key_rejected(tmp_path: Path, local_data: dict) -> None:
    local_data["node"] = local_data.pop("nodes")  # typo
    err = load_error(write(tmp_path, local_data))
    assert err.field == "node" and "unknown field" in err.reason


def test_unknown_tier_key_and_bad_network(tmp_path: Path, local_data: dict) -> None:
    local_data["tiers"]["edge"]["price_per_tsk"] = 0.01
    assert load_error(write(tmp_path, local_data)).field == "tiers.edge.price_per_tsk"
    del local_data["tiers"]["edge"]["price_per_tsk"]
    local_data["tiers"]["edge"]["network_ms"] = {"low": 100, "high": 50}
    assert load_error(write(tmp_path, local_data)).field == "tiers.edge.network_ms.high"
    local_data["tiers"]["edge"]["network_ms"] = {"low": -1, "high": 50}
    assert load_error(write(tmp_path, local_data)).field == "tiers.edge.network_ms.low"


def test_tier_kind_must_be_known(tmp_path: Path, local_data: dict) -> None:
    local_data["tiers"]["edge"]["kind"] = "fog"
    assert load_error(write(tmp_path, local_data)).field == "tiers.edge.kind"


def test_duplicate_node_names(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"][3]["name"] = "edge-1"
    p = write(tmp_path, local_data)
    err = load_error(p)
    assert (err.file, err.field) == (str(p), "nodes[3].name") and "edge-1" in err.reason


def test_gpus_on_an_edge_node(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"][1]["gpus"] = {"model": "T4", "count": 1, "sharing": "exclusive"}
    p = write(tmp_path, local_data)
    err = load_error(p)
    assert (err.file, err.field) == (str(p), "nodes[1].gpus") and "edge" in err.reason


def test_empty_node_list(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"] = []
    assert load_error(write(tmp_path, local_data)).field == "nodes"


def test_malformed_yaml(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text(LOCAL_YAML.read_text().replace("nodes:", "nodes: [", 1))
    err = load_error(p)
    assert (err.file, err.field) == (str(p), "<file>") and "YAML" in err.reason


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    p = tmp_path / "list.yaml"
    p.write_text("- edge\n- cloud\n")
    assert load_error(p).field == "<file>"


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "nope.yaml"
    err = load_error(p)
    assert (err.file, err.field) == (str(p), "<file>") and "no such file" in err.reason


def test_error_is_a_value_error_with_readable_message(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"][0]["cpus"] = -1
    p = write(tmp_path, local_data)
    with pytest.raises(ValueError, match=r"nodes\[0\]\.cpus: must be > 0"):
        load_cluster(p)


def test_gpu_models_file_is_valid() -> None:
    models = load_gpu_models(CONFIGS / "cluster" / "gpu_models.yaml")
    assert {"K80", "P100", "V100", "A100"} <= set(models)
    assert all(speed > 0 and 0 < coloc <= 1 for speed, coloc in models.values())


# ---------------------------------------------------------------- regressions (bugs found and fixed)


@pytest.mark.parametrize("key", ["cpus", "memory_gb"])
def test_infinite_capacity_is_a_config_error(tmp_path: Path, local_data: dict, key: str) -> None:
    local_data["nodes"][0][key] = float("inf")
    err = load_error(write(tmp_path, local_data))
    assert err.field == f"nodes[0].{key}"


def test_cpus_that_round_to_zero_millicores_rejected(tmp_path: Path, local_data: dict) -> None:
    local_data["nodes"][0]["cpus"] = 0.0001
    err = load_error(write(tmp_path, local_data))
    assert err.field == "nodes[0].cpus"


def test_every_error_of_a_cluster_file_is_reported_at_once(tmp_path: Path, local_data: dict) -> None:
    """One fix-and-retry round: an unknown key, two bad nodes and a bad tier come back together, each
    naming its field; a node of the bad tier is not blamed for it a second time."""
    from cluster.config import ConfigErrors

    local_data["colour"] = "blue"
    local_data["nodes"][0]["cpus"] = -1
    local_data["nodes"][2]["memory_gb"] = "lots"
    local_data["tiers"]["gpu"]["price_per_task"] = "free"
    err = load_error(write(tmp_path, local_data))
    assert isinstance(err, ConfigErrors)
    fields = [e.field for e in err.errors]
    assert fields[0] == "colour" and "nodes[0].cpus" in fields and "nodes[2].memory_gb" in fields
    assert any(f.startswith("tiers.gpu") for f in fields) and len(fields) == 4
    assert all(str(e) in str(err) for e in err.errors) and str(err).startswith("4 config errors:")


def test_cli_prints_every_config_error_and_exits_2(tmp_path: Path, local_data: dict) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    local_data["nodes"][0]["cpus"] = -1
    local_data["nodes"][1]["tier"] = "nowhere"
    path = write(tmp_path, local_data)
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "simulate", "--cluster", str(path)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{path}: nodes[0].cpus" in r.stderr and f"{path}: nodes[1].tier" in r.stderr


@pytest.mark.parametrize("scaling, field, reason", [
    ({"gpu-big": {"max_nodes": 3}}, "scaling.gpu-big", "no such pool"),
    ({"cloud": {"max_nodes": 1}}, "max_nodes", ">= 2"),
    ({"cloud": {"max_nodes": 3, "min": 1}}, "min", "unknown"),
])
def test_scaling_names_the_bad_field(tmp_path: Path, local_data: dict, scaling, field, reason) -> None:
    err = load_error(write(tmp_path, {**local_data, "scaling": scaling}))
    assert field in str(err) and reason in str(err)


def test_a_pool_that_may_scale_gets_standby_slots_after_its_own_nodes(tmp_path: Path, local_data: dict) -> None:
    from cluster.topology import pool_max, with_standby

    spec = load_cluster(write(tmp_path, {**local_data, "scaling": {"cloud": {"max_nodes": 4},
                                                                    "gpu-mig": {"max_nodes": 2}}}))
    assert spec.standby == () and len(spec.nodes) == 6  # simulations see the file's nodes only
    slots = with_standby(spec)
    names = [n.name for n in slots.nodes]
    assert names == ["edge-1", "edge-2", "cloud-1", "cloud-2", "cloud-add1", "cloud-add2", "gpu-mig-1",
                     "gpu-mig-add1", "gpu-ts-1"]
    assert slots.standby == ("cloud-add1", "cloud-add2", "gpu-mig-add1")
    assert slots.node("gpu-mig-add1").devices == slots.node("gpu-mig-1").devices
    assert pool_max(slots) == {"edge": 2, "cloud": 4, "gpu-mig": 2, "gpu-ts": 1}
    assert with_standby(load_cluster(LOCAL_YAML)) == load_cluster(LOCAL_YAML)  # nothing to scale: unchanged
