"""``orchestrator counterfactual``: a router history's arrivals replayed under other policies, task by task."""
from __future__ import annotations

import json

from orchestrator.cli import main
from serve_app.history import open_store
from simulations.history_replay import tasks_from_history
from simulations.workloads import WORKLOADS_DIR, generate, load_workload
from tests.conftest import CONFIGS

LOCAL = CONFIGS / "cluster" / "local.yaml"


def write_history(path, n: int = 150) -> tuple[str, list]:
    """``n`` high-load tasks as the router records them: accepted at their arrival times (a second apart in
    wall time ...), the first ones succeeded with a score, one still running, one rejected."""
    tasks = generate(load_workload(WORKLOADS_DIR / "high_load.yaml"), seed=3, duration_s=30)[:n]
    url = f"sqlite:///{path}"
    h = open_store(url)
    for i, t in enumerate(tasks):
        h.accept(f"run-{t.id}", {**t.to_dict(), "owner": "tests", "pool": None}, accepted_at=1_000.0 + t.arrival,
                 kind=t.kind, policy="rf:5")
        status = "running" if i == 5 else "rejected" if i == 6 else "succeeded"
        h.update(f"run-{t.id}", status, **({"score": 0.5, "slo_met": True} if status == "succeeded" else {}))
    h.flush()
    h.close()
    return url, tasks


def test_the_history_is_rebuilt_as_the_stream_it_was(tmp_path) -> None:
    url, tasks = write_history(tmp_path / "h.db")
    from simulations.calibration_cli import read_history

    rebuilt, rows = tasks_from_history(read_history(url, 10_000, status=None))
    assert [t.id for t in rebuilt] == [f"run-{t.id}" for t in tasks]  # every accepted task, rejected and running too
    assert [round(t.arrival, 6) for t in rebuilt] == [round(t.arrival - tasks[0].arrival, 6) for t in tasks]
    assert [(t.cpu_milli, t.gpu_milli, t.work, t.kind) for t in rebuilt] == [
        (t.cpu_milli, t.gpu_milli, t.work, t.kind) for t in tasks]


def test_counterfactual_compares_policies_task_by_task(tmp_path, capsys) -> None:
    url, tasks = write_history(tmp_path / "h.db")
    args = ["counterfactual", "--history", url, "--cluster", str(LOCAL), "--policies",
            "fastest-feasible,random,least-loaded", "--seeds", "1-2"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert f"{len(tasks)} tasks of `{url}`" in text and "| random |" in text and "mean objective 0.500" in text
    report = json.loads((tmp_path / "a" / "counterfactual.json").read_text())
    rnd = report["policies"]["random"]
    assert rnd["vs_first"] > 0 and rnd["vs_first_ci"][0] > 0  # at high load random is clearly worse, task by task
    assert rnd["better_tasks"] + rnd["worse_tasks"] <= len(tasks)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # deterministic for fixed seeds
    again = json.loads((tmp_path / "b" / "counterfactual.json").read_text())
    def figures(r):
        return {p: {k: v for k, v in f.items() if k != "seconds"} for p, f in r["policies"].items()}
    assert figures(again) == figures(report)


def test_bad_input_exits_2_naming_it(tmp_path, capsys) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    open_store(empty).close()
    assert main(["counterfactual", "--history", empty, "--policies", "fastest-feasible"]) == 2
    assert "0 replayable tasks" in capsys.readouterr().err
    url, _ = write_history(tmp_path / "h.db", 10)
    assert main(["counterfactual", "--history", url, "--policies", "nope"]) == 2
    assert "--policies" in capsys.readouterr().err
    assert main(["counterfactual", "--history", url, "--policies", "random", "--seeds", "x-y"]) == 2
    assert "--seeds" in capsys.readouterr().err
