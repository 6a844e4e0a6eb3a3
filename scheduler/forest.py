"""Fast inference and explanations for a fitted scikit-learn random forest (classifier or regressor).

sklearn's own single-row ``predict_proba`` costs milliseconds (input validation,
joblib dispatch, one Cython call per tree), far too slow on a request path. Here
the trees are flattened into a few numpy arrays and traversed level by level,
all trees (and a batch of rows) at once, with no per-tree Python loop:

* nodes are renumbered breadth-first per tree so that a node's right child
  directly follows its left one: ``next = left[node] + (x[feature[node]] > threshold[node])``;
* leaves point to themselves with threshold +inf, so a traversal can simply run
  to the forest's depth (single rows stop as soon as every tree sits at a leaf);
* probabilities are the per-tree leaf values added tree by tree and divided by
  the number of trees, in sklearn's order, so they equal ``predict_proba``
  exactly (float64, same summation order).

The same arrays give Saabas-style tree-path contributions: along each tree's
path, the change in a class's probability at each split is credited to the split
feature; averaged over the trees, ``bias + contributions.sum() == probability``.

A regressor is held the same way with one value column (the leaf mean) and no
classes; :meth:`FlatForest.predict_rows` gives its predictions for a decision's
handful of rows, equal to sklearn's ``predict`` (the same tree-by-tree sum), by a
numba-compiled walk over the same arrays (a few microseconds, where the numpy walk
pays about 3 us of array calls per level).

No pickle is needed to serve: :meth:`FlatForest.save` writes a plain ``.npz``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

import numpy as np

from scheduler.jit import compiled

FORMAT_VERSION = 1
#: batch traversal drops finished (row, tree) pairs from this level on, every few levels
#: (measured: it halves a 33-deep forest's time but doubles a 10-deep one's if started earlier)
COMPACT_FROM = 10
COMPACT_EVERY = 4
#: single rows test "every tree at a leaf" from this level on (shallower checks rarely pay)
EARLY_EXIT_FROM = 7

_count_nonzero = np.count_nonzero
_add_reduce = np.add.reduce  # skips ndarray.sum's Python-level wrapper (a microsecond a call)


@dataclass(frozen=True, eq=False)
class FlatForest:
    """A random forest as flat arrays (nodes of all trees concatenated).

    Attributes:
        feature: split feature per node (0 at leaves).
        threshold: split threshold per node (+inf at leaves: never go right).
        left: left child per node (the node itself at leaves); right is ``left + 1``.
        value: class probabilities per node (the tree's normalised class fractions); for a
            regressor one column, the node's mean target.
        roots: index of each tree's root.
        depth: depth of each node (root 0).
        classes: the model's class labels (``classes_``), in column order; empty for a regressor.
        n_features: number of input features.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: np.ndarray
    classes: np.ndarray
    n_features: int

    # ------------------------------------------------------------------ building
    @classmethod
    def from_sklearn(cls, model) -> "FlatForest":
        """Flatten a fitted ``RandomForestClassifier``/``Regressor`` (or ExtraTrees), single output."""
        trees = getattr(model, "estimators_", None)
        if not trees:
            raise ValueError("model is not fitted (no estimators_)")
        if getattr(model, "n_outputs_", 1) != 1:
            raise ValueError("only single-output forests are supported")
        regressor = not hasattr(model, "classes_")
        n_classes = 1 if regressor else int(model.n_classes_)
        parts = []
        offset = 0
        for est in trees:
            t = est.tree_
            order, depth = _bfs_order(t.children_left, t.children_right)
            new_id = np.empty(t.node_count, dtype=np.intp)
            new_id[order] = np.arange(t.node_count)
            cl, cr = t.children_left[order], t.children_right[order]
            leaf = cl < 0
            ids = np.arange(t.node_count) + offset
            left = np.where(leaf, ids, new_id[np.maximum(cl, 0)] + offset)
            if not (leaf | (new_id[np.maximum(cr, 0)] == new_id[np.maximum(cl, 0)] + 1)).all():
                raise AssertionError("breadth-first renumbering failed to make siblings adjacent")
            feat = np.where(leaf, 0, t.feature[order]).astype(np.intp)
            thr = np.where(leaf, np.inf, t.threshold[order]).astype(np.float64)
            value = np.array(t.value[order, 0, :n_classes], dtype=np.float64)
            total = value.sum(axis=1)
            if not regressor and not np.allclose(total, 1.0):  # sklearn < 1.4 stored counts and normalised per call
                total[total == 0.0] = 1.0
                value /= total[:, None]
            parts.append((feat, thr, left.astype(np.intp), value, depth))
            offset += t.node_count
        sizes = np.array([len(p[0]) for p in parts])
        return cls(
            feature=np.concatenate([p[0] for p in parts]),
            threshold=np.concatenate([p[1] for p in parts]),
            left=np.concatenate([p[2] for p in parts]),
            value=np.ascontiguousarray(np.concatenate([p[3] for p in parts])),
            roots=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp),
            depth=np.concatenate([p[4] for p in parts]).astype(np.int32),
            classes=np.zeros(0) if regressor else np.asarray(model.classes_),
            n_features=int(model.n_features_in_),
        )

    # ------------------------------------------------------------------ properties
    @property
    def n_trees(self) -> int:
        return len(self.roots)

    @property
    def n_nodes(self) -> int:
        return len(self.feature)

    @property
    def is_regressor(self) -> bool:
        return len(self.classes) == 0

    @cached_property
    def max_depth(self) -> int:
        return int(self.depth.max())

    @cached_property
    def _is_leaf(self) -> np.ndarray:
        return self.left == np.arange(self.n_nodes)

    # ------------------------------------------------------------------ inference
    def apply(self, X: np.ndarray) -> np.ndarray:
        """Leaf index (into the flat arrays) per row and tree: shape (rows, trees).

        One level at a time over every (row, tree) pair, into preallocated
        buffers; from level :data:`COMPACT_FROM` on, every :data:`COMPACT_EVERY`
        levels the pairs already at a leaf are dropped (deep forests have a few
        long paths and many short ones).
        """
        X = self._check(X)
        rows, T = X.shape[0], self.n_trees
        m = rows * T
        out = None
        active = None
        cur = np.tile(self.roots, rows)  # row-major (row, tree)
        base = np.repeat(np.arange(rows, dtype=np.intp) * self.n_features, T)
        flat = X.astype(np.float64).ravel()  # float32 values, float64 storage: no cast per level
        feat, thr, left, is_leaf = self.feature, self.threshold, self.left, self._is_leaf
        b_f, b_x = np.empty(m, np.intp), np.empty(m)
        b_t, b_go, b_l = np.empty(m), np.empty(m, bool), np.empty(m, np.intp)
        take, add = np.take, np.add
        f, xv, tv, go, lv = b_f, b_x, b_t, b_go, b_l
        depth = self.max_depth
        for d in range(1, depth + 1):
            take(feat, cur, out=f, mode="wrap")  # indices are in range: "wrap" skips the checked copy
            add(f, base, out=f)
            take(flat, f, out=xv, mode="wrap")
            take(thr, cur, out=tv, mode="wrap")
            np.greater(xv, tv, out=go)
            take(left, cur, out=lv, mode="wrap")
            add(lv, go, out=cur)
            if d >= COMPACT_FROM and (d - COMPACT_FROM) % COMPACT_EVERY == 0 and d < depth:
                keep = ~is_leaf[cur]
                if out is None:
                    out, active = cur.copy(), np.flatnonzero(keep)
                else:
                    out[active] = cur
                    active = active[keep]
                cur, base = cur[keep], base[keep]
                k = len(cur)
                if k == 0:
                    break
                f, xv, tv, go, lv = b_f[:k], b_x[:k], b_t[:k], b_go[:k], b_l[:k]
        if out is None:
            out = cur
        else:
            out[active] = cur
        return out.reshape(rows, T)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, equal to sklearn's ``predict_proba``; a 1-D ``X`` is one row."""
        X = np.asarray(X)
        if X.ndim == 1:
            return self.predict_proba_one(X)
        leaves = self.apply(X)
        # (trees, rows, classes) summed over axis 0 adds tree after tree, as sklearn
        # accumulates: the sums are bit-identical, not merely close.
        return self.value.take(leaves.T, axis=0).sum(axis=0) / self.n_trees

    def predict_proba_one(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of one row (the request path: tens of microseconds)."""
        return self._proba_from_leaves(self._leaves_one(self._check_one(x)))

    def predict_one(self, x: np.ndarray, path: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, leaves)`` of one row; with ``path=True``, ``(probabilities, path)``.

        ``path`` is the node per level and tree, shape (levels, trees), the input
        of :meth:`explain_one`: recording it costs no extra descent.
        """
        x = self._check_one(x)
        if not path:
            leaves = self._descend(x, None)[0]
            return self._proba_from_leaves(leaves), leaves
        out = np.empty((self.max_depth + 1, self.n_trees), dtype=np.intp)
        leaves, levels = self._descend(x, out)
        return self._proba_from_leaves(leaves), out[:levels]

    def predict_rows(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(prediction per row, per-tree values (trees, rows))`` of a few rows: one decision's candidates.

        The first column of :attr:`value` (a regressor's mean, a classifier's first class), equal
        to sklearn's ``predict`` for a regressor: trees added in order, then divided. Compiled
        (:func:`_jit_rows`: each (tree, row) walks to its leaf, a few microseconds in all); without
        numba, :meth:`walk_rows`, with the same values bit for bit.
        """
        pred, per_tree, _ = self._rows(X)
        return pred, per_tree

    def rank_rows(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(prediction per row, lowest-tree count per row)``: :meth:`predict_rows`, and per row how many
        trees give it the lowest value of all rows (ties: the first such row), counted in the same
        compiled pass (a policy choosing the lowest reports the share of trees that agree)."""
        pred, per_tree, first = self._rows(X)
        if first is None:
            first = (np.bincount(per_tree.argmin(axis=1), minlength=len(pred)) if len(pred)
                     else np.zeros(0, np.int64))
        return pred, first

    def _rows(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        X = self._check(X)
        if (kernel := _jit_rows()) is None:
            return (*self.walk_rows(X), None)
        k = X.shape[0]
        per_tree = np.empty((self.n_trees, k))
        pred = np.empty(k)
        first = np.zeros(k, np.int64)
        if not k:  # the kernel counts a lowest row per tree: there must be one
            return pred, per_tree, first
        kernel(self.feature, self.threshold, self.left, self._value0, self.roots, X, self.max_depth, per_tree, pred,
               first)
        return pred, per_tree, first

    def walk_rows(self, X: np.ndarray, path: bool = False
                  ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict_rows` in numpy: all rows and trees descend together, level by level, stopping once
        every tree sits at a leaf (without numba, and the benchmark's baseline). With ``path=True`` a third
        item holds the node per level and (tree, row) pair, tree-major: ``paths[:, j::rows]`` is row
        ``j``'s path for :meth:`explain_one`."""
        X = self._check(X)
        k = X.shape[0]
        base, nodes = self._row_layout(k)
        flat = X.astype(np.float64).ravel()
        feat, thr, left, check = self.feature, self.threshold, self.left, self._exit_checks
        levels = [nodes] if path else None
        for d in range(self.max_depth):
            nxt = left[nodes] + (flat[base + feat[nodes]] > thr[nodes])
            if levels is not None:
                levels.append(nxt)
            if check[d] and not _count_nonzero(nxt != nodes):
                nodes = nxt
                break
            nodes = nxt
        per_tree = self._value0[nodes].reshape(self.n_trees, k)
        # tree after tree, as sklearn adds them (a (trees, 1) column would be summed pairwise)
        pred = (_add_reduce(per_tree, axis=0) if k != 1 else np.array([sum(per_tree[:, 0].tolist())])) / self.n_trees
        if levels is not None:
            return pred, per_tree, np.stack(levels)
        return pred, per_tree

    def _row_layout(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(feature offset, root) per (tree, row) pair, tree-major, for ``k`` rows (cached per ``k``)."""
        hit = self._layouts.get(k)
        if hit is None:
            base = np.tile(np.arange(k, dtype=np.intp) * self.n_features, self.n_trees)
            hit = self._layouts[k] = (base, np.repeat(self.roots, k))
        return hit

    @cached_property
    def _layouts(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return {}

    @cached_property
    def _value0(self) -> np.ndarray:
        return np.ascontiguousarray(self.value[:, 0])

    def _proba_from_leaves(self, leaves: np.ndarray) -> np.ndarray:
        # (trees, classes) summed over axis 0 adds row after row: the same order as sklearn.
        return _add_reduce(self.value[leaves], axis=0) / self.n_trees

    def _leaves_one(self, x: np.ndarray) -> np.ndarray:
        return self._descend(x, None)[0]

    def _descend(self, x: np.ndarray, out: np.ndarray | None) -> tuple[np.ndarray, int]:
        """Leaves of one row and the number of levels visited; ``out`` (levels, trees) records the path."""
        # Plain fancy indexing beats np.take(out=...) at this size (a hundred-odd elements);
        # about 3 us a level, so the depth of the forest sets the cost.
        feat, thr, left, check = self.feature, self.threshold, self.left, self._exit_checks
        nodes = self.roots
        if out is not None:
            out[0] = nodes
        for d in range(self.max_depth):
            nxt = left[nodes] + (x[feat[nodes]] > thr[nodes])
            if out is not None:
                out[d + 1] = nxt
            if check[d] and not _count_nonzero(nxt != nodes):  # every tree sits at its leaf
                return nxt, d + 2
            nodes = nxt
        return nodes, self.max_depth + 1

    @cached_property
    def _exit_checks(self) -> tuple[bool, ...]:
        """Levels after which a single row tests for an early exit: odd ones from
        :data:`EARLY_EXIT_FROM` on, never the last (the loop ends there anyway)."""
        return tuple(EARLY_EXIT_FROM <= d < self.max_depth - 1 and bool(d & 1) for d in range(self.max_depth))

    # ------------------------------------------------------------------ explanations
    def paths_one(self, x: np.ndarray) -> np.ndarray:
        """Node per level and tree for one row, shape (levels, trees); leaves repeat once reached."""
        return self.predict_one(x, path=True)[1]

    def explain_one(self, x: np.ndarray | None, class_index: int, path: np.ndarray | None = None
                    ) -> tuple[float, np.ndarray]:
        """Saabas contributions of one row to one class: ``(bias, per-feature contribution)``.

        ``bias`` is the forest's prior for the class (mean root value) and
        ``bias + contributions.sum()`` equals the class probability. Pass the
        ``path`` from ``predict_one(x, path=True)`` to skip the descent.
        """
        if path is None:
            path = self.paths_one(x)
        v = self.value[:, class_index]
        delta = v[path[1:]] - v[path[:-1]]  # zero once a tree sits at its leaf
        contrib = np.bincount(self.feature[path[:-1]].ravel(), weights=delta.ravel(),
                              minlength=self.n_features)
        return float(v[self.roots].mean()), contrib / self.n_trees

    def contributions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Saabas contributions of a batch for every class.

        Returns ``(bias, contrib)`` of shapes (rows, classes) and (rows, features,
        classes), with ``bias + contrib.sum(axis=1) == predict_proba(X)``.
        """
        X = self._check(X)
        rows, T, F, C = X.shape[0], self.n_trees, self.n_features, self.value.shape[1]
        contrib = np.zeros((rows * F, C))
        nodes = np.tile(self.roots, rows)
        row_of = np.repeat(np.arange(rows, dtype=np.intp), T)
        base = row_of * F
        flat = X.ravel()
        feat, thr, left, value = self.feature, self.threshold, self.left, self.value
        for _ in range(self.max_depth):
            nxt = left[nodes] + (flat[base + feat[nodes]] > thr[nodes])
            moved = nxt != nodes
            np.add.at(contrib, base[moved] + feat[nodes[moved]], value[nxt[moved]] - value[nodes[moved]])
            nodes = nxt
        bias = np.broadcast_to(value[self.roots].mean(axis=0), (rows, C)).copy()
        return bias, contrib.reshape(rows, F, C) / T

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path) -> None:
        """Write a plain ``.npz`` (no pickle)."""
        with open(path, "wb") as fh:
            np.savez_compressed(fh, format_version=np.int64(FORMAT_VERSION), feature=self.feature,
                                threshold=self.threshold, left=self.left, value=self.value,
                                roots=self.roots, depth=self.depth, classes=self.classes,
                                n_features=np.int64(self.n_features))

    @classmethod
    def load(cls, path: str | Path) -> "FlatForest":
        """Read :meth:`save`'s file (``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as z:
            fmt = int(z["format_version"])
            if fmt != FORMAT_VERSION:
                raise ValueError(f"{path}: flat forest format {fmt}, this build reads {FORMAT_VERSION}")
            forest = cls(feature=z["feature"].astype(np.intp), threshold=z["threshold"],
                         left=z["left"].astype(np.intp), value=np.ascontiguousarray(z["value"]),
                         roots=z["roots"].astype(np.intp), depth=z["depth"], classes=z["classes"],
                         n_features=int(z["n_features"]))
        forest.validate()
        return forest

    def validate(self) -> None:
        """Structural checks (a corrupt file must fail here, not index out of bounds later)."""
        n = self.n_nodes
        shapes_ok = (self.threshold.shape == self.left.shape == self.depth.shape == (n,)
                     and self.value.shape == (n, max(len(self.classes), 1)) and self.roots.ndim == 1)
        if not shapes_ok or n == 0 or len(self.roots) == 0:
            raise ValueError("flat forest arrays have inconsistent shapes")
        leaf = self.left == np.arange(n)
        if (self.left < 0).any() or (self.left[~leaf] + 1 >= n).any() or (self.roots >= n).any():
            raise ValueError("flat forest child indices out of range")
        if (self.feature < 0).any() or (self.feature >= self.n_features).any():
            raise ValueError("flat forest feature indices out of range")
        if not np.isposinf(self.threshold[leaf]).all():
            raise ValueError("flat forest leaves must have threshold +inf")

    # ------------------------------------------------------------------ input checks
    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)  # sklearn compares float32 inputs too
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {X.shape}")
        return X

    def _check_one(self, x: np.ndarray) -> np.ndarray:
        """The row rounded to float32 as sklearn does, held as float64: the comparisons with the
        float64 thresholds are then sklearn's exactly, without a cast at every level."""
        if type(x) is not np.ndarray or x.dtype != np.float32:
            x = np.asarray(x, dtype=np.float32)
        if x.shape != (self.n_features,):
            raise ValueError(f"expected {self.n_features} features, got shape {x.shape}")
        return x.astype(np.float64)


def _bfs_order(children_left: np.ndarray, children_right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breadth-first node order (siblings adjacent, left first) and each node's depth, in that order."""
    order = [0]
    depth = [0]
    i = 0
    while i < len(order):
        n = order[i]
        if children_left[n] >= 0:
            order += [int(children_left[n]), int(children_right[n])]
            depth += [depth[i] + 1, depth[i] + 1]
        i += 1
    return np.asarray(order, dtype=np.intp), np.asarray(depth, dtype=np.int32)


def top_contributions(contrib: np.ndarray, k: int = 3) -> list[tuple[int, float]]:
    """The ``k`` features with the largest absolute contribution: ``[(index, contribution)]``."""
    idx = np.argsort(-np.abs(contrib), kind="stable")[:k]
    return [(int(i), float(contrib[i])) for i in idx if contrib[i] != 0.0]


@cache
def _jit_rows():
    """The compiled walk of :meth:`FlatForest.predict_rows` (numba, cached on disk where a cache
    directory is writable), or None where numba cannot serve (not installed, JIT disabled, a failed
    compile): the numpy walk then does, with the same values.

    Why compiled: in numpy each level of the descent is half a dozen array calls, about 3 us a level
    for a decision's rows whatever their number, so a depth-8 forest cost about 29 us a decision;
    walked in compiled loops it is about 6 us, call overhead included (``python -m benchmarks rf``
    prints both). The sums run tree after tree, as sklearn's ``predict`` adds them: equal bit for bit.
    ``first`` counts, per row, the trees whose lowest value is that row's (:meth:`FlatForest.rank_rows`).
    """
    def rows(feature, threshold, left, value0, roots, X, max_depth, per_tree, pred, first):  # pragma: no cover
        n_trees, k = roots.shape[0], X.shape[0]
        node = np.empty(k, np.int64)
        for t in range(n_trees):
            for j in range(k):
                node[j] = roots[t]
            # the rows descend the tree together, level by level: their walks are independent, so the
            # processor overlaps their loads (measured 1.7x faster than one row after the other)
            for _ in range(max_depth):
                moved = False
                for j in range(k):
                    nd = node[j]
                    nxt = left[nd] + (X[j, feature[nd]] > threshold[nd])
                    moved |= nxt != nd  # a leaf points to itself
                    node[j] = nxt
                if not moved:
                    break
            low = 0
            for j in range(k):
                per_tree[t, j] = value0[node[j]]
                if per_tree[t, j] < per_tree[t, low]:
                    low = j
            first[low] += 1
        for j in range(k):
            total = 0.0
            for t in range(n_trees):
                total += per_tree[t, j]
            pred[j] = total / n_trees

    one = np.zeros(1, np.intp)
    return compiled(rows, one, np.full(1, np.inf), one, np.zeros(1), one, np.zeros((1, 1), np.float32), 1,
                    np.empty((1, 1)), np.empty(1), np.zeros(1, np.int64))
