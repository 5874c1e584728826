"""The plan: given the spec and the trials observed so far, what to do next.

Pure and deterministic: no Kubernetes, no clocks, no I/O. Both backends (the operator and ``kubetune run``) observe
their trials, call :func:`make_plan`, and apply the result; applying the same plan twice is harmless because trial
numbers (and so names) are deterministic.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from .engine import ParamValue, Sampler, make_sampler
from .pruning import Pruner, make_pruner
from .spec import ExperimentSpec
from .trials import Reason, Trial, TrialState


class Outcomes:
    """CamelCase reasons of the experiment's Succeeded condition."""

    TARGET_REACHED = "TargetReached"
    MAX_TRIALS_REACHED = "MaxTrialsReached"
    SEARCH_SPACE_EXHAUSTED = "SearchSpaceExhausted"
    TOO_MANY_FAILED_TRIALS = "TooManyFailedTrials"
    NO_SUCCESSFUL_TRIALS = "NoSuccessfulTrials"


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    reason: str
    message: str


@dataclass(frozen=True)
class NewTrial:
    number: int
    params: dict[str, ParamValue]


@dataclass(frozen=True)
class StopOrder:
    number: int
    state: TrialState
    """The state the trial is recorded with once stopped (``Pruned`` or ``Canceled``)."""
    reason: str
    message: str


@dataclass
class Counts:
    created: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    pruned: int = 0
    canceled: int = 0

    def as_status(self) -> dict[str, int]:
        return {"created": self.created, "running": self.running, "succeeded": self.succeeded,
                "failed": self.failed, "pruned": self.pruned}


@dataclass
class Plan:
    create: list[NewTrial] = field(default_factory=list)
    stop: list[StopOrder] = field(default_factory=list)
    outcome: Outcome | None = None
    """Set once the experiment has an outcome; it is *finished* when, in addition, no trial is active."""
    counts: Counts = field(default_factory=Counts)
    best: Trial | None = None

    @property
    def finished(self) -> bool:
        return self.outcome is not None and self.counts.running == 0 and not self.create


_ENDS_EARLY = (Outcomes.TOO_MANY_FAILED_TRIALS, Outcomes.TARGET_REACHED)


def default_seed(experiment: str) -> int:
    """A stable seed for an unseeded experiment, so its suggestions survive a restart."""
    return zlib.crc32(experiment.encode())


def count(trials: Sequence[Trial]) -> Counts:
    c = Counts(created=len(trials))
    for t in trials:
        if t.active:
            c.running += 1
        elif t.state is TrialState.SUCCEEDED:
            c.succeeded += 1
        elif t.state is TrialState.FAILED:
            c.failed += 1
        elif t.state is TrialState.PRUNED:
            c.pruned += 1
        else:
            c.canceled += 1
    return c


def best_trial(spec: ExperimentSpec, trials: Sequence[Trial]) -> Trial | None:
    best: Trial | None = None
    best_value: float | None = None
    for t in trials:
        if t.state is not TrialState.SUCCEEDED:
            continue
        v = t.objective_value(spec.objective)
        if v is None:
            continue
        if best_value is None or spec.objective.better(v, best_value):
            best, best_value = t, v
    return best


def build_sampler(spec: ExperimentSpec, experiment: str) -> Sampler:
    seed = spec.algorithm.seed if spec.algorithm.seed is not None else default_seed(experiment)
    return make_sampler(spec.algorithm.name, spec.search_space(), seed=seed,
                        settings=spec.algorithm.sampler_settings())


def _outcome(spec: ExperimentSpec, c: Counts, best: Trial | None, exhausted: bool) -> Outcome | None:
    if c.failed > spec.max_failed_trials:
        return Outcome(False, Outcomes.TOO_MANY_FAILED_TRIALS,
                       f"{c.failed} trials failed, more than maxFailedTrials={spec.max_failed_trials}")
    if best is not None:
        value = best.objective_value(spec.objective)
        assert value is not None
        if spec.objective.reaches_target(value):
            return Outcome(True, Outcomes.TARGET_REACHED,
                           f"trial {best.number} reached {spec.objective.metric}={value:g} "
                           f"(target {spec.objective.target:g})")
    budget_spent = c.created >= spec.max_trials
    if (budget_spent or exhausted) and c.running == 0:
        if c.succeeded == 0:
            return Outcome(False, Outcomes.NO_SUCCESSFUL_TRIALS, f"none of {c.created} trials succeeded")
        value = best.objective_value(spec.objective) if best else None
        tail = f"; best {spec.objective.metric}={value:g} (trial {best.number})" if best and value is not None else ""
        if budget_spent:
            return Outcome(True, Outcomes.MAX_TRIALS_REACHED, f"ran {c.created} of maxTrials={spec.max_trials}{tail}")
        return Outcome(True, Outcomes.SEARCH_SPACE_EXHAUSTED,
                       f"every configuration of the search space was tried ({c.created} trials){tail}")
    return None


def make_plan(
    spec: ExperimentSpec,
    trials: Sequence[Trial],
    *,
    experiment: str,
    sampler: Sampler | None = None,
    pruner: Pruner | None = None,
    suggest: bool = True,
) -> Plan:
    """Decide what to do next.

    ``trials`` are every trial the experiment has, in any order. ``sampler``/``pruner`` may be passed to reuse
    instances; they are otherwise built from the spec. With ``suggest=False`` no new trials are asked for (the
    plan then only summarizes: counts, best trial, outcome, stops).
    """
    trials = sorted(trials, key=lambda t: t.number)
    sampler = sampler or build_sampler(spec, experiment)
    pruner = pruner if pruner is not None else make_pruner(spec)
    plan = Plan()
    c = count(trials)
    best = best_trial(spec, trials)
    finished = [t for t in trials if not t.active]
    active = [t for t in trials if t.active]
    history = [t.observation(spec.objective) for t in finished]
    pending = [t.params for t in active]
    remaining = sampler.remaining(history, pending)
    outcome = _outcome(spec, c, best, exhausted=remaining == 0)

    if outcome is not None and outcome.reason in _ENDS_EARLY:
        # An experiment that failed or reached its target stops its running trials.
        plan.stop = [
            StopOrder(t.number, TrialState.CANCELED, Reason.EXPERIMENT_FINISHED,
                      f"stopped because the experiment finished: {outcome.reason}")
            for t in active
        ]
    elif pruner is not None and active:
        plan.stop = [
            StopOrder(number, TrialState.PRUNED, reason, message)
            for number, reason, message in pruner.decide(spec, trials)
        ]

    plan.counts = c
    plan.best = best
    plan.outcome = outcome
    if outcome is not None:
        return plan

    still_active = len(active) - len(plan.stop)
    n_new = min(spec.parallel_trials - still_active, spec.max_trials - c.created)
    if n_new > 0 and suggest:
        stopped = {s.number for s in plan.stop}
        pending = [t.params for t in active if t.number not in stopped]
        history = history + [
            t.observation(spec.objective) for t in active if t.number in stopped
        ]
        suggestions = sampler.suggest(history, pending, n=n_new)
        first = (trials[-1].number + 1) if trials else 0
        plan.create = [NewTrial(first + i, p) for i, p in enumerate(suggestions)]
    return plan
