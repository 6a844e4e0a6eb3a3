"""Which policy the router uses, switchable at run time without dropping requests.

A switch builds the new policy completely (a learned model is loaded and its
feature schema checked) before one reference swap; a request that already holds
the old policy finishes with it, and tasks in flight keep it for re-placement.
Learned policies are pinned to a concrete registry version ("rf:latest" becomes
"rf:4"), so the history says exactly which model decided.

:class:`PoolPolicy` restricts any policy to one pool by hiding the other nodes the
same way the live state hides a dead node (a tombstone spec), so the policy's own
logic chooses within the pool and re-placements after a node death stay in it.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from cluster.state import ClusterState
from cluster.topology import ClusterSpec, NodeSpec
from scheduler import model_registry
from scheduler.policy import Decision, Policy, available_policies, make_policy, select_many
from scheduler.task import Task

#: policy kinds that load a trained model from the registry
LEARNED = tuple(model_registry.TRAIN_COMMANDS)


class PolicyChoiceError(ValueError):
    """A policy/version that cannot be used; ``field`` is ``policy`` or ``version``."""

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(f"{field_name}: {reason}")


@dataclass(frozen=True)
class ActivePolicy:
    policy: Policy
    name: str  # as reported: "fastest-feasible", "rf:4"
    version: int | None
    since: float


def build_policy(ref: str, version: str | int | None = None, *, seed: int = 0,
                 registry: str | None = None) -> ActivePolicy:
    """Build ``ref`` (``name`` or ``name:version``; ``version`` overrides the suffix)."""
    base, _, suffix = ref.strip().partition(":")
    known = available_policies()
    if base not in known:
        raise PolicyChoiceError("policy", f"unknown policy {base!r} (known: {', '.join(known)})")
    ver = version if version is not None else (suffix or None)
    if base not in LEARNED:
        if ver is not None:
            raise PolicyChoiceError("version", f"{base} is a built-in heuristic and has no versions")
        pol = make_policy(base, seed=seed)
        return ActivePolicy(pol, base, None, time.time())
    try:
        v = int(model_registry.resolve(base, "latest" if ver is None else ver, registry).name)
        kwargs = {"root": registry} if registry else {}
        pol = make_policy(f"{base}:{v}", **kwargs)
    except model_registry.RegistryError as exc:
        field_name = "version" if ver is not None and not isinstance(exc, model_registry.SchemaMismatchError) \
            else "policy"
        raise PolicyChoiceError(field_name, str(exc)) from None
    return ActivePolicy(pol, f"{base}:{v}", v, time.time())


def learned_versions(registry: str | None = None) -> dict[str, list[int]]:
    out = {}
    for kind in LEARNED:
        try:
            out[kind] = model_registry.versions(kind, registry)
        except model_registry.RegistryError:
            out[kind] = []
    return out


class PolicyHolder:
    """The active policy; :meth:`swap` replaces it atomically."""

    def __init__(self, active: ActivePolicy) -> None:
        self._active = active
        self._lock = threading.Lock()

    @property
    def active(self) -> ActivePolicy:
        return self._active

    def swap(self, new: ActivePolicy) -> ActivePolicy:
        with self._lock:
            old, self._active = self._active, new
        return old


def _hidden(nd: NodeSpec) -> NodeSpec:
    """A node that can host nothing: how :mod:`cluster.live_state` hides a dead node."""
    return dataclasses.replace(nd, cpu_milli=0, mem_mib=0, devices=())


class PoolPolicy:
    """``policy`` seeing only the nodes of ``pool`` (others look like dead nodes)."""

    def __init__(self, policy: Policy, pool: str) -> None:
        self.inner = policy
        self.pool = pool
        self.name = policy.name
        self._cache: tuple[ClusterSpec, ClusterSpec] | None = None

    def _spec(self, spec: ClusterSpec) -> ClusterSpec:
        if self._cache is None or self._cache[0] is not spec:
            nodes = tuple(nd if nd.pool == self.pool else _hidden(nd) for nd in spec.nodes)
            self._cache = (spec, ClusterSpec(spec.name, spec.tiers, nodes, spec.source, pools=spec.pools))
        return self._cache[1]

    @property
    def pure(self) -> bool:
        return getattr(self.inner, "pure", False)

    def select(self, task: Task, state: ClusterState) -> Decision:
        return self.select_many([task], state)[0]

    def select_many(self, tasks: Sequence[Task], state: ClusterState) -> list[Decision]:
        """The inner policy's decisions on one view of ``state`` with only this pool's nodes."""
        view = dataclasses.replace(state, spec=self._spec(state.spec))
        view.now = state.now
        out = select_many(self.inner, tasks, view)
        for d in out:
            if not d.placed:
                d.explanation = f"in pool {self.pool}: {d.explanation}"
        return out

    def reset(self, seed: int | None = None) -> None:
        self.inner.reset(seed)
