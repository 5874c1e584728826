"""kubetune's ``tpe`` against Optuna's TPESampler (``constant_liar=True``), side by side in one run.

Usage (from the repository root)::

    python benchmarks/tpe_compare.py                      # synthetic, 10 seeds; seq50, batch4 and batch8
    python benchmarks/tpe_compare.py --seeds 20 --ml-seeds 3 --json out.json
    python benchmarks/tpe_compare.py --variants "kubetune-tpe" "kubetune-tpe[constantLiar=false]"

Every optimizer runs the same problems, seeds and budgets as ``benchmarks/quality.py`` (``seq50``: 50 trials one at
a time; ``batch4``: 25 rounds of 4 suggestions; ``batch8``: 16 rounds of 8, each round told together) and is scored
the same way (100 = optimum, 0 = a typical random configuration). The tables give, per problem, each optimizer's mean
score and its standard error over seeds, and for each kubetune variant its wins, ties and losses against the
reference optimizer (paired by seed; a tie is a score within ``--tie`` points) and the mean paired difference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "operator"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402

from benchmarks.problems import all_problems  # noqa: E402
from benchmarks.quality import (  # noqa: E402
    BUDGETS,
    EXTRA_BUDGETS,
    Config,
    Results,
    RunResult,
    available,
    run,
    score,
    to_json,
)

REFERENCE = "optuna-tpe"
DEFAULT_BUDGETS = ["seq50", "batch4", "batch8"]


def _problems(families: list[str]) -> list[str]:
    return [p.name for p in all_problems() if p.family in families]


def merge(parts: list[Results]) -> Results:
    """One result set from runs over disjoint problem sets (each scored against its own run's references)."""
    first = parts[0]
    cfg = Config([p for r in parts for p in r.config.problems], first.config.optimizers,
                 sorted({s for r in parts for s in r.config.seeds}), first.config.budgets, workers=first.config.workers)
    out = Results(cfg)
    for r in parts:
        out.runs += r.runs
        out.reference.update(r.reference)
        out.wall_seconds += r.wall_seconds
    return out


def from_json(data: dict[str, object]) -> Results:
    """Results written with ``--json`` (to render them again, e.g. against another reference)."""
    cfg = dict(data["config"])  # type: ignore[call-overload]
    cfg["budgets"] = {k: tuple(v) for k, v in cfg["budgets"].items()}
    res = Results(Config(**cfg), [RunResult(**r) for r in data["runs"]],  # type: ignore[attr-defined]
                  dict(data["reference"]), float(data["wall_seconds"]))  # type: ignore[call-overload, arg-type]
    return res


def _scores(res: Results, budget: str, optimizer: str, prob: str) -> dict[int, float]:
    return {r.seed: score(res, r) for r in res.runs if r.budget == budget and r.optimizer == optimizer
            and r.problem == prob}


def _se(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def table(res: Results, budget: str, reference: str, tie: float) -> str:
    """Problems x optimizers: mean (s.e.), and per variant wins/ties/losses against ``reference``."""
    opts = [o for o in res.config.optimizers if any(r.optimizer == o and r.budget == budget for r in res.runs)]
    variants = [o for o in opts if o != reference]
    head = ["problem", *(f"{o} mean (s.e.)" for o in opts), *(f"{v} W/T/L, diff (s.e.)" for v in variants)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    probs = [p.name for p in all_problems() if p.name in res.config.problems]
    fam = {p.name: p.family for p in all_problems()}
    groups: list[tuple[str, list[str]]] = [(p, [p]) for p in probs]
    for f in dict.fromkeys(fam[p] for p in probs):
        groups.append((f"**{f}**", [p for p in probs if fam[p] == f]))
    if len({fam[p] for p in probs}) > 1:
        groups.append(("**all**", probs))
    for label, members in groups:
        cells = [label]
        per = {o: [_scores(res, budget, o, p) for p in members] for o in opts}
        for o in opts:
            x = np.array([v for d in per[o] for v in d.values()])
            cells.append(f"{np.mean(x):.1f} ({_se(x):.1f})" if len(x) else "—")
        for v in variants:
            diffs = np.array([d[s] - ref[s] for d, ref in zip(per[v], per[reference]) for s in d if s in ref])
            if not len(diffs):
                cells.append("—")
                continue
            wins, losses = int((diffs > tie).sum()), int((diffs < -tie).sum())
            cells.append(f"{wins}/{len(diffs) - wins - losses}/{losses}, {np.mean(diffs):+.1f} ({_se(diffs):.1f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(res: Results, reference: str, tie: float) -> str:
    out = [f"Seeds: {res.config.seeds}; wall time {res.wall_seconds:.0f} s with {res.config.workers} workers; "
           f"ties within {tie} score points.", ""]
    for budget, (rounds, batch) in res.config.budgets.items():
        t = {o: np.mean([r.suggest_seconds for r in res.runs if r.budget == budget and r.optimizer == o])
             for o in res.config.optimizers}
        out += [f"### {budget}: {rounds} rounds x {batch} suggestions", "", table(res, budget, reference, tie), "",
                "Optimizer time per run: " + ", ".join(f"{o} {v:.2f} s" for o, v in t.items()), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeds on the synthetic problems (default 10)")
    ap.add_argument("--ml-seeds", type=int, default=0, help="seeds on the ml-clf and ml-reg problems (default: none)")
    ap.add_argument("--variants", nargs="*", default=["kubetune-tpe"],
                    help="kubetune optimizers to compare, e.g. 'kubetune-tpe[constantLiar=false]'")
    ap.add_argument("--reference", default=REFERENCE, help=f"the optimizer compared against (default {REFERENCE})")
    ap.add_argument("--budgets", nargs="*", default=DEFAULT_BUDGETS,
                    help=f"subset of {list(BUDGETS) + list(EXTRA_BUDGETS)}")
    ap.add_argument("--problems", nargs="*", help="only these problems")
    ap.add_argument("--tie", type=float, default=0.1, help="score difference counted as a tie (default 0.1)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    ap.add_argument("--json", type=Path, help="write raw results here")
    ap.add_argument("--from-json", type=Path, help="render the tables of an earlier --json run instead of running")
    args = ap.parse_args(argv)
    if args.from_json:
        print(report(from_json(json.loads(args.from_json.read_text())), args.reference, args.tie))
        return 0
    optimizers, missing = available([*args.variants, args.reference])
    if missing:
        ap.error(f"not installed: {', '.join(missing)} (pip install '.[bench]')")
    budgets = {b: BUDGETS[b] if b in BUDGETS else EXTRA_BUDGETS[b] for b in args.budgets}
    runs = [(["synthetic"], args.seeds), (["ml-clf", "ml-reg"], args.ml_seeds)]
    parts = []
    for fams, seeds in runs:
        probs = [p for p in _problems(fams) if not args.problems or p in args.problems]
        if seeds > 0 and probs:
            parts.append(run(Config(probs, optimizers, list(range(seeds)), dict(budgets), workers=args.workers)))
    if not parts:
        ap.error("nothing to run")
    res = merge(parts)
    print(report(res, args.reference, args.tie))
    if args.json:
        args.json.write_text(json.dumps(to_json(res), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
