"""``orchestrator train rf``: a node-level RandomForest distilled from the rollout teacher (DAgger).

At every decision with more than one candidate, the teacher (:mod:`scheduler.policies.rollout`,
rolling every candidate forward over futures sampled from the workload's own generator,
streams with seeds no run uses) values each candidate node; the label of a candidate's row
(:func:`scheduler.features.candidate_features`) is its regret ``log1p(best value - its value)``
(values in objective units: the objective summed over the tasks the roll plays, averaged over
the sampled futures). The forest regresses it and the policy takes the smallest prediction.

Why log1p of the raw regret: it is monotone, so a perfect fit still picks the teacher's
choice; a few catastrophic candidates (a queue that parks tasks for minutes) would
otherwise dominate the squared-error splits and leave the close calls, which are most
decisions, unresolved. It is not divided by the decision's scale: a regret is already a
difference within one decision, and the loss it stands for is what the objective counts.

Round 0: the teacher places the tasks. Later rounds (DAgger, Ross et al. 2011): the current
forest places them, so the states are the ones the forest itself reaches, still labelled by
the teacher; the rows of all rounds are pooled and the forest refitted. The episodes are
windows of each workload on each cluster variant (the cluster itself, every node doubled at
twice the load, a pool removed), so one forest learns to judge a node on clusters of any size.
``--variant-weights`` weighs one variant's rows more in the fit; ``--save-rows`` keeps the
labelled rows and ``--rows`` fits on saved ones without labelling (:mod:`rl_env.rf_rows`).

Reported: on held-out seeds of the cluster itself, on the states the forest visits, how often
it picks the teacher's choice and its mean regret against fastest-feasible's (in the teacher's
values), and the forest's simulation results next to the heuristics. The forest goes to the
model registry (``artifacts/policies/rf/<version>/``) with its feature schema, training config,
metrics, command and seeds.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from cluster.topology import ClusterSpec
from scheduler import model_registry
from scheduler.features import N_CANDIDATE_FEATURES, RANGE_KEY, candidate_features
from scheduler.forest import FlatForest
from scheduler.objective import Objective
from scheduler.candidates import MAX_CANDIDATES, candidates
from scheduler.policies.rf import FOREST_FILE, KIND, SKLEARN_FILE, RandomForestPolicy
from scheduler.policy import FeasibilityCache, Policy, make_policy
from scheduler.task import Task
from simulations.engine import OnlineSimulator, simulate
from simulations.metrics import summary_row
from simulations.processes import run_all
from cluster.config import UsageError
from cluster.package_data import data_path
from cluster.variants import expand_variants, parse_variant, variant
from rl_env.rf_rows import Rollout, check_writable, load_rows, parse_weights, save_rows
from rl_env.teacher import make_teacher
from rl_env.train_rf_args import TrainArgs

#: the ``--registry`` default of the parser; it means the registry's own default root
PARSER_REGISTRY_DEFAULT = "artifacts/policies"
#: the heuristic whose choices the held-out regret is compared with
REFERENCE = "fastest-feasible"


@dataclass(frozen=True)
class Episode:
    """One simulated workload window: its tasks, the simulation seed, and where it runs.

    ``spec``: the cluster (None: the one :meth:`DAggerForest.fit` is given); ``streams``:
    the workload streams the rollout teacher samples its futures from; ``label_from``: tasks
    arriving earlier only warm the cluster up (placed, not labelled).
    """

    workload: str
    tasks: Sequence[Task]
    seed: int
    spec: ClusterSpec | None = None
    streams: Sequence[Sequence[Task]] = field(default=(), repr=False)
    label_from: float = -math.inf


def rollout(spec: ClusterSpec, episode: Episode, teacher: Policy, driver: RandomForestPolicy | None = None,
            objective: Objective | None = None, reference: Policy | None = None) -> Rollout:
    """Simulate ``episode``; at every decision with two or more candidates, label each candidate's row.

    ``driver`` places the tasks when given (DAgger), else the teacher does. Decisions with one
    candidate (or none) teach nothing and are not labelled (nor asked of the teacher). Tasks
    arriving before ``episode.label_from`` are placed by the driver, or by the reference heuristic
    in the teacher's round (the teacher's seconds per decision go to the labelled window).
    """
    sim = OnlineSimulator(spec, episode.tasks, seed=episode.seed, objective=objective)
    teacher.reset(episode.seed)
    reference = reference or make_policy(REFERENCE)
    warm = driver or reference
    state = sim.state
    cache = FeasibilityCache()
    X: list[np.ndarray] = []
    regrets: list[np.ndarray] = []
    who: list[tuple[int, int, int]] = []
    sizes: list[int] = []
    while (task := sim.next_task()) is not None:
        if task.arrival < episode.label_from:
            sim.place(task, warm.select(task, state))
            continue
        nodes, _, _ = cache.entry(task, state)
        if len(nodes) < 2:
            sim.place(task, (driver or teacher).select(task, state))
            continue
        cand = candidates(cache, task, state, MAX_CANDIDATES)
        best = teacher.select(task, state)
        values = best.scores[cand[0]]
        ok = np.isfinite(values)
        if ok.sum() < 2:
            sim.place(task, best if driver is None else driver.decide(task, state, cand, explain=False))
            continue
        cand = (cand[0][ok], [s for s, k in zip(cand[1], ok.tolist()) if k], cand[2][ok])
        regret = values[ok].max() - values[ok]
        d = best if driver is None else driver.decide(task, state, cand, explain=False)
        pos = {int(n): j for j, n in enumerate(cand[0].tolist())}
        ref = reference.select(task, state)
        X.append(candidate_features(task, state, cand[0], cand[1], cand[2], objective))
        regrets.append(regret)
        sizes.append(len(regret))
        who.append((pos.get(best.node, -1), pos.get(d.node, -1), pos.get(ref.node, -1)))
        sim.place(task, d)
    sim.finish()
    w = np.array(who, dtype=np.int64).reshape(-1, 3)
    reg = np.concatenate(regrets) if regrets else np.zeros(0)
    return Rollout(np.concatenate(X) if X else np.zeros((0, N_CANDIDATE_FEATURES), np.float32),
                   np.log1p(reg), np.repeat(np.arange(len(sizes)), sizes), reg, w[:, 0], w[:, 1], w[:, 2],
                   episode.workload)


class DAggerForest:
    """RandomForest regression of the teacher's per-candidate regret, sklearn-style: ``fit`` returns self.

    Fitted attributes: ``model_`` (the sklearn forest), ``forest_`` (its flat fast-path
    form), ``data_`` (the pooled training rows) and
    ``history_`` (per round: rows, decisions, and how the driver's own choices fared against
    the teacher on the states it visited; a last ``"refit"`` entry after :meth:`refit`).
    """

    def __init__(self, n_estimators: int = TrainArgs.trees, max_depth: int | None = TrainArgs.max_depth,
                 min_samples_leaf: int = TrainArgs.min_samples_leaf, rounds: int = TrainArgs.rounds,
                 random_state: int = TrainArgs.random_state, n_jobs: int = 1, teacher: str = TrainArgs.teacher,
                 progress: bool = True, max_features: float = TrainArgs.max_features,
                 teacher_samples: int = TrainArgs.teacher_samples,
                 teacher_horizon: int = TrainArgs.teacher_horizon,
                 teacher_horizon_s: float = TrainArgs.teacher_horizon_s,
                 teacher_base: str = TrainArgs.teacher_base, weights: dict[str, float] | None = None) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.rounds = rounds
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.teacher = teacher
        self.progress = progress
        self.max_features = max_features
        self.teacher_samples = teacher_samples
        self.teacher_horizon = teacher_horizon
        self.teacher_horizon_s = teacher_horizon_s
        self.teacher_base = teacher_base
        self.weights = dict(weights or {})

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("n_estimators", "max_depth", "min_samples_leaf", "rounds",
                                              "random_state", "n_jobs", "teacher", "max_features",
                                              "teacher_samples", "teacher_horizon", "teacher_horizon_s",
                                              "teacher_base", "weights")}

    def _fit_model(self, data: Rollout) -> None:
        """Fit ``model_`` on ``data`` (weighted by variant) and set ``forest_`` and ``data_`` from it."""
        from sklearn.ensemble import RandomForestRegressor

        model = RandomForestRegressor(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                      min_samples_leaf=self.min_samples_leaf, max_features=self.max_features,
                                      n_jobs=self.n_jobs, random_state=self.random_state)
        model.fit(data.X, data.y, sample_weight=data.row_weights(self.weights))
        model.n_jobs = 1  # predictions tree by tree in order: the flat forest's sums, bit for bit
        self.model_, self.forest_, self.data_ = model, FlatForest.from_sklearn(model), data

    def feature_range(self) -> dict:
        """The range of the rows ``forest_`` was fit on, for its meta: the policy's explanation says when
        a chosen row lies past it (:func:`scheduler.features.trained_range`)."""
        from rl_env.feature_range import columns_range

        return columns_range(self.data_.X)

    def teacher_for(self, ep: Episode, objective: Objective | None) -> Policy:
        return make_teacher(self.teacher, self.random_state, objective, ep.streams, self.teacher_samples,
                            self.teacher_horizon, self.teacher_horizon_s, self.teacher_base)

    def label(self, spec: ClusterSpec, episodes: Sequence[Episode], driver: FlatForest | None,
              objective: Objective | None) -> Iterator[Rollout]:
        """Each episode's :func:`rollout` (``driver``: the forest that places, None: the teacher), in
        order, ``n_jobs`` at once in processes of their own (each episode's teacher is seeded by it,
        so the rows are the same for any ``n_jobs``)."""
        params = self.get_params()
        work = [(ep.spec or spec, ep, params, driver, objective) for ep in episodes]
        return run_all(_label_episode, work, self.n_jobs)

    def fit(self, spec: ClusterSpec, episodes: Sequence[Episode], objective: Objective | None = None
            ) -> "DAggerForest":
        if self.rounds < 0 or self.n_estimators < 1:
            raise ValueError("rounds must be >= 0 and n_estimators >= 1")
        from tqdm import tqdm

        self.history_: list[dict] = []
        data: Rollout | None = None
        for r in range(self.rounds + 1):
            who = self.teacher if r == 0 else "forest"
            t0 = time.perf_counter()
            new = Rollout.concat(list(tqdm(
                self.label(spec, episodes, None if r == 0 else self.forest_, objective), total=len(episodes),
                desc=f"round {r}/{self.rounds} ({who} places, {self.teacher} labels)", unit="episode",
                disable=not self.progress, leave=False)))
            if not new.decisions:
                raise ValueError("the episodes produced no decision with two candidates to learn from")
            new.round[:] = r
            label_s = time.perf_counter() - t0
            data = new if data is None else Rollout.concat([data, new])
            t0 = time.perf_counter()
            self._fit_model(data)
            self.history_.append({"round": r, "driver": who, "new_decisions": new.decisions,
                                  "new_rows": int(len(new.y)), "rows": int(len(data.y)),
                                  "label_s": round(label_s, 1), "fit_s": round(time.perf_counter() - t0, 2),
                                  "driver_agreement": float((new.taken == new.teacher).mean()),
                                  "driver_regret": float(new.regret_of(new.taken).mean())})
        return self

    def refit(self, data: Rollout, history: Sequence[dict] = ()) -> "DAggerForest":
        """Fit on rows labelled before (:func:`rl_env.rf_rows.load_rows`), labelling nothing;
        ``history``: the rounds that labelled them, kept in ``history_`` before this fit's entry."""
        if not data.decisions:
            raise UsageError("--rows: the files hold no decision to fit")
        t0 = time.perf_counter()
        self._fit_model(data)
        self.history_ = [*history, {"round": "refit", "driver": "none", "new_decisions": 0, "new_rows": 0,
                                    "rows": int(len(data.y)), "label_s": 0.0,
                                    "fit_s": round(time.perf_counter() - t0, 2),
                                    "driver_agreement": None, "driver_regret": None}]
        return self

    def policy(self, explain: bool = True) -> RandomForestPolicy:
        """The current forest as a placement policy (no registry involved)."""
        return forest_policy(self.forest_, explain)


def forest_policy(forest: FlatForest, explain: bool) -> RandomForestPolicy:
    """A trained flat forest as a placement policy, outside any registry."""
    return RandomForestPolicy(forest=forest, meta={"kind": KIND}, explain=explain)


def _label_episode(spec: ClusterSpec, ep: Episode, params: dict, driver: FlatForest | None,
                   objective: Objective | None) -> Rollout:
    """:meth:`DAggerForest.label`'s unit of work, built from what pickles (a worker process runs it)."""
    est = DAggerForest(**params, progress=False)
    placer = None if driver is None else forest_policy(driver, explain=False)
    return rollout(spec, ep, est.teacher_for(ep, objective), placer, objective)


def choices(forest: FlatForest, data: Rollout) -> np.ndarray:
    """The forest's choice per decision (row position of the lowest predicted regret)."""
    pred = forest.predict_proba(data.X)[:, 0] if len(data.X) else np.zeros(0)
    out = np.empty(data.decisions, dtype=np.int64)
    starts = np.searchsorted(data.group, np.arange(data.decisions + 1))
    for g in range(data.decisions):
        out[g] = int(np.argmin(pred[starts[g]:starts[g + 1]]))
    return out


def regret_report(forest: FlatForest, on_policy: Sequence[Rollout]) -> dict:
    """On the states the forest visits (held out): agreement with the teacher, and the mean regret
    (objective units, the teacher's values) of the forest's, the reference heuristic's and the
    teacher's own choices, overall and per workload."""
    def one(r: Rollout) -> dict:
        mine = choices(forest, r)
        return {"decisions": r.decisions, "agreement": float((mine == r.teacher).mean()) if r.decisions else math.nan,
                "regret_forest": float(r.regret_of(mine).mean()) if r.decisions else math.nan,
                f"regret_{REFERENCE}": float(r.regret_of(r.reference).mean()) if r.decisions else math.nan}

    by_wl: dict[str, list[Rollout]] = {}
    for r in on_policy:
        by_wl.setdefault(r.workload, []).append(r)
    out = one(Rollout.concat(list(on_policy)))
    out["by_workload"] = {w: one(Rollout.concat(v)) for w, v in by_wl.items()}
    return out


def simulation_table(spec: ClusterSpec, episodes: Sequence[Episode], policies: dict[str, Policy],
                     objective: Objective | None = None, progress: bool = True) -> pd.DataFrame:
    """Every policy on every episode (same tasks, same seed): summary rows plus decision cost."""
    from tqdm import tqdm

    rows = []
    bar = tqdm(total=len(episodes) * len(policies), desc="simulate", unit="run", disable=not progress, leave=False)
    for ep in episodes:
        for name, pol in policies.items():
            t0 = time.perf_counter()
            res = simulate(spec, ep.tasks, pol, seed=ep.seed, objective=objective, timeline_points=50)
            dt = time.perf_counter() - t0
            row = summary_row(name, res.summary)
            row.update(workload=ep.workload, seed=ep.seed, us_per_task=1e6 * dt / max(len(ep.tasks), 1))
            rows.append(row)
            bar.update()
    bar.close()
    return pd.DataFrame(rows).set_index(["workload", "policy"])


def command_line(cfg: TrainArgs, root: str | os.PathLike | None = None) -> str:
    """The ``orchestrator train rf`` command that reproduces ``cfg``: every setting explicit."""
    import shlex

    parts = ["orchestrator", "train", "rf", *cfg.argv()]
    if root is not None:
        parts += ["--registry", os.fspath(root)]
    return shlex.join(parts)


def _episodes(cfg: TrainArgs, spec: ClusterSpec, seeds: Sequence[int], variants: Sequence[str]) -> list[Episode]:
    """Windows of every workload, per cluster variant and seed, with the teacher's future streams
    (drawn at the variant's load: seeds of their own, never a training or evaluation seed); each
    labelled window follows a warm-up of the same workload that fills the cluster first
    (``cfg.warmup_s``, cycled over the seeds)."""
    from simulations.workloads import future_streams, generate_warm, load_workload

    out = []
    for v in variants:
        vspec, factor = variant(spec, v)
        for w in cfg.workloads:
            wl = load_workload(data_path(w))
            load = (cfg.load_factor if cfg.load_factor is not None else wl.load_factor) * factor
            streams = future_streams(wl, cfg.future_streams, load_factor=load) if cfg.teacher == "rollout" else ()
            for k, s in enumerate(seeds):
                tasks, label_from = generate_warm(wl, s, load, cfg.duration_s, cfg.warmup_s[k % len(cfg.warmup_s)])
                out.append(Episode(f"{wl.name}@{v}" if v != "x1" else wl.name, tasks, s, vspec, streams,
                                   label_from=label_from))
    return out


def train(cfg: TrainArgs, root: str | os.PathLike | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Collect, fit, evaluate and register; returns the artifact folder and its metrics."""
    from cluster.alibaba import load_cluster_any
    from scheduler.objective import load_objective

    t_start = time.perf_counter()
    spec = load_cluster_any(data_path(cfg.cluster))
    if cfg.save_rows:
        check_writable(cfg.save_rows)  # before an hour of labelling, not after
    data: Rollout | None = None
    metas: list[dict] = []
    if cfg.rows:
        data, metas = load_rows(cfg.rows)
        cfg = _as_labelled(cfg, metas)
    variants = expand_variants(cfg.variants)
    weights = parse_weights(cfg.variant_weights)
    if data is None:  # saved rows were labelled on their variants already, and weights are checked by their tags
        for v in variants:
            missing = set(parse_variant(v)[1]) - set(spec.pools)
            if missing:
                raise UsageError(f"--variants: {v!r}: no pool {sorted(missing)} in {cfg.cluster} "
                                 f"(pools: {list(spec.pools)})")
        unknown = sorted(set(weights) - set(variants))
        if unknown:
            raise UsageError(f"--variant-weights: {unknown} not among --variants {variants}")
    objective = load_objective()
    hold_eps = _episodes(cfg, spec, cfg.holdout_seeds, ["x1"])
    est = DAggerForest(n_estimators=cfg.trees, max_depth=cfg.max_depth, min_samples_leaf=cfg.min_samples_leaf,
                       rounds=cfg.rounds, random_state=cfg.random_state, teacher=cfg.teacher, progress=progress,
                       max_features=cfg.max_features, teacher_samples=cfg.teacher_samples,
                       teacher_horizon=cfg.teacher_horizon, teacher_horizon_s=cfg.teacher_horizon_s,
                       teacher_base=cfg.teacher_base, n_jobs=cfg.jobs, weights=weights)
    rows_from = [{"file": os.fspath(f), "command": m.get("command"), "rows": m.get("rows")}
                 for f, m in zip(cfg.rows, metas)]
    if data is not None:
        est.refit(data, [h for m in metas for h in m.get("rounds", [])])
    else:
        est.fit(spec, _episodes(cfg, spec, cfg.seeds, variants), objective)
    if cfg.save_rows:
        try:
            save_rows(cfg.save_rows, est.data_, {"command": command_line(cfg, root), "config": asdict(cfg),
                                                 "rows": int(len(est.data_.y)), "rounds": est.history_,
                                                 **({"rows_from": rows_from} if rows_from else {})})
        except OSError as e:  # the forest is still worth registering after an hour of labelling
            print(f"warning: --save-rows {cfg.save_rows}: not written ({e}); the forest is registered anyway")
    train_s = time.perf_counter() - t_start

    on_policy = list(est.label(spec, hold_eps, est.forest_, objective))
    metrics: dict = {"holdout": regret_report(est.forest_, on_policy)}
    metrics["rounds"] = est.history_
    metrics["train_rows"] = int(len(est.data_.y))
    metrics["train_decisions"] = int(est.data_.decisions)

    # The forest's own results next to the heuristics, on the first held-out seed of each workload,
    # over the workload's whole duration (the states a 30 s window never reaches included).
    sim_eps = _episodes(replace(cfg, duration_s=None, warmup_s=[0.0]), spec, cfg.holdout_seeds[:1], ["x1"])
    pols: dict[str, Policy] = {"rf (new)": est.policy(explain=True)}
    pols.update({b: make_policy(b) for b in cfg.baselines})
    table = simulation_table(spec, sim_eps, pols, objective, progress)
    metrics["simulation"] = {f"{w}/{p}": {k: _plain(v) for k, v in row.items()}
                             for (w, p), row in table.iterrows()}
    metrics["fit_seconds"] = round(train_s, 1)
    metrics["train_seconds"] = round(time.perf_counter() - t_start, 1)

    forest, model = est.forest_, est.model_
    import joblib
    import sklearn

    from simulations.workloads import FUTURE_SEED_BASE

    meta = {
        "config": asdict(cfg),
        "seed": cfg.random_state,
        "seeds": {"training": cfg.seeds, "held_out": cfg.holdout_seeds,
                  "teacher_futures": [FUTURE_SEED_BASE + k for k in range(cfg.future_streams)]},
        "metrics": metrics,
        "model": {"kind": "RandomForestRegressor of log1p(regret)", "n_estimators": cfg.trees,
                  "max_depth": cfg.max_depth, "min_samples_leaf": cfg.min_samples_leaf,
                  "max_features": cfg.max_features, "n_nodes": forest.n_nodes, "depth": forest.max_depth,
                  "sklearn_version": sklearn.__version__},
        "teacher": cfg.teacher,
        "command": command_line(cfg, root),
        RANGE_KEY: est.feature_range(),
    }
    if rows_from:  # the runs that labelled the rows: the commands that reproduce them
        meta["rows_from"] = rows_from
    path = model_registry.save(KIND, {FOREST_FILE: forest.save, SKLEARN_FILE: lambda p: joblib.dump(model, p)},
                               meta, root=root)
    return path, {"metrics": metrics, "table": table}


#: the settings that make a row's label: rows fit together, and their held-out report, need the same
_LABEL_FIELDS = ("cluster", "teacher", "teacher_base", "teacher_samples", "teacher_horizon", "teacher_horizon_s",
                 "future_streams")


def _as_labelled(cfg: TrainArgs, metas: Sequence[dict]) -> TrainArgs:
    """``cfg`` with the training seeds, cluster variants and rounds of the runs that labelled the rows
    (what the model's meta must record, so evaluation refuses them); ``UsageError`` where a rows file
    was labelled with another teacher or cluster, or on a seed ``cfg`` holds out."""
    seeds: list[int] = []
    variants: list[str] = []
    rounds = 0
    for f, m in zip(cfg.rows, metas):
        saved = m.get("config", {})
        if not saved.get("seeds") or not saved.get("variants"):
            raise UsageError(f"--rows: {f} does not record the seeds and cluster variants it was labelled on")
        for name in _LABEL_FIELDS:
            if saved.get(name) != getattr(cfg, name):
                raise UsageError(f"--rows: {f} was labelled with --{name.replace('_', '-')} {saved.get(name)!r}, "
                                 f"this run's is {getattr(cfg, name)!r}: give the same")
        seeds += [s for s in saved.get("seeds", []) if s not in seeds]
        variants += [v for v in saved.get("variants", []) if v not in variants]
        rounds = max(rounds, int(saved.get("rounds", 0)))
    overlap = sorted(set(seeds) & set(cfg.holdout_seeds))
    if overlap:
        raise UsageError(f"--holdout-seeds: {overlap} labelled the rows (their training seeds: {sorted(seeds)})")
    return replace(cfg, seeds=sorted(seeds), variants=variants, rounds=rounds)


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _print_report(path: Path, metrics: dict, table: pd.DataFrame, teacher: str = "rollout") -> None:
    m, t = metrics, teacher
    labelled = [h for h in m["rounds"] if h["round"] != "refit"]
    print(f"\ntraining rows: {m['train_rows']:,} candidates of {m['train_decisions']:,} decisions "
          f"over {len(labelled)} labelling round(s)")
    for h in m["rounds"]:
        if h["round"] == "refit":
            print(f"  refit on {h['rows']:,} saved rows in {h['fit_s']} s")
            continue
        print(f"  round {h['round']} ({h['driver']} places): +{h['new_decisions']:,} decisions "
              f"({h['new_rows']:,} rows, labelled in {h['label_s']} s), {h['driver']} picks the {t}'s choice "
              f"{h['driver_agreement']:.1%}, mean regret {h['driver_regret']:.3g}; fit {h['fit_s']} s")
    ho = m["holdout"]
    print(f"held out, on the {ho['decisions']:,} states the forest visits: it picks the {t}'s choice "
          f"{ho['agreement']:.1%}; mean regret (objective units) forest {ho['regret_forest']:.3g}, "
          f"{REFERENCE} {ho['regret_' + REFERENCE]:.3g}")
    for w, r in ho["by_workload"].items():
        print(f"  {w}: {r['decisions']:,} decisions, agreement {r['agreement']:.1%}, regret forest "
              f"{r['regret_forest']:.3g} vs {REFERENCE} {r['regret_' + REFERENCE]:.3g}")
    cols = ["objective", "lat_p95_ms", "slo_miss_%", "cost_total_$", "rejected", "us_per_task"]
    print("\nheld-out simulation (seed {}):".format(int(table["seed"].iloc[0])))
    with pd.option_context("display.width", 200, "display.float_format", "{:,.3f}".format):
        print(table[cols].to_string())
    print(f"\nsaved {path} ({m['train_seconds']} s)")


def cli(args: argparse.Namespace) -> int:
    """Entry point of ``orchestrator train rf`` (parser in :mod:`orchestrator.cli_train`)."""
    cfg = TrainArgs.from_namespace(args)
    reg = getattr(args, "registry", None)
    root = None if reg in (None, PARSER_REGISTRY_DEFAULT) else reg
    if cfg.rows:
        print(f"fitting rf on the rows of {', '.join(cfg.rows)} (their own seeds, clusters and rounds; teacher "
              f"{cfg.teacher}), {cfg.trees} trees; "
              f"held out on {cfg.cluster}, seeds {cfg.holdout_seeds}; registry {model_registry.registry_root(root)}")
    else:
        print(f"training rf on {cfg.cluster} ({', '.join(cfg.variants)}): workloads {', '.join(cfg.workloads)}; "
              f"seeds {cfg.seeds}, {cfg.rounds} DAgger round(s), teacher {cfg.teacher}, {cfg.trees} trees; "
              f"held-out seeds {cfg.holdout_seeds}; registry {model_registry.registry_root(root)}")
    path, out = train(cfg, root)
    _print_report(path, out["metrics"], out["table"], cfg.teacher)
    return 0
