"""The median stopping rule (Golovin et al., "Google Vizier", 2017), with a true median.

A running trial whose latest reported step is ``s`` is stopped when

* ``s >= startStep``, and
* at least ``minTrials`` *other* trials have a value at step ``s``, and
* its best value over steps ``<= s`` is strictly worse than the median of those other trials' values at ``s``.

Which trials are compared (explicitly): every other trial with a learning curve that is Running, Succeeded or
Pruned. Running and pruned trials count as well as completed ones, so the rule can act while the first trials are
still running in parallel, and each pruned trial still tells how bad things were at the steps it did reach. (This
differs from Optuna's ``MedianPruner``, which compares with completed trials only.) Failed and canceled trials are
not compared.

"A trial's value at step ``s``" is the value it reported at the last step ``<= s``, counted only if that trial
reached step ``s`` (reported some step ``>= s``); a trial that stopped before ``s`` does not vote at ``s``. The median
is the true median (the mean of the two middle values for an even count), never the mean of all values. A value equal
to the median is not worse: ties continue. Trials without intermediate reports are never stopped.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from . import Pruner, PruneReason
from ._curve import COMPARED_STATES, FinishedCurves, points, value_at
from .config import Effective

if TYPE_CHECKING:
    from ..spec import ExperimentSpec
    from ..trials import Trial


class MedianPruner(Pruner):
    reason = PruneReason.MEDIAN

    def __init__(self, config: Effective) -> None:
        self.min_trials = config.min_trials
        self.start_step = config.start_step

    def decide(self, spec: ExperimentSpec, trials: Sequence[Trial]) -> list[tuple[int, str, str]]:
        objective = spec.objective
        curves = {t.number: points(t) for t in trials if t.state in COMPARED_STATES and t.curve}
        out: list[tuple[int, str, str]] = []
        for t in sorted(trials, key=lambda t: t.number):
            if not t.active or not curves.get(t.number):
                continue
            mine = curves[t.number]
            step = mine[-1][0]
            if step < self.start_step:
                continue
            others = [v for n, pts in curves.items() if n != t.number and (v := value_at(pts, step)) is not None]
            if len(others) < self.min_trials:
                continue
            median = statistics.median(others)
            values = [v for _, v in mine]
            best = max(values) if objective.goal == "maximize" else min(values)
            if objective.better(median, best):
                out.append((t.number, self.reason,
                            f"stopped at step {step}: best {objective.metric} so far {best:.6g} is worse than the "
                            f"median {median:.6g} of {len(others)} other trials at step {step}"))
        return out

    def decide_active(
        self, spec: ExperimentSpec, finished: FinishedCurves, active: Sequence[Trial]
    ) -> list[tuple[int, str, str]]:
        objective = spec.objective
        curves = {t.number: points(t) for t in sorted(active, key=lambda t: t.number)
                  if t.state in COMPARED_STATES and t.curve}
        out: list[tuple[int, str, str]] = []
        for number, mine in curves.items():
            if not mine:
                continue
            step = mine[-1][0]
            if step < self.start_step:
                continue
            # the other trials' values at `step` as `sorted` orders them when given in trial-number order
            done = finished.column(("median", step), partial(value_at, step=step))
            running = [(v, n, v) for n, pts in curves.items() if n != number and (v := value_at(pts, step)) is not None]
            if len(done) + len(running) < self.min_trials:
                continue
            others = [e[2] for e in sorted(done + running)] if running else [e[2] for e in done]
            median = statistics.median(others)
            values = [v for _, v in mine]
            best = max(values) if objective.goal == "maximize" else min(values)
            if objective.better(median, best):
                out.append((number, self.reason,
                            f"stopped at step {step}: best {objective.metric} so far {best:.6g} is worse than the "
                            f"median {median:.6g} of {len(others)} other trials at step {step}"))
        finished.keep_used()
        return out
