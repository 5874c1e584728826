"""Resume-based Hyperband against retraining Hyperband, and ASHA that pauses against ASHA that prunes: the compute
each needs to reach the same accuracy.

Usage (from the repository root)::

    nice -n 19 python benchmarks/resume.py              # the documented run (docs/benchmarks-multifidelity.md)
    nice -n 19 python benchmarks/resume.py --family asha    # earlyStopping asha, pruning against pausing
    nice -n 19 python benchmarks/resume.py --quick      # one seed, tiny budgets: checks that everything runs

Tasks, data, training and compute accounting are those of :mod:`benchmarks.multifidelity` (digits, epoch by epoch
with ``partial_fit``, every epoch's wall time measured once and charged each time a method trains it; lock step
with ``parallel`` trials at once; every method gets ``trials x 27`` epochs). Methods, both ``algorithm: hyperband``
with ``epochs`` (1..27, eta 3) as the resource, driven through :func:`kubetune.plan.make_plan` as the backends do:

* ``hyperband (retrain)``: without ``spec.checkpoints``; a promotion trains its configuration from epoch 0;
* ``hyperband + spec.checkpoints (resume)``: with ``spec.checkpoints``; a promotion restores the checkpoint its
  lineage names (the plan's ``NewTrial.lineage``: parent trial and restore step) and trains only the new epochs.
  Checkpoints are kept per trial, as on the claim; a restore checks that the parent's checkpoint holds the step
  the lineage says.

Given the same records both suggest the same configurations (checkpoints change no suggestion); the runs part
only because resumed trials finish sooner.

``--family asha``: ``algorithm: random`` with ``earlyStopping: {rule: asha, maxResource: 27}`` (eta 3, minTrials 3,
rungs 1, 3, 9), without checkpoints (a trial behind at a rung is pruned) and with ``spec.checkpoints`` (each trial
trains to its rung and is paused; promotions restore the paused trial's checkpoint, :mod:`kubetune.pausing`). The
target is the pruning run's final best.

Measured per seed: the
final best validation accuracy of each, and the epochs each needed to first reach the retraining run's final best
(the same accuracy).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from benchmarks import multifidelity as mf  # noqa: E402
from kubetune.pausing import settle  # noqa: E402
from kubetune.plan import make_plan  # noqa: E402
from kubetune.spec import ExperimentSpec  # noqa: E402
from kubetune.trials import Trial, TrialState, add_curve_point  # noqa: E402

RETRAIN = "hyperband (retrain)"
RESUME = "hyperband + spec.checkpoints (resume)"
PRUNE = "asha (prune)"
PAUSE = "asha + spec.checkpoints (pause)"
FAMILIES = {"hyperband": [RETRAIN, RESUME], "asha": [PRUNE, PAUSE]}
METHODS = FAMILIES["hyperband"]
TASKS = ["mlp-digits", "sgd-digits"]


@dataclass
class Run:
    task: str
    seed: int
    method: str
    budget_epochs: int
    epochs: int
    seconds: float
    best_val: float
    best_test: float
    trials: int
    resumed: int
    trace: list[tuple[int, float, float]]

    def reached(self, target: float) -> int | None:
        return next((e for e, _, v in self.trace if v >= target - 1e-12), None)


def _spec(task: mf.Task, cfg: mf.Config, seed: int, checkpoints: bool) -> ExperimentSpec:
    spec = mf._spec(task, cfg, seed, epochs_param=True, algorithm={
        "name": "hyperband", "seed": seed, "settings": {"resourceParameter": "epochs"}})
    doc = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    if checkpoints:
        doc["checkpoints"] = {"persistentVolumeClaim": "bench"}
    return ExperimentSpec.model_validate(doc)


def _asha_spec(task: mf.Task, cfg: mf.Config, seed: int, checkpoints: bool) -> ExperimentSpec:
    spec = mf._spec(task, cfg, seed, early={"rule": "asha", "maxResource": cfg.max_epochs})
    doc = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    if checkpoints:
        doc["checkpoints"] = {"persistentVolumeClaim": "bench"}
    return ExperimentSpec.model_validate(doc)


def run_hyperband(spec: ExperimentSpec, curves: mf.Curves, ledger: mf.Ledger) -> int:
    """The backends' loop, simulated (one epoch per running trial per tick); returns how many trials resumed. A trial
    trains to its lineage's end (a segment), else to its ``epochs`` parameter, else to the full budget; stop orders
    (pruning) end trials; a trial that ends is settled as the backends do (``Paused`` at a rung when trials pause)."""
    trials: list[Trial] = []
    running: dict[int, Trial] = {}
    checkpoint: dict[int, int] = {}
    """Trial number -> the epoch its checkpoint holds (its own directory on the claim)."""
    done: dict[int, int] = {}
    """Running trial number -> the epochs its model has (the restored step, then each epoch trained)."""
    resumed = 0
    while True:
        plan = make_plan(spec, trials, experiment="bench")
        for order in plan.stop:
            t = running.pop(order.number)
            t.state, t.reason, t.message = order.state, order.reason, order.message
            del done[t.number]
        if ledger.exhausted or plan.finished:
            return resumed
        for new in plan.create:
            t = Trial(number=new.number, params=new.params, state=TrialState.RUNNING, lineage=new.lineage)
            done[t.number] = 0
            if new.lineage is not None and new.lineage.parent is not None:
                done[t.number] = checkpoint[new.lineage.parent]  # restore the parent's checkpoint
                assert done[t.number] == new.lineage.start, (done[t.number], new.lineage)
                resumed += 1
            trials.append(t)
            running[t.number] = t
            ledger.trials += 1
        if not running:
            return resumed
        for t in list(running.values()):
            target = t.lineage.end if t.lineage is not None else int(t.params.get("epochs", curves.max_epochs))
            e = done[t.number] = done[t.number] + 1
            val, test, secs = curves.epoch(t.params, e)
            ledger.charge(secs)
            t.curve = add_curve_point(t.curve, e, val)
            t.metrics = {"accuracy": val}
            if e >= target:
                t.state = TrialState.SUCCEEDED
                settle(spec, t)
                del running[t.number], done[t.number]
                checkpoint[t.number] = e
                if target == curves.max_epochs and t.state is TrialState.SUCCEEDED:
                    ledger.finished_full(val, test)


def run_one(task_name: str, seed: int, cfg: mf.Config, family: str = "hyperband") -> list[Run]:
    task = mf.TASK_DEFS[task_name]
    curves = mf.Curves(task, mf.Data(), seed, cfg.max_epochs)
    budget = cfg.trials * cfg.max_epochs
    out = []
    for method in FAMILIES[family]:
        ledger = mf.Ledger(budget_epochs=budget, max_epochs=cfg.max_epochs)
        spec = (_spec(task, cfg, seed, checkpoints=method == RESUME) if family == "hyperband"
                else _asha_spec(task, cfg, seed, checkpoints=method == PAUSE))
        resumed = run_hyperband(spec, curves, ledger)
        out.append(Run(task_name, seed, method, budget, ledger.epochs, ledger.seconds, ledger.best_val,
                       ledger.best_test, ledger.trials, resumed, ledger.trace))
    return out


def run(cfg: mf.Config, log: bool = False, family: str = "hyperband") -> list[Run]:
    jobs = [(task, seed) for task in cfg.tasks for seed in cfg.seeds]
    if cfg.workers <= 1:
        return [r for task, seed in jobs for r in run_one(task, seed, cfg, family)]
    results: list[Run] = []
    with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
        for (task, seed), future in [(job, pool.submit(run_one, *job, cfg, family)) for job in jobs]:
            results += future.result()
            if log:
                print(f"  done {task} seed {seed}", file=sys.stderr, flush=True)
    return results


HEADER = ["method", "val acc (final)", "test acc (final)", "reached the retraining run's final accuracy",
          "epochs to it (median)", "compute to it", "epochs used", "trials", "resumed trials"]


def table(results: list[Run], task: str) -> str:
    rows = [r for r in results if r.task == task]
    methods = next(ms for ms in FAMILIES.values() if rows and rows[0].method in ms)
    target = {r.seed: r.best_val for r in rows if r.method == methods[0]}
    header = HEADER if methods[0] == RETRAIN else [h.replace("retraining", "pruning") for h in HEADER]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for m in methods:
        rs = [r for r in rows if r.method == m]
        hits = [e for r in rs if (e := r.reached(target[r.seed])) is not None]
        med = statistics.median(hits) if hits else float("nan")
        cells = [m, f"{statistics.fmean(r.best_val for r in rs):.3f}", f"{statistics.fmean(r.best_test for r in rs):.3f}",
                 f"{len(hits)}/{len(rs)}", mf._fmt(med, ".0f"), mf._fmt(med / rs[0].budget_epochs, ".2f"),
                 f"{statistics.fmean(r.epochs for r in rs):.0f}", f"{statistics.fmean(r.trials for r in rs):.1f}",
                 f"{statistics.fmean(r.resumed for r in rs):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(results: list[Run], cfg: mf.Config, wall: float, command: str) -> str:
    out = [f"command: `{command}`",
           f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
           f"{platform.system()} {platform.release()}",
           f"seeds {cfg.seeds}, {cfg.trials} x {cfg.max_epochs} = {cfg.trials * cfg.max_epochs} epochs per run, "
           f"{cfg.parallel} trials in parallel; wall {wall:.0f} s", ""]
    for task in cfg.tasks:
        out += [f"### {task}", "", table(results, task), ""]
    return "\n".join(out)


def config_for(quick: bool, seeds: int = 8, tasks: list[str] | None = None, workers: int = 2) -> mf.Config:
    if quick:
        return mf.Config(tasks=["mlp-digits"], seeds=[0], trials=6, max_epochs=9, parallel=2, workers=1)
    return mf.Config(tasks=tasks or list(TASKS), seeds=list(range(100, 100 + seeds)), workers=workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed, 6 trials of 9 epochs: a smoke run")
    parser.add_argument("--seeds", type=int, default=8, help="number of seeds (default 8: seeds 100..107)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    parser.add_argument("--workers", type=int, default=2, help="processes (one task and seed each)")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="hyperband",
                        help="hyperband: retraining against resuming; asha: pruning against pausing")
    args = parser.parse_args(argv)
    cfg = config_for(args.quick, args.seeds, args.tasks, args.workers)
    command = "nice -n 19 python benchmarks/resume.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    results = run(cfg, log=True, family=args.family)
    print(report(results, cfg, time.perf_counter() - t0, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
