"""Search quality: kubetune's algorithms and the peers side by side on the same problems, seeds and budgets.

Usage (from the repository root)::

    python benchmarks/quality.py                 # the full run (see docs/benchmarks.md for its wall time)
    python benchmarks/quality.py --quick         # a few problems, one seed, small budgets (< 1 minute)
    python benchmarks/quality.py --json out.json # also keep the raw results

Budgets: ``seq50`` (50 trials one at a time) and ``batch8`` (16 rounds of 8 parallel suggestions, told together).

Score (bayesmark's normalisation): ``100 * (1 - (best - opt) / (typical - opt))`` where ``best`` is the best loss the
optimizer found within the budget, ``opt`` the known global minimum (synthetic functions) or the best loss any
optimizer or the random reference sample found in this run (model tuning), and ``typical`` the median loss of
uniformly random configurations (random search's typical first value). 100 is the optimum, 0 is no better than
one random guess. Every worker limits BLAS/OpenMP to one thread, so optimizers are timed alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from benchmarks.optimizers import make_optimizer  # noqa: E402
from benchmarks.problems import all_problems, problem  # noqa: E402

OPTIMIZERS = ["kubetune-bayesian", "kubetune-tpe", "kubetune-sobol", "optuna-tpe", "skopt-gp", "hyperopt-tpe",
              "random"]
# name -> (rounds, batch size)
BUDGETS = {"seq50": (50, 1), "batch8": (16, 8)}
QUICK_BUDGETS = {"seq50": (12, 1), "batch8": (3, 4)}
EXTRA_BUDGETS = {"seq200": (200, 1), "batch8x25": (25, 8), "batch4": (25, 4)}
"""Other budgets, chosen with ``--budgets`` (e.g. seq200 for CMA-ES, which needs generations to adapt; batch4, 25
rounds of 4 parallel suggestions, for ``benchmarks/tpe_compare.py``)."""
CMAES_OPTIMIZERS = ["kubetune-cmaes", "optuna-cmaes", "kubetune-bayesian", "random"]
"""CMA-ES against its Optuna counterpart, the default algorithm and random search (``--optimizers cmaes``); the
synthetic problems are the ones it applies to (numeric spaces)."""
QUICK_PROBLEMS = ["branin", "hartmann6", "dt-wine-acc"]


@dataclass
class Config:
    problems: list[str]
    optimizers: list[str]
    seeds: list[int]
    budgets: dict[str, tuple[int, int]]
    reference_samples: int = 64
    workers: int = 2
    batch_seeds: dict[str, list[int]] = field(default_factory=dict)
    """Optimizers run on fewer seeds in batch budgets (too slow there to fit the full run in an hour)."""
    missing: list[str] = field(default_factory=list)
    """Peers left out because their library is not installed (``pip install .[bench]``)."""


@dataclass
class RunResult:
    problem: str
    optimizer: str
    budget: str
    seed: int
    best: float
    trace: list[float]  # best loss so far after each round
    suggest_seconds: float
    objective_seconds: float


@dataclass
class Results:
    config: Config
    runs: list[RunResult] = field(default_factory=list)
    reference: dict[str, dict[str, float]] = field(default_factory=dict)  # problem -> {typical, opt}
    wall_seconds: float = 0.0


def _limit_threads() -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


def run_one(problem_name: str, optimizer: str, budget: str, rounds: int, batch: int, seed: int) -> RunResult:
    """One optimizer on one problem for one seed and budget."""
    _limit_threads()
    prob = problem(problem_name)
    opt = make_optimizer(optimizer, prob.space, seed)
    best, trace, t_sug, t_obj = math.inf, [], 0.0, 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        params = opt.ask(batch)
        t1 = time.perf_counter()
        losses = [prob.loss(p) for p in params]
        t2 = time.perf_counter()
        opt.tell(params, losses)
        t_sug += (t1 - t0) + (time.perf_counter() - t2)
        t_obj += t2 - t1
        best = min([best, *losses])
        trace.append(best)
    return RunResult(problem_name, optimizer, budget, seed, best, trace, t_sug, t_obj)


def reference(problem_name: str, n: int) -> tuple[str, float, float]:
    """Median and minimum loss of ``n`` uniformly random configurations (a fixed sample)."""
    _limit_threads()
    prob = problem(problem_name)
    if prob.family == "synthetic":
        n = max(n, 4096)  # free for synthetic functions
    rng = np.random.default_rng(12345)
    losses = [prob.loss(prob.space.from_unit(u)) for u in rng.random((n, len(prob.space)))]
    return problem_name, float(np.median(losses)), float(np.min(losses))


def run(config: Config, log: bool = True) -> Results:
    start = time.perf_counter()
    res = Results(config)
    tasks = [(p, o, b, r, n, s) for p in config.problems for b, (r, n) in config.budgets.items()
             for o in config.optimizers for s in config.seeds if n == 1 or s in config.batch_seeds.get(o, [s])]
    # Longest first, so the pool finishes together: scikit-optimize's GP and the batch budgets dominate.
    tasks.sort(key=lambda t: -(t[3] * t[4] * (20 if t[1] == "skopt-gp" else 1) * (t[4] if t[1] == "skopt-gp" else 1)))
    # (scikit-optimize refits its GP once per point of a batch, hence the extra factor)
    workers = max(1, config.workers)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        refs = [pool.submit(reference, p, config.reference_samples) for p in config.problems]
        futures = [pool.submit(run_one, *t) for t in tasks]
        for i, f in enumerate(futures):
            r = f.result()
            res.runs.append(r)
            if log:
                print(f"[{i + 1}/{len(futures)} {time.perf_counter() - start:7.1f}s] {r.problem} {r.optimizer} "
                      f"{r.budget} seed={r.seed} best={r.best:.6g} suggest={r.suggest_seconds:.1f}s",
                      file=sys.stderr, flush=True)
        ref_vals = [f.result() for f in refs]
    probs = {p.name: p for p in all_problems()}
    for name, typical, ref_min in ref_vals:
        found = min([ref_min] + [r.best for r in res.runs if r.problem == name])
        known = probs[name].optimum
        res.reference[name] = {"typical": typical, "opt": known if known is not None else found}
    res.wall_seconds = time.perf_counter() - start
    return res


# -- scoring and tables ------------------------------------------------------------------------------------------


def score(res: Results, r: RunResult) -> float:
    ref = res.reference[r.problem]
    span = ref["typical"] - ref["opt"]
    if span <= 0:
        return 100.0
    return 100.0 * (1.0 - (r.best - ref["opt"]) / span)


def _scores(res: Results, budget: str, optimizer: str, problems: list[str]) -> np.ndarray:
    return np.array([score(res, r) for r in res.runs
                     if r.budget == budget and r.optimizer == optimizer and r.problem in problems])


def _present(res: Results, budget: str) -> list[str]:
    """Optimizers that ran on ``budget``, in configuration order."""
    ran = {r.optimizer for r in res.runs if r.budget == budget}
    return [o for o in res.config.optimizers if o in ran]


def families(res: Results) -> dict[str, list[str]]:
    fam: dict[str, list[str]] = {}
    probs = {p.name: p for p in all_problems()}
    for name in res.config.problems:
        fam.setdefault(probs[name].family, []).append(name)
    return fam


def summary_table(res: Results, budget: str) -> str:
    """Optimizers x families: mean score over problems and seeds, plus the mean per-problem rank."""
    fam = families(res)
    cols = list(fam) + ["overall"]
    lines = ["| optimizer | " + " | ".join(cols) + " | mean rank | suggest s/run |",
             "|---" * (len(cols) + 3) + "|"]
    ranks = _mean_ranks(res, budget)
    rows = []
    for o in _present(res, budget):
        cells = [np.mean(_scores(res, budget, o, fam[f])) for f in fam]
        overall = float(np.mean(_scores(res, budget, o, res.config.problems)))
        t = np.mean([r.suggest_seconds for r in res.runs if r.budget == budget and r.optimizer == o])
        rows.append((overall, f"| {o} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | **{overall:.1f}** | "
                     f"{'—' if math.isnan(ranks[o]) else f'{ranks[o]:.2f}'} | {t:.2f} |"))
    lines += [row for _, row in sorted(rows, key=lambda x: -x[0])]
    return "\n".join(lines)


def _mean_ranks(res: Results, budget: str) -> dict[str, float]:
    """Rank optimizers per (problem, seed) by best loss (1 = best, ties share), averaged."""
    from scipy.stats import rankdata

    n_runs = len(res.config.problems) * len(res.config.seeds)
    counts: dict[str, int] = {}
    for r in res.runs:
        if r.budget == budget:
            counts[r.optimizer] = counts.get(r.optimizer, 0) + 1
    opts = [o for o in _present(res, budget) if counts.get(o) == n_runs]  # only those that ran every seed
    acc = {o: [] for o in opts}  # type: dict[str, list[float]]
    for p in res.config.problems:
        for s in res.config.seeds:
            best = {r.optimizer: r.best for r in res.runs if r.problem == p and r.seed == s and r.budget == budget}
            for o, rk in zip(opts, rankdata([best[o] for o in opts])):
                acc[o].append(float(rk))
    return {o: float(np.mean(acc[o])) if acc.get(o) else math.nan for o in _present(res, budget)}


def family_table(res: Results, budget: str, family: str) -> str:
    """Optimizers x problems of one family: median score over seeds (min-max)."""
    probs = families(res)[family]
    lines = ["| optimizer | " + " | ".join(probs) + " |", "|---" * (len(probs) + 1) + "|"]
    for o in _present(res, budget):
        cells = []
        for p in probs:
            s = _scores(res, budget, o, [p])
            cells.append(f"{np.median(s):.1f} ({np.min(s):.0f}–{np.max(s):.0f})")
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(res: Results) -> str:
    out = [f"Seeds: {res.config.seeds}; wall time {res.wall_seconds:.0f} s with {res.config.workers} workers.", ""]
    if res.config.missing:
        out += [f"Not installed, left out: {', '.join(res.config.missing)} (pip install '.[bench]').", ""]
    for o, seeds in res.config.batch_seeds.items():
        out += [f"On batch budgets {o} ran seeds {seeds} only (too slow for all seeds within the hour); its batch "
                "scores are over those seeds and it has no mean rank there.", ""]
    for budget, (rounds, batch) in res.config.budgets.items():
        out += [f"### {budget}: {rounds} rounds x {batch} suggestions", "",
                "Mean score (100 = optimum, 0 = a typical random configuration), mean rank per problem and seed "
                "(1 = best), optimizer time per run:", "", summary_table(res, budget), ""]
        for fam in families(res):
            out += [f"{fam} — median score over seeds (min–max):", "", family_table(res, budget, fam), ""]
    return "\n".join(out)


def to_json(res: Results) -> dict[str, object]:
    return {"config": asdict(res.config), "runs": [asdict(r) for r in res.runs], "reference": res.reference,
            "wall_seconds": res.wall_seconds}


_PEER_MODULES = {"optuna-tpe": "optuna", "optuna-cmaes": "optuna", "skopt-gp": "skopt", "hyperopt-tpe": "hyperopt"}


def available(optimizers: list[str]) -> tuple[list[str], list[str]]:
    """Split ``optimizers`` into those whose library is installed and those missing (peers are extras)."""
    import importlib.util

    ok: list[str] = []
    missing: list[str] = []
    for o in optimizers:
        mod = _PEER_MODULES.get(o)
        (missing if mod and importlib.util.find_spec(mod) is None else ok).append(o)
    return ok, missing


def config_for(quick: bool, seeds: int | None = None, workers: int | None = None,
               optimizers: list[str] | None = None, problems: list[str] | None = None) -> Config:
    if quick:
        cfg = Config(QUICK_PROBLEMS, list(OPTIMIZERS), [0], dict(QUICK_BUDGETS), reference_samples=16, workers=2)
    else:
        cfg = Config([p.name for p in all_problems()], list(OPTIMIZERS), list(range(3)), dict(BUDGETS),
                     batch_seeds={"skopt-gp": [0]})
    if seeds is not None:
        cfg.seeds = list(range(seeds))
    if workers is not None:
        cfg.workers = workers
    if optimizers == ["cmaes"]:
        cfg.optimizers = list(CMAES_OPTIMIZERS)
        cfg.problems = [p.name for p in all_problems() if p.family == "synthetic"]
        cfg.batch_seeds = {}
    elif optimizers:
        cfg.optimizers = optimizers
    cfg.optimizers, cfg.missing = available(cfg.optimizers)
    if problems:
        cfg.problems = problems
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few problems, one seed, small budgets")
    ap.add_argument("--seeds", type=int, help="number of seeds (default 3, quick 1)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    ap.add_argument("--optimizers", nargs="*",
                    help=f"subset of {OPTIMIZERS}, or cmaes for {CMAES_OPTIMIZERS} on the synthetic problems")
    ap.add_argument("--problems", nargs="*", help="subset of problem names")
    ap.add_argument("--budgets", nargs="*", help=f"subset of {list(BUDGETS) + list(EXTRA_BUDGETS)}")
    ap.add_argument("--skopt-batch", action="store_true",
                    help="run scikit-optimize on every seed of the batch budget too (about 3 minutes per run)")
    ap.add_argument("--json", type=Path, help="write raw results here")
    args = ap.parse_args(argv)
    cfg = config_for(args.quick, args.seeds, args.workers, args.optimizers, args.problems)
    if args.skopt_batch:
        cfg.batch_seeds = {}
    if args.budgets:
        cfg.budgets = {b: cfg.budgets[b] if b in cfg.budgets else EXTRA_BUDGETS[b] for b in args.budgets}
    res = run(cfg)
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(to_json(res), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
