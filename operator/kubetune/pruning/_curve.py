"""Reading learning curves for the stopping rules: sorted, finite, looked up by step."""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    found: float | None = None
    for s, v in pts:
        if s > step:
            break
        found = v
    return found


def first_from(pts: Sequence[tuple[int, float]], step: int) -> tuple[int, float] | None:
    """The first point at or after ``step`` (the report with which the curve reached ``step``), or ``None``."""
    for s, v in pts:
        if s >= step:
            return s, v
    return None
