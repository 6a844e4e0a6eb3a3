"""RandomForest policy: imitates the one-step oracle at a fraction of its cost.

Loads a forest trained by ``orchestrator train rf`` from the model registry
(:mod:`scheduler.model_registry`, feature schema checked at load), and per task:
features (:mod:`scheduler.features`) -> class probabilities through the flat
numpy forest (:mod:`scheduler.forest`, equal to sklearn's, tens of microseconds)
-> node classes that cannot host the task masked out -> the most probable class
-> a node of that class (:func:`scheduler.actions.resolve`). The decision carries
the class probability as its confidence, every class's probability, and the
features that pushed the choice most (tree-path contributions).
"""
from __future__ import annotations

import os

import numpy as np

from cluster.state import ClusterState, fits_now_mask
from cluster.topology import NODE_CLASSES
from scheduler import model_registry
from scheduler.actions import N_ACTIONS, action_mask, resolve
from scheduler.explain import contributions_text
from scheduler.features import FEATURE_NAMES, feature_vector
from scheduler.forest import FlatForest, top_contributions
from scheduler.policy import Decision, FeasibilityCache, register, why_infeasible
from scheduler.task import Task

KIND = "rf"
FOREST_FILE = "forest.npz"
SKLEARN_FILE = "model.joblib"

Masks = tuple[np.ndarray, np.ndarray, list]


def cached_node_masks(task: Task, state: ClusterState, cache: FeasibilityCache) -> Masks:
    """:func:`cluster.state.node_masks` through the per-shape feasibility cache.

    Same result (can host, fits now, share per node) at a fraction of the cost:
    static feasibility is computed once per task shape, "fits now" vectorised.
    """
    nodes, shares, groups = cache.entry(task, state)
    n = state.n_nodes
    feasible = np.zeros(n, dtype=bool)
    fits = np.zeros(n, dtype=bool)
    per_node: list = [None] * n
    if len(nodes):
        feasible[nodes] = True
        fits[nodes] = fits_now_mask(state, task, nodes, groups)
        for i, sh in zip(nodes.tolist(), shares):
            per_node[i] = sh
    return feasible, fits, per_node


@register(KIND)
class RandomForestPolicy:
    """Placement by a RandomForest over node classes (see the module docstring).

    Args:
        version: registry version (``"latest"``, 3, "3").
        root: registry root (default: ``$ORCH_REGISTRY`` or ``artifacts/policies``).
        seed: unused (the policy is deterministic); accepted like every policy's.
        explain: compute the tree-path explanation (off in bulk rollouts).
        top_k: features named in the explanation.
        forest: an in-memory :class:`FlatForest` instead of the registry (training, tests).
        meta: its metadata when ``forest`` is given.
    """

    pure = True  # the decision depends on the task and the state only (see ScoringPolicy.pure)
    name = KIND

    def __init__(self, version: str | int = "latest", root: str | os.PathLike | None = None,
                 seed: int | None = 0, explain: bool = True, top_k: int = 3,
                 forest: FlatForest | None = None, meta: dict | None = None) -> None:
        if forest is None:
            art = model_registry.load(KIND, version, root)  # raises on a schema mismatch
            forest = FlatForest.load(art.file(FOREST_FILE))
            meta = art.meta
            self.name = f"{KIND}:{art.version}"
        if forest.n_features != len(FEATURE_NAMES):
            raise model_registry.SchemaMismatchError(
                f"rf model expects {forest.n_features} features, this build computes {len(FEATURE_NAMES)}: "
                f"retrain with orchestrator train rf")
        cols = np.asarray(forest.classes).astype(int)
        if cols.min() < 0 or cols.max() >= N_ACTIONS:
            raise ValueError(f"rf model classes {cols.tolist()} are not node-class indices 0..{N_ACTIONS - 1}")
        self.forest = forest
        self.meta = dict(meta or {})
        self.explain = explain
        self.top_k = top_k
        self._cols = cols  # forest column -> action (node class) index
        self._col_of = {int(a): j for j, a in enumerate(cols)}
        self._feasible = FeasibilityCache()

    def masks(self, task: Task, state: ClusterState) -> Masks:
        """Per node: can host, fits now, share (see :func:`cached_node_masks`)."""
        return cached_node_masks(task, state, self._feasible)

    def reset(self, seed: int | None = None) -> None:
        """Deterministic policy: nothing to re-seed."""

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Model probability per node class (0 for classes never seen in training)."""
        return self._predict(x)[0]

    def _predict(self, x: np.ndarray, path: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(probability per node class, leaves or, with ``path``, the nodes per level)."""
        p, nodes = self.forest.predict_one(x, path)
        out = np.zeros(N_ACTIONS)
        out[self._cols] = p
        return out, nodes

    def select(self, task: Task, state: ClusterState) -> Decision:
        return self.decide(task, state)

    def decide(self, task: Task, state: ClusterState, masks: Masks | None = None,
               x: np.ndarray | None = None, explain: bool | None = None) -> Decision:
        """:meth:`select` reusing masks (:meth:`masks`) and features if the caller has them."""
        masks = self.masks(task, state) if masks is None else masks
        feasible, fits, _ = masks
        if not feasible.any():
            return Decision(-1, None, np.full(state.n_nodes, np.nan), why_infeasible(task, state), self.name)
        if x is None:
            x = feature_vector(task, state, feasible, fits)
        explain = self.explain if explain is None else explain
        probs, path = self._predict(x, explain)
        allowed = action_mask(task, state, feasible) > 0
        action = int(np.argmax(np.where(allowed, probs, -1.0)))
        text = self._explanation(x, path, action, probs) if explain else ""
        return resolve(action, task, state, self.name, masks, probs, text)

    def _explanation(self, x: np.ndarray, path: np.ndarray, action: int, probs: np.ndarray) -> str:
        cls = NODE_CLASSES[action]
        head = f"rf {probs[action]:.2f} for {cls}"
        best = int(np.argmax(probs))
        if best != action:
            head += f" (preferred {NODE_CLASSES[best]} {probs[best]:.2f} cannot host it)"
        col = self._col_of.get(action)
        if col is None:
            return head + f"; the model never chose {cls} in training"
        _, contrib = self.forest.explain_one(x, col, path)
        top = [(FEATURE_NAMES[i], float(x[i]), c) for i, c in top_contributions(contrib, self.top_k)]
        return f"{head}: {contributions_text(top, cls)}" if top else head
