"""``orchestrator train rl``: RLlib PPO (new API stack, torch, action masking) through Ray Tune.

One Tune trial per point of the experiment's grid (``{grid: [...]}`` values in its
``ppo`` section), run concurrently on a private local Ray instance
(:func:`rl_env.ray_local.local_ray`). Each trial first clones a heuristic's
choices into its policy (``init``, :mod:`rl_env.imitation`), then runs PPO. Every ``validation.every`` iterations each
trial plays its greedy policy on fixed validation episodes and checkpoints; the
checkpoint with the lowest validation objective over all trials is exported to
the policy registry as a plain torch module (:mod:`rl_env.export`).

Kept: Tune's own results (``<storage>/<name>-<time>/``, a ``progress.csv`` per
trial) and ``curves.csv`` there (one row per trial and iteration: env steps, wall
time, training return and objective, validation objective and SLO miss rate),
also copied into the artifact.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl_env.config import REPO_ROOT, EnvConfig, output_path
from rl_env.experiment import Experiment, load_experiment

VALIDATION_KEY = "validation"
#: Top-level (flat) on purpose: Tune's checkpoint manager looks the score attribute up in the
#: unflattened result, so a nested "validation/objective" silently falls back to keeping the latest.
METRIC = "validation_objective"


@dataclass
class TrainReport:
    """What a training run produced."""

    artifact: Path
    run_dir: Path
    curves: Path
    best: dict[str, Any]
    wall_s: float
    trials: list[dict[str, Any]]


# ---------------------------------------------------------------- RLlib callbacks (run inside trials)


def log_episode_metrics(*, episode: Any, metrics_logger: Any = None, **_: Any) -> None:
    """Log each finished training episode's mean objective and SLO miss rate."""
    info = episode.get_infos(-1)
    summary = info.get("episode") if isinstance(info, dict) else None
    if summary and metrics_logger is not None:
        metrics_logger.log_value("objective_mean", summary["objective_mean"], window=20)
        metrics_logger.log_value("slo_miss_rate", summary["slo_miss_rate"], window=20)


def warm_start_on_init(*, algorithm: Any, init: dict[str, Any], env: dict[str, Any], seed: int,
                       **_: Any) -> None:
    """Before the first iteration, clone the teacher heuristic into the policy (see rl_env.imitation)."""
    from rl_env.imitation import Imitation, warm_start

    cfg = Imitation(**init)
    if cfg.teacher:
        algorithm._orch_warm_start = {"teacher": cfg.teacher,
                                      **warm_start(algorithm, EnvConfig.from_mapping(env), cfg, seed)}


def validate_on_train_result(*, algorithm: Any, result: dict, validation: dict[str, Any], **_: Any) -> None:
    """Every ``every`` iterations (and the first), score the greedy policy on the validation episodes."""
    from rl_env.export import to_policy_net
    from rl_env.validate import greedy_rollouts

    it = int(result["training_iteration"])
    if it == 1 or it % validation["every"] == 0:
        net = to_policy_net(algorithm.get_module())
        v = greedy_rollouts(net, EnvConfig.from_mapping(validation["env"]), validation["episodes"])
        per_workload: dict[str, list[float]] = {}
        for e in v["episodes"]:
            per_workload.setdefault(e["workload"], []).append(e["objective_mean"])
        algorithm._orch_validation = {"objective": v["objective"], "slo_miss_rate": v["slo_miss_rate"],
                                      "iteration": it,
                                      **{f"objective_{w}": sum(x) / len(x) for w, x in per_workload.items()}}
    result[VALIDATION_KEY] = dict(getattr(algorithm, "_orch_validation", {}))
    if "objective" in result[VALIDATION_KEY]:
        result[METRIC] = result[VALIDATION_KEY]["objective"]
    if it == 1 and hasattr(algorithm, "_orch_warm_start"):
        result["warm_start"] = dict(algorithm._orch_warm_start)


# ---------------------------------------------------------------- configuration


def ppo_config(exp: Experiment) -> Any:
    """The PPOConfig of ``exp``; grid axes become ``tune.grid_search`` values."""
    from ray import tune
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from rl_env.module import MaskedPlacementModule
    from rl_env.node_env import env_class

    p = {k: tune.grid_search(v[1]) if isinstance(v, tuple) else v for k, v in exp.ppo.items()}
    validation = {"env": exp.validation_env().to_dict(), "episodes": exp.validation.episodes(),
                  "every": exp.validation.every}
    return (
        PPOConfig()
        .environment(env_class(exp.env.level), env_config=exp.env.to_dict())
        .framework("torch")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=exp.envs_per_runner,
                     rollout_fragment_length="auto")
        .learners(num_learners=0)
        .training(lr=p["lr"], gamma=p["gamma"], lambda_=p["lambda"], entropy_coeff=p["entropy_coeff"],
                  clip_param=p["clip_param"], vf_loss_coeff=p["vf_loss_coeff"], vf_clip_param=p["vf_clip_param"],
                  grad_clip=p["grad_clip"], grad_clip_by=p["grad_clip_by"], kl_coeff=p["kl_coeff"],
                  kl_target=p["kl_target"],
                  train_batch_size_per_learner=p["train_batch_size"], minibatch_size=p["minibatch_size"],
                  num_epochs=p["num_epochs"])
        .rl_module(rl_module_spec=RLModuleSpec(module_class=MaskedPlacementModule, model_config=dict(exp.model)))
        .callbacks(on_episode_end=log_episode_metrics,
                   on_algorithm_init=functools.partial(warm_start_on_init, init=dataclasses.asdict(exp.init),
                                                       env=exp.env.to_dict(), seed=exp.seed),
                   on_train_result=functools.partial(validate_on_train_result, validation=validation))
        .reporting(metrics_num_episodes_for_smoothing=20)
        .debugging(seed=exp.seed)
    )


# ---------------------------------------------------------------- progress and curves


CURVE_COLUMNS = ["trial", "params", "iteration", "env_steps", "time_s", "episode_return_mean",
                 "train_objective", "train_slo_miss", "val_objective", "val_slo_miss", "val_by_workload"]


def _progress_callback(curves: Path, grid: dict[str, list[Any]], t0: float):
    from ray import tune

    class Progress(tune.Callback):
        """Prints one line per trial iteration and appends it to ``curves.csv``."""

        def __init__(self) -> None:
            curves.parent.mkdir(parents=True, exist_ok=True)
            with curves.open("w", newline="") as fh:
                csv.writer(fh).writerow(CURVE_COLUMNS)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            er = result.get("env_runners", {})
            val = result.get(VALIDATION_KEY, {})
            fresh = val.get("iteration") == result["training_iteration"]
            params = _params(trial, grid)
            row = [trial.trial_id, params, result["training_iteration"],
                   int(result.get("num_env_steps_sampled_lifetime", 0)), round(result.get("time_total_s", 0.0), 2),
                   _num(er.get("episode_return_mean")), _num(er.get("objective_mean")),
                   _num(er.get("slo_miss_rate")),
                   _num(val.get("objective")) if fresh else "", _num(val.get("slo_miss_rate")) if fresh else "",
                   ";".join(f"{k[len('objective_'):]}={v:.4f}" for k, v in val.items()
                            if k.startswith("objective_")) if fresh else ""]
            with curves.open("a", newline="") as fh:
                csv.writer(fh).writerow(row)
            parts = " ".join(f"{k[len('objective_'):]} {v:.2f}" for k, v in val.items() if k.startswith("objective_"))
            vtxt = f"  validation objective {val['objective']:.3f} ({parts}) slo miss " \
                   f"{100 * val['slo_miss_rate']:.1f}%" if fresh else ""
            ttxt = f"  train objective {er['objective_mean']:.3f}" if "objective_mean" in er else ""
            print(f"[{time.monotonic() - t0:6.0f}s] {params or trial.trial_id} it {row[2]:3d} "
                  f"steps {row[3]:>8,}{ttxt}{vtxt}", flush=True)

    return Progress()


def _params(trial: Any, grid: dict[str, list[Any]]) -> str:
    ev = getattr(trial, "evaluated_params", {}) or {}
    out = []
    for k in grid:
        v = next((val for key, val in ev.items() if key.split("/")[-1] in (k, f"{k}_")), None)
        out.append(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}")
    return " ".join(out)


def _num(x: Any) -> float | str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 5)


# ---------------------------------------------------------------- the run


def train(exp: Experiment, registry: str | Path | None = None, *, verbose: int = 0, mlflow: bool = False,
          mlflow_uri: str | None = None) -> TrainReport:
    """Run the Tune experiment, pick the best validated checkpoint, export it; see the module doc.
    ``mlflow``: also log every trial to MLflow (``mlflow_uri``, default the local store)."""
    from ray import tune

    from rl_env.export import export_checkpoint, load_rl_module, to_policy_net
    from rl_env.mlflow_tracking import tune_callbacks
    from rl_env.ray_local import local_ray
    from rl_env.validate import greedy_rollouts

    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    storage = Path(exp.storage)
    run_name = f"{exp.name}-{stamp}"
    run_dir = storage / run_name
    curves = run_dir / "curves.csv"
    grid = exp.grid
    n_trials = math.prod(len(v) for v in grid.values()) if grid else 1
    print(f"experiment {exp.name} ({exp.source}): {n_trials} trial(s)"
          + (f" over {', '.join(f'{k} in {v}' for k, v in grid.items())}" if grid else "")
          + f", stop at {exp.stop_env_steps:,} env steps or {exp.stop_time_s:.0f} s per trial; "
            f"{exp.num_cpus} CPUs; results in {run_dir}", flush=True)
    with local_ray(exp.num_cpus):
        config = ppo_config(exp)
        tuner = tune.Tuner(
            config.algo_class,
            param_space=config,
            tune_config=tune.TuneConfig(max_concurrent_trials=exp.max_concurrent_trials),
            run_config=tune.RunConfig(
                name=run_name, storage_path=str(storage.resolve()), verbose=verbose,
                stop={"num_env_steps_sampled_lifetime": exp.stop_env_steps, "time_total_s": exp.stop_time_s},
                checkpoint_config=tune.CheckpointConfig(
                    checkpoint_frequency=exp.validation.every, checkpoint_at_end=False,
                    num_to_keep=exp.keep_checkpoints, checkpoint_score_attribute=METRIC,
                    checkpoint_score_order="min"),
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[_progress_callback(curves, grid, t0),
                           *tune_callbacks(mlflow_uri, mlflow or mlflow_uri is not None,
                                           {"experiment": exp.name, "run": run_name})],
            ),
        )
        results = tuner.fit()
    trials, best = _collect(results, grid)
    if best is None:
        errors = "; ".join(str(r.error) for r in results if r.error) or "no validated checkpoint"
        raise RuntimeError(f"training produced no usable checkpoint ({errors}); see {run_dir}")
    wall = time.monotonic() - t0
    net = to_policy_net(load_rl_module(best["checkpoint"]))
    check = greedy_rollouts(net, exp.validation_env(), exp.validation.episodes())
    meta = {
        "seed": exp.seed,
        "init": {**dataclasses.asdict(exp.init), "teacher_ref": _teacher_ref(exp.init.teacher)},
        "experiment_file": _rel(exp.source),
        "experiment": exp.raw,
        "env": _portable(exp.env.to_dict()),
        "best_trial": {k: best[k] for k in ("trial", "params", "iteration", "env_steps")},
        "validation": {"objective": check["objective"], "slo_miss_rate": check["slo_miss_rate"],
                       "objective_at_checkpoint": best["val_objective"],
                       "episodes": _portable({"workloads": list(exp.validation.workloads)})["workloads"],
                       "seeds": list(exp.validation.seeds), "clusters": list(exp.validation.clusters)},
        # the machine's 1-minute load average around the run: wall times on a shared host need it
        "training": {"wall_s": round(wall, 1), "trials": trials, "run_dir": _rel(run_dir),
                     "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                     "cpus": exp.num_cpus},
    }
    if exp.env.level == "node":  # served inside the rows it trained on (rl_env.feature_range)
        from rl_env.feature_range import training_range
        from scheduler.features import RANGE_KEY

        try:
            meta[RANGE_KEY] = training_range(exp.env.to_dict(), exp.init.teacher, exp.init.steps, exp.seed,
                                             driver=net, horizon=exp.init.horizon)
        except (ValueError, MemoryError) as e:  # never lose the run's export for it
            print(f"WARNING: no training range saved ({e}); the policy will score rows as computed. Add one with "
                  f"python -m rl_env.feature_range --policy rl:<its version>", file=sys.stderr, flush=True)
    artifact = export_checkpoint(best["checkpoint"], meta, registry, curves)
    print(f"best: trial {best['trial']} ({best['params']}) iteration {best['iteration']}, "
          f"{best['env_steps']:,} env steps: validation objective {check['objective']:.3f}, "
          f"SLO miss {100 * check['slo_miss_rate']:.1f}%", flush=True)
    print(f"exported to {artifact} (training took {wall:.0f} s)", flush=True)
    return TrainReport(artifact, run_dir, curves, best, wall, trials)


def _teacher_ref(teacher: str | None) -> str | None:
    """The warm start's teacher as the trials loaded it: a learned one pinned to its registry version."""
    from scheduler import model_registry

    return None if teacher is None else model_registry.pinned(teacher)


def _collect(results: Any, grid: dict[str, list[Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Per trial: its best validated checkpoint; overall: the best of those."""
    trials, best = [], None
    for r in results:
        cands = []
        for ckpt, m in (r.best_checkpoints or []):
            v = m.get(VALIDATION_KEY, {})
            if v.get("iteration") == m.get("training_iteration") and v.get("objective") is not None:
                cands.append((v["objective"], m, ckpt))
        params = ", ".join(f"{k}={r.config.get(k, r.config.get(k + '_'))}" for k in grid)
        last = r.metrics or {}
        entry = {"trial": (last.get("trial_id") or "?"), "params": params,
                 "iterations": last.get("training_iteration"),
                 "env_steps": int(last.get("num_env_steps_sampled_lifetime", 0)),
                 "time_s": round(float(last.get("time_total_s", 0.0)), 1),
                 "error": str(r.error) if r.error else None}
        if cands:
            obj, m, ckpt = min(cands, key=lambda c: c[0])
            entry.update(best_val_objective=obj, best_iteration=m["training_iteration"])
            cand = {"trial": entry["trial"], "params": params, "iteration": m["training_iteration"],
                    "env_steps": int(m.get("num_env_steps_sampled_lifetime", 0)), "val_objective": obj,
                    "checkpoint": ckpt.path}
            if best is None or obj < best["val_objective"]:
                best = cand
        trials.append(entry)
    return trials, best


def _rel(p: str | Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def _portable(d: Any) -> Any:
    """Paths inside the repository written relative to it (artifacts travel between machines)."""
    if isinstance(d, dict):
        return {k: _portable(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_portable(v) for v in d]
    if isinstance(d, str) and d.startswith(str(REPO_ROOT)):
        return _rel(d)
    return d


def cli(args: argparse.Namespace) -> int:
    """Entry point of ``orchestrator train rl``."""
    exp = load_experiment(args.experiment)
    from rl_env.train_rf import PARSER_REGISTRY_DEFAULT

    # the parser's default means the registry's own (which honours $ORCH_REGISTRY and the shipped models)
    registry = None if args.registry in (None, PARSER_REGISTRY_DEFAULT) else output_path(args.registry)
    train(exp, registry=registry,
          mlflow=not args.no_mlflow, mlflow_uri=args.mlflow_uri)
    return 0
