"""Export: the plain torch policy acts exactly as the RLlib module it came from."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ray.rllib")

from ray.rllib.core.columns import Columns  # noqa: E402

from rl_env.env import HeteroClusterEnv  # noqa: E402
from rl_env.export import export_policy, load_rl_module, to_policy_net  # noqa: E402
from rl_env.module import MaskedPlacementModule  # noqa: E402
from scheduler import model_registry  # noqa: E402
from scheduler.policy import make_policy  # noqa: E402
from scheduler.policy_net import load_policy  # noqa: E402


def observations(n: int = 400) -> dict[str, torch.Tensor]:
    """Real observations from high-load episodes (varied masks and queues)."""
    env = HeteroClusterEnv({"workloads": ["configs/workloads/high_load.yaml",
                                          "configs/workloads/gpu_heavy_high.yaml"], "episode_s": 30})
    rng = np.random.default_rng(0)
    obs_l, mask_l = [], []
    obs, _ = env.reset(seed=0)
    while len(obs_l) < n:
        obs_l.append(obs["observations"])
        mask_l.append(obs["action_mask"])
        obs, _, term, _, _ = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        if term:
            obs, _ = env.reset()
    return {"observations": torch.from_numpy(np.stack(obs_l)), "action_mask": torch.from_numpy(np.stack(mask_l))}


@pytest.fixture(scope="module")
def trained_like_module() -> MaskedPlacementModule:
    env = HeteroClusterEnv({"workloads": ["configs/workloads/mixed.yaml"], "episode_s": 5})
    module = MaskedPlacementModule(observation_space=env.observation_space, action_space=env.action_space,
                                   model_config={"hiddens": [32, 32]})
    torch.manual_seed(0)
    with torch.no_grad():  # decisive weights, as after training (the fresh head is near-uniform)
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module


def rllib_greedy(module, obs) -> np.ndarray:
    out = module.forward_inference({Columns.OBS: {k: v.clone() for k, v in obs.items()}})
    dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    return dist.to_deterministic().sample().numpy()


def test_exported_actions_equal_rllib_actions(tmp_path, trained_like_module) -> None:
    obs = observations()
    expected = rllib_greedy(trained_like_module, obs)
    assert len(set(expected.tolist())) > 1  # a meaningful comparison: several classes chosen
    folder = export_policy(to_policy_net(trained_like_module), {"seed": 0}, tmp_path)
    art = model_registry.load("rl", "latest", tmp_path)
    assert art.path == folder and art.meta["architecture"]["hiddens"] == [32, 32]
    net = load_policy(art.meta["architecture"], str(art.file("policy.pt")))
    actions, probs = net.act(obs["observations"], obs["action_mask"])
    assert np.array_equal(actions.numpy(), expected)
    assert (probs[obs["action_mask"] == 0] == 0).all()
    # and through the served policy's numpy forward pass: the same actions, the same logits to float rounding
    served = make_policy("rl:latest", root=tmp_path).net
    served_actions, served_probs = served.act(obs["observations"].numpy(), obs["action_mask"].numpy())
    assert np.array_equal(served_actions, expected)
    np.testing.assert_allclose(served_probs, probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(served(obs["observations"].numpy()), net(obs["observations"]).detach().numpy(),
                               rtol=1e-5, atol=1e-5)


def test_every_chosen_action_is_allowed(trained_like_module) -> None:
    obs = observations(200)
    a = rllib_greedy(trained_like_module, obs)
    assert (obs["action_mask"][torch.arange(len(a)), torch.from_numpy(a)] == 1).all()


def test_module_checkpoint_round_trip(tmp_path, trained_like_module) -> None:
    trained_like_module.save_to_path(str(tmp_path / "module"))
    loaded = load_rl_module(tmp_path / "module")
    obs = observations(100)
    assert np.array_equal(rllib_greedy(loaded, obs), rllib_greedy(trained_like_module, obs))


def test_export_refuses_a_module_without_policy_head() -> None:
    with pytest.raises(TypeError, match="PolicyNet"):
        to_policy_net(torch.nn.Linear(2, 2))
