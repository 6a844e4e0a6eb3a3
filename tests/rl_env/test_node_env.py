"""HeteroClusterNodes-v0: candidate rows as actions, on any variant of the cluster, and the served
node-level ``rl`` policy deciding exactly as the env it was trained in."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import rl_env  # noqa: F401  (registers HeteroClusterNodes-v0)
from cluster.config import ConfigError
from cluster.variants import variant
from rl_env.config import EnvConfig
from rl_env.env import HeteroClusterEnv
from rl_env.experiment import experiment_from_mapping, load_experiment
from rl_env.export import export_policy
from rl_env.imitation import demonstrations
from rl_env.node_env import NodeClusterEnv, make_env
from scheduler.features import N_CANDIDATE_FEATURES
from scheduler.policy import make_policy
from scheduler.policy_net import NetSpec, PolicyNet
from simulations.engine import simulate
from simulations.workloads import generate, load_workload
from tests.conftest import REPO_ROOT, assert_placed_feasibly

HIGH = "configs/workloads/high_load.yaml"
GPU_HIGH = "configs/workloads/gpu_heavy_high.yaml"
K = 16


def node_env(**kw) -> NodeClusterEnv:
    return make_env({"workloads": [HIGH, GPU_HIGH], "episode_s": 20, "level": "node", "max_candidates": K,
                     "cluster_variants": ["x1", "x2", "no:gpu-mig"], **kw})


def random_net(seed: int = 0) -> PolicyNet:
    torch.manual_seed(seed)
    net = PolicyNet(NetSpec(N_CANDIDATE_FEATURES, K, (16,), "tanh", "node"))
    with torch.no_grad():  # a start far from uniform, so that argmax decisions differ between nodes
        for p in net.parameters():
            p.normal_(0.0, 1.0)
    return net.eval()


def test_passes_the_gymnasium_env_checker() -> None:
    env = gym.make("HeteroClusterNodes-v0", config={"workloads": [HIGH], "episode_s": 10, "level": "node",
                                                     "max_candidates": K})
    check_env(env.unwrapped)


def test_rows_are_the_candidates_and_rewards_sum_to_minus_the_objective() -> None:
    env = node_env()
    seen = set()
    for ep in range(4):
        obs, info = env.reset(seed=ep)
        seen.add(info["cluster"])
        total, steps = 0.0, 0
        while True:
            mask = obs["action_mask"]
            n = int(mask.sum())
            assert obs["observations"].shape == (K, N_CANDIDATE_FEATURES) and 1 <= n <= K
            assert mask[:n].all() and not mask[n:].any() and not obs["observations"][n:].any()
            assert n == len(env._cand[0])
            obs, r, terminated, _, step_info = env.step(n - 1)
            assert not step_info["invalid_action"]
            total += r
            steps += 1
            if terminated:
                break
        summary = step_info["episode"]
        assert summary["correction_total"] == pytest.approx(0.0, abs=1e-9)
        assert total == pytest.approx(-env.config.reward_scale * summary["objective_total"], rel=1e-9)
    assert len(seen) >= 2  # the variants are drawn per episode


def test_a_padded_row_falls_back_and_pays_the_penalty() -> None:
    env = node_env(cluster_variants=["x1"])
    obs, _ = env.reset(seed=1)
    nodes, _, fits = env._cand
    assert obs["action_mask"][K - 1] == 0 and fits.any()
    state = env.sim.state
    first = min((j for j in range(len(nodes)) if fits[j]),  # fits now, then least loaded plus queued
                key=lambda j: (state.util[nodes[j]] + state.queue_len[nodes[j]], j))
    decision, invalid = env._decision(K - 1)
    assert invalid and decision.node == int(nodes[first])
    _, r, _, _, info = env.step(K - 1)
    assert info["invalid_action"]
    assert r == pytest.approx(-env.config.reward_scale * (info["score"] + env.config.invalid_action_penalty))


def test_variant_can_be_pinned_and_bad_ones_are_refused() -> None:
    env = node_env()
    _, info = env.reset(seed=0, options={"cluster": "x2", "workload": 0, "seed": 5})
    assert info["cluster"] == "local-x2" and info["load_factor"] == pytest.approx(2 * env.workloads[0].load_factor)
    with pytest.raises(ValueError, match="x3"):
        env.reset(options={"cluster": "x3"})
    with pytest.raises(ConfigError, match="cluster_variants"):
        EnvConfig.from_mapping({"cluster_variants": ["x2"]})  # class level: one cluster
    with pytest.raises(ConfigError, match="cluster_variants.*no:nope"):
        EnvConfig.from_mapping({"level": "node", "cluster_variants": ["no:nope"]})
    with pytest.raises(ConfigError, match="level"):
        EnvConfig.from_mapping({"level": "pods"})
    # a range of random clusters is each of them; a bad range names the field
    cfg = EnvConfig.from_mapping({"level": "node", "cluster_variants": ["x1", "rand:3-4"]})
    assert cfg.cluster_variants == ("x1", "rand:3", "rand:4") and cfg.clusters()[2][0].name == "local-rand4"
    with pytest.raises(ConfigError, match="cluster_variants.*A <= B"):
        EnvConfig.from_mapping({"level": "node", "cluster_variants": ["rand:4-3"]})
    with pytest.raises(ConfigError, match="prefilter"):
        EnvConfig.from_mapping({"level": "node", "prefilter": "best"})
    with pytest.raises(ValueError, match="HeteroClusterNodes-v0"):
        HeteroClusterEnv({"level": "node"})
    assert gym.make("HeteroClusterNodes-v0", config={"workloads": [HIGH]}).unwrapped.config.level == "node"


def test_experiment_files_load_and_bad_validation_clusters_are_refused(shipped_models) -> None:
    nodes = load_experiment("configs/experiments/ppo_nodes.yaml")
    assert nodes.env.level == "node" and nodes.validation_env().cluster_variants == ("x1", "x2")
    assert {o["cluster"] for o in nodes.validation.episodes()} == {"x1", "x2"}
    assert load_experiment("configs/experiments/ppo_local.yaml").env.level == "class"
    rand = load_experiment("configs/experiments/ppo_nodes_random.yaml")
    assert rand.env.cluster_variants[-8:] == tuple(f"rand:{k}" for k in range(1, 9))
    assert rand.validation.clusters == ("x1", "x2", "rand:9001")
    mix = load_experiment("configs/experiments/ppo_nodes_mix.yaml")  # rl:9's recipe (the shipped rl:11's network), train rl's default
    assert mix.env.cluster_variants[-4:] == tuple(f"rand:{k}" for k in range(1, 5)) and mix.init.teacher == "rf:5"
    assert mix.validation.clusters == ("x1", "x2", "rand:9001")
    base = {"env": {"level": "node", "workloads": [HIGH]}, "init": {"imitate": None}}
    with pytest.raises(ConfigError, match="validation.clusters.*x0"):
        experiment_from_mapping({**base, "validation": {"clusters": ["x0"]}})
    ranged = experiment_from_mapping({**base, "validation": {"clusters": ["x1", "rand:1-2"]}})
    assert ranged.validation.clusters == ("x1", "rand:1", "rand:2")
    with pytest.raises(ConfigError, match="validation.clusters.*nope"):
        experiment_from_mapping({**base, "validation": {"clusters": ["no:nope"]}})
    # rl:4's experiment pins the forest it was cloned from (so does rl:9's); a version of a heuristic is refused
    assert nodes.init.teacher == "rf:5" and nodes.env.warmup_s == 240
    pinned = experiment_from_mapping({**base, "init": {"imitate": "rollout", "horizon": 40}})
    assert (pinned.init.teacher, pinned.init.horizon) == ("rollout", 40)
    for bad in ("fastest-feasible:2", "rl-sample", "rl:99", "rf:99"):
        with pytest.raises(ConfigError, match="imitate"):
            experiment_from_mapping({**base, "init": {"imitate": bad}})
    # the current RL policy may be cloned: a fine-tune's start (orchestrator retrain --kind rl)
    assert experiment_from_mapping({**base, "init": {"imitate": "rl:2"}}).init.teacher == "rl:2"


def test_served_node_policy_decides_as_the_env_did(tmp_path) -> None:
    """The env's greedy action under a net and the registry's ``rl`` with the same weights pick the
    same node and share at every decision, on a cluster variant (the same candidates and rows)."""
    net = random_net()
    export_policy(net, {"seed": 0}, tmp_path)
    policy = make_policy("rl:latest", root=tmp_path)
    env = node_env(cluster_variants=["x2"])
    obs, _ = env.reset(seed=3)
    decisions = 0
    nodes_used = set()
    while True:
        with torch.inference_mode():
            a = int(net.masked_logits(torch.from_numpy(obs["observations"])[None],
                                      torch.from_numpy(obs["action_mask"])[None]).argmax(-1))
        d = policy.select(env._task, env.sim.state)
        assert (d.node, d.share) == (int(env._cand[0][a]), env._cand[1][a])
        assert d.confidence == pytest.approx(max(d.probabilities.values()), abs=1e-6)
        nodes_used.add(d.node)
        decisions += 1
        obs, _, terminated, _, _ = env.step(a)
        if terminated:
            break
    assert decisions > 50 and len(nodes_used) > 2


@pytest.mark.parametrize("rule", ["mixed", "spread"])
def test_served_policy_scores_as_many_candidates_as_it_trained_on(tmp_path, rule) -> None:
    """On a cluster with more candidates than the env's max_candidates, the prefilter cuts the same
    ones in serving (the network's n_actions, the env's rule) as in training."""
    torch.manual_seed(4)
    net = PolicyNet(NetSpec(N_CANDIDATE_FEATURES, 4, (16,), "tanh", "node"))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 1.0)
    env = make_env({"workloads": [GPU_HIGH], "episode_s": 10, "level": "node", "max_candidates": 4,
                    "cluster_variants": ["x3"], "prefilter": rule})
    export_policy(net.eval(), {"seed": 0, "env": env.config.to_dict()}, tmp_path)
    policy = make_policy("rl:latest", root=tmp_path)
    assert policy.max_candidates == 4 and policy.prefilter == rule
    export_policy(net.eval(), {"seed": 0}, tmp_path / "older")  # trained before the rule was a choice
    assert make_policy("rl:latest", root=tmp_path / "older").prefilter == "spread"
    obs, _ = env.reset(seed=2)
    cut = 0
    while True:
        with torch.inference_mode():
            a = int(net.masked_logits(torch.from_numpy(obs["observations"])[None],
                                      torch.from_numpy(obs["action_mask"])[None]).argmax(-1))
        cut += len(env._feasibility.entry(env._task, env.sim.state)[0]) > 4
        d = policy.select(env._task, env.sim.state)
        assert (d.node, d.share) == (int(env._cand[0][a]), env._cand[1][a])
        obs, _, terminated, _, _ = env.step(a)
        if terminated:
            break
    assert cut > 10


def test_node_policy_runs_on_a_cluster_of_another_size(tmp_path, local_spec) -> None:
    """One trained network places every task feasibly on the cluster and on it tripled."""
    export_policy(random_net(1), {"seed": 0}, tmp_path)
    policy = make_policy("rl:latest", root=tmp_path)
    tasks = generate(load_workload(REPO_ROOT / GPU_HIGH), seed=3, duration_s=15)
    for spec in (local_spec, variant(local_spec, "x3")[0]):
        assert_placed_feasibly(spec, tasks, simulate(spec, tasks, policy, seed=3).records)


def test_rollout_demonstrations_are_the_teachers_node_choices() -> None:
    cfg = EnvConfig.from_mapping({"workloads": [HIGH], "episode_s": 5, "level": "node", "max_candidates": K,
                                  "cluster_variants": ["x2"]})
    obs, mask, act, _ = demonstrations(cfg, "rollout", 40, seed=0, horizon=40)
    assert obs.shape == (40, K, N_CANDIDATE_FEATURES) and mask.shape == (40, K)
    assert (mask[np.arange(40), act] == 1).all()
    assert len(set(act.tolist())) > 1  # the teacher does not always take the first row


def test_node_sampling_is_reproducible_per_seed(tmp_path, local_spec) -> None:
    export_policy(random_net(2), {"seed": 0}, tmp_path)
    tasks = generate(load_workload(REPO_ROOT / HIGH), seed=4, duration_s=10)
    runs = [simulate(local_spec, tasks, make_policy("rl-sample:latest", root=tmp_path), seed=s).records
            for s in (7, 7, 8)]
    assert runs[0]["node"].tolist() == runs[1]["node"].tolist()
    assert runs[0]["node"].tolist() != runs[2]["node"].tolist()


def test_a_warm_up_fills_the_cluster_before_the_first_step_and_is_not_rewarded(shipped_models) -> None:
    """With warmup_s, fastest-feasible places the first seconds of the draw (no step); the agent starts
    on a cluster with work on it, and its return is still minus the objective of the tasks it placed."""
    env = node_env(cluster_variants=["x1"], warmup_s=30)
    obs, info = env.reset(seed=4)
    state = env.sim.state
    assert info["warmup_tasks"] > 0 and info["steps"] == 0
    assert state.running.sum() + state.queue_len.sum() > 0  # the first decision meets a busy cluster
    assert env._task.arrival >= env._label_from
    total, steps = 0.0, 0
    while True:
        obs, r, terminated, _, step_info = env.step(0)
        total, steps = total + r, steps + 1
        if terminated:
            break
    ep = step_info["episode"]
    assert steps + ep["warmup_tasks"] + ep["rejected"] == ep["tasks"]
    assert total == pytest.approx(-env.config.reward_scale * ep["objective_total"], rel=1e-9)
    assert ep["objective_total"] < float(env.result.records["score"].sum())  # the warm-up's tasks left out
    with pytest.raises(ConfigError, match="warmup_s"):
        node_env(warmup_s=-1)
    # with no window length the warm-up comes before the workload's whole duration, not inside it
    whole = node_env(cluster_variants=["x1"], warmup_s=30, episode_s=None)
    _, info = whole.reset(seed=4)
    assert max(t.arrival for t in whole.sim.tasks) > whole._label_from + 0.9 * whole.workloads[0].duration_s
    # validation scores whole windows from an empty cluster whatever the training episodes do
    exp = experiment_from_mapping({**load_experiment(REPO_ROOT / "configs/experiments/ppo_nodes.yaml").raw,
                                   "env": {**load_experiment(REPO_ROOT / "configs/experiments/ppo_nodes.yaml").raw["env"],
                                           "warmup_s": 60}})
    assert exp.env.warmup_s == 60 and exp.validation_env().warmup_s == 0.0


def test_a_forest_teacher_gives_its_whole_ranking_as_soft_targets(shipped_models) -> None:
    """init.temperature: the clone learns softmax(-predicted regret / T) over the candidate rows, whose
    most likely row is the forest's own choice; other teachers, or no forest, are refused by name."""
    cfg = EnvConfig.from_mapping({"workloads": [HIGH], "episode_s": 5, "level": "node", "max_candidates": K,
                                  "cluster_variants": ["x2"]})
    obs, mask, act, soft = demonstrations(cfg, "rf:5", 60, seed=0, temperature=0.05)
    assert soft.shape == mask.shape
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-5)
    assert (soft[mask == 0] == 0).all()
    assert (soft.argmax(-1) == act).all()  # ties go to the first row, as the forest's argmin does
    assert (soft.max(-1) < 1).any()  # a ranking, not one-hot
    base = {"env": {"level": "node", "workloads": [HIGH]}}
    assert experiment_from_mapping({**base, "init": {"imitate": "rf:5", "temperature": 0.05}}).init.temperature == 0.05
    for init in ({"imitate": "fastest-feasible", "temperature": 0.05}, {"imitate": "rf:5", "temperature": 0}):
        with pytest.raises(ConfigError, match="temperature"):
            experiment_from_mapping({**base, "init": init})
    with pytest.raises(ValueError, match="forest teacher"):
        demonstrations(cfg, "fastest-feasible", 5, temperature=0.05)
