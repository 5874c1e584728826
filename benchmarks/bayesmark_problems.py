"""The bayesmark problem set, re-stated without the bayesmark package.

Source: uber/bayesmark 0.0.8 (commit 8c420e9, the version the NeurIPS 2020 black-box optimization challenge used):
``bayesmark/sklearn_funcs.py`` (models, fixed arguments, search spaces with their warpings, ``SklearnModel``),
``bayesmark/data.py`` (datasets), ``bayesmark/constants.py`` (model, dataset and metric names) and
``bayesmark/space.py`` (what the warpings mean). The bayesmark package itself is not used: it pins numpy/sklearn
versions that no longer install (``np.float_``, ``load_boston``).

A problem is a model x a dataset bundled with scikit-learn x a metric, named ``MODEL_DATASET_METRIC`` as bayesmark
names its test cases (``DT_breast_nll``). Its objective is bayesmark's ``SklearnModel.evaluate``: the data are split
80/20 by ``train_test_split(test_size=0.2, random_state=0, shuffle=True)``, and the loss is minus the mean
``cross_val_score`` of the model on the 80 % part with ``cv=5`` (``StratifiedKFold(5)`` for classifiers,
``KFold(5)`` for regressors, no shuffling), scored by ``neg_log_loss``, ``accuracy``, ``neg_mean_absolute_error`` or
``neg_mean_squared_error``. Features are used raw (bayesmark standardizes only its custom CSV data sets).

Search spaces are bayesmark's ``api_config`` dictionaries. A ``real`` parameter in ``log`` space is a log-scaled
float; an ``int`` parameter an int (``log`` space: log-scaled); a ``bool`` a categorical of ``True, False``. A
``real`` parameter in ``logit`` space is searched in logit coordinates, as bayesmark's optimizers and its random
search see it (``JointSpace.warp``): the search parameter is ``NAME_logit``, a float over
``[logit(low), logit(high)]``, and the model gets ``expit`` of it. Uniform random search over these spaces is then
bayesmark's random search (uniform in the warped space).

Deviations forced by today's scikit-learn (1.9), each also listed in :data:`DEVIATIONS`:

* ``boston`` is gone (``load_boston`` was removed in scikit-learn 1.2): 90 problems instead of 108.
* ``LogisticRegression`` lost ``penalty`` and ``multi_class``: ``penalty="l1"``/``"l2"`` become ``l1_ratio=1``/``0``,
  and ``multi_class="ovr"`` (liblinear no longer fits multiclass problems at all) becomes a
  ``OneVsRestClassifier`` around it, which fits the same per-class liblinear models and normalizes their
  probabilities the same way.
* ``Lasso``/``Ridge`` lost ``normalize`` (scikit-learn 1.2): ``normalize=True`` with ``fit_intercept=True`` is
  restored as a preprocessing step that centres each feature and divides it by its L2 norm on the training fold,
  which is what ``normalize=True`` did (it was ignored without an intercept, and is here too).
* ``AdaBoostClassifier`` lost ``algorithm="SAMME.R"`` (the old default): it runs SAMME, the only algorithm left.
* ``SVC(probability=True)`` is deprecated in 1.9 (removal in 1.11) but still works and is used as published.
* Every model that draws random numbers gets ``random_state=0`` (bayesmark left them unseeded, so its objectives
  were noisy): the objective is deterministic, so every optimizer sees exactly the same function.
* A configuration whose cross-validation raises or returns a non-finite score (bayesmark asserted finiteness and
  would abort) scores as the constant predictor would: log-loss of the class frequencies, error rate of the
  majority class, MAE/MSE of predicting the mean.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

import numpy as np

from benchmarks.problems import Problem
from kubetune.engine import (
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    ParamValue,
    SearchSpace,
)

DEVIATIONS = (
    "boston dropped (load_boston removed in scikit-learn 1.2): 90 problems, not 108",
    "LogisticRegression penalty l1/l2 -> l1_ratio 1/0; multi_class='ovr' -> OneVsRestClassifier (liblinear)",
    "Lasso/Ridge normalize=True (removed in 1.2) -> centre and divide by the L2 norm on the training fold",
    "AdaBoostClassifier SAMME.R (removed) -> SAMME",
    "random_state=0 for every randomized model (deterministic objectives)",
    "a failed or non-finite cross-validation scores as the constant predictor",
)

CV_SPLITS = 5
"""bayesmark's ``CV_SPLITS``."""

# -- search spaces: bayesmark/sklearn_funcs.py, verbatim as data ------------------------------------------------

Api = dict[str, dict[str, Any]]

knn_cfg: Api = {
    "n_neighbors": {"type": "int", "space": "linear", "range": (1, 25)},
    "p": {"type": "int", "space": "linear", "range": (1, 4)},
}
svm_cfg: Api = {
    "C": {"type": "real", "space": "log", "range": (1.0, 1e3)},
    "gamma": {"type": "real", "space": "log", "range": (1e-4, 1e-3)},
    "tol": {"type": "real", "space": "log", "range": (1e-5, 1e-1)},
}
dt_cfg: Api = {
    "max_depth": {"type": "int", "space": "linear", "range": (1, 15)},
    "min_samples_split": {"type": "real", "space": "logit", "range": (0.01, 0.99)},
    "min_samples_leaf": {"type": "real", "space": "logit", "range": (0.01, 0.49)},
    "min_weight_fraction_leaf": {"type": "real", "space": "logit", "range": (0.01, 0.49)},
    "max_features": {"type": "real", "space": "logit", "range": (0.01, 0.99)},
    "min_impurity_decrease": {"type": "real", "space": "linear", "range": (0.0, 0.5)},
}
rf_cfg: Api = {
    "max_depth": {"type": "int", "space": "linear", "range": (1, 15)},
    "max_features": {"type": "real", "space": "logit", "range": (0.01, 0.99)},
    "min_samples_split": {"type": "real", "space": "logit", "range": (0.01, 0.99)},
    "min_samples_leaf": {"type": "real", "space": "logit", "range": (0.01, 0.49)},
    "min_weight_fraction_leaf": {"type": "real", "space": "logit", "range": (0.01, 0.49)},
    "min_impurity_decrease": {"type": "real", "space": "linear", "range": (0.0, 0.5)},
}
mlp_adam_cfg: Api = {
    "hidden_layer_sizes": {"type": "int", "space": "linear", "range": (50, 200)},
    "alpha": {"type": "real", "space": "log", "range": (1e-5, 1e1)},
    "batch_size": {"type": "int", "space": "linear", "range": (10, 250)},
    "learning_rate_init": {"type": "real", "space": "log", "range": (1e-5, 1e-1)},
    "tol": {"type": "real", "space": "log", "range": (1e-5, 1e-1)},
    "validation_fraction": {"type": "real", "space": "logit", "range": (0.1, 0.9)},
    "beta_1": {"type": "real", "space": "logit", "range": (0.5, 0.99)},
    "beta_2": {"type": "real", "space": "logit", "range": (0.9, 1.0 - 1e-6)},
    "epsilon": {"type": "real", "space": "log", "range": (1e-9, 1e-6)},
}
mlp_sgd_cfg: Api = {
    "hidden_layer_sizes": {"type": "int", "space": "linear", "range": (50, 200)},
    "alpha": {"type": "real", "space": "log", "range": (1e-5, 1e1)},
    "batch_size": {"type": "int", "space": "linear", "range": (10, 250)},
    "learning_rate_init": {"type": "real", "space": "log", "range": (1e-5, 1e-1)},
    "power_t": {"type": "real", "space": "logit", "range": (0.1, 0.9)},
    "tol": {"type": "real", "space": "log", "range": (1e-5, 1e-1)},
    "momentum": {"type": "real", "space": "logit", "range": (0.001, 0.999)},
    "validation_fraction": {"type": "real", "space": "logit", "range": (0.1, 0.9)},
}
ada_cfg: Api = {
    "n_estimators": {"type": "int", "space": "linear", "range": (10, 100)},
    "learning_rate": {"type": "real", "space": "log", "range": (1e-4, 1e1)},
}
lasso_cfg: Api = {
    "C": {"type": "real", "space": "log", "range": (1e-2, 1e2)},
    "intercept_scaling": {"type": "real", "space": "log", "range": (1e-2, 1e2)},
}
linear_cfg: Api = dict(lasso_cfg)
ada_cfg_reg: Api = dict(ada_cfg)
lasso_cfg_reg: Api = {
    "alpha": {"type": "real", "space": "log", "range": (1e-2, 1e2)},
    "fit_intercept": {"type": "bool"},
    "normalize": {"type": "bool"},
    "max_iter": {"type": "int", "space": "log", "range": (10, 5000)},
    "tol": {"type": "real", "space": "log", "range": (1e-5, 1e-1)},
    "positive": {"type": "bool"},
}
linear_cfg_reg: Api = {
    "alpha": {"type": "real", "space": "log", "range": (1e-2, 1e2)},
    "fit_intercept": {"type": "bool"},
    "normalize": {"type": "bool"},
    "max_iter": {"type": "int", "space": "log", "range": (10, 5000)},
    "tol": {"type": "real", "space": "log", "range": (1e-4, 1e-1)},
}

MODEL_NAMES = ("DT", "MLP-adam", "MLP-sgd", "RF", "SVM", "ada", "kNN", "lasso", "linear")
DATASETS_CLF = ("breast", "digits", "iris", "wine")
DATASETS_REG = ("diabetes",)  # boston: removed from scikit-learn
METRICS_CLF = ("nll", "acc")
METRICS_REG = ("mae", "mse")
_SCORER = {"nll": "neg_log_loss", "acc": "accuracy", "mae": "neg_mean_absolute_error",
           "mse": "neg_mean_squared_error"}


# -- models ------------------------------------------------------------------------------------------------------


class _L2Normalize:
    """``normalize=True`` of the old ``Lasso``/``Ridge``: centre each feature and divide it by its L2 norm."""

    def fit(self, X: np.ndarray, y: object = None) -> _L2Normalize:
        self.mean_ = X.mean(axis=0)
        norm = np.sqrt(((X - self.mean_) ** 2).sum(axis=0))
        self.scale_ = np.where(norm == 0, 1.0, norm)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        out: np.ndarray = (X - self.mean_) / self.scale_
        return out

    def fit_transform(self, X: np.ndarray, y: object = None) -> np.ndarray:
        return self.fit(X).transform(X)

    def get_params(self, deep: bool = True) -> dict[str, object]:
        return {}

    def set_params(self, **params: object) -> _L2Normalize:
        return self


def _linear_reg(cls: Callable[..., Any], **fixed: Any) -> Callable[..., Any]:
    def make(normalize: bool = False, **kw: Any) -> Any:
        from sklearn.pipeline import make_pipeline

        model = cls(**fixed, **kw)
        if normalize and kw.get("fit_intercept", True):
            return make_pipeline(_L2Normalize(), model)
        return model

    return make


def _logistic(l1_ratio: float) -> Callable[..., Any]:
    def make(**kw: Any) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        return OneVsRestClassifier(LogisticRegression(l1_ratio=l1_ratio, fit_intercept=True, solver="liblinear",
                                                      random_state=0, **kw))

    return make


def _sk(path: str, **fixed: Any) -> Callable[..., Any]:
    def make(**kw: Any) -> Any:
        import importlib

        mod, _, name = path.rpartition(".")
        return getattr(importlib.import_module(mod), name)(**fixed, **kw)

    return make


def _models(classification: bool) -> dict[str, tuple[Callable[..., Any], Api]]:
    """bayesmark's ``MODELS_CLF`` / ``MODELS_REG`` (constructor with its fixed arguments, search space)."""
    if classification:
        return {
            "kNN": (_sk("sklearn.neighbors.KNeighborsClassifier"), knn_cfg),
            "SVM": (_sk("sklearn.svm.SVC", kernel="rbf", probability=True, random_state=0), svm_cfg),
            "DT": (_sk("sklearn.tree.DecisionTreeClassifier", max_leaf_nodes=None, random_state=0), dt_cfg),
            "RF": (_sk("sklearn.ensemble.RandomForestClassifier", n_estimators=10, max_leaf_nodes=None,
                       random_state=0), rf_cfg),
            "MLP-adam": (_sk("sklearn.neural_network.MLPClassifier", solver="adam", early_stopping=True,
                             random_state=0), mlp_adam_cfg),
            "MLP-sgd": (_sk("sklearn.neural_network.MLPClassifier", solver="sgd", early_stopping=True,
                            learning_rate="invscaling", nesterovs_momentum=True, random_state=0), mlp_sgd_cfg),
            "ada": (_sk("sklearn.ensemble.AdaBoostClassifier", random_state=0), ada_cfg),
            "lasso": (_logistic(1.0), lasso_cfg),
            "linear": (_logistic(0.0), linear_cfg),
        }
    from sklearn.linear_model import Lasso, Ridge

    return {
        "kNN": (_sk("sklearn.neighbors.KNeighborsRegressor"), knn_cfg),
        "SVM": (_sk("sklearn.svm.SVR", kernel="rbf"), svm_cfg),
        "DT": (_sk("sklearn.tree.DecisionTreeRegressor", max_leaf_nodes=None, random_state=0), dt_cfg),
        "RF": (_sk("sklearn.ensemble.RandomForestRegressor", n_estimators=10, max_leaf_nodes=None, random_state=0),
               rf_cfg),
        "MLP-adam": (_sk("sklearn.neural_network.MLPRegressor", solver="adam", early_stopping=True, random_state=0),
                     mlp_adam_cfg),
        "MLP-sgd": (_sk("sklearn.neural_network.MLPRegressor", activation="tanh", solver="sgd", early_stopping=True,
                        learning_rate="invscaling", nesterovs_momentum=True, random_state=0), mlp_sgd_cfg),
        "ada": (_sk("sklearn.ensemble.AdaBoostRegressor", random_state=0), ada_cfg_reg),
        "lasso": (_linear_reg(Lasso), lasso_cfg_reg),
        "linear": (_linear_reg(Ridge, solver="auto"), linear_cfg_reg),
    }


# -- spaces -----------------------------------------------------------------------------------------------------


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def space_of(api: Api) -> SearchSpace:
    """A bayesmark ``api_config`` as a kubetune search space (logit-warped reals as ``NAME_logit``)."""
    dims: dict[str, Distribution] = {}
    for name in sorted(api):  # bayesmark's JointSpace orders parameters by name
        cfg = api[name]
        kind, warp = cfg["type"], cfg.get("space", "linear")
        if kind == "bool":
            dims[name] = CategoricalDistribution((True, False))
        elif kind == "int":
            lo, hi = cfg["range"]
            dims[name] = IntDistribution(int(lo), int(hi), log=warp == "log")
        elif warp == "logit":
            lo, hi = cfg["range"]
            dims[f"{name}_logit"] = FloatDistribution(_logit(lo), _logit(hi))
        else:
            lo, hi = cfg["range"]
            dims[name] = FloatDistribution(float(lo), float(hi), log=warp == "log")
    return SearchSpace.of(dims)


def model_kwargs(params: Mapping[str, ParamValue]) -> dict[str, object]:
    """Search parameters as the model's keyword arguments (``NAME_logit`` -> ``NAME = expit(value)``)."""
    out: dict[str, object] = {}
    for k, v in params.items():
        if k.endswith("_logit"):
            out[k.removesuffix("_logit")] = _expit(float(v))
        else:
            out[k] = v
    return out


# -- data and objective -----------------------------------------------------------------------------------------


@cache
def _data(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """bayesmark's ``load_data`` then ``train_test_split(test_size=0.2, random_state=0)``: the 80 % part."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    loader = {"breast": datasets.load_breast_cancer, "digits": datasets.load_digits, "iris": datasets.load_iris,
              "wine": datasets.load_wine, "diabetes": datasets.load_diabetes}[dataset]
    X, y = loader(return_X_y=True)
    X_train, _X_test, y_train, _y_test = train_test_split(X.astype(float), y, test_size=0.2, random_state=0,
                                                          shuffle=True)
    return X_train, y_train


@cache
def _splits(dataset: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``cross_val_score(cv=5)``'s splits: ``StratifiedKFold(5)`` for classifiers, ``KFold(5)`` for regressors."""
    from sklearn.model_selection import KFold, StratifiedKFold

    X, y = _data(dataset)
    cv = StratifiedKFold(CV_SPLITS) if dataset in DATASETS_CLF else KFold(CV_SPLITS)
    return tuple(cv.split(X, y))


def _constant_loss(y: np.ndarray, metric: str) -> float:
    if metric == "nll":
        p = np.bincount(y) / len(y)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())
    if metric == "acc":
        return float(-np.bincount(y).max() / len(y))
    err = y - y.mean()
    return float(np.mean(np.abs(err)) if metric == "mae" else np.mean(err**2))


def objective(model: str, dataset: str, metric: str) -> Callable[[Mapping[str, ParamValue]], float]:
    """bayesmark's ``SklearnModel(model, dataset, metric).evaluate(params)[0]`` (the loss the optimizer sees)."""
    from sklearn.metrics import get_scorer

    make, _api = _models(dataset in DATASETS_CLF)[model]
    scorer = get_scorer(_SCORER[metric])

    def loss(params: Mapping[str, ParamValue]) -> float:
        X, y = _data(dataset)
        kw = model_kwargs(params)
        scores = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with np.errstate(all="ignore"):
                    for train, test in _splits(dataset):
                        est = make(**kw).fit(X[train], y[train])
                        scores.append(float(scorer(est, X[test], y[test])))
            except (ValueError, FloatingPointError, ArithmeticError, np.linalg.LinAlgError):
                scores = [math.nan]
        value = -float(np.mean(scores))
        return value if math.isfinite(value) else _constant_loss(y, metric)

    return loss


def problem_names() -> list[str]:
    """All 90 test cases, bayesmark's ``MODEL_DATASET_METRIC`` names."""
    names = [f"{m}_{d}_{s}" for m in MODEL_NAMES for d in DATASETS_CLF for s in METRICS_CLF]
    names += [f"{m}_{d}_{s}" for m in MODEL_NAMES for d in DATASETS_REG for s in METRICS_REG]
    return names


def family(name: str) -> str:
    """Problems grouped as the product's question asks: by model and metric (``DT-nll``)."""
    model, _dataset, metric = name.split("_")
    return f"{model}-{metric}"


@cache
def bayesmark_problem(name: str) -> Problem:
    model, dataset, metric = name.split("_")
    _make, api = _models(dataset in DATASETS_CLF)[model]
    return Problem(name, family(name), space_of(api), objective(model, dataset, metric))
