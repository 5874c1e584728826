"""Population-based training against random search and ASHA at equal compute, and against Ray Tune's PBT.

Usage (from the repository root)::

    nice -n 19 python benchmarks/pbt.py                 # the documented run (docs/pbt.md)
    nice -n 19 python benchmarks/pbt.py --quick         # one seed, tiny budgets: checks that everything runs
    nice -n 19 python benchmarks/pbt.py --ray /tmp/rayenv/bin/python   # also Ray Tune's PBT on the toy problem

Tasks (real training, offline, deterministic given the seed):

* ``toy``: the toy problem of the PBT paper (Jaderberg et al. 2017, section 4.1), as
  ``kubetune_trial.examples.pbt_toy`` trains it: ``theta`` starts at (0.9, 0.9), a step is a gradient ascent step of
  size 0.01 on ``1.2 - (h0 theta0^2 + h1 theta1^2)``, the score is ``Q = 1.2 - (theta0^2 + theta1^2)``;
  ``h0, h1`` in [0, 1]. 40 steps per member.
* ``sgd-digits``: a linear classifier (scikit-learn ``SGDClassifier``, log loss, constant learning rate ``eta0``,
  L2 ``alpha``) on the digits data set (60/20/20 train/validation/test), trained epoch by epoch with
  ``partial_fit``; score: validation accuracy. A constant learning rate is a schedule-sensitive choice: a large one
  learns fast and then rattles, a small one is precise and slow, so the best rate falls during training. 30 epochs.

Methods, each with the compute of ``population`` full trainings (``population x steps`` steps), ``population``
trials running at once in lock step (every running trial trains one step per tick), driven through
:func:`kubetune.plan.make_plan` exactly as the backends do:

* ``random``: random search, ``population`` trials of the full length;
* ``ASHA``: random search with ``earlyStopping: {rule: asha}`` (maxResource = steps, otherwise the defaults), new
  trials until the compute is spent (in-flight trials are cut off there);
* ``pbt``: ``algorithm: pbt`` with ``populationSize`` = population, ``perturbationInterval`` = steps / 10 (the other
  settings their defaults), segments restoring in-memory checkpoints;
* ``ray pbt`` (``--ray``, toy only): Ray Tune's ``PopulationBasedTraining`` with the same population, interval,
  quantile fraction, resample probability and steps, in the Python given (Ray is not a kubetune dependency).

Result: the best final score, the score of a trial (a member's last segment for pbt) that trained the full length.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT / "trial_image"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from kubetune.plan import History, make_plan  # noqa: E402
from kubetune.spec import ExperimentSpec  # noqa: E402
from kubetune.trials import Trial, TrialState, add_curve_point  # noqa: E402
from kubetune_trial.examples.pbt_toy import START, score, step  # noqa: E402

METHODS = ["random", "ASHA", "pbt"]


@dataclass(frozen=True)
class Task:
    name: str
    parameters: list[dict[str, Any]]
    steps: int
    init: Callable[[int], Any]
    train: Callable[[Any, dict[str, Any], int, int], Any]
    """(state, params, step, seed) -> the state after training that step (a new object or the same, mutated)."""
    evaluate: Callable[[Any], float]


def _toy_task(steps: int) -> Task:
    return Task("toy", [{"name": "h0", "type": "float", "min": 0, "max": 1},
                        {"name": "h1", "type": "float", "min": 0, "max": 1}], steps,
                lambda seed: START, lambda s, p, k, seed: step(s, (float(p["h0"]), float(p["h1"]))), score)


class Digits:
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


def _sgd_task(steps: int) -> Task:
    from sklearn.linear_model import SGDClassifier

    data = Digits()

    def init(seed: int) -> Any:
        return None  # the model is made with the first step's parameters

    def train(model: Any, p: dict[str, Any], k: int, seed: int) -> Any:
        if model is None:
            model = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=float(p["eta0"]),
                                  alpha=float(p["alpha"]), random_state=seed)
        else:
            model.set_params(eta0=float(p["eta0"]), alpha=float(p["alpha"]))
        order = np.random.default_rng([seed, k]).permutation(len(data.y_train))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.partial_fit(data.X_train[order], data.y_train[order], classes=data.classes)
        return model

    def evaluate(model: Any) -> float:
        return float(model.score(data.X_val, data.y_val))

    return Task("sgd-digits", [{"name": "eta0", "type": "float", "min": 1e-4, "max": 1.0, "scale": "log"},
                               {"name": "alpha", "type": "float", "min": 1e-6, "max": 1e-1, "scale": "log"}],
                steps, init, train, evaluate)


def _spec(task: Task, population: int, seed: int, *, algorithm: dict[str, Any], max_trials: int,
          early: dict[str, Any] | None = None) -> ExperimentSpec:
    doc: dict[str, Any] = {
        "objective": {"metric": "score", "goal": "maximize"},
        "parameters": task.parameters,
        "algorithm": {**algorithm, "seed": seed},
        "maxTrials": max_trials,
        "parallelTrials": population,
        "maxFailedTrials": max_trials,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    if algorithm["name"] == "pbt":
        doc["checkpoints"] = {"persistentVolumeClaim": "bench"}
    if early is not None:
        doc["earlyStopping"] = early
    return ExperimentSpec.model_validate(doc)


@dataclass
class Result:
    task: str
    method: str
    seed: int
    best: float
    steps: int
    trials: int
    seconds: float
    schedule: list[tuple[int, dict[str, Any]]] | None = None


def simulate(task: Task, spec: ExperimentSpec, seed: int, budget: int) -> tuple[float, int, int, list[Trial]]:
    """The backends' loop in one process: plan, start trials (a pbt segment restores its parent's state), train one
    step per running trial per tick, until the plan finishes or ``budget`` steps are spent. Returns the best final
    score (trials that trained ``task.steps`` steps), the steps spent, the trials made and every trial."""
    history = History(spec, "bench")
    trials: dict[int, Trial] = {}
    states: dict[int, Any] = {}
    saved: dict[int, Any] = {}
    reached: dict[int, int] = {}
    spent, best = 0, -np.inf
    while True:
        active = [t for t in trials.values() if t.active]
        plan = make_plan(spec, active, experiment="bench", history=history)
        for order in plan.stop:
            t = trials[order.number]
            t.state, t.reason = order.state, order.reason
            history.add(t)
        if plan.finished or spent >= budget:
            break
        for new in plan.create:
            t = Trial(new.number, dict(new.params), TrialState.RUNNING, lineage=new.lineage)
            trials[t.number] = t
            lin = new.lineage
            if lin is not None and lin.parent is not None:
                states[t.number], reached[t.number] = copy.deepcopy(saved[lin.parent]), lin.start
            else:
                states[t.number], reached[t.number] = task.init(seed), 0
        running = sorted((t for t in trials.values() if t.active), key=lambda t: t.number)
        if not running:
            break
        for t in running:
            if spent >= budget:
                break
            k = reached[t.number] + 1
            states[t.number] = task.train(states[t.number], t.params, k, seed)
            reached[t.number] = k
            spent += 1
            value = task.evaluate(states[t.number])
            t.curve = add_curve_point(t.curve, k, value)
            t.metrics = {"score": value}
            end = t.lineage.end if t.lineage is not None else task.steps
            if k >= end:
                t.state = TrialState.SUCCEEDED
                saved[t.number] = copy.deepcopy(states[t.number])
                del states[t.number]
                history.add(t)
                if k >= task.steps:
                    best = max(best, value)
        for n in [n for n in saved if trials[n].lineage is None]:  # non-pbt trials are never restored
            del saved[n]
    return float(best), spent, len(trials), list(trials.values())


def schedule_of(trials: list[Trial], best: Trial) -> list[tuple[int, dict[str, Any]]]:
    """The best member's hyperparameter schedule: (start step, parameters) along its chain of parents."""
    by_number = {t.number: t for t in trials}
    chain = []
    t: Trial | None = best
    while t is not None and t.lineage is not None:
        chain.append((t.lineage.start, {k: float(f"{float(v):.3g}") for k, v in t.params.items()}))
        t = by_number.get(t.lineage.parent) if t.lineage.parent is not None else None
    return list(reversed(chain))


def run_method(task: Task, method: str, seed: int, population: int) -> Result:
    budget = population * task.steps
    started = time.process_time()
    schedule = None
    if method == "random":
        spec = _spec(task, population, seed, algorithm={"name": "random"}, max_trials=population)
    elif method == "ASHA":
        spec = _spec(task, population, seed, algorithm={"name": "random"}, max_trials=10_000,
                     early={"rule": "asha", "maxResource": task.steps})
    else:
        interval = max(task.steps // 10, 1)
        spec = _spec(task, population, seed, algorithm={"name": "pbt", "settings": {
            "populationSize": population, "perturbationInterval": interval}},
            max_trials=population * task.steps // interval)
    best, spent, made, trials = simulate(task, spec, seed, budget)
    if method == "pbt":
        finals = [t for t in trials if t.state is TrialState.SUCCEEDED and t.lineage and t.lineage.end == task.steps]
        if finals:
            schedule = schedule_of(trials, max(finals, key=lambda t: t.metrics["score"]))
    return Result(task.name, method, seed, best, spent, made, time.process_time() - started, schedule)


RAY_SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile, logging
    import numpy as np
    from ray import tune
    from ray.tune import Checkpoint
    from ray.tune.schedulers import PopulationBasedTraining
    import ray
    seed, population, steps, interval = (int(a) for a in sys.argv[1:5])
    def trainable(config):
        theta, start = (0.9, 0.9), 0
        ck = tune.get_checkpoint()
        if ck:
            with ck.as_directory() as d:
                saved = json.load(open(os.path.join(d, "theta.json")))
            theta, start = tuple(saved["theta"]), saved["step"]
        for k in range(start + 1, steps + 1):
            theta = tuple(t - 0.01 * 2 * h * t for t, h in zip(theta, (config["h0"], config["h1"])))
            with tempfile.TemporaryDirectory() as d:
                json.dump({"theta": theta, "step": k}, open(os.path.join(d, "theta.json"), "w"))
                tune.report({"q": 1.2 - theta[0] ** 2 - theta[1] ** 2, "step": k},
                            checkpoint=Checkpoint.from_directory(d))
    def clip(config):  # the same bounded space as kubetune's: Ray leaves it when it multiplies by 1.2
        return {**config, "h0": min(max(config["h0"], 0.0), 1.0), "h1": min(max(config["h1"], 0.0), 1.0)}
    pbt = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=interval,
                                  hyperparam_mutations={"h0": tune.uniform(0, 1), "h1": tune.uniform(0, 1)},
                                  quantile_fraction=0.25, resample_probability=0.25, custom_explore_fn=clip)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    np.random.seed(seed)
    import random; random.seed(seed)
    tuner = tune.Tuner(trainable, param_space={"h0": tune.uniform(0, 1), "h1": tune.uniform(0, 1)},
                       tune_config=tune.TuneConfig(scheduler=pbt, num_samples=population, metric="q", mode="max"),
                       run_config=tune.RunConfig(stop={"training_iteration": steps}, verbose=0,
                                                 storage_path=tempfile.mkdtemp()))
    results = tuner.fit()
    finals = [r.metrics["q"] for r in results if r.metrics and r.metrics.get("step") == steps]
    print(json.dumps({"best": max(finals), "finals": len(finals)}))
""")


def run_ray(python: str, task: Task, seed: int, population: int) -> Result | None:
    started = time.monotonic()
    proc = subprocess.run([python, "-c", RAY_SCRIPT, str(seed), str(population), str(task.steps),
                           str(max(task.steps // 10, 1))], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(f"ray pbt failed (seed {seed}): {proc.stderr[-2000:]}", file=sys.stderr)
        return None
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return Result(task.name, "ray pbt", seed, float(out["best"]), population * task.steps, population,
                  time.monotonic() - started)


def table(results: list[Result]) -> str:
    tasks = list(dict.fromkeys(r.task for r in results))
    methods = list(dict.fromkeys(r.method for r in results))
    lines = ["| task | " + " | ".join(methods) + " | pbt better than random / ASHA (seeds) |",
             "|---|" + "---|" * len(methods) + "---|"]
    for task in tasks:
        cells = []
        for m in methods:
            xs = [r.best for r in results if r.task == task and r.method == m]
            cells.append(f"{statistics.mean(xs):.4f} ± {statistics.pstdev(xs):.4f}" if xs else "-")
        by_seed = {(r.method, r.seed): r.best for r in results if r.task == task}
        seeds = sorted({r.seed for r in results if r.task == task})
        wins = [sum(by_seed[("pbt", s)] > by_seed[(m, s)] for s in seeds) for m in ("random", "ASHA")]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {wins[0]} / {wins[1]} of {len(seeds)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, short training: checks that it runs")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--ray", metavar="PYTHON", help="a Python with ray[tune] installed: also run Ray's PBT")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    seeds = range(1) if args.quick else range(args.seeds)
    tasks = [_toy_task(10 if args.quick else 40), _sgd_task(5 if args.quick else 30)]
    population = 4 if args.quick else args.population
    started, cpu = time.monotonic(), time.process_time()
    results: list[Result] = []
    for task in tasks:
        for seed in seeds:
            for method in METHODS:
                results.append(run_method(task, method, seed, population))
            if args.ray and task.name == "toy":
                r = run_ray(args.ray, task, seed, population)
                if r is not None:
                    results.append(r)
    print(table(results))
    for task in tasks:
        best = max((r for r in results if r.task == task.name and r.method == "pbt"), key=lambda r: r.best)
        print(f"\n{task.name}: the best pbt member's schedule (seed {best.seed}, start step: parameters): "
              + ", ".join(f"{s}: {p}" for s, p in best.schedule or []))
    print(f"\n{len(results)} runs; {time.monotonic() - started:.0f} s wall, {time.process_time() - cpu:.0f} s CPU "
          f"(this process) on {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
