"""The flat forest: probabilities equal sklearn's, contributions add up, files round-trip."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

from cluster.state import node_masks
from scheduler import forest as forest_mod
from scheduler.features import N_FEATURES, feature_vector, layout
from scheduler.forest import FlatForest, top_contributions
from scheduler.policy import make_policy
from simulations.engine import OnlineSimulator
from simulations.workloads import WORKLOADS_DIR, generate, load_workload


def _synthetic(n: int = 3000, f: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f)).astype(np.float32)
    X[:, 3] = rng.integers(0, 3, n)  # a discrete column: many thresholds exactly between values
    score = X[:, 0] + 0.5 * X[:, 1] * X[:, 2] + X[:, 3] + 0.3 * rng.normal(size=n)
    y = np.digitize(score, [-1.0, 0.5, 2.0]) * 2 + 1  # labels 1, 3, 5, 7: not 0..k
    return X, y


@pytest.fixture(scope="module")
def synthetic_forest():
    X, y = _synthetic()
    model = RandomForestClassifier(n_estimators=25, random_state=0, n_jobs=1).fit(X, y)
    return model, FlatForest.from_sklearn(model), X


@pytest.fixture(scope="module")
def real_rows(local_spec):
    """Feature rows of real decisions: the oracle placing a short high-load window."""
    wl = load_workload(WORKLOADS_DIR / "high_load.yaml")
    tasks = generate(wl, seed=5, duration_s=60)
    sim = OnlineSimulator(local_spec, tasks, seed=5)
    oracle = make_policy("oracle")
    rows, labels = [], []
    while (task := sim.next_task()) is not None:
        d = oracle.select(task, sim.state)
        feasible, fits, _ = node_masks(sim.state, task)
        rows.append(feature_vector(task, sim.state, feasible, fits))
        labels.append(-1 if not d.placed else int(layout(sim.state).cls[d.node]))  # the oracle's class
        sim.place(task, d)
    return np.array(rows), np.array(labels)


def test_probabilities_equal_sklearn_on_random_rows(synthetic_forest):
    model, flat, X = synthetic_forest
    rng = np.random.default_rng(1)
    Z = np.vstack([X[:200], rng.normal(scale=3.0, size=(300, X.shape[1])).astype(np.float32)])
    expected = model.predict_proba(Z)
    got = flat.predict_proba(Z)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)  # bit-identical: same values, same summation order
    one = np.array([flat.predict_proba_one(z) for z in Z[:100]])
    assert np.array_equal(one, expected[:100])
    assert np.array_equal(flat.predict_proba(Z[0]), expected[0])  # 1-D input is one row
    assert list(flat.classes) == [1, 3, 5, 7]
    assert flat.max_depth > forest_mod.COMPACT_FROM + forest_mod.COMPACT_EVERY  # compaction exercised


def test_probabilities_equal_sklearn_on_real_feature_rows(real_rows):
    X, y = real_rows
    assert X.shape[1] == N_FEATURES and len(X) > 200
    model = RandomForestClassifier(n_estimators=30, min_samples_leaf=2, random_state=3).fit(X, y)
    flat = FlatForest.from_sklearn(model)
    assert np.array_equal(flat.predict_proba(X), model.predict_proba(X))
    assert np.array_equal(np.array([flat.predict_proba_one(x) for x in X[:50]]), model.predict_proba(X[:50]))
    # rows exactly on thresholds: float32 inputs compared as sklearn compares them
    t = flat.threshold[np.isfinite(flat.threshold)]
    edge = np.repeat(X[:1], 20, axis=0)
    edge[:, flat.feature[np.isfinite(flat.threshold)][:20]] = t[:20].astype(np.float32)
    assert np.array_equal(flat.predict_proba(edge), model.predict_proba(edge))


def test_extra_trees_and_bounded_depth():
    X, y = _synthetic(800, 6, seed=2)
    for model in (ExtraTreesClassifier(n_estimators=10, random_state=0).fit(X, y),
                  RandomForestClassifier(n_estimators=10, max_depth=3, random_state=0).fit(X, y)):
        flat = FlatForest.from_sklearn(model)
        assert np.array_equal(flat.predict_proba(X[:100]), model.predict_proba(X[:100]))


def test_contributions_sum_to_probability_minus_bias(synthetic_forest):
    model, flat, X = synthetic_forest
    Z = X[:40]
    proba = model.predict_proba(Z)
    bias, contrib = flat.contributions(Z)
    assert contrib.shape == (40, X.shape[1], 4)
    assert np.allclose(bias + contrib.sum(axis=1), proba, atol=1e-12)
    assert np.allclose(bias[0], np.mean([t.tree_.value[0, 0] for t in model.estimators_], axis=0))
    for i in range(5):
        for c in range(4):
            b, one = flat.explain_one(Z[i], c)
            p, path = flat.predict_one(Z[i], path=True)
            b2, from_path = flat.explain_one(None, c, path)
            assert np.array_equal(p, proba[i]) and np.array_equal(path[-1], flat.predict_one(Z[i])[1])
            assert np.isclose(b + one.sum(), proba[i, c], atol=1e-12)
            assert np.allclose(one, contrib[i, :, c], atol=1e-12) and np.array_equal(one, from_path)
            assert b == b2
    # the discrete column that drives the label carries weight
    top = top_contributions(np.abs(contrib[:, :, 0]).mean(axis=0), k=3)
    assert 3 in [i for i, _ in top] or 0 in [i for i, _ in top]


def test_paths_follow_the_traversal(synthetic_forest):
    _, flat, X = synthetic_forest
    path = flat.paths_one(X[0])
    assert np.array_equal(path[0], flat.roots)
    assert np.array_equal(path[-1], flat.apply(X[:1])[0])
    assert (flat.depth[path[-1]] <= len(path) - 1).all()


def test_top_contributions_orders_by_magnitude():
    c = np.array([0.1, -0.5, 0.0, 0.3])
    assert top_contributions(c, k=3) == [(1, -0.5), (3, 0.3), (0, 0.1)]
    assert top_contributions(np.zeros(3)) == []


def test_save_load_round_trip_without_pickle(synthetic_forest, tmp_path):
    model, flat, X = synthetic_forest
    path = tmp_path / "forest.npz"
    flat.save(path)
    back = FlatForest.load(path)
    assert np.array_equal(back.predict_proba(X[:50]), model.predict_proba(X[:50]))
    assert back.n_trees == 25 and back.n_features == X.shape[1] and list(back.classes) == [1, 3, 5, 7]
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_corrupt_or_foreign_files_fail_clearly(synthetic_forest, tmp_path):
    _, flat, _ = synthetic_forest
    bad = dataclasses.replace(flat, feature=flat.feature + 100)
    bad.save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="feature indices out of range"):
        FlatForest.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "old.npz", format_version=np.int64(99))
    with pytest.raises(ValueError, match="flat forest format 99"):
        FlatForest.load(tmp_path / "old.npz")


def test_input_checks(synthetic_forest):
    _, flat, X = synthetic_forest
    with pytest.raises(ValueError, match="expected rows of 12 features"):
        flat.predict_proba(X[:3, :5])
    with pytest.raises(ValueError, match="expected 12 features"):
        flat.predict_proba_one(X[0, :5])
    with pytest.raises(ValueError, match="not fitted"):
        FlatForest.from_sklearn(RandomForestClassifier())


@pytest.fixture(scope="module")
def regression_forest():
    """A regressor like the node-level rf's (bounded depth, half the features per split)."""
    from sklearn.ensemble import RandomForestRegressor

    X, y = _synthetic()
    target = np.log1p(np.abs(X[:, 0] * X[:, 1]) + y)
    model = RandomForestRegressor(n_estimators=20, max_depth=9, max_features=0.5, random_state=0,
                                  n_jobs=1).fit(X, target)
    return model, FlatForest.from_sklearn(model), X


def test_regressor_predictions_equal_sklearn(regression_forest):
    """A decision's few rows (predict_rows) and a batch both give sklearn's predict exactly, and the
    per-tree values are each tree's own prediction."""
    model, flat, X = regression_forest
    assert flat.is_regressor and flat.value.shape[1] == 1 and len(flat.classes) == 0
    from scheduler.forest import _jit_rows

    assert _jit_rows() is not None  # numba is a dependency: the request path is the compiled walk
    for k in (1, 2, 6, 40):
        rows = X[k: 2 * k]
        pred, per_tree = flat.predict_rows(rows)
        assert np.array_equal(pred, model.predict(rows)), k
        assert np.array_equal(per_tree, np.stack([t.predict(rows) for t in model.estimators_]))
        walked = flat.walk_rows(rows)  # the numpy walk (with paths, or without numba): the same values
        assert np.array_equal(walked[0], pred) and np.array_equal(walked[1], per_tree)
        # per row, the trees that rank it lowest (ties: the first row), counted in the compiled pass
        ranked, first = flat.rank_rows(rows)
        assert np.array_equal(ranked, pred)
        assert first.tolist() == np.bincount(per_tree.argmin(axis=1), minlength=k).tolist()
    assert np.array_equal(flat.predict_proba(X[:500])[:, 0], model.predict(X[:500]))
    # one row alone too (a single column is where numpy would sum pairwise, not tree after tree)
    singles = [X[i: i + 1] for i in range(300)]
    assert all(np.array_equal(flat.predict_rows(r)[0], model.predict(r)) for r in singles)
    assert all(np.array_equal(flat.walk_rows(r)[0], model.predict(r)) for r in singles)


def test_rank_rows_counts_each_trees_lowest_row_ties_to_the_first(regression_forest, monkeypatch):
    """rank_rows: per row, the trees whose lowest value is that row's; a row repeated ties, and
    the first copy takes the vote (as numpy's argmin); the numpy walk (no numba) counts the same."""
    import scheduler.forest as forest_mod

    _, flat, X = regression_forest
    rows = np.vstack([X[3:4], X[3:4], X[10:14], X[3:4]])
    pred, first = flat.rank_rows(rows)
    assert first.sum() == flat.n_trees and first[1] == first[-1] == 0
    assert first[0] == sum(int(np.argmin(t)) == 0 for t in flat.predict_rows(rows)[1])
    empty = flat.rank_rows(X[:0])  # no candidates: nothing to count (nor to write out of bounds)
    assert empty[0].shape == empty[1].shape == (0,) and flat.predict_rows(X[:0])[1].shape == (flat.n_trees, 0)
    monkeypatch.setattr(forest_mod, "_jit_rows", lambda: None)
    walked, counted = flat.rank_rows(rows)
    assert [a.shape for a in flat.rank_rows(X[:0])] == [(0,), (0,)]  # the numpy walk takes no rows too
    assert np.array_equal(walked, pred) and counted.tolist() == first.tolist()


def test_regressor_contributions_round_trip_and_validation(regression_forest, tmp_path):
    model, flat, X = regression_forest
    bias, contrib = flat.explain_one(X[7], 0)
    assert bias + contrib.sum() == pytest.approx(model.predict(X[7:8])[0], abs=1e-9)
    flat.save(tmp_path / "r.npz")
    back = FlatForest.load(tmp_path / "r.npz")
    assert back.is_regressor and np.array_equal(back.predict_rows(X[:9])[0], model.predict(X[:9]))


def test_paths_of_a_decisions_rows_are_each_rows_own(regression_forest):
    """walk_rows(path=True) records every row's path: a row's columns equal its single-row path
    (so the explanation needs no second descent)."""
    _, flat, X = regression_forest
    rows = X[20:26]
    pred, _, paths = flat.walk_rows(rows, path=True)
    assert np.array_equal(pred, flat.predict_rows(rows)[0])
    for j in range(len(rows)):
        own = flat.paths_one(rows[j])
        mine = paths[:, j::len(rows)]
        assert np.array_equal(mine[:len(own)], own) and (mine[len(own):] == own[-1]).all()
        assert flat.explain_one(None, 0, mine)[1] == pytest.approx(flat.explain_one(rows[j], 0)[1])
