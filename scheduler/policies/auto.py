"""Auto: the member policy that the simulator says wins on this cluster, for this workload.

No one policy wins everywhere: on ``local.yaml`` the forest beats every heuristic, on some
clusters drawn from its pools it loses to fastest-feasible by 80% (docs/evaluation.md),
and which heuristic is best changes with the cluster and the mix. A user does not have to
guess: before its first decision ``auto`` plays each member over sampled futures of the
workload on the very cluster it serves (the simulator, from an empty cluster, each member
on the same futures and seeds) and delegates every decision to the member with the lowest
mean objective.

The futures are those of :class:`scheduler.policies.rollout.Future`: streams drawn from the
workload's own generator with seeds of their own (``orchestrator evaluate`` gives four),
never the run's actual tasks; with no streams, the policy's own recent past (the tasks it
was asked to place, replayed from an empty cluster): it places the first ``warmup`` tasks
with the first member, then chooses on what it saw, and again every ``every`` decisions.
That is weaker: a few hundred recent tasks replayed from an empty cluster show little of the
queues a long run builds, and a switch hands the cluster to a member that did not build its
state. Judged so (``orchestrator evaluate --futures 0``) it trails the forest alone on random
clusters (docs/evaluation.md), which is why the router's default is ``rf``, not ``auto``.

A router decides under one lock for every request, and a choice simulates every member (about
a second on ``local.yaml``, more on a big cluster): with ``background`` a recent-past choice
runs in a worker process while the current member goes on deciding, and the next decision
after it ends adopts the result. Evaluations keep the default (in line), which is deterministic.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, Future as Pending, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from cluster.state import ClusterState
from cluster.topology import ClusterSpec
from scheduler import model_registry
from scheduler.objective import Objective, load_objective
from scheduler.policies.pool import whole_of
from scheduler.policies.rollout import Future, _at
from scheduler.policy import Decision, Policy, available_policies, make_policy, register
from scheduler.task import Task
from simulations.processes import background_worker

#: the learned forest and every heuristic that looks at the task's fit (not random, not round-robin):
#: across the random clusters of docs/evaluation.md each of them is the best one somewhere, and a
#: member that is missing cannot be chosen (the first member also places the recent-past warm-up)
DEFAULT_MEMBERS = ("rf,fastest-feasible,best-fit,cheapest-feasible,least-loaded,gpu-clustering,gpu-packing,"
                   "dot-product,fgd,k8s-default,ray-default")
#: members loaded from the model registry (name -> registry kind): pinned to a version when built
LEARNED_MEMBERS = {"rf": "rf", "rl": "rl", "rl-sample": "rl"}
#: policies that simulate the workload's futures themselves (rollout per decision, auto per run), with
#: the number of futures ``orchestrator evaluate`` gives each; none is a member of auto (it would simulate
#: inside every simulated decision). Eight for auto were tried (docs/evaluation.md): on 30 fresh cells
#: they changed one choice, for the worse, at twice the cost
LOOKAHEAD = {"rollout": 4, "auto": 4}

log = logging.getLogger(__name__)


def learned_members(members: str = DEFAULT_MEMBERS, root: str | os.PathLike | None = None) -> list[str]:
    """The learned members of ``members``, each pinned to its registry version (``rf`` -> ``rf:5``):
    what ``auto`` may delegate to, so an evaluation checks their training seeds and clusters too."""
    return [n for n in pinned_members(members, root) if n.partition(":")[0] in LEARNED_MEMBERS]


def pinned_members(members: str = DEFAULT_MEMBERS, root: str | os.PathLike | None = None) -> list[str]:
    """``members`` with each learned one pinned to its version now, for an ``auto`` built later that must not
    take up a version saved meanwhile (a retrain comparing its challenger with an ``auto`` champion)."""
    return [_pinned(n, root) for n in _names(members)]


def _pinned(name: str, root: str | os.PathLike | None) -> str:
    """``name`` with its registry version when it is learned (a missing model raises here)."""
    base, _, version = name.partition(":")
    if base not in LEARNED_MEMBERS:
        return name
    return f"{base}:{model_registry.resolve(LEARNED_MEMBERS[base], version or 'latest', root).name}"


def _names(members: str) -> list[str]:
    names = list(dict.fromkeys(m.strip() for m in members.split(",") if m.strip()))
    if not names:
        raise ValueError("members: name at least one policy")
    bad = [n for n in names if n.partition(":")[0] in LOOKAHEAD]
    if bad:
        raise ValueError(f"members: {', '.join(bad)} cannot be a member (it simulates at every decision)")
    return names


def _member(name: str, root: str | os.PathLike | None, seed: int | None = 0, explain: bool = True) -> Policy:
    """A member built for deciding (``explain``) or for the simulated runs (no explanation)."""
    if name.partition(":")[0] in LEARNED_MEMBERS:
        params = {"root": root} if root is not None else {}
        return make_policy(name, seed=seed, **params, **({"explain": explain} if name.startswith("rf:") else {}))
    return make_policy(name, seed=seed)


def simulated_objectives(spec: ClusterSpec, streams: Sequence[Sequence[Task]], policies: Mapping[str, Policy],
                         objective: Objective) -> dict[str, float]:
    """Each policy's mean objective over ``streams`` on ``spec``, every one on the same streams and
    seeds, from an empty cluster (each run resets the policy); a run that places nothing scores inf."""
    from simulations.engine import simulate  # the engine imports the policy registry

    table = {}
    for name, policy in policies.items():
        total = 0.0
        for k, stream in enumerate(streams):
            score = simulate(spec, stream, policy, seed=k, objective=objective).summary["objective_mean"]
            total += score if math.isfinite(score) else math.inf
        table[name] = total / len(streams)
    return table


#: the background worker's members, built once per worker process, member list and registry
_WORKER_MEMBERS: dict[tuple[tuple[str, ...], str | None], dict[str, Policy]] = {}


def _objectives_in_worker(spec: ClusterSpec, streams: list[list[Task]], members: tuple[str, ...],
                          root: str | None, objective: Objective) -> dict[str, float]:
    """:func:`simulated_objectives` in the background worker process."""
    key = (members, root)
    policies = _WORKER_MEMBERS.get(key)
    if policies is None:
        policies = _WORKER_MEMBERS[key] = {n: _member(n, root, explain=False) for n in members}
    return simulated_objectives(spec, streams, policies, objective)


_executor: ProcessPoolExecutor | None = None
_executor_lock = threading.Lock()


def background_executor() -> Executor:
    """One worker process per serving process for background choices, at the lowest CPU priority
    (a choice may take seconds; requests must not wait for it); spawned, not forked (a fork of a
    process with Ray's and the router's threads can deadlock)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=background_worker, initargs=(os.getpid(),))
        return _executor


def _drop_executor(broken: Executor) -> None:
    """Forget ``broken`` (its worker died) if it is still the pool: the next choice starts a new one."""
    global _executor
    with _executor_lock:
        if _executor is broken:
            _executor = None
    broken.shutdown(wait=False, cancel_futures=True)


def shutdown_background() -> None:
    """Stop the background worker now, a choice under way included (a router closing; otherwise the
    interpreter's exit would wait for that choice to end)."""
    global _executor
    with _executor_lock:
        ex, _executor = _executor, None
    if ex is None:
        return
    for proc in list((getattr(ex, "_processes", None) or {}).values()):  # no public terminate before 3.14
        proc.terminate()
    ex.shutdown(wait=False, cancel_futures=True)


@register("auto")
class Auto:
    """Delegates to the member with the lowest simulated objective (see the module docstring).

    Args:
        members: registered policies to choose from, comma-separated.
        future: where futures come from (default: the recent past).
        warmup: recent-past mode: tasks placed by the first member before the first choice.
        every: recent-past mode: decisions between two choices.
        objective: weights (default ``configs/objective.yaml``).
        background: recent-past mode: choose in a worker process, off the deciding thread (the router).
    """

    pure = False

    def __init__(self, seed: int | None = 0, members: str = DEFAULT_MEMBERS, future: Future | None = None,
                 warmup: int = 200, every: int = 2000, objective: Objective | str | None = None,
                 root: str | os.PathLike | None = None, background: bool = False) -> None:
        names = _names(members)
        if warmup < 2 or every < 1:
            raise ValueError("warmup must be >= 2 and every >= 1")
        self.members = [_pinned(n, root) for n in names]  # a missing model fails here, not mid-run
        self._root = root
        self.background = background
        known = available_policies()
        unknown = [n for n in self.members if n.partition(":")[0] not in known]
        if unknown:  # as make_policy says it
            raise KeyError(f"unknown policy {unknown[0]!r} (known: {', '.join(sorted(known))})")
        # one instance per member for the in-line simulated runs (each run resets it); learned ones
        # without the explanation nobody reads there. In the background the worker builds its own.
        self._sim: dict[str, Policy] = {} if background else {n: self._make(n, explain=False) for n in self.members}
        if background:
            background_executor().submit(int)  # start the worker now, not under the lock of the first choice
        self.name = "auto"
        self.future = future or Future()
        self.warmup, self.every = warmup, every
        self.objective = load_objective(objective) if isinstance(objective, str) else objective or load_objective()
        #: a background choice under way: its result, what it was made on, and the pool running it
        self._pending: tuple[Pending, str, Executor] | None = None
        self.reset(seed)

    def _make(self, name: str, seed: int | None = 0, explain: bool = True) -> Policy:
        return _member(name, self._root, seed, explain)

    def reset(self, seed: int | None = None) -> None:
        self.seed = seed
        if self._pending is not None:
            self._pending[0].cancel()  # a choice for the last run: not queued ahead of this run's
        self._live: Policy = self._make(self.members[0], seed)
        self._deciders: dict[str, Policy] = {self.members[0]: self._live}  # built this run, reused on a switch back
        #: each member's mean objective at the last choice, and the member chosen
        self.table: dict[str, float] = {}
        self.chosen = self.members[0]
        self._why = f"{self.chosen} (auto: before its first choice): "  # what each decision's explanation starts with
        self.future.past.clear()  # the recent past is this run's
        self._decisions = 0
        self._next_choice = self.warmup  # recent-past mode only: with streams, one choice before the first decision
        self._pending = None

    def _streams(self) -> tuple[list[list[Task]], str]:
        """What a choice simulates, and the words for it."""
        if self.future.streams:
            return self.future.streams, f"over {len(self.future.streams)} sampled futures"
        # the tasks it was asked to place, once each (a re-placed task comes again: its first time counts),
        # from an empty cluster
        first: dict[str, Task] = {}
        for t in self.future.past:
            first.setdefault(t.id, t)
        past = sorted(first.values(), key=lambda t: t.arrival)
        t0 = past[0].arrival
        return [[_at(t, t.arrival - t0) for t in past]], f"on its last {len(past)} tasks"

    def choose(self, state: ClusterState) -> str:
        """Simulate every member over the futures on ``state``'s cluster; keep the best."""
        streams, basis = self._streams()
        if not self._sim:
            self._sim = {n: self._make(n, explain=False) for n in self.members}
        return self._adopt(simulated_objectives(whole_of(state.spec), streams, self._sim, self.objective), basis)

    def _adopt(self, table: dict[str, float], basis: str) -> str:
        best = min(self.members, key=lambda n: (table[n], self.members.index(n)))
        if best != self.chosen:
            if best not in self._deciders:
                self._deciders[best] = self._make(best, self.seed)
            self._live = self._deciders[best]
        self.chosen, self.table = best, table
        ranked = sorted(table, key=table.get)
        runner = f", next {ranked[1]} {table[ranked[1]]:.3g}" if len(ranked) > 1 else ""
        self._why = f"{best} (auto: simulated objective {table[best]:.3g} {basis}{runner}): "
        return best

    def _choose_later(self, state: ClusterState) -> None:
        """Start a choice in the background worker (one at a time); the current member decides meanwhile."""
        if self._pending is not None:
            return
        streams, basis = self._streams()
        root = None if self._root is None else str(self._root)
        ex = background_executor()
        try:
            pending = ex.submit(_objectives_in_worker, whole_of(state.spec), streams, tuple(self.members), root,
                                self.objective)
        except Exception as exc:  # noqa: BLE001 - a dead worker, no process to spawn, a shutdown: serving goes on
            if isinstance(exc, BrokenProcessPool):
                _drop_executor(ex)
            log.warning("auto: could not start a choice (%s: %s); %s keeps deciding", type(exc).__name__, exc,
                        self.chosen)
            return
        self._pending = (pending, basis, ex)

    def _collect(self) -> None:
        """Adopt a finished background choice; a failed one leaves the current member deciding."""
        pending, basis, ex = self._pending
        if not pending.done():
            return
        self._pending = None
        try:
            table = pending.result()
        except Exception as exc:  # noqa: BLE001 - whatever the worker raised, serving goes on
            if isinstance(exc, BrokenProcessPool):
                _drop_executor(ex)
            log.warning("auto: a background choice failed (%s: %s); %s keeps deciding",
                        type(exc).__name__, exc, self.chosen)
            return
        self._adopt(table, basis)

    def select(self, task: Task, state: ClusterState) -> Decision:
        if self.future.streams:
            if not self.table:
                self.choose(state)
        else:
            if self._pending is not None:
                self._collect()
            if self._decisions == self._next_choice:  # on the tasks placed so far
                if self.background:
                    self._choose_later(state)
                else:
                    self.choose(state)
                self._next_choice += self.every
            # the router's tasks all say arrival 0: the clock says when they came
            self.future.observe(task if task.arrival == state.now else _at(task, state.now))
        self._decisions += 1
        d = self._live.select(task, state)
        d.policy = self.name
        d.explanation = self._why + d.explanation
        return d
