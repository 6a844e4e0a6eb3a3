"""Rollout (Bertsekas): each candidate judged by playing the near future forward from it.

For a decision, every statically feasible candidate (node and share; on a large
cluster the ``top_k`` a cheap estimate ranks best, plus the base policy's own
choice) is applied to a copy of the state (:meth:`ClusterState.copy`), and the copy
is rolled forward (:class:`cluster.booking.Forward`) over sampled future arrivals
that the ``base`` heuristic places. A candidate's value is the objective summed
over the task itself, the tasks already waiting and the sampled ones, each played
until it finishes (no more arrivals after the horizon, so the queues it created
drain and are paid for), averaged over ``samples`` futures. The lowest wins.

Every candidate sees the same sampled futures (common random numbers), so the
difference between candidates is not drowned by sampling noise. The futures are
never the actual future: they come from :class:`Future`, task streams drawn from
the workload's own generator when the caller has one (``orchestrator evaluate``,
the RF teacher), else the policy's own recent past (the tasks it was asked to
place, replayed from a random point: the router's case). Network delays are the
tier means, as the estimates of the heuristics use.

With an exact model, rollout is never worse than its base in expectation (policy
improvement); here the model is the simulator's own, up to the network draw and
the sampled arrivals. With several bases (``base="a,b,c"``), a candidate's value is
the best of the bases' rolls over the same futures (Bertsekas' rollout with multiple
heuristics): never worse than the best of them, which may differ per workload. It is slow by design (``samples x candidates`` forward rolls
per decision): a teacher, and a policy for low request rates.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from operator import attrgetter
from typing import Sequence

import numpy as np

from cluster.booking import Forward, Held, waiting_starts
from cluster.performance import cost
from cluster.state import ClusterState, Share, fits_now
from scheduler.estimate import expected_lists
from scheduler.objective import Objective, load_objective
from scheduler.policy import Decision, FeasibilityCache, Policy, make_policy, register, why_infeasible
from scheduler.task import Task

#: the heuristics the later tasks of a roll are placed by (each candidate valued by the best): the
#: fast rule wins under load, the cheap one on a light mix, best-fit packs GPU shares; with one
#: base (fastest-feasible) rollout was 4% worse than cheapest-feasible on cluster_smoke
DEFAULT_BASE = "fastest-feasible,cheapest-feasible,best-fit"
#: how far a roll looks ahead: sampled arrivals per future (and the seconds they may span). A roll
#: must see the queues a choice creates: at 40 arrivals (5 s at gpu_heavy_high's 8/s) rollout put
#: imaging tasks on the MIG slices that the MIG-only tasks needed, and the queue they built behind
#: them fell outside the roll; at 120 it kept those slices free (chosen on gpu_heavy_high seed 110:
#: outside the rollout sections' seeds 101-103, inside the learned policies' 101-110, where
#: docs/evaluation.md gives rf:2's margin without it too)
HORIZON_TASKS = 120
HORIZON_S = 60.0
_AFTER_ARRIVAL = attrgetter("priority", "slo_ms", "cpu_milli", "mem_mib", "gpu_milli", "gpu_count",
                            "mig_profile", "gpu_models", "work", "cost_sensitivity", "description", "kind")


def _at(task: Task, arrival: float) -> Task:
    """``task`` arriving at ``arrival`` (a sampled future task; cheaper than ``dataclasses.replace``)."""
    return Task(task.id, arrival, *_AFTER_ARRIVAL(task))


class Future:
    """Sampled futures: windows of task streams, shifted to start now.

    Args:
        streams: task streams sorted by arrival (drawn from a workload's generator
            with seeds of their own); windows are cut at uniformly random points.
        window: with no streams, the last ``window`` tasks :meth:`observe` saw are the
            stream (the recent past, replayed).
    """

    def __init__(self, streams: Sequence[Sequence[Task]] = (), window: int = 400) -> None:
        self.streams = [list(s) for s in streams if len(s) > 1]
        self._arrivals = [[t.arrival for t in s] for s in self.streams]
        self.past: deque[Task] = deque(maxlen=window)

    def observe(self, task: Task) -> None:
        if not self.streams:
            self.past.append(task)

    def sample(self, rng: np.random.Generator, now: float, horizon_s: float, max_tasks: int) -> list[Task]:
        """Arrivals over ``(now, now + horizon_s]``, at most ``max_tasks`` of them."""
        if self.streams:
            k = int(rng.integers(len(self.streams)))
            stream, arrivals = self.streams[k], self._arrivals[k]
        else:
            stream = list(self.past)
            arrivals = [t.arrival for t in stream]
        if len(stream) < 2:
            return []
        span = arrivals[-1] - arrivals[0]
        if span <= 0:
            return []
        length = min(horizon_s, span)
        start = arrivals[0] + float(rng.random()) * (span - length)
        lo = bisect_left(arrivals, start)
        hi = min(bisect_left(arrivals, start + length, lo), lo + max_tasks)
        return [_at(stream[j], now + max(arrivals[j] - start, 1e-9)) for j in range(lo, hi)]


@register("rollout")
class Rollout:
    """Rollout policy improvement over a base heuristic (see the module docstring).

    Args:
        base: the registered heuristic that places the sampled future tasks, or several,
            comma-separated (each candidate valued by the best of them; the first decides
            on a quiet cluster and is the one the explanation compares with).
        samples: futures per decision (shared by every candidate).
        horizon_s: how far ahead arrivals are sampled.
        horizon_tasks: at most this many sampled arrivals per future.
        top_k: candidates rolled out at most (by expected latency), besides the base's choice.
        quiet_load: no rollout while no node has a queue and every candidate's utilisation is
            below this (the base's choice is taken): with nothing waiting and room everywhere a
            placement barely changes what later tasks meet, and rolls cost milliseconds.
        future: where futures come from (default: the recent past).
        objective: weights (default ``configs/objective.yaml``).
    """

    pure = False

    def __init__(self, seed: int | None = 0, base: str = DEFAULT_BASE, samples: int = 4,
                 horizon_s: float = HORIZON_S, horizon_tasks: int = HORIZON_TASKS, top_k: int = 4,
                 quiet_load: float = 0.0, future: Future | None = None, objective: Objective | str | None = None) -> None:
        if samples < 1 or horizon_tasks < 0 or top_k < 1 or not horizon_s >= 0:
            raise ValueError("samples and top_k must be >= 1, horizon_s and horizon_tasks >= 0")
        names = [b.strip() for b in base.split(",") if b.strip()]
        if not names:
            raise ValueError("base: name at least one heuristic")
        self.name = "rollout"
        self.bases: list[Policy] = [make_policy(n) for n in names]
        self.base = self.bases[0]
        # their own instances: rolls reseed them, the decisions' bases keep their state
        self._roll_bases: list[Policy] = [make_policy(n) for n in names]
        self.samples, self.horizon_s, self.horizon_tasks, self.top_k = samples, horizon_s, horizon_tasks, top_k
        self.quiet_load = quiet_load
        self.future = future or Future()
        self.objective = load_objective(objective) if isinstance(objective, str) else objective or load_objective()
        self._feasible = FeasibilityCache()
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        for b in (*self.bases, *self._roll_bases):
            b.reset(seed)

    # ------------------------------------------------------------------ deciding
    def candidates(self, task: Task, state: ClusterState, base_choice: Decision) -> list[tuple[int, Share]]:
        """Statically feasible (node, share) pairs, at most ``top_k`` by expected latency plus the bases'
        choices (the other bases are asked only when there are more than ``top_k`` to prune)."""
        nodes, shares = self._feasible.static(task, state)
        pairs = list(zip(nodes.tolist(), shares))
        if len(pairs) > self.top_k:
            lat, _ = expected_lists(task, state, nodes, shares)
            order = sorted(range(len(pairs)), key=lat.__getitem__)[: self.top_k]
            kept = [pairs[k] for k in order]
            for d in (base_choice, *(b.select(task, state) for b in self.bases[1:])):
                if d.placed and (d.node, d.share) not in kept:
                    kept.append((d.node, d.share))
            pairs = kept
        return pairs

    def select(self, task: Task, state: ClusterState) -> Decision:
        self.future.observe(task)
        base_choice = self.base.select(task, state)
        pairs = self.candidates(task, state, base_choice)
        if not pairs:
            return Decision(-1, None, np.full(state.n_nodes, np.nan), why_infeasible(task, state), self.name)
        if len(pairs) > 1 and self.quiet_load > 0 and not state.queue_len.any() \
                and max(state.util.item(i) for i, _ in pairs) < self.quiet_load:
            base_choice.policy = self.name
            base_choice.explanation = f"quiet cluster, {self.base.name}'s choice: {base_choice.explanation}"
            return base_choice
        if len(pairs) == 1:
            values = [0.0]  # nothing to compare: not rolled out
        else:
            futures = [self.future.sample(self.rng, state.now, self.horizon_s, self.horizon_tasks)
                       for _ in range(self.samples)]
            seeds = self.rng.integers(2**32, size=self.samples).tolist()
            values = [min(sum(self.roll(task, state, i, share, f, s, b) for f, s in zip(futures, seeds))
                          for b in self._roll_bases) / self.samples
                      for i, share in pairs]
        k = min(range(len(pairs)), key=lambda j: (values[j], j))
        node, share = pairs[k]
        scores = np.full(state.n_nodes, np.nan)
        for (i, _), v in zip(pairs, values):
            scores[i] = -v
        queued = bool(state.queues[node]) or not fits_now(state, i=node, task=task, share=share)
        name = state.spec.nodes[node].name
        if len(pairs) == 1:
            why = f"{name}: the only feasible node"
        else:
            b = next((v for (i, s), v in zip(pairs, values) if i == base_choice.node and s == base_choice.share),
                     math.nan)
            why = (f"{name}: best objective over {self.samples} sampled futures ({values[k]:.3g}; "
                   f"{self.base.name} would pick {state.spec.nodes[base_choice.node].name if base_choice.placed else 'none'}"
                   f", {b:.3g})")
        if queued:
            why += " (queued: waits for capacity)"
        return Decision(node, share, scores, why, self.name, queued=queued)

    def roll(self, task: Task, state: ClusterState, i: int, share: Share, future: list[Task], seed: int,
             base: Policy | None = None) -> float:
        """Objective of placing ``task`` on node ``i`` then ``future`` by ``base`` (default the first),
        played to the end."""
        st = state.copy()
        st.cache_replays()
        tiers = [st.spec.tiers[nd.tier] for nd in st.spec.nodes]
        net_s = (st.net_mean_ms / 1000.0).tolist()
        obj = self.objective
        total = 0.0

        def charge(node: int, done: Task, share: Share, finish: float, ex: float) -> None:
            nonlocal total
            c = cost(tiers[node], done, share, ex)
            total += obj.score((finish - done.arrival) * 1000.0, done.slo_ms, done.priority, c, done.cost_sensitivity)

        def finished(t: float, node: int, done: Task | None, held: Held, started: float | None) -> None:
            if done is not None:  # tasks running before the decision are paid for whatever it is
                charge(node, done, held[1].share, held[0], held[2])

        fw = Forward(st, on_finish=finished)
        fw.place(i, task, share, st.now, net_s[i])
        if future:
            base = base or self._roll_bases[0]
            base.reset(seed)
            for ft in future:
                fw.advance(ft.arrival)
                st.now = ft.arrival
                d = base.select(ft, st)
                if d.placed:
                    fw.place(d.node, ft, d.share, ft.arrival, net_s[d.node], d.device)
        # the rest is known without playing it on: running tasks finish when due, waiting ones
        # start where their queue's replay says (what playing on gives, exactly, and far cheaper)
        for _, _, node, done, held, _ in fw.heap:
            finished(0.0, node, done, held, None)
        for node, q in enumerate(st.queues):
            if q:
                for (qt, qs, seconds), start, ex in waiting_starts(st, node):
                    charge(node, qt, qs, start + seconds + ex, ex)
        return total
