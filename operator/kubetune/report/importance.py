"""Parameter importance by functional ANOVA over a random forest (Hutter, Hoos and Leyton-Brown, ICML 2014).

The objective is modelled by a random forest (scikit-learn's ``RandomForestRegressor``) on the unit cube of the
search space, where the uniform measure is the spec's own: log-scaled parameters uniform in their logarithm, each
integer and each categorical value owning an equal share (:func:`kubetune.engine._unit.to_unit_matrix`). A
regression tree is constant on each leaf's axis-aligned box, so its functional ANOVA is exact and cheap:

* the tree's mean ``m`` and total variance ``V = sum_l vol_l (v_l - m)^2`` over its leaves ``l`` (value ``v_l``,
  box volume ``vol_l``);
* the marginal of parameter ``j``, ``a_j(x) = integral of f over the other parameters``, is constant between
  consecutive split points of ``j``: ``a_j(x) = sum over leaves whose box holds x of v_l * vol_l / width_lj``;
* the main effect's variance ``V_j = integral of (a_j(x) - m)^2 dx``, and the importance of ``j`` in this tree is
  ``V_j / V``, the fraction of the variance explained by ``j`` alone.

Importances are the mean over the trees of these fractions (as in the paper); :func:`fanova` also returns their
standard deviation, and the shares normalized to sum to 1 (how ``optuna.importance`` reports fANOVA). Only main
effects are computed. The forest is fitted on at most :data:`MAX_FIT_TRIALS` trials (a seeded sample beyond that).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_FIT_TRIALS = 2000
"""The forest learns from at most this many trials; more are sampled down (seeded), and the report says so."""
N_TREES = 64
MIN_TRIALS = 4


@dataclass(frozen=True)
class Importance:
    fractions: np.ndarray
    """Mean over the trees of each parameter's main-effect variance fraction, in [0, 1]."""
    std: np.ndarray
    """Standard deviation of those fractions over the trees."""
    n_fit: int
    """Trials the forest learned from."""
    forest: object = None
    """The fitted forest (``predict`` takes unit-cube rows and returns the modelled values)."""

    @property
    def shares(self) -> np.ndarray:
        """The fractions normalized to sum to 1 (all zero when the objective did not vary)."""
        total = float(self.fractions.sum())
        return self.fractions / total if total > 0 else np.zeros_like(self.fractions)


def _leaf_boxes(tree: object, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lo, hi, value)`` of every leaf of a fitted sklearn tree (its ``tree_``), boxes inside the unit cube."""
    left = tree.children_left  # type: ignore[attr-defined]
    right = tree.children_right  # type: ignore[attr-defined]
    feature = tree.feature  # type: ignore[attr-defined]
    threshold = tree.threshold  # type: ignore[attr-defined]
    values = tree.value.reshape(len(left), -1)[:, 0]  # type: ignore[attr-defined]
    n = len(left)
    lo = np.zeros((n, d))
    hi = np.ones((n, d))
    # sklearn numbers a node's children after the node, so one pass in node order visits parents first
    for node in range(n):
        a, b = left[node], right[node]
        if a < 0:
            continue
        f = feature[node]
        t = min(max(float(threshold[node]), lo[node, f]), hi[node, f])
        lo[a], hi[a] = lo[node], hi[node]
        lo[b], hi[b] = lo[node], hi[node]
        hi[a, f] = t  # x <= threshold goes left
        lo[b, f] = t
    leaves = left < 0
    return lo[leaves], hi[leaves], values[leaves]


def tree_main_effects(lo: np.ndarray, hi: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, float]:
    """Main-effect variances ``V_j`` of a piecewise-constant function on boxes tiling the unit cube, and ``V``."""
    width = hi - lo
    vol = np.prod(width, axis=1)
    keep = vol > 0
    lo, hi, v, width, vol = lo[keep], hi[keep], v[keep], width[keep], vol[keep]
    mean = float(np.sum(vol * v))
    total = float(np.sum(vol * (v - mean) ** 2))
    d = lo.shape[1]
    out = np.zeros(d)
    for j in range(d):
        edges = np.unique(np.concatenate([lo[:, j], hi[:, j], [0.0, 1.0]]))
        weight = v * vol / width[:, j]
        acc = np.zeros(len(edges) + 1)
        np.add.at(acc, np.searchsorted(edges, lo[:, j]), weight)
        np.add.at(acc, np.searchsorted(edges, hi[:, j]), -weight)
        marginal = np.cumsum(acc)[: len(edges) - 1]
        out[j] = float(np.sum(np.diff(edges) * (marginal - mean) ** 2))
    return out, total


def fanova(X: np.ndarray, y: np.ndarray, seed: int = 0, n_trees: int = N_TREES) -> Importance:
    """Main-effect importances of the columns of ``X`` (unit-cube coordinates) for the values ``y``."""
    from sklearn.ensemble import RandomForestRegressor

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    n, d = X.shape
    if n < MIN_TRIALS or d == 0:
        raise ValueError(f"importance needs at least {MIN_TRIALS} trials with a value")
    rng = np.random.default_rng(seed)
    if n > MAX_FIT_TRIALS:
        pick = rng.choice(n, MAX_FIT_TRIALS, replace=False)
        X, y = X[pick], y[pick]
    forest = RandomForestRegressor(n_estimators=n_trees, max_features=1.0, min_samples_leaf=1, bootstrap=True,
                                   random_state=int(rng.integers(2**31)), n_jobs=1)
    forest.fit(X, y)
    fractions = np.zeros((n_trees, d))
    for k, est in enumerate(forest.estimators_):
        effects, total = tree_main_effects(*_leaf_boxes(est.tree_, d))
        if total > 0:
            fractions[k] = np.clip(effects / total, 0.0, 1.0)
    return Importance(fractions.mean(axis=0), fractions.std(axis=0), len(y), forest)
