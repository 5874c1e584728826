"""Benchmark problems: synthetic functions with known optima, and bayesmark-style model tuning.

Every problem is a kubetune :class:`~kubetune.engine.SearchSpace` plus a deterministic ``loss(params) -> float``
(lower is better), so all optimizers see exactly the same objective.

* ``synthetic``: Branin (2-d), Hartmann6 (6-d), Ackley (5-d), Rosenbrock (4-d), Levy (5-d), in numpy. Bounds
  are chosen so that no optimum sits at the centre of the box (a centre-biased design would find it for free).
* ``ml-clf`` / ``ml-reg``: in the style of the NeurIPS 2020 black-box optimization challenge (bayesmark): a
  scikit-learn model on a dataset bundled with scikit-learn (no download), 3-fold cross-validation on
  standardized features, with bayesmark's search spaces (mixed int / log / float / categorical). Classification
  problems minimize the error rate (``-acc``) or the negative log likelihood (``-nll``); regression problems the
  mean squared (``-mse``) or absolute (``-mae``) error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

import numpy as np

from kubetune.engine import (
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    ParamValue,
    SearchSpace,
)

Loss = Callable[[Mapping[str, ParamValue]], float]


@dataclass(frozen=True)
class Problem:
    name: str
    family: str  # "synthetic", "ml-clf" or "ml-reg"
    space: SearchSpace
    loss: Loss
    optimum: float | None = None
    """The known global minimum (synthetic functions); ``None`` when it must be estimated."""


# -- synthetic ----------------------------------------------------------------------------------------------------


def _vec(params: Mapping[str, ParamValue], d: int) -> np.ndarray:
    return np.array([float(params[f"x{i}"]) for i in range(d)])


def _box(d: int, low: float, high: float) -> SearchSpace:
    return SearchSpace.of({f"x{i}": FloatDistribution(low, high) for i in range(d)})


def branin(x: np.ndarray) -> float:
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return float(a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s)


_H_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
                 [17, 8, 0.05, 10, 0.1, 14]])
_H_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                        [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x: np.ndarray) -> float:
    return float(-(_H_ALPHA * np.exp(-(_H_A * (x[None] - _H_P) ** 2).sum(axis=1))).sum())


def ackley(x: np.ndarray) -> float:
    d = len(x)
    return float(-20 * math.exp(-0.2 * math.sqrt((x**2).sum() / d)) - math.exp(np.cos(2 * math.pi * x).sum() / d)
                 + 20 + math.e)


def rosenbrock(x: np.ndarray) -> float:
    return float((100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum())


def levy(x: np.ndarray) -> float:
    w = 1 + (x - 1) / 4
    head = math.sin(math.pi * w[0]) ** 2
    mid = ((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2)).sum()
    tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return float(head + mid + tail)


def _synthetic(name: str, fn: Callable[[np.ndarray], float], d: int, space: SearchSpace, opt: float) -> Problem:
    return Problem(name, "synthetic", space, lambda p: fn(_vec(p, d)), opt)


def synthetic_problems() -> list[Problem]:
    branin_space = SearchSpace.of({"x0": FloatDistribution(-5.0, 10.0), "x1": FloatDistribution(0.0, 15.0)})
    return [
        _synthetic("branin", branin, 2, branin_space, 0.397887357729739),
        _synthetic("hartmann6", hartmann6, 6, _box(6, 0.0, 1.0), -3.32236801141551),
        _synthetic("ackley5", ackley, 5, _box(5, -10.0, 30.0), 0.0),
        _synthetic("rosenbrock4", rosenbrock, 4, _box(4, -5.0, 10.0), 0.0),
        _synthetic("levy5", levy, 5, _box(5, -10.0, 10.0), 0.0),
    ]


# -- bayesmark-style model tuning ---------------------------------------------------------------------------------


@cache
def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    loader = {"wine": datasets.load_wine, "breast": datasets.load_breast_cancer, "iris": datasets.load_iris,
              "digits": datasets.load_digits, "diabetes": datasets.load_diabetes}[name]
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@cache
def _folds(name: str, classification: bool) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    from sklearn.model_selection import KFold, StratifiedKFold

    X, y = _data(name)
    cv = (StratifiedKFold if classification else KFold)(n_splits=3, shuffle=True, random_state=0)
    return tuple(cv.split(X, y))


def _cv_loss(make: Callable[[Mapping[str, ParamValue]], object], data: str, metric: str) -> Loss:
    """Mean 3-fold cross-validated loss (a plain loop: ``cross_val_score`` costs more than the small models)."""

    def loss(params: Mapping[str, ParamValue]) -> float:
        X, y = _data(data)
        clf = metric in ("acc", "nll")
        scores = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                for train, test in _folds(data, clf):
                    model = make(params).fit(X[train], y[train])  # type: ignore[attr-defined]
                    scores.append(_metric(model, X[test], y[test], metric))
            except (ValueError, FloatingPointError, ArithmeticError):
                scores = [math.nan]
        s = float(np.mean(scores))
        if not math.isfinite(s):  # a configuration the model rejects scores like a useless model
            return _useless(y, metric)
        return s

    return loss


def _metric(model: object, X: np.ndarray, y: np.ndarray, metric: str) -> float:
    if metric == "nll":
        proba = np.clip(model.predict_proba(X), 1e-15, 1.0)  # type: ignore[attr-defined]
        proba /= proba.sum(axis=1, keepdims=True)
        cols = np.searchsorted(model.classes_, y)  # type: ignore[attr-defined]
        return float(-np.mean(np.log(proba[np.arange(len(y)), cols])))
    pred = model.predict(X)  # type: ignore[attr-defined]
    if metric == "acc":
        return float(np.mean(pred != y))
    err = pred - y
    return float(np.mean(err**2) if metric == "mse" else np.mean(np.abs(err)))


def _useless(y: np.ndarray, metric: str) -> float:
    """The loss of a model that predicts nothing useful (for configurations the model rejects)."""
    if metric == "acc":
        return 1.0
    if metric == "nll":
        return float(math.log(len(np.unique(y))))
    return float(np.mean((y - y.mean()) ** 2) if metric == "mse" else np.mean(np.abs(y - y.mean())))


def _f(low: float, high: float, log: bool = False) -> FloatDistribution:
    return FloatDistribution(low, high, log=log)


def _i(low: int, high: int, log: bool = False) -> IntDistribution:
    return IntDistribution(low, high, log=log)


def _c(*choices: ParamValue) -> CategoricalDistribution:
    return CategoricalDistribution(tuple(choices))


_TREE: dict[str, Distribution] = {
    "max_depth": _i(1, 15),
    "min_samples_split": _f(0.01, 0.99),
    "min_samples_leaf": _f(0.01, 0.49),
    "min_weight_fraction_leaf": _f(0.01, 0.49),
    "max_features": _f(0.01, 0.99),
    "min_impurity_decrease": _f(0.0, 0.5),
}


def _dt(p: Mapping[str, ParamValue]) -> object:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=0, **dict(p))


def _dt_reg(p: Mapping[str, ParamValue]) -> object:
    from sklearn.tree import DecisionTreeRegressor

    return DecisionTreeRegressor(random_state=0, **dict(p))


def _rf(p: Mapping[str, ParamValue]) -> object:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=10, random_state=0, **dict(p))


def _svm(p: Mapping[str, ParamValue]) -> object:
    from sklearn.svm import SVC

    return SVC(C=p["C"], gamma=p["gamma"], tol=p["tol"], kernel=p["kernel"], shrinking=p["shrinking"])


def _knn(p: Mapping[str, ParamValue]) -> object:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=int(p["n_neighbors"]), p=int(p["p"]), weights=p["weights"],
                                algorithm="brute")


def _mlp(p: Mapping[str, ParamValue]) -> object:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(int(p["hidden_layer_sizes"]),), alpha=p["alpha"],
                         batch_size=int(p["batch_size"]), learning_rate_init=p["learning_rate_init"], tol=p["tol"],
                         beta_1=p["beta_1"], beta_2=p["beta_2"], activation=p["activation"], solver="adam",
                         max_iter=20, random_state=0)


def _lasso(p: Mapping[str, ParamValue]) -> object:
    from sklearn.linear_model import Lasso

    return Lasso(alpha=p["alpha"], max_iter=int(p["max_iter"]), tol=p["tol"], fit_intercept=p["fit_intercept"],
                 positive=p["positive"], selection=p["selection"], random_state=0)


def _logreg(p: Mapping[str, ParamValue]) -> object:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=p["C"], intercept_scaling=p["intercept_scaling"], tol=p["tol"],
                              fit_intercept=p["fit_intercept"], solver="liblinear", l1_ratio=p["l1_ratio"])


def ml_problems() -> list[Problem]:
    S = SearchSpace.of
    return [
        Problem("dt-wine-acc", "ml-clf", S({**_TREE, "criterion": _c("gini", "entropy")}),
                _cv_loss(_dt, "wine", "acc")),
        Problem("rf-diabetes-mse", "ml-reg", S(dict(_TREE)), _cv_loss(_rf, "diabetes", "mse")),
        Problem("dt-diabetes-mae", "ml-reg", S({**_TREE, "criterion": _c("squared_error", "absolute_error")}),
                _cv_loss(_dt_reg, "diabetes", "mae")),
        Problem("svm-breast-acc", "ml-clf",
                S({"C": _f(1e-2, 1e3, True), "gamma": _f(1e-5, 1.0, True), "tol": _f(1e-5, 1e-1, True),
                   "kernel": _c("rbf", "sigmoid"), "shrinking": _c(True, False)}),
                _cv_loss(_svm, "breast", "acc")),
        Problem("knn-wine-nll", "ml-clf",
                S({"n_neighbors": _i(1, 40), "p": _i(1, 4), "weights": _c("uniform", "distance")}),
                _cv_loss(_knn, "wine", "nll")),
        Problem("mlp-wine-nll", "ml-clf",
                S({"hidden_layer_sizes": _i(8, 64, True), "alpha": _f(1e-5, 1e1, True), "batch_size": _i(16, 128, True),
                   "learning_rate_init": _f(1e-5, 1e-1, True), "tol": _f(1e-5, 1e-1, True),
                   "beta_1": _f(0.5, 0.99), "beta_2": _f(0.9, 0.9999), "activation": _c("relu", "tanh")}),
                _cv_loss(_mlp, "wine", "nll")),
        Problem("lasso-diabetes-mae", "ml-reg",
                S({"alpha": _f(1e-4, 1e2, True), "max_iter": _i(5, 2000, True), "tol": _f(1e-5, 1e-1, True),
                   "fit_intercept": _c(True, False), "positive": _c(True, False),
                   "selection": _c("cyclic", "random")}),
                _cv_loss(_lasso, "diabetes", "mae")),
        Problem("logreg-breast-nll", "ml-clf",
                S({"C": _f(1e-3, 1e2, True), "intercept_scaling": _f(1e-2, 1e2, True), "tol": _f(1e-5, 1e-1, True),
                   "fit_intercept": _c(True, False), "l1_ratio": _c(0.0, 1.0)}),
                _cv_loss(_logreg, "breast", "nll")),
    ]


def all_problems() -> list[Problem]:
    return synthetic_problems() + ml_problems()


def problem(name: str) -> Problem:
    for p in all_problems():
        if p.name == name:
            return p
    raise KeyError(name)
