"""The node-level RandomForest policy: loads from the registry, scores every candidate node, explains."""
from __future__ import annotations

import numpy as np
import pytest

from cluster.state import CPU_SHARE, ClusterState, fits_now_mask, share_for
from cluster.variants import scale_cluster
from scheduler import model_registry as reg
from scheduler.explain import feature_text
from scheduler.features import CANDIDATE_FEATURE_NAMES, FEATURE_NAMES, candidate_features
from scheduler.candidates import prefilter
from scheduler.policies.rf import FOREST_FILE, RandomForestPolicy
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
    """12 trees of the one-step oracle's regret (fast; the rollout teacher is tested in test_train_rf)."""
    return DAggerForest(n_estimators=12, rounds=1, teacher="oracle", random_state=0,
                        progress=False).fit(local_spec, _episodes())


@pytest.fixture(scope="module")
def registry(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    reg.save("rf", {FOREST_FILE: trained.forest_.save}, {"seed": 0}, root=root)
    return root


def test_missing_model_error_names_the_command(tmp_path):
    with pytest.raises(reg.ModelNotFoundError, match=r"no rf model in .*: run orchestrator train rf"):
        RandomForestPolicy(root=tmp_path)


def test_schema_mismatch_refused_at_load(trained, tmp_path):
    reg.save("rf", {FOREST_FILE: trained.forest_.save}, {"feature_schema": "1"}, root=tmp_path)
    with pytest.raises(reg.SchemaMismatchError, match="trained on feature schema 1"):
        RandomForestPolicy(root=tmp_path)
    meta = reg.load_meta("rf", root=tmp_path)
    assert meta["feature_schema"] == "1"
    reg.save("rf", {FOREST_FILE: trained.forest_.save}, {}, root=tmp_path)  # the kind's own schema by default
    assert reg.load("rf", root=tmp_path).meta["feature_names"] == list(CANDIDATE_FEATURE_NAMES)


def test_a_class_level_forest_is_refused(tmp_path):
    """A forest over the class-level vector (the rf before node-level scoring) cannot be served."""
    from sklearn.ensemble import RandomForestClassifier

    from scheduler.forest import FlatForest

    X = np.random.default_rng(0).random((40, len(FEATURE_NAMES)), dtype=np.float32)
    model = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, np.arange(40) % 3)
    with pytest.raises(reg.SchemaMismatchError, match="retrain with orchestrator train rf"):
        RandomForestPolicy(forest=FlatForest.from_sklearn(model))


def test_loads_by_name_and_version(registry, monkeypatch):
    p = RandomForestPolicy(version="latest", root=registry)
    assert p.name == "rf:1" and p.meta["kind"] == "rf"
    monkeypatch.setenv(reg.REGISTRY_ENV, str(registry))
    q = make_policy("rf:1")
    assert q.name == "rf:1" and isinstance(q, RandomForestPolicy)
    assert make_policy("rf").forest.n_trees == 12


def test_picks_the_lowest_predicted_regret_among_every_candidate(registry, local_spec):
    """Node-level: every statically feasible node is scored, the argmin wins, confidence is the
    share of trees agreeing, and the explanation names the chosen node and what moved it."""
    policy = RandomForestPolicy(root=registry)
    tasks = _episodes(("high_load",), seeds=(77,), duration_s=30)[0].tasks
    sim = OnlineSimulator(local_spec, tasks, seed=77)
    state, cache = sim.state, FeasibilityCache()
    explained = multi = 0
    chosen_nodes = set()
    while (task := sim.next_task()) is not None:
        d = policy.select(task, state)
        assert d.placed, d.explanation
        assert share_for(state, d.node, task) == d.share  # the node can host it, with that share
        nodes, shares, groups = cache.entry(task, state)
        assert np.array_equal(np.flatnonzero(~np.isnan(d.scores)), np.sort(nodes))  # every candidate scored
        assert d.scores[d.node] == np.nanmax(d.scores)
        assert 0.0 <= d.confidence <= 1.0 and sum(d.probabilities.values()) == pytest.approx(1.0)
        assert d.confidence == d.probabilities.get(state.spec.nodes[d.node].name, 0.0)  # tree votes per node
        assert d.explanation.startswith(state.spec.nodes[d.node].name)
        if len(nodes) > 1:
            multi += 1
            X = candidate_features(task, state, nodes, shares, fits_now_mask(state, task, nodes, groups))
            pred = policy.forest.predict_proba(X)[:, 0]
            assert np.allclose(-pred, d.scores[nodes]) and nodes[int(np.argmin(pred))] == d.node
            explained += ("lowered it" in d.explanation or "raised it" in d.explanation)
        chosen_nodes.add(d.node)
        sim.place(task, d)
    assert multi > 50 and explained == multi
    assert len(chosen_nodes) >= 3  # not one class-level rule: it spreads over nodes
    assert sim.finish().summary["rejected"] == 0


def test_infeasible_task_is_rejected_with_reason(registry, local_spec):
    state = ClusterState.from_spec(local_spec)
    task = make_task({"id": "huge", "gpu_count": 64})
    d = RandomForestPolicy(root=registry).select(task, state)
    assert not d.placed and "no node can host" in d.explanation


def test_runs_on_a_cluster_it_never_saw(trained, local_spec):
    """Trained on 6 nodes, it scores the candidates of a 24-node cluster (no retraining), and with
    max_candidates it scores only the prefilter's best, where the task fits now first."""
    big = scale_cluster(local_spec, 4)
    tasks = _episodes(("high_load",), seeds=(8,), duration_s=20)[0].tasks
    res = simulate(big, tasks, trained.policy(explain=False), seed=8)
    assert res.summary["rejected"] == 0 and res.records["node"].nunique() > 6

    state = ClusterState.from_spec(big)
    cpu_task = make_task({"id": "cpu", "cpu_milli": 500, "mem_mib": 512})
    pol = RandomForestPolicy(forest=trained.forest_, max_candidates=5)
    d = pol.select(cpu_task, state)
    assert d.placed and np.count_nonzero(~np.isnan(d.scores)) == 5
    nodes = np.arange(len(big.nodes))
    fits = np.ones(len(nodes), dtype=bool)
    fits[:3] = False
    kept, _, kfits = prefilter(state, nodes, [CPU_SHARE] * len(nodes), fits, 4, "spread")
    assert kept.tolist() == [3, 4, 5, 6] and kfits.all()


def test_simulates_end_to_end_and_is_deterministic(registry, local_spec):
    tasks = _episodes(("mixed",), seeds=(5,), duration_s=30)[0].tasks
    a = simulate(local_spec, tasks, RandomForestPolicy(root=registry, explain=False), seed=5)
    b = simulate(local_spec, tasks, RandomForestPolicy(root=registry), seed=5)
    assert a.summary["rejected"] == 0
    assert a.records["node"].tolist() == b.records["node"].tolist()  # explanations change nothing


def test_candidate_feature_text_undoes_the_scaling(local_spec):
    state = ClusterState.from_spec(local_spec)
    task = make_task({"id": "t", "priority": 9, "slo_ms": 300, "cpu_milli": 500, "cost_sensitivity": 3})
    nodes = np.array([0, 2])
    X = candidate_features(task, state, nodes, [CPU_SHARE, CPU_SHARE], np.array([True, True]))
    text = {n: feature_text(n, v) for n, v in zip(CANDIDATE_FEATURE_NAMES, X[0])}
    assert text["priority"] == "priority 9" and text["latency_requirement"] == "SLO 300 ms"
    assert text["fits_now"] == "it fits there now" and text["node_queue"] == "node queue 0"
    assert text["wait_slo"] == "expected wait 0x SLO" and text["tier_edge"] == "on the edge tier"
    assert text["network_slo"] == "expected network 0.333x SLO"  # edge: 100 ms mean against 300 ms
    assert text["speed"] == "speed 0.6x" and text["candidates"] == "2 candidate nodes"


def test_the_explanation_names_columns_of_the_chosen_row_past_the_range_the_forest_was_fit_on(trained, local_spec,
                                                                                            tmp_path):
    """Trees score a row past the range they were fit on as at its edge: right or wrong, the user is told."""
    rng = trained.feature_range()
    assert rng["rows"] == len(trained.data_.y) and (np.array(rng["lo"]) <= np.array(rng["hi"])).all()
    task = make_task({"id": "t", "cpu_milli": 2000, "mem_mib": 2048, "slo_ms": 60_000})
    state = ClusterState.from_spec(local_spec)
    wide = {**rng, "lo": [v - 1e9 for v in rng["lo"]], "hi": [v + 1e9 for v in rng["hi"]]}
    inside = RandomForestPolicy(forest=trained.forest_, meta={"feature_range": wide}).select(task, state)
    assert "outside the range" not in inside.explanation
    narrow = {**rng, "hi": [lo + 1e-9 for lo in rng["lo"]]}  # every row above it somewhere
    past = RandomForestPolicy(forest=trained.forest_, meta={"feature_range": narrow}).select(task, state)
    assert past.node == inside.node and past.explanation.startswith(inside.explanation)  # the same choice
    assert "; outside the range it trained on in " in past.explanation and "scored at its edge" in past.explanation
    none = RandomForestPolicy(forest=trained.forest_, meta={}).select(task, state)
    assert none.explanation == inside.explanation  # a forest without a kept range says nothing of it
    with pytest.raises(reg.SchemaMismatchError, match="feature_range"):
        RandomForestPolicy(forest=trained.forest_, meta={"feature_range": {**rng, "hi": rng["lo"][:-1]}})
