"""RandomForest policy: every candidate node scored by one forest, distilled from the rollout teacher.

Loads a forest trained by ``orchestrator train rf`` from the model registry
(:mod:`scheduler.model_registry`, feature schema checked at load). Per task, every
statically feasible candidate (node and share) gets one row of per-candidate
features (:func:`scheduler.features.candidate_features`: the task, a few cluster
summaries, and what the simulator's own model expects of that node), and the flat
numpy forest (:mod:`scheduler.forest`, equal to sklearn's) predicts each row's
regret: how much worse than the best candidate the rollout teacher judged it, as
``log1p`` of objective units (see :mod:`rl_env.train_rf`). The smallest wins. Nothing is indexed
by node or node class, so one forest serves 6 nodes or 1,213; on a big cluster
only :attr:`RandomForestPolicy.max_candidates` are scored, cut by the ``mixed``
prefilter (by turns the least loaded, the fastest and the most utilised, where it
fits, or starts at once, first: :func:`scheduler.candidates.prefilter`).

The decision carries every scored node's negated predicted regret as its score,
per node the share of trees that rank it first (its ``probabilities``; the chosen
node's share is the confidence), and the features that moved its predicted
regret most (tree-path contributions). A forest trained since its artifact keeps the range of the
rows it was fit on (``feature_range``) also names the chosen row's columns past that range: trees
score them as at its edge, right or wrong (``rf:5``, the shipped one, predates it and keeps none).
"""
from __future__ import annotations

import math
import os

import numpy as np

from cluster.state import ClusterState
from scheduler import features, model_registry
from scheduler.candidates import MAX_CANDIDATES, Candidates, candidates
from scheduler.explain import feature_text
from scheduler.features import CANDIDATE_FEATURE_NAMES, candidate_features
from scheduler.forest import FlatForest, top_contributions
from scheduler.objective import Objective, load_objective
from scheduler.policy import Decision, FeasibilityCache, nan_row, register, why_infeasible
from scheduler.task import Task

KIND = "rf"
FOREST_FILE = "forest.npz"
SKLEARN_FILE = "model.joblib"


@register(KIND)
class RandomForestPolicy:
    """Node-level placement by a RandomForest over per-candidate features (see the module docstring).

    Args:
        version: registry version (``"latest"``, 3, "3").
        root: registry root (default: ``$ORCH_REGISTRY`` or ``artifacts/policies``).
        seed: unused (the policy is deterministic); accepted like every policy's.
        explain: compute the tree-path explanation (off in bulk rollouts).
        top_k: features named in the explanation.
        forest: an in-memory :class:`FlatForest` instead of the registry (training, tests).
        meta: its metadata when ``forest`` is given.
        max_candidates: candidates scored at most (see :func:`scheduler.candidates.prefilter`).
        objective: weights of the one-step estimate among the features (default ``configs/objective.yaml``).
    """

    pure = True  # the decision depends on the task and the state only (see ScoringPolicy.pure)
    name = KIND

    def __init__(self, version: str | int = "latest", root: str | os.PathLike | None = None,
                 seed: int | None = 0, explain: bool = True, top_k: int = 3,
                 forest: FlatForest | None = None, meta: dict | None = None,
                 max_candidates: int = MAX_CANDIDATES, objective: Objective | None = None) -> None:
        if forest is None:
            art = model_registry.load(KIND, version, root)  # raises on a schema mismatch
            try:
                forest = FlatForest.load(art.file(FOREST_FILE))
            except (OSError, ValueError, KeyError) as e:  # a truncated or foreign file: a registry problem
                raise model_registry.RegistryError(f"rf:{art.version}: cannot read {FOREST_FILE}: {e}") from e
            meta = art.meta
            self.name = f"{KIND}:{art.version}"
        if forest.n_features != len(CANDIDATE_FEATURE_NAMES) or not forest.is_regressor:
            raise model_registry.SchemaMismatchError(
                f"rf model is a {'regressor' if forest.is_regressor else 'classifier'} over {forest.n_features} "
                f"features; this build scores candidates with a regressor over {len(CANDIDATE_FEATURE_NAMES)}: "
                f"retrain with orchestrator train rf")
        if max_candidates < 1:
            raise ValueError("max_candidates must be >= 1")
        self.forest = forest
        forest.predict_rows(np.zeros((1, forest.n_features), np.float32))  # its compiled walk and the candidate
        features.warm()  # rows load now (about a second, once per process), not at the first decision
        self.meta = dict(meta or {})
        #: the range of the rows it was fit on (forests trained before it was kept: None); past it the trees
        #: split as at its edge, which the explanation says
        self.bounds = features.trained_range(self.meta, self.name)
        self.explain = explain
        self.top_k = top_k
        self.max_candidates = max_candidates
        self.objective = objective or load_objective()
        self._feasible = FeasibilityCache()

    def reset(self, seed: int | None = None) -> None:
        """Deterministic policy: nothing to re-seed."""

    def candidates(self, task: Task, state: ClusterState) -> Candidates:
        """The scored candidates: (nodes, shares, fits-now mask), at most :attr:`max_candidates`."""
        return candidates(self._feasible, task, state, self.max_candidates)

    def regret(self, task: Task, state: ClusterState, cand: Candidates) -> tuple[np.ndarray, np.ndarray]:
        """(features, predicted regret) per candidate."""
        X = candidate_features(task, state, cand[0], cand[1], cand[2], self.objective)
        return X, self.forest.predict_rows(X)[0]

    def select(self, task: Task, state: ClusterState) -> Decision:
        return self.decide(task, state)

    def decide(self, task: Task, state: ClusterState, cand: Candidates | None = None,
               explain: bool | None = None) -> Decision:
        """:meth:`select` on candidates the caller already has (:meth:`candidates`)."""
        nodes, shares, fits = self.candidates(task, state) if cand is None else cand
        scores = nan_row(state.n_nodes)
        if not len(nodes):
            return Decision(-1, None, scores, why_infeasible(task, state), self.name)
        spec_nodes = state.spec.nodes
        if len(nodes) == 1:
            node, queued = int(nodes[0]), not bool(fits[0]) or bool(state.queue_len[nodes[0]])
            scores[node] = 0.0
            why = f"{spec_nodes[node].name}: the only node that can host it" + (" (queued)" if queued else "")
            return Decision(node, shares[0], scores, why, self.name, queued=queued, confidence=1.0,
                            probabilities={spec_nodes[node].name: 1.0})
        X = candidate_features(task, state, nodes, shares, fits, self.objective)
        explain = self.explain if explain is None else explain
        pred, first = self.forest.rank_rows(X)  # compiled; the explanation walks the chosen row alone
        j = int(pred.argmin())
        node = int(nodes[j])
        scores[nodes] = -pred
        n_trees = self.forest.n_trees
        confidence = first.item(j) / n_trees
        probs = {spec_nodes[i].name: c / n_trees for i, c in zip(nodes.tolist(), first.tolist()) if c}
        queued = not bool(fits[j]) or bool(state.queue_len[node])
        why = (f"{spec_nodes[node].name}: lowest predicted regret {math.expm1(pred.item(j)):.3g} of {len(nodes)} candidates, "
               f"{confidence:.0%} of trees agree")
        if explain:
            why += self._explanation(X[j], pred, j, nodes, spec_nodes)
        if queued:
            why += " (queued: waits for capacity)"
        if explain and self.bounds is not None:  # after the rest, as rl's explanation has it
            why += features.outside_text(np.flatnonzero((X[j] < self.bounds[0]) | (X[j] > self.bounds[1])))
        return Decision(node, shares[j], scores, why, self.name, queued=queued, confidence=confidence,
                        probabilities=probs)

    def _explanation(self, x: np.ndarray, pred: np.ndarray, j: int, nodes: np.ndarray, spec_nodes) -> str:
        """The runner-up, and the features that lowered (or raised) the chosen node's predicted regret most
        (tree-path contributions along the chosen row's own walk)."""
        rest = pred.copy()
        rest[j] = np.inf
        second = int(np.argmin(rest))
        text = f" (next {spec_nodes[int(nodes[second])].name} {math.expm1(pred.item(second)):.3g})"
        _, contrib = self.forest.explain_one(x, 0)
        parts = [f"{feature_text(CANDIDATE_FEATURE_NAMES[i], float(x[i]))} "
                 f"{'lowered' if c < 0 else 'raised'} it ({c:+.3g})" for i, c in top_contributions(contrib, self.top_k)]
        return text + ("; " + "; ".join(parts) if parts else "")
