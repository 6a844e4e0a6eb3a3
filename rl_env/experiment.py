"""An RL experiment file (``configs/experiments/*.yaml``), validated into a frozen dataclass.

Sections: ``env`` (:class:`rl_env.config.EnvConfig`), ``validation`` (the fixed
held-out-from-training episodes that pick the best checkpoint), ``init`` (warm
start by imitating a heuristic, :mod:`rl_env.imitation`), ``model``, ``ppo``
(any value may be ``{grid: [...]}``, which becomes a Tune grid axis), ``resources``,
``stop`` and ``checkpoints``. Every error names the file and the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cluster.config import Fields, load_yaml
from cluster.variants import expand_variants
from rl_env.config import EnvConfig, check_variants, output_path, resolve_path
from rl_env.imitation import Imitation

#: PPO settings the experiment may set (RLlib ``PPOConfig.training`` names, ``lambda`` for ``lambda_``).
PPO_KEYS = {"lr", "gamma", "lambda", "entropy_coeff", "clip_param", "vf_loss_coeff", "vf_clip_param",
            "grad_clip", "grad_clip_by", "kl_coeff", "kl_target", "train_batch_size", "minibatch_size", "num_epochs"}
PPO_DEFAULTS: dict[str, Any] = {
    "lr": 3e-4, "gamma": 0.99, "lambda": 0.95, "entropy_coeff": 0.01, "clip_param": 0.2,
    "vf_loss_coeff": 0.5, "vf_clip_param": 1e6, "grad_clip": 1.0, "kl_coeff": 0.2, "kl_target": 0.01,
    "train_batch_size": 4000, "minibatch_size": 512, "num_epochs": 4,
}


@dataclass(frozen=True)
class Validation:
    """Greedy episodes run every ``every`` iterations; their mean objective ranks checkpoints."""

    workloads: tuple[str, ...]
    seeds: tuple[int, ...] = (201, 202)
    load_factor: float | None = None
    every: int = 5
    clusters: tuple[str, ...] = ("x1",)

    def episodes(self) -> list[dict[str, Any]]:
        """``reset(options=...)`` of each validation episode, on each of ``clusters`` (the class-level env
        has one cluster and ignores the key)."""
        out = []
        for c in self.clusters:
            for w in range(len(self.workloads)):
                for s in self.seeds:
                    opts: dict[str, Any] = {"workload": w, "seed": s, "cluster": c}
                    if self.load_factor is not None:
                        opts["load_factor"] = self.load_factor
                    out.append(opts)
        return out


@dataclass(frozen=True)
class Experiment:
    """A validated experiment; :func:`load_experiment` builds it."""

    name: str
    seed: int
    env: EnvConfig
    validation: Validation
    model: dict[str, Any]
    ppo: dict[str, Any]  # value or ("grid", [values])
    init: Imitation = Imitation()
    num_cpus: int = 2
    envs_per_runner: int = 8
    max_concurrent_trials: int = 2
    stop_env_steps: int = 1_000_000
    stop_time_s: float = 840.0
    keep_checkpoints: int = 4
    storage: str = "artifacts/runs"
    source: str = "<built>"
    raw: dict = field(default_factory=dict, compare=False)

    @property
    def grid(self) -> dict[str, list[Any]]:
        """The grid axes (setting -> values); empty for a single trial."""
        return {k: v[1] for k, v in self.ppo.items() if isinstance(v, tuple) and v[0] == "grid"}

    def validation_env(self) -> EnvConfig:
        """The env of validation episodes: the validation workloads at their own load, full windows
        from an empty cluster (no warm-up: every task scored, the same episodes each pass)."""
        d = self.env.to_dict()
        d.update(workloads=list(self.validation.workloads), load_factor=None, load_scale=[1.0, 1.0],
                 episode_s=None, seeds=[], cluster_variants=list(self.validation.clusters), warmup_s=0.0)
        return EnvConfig.from_mapping(d)


def load_experiment(path: str | Path) -> Experiment:
    """Load ``path``; raises :class:`cluster.config.ConfigError` naming file and field."""
    p = resolve_path(path)
    f = load_yaml(p)
    return experiment_from_mapping(f.data, p)


def experiment_from_mapping(data: Mapping[str, Any], file: str | Path | None = None) -> Experiment:
    """Validate an experiment given as a mapping (tests build tiny ones this way)."""
    f = Fields(dict(data), file, "")
    f.check_keys({"name", "description", "seed", "env", "validation", "init", "model", "ppo", "resources",
                  "stop", "checkpoints", "storage"})
    env = EnvConfig.from_mapping(f.raw("env", {}), file, "env")
    v = f.section("validation", {})
    v.check_keys({"workloads", "seeds", "load_factor", "every", "clusters"})
    vw = v.raw("workloads", list(env.workloads))
    if not isinstance(vw, list) or not vw or not all(isinstance(w, str) for w in vw):
        raise v.error("workloads", f"must be a non-empty list of workload YAML paths, got {vw!r}")
    seeds = v.raw("seeds", [201, 202])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise v.error("seeds", f"must be a non-empty list of non-negative integers, got {seeds!r}")
    lo, hi = env.seed_range
    if any(lo <= s < hi for s in seeds):
        raise v.error("seeds", f"overlap the training seed range [{lo}, {hi}): validation must be held out")
    lf = v.raw("load_factor", None)
    clusters = v.raw("clusters", ["x1"])
    if not isinstance(clusters, list) or not clusters or not all(isinstance(c, str) for c in clusters):
        raise v.error("clusters", f"must be a non-empty list of cluster variants like [x1, x2], got {clusters!r}")
    if env.level == "class" and clusters != ["x1"]:
        raise v.error("clusters", "needs env.level: node (a class-level policy is tied to one cluster)")
    try:
        clusters = expand_variants(clusters)  # rand:A-B: each random cluster of the range
        check_variants(env.cluster, clusters)
    except ValueError as e:
        raise v.error("clusters", str(e)) from None
    validation = Validation(tuple(str(resolve_path(w)) for w in vw), tuple(seeds),
                            None if lf is None else v.num("load_factor", min=0, strict_min=True),
                            v.int("every", 5, min=1), tuple(clusters))
    i = f.section("init", {})
    i.check_keys({"imitate", "steps", "epochs", "label_smoothing", "lr", "rounds", "horizon", "temperature"})
    teacher = i.raw("imitate", Imitation.teacher)
    if teacher is not None:
        from scheduler.policy import available_policies

        # rf (or rf:N, pinned): a registry forest (itself distilled from the rollout teacher); rl (rl:N): the
        # current RL policy, cloned to start a fine-tune (orchestrator retrain --kind rl)
        teacher = i.str("imitate")
        kind, pinned, version = teacher.partition(":")
        if kind not in set(available_policies()) - {"rl-sample"} or (pinned and kind not in ("rf", "rl")):
            raise i.error("imitate", f"a heuristic, rollout, oracle, rf, rf:N, rl or rl:N, got {teacher!r}")
        if kind in ("rf", "rl"):
            from scheduler import model_registry

            try:
                model_registry.resolve(kind, version or "latest")
            except model_registry.RegistryError as e:
                raise i.error("imitate", f"no {kind} model to clone ({e}): run orchestrator train {kind} first") from None
    init = Imitation(teacher=teacher, steps=i.int("steps", Imitation.steps, min=1),
                     epochs=i.int("epochs", Imitation.epochs, min=1),
                     label_smoothing=i.num("label_smoothing", Imitation.label_smoothing, min=0, max=0.99),
                     lr=i.num("lr", Imitation.lr, min=0, strict_min=True),
                     rounds=i.int("rounds", Imitation.rounds, min=1, max=20),
                     horizon=i.int("horizon", Imitation.horizon, min=1),
                     temperature=(None if i.raw("temperature", None) is None
                                  else i.num("temperature", 0.0, min=0, strict_min=True)))
    if init.temperature is not None and ((teacher or "").partition(":")[0] != "rf" or env.level != "node"):
        raise i.error("temperature", "soft targets are a forest's predicted regrets over candidate rows: "
                                     "needs imitate: rf or rf:N and env.level: node")
    m = f.section("model", {})
    m.check_keys({"hiddens", "activation"})
    hiddens = m.raw("hiddens", [64, 64])
    if not isinstance(hiddens, list) or not hiddens or not all(isinstance(h, int) and 1 <= h <= 4096
                                                               for h in hiddens):
        raise m.error("hiddens", f"must be a list of layer widths (1..4096), got {hiddens!r}")
    model = {"hiddens": hiddens, "activation": m.str("activation", "tanh", choices={"tanh", "relu", "silu"})}
    ppo_f = f.section("ppo", {})
    ppo_f.check_keys(PPO_KEYS)
    ppo: dict[str, Any] = {}
    clip_by = ppo_f.str("grad_clip_by", "norm", choices={"norm", "global_norm", "value"})
    for key, default in PPO_DEFAULTS.items():
        raw = _number(ppo_f.raw(key, default))
        if isinstance(raw, Mapping):
            g = ppo_f.section(key)
            g.check_keys({"grid"})
            values = g.raw("grid")
            values = [_number(x) for x in values] if isinstance(values, list) else values
            if not isinstance(values, list) or len(values) < 1 or not all(_is_num(x) for x in values):
                raise g.error("grid", f"must be a non-empty list of numbers, got {values!r}")
            ppo[key] = ("grid", [type(default)(x) if isinstance(default, int) else float(x) for x in values])
        elif _is_num(raw):
            ppo[key] = type(default)(raw) if isinstance(default, int) else float(raw)
        else:
            raise ppo_f.error(key, f"must be a number or {{grid: [...]}}, got {raw!r}")
    ppo["grad_clip_by"] = clip_by
    r = f.section("resources", {})
    r.check_keys({"num_cpus", "envs_per_runner", "max_concurrent_trials"})
    s = f.section("stop", {})
    s.check_keys({"env_steps", "time_s"})
    c = f.section("checkpoints", {})
    c.check_keys({"keep"})
    return Experiment(
        name=f.str("name", Path(file).stem if file else "experiment"),
        seed=f.int("seed", 0, min=0),
        env=env, validation=validation, model=model, ppo=ppo, init=init,
        num_cpus=r.int("num_cpus", 2, min=1, max=256),
        envs_per_runner=r.int("envs_per_runner", 8, min=1, max=256),
        max_concurrent_trials=r.int("max_concurrent_trials", 2, min=1, max=64),
        stop_env_steps=s.int("env_steps", 1_000_000, min=1),
        stop_time_s=s.num("time_s", 840.0, min=0, strict_min=True),
        keep_checkpoints=c.int("keep", 4, min=1),
        storage=str(output_path(f.str("storage", "artifacts/runs"))),
        source=str(file) if file else "<mapping>",
        raw=dict(data),
    )


def _number(x: Any) -> Any:
    """YAML 1.1 reads ``1.0e6`` (no sign in the exponent) as a string: accept it as a number."""
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    return x


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
