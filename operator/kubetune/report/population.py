"""The pbt lines of a report's summary: the population's members and the best trial's hyperparameter schedule."""

from __future__ import annotations

from ..lineage import population, schedule
from ..results import ExperimentResults
from ..spec import render_value
from ..trials import Trial


def summary_items(results: ExperimentResults, best: Trial) -> list[tuple[str, str]]:
    """``(label, text)`` items for the summary box (bounded: at most 256 members, 50 schedule rows)."""
    trials = [r.trial for r in results.trials]
    spec = results.spec
    members = []
    for m in population(trials):
        value = m.latest.objective_value(spec.objective)
        assert m.latest.lineage is not None
        members.append(f"#{m.member} step {m.latest.lineage.end} {spec.objective.metric}="
                       f"{'-' if value is None else f'{value:.4g}'} ({m.exploits} exploits)")
    s = schedule({t.number: t for t in trials}, best)
    rows = [f"steps {r.start}-{r.end}: " + " ".join(f"{k}={render_value(v)}" for k, v in r.params.items())
            for r in s.rows]
    if s.omitted:
        rows.insert(0, f"{s.omitted} earlier changes")
    return [("population", "; ".join(members)), ("best trial's schedule", "; ".join(rows))]
