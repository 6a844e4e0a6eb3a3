"""Published FGD figures belong to the pod list they were measured on: default has them, others none."""
from __future__ import annotations

import math
from pathlib import Path

from simulations.packing import PUBLISHED, reproduce
from simulations.published import PUBLISHED_BY_TRACE, published_for, published_note, trace_key
from tests.conftest import write_csv

FULL = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
        "scheduled_time\n")


def test_figures_are_keyed_by_trace_file_name() -> None:
    assert trace_key("../shared/traces/alibaba_gpu_v2023/openb_pod_list_default.csv") == "openb_pod_list_default"
    assert published_for("x/openb_pod_list_default.csv") == PUBLISHED == PUBLISHED_BY_TRACE["openb_pod_list_default"]
    assert PUBLISHED["fgd"] == 4.77 and PUBLISHED["random"] == 13.75
    assert published_for("x/openb_pod_list_gpushare20.csv") == {}
    assert published_for("pods.csv") == {}


def test_note_says_where_the_figures_come_from_or_why_none() -> None:
    assert published_note("openb_pod_list_default.csv").startswith("Published: Weng et al.")
    note = published_note("openb_pod_list_gpushare20.csv")
    assert "empty" in note and "openb_pod_list_gpushare20" in note and "openb_pod_list_default" in note


def _tiny(tmp_path: Path, name: str) -> tuple[Path, Path]:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,V100\nn1,64000,262144,2,V100\n")
    rows = [f"p{i},1000,1024,1,{m},,LS,Running,{i},{i + 100},{i}" for i, m in enumerate((50, 30, 20, 40, 50, 10))]
    return write_csv(tmp_path / name, FULL, rows), nodes


def test_packing_table_shows_published_only_for_the_default_trace(tmp_path: Path) -> None:
    pods, nodes = _tiny(tmp_path, "openb_pod_list_default.csv")
    df = reproduce(pods, nodes, ["random", "fgd"], [1], progress=False)
    assert df.loc["fgd", "published"] == 4.77 and df.loc["random", "published"] == 13.75
    assert df.loc["fgd", "diff"] == df.loc["fgd", "median"] - 4.77
    other = tmp_path / "g"
    other.mkdir()
    pods, nodes = _tiny(other, "openb_pod_list_gpushare20.csv")
    df = reproduce(pods, nodes, ["random", "fgd"], [1], progress=False)
    assert list(df.columns[-4:]) == ["median", "published", "diff", "seconds"]  # the CLI selects these
    assert all(math.isnan(v) for v in df["published"]) and all(math.isnan(v) for v in df["diff"])
