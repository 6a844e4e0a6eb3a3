"""``select_many`` decides a batch exactly as ``select`` decides each task alone.

The router's batch endpoint decides every task of a lock hold against one state
through :func:`scheduler.policy.select_many`; a pure scoring policy scores the tasks
that share their candidates as one matrix (``score_many``). Whatever path runs, every
decision (node, share, the scores of every node, the explanation, queued, device)
must be the one ``select`` gives, over busy states with queues, slices, MIG and
whole GPUs, so that a batch answer never differs from single requests.
"""
from __future__ import annotations

import numpy as np
import pytest

from cluster.state import ClusterState, allocate, fits_now, share_for
from cluster.topology import load_cluster
from scheduler.policy import ScoringPolicy, available_policies, make_policy, select_many
from scheduler.task import Task
from simulations.workloads import WORKLOADS_DIR

LOCAL = load_cluster(WORKLOADS_DIR.parent / "cluster" / "local.yaml")


def _task(rng: np.random.Generator, j: int) -> Task:
    kind = int(rng.integers(6))
    return Task(id=f"t{j}", cpu_milli=int(rng.integers(1, 9)) * 500, mem_mib=int(rng.integers(1, 5)) * 1024,
                gpu_milli=[0, 250, 500, 0, 0, 750][kind], gpu_count=[0, 0, 0, 1, 0, 0][kind],
                mig_profile=[None, None, None, None, "1g.10gb", None][kind],
                gpu_models=("V100",) if kind == 5 and rng.random() < 0.5 else (),
                work=float(rng.uniform(0.01, 300)), priority=int(rng.integers(1, 11)))


def _busy_state(rng: np.random.Generator, steps: int) -> ClusterState:
    """Tasks started where they fit (with finish times) or queued behind the others."""
    st = ClusterState.from_spec(LOCAL)
    st.now = float(rng.uniform(0, 100))
    for j in range(steps):
        task = _task(rng, 10_000 + j)
        i = int(rng.integers(st.n_nodes))
        share = share_for(st, i, task)
        if share is None:
            continue
        if not st.queues[i] and fits_now(st, i, task, share):
            st.holding[i].append([st.now + float(rng.uniform(1, 500)), allocate(st, i, task, share)])
        else:
            st.queues[i].append((task, share, 0.05))
            st.queue_len[i] += 1
    return st


def _same(a, b) -> bool:
    return (a.node == b.node and a.share == b.share and a.explanation == b.explanation and a.queued == b.queued
            and a.device == b.device and a.policy == b.policy and a.confidence == b.confidence
            and a.probabilities == b.probabilities and np.array_equal(a.scores, b.scores, equal_nan=True))


POLICIES = [p for p in available_policies() if p not in ("rf", "rl", "rl-sample")]


@pytest.mark.parametrize("name", POLICIES)
def test_a_batch_gets_what_each_task_gets_alone(name: str) -> None:
    rng = np.random.default_rng(3)
    grouped = 0
    for trial in range(12):
        st = _busy_state(rng, [0, 15, 40, 80][trial % 4])
        # repeated shapes (one candidate group scored as a matrix) and distinct ones, infeasible ones too
        tasks = [_task(rng, j) for j in range(40)]
        tasks += [Task(f"r{j}", cpu_milli=1000, mem_mib=2048, work=float(j)) for j in range(20)]
        tasks.append(Task("huge", cpu_milli=10_000_000, mem_mib=1))
        alone, together = make_policy(name, seed=1), make_policy(name, seed=1)
        want = [alone.select(t, st) for t in tasks]
        got = select_many(together, tasks, st)
        bad = [(t.id, w.explanation, g.explanation) for t, w, g in zip(tasks, want, got) if not _same(w, g)]
        assert bad == [], bad[:3]
        grouped += isinstance(together, ScoringPolicy) and together.pure
    assert grouped in (0, 12)


def test_fastest_and_least_loaded_score_groups_as_matrices() -> None:
    """The two policies the router's batch benchmark runs do score groups at once (not row by row)."""
    for name in ("fastest-feasible", "least-loaded"):
        pol = make_policy(name)
        assert type(pol).score_many is not ScoringPolicy.score_many and pol.pure
