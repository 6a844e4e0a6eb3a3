"""Every pod-list layout of the Alibaba v2023 trace loads through the one reader, in both modes.

The headers are upstream's, as shipped in alibaba/clusterdata ``cluster-trace-gpu-v2023/csv``:
the full 11-column one (``default``, ``gpushare*``, ``cpu*``, ``gpuspec*``; the one
UPSTREAM_README.md documents) and the 5-column one of ``multigpu*``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.config import ConfigError
from orchestrator.cli import main
from simulations.packing import load_packing_pods
from simulations.pod_list import DEFAULT_QOS, REQUIRED_COLUMNS, read_pod_list
from simulations.traces import QOS, load_alibaba_pods
from tests.conftest import REPO_ROOT, write_csv

FULL = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
        "scheduled_time\n")
MULTIGPU = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,V100M32\nn1,64000,262144,2,T4\n"


def _nodes(tmp_path: Path) -> Path:
    p = tmp_path / "openb_node_list_gpu_node.csv"
    p.write_text(NODES)
    return p


# ---------------------------------------------------------------- the full layout


@pytest.mark.parametrize("family", ["default", "gpushare20", "cpu050", "gpuspec33"])
def test_full_layout_loads_in_both_modes(tmp_path: Path, family: str) -> None:
    p = write_csv(tmp_path / f"openb_pod_list_{family}.csv", FULL, [
        "openb-pod-0000,12000,16384,1,1000,,LS,Running,0,12537496,0",
        "openb-pod-0001,6000,12288,1,460,nan,BE,Running,427061,12902960,427061",
        "openb-pod-0002,88000,327680,8,1000,V100M16|V100M32,Burstable,Succeeded,500,900,510",
        "openb-pod-0003,20000,65536,0,0,,Guaranteed,Pending,600,700,",
    ])
    pods = read_pod_list(p).pods
    assert [x.name for x in pods] == ["openb-pod-0000", "openb-pod-0001", "openb-pod-0002", "openb-pod-0003"]
    assert [x.gpu_share for x in pods] == [(0, 1), (460, 0), (0, 8), (0, 0)]
    assert [x.gpu_models for x in pods] == [(), (), ("V100M16", "V100M32"), ()]  # "" and nan: any model
    assert [x.qos for x in pods] == ["LS", "BE", "Burstable", "Guaranteed"]
    assert pods[2].pod_phase == "Succeeded" and pods[3].scheduled_time is None
    assert (pods[1].creation_time, pods[1].deletion_time, pods[1].scheduled_time) == (427061, 12902960, 427061)
    packed = load_packing_pods(str(p))
    assert len(packed) == 4 and packed[2].gpu_count == 8 and packed[1].gpu_milli == 460
    online = load_alibaba_pods(p)
    assert [t.id for t in online] == ["openb-pod-0000", "openb-pod-0002", "openb-pod-0001"]  # by arrival
    assert online.skipped_reasons == {"missing time": 1}  # the Pending pod


# ---------------------------------------------------------------- the multigpu layout


def test_multigpu_layout_takes_the_defaults(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "openb_pod_list_multigpu50.csv", MULTIGPU, [
        "openb-pod-0000,12000,16384,1,1000",
        "openb-pod-0001,6000,12288,1,460",
        "openb-pod-0017,88000,327680,8,1000",
        "openb-pod-0005,20000,65536,0,0",
    ])
    pl = read_pod_list(p)
    assert pl.columns == tuple(MULTIGPU.strip().split(","))
    for pod in pl.pods:
        assert pod.gpu_models == () and pod.qos == DEFAULT_QOS == "Burstable" and pod.pod_phase == ""
        assert pod.creation_time is pod.deletion_time is pod.scheduled_time is None
    assert DEFAULT_QOS in QOS
    packed = load_packing_pods(str(p))
    assert [(t.gpu_milli, t.gpu_count, t.gpu_models) for t in packed] == [(0, 1, ()), (460, 0, ()), (0, 8, ()),
                                                                        (0, 0, ())]


def test_multigpu_layout_refuses_the_online_replay_naming_the_time_column(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "openb_pod_list_multigpu20.csv", MULTIGPU, ["a,1000,1024,1,500"])
    with pytest.raises(ConfigError) as info:
        load_alibaba_pods(p)
    assert info.value.file == str(p) and info.value.field == "creation_time"
    assert "online trace replay" in info.value.reason and "packing mode" in info.value.reason


def test_other_column_subsets_order_and_extras(tmp_path: Path) -> None:
    """Traces as they come: times without gpu_spec/qos/pod_phase, columns in any order, unknown extras."""
    p = write_csv(tmp_path / "pods.csv", "scheduled_time,gpu_milli,name,extra,num_gpu,memory_mib,cpu_milli,"
                                         "deletion_time,creation_time\n",
                  ["10,300,a,x,1,2048,1000,70,10", "20,0,b,y,2,2048,1000,80,15"])
    tasks = {t.id: t for t in load_alibaba_pods(p)}
    assert (tasks["a"].gpu_milli, tasks["b"].gpu_count) == (300, 2)
    assert tasks["a"].priority == QOS[DEFAULT_QOS].priority and tasks["a"].kind == "alibaba-burstable"
    assert tasks["a"].work == 60 and tasks["b"].arrival == 5.0
    empty_qos = write_csv(tmp_path / "q.csv", FULL, ["a,1000,1024,0,0,,,Running,0,100,0"])
    assert load_alibaba_pods(empty_qos)[0].priority == QOS[DEFAULT_QOS].priority


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_missing_required_column_names_file_and_column(tmp_path: Path, column: str) -> None:
    header = ",".join(c for c in MULTIGPU.strip().split(",") if c != column) + "\n"
    p = write_csv(tmp_path / "pods.csv", header, ["1,2,3,4"])
    for load in (read_pod_list, load_alibaba_pods, lambda x: load_packing_pods(str(x))):
        with pytest.raises(ConfigError) as info:
            load(p)
        assert info.value.file == str(p) and info.value.field == column
        assert str(p) in str(info.value) and column in str(info.value)


def test_bad_cells_are_checked_on_every_row(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "pods.csv", MULTIGPU, ["a,1000,1024,1,500", "b,1000,1024,1,1500"])
    with pytest.raises(ConfigError) as info:
        load_packing_pods(str(p))
    assert info.value.field == "gpu_milli (line 3)"


# ---------------------------------------------------------------- the command line


def _packing_argv(pods: Path, nodes: Path, tmp_path: Path) -> list[str]:
    return ["simulate", "--mode", "packing", "--trace", str(pods), "--nodes", str(nodes),
            "--policies", "best-fit", "--seeds", "1", "--out", str(tmp_path / "out")]


def test_cli_missing_column_exits_2_in_both_modes(tmp_path: Path, capsys) -> None:
    pods = write_csv(tmp_path / "pods.csv", "name,cpu_milli,memory_mib,num_gpu\n", ["a,1000,1024,1"])
    assert main(_packing_argv(pods, _nodes(tmp_path), tmp_path)) == 2
    err = capsys.readouterr().err
    assert str(pods) in err and "gpu_milli" in err and "Traceback" not in err
    assert main(["simulate", "--trace", str(pods), "--policies", "round-robin", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(pods) in err and "gpu_milli" in err


def test_cli_multigpu_layout_packs_but_online_exits_2(tmp_path: Path, capsys) -> None:
    pods = write_csv(tmp_path / "openb_pod_list_multigpu30.csv", MULTIGPU,
                     [f"p{i},1000,1024,1,{m}" for i, m in enumerate((50, 30, 20, 40, 50, 10))])
    assert main(_packing_argv(pods, _nodes(tmp_path), tmp_path)) == 0
    capsys.readouterr()
    assert main(["simulate", "--trace", str(pods), "--policies", "round-robin", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(pods) in err and "creation_time" in err and "packing mode" in err


def test_cli_subprocess_missing_column_no_traceback(tmp_path: Path) -> None:
    pods = write_csv(tmp_path / "pods.csv", "name,cpu_milli,num_gpu,gpu_milli\n", ["a,1000,1,500"])
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", *_packing_argv(pods, _nodes(tmp_path), tmp_path)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "memory_mib" in r.stderr and str(pods) in r.stderr and "Traceback" not in r.stderr


def test_an_infinite_cell_is_a_clear_error_and_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n"
    bad = write_csv(tmp_path / "inf.csv", header, ["p1,inf,100,0,0"])
    with pytest.raises(ConfigError, match=r"cpu_milli \(line 2\).*finite"):
        read_pod_list(bad)
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeff".encode() + (header + "p1,1000,100,0,0\n").encode())
    assert [p.name for p in read_pod_list(bom).pods] == ["p1"]
