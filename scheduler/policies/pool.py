"""Any policy restricted to one pool, or a few (a node filter, not a registered policy of its own).

The other nodes are hidden the same way the live state hides a dead node (a
tombstone spec), so the policy's own logic chooses within the pool and
re-placements after a node death stay in it. The router wraps its active policy in
one per pool that requests name, and in one over the pools whose queues have room
when others are full (its admission bound).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from cluster.state import ClusterState
from cluster.topology import ClusterSpec, NodeSpec
from scheduler.policy import Decision, Policy, select_many
from scheduler.task import Task


@dataclasses.dataclass(frozen=True)
class PoolView(ClusterSpec):
    """A cluster with the nodes outside some pools hidden; ``whole`` is the cluster itself, which a
    policy that simulates the cluster it serves (auto) simulates whichever pool a request named."""

    whole: ClusterSpec | None = None


def whole_of(spec: ClusterSpec) -> ClusterSpec:
    """The cluster itself where ``spec`` is a pool's view of it, else ``spec``."""
    return getattr(spec, "whole", None) or spec


def _hidden(nd: NodeSpec) -> NodeSpec:
    """A node that can host nothing: how :mod:`cluster.live_state` hides a dead node."""
    return dataclasses.replace(nd, cpu_milli=0, mem_mib=0, devices=())


class PoolPolicy:
    """``policy`` seeing only the nodes of ``pool`` (a name, or a set of names; others look like dead nodes)."""

    def __init__(self, policy: Policy, pool: str | frozenset[str]) -> None:
        self.inner = policy
        self.pools = frozenset([pool]) if isinstance(pool, str) else frozenset(pool)
        self.pool = pool if isinstance(pool, str) else ", ".join(sorted(self.pools))
        self.name = policy.name
        self._cache: tuple[ClusterSpec, ClusterSpec] | None = None

    def _spec(self, spec: ClusterSpec) -> ClusterSpec:
        if self._cache is None or self._cache[0] is not spec:
            nodes = tuple(nd if nd.pool in self.pools else _hidden(nd) for nd in spec.nodes)
            self._cache = (spec, PoolView(spec.name, spec.tiers, nodes, spec.source, pools=spec.pools,
                                         whole=whole_of(spec)))
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
                d.explanation = f"in pool{'s' if len(self.pools) > 1 else ''} {self.pool}: {d.explanation}"
        return out

    def reset(self, seed: int | None = None) -> None:
        self.inner.reset(seed)
