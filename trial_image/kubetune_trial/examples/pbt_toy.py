"""Example pbt trial: the toy problem of the PBT paper (Jaderberg et al. 2017, section 4.1 and figure 2).

The model is ``theta = (theta0, theta1)``, started at ``(0.9, 0.9)``; the score to maximize is
``Q(theta) = 1.2 - (theta0^2 + theta1^2)``. Training does not see ``Q`` but a surrogate that the hyperparameters
``h = (h0, h1)`` weight, ``Q_hat(theta | h) = 1.2 - (h0 theta0^2 + h1 theta1^2)``, and takes gradient ascent steps on
it with step size 0.01: ``theta_i <- theta_i - 0.01 * 2 * h_i * theta_i``. A step is one training step; the trial
reports ``Q`` after each and writes ``theta`` and the step to its checkpoint first.

It runs as one pbt segment (see :mod:`kubetune_trial.checkpoint`): it restores ``theta`` from
``restore_dir()`` (and checks that the checkpoint holds the step ``restore_step()`` says; a mismatch is an error,
exit code 3), trains to ``end_step()`` (``--steps`` without pbt) and makes a final report.

    python -m kubetune_trial.examples.pbt_toy --h0 0.5 --h1 0.9
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import kubetune_trial as kt

STEP_SIZE = 0.01
START = (0.9, 0.9)
CHECKPOINT_FILE = "theta.json"


def score(theta: tuple[float, float]) -> float:
    return 1.2 - (theta[0] ** 2 + theta[1] ** 2)


def step(theta: tuple[float, float], h: tuple[float, float]) -> tuple[float, float]:
    return (theta[0] - STEP_SIZE * 2 * h[0] * theta[0], theta[1] - STEP_SIZE * 2 * h[1] * theta[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--h0", type=float, required=True)
    parser.add_argument("--h1", type=float, required=True)
    parser.add_argument("--steps", type=int, default=20, help="steps to train to without pbt")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds to wait after each step (for demos)")
    args = parser.parse_args(argv)
    h = (args.h0, args.h1)
    theta, start = START, 0
    source = kt.restore_dir()
    if source:
        with open(os.path.join(source, CHECKPOINT_FILE)) as f:
            saved = json.load(f)
        if saved["step"] != kt.restore_step():
            print(f"checkpoint in {source} holds step {saved['step']}, expected {kt.restore_step()}", file=sys.stderr)
            return 3
        theta, start = (float(saved["theta"][0]), float(saved["theta"][1])), int(saved["step"])
    end = kt.end_step() or args.steps
    directory = kt.checkpoint_dir()
    for s in range(start + 1, end + 1):
        theta = step(theta, h)
        if directory:
            tmp = os.path.join(directory, CHECKPOINT_FILE + ".tmp")
            with open(tmp, "w") as f:
                json.dump({"step": s, "theta": list(theta)}, f)
            os.replace(tmp, os.path.join(directory, CHECKPOINT_FILE))
        if not kt.report(step=s, q=score(theta)):
            break
        if args.sleep:
            time.sleep(args.sleep)
    kt.report(q=score(theta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
