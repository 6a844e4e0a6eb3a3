"""Benchmark: ``HeteroCluster-v0`` steps per second on ``local.yaml``, against the bare simulator.

Target (issue 4): at least 20,000 env steps per second on one core. The baseline,
timed in the same run on the same tasks, is the simulator driven by the
least-loaded heuristic (``simulations.engine.simulate``): the same event loop and
resource accounting with a cheap policy, i.e. what the env wraps. The env adds
the observation (the shared feature vector), the action mask, the node-class
resolution and the exact per-step reward. Timed: ``env.step`` only (the agent is
a pre-drawn random choice among the allowed classes), episodes of a long
workload window so that reset cost is amortised as in training; the ``gym.make``
wrapper stack (order enforcing and the passive checker) is timed too. Rounds of
baseline and env alternate and the best of each counts, because this machine
is shared and noisy.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import rl_env  # noqa: E402,F401
from rl_env.env import HeteroClusterEnv  # noqa: E402
from scheduler.policy import make_policy  # noqa: E402
from simulations.engine import simulate  # noqa: E402
from simulations.workloads import generate  # noqa: E402

TARGET = 20_000
WORKLOADS = {"mixed": "configs/workloads/mixed.yaml", "high_load": "configs/workloads/high_load.yaml"}
EPISODE_S = 600.0
ROUNDS = 5


def env_rate(env, seed: int = 1) -> tuple[int, float]:
    """(steps, steps/s over env.step calls) for one episode with a random allowed action."""
    obs, _ = env.reset(seed=seed, options={"seed": seed})
    u = np.random.default_rng(0).random(1_000_000)
    k = 0
    busy = 0.0
    clock = time.perf_counter
    while True:
        allowed = np.flatnonzero(obs["action_mask"])
        a = int(allowed[int(u[k] * len(allowed))])
        k += 1
        t = clock()
        obs, _, terminated, _, _ = env.step(a)
        busy += clock() - t
        if terminated:
            return k, k / busy


def sim_rate(env: HeteroClusterEnv, seed: int = 1) -> tuple[int, float]:
    """(tasks, placements/s) of the plain simulator with least-loaded on the same task stream."""
    tasks = generate(env.workloads[0], seed=seed, duration_s=EPISODE_S)
    t = time.perf_counter()
    simulate(env.cluster, tasks, make_policy("least-loaded"), seed=seed, timeline_points=1)
    return len(tasks), len(tasks) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    for name, path in WORKLOADS.items():
        cfg = {"workloads": [path], "episode_s": EPISODE_S}
        env = HeteroClusterEnv(cfg)
        wrapped = gym.make("HeteroCluster-v0", config=cfg)
        base = single = through_make = 0.0
        # Interleaved rounds, best of each: on a shared machine a burst of load then hits all three alike.
        for _ in range(ROUNDS):
            n, b = sim_rate(env)
            base = max(base, b)
            steps, r = env_rate(env)
            single = max(single, r)
            through_make = max(through_make, env_rate(wrapped)[1])
        wrapped.close()
        flag = "ok" if single >= TARGET else "BELOW TARGET"
        print(f"{name:10s} {n:,} tasks; simulator + least-loaded: {base:9,.0f} placements/s (baseline)")
        print(f"{'':10s} HeteroClusterEnv.step        {single:9,.0f} steps/s   {single / base:5.2f}x baseline   "
              f"target {TARGET:,}: {flag}")
        print(f"{'':10s} via gym.make (wrappers)      {through_make:9,.0f} steps/s   "
              f"{through_make / base:5.2f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
