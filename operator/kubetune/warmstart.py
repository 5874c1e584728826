"""Warm start: the trials of earlier experiments as observations for this experiment's algorithm (pure).

Both backends read the sources (``kubetune run``: results directories; the operator: the result ConfigMaps of
experiments in the same namespace) and hand their trials to :func:`take_in`, which applies one rule:

* only ``Succeeded`` trials that recorded this experiment's objective metric as a finite number are used, whatever
  the source optimized (its value is oriented by this experiment's goal); others are left out and counted;
* a parameter of the source that this search space does not have is dropped;
* a parameter of this search space that the source trial has no value for takes ``warmStart.defaults[name]``;
  without a default the trial is skipped;
* a conditional parameter (``when``) inactive in the configuration so far (its parent inactive, or taking another
  value) is dropped, whatever the source had; an active one follows the two rules above;
* a value this search space does not contain is skipped with the trial: outside ``[min, max]``, not whole for an
  int parameter, off the step grid, of another type (a string for a number), or a categorical value no longer
  listed (:func:`kubetune.spec.coerce_value`, the rule ``initialTrials`` are checked by);
* of what is left, the best ``warmStart.maxTrials`` by the objective are taken in (ties: the earlier source in
  ``warmStart.experiments``, then the lower trial number), in source order and trial-number order.

The result is bounded by ``warmStart.maxTrials`` (at most :data:`~kubetune.spec.MAX_WARM_START_TRIALS`), whatever
the sources hold; nothing here is sized by what a source wrote.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .engine import Observation, ObservationState, ParamValue
from .spec import DEFAULT_WARM_START_TRIALS, ExperimentSpec, ValueProblem, coerce_value
from .trials import Trial, TrialState

MAX_REASONS = 8
"""Kinds of skipped trials named in the message (the rest are summed up)."""


@dataclass(frozen=True)
class WarmStartResult:
    """What a warm start took in: the observations and a summary for the status and the command line."""

    observations: tuple[Observation, ...] = ()
    sources: tuple[str, ...] = ()
    read: int = 0
    """Trials read from the sources."""
    skipped: Mapping[str, int] = field(default_factory=dict)
    """Trials left out, by reason (e.g. ``C above max``, ``not Succeeded``, ``beyond warmStart.maxTrials``)."""

    @property
    def taken(self) -> int:
        return len(self.observations)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def message(self) -> str:
        text = f"{self.taken} of {self.read} trials taken in from {', '.join(self.sources) or 'no source'}"
        if self.skipped:
            ranked = sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
            parts = [f"{n} {reason}" for reason, n in ranked[:MAX_REASONS]]
            if len(ranked) > MAX_REASONS:
                parts.append(f"{sum(n for _, n in ranked[MAX_REASONS:])} for other reasons")
            text += f"; skipped: {', '.join(parts)}"
        return text[:2048]

    def status(self) -> dict[str, object]:
        """``status.warmStart``."""
        return {"trials": self.taken, "skipped": self.skipped_total, "message": self.message()}


def project(spec: ExperimentSpec, params: Mapping[str, object]) -> dict[str, ParamValue] | str:
    """``params`` of an earlier trial as a configuration of ``spec``'s search space, or the reason it is skipped
    (see the module docstring)."""
    defaults = spec.warm_start.defaults if spec.warm_start is not None else None
    out: dict[str, ParamValue] = {}
    for p in spec.parameters:
        if p.when is not None and not (p.when.parameter in out and any(
                type(v) is type(out[p.when.parameter]) and v == out[p.when.parameter] for v in p.when.values)):
            continue  # inactive in this configuration (its parent is inactive or takes another value): dropped
        if p.name in params:
            value = params[p.name]
        elif defaults is not None and p.name in defaults:
            value = defaults[p.name]
        else:
            return f"without {p.name}"
        try:
            out[p.name] = coerce_value(p, value)
        except ValueProblem as e:
            return f"{p.name} {e.kind}"
    return out


def take_in(spec: ExperimentSpec, sources: Sequence[tuple[str, Iterable[Trial]]]) -> WarmStartResult:
    """The observations ``spec.warmStart`` takes in from ``sources`` (``(name, trials)`` in the order of
    ``warmStart.experiments``)."""
    limit = spec.warm_start.max_trials if spec.warm_start is not None else DEFAULT_WARM_START_TRIALS
    objective = spec.objective
    skipped: Counter[str] = Counter()
    candidates: list[tuple[float, int, int, dict[str, ParamValue], tuple[float, ...]]] = []
    read = 0
    for index, (_, trials) in enumerate(sources):
        for t in trials:
            read += 1
            if t.state is not TrialState.SUCCEEDED:
                skipped["not Succeeded"] += 1
                continue
            value = t.metrics.get(objective.metric)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                skipped[f"without {objective.metric}"] += 1
                continue
            projected = project(spec, t.params)
            if isinstance(projected, str):
                skipped[projected] += 1
                continue
            # with spec.constraints: their values on the earlier trial's metrics (a metric it did not report: inf)
            constraints = t.constraint_values(spec.constraints) if spec.constraints else ()
            candidates.append((objective.loss(float(value)), index, t.number, projected, constraints))
            if len(candidates) > 2 * limit:  # keep the best ``limit``: memory bounded whatever the sources hold
                candidates.sort(key=lambda c: c[:3])
                del candidates[limit:]
    candidates.sort(key=lambda c: c[:3])
    chosen = sorted(candidates[:limit], key=lambda c: (c[1], c[2]))
    beyond = read - sum(skipped.values()) - len(chosen)  # cut while reading, or now
    if beyond:
        skipped["beyond warmStart.maxTrials"] = beyond
    observations = tuple(Observation(params, ObservationState.COMPLETE, loss, constraints=constraints)
                         for loss, _, _, params, constraints in chosen)
    return WarmStartResult(observations, tuple(name for name, _ in sources), read, dict(skipped))
