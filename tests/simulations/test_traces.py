"""Alibaba GPU-sharing pod trace replay: row counts, GPU and QoS mapping, time handling, errors."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from cluster.config import ConfigError
from simulations.traces import MIN_WORK_S, QOS, load_alibaba_pods
from tests.conftest import alibaba_trace, write_csv as _write_csv

HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"


def trace(name: str) -> Path:
    return alibaba_trace(name)


def write_csv(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    return _write_csv(tmp_path / "pods.csv", header, rows)


# ---------------------------------------------------------------- the real trace


def test_default_trace_row_counts() -> None:
    path = trace("openb_pod_list_default.csv")
    tasks = load_alibaba_pods(path)
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    pending = sum(1 for r in rows if not r["scheduled_time"])
    assert len(rows) == 8152
    assert len(tasks) + tasks.skipped == 8152
    assert tasks.skipped == pending == 897  # Pending pods were never scheduled
    assert tasks.skipped_reasons == {"missing time": 897}
    assert len({t.id for t in tasks}) == len(tasks)


def test_default_trace_gpu_mix_follows_the_rows() -> None:
    path = trace("openb_pod_list_default.csv")
    tasks = load_alibaba_pods(path)
    with path.open() as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    for t in tasks:
        r = rows[t.id]
        num, milli = int(r["num_gpu"]), int(r["gpu_milli"])
        if num == 0:
            assert t.gpu_need == "none"
        elif num == 1 and milli < 1000:
            assert (t.gpu_need, t.gpu_milli) == ("fraction", milli)
        else:
            assert (t.gpu_need, t.gpu_count) == ("whole", num)
        assert (t.cpu_milli, t.mem_mib) == (int(r["cpu_milli"]), int(r["memory_mib"]))
        assert t.priority == QOS[r["qos"]].priority
    fractions = sum(t.gpu_need == "fraction" for t in tasks)
    gpu_tasks = sum(t.gpu_need != "none" for t in tasks)
    assert 0.3 < fractions / gpu_tasks < 0.5  # about 43.6% of GPU pods share a GPU (before skips)


def test_arrivals_sorted_rebased_and_compressed() -> None:
    path = trace("openb_pod_list_gpushare20.csv")  # its creation times are not in file order
    tasks = load_alibaba_pods(path)
    arrivals = [t.arrival for t in tasks]
    assert arrivals[0] == 0.0 and arrivals == sorted(arrivals)
    fast = load_alibaba_pods(path, time_compression=1000.0)
    assert [t.id for t in fast] == [t.id for t in tasks]
    assert [t.arrival for t in fast] == pytest.approx([a / 1000.0 for a in arrivals])
    assert [t.work for t in fast] == [t.work for t in tasks]  # work is not compressed


def test_limit_keeps_the_first_arrivals() -> None:
    path = trace("openb_pod_list_gpushare20.csv")
    tasks = load_alibaba_pods(path)
    head = load_alibaba_pods(path, limit=100)
    assert [t.id for t in head] == [t.id for t in tasks[:100]]
    assert head.skipped == tasks.skipped


# ---------------------------------------------------------------- mapping (small CSVs)


def test_gpu_need_and_gpu_spec_mapping(tmp_path: Path) -> None:
    p = write_csv(tmp_path, [
        "cpu,4000,8192,0,0,,LS,Running,100,400,100",
        "frac,6000,12288,1,460,,BE,Running,110,500,110",
        "whole,12000,24576,1,1000,V100M16|V100M32,Burstable,Succeeded,120,900,125",
        "multi,88000,327680,8,1000,G2,Guaranteed,Running,130,2000,131",
    ])
    tasks = {t.id: t for t in load_alibaba_pods(p)}
    assert tasks["cpu"].gpu_need == "none" and tasks["cpu"].gpu_models == ()
    assert (tasks["frac"].gpu_milli, tasks["frac"].gpu_count) == (460, 0)
    assert tasks["whole"].gpu_count == 1 and tasks["whole"].gpu_milli == 0
    assert tasks["whole"].gpu_models == ("V100M16", "V100M32")
    assert tasks["multi"].gpu_count == 8 and tasks["multi"].gpu_models == ("G2",)
    assert tasks["whole"].work == 900 - 125  # deletion - scheduled
    assert tasks["frac"].arrival == 10.0  # re-based on the first creation time


def test_qos_mapping_priority_and_slo(tmp_path: Path) -> None:
    p = write_csv(tmp_path, [
        "ls,1000,1024,0,0,,LS,Running,0,100,0",
        "gu,1000,1024,0,0,,Guaranteed,Running,0,100,0",
        "bu,1000,1024,0,0,,Burstable,Running,0,100,0",
        "be,1000,1024,0,0,,BE,Running,0,100,0",
    ])
    tasks = {t.id: t for t in load_alibaba_pods(p)}
    assert [tasks[k].priority for k in ("ls", "gu", "bu", "be")] == [8, 7, 5, 2]
    slos = [tasks[k].slo_ms for k in ("ls", "gu", "bu", "be")]
    assert slos == sorted(slos)  # LS tightest, BE loosest
    assert all(s > 100_000 for s in slos)  # never below the run time itself
    assert tasks["ls"].slo_ms == pytest.approx((1.2 * 100 + 30) * 1000)
    assert tasks["be"].kind == "alibaba-be" and tasks["be"].cost_sensitivity > tasks["ls"].cost_sensitivity


def test_short_and_bad_times(tmp_path: Path) -> None:
    p = write_csv(tmp_path, [
        "short,1000,1024,0,0,,LS,Succeeded,5,5,5",
        "pending,1000,1024,1,500,,LS,Pending,6,50,",
        "negative,1000,1024,0,0,,BE,Failed,7,3,9",
        "ok,1000,1024,0,0,,BE,Running,8,60,8",
    ])
    tasks = load_alibaba_pods(p)
    assert [t.id for t in tasks] == ["short", "ok"]
    assert tasks[0].work == MIN_WORK_S
    assert tasks.skipped == 2
    assert tasks.skipped_reasons == {"missing time": 1, "negative time": 1}


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    p = write_csv(tmp_path, ["a,1000,1024,0,0,LS,Running,0,1,0"],
                  header=HEADER.replace("gpu_spec,", "").replace("num_gpu,", "num_gpus,"))
    with pytest.raises(ConfigError) as info:
        load_alibaba_pods(p)
    assert info.value.file == str(p) and info.value.field == "num_gpu"


@pytest.mark.parametrize("row, field", [
    ("a,1000,1024,0,0,,Platinum,Running,0,1,0", "qos (line 2)"),
    ("a,lots,1024,0,0,,LS,Running,0,1,0", "cpu_milli (line 2)"),
    ("a,1000,1024,1,1500,,LS,Running,0,1,0", "gpu_milli (line 2)"),
    ("a,1000,1024,0,0,,LS,Running,soon,1,0", "creation_time (line 2)"),
    ("a,0,1024,0,0,,LS,Running,0,1,0", "cpu_milli (pod a)"),
])
def test_bad_cells_name_file_line_and_column(tmp_path: Path, row: str, field: str) -> None:
    p = write_csv(tmp_path, [row])
    with pytest.raises(ConfigError) as info:
        load_alibaba_pods(p)
    assert info.value.file == str(p) and info.value.field == field


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_alibaba_pods(tmp_path / "none.csv")
    p = write_csv(tmp_path, ["a,1000,1024,0,0,,LS,Running,0,1,0"])
    with pytest.raises(ValueError):
        load_alibaba_pods(p, time_compression=0)
    with pytest.raises(ValueError):
        load_alibaba_pods(p, limit=-1)
    assert load_alibaba_pods(p, limit=0) == []
