"""Several objectives: the hypervolume each algorithm's trials dominate after the same budget, side by side.

Algorithms: kubetune's ``tpe`` (MOTPE) and ``random``, Optuna's ``NSGAIISampler`` and ``TPESampler`` (multi-objective
TPE), each with its library defaults and a seed, one trial at a time (ask, evaluate, tell). Problems:

* ZDT1 and ZDT2 (Zitzler, Deb and Thiele 2000), two objectives over ``[0, 1]^d``, ``d = 10``:
  ``f1 = x1``, ``g = 1 + 9 * mean(x2..xd)``, ``f2 = g * (1 - sqrt(f1 / g))`` (ZDT1, a convex front) or
  ``g * (1 - (f1 / g)^2)`` (ZDT2, a concave one); reference point ``(1.1, 11)``;
* DTLZ2 (Deb, Thiele, Laumanns and Zitzler 2002), three objectives over ``[0, 1]^7`` (``k = 5``):
  ``g = sum((x_i - 0.5)^2, i >= 3)``, ``f1 = (1 + g) cos(x1 pi/2) cos(x2 pi/2)``, ``f2 = (1 + g) cos(x1 pi/2)
  sin(x2 pi/2)``, ``f3 = (1 + g) sin(x1 pi/2)``; reference point ``(2.5, 2.5, 2.5)``;
* an SVM on scikit-learn's digits (C and gamma, log scales): minimize the 3-fold cross-validated error and the
  model's size, the mean number of support vectors over the folds as a fraction of a fold's training rows
  (deterministic); reference point ``(1, 1)``.

The score is the exact hypervolume (:func:`kubetune.engine.pareto.hypervolume`) of every evaluated point against the
fixed reference point, mean and standard error over seeds; for the synthetic problems the table also gives the
hypervolume of a dense sample of the true front (what no run can exceed).

Run: ``nice -n 19 python benchmarks/multiobjective.py`` (``--quick`` for a smoke run of a few seconds).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kubetune.engine import FloatDistribution, Observation, ObservationState, SearchSpace, make_sampler
from kubetune.engine.pareto import hypervolume

Params = dict[str, Any]


@dataclass(frozen=True)
class Problem:
    name: str
    space: SearchSpace
    evaluate: Callable[[Params], tuple[float, ...]]
    reference: tuple[float, ...]
    best_front: np.ndarray | None = None
    """A dense sample of the true Pareto front (its hypervolume is the best any run can reach), when known."""

    @property
    def objectives(self) -> int:
        return len(self.reference)


def _unit_space(d: int) -> SearchSpace:
    return SearchSpace.of({f"x{i}": FloatDistribution(0.0, 1.0) for i in range(d)})


def _x(p: Params, d: int) -> np.ndarray:
    return np.array([float(p[f"x{i}"]) for i in range(d)])


def zdt(kind: int, d: int = 10) -> Problem:
    def evaluate(p: Params) -> tuple[float, float]:
        x = _x(p, d)
        f1 = float(x[0])
        g = 1.0 + 9.0 * float(np.mean(x[1:]))
        h = 1.0 - math.sqrt(f1 / g) if kind == 1 else 1.0 - (f1 / g) ** 2
        return f1, g * h

    f1 = np.linspace(0.0, 1.0, 2001)
    front = np.column_stack([f1, 1 - np.sqrt(f1) if kind == 1 else 1 - f1**2])
    return Problem(f"ZDT{kind} (d={d})", _unit_space(d), evaluate, (1.1, 11.0), front)


def dtlz2(d: int = 7) -> Problem:
    def evaluate(p: Params) -> tuple[float, float, float]:
        x = _x(p, d)
        g = float(np.sum((x[2:] - 0.5) ** 2))
        a, b = x[0] * math.pi / 2, x[1] * math.pi / 2
        return ((1 + g) * math.cos(a) * math.cos(b), (1 + g) * math.cos(a) * math.sin(b), (1 + g) * math.sin(a))

    u = np.linspace(0.0, 1.0, 41)
    a, b = np.meshgrid(u * math.pi / 2, u * math.pi / 2)
    front = np.column_stack([(np.cos(a) * np.cos(b)).ravel(), (np.cos(a) * np.sin(b)).ravel(), np.sin(a).ravel()])
    return Problem(f"DTLZ2 (3 objectives, d={d})", _unit_space(d), evaluate, (2.5, 2.5, 2.5), front)


def svm_digits() -> Problem:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    folds = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=0).split(X, y))

    def evaluate(p: Params) -> tuple[float, float]:
        errors, sizes = [], []
        for train, test in folds:
            model = SVC(C=float(p["C"]), gamma=float(p["gamma"]), max_iter=100_000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # max_iter reached on a few extreme settings
                model.fit(X[train], y[train])
            errors.append(1.0 - float(model.score(X[test], y[test])))
            sizes.append(float(model.n_support_.sum()) / len(train))
        return float(np.mean(errors)), float(np.mean(sizes))

    space = SearchSpace.of({"C": FloatDistribution(1e-2, 1e3, log=True), "gamma": FloatDistribution(1e-4, 10.0,
                                                                                                      log=True)})
    return Problem("SVM on digits: CV error vs support vectors", space, evaluate, (1.0, 1.0))


# -- algorithms ------------------------------------------------------------------------------------------------


class Kubetune:
    """A kubetune algorithm driven as the operator drives it: the whole history on every call."""

    def __init__(self, algorithm: str, problem: Problem, seed: int) -> None:
        self.sampler = make_sampler(algorithm, problem.space, seed=seed, objectives=problem.objectives)
        self.history: list[Observation] = []

    def ask(self) -> Params:
        return self.sampler.suggest(self.history, [], n=1)[0]

    def tell(self, params: Params, values: tuple[float, ...]) -> None:
        self.history.append(Observation(params, ObservationState.COMPLETE, None, losses=values))


class Optuna:
    """An Optuna sampler through its ask-and-tell interface (library defaults, one seed)."""

    def __init__(self, sampler: str, problem: Problem, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        made = (optuna.samplers.NSGAIISampler(seed=seed) if sampler == "nsga2"
                else optuna.samplers.TPESampler(seed=seed))
        self.study = optuna.create_study(directions=["minimize"] * problem.objectives, sampler=made)
        self.dists = {n: optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)
                      for n, d in problem.space.dims if isinstance(d, FloatDistribution)}
        self.trial: Any = None

    def ask(self) -> Params:
        self.trial = self.study.ask(self.dists)
        return dict(self.trial.params)

    def tell(self, params: Params, values: tuple[float, ...]) -> None:
        self.study.tell(self.trial, list(values))


ALGORITHMS: dict[str, Callable[[Problem, int], Any]] = {
    "kubetune tpe (MOTPE)": lambda p, s: Kubetune("tpe", p, s),
    "kubetune random": lambda p, s: Kubetune("random", p, s),
    "Optuna NSGAIISampler": lambda p, s: Optuna("nsga2", p, s),
    "Optuna TPESampler": lambda p, s: Optuna("tpe", p, s),
}


@dataclass
class Run:
    problem: str
    algorithm: str
    seed: int
    hypervolume: float
    seconds: float
    """CPU seconds of the algorithm's own ask and tell calls (evaluations excluded)."""


def run_one(problem: Problem, algorithm: str, seed: int, budget: int) -> Run:
    opt = ALGORITHMS[algorithm](problem, seed)
    points: list[tuple[float, ...]] = []
    spent = 0.0
    for _ in range(budget):
        t0 = time.process_time()
        params = opt.ask()
        spent += time.process_time() - t0
        values = problem.evaluate(params)
        points.append(values)
        t0 = time.process_time()
        opt.tell(params, values)
        spent += time.process_time() - t0
    return Run(problem.name, algorithm, seed, hypervolume(np.array(points), problem.reference), spent)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: tiny budgets, two seeds")
    ap.add_argument("--seeds", type=int, default=None)
    args = ap.parse_args(argv)
    print(table(run(quick=args.quick, seeds=args.seeds)))
    return 0


def run(quick: bool = False, seeds: int | None = None, log: bool = True) -> list[tuple[Problem, int, list[Run]]]:
    plan: list[tuple[Callable[[], Problem], int, int]] = [  # problem, budget, seeds
        (lambda: zdt(1), 100, 5), (lambda: zdt(2), 100, 5), (dtlz2, 100, 5), (svm_digits, 50, 3)]
    if quick:
        plan = [(lambda: zdt(1, 4), 12, 2), (lambda: dtlz2(4), 12, 2)]
    out = []
    for make, budget, n_seeds in plan:
        problem = make()
        runs = []
        for algorithm in ALGORITHMS:
            for seed in range(seeds if seeds is not None else n_seeds):
                r = run_one(problem, algorithm, seed, budget)
                runs.append(r)
                if log:
                    print(f"{problem.name:45s} {algorithm:22s} seed {seed}: hypervolume {r.hypervolume:.4f} "
                          f"({r.seconds:.1f} s)", file=sys.stderr, flush=True)
        out.append((problem, budget, runs))
    return out


def table(results: list[tuple[Problem, int, list[Run]]]) -> str:
    lines = []
    for problem, budget, runs in results:
        ref = ", ".join(f"{v:g}" for v in problem.reference)
        best = (f"; the true front's hypervolume {hypervolume(problem.best_front, problem.reference):.4f}"
                if problem.best_front is not None else "")
        lines += [f"{problem.name}, {budget} trials, reference point ({ref}){best}", "",
                  "| algorithm | hypervolume (mean ± s.e.) | seeds | algorithm CPU s per run |",
                  "|---|---|---|---|"]
        for algorithm in ALGORITHMS:
            hv = [r.hypervolume for r in runs if r.algorithm == algorithm]
            cpu = [r.seconds for r in runs if r.algorithm == algorithm]
            se = statistics.stdev(hv) / math.sqrt(len(hv)) if len(hv) > 1 else float("nan")
            lines.append(f"| {algorithm} | {statistics.mean(hv):.4f} ± {se:.4f} | {len(hv)} | "
                         f"{statistics.mean(cpu):.2f} |")
        lines.append("")
    lines.append(f"({platform.python_version()}, numpy {np.__version__}, {platform.machine()})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
