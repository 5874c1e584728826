"""A synthetic trial with a learning curve, for end-to-end tests of early stopping under ``kubetune run``.

``accuracy`` after epoch ``e`` (1-based) is ``quality * (1 - 0.5 ** e)``: every trial improves, the order of the
trials never changes, so a stopping rule has a clear right answer. Each epoch takes ``--epoch-seconds``. The
trial stops as soon as :func:`kubetune_trial.report` returns False, and writes the epochs it ran to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time

import kubetune_trial as kt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quality", type=float, required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--epoch-seconds", type=float, default=0.1)
    args = parser.parse_args()
    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        time.sleep(args.epoch_seconds)
        accuracy = args.quality * (1 - 0.5 ** epoch)
        if not kt.report(step=epoch, accuracy=accuracy):
            print(f"stopped after epoch {epoch}")
            return 0
    kt.report(accuracy=accuracy)
    print(f"finished {args.epochs} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
