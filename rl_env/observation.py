"""The env's observation: :func:`scheduler.features.feature_vector`, computed fast.

Why a second code path: ``feature_vector`` costs about 50 microseconds a call
(numpy on arrays of six nodes is dominated by call overhead), which alone would
cap the env below its 20,000 steps/s target. :class:`ObservationBuilder` gives
the same float32 vector, bit for bit (``tests/rl_env/test_env.py`` asserts it
over many states), from plain-Python loops over the few nodes of each node class
and a per-task-shape cache of everything static. It is the same layout and the
same schema version, not a new feature set: static entries are read from
``feature_vector`` itself and tier loads use its expression. On clusters with a
node class or tier kind of 8 or more nodes it simply calls ``feature_vector``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cluster.state import ClusterState
from cluster.topology import NODE_CLASSES
from scheduler.features import FEATURE_NAMES, SCHEMA_VERSION, feature_vector, layout, task_features
from scheduler.task import Task

#: The feature layout this builder reproduces; a schema bump must be mirrored here.
BUILT_FOR_SCHEMA = "1"
_INDEX = {n: i for i, n in enumerate(FEATURE_NAMES)}
_WORK_INDEX = _INDEX["work_log"]


class ObservationBuilder:
    """Feature vectors of one cluster state, equal to ``feature_vector``'s."""

    def __init__(self, state: ClusterState) -> None:
        if SCHEMA_VERSION != BUILT_FOR_SCHEMA:
            raise RuntimeError(f"rl_env.observation reproduces feature schema {BUILT_FOR_SCHEMA}, "
                               f"scheduler.features is at {SCHEMA_VERSION}: update ObservationBuilder")
        self.state = state
        lay = layout(state)
        self.members = [m.tolist() for m in lay.members]
        self.kind_members = [m.tolist() for m in lay.kind_members]
        # Static entries (tier network, class speed) read from feature_vector itself, so that a
        # change in how features.py scales them cannot drift from what the builder writes.
        ref = feature_vector(Task("probe"), state).tolist()
        self.kind_net = [ref[_INDEX[f"{k}_network"]] for k in ("edge", "cloud", "gpu")]
        self.speed = [ref[_INDEX[f"{c}_speed"]] for c in NODE_CLASSES]
        self._kind_weight = getattr(lay, "kind_weight", None)  # tier loads as features.py sums them
        self._kind_has = getattr(lay, "kind_has", None)
        self.cpu_total = state.cpu_total.tolist()
        self.gpu_total = state.gpu_total.tolist()
        self.fast = max(len(m) for m in [*self.members, *self.kind_members]) < 8
        self._task_cache: dict[tuple, list[float]] = {}

    def task_part(self, task: Task) -> list[float]:
        """``task_features(task)``, cached per shape (only the work term varies per task)."""
        key = (task.priority, task.slo_ms, task.cpu_milli, task.mem_mib, task.gpu_milli, task.gpu_count,
               task.mig_profile, task.cost_sensitivity)
        part = self._task_cache.get(key)
        if part is None:
            part = self._task_cache[key] = task_features(task)
        out = list(part)
        out[_WORK_INDEX] = math.log10(max(task.work, 1e-3)) / 4.0  # as scheduler.features does
        return out

    def build(self, task: Task, feasible: Sequence[bool], fits: Sequence[bool]) -> np.ndarray:
        """The feature vector; ``feasible``/``fits`` hold one flag per node of the cluster."""
        state = self.state
        if not self.fast:
            return feature_vector(task, state, np.asarray(feasible, dtype=bool), np.asarray(fits, dtype=bool))
        out = self.task_part(task)
        if self._kind_weight is not None:
            out.extend(np.where(self._kind_has, self._kind_weight @ state.util, 1.0).tolist())
        else:
            util = state.util.tolist()
            out.extend(sum(util[i] for i in m) / len(m) if m else 1.0 for m in self.kind_members)
        out.extend(self.kind_net)
        cpu_free = state.cpu_free.tolist()
        held = state.gpu_held.tolist()
        qlen = state.queue_len.tolist()
        cpu_total, gpu_total = self.cpu_total, self.gpu_total
        for c, m in enumerate(self.members):
            if not m:
                out.extend((0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
                continue
            fe = fi = False
            fc = fg = -math.inf
            q = 0
            for i in m:
                fe = fe or feasible[i]
                fi = fi or fits[i]
                v = cpu_free[i] / cpu_total[i]
                if v > fc:
                    fc = v
                g = gpu_total[i]
                v = (g - held[i]) / g if g > 0 else 0.0
                if v > fg:
                    fg = v
                q += qlen[i]
            out.extend((float(fe), float(fi), fc, fg, math.log1p(float(q)) / 5.0, self.speed[c]))
        return np.array(out, dtype=np.float32)

