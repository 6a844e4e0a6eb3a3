"""``orchestrator train rf`` end to end on a tiny budget, into a temporary registry."""
from __future__ import annotations

import json

import numpy as np
import pytest

from scheduler import model_registry as reg
from scheduler.features import CANDIDATE_FEATURE_NAMES, CANDIDATE_SCHEMA_VERSION
from scheduler.forest import FlatForest
from scheduler.policies.rf import FOREST_FILE, SKLEARN_FILE, RandomForestPolicy
from scheduler.policy import make_policy
from orchestrator.cli import main
from simulations.engine import simulate
from rl_env.train_rf import DAggerForest, Episode, Rollout, regret_report, rollout
from simulations.workloads import WORKLOADS_DIR, generate, load_workload


@pytest.fixture
def tiny_workload(tmp_path):
    """mixed.yaml's scenarios at high load over a 25 s window."""
    p = tmp_path / "tiny.yaml"
    p.write_text(f"name: tiny\nscenarios_from: {WORKLOADS_DIR / 'mixed.yaml'}\n"
                 "duration_s: 25\nrate_per_s: 5.0\nload_factor: 2.0\nseed: 1\n")
    return p


#: a short run of the rollout teacher: 6 s windows, one sampled future of 15 arrivals per decision
TINY = ["--duration-s", "6", "--teacher-samples", "1", "--teacher-horizon", "15", "--future-streams", "1",
        "--baselines", "least-loaded"]


def test_tiny_training_run_yields_a_loadable_policy(tiny_workload, tmp_path, local_spec, capsys, monkeypatch):
    root = tmp_path / "registry"
    # one teacher base, not the default two: each base is a labelling pass (two are covered below)
    rc = main(["train", "rf", "--workload", str(tiny_workload), "--seeds", "1-2", "--rounds", "1",
               "--variants", "x1,x2", "--trees", "8", "--max-depth", "10", "--random-state", "3",
               "--teacher-base", "fastest-feasible", "--registry", str(root), *TINY])
    assert rc == 0
    out = capsys.readouterr().out
    assert "picks the rollout's choice" in out and "mean regret" in out
    assert "rf (new)" in out and "least-loaded" in out  # heuristics side by side

    art = reg.load("rf", "latest", root=root)
    assert art.version == 1 and (art.path / FOREST_FILE).is_file() and (art.path / SKLEARN_FILE).is_file()
    m = art.meta
    assert m["feature_schema"] == CANDIDATE_SCHEMA_VERSION and m["seed"] == 3 and "train rf" in m["command"]
    assert m["config"]["trees"] == 8 and m["config"]["seeds"] == [1, 2] and m["config"]["rounds"] == 1
    assert m["teacher"] == "rollout" and m["seeds"]["training"] == [1, 2] and m["seeds"]["held_out"] == [901, 902]
    assert min(m["seeds"]["teacher_futures"]) > 10**6  # the teacher's futures: seeds no run uses
    met = m["metrics"]
    ho = met["holdout"]
    assert ho["decisions"] > 30 and 0.0 <= ho["agreement"] <= 1.0 and ho["regret_forest"] >= 0.0
    assert [r["round"] for r in met["rounds"]] == [0, 1]
    assert met["rounds"][0]["driver_agreement"] == 1.0 and met["rounds"][0]["driver_regret"] == 0.0
    assert met["train_rows"] > 2 * met["train_decisions"]  # several candidates per decision
    rng = m["feature_range"]  # the rows it was fit on: its explanation says when a row lies past them
    assert rng["rows"] == met["train_rows"] and rng["names"] == list(CANDIDATE_FEATURE_NAMES)
    assert RandomForestPolicy(root=root).bounds is not None
    assert "tiny/rf (new)" in met["simulation"] and "tiny/least-loaded" in met["simulation"]
    json.dumps(m)  # plain JSON throughout

    # the saved sklearn model and the flat forest agree exactly
    import joblib

    model = joblib.load(art.path / SKLEARN_FILE)
    flat = FlatForest.load(art.path / FOREST_FILE)
    X = np.random.default_rng(0).random((64, flat.n_features), dtype=np.float32)
    assert np.array_equal(flat.predict_rows(X)[0], model.predict(X))

    # the artifact places held-out tasks, every one on a node that can host it
    policy = RandomForestPolicy(root=root)
    tasks = generate(load_workload(tiny_workload), seed=50)
    res = simulate(local_spec, tasks, policy, seed=50)
    assert res.summary["rejected"] == 0 and res.summary["succeeded"] == len(tasks)

    # a second run, into the registry ORCH_REGISTRY names (no --registry), is version 2 and "latest"
    monkeypatch.setenv(reg.REGISTRY_ENV, str(root))
    assert main(["train", "rf", "--workload", str(tiny_workload), "--seeds", "1", "--rounds", "0",
                 "--variants", "x1", "--trees", "4", "--max-depth", "0", "--teacher", "oracle", *TINY]) == 0
    assert reg.resolve("rf", root=root).name == "2"
    assert reg.load_meta("rf", root=root)["config"]["max_depth"] is None  # 0 means unbounded


def test_bad_seed_arguments_exit_2(tiny_workload, tmp_path, capsys):
    assert main(["train", "rf", "--workload", str(tiny_workload), "--seeds", "x-y",
                 "--registry", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["train", "rf", "--workload", str(tiny_workload), "--seeds", "901",
                 "--registry", str(tmp_path)]) == 2
    assert "overlap" in capsys.readouterr().err
    for bad in ("x0", "x1,rand:9-2"):
        assert main(["train", "rf", "--workload", str(tiny_workload), "--variants", bad,
                     "--registry", str(tmp_path)]) == 2
        assert "--variants" in capsys.readouterr().err
    for flag, value in (("--warmup-s", "-5"), ("--warmup-s", "0,soon"), ("--teacher-base", "best-fit,nope"),
                        ("--teacher-base", "rollout")):
        assert main(["train", "rf", "--workload", str(tiny_workload), flag, value, "--registry", str(tmp_path)]) == 2
        assert flag in capsys.readouterr().err


def test_rollout_labels_are_the_teachers_regrets(local_spec):
    """Every decision with two or more candidates gives one row per candidate; its label is the
    teacher's regret (0 for the teacher's own choice), and a forest that memorised them agrees."""
    wl = load_workload(WORKLOADS_DIR / "high_load.yaml")
    ep = Episode("high_load", generate(wl, seed=9, duration_s=20), 9)
    r = rollout(local_spec, ep, make_policy("oracle"))
    assert r.decisions > 50 and len(r.y) == len(r.group) == len(r.X) > 2 * r.decisions
    assert np.array_equal(r.taken, r.teacher)  # the teacher drove
    assert (r.regret >= 0).all() and np.array_equal(r.y, np.log1p(r.regret))
    assert (r.regret_of(r.teacher) == 0.0).all()  # the teacher's choice has no regret
    rep = regret_report(_perfect(r), [r])
    assert rep["agreement"] == 1.0 and rep["regret_forest"] == 0.0 and rep["regret_fastest-feasible"] > 0.0
    both = Rollout.concat([r, r])
    assert both.decisions == 2 * r.decisions and np.array_equal(both.regret_of(both.teacher), np.zeros(2 * r.decisions))


def test_a_warm_up_is_placed_but_not_labelled(local_spec):
    """Tasks before ``label_from`` warm the cluster up (fastest-feasible places them in the teacher's
    round): no row comes from them, and the labelled decisions meet the queues they left."""
    wl = load_workload(WORKLOADS_DIR / "high_load.yaml")
    tasks = generate(wl, seed=9, duration_s=20)
    cold = rollout(local_spec, Episode("high_load", [t for t in tasks if t.arrival >= 10.0], 9), make_policy("oracle"))
    warm = rollout(local_spec, Episode("high_load", tasks, 9, label_from=10.0), make_policy("oracle"))
    assert 0 < warm.decisions <= len([t for t in tasks if t.arrival >= 10.0])
    # the same tasks are labelled; on the warm cluster their candidates' rows differ (load, queues)
    assert abs(warm.decisions - cold.decisions) <= 0.2 * cold.decisions
    loads = CANDIDATE_FEATURE_NAMES.index("node_load")
    assert warm.X[:, loads].mean() > cold.X[:, loads].mean()


def _perfect(r: Rollout) -> FlatForest:
    """A forest that has memorised the rows (fully grown, no bootstrap)."""
    from sklearn.ensemble import RandomForestRegressor

    model = RandomForestRegressor(n_estimators=1, bootstrap=False, max_features=None, random_state=0)
    return FlatForest.from_sklearn(model.fit(r.X, r.y))


def test_the_saved_command_reruns_the_same_forest(tiny_workload, tmp_path):
    """Every setting goes into the saved command, so rerunning it trains the very same forest,
    even with settings away from their defaults (held-out seeds, leaf size, load, window, baselines)."""
    import shlex

    root = tmp_path / "registry"
    assert main(["train", "rf", "--workload", str(tiny_workload), "--seeds", "1", "--holdout-seeds", "7",
                 "--rounds", "1", "--trees", "4", "--max-depth", "0", "--min-samples-leaf", "2",
                 "--random-state", "5", "--load-factor", "1.5", "--duration-s", "6", "--variants", "x1",
                 "--teacher-samples", "2", "--teacher-horizon", "12", "--future-streams", "1",
                 "--max-features", "0.7", "--baselines", "least-loaded", "--registry", str(root)]) == 0
    first = reg.load("rf", "1", root=root)
    argv = shlex.split(first.meta["command"])
    assert argv[:3] == ["orchestrator", "train", "rf"]
    assert main(argv[1:]) == 0  # the command writes to the same registry: version 2
    second = reg.load("rf", "2", root=root)

    assert second.meta["config"] == first.meta["config"]
    cfg = first.meta["config"]
    assert (cfg["holdout_seeds"], cfg["min_samples_leaf"], cfg["max_depth"], cfg["load_factor"],
            cfg["duration_s"], cfg["baselines"], cfg["variants"], cfg["teacher_samples"], cfg["max_features"],
            cfg["teacher_horizon"]) == ([7], 2, None, 1.5, 6.0, ["least-loaded"], ["x1"], 2, 0.7, 12)
    _assert_same_forest(first, second)
    assert first.meta["metrics"]["holdout"] == second.meta["metrics"]["holdout"]


def _assert_same_forest(first, second) -> None:
    """The two registered forests have the same trees, node for node, and predict the same."""
    import joblib

    a, b = (joblib.load(art.path / SKLEARN_FILE) for art in (first, second))
    for ta, tb in zip(a.estimators_, b.estimators_, strict=True):
        for attr in ("children_left", "children_right", "feature", "threshold", "value"):
            assert np.array_equal(getattr(ta.tree_, attr), getattr(tb.tree_, attr)), attr
    X = np.random.default_rng(1).random((256, a.n_features_in_), dtype=np.float32)
    fa, fb = (FlatForest.load(art.path / FOREST_FILE) for art in (first, second))
    assert np.array_equal(fa.predict_proba(X), fb.predict_proba(X))


def test_train_args_round_trip_through_the_parser() -> None:
    """TrainArgs.argv() parses back to an equal TrainArgs, for defaults and for settings away from
    them (an optional setting's absence included), and each field's docstring is its flag's help."""
    from orchestrator.cli import build_parser
    from rl_env.train_rf_args import TrainArgs, field_docs

    parser = build_parser()
    for args in (TrainArgs(), TrainArgs(workloads=["a.yaml"], seeds=[3, 5], max_depth=None, load_factor=0.1,
                                        baselines=[], teacher="fastest-feasible", rounds=0, duration_s=None,
                                        variants=["x3", "no:gpu-ts+gpu-mig"], max_features=1.0,
                                        teacher_horizon=25, warmup_s=[0.0, 45.5],
                                        teacher_base="fastest-feasible,best-fit",
                                        variant_weights=["x1=3", "no:gpu-mig=2"], save_rows="r.npz"),
                 TrainArgs(rows=["a.npz", "b.npz"], trees=7)):
        ns = parser.parse_args(["train", "rf", *args.argv()])
        assert TrainArgs.from_namespace(ns) == args
    assert TrainArgs.from_namespace(parser.parse_args(["train", "rf"])) == TrainArgs()
    helps = {a.dest: a.help for a in _subparser(parser, "train", "rf")._actions}
    assert all(helps[name].startswith(doc) for name, doc in field_docs().items())


def _subparser(parser, *path: str):
    import argparse

    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("version", ["1", "2", "5"])
def test_each_shipped_forest_names_the_command_that_reproduces_it(version: str) -> None:
    """The saved command is the one its config writes (teacher horizon included), so it reruns the same training."""
    from rl_env.train_rf import command_line
    from rl_env.train_rf_args import TrainArgs

    art = reg.load("rf", version, root=reg.SHIPPED_MODELS)  # not $ORCH_REGISTRY: a session fixture may point it elsewhere
    assert art.meta["command"] == command_line(TrainArgs(**art.meta["config"]))
    assert art.meta["config"]["teacher_horizon"] == {"1": 40, "2": 120, "5": 120}[version]


def test_episodes_labelled_in_processes_give_the_same_rows(local_spec):
    """``train rf --jobs N``: the episodes' rows, in processes of their own, equal one process's (the
    forest that places them travels to the workers)."""
    wl = load_workload(WORKLOADS_DIR / "high_load.yaml")
    eps = [Episode("high_load", generate(wl, seed=s, duration_s=8), s) for s in (3, 4)]
    est = DAggerForest(n_estimators=3, max_depth=4, rounds=0, teacher="oracle", progress=False).fit(local_spec, eps)
    one = Rollout.concat(list(est.label(local_spec, eps, est.forest_, None)))
    est.n_jobs = 2
    two = Rollout.concat(list(est.label(local_spec, eps, est.forest_, None)))
    assert one.decisions > 20 and not np.array_equal(one.taken, one.teacher)  # the forest placed, not the teacher
    for f in ("X", "y", "group", "regret", "teacher", "taken", "reference"):
        assert np.array_equal(getattr(one, f), getattr(two, f)), f


def test_saved_rows_refit_the_same_forest_and_weigh_a_variant(tiny_workload, tmp_path, capsys):
    """``--save-rows`` then ``--rows``: the forest fit on the saved rows, with the same tree settings,
    is the labelling run's forest; weighing a variant's rows changes it; the refit's meta names the
    command that labelled its rows."""
    root, rows = tmp_path / "registry", tmp_path / "rows" / "a.npz"
    common = ["--workload", str(tiny_workload), "--teacher", "oracle", "--trees", "4", "--max-depth", "6",
              "--random-state", "2", "--registry", str(root), *TINY]
    assert main(["train", "rf", "--variants", "x1,x2", "--seeds", "1", "--save-rows", str(rows), *common]) == 0
    assert main(["train", "rf", "--rows", str(rows), *common]) == 0
    assert "refit on" in capsys.readouterr().out
    assert main(["train", "rf", "--rows", str(rows), "--variant-weights", "x2=5", *common]) == 0
    first, refit, weighted = (reg.load("rf", v, root=root) for v in ("1", "2", "3"))

    _assert_same_forest(first, refit)
    X = np.random.default_rng(1).random((256, len(CANDIDATE_FEATURE_NAMES)), dtype=np.float32)
    fa, fw = (FlatForest.load(art.path / FOREST_FILE) for art in (first, weighted))
    assert not np.array_equal(fa.predict_proba(X), fw.predict_proba(X))
    assert refit.meta["rows_from"] == [{"file": str(rows), "command": first.meta["command"],
                                        "rows": first.meta["metrics"]["train_rows"]}]
    assert refit.meta["metrics"]["train_rows"] == first.meta["metrics"]["train_rows"]
    assert [h["round"] for h in refit.meta["metrics"]["rounds"]] == [0, 1, "refit"]
    assert weighted.meta["config"]["variant_weights"] == ["x2=5"]
    # the refit records the seeds and clusters its rows were labelled on (evaluate refuses them)
    assert (refit.meta["config"]["seeds"], refit.meta["config"]["variants"], refit.meta["seeds"]["training"]) \
        == ([1], ["x1", "x2"], [1])
    _assert_same_forest(refit, reg.load("rf", _rerun(refit.meta["command"]), root=root))
    # settings the rows fixed, or a held-out seed they were labelled on, are refused
    for extra, says in ((["--seeds", "5"], "--seeds"), (["--holdout-seeds", "1"], "--holdout-seeds"),
                        (["--rows", str(rows)], "twice")):
        assert main(["train", "rf", "--rows", str(rows), *extra, *common]) == 2
        assert says in capsys.readouterr().err
    assert not list(root.glob("rf/5"))


def _rerun(command: str) -> str:
    """Run a saved ``orchestrator train rf`` command; the version it registered."""
    import shlex

    argv = shlex.split(command)
    assert argv[:3] == ["orchestrator", "train", "rf"] and main(argv[1:]) == 0
    root = argv[argv.index("--registry") + 1]
    return reg.resolve("rf", root=root).name


def test_bad_rows_and_weights_exit_2_before_any_labelling(tiny_workload, tmp_path, capsys):
    from rl_env.rf_rows import Rollout, save_rows

    rows = tmp_path / "a.npz"
    base = ["train", "rf", "--workload", str(tiny_workload), "--teacher", "oracle", "--registry", str(tmp_path), *TINY]
    k = 3
    narrow = Rollout(np.zeros((k, 5), np.float32), np.zeros(k), np.arange(k), np.zeros(k), np.zeros(k, np.int64),
                     np.zeros(k, np.int64), np.zeros(k, np.int64), "tiny")
    save_rows(rows, narrow, {"config": {}})
    for args, says in ((["--rows", str(tmp_path / "none.npz")], "no such file"),
                       (["--rows", str(tiny_workload)], "not a rows file"),
                       (["--rows", str(rows)], "feature schema"),
                       (["--variant-weights", "x1"], "VARIANT=W"),
                       (["--variant-weights", "x1=0"], "VARIANT=W"),
                       (["--variants", "x1", "--variant-weights", "x2=3"], "not among --variants"),
                       (["--save-rows", str(tmp_path)], "is a folder")):
        assert main([*base, *args]) == 2, args
        err = capsys.readouterr().err
        assert says in err and args[0] in err and "Traceback" not in err
    full = Rollout(np.zeros((k, len(CANDIDATE_FEATURE_NAMES)), np.float32), np.zeros(k), np.arange(k), np.zeros(k),
                   np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64), "tiny")
    save_rows(rows, full, {"config": {"cluster": "configs/cluster/local.yaml", "teacher": "rollout", "seeds": [1],
                                      "variants": ["x1"]}})
    assert main([*base, "--rows", str(rows)]) == 2
    assert "--teacher 'rollout'" in capsys.readouterr().err
    cut = tmp_path / "cut.npz"  # a file cut short (a crash while it was copied)
    cut.write_bytes(rows.read_bytes()[:100])
    plain = tmp_path / "plain.npy"  # numpy's one-array format, not a rows file
    np.save(plain, np.zeros(3))
    for bad in (cut, plain):
        assert main([*base, "--rows", str(bad)]) == 2
        assert "not a rows file" in capsys.readouterr().err
