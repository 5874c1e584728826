"""Reading learning curves for the stopping rules: sorted, finite, looked up by step."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING

from ..trials import TrialState

if TYPE_CHECKING:
    from ..trials import Trial

Points = list[tuple[int, float]]

COMPARED_STATES = frozenset({TrialState.RUNNING, TrialState.SUCCEEDED, TrialState.PRUNED})
"""Trials whose curves the rules compare with: running, completed and pruned ones (not failed or canceled)."""


def points(trial: Trial) -> Points:
    """The trial's ``(step, objective)`` points sorted by step, finite values only.

    ``Trial.curve`` is kept sorted by the backends; sorting again (stable, so the later of two reports for one step
    wins) makes the rules correct for any curve, including one built from reports that arrived out of order.
    """
    pts = sorted(((int(s), float(v)) for s, v in trial.curve if math.isfinite(float(v))), key=lambda p: p[0])
    out: Points = []
    for s, v in pts:
        if out and out[-1][0] == s:
            out[-1] = (s, v)
        else:
            out.append((s, v))
    return out


def value_at(pts: Sequence[tuple[int, float]], step: int) -> float | None:
    """The value "at ``step``": the one reported at the last step <= ``step``, for a curve that reached ``step``.

    ``None`` when the curve has not reached ``step`` yet (its last step is smaller) or has no point at or before it.
    """
    if not pts or pts[-1][0] < step:
        return None
    i = bisect_right(pts, step, key=lambda p: p[0])  # points are sorted by step, one per step
    return pts[i - 1][1] if i else None


def first_from(pts: Sequence[tuple[int, float]], step: int) -> tuple[int, float] | None:
    """The first point at or after ``step`` (the report with which the curve reached ``step``), or ``None``."""
    if not pts or pts[-1][0] < step:
        return None
    s, v = pts[bisect_left(pts, step, key=lambda p: p[0])]
    return s, v


Column = list[tuple[float, int, float]]
"""``(sort key, trial number, value)`` sorted ascending: the key is the value, or its negation to rank descending."""


class FinishedCurves:
    """The curves of the finished trials the rules compare with, and columns of their values kept sorted as trials
    finish, so that a rule judging the running trials does not read every finished curve again.

    A column holds, for each finished curve that has one, the value a function picks from it (the value at a step,
    the value at a rung), sorted by ``(sign * value, trial number)``: the order in which ``sorted`` (stable) ranks
    values given in trial-number order. Only the columns a rule asked for at its last decision are kept.
    """

    def __init__(self) -> None:
        self.trials: list[Trial] = []
        """The compared finished trials, by number."""
        self.curves: dict[int, Points] = {}
        self._columns: dict[Hashable, tuple[Callable[[Points], float | None], int, Column]] = {}
        self._used: set[Hashable] = set()

    def add(self, trial: Trial) -> None:
        if trial.state not in COMPARED_STATES or not trial.curve or trial.active or trial.number in self.curves:
            return
        pts = points(trial)
        if pts == trial.curve and all(type(p) is tuple and type(p[0]) is int and type(p[1]) is float
                                      for p in trial.curve):
            pts = trial.curve  # no second copy of the usual (already clean) curve
        if not pts:
            return
        insort(self.trials, trial, key=lambda t: t.number)
        self.curves[trial.number] = pts
        for pick, sign, column in self._columns.values():
            v = pick(pts)
            if v is not None:
                insort(column, (sign * v, trial.number, v))

    def column(self, key: Hashable, pick: Callable[[Points], float | None], sign: int = 1) -> Column:
        """The column named ``key`` (built on first use by applying ``pick`` to every curve)."""
        self._used.add(key)
        found = self._columns.get(key)
        if found is None:
            column = sorted((sign * v, n, v) for n, pts in self.curves.items() if (v := pick(pts)) is not None)
            found = self._columns[key] = (pick, sign, column)
        return found[2]

    def keep_used(self) -> None:
        """Drop the columns not asked for since the last call (they are built again if needed)."""
        for key in [k for k in self._columns if k not in self._used]:
            del self._columns[key]
        self._used = set()
