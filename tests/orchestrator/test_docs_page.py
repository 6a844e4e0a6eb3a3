"""Generated pages for docs/: dated, naming the command that wrote them, tables from the run's own figures."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator import docs_page
from orchestrator.cli import main

DATED = re.compile(r"^Generated \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC by `(.+)` on revision \S+\.$", re.M)


def _tiny_trace(tmp_path: Path) -> tuple[Path, Path]:
    """Two 2-GPU nodes and six small GPU shares (each under 2% of capacity, so one lands at 100% arrived)."""
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\n"
                     "n0,64000,262144,2,V100\nn1,64000,262144,2,V100\n")
    pods = tmp_path / "pods.csv"
    rows = [(1, 50), (1, 30), (1, 20), (1, 40), (1, 50), (1, 10)]
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
                    "deletion_time,scheduled_time\n"
                    + "".join(f"p{i},1000,1024,{k},{m},,LS,Running,{i},{i + 100},{i}\n"
                              for i, (k, m) in enumerate(rows)))
    return pods, nodes


def test_packing_markdown_page_is_dated_and_holds_the_printed_medians(tmp_path: Path, capsys) -> None:
    pods, nodes = _tiny_trace(tmp_path)
    page = tmp_path / "docs" / "fgd.md"
    argv = ["simulate", "--mode", "packing", "--trace", str(pods), "--nodes", str(nodes),
            "--policies", "random,best-fit", "--seeds", "1-2", "--out", str(tmp_path / "out"),
            "--markdown", str(page)]
    assert main(argv) == 0
    text = page.read_text()
    assert DATED.search(text).group(1) == "orchestrator " + " ".join(argv)
    csv = pd.read_csv(tmp_path / "out" / "packing.csv", index_col="policy")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| policy | seed 1 | seed 2 | median | published | diff | seconds |" in text
    for policy in ("random", "best-fit"):
        assert f"| {csv.loc[policy, 'median']:.2f} |" in rows[policy]
        assert np.isnan(csv.loc[policy, "published"])  # pods.csv: the paper published no figures for it
    assert "no published figures for pods are shipped" in text
    assert "--seeds 42-51" in text  # the full run is named on the page


def test_markdown_outside_packing_mode_is_a_usage_error(tmp_path: Path, capsys) -> None:
    rc = main(["simulate", "--policies", "round-robin", "--out", str(tmp_path / "o"),
               "--markdown", str(tmp_path / "p.md")])
    assert rc == 2 and "--markdown" in capsys.readouterr().err
    assert not (tmp_path / "p.md").exists()


def test_table_formats_floats_and_leaves_missing_values_empty() -> None:
    df = pd.DataFrame({"x": [1.23456, np.nan], "name": ["a|b", "c"]}, index=pd.Index(["p", "q"], name="policy"))
    assert docs_page.table(df, "{:.2f}") == ["| policy | x | name |", "|---|---|---|",
                                             "| p | 1.23 | a\\|b |", "| q |  | c |"]


def test_benchmarks_markdown_keeps_each_benchmark_output(tmp_path: Path, monkeypatch, capsys) -> None:
    import benchmarks.__main__ as bench

    fake = tmp_path / "fakebench"
    fake.mkdir()
    (fake / "bench_tiny.py").write_text('"""Benchmark: a tiny one."""\n'
                                        'def main(argv):\n    print("rate 123/s, 2.0x the baseline")\n    return 0\n')
    (fake / "bench_other.py").write_text('def main():\n    print("not run")\n')
    monkeypatch.setattr(bench, "ROOT", fake)
    monkeypatch.setattr(bench.importlib, "import_module",
                        lambda name: __import__(name.split(".")[1]))
    monkeypatch.syspath_prepend(str(fake))
    page = tmp_path / "perf.md"
    assert bench.main(["x", "tiny", "--markdown", str(page)]) == 0
    assert "rate 123/s" in capsys.readouterr().out  # still printed as it runs
    text = page.read_text()
    assert DATED.search(text).group(1) == "python -m benchmarks tiny --markdown " + str(page)
    assert "## bench_tiny\n\nBenchmark: a tiny one." in text
    assert "```\nrate 123/s, 2.0x the baseline\n```" in text
    assert "Not run for this page: bench_other (`python -m benchmarks other`)" in text
    assert f"{__import__('os').cpu_count()} CPUs (nproc)" in text and sys.version.split()[0] in text
