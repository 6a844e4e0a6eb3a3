"""The RandomForest policy: loads from the registry, masks, explains, places feasibly."""
from __future__ import annotations

import numpy as np
import pytest

from cluster.state import node_masks, share_for
from cluster.topology import NODE_CLASSES
from scheduler import model_registry as reg
from scheduler.actions import action_mask
from scheduler.explain import contributions_text, feature_text
from scheduler.features import FEATURE_NAMES, feature_vector, layout
from scheduler.policies.rf import FOREST_FILE, RandomForestPolicy, cached_node_masks
from scheduler.policy import FeasibilityCache, make_policy
from scheduler.task import make_task
from simulations.engine import OnlineSimulator, simulate
from rl_env.train_rf import DAggerForest, Episode
from simulations.workloads import WORKLOADS_DIR, generate, load_workload


def _episodes(names=("mixed", "high_load"), seeds=(1,), duration_s=40.0):
    out = []
    for n in names:
        wl = load_workload(WORKLOADS_DIR / f"{n}.yaml")
        out += [Episode(n, generate(wl, seed=s, duration_s=duration_s), s) for s in seeds]
    return out


@pytest.fixture(scope="module")
def trained(local_spec):
    return DAggerForest(n_estimators=12, rounds=1, random_state=0, progress=False).fit(local_spec, _episodes())


@pytest.fixture(scope="module")
def registry(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    reg.save("rf", {FOREST_FILE: trained.forest_.save}, {"seed": 0}, root=root)
    return root


def test_missing_model_error_names_the_command(tmp_path):
    with pytest.raises(reg.ModelNotFoundError, match=r"no rf model in .*: run orchestrator train rf"):
        RandomForestPolicy(root=tmp_path)


def test_schema_mismatch_refused_at_load(trained, tmp_path):
    reg.save("rf", {FOREST_FILE: trained.forest_.save}, {"feature_schema": "0"}, root=tmp_path)
    with pytest.raises(reg.SchemaMismatchError, match="trained on feature schema 0"):
        RandomForestPolicy(root=tmp_path)


def test_loads_by_name_and_version(registry, monkeypatch):
    p = RandomForestPolicy(version="latest", root=registry)
    assert p.name == "rf:1" and p.meta["kind"] == "rf"
    monkeypatch.setenv(reg.REGISTRY_ENV, str(registry))
    q = make_policy("rf:1")
    assert q.name == "rf:1" and isinstance(q, RandomForestPolicy)
    assert make_policy("rf").forest.n_trees == 12


def test_decisions_are_feasible_confident_and_explained(registry, local_spec):
    policy = RandomForestPolicy(root=registry)
    tasks = _episodes(("high_load",), seeds=(77,), duration_s=30)[0].tasks
    sim = OnlineSimulator(local_spec, tasks, seed=77)
    state = sim.state
    n = 0
    while (task := sim.next_task()) is not None:
        d = policy.select(task, state)
        assert d.placed, d.explanation
        assert share_for(state, d.node, task) == d.share  # the node can host it, with that share
        chosen = NODE_CLASSES[int(layout(state).cls[d.node])]
        assert d.confidence == pytest.approx(d.probabilities[chosen])
        assert sum(d.probabilities.values()) == pytest.approx(1.0)
        # the choice is the most probable class among those that can host the task
        mask = action_mask(task, state) > 0
        probs = np.array([d.probabilities[c] for c in NODE_CLASSES])
        assert chosen == NODE_CLASSES[int(np.argmax(np.where(mask, probs, -1)))]
        assert d.explanation.startswith(state.spec.nodes[d.node].name)
        assert f"for {chosen}" in d.explanation
        n += "pushed" in d.explanation
        sim.place(task, d)
    assert n > 0
    assert sim.finish().summary["rejected"] == 0


def test_infeasible_task_is_rejected_with_reason(registry, local_spec):
    from cluster.state import ClusterState

    state = ClusterState.from_spec(local_spec)
    task = make_task({"id": "huge", "gpu_count": 64})
    d = RandomForestPolicy(root=registry).select(task, state)
    assert not d.placed and "no node can host" in d.explanation


def test_masked_class_falls_back_and_says_so(trained, local_spec):
    from cluster.state import ClusterState

    class Stubborn(RandomForestPolicy):
        def _predict(self, x, path=False):  # always prefers the edge, which cannot host a GPU task
            probs = np.array([0.9, 0.0, 0.06, 0.04, 0.0])
            return probs, self.forest.predict_one(x, path)[1]

    state = ClusterState.from_spec(local_spec)
    task = make_task({"id": "img", "gpu_milli": 250, "cpu_milli": 2000, "mem_mib": 8192})
    d = Stubborn(forest=trained.forest_).select(task, state)
    assert d.placed and local_spec.nodes[d.node].pool == "gpu-mig"
    assert "preferred edge 0.90 cannot host it" in d.explanation


def test_simulates_end_to_end_and_is_deterministic(registry, local_spec):
    tasks = _episodes(("mixed",), seeds=(5,), duration_s=30)[0].tasks
    a = simulate(local_spec, tasks, RandomForestPolicy(root=registry, explain=False), seed=5)
    b = simulate(local_spec, tasks, RandomForestPolicy(root=registry), seed=5)
    assert a.summary["rejected"] == 0
    assert a.records["node"].tolist() == b.records["node"].tolist()  # explanations change nothing


def test_cached_masks_equal_the_reference(local_spec):
    tasks = _episodes(("high_load",), seeds=(3,), duration_s=20)[0].tasks
    sim = OnlineSimulator(local_spec, tasks, seed=3)
    cache, oracle = FeasibilityCache(), make_policy("oracle")
    while (task := sim.next_task()) is not None:
        ref = node_masks(sim.state, task)
        got = cached_node_masks(task, sim.state, cache)
        assert np.array_equal(ref[0], got[0]) and np.array_equal(ref[1], got[1]) and ref[2] == got[2]
        sim.place(task, oracle.select(task, sim.state))


def test_feature_text_undoes_the_scaling(local_spec):
    from cluster.state import ClusterState

    task = make_task({"id": "t", "priority": 9, "slo_ms": 300, "cpu_milli": 500, "cost_sensitivity": 3,
                      "gpu_milli": 250})
    x = feature_vector(task, ClusterState.from_spec(local_spec))
    text = {n: feature_text(n, v) for n, v in zip(FEATURE_NAMES, x)}
    assert text["priority"] == "priority 9"
    assert text["latency_requirement"] == "SLO 300 ms"
    assert text["cost_sensitivity"] == "cost sensitivity 3"
    assert text["cpu_request"] == "CPU 0.5 cores"
    assert text["need_fraction"] == "needs a GPU fraction" and text["need_mig"] == "does not need a MIG slice"
    assert text["edge_feasible"] == "edge cannot host it" and text["gpu-mig_fits_now"] == "gpu-mig has room now"
    assert text["cloud_queue"] == "cloud queue 0"
    assert feature_text("mystery", 0.25) == "mystery=0.25"
    assert contributions_text([("priority", 0.9, 0.21), ("cloud_load", 0.5, -0.1)], "edge") == \
        "priority 9 pushed towards edge (+0.21); cloud tier load 50% pushed away from edge (-0.10)"
