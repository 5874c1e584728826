"""Suggestion latency: seconds per suggestion (ask + tell, objective excluded) after N completed trials.

Usage (from the repository root)::

    python benchmarks/latency.py            # N = 10, 100, 200, 500, 1000, 2000
    python benchmarks/latency.py --quick    # N = 10, 50 only
    python benchmarks/latency.py --batch 8 --loss steps --sizes 200   # 8 suggestions per call, step-like losses

Every optimizer gets the same history (N uniformly random configurations of a 6-parameter mixed space with a
synthetic loss), loaded the cheapest way the library allows (kubetune: the history list; Optuna: ``add_trials``;
scikit-optimize: one ``tell`` of all points; Hyperopt: inserted trial documents). Then one suggestion is asked and
its result told, timed together, repeated and the median reported; with ``--batch B`` one call asks B suggestions
together (as a round of B parallel trials does) and the table shows the call's time divided by B. ``--loss steps``
rounds the loss up to a multiple of 0.3, so trials tie at the best loss, as accuracies do (from N = 200 on at least
three trials of the history share the best loss, and ``bayesian``'s plateau rule takes every other suggestion from
TPE; the output gives the number of ties per N). BLAS/OpenMP are limited to one thread, as in the
quality benchmark. Slow peers are capped (``CAPS``) where one suggestion would take minutes; capped cells show
"—".
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from benchmarks.optimizers import HyperoptTPE, OptunaTPE, SkoptGP  # noqa: E402
from kubetune.engine import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    Observation,
    ObservationState,
    ParamValue,
    SearchSpace,
    make_sampler,
)

SPACE = SearchSpace.of(
    {
        "lr": FloatDistribution(1e-5, 1.0, log=True),
        "dropout": FloatDistribution(0.0, 0.5, step=0.05),
        "layers": IntDistribution(1, 8),
        "units": IntDistribution(16, 1024, log=True),
        "opt": CategoricalDistribution(("adam", "sgd", "rmsprop")),
        "momentum": FloatDistribution(0.0, 0.99),
    }
)
SIZES = [10, 100, 200, 500, 1000, 2000]
QUICK_SIZES = [10, 50]
OPTIMIZERS = ["kubetune-tpe", "kubetune-bayesian", "kubetune-sobol", "kubetune-random", "optuna-tpe", "skopt-gp",
              "hyperopt-tpe"]
CAPS = {"skopt-gp": 500}  # largest N measured
Params = dict[str, ParamValue]


STEP = 0.0
"""``--loss steps`` sets it: losses rounded up to a multiple of it (0: the smooth loss)."""
BATCH = 1
"""``--batch``: suggestions asked in one call."""
STEPS = 0.3
"""The step of ``--loss steps``."""


def loss(p: Params) -> float:
    u = np.array(SPACE.to_unit(p))
    v = float(((u - 0.3) ** 2).sum() + 0.3 * (p["opt"] != "adam"))
    return math.ceil(v / STEP) * STEP if STEP else v


def history(n: int, seed: int = 0) -> list[Params]:
    rng = np.random.default_rng(seed)
    return [SPACE.from_unit(u) for u in rng.random((n, len(SPACE)))]


# Each factory loads ``n`` trials and returns a function doing one ask + tell.
def _kubetune(algorithm: str) -> Callable[[list[Params]], Callable[[], None]]:
    def setup(hist: list[Params]) -> Callable[[], None]:
        sampler = make_sampler(algorithm, SPACE, seed=0)
        obs = [Observation(p, ObservationState.COMPLETE, loss(p)) for p in hist]

        def step() -> None:
            for p in sampler.suggest(obs, [], n=BATCH):
                obs.append(Observation(p, ObservationState.COMPLETE, loss(p)))

        return step

    return setup


def _optuna(hist: list[Params]) -> Callable[[], None]:
    import optuna

    opt = OptunaTPE(SPACE, 0)
    opt.study.add_trials([optuna.trial.create_trial(params=p, distributions=opt.dists, value=loss(p)) for p in hist])

    def step() -> None:
        p = opt.ask(BATCH)
        opt.tell(p, [loss(q) for q in p])

    return step


def _skopt(hist: list[Params]) -> Callable[[], None]:
    import warnings

    opt = SkoptGP(SPACE, 0)
    enc = []
    for p in hist:
        row: list[object] = []
        for name, d in SPACE.dims:
            v = p[name]
            if isinstance(d, CategoricalDistribution):
                row.append(str(d.index(v)))
            elif isinstance(d, FloatDistribution) and d.step is not None:
                row.append([float(g) for g in d.grid() or []].index(float(v)))
            else:
                row.append(v)
        enc.append(row)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.opt.tell(enc, [loss(p) for p in hist])

    def step() -> None:
        p = opt.ask(BATCH)
        opt.tell(p, [loss(q) for q in p])

    return step


def _hyperopt(hist: list[Params]) -> Callable[[], None]:
    from hyperopt import JOB_STATE_DONE, STATUS_OK, rand

    opt = HyperoptTPE(SPACE, 0)
    ids = opt.trials.new_trial_ids(len(hist))
    docs = rand.suggest(ids, opt.domain, opt.trials, 0)
    for doc in docs:
        vals = {k: v[0] for k, v in doc["misc"]["vals"].items() if v}
        from hyperopt import space_eval

        raw = space_eval(opt.domain.expr, vals)
        doc["state"] = JOB_STATE_DONE
        doc["result"] = {"loss": loss({n: opt._fix(d, raw[n]) for n, d in SPACE.dims}), "status": STATUS_OK}
    opt.trials.insert_trial_docs(docs)
    opt.trials.refresh()

    def step() -> None:
        p = opt.ask(BATCH)
        opt.tell(p, [loss(q) for q in p])

    return step


NUMERIC = SearchSpace(tuple((n, d) for n, d in SPACE.dims if not isinstance(d, CategoricalDistribution)))
"""The space without its categorical parameter, for cmaes (which searches numbers only)."""


def _numeric(p: Params) -> Params:
    return {n: p[n] for n in NUMERIC.names}


def _kubetune_numeric(algorithm: str, fresh: bool) -> Callable[[list[Params]], Callable[[], None]]:
    """On :data:`NUMERIC` with the same history (without ``opt``). ``fresh``: a new sampler for every suggestion, as
    after an operator restart (for cmaes, a replay of the whole history instead of the generations since the last
    call)."""
    def setup(hist: list[Params]) -> Callable[[], None]:
        sampler = make_sampler(algorithm, NUMERIC, seed=0)
        obs = [Observation(_numeric(p), ObservationState.COMPLETE, loss({**p, "opt": "adam"})) for p in hist]

        def step() -> None:
            s = make_sampler(algorithm, NUMERIC, seed=0) if fresh else sampler
            for p in s.suggest(obs, [], n=BATCH):
                obs.append(Observation(p, ObservationState.COMPLETE, loss({**p, "opt": "adam"})))

        return step

    return setup


SETUPS: dict[str, Callable[[list[Params]], Callable[[], None]]] = {
    "kubetune-tpe": _kubetune("tpe"),
    "kubetune-bayesian": _kubetune("bayesian"),
    "kubetune-sobol": _kubetune("sobol"),
    "kubetune-random": _kubetune("random"),
    "optuna-tpe": _optuna,
    "skopt-gp": _skopt,
    "hyperopt-tpe": _hyperopt,
    # numeric space (5 parameters): not in OPTIMIZERS, run with --optimizers
    "kubetune-cmaes": _kubetune_numeric("cmaes", fresh=False),
    "kubetune-cmaes-fresh": _kubetune_numeric("cmaes", fresh=True),
    "kubetune-tpe-numeric": _kubetune_numeric("tpe", fresh=False),
}


def measure(name: str, n: int, max_seconds: float = 20.0) -> float:
    """Median seconds per suggestion of one ask+tell of :data:`BATCH` suggestions after ``n`` trials (repeated up to
    7 times or ``max_seconds``)."""
    step = SETUPS[name](history(n))
    step()  # warm-up (imports, caches)
    times: list[float] = []
    spent = 0.0
    while len(times) < 7 and (spent < max_seconds or len(times) < 2):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return statistics.median(times) / BATCH


def run(sizes: list[int], optimizers: list[str], log: bool = True, batch: int = 1,
        step: float = 0.0) -> dict[str, dict[int, float]]:
    """Seconds per suggestion by optimizer and N; ``batch`` suggestions per call, losses in steps of ``step``."""
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    global BATCH, STEP
    if batch < 1 or step < 0:
        raise ValueError(f"batch must be at least 1 and step at least 0, not {batch} and {step}")
    saved = BATCH, STEP
    BATCH, STEP = batch, step
    try:
        with threadpool_limits(1):
            return _run(sizes, optimizers, log)
    finally:
        BATCH, STEP = saved


def _run(sizes: list[int], optimizers: list[str], log: bool) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for name in optimizers:
        out[name] = {}
        for n in sizes:
            if n > CAPS.get(name, math.inf):
                out[name][n] = math.nan
                continue
            out[name][n] = measure(name, n)
            if log:
                print(f"{name} N={n}: {out[name][n] * 1000:.1f} ms", file=sys.stderr, flush=True)
    return out


def ties_at_best(n: int, step: float) -> int:
    """How many of the ``n`` trials of the history share its best loss when losses are in steps of ``step``."""
    global STEP
    saved, STEP = STEP, step
    try:
        losses = [loss(p) for p in history(n)]
    finally:
        STEP = saved
    return sum(v == min(losses) for v in losses)


def table(results: dict[str, dict[int, float]]) -> str:
    sizes = sorted({n for r in results.values() for n in r})
    lines = ["| optimizer | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for name, r in results.items():
        cells = ["—" if math.isnan(r[n]) else _ms(r[n]) for n in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ms(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"N in {QUICK_SIZES} only")
    ap.add_argument("--optimizers", nargs="*", help=f"subset of {list(SETUPS)} (default {OPTIMIZERS})")
    ap.add_argument("--sizes", nargs="*", type=int, help=f"numbers of trials N (default {SIZES})")
    ap.add_argument("--batch", type=int, default=1, help="suggestions asked in one call (default 1)")
    ap.add_argument("--loss", choices=["smooth", "steps"], default="smooth",
                    help="steps: the loss rounded up to a multiple of 0.3, so trials tie at the best loss (default smooth)")
    args = ap.parse_args(argv)
    if args.batch < 1:
        ap.error(f"--batch must be at least 1, not {args.batch}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    res = run(args.sizes or (QUICK_SIZES if args.quick else SIZES), args.optimizers or OPTIMIZERS,
              batch=args.batch, step=STEPS if args.loss == "steps" else 0.0)
    how = f"{args.batch} suggestions asked in one call, the call's time divided by {args.batch}" \
        if args.batch > 1 else "one suggestion per call"
    print(f"Seconds per suggestion (ask + tell, median; {how}; {args.loss} loss), load average at start {load:.2f}:\n")
    print(table(res))
    if args.loss == "steps":
        print("\nTrials of the history tied at its best loss: " + ", ".join(
            f"N={n}: {ties_at_best(n, STEPS)}" for n in sorted({n for r in res.values() for n in r})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
