"""A pbt population read back from its records: each member's state and a trial's hyperparameter schedule.

Both are derived from the records' lineage (:class:`kubetune.trials.Lineage`) alone, so the results of ``kubetune
run``, of the operator (the results ConfigMaps) and of the report agree. Sizes are bounded: the population has at
most ``populationSize`` (256) members, and a schedule is collapsed to the segments where the hyperparameters changed
and cut to its last :data:`MAX_SCHEDULE_ROWS` rows (older rows are counted, not listed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .engine import ParamValue
from .plan import latest_segments
from .spec import Objective, render_value
from .trials import Trial

MAX_SCHEDULE_ROWS = 50


@dataclass(frozen=True)
class ScheduleRow:
    """Steps ``start`` to ``end`` of a schedule, trained with ``params`` by the trials ``first`` .. ``last``."""

    start: int
    end: int
    params: Mapping[str, ParamValue]
    first: int
    last: int


@dataclass(frozen=True)
class Schedule:
    rows: list[ScheduleRow]
    """From the first step on, at most :data:`MAX_SCHEDULE_ROWS` (the last ones)."""
    omitted: int = 0
    """Earlier rows left out."""


def schedule(trials: Mapping[int, Trial], last: Trial) -> Schedule:
    """The hyperparameter schedule that produced ``last``: its chain of parents back to a fresh start, with the
    segments of equal hyperparameters merged. Each parent has a lower number, so the walk ends."""
    chain: list[Trial] = []
    t: Trial | None = last
    while t is not None and t.lineage is not None and len(chain) <= len(trials):
        chain.append(t)
        parent = t.lineage.parent
        t = trials.get(parent) if parent is not None and parent < t.number else None
    rows: list[ScheduleRow] = []
    for t in reversed(chain):
        assert t.lineage is not None
        if rows and dict(rows[-1].params) == t.params and rows[-1].end == t.lineage.start:
            rows[-1] = ScheduleRow(rows[-1].start, t.lineage.end, rows[-1].params, rows[-1].first, t.number)
        else:
            rows.append(ScheduleRow(t.lineage.start, t.lineage.end, dict(t.params), t.number, t.number))
    omitted = max(len(rows) - MAX_SCHEDULE_ROWS, 0)
    return Schedule(rows[omitted:], omitted)


@dataclass(frozen=True)
class Member:
    member: int
    latest: Trial
    """The member's latest finished segment."""
    segments: int
    exploits: int
    """Segments that restored another member's checkpoint."""


def population(trials: Iterable[Trial]) -> list[Member]:
    """Each member's latest finished segment, its segments and how often it exploited another member."""
    all_trials = [t for t in trials if t.lineage is not None]
    by_number = {t.number: t for t in all_trials}
    latest = latest_segments(all_trials)
    segments: dict[int, int] = {}
    exploits: dict[int, int] = {}
    for t in all_trials:
        assert t.lineage is not None
        segments[t.lineage.member] = segments.get(t.lineage.member, 0) + 1
        parent = by_number.get(t.lineage.parent) if t.lineage.parent is not None else None
        if parent is not None and parent.lineage is not None and parent.lineage.member != t.lineage.member:
            exploits[t.lineage.member] = exploits.get(t.lineage.member, 0) + 1
    return [Member(m, latest[m], segments.get(m, 0), exploits.get(m, 0)) for m in sorted(latest)]


def describe_schedule(s: Schedule) -> list[str]:
    """One line per row: ``steps 0-12: eta0=0.05 alpha=1e-05 (trials 3..17)``."""
    lines = [f"  ({s.omitted} earlier changes not shown)"] if s.omitted else []
    for r in s.rows:
        params = " ".join(f"{k}={render_value(v)}" for k, v in r.params.items())
        trials = f"trial {r.first}" if r.first == r.last else f"trials {r.first}..{r.last}"
        lines.append(f"  steps {r.start}-{r.end}: {params} ({trials})")
    return lines


def describe_population(members: list[Member], objective: Objective) -> list[str]:
    lines = []
    for m in members:
        value = m.latest.objective_value(objective)
        shown = "-" if value is None else f"{value:g}"
        assert m.latest.lineage is not None
        lines.append(f"  member {m.member}: step {m.latest.lineage.end}, {objective.metric}={shown} "
                     f"(trial {m.latest.number}; {m.segments} segments, {m.exploits} exploits)")
    return lines
