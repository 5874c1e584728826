"""Example trial: an SVM on scikit-learn's bundled digits data set, scored by stratified k-fold cross-validation.

Parameters arrive as command-line flags (``${params.NAME}`` placeholders in the experiment's command); the result is
reported with :func:`kubetune_trial.report`: ``accuracy`` (mean CV accuracy), ``fit_seconds`` and
``support_vectors`` (the mean number of support vectors over the folds: the model's size). With
``--folds 5`` every fold is reported as an intermediate step, so early stopping can act on it.
"""

from __future__ import annotations

import argparse
import sys
import time

import kubetune_trial as kt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--C", type=float, required=True)
    parser.add_argument("--gamma", type=float, default=None, help="kernel coefficient; default 'scale'")
    parser.add_argument("--kernel", default="rbf", choices=["rbf", "poly", "linear", "sigmoid"])
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args(argv)

    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    start = time.perf_counter()
    scores: list[float] = []
    support: list[int] = []
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0)
    for step, (train, test) in enumerate(folds.split(X, y)):
        model = SVC(C=args.C, gamma=args.gamma if args.gamma is not None else "scale", kernel=args.kernel,
                    degree=args.degree, max_iter=200_000)
        model.fit(X[train], y[train])
        scores.append(float(model.score(X[test], y[test])))
        support.append(int(model.n_support_.sum()))
        if not kt.report(step=step, accuracy=sum(scores) / len(scores)):
            print("stopping early as asked", file=sys.stderr)
            return 0
    accuracy = sum(scores) / len(scores)
    kt.report(accuracy=accuracy, fit_seconds=time.perf_counter() - start,
              support_vectors=sum(support) / len(support))
    print(f"accuracy={accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
