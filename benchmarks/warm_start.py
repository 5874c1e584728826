"""Warm start: the best value after N trials with and without the trials of a related earlier experiment.

Usage (from the repository root)::

    python benchmarks/warm_start.py            # the documented run (docs/benchmarks.md): 3 pairs x 2 algorithms x 5 seeds
    python benchmarks/warm_start.py --quick    # one pair, one algorithm, 2 seeds, 8 trials (seconds)
    python benchmarks/warm_start.py --json out.json

Each pair is a source problem and a related target problem on the same search space: the same synthetic function
shifted a little, or the same model (an RBF SVM) on two halves of scikit-learn's digits. Per algorithm and seed:

1. the *source* experiment runs ``--source-trials`` trials on the source problem (cold, that seed);
2. *cold*: the target experiment runs ``--trials`` trials without a warm start (that seed);
3. *warm*: the same target experiment, same seed, with ``spec.warmStart`` taking in the source's trials
   (:func:`kubetune.warmstart.take_in`, the rule both backends apply).

Trials are planned exactly as the operator plans them (:func:`kubetune.plan.make_plan` over a
:class:`~kubetune.plan.History` with the warm-start observations), one at a time. Reported: the best target value
after 5 and after ``--trials`` trials (lower is better), averaged over seeds, and on how many seeds warm beat cold.
BLAS/OpenMP are limited to one thread.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from benchmarks.problems import branin, hartmann6  # noqa: E402
from kubetune.plan import History, make_plan  # noqa: E402
from kubetune.spec import ExperimentSpec  # noqa: E402
from kubetune.trials import Trial, TrialState  # noqa: E402
from kubetune.warmstart import take_in  # noqa: E402

Loss = Callable[[Mapping[str, Any]], float]


@dataclass(frozen=True)
class Pair:
    name: str
    parameters: list[dict[str, Any]]
    source: Loss
    target: Loss


def _x(p: Mapping[str, Any], d: int) -> np.ndarray:
    return np.array([float(p[f"x{i}"]) for i in range(d)])


def _box(d: int, low: float, high: float) -> list[dict[str, Any]]:
    return [{"name": f"x{i}", "type": "float", "min": low, "max": high} for i in range(d)]


@cache
def _digits_halves() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    low = y < 5
    return (X[low], y[low]), (X[~low], y[~low])


def _svm_error(half: int) -> Loss:
    def loss(p: Mapping[str, Any]) -> float:
        from sklearn.model_selection import cross_val_score
        from sklearn.svm import SVC

        X, y = _digits_halves()[half]
        model = SVC(C=float(p["C"]), gamma=float(p["gamma"]))
        return float(1.0 - cross_val_score(model, X, y, cv=3).mean())

    return loss


def pairs() -> list[Pair]:
    shift6 = 0.08
    return [
        Pair("hartmann6 / shifted by 0.08", _box(6, 0.0, 1.0), lambda p: hartmann6(_x(p, 6)),
             lambda p: hartmann6(np.clip(_x(p, 6) - shift6, 0.0, 1.0))),
        Pair("branin / shifted by (1, 1)", [{"name": "x0", "type": "float", "min": -5.0, "max": 10.0},
                                            {"name": "x1", "type": "float", "min": 0.0, "max": 15.0}],
             lambda p: branin(_x(p, 2)), lambda p: branin(_x(p, 2) - 1.0)),
        Pair("SVM digits 0-4 / digits 5-9",
             [{"name": "C", "type": "float", "min": 0.01, "max": 1000.0, "scale": "log"},
              {"name": "gamma", "type": "float", "min": 1e-5, "max": 10.0, "scale": "log"}],
             _svm_error(0), _svm_error(1)),
    ]


def spec_for(pair: Pair, algorithm: str, seed: int, trials: int, warm: bool) -> ExperimentSpec:
    doc: dict[str, Any] = {
        "objective": {"metric": "loss", "goal": "minimize"},
        "parameters": pair.parameters,
        "algorithm": {"name": algorithm, "seed": seed},
        "maxTrials": trials,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    if warm:
        doc["warmStart"] = {"experiments": ["source"], "maxTrials": 100}
    return ExperimentSpec.model_validate(doc)


def run(spec: ExperimentSpec, loss: Loss, warm: tuple[Any, ...] = ()) -> list[Trial]:
    """The experiment's trials one at a time, planned as the operator plans them."""
    history = History(spec, "bench", warm=warm)
    out: list[Trial] = []
    for _ in range(spec.max_trials):
        plan = make_plan(spec, [], experiment="bench", history=history)
        if not plan.create:
            break
        new = plan.create[0]
        value = loss(new.params)
        trial = Trial(new.number, dict(new.params), TrialState.SUCCEEDED, {"loss": value})
        history.add(trial)
        out.append(trial)
    return out


def best_after(trials: list[Trial], n: int) -> float:
    return min(t.metrics["loss"] for t in trials[:n])


@dataclass
class Row:
    pair: str
    algorithm: str
    seed: int
    cold5: float
    warm5: float
    cold: float
    warm: float
    taken: int


def one(pair: Pair, algorithm: str, seed: int, trials: int, source_trials: int) -> Row:
    source = run(spec_for(pair, algorithm, seed + 1000, source_trials, False), pair.source)
    warm_spec = spec_for(pair, algorithm, seed, trials, True)
    taken = take_in(warm_spec, [("source", source)])
    cold = run(spec_for(pair, algorithm, seed, trials, False), pair.target)
    warm = run(warm_spec, pair.target, taken.observations)
    return Row(pair.name, algorithm, seed, best_after(cold, 5), best_after(warm, 5), best_after(cold, trials),
               best_after(warm, trials), taken.taken)


def table(rows: list[Row], trials: int) -> str:
    lines = [f"| pair | algorithm | seeds | best after 5: cold | warm | best after {trials}: cold | warm | "
             f"warm better (of seeds) |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r.pair, r.algorithm) for r in rows}, key=lambda k: ([r.pair for r in rows].index(k[0]), k[1]))
    for pair, algorithm in keys:
        group = [r for r in rows if (r.pair, r.algorithm) == (pair, algorithm)]

        def cell(values: list[float]) -> str:
            mean = statistics.fmean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{mean:.4g} ± {sd:.2g}"

        wins = sum(r.warm < r.cold for r in group)
        ties = sum(math.isclose(r.warm, r.cold) for r in group)
        lines.append(f"| {pair} | {algorithm} | {len(group)} | {cell([r.cold5 for r in group])} | "
                     f"{cell([r.warm5 for r in group])} | {cell([r.cold for r in group])} | "
                     f"{cell([r.warm for r in group])} | {wins}" + (f" ({ties} tied)" if ties else "") + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one pair, tpe, 2 seeds, 8 trials")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=20, help="target trials (default 20)")
    ap.add_argument("--source-trials", type=int, default=30)
    ap.add_argument("--algorithms", default="tpe,bayesian")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    chosen = pairs()
    algorithms = args.algorithms.split(",")
    seeds, trials, source_trials = args.seeds, args.trials, args.source_trials
    if args.quick:
        chosen, algorithms, seeds, trials, source_trials = chosen[1:2], ["tpe"], 2, 8, 12
    load = os.getloadavg()
    started, cpu0 = time.monotonic(), time.process_time()
    rows = [one(pair, algorithm, seed, trials, source_trials)
            for pair in chosen for algorithm in algorithms for seed in range(seeds)]
    wall, cpu = time.monotonic() - started, time.process_time() - cpu0
    print(table(rows, trials))
    print(f"\n{len(rows)} runs; {source_trials} source trials, {trials} target trials each; wall {wall:.0f} s, "
          f"CPU {cpu:.0f} s; load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after; {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
