"""The auto policy: it simulates its members on the cluster it serves and places as the best of them."""
from __future__ import annotations

import pytest

from cluster.topology import load_cluster
from evaluation.report import is_heuristic
from scheduler.policies.rollout import Future
from scheduler.policy import make_policy
from simulations.engine import simulate
from simulations.workloads import generate, load_workload
from tests.pids import alive


@pytest.fixture(scope="module", autouse=True)
def _no_worker_left():
    """The background tests start this process's worker: stop it with the module, not at exit."""
    yield
    from scheduler.policies.auto import shutdown_background

    shutdown_background()


@pytest.fixture(scope="module")
def spec():
    return load_cluster("configs/cluster/local.yaml")


def _decisions(spec, tasks, policy) -> list:
    """Every decision of ``policy`` over a run of ``tasks``."""
    out = []

    class Spy:
        pure, name = False, policy.name

        def reset(self, seed=None):
            policy.reset(seed)

        def select(self, task, state):
            d = policy.select(task, state)
            out.append(d)
            return d

    simulate(spec, tasks, Spy(), seed=5)
    return out


def _where(decisions: list) -> list[tuple[int, object]]:
    return [(d.node, d.share) for d in decisions]


def test_it_places_every_task_as_the_member_that_simulated_best_on_sampled_futures(spec) -> None:
    # under high_load the cheap rule queues work the fast rule would not: every future says so
    wl = load_workload("configs/workloads/high_load.yaml")
    futures = Future([generate(wl, seed=70_000 + k, duration_s=40) for k in range(2)])
    auto = make_policy("auto", members="cheapest-feasible,fastest-feasible", future=futures)
    tasks = generate(wl, seed=5, duration_s=40)
    placed = _decisions(spec, tasks, auto)
    assert auto.chosen == "fastest-feasible"
    assert set(auto.table) == {"cheapest-feasible", "fastest-feasible"}
    assert auto.table["fastest-feasible"] < auto.table["cheapest-feasible"]
    assert _where(placed) == _where(_decisions(spec, tasks, make_policy("fastest-feasible")))
    assert all(d.policy == "auto" and d.explanation.startswith("fastest-feasible (auto: simulated objective")
               for d in placed)


def test_without_a_workload_it_chooses_on_its_own_recent_past_and_a_new_run_forgets_it(spec) -> None:
    wl = load_workload("configs/workloads/high_load.yaml")
    tasks = generate(wl, seed=6, duration_s=40)
    auto = make_policy("auto", members="cheapest-feasible,fastest-feasible", warmup=100, every=10_000)
    placed = _decisions(spec, tasks, auto)
    cheap = _where(_decisions(spec, tasks, make_policy("cheapest-feasible")))
    assert _where(placed[:100]) == cheap[:100]  # the first member places the warm-up
    assert auto.chosen == "fastest-feasible" and _where(placed[100:]) != cheap[100:]
    assert placed[-1].explanation.startswith("fastest-feasible (auto: simulated objective")
    assert "on its last 100 tasks" in placed[-1].explanation
    # a second run on the same instance chooses on this run's tasks only, as a fresh instance does
    fresh = make_policy("auto", members="cheapest-feasible,fastest-feasible", warmup=100, every=10_000)
    assert _where(_decisions(spec, tasks, auto)) == _where(_decisions(spec, tasks, fresh))


def test_learned_members_are_pinned_to_a_version_and_bad_members_are_refused() -> None:
    auto = make_policy("auto")
    assert auto.members[0].startswith("rf:") and auto.members[0] != "rf:latest"
    assert "fastest-feasible" in auto.members and "random" not in auto.members
    with pytest.raises(ValueError, match="members"):
        make_policy("auto", members=" , ")
    for bad in ("auto,fastest-feasible", "rollout"):
        with pytest.raises(ValueError, match="cannot be a member"):
            make_policy("auto", members=bad)
    with pytest.raises(KeyError, match="no-such-policy"):
        make_policy("auto", members="fastest-feasible,no-such-policy")  # at construction, not mid-run
    assert not is_heuristic("auto")  # evaluate's best heuristic is never auto's own choice


def test_in_the_background_the_current_member_decides_until_the_choice_lands(spec) -> None:
    # the router's mode: the choice runs in a worker process; the decision that starts it, and every one
    # until it ends, comes from the member deciding before; the first after it, from the chosen one
    wl = load_workload("configs/workloads/high_load.yaml")
    tasks = generate(wl, seed=6, duration_s=40)
    members = "cheapest-feasible,fastest-feasible"
    inline = make_policy("auto", members=members, warmup=100, every=10_000)
    _decisions(spec, tasks, inline)
    auto = make_policy("auto", members=members, warmup=100, every=10_000, background=True)
    placed = []

    class Waiting:
        """Holds the run at the decision after the choice started until the worker has answered."""
        pure, name = False, "auto"

        def reset(self, seed=None):
            auto.reset(seed)

        def select(self, task, state):
            if len(placed) == 101:
                assert auto._pending is not None
                auto._pending[0].result(timeout=120)
            d = auto.select(task, state)
            placed.append(d)
            return d

    simulate(spec, tasks, Waiting(), seed=5)
    assert all(d.explanation.startswith("cheapest-feasible (auto: before its first choice)") for d in placed[:101])
    assert placed[101].explanation.startswith("fastest-feasible (auto: simulated objective")
    assert auto.chosen == inline.chosen and auto.table == pytest.approx(inline.table)  # the worker simulated the same


def test_a_failed_background_choice_keeps_the_current_member(spec, caplog) -> None:
    auto = make_policy("auto", members="cheapest-feasible,fastest-feasible", warmup=2, background=True)
    auto._pending = (_failed(RuntimeError("worker ran out of memory")), "on its last 2 tasks", None)
    tasks = generate(load_workload("configs/workloads/mixed.yaml"), seed=1, duration_s=5)
    from cluster.state import ClusterState
    d = auto.select(tasks[0], ClusterState.from_spec(spec))
    assert d.placed and auto.chosen == "cheapest-feasible" and auto._pending is None
    assert "a background choice failed (RuntimeError: worker ran out of memory)" in caplog.text


def _failed(exc: Exception):
    from concurrent.futures import Future as Pending
    f = Pending()
    f.set_exception(exc)
    return f


def test_the_background_worker_computes_at_the_lowest_cpu_priority() -> None:
    # a choice takes seconds of CPU: on a 2-core host the router's requests must come first
    import os

    from scheduler.policies.auto import background_executor, shutdown_background

    try:
        assert background_executor().submit(os.nice, 0).result(timeout=60) == 19
    finally:
        shutdown_background()


def test_the_background_worker_exits_when_its_process_is_killed(tmp_path) -> None:
    # a SIGKILLed Serve replica must not leave its worker behind (it would hold its memory until the host stops)
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "serve.py"
    script.write_text("import os, sys, time\n"
                      f"sys.path.insert(0, {os.getcwd()!r})\n"
                      "from scheduler.policies.auto import background_executor\n"
                      "if __name__ == '__main__':\n"
                      "    print(background_executor().submit(os.getpid).result(), flush=True)\n"
                      "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = _first_line(parent, 60)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and alive(worker):
            time.sleep(0.2)
        assert not alive(worker)
    finally:
        parent.kill()
        if worker and alive(worker):
            os.kill(worker, signal.SIGKILL)


def _first_line(proc, timeout: float) -> int:
    import select

    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the script printed no worker pid"
    return int(proc.stdout.readline())


def test_in_the_router_it_chooses_on_the_whole_cluster_and_on_when_tasks_came(spec) -> None:
    # the router's tasks all say arrival 0 and may come through a pool's view of the cluster: the choice
    # replays them at the times the live clock gave, on every node
    import dataclasses

    from cluster.state import ClusterState
    from scheduler.policies.pool import PoolPolicy

    wl = load_workload("configs/workloads/high_load.yaml")
    tasks = generate(wl, seed=6, duration_s=20)[:60]
    auto = make_policy("auto", members="cheapest-feasible,fastest-feasible", warmup=50, every=10_000)
    seen = []
    auto._adopt = lambda table, basis: seen.append((auto._streams(), basis))  # what the choice would simulate
    simulated = []
    import scheduler.policies.auto as mod
    real = mod.simulated_objectives
    mod.simulated_objectives = lambda sp, streams, pols, obj: simulated.append(sp) or real(sp, streams, pols, obj)
    try:
        state = ClusterState.from_spec(spec)
        pooled = PoolPolicy(auto, "edge")
        for k, t in enumerate(tasks):
            state.now = 5.0 * k
            (pooled if k % 2 else auto).select(dataclasses.replace(t, arrival=0.0), state)
    finally:
        mod.simulated_objectives = real
    (streams, _), basis = seen[0]
    assert [t.arrival for t in streams[0]] == [5.0 * k for k in range(50)]  # the clock, from the first task
    assert simulated == [spec]  # decision 50 came through the edge pool's view; the whole cluster was simulated
