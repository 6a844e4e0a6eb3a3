"""``orchestrator retrain``: a challenger forest from the history's workload, judged on the history's arrivals."""
from __future__ import annotations

import json

import pytest

from orchestrator.cli import main
from rl_env.retrain import workload_from_history
from scheduler import model_registry
from simulations.workloads import load_workload
from tests.conftest import CONFIGS
from tests.simulations.test_history_replay import write_history

LOCAL = CONFIGS / "cluster" / "local.yaml"


def test_the_workload_the_history_shows(tmp_path) -> None:
    _, tasks = write_history(tmp_path / "h.db", 150)
    wl = workload_from_history(tasks)
    kinds = {s["kind"]: s for s in wl["scenarios"]}
    for kind in {t.kind for t in tasks}:
        ts = [t for t in tasks if t.kind == kind]
        if len(ts) >= 3:
            assert kinds[kind]["weight"] == len(ts) and kinds[kind]["priority"] == ts[0].priority
            assert kinds[kind]["work_s"]["mean"] == pytest.approx(sum(t.work for t in ts) / len(ts), rel=1e-4)
    span = tasks[-1].arrival - tasks[0].arrival
    assert wl["rate_per_s"] == pytest.approx(len(tasks) / span, rel=1e-4)
    import yaml

    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(wl))
    assert {s.kind for s in load_workload(path).scenarios} == set(kinds)  # a valid workload file


def test_retrain_trains_a_challenger_and_judges_it_on_the_history(tmp_path, capsys) -> None:
    url, tasks = write_history(tmp_path / "h.db", 150)
    registry = tmp_path / "registry"
    args = ["retrain", "--history", url, "--cluster", str(LOCAL), "--champion", "fastest-feasible",
            "--teacher", "oracle", "--rounds", "0", "--trees", "5", "--seeds", "1", "--duration-s", "20",
            "--eval-seeds", "1", "--registry", str(registry), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "challenger rf:1 trained" in text and "| rf:1 |" in text and "| fastest-feasible |" in text
    art = model_registry.load("rf", "latest", root=registry)
    assert art.meta["retrained_from"]["history"] == url and art.meta["retrained_from"]["tasks"] == len(tasks)
    assert art.meta["command"].startswith("orchestrator retrain --history")
    assert art.meta["feature_range"]["rows"] > 0  # its explanations say when a row lies past what it was fit on
    report = json.loads((tmp_path / "out" / "retrain.json").read_text())
    assert report["challenger"] == "rf:1" and report["policies"]["rf:1"]["better_tasks"] >= 0
    assert load_workload(tmp_path / "out" / "workload.yaml").scenarios  # the derived workload, kept


def test_bad_input_exits_2(tmp_path, capsys) -> None:
    url, _ = write_history(tmp_path / "h.db", 10)
    assert main(["retrain", "--history", url, "--champion", "a,b", "--out", str(tmp_path / "o")]) == 2
    assert "--champion" in capsys.readouterr().err
    assert main(["retrain", "--history", url, "--trees", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--trees" in capsys.readouterr().err
    assert main(["retrain", "--history", url, "--kind", "rl", "--rl-time-s", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--rl-time-s" in capsys.readouterr().err


def test_the_rl_fine_tune_is_the_shipped_experiment_on_the_historys_workload_alone(tmp_path, shipped_models) -> None:
    """What `retrain --kind rl` hands to `train rl`: the shipped model and PPO settings, the derived workload on the
    calibrated cluster only, the current RL policy cloned first, a short PPO run, validation on an unseen seed.
    (The training itself is `orchestrator train rl`'s path, run end to end in test_train_tiny.)"""
    from rl_env.experiment import load_experiment
    from rl_env.retrain import RL_EXPERIMENT, rl_experiment
    from simulations import calibration as cal

    url, tasks = write_history(tmp_path / "h.db", 150)
    import yaml

    wl = tmp_path / "w.yaml"
    wl.write_text(yaml.safe_dump(workload_from_history(tasks)))
    profile = tmp_path / "profile.yaml"
    cal.save(cal.Profile({"cloud": {"fraud_scoring": 2.0}}, {"fraud_scoring": 3.0}, {}, {}), profile)
    exp = rl_experiment(CONFIGS.parent / RL_EXPERIMENT, wl, cluster=str(LOCAL), calibration=str(profile),
                        teacher="rl:2", env_steps=50_000, time_s=120.0, steps=3000, seed=1,
                        storage=tmp_path / "runs")
    shipped = load_experiment(CONFIGS.parent / RL_EXPERIMENT)
    assert exp.env.workloads == (str(wl),) or list(exp.env.workloads) == [str(wl)]
    assert list(exp.env.cluster_variants) == ["x1"] and exp.env.calibration == str(profile)
    assert exp.init.teacher == "rl:2" and exp.init.steps == 3000 and exp.init.rounds == 1
    assert (exp.stop_env_steps, exp.stop_time_s) == (50_000, 120.0) and exp.grid == {}
    assert exp.max_concurrent_trials == 1
    assert exp.ppo["lr"] == min(shipped.grid["lr"]) and exp.model == shipped.model
    assert list(exp.validation.seeds) == [901] and list(exp.validation.workloads) == [str(wl)]
    assert exp.storage == str(tmp_path / "runs")


def test_the_champion_is_the_version_before_the_retrain_even_in_the_same_registry(tmp_path, capsys,
                                                                                   monkeypatch) -> None:
    """`--champion rf` with the router's own registry (the default): the challenger saved there becomes rf's
    latest, and must not be judged against itself."""
    from tests.learned_registry import build_tiny_rf

    registry = tmp_path / "registry"
    build_tiny_rf(registry)
    monkeypatch.setenv(model_registry.REGISTRY_ENV, str(registry))
    before = model_registry.resolve("rf", "latest").name
    url, _ = write_history(tmp_path / "h.db", 60)
    args = ["retrain", "--history", url, "--cluster", str(LOCAL), "--champion", "rf", "--teacher", "oracle",
            "--rounds", "0", "--trees", "3", "--seeds", "1", "--duration-s", "8", "--eval-seeds", "1",
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    report = json.loads((tmp_path / "out" / "retrain.json").read_text())
    after = model_registry.resolve("rf", "latest").name
    assert after != before and report["challenger"] == f"rf:{after}"
    assert set(report["policies"]) == {f"rf:{before}", f"rf:{after}"}


def test_an_auto_champion_keeps_the_forest_it_had_before_the_challenger_was_saved(tmp_path, capsys,
                                                                                   monkeypatch) -> None:
    """`--champion auto` (a router running auto) delegates to the registry's rf: a challenger saved into that
    registry must not become the champion's own forest, and the report names the forest it had."""
    import simulations.history_replay as hr
    from tests.learned_registry import build_tiny_rf

    registry = tmp_path / "registry"
    build_tiny_rf(registry)
    monkeypatch.setenv(model_registry.REGISTRY_ENV, str(registry))
    before = model_registry.resolve("rf", "latest").name
    judged = {}
    real = hr.counterfactual

    def recorded(spec, tasks, policies, seeds, objective=None, build=None):
        judged.update(policies=list(policies), auto=build["auto"](0))
        return real(spec, tasks, policies, seeds, objective, build)

    monkeypatch.setattr(hr, "counterfactual", recorded)
    url, _ = write_history(tmp_path / "h.db", 60)
    assert main(["retrain", "--history", url, "--cluster", str(LOCAL), "--champion", "auto", "--teacher", "oracle",
                 "--rounds", "0", "--trees", "3", "--seeds", "1", "--duration-s", "8", "--eval-seeds", "1",
                 "--out", str(tmp_path / "out")]) == 0
    after = model_registry.resolve("rf", "latest").name
    assert after != before and judged["policies"] == ["auto", f"rf:{after}"]
    assert judged["auto"].members[0] == f"rf:{before}"  # not the challenger
    report = json.loads((tmp_path / "out" / "retrain.json").read_text())
    assert report["champion_members"][0] == f"rf:{before}"
