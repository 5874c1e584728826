"""Outcome constraints: the best feasible value after the same budget, kubetune against Optuna's constrained TPE.

Usage (from the repository root)::

    nice -n 19 python benchmarks/constrained.py            # the documented run (docs/benchmarks.md)
    python benchmarks/constrained.py --quick               # one problem, 2 seeds, 12 trials (seconds)
    python benchmarks/constrained.py --json out.json

Problems (minimization, each with one or two inequality constraints and a known constrained optimum):

* ``gardner``: Gardner et al. 2014 ("Bayesian optimization with inequality constraints", ICML), the simulated problem
  ``min cos(2 x1) cos(x2) + sin(x1)`` s.t. ``cos(x1) cos(x2) - sin(x1) sin(x2) <= 0.5`` on ``[0, 6]^2`` (optimum -2);
* ``gramacy``: Gramacy et al. 2016 ("Modeling an augmented Lagrangian for blackbox constrained optimization"), the
  toy problem ``min x1 + x2`` s.t. ``1.5 - x1 - 2 x2 - 0.5 sin(2 pi (x1^2 - 2 x2)) <= 0`` and
  ``x1^2 + x2^2 - 1.5 <= 0`` on ``[0, 1]^2`` (optimum 0.5998);
* ``branin-disk``: Branin s.t. ``(x1 - 2.5)^2 + (x2 - 7.5)^2 <= 50`` (Gelbart et al. 2014), one of Branin's three
  minima feasible (0.397887);
* ``gomez-levy``: Gomez and Levy's problem ``min 4x^2 - 2.1x^4 + x^6/3 + xy - 4y^2 + 4y^4`` s.t.
  ``-sin(4 pi x) + 2 sin^2(2 pi y) <= 0`` on ``[-1, 0.75] x [-1, 1]`` (optimum -0.9711).

The optimum column is each problem's constrained minimum as computed here by brute force (a 2,001 x 2,001 grid, then
Nelder-Mead from the best feasible grid points with a penalty), so the regret needs no value copied from a paper.

Optimizers, each with the same budget of ``--trials`` trials and 10 initial quasi-random/random trials:

* ``kubetune-tpe``, ``kubetune-bayesian``, ``kubetune-random``: the experiment planned exactly as the operator plans
  it (:func:`kubetune.plan.make_plan` over a :class:`~kubetune.plan.History`), ``spec.constraints`` bounding the
  constraint metrics the trial reports;
* ``optuna-tpe``: Optuna's ``TPESampler(constraints_func=..., seed=...)`` with its defaults (univariate), and
  ``optuna-tpe-mv`` with ``multivariate=True`` (kubetune's tpe is multivariate by default);
* Optuna's ``GPSampler(constraints_func=...)`` needs PyTorch, which is not installed here; it is listed as not run.

Reported per problem and optimizer: the best feasible value after the budget (mean and standard error over seeds;
a run that found no feasible trial counts as the worst feasible value any run found, and how many did so is shown),
the regret to the optimum, and the share of feasible trials after the initial 10. BLAS/OpenMP limited to one thread.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from benchmarks.warm_start import machine  # noqa: E402
from kubetune.plan import History, make_plan  # noqa: E402
from kubetune.spec import ExperimentSpec  # noqa: E402
from kubetune.trials import Trial, TrialState  # noqa: E402

N_STARTUP = 10


Fn = Callable[[Any, Any], Any]
"""``fn(x1, x2)`` on floats or numpy arrays alike (numpy functions only)."""


@dataclass(frozen=True)
class Problem:
    name: str
    bounds: tuple[tuple[float, float], tuple[float, float]]
    f: Fn
    constraints: tuple[Fn, ...]
    """Each ``g(x1, x2) <= 0`` when it holds."""

    def evaluate(self, x1: float, x2: float) -> tuple[float, tuple[float, ...]]:
        return float(self.f(x1, x2)), tuple(float(g(x1, x2)) for g in self.constraints)


def _branin(a: Any, b: Any) -> Any:
    return ((b - 5.1 / (4 * np.pi**2) * a**2 + 5 / np.pi * a - 6) ** 2 + 10 * (1 - 1 / (8 * np.pi)) * np.cos(a)
            + 10)


def problems() -> list[Problem]:
    pi = np.pi
    return [
        Problem("gardner", ((0.0, 6.0), (0.0, 6.0)),
                lambda a, b: np.cos(2 * a) * np.cos(b) + np.sin(a),
                (lambda a, b: np.cos(a) * np.cos(b) - np.sin(a) * np.sin(b) - 0.5,)),
        Problem("gramacy", ((0.0, 1.0), (0.0, 1.0)),
                lambda a, b: a + b,
                (lambda a, b: 1.5 - a - 2 * b - 0.5 * np.sin(2 * pi * (a * a - 2 * b)),
                 lambda a, b: a * a + b * b - 1.5)),
        Problem("branin-disk", ((-5.0, 10.0), (0.0, 15.0)),
                _branin,
                (lambda a, b: (a - 2.5) ** 2 + (b - 7.5) ** 2 - 50.0,)),
        Problem("gomez-levy", ((-1.0, 0.75), (-1.0, 1.0)),
                lambda a, b: 4 * a**2 - 2.1 * a**4 + a**6 / 3 + a * b - 4 * b**2 + 4 * b**4,
                (lambda a, b: -np.sin(4 * pi * a) + 2 * np.sin(2 * pi * b) ** 2,)),
    ]


@cache
def optimum(name: str) -> float:
    """The constrained minimum by brute force: a dense grid, then Nelder-Mead with a penalty from the best points."""
    from scipy.optimize import minimize

    p = next(q for q in problems() if q.name == name)
    (l1, h1), (l2, h2) = p.bounds
    a, b = np.meshgrid(np.linspace(l1, h1, 2001), np.linspace(l2, h2, 2001), indexing="ij")
    ok = np.ones(a.shape, dtype=bool)
    for g in p.constraints:
        ok &= g(a, b) <= 0
    f = np.where(ok, p.f(a, b), np.inf).ravel()
    idx = np.argsort(f)[:20]
    best = float(f[idx[0]])

    def penalized(x: np.ndarray) -> float:
        if not (l1 <= x[0] <= h1 and l2 <= x[1] <= h2):
            return math.inf
        v, cs = p.evaluate(float(x[0]), float(x[1]))
        return v if all(c <= 0 for c in cs) else math.inf

    for i in idx:
        x0 = np.array([a.ravel()[i], b.ravel()[i]])
        res = minimize(penalized, x0, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12})
        if math.isfinite(res.fun):
            best = min(best, float(res.fun))
    return best


# -- optimizers -----------------------------------------------------------------------------------------------------

Trace = list[tuple[float, tuple[float, ...]]]
"""Per trial: the objective value and the constraint values, in trial order."""


def run_kubetune(p: Problem, algorithm: str, seed: int, trials: int) -> Trace:
    (l1, h1), (l2, h2) = p.bounds
    doc: dict[str, Any] = {
        "objective": {"metric": "f", "goal": "minimize"},
        "constraints": [{"metric": f"g{i}", "max": 0.0} for i in range(len(p.constraints))],
        "parameters": [{"name": "x1", "type": "float", "min": l1, "max": h1},
                       {"name": "x2", "type": "float", "min": l2, "max": h2}],
        "algorithm": {"name": algorithm, "seed": seed},
        "maxTrials": trials,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    if algorithm in ("tpe", "bayesian"):
        doc["algorithm"]["settings"] = {"nStartupTrials": N_STARTUP}
    spec = ExperimentSpec.model_validate(doc)
    history = History(spec, "bench")
    out: Trace = []
    for _ in range(trials):
        plan = make_plan(spec, [], experiment="bench", history=history)
        if not plan.create:
            break
        new = plan.create[0]
        value, cs = p.evaluate(float(new.params["x1"]), float(new.params["x2"]))
        metrics = {"f": value, **{f"g{i}": c for i, c in enumerate(cs)}}
        history.add(Trial(new.number, dict(new.params), TrialState.SUCCEEDED, metrics))
        out.append((value, cs))
    return out


def run_optuna(p: Problem, seed: int, trials: int, multivariate: bool) -> Trace:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (l1, h1), (l2, h2) = p.bounds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constraints_func is deprecated in favour of Trial.set_constraint
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_STARTUP, multivariate=multivariate,
                                             constraints_func=lambda t: t.user_attrs["constraints"])
    study = optuna.create_study(direction="minimize", sampler=sampler)
    out: Trace = []

    def objective(trial: Any) -> float:
        value, cs = p.evaluate(trial.suggest_float("x1", l1, h1), trial.suggest_float("x2", l2, h2))
        trial.set_user_attr("constraints", list(cs))
        out.append((value, cs))
        return value

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(objective, n_trials=trials)
    return out


OPTIMIZERS: dict[str, Callable[[Problem, int, int], Trace]] = {
    "kubetune-tpe": lambda p, s, n: run_kubetune(p, "tpe", s, n),
    "kubetune-bayesian": lambda p, s, n: run_kubetune(p, "bayesian", s, n),
    "optuna-tpe": lambda p, s, n: run_optuna(p, s, n, multivariate=False),
    "optuna-tpe-mv": lambda p, s, n: run_optuna(p, s, n, multivariate=True),
    "kubetune-random": lambda p, s, n: run_kubetune(p, "random", s, n),
}
NOT_RUN = {"optuna-gp": "Optuna's GPSampler(constraints_func=...) imports PyTorch, which is not installed here"}


# -- results --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    problem: str
    optimizer: str
    seed: int
    best: float | None
    """Best feasible value after the budget; None when no trial was feasible."""
    feasible_share: float
    """Share of feasible trials after the initial ``N_STARTUP``."""
    seconds: float


def one(p: Problem, optimizer: str, seed: int, trials: int) -> Row:
    started = time.process_time()
    trace = OPTIMIZERS[optimizer](p, seed, trials)
    seconds = time.process_time() - started
    feasible = [v for v, cs in trace if all(c <= 0 for c in cs)]
    later = trace[N_STARTUP:]
    share = sum(all(c <= 0 for c in cs) for _v, cs in later) / len(later) if later else 0.0
    return Row(p.name, optimizer, seed, min(feasible) if feasible else None, share, seconds)


def _mean_se(values: list[float]) -> tuple[float, float]:
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return m, se


def table(rows: list[Row], trials: int) -> str:
    lines = [f"| problem (optimum) | optimizer | best feasible after {trials} (mean ± s.e.) | regret | "
             f"feasible trials after {N_STARTUP} | runs without a feasible trial | CPU s per run |",
             "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r.problem for r in rows):
        group = [r for r in rows if r.problem == name]
        worst = max((r.best for r in group if r.best is not None), default=math.nan)
        opt = optimum(name)
        means = {}
        for optimizer in dict.fromkeys(r.optimizer for r in group):
            mine = [r for r in group if r.optimizer == optimizer]
            means[optimizer] = _mean_se([r.best if r.best is not None else worst for r in mine])
        top = min(m for m, _ in means.values())
        for optimizer, (m, se) in means.items():
            mine = [r for r in group if r.optimizer == optimizer]
            cell = f"{m:.4f} ± {se:.4f}"
            if m == top:
                cell = f"**{cell}**"
            share = _mean_se([r.feasible_share for r in mine])
            missing = sum(r.best is None for r in mine)
            lines.append(f"| {name} ({opt:.4f}) | {optimizer} | {cell} | {m - opt:.4f} | {share[0]:.0%} | "
                         f"{missing} of {len(mine)} | {statistics.fmean(r.seconds for r in mine):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one problem, 2 seeds, 12 trials")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--problems", default=",".join(p.name for p in problems()))
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    chosen = [p for p in problems() if p.name in args.problems.split(",")]
    optimizers = args.optimizers.split(",")
    seeds, trials = args.seeds, args.trials
    if args.quick:
        chosen, seeds, trials = chosen[1:2], 2, 12
    load = os.getloadavg()
    started, cpu0 = time.monotonic(), time.process_time()
    rows = [one(p, optimizer, seed, trials) for p in chosen for optimizer in optimizers for seed in range(seeds)]
    wall, cpu = time.monotonic() - started, time.process_time() - cpu0
    print(table(rows, trials))
    print("\nnot run: " + "; ".join(f"{k}: {v}" for k, v in NOT_RUN.items()))
    print(f"{len(rows)} runs of {trials} trials ({N_STARTUP} initial); wall {wall:.0f} s, CPU {cpu:.0f} s; load "
          f"average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
