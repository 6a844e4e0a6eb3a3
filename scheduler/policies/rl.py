"""``rl`` and ``rl-sample``: the PPO policy trained by ``orchestrator train rl``, served in numpy.

A node-level artifact (architecture ``level: node``, trained in
``HeteroClusterNodes-v0``, :mod:`rl_env.node_env`) scores every candidate node and
share of :func:`scheduler.candidates.candidates` with one network over the rows of
:func:`scheduler.features.candidate_features` and takes the best (``rl``) or draws
from the softmax (``rl-sample``): the same candidates and rows the env showed it,
so it runs on a cluster of any size. It scores at most as many candidates as it was
trained with (its ``n_actions``; the prefilter keeps the best by a cheap rule),
computes the rows with the objective it was trained on, and holds each column inside
the range it had in training (``meta["feature_range"]``, :mod:`rl_env.feature_range`):
past it a network extrapolates, and the explanation says when a row was held. A class-level artifact
(trained in ``HeteroCluster-v0``) works as follows.

Loads ``policy.pt`` and its architecture spec from the policy registry
(``rl:latest`` or ``rl:<version>``; the feature schema is checked there), computes
the shared feature vector and action mask, picks a node class that can host the
task and resolves it to a node exactly as the training env did
(:func:`scheduler.actions.resolve`). ``rl`` takes the most probable class (masked
argmax); ``rl-sample`` draws the class from the policy's own distribution with a
seeded generator (``reset(seed)``), reproducible per seed. PPO learns a stochastic
policy, and because the observation aggregates nodes per class the problem is
partially observable, where the stochastic policy can beat its own argmax (on
the high-load mixes it does; see the evaluation). No RLlib, no Ray; torch loads the
weights when the policy is built (not when the registry loads), and each decision
runs them in numpy (:class:`scheduler.policy_net.ServedNet`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cluster.state import ClusterState, node_masks
from cluster.topology import NODE_CLASSES
from scheduler import features
from scheduler.actions import N_ACTIONS, action_mask, resolve
from scheduler.candidates import MAX_CANDIDATES, PREFILTERS, candidates
from scheduler.features import N_CANDIDATE_FEATURES, N_FEATURES, candidate_features, feature_vector
from scheduler.policy import Decision, FeasibilityCache, register, why_infeasible
from scheduler.task import Task

POLICY_FILE = "policy.pt"


@register("rl")
class RLPolicy:
    """Masked argmax of the exported policy network (deterministic)."""

    name = "rl"
    sample = False

    @property
    def pure(self) -> bool:
        """Greedy ``rl`` is (see :attr:`scheduler.policy.ScoringPolicy.pure`); ``rl-sample`` draws."""
        return not self.sample

    def __init__(self, version: str | int = "latest", root: str | Path | None = None,
                 seed: int | None = 0, max_candidates: int | None = None) -> None:
        from scheduler import model_registry
        from scheduler.policy_net import NetSpec, load_served

        art = model_registry.load("rl", version, root)
        self.artifact = art
        spec = NetSpec.from_dict(art.meta.get("architecture") or {})
        self.level = spec.level
        if spec.level == "node":
            if spec.in_dim != N_CANDIDATE_FEATURES:
                raise model_registry.SchemaMismatchError(
                    f"model {art.ref} scores rows of {spec.in_dim} features; this build's candidate rows have "
                    f"{N_CANDIDATE_FEATURES}: retrain with orchestrator train rl")
            self._feasible = FeasibilityCache()
            self.objective = _trained_objective(art.meta)
            #: each column held inside the range it had in training (artifacts without one: as computed)
            self.bounds = features.trained_range(art.meta, art.ref)
            features.warm()  # the compiled candidate rows load now, not at the first decision
        elif spec.in_dim != N_FEATURES or spec.n_actions != N_ACTIONS:
            raise model_registry.SchemaMismatchError(
                f"model {art.ref} maps {spec.in_dim} features to {spec.n_actions} actions; this build has "
                f"{N_FEATURES} features and {N_ACTIONS} node classes: retrain with orchestrator train rl")
        self.net = load_served(spec, str(art.file(POLICY_FILE)))
        #: candidates scored per decision: as many as the env showed in training (node level)
        self.max_candidates = max_candidates or (spec.n_actions if spec.level == "node" else MAX_CANDIDATES)
        #: and cut by its env's rule (artifacts older than the choice: ``spread``, which they were evaluated with)
        self.prefilter = (art.meta.get("env") or {}).get("prefilter", "spread")
        if self.prefilter not in PREFILTERS:
            raise model_registry.SchemaMismatchError(f"model {art.ref} names prefilter {self.prefilter!r}; this build "
                                                     f"has {', '.join(PREFILTERS)}")
        self.version = art.version
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        """Re-seed the draws of ``rl-sample`` (``rl`` is greedy and ignores it)."""
        self._rng = np.random.default_rng(seed)

    def probabilities(self, task: Task, state: ClusterState) -> tuple[np.ndarray, tuple]:
        """Masked class probabilities for ``task`` now, and the node masks they were computed from
        (class-level artifacts; a node-level one has one probability per candidate, in its decisions)."""
        if self.level == "node":
            raise TypeError(f"rl v{self.version} scores candidate nodes, not node classes: use select()")
        masks = node_masks(state, task)
        mask = action_mask(task, state, masks[0])
        x = feature_vector(task, state, masks[0], masks[1])
        _, probs = self.net.act(x[None], mask[None])
        p = probs[0]
        return p, masks

    def select(self, task: Task, state: ClusterState) -> Decision:
        if self.level == "node":
            return self._select_node(task, state)
        p, masks = self.probabilities(task, state)
        if not p.any():
            return Decision(-1, None, np.full(state.n_nodes, np.nan), why_infeasible(task, state), self.name)
        a = int(self._rng.choice(len(p), p=p / p.sum())) if self.sample else int(p.argmax())
        return resolve(a, task, state, self.name, masks, probabilities=p,
                       explanation=self._explain(a, p, task, state))

    def _select_node(self, task: Task, state: ClusterState) -> Decision:
        """The node-level decision: one score per candidate, the best (or a draw)."""
        nodes, shares, fits = candidates(self._feasible, task, state, self.max_candidates, self.prefilter)
        scores = np.full(state.n_nodes, np.nan)
        if not len(nodes):
            return Decision(-1, None, scores, why_infeasible(task, state), self.name)
        X = candidate_features(task, state, nodes, shares, fits, self.objective)
        outside = ()
        if self.bounds is not None:
            lo, hi = self.bounds
            outside = np.flatnonzero(((X < lo) | (X > hi)).any(0))
            X = np.clip(X, lo, hi)
        k = len(nodes)
        logits = self.net(X).astype(np.float64)  # one score per row: only the real rows
        p = np.exp(logits - logits.max())
        p /= p.sum()
        if self.sample:
            j = int(self._rng.choice(len(p), p=p))
        else:
            # identical rows may score a rounding apart (the product's blocking differs by row): the
            # first row equal to the best is taken, as training's argmax took its exact ties
            j = int(np.argmax(logits))
            j = int(np.flatnonzero((X == X[j]).all(1))[0]) if np.isfinite(X[j]).all() else j
        node = int(nodes[j])
        scores[nodes] = logits
        spec_nodes = state.spec.nodes
        queued = not bool(fits[j]) or bool(state.queue_len[node])
        verb = "drew it with probability" if self.sample else "is"
        why = f"{spec_nodes[node].name}: learned policy rl v{self.version} {verb} {p[j]:.0%}" + \
              ("" if self.sample else " sure") + f" among {k} candidates"
        if k > 1:
            rest = p.copy()
            rest[j] = -1.0
            r = int(np.argmax(rest))
            why += (f"; {'other' if self.sample else 'next best'} {spec_nodes[int(nodes[r])].name} {p[r]:.0%} "
                    f"(queues: {int(state.queue_len[node])} vs {int(state.queue_len[nodes[r]])} tasks)")
        if queued:
            why += " (queued: waits for capacity)"
        why += features.outside_text(outside)  # where the network is least to be trusted: say so
        probs = {spec_nodes[int(nodes[i])].name: float(p[i]) for i in np.flatnonzero(p > 1e-4).tolist()}
        return Decision(node, shares[j], scores, why, self.name, queued=queued, confidence=float(p[j]),
                        probabilities=probs)

    def _explain(self, a: int, p: np.ndarray, task: Task, state: ClusterState) -> str:
        """Confidence, the runner-up, and the queues the two classes face, in words."""
        from scheduler.features import layout

        members = layout(state).members
        queued = lambda c: int(state.queue_len[members[c]].sum())  # noqa: E731
        order = np.argsort(-p)
        verb = "drew it with probability" if self.sample else "is"
        text = f"learned policy rl v{self.version} {verb} {100 * p[a]:.0f}%" + ("" if self.sample else " sure")
        second = next((int(c) for c in order if c != a and p[c] > 0), None)
        if second is not None:
            text += (f"; {'other' if self.sample else 'next best'} {NODE_CLASSES[second]} {100 * p[second]:.0f}% "
                     f"(queues: {NODE_CLASSES[a]} {queued(a)}, {NODE_CLASSES[second]} {queued(second)} tasks)")
        else:
            text += f"; the only class that can host {task.kind}"
        return text


def _trained_objective(meta: dict):
    """The objective the policy's rows were computed with in training (``meta["env"]["objective"]``,
    relative to the repository); the default weights when the artifact names none or the file is gone."""
    from cluster.package_data import data_path
    from scheduler.objective import load_objective

    path = (meta.get("env") or {}).get("objective")
    if path:
        p = data_path(path)
        if p.is_file():
            return load_objective(p)
    return load_objective()


@register("rl-sample")
class RLSamplePolicy(RLPolicy):
    """The same network, the class drawn from its distribution (seeded, reproducible per seed)."""

    name = "rl-sample"
    sample = True
