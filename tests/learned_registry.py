"""A session-wide model registry holding tiny trained learned policies.

Tests that run every registered policy (``available_policies()``) build ``rf``
(and ``rl``) by name, which loads from the model registry; with no trained model
they would fail with "no rf model ... run orchestrator train rf". The fixture
here trains a tiny model per kind in :data:`BUILDERS` once per session into a
temporary registry, copies in the other kinds found in the default registry (a
shipped pretrained ``rl`` stays visible), and points ``ORCH_REGISTRY`` at it. A
folder's conftest activates it by importing the fixture.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from scheduler import model_registry


def build_tiny_rf(root: Path) -> None:
    """A 5-tree node-level forest of the one-step oracle's regret on 30 s of mixed and high-load work
    (about a second; the rollout teacher would take a minute: tests/rl_env/test_train_rf.py runs it)."""
    from cluster.topology import load_cluster
    from scheduler.policies.rf import FOREST_FILE
    from rl_env.train_rf import DAggerForest, Episode
    from simulations.workloads import WORKLOADS_DIR, generate, load_workload

    spec = load_cluster(Path(__file__).resolve().parents[1] / "configs" / "cluster" / "local.yaml")
    eps = [Episode(n, generate(load_workload(WORKLOADS_DIR / f"{n}.yaml"), seed=1, duration_s=30), 1)
           for n in ("mixed", "high_load")]
    est = DAggerForest(n_estimators=5, max_depth=8, rounds=0, teacher="oracle", progress=False).fit(spec, eps)
    model_registry.save("rf", {FOREST_FILE: est.forest_.save},
                        {"config": est.get_params(), "seed": 0, "note": "tiny test model"}, root=root)


#: kind -> builder(root) writing one tiny model of that kind into the registry at root
def build_untrained_rl(root: Path) -> None:
    """An UNTRAINED policy net of the exported shape, saved like ``orchestrator train rl`` saves one.

    Only for the interface tests that build every registered policy by name: they
    check the adapter (load, schema check, masking, resolve), not what PPO learned.
    tests/rl_env/test_train_tiny.py trains a real one through RLlib.
    """
    import torch

    from scheduler.actions import N_ACTIONS
    from scheduler.features import N_FEATURES
    from scheduler.policy_net import NetSpec, PolicyNet, save_policy

    torch.manual_seed(0)
    spec = NetSpec(in_dim=N_FEATURES, n_actions=N_ACTIONS, hiddens=(16,))
    net = PolicyNet(spec)
    model_registry.save("rl", {"policy.pt": lambda path: save_policy(net, str(path))},
                        {"architecture": spec.to_dict(), "note": "untrained test fixture"}, root=root)


BUILDERS: dict[str, Callable[[Path], None]] = {"rf": build_tiny_rf, "rl": build_untrained_rl}


def _has_versions(kind: str, root: Path) -> bool:
    try:
        return bool(model_registry.versions(kind, root))
    except model_registry.RegistryError:  # not a kind folder
        return False


@pytest.fixture(scope="session", autouse=True)
def learned_registry(tmp_path_factory) -> Path:
    """Temporary registry with a tiny model of every kind in :data:`BUILDERS`; ``ORCH_REGISTRY`` points at it."""
    root = tmp_path_factory.mktemp("learned-registry")
    for build in BUILDERS.values():
        build(root)
    shipped = model_registry.SHIPPED_MODELS
    if shipped.is_dir():
        for kind in shipped.iterdir():
            if kind.is_dir() and kind.name not in BUILDERS and _has_versions(kind.name, shipped):
                shutil.copytree(kind, root / kind.name)
    mp = pytest.MonkeyPatch()
    mp.setenv(model_registry.REGISTRY_ENV, str(root))
    yield root
    mp.undo()
