"""Example trial with a learning curve: a small neural network (scikit-learn MLP) on the digits data set, trained
epoch by epoch with ``partial_fit``.

After every epoch it reports the validation ``accuracy`` with ``step`` = the number of epochs trained so far (1, 2,
...), which is what early stopping (``spec.earlyStopping``) and Hyperband's resource count. When
:func:`kubetune_trial.report` returns False, kubetune asked the trial to stop: it exits at once.

    python -m kubetune_trial.examples.digits_mlp --lr 0.01 --alpha 1e-4 --hidden 64 --epochs 27

With ``--checkpoint-dir`` the model is saved there after training, under a name derived from every parameter but
``--epochs``, and a later run of the same configuration with more epochs resumes from it (reporting only the new
epochs). That is what makes Hyperband's promotions cheap: a promoted configuration continues instead of starting
over. On a cluster the directory must be shared by the trials (a ReadWriteMany volume).

With ``spec.checkpoints`` (no ``--checkpoint-dir``) it follows the trial contract instead: it resumes from
``model.pkl`` in ``kt.restore_dir()`` (a hyperband or asha promotion; exit 3 when that checkpoint does not hold
``kt.restore_step()`` epochs), trains to ``kt.end_step()`` when kubetune sets it (in place of ``--epochs``), and
saves ``model.pkl`` to ``kt.checkpoint_dir()`` after training.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
import time
import warnings
from pathlib import Path

import kubetune_trial as kt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, required=True, help="initial learning rate (Adam)")
    parser.add_argument("--alpha", type=float, default=1e-4, help="L2 penalty")
    parser.add_argument("--hidden", type=int, default=64, help="units in the hidden layer")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=27, help="epochs to train (the resource)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", help="resume from / save to a checkpoint of this configuration here")
    args = parser.parse_args(argv)
    if not args.checkpoint_dir and kt.end_step() is not None:
        args.epochs = kt.end_step()  # a segment that ends at a rung (asha with spec.checkpoints) or a promotion

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    model = MLPClassifier(hidden_layer_sizes=(args.hidden,), learning_rate_init=args.lr, alpha=args.alpha,
                          batch_size=args.batch_size, random_state=args.seed)
    done = 0
    checkpoint = None
    if args.checkpoint_dir:
        key = json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in ("epochs", "checkpoint_dir")})
        checkpoint = Path(args.checkpoint_dir) / f"digits-mlp-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl"
        if checkpoint.exists():
            saved_epochs, saved_model = pickle.loads(checkpoint.read_bytes())
            if saved_epochs <= args.epochs:
                done, model = saved_epochs, saved_model
                print(f"resuming from {checkpoint} after epoch {done}", file=sys.stderr)
    elif kt.restore_dir():
        restored = Path(kt.restore_dir() or "") / "model.pkl"
        done, model = pickle.loads(restored.read_bytes())
        if done != kt.restore_step():
            print(f"{restored} holds epoch {done}, not {kt.restore_step()}", file=sys.stderr)
            return 3
        print(f"resuming from {restored} after epoch {done}", file=sys.stderr)
    classes = np.unique(y)
    start = time.perf_counter()
    accuracy = float(model.score(X_val, y_val)) if done else 0.0
    for epoch in range(done + 1, args.epochs + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow warnings of diverging learning rates: a bad trial, not a crash
            model.partial_fit(X_train, y_train, classes=classes)
        accuracy = float(model.score(X_val, y_val))
        if not kt.report(step=epoch, accuracy=accuracy):
            print(f"stopped early after epoch {epoch} as asked", file=sys.stderr)
            return 0
    if checkpoint is None and kt.checkpoint_dir():
        checkpoint = Path(kt.checkpoint_dir() or "") / "model.pkl"
    if checkpoint is not None and args.epochs > done:
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        tmp = checkpoint.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps((args.epochs, model)))
        os.replace(tmp, checkpoint)  # atomic: a concurrent reader sees the old or the new checkpoint
    kt.report(accuracy=accuracy, fit_seconds=time.perf_counter() - start)
    print(f"accuracy={accuracy:.4f} after {args.epochs} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
