"""Validated configuration of ``HeteroCluster-v0`` (the ``env_config`` mapping RLlib passes).

One frozen dataclass read through the project's validating loader, so that a bad
key in an experiment YAML reads as ``configs/experiments/ppo_local.yaml:
env.load_factor: must be > 0`` rather than a traceback inside an RLlib worker.
Relative paths are resolved against the repository root because Ray Tune runs
trials in their own working directories.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from cluster.config import ConfigError, Fields
from cluster.package_data import DATA_ROOT, data_path, work_path
from cluster.topology import ClusterSpec, load_cluster
from cluster.variants import expand_variants
from scheduler.candidates import MAX_CANDIDATES, PREFILTERS
from scheduler.objective import DEFAULT_OBJECTIVE, Objective, load_objective
from simulations.workloads import WorkloadSpec, load_workload

REPO_ROOT = DATA_ROOT
#: Training episodes draw workload seeds from here; evaluation seeds (e.g. 101-103)
#: lie far below, so held-out runs never replay a training episode.
TRAIN_SEED_RANGE = (1_000_000, 2**31 - 1)
ENV_KEYS = {"cluster", "workloads", "load_factor", "load_scale", "episode_s", "objective", "reward_scale",
            "invalid_action_penalty", "seed_range", "seeds", "level", "cluster_variants", "max_candidates",
            "warmup_s", "prefilter", "calibration"}
#: ``level``: what an action names, a node class (``HeteroCluster-v0``) or a candidate node and
#: share (``HeteroClusterNodes-v0``)
LEVELS = ("class", "node")


def resolve_path(path: str | Path) -> Path:
    """An input path, absolute: as given if it exists, else the shipped file (``configs/...``)."""
    return data_path(path).resolve()


def output_path(path: str | Path) -> Path:
    """An output path, absolute: relative ones under the checkout (or the working directory when installed)."""
    return work_path(path).resolve()


@dataclass(frozen=True)
class EnvConfig:
    """What an episode is made of.

    Attributes:
        cluster: cluster YAML.
        workloads: workload YAMLs; each episode draws one uniformly.
        load_factor: ``(low, high)``: each episode draws a load factor uniformly
            (equal bounds pin it); ``None`` keeps each workload's own.
        load_scale: ``(low, high)``: the episode's load factor is then multiplied by a
            uniform draw from it (robustness to load around a workload's own level).
        episode_s: arrival window of an episode in seconds (``None``: the workload's).
        objective: objective-weights YAML (reward = ``-reward_scale * score``).
        reward_scale: multiplies rewards (1.0: the episode return is minus the total objective).
        invalid_action_penalty: objective units charged for a masked action (see the env).
        seed_range: ``[low, high)`` of workload seeds drawn for training episodes.
        seeds: if given, episodes cycle through these workload seeds instead (evaluation).
        level: ``class`` (the action is a node class) or ``node`` (a candidate node and share;
            :class:`rl_env.node_env.NodeClusterEnv`).
        cluster_variants: node level only: each episode draws one of these variants of
            ``cluster`` (:func:`cluster.variants.variant`: ``x1`` the cluster itself, ``x2`` every
            node doubled at twice the load, ``no:POOL`` a pool removed).
        max_candidates: node level: candidates per decision (padded; the rest cut by
            :func:`scheduler.candidates.prefilter`).
        prefilter: node level: the rule that cuts them (:data:`scheduler.candidates.PREFILTERS`);
            the policy serves with its env's rule (an artifact without one: ``spread``, the rule
            the shipped rl was evaluated with; the forest's own default is ``mixed``).
        calibration: a profile of ``orchestrator calibrate`` (:mod:`simulations.calibration`): each
            node's speed per task kind and each tier's network as measured on the real cluster, so
            the policy trains on the cluster it will serve.
        warmup_s: each episode's window follows a warm-up drawn uniformly from ``[0, warmup_s]``
            seconds of the same workload draw, placed by :data:`rl_env.env.WARMUP_POLICY` (no step,
            no reward): the agent meets clusters where long jobs run and queues stand, as in a
            run's later minutes, as well as empty ones.
    """

    cluster: str = "configs/cluster/local.yaml"
    workloads: tuple[str, ...] = ("configs/workloads/high_load.yaml",)
    load_factor: tuple[float, float] | None = None
    load_scale: tuple[float, float] = (1.0, 1.0)
    episode_s: float | None = None
    objective: str = str(DEFAULT_OBJECTIVE)
    reward_scale: float = 1.0
    invalid_action_penalty: float = 1.0
    seed_range: tuple[int, int] = TRAIN_SEED_RANGE
    seeds: tuple[int, ...] = ()
    level: str = "class"
    cluster_variants: tuple[str, ...] = ("x1",)
    max_candidates: int = MAX_CANDIDATES
    warmup_s: float = 0.0
    prefilter: str = "spread"
    calibration: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, file: str | Path | None = None,
                     path: str = "") -> "EnvConfig":
        """Validate a mapping (an ``env_config`` or an experiment's ``env:`` section)."""
        if isinstance(data, EnvConfig):
            return data
        f = Fields(dict(data or {}), file, path)
        f.check_keys(ENV_KEYS)
        d = cls()
        workloads = f.raw("workloads", list(d.workloads))
        if isinstance(workloads, str):
            workloads = [workloads]
        if not isinstance(workloads, (list, tuple)) or not workloads or \
                not all(isinstance(w, (str, Path)) for w in workloads):
            raise f.error("workloads", f"must be a non-empty list of workload YAML paths, got {workloads!r}")
        lf = f.raw("load_factor", None)
        if lf is not None:
            lo, hi = (lf, lf) if isinstance(lf, (int, float)) else _pair(f, "load_factor", lf)
            if not (0 < lo <= hi <= 1000):
                raise f.error("load_factor", f"must be > 0 (a number or [low, high] with low <= high), got {lf!r}")
            lf = (float(lo), float(hi))
        ls = f.raw("load_scale", list(d.load_scale))
        ls_lo, ls_hi = _pair(f, "load_scale", ls)
        if not all(isinstance(x, (int, float)) for x in (ls_lo, ls_hi)) or not 0 < ls_lo <= ls_hi <= 100:
            raise f.error("load_scale", f"must be [low, high] with 0 < low <= high, got {ls!r}")
        sr = f.raw("seed_range", list(d.seed_range))
        slo, shi = _pair(f, "seed_range", sr)
        if not (isinstance(slo, int) and isinstance(shi, int) and 0 <= slo < shi <= 2**63 - 1):
            raise f.error("seed_range", f"must be [low, high) integers with 0 <= low < high, got {sr!r}")
        seeds = f.raw("seeds", [])
        if not isinstance(seeds, (list, tuple)) or not all(isinstance(s, int) and s >= 0 for s in seeds):
            raise f.error("seeds", f"must be a list of non-negative integers, got {seeds!r}")
        episode_s = f.raw("episode_s", None)
        if episode_s is not None:
            episode_s = f.num("episode_s", min=0, strict_min=True)
        level = f.str("level", d.level, choices=set(LEVELS))
        variants = f.raw("cluster_variants", list(d.cluster_variants))
        if not isinstance(variants, (list, tuple)) or not variants or not all(isinstance(v, str) for v in variants):
            raise f.error("cluster_variants", f"must be a non-empty list like [x1, x2, no:gpu-mig], got {variants!r}")
        if level == "class" and tuple(variants) != ("x1",):
            raise f.error("cluster_variants", "needs level: node (a class-level policy is tied to one cluster)")
        try:
            variants = expand_variants(variants)  # rand:A-B: each random cluster of the range
        except ValueError as e:
            raise f.error("cluster_variants", str(e)) from None
        cfg = cls(
            cluster=str(resolve_path(f.str("cluster", d.cluster))),
            workloads=tuple(str(resolve_path(w)) for w in workloads),
            load_factor=lf,
            load_scale=(float(ls_lo), float(ls_hi)),
            episode_s=episode_s,
            objective=str(resolve_path(f.str("objective", d.objective))),
            reward_scale=f.num("reward_scale", d.reward_scale, min=0, strict_min=True),
            invalid_action_penalty=f.num("invalid_action_penalty", d.invalid_action_penalty, min=0),
            seed_range=(slo, shi),
            seeds=tuple(seeds),
            level=level,
            cluster_variants=tuple(variants),
            max_candidates=f.int("max_candidates", d.max_candidates, min=1, max=4096),
            warmup_s=f.num("warmup_s", d.warmup_s, min=0),
            prefilter=f.str("prefilter", d.prefilter, choices=set(PREFILTERS)),
            calibration=(str(resolve_path(f.str("calibration"))) if f.raw("calibration", None) is not None
                         else None),
        )
        # Fail here (with file and field) rather than in a worker on the first reset.
        try:
            cfg.load()
        except ConfigError as e:
            field = ("calibration" if cfg.calibration and str(e.file) == cfg.calibration
                     else "workloads" if "workload" in str(e.file) else "cluster")
            raise f.error(field, str(e)) from None
        try:
            check_variants(cfg.cluster, cfg.cluster_variants)
        except ValueError as e:
            raise f.error("cluster_variants", str(e)) from None
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (JSON/YAML-safe) that :meth:`from_mapping` reads back."""
        d = asdict(self)
        d["workloads"] = list(self.workloads)
        d["load_factor"] = list(self.load_factor) if self.load_factor else None
        d["load_scale"] = list(self.load_scale)
        d["seed_range"] = list(self.seed_range)
        d["seeds"] = list(self.seeds)
        d["cluster_variants"] = list(self.cluster_variants)
        return d

    def clusters(self) -> tuple[tuple[ClusterSpec, float], ...]:
        """Each of :attr:`cluster_variants` of the cluster, with the factor its load scales by."""
        return _variants(self.cluster, self.cluster_variants, self.calibration)

    def load(self) -> tuple[ClusterSpec, tuple[WorkloadSpec, ...], Objective]:
        """The cluster, workloads and objective (cached per process)."""
        return (_cluster(self.cluster, self.calibration), tuple(_workload(w) for w in self.workloads),
                _objective(self.objective))


def _pair(f: Fields, key: str, value: Any) -> tuple[Any, Any]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise f.error(key, f"must be a [low, high] pair, got {value!r}")
    return value[0], value[1]


@lru_cache(maxsize=16)
def _cluster(path: str, calibration: str | None = None) -> ClusterSpec:
    spec = load_cluster(path)
    if calibration is None:
        return spec
    from simulations.calibration import calibrated

    return calibrated(spec, calibration)


def check_variants(cluster: str, names: "tuple[str, ...] | list[str]") -> None:
    """Raise ``ValueError`` naming the first of ``names`` that is no variant of the cluster YAML ``cluster``."""
    for v in names:
        try:
            _variants(cluster, (v,))
        except ValueError as e:
            raise ValueError(f"{v!r}: {e}") from None


@lru_cache(maxsize=16)
def _variants(path: str, names: tuple[str, ...], calibration: str | None = None) -> tuple[tuple[ClusterSpec, float], ...]:
    from cluster.variants import variant

    return tuple(variant(_cluster(path, calibration), v) for v in names)


@lru_cache(maxsize=32)
def _workload(path: str) -> WorkloadSpec:
    return load_workload(path)


@lru_cache(maxsize=8)
def _objective(path: str) -> Objective:
    return load_objective(path)
