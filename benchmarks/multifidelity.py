"""Multi-fidelity benchmark: early stopping and Hyperband against full-budget random search and Optuna's pruners.

Usage (from the repository root)::

    python benchmarks/multifidelity.py                  # the full run (docs/benchmarks-multifidelity.md)
    python benchmarks/multifidelity.py --quick          # one seed, tiny budgets: checks that everything runs
    python benchmarks/multifidelity.py --json out.json  # also keep the raw results

Tasks (real training, offline): scikit-learn's digits (1797 8x8 images) split 60/20/20 into train, validation and
test sets; a one-hidden-layer MLP (Adam) and a linear SGD classifier, both trained epoch by epoch with
``partial_fit``. The resource is the number of epochs (full budget 27); the objective is validation accuracy.

Methods, all with ``parallel`` trials running at once in lock step (every running trial trains one epoch per tick):

* ``random (full budget)``: random search, every trial trains 27 epochs: the reference.
* ``kubetune median`` / ``kubetune ASHA``: the same random configurations in the same order, stopped by
  ``spec.earlyStopping`` (``median`` with its defaults; ``asha`` with ``maxResource: 27`` and otherwise its
  defaults: minTrials 3, minResource 1, reductionFactor 3), driven through :func:`kubetune.plan.make_plan` exactly
  as the backends do.
* ``kubetune hyperband``: the ``hyperband`` algorithm with ``epochs`` (1..27) as its resource parameter; it draws
  its own random configurations and re-runs promoted ones from scratch with more epochs.
* ``kubetune hyperband + checkpoints``: the same, with trials that resume a promoted configuration from its
  checkpoint (as ``kubetune_trial.examples.digits_mlp --checkpoint-dir`` does), so only the new epochs are paid.
* ``optuna MedianPruner`` / ``SuccessiveHalvingPruner`` / ``HyperbandPruner``: Optuna's pruners on the same random
  configurations in the same order (enqueued), settings mirrored (5 startup trials; min resource 1, reduction
  factor 3, max resource 27).

Compute is counted in epochs and in seconds: every (configuration, seed) is trained once and its per-epoch
wall time measured, and each method is charged the measured time of every epoch it consumes (a re-run is charged
again). Training is deterministic given the seed, so a method that runs epochs 1..k of a configuration sees exactly
what training it from scratch would give. Each method gets the compute of the full-budget random search
(``trials`` x 27 epochs); in-flight trials are cut off there.

Quality: the best validation accuracy among trials that trained the full 27 epochs (the incumbent), and the test
accuracy of that trial. Time-to-quality: the compute at which a method's incumbent first reaches the final quality
of full-budget random search in the same seed (the target).
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
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from kubetune.engine import ParamValue, Sampler  # noqa: E402
from kubetune.engine.base import SuggestContext  # noqa: E402
from kubetune.engine.random import RandomSampler  # noqa: E402
from kubetune.plan import make_plan  # noqa: E402
from kubetune.pruning import make_pruner  # noqa: E402
from kubetune.spec import ExperimentSpec  # noqa: E402
from kubetune.trials import Trial, TrialState, add_curve_point  # noqa: E402

METHODS = ["random (full budget)", "kubetune median", "kubetune ASHA", "kubetune hyperband",
           "kubetune hyperband + checkpoints", "optuna MedianPruner", "optuna SuccessiveHalving",
           "optuna HyperbandPruner"]
REFERENCE = METHODS[0]
TASKS = ["mlp-digits", "sgd-digits"]


# --------------------------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    name: str
    parameters: list[dict[str, Any]]
    build: Callable[[dict[str, ParamValue], int], Any]


def _mlp(params: dict[str, ParamValue], seed: int) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(int(params["hidden"]),), learning_rate_init=float(params["lr"]),
                         alpha=float(params["alpha"]), batch_size=int(params["batch_size"]), random_state=seed)


def _sgd(params: dict[str, ParamValue], seed: int) -> Any:
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss=str(params["loss"]), penalty=str(params["penalty"]), alpha=float(params["alpha"]),
                         learning_rate=str(params["schedule"]), eta0=float(params["eta0"]), random_state=seed)


TASK_DEFS = {
    "mlp-digits": Task("mlp-digits", [
        {"name": "lr", "type": "float", "min": 1e-4, "max": 1.0, "scale": "log"},
        {"name": "alpha", "type": "float", "min": 1e-6, "max": 1.0, "scale": "log"},
        {"name": "hidden", "type": "int", "min": 16, "max": 256, "scale": "log"},
        {"name": "batch_size", "type": "int", "min": 16, "max": 256, "scale": "log"},
    ], _mlp),
    "sgd-digits": Task("sgd-digits", [
        {"name": "alpha", "type": "float", "min": 1e-7, "max": 1.0, "scale": "log"},
        {"name": "eta0", "type": "float", "min": 1e-5, "max": 1.0, "scale": "log"},
        {"name": "loss", "type": "categorical", "values": ["hinge", "log_loss", "modified_huber", "perceptron"]},
        {"name": "penalty", "type": "categorical", "values": ["l2", "l1", "elasticnet"]},
        {"name": "schedule", "type": "categorical", "values": ["constant", "optimal", "invscaling"]},
    ], _sgd),
}


class Data:
    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        X, y = load_digits(return_X_y=True)
        X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.4, stratify=y, random_state=0)
        X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, test_size=0.5, stratify=y_rest,
                                                        random_state=0)
        scaler = StandardScaler().fit(X_train)
        self.X_train, self.X_val, self.X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
        self.y_train, self.y_val, self.y_test = y_train, y_val, y_test
        self.classes = np.unique(y)


@dataclass
class Curve:
    model: Any
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


class Curves:
    """Per-epoch validation/test accuracy and measured training seconds of each configuration, trained lazily once."""

    def __init__(self, task: Task, data: Data, seed: int, max_epochs: int) -> None:
        self.task, self.data, self.seed, self.max_epochs = task, data, seed, max_epochs
        self.curves: dict[tuple[Any, ...], Curve] = {}
        self.trained_epochs = 0
        self.trained_seconds = 0.0

    def epoch(self, params: dict[str, ParamValue], e: int) -> tuple[float, float, float]:
        """(validation accuracy, test accuracy, training seconds) of epoch ``e`` (1-based)."""
        key = tuple(sorted((k, v) for k, v in params.items() if k != "epochs"))
        curve = self.curves.get(key)
        if curve is None:
            curve = self.curves[key] = Curve(self.task.build(params, self.seed))
        d = self.data
        while len(curve.val) < e:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # diverging learning rates overflow: a bad trial, not an error
                curve.model.partial_fit(d.X_train, d.y_train, classes=d.classes)
            dt = time.perf_counter() - t0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                curve.val.append(float(curve.model.score(d.X_val, d.y_val)))
                curve.test.append(float(curve.model.score(d.X_test, d.y_test)))
            curve.seconds.append(dt)
            self.trained_epochs += 1
            self.trained_seconds += dt
            if len(curve.val) >= self.max_epochs:
                curve.model = None  # the curve is complete: free the model
        return curve.val[e - 1], curve.test[e - 1], curve.seconds[e - 1]


# --------------------------------------------------------------------------------------------------- accounting


@dataclass
class Ledger:
    """Compute consumed and the incumbent over time, for one run of one method."""

    budget_epochs: int
    max_epochs: int
    epochs: int = 0
    seconds: float = 0.0
    best_val: float = -math.inf
    best_test: float = math.nan
    trials: int = 0
    pruned: int = 0
    full: int = 0
    trace: list[tuple[int, float, float]] = field(default_factory=list)
    """(epochs, seconds, best validation accuracy) each time the incumbent improves."""

    def charge(self, seconds: float) -> None:
        self.epochs += 1
        self.seconds += seconds

    def finished_full(self, val: float, test: float) -> None:
        self.full += 1
        if val > self.best_val:
            self.best_val, self.best_test = val, test
            self.trace.append((self.epochs, self.seconds, val))

    @property
    def exhausted(self) -> bool:
        return self.epochs >= self.budget_epochs

    def best_at(self, epochs: float) -> float:
        best = -math.inf
        for e, _, v in self.trace:
            if e <= epochs:
                best = v
        return best

    def reached(self, target: float) -> tuple[int, float] | None:
        for e, s, v in self.trace:
            if v >= target - 1e-12:
                return e, s
        return None


# --------------------------------------------------------------------------------------------------- kubetune


class StreamSampler(Sampler):
    """Trial ``i`` gets the ``i``-th configuration of a fixed random stream, so every method sees the same ones."""

    name = "stream"

    def __init__(self, space: Any, stream: list[dict[str, ParamValue]]) -> None:
        super().__init__(space, seed=0)
        self.stream = stream

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        start = len(ctx.history) + len(ctx.pending)
        return [dict(p) for p in self.stream[start:start + n]]


def _spec(task: Task, cfg: Config, seed: int, *, algorithm: dict[str, Any] | None = None,
          early: dict[str, Any] | None = None, max_trials: int = 10_000, epochs_param: bool = False) -> ExperimentSpec:
    params = list(task.parameters)
    if epochs_param:
        params.append({"name": "epochs", "type": "int", "min": 1, "max": cfg.max_epochs})
    doc: dict[str, Any] = {
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": params,
        "algorithm": algorithm or {"name": "random", "seed": seed},
        "maxTrials": max_trials,
        "parallelTrials": min(cfg.parallel, max_trials),
        "maxFailedTrials": max_trials,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    if early is not None:
        doc["earlyStopping"] = early
    return ExperimentSpec.model_validate(doc)


def run_kubetune(spec: ExperimentSpec, sampler: Sampler | None, curves: Curves, ledger: Ledger,
                 resume: bool = False) -> None:
    """The backends' loop, simulated: make_plan, apply stops and creations, train one epoch per running trial.

    ``resume``: a trial continues from the checkpoint of the same configuration's longest finished run (what a
    trial script that checkpoints, keyed by its other parameters, does under hyperband) instead of from scratch.
    """
    pruner = make_pruner(spec)
    trials: list[Trial] = []
    running: dict[int, Trial] = {}
    checkpoints: dict[tuple[Any, ...], int] = {}
    start: dict[int, int] = {}

    def config_key(params: dict[str, ParamValue]) -> tuple[Any, ...]:
        return tuple(sorted((k, v) for k, v in params.items() if k != "epochs"))
    while True:
        plan = make_plan(spec, trials, experiment="bench", sampler=sampler, pruner=pruner)
        for order in plan.stop:
            t = running.pop(order.number)
            t.state, t.reason, t.message = order.state, order.reason, order.message
            ledger.pruned += 1
        if ledger.exhausted or plan.finished:
            return
        for new in plan.create:
            t = Trial(number=new.number, params=new.params, state=TrialState.RUNNING)
            trials.append(t)
            running[t.number] = t
            ledger.trials += 1
            start[t.number] = checkpoints.get(config_key(t.params), 0) if resume else 0
        if not running:
            return
        for t in list(running.values()):
            target = int(t.params.get("epochs", curves.max_epochs))
            e = (t.curve[-1][0] if t.curve else start[t.number]) + 1
            val, test, secs = curves.epoch(t.params, e)
            ledger.charge(secs)
            t.curve = add_curve_point(t.curve, e, val)
            t.metrics = {"accuracy": val}
            if e >= target:
                t.state = TrialState.SUCCEEDED
                del running[t.number]
                key = config_key(t.params)
                checkpoints[key] = max(checkpoints.get(key, 0), e)
                if target == curves.max_epochs:
                    ledger.finished_full(val, test)


# --------------------------------------------------------------------------------------------------- optuna


def run_optuna(pruner_name: str, task: Task, stream: list[dict[str, ParamValue]], cfg: Config, seed: int,
               curves: Curves, ledger: Ledger) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = {
        "optuna MedianPruner": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
        "optuna SuccessiveHalving": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=3),
        "optuna HyperbandPruner": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=cfg.max_epochs, reduction_factor=3),
    }[pruner_name]()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed),
                                pruner=pruner, study_name=f"{task.name}-{seed}")
    for p in stream:
        study.enqueue_trial(p)

    def ask() -> tuple[Any, dict[str, ParamValue]]:
        trial = study.ask()
        params: dict[str, ParamValue] = {}
        for d in task.parameters:
            if d["type"] == "float":
                params[d["name"]] = trial.suggest_float(d["name"], d["min"], d["max"], log=d.get("scale") == "log")
            elif d["type"] == "int":
                params[d["name"]] = trial.suggest_int(d["name"], int(d["min"]), int(d["max"]),
                                                      log=d.get("scale") == "log")
            else:
                params[d["name"]] = trial.suggest_categorical(d["name"], d["values"])
        return trial, params

    running: list[list[Any]] = []  # [trial, params, epochs done]
    asked = 0
    while not ledger.exhausted:
        while len(running) < cfg.parallel and asked < len(stream):
            trial, params = ask()
            asked += 1
            ledger.trials += 1
            running.append([trial, params, 0])
        if not running:
            return
        for item in list(running):
            trial, params, done = item
            e = done + 1
            item[2] = e
            val, test, secs = curves.epoch(params, e)
            ledger.charge(secs)
            trial.report(val, e)
            if e == cfg.max_epochs:
                study.tell(trial, val)
                running.remove(item)
                ledger.finished_full(val, test)
            elif trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                running.remove(item)
                ledger.pruned += 1


# --------------------------------------------------------------------------------------------------- runs


@dataclass
class Config:
    tasks: list[str]
    seeds: list[int]
    trials: int = 30
    """Trials of the full-budget random search; every method gets its compute (trials x max_epochs)."""
    max_epochs: int = 27
    parallel: int = 4
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    workers: int = 2


@dataclass
class MethodRun:
    task: str
    seed: int
    method: str
    budget_epochs: int
    epochs: int
    seconds: float
    best_val: float
    best_test: float
    val_at_third: float
    trials: int
    pruned: int
    full: int
    target: float = math.nan
    to_target_epochs: float = math.nan
    to_target_seconds: float = math.nan
    wall: float = 0.0


def run_one(task_name: str, seed: int, cfg: Config) -> list[MethodRun]:
    task = TASK_DEFS[task_name]
    data = Data()
    curves = Curves(task, data, seed, cfg.max_epochs)
    budget = cfg.trials * cfg.max_epochs
    base = _spec(task, cfg, seed)
    stream = RandomSampler(base.search_space(), seed=seed).suggest([], [], n=budget)  # at most one trial per epoch
    out: list[MethodRun] = []
    for method in cfg.methods:
        t0 = time.perf_counter()
        ledger = Ledger(budget_epochs=budget, max_epochs=cfg.max_epochs)
        if method == "random (full budget)":
            spec = _spec(task, cfg, seed, max_trials=cfg.trials)
            run_kubetune(spec, StreamSampler(spec.search_space(), stream), curves, ledger)
        elif method == "kubetune median":
            spec = _spec(task, cfg, seed, early={"rule": "median"})
            run_kubetune(spec, StreamSampler(spec.search_space(), stream), curves, ledger)
        elif method == "kubetune ASHA":
            spec = _spec(task, cfg, seed, early={"rule": "asha", "maxResource": cfg.max_epochs})
            run_kubetune(spec, StreamSampler(spec.search_space(), stream), curves, ledger)
        elif method.startswith("kubetune hyperband"):
            spec = _spec(task, cfg, seed, epochs_param=True, algorithm={
                "name": "hyperband", "seed": seed, "settings": {"resourceParameter": "epochs"}})
            run_kubetune(spec, None, curves, ledger, resume=method.endswith("checkpoints"))
        else:
            run_optuna(method, task, stream, cfg, seed, curves, ledger)
        out.append(MethodRun(task_name, seed, method, budget, ledger.epochs, ledger.seconds, ledger.best_val,
                             ledger.best_test, ledger.best_at(budget / 3), ledger.trials, ledger.pruned, ledger.full,
                             wall=time.perf_counter() - t0))
        out[-1].__dict__["_trace"] = ledger.trace
    ref = next((r for r in out if r.method == REFERENCE), None)
    for r in out:
        if ref is None:
            break
        r.target = ref.best_val
        hit = next(((e, s) for e, s, v in r.__dict__["_trace"] if v >= ref.best_val - 1e-12), None)
        if hit is not None:
            r.to_target_epochs, r.to_target_seconds = float(hit[0]), hit[1]
    for r in out:
        r.__dict__.pop("_trace", None)
    return out


def run(cfg: Config, log: bool = True) -> list[MethodRun]:
    jobs = [(t, s) for t in cfg.tasks for s in cfg.seeds]
    results: list[MethodRun] = []
    if cfg.workers <= 1 or len(jobs) == 1:
        for t, s in jobs:
            results += run_one(t, s, cfg)
            if log:
                print(f"  done {t} seed {s}", file=sys.stderr, flush=True)
        return results
    with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
        futures = [(t, s, pool.submit(run_one, t, s, cfg)) for t, s in jobs]
        for t, s, f in futures:
            results += f.result()
            if log:
                print(f"  done {t} seed {s}", file=sys.stderr, flush=True)
    return results


# --------------------------------------------------------------------------------------------------- tables


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.fmean(xs) if xs else math.nan


def _fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if math.isnan(x) else format(x, spec)


HEADER = ["method", "val acc @1/3", "val acc (final)", "test acc (final)", "reached target",
          "epochs to target", "compute to target", "seconds to target", "trials", "pruned", "epochs used",
          "seconds used"]


def table(results: list[MethodRun], task: str) -> str:
    rows = [r for r in results if r.task == task]
    seeds = sorted({r.seed for r in rows})
    methods = [m for m in METHODS if any(r.method == m for r in rows)]
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    for m in methods:
        rs = [r for r in rows if r.method == m]
        hits = [r for r in rs if not math.isnan(r.to_target_epochs)]
        within = sum(1 for r in hits if r.to_target_epochs <= r.budget_epochs / 3)
        frac = [r.to_target_epochs / r.budget_epochs for r in hits]
        cells = [
            m,
            _fmt(_mean([r.val_at_third if math.isfinite(r.val_at_third) else math.nan for r in rs])),
            _fmt(_mean([r.best_val for r in rs])),
            _fmt(_mean([r.best_test for r in rs])),
            f"{len(hits)}/{len(seeds)} ({within} within 1/3)",
            _fmt(statistics.median([r.to_target_epochs for r in hits]) if hits else math.nan, ".0f"),
            _fmt(statistics.median(frac) if frac else math.nan, ".2f"),
            _fmt(statistics.median([r.to_target_seconds for r in hits]) if hits else math.nan, ".1f"),
            _fmt(_mean([float(r.trials) for r in rs]), ".1f"),
            _fmt(_mean([float(r.pruned) for r in rs]), ".1f"),
            _fmt(_mean([float(r.epochs) for r in rs]), ".0f"),
            _fmt(_mean([r.seconds for r in rs]), ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(results: list[MethodRun], cfg: Config, wall: float, command: str) -> str:
    out = [f"command: `{command}`",
           f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
           f"{platform.system()} {platform.release()}",
           f"seeds {cfg.seeds}, reference {cfg.trials} trials x {cfg.max_epochs} epochs = "
           f"{cfg.trials * cfg.max_epochs} epochs per run, {cfg.parallel} trials in parallel; wall {wall:.0f} s", ""]
    for task in cfg.tasks:
        out += [f"### {task}", "", table(results, task), ""]
    return "\n".join(out)


def config_for(quick: bool, seeds: int | None = None, workers: int = 2) -> Config:
    if quick:
        return Config(tasks=list(TASKS), seeds=[0], trials=6, max_epochs=9, parallel=2, workers=workers)
    # Seeds 0..7 were used while choosing the rules' defaults; the reported runs use other seeds.
    return Config(tasks=list(TASKS), seeds=list(range(100, 100 + (seeds or 8))), workers=workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, 6 trials of 9 epochs: a smoke run")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 8: seeds 100..107)")
    parser.add_argument("--trials", type=int, default=None, help="trials of the full-budget random search")
    parser.add_argument("--parallel", type=int, default=None, help="trials running at once")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    parser.add_argument("--workers", type=int, default=2, help="processes (one task and seed each)")
    parser.add_argument("--json", help="write the raw results to this file")
    args = parser.parse_args(argv)
    cfg = config_for(args.quick, args.seeds, args.workers)
    if args.trials:
        cfg.trials = args.trials
    if args.parallel:
        cfg.parallel = args.parallel
    if args.tasks:
        cfg.tasks = args.tasks
    command = "python benchmarks/multifidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    results = run(cfg)
    wall = time.perf_counter() - t0
    print(report(results, cfg, wall, command.strip()))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": asdict(cfg), "wall_seconds": wall,
                                               "results": [asdict(r) for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
