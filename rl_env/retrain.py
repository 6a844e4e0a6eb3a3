"""``orchestrator retrain``: a challenger forest trained on what the router's history shows, judged on it.

1. The workload the history shows (:func:`workload_from_history`): per task kind, its share of
   the arrivals, its most common shape (priority, SLO, resources, GPU need, cost sensitivity)
   and a log-normal law of its declared ``work``; the rate is the history's own. It is written
   as a workload YAML beside the report, so the training can be rerun from it.
2. A forest trained on windows of that workload, on the cluster the history ran on (calibrated
   with ``--calibration``: :mod:`simulations.calibration`), with ``orchestrator train rf``'s
   teacher and DAgger rounds (:class:`rl_env.train_rf.DAggerForest`), saved to the registry as
   the next ``rf`` version, its meta naming the history, the profile and the settings.
3. The champion against it on the history's own arrivals
   (:func:`simulations.history_replay.counterfactual`): task by task, with intervals.

With ``--kind rl`` the challenger is a short RL fine-tune instead (:func:`rl_experiment`): the
node-level experiment (``configs/experiments/ppo_nodes.yaml``, whose model and PPO settings the shipped
rl's ``ppo_nodes_mix.yaml`` shares; its clusters and cloning are replaced here) on the derived workload and the
calibrated cluster alone, warm-started by cloning the current RL policy (``--rl-from``), then a
few minutes of PPO (``--rl-env-steps``); ``orchestrator train rl``'s own path exports it as the next
``rl`` version, and step 3 judges it the same way.

Training windows are drawn from the derived workload (seeds of their own), never the
history's tasks themselves: the comparison in step 3 is on arrivals the forest did not see.
Deterministic for fixed seeds.
"""
from __future__ import annotations

import argparse
import collections
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cluster.config import UsageError
from scheduler.features import RANGE_KEY
from scheduler.task import Task
from serve_app.history_sql import mask

#: a kind needs this many tasks in the history to become a scenario of the derived workload
MIN_KIND_TASKS = 3
#: policies :func:`simulations.history_replay.counterfactual` builds itself, by name, per seed
Builders = dict[str, Callable[[int], Any]]


def workload_from_history(tasks: Sequence[Task], name: str = "from_history") -> dict[str, Any]:
    """The workload YAML mapping of ``tasks`` (see the module docstring)."""
    span = max(t.arrival for t in tasks) - min(t.arrival for t in tasks)
    by_kind: dict[str, list[Task]] = collections.defaultdict(list)
    for t in tasks:
        by_kind[t.kind].append(t)
    scenarios = []
    for kind, ts in sorted(by_kind.items()):
        if len(ts) < MIN_KIND_TASKS:
            continue
        shape = collections.Counter((t.priority, t.slo_ms, t.cpu_milli, t.mem_mib, t.gpu_milli, t.gpu_count,
                                     t.mig_profile, t.gpu_models, t.cost_sensitivity) for t in ts).most_common(1)[0][0]
        prio, slo, cpu, mem, gmilli, gcount, mig, models, cost = shape
        gpu: Any = ("none" if not (gmilli or gcount or mig) else {"mig": mig} if mig else
                    {"count": gcount} if gcount else {"fraction": round(gmilli / 1000.0, 3)})
        work = np.array([max(t.work, 1e-3) for t in ts])
        sigma = float(np.std(np.log(work))) if len(work) > 1 else 0.0
        law = ({"dist": "lognormal", "mean": round(float(work.mean()), 6), "sigma": round(max(sigma, 0.01), 4)}
               if sigma > 1e-3 else {"dist": "constant", "mean": round(float(work.mean()), 6)})
        scenarios.append({"kind": kind, "weight": len(ts), "priority": prio, "slo_ms": slo,
                          "cpus": cpu / 1000.0, "memory_gb": mem / 1024.0, "gpu": gpu,
                          **({"gpu_models": list(models)} if models else {}), "work_s": law,
                          "cost_sensitivity": cost})
    if not scenarios:
        raise UsageError(f"no task kind has {MIN_KIND_TASKS} or more tasks in the history: nothing to train on")
    return {"name": name, "description": "The workload mix a router's history shows (orchestrator retrain).",
            "duration_s": round(max(span, 1.0), 3), "rate_per_s": round(len(tasks) / max(span, 1.0), 6),
            "load_factor": 1.0, "seed": 0, "scenarios": scenarios}


def add_retrain(sub: argparse._SubParsersAction) -> None:
    from rl_env.train_rf_args import TrainArgs

    d = TrainArgs()
    p = sub.add_parser("retrain", help="train a challenger rf on the router's history and judge it against the "
                                       "champion on the history's arrivals")
    p.add_argument("--history", required=True, metavar="URL", help="the router's history (sqlite:///..., postgresql://...)")
    p.add_argument("--cluster", default="configs/cluster/local.yaml", help="the cluster the history ran on")
    p.add_argument("--calibration", metavar="PROFILE", help="a profile of `orchestrator calibrate` for the simulator")
    p.add_argument("--champion", default="rf", help="the policy the challenger is compared with (the router's)")
    p.add_argument("--seeds", default="1-2", help="training seeds of the derived workload's windows")
    p.add_argument("--eval-seeds", default="1-3", help="network-draw seeds of the counterfactual")
    p.add_argument("--teacher", default=d.teacher, help="the teacher whose regrets the forest learns")
    p.add_argument("--rounds", type=int, default=d.rounds, help="DAgger rounds after the first")
    p.add_argument("--trees", type=int, default=d.trees, help="trees in the forest")
    p.add_argument("--duration-s", type=float, default=d.duration_s, help="seconds of each training window")
    p.add_argument("--max-tasks", type=int, default=50_000, help="read at most this many (the newest) tasks")
    p.add_argument("--registry", default=None, help="model registry root (default: $ORCH_REGISTRY or artifacts/policies)")
    p.add_argument("--out", default="results/retrain", help="folder for workload.yaml and the report")
    p.add_argument("--kind", choices=("rf", "rl"), default="rf",
                   help="the challenger: a forest (default), or a short RL fine-tune (PPO through Tune)")
    p.add_argument("--rl-from", default="rl:latest", help="--kind rl: the policy cloned before PPO (the current RL one, from the router's registry)")
    p.add_argument("--rl-experiment", default=RL_EXPERIMENT, help="--kind rl: the experiment whose model and PPO "
                                                                  "settings the fine-tune keeps")
    p.add_argument("--rl-env-steps", type=int, default=200_000,
                   help="--kind rl: env steps of PPO after the clone (the budget; about 150 s here)")
    p.add_argument("--rl-time-s", type=float, default=1800.0, help="--kind rl: most seconds of PPO (a cap on a slow "
                                                                  "machine; the env steps set the budget)")
    p.add_argument("--rl-steps", type=int, default=4000, help="--kind rl: demonstrations per round of the clone")
    p.set_defaults(func=cmd_retrain)


#: the experiment an RL fine-tune starts from (its model, PPO settings and validation cadence)
RL_EXPERIMENT = "configs/experiments/ppo_nodes.yaml"


def rl_experiment(base: str | Path, workload: str | Path, *, cluster: str, calibration: str | None, teacher: str,
                  env_steps: int, time_s: float, steps: int, seed: int, storage: str | Path):
    """The fine-tune's experiment: ``base`` with the history's workload on its (calibrated) cluster only, at its
    own rate, one trial at the base's smallest learning rate, ``teacher`` cloned in one round of ``steps``,
    PPO for ``env_steps`` (at most ``time_s`` seconds: a budget in steps, not in this machine's speed),
    validated on a seed of the derived workload that training never draws."""
    import copy

    from cluster.config import load_yaml
    from rl_env.experiment import experiment_from_mapping

    raw = copy.deepcopy(load_yaml(base).data)
    env = raw.setdefault("env", {})
    env.update(cluster=cluster, cluster_variants=["x1"], workloads=[str(workload)], load_scale=[1.0, 1.0])
    env.pop("load_factor", None)
    if calibration:
        env["calibration"] = calibration
    else:
        env.pop("calibration", None)
    raw["name"] = "retrain_rl"
    raw["seed"] = seed
    raw["init"] = {**raw.get("init", {}), "imitate": teacher, "steps": steps, "rounds": 1}
    lr = raw.get("ppo", {}).get("lr")
    if isinstance(lr, dict) and "grid" in lr:
        raw["ppo"]["lr"] = min(lr["grid"])
    raw["validation"] = {**raw.get("validation", {}), "workloads": [str(workload)], "seeds": [seed + 900],
                         "clusters": ["x1"], "every": 1}
    raw.setdefault("resources", {})["max_concurrent_trials"] = 1
    raw["stop"] = {"env_steps": env_steps, "time_s": time_s}
    raw["storage"] = str(storage)
    return experiment_from_mapping(raw, base)


def cmd_retrain(args: argparse.Namespace) -> int:
    import yaml

    from rl_env.train_rf import DAggerForest, _episodes
    from rl_env.train_rf_args import TrainArgs
    from scheduler import model_registry
    from scheduler.objective import load_objective
    from scheduler.policies.rf import FOREST_FILE, KIND, SKLEARN_FILE
    from simulations.compare import parse_policies
    from simulations.history_replay import about, counterfactual, history_on_cluster, markdown
    from simulations.packing import parse_seeds

    try:
        names = parse_policies(args.champion)
    except UsageError as exc:  # it names --policies, the flag it usually reads
        raise UsageError(str(exc).replace("--policies", "--champion", 1)) from None
    if len(names) != 1:
        raise UsageError(f"--champion: one policy, got {args.champion!r}")
    champion = _pinned(names[0], "--champion")  # before the challenger joins the registry it may share
    build, facts = _champion_build(champion)
    try:
        seeds, eval_seeds = parse_seeds(args.seeds), parse_seeds(args.eval_seeds)
    except ValueError as exc:
        raise UsageError(f"--seeds / --eval-seeds: {exc}") from None
    if args.rounds < 0 or args.trees < 1 or not (args.duration_s or 1) > 0:
        raise UsageError("--rounds must be >= 0, --trees >= 1, --duration-s > 0")
    if args.kind == "rl" and not (args.rl_time_s > 0 and args.rl_steps > 0 and args.rl_env_steps > 0):
        raise UsageError("--rl-env-steps, --rl-time-s and --rl-steps must be > 0")
    spec, tasks, rows = history_on_cluster(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wl_path = out / "workload.yaml"
    wl_path.write_text("# written by `orchestrator retrain` from " + mask(args.history) + "\n"
                       + yaml.safe_dump(workload_from_history(tasks), sort_keys=False))
    if args.kind == "rl":
        return _retrain_rl(args, spec, tasks, rows, champion, build, facts, seeds, eval_seeds, wl_path, out)
    cfg = TrainArgs(cluster=args.cluster, workloads=[str(wl_path.resolve())], variants=["x1"], seeds=seeds,
                    holdout_seeds=[max(seeds) + 900], rounds=args.rounds, trees=args.trees, teacher=args.teacher,
                    duration_s=args.duration_s)
    objective = load_objective()
    t0 = time.perf_counter()
    est = DAggerForest(n_estimators=cfg.trees, max_depth=cfg.max_depth, min_samples_leaf=cfg.min_samples_leaf,
                       rounds=cfg.rounds, random_state=cfg.random_state, teacher=cfg.teacher, progress=False,
                       max_features=cfg.max_features, teacher_samples=cfg.teacher_samples,
                       teacher_horizon=cfg.teacher_horizon, teacher_horizon_s=cfg.teacher_horizon_s,
                       teacher_base=cfg.teacher_base)
    est.fit(spec, _episodes(cfg, spec, cfg.seeds, ["x1"]), objective)
    train_s = time.perf_counter() - t0
    import joblib

    meta = {"config": asdict(cfg), "seed": cfg.random_state, "seeds": {"training": cfg.seeds},
            "retrained_from": {"history": mask(args.history), "tasks": len(tasks), "first": rows[0]["task_id"],
                               "last": rows[-1]["task_id"], "calibration": args.calibration,
                               "workload": str(wl_path)},
            "teacher": cfg.teacher, "train_seconds": round(train_s, 1), RANGE_KEY: est.feature_range(),
            "command": "orchestrator " + " ".join(getattr(args, "argv", []) or ["retrain"])}
    path = model_registry.save(KIND, {FOREST_FILE: est.forest_.save,
                                      SKLEARN_FILE: lambda p: joblib.dump(est.model_, p)}, meta, root=args.registry)
    challenger = f"{KIND}:{path.name}"
    from scheduler.policies.rf import RandomForestPolicy

    # the challenger from where it was saved; the champion from the registry the router reads
    report = counterfactual(spec, tasks, [champion, challenger], eval_seeds, objective,
                            build={**build, challenger: lambda seed: RandomForestPolicy(
                                path.name, root=path.parent.parent, explain=False)})
    report.update(about(args, spec, rows), **facts, challenger=challenger, train_seconds=round(train_s, 1))
    (out / "retrain.json").write_text(json.dumps(report, indent=1))
    text = (f"challenger {challenger} trained in {train_s:.0f} s on {len(seeds)} window(s) of the history's workload "
            f"({wl_path}); judged against {champion} on the history's own arrivals:\n\n" + markdown(report))
    (out / "retrain.md").write_text(text)
    print(text)
    return 0


def _pinned(name: str, flag: str) -> str:
    """A learned policy's name with its version resolved in the router's registry (``rf`` -> ``rf:5``), so that the
    version a retrain saves, maybe into that same registry, is never what it is compared with or cloned from."""
    from scheduler import model_registry

    try:
        return model_registry.pinned(name)
    except model_registry.RegistryError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def _champion_build(champion: str) -> tuple[Builders, dict[str, Any]]:
    """``auto`` as champion, its learned members pinned now (built by name after the challenger is saved into
    the registry they come from, its ``rf`` would be the challenger itself), and the members for the report."""
    if champion != "auto":
        return {}, {}
    from scheduler import model_registry
    from scheduler.policies.auto import pinned_members
    from scheduler.policy import make_policy

    try:
        members = pinned_members()
    except model_registry.RegistryError as exc:
        raise UsageError(f"--champion: {exc}") from None
    return {champion: lambda seed: make_policy("auto", seed=seed, members=",".join(members))}, \
        {"champion_members": members}


def _retrain_rl(args: argparse.Namespace, spec, tasks, rows, champion: str, build: Builders, facts: dict[str, Any],
                seeds, eval_seeds, wl_path: Path, out: Path) -> int:
    """``--kind rl``: the fine-tune (:func:`rl_experiment`) exported as the next rl version, then judged."""
    from scheduler.objective import load_objective
    from scheduler.policies.rl import RLPolicy
    from simulations.history_replay import about, counterfactual, markdown
    from rl_env.train import train

    teacher = _pinned(args.rl_from, "--rl-from")
    exp = rl_experiment(args.rl_experiment, wl_path.resolve(), cluster=args.cluster, calibration=args.calibration,
                        teacher=teacher, env_steps=args.rl_env_steps, time_s=args.rl_time_s, steps=args.rl_steps,
                        seed=min(seeds),
                        storage=out / "runs")
    rep = train(exp, registry=args.registry)
    challenger = f"rl:{rep.artifact.name}"
    report = counterfactual(spec, tasks, [champion, challenger], eval_seeds, load_objective(),
                            build={**build, challenger: lambda seed: RLPolicy(
                                rep.artifact.name, root=rep.artifact.parent.parent, seed=seed)})
    report.update(about(args, spec, rows), **facts, challenger=challenger, train_seconds=round(rep.wall_s, 1),
                  fine_tune={"from": teacher, "env_steps": args.rl_env_steps, "time_s": args.rl_time_s,
                             "steps": args.rl_steps,
                             "workload": str(wl_path), "run_dir": str(rep.run_dir)})
    (out / "retrain.json").write_text(json.dumps(report, indent=1))
    text = (f"challenger {challenger}: {teacher} cloned ({args.rl_steps} demonstrations) and fine-tuned by PPO "
            f"(best checkpoint at {rep.best['env_steps']:,} env steps of at most {args.rl_env_steps:,}) on the "
            f"history's workload ({wl_path}), {rep.wall_s:.0f} s in all; judged against "
            f"{champion} on the history's own arrivals:\n\n" + markdown(report))
    (out / "retrain.md").write_text(text)
    print(text)
    return 0
