"""``orchestrator train rf``: a RandomForest that imitates the one-step oracle (DAgger).

Round 0 runs the simulator with the oracle placing every task and records, at
each decision, the shared feature vector and the oracle's choice as a node class
(the class of the node it picked). Later rounds (DAgger, Ross et al. 2011) let
the current forest place the tasks, so the states are the ones the forest itself
reaches, but still label each with what the oracle would have chosen there; the
data of all rounds is pooled and the forest refitted.

Reported: agreement with the oracle on held-out seeds (the oracle's own decisions
and the states the forest visits), the confusion matrix, and the forest's own
simulation results next to the heuristics on a held-out seed of each workload.
The forest goes to the model registry (``artifacts/policies/rf/<version>/``) with
its feature schema, training config, metrics, command and seed.

The teacher is the oracle unless ``teacher`` names another registered policy
(``DAggerForest(teacher=...)``, or ``--teacher``): the
same pipeline then distils any placement rule into a fast, explained forest.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cluster.topology import NODE_CLASSES, ClusterSpec
from scheduler import model_registry
from scheduler.actions import N_ACTIONS, action_mask
from scheduler.features import N_FEATURES, feature_vector, layout
from scheduler.forest import FlatForest
from scheduler.objective import Objective
from scheduler.policies.oracle import Oracle
from scheduler.policies.rf import FOREST_FILE, KIND, SKLEARN_FILE, RandomForestPolicy, cached_node_masks
from scheduler.policy import FeasibilityCache, Policy, make_policy
from scheduler.task import Task
from simulations.engine import OnlineSimulator, simulate
from simulations.metrics import summary_row
from rl_env.train_rf_args import TrainArgs

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the ``--registry`` default of the parser; it means the registry's own default root
PARSER_REGISTRY_DEFAULT = "artifacts/policies"


@dataclass(frozen=True)
class Episode:
    """One simulated workload window: its tasks and the simulation seed."""

    workload: str
    tasks: Sequence[Task]
    seed: int


@dataclass
class Rollout:
    """Per decision: features, the oracle's class, the classes allowed, the class taken."""

    X: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    taken: np.ndarray
    workload: str = ""

    @staticmethod
    def concat(parts: Sequence["Rollout"]) -> "Rollout":
        return Rollout(np.concatenate([p.X for p in parts]), np.concatenate([p.y for p in parts]),
                       np.concatenate([p.mask for p in parts]), np.concatenate([p.taken for p in parts]))


def make_teacher(name: str, seed: int = 0, objective: Objective | None = None) -> Policy:
    """The policy whose choices are the labels: the oracle (default) or any registered policy."""
    if name == "oracle":
        return Oracle(seed=seed, objective=objective)
    return make_policy(name, seed=seed)


def rollout(spec: ClusterSpec, episode: Episode, teacher: Policy, driver: RandomForestPolicy | None = None,
            objective: Objective | None = None) -> Rollout:
    """Simulate ``episode``; label every decision with the teacher's class.

    ``driver`` places the tasks when given (DAgger), else the teacher does. Tasks
    that no node can ever host are placed (rejected) but not recorded.
    """
    sim = OnlineSimulator(spec, episode.tasks, seed=episode.seed, objective=objective)
    teacher.reset(episode.seed)
    state = sim.state
    cls = layout(state).cls
    n = len(episode.tasks)
    X = np.empty((n, N_FEATURES), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    taken = np.empty(n, dtype=np.int64)
    mask = np.empty((n, N_ACTIONS), dtype=bool)
    k = 0
    cache = FeasibilityCache()
    while (task := sim.next_task()) is not None:
        masks = cached_node_masks(task, state, cache)
        best = teacher.select(task, state)
        if not best.placed:
            sim.place(task, best)
            continue
        x = feature_vector(task, state, masks[0], masks[1])
        d = best if driver is None else driver.decide(task, state, masks, x, explain=False)
        X[k], y[k] = x, cls[best.node]
        mask[k] = action_mask(task, state, masks[0]) > 0
        taken[k] = cls[d.node] if d.placed else -1
        k += 1
        sim.place(task, d)
    sim.finish()
    return Rollout(X[:k], y[:k], mask[:k], taken[:k], episode.workload)


class DAggerForest:
    """RandomForest imitation of the oracle, sklearn-style: ``fit`` returns self.

    Fitted attributes: ``model_`` (the sklearn forest), ``forest_`` (its flat
    fast-path form), ``X_``/``y_`` (the pooled training data) and ``history_``
    (per round: samples, and the agreement of the forest's own choices with the
    oracle on the states it visited).
    """

    def __init__(self, n_estimators: int = TrainArgs.trees, max_depth: int | None = TrainArgs.max_depth,
                 min_samples_leaf: int = TrainArgs.min_samples_leaf, rounds: int = TrainArgs.rounds,
                 random_state: int = TrainArgs.random_state, n_jobs: int = 1, teacher: str = TrainArgs.teacher,
                 progress: bool = True) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.rounds = rounds
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.teacher = teacher
        self.progress = progress

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("n_estimators", "max_depth", "min_samples_leaf", "rounds",
                                              "random_state", "n_jobs", "teacher")}

    def _fit_model(self, data: Rollout):
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                       min_samples_leaf=self.min_samples_leaf, n_jobs=self.n_jobs,
                                       random_state=self.random_state)
        return model.fit(data.X, data.y)

    def fit(self, spec: ClusterSpec, episodes: Sequence[Episode], objective: Objective | None = None
            ) -> "DAggerForest":
        if self.rounds < 0 or self.n_estimators < 1:
            raise ValueError("rounds must be >= 0 and n_estimators >= 1")
        from tqdm import tqdm

        teacher = make_teacher(self.teacher, self.random_state, objective)
        self.history_: list[dict] = []
        data: Rollout | None = None
        for r in range(self.rounds + 1):
            who = self.teacher if r == 0 else "forest"
            driver = None if r == 0 else self.policy(explain=False)
            bar = tqdm(episodes, desc=f"round {r}/{self.rounds} ({who} places, {self.teacher} labels)",
                       unit="episode", disable=not self.progress, leave=False)
            new = Rollout.concat([rollout(spec, ep, teacher, driver, objective) for ep in bar])
            if not len(new.y):
                raise ValueError("the episodes produced no decision to learn from")
            data = new if data is None else Rollout.concat([data, new])
            t0 = time.perf_counter()
            self.model_ = self._fit_model(data)
            self.forest_ = FlatForest.from_sklearn(self.model_)
            self.history_.append({"round": r, "driver": who, "new_samples": int(len(new.y)),
                                  "samples": int(len(data.y)), "fit_s": round(time.perf_counter() - t0, 2),
                                  "driver_agreement": float((new.taken == new.y).mean())})
        self.X_, self.y_ = data.X, data.y
        return self

    def policy(self, explain: bool = True) -> RandomForestPolicy:
        """The current forest as a placement policy (no registry involved)."""
        return RandomForestPolicy(forest=self.forest_, meta={"kind": KIND}, explain=explain)


def masked_predictions(forest: FlatForest, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The policy's choice for each row: the most probable class among those allowed."""
    probs = np.zeros((len(X), N_ACTIONS))
    probs[:, np.asarray(forest.classes).astype(int)] = forest.predict_proba(X)
    return np.argmax(np.where(mask, probs, -1.0), axis=1)


def agreement_report(forest: FlatForest, holdout: Sequence[Rollout], on_policy: Sequence[Rollout]) -> dict:
    """Held-out agreement with the oracle, per workload and overall, and the confusion matrix.

    ``holdout``: oracle-driven rollouts (the oracle's own decisions); ``on_policy``:
    forest-driven rollouts (the states the forest reaches) of the same seeds.
    """
    from sklearn.metrics import confusion_matrix

    all_h = Rollout.concat(holdout)
    pred = masked_predictions(forest, all_h.X, all_h.mask)
    by_wl: dict[str, list] = {}
    for r in holdout:
        p = masked_predictions(forest, r.X, r.mask)
        by_wl.setdefault(r.workload, []).append((p == r.y))
    on = Rollout.concat(on_policy)
    cm = confusion_matrix(all_h.y, pred, labels=list(range(N_ACTIONS)))
    return {
        "holdout_decisions": int(len(all_h.y)),
        "holdout_accuracy": float((pred == all_h.y).mean()),
        "holdout_accuracy_by_workload": {w: float(np.concatenate(v).mean()) for w, v in by_wl.items()},
        "on_policy_decisions": int(len(on.y)),
        "on_policy_agreement": float((on.taken == on.y).mean()),
        "confusion_labels": list(NODE_CLASSES),
        "confusion_matrix": cm.tolist(),
    }


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


def _path(p: str) -> Path:
    """A config path as given, else relative to the repository (so the CLI runs from anywhere)."""
    q = Path(p)
    return q if q.exists() or q.is_absolute() else REPO_ROOT / q


def command_line(cfg: TrainArgs, root: str | os.PathLike | None = None) -> str:
    """The ``orchestrator train rf`` command that reproduces ``cfg``: every setting explicit."""
    import shlex

    parts = ["orchestrator", "train", "rf", *cfg.argv()]
    if root is not None:
        parts += ["--registry", os.fspath(root)]
    return shlex.join(parts)


def _episodes(cfg: TrainArgs, seeds: Sequence[int]) -> list[Episode]:
    from simulations.workloads import generate, load_workload

    out = []
    for w in cfg.workloads:
        wl = load_workload(_path(w))
        for s in seeds:
            out.append(Episode(wl.name, generate(wl, seed=s, load_factor=cfg.load_factor,
                                                 duration_s=cfg.duration_s), s))
    return out


def train(cfg: TrainArgs, root: str | os.PathLike | None = None, progress: bool = True) -> tuple[Path, dict]:
    """Collect, fit, evaluate and register; returns the artifact folder and its metrics."""
    from cluster.alibaba import load_cluster_any
    from scheduler.objective import load_objective

    t_start = time.perf_counter()
    spec = load_cluster_any(_path(cfg.cluster))
    objective = load_objective()
    train_eps = _episodes(cfg, cfg.seeds)
    hold_eps = _episodes(cfg, cfg.holdout_seeds)
    est = DAggerForest(n_estimators=cfg.trees, max_depth=cfg.max_depth, min_samples_leaf=cfg.min_samples_leaf,
                       rounds=cfg.rounds, random_state=cfg.random_state, teacher=cfg.teacher, progress=progress)
    est.fit(spec, train_eps, objective)

    teacher = make_teacher(cfg.teacher, cfg.random_state, objective)
    policy = est.policy(explain=False)
    holdout = [rollout(spec, ep, teacher, None, objective) for ep in hold_eps]
    on_policy = [rollout(spec, ep, teacher, policy, objective) for ep in hold_eps]
    metrics = agreement_report(est.forest_, holdout, on_policy)
    metrics["rounds"] = est.history_
    metrics["train_decisions"] = int(len(est.y_))

    # The forest's own results next to the heuristics, on the first held-out seed of each workload.
    sim_eps = [ep for ep in hold_eps if ep.seed == cfg.holdout_seeds[0]]
    pols: dict[str, Policy] = {"rf (new)": est.policy(explain=True)}
    pols.update({b: make_policy(b) for b in cfg.baselines})
    table = simulation_table(spec, sim_eps, pols, objective, progress)
    metrics["simulation"] = {f"{w}/{p}": {k: _plain(v) for k, v in row.items()}
                             for (w, p), row in table.iterrows()}
    metrics["train_seconds"] = round(time.perf_counter() - t_start, 1)

    forest, model = est.forest_, est.model_
    import joblib
    import sklearn

    meta = {
        "config": asdict(cfg),
        "seed": cfg.random_state,
        "metrics": metrics,
        "model": {"n_estimators": cfg.trees, "max_depth": cfg.max_depth, "min_samples_leaf": cfg.min_samples_leaf,
                  "n_nodes": forest.n_nodes, "depth": forest.max_depth,
                  "classes": [NODE_CLASSES[int(c)] for c in forest.classes],
                  "sklearn_version": sklearn.__version__},
        "teacher": cfg.teacher,
        "command": command_line(cfg, root),
    }
    path = model_registry.save(KIND, {FOREST_FILE: forest.save, SKLEARN_FILE: lambda p: joblib.dump(model, p)},
                               meta, root=root)
    return path, {"metrics": metrics, "table": table}


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _print_report(path: Path, metrics: dict, table: pd.DataFrame, teacher: str = "oracle") -> None:
    m, t = metrics, teacher
    print(f"\ntraining decisions: {m['train_decisions']:,} over {len(m['rounds'])} round(s)")
    for h in m["rounds"]:
        print(f"  round {h['round']} ({h['driver']} places): +{h['new_samples']:,} decisions, "
              f"forest/{t} agreement on them {h['driver_agreement']:.1%}, fit {h['fit_s']} s")
    print(f"held-out agreement with the {t}: {m['holdout_accuracy']:.2%} of {m['holdout_decisions']:,} "
          f"{t} decisions (" + ", ".join(f"{w} {a:.2%}" for w, a in m["holdout_accuracy_by_workload"].items())
          + f"); {m['on_policy_agreement']:.2%} on the {m['on_policy_decisions']:,} states the forest visits")
    cm = pd.DataFrame(m["confusion_matrix"], index=[f"{t} {c}" for c in m["confusion_labels"]],
                      columns=m["confusion_labels"])
    cm = cm.loc[(cm.sum(axis=1) > 0).to_numpy(), (cm.sum(axis=0) > 0).to_numpy()]
    print(f"confusion matrix (rows: {t}'s class, columns: forest's):")
    print(cm.to_string())
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
    print(f"training rf on {cfg.cluster}: workloads {', '.join(cfg.workloads)}; seeds {cfg.seeds}, "
          f"{cfg.rounds} DAgger round(s), {cfg.trees} trees; held-out seeds {cfg.holdout_seeds}; "
          f"registry {model_registry.registry_root(root)}")
    path, out = train(cfg, root)
    _print_report(path, out["metrics"], out["table"], cfg.teacher)
    return 0
