"""Asynchronous successive halving (Li et al., "A System for Massively Parallel Hyperparameter Tuning", 2020) as a
stopping rule.

Rungs are at steps ``r_k = minResource * reductionFactor^k`` (k = 0, 1, ...), below ``maxResource`` when it is set
(reaching ``maxResource`` means the trial is done, so there is no decision there, and a trial that reported
``maxResource`` is never stopped). A trial *reached* rung ``k`` when it reported a step ``>= r_k``; its value at the
rung is the one of that first report (the value at ``r_k`` for a trial that reports every step).

A running trial is judged at the highest rung it reached, against the trials that reached that rung *before it*, as
ASHA promotes a configuration by comparing it with the results its rung has so far. "Before it" is taken as
"created no later than it" (a lower trial number), which is the arrival order when trials progress at similar
speeds and, unlike the time at which a backend happens to look, is the same for every observer: decisions depend on
the trials alone, so both backends and a restarted operator agree. Among those ``n`` trials (itself included;
running, completed or pruned ones; not failed or canceled), the trial continues when its rung value is at least as
good as the ``max(1, floor(n / eta))``-th best, and is stopped otherwise.

* Ties with that cutoff value continue.
* Nothing is decided at a rung with fewer than ``minTrials`` such trials, so the first ``minTrials - 1`` trials of an
  experiment are never stopped.
* Once a trial reaches its next rung it is only judged there.
* Trials without intermediate reports are never stopped.

With ``minTrials: 1`` this takes the same decisions as Optuna's ``SuccessiveHalvingPruner`` (bootstrap count 0) on
trials that report in creation order.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from . import Pruner, PruneReason
from ._curve import COMPARED_STATES, FinishedCurves, first_from, points
from .config import Effective

if TYPE_CHECKING:
    from ..spec import ExperimentSpec
    from ..trials import Trial


class AshaPruner(Pruner):
    reason = PruneReason.ASHA

    def __init__(self, config: Effective) -> None:
        self.min_trials = config.min_trials
        self.min_resource = config.min_resource
        self.max_resource = config.max_resource
        self.eta = config.reduction_factor

    def rung_of(self, step: int) -> tuple[int, int] | None:
        """``(k, r_k)`` of the highest rung at or below ``step`` (and below ``maxResource``), or ``None``."""
        if step < self.min_resource:
            return None
        k, r = 0, self.min_resource
        while r * self.eta <= step and (self.max_resource is None or r * self.eta < self.max_resource):
            k, r = k + 1, r * self.eta
        if self.max_resource is not None and r >= self.max_resource:
            return None
        return k, r

    def decide(self, spec: ExperimentSpec, trials: Sequence[Trial]) -> list[tuple[int, str, str]]:
        objective = spec.objective
        curves = {t.number: points(t) for t in trials if t.state in COMPARED_STATES and t.curve}
        out: list[tuple[int, str, str]] = []
        for t in sorted(trials, key=lambda t: t.number):
            if not t.active or not curves.get(t.number):
                continue
            last = curves[t.number][-1][0]
            if self.max_resource is not None and last >= self.max_resource:
                continue  # the trial has done its full budget: nothing left to save
            rung = self.rung_of(last)
            if rung is None:
                continue
            k, r = rung
            mine = first_from(curves[t.number], r)
            assert mine is not None
            values = [p[1] for n, pts in curves.items() if n <= t.number and (p := first_from(pts, r)) is not None]
            n = len(values)
            if n < self.min_trials:
                continue
            top = max(1, n // self.eta)
            ranked = sorted(values, reverse=objective.goal == "maximize")
            cutoff = ranked[top - 1]
            if objective.better(cutoff, mine[1]):
                out.append((t.number, self.reason,
                            f"stopped at rung {k} (step {r}, reported at step {mine[0]}): {objective.metric} "
                            f"{mine[1]:.6g} is not in the top {top} of the {n} trials that reached it so far "
                            f"(cutoff {cutoff:.6g})"))
        return out

    def decide_active(
        self, spec: ExperimentSpec, finished: FinishedCurves, active: Sequence[Trial]
    ) -> list[tuple[int, str, str]]:
        objective = spec.objective
        sign = -1 if objective.goal == "maximize" else 1  # sorted(values, reverse=True) ranks as sorted by -value
        curves = {t.number: points(t) for t in sorted(active, key=lambda t: t.number)
                  if t.state in COMPARED_STATES and t.curve}
        out: list[tuple[int, str, str]] = []
        for number, pts in curves.items():
            if not pts:
                continue
            last = pts[-1][0]
            if self.max_resource is not None and last >= self.max_resource:
                continue
            rung = self.rung_of(last)
            if rung is None:
                continue
            k, r = rung
            mine = first_from(pts, r)
            assert mine is not None
            done = finished.column(("asha", r, sign), partial(_value_from, step=r), sign)
            earlier = [e for e in done if e[1] <= number]  # trials created no later than this one
            running = [(sign * p[1], n, p[1]) for n, other in curves.items()
                       if n <= number and (p := first_from(other, r)) is not None]
            n = len(earlier) + len(running)
            if n < self.min_trials:
                continue
            top = max(1, n // self.eta)
            cutoff = sorted(earlier + running)[top - 1][2]
            if objective.better(cutoff, mine[1]):
                out.append((number, self.reason,
                            f"stopped at rung {k} (step {r}, reported at step {mine[0]}): {objective.metric} "
                            f"{mine[1]:.6g} is not in the top {top} of the {n} trials that reached it so far "
                            f"(cutoff {cutoff:.6g})"))
        finished.keep_used()
        return out


def _value_from(pts: Sequence[tuple[int, float]], step: int) -> float | None:
    p = first_from(pts, step)
    return None if p is None else p[1]
