"""The incremental plan: a :class:`~kubetune.plan.History` kept as trials finish gives the same plan as
``make_plan`` over every trial.

For random histories (states, objective values with ties and gaps, curves, trial numbers finishing out of order,
several algorithms, early stopping, small grids that run out) the plan from the history and the active trials is
compared field by field with a fresh ``make_plan`` over all trials: trials to create (numbers and parameters),
stops (with their messages, which name the compared values), outcome, counts and the best trial.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.plan import History, Plan, make_plan
from kubetune.spec import ExperimentSpec
from kubetune.trials import Trial, TrialState

EXP = "exp"
FINISHED = [TrialState.SUCCEEDED, TrialState.FAILED, TrialState.PRUNED, TrialState.CANCELED]
ACTIVE = [TrialState.PENDING, TrialState.RUNNING]

CONTINUOUS = [
    {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
    {"name": "n", "type": "int", "min": 1, "max": 100},
    {"name": "k", "type": "categorical", "values": ["a", "b", "c"]},
]
SMALL_GRID = [
    {"name": "n", "type": "int", "min": 1, "max": 3},
    {"name": "k", "type": "categorical", "values": ["a", "b"]},
]


def make_spec(algorithm: str, *, grid: bool, goal: str, target: float | None, max_trials: int, parallel: int,
              max_failed: int, stopping: dict[str, Any] | None) -> ExperimentSpec:
    objective: dict[str, Any] = {"metric": "acc", "goal": goal}
    if target is not None:
        objective["target"] = target
    doc: dict[str, Any] = {
        "objective": objective,
        "parameters": SMALL_GRID if grid else CONTINUOUS,
        "algorithm": {"name": algorithm, "seed": 11},
        "maxTrials": max_trials,
        "parallelTrials": parallel,
        "maxFailedTrials": max_failed,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    if stopping is not None:
        doc["earlyStopping"] = stopping
    return ExperimentSpec.model_validate(doc)


VALUES = st.sampled_from([0.1, 0.25, 0.5, 0.5, 0.75, 0.9, None])
"""Few distinct values, so ties between trials (and with the target) are common."""


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ExperimentSpec, list[Trial], list[int]]:
    grid = draw(st.booleans())
    algorithm = draw(st.sampled_from(["grid", "random"] if grid else ["random", "tpe", "sobol"]))
    stopping = draw(st.sampled_from([None, {"rule": "median", "minTrials": 1}, {"rule": "asha", "minTrials": 1}]))
    n = draw(st.integers(0, 30))
    spec = make_spec(
        algorithm, grid=grid, goal=draw(st.sampled_from(["maximize", "minimize"])),
        target=draw(st.sampled_from([None, 0.9, 0.1])), max_trials=draw(st.integers(1, 40)),
        parallel=draw(st.integers(1, 6)), max_failed=draw(st.integers(0, 10)), stopping=stopping)
    space = spec.search_space()
    trials: list[Trial] = []
    for number in range(n):
        state = draw(st.sampled_from(FINISHED + ACTIVE))
        if grid:
            params: dict[str, Any] = {"n": draw(st.integers(1, 3)), "k": draw(st.sampled_from(["a", "b"]))}
        else:
            params = {"x": draw(st.sampled_from([0.0, 0.3, 0.7])), "n": draw(st.integers(1, 4)),
                      "k": draw(st.sampled_from(["a", "b", "c"]))}
        assert space.key(params) is not None
        value = draw(VALUES)
        metrics = {"acc": value} if value is not None and state is not TrialState.FAILED else {}
        steps = draw(st.integers(0, 4))
        first = draw(st.integers(0, 2))  # curves start at different steps; signed zeros must rank as they do
        curve = [(s, draw(st.sampled_from([0.1, 0.5, 0.9, 0.0, -0.0]))) for s in range(first, first + steps)]
        trials.append(Trial(number, params, state, metrics, curve))
    order = draw(st.permutations([t.number for t in trials if t.state.finished]))
    return spec, trials, list(order)


def summary(plan: Plan) -> tuple[Any, ...]:
    return (
        [(c.number, c.params) for c in plan.create],
        plan.stop,
        plan.outcome,
        plan.counts,
        None if plan.best is None else plan.best.number,
        plan.finished,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.booleans())
def test_the_incremental_plan_is_the_plan_over_every_trial(
    scenario: tuple[ExperimentSpec, list[Trial], list[int]], suggest: bool
) -> None:
    spec, trials, order = scenario
    by_number = {t.number: t for t in trials}
    history = History(spec, EXP)
    for number in order:  # trials finish in any order
        history.add(by_number[number])
    active = [t for t in trials if t.active]
    fresh = make_plan(spec, trials, experiment=EXP, suggest=suggest)
    incremental = make_plan(spec, active, experiment=EXP, suggest=suggest, history=history)
    assert summary(incremental) == summary(fresh)
    if fresh.best is not None:
        assert incremental.best is by_number[fresh.best.number]


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_the_history_grows_one_trial_at_a_time_like_the_experiment(
    scenario: tuple[ExperimentSpec, list[Trial], list[int]]
) -> None:
    """As trials finish one by one, each intermediate history plans as make_plan over the trials at that moment."""
    spec, trials, order = scenario
    by_number = {t.number: t for t in trials}
    history = History(spec, EXP)
    finished: set[int] = set()
    for number in order:
        history.add(by_number[number])
        finished.add(number)
        now = [t if t.number in finished else Trial(t.number, t.params, TrialState.RUNNING, curve=t.curve)
               for t in trials]
        fresh = make_plan(spec, now, experiment=EXP)
        incremental = make_plan(spec, [t for t in now if t.active], experiment=EXP, history=history)
        assert summary(incremental) == summary(fresh)


def test_a_trial_added_again_replaces_the_earlier_one() -> None:
    spec = make_spec("random", grid=False, goal="maximize", target=None, max_trials=10, parallel=2, max_failed=5,
                     stopping=None)
    params = {"x": 0.5, "n": 2, "k": "a"}
    history = History(spec, EXP, [Trial(0, params, TrialState.SUCCEEDED, {"acc": 0.9}),
                                  Trial(1, params, TrialState.SUCCEEDED, {"acc": 0.5})])
    assert history.best is not None and history.best.number == 0
    history.add(Trial(0, params, TrialState.FAILED))
    assert history.best is not None and history.best.number == 1
    assert (history.counts.succeeded, history.counts.failed, len(history)) == (1, 1, 2)


def test_misuse_is_refused() -> None:
    spec = make_spec("random", grid=False, goal="maximize", target=None, max_trials=10, parallel=2, max_failed=5,
                     stopping=None)
    other = make_spec("random", grid=False, goal="minimize", target=None, max_trials=10, parallel=2, max_failed=5,
                      stopping=None)
    params = {"x": 0.5, "n": 2, "k": "a"}
    history = History(spec, EXP, [Trial(0, params, TrialState.SUCCEEDED, {"acc": 0.9})])
    with pytest.raises(ValueError):
        history.add(Trial(1, params, TrialState.RUNNING))
    with pytest.raises(ValueError):  # a finished trial belongs in the history, not among the active ones
        make_plan(spec, [Trial(1, params, TrialState.FAILED)], experiment=EXP, history=history)
    with pytest.raises(ValueError):
        make_plan(other, [], experiment=EXP, history=history)
