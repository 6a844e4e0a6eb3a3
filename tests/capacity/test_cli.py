"""``orchestrator capacity forecast|backtest``: exit 2 naming the flag, and a small run end to end."""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import pytest

from capacity.cli import add_capacity, main
from tests.capacity.conftest import DAILY, write_workload


@pytest.mark.parametrize("argv, flag", [
    (["backtest"], "give a source"),
    (["backtest", "--workload", "W", "--interval", "soon"], "--interval"),
    (["backtest", "--workload", "W", "--horizons", "90min"], "--horizons"),
    (["forecast", "--workload", "W", "--horizons", "0h"], "--horizons"),
    (["backtest", "--workload", "W", "--models", "ets,prophet"], "--models"),
    (["forecast", "--workload", "W", "--levels", "80,120"], "--levels"),
    (["backtest", "--workload", "W", "--series", "totals,regions"], "--series"),
    (["backtest", "--workload", "W", "--max-windows", "0"], "--max-windows"),
    (["backtest", "--workload", "W", "--test-span", "2h", "--horizons", "1D"], "--test-span"),
    (["forecast", "--workload", "W", "--load-factor", "-1"], "--load-factor"),
    (["backtest", "--workload", "missing.yaml"], "missing.yaml"),
    (["forecast", "--records", "missing.jsonl"], "missing.jsonl"),
])
def test_bad_flags_exit_2_naming_the_flag(argv: list[str], flag: str, tmp_path: Path, capsys) -> None:
    w = str(write_workload(tmp_path, days=2, profile=DAILY))
    argv = [w if a == "W" else a for a in argv]
    assert main(["capacity", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orchestrator: error:") and flag in err


def test_argparse_errors_exit_2_too(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["capacity", "backtest", "--max-windows", "many"])
    assert exc.value.code == 2


def test_every_option_has_help() -> None:
    root = argparse.ArgumentParser(prog="orchestrator")
    add_capacity(root.add_subparsers())
    cap = root._subparsers._group_actions[0].choices["capacity"]
    for name, sub in cap._subparsers._group_actions[0].choices.items():
        missing = [a.dest for a in sub._actions if not a.help]
        assert missing == [], name


def test_backtest_and_forecast_end_to_end(tmp_path: Path, capsys) -> None:
    w = str(write_workload(tmp_path, days=4, rate=0.05, profile=DAILY))
    out, page = tmp_path / "out", tmp_path / "capacity.md"
    common = ["--workload", w, "--models", "snaive,ets", "--horizons", "1h,6h", "--series", "totals", "--out", str(out)]
    assert main(["capacity", "backtest", *common, "--test-span", "12h", "--markdown", str(page)]) == 0
    table = pd.read_csv(out / "backtest.csv")
    assert set(table["model"]) == {"snaive", "ets"} and set(table["horizon"]) == {"1h", "6h"}
    assert {"mae", "mape", "mase", "cov_80", "cov_95", "seconds", "source"} <= set(table.columns)
    assert (out / "backtest_forecasts.csv").is_file() and (out / "backtest_best.csv").is_file()
    text = page.read_text()
    assert text.startswith("# Capacity: demand forecasts and their backtests")
    assert "by `orchestrator capacity backtest --workload" in text and "## Targets of issue 20" in text
    assert f"## workload:{Path(w).stem}" in text
    assert main(["capacity", "forecast", *common]) == 0
    fc = pd.read_csv(out / "forecast.csv")
    assert len(fc) == 4 * 2 * 6 and {"lo_95", "hi_95", "metric", "source"} <= set(fc.columns)
    assert "forecasts written to" in capsys.readouterr().out
