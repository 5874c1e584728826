"""fANOVA importance: known answers, the tree decomposition against brute force, and Optuna's evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.tree import DecisionTreeRegressor

from kubetune.report.importance import _leaf_boxes, fanova, tree_main_effects


def test_linear_function_ranking_and_shares() -> None:
    # f = 10*x1 + 0.1*x2 (+ an irrelevant x3): main-effect variances 100/12 and 0.01/12, so x1 explains 99.99 %;
    # the forest resolves the 0.01 % of x2 only partly (it ranks x2 above x3, with a smaller share than exact)
    rng = np.random.default_rng(0)
    X = rng.random((1000, 3))
    y = 10 * X[:, 0] + 0.1 * X[:, 1]
    imp = fanova(X, y, seed=1)
    assert list(np.argsort(-imp.fractions)) == [0, 1, 2]
    assert imp.shares[0] > 0.999
    assert 0 < imp.shares[1] < 0.001
    assert imp.shares[2] < imp.shares[1] / 5
    assert imp.fractions[0] == pytest.approx(1.0, abs=0.001)


def test_known_variance_fractions() -> None:
    # f = sin(6 x0) + x3^2 on [0,1]^8: Var(sin 6x) = 1/2 - sin(12)/24 - ((1 - cos 6)/6)^2, Var(x^2) = 1/5 - 1/9,
    # no interaction, so the fractions are these variances over their sum
    v0 = 0.5 - math.sin(12) / 24 - ((1 - math.cos(6)) / 6) ** 2
    v3 = 1 / 5 - 1 / 9
    rng = np.random.default_rng(2)
    X = rng.random((1500, 8))
    y = np.sin(6 * X[:, 0]) + X[:, 3] ** 2
    imp = fanova(X, y, seed=3)
    assert imp.fractions[0] == pytest.approx(v0 / (v0 + v3), abs=0.04)
    assert imp.fractions[3] == pytest.approx(v3 / (v0 + v3), abs=0.04)
    assert sum(imp.fractions[j] for j in (1, 2, 4, 5, 6, 7)) < 0.02


def test_product_has_an_interaction_that_main_effects_leave_out() -> None:
    # f = x0 * x1: Var f = 1/9 - 1/16 = 7/144, each main effect Var(x/2) = 1/48 = 3/144: fractions 3/7 each and
    # 1/7 of the variance in the interaction
    rng = np.random.default_rng(4)
    X = rng.random((800, 2))
    imp = fanova(X, X[:, 0] * X[:, 1], seed=5)
    assert imp.fractions == pytest.approx([3 / 7, 3 / 7], abs=0.04)
    assert imp.shares == pytest.approx([0.5, 0.5], abs=0.04)


@pytest.mark.parametrize("seed", range(5))
def test_tree_decomposition_matches_brute_force_integration(seed: int) -> None:
    # The tree's prediction is constant on the cells of the grid of all its split points: integrating over
    # that grid with sklearn's own predict is exact, and independent of the leaf-box walk.
    rng = np.random.default_rng(seed)
    d = 3
    X = rng.random((60, d))
    y = X[:, 0] ** 2 + np.sin(4 * X[:, 1]) * X[:, 2] + rng.normal(0, 0.1, 60)
    tree = DecisionTreeRegressor(max_leaf_nodes=25, random_state=seed).fit(X, y)
    effects, total = tree_main_effects(*_leaf_boxes(tree.tree_, d))

    t = tree.tree_
    edges = [np.unique(np.concatenate([[0.0, 1.0], t.threshold[(t.feature == j) & (t.children_left >= 0)]]))
             for j in range(d)]
    mids = [(e[:-1] + e[1:]) / 2 for e in edges]
    widths = [np.diff(e) for e in edges]
    grid = np.stack(np.meshgrid(*mids, indexing="ij"), axis=-1).reshape(-1, d)
    f = tree.predict(grid).reshape([len(m) for m in mids])
    w = np.einsum("i,j,k->ijk", *widths)
    mean = float(np.sum(w * f))
    assert total == pytest.approx(float(np.sum(w * (f - mean) ** 2)), rel=1e-9, abs=1e-12)
    for j in range(d):
        others = tuple(k for k in range(d) if k != j)
        marginal = np.sum(w * f, axis=others) / widths[j]
        assert effects[j] == pytest.approx(float(np.sum(widths[j] * (marginal - mean) ** 2)), rel=1e-9, abs=1e-12)


def test_agrees_with_optuna_fanova() -> None:
    import optuna  # in the test extras
    from optuna.distributions import FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator

    rng = np.random.default_rng(6)
    X = rng.random((200, 3))
    y = 10 * X[:, 0] + 3 * X[:, 1] ** 2 + 0 * X[:, 2]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    dists = {f"x{j}": FloatDistribution(0.0, 1.0) for j in range(3)}
    study.add_trials([optuna.trial.create_trial(params={f"x{j}": float(X[i, j]) for j in range(3)},
                                                distributions=dists, value=float(y[i])) for i in range(200)])
    theirs = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                                     normalize=True)
    ours = fanova(X, y, seed=0).shares
    # exact: Var(10x) = 100/12 = 8.33, Var(3x^2) = 9 * 4/45 = 0.8: shares 0.912 and 0.088
    assert list(theirs)[:2] == ["x0", "x1"]
    assert ours[0] > ours[1] > ours[2]
    for j in range(3):
        assert ours[j] == pytest.approx(theirs[f"x{j}"], abs=0.03)
    assert ours[0] == pytest.approx(100 / 12 / (100 / 12 + 0.8), abs=0.03)


def test_too_few_trials() -> None:
    with pytest.raises(ValueError):
        fanova(np.zeros((3, 2)), np.zeros(3))
