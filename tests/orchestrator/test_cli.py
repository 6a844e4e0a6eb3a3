"""The `orchestrator` command line: simulate writes its files and table; bad input exits 2 with a named field."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator.cli import main
from simulations.workloads import WORKLOADS_DIR, generate, load_workload
from tests.conftest import LOCAL_YAML

POLICIES = ["round-robin", "least-loaded", "fgd"]


@pytest.fixture
def short_workload(tmp_path: Path) -> Path:
    """The shipped mix, 10 s of arrivals (about 50 tasks)."""
    p = tmp_path / "short.yaml"
    p.write_text(f"name: short\nduration_s: 10\nrate_per_s: 5.0\nseed: 1\n"
                 f"scenarios_from: {WORKLOADS_DIR / 'mixed.yaml'}\n")
    return p


def simulate_args(workload: Path, out: Path, *extra: str) -> list[str]:
    # explicit --cluster so the tests do not depend on the working directory (a later one in extra wins)
    return ["simulate", "--cluster", str(LOCAL_YAML), "--workload", str(workload), "--out", str(out), *extra]


def test_simulate_writes_records_summary_and_table(tmp_path: Path, short_workload: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(simulate_args(short_workload, out, "--policies", ",".join(POLICIES), "--seed", "3"))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    n_tasks = len(generate(load_workload(short_workload), seed=3))
    for name in POLICIES:
        records = pd.read_csv(out / f"records_{name}.csv")
        assert len(records) == n_tasks and set(records["policy"]) == {name}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == set(POLICIES)
    assert summary["meta"]["tasks"] == n_tasks
    comparison = pd.read_csv(out / "comparison.csv", index_col="policy")
    assert list(comparison.index) == POLICIES
    # the printed table: a header and one row per policy
    lines = captured.out.splitlines()
    assert f"{n_tasks} tasks" in captured.out
    for name in POLICIES:
        assert sum(line.split()[:1] == [name] for line in lines) == 1, name
    assert "Traceback" not in captured.err


def test_same_seed_same_results(tmp_path: Path, short_workload: Path, capsys) -> None:
    for sub in ("a", "b"):
        assert main(simulate_args(short_workload, tmp_path / sub, "--policies", "least-loaded")) == 0
    capsys.readouterr()
    a = pd.read_csv(tmp_path / "a" / "records_least-loaded.csv")
    b = pd.read_csv(tmp_path / "b" / "records_least-loaded.csv")
    pd.testing.assert_frame_equal(a, b)


def test_bad_cluster_yaml_exits_2_naming_file_and_field(tmp_path: Path, short_workload: Path, capsys) -> None:
    data = yaml.safe_load(LOCAL_YAML.read_text())
    data["nodes"][4]["gpus"]["mig_layout"][0] = ["7g.80gb", "1g.10gb"]
    bad = tmp_path / "bad_cluster.yaml"
    bad.write_text(yaml.safe_dump(data))
    rc = main(simulate_args(short_workload, tmp_path / "out", "--cluster", str(bad), "--policies", "round-robin"))
    err = capsys.readouterr().err
    assert rc == 2
    assert str(bad) in err and "nodes[4].gpus.mig_layout[0]" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_cluster_file_exits_2(tmp_path: Path, short_workload: Path, capsys) -> None:
    rc = main(simulate_args(short_workload, tmp_path / "out", "--cluster", str(tmp_path / "none.yaml")))
    err = capsys.readouterr().err
    assert rc == 2 and "none.yaml" in err and "Traceback" not in err


def test_bad_workload_exits_2_naming_field(tmp_path: Path, capsys) -> None:
    w = tmp_path / "w.yaml"
    w.write_text("duration_s: 10\nrate_per_s: 5\nscenarios:\n  - {kind: x, weight: 1, priority: 11, slo_ms: 300,"
                 " work_s: {dist: constant, mean: 0.1}}\n")
    rc = main(simulate_args(w, tmp_path / "out", "--policies", "round-robin"))
    err = capsys.readouterr().err
    assert rc == 2 and str(w) in err and "scenarios[0].priority" in err and "Traceback" not in err


def test_unknown_policy_exits_2_naming_it(tmp_path: Path, short_workload: Path, capsys) -> None:
    rc = main(simulate_args(short_workload, tmp_path / "out", "--policies", "round-robin,nope"))
    err = capsys.readouterr().err
    assert rc == 2 and "'nope'" in err and "oracle" in err  # names it and lists the known ones
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_model_version_not_in_the_registry_exits_2_naming_it(tmp_path: Path, short_workload: Path,
                                                               capsys) -> None:
    rc = main(simulate_args(short_workload, tmp_path / "out", "--policies", "rf:99"))
    err = capsys.readouterr().err
    assert rc == 2 and "no rf model version 99" in err and "Traceback" not in err


def test_policies_command_lists_them(capsys) -> None:
    assert main(["policies"]) == 0
    names = capsys.readouterr().out.split()
    assert {"fgd", "oracle", "round-robin", "least-loaded"} <= set(names)


def test_unknown_subcommand_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice" in err and "'retrain'" in err and "'cluster'" in err  # every command, plugins' too


def test_top_level_help_lists_every_command_whatever_follows_it(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-h", "cluster"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("simulate", "cluster", "capacity", "retrain", "evaluate"))


def test_workload_seed_is_used_when_no_seed_is_given(tmp_path: Path, short_workload: Path, capsys) -> None:
    assert main(simulate_args(short_workload, tmp_path / "out", "--policies", "least-loaded")) == 0
    capsys.readouterr()
    records = pd.read_csv(tmp_path / "out" / "records_least-loaded.csv")
    expected = generate(load_workload(short_workload))  # the file's seed: 1
    assert sorted(records["task_id"]) == sorted(t.id for t in expected)
    assert sorted(records["arrival"]) == pytest.approx(sorted(t.arrival for t in expected))


def test_each_plugin_adds_exactly_the_commands_the_table_names() -> None:
    """A command line naming a command imports only the plugin listed for it; a plugin adding a command
    the table does not name would still work (an unknown command loads them all), only slower."""
    import argparse
    import importlib

    from orchestrator.cli import PLUGINS

    for plugin, commands in PLUGINS.items():
        module, func = plugin.split(":")
        sub = argparse.ArgumentParser().add_subparsers()
        getattr(importlib.import_module(module), func)(sub)
        assert tuple(sub.choices) == commands, plugin


def test_a_command_loads_only_what_it_needs(tmp_path: Path) -> None:
    """`orchestrator cluster status --help` and `orchestrator cluster down` run without importing pandas,
    SQLAlchemy, RLlib or the model registry (what other commands need), in a fresh interpreter."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = ("import sys\nfrom orchestrator.cli import main\n"
            "try:\n    main(['cluster', 'status', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            f"assert main(['cluster', 'down', '--state-dir', {str(tmp_path / 'none')!r}]) == 0\n"
            "print(sorted(m for m in ('pandas', 'sqlalchemy', 'ray.rllib', 'torch', 'scheduler.model_registry')"
            " if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
