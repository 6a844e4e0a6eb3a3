"""HeteroCluster-v0: Gymnasium contract, determinism, masks, and reward = minus the objective."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rl_env  # noqa: F401  (registers HeteroCluster-v0)
from cluster.config import ConfigError
from cluster.state import node_masks
from rl_env.config import EnvConfig
from rl_env.env import HeteroClusterEnv
from scheduler.actions import action_mask, resolve
from scheduler.features import N_FEATURES, feature_vector
from scheduler.policy import make_policy
from simulations.engine import simulate
from simulations.workloads import generate

MIXED = "configs/workloads/mixed.yaml"
HIGH = "configs/workloads/high_load.yaml"
GPU_HIGH = "configs/workloads/gpu_heavy_high.yaml"


def small_env(**kw) -> HeteroClusterEnv:
    return HeteroClusterEnv({"workloads": [MIXED], "episode_s": 30, **kw})


def play(env: HeteroClusterEnv, choose, seed: int | None = 0, options: dict | None = None):
    """Run one episode; returns (rewards, infos, observations)."""
    obs, info = env.reset(seed=seed, options=options)
    rewards, infos, observations = [], [info], [obs]
    while True:
        obs, r, terminated, truncated, info = env.step(choose(obs))
        rewards.append(r)
        infos.append(info)
        observations.append(obs)
        assert not truncated
        if terminated:
            return rewards, infos, observations


def random_valid(seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda obs: int(rng.choice(np.flatnonzero(obs["action_mask"])))


def test_passes_the_gymnasium_env_checker() -> None:
    env = gym.make("HeteroCluster-v0", config={"workloads": [MIXED], "episode_s": 30})
    check_env(env.unwrapped)


def test_gym_make_builds_it_from_config() -> None:
    env = gym.make("HeteroCluster-v0", config={"workloads": [MIXED], "episode_s": 10})
    obs, _ = env.reset(seed=1)
    assert obs["observations"].shape == (N_FEATURES,) and obs["action_mask"].shape == (5,)
    assert env.observation_space.contains(obs)
    env.close()


def test_same_seed_same_episode_and_rewards() -> None:
    a = play(small_env(), random_valid(3), seed=11)
    b = play(small_env(), random_valid(3), seed=11)
    assert a[0] == b[0]
    assert all(np.array_equal(x["observations"], y["observations"]) for x, y in zip(a[2], b[2]))
    c = play(small_env(), random_valid(3), seed=12)
    assert a[1][0]["seed"] != c[1][0]["seed"]


def test_episodes_draw_training_seeds_and_pinned_options_win() -> None:
    env = HeteroClusterEnv({"workloads": [MIXED, GPU_HIGH], "episode_s": 5, "load_scale": [0.5, 1.5]})
    infos = [env.reset(seed=s)[1] for s in range(6)]
    lo, hi = env.config.seed_range
    assert all(lo <= i["seed"] < hi for i in infos)
    assert {i["workload"] for i in infos} == {"mixed", "gpu_heavy_high"}
    _, info = env.reset(options={"workload": "gpu_heavy_high", "seed": 101, "load_factor": 1.5})
    assert (info["workload"], info["seed"], info["load_factor"]) == ("gpu_heavy_high", 101, 1.5)


@pytest.mark.parametrize("workload", [HIGH, GPU_HIGH])
def test_return_is_minus_total_objective_and_rewards_are_exact(workload) -> None:
    """Each step pays the placed task's own score, known at placement and equal to the engine's record."""
    env = HeteroClusterEnv({"workloads": [workload], "episode_s": 60})
    rewards, infos, _ = play(env, random_valid(5), seed=2)
    ep = infos[-1]["episode"]
    assert ep["correction_total"] == 0.0  # predictions matched the simulator bit for bit
    assert sum(rewards) == pytest.approx(-ep["objective_total"], rel=1e-12)
    recs = env.result.records.set_index("task_id")
    ids = [t.id for t in env.sim.tasks if t.id in recs.index]
    scores = [i["score"] for i in infos[1:]]
    assert len(scores) == len(ids) == ep["steps"]
    assert np.array_equal(np.array(scores), recs.loc[ids, "score"].to_numpy())


def test_reward_scale_scales_rewards() -> None:
    r1 = play(small_env(), random_valid(1), seed=4)[0]
    r2 = play(small_env(reward_scale=0.1), random_valid(1), seed=4)[0]
    assert np.allclose(np.array(r2), 0.1 * np.array(r1))


def test_observation_and_mask_equal_the_shared_modules() -> None:
    """The fast observation is feature_vector bit for bit; the mask is action_mask; node choice is resolve's."""
    env = HeteroClusterEnv({"workloads": [HIGH, GPU_HIGH], "episode_s": 40})
    choose = random_valid(7)
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        while True:
            task, state = env._task, env.sim.state
            masks = node_masks(state, task)
            assert np.array_equal(obs["observations"], feature_vector(task, state, masks[0], masks[1]))
            assert np.array_equal(obs["action_mask"], action_mask(task, state, masks[0]))
            a = choose(obs)
            assert env._resolve_node(a, env._shape) == resolve(a, task, state, "x", masks).node
            obs, _, terminated, _, _ = env.step(a)
            if terminated:
                break


def test_masked_action_falls_back_with_a_penalty() -> None:
    env = small_env(invalid_action_penalty=2.5)
    obs, _ = env.reset(seed=0)
    while obs["action_mask"].all():
        obs, *_ = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
    bad = int(np.flatnonzero(obs["action_mask"] == 0)[0])
    _, r, _, _, info = env.step(bad)
    assert info["invalid_action"] and info["class"] != ["edge", "cloud", "gpu-mig", "gpu-shared", "gpu-whole"][bad]
    assert r == pytest.approx(-(info["score"] + 2.5))


def test_local_cluster_masks_whole_gpu_class_and_gpu_tasks_off_cpu_nodes() -> None:
    env = HeteroClusterEnv({"workloads": [GPU_HIGH], "episode_s": 20})
    obs, _ = env.reset(seed=3)
    seen = set()
    while True:
        task, m = env._task, obs["action_mask"]
        assert m[4] == 0  # local.yaml has no exclusive-GPU node
        if task.gpu_need != "none":
            assert m[0] == m[1] == 0
        seen.add(task.gpu_need)
        obs, _, terminated, _, _ = env.step(int(np.flatnonzero(m)[-1]))
        if terminated:
            break
    assert {"none", "fraction", "mig"} <= seen


class LastClass:
    """A Policy over node classes: the last class that can host the task, resolved like the RL policy."""

    name = "last-class"

    def reset(self, seed=None) -> None:
        pass

    def select(self, task, state):
        masks = node_masks(state, task)
        a = int(np.flatnonzero(action_mask(task, state, masks[0]))[-1])
        return resolve(a, task, state, self.name, masks)


def test_env_is_the_simulator_plus_resolve() -> None:
    """A thin wrapper: the same class choices through the env and through simulate() give the same run."""
    env = HeteroClusterEnv({"workloads": [HIGH], "episode_s": 60})
    play(env, lambda obs: int(np.flatnonzero(obs["action_mask"])[-1]), options={"seed": 9, "workload": 0})
    tasks = generate(env.workloads[0], seed=9, duration_s=60)
    ref = simulate(env.cluster, tasks, LastClass(), seed=9).records.set_index("task_id").sort_index()
    got = env.result.records.set_index("task_id").sort_index()
    assert len(got) == len(tasks)
    for col in ("node", "share", "start", "finish", "latency_ms", "score"):
        assert got[col].tolist() == ref[col].tolist(), col


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match="load_factor"):
        EnvConfig.from_mapping({"load_factor": -1})
    with pytest.raises(ConfigError, match="bogus"):
        EnvConfig.from_mapping({"bogus": 1})
    with pytest.raises(ConfigError, match="workloads"):
        EnvConfig.from_mapping({"workloads": ["configs/workloads/nope.yaml"]})


def test_step_before_reset_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        small_env().step(0)
