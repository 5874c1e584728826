"""The plan: given the spec and the trials observed so far, what to do next.

Pure and deterministic: no Kubernetes, no clocks, no I/O. Both backends (the operator and ``kubetune run``) observe
their trials, call :func:`make_plan`, and apply the result; applying the same plan twice is harmless because trial
numbers (and so names) are deterministic.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace

import numpy as np

from .engine import Observation, ParamValue, Sampler, make_sampler
from .engine.pareto import select_spread
from .engine.pbt import NextSegment, PBTSampler, Segment
from .pausing import PausedIndex, first_lineage, pauses, promotable, promotions
from .pruning import Pruner, make_pruner
from .pruning._curve import FinishedCurves
from .resume import promotion_lineages, resumes
from .spec import MAX_FRONT_IN_STATUS, ExperimentSpec
from .trials import Lineage, Reason, Trial, TrialState


class Outcomes:
    """CamelCase reasons of the experiment's Succeeded condition."""

    TARGET_REACHED = "TargetReached"
    MAX_TRIALS_REACHED = "MaxTrialsReached"
    SEARCH_SPACE_EXHAUSTED = "SearchSpaceExhausted"
    TOO_MANY_FAILED_TRIALS = "TooManyFailedTrials"
    NO_SUCCESSFUL_TRIALS = "NoSuccessfulTrials"
    NO_IMPROVEMENT = "NoImprovement"
    NO_FEASIBLE_TRIALS = "NoFeasibleTrials"
    TIME_LIMIT_REACHED = "TimeLimitReached"


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    reason: str
    message: str


@dataclass(frozen=True)
class NewTrial:
    number: int
    params: dict[str, ParamValue]
    lineage: Lineage | None = None
    """With ``algorithm: pbt``: the member this trial is a segment of and the checkpoint it restores; with
    ``algorithm: hyperband`` and ``spec.checkpoints``: the checkpoint a promotion resumes (see :mod:`.resume`)."""


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
    infeasible: int = 0
    """Succeeded trials on which an outcome constraint does not hold (also counted in ``succeeded``)."""
    paused: int = 0
    """Trials that ended at a rung of successive halving that pauses (see :mod:`kubetune.pausing`)."""

    def as_status(self, constrained: bool = False, pausing: bool = False) -> dict[str, int]:
        """The counts of ``status.trials``; ``infeasible`` only for an experiment with constraints, ``paused`` only
        for one whose trials pause."""
        out = {"created": self.created, "running": self.running, "succeeded": self.succeeded,
               "failed": self.failed, "pruned": self.pruned}
        if constrained:
            out["infeasible"] = self.infeasible
        if pausing:
            out["paused"] = self.paused
        return out


@dataclass
class Plan:
    create: list[NewTrial] = field(default_factory=list)
    stop: list[StopOrder] = field(default_factory=list)
    outcome: Outcome | None = None
    """Set once the experiment has an outcome; it is *finished* when, in addition, no trial is active."""
    counts: Counts = field(default_factory=Counts)
    best: Trial | None = None
    """The best trial (None with several objectives: see ``front``)."""
    front: list[Trial] = field(default_factory=list)
    """With several objectives: the Pareto front of the Succeeded trials that reported every objective, in number
    order (the whole front; status shows a bounded selection, see :func:`front_in_status`)."""
    time_left: float | None = None
    """Seconds until ``stopping.maxDurationSeconds`` runs out, while the experiment goes on and its clock runs
    (else None): a backend plans again then, even if nothing else happens."""

    @property
    def finished(self) -> bool:
        return self.outcome is not None and self.counts.running == 0 and not self.create


_ENDS_EARLY = (Outcomes.TOO_MANY_FAILED_TRIALS, Outcomes.TARGET_REACHED, Outcomes.TIME_LIMIT_REACHED)


def default_seed(experiment: str) -> int:
    """A stable seed for an unseeded experiment, so its suggestions survive a restart."""
    return zlib.crc32(experiment.encode())


def count(trials: Sequence[Trial], spec: ExperimentSpec | None = None) -> Counts:
    c = Counts(created=len(trials))
    for t in trials:
        _tally(c, t, spec)
    return c


def feasible(spec: ExperimentSpec, trial: Trial) -> bool:
    """Whether ``trial`` may be the best trial or on the Pareto front: Succeeded, and every outcome constraint of
    ``spec`` holds on its final metrics (a constraint's metric not reported: infeasible)."""
    return trial.state is TrialState.SUCCEEDED and (not spec.constraints or trial.feasible(spec.constraints))


def observe(spec: ExperimentSpec, trial: Trial) -> Observation:
    """A finished trial as ``spec``'s sampler sees it."""
    return trial.observation(spec.objective_list, spec.constraints or ())


def pareto_front(spec: ExperimentSpec, trials: Iterable[Trial]) -> list[Trial]:
    """With several objectives, the Succeeded trials that reported every objective and that no other such trial
    dominates (trials with equal values are all kept), in number order; empty with one objective."""
    if not spec.multi_objective:
        return []
    objectives = spec.objective_list
    members = sorted(((losses, t.number, t) for t in trials
                      if feasible(spec, t) and (losses := t.losses(objectives)) is not None),
                     key=lambda m: (m[0], m[1]))
    # In lexicographic order of the losses no row dominates one before it, so one sweep against the front found
    # so far decides each row (work in proportion to the rows times the front).
    front: list[Trial] = []
    kept = np.zeros((0, len(objectives)))
    for losses, _, t in members:
        y = np.array(losses)
        if len(kept) and bool(((kept <= y).all(axis=1) & (kept < y).any(axis=1)).any()):
            continue
        front.append(t)
        kept = np.vstack([kept, y[None]])
    return sorted(front, key=lambda t: t.number)


def front_in_status(spec: ExperimentSpec, front: Sequence[Trial], limit: int = MAX_FRONT_IN_STATUS) -> list[Trial]:
    """At most ``limit`` members of ``front`` for status: all when they fit, else a spread chosen by crowding
    distance (the extremes of every objective first; see :func:`kubetune.engine.pareto.select_spread`), in number
    order."""
    ordered = sorted(front, key=lambda t: t.number)
    if len(ordered) <= limit:
        return ordered
    objectives = spec.objective_list
    losses = np.array([t.losses(objectives) for t in ordered])
    return [ordered[i] for i in select_spread(losses, limit)]


def best_trial(spec: ExperimentSpec, trials: Sequence[Trial]) -> Trial | None:
    """The Succeeded, feasible trial with the best objective value (the lowest number among equal values); None
    with several objectives."""
    if spec.multi_objective:
        return None
    best: Trial | None = None
    best_value: float | None = None
    for t in trials:
        if not feasible(spec, t):
            continue
        v = t.objective_value(spec.objective)
        if v is None:
            continue
        if best_value is None or spec.objective.better(v, best_value):
            best, best_value = t, v
    return best


def _stall_step(spec: ExperimentSpec, trial: Trial, reference: float | None, run: int) -> tuple[float | None, int]:
    """One finished trial (taken in number order) through ``stopping.noImprovement``: the value of the last trial
    that improved, and how many counted trials came after it. Canceled and Paused trials are not counted (a paused
    trial is not a result: its configuration may still be resumed)."""
    rule = spec.stopping.no_improvement if spec.stopping is not None else None
    assert rule is not None
    if trial.state in (TrialState.CANCELED, TrialState.PAUSED):
        return reference, run
    if feasible(spec, trial):
        value = trial.objective_value(spec.objective)
        if value is not None and rule.improves(spec.objective.goal, value, reference):
            return value, 0
    return reference, run + 1


def without_improvement(spec: ExperimentSpec, trials: Iterable[Trial]) -> int:
    """How many finished trials in a row, in number order and Canceled and Paused ones not counted, did not
    improve (see :class:`~kubetune.spec.NoImprovement`): counted after the last trial that improved, or from the
    first trial when none did. 0 without ``stopping.noImprovement``."""
    if spec.stopping is None or spec.stopping.no_improvement is None:
        return 0
    reference: float | None = None
    run = 0
    for t in sorted((t for t in trials if t.state.finished), key=lambda t: t.number):
        reference, run = _stall_step(spec, t, reference, run)
    return run


def build_sampler(spec: ExperimentSpec, experiment: str) -> Sampler:
    seed = spec.algorithm.seed if spec.algorithm.seed is not None else default_seed(experiment)
    return make_sampler(spec.algorithm.name, spec.search_space(), seed=seed,
                        settings=spec.algorithm.sampler_settings(), objectives=len(spec.objective_list))


def _time_up(spec: ExperimentSpec, elapsed: float | None) -> bool:
    limit = spec.stopping.max_duration_seconds if spec.stopping is not None else None
    return limit is not None and elapsed is not None and elapsed >= limit


def _stalled(spec: ExperimentSpec, since: int) -> bool:
    rule = spec.stopping.no_improvement if spec.stopping is not None else None
    return rule is not None and since >= rule.trials


def _outcome(spec: ExperimentSpec, c: Counts, best: Trial | None, exhausted: bool, since: int = 0,
             elapsed: float | None = None, front: int = 0) -> Outcome | None:
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
    value = best.objective_value(spec.objective) if best else None
    tail = f"; best {spec.objective.metric}={value:g} (trial {best.number})" if best and value is not None else ""
    if front:
        tail = f"; a Pareto front of {front} trial{'s' if front > 1 else ''}"
    if _time_up(spec, elapsed):
        assert spec.stopping is not None
        # the message does not change as time goes on: the status is not written again for it
        limit = spec.stopping.max_duration_seconds
        spent = f"the time limit ran out (maxDurationSeconds={limit}) with {c.created} trials created"
        if c.succeeded == 0:
            return Outcome(False, Outcomes.NO_SUCCESSFUL_TRIALS, f"{spent}; none succeeded")
        if spec.constraints and c.infeasible >= c.succeeded:
            return Outcome(False, Outcomes.NO_FEASIBLE_TRIALS, f"{spent}; {_none_feasible(c)}")
        return Outcome(True, Outcomes.TIME_LIMIT_REACHED, f"{spent}{tail}")
    budget_spent = c.created >= spec.max_trials
    stalled = _stalled(spec, since)
    if (budget_spent or exhausted or stalled) and c.running == 0:
        if c.succeeded == 0:
            return Outcome(False, Outcomes.NO_SUCCESSFUL_TRIALS, f"none of {c.created} trials succeeded")
        if spec.constraints and c.infeasible >= c.succeeded:
            return Outcome(False, Outcomes.NO_FEASIBLE_TRIALS, f"{_none_feasible(c)} ({c.created} trials created)")
        if budget_spent:
            return Outcome(True, Outcomes.MAX_TRIALS_REACHED, f"ran {c.created} of maxTrials={spec.max_trials}{tail}")
        if stalled:
            assert spec.stopping is not None and spec.stopping.no_improvement is not None
            rule = spec.stopping.no_improvement
            how = (f" by more than {rule.min_relative_improvement:g} (relative)"
                   if rule.min_relative_improvement else "")
            return Outcome(True, Outcomes.NO_IMPROVEMENT,
                           f"{since} trials in a row did not improve {spec.objective.metric}{how} "
                           f"(stopping.noImprovement.trials={rule.trials}), {c.created} trials in all{tail}")
        return Outcome(True, Outcomes.SEARCH_SPACE_EXHAUSTED,
                       f"every configuration of the search space was tried ({c.created} trials){tail}")
    return None


def _none_feasible(c: Counts) -> str:
    return (f"none of the {c.succeeded} succeeded trials was feasible (each violated a constraint or did not report "
            "its metric)")


class History:
    """The finished trials of one experiment and what a plan derives from them, kept up to date as trials finish.

    :func:`make_plan` with ``history=`` then does work in proportion to the active trials, not to every trial: the
    engine's observations of finished trials, the keys of their configurations, their counts and the best of them
    are kept here, and the sampler and pruner built for ``spec`` are reused (samplers keep nothing between calls,
    see :mod:`kubetune.engine.base`). A finished trial is final: adding a trial whose number is already here
    replaces it and recomputes the summary. A history belongs to one spec; a changed spec needs a new one.

    ``warm`` are observations of earlier experiments (``spec.warmStart``, see :mod:`kubetune.warmstart`), given once:
    the sampler sees them before the trials' own, and they are neither trials nor configurations tried here.
    """

    def __init__(self, spec: ExperimentSpec, experiment: str, finished: Iterable[Trial] = (),
                 warm: Sequence[Observation] = ()) -> None:
        self.spec = spec
        self.experiment = experiment
        self.warm: tuple[Observation, ...] = tuple(warm)
        self.sampler = build_sampler(spec, experiment)
        self.pruner = make_pruner(spec)
        self._reset(finished)

    def _reset(self, finished: Iterable[Trial]) -> None:
        self.numbers: list[int] = []
        """Trial numbers, ascending; ``trials`` and ``observations`` are in the same order."""
        self.trials: list[Trial] = []
        self.observations: list[Observation] = []
        self.keys: set[tuple[object, ...]] = set()
        """:meth:`SearchSpace.key` of every finished configuration."""
        self.counts = Counts()
        """Succeeded, failed, pruned and canceled trials among these (``created`` and ``running`` stay 0)."""
        self.best: Trial | None = None
        self._best_value: float | None = None
        self.front: list[Trial] = []
        """With several objectives: :func:`pareto_front` of these trials (in the order they were added)."""
        self._front_losses = np.zeros((0, len(self.spec.objective_list)))
        """The members' losses, one row each, in the order of :attr:`front`."""
        self.curves = FinishedCurves()
        self.pausing = PausedIndex()
        """With successive halving that pauses: the paused trials and the trials continued (see
        :mod:`kubetune.pausing`)."""
        self.members: dict[int, list[Trial]] = {}
        """With ``algorithm: pbt``: each member's last two finished segments (see :func:`recent_segments`); at most
        ``populationSize`` entries."""
        """The finished curves the early-stopping rule compares with (see :meth:`Pruner.decide_active`)."""
        self._stall: list[tuple[float | None, int]] = []
        """With ``stopping.noImprovement``: after each trial (in ``trials`` order), the value of the last trial that
        improved and how many counted trials followed it (see :func:`without_improvement`)."""
        for t in finished:
            self.add(t)

    def __len__(self) -> int:
        return len(self.numbers)

    def __contains__(self, number: object) -> bool:
        i = bisect_left(self.numbers, number) if isinstance(number, int) else len(self.numbers)
        return i < len(self.numbers) and self.numbers[i] == number

    @property
    def last_number(self) -> int | None:
        return self.numbers[-1] if self.numbers else None

    @property
    def without_improvement(self) -> int:
        """:func:`without_improvement` of these trials, kept up to date by :meth:`add`."""
        return self._stall[-1][1] if self._stall else 0

    def _restall(self, start: int) -> None:
        """Recompute the no-improvement run from position ``start`` on: a trial finishing out of number order
        changes the run only after it (trials usually finish near the end, so this is short)."""
        del self._stall[start:]
        reference, run = self._stall[-1] if self._stall else (None, 0)
        for t in self.trials[start:]:
            reference, run = _stall_step(self.spec, t, reference, run)
            self._stall.append((reference, run))

    def add(self, trial: Trial) -> None:
        """Record a finished trial."""
        if not trial.state.finished:
            raise ValueError(f"trial {trial.number} is {trial.state.value}, not finished")
        i = bisect_left(self.numbers, trial.number)
        if i < len(self.numbers) and self.numbers[i] == trial.number:
            trials = list(self.trials)
            trials[i] = trial
            self._reset(trials)
            return
        self.numbers.insert(i, trial.number)
        self.trials.insert(i, trial)
        self.observations.insert(i, observe(self.spec, trial))
        self.keys.add(self.sampler.space.key(trial.params))
        _tally(self.counts, trial, self.spec)
        if self.spec.stopping is not None and self.spec.stopping.no_improvement is not None:
            self._restall(i)
        if self.pruner is not None:
            self.curves.add(trial)
        if trial.lineage is not None and pauses(self.spec):
            self.pausing.add(trial)
        if trial.lineage is not None and self.spec.algorithm.name == PBTSampler.name:
            _keep_recent(self.members, trial)
        if self.spec.multi_objective:
            self._add_to_front(trial)
        elif feasible(self.spec, trial) and (v := trial.objective_value(self.spec.objective)) is not None:
            # best_trial's rule: the best value, and among equal values the lowest number
            if (self._best_value is None or self.spec.objective.better(v, self._best_value)
                    or (v == self._best_value and self.best is not None and trial.number < self.best.number)):
                self.best, self._best_value = trial, v


    def _add_to_front(self, trial: Trial) -> None:
        """Keep :attr:`front` the Pareto front: a trial that a member dominates stays out; one that joins removes
        the members it dominates (work in proportion to the front, not to every trial)."""
        losses = trial.losses(self.spec.objective_list) if feasible(self.spec, trial) else None
        if losses is None:
            return
        y = np.array(losses)
        front = self._front_losses
        if bool(((front <= y).all(axis=1) & (front < y).any(axis=1)).any()):  # a member dominates it
            return
        kept = np.logical_not((y <= front).all(axis=1) & (y < front).any(axis=1))  # the members it does not dominate
        self.front = [t for t, k in zip(self.front, kept.tolist()) if k] + [trial]
        self._front_losses = np.vstack([front[kept], y[None]])


def _tally(c: Counts, t: Trial, spec: ExperimentSpec | None = None) -> None:
    if t.active:
        c.running += 1
    elif t.state is TrialState.SUCCEEDED:
        c.succeeded += 1
        if spec is not None and spec.constraints and t.infeasible(spec.constraints):
            c.infeasible += 1
    elif t.state is TrialState.FAILED:
        c.failed += 1
    elif t.state is TrialState.PRUNED:
        c.pruned += 1
    elif t.state is TrialState.PAUSED:
        c.paused += 1
    else:
        c.canceled += 1


def make_plan(
    spec: ExperimentSpec,
    trials: Sequence[Trial],
    *,
    experiment: str,
    sampler: Sampler | None = None,
    pruner: Pruner | None = None,
    suggest: bool = True,
    history: History | None = None,
    elapsed: float | None = None,
    warm: Sequence[Observation] = (),
) -> Plan:
    """Decide what to do next.

    ``trials`` are every trial the experiment has, in any order. ``sampler``/``pruner`` may be passed to reuse
    instances; they are otherwise built from the spec. With ``suggest=False`` no new trials are asked for (the
    plan then only summarizes: counts, best trial, outcome, stops).

    With ``history`` (a :class:`History` of this ``spec``), ``trials`` are the trials that are not in it, all of
    them active, and the finished trials come from the history (with its sampler and pruner unless others are
    passed): the plan is the one ``trials`` plus every trial of the history would give.

    ``elapsed``: seconds since the experiment's clock started (its first trial), for ``stopping.maxDurationSeconds``;
    None while it has not started. The backends read their clocks; the plan reads none.

    ``warm``: observations of earlier experiments (``spec.warmStart``) the sampler sees before the trials' own
    (with ``history``, the history's are used). They do not count as configurations tried here: a suggestion may
    repeat one, and they never exhaust a finite space.
    """
    if suggest and spec.algorithm.name == PBTSampler.name:
        return _pbt_plan(spec, trials, experiment=experiment, sampler=sampler, pruner=pruner, history=history,
                         elapsed=elapsed)
    if history is not None:
        plan = _plan(spec, trials, history, sampler or history.sampler,
                     pruner if pruner is not None else history.pruner, suggest, elapsed)
        return _resuming(spec, plan, sampler or history.sampler, history.trials)
    trials = sorted(trials, key=lambda t: t.number)
    sampler_ = sampler or build_sampler(spec, experiment)
    pruner_ = pruner if pruner is not None else make_pruner(spec)
    finished = [t for t in trials if not t.active]
    active = [t for t in trials if t.active]
    observations = [observe(spec, t) for t in finished]
    remaining = sampler_.remaining(observations, [t.params for t in active])

    def suggest_(pending: list[dict[str, ParamValue]], stopped: list[Trial], n: int) -> list[dict[str, ParamValue]]:
        if warm:
            keys = {sampler_.space.key(t.params) for t in finished}
            return sampler_.suggest([*warm, *observations, *(observe(spec, t) for t in stopped)],
                                    pending, n=n, known=keys | {sampler_.space.key(t.params) for t in stopped})
        return sampler_.suggest(observations + [observe(spec, t) for t in stopped], pending, n=n)

    promote = promotable(spec, trials, spec.parallel_trials) if suggest and pauses(spec) else []
    plan = _conclude(spec, count(trials, spec), best_trial(spec, trials), active,
                     exhausted=remaining == 0 and not promote, promote=promote,
                     front=pareto_front(spec, finished),
                     decide=(lambda: pruner_.decide(spec, trials)) if pruner_ is not None else None,
                     suggest=suggest_ if suggest else None,
                     next_number=(trials[-1].number + 1) if trials else 0,
                     since=without_improvement(spec, finished), elapsed=elapsed)
    return _resuming(spec, plan, sampler_, finished)


def _resuming(spec: ExperimentSpec, plan: Plan, sampler: Sampler, finished: Sequence[Trial]) -> Plan:
    """With ``algorithm: hyperband`` and ``spec.checkpoints``: each promotion of ``plan`` restores the checkpoint
    of the trial it promotes (see :mod:`kubetune.resume`); ``finished`` in ascending number."""
    if not plan.create or not resumes(spec):
        return plan
    lineages = promotion_lineages(sampler, finished, [n.params for n in plan.create])
    plan.create = [replace(n, lineage=lin) if lin is not None else n for n, lin in zip(plan.create, lineages)]
    return plan


def _plan(spec: ExperimentSpec, trials: Sequence[Trial], history: History, sampler: Sampler,
          pruner: Pruner | None, suggest: bool, elapsed: float | None = None) -> Plan:
    """:func:`make_plan` over ``history`` and its active ``trials``, step for step the same decisions."""
    if history.spec != spec:
        raise ValueError("the history was built for another spec")
    active = sorted(trials, key=lambda t: t.number)
    for t in active:
        if not t.active or t.number in history:
            raise ValueError(f"trial {t.number} is finished or in the history: record it with History.add")
    c = replace(history.counts, created=len(history) + len(active), running=len(active))
    warm = history.warm
    remaining = sampler.remaining_known(history.observations, [t.params for t in active], history.keys)

    def decide() -> list[tuple[int, str, str]]:
        assert pruner is not None
        if pruner is history.pruner:
            return pruner.decide_active(spec, history.curves, active)
        return pruner.decide(spec, sorted(history.trials + active, key=lambda t: t.number))

    def suggest_(pending: list[dict[str, ParamValue]], stopped: list[Trial], n: int) -> list[dict[str, ParamValue]]:
        observations: Sequence[Observation] = history.observations
        known: AbstractSet[tuple[object, ...]] = history.keys
        if stopped:
            observations = [*observations, *(observe(spec, t) for t in stopped)]
            known = known | {sampler.space.key(t.params) for t in stopped}
        return sampler.suggest([*warm, *observations], pending, n=n, known=known)

    last = max(history.last_number if history.last_number is not None else -1,
               active[-1].number if active else -1)
    promote = []
    if suggest and pauses(spec):
        continued = history.pausing.continued | {t.lineage.parent for t in active
                                                 if t.lineage is not None and t.lineage.parent is not None}
        promote = promotions(spec, history.pausing.paused, continued, spec.parallel_trials)
    return _conclude(spec, c, history.best, active, exhausted=remaining == 0 and not promote, promote=promote,
                     front=history.front,
                     decide=decide if pruner is not None else None, suggest=suggest_ if suggest else None,
                     next_number=last + 1, since=history.without_improvement, elapsed=elapsed)


# -- population-based training ------------------------------------------------------------------------------------


def _later_segment(a: Trial, b: Trial) -> bool:
    """Whether segment ``a`` is later in its member's training than ``b`` (a higher end step, then number)."""
    assert a.lineage is not None and b.lineage is not None
    return (a.lineage.end, a.number) > (b.lineage.end, b.number)


def _take_segment(members: dict[int, Trial], trial: Trial) -> None:
    assert trial.lineage is not None
    held = members.get(trial.lineage.member)
    if held is None or _later_segment(trial, held):
        members[trial.lineage.member] = trial


RECENT_SEGMENTS = 2
"""Finished segments kept per pbt member: the latest, and the one before (a member one generation ahead is ranked by
it, see :meth:`kubetune.engine.pbt.PBTSampler.next_segments`)."""


def _keep_recent(members: dict[int, list[Trial]], trial: Trial) -> None:
    assert trial.lineage is not None
    kept = [t for t in members.get(trial.lineage.member, []) if t.number != trial.number] + [trial]
    kept.sort(key=lambda t: (t.lineage.end, t.number))  # type: ignore[union-attr]
    members[trial.lineage.member] = kept[-RECENT_SEGMENTS:]


def recent_segments(trials: Iterable[Trial]) -> dict[int, list[Trial]]:
    """Each member's last :data:`RECENT_SEGMENTS` finished segments (by end step, then number), oldest first."""
    members: dict[int, list[Trial]] = {}
    for t in trials:
        if t.lineage is not None and not t.active:
            _keep_recent(members, t)
    return members


def latest_segments(trials: Iterable[Trial]) -> dict[int, Trial]:
    """Each member's latest finished segment (the highest end step, then the highest number), from trials with a
    lineage."""
    members: dict[int, Trial] = {}
    for t in trials:
        if t.lineage is not None and not t.active:
            _take_segment(members, t)
    return members


def _as_segment(spec: ExperimentSpec, t: Trial) -> Segment:
    assert t.lineage is not None
    value = t.objective_value(spec.objective) if t.state is TrialState.SUCCEEDED else None
    return Segment(t.number, t.params, t.lineage.member, t.lineage.start, t.lineage.end, not t.active,
                   spec.objective.loss(value) if value is not None else None)


def _pbt_plan(spec: ExperimentSpec, trials: Sequence[Trial], *, experiment: str, sampler: Sampler | None,
              pruner: Pruner | None, history: History | None, elapsed: float | None) -> Plan:
    """:func:`make_plan` for ``algorithm: pbt``: the summary, outcome and stops as for every algorithm, and the
    new trials the population's next segments (see :mod:`kubetune.engine.pbt`), each with its lineage. Work in
    proportion to the active trials and the population (``History.members``), not to every trial."""
    plan = make_plan(spec, trials, experiment=experiment, sampler=sampler, pruner=pruner, suggest=False,
                     history=history, elapsed=elapsed)
    pbt = sampler or (history.sampler if history is not None else build_sampler(spec, experiment))
    assert isinstance(pbt, PBTSampler)
    if history is not None:
        active = list(trials)
        recent = history.members
        since = history.without_improvement
        last = max([history.last_number if history.last_number is not None else -1] + [t.number for t in active])
    else:
        active = [t for t in trials if t.active]
        recent = recent_segments(trials)
        since = without_improvement(spec, [t for t in trials if not t.active])
        last = max((t.number for t in trials), default=-1)
    if plan.outcome is not None or _stalled(spec, since):
        return plan
    stopped = {s.number for s in plan.stop}
    running = [t for t in active if t.number not in stopped]
    n_new = min(spec.parallel_trials - len(running), spec.max_trials - plan.counts.created)
    if n_new <= 0:
        return plan
    busy = [t.lineage.member for t in running if t.lineage is not None]
    nexts: list[NextSegment] = pbt.next_segments(
        {m: [_as_segment(spec, t) for t in segs] for m, segs in recent.items()}, busy, n_new)
    plan.create = [NewTrial(last + 1 + i, s.params, Lineage(s.member, s.parent, s.start, s.end))
                   for i, s in enumerate(nexts)]
    return plan


Suggest = Callable[[list[dict[str, ParamValue]], list[Trial], int], list[dict[str, ParamValue]]]
"""``suggest(pending, stopped, n)``: ``n`` new configurations, given the parameters of the trials that keep running
and the trials this plan stops (they count as finished)."""


def _conclude(spec: ExperimentSpec, c: Counts, best: Trial | None, active: Sequence[Trial], *, exhausted: bool,
              decide: Callable[[], Iterable[tuple[int, str, str]]] | None, suggest: Suggest | None,
              next_number: int, since: int = 0, elapsed: float | None = None,
              front: Sequence[Trial] = (), promote: Sequence[tuple[dict[str, ParamValue], Lineage]] = ()) -> Plan:
    """The plan's tail shared by both ways of planning: the outcome, the stop orders (all active trials when the
    experiment ends early, else the early-stopping ``decide``), and how many new trials to ask ``suggest`` for,
    numbered from ``next_number``. ``active`` are the active trials in ascending number; ``since`` is
    :func:`without_improvement` of the finished ones. ``promote``: with successive halving that pauses, the paused
    trials to resume, in order (see :mod:`kubetune.pausing`); they start before new configurations, after
    ``initialTrials``, and every new configuration then trains to the first rung."""
    outcome = _outcome(spec, c, best, exhausted, since, elapsed, len(front))
    plan = Plan(counts=c, best=best, outcome=outcome, front=sorted(front, key=lambda t: t.number))
    limit = spec.stopping.max_duration_seconds if spec.stopping is not None else None
    if outcome is None and limit is not None and elapsed is not None:
        plan.time_left = limit - elapsed
    if outcome is not None and (outcome.reason in _ENDS_EARLY or _time_up(spec, elapsed)):
        # An experiment that failed or reached its target stops its running trials.
        plan.stop = [
            StopOrder(t.number, TrialState.CANCELED, Reason.EXPERIMENT_FINISHED,
                      f"stopped because the experiment finished: {outcome.reason}")
            for t in active
        ]
    elif decide is not None and active:
        plan.stop = [StopOrder(number, TrialState.PRUNED, reason, message) for number, reason, message in decide()]
    if outcome is not None or _stalled(spec, since):  # stalled: the running trials finish first
        return plan

    n_new = min(spec.parallel_trials - (len(active) - len(plan.stop)), spec.max_trials - c.created)
    if n_new > 0 and suggest is not None:
        stopped = {s.number for s in plan.stop}
        pending = [t.params for t in active if t.number not in stopped]
        # spec.initialTrials first: trial k is initialTrials[k]; the algorithm suggests the rest of the batch
        given = spec.initial_params(next_number, n_new) if spec.initial_trials else []
        promoted = list(promote[:n_new - len(given)])
        rest = n_new - len(given) - len(promoted)
        suggestions = suggest(pending + given + [p for p, _ in promoted], [t for t in active if t.number in stopped],
                              rest) if rest > 0 else []
        fresh = (lambda number: first_lineage(spec, number)) if pauses(spec) else (lambda number: None)
        plan.create = [NewTrial(next_number + i, p, fresh(next_number + i)) for i, p in enumerate(given)]
        plan.create += [NewTrial(next_number + len(given) + i, p, lineage) for i, (p, lineage) in enumerate(promoted)]
        plan.create += [NewTrial(next_number + len(given) + len(promoted) + i, p,
                                 fresh(next_number + len(given) + len(promoted) + i))
                        for i, p in enumerate(suggestions)]
    return plan
