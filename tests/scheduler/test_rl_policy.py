"""The served RL policy: torch weights from the registry run in numpy, schema-checked, feasible, explained, no RLlib."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cluster.state import ClusterState, check_invariants, share_for
from cluster.topology import NODE_CLASSES
from scheduler import model_registry
from scheduler.actions import N_ACTIONS
from scheduler.features import N_FEATURES
from scheduler.policy import make_policy
from scheduler.policy_net import NetSpec, PolicyNet, save_policy
from scheduler.task import make_task
from simulations.engine import simulate
from simulations.workloads import generate, load_workload
from tests.conftest import REPO_ROOT

TASKS = [
    make_task({"id": "cpu", "cpu_milli": 500, "slo_ms": 300, "priority": 9}, infer=False),
    make_task({"id": "frac", "gpu_milli": 250, "cpu_milli": 2000}, infer=False),
    make_task({"id": "mig", "mig_profile": "1g.10gb"}, infer=False),
]


def publish(root, spec: NetSpec | None = None, seed: int = 0, **meta) -> PolicyNet:
    torch.manual_seed(seed)
    net = PolicyNet(spec or NetSpec(N_FEATURES, N_ACTIONS, (16,)))
    with torch.no_grad():  # make the head decisive, not the near-uniform initial one
        net.body[-1].weight.normal_(0, 1.0)
    model_registry.save("rl", {"policy.pt": lambda p: save_policy(net, str(p))},
                        {"architecture": net.spec.to_dict(), "seed": seed, **meta}, root)
    return net


def test_decisions_are_feasible_confident_and_explained(tmp_path, local_spec) -> None:
    publish(tmp_path)
    policy = make_policy("rl:latest", root=tmp_path)
    assert policy.name == "rl:latest" and policy.version == 1
    state = ClusterState.from_spec(local_spec)
    for t in TASKS:
        d = policy.select(t, state)
        assert d.placed and share_for(state, d.node, t) == d.share
        probs = np.array([d.probabilities[c] for c in NODE_CLASSES])
        assert probs.sum() == pytest.approx(1.0, abs=1e-6)
        assert d.confidence == pytest.approx(probs.max())
        assert "sure" in d.explanation and state.spec.nodes[d.node].name in d.explanation
        if t.gpu_need != "none":  # masked classes get no probability
            assert d.probabilities["edge"] == d.probabilities["cloud"] == 0.0


def test_runs_in_the_simulator_deterministically(tmp_path, local_spec) -> None:
    publish(tmp_path, seed=3)
    tasks = generate(load_workload(REPO_ROOT / "configs/workloads/gpu_heavy_high.yaml"), seed=5, duration_s=20)
    a = simulate(local_spec, tasks, make_policy("rl:1", root=tmp_path), seed=5)
    b = simulate(local_spec, tasks, make_policy("rl:1", root=tmp_path), seed=5)
    assert (a.records["status"] == "succeeded").all()
    assert a.records["node"].tolist() == b.records["node"].tolist()


def test_sampling_variant_is_reproducible_per_seed_and_feasible(tmp_path, local_spec) -> None:
    publish(tmp_path, seed=2)
    tasks = generate(load_workload(REPO_ROOT / "configs/workloads/high_load.yaml"), seed=4, duration_s=20)
    runs = [simulate(local_spec, tasks, make_policy("rl-sample:latest", root=tmp_path), seed=s).records
            for s in (1, 1, 2)]
    assert runs[0]["node"].tolist() == runs[1]["node"].tolist()
    assert runs[0]["node"].tolist() != runs[2]["node"].tolist()
    assert all((r["status"] == "succeeded").all() for r in runs)
    state = ClusterState.from_spec(local_spec)
    d = make_policy("rl-sample:latest", root=tmp_path).select(TASKS[1], state)
    from scheduler.features import layout

    chosen = NODE_CLASSES[layout(state).cls[d.node]]
    assert "drew it" in d.explanation and d.confidence == pytest.approx(d.probabilities[chosen])


def test_picks_the_most_probable_feasible_class(tmp_path, local_spec) -> None:
    net = publish(tmp_path, seed=1)
    policy = make_policy("rl:latest", root=tmp_path)
    state = ClusterState.from_spec(local_spec)
    t = TASKS[1]
    p, (feasible, fits, shares) = policy.probabilities(t, state)
    from scheduler.actions import action_mask
    from scheduler.features import feature_vector

    x = torch.from_numpy(feature_vector(t, state, feasible, fits))[None]
    m = torch.from_numpy(action_mask(t, state, feasible))[None]
    assert int(p.argmax()) == int(net.masked_logits(x, m).argmax())
    check_invariants(state)


def test_schema_mismatch_is_refused(tmp_path) -> None:
    publish(tmp_path, feature_schema="0")
    with pytest.raises(model_registry.SchemaMismatchError, match="retrain"):
        make_policy("rl:latest", root=tmp_path)


def test_architecture_mismatch_is_refused(tmp_path) -> None:
    publish(tmp_path, spec=NetSpec(N_FEATURES, N_ACTIONS, (8,)))
    folder = model_registry.resolve("rl", "latest", tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    meta["architecture"]["in_dim"] = N_FEATURES + 1
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(model_registry.SchemaMismatchError, match="features"):
        make_policy("rl:latest", root=tmp_path)


def test_a_node_network_scores_rows_inside_the_range_it_trained_on(tmp_path, local_spec) -> None:
    """Past its training range a network extrapolates; held at the range's edge it scores as there."""
    from scheduler.candidates import candidates
    from scheduler.features import N_CANDIDATE_FEATURES, candidate_features
    from scheduler.policy_net import ServedNet

    spec = NetSpec(N_CANDIDATE_FEATURES, 24, (16,), level="node")
    lo, hi = np.full(N_CANDIDATE_FEATURES, -0.5), np.full(N_CANDIDATE_FEATURES, 0.5)
    net = publish(tmp_path, spec, feature_range={"lo": lo.tolist(), "hi": hi.tolist()})
    policy = make_policy("rl:1", root=tmp_path)
    state = ClusterState.from_spec(local_spec)
    task = TASKS[0]
    d = policy.select(task, state)
    nodes, shares, fits = candidates(policy._feasible, task, state, policy.max_candidates, policy.prefilter)
    X = candidate_features(task, state, nodes, shares, fits, policy.objective)
    assert (X > hi).any()  # some columns are past the range here
    served = ServedNet(net)
    np.testing.assert_allclose(d.scores[nodes], served(np.clip(X, lo, hi).astype(np.float32)), rtol=1e-5)
    assert not np.allclose(d.scores[nodes], served(X))
    assert "outside the range it trained on in " in d.explanation and "scored at its edge" in d.explanation
    publish(tmp_path, spec, feature_range={"lo": (lo * 1e9).tolist(), "hi": (hi * 1e9).tolist()})
    wide = make_policy("rl:2", root=tmp_path).select(task, state)
    assert "outside" not in wide.explanation  # inside its range: scored as computed
    np.testing.assert_allclose(wide.scores[nodes], served(X), rtol=1e-5)
    for bad in ({"lo": lo.tolist(), "hi": lo[:-1].tolist()}, {"lo": hi.tolist(), "hi": lo.tolist()}):
        v = model_registry.versions("rl", tmp_path)[-1] + 1
        publish(tmp_path, spec, feature_range=bad)
        with pytest.raises(model_registry.SchemaMismatchError, match="feature_range"):
            make_policy(f"rl:{v}", root=tmp_path)


def test_missing_model_says_how_to_train(tmp_path) -> None:
    with pytest.raises(model_registry.ModelNotFoundError, match="orchestrator train rl"):
        make_policy("rl:latest", root=tmp_path)


def test_serving_imports_neither_rllib_nor_ray(tmp_path) -> None:
    publish(tmp_path)
    code = ("import sys; from scheduler.policy import make_policy; "
            f"make_policy('rl:latest', root={str(tmp_path)!r}); "
            "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_shipped_pretrained_artifact_loads_if_present(local_spec) -> None:
    """The artifact in artifacts/policies/rl (what `make demo` uses) loads and places tasks."""
    shipped = model_registry.SHIPPED_MODELS  # not $ORCH_REGISTRY: the session fixture points that elsewhere
    try:
        has = bool(model_registry.versions("rl", shipped))
    except model_registry.RegistryError:
        has = False
    if not has:
        pytest.skip("no shipped rl artifact")
    policy = make_policy("rl:latest", root=shipped)
    meta = policy.artifact.meta
    assert meta["command"] and "seed" in meta
    state = ClusterState.from_spec(local_spec)
    assert all(policy.select(t, state).placed for t in TASKS)


@pytest.mark.parametrize("activation", ["tanh", "relu", "silu"])
@pytest.mark.parametrize("level", ["class", "node"])
def test_numpy_serving_computes_the_torch_logits(activation, level) -> None:
    """Decisions run the weights in numpy (no torch per decision): the same logits as the trained net."""
    from scheduler.policy_net import ServedNet

    torch.manual_seed(3)
    net = PolicyNet(NetSpec(11, 5, (32, 16), activation, level))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 1.0)  # large pre-activations too: silu's tails, relu's kink
    x = torch.randn(7, 5, 11) * 3
    served = ServedNet(net)
    np.testing.assert_allclose(served(x.numpy()), net(x).detach().numpy(), rtol=1e-4, atol=1e-4)
    if level == "class":
        mask = (torch.rand(7, 5, 5) > 0.4).float()
        mask[..., 0] = 1.0
        mask[0, 0] = 0.0  # a row where nothing is allowed: no probability anywhere
        a, p = served.act(x.numpy(), mask.numpy())
        ta, tp = net.act(x, mask)
        assert np.array_equal(a[mask.numpy().any(-1)], ta.numpy()[mask.numpy().any(-1)])
        tp = tp.clone()
        tp[mask == 0] = 0.0  # what the class-level policy did with torch's (uniform on an empty row)
        np.testing.assert_allclose(p, tp.numpy(), atol=1e-5)
        assert (p[mask.numpy() == 0] == 0).all() and not p[0, 0].any()


def test_shipped_node_policy_decides_as_its_torch_network(local_spec) -> None:
    """Over a real run of the shipped node-level rl, every decision the numpy forward pass took is the
    argmax of the torch network it was exported from, on the same candidate rows."""
    shipped = model_registry.SHIPPED_MODELS
    try:
        policy = make_policy("rl:latest", root=shipped)
    except model_registry.RegistryError:
        pytest.skip("no shipped rl artifact")
    if policy.level != "node":
        pytest.skip("the shipped rl is class-level")
    from scheduler.candidates import candidates
    from scheduler.features import candidate_features
    from scheduler.policy_net import load_policy

    torch_net = load_policy(policy.artifact.meta["architecture"], str(policy.artifact.file("policy.pt")))
    assert policy.bounds is not None, "the shipped rl has no training range"
    inner, checked = policy.select, []

    def select(task, state):
        d = inner(task, state)
        nodes, shares, fits = candidates(policy._feasible, task, state, policy.max_candidates, policy.prefilter)
        if len(nodes) > 1:
            X = candidate_features(task, state, nodes, shares, fits, policy.objective)
            X = np.clip(X, *policy.bounds)  # its training range (rl_env.feature_range)
            # padded as training and torch serving did
            pad = np.zeros((torch_net.spec.n_actions - len(X), X.shape[1]), X.dtype)
            with torch.inference_mode():
                j = int(torch_net(torch.from_numpy(np.concatenate([X, pad]))[None])[0, :len(X)].argmax())
            checked.append((int(nodes[j]), shares[j]) == (d.node, d.share))
        return d

    policy.select = select
    wl = load_workload(REPO_ROOT / "configs" / "workloads" / "gpu_heavy_high.yaml")
    simulate(local_spec, generate(wl, seed=7)[:600], policy, seed=7)
    assert len(checked) > 300 and all(checked)
