"""Example pbt trial on real data: a linear classifier (scikit-learn ``SGDClassifier``, log loss, constant learning
rate ``eta0``, L2 penalty ``alpha``) on the digits data set, trained one epoch (``partial_fit`` over the shuffled
training set) per step.

A constant learning rate is a schedule-sensitive choice: a large one learns fast and then rattles around the
optimum, a small one is precise but slow, so the best rate falls as training goes on. Under ``algorithm: pbt`` the
population finds such a schedule: each segment restores the model from ``restore_dir()`` (a pickle written by
another trial of the same experiment), trains to ``end_step()`` with its own ``eta0`` and ``alpha``, writes the model
to ``checkpoint_dir()`` before reporting each step's validation ``accuracy``, and makes a final report.

    python -m kubetune_trial.examples.digits_sgd --eta0 0.05 --alpha 1e-5 --epochs 30
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import warnings

import kubetune_trial as kt

CHECKPOINT_FILE = "model.pkl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eta0", type=float, required=True, help="the (constant) learning rate")
    parser.add_argument("--alpha", type=float, default=1e-5, help="L2 penalty")
    parser.add_argument("--epochs", type=int, default=30, help="epochs to train to without pbt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_val = scaler.transform(X_train), scaler.transform(X_val)
    classes = np.unique(y)

    start, model = 0, None
    source = kt.restore_dir()
    if source:
        with open(os.path.join(source, CHECKPOINT_FILE), "rb") as f:
            saved = pickle.load(f)  # written by a trial of this experiment (see the module docstring)
        start, model = int(saved["step"]), saved["model"]
    if model is None:
        model = SGDClassifier(loss="log_loss", learning_rate="constant", random_state=args.seed)
    model.set_params(eta0=args.eta0, alpha=args.alpha)
    directory = kt.checkpoint_dir()
    end = kt.end_step() or args.epochs
    accuracy = float(model.score(X_val, y_val)) if start else 0.0
    for step in range(start + 1, end + 1):
        order = np.random.default_rng([args.seed, step]).permutation(len(y_train))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.partial_fit(X_train[order], y_train[order], classes=classes)
        accuracy = float(model.score(X_val, y_val))
        if directory:
            tmp = os.path.join(directory, CHECKPOINT_FILE + ".tmp")
            with open(tmp, "wb") as f:
                pickle.dump({"step": step, "model": model}, f)
            os.replace(tmp, os.path.join(directory, CHECKPOINT_FILE))
        if not kt.report(step=step, accuracy=accuracy):
            break
    kt.report(accuracy=accuracy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
