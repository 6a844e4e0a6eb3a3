"""Clusters built from the Alibaba trace node list, and the YAML that points at one."""
from __future__ import annotations

from pathlib import Path

import pytest

from cluster.alibaba import REPO_ROOT, default_tiers, load_alibaba_nodes, load_cluster_any
from cluster.config import ConfigError
from cluster.state import ClusterState, feasible_nodes
from cluster.topology import load_cluster, load_gpu_models
from scheduler.task import make_task
from tests.conftest import alibaba_trace, write_csv as _write_csv

HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"


def trace(name: str) -> Path:
    return alibaba_trace(name)


def write_csv(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    return _write_csv(tmp_path / "nodes.csv", header, rows)


def test_gpu_node_list_counts_and_sharing() -> None:
    spec = load_alibaba_nodes(trace("openb_node_list_gpu_node.csv"))
    assert spec.name == "alibaba-openb"
    assert len(spec.nodes) == 1213
    assert sum(n.gpu_count for n in spec.nodes) == 6212
    assert set(spec.tiers) == {"gpu"}
    models = load_gpu_models()
    for n in spec.nodes:
        assert n.tier == "gpu" and n.pool == f"gpu-{n.gpu_model}"
        assert n.sharing == "milli" and all(d.granularity == 1 for d in n.devices)
        assert n.gpu_speed == models[n.gpu_model][0]
    assert {n.gpu_model for n in spec.nodes} == {"G2", "T4", "P100", "V100M16", "G3", "V100M32", "A10"}


def test_all_node_list_puts_cpu_nodes_in_cloud() -> None:
    spec = load_alibaba_nodes(trace("openb_node_list_all_node.csv"))
    cloud = [n for n in spec.nodes if n.tier == "cloud"]
    assert len(spec.nodes) == 1523 and len(cloud) == 310
    assert all(n.gpu_count == 0 and n.pool == "cloud" for n in cloud)
    assert set(spec.tiers) == {"gpu", "cloud"}


def test_tiers_reuse_the_local_cluster_prices() -> None:
    local = load_cluster(REPO_ROOT / "configs" / "cluster" / "local.yaml")
    assert default_tiers() == {"gpu": local.tiers["gpu"], "cloud": local.tiers["cloud"]}


def test_small_csv_and_state(tmp_path: Path) -> None:
    p = write_csv(tmp_path, ["n0,32000,262144,0,", "n1,64000,262144,2,P100", "n2,96000,786432,8,V100M32"])
    spec = load_alibaba_nodes(p, name="tiny")
    assert [n.gpu_count for n in spec.nodes] == [0, 2, 8]
    assert spec.nodes[1].cpu_milli == 64000 and spec.nodes[1].mem_mib == 262144
    state = ClusterState.from_spec(spec)
    task = make_task({"id": "t", "gpu_milli": 460, "gpu_models": ["V100M32"]}, infer=False)
    assert [(i, share) for i, share, _ in feasible_nodes(state, task)] == [(2, ("slice", 460))]


@pytest.mark.parametrize("rows, field", [
    (["n0,32000,262144,2,B200"], "model (line 2, node n0)"),
    (["n0,32000,262144,2,"], "model (line 2, node n0)"),
    (["n0,32000,262144,-1,T4"], "gpu (line 2)"),
    (["n0,many,262144,1,T4"], "cpu_milli (line 2)"),
    (["n0,32000,nan,1,T4"], "memory_mib (line 2)"),
    (["n0,32000,262144,1,T4", "n0,32000,262144,1,T4"], "sn (line 3)"),
])
def test_bad_rows_name_file_line_and_column(tmp_path: Path, rows: list[str], field: str) -> None:
    p = write_csv(tmp_path, rows)
    with pytest.raises(ConfigError) as info:
        load_alibaba_nodes(p)
    assert info.value.file == str(p) and info.value.field == field


def test_missing_column(tmp_path: Path) -> None:
    p = write_csv(tmp_path, ["n0,32000,262144,0"], header="sn,cpu_milli,memory_mib,gpu\n")
    with pytest.raises(ConfigError) as info:
        load_alibaba_nodes(p)
    assert (info.value.file, info.value.field) == (str(p), "model")


# ---------------------------------------------------------------- load_cluster_any


def test_shipped_alibaba_yaml() -> None:
    trace("openb_node_list_gpu_node.csv")
    spec = load_cluster_any(REPO_ROOT / "configs" / "cluster" / "alibaba_openb.yaml")
    assert spec.name == "alibaba-openb"
    assert len(spec.nodes) == 1213 and sum(n.gpu_count for n in spec.nodes) == 6212


def test_any_delegates_ordinary_topologies() -> None:
    path = REPO_ROOT / "configs" / "cluster" / "local.yaml"
    assert load_cluster_any(path) == load_cluster(path)


def test_relative_node_list_resolves_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "nodes.csv").write_text(HEADER + "n1,64000,262144,2,T4\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    yaml_path = conf / "c.yaml"
    yaml_path.write_text("name: mini\nfrom_trace: {node_list: data/nodes.csv}\n")
    monkeypatch.chdir(tmp_path)
    spec = load_cluster_any(yaml_path)
    assert spec.name == "mini" and spec.nodes[0].gpu_model == "T4"
    assert spec.source == str(yaml_path)


@pytest.mark.parametrize("text, field", [
    ("name: x\nfrom_trace: {node_list: no/such.csv}\n", "from_trace.node_list"),
    ("name: x\nfrom_trace: {node_list: n.csv, colour: red}\n", "from_trace.colour"),
    ("name: x\nfrom_trace: {node_list: n.csv, tiers_from: none.yaml}\n", "from_trace.tiers_from"),
    ("name: x\nnodes: []\nfrom_trace: {node_list: n.csv}\n", "nodes"),
])
def test_trace_yaml_errors_name_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    (tmp_path / "n.csv").write_text(HEADER + "n1,64000,262144,2,T4\n")
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_cluster_any(p)
    assert info.value.file == str(p) and info.value.field == field
