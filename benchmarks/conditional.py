"""Conditional against flat encoding of the same problem, for kubetune's tpe and bayesian (random as a reference).

Usage (from the repository root)::

    python benchmarks/conditional.py            # 20 seeds x 50 trials per algorithm and encoding (a few minutes)
    python benchmarks/conditional.py --quick    # 2 seeds x 15 trials (seconds)

The problem: a categorical ``family`` (a, b, c, d) chooses which three of twelve float parameters matter; each family
is the Hartmann 3-D function (global minimum -3.86278) of its own three parameters, coordinates permuted per family,
plus a family offset (0, 0.4, 0.8, 1.2), and a shared log-scaled ``lr`` adds ``0.1 * (log10(lr) + 2)^2``. The loss
is 0 at the optimum (family a). The *conditional* encoding declares each family's parameters active only under it
(``when``); the *flat* encoding declares all 14 parameters always active, and the objective ignores the nine that
its family does not use, as a user without conditions would write it. Same algorithm, seed and budget (trials
one at a time); the table gives the best loss found (mean, median over seeds), on how many seeds the conditional run
ended strictly better than the flat one of the same seed, and the mean time per suggestion. BLAS is limited to one
thread in every worker.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from kubetune.engine import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    Observation,
    ObservationState,
    SearchSpace,
    make_sampler,
)
from kubetune.engine.space import Condition  # noqa: E402

FAMILIES = ("a", "b", "c", "d")
OFFSETS = {"a": 0.0, "b": 0.4, "c": 0.8, "d": 1.2}
PERMUTATIONS = {"a": (0, 1, 2), "b": (2, 0, 1), "c": (1, 2, 0), "d": (2, 1, 0)}
ALGORITHMS = ["tpe", "bayesian", "random"]
ENCODINGS = ["conditional", "flat"]

_HA = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
_HC = np.array([1.0, 1.2, 3.0, 3.2])
_HP = 1e-4 * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]])
HARTMANN3_MIN = -3.86278214782076


def hartmann3(x: np.ndarray) -> float:
    return float(-np.sum(_HC * np.exp(-np.sum(_HA * (x[None, :] - _HP) ** 2, axis=1))))


def space(encoding: str) -> SearchSpace:
    dims: dict[str, Any] = {"family": CategoricalDistribution(FAMILIES),
                            "lr": FloatDistribution(1e-4, 1.0, log=True)}
    conditions = {}
    for f in FAMILIES:
        for i in range(3):
            dims[f"{f}{i}"] = FloatDistribution(0.0, 1.0)
            conditions[f"{f}{i}"] = Condition("family", (f,))
    return SearchSpace.of(dims, conditions if encoding == "conditional" else None)


def loss(params: dict[str, Any]) -> float:
    """0 at the optimum; reads only the chosen family's parameters (and lr)."""
    f = str(params["family"])
    x = np.array([float(params[f"{f}{i}"]) for i in PERMUTATIONS[f]])
    return (hartmann3(x) - HARTMANN3_MIN + OFFSETS[f]
            + 0.1 * (math.log10(float(params["lr"])) + 2.0) ** 2)


@dataclass
class RunResult:
    algorithm: str
    encoding: str
    seed: int
    best: float
    seconds_per_suggestion: float
    active_dims_mean: float


def run_one(algorithm: str, encoding: str, seed: int, trials: int) -> RunResult:
    sp = space(encoding)
    sampler = make_sampler(algorithm, sp, seed=seed)
    history: list[Observation] = []
    spent = 0.0
    dims = 0
    for _ in range(trials):
        started = time.process_time()
        [p] = sampler.suggest(history, [], n=1)
        spent += time.process_time() - started
        dims += len(p)
        history.append(Observation(p, ObservationState.COMPLETE, loss(p)))
    return RunResult(algorithm, encoding, seed, min(float(o.loss or 0.0) for o in history), spent / trials,
                     dims / trials)


def _job(args: tuple[str, str, int, int]) -> RunResult:
    return run_one(*args)


def run(seeds: int, trials: int, workers: int, algorithms: list[str]) -> list[RunResult]:
    jobs = [(a, e, s, trials) for a in algorithms for e in ENCODINGS for s in range(seeds)]
    if workers <= 1:
        return [_job(j) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_job, jobs))


def table(results: list[RunResult]) -> str:
    by = {(r.algorithm, r.encoding, r.seed): r for r in results}
    seeds = sorted({r.seed for r in results})
    lines = ["| algorithm | encoding | best loss, mean | median | conditional better on | s / suggestion |"
             " parameters per trial |",
             "|---|---|---|---|---|---|---|"]
    for a in dict.fromkeys(r.algorithm for r in results):
        for e in ENCODINGS:
            runs = [by[(a, e, s)] for s in seeds if (a, e, s) in by]
            if not runs:
                continue
            bests = [r.best for r in runs]
            wins = ""
            if e == "conditional":
                pairs = [(by[(a, "conditional", s)].best, by[(a, "flat", s)].best) for s in seeds
                         if (a, "flat", s) in by]
                wins = f"{sum(c < f for c, f in pairs)} of {len(pairs)} seeds"
            lines.append(f"| {a} | {e} | {statistics.fmean(bests):.3f} | {statistics.median(bests):.3f} | {wins} | "
                         f"{statistics.fmean(r.seconds_per_suggestion for r in runs):.3f} | "
                         f"{statistics.fmean(r.active_dims_mean for r in runs):.1f} |")
    return "\n".join(lines)


def machine() -> str:
    try:
        load = os.getloadavg()
        load_text = f"load average {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} at the start"
    except OSError:
        load_text = "load unknown"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, " \
           f"{load_text}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds x 15 trials")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = ap.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 20)
    trials = args.trials or (15 if args.quick else 50)
    where = machine()
    started = time.monotonic()
    results = run(seeds, trials, args.workers, args.algorithms.split(","))
    wall = time.monotonic() - started
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    print(f"conditional vs flat encoding: {seeds} seeds x {trials} trials, {args.workers} workers, {where}; "
          f"wall {wall:.0f} s, CPU {cpu:.0f} s\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
