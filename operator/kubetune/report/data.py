"""The numbers a report draws, taken from :class:`~kubetune.results.ExperimentResults` and bounded.

Every list handed to a figure is capped (see the ``MAX_*`` constants); what was left out is recorded in
:attr:`ReportData.notes` and printed in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine._unit import to_unit_matrix
from ..engine.space import CategoricalDistribution, SearchSpace
from ..results import ExperimentResults, TrialRecord
from ..trials import TrialState
from .importance import MAX_FIT_TRIALS, MIN_TRIALS, Importance, fanova

MAX_POINTS = 2000
"""Scatter points per plot (history, slices, parallel coordinates); beyond it a seeded sample, best trial kept."""
MAX_CURVES = 100
"""Learning curves drawn; beyond it a seeded sample, best trial kept."""
MAX_SLICES = 16
"""Slice plots: the most important parameters first."""
MAX_TABLE_ROWS = 2000
"""Rows of the trial table: the best trials by the objective (results.csv has every trial)."""


@dataclass
class ReportData:
    results: ExperimentResults
    space: SearchSpace
    scored: list[TrialRecord]
    """Succeeded trials whose parameters lie in the search space and that have an objective value."""
    importance: Importance | None
    order: list[int]
    """Parameter indices, most important first (spec order without importance)."""
    notes: list[str] = field(default_factory=list)

    @property
    def metric(self) -> str:
        return self.results.spec.objective.metric

    def value(self, r: TrialRecord) -> float | None:
        return r.trial.objective_value(self.results.spec.objective)

    def infeasible(self, r: TrialRecord) -> bool:
        """A Succeeded trial on which an outcome constraint (``spec.constraints``) does not hold."""
        return r.trial.infeasible(self.results.spec.constraints or ())

    def sample(self, records: list[TrialRecord], limit: int, what: str) -> list[TrialRecord]:
        """At most ``limit`` of ``records`` (seeded, the best trial kept, in trial order), noting any cut."""
        if len(records) <= limit:
            return records
        rng = np.random.default_rng(0)
        best = self.results.best
        keep = set(int(i) for i in rng.choice(len(records), limit, replace=False))
        if best is not None and best not in [records[i] for i in keep]:
            keep.pop()
            keep.add(next(i for i, r in enumerate(records) if r is best))
        self.notes.append(f"{what}: {limit:,} of {len(records):,} trials drawn (a random sample, the best trial "
                          f"included)")
        return [records[i] for i in sorted(keep)]


def in_space(space: SearchSpace, r: TrialRecord) -> bool:
    if space.conditional:  # its active parameters (a trial lacks its inactive ones)
        dists = dict(space.dims)
        return all(n in r.params and dists[n].contains(r.params[n]) for n in space.active_names(r.params))
    return all(name in r.params and dist.contains(r.params[name]) for name, dist in space.dims)


INACTIVE_UNIT = 0.5
"""The unit coordinate an inactive conditional parameter takes for the importance forest and the contour plot."""


def unit_matrix(space: SearchSpace, params: list[Any]) -> np.ndarray:
    """:func:`to_unit_matrix` with inactive parameters at :data:`INACTIVE_UNIT` (the forest takes no NaN)."""
    X = to_unit_matrix(space, params)
    return np.where(np.isnan(X), INACTIVE_UNIT, X) if space.conditional else X


def prepare(results: ExperimentResults) -> ReportData:
    spec = results.spec
    space = spec.search_space()
    scored = [r for r in results.trials
              if r.state is TrialState.SUCCEEDED and r.trial.objective_value(spec.objective) is not None
              and in_space(space, r)]
    data = ReportData(results, space, scored, None, list(range(len(space.dims))))
    if len(scored) >= MIN_TRIALS:
        X = unit_matrix(space, [r.params for r in scored])
        y = np.array([spec.objective.loss(data.value(r) or 0.0) for r in scored])
        if np.ptp(y) > 0:
            data.importance = fanova(X, y, seed=spec.algorithm.seed or 0)
            data.order = [int(i) for i in np.argsort(-data.importance.fractions, kind="stable")]
            if len(scored) > MAX_FIT_TRIALS:
                data.notes.append(f"parameter importance: the forest learned from {MAX_FIT_TRIALS:,} of "
                                  f"{len(scored):,} succeeded trials (a random sample)")
    return data


def unit_grid(space: SearchSpace, j: int, n: int = 40) -> np.ndarray:
    """Unit coordinates to evaluate parameter ``j`` at: category centres, or ``n`` evenly spaced points."""
    dist = space.dims[j][1]
    if isinstance(dist, CategoricalDistribution):
        k = len(dist.choices)
        return (np.arange(k) + 0.5) / k
    count = getattr(dist, "n_values", None)
    if isinstance(count, int) and count <= n:
        return np.array([dist.to_unit(dist.value(i)) for i in range(count)])
    return (np.arange(n) + 0.5) / n


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
