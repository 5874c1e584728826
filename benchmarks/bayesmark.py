"""The bayesmark problem set, scored as bayesmark scores it: kubetune's algorithms against the peers.

Usage (from the repository root; run it with ``nice -n 19`` on a shared machine)::

    python benchmarks/bayesmark.py --quick        # 2 cheap problems, 1 seed, tiny budgets (the unit test)
    python benchmarks/bayesmark.py                # the documented subset (docs/benchmarks.md): ~15 min of CPU
    python benchmarks/bayesmark.py --full         # all 90 problems, 10 seeds, every peer: a quiet machine's day
    # more seeds of one optimizer, scored against the peers' and random search's studies of a saved run, held fixed:
    python benchmarks/bayesmark.py --full --seeds 5 --optimizers kubetune-bayesian --json SAVED.json --resume \
        --fixed-baselines

Problems are :mod:`benchmarks.bayesmark_problems` (bayesmark's models, datasets, metrics and warped spaces).
Budgets: ``batch8`` is the NeurIPS 2020 challenge's (16 rounds of 8 suggestions asked together, then told together);
``seq40`` is 40 trials one at a time.

Score: bayesmark's leaderboard score, ``bayesmark/experiment_analysis.py`` (``compute_aggregates``, the value
logged as "Final score `100 x (1-loss)` for leaderboard") with the baselines of
``bayesmark/experiment_baseline.py`` (``compute_baseline``), computed per budget as one bayesmark experiment:

* ``opt_p`` = the best loss any optimizer evaluated on problem ``p`` (minus ``10000 * spacing``, bayesmark's pad);
* ``clip_p`` = the median of all of random search's evaluations on ``p`` (pooled over rounds and seeds);
* a run's normalized loss ``clip((S - opt_p) / (clip_p - opt_p), -1, 1)``, ``S`` its best loss after the last
  round (``get_perf_array``: the cumulative minimum over batches);
* per problem the mean over seeds (``NORMED_MEAN``), over problems the mean (``summary[PERF_MEAN]``), and the
  score ``100 * (1 - that mean)``: 100 = every run found the best known loss, 0 = no better than the median random
  configuration. The published leaderboard (HEBO 100.1, TuRBO 98.0, ...) is this number on the challenge's hidden
  problems at ``batch8``.

Also reported: the same score against the peers' baselines (``opt_p`` from the peers and random search only, not
from kubetune's optimizers; the challenge scored its entries against baselines set by other optimizers, which is how
HEBO reached 100.1), the ceilings of the pool (:func:`ceilings`), the standard error of the score over problems
(bayesmark's ``t_EB`` uses the same spread), per family (model x metric) the mean score, per problem win/tie/loss
of the default algorithm against each peer, and bayesmark's *median* normalization against random search:
``(median_n S - opt_p) / (rand_med_p - opt_p)``, where ``rand_med_p`` is the median of random search's best after
the budget, estimated from the pooled random evaluations as bayesmark does (``quantiles.min_quantile_CI``: the
``1 - 0.5**(1/N)`` quantile of ``N`` evaluations); above 1 means worse than random search's median.
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

from benchmarks.bayesmark_problems import bayesmark_problem, family, problem_names  # noqa: E402
from benchmarks.optimizers import make_optimizer  # noqa: E402
from kubetune.engine.space import ParamValue  # noqa: E402

DEFAULT = "kubetune-bayesian"
OPTIMIZERS = [DEFAULT, "optuna-tpe", "hyperopt-tpe", "nevergrad-1p1", "random"]
FULL_OPTIMIZERS = [DEFAULT, "kubetune-tpe", "optuna-tpe", "hyperopt-tpe", "nevergrad-1p1", "skopt-gp", "smac3-hpo",
                   "random"]
BUDGETS = {"batch8": (16, 8), "seq40": (40, 1)}
QUICK_BUDGETS = {"batch8": (2, 4), "seq40": (4, 1)}
SUBSET = [
    # decision trees: step-like objectives, log losses with heavy tails
    "DT_wine_nll", "DT_iris_nll", "DT_diabetes_mae",
    # logistic regression (bayesmark's "linear" classifier): log loss
    "linear_breast_nll", "linear_wine_nll",
    # k nearest neighbours, SVM, lasso regression
    "kNN_wine_nll", "SVM_wine_nll", "lasso_diabetes_mae",
]
"""The documented run's problems (a subset: 8 of 90): cheap models first (a few ms to ~100 ms per evaluation on
the shared machine), the two kinds the default algorithm was seen to fail on (decision-tree and
logistic-regression log loss) and one problem of each other cheap model family."""
QUICK_PROBLEMS = ["DT_iris_acc", "kNN_iris_nll"]
_PEER_MODULES = {"optuna-tpe": "optuna", "skopt-gp": "skopt", "hyperopt-tpe": "hyperopt",
                 "nevergrad-1p1": "nevergrad", "smac3-hpo": "smac"}


@dataclass
class Config:
    problems: list[str]
    optimizers: list[str]
    seeds: list[int]
    budgets: dict[str, tuple[int, int]]
    workers: int = 2
    missing: list[str] = field(default_factory=list)


@dataclass
class Run:
    problem: str
    optimizer: str
    budget: str
    seed: int
    losses: list[float]  # every evaluation, in order
    suggest_seconds: float
    objective_seconds: float
    best_params: dict[str, ParamValue] | None = None
    """The configuration of the best loss (the first one to reach it); absent from studies recorded before it was."""

    @property
    def best(self) -> float:
        return min(self.losses)


@dataclass
class Results:
    config: Config
    runs: list[Run] = field(default_factory=list)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    recorded_in: Path | None = None
    """The file the studies were read from, for a report that ran none of them: a ``.partial.jsonl`` (no timing) or
    the ``--json`` of a finished run (``wall_seconds`` and ``cpu_seconds`` are that run's)."""


def _limit_threads() -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


def run_one(problem: str, optimizer: str, budget: str, rounds: int, batch: int, seed: int) -> Run:
    _limit_threads()
    prob = bayesmark_problem(problem)
    # A different stream per problem, as bayesmark gives every study its own seed.
    opt_seed = seed * 1000 + problem_names().index(problem) if problem in problem_names() else seed
    opt = make_optimizer(optimizer, prob.space, opt_seed, budget=rounds * batch, workers=batch)
    losses: list[float] = []
    best_params: dict[str, ParamValue] | None = None
    t_sug = t_obj = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        params = opt.ask(batch)
        t1 = time.perf_counter()
        ys = [prob.loss(p) for p in params]
        t2 = time.perf_counter()
        opt.tell(params, ys)
        t_sug += (t1 - t0) + (time.perf_counter() - t2)
        t_obj += t2 - t1
        for p, y in zip(params, ys):
            if not losses or y < min(losses):
                best_params = {k: v.item() if isinstance(v, np.generic) else v for k, v in p.items()}
            losses.append(y)
    return Run(problem, optimizer, budget, seed, losses, t_sug, t_obj, best_params)


def read_partial(path: Path) -> list[Run]:
    """The studies a run appended to its ``.partial.jsonl`` (a line cut short by a kill is left out)."""
    runs = []
    for line in path.read_text().splitlines():
        try:
            runs.append(Run(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return runs


def run(config: Config, log: bool = True, partial: Path | None = None, resume: bool = False) -> Results:
    """Run every study of ``config``; with ``partial``, each finished study is also appended there as a JSON line
    (a run cut short keeps what finished). With ``resume``, the studies of ``config`` already in ``partial`` are
    read back instead of run again (every study is deterministic per seed on one CPU model, so a run can be
    continued any time, and more seeds, problems or optimizers added to it; docs/benchmarks.md says what differs
    on another CPU model)."""
    start, cpu0 = time.perf_counter(), _cpu()
    res = Results(config)
    tasks = [(p, o, b, r, n, s) for p in config.problems for b, (r, n) in config.budgets.items()
             for o in config.optimizers for s in config.seeds]
    if partial is not None and partial.exists() and partial.stat().st_size:
        with partial.open("rb+") as fh:  # a line torn by a kill: the next study starts on a line of its own
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    if resume and partial is not None and partial.exists():
        wanted = {t[:3] + (t[5],) for t in tasks}
        done = {}
        for r in read_partial(partial):
            key = (r.problem, r.optimizer, r.budget, r.seed)
            if key in wanted:
                done[key] = r
        res.runs.extend(done.values())
        tasks = [t for t in tasks if t[:3] + (t[5],) not in done]
        if log:
            print(f"[resume] {len(done)} studies read from {partial}, {len(tasks)} to run", file=sys.stderr)
    # Expensive optimizers first (they bound the wall time); otherwise in the order of config.problems.
    tasks.sort(key=lambda t: -(t[3] * t[4] * (30 if t[1] in ("smac3-hpo", "skopt-gp") else 1)))
    with ProcessPoolExecutor(max_workers=max(1, config.workers)) as pool:
        futures = [pool.submit(run_one, *t) for t in tasks]
        for i, f in enumerate(futures):
            r = f.result()
            res.runs.append(r)
            if partial is not None:
                with partial.open("a") as fh:
                    fh.write(json.dumps(asdict(r)) + "\n")
            if log:
                print(f"[{i + 1}/{len(futures)} {time.perf_counter() - start:7.1f}s] {r.problem} {r.optimizer} "
                      f"{r.budget} seed={r.seed} best={r.best:.6g} suggest={r.suggest_seconds:.1f}s "
                      f"objective={r.objective_seconds:.1f}s", file=sys.stderr, flush=True)
    res.wall_seconds = time.perf_counter() - start
    res.cpu_seconds = _cpu() - cpu0
    return res


def _cpu() -> float:
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# -- bayesmark's scoring ------------------------------------------------------------------------------------------


@dataclass
class Baseline:
    opt: float
    clip: float
    rand_med: float  # median over random-search studies of the best after the budget (pooled estimator)


def reference_pool(res: Results) -> list[str]:
    """The peers and random search: every optimizer of the run that is not kubetune's (see :func:`baselines`)."""
    return [o for o in res.config.optimizers if not o.startswith("kubetune-")]


def baselines(res: Results, budget: str, reference: list[str] | None = None) -> dict[str, Baseline]:
    """Per problem ``opt``, ``clip`` and random search's median best. ``opt`` is the best loss of every optimizer
    in the run (bayesmark's ``compute_baseline`` over one experiment), or only of the ``reference`` optimizers: the
    challenge scored entries against baselines set by other optimizers (HEBO's 100.1 is above 100, so its own
    losses were not in ``opt``), and bayesmark treats the baselines as fixed reference values."""
    rounds, batch = res.config.budgets[budget]
    out: dict[str, Baseline] = {}
    for p in res.config.problems:
        runs = [r for r in res.runs if r.problem == p and r.budget == budget]
        rand = np.concatenate([r.losses for r in runs if r.optimizer == "random"])
        best = float(min(min(r.losses) for r in runs if reference is None or r.optimizer in reference))
        opt = best + 10000 * float(np.spacing(-max(np.nextafter(0, 1), abs(best))))  # bayesmark's PAD_FACTOR
        clip = float(np.median(rand))
        n = rounds * batch
        rand_med = float(np.quantile(rand, 1.0 - 0.5 ** (1.0 / n), method="inverted_cdf"))
        out[p] = Baseline(opt, clip, rand_med)
    return out


def normed(b: Baseline, best: float) -> float:
    """bayesmark's ``NORMED_MEAN`` of one study: ``clip((best - opt) / (clip - opt), -1, 1)``."""
    span = b.clip - b.opt
    return float(np.clip((best - b.opt) / span, -1.0, 1.0)) if span > 0 else 0.0


def by_seed(res: Results, budget: str, optimizer: str,
            reference: list[str] | None = None) -> dict[str, dict[int, float]]:
    """Normalized loss per problem and seed; ``reference`` as in :func:`baselines`."""
    base = baselines(res, budget, reference)
    return {p: {r.seed: normed(base[p], r.best) for r in res.runs
                if r.problem == p and r.budget == budget and r.optimizer == optimizer}
            for p in res.config.problems}


def per_problem(res: Results, budget: str, optimizer: str,
                reference: list[str] | None = None) -> dict[str, np.ndarray]:
    """Normalized loss per problem, one value per seed (in seed order); ``reference`` as in :func:`baselines`.
    Optimizers may have different seeds (:func:`seeds_of`): each has its own."""
    return {p: np.array([v for _, v in sorted(d.items())]) for p, d in by_seed(res, budget, optimizer, reference).items()}


def seeds_of(res: Results, optimizer: str) -> list[int]:
    """The seeds of ``optimizer``'s studies. Usually ``Config.seeds``; fewer for an optimizer whose studies were
    held fixed while another ran more seeds (``--fixed-baselines``)."""
    return sorted({r.seed for r in res.runs if r.optimizer == optimizer})


def score(res: Results, budget: str, optimizer: str, problems: list[str] | None = None,
          reference: list[str] | None = None) -> tuple[float, float]:
    """Leaderboard score ``100 * (1 - mean normalized loss)`` and its standard error over problems; with
    ``reference``, ``opt`` comes from those optimizers only (:func:`baselines`), so a score can exceed 100."""
    pp = per_problem(res, budget, optimizer, reference)
    means = np.array([pp[p].mean() for p in (problems or res.config.problems)])
    se = float(means.std(ddof=1) / math.sqrt(len(means))) if len(means) > 1 else math.nan
    return 100.0 * (1.0 - float(means.mean())), 100.0 * se


def seed_noise(res: Results, budget: str, optimizer: str, reference: list[str] | None = None) -> float:
    """The standard error of :func:`score` from the seeds alone, with the baselines held fixed: each problem's
    normalized losses vary over its seeds, and the score's variance is the sum over problems of the variance of
    each problem's mean (``var / n_seeds``) divided by the number of problems squared. The ``±`` of :func:`score`
    is the spread over problems, which says how much the problems differ; this says how much running the same
    problems with other seeds would move the number. NaN with fewer than two seeds on some problem."""
    pp = per_problem(res, budget, optimizer, reference)
    vals = [pp[p] for p in res.config.problems]
    if not vals or any(len(v) < 2 for v in vals):
        return math.nan
    var = sum(float(v.var(ddof=1)) / len(v) for v in vals)
    return 100.0 * math.sqrt(var) / len(vals)


def _level_tol(b: Baseline) -> float:
    """Two losses within this of each other are the same level: equal up to float rounding (and bayesmark's pad)."""
    return 1e-9 * max(1.0, abs(b.opt))


def median_vs_random(res: Results, budget: str, optimizer: str) -> dict[str, float]:
    """bayesmark's median normalization per problem: ``(median S - opt) / (random's median S - opt)``."""
    base = baselines(res, budget)
    out = {}
    for p in res.config.problems:
        bests = [r.best for r in res.runs if r.problem == p and r.budget == budget and r.optimizer == optimizer]
        b = base[p]
        span, gap = b.rand_med - b.opt, float(np.median(bests)) - b.opt
        tol = _level_tol(b)
        # Random search's median already at the best seen (bayesmark warns the ratio is then meaningless): level
        # with it is 1, anything worse is infinitely worse.
        out[p] = gap / span if span > tol else (1.0 if gap <= tol else math.inf)
    return out


def against_random_median(res: Results, budget: str, optimizer: str) -> dict[str, tuple[int, int, int]]:
    """Per problem, how many of ``optimizer``'s studies end better than, level with, or worse than random search's
    median best (the ``rand_med`` of :func:`baselines`; level: the same loss up to float rounding, as in
    :func:`median_vs_random`). With many seeds this says more than the median alone on a step-like problem, where
    the median is often exactly level."""
    base = baselines(res, budget)
    out = {}
    for p in res.config.problems:
        b = base[p]
        tol = _level_tol(b)
        bests = [r.best for r in res.runs if r.problem == p and r.budget == budget and r.optimizer == optimizer]
        out[p] = (sum(v < b.rand_med - tol for v in bests), sum(abs(v - b.rand_med) <= tol for v in bests),
                  sum(v > b.rand_med + tol for v in bests))
    return out


def win_tie_loss(res: Results, budget: str, a: str, b: str) -> tuple[int, int, int]:
    """Per problem, ``a`` against ``b``: a win or loss when the mean normalized losses over seeds differ by more
    than 0.01 (one point of score) and by more than twice the standard error of the paired difference; else a
    tie. Paired by seed, on the seeds both have (none in common: a tie)."""
    pa, pb = by_seed(res, budget, a), by_seed(res, budget, b)
    w = t = l = 0
    for p in res.config.problems:
        common = sorted(set(pa[p]) & set(pb[p]))
        d = np.array([pb[p][s] - pa[p][s] for s in common])  # positive: a is better
        if not len(d):
            t += 1
            continue
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
        if abs(d.mean()) > max(0.01, 2 * se):
            if d.mean() > 0:
                w += 1
            else:
                l += 1
        else:
            t += 1
    return w, t, l


def ceilings(res: Results, budget: str) -> tuple[float, float] | None:
    """What choosing among the pool's optimizers (random search aside) could score, on the scale of :func:`score`:
    the best optimizer per problem, chosen after the fact (the lowest mean normalized loss over seeds), and the
    best of their studies per seed (a portfolio that runs every one of them once and keeps the best result; on the
    seeds they all have). The normalization is relative to the pool's best loss seen, so these bound what one
    optimizer is likely to score here; ``None`` with fewer than two optimizers besides random search."""
    opts = [o for o in res.config.optimizers if o != "random"]
    if len(opts) < 2:
        return None
    pps = [by_seed(res, budget, o) for o in opts]
    picked, portfolio = [], []
    for p in res.config.problems:
        picked.append(min(float(np.mean(list(pp[p].values()))) for pp in pps))
        common = sorted(set.intersection(*(set(pp[p]) for pp in pps)))
        portfolio.append(float(np.mean([min(pp[p][s] for pp in pps) for s in common])))
    return 100.0 * (1.0 - float(np.mean(picked))), 100.0 * (1.0 - float(np.mean(portfolio)))


# -- tables -------------------------------------------------------------------------------------------------------


def families(res: Results) -> dict[str, list[str]]:
    fam: dict[str, list[str]] = {}
    for p in res.config.problems:
        fam.setdefault(family(p), []).append(p)
    return fam


def _scored_against_peers(res: Results) -> bool:
    """Whether the report shows the score against the peers: there are kubetune optimizers and peers besides
    random search."""
    ref = reference_pool(res)
    return len(ref) < len(res.config.optimizers) and any(o != "random" for o in ref)


def summary_table(res: Results, budget: str) -> str:
    ref = reference_pool(res)
    against = _scored_against_peers(res)
    lines = ["| optimizer | score | ± s.e. | " + ("against the peers (± s.e.) | " if against else "")
             + "W/T/L of default | worst problem vs random median | optimizer s/run |",
             "|---" * (7 if against else 6) + "|"]
    rows = []
    for o in res.config.optimizers:
        s, se = score(res, budget, o)
        wtl = "—" if o == DEFAULT or DEFAULT not in res.config.optimizers else \
            "{}/{}/{}".format(*win_tie_loss(res, budget, DEFAULT, o))
        mvr = median_vs_random(res, budget, o)
        worst = max(mvr, key=lambda p: mvr[p])
        t = np.mean([r.suggest_seconds for r in res.runs if r.budget == budget and r.optimizer == o])
        se_cell = "—" if math.isnan(se) else f"{se:.1f}"  # one problem: no spread over problems
        cell = ""
        if against:
            rs, rse = score(res, budget, o, reference=ref)
            cell = f"{rs:.1f}" + ("" if math.isnan(rse) else f" ± {rse:.1f}") + " | "
        rows.append((s, f"| {o} | **{s:.1f}** | {se_cell} | {cell}{wtl} | {mvr[worst]:.2f} ({worst}) | {t:.2f} |"))
    return "\n".join(lines + [r for _, r in sorted(rows, key=lambda x: -x[0])])


def family_table(res: Results, budget: str) -> str:
    fam = families(res)
    lines = ["| optimizer | " + " | ".join(fam) + " |", "|---" * (len(fam) + 1) + "|"]
    for o in res.config.optimizers:
        cells = [f"{score(res, budget, o, probs)[0]:.1f}" for probs in fam.values()]
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def problem_table(res: Results, budget: str) -> str:
    """Per problem: the mean score over seeds and, for the default, the median normalized against random and its
    studies better / level / worse than random search's median best."""
    opts = res.config.optimizers
    lines = ["| problem | " + " | ".join(opts) + f" | {DEFAULT} median vs random | better / level / worse |",
             "|---" * (len(opts) + 3) + "|"]
    pps = {o: per_problem(res, budget, o) for o in opts}
    mvr = median_vs_random(res, budget, DEFAULT) if DEFAULT in opts else {}
    blw = against_random_median(res, budget, DEFAULT) if DEFAULT in opts else {}
    for p in res.config.problems:
        cells = [f"{100 * (1 - pps[o][p].mean()):.1f}" for o in opts]
        counts = " / ".join(str(k) for k in blw[p]) if p in blw else "—"
        lines.append(f"| {p} | " + " | ".join(cells) + f" | {mvr.get(p, math.nan):.2f} | {counts} |")
    return "\n".join(lines)


def _provenance(res: Results) -> str:
    n = res.config.workers
    timing = f"wall {res.wall_seconds:.0f} s, CPU {res.cpu_seconds:.0f} s with {n} worker{'s' if n != 1 else ''}."
    if res.recorded_in is None:
        return "this invocation: " + timing
    if res.recorded_in.name.endswith(".jsonl"):
        return f"read from {res.recorded_in.name} (no study ran in this invocation)."
    return f"read from {res.recorded_in.name} (no study ran in this invocation); the run that wrote it: " + timing


def _seeds_line(res: Results) -> str:
    """The seeds, and which optimizer has which when they differ."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for o in res.config.optimizers:
        groups.setdefault(tuple(seeds_of(res, o)), []).append(o)
    if len(groups) <= 1:
        return str(res.config.seeds)
    return "; ".join(f"{list(seeds)} ({', '.join(opts)})" for seeds, opts in groups.items())


def _fmt(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.2f}"


def report(res: Results) -> str:
    c = res.config
    out = [f"Problems ({len(c.problems)}): {', '.join(c.problems)}", "",
           f"Seeds: {_seeds_line(res)}; {len(res.runs)} studies; {sum(r.suggest_seconds + r.objective_seconds for r in res.runs):.0f} s "
           "of optimizer and objective time summed over them; "
           + _provenance(res), ""]
    if c.missing:
        out += [f"Left out (not installed, or unfinished in a partial run): {', '.join(c.missing)}.", ""]
    for budget, (rounds, batch) in c.budgets.items():
        out += [f"### {budget}: {rounds} rounds x {batch} suggestions", "",
                "bayesmark score (100 x (1 - mean normalized loss); random search's median configuration = 0), "
                "standard error over problems, "
                + (f"the same score against the best loss of the peers and random search only "
                   f"({', '.join(reference_pool(res))}: fixed baselines, as the challenge's leaderboard scored "
                   "entries; above 100 = better than their best), " if _scored_against_peers(res) else "")
                + "per-problem win/tie/loss of the default against each, the worst problem by median normalized "
                "against random search's median (> 1: worse than random), optimizer seconds per study:", "",
                summary_table(res, budget), ""]
        if len(c.seeds) > 1:
            noise = []
            for o in res.config.optimizers:
                cell = f"{o} {score(res, budget, o)[0]:.2f} ± {_fmt(seed_noise(res, budget, o))}"
                if _scored_against_peers(res):
                    ref = reference_pool(res)
                    cell += (f" ({score(res, budget, o, reference=ref)[0]:.2f} ± "
                             f"{_fmt(seed_noise(res, budget, o, ref))} against the peers)")
                noise.append(cell)
            out += ["Seed noise of each score, beside the score to two decimals (its standard error from each "
                    "problem's spread over its seeds, the baselines held fixed; the ± of the table is the spread "
                    "over problems): " + ", ".join(noise) + ".", ""]
        if (ceil := ceilings(res, budget)) is not None:
            out += [f"Ceilings of this pool (random search aside; the scale is set by the pool's best loss seen): the "
                    f"best optimizer per problem, chosen after the fact, **{ceil[0]:.1f}**; the best of their studies "
                    f"per seed (every optimizer run once, the best result kept) **{ceil[1]:.1f}**.", ""]
        out += ["Mean score per family (model-metric):", "", family_table(res, budget), "",
                "Per problem (mean score over seeds):", "", problem_table(res, budget), ""]
    return "\n".join(out)


def to_json(res: Results) -> dict[str, object]:
    return {"config": asdict(res.config), "runs": [asdict(r) for r in res.runs], "wall_seconds": res.wall_seconds,
            "cpu_seconds": res.cpu_seconds}


def from_json(data: dict[str, object], path: Path | None = None) -> Results:
    """Results written by ``--json`` (``to_json``); ``path``, the file they were read from, goes in the report."""
    cfg = Config(**data["config"])  # type: ignore[arg-type]
    cfg.budgets = {k: tuple(v) for k, v in cfg.budgets.items()}  # type: ignore[misc]
    res = Results(cfg, [Run(**r) for r in data["runs"]], recorded_in=path)  # type: ignore[arg-type, attr-defined]
    res.wall_seconds, res.cpu_seconds = float(data["wall_seconds"]), float(data["cpu_seconds"])  # type: ignore[arg-type]
    return res


def from_partial(path: Path) -> Results:
    """Results of the studies in a ``.partial.jsonl`` (a run still going, or cut short), for a report: the problems
    every optimizer found in the file finished for every budget found in it and every seed of that optimizer (the
    seeds it has anywhere in the file: ``--fixed-baselines`` gives one optimizer more seeds than the others); the
    others are named in ``Config.missing``."""
    runs = read_partial(path)
    opts = sorted({r.optimizer for r in runs}, key=lambda o: (o not in FULL_OPTIMIZERS,
                                                               FULL_OPTIMIZERS.index(o) if o in FULL_OPTIMIZERS else 0, o))
    seeds = sorted({r.seed for r in runs})
    budgets: dict[str, tuple[int, int]] = {}
    for r in runs:  # the full budgets, or --quick's
        if r.budget not in budgets:
            dims = [d[r.budget] for d in (BUDGETS, QUICK_BUDGETS) if d[r.budget][0] * d[r.budget][1] == len(r.losses)]
            budgets[r.budget] = dims[0] if dims else (len(r.losses), 1)
    have = {(r.problem, r.optimizer, r.budget, r.seed) for r in runs}
    own = {o: {r.seed for r in runs if r.optimizer == o} for o in opts}
    started = {r.problem for r in runs}
    order = {n: i for i, n in enumerate(problem_names())}
    complete = [p for p in sorted(started, key=lambda n: order.get(n, len(order)))
                if all((p, o, b, s) in have for o in opts for b in budgets for s in own[o])]
    cfg = Config(complete, opts, seeds, budgets)
    cfg.missing = [f"{p} (unfinished)" for p in sorted(started - set(complete), key=lambda n: order.get(n, 0))]
    res = Results(cfg, [r for r in runs if r.problem in set(complete)], recorded_in=path)
    return res


def only(res: Results, optimizers: list[str]) -> Results:
    """The same studies re-scored with only ``optimizers`` (and random search, the baseline) in the pool, so the best
    loss seen and the ceilings are theirs: e.g. a run kept with an earlier version of an algorithm beside it."""
    unknown = sorted(set(optimizers) - set(res.config.optimizers))
    if unknown:
        raise ValueError(f"not in these results: {', '.join(unknown)} (they have {', '.join(res.config.optimizers)})")
    keep = [o for o in res.config.optimizers if o in optimizers or o == "random"]
    cfg = Config(res.config.problems, keep, res.config.seeds, res.config.budgets, res.config.workers,
                 res.config.missing)
    return Results(cfg, [r for r in res.runs if r.optimizer in keep], res.wall_seconds, res.cpu_seconds,
                   res.recorded_in)


def available(optimizers: list[str]) -> tuple[list[str], list[str]]:
    import importlib.util

    ok, missing = [], []
    for o in optimizers:
        mod = _PEER_MODULES.get(o)
        (missing if mod and importlib.util.find_spec(mod) is None else ok).append(o)
    return ok, missing


def config_for(quick: bool = False, full: bool = False, seeds: int | None = None, workers: int = 2,
               optimizers: list[str] | None = None, problems: list[str] | None = None,
               budgets: list[str] | None = None, with_random: bool = True) -> Config:
    if quick:
        cfg = Config(list(QUICK_PROBLEMS), list(FULL_OPTIMIZERS), [0], dict(QUICK_BUDGETS))
    elif full:
        cfg = Config(problem_names(), list(FULL_OPTIMIZERS), list(range(10)), dict(BUDGETS))
    else:
        cfg = Config(list(SUBSET), list(OPTIMIZERS), [0, 1, 2], dict(BUDGETS))
    cfg.workers = workers
    if seeds is not None:
        cfg.seeds = list(range(seeds))
    if optimizers:
        # random search: the baseline (unless its studies are held fixed, --fixed-baselines)
        cfg.optimizers = optimizers if "random" in optimizers or not with_random else [*optimizers, "random"]
    if problems:
        cfg.problems = problems
    if budgets:
        cfg.budgets = {b: cfg.budgets[b] for b in budgets}
    cfg.optimizers, cfg.missing = available(cfg.optimizers)
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="2 cheap problems, 1 seed, tiny budgets")
    mode.add_argument("--full", action="store_true", help="all 90 problems, 10 seeds, every peer")
    ap.add_argument("--seeds", type=int, help="number of seeds")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--optimizers", nargs="*", help=f"default {OPTIMIZERS}; random search is always added; with "
                    "--from-json, the optimizers of the saved run to score (the others leave the pool)")
    ap.add_argument("--problems", nargs="*", help="bayesmark test cases, e.g. DT_wine_nll (default: the subset)")
    ap.add_argument("--budgets", nargs="*", help=f"subset of {list(BUDGETS)}")
    ap.add_argument("--json", type=Path, help="write raw results here")
    ap.add_argument("--resume", action="store_true",
                    help="with --json: read the studies already in its .partial.jsonl instead of running them again")
    ap.add_argument("--fixed-baselines", action="store_true",
                    help="with --json, --resume and --optimizers: run only those optimizers (random search is not "
                         "added) and score them against the studies of the peers and random search already in the "
                         "--json's .partial.jsonl, held fixed, as the challenge scored its entries; so one optimizer "
                         "can be given more seeds than the baselines have")
    ap.add_argument("--from-json", type=Path,
                    help="report on results written by --json (or on the problems a .partial.jsonl has finished), "
                         "without running")
    args = ap.parse_args(argv)
    if args.resume and not args.json:
        ap.error("--resume needs --json (the run to continue)")
    if args.fixed_baselines and not (args.resume and args.optimizers):
        ap.error("--fixed-baselines needs --json, --resume and --optimizers (the file that holds the baselines, and "
                 "the optimizers to run against them)")
    if args.from_json:
        if args.from_json.suffix == ".jsonl":
            res = from_partial(args.from_json)
        else:
            res = from_json(json.loads(args.from_json.read_text()), args.from_json)
        if args.optimizers:
            try:
                res = only(res, args.optimizers)
            except ValueError as e:
                ap.error(str(e))
    else:
        cfg = config_for(args.quick, args.full, args.seeds, args.workers, args.optimizers, args.problems,
                         args.budgets, with_random=not args.fixed_baselines)
        partial = args.json.with_suffix(".partial.jsonl") if args.json else None
        if args.fixed_baselines:
            assert partial is not None
            if "random" in cfg.optimizers:
                ap.error("--fixed-baselines: random search is the baseline held fixed; leave it out of --optimizers")
            held = {(r.problem, r.budget) for r in (read_partial(partial) if partial.exists() else [])
                    if r.optimizer == "random"}
            lacking = [f"{p} {b}" for p in cfg.problems for b in cfg.budgets if (p, b) not in held]
            if lacking:
                ap.error(f"--fixed-baselines: {partial} has no random-search studies (the baseline) for "
                         f"{len(lacking)} of the problems asked: {', '.join(lacking[:5])}"
                         + (" …" if len(lacking) > 5 else ""))
        res = run(cfg, partial=partial, resume=args.resume)
        if args.fixed_baselines:
            assert partial is not None
            ran = res
            res = from_partial(partial)  # the studies just run, beside the baselines held fixed
            asked = set(cfg.problems)
            res.config.problems = [p for p in res.config.problems if p in asked]
            res.runs = [r for r in res.runs if r.problem in asked]
            res.recorded_in, res.wall_seconds, res.cpu_seconds = None, ran.wall_seconds, ran.cpu_seconds
            res.config.workers = ran.config.workers
    print(report(res))
    if args.json:
        args.json.write_text(json.dumps(to_json(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
