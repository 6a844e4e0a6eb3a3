"""Placement actions for learned policies: one per node class, whatever the cluster's size.

Learned policies (RandomForest, RL) choose a node *class* (edge, cloud, gpu-mig,
gpu-shared, gpu-whole; see :data:`cluster.topology.NODE_CLASSES`); :func:`resolve`
turns that into a node and a share: among the class's nodes that can host the
task, those where it fits now first, then the least loaded (utilisation plus
queue). The mask says which classes can host the task at all, so a policy never
picks an impossible placement.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from cluster.state import ClusterState, node_masks
from cluster.topology import NODE_CLASSES
from scheduler.features import layout
from scheduler.policy import Decision
from scheduler.task import Task

N_ACTIONS = len(NODE_CLASSES)


def action_mask(task: Task, state: ClusterState, feasible: np.ndarray | None = None) -> np.ndarray:
    """1 for each node class with at least one node that can host ``task``."""
    if feasible is None:
        feasible = node_masks(state, task)[0]
    lay = layout(state)
    return np.array([float(len(m) > 0 and feasible[m].any()) for m in lay.members], dtype=np.float32)


def least_loaded_node(nodes: Iterable[int], fits: Sequence[bool], load: Sequence[float],
                      queue: Sequence[int]) -> int:
    """The node :func:`resolve` picks among ``nodes`` (ascending): fits now first, then the lowest
    utilisation plus queue, then the lowest index; -1 if there is none.

    The scalar form of :func:`resolve`'s vectorised rule (plain lists: the RL env calls it per
    step on a few nodes); tests hold the two equal.
    """
    best, key = -1, (True, 0.0)
    for i in nodes:
        k = (not fits[i], load[i] + queue[i])
        if best < 0 or k < key:
            best, key = i, k
    return best


def resolve(action: int, task: Task, state: ClusterState, policy: str,
            masks: tuple[np.ndarray, np.ndarray, list] | None = None,
            probabilities: np.ndarray | None = None, explanation: str = "") -> Decision:
    """Turn a node-class action into a :class:`Decision` (node -1 if the class cannot host)."""
    feasible, fits, shares = masks if masks is not None else node_masks(state, task)
    members = layout(state).members[action]
    cand = members[feasible[members]] if len(members) else members
    scores = np.full(state.n_nodes, np.nan)
    probs = None
    if probabilities is not None:
        probs = {c: float(p) for c, p in zip(NODE_CLASSES, probabilities)}
    if len(cand) == 0:
        why = f"no {NODE_CLASSES[action]} node can host it" if len(members) else \
            f"this cluster has no {NODE_CLASSES[action]} node"
        return Decision(-1, None, scores, why, policy, probabilities=probs)
    load = state.load()[cand] + state.queue_len[cand]
    order = np.lexsort((load, ~fits[cand]))  # fits-now first, then least loaded
    node = int(cand[order[0]])
    scores[cand] = -load
    conf = float(probabilities[action]) if probabilities is not None else None
    name = state.spec.nodes[node].name
    queued = not fits[node]
    text = f"{name} ({NODE_CLASSES[action]}): {explanation}" if explanation else f"{name} ({NODE_CLASSES[action]})"
    if probabilities is not None:
        scores = node_scores(scores, np.asarray(probabilities), feasible, fits, state)
    return Decision(node, shares[node], scores, text + (" (queued)" if queued else ""), policy,
                    queued=queued, confidence=conf, probabilities=probs)


def node_scores(class_scores: np.ndarray, probs: np.ndarray, feasible: np.ndarray, fits: np.ndarray,
                 state: ClusterState) -> np.ndarray:
    """Per node: its class's probability (NaN where it cannot host the task).

    ``class_scores`` are :func:`scheduler.actions.resolve`'s scores, set only on the
    chosen class's candidates; their order (fits now first, then least loaded)
    becomes a tie-break below 1e-6, so the chosen node has the highest score.
    """
    scores = np.where(feasible, probs[layout(state).cls], np.nan)
    cand = np.flatnonzero(~np.isnan(class_scores))
    if len(cand):
        order = np.lexsort((-class_scores[cand], ~fits[cand]))
        scores[cand[order]] += 1e-6 * (1.0 - np.arange(len(cand)) / len(cand))
    return scores
