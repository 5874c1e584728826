"""The plan: the pure decision of what to do next, given the spec and the trials so far."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from kubetune.plan import Outcomes, Plan, best_trial, build_sampler, default_seed, make_plan
from kubetune.spec import ExperimentSpec
from kubetune.trials import Reason, Trial, TrialState

EXP = "exp"


def make_spec(**over: Any) -> ExperimentSpec:
    doc: dict[str, Any] = {
        "objective": {"metric": "acc", "goal": "maximize"},
        "parameters": [
            {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
            {"name": "n", "type": "int", "min": 1, "max": 100},
            {"name": "k", "type": "categorical", "values": ["a", "b", "c"]},
        ],
        "algorithm": {"name": "random", "seed": 3},
        "maxTrials": 10,
        "parallelTrials": 3,
        "maxFailedTrials": 3,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    for key, value in over.items():
        if key in ("goal", "target", "metric"):
            doc["objective"][key] = value
        elif key == "algorithm":
            doc["algorithm"] = value
        else:
            doc[key] = value
    return ExperimentSpec.model_validate(doc)


def plan_for(spec: ExperimentSpec, trials: list[Trial], experiment: str = EXP) -> Plan:
    return make_plan(spec, trials, experiment=experiment)


def done(number: int, value: float | None, params: dict[str, Any] | None = None,
         state: TrialState = TrialState.SUCCEEDED, metric: str = "acc") -> Trial:
    metrics = {} if value is None else {metric: value}
    return Trial(number, params or {"x": number / 100, "n": number + 1, "k": "a"}, state, metrics)


def running(number: int, params: dict[str, Any] | None = None) -> Trial:
    return Trial(number, params or {"x": 0.5 + number / 1000, "n": 50, "k": "b"}, TrialState.RUNNING)


def failed(number: int) -> Trial:
    t = done(number, None, state=TrialState.FAILED)
    t.reason = Reason.ERROR
    return t


def simulate(spec: ExperimentSpec, objective: Callable[[dict[str, Any]], float | None], *, seed: int = 0,
             experiment: str = EXP, trials: list[Trial] | None = None, max_rounds: int = 500
             ) -> tuple[list[Trial], Plan, list[int]]:
    """Apply plans the way a backend would: create trials, finish a random subset of the running ones."""
    rng = random.Random(seed)
    trials = list(trials or [])
    active_counts: list[int] = []
    for _ in range(max_rounds):
        plan = make_plan(spec, trials, experiment=experiment)
        for order in plan.stop:
            t = next(t for t in trials if t.number == order.number)
            t.state, t.reason, t.message = order.state, order.reason, order.message
        for new in plan.create:
            assert new.number not in {t.number for t in trials}
            trials.append(Trial(new.number, new.params, TrialState.RUNNING))
        active = [t for t in trials if t.active]
        active_counts.append(len(active))
        if plan.finished:
            return trials, plan, active_counts
        for t in active:
            if rng.random() < 0.5:
                value = objective(t.params)
                if value is None:
                    t.state = TrialState.FAILED
                else:
                    t.state, t.metrics = TrialState.SUCCEEDED, {spec.objective.metric: value}
    raise AssertionError("the experiment did not finish")


def score(p: dict[str, Any]) -> float:
    return p["x"] + p["n"] / 100


# ------------------------------------------------------------------------------------------------- budget

def test_first_plan_creates_parallel_trials_numbered_from_zero() -> None:
    plan = plan_for(make_spec(), [])
    assert [c.number for c in plan.create] == [0, 1, 2]
    assert plan.outcome is None and not plan.finished and plan.stop == []
    for c in plan.create:
        assert set(c.params) == {"x", "n", "k"}
    assert len({tuple(sorted(c.params.items())) for c in plan.create}) == 3


def test_creates_only_what_the_budget_leaves() -> None:
    spec = make_spec(maxTrials=5, parallelTrials=4)
    trials = [done(0, 0.1), done(1, 0.2), done(2, 0.3)]
    plan = plan_for(spec, trials)
    assert [c.number for c in plan.create] == [3, 4]  # min(parallel 4, remaining 2)


def test_fills_free_slots_with_consecutive_numbers() -> None:
    spec = make_spec(maxTrials=20, parallelTrials=4)
    trials = [done(0, 0.1), running(1), done(2, 0.3), running(3)]
    plan = plan_for(spec, trials)
    assert [c.number for c in plan.create] == [4, 5]
    assert plan.counts.running == 2 and plan.counts.created == 4 and plan.counts.succeeded == 2


def test_next_number_follows_the_highest_even_with_gaps_and_any_order() -> None:
    spec = make_spec(maxTrials=20, parallelTrials=2)
    plan = plan_for(spec, [done(7, 0.1), done(2, 0.2)])
    assert [c.number for c in plan.create] == [8, 9]


def test_pending_trials_count_as_running() -> None:
    spec = make_spec(maxTrials=10, parallelTrials=2)
    pending = Trial(0, {"x": 0.1, "n": 1, "k": "a"}, TrialState.PENDING)
    plan = plan_for(spec, [pending])
    assert [c.number for c in plan.create] == [1]
    assert plan.counts.running == 1


def test_no_new_trial_while_every_slot_is_busy() -> None:
    spec = make_spec(maxTrials=10, parallelTrials=2)
    plan = plan_for(spec, [running(0), running(1)])
    assert plan.create == [] and plan.outcome is None and not plan.finished


def test_suggestions_avoid_running_configurations() -> None:
    spec = make_spec(parameters=[{"name": "k", "type": "categorical", "values": ["a", "b", "c"]}],
                     maxTrials=10, parallelTrials=3)
    plan = plan_for(spec, [running(0, {"k": "a"})])
    assert sorted(c.params["k"] for c in plan.create) == ["b", "c"]


@pytest.mark.parametrize("algorithm", ["random", "sobol", "tpe"])
@pytest.mark.parametrize("parallel, budget", [(1, 4), (3, 10), (4, 6)])
def test_simulated_run_never_exceeds_budget_or_parallelism(algorithm: str, parallel: int, budget: int) -> None:
    spec = make_spec(maxTrials=budget, parallelTrials=parallel, algorithm={"name": algorithm, "seed": 1})
    trials, plan, active_counts = simulate(spec, score, seed=parallel)
    assert len(trials) == budget
    assert sorted(t.number for t in trials) == list(range(budget))
    assert max(active_counts) <= parallel
    assert max(active_counts) == parallel  # and the slots are used
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.MAX_TRIALS_REACHED
    assert plan.outcome.succeeded and plan.finished


# ------------------------------------------------------------------------------------------------- outcomes

def test_max_trials_reached() -> None:
    spec = make_spec(maxTrials=3)
    plan = plan_for(spec, [done(0, 0.5), done(1, 0.9), failed(2)])
    assert plan.outcome is not None
    assert plan.outcome.succeeded is True
    assert plan.outcome.reason == Outcomes.MAX_TRIALS_REACHED
    assert plan.outcome.message == "ran 3 of maxTrials=3; best acc=0.9 (trial 1)"
    assert plan.finished and plan.create == [] and plan.stop == []
    assert plan.best is not None and plan.best.number == 1


def test_budget_spent_but_a_trial_still_running_is_not_finished() -> None:
    spec = make_spec(maxTrials=3)
    plan = plan_for(spec, [done(0, 0.5), done(1, 0.9), running(2)])
    assert plan.outcome is None and plan.create == [] and plan.stop == [] and not plan.finished


def test_no_successful_trials() -> None:
    spec = make_spec(maxTrials=2, parallelTrials=1, maxFailedTrials=3)
    plan = plan_for(spec, [failed(0), failed(1)])
    assert plan.outcome is not None
    assert (plan.outcome.succeeded, plan.outcome.reason) == (False, Outcomes.NO_SUCCESSFUL_TRIALS)
    assert plan.outcome.message == "none of 2 trials succeeded"
    assert plan.finished and plan.best is None


def test_succeeded_without_objective_counts_as_no_success() -> None:
    spec = make_spec(maxTrials=1, parallelTrials=1)
    plan = plan_for(spec, [done(0, float("nan"))])
    assert plan.best is None
    # the trial is counted as succeeded by state, but there is no best: the outcome still tells the truth
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.MAX_TRIALS_REACHED
    assert "best" not in plan.outcome.message


def test_too_many_failed_trials_cancels_running_ones() -> None:
    spec = make_spec(maxTrials=20, parallelTrials=3, maxFailedTrials=2)
    trials = [failed(0), failed(1), done(2, 0.4), failed(3), running(4), running(5)]
    plan = plan_for(spec, trials)
    assert plan.outcome is not None
    assert (plan.outcome.succeeded, plan.outcome.reason) == (False, Outcomes.TOO_MANY_FAILED_TRIALS)
    assert plan.outcome.message == "3 trials failed, more than maxFailedTrials=2"
    assert plan.create == []
    assert [(s.number, s.state, s.reason) for s in plan.stop] == [
        (4, TrialState.CANCELED, Reason.EXPERIMENT_FINISHED),
        (5, TrialState.CANCELED, Reason.EXPERIMENT_FINISHED),
    ]
    assert all("TooManyFailedTrials" in s.message for s in plan.stop)
    assert not plan.finished  # until the running trials have stopped
    for t in trials[4:]:
        t.state = TrialState.CANCELED
    after = plan_for(spec, trials)
    assert after.finished and after.stop == [] and after.create == []
    assert after.outcome == plan.outcome


def test_exactly_max_failed_trials_is_still_allowed() -> None:
    spec = make_spec(maxTrials=20, parallelTrials=2, maxFailedTrials=2)
    plan = plan_for(spec, [failed(0), failed(1)])
    assert plan.outcome is None
    assert [c.number for c in plan.create] == [2, 3]


def test_zero_failures_allowed() -> None:
    spec = make_spec(maxTrials=20, parallelTrials=1, maxFailedTrials=0)
    plan = plan_for(spec, [done(0, 0.3), failed(1)])
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.TOO_MANY_FAILED_TRIALS


@pytest.mark.parametrize(
    "goal, target, values, reached",
    [
        ("maximize", 0.9, [0.5, 0.95], 1),
        ("maximize", 0.9, [0.5, 0.9], 1),  # reaching the target exactly counts
        ("maximize", 0.9, [0.5, 0.89], None),
        ("minimize", 0.1, [0.5, 0.05], 1),
        ("minimize", 0.1, [0.1, 0.5], 0),
        ("minimize", 0.1, [0.11, 0.5], None),
    ],
)
def test_target_reached(goal: str, target: float, values: list[float], reached: int | None) -> None:
    spec = make_spec(goal=goal, target=target, maxTrials=20, parallelTrials=3)
    trials = [done(i, v) for i, v in enumerate(values)] + [running(len(values))]
    plan = plan_for(spec, trials)
    if reached is None:
        assert plan.outcome is None
        assert len(plan.create) == 2 and plan.stop == []
        return
    assert plan.outcome is not None
    assert (plan.outcome.succeeded, plan.outcome.reason) == (True, Outcomes.TARGET_REACHED)
    assert plan.outcome.message.startswith(f"trial {reached} reached acc=")
    assert plan.best is not None and plan.best.number == reached
    assert plan.create == []
    assert [(s.number, s.state) for s in plan.stop] == [(len(values), TrialState.CANCELED)]


def test_target_reached_in_a_simulated_run_stops_early() -> None:
    spec = make_spec(target=1.2, maxTrials=200, parallelTrials=2)
    trials, plan, _ = simulate(spec, score)
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.TARGET_REACHED
    assert len(trials) < 200
    assert plan.best is not None and score(plan.best.params) >= 1.2


def test_small_grid_is_exhausted() -> None:
    spec = make_spec(
        parameters=[{"name": "n", "type": "int", "min": 1, "max": 3},
                    {"name": "k", "type": "categorical", "values": ["a", "b"]}],
        algorithm={"name": "grid"}, maxTrials=10, parallelTrials=4,
    )
    trials, plan, _ = simulate(spec, lambda p: p["n"] + (p["k"] == "b"))
    assert len(trials) == 6
    assert {(t.params["n"], t.params["k"]) for t in trials} == {(n, k) for n in (1, 2, 3) for k in "ab"}
    assert plan.outcome is not None
    assert (plan.outcome.succeeded, plan.outcome.reason) == (True, Outcomes.SEARCH_SPACE_EXHAUSTED)
    best = next(t for t in trials if (t.params["n"], t.params["k"]) == (3, "b"))
    assert plan.outcome.message == (
        f"every configuration of the search space was tried (6 trials); best acc=4 (trial {best.number})")


def test_grid_exhausted_waits_for_running_trials() -> None:
    spec = make_spec(parameters=[{"name": "k", "type": "categorical", "values": ["a", "b"]}],
                     algorithm={"name": "grid"}, maxTrials=10, parallelTrials=4)
    plan = plan_for(spec, [done(0, 1.0, {"k": "a"}), running(1, {"k": "b"})])
    assert plan.outcome is None and plan.create == [] and not plan.finished


def test_raising_the_budget_after_completion_continues() -> None:
    spec = make_spec(maxTrials=4, parallelTrials=3)
    trials, plan, _ = simulate(spec, score)
    assert plan.finished and plan.outcome is not None and plan.outcome.reason == Outcomes.MAX_TRIALS_REACHED
    bigger = make_spec(maxTrials=6, parallelTrials=3)
    more = plan_for(bigger, trials)
    assert more.outcome is None
    assert [c.number for c in more.create] == [4, 5]
    trials, plan, _ = simulate(bigger, score, trials=trials)
    assert len(trials) == 6 and plan.outcome is not None and plan.outcome.reason == Outcomes.MAX_TRIALS_REACHED


def test_lowering_the_budget_below_created_creates_nothing() -> None:
    spec = make_spec(maxTrials=2, parallelTrials=2)
    plan = plan_for(spec, [done(0, 0.1), done(1, 0.2), done(2, 0.3)])
    assert plan.create == []
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.MAX_TRIALS_REACHED


# ------------------------------------------------------------------------------------------------- determinism

def _history(spec: ExperimentSpec, n: int, experiment: str = EXP) -> list[Trial]:
    trials, _plan, _ = simulate(make_spec(**{**_spec_kwargs(spec), "maxTrials": n}), score, experiment=experiment)
    return trials


def _spec_kwargs(spec: ExperimentSpec) -> dict[str, Any]:
    return {"algorithm": spec.algorithm.model_dump(by_alias=True, exclude_none=True),
            "parallelTrials": spec.parallel_trials}


def _signature(plan: Plan) -> list[tuple[int, tuple[tuple[str, Any], ...]]]:
    return [(c.number, tuple(sorted(c.params.items()))) for c in plan.create]


@pytest.mark.parametrize(
    "algorithm",
    [
        pytest.param({"name": "random", "seed": 11}, id="random-seeded"),
        pytest.param({"name": "random"}, id="random-unseeded"),
        pytest.param({"name": "sobol", "seed": 5}, id="sobol-seeded"),
        pytest.param({"name": "tpe", "settings": {"nStartupTrials": 4}}, id="tpe-unseeded"),
    ],
)
def test_same_inputs_give_the_same_plan(algorithm: dict[str, Any]) -> None:
    spec = make_spec(algorithm=algorithm, maxTrials=30, parallelTrials=3)
    history = _history(spec, 8)
    history[-1].state = TrialState.RUNNING  # one still running
    history[-1].metrics = {}
    a = plan_for(spec, history)
    b = plan_for(spec, list(reversed(history)))  # order of the input does not matter
    c = plan_for(spec, [Trial.from_record(t.to_record()) for t in history])  # nor a round trip through records
    assert len(a.create) == 2
    assert _signature(a) == _signature(b) == _signature(c)


@pytest.mark.parametrize(
    "algorithm",
    [
        pytest.param({"name": "random", "seed": 11}, id="random-seeded"),
        pytest.param({"name": "random"}, id="random-unseeded"),
        pytest.param({"name": "tpe", "seed": 2, "settings": {"nStartupTrials": 4}}, id="tpe-seeded"),
        pytest.param({"name": "tpe", "settings": {"nStartupTrials": 4}}, id="tpe-unseeded"),
    ],
)
def test_replay_after_restart_gives_the_same_next_suggestions(algorithm: dict[str, Any]) -> None:
    spec = make_spec(algorithm=algorithm, maxTrials=30, parallelTrials=2)
    # Before the restart: one long-lived sampler drives the experiment.
    sampler = build_sampler(spec, EXP)
    trials: list[Trial] = []
    rng = random.Random(4)
    for _ in range(12):
        plan = make_plan(spec, trials, experiment=EXP, sampler=sampler)
        trials += [Trial(c.number, c.params, TrialState.RUNNING) for c in plan.create]
        for t in trials:
            if t.active and rng.random() < 0.6:
                t.state, t.metrics = TrialState.SUCCEEDED, {"acc": score(t.params)}
    for t in trials:  # free the slots; one trial failed
        if t.active:
            t.state, t.metrics = TrialState.SUCCEEDED, {"acc": score(t.params)}
    t = next(t for t in trials if t.state is TrialState.SUCCEEDED)
    t.state, t.metrics = TrialState.FAILED, {}
    before = make_plan(spec, trials, experiment=EXP, sampler=sampler)
    # After the restart: nothing but the recorded trials.
    replayed = [Trial.from_record(t.to_record()) for t in trials]
    after = make_plan(spec, replayed, experiment=EXP)
    assert len(before.create) == 2, "the scenario must leave something to suggest"
    assert _signature(before) == _signature(after)
    # And a second restart agrees as well.
    assert _signature(make_plan(spec, replayed, experiment=EXP)) == _signature(after)


def test_unseeded_experiments_are_seeded_by_their_name() -> None:
    spec = make_spec(algorithm={"name": "random"}, maxTrials=10, parallelTrials=3)
    assert default_seed("exp") == default_seed("exp") != default_seed("other")
    assert _signature(plan_for(spec, [], "exp")) == _signature(plan_for(spec, [], "exp"))
    assert _signature(plan_for(spec, [], "exp")) != _signature(plan_for(spec, [], "other"))


def test_the_seed_changes_the_suggestions() -> None:
    a = plan_for(make_spec(algorithm={"name": "random", "seed": 1}), [])
    b = plan_for(make_spec(algorithm={"name": "random", "seed": 2}), [])
    assert _signature(a) != _signature(b)


# ------------------------------------------------------------------------------------------------- best trial

def test_best_trial_ignores_failed_nan_and_running() -> None:
    spec = make_spec()
    trials = [
        done(0, 0.5),
        done(1, 0.99, state=TrialState.FAILED),   # failed trials never win, whatever they reported
        done(2, float("nan")),
        done(3, float("inf")),
        done(4, 0.7),
        Trial(5, {"x": 0.0, "n": 1, "k": "a"}, TrialState.RUNNING, {"acc": 0.98}),
        done(6, 0.8, state=TrialState.PRUNED),
        done(7, 0.75, metric="other"),            # no objective at all
        done(8, 0.7),                             # a tie keeps the earlier trial
    ]
    best = best_trial(spec, trials)
    assert best is not None and best.number == 4
    assert plan_for(spec, trials).best is best


def test_best_trial_minimize() -> None:
    spec = make_spec(goal="minimize")
    trials = [done(0, 0.5), done(1, -2.0), done(2, float("-inf")), done(3, 0.1)]
    best = best_trial(spec, trials)
    assert best is not None and best.number == 1


def test_best_trial_none() -> None:
    spec = make_spec()
    assert best_trial(spec, []) is None
    assert best_trial(spec, [failed(0), done(1, math.nan)]) is None


def test_failed_and_nan_trials_reach_the_sampler_as_failures() -> None:
    spec = make_spec()
    nan = done(0, float("nan"))
    obs = nan.observation(spec.objective)
    assert obs.state.value == "complete" and obs.loss is None
    ok = done(1, 0.25).observation(spec.objective)
    assert ok.loss == -0.25  # maximize: the engine minimizes the negated value
    assert failed(2).observation(spec.objective).state.value == "failed"
