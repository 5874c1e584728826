"""The early-stopping rules: median stopping and ASHA, edge cases included."""

from __future__ import annotations

import statistics

import pytest

from kubetune.engine import ObservationState
from kubetune.plan import make_plan
from kubetune.pruning import PruneReason, make_pruner
from kubetune.pruning._curve import first_from, points, value_at
from kubetune.pruning.asha import AshaPruner
from kubetune.pruning.median import MedianPruner
from kubetune.spec import ExperimentSpec
from kubetune.trials import Trial, TrialState

RUNNING, DONE, PRUNED = TrialState.RUNNING, TrialState.SUCCEEDED, TrialState.PRUNED


def make_spec(early: dict | None, goal: str = "maximize", **extra) -> ExperimentSpec:
    doc = {
        "objective": {"metric": "acc", "goal": goal},
        "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}],
        "algorithm": {"name": "random", "seed": 1},
        "maxTrials": 100,
        "parallelTrials": 4,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
        **extra,
    }
    if early is not None:
        doc["earlyStopping"] = early
    return ExperimentSpec.model_validate(doc)


def trial(number: int, curve, state: TrialState = RUNNING) -> Trial:
    return Trial(number=number, params={"x": number / 100}, state=state, curve=list(curve))


def flat(value: float, last: int, first: int = 1):
    """A curve with the same value at steps first..last."""
    return [(s, value) for s in range(first, last + 1)]


def median(**kw):
    spec = make_spec({"rule": "median", **kw})
    return spec, make_pruner(spec)


def asha(goal: str = "maximize", **kw):
    spec = make_spec({"rule": "asha", **kw}, goal=goal)
    return spec, make_pruner(spec)


def stopped(pruner, spec, trials) -> dict[int, tuple[str, str]]:
    return {n: (reason, msg) for n, reason, msg in pruner.decide(spec, trials)}


# --------------------------------------------------------------------------------------------------- curves


def test_points_sorts_out_of_order_reports_and_keeps_the_later_duplicate():
    t = trial(0, [(3, 0.3), (1, 0.1), (2, 0.2), (2, 0.25), (5, float("nan"))])
    assert points(t) == [(1, 0.1), (2, 0.25), (3, 0.3)]


def test_value_at_needs_the_curve_to_reach_the_step():
    pts = [(2, 0.2), (4, 0.4)]
    assert value_at(pts, 3) == 0.2  # last report at or before step 3
    assert value_at(pts, 4) == 0.4
    assert value_at(pts, 5) is None  # has not reached step 5
    assert value_at(pts, 1) is None  # reached step 1, but reported nothing at or before it
    assert first_from(pts, 3) == (4, 0.4)
    assert first_from(pts, 5) is None


def test_make_pruner():
    assert make_pruner(make_spec(None)) is None
    assert isinstance(make_pruner(make_spec({"rule": "median"})), MedianPruner)
    assert isinstance(make_pruner(make_spec({"rule": "asha"})), AshaPruner)


# --------------------------------------------------------------------------------------------------- median


def test_median_is_a_true_median_not_a_mean():
    spec, p = median(minTrials=5)
    others = [0.1, 0.2, 0.9, 0.95, 0.99]  # mean 0.628, median 0.9
    trials = [trial(i, flat(v, 3), DONE) for i, v in enumerate(others)]
    trials.append(trial(10, flat(0.8, 3)))
    out = stopped(p, spec, trials)
    assert 10 in out  # 0.8 beats the mean, not the median
    reason, message = out[10]
    assert reason == PruneReason.MEDIAN == "MedianStopping"
    assert "step 3" in message and "0.8" in message and "median 0.9 " in message and "5 other trials" in message


def test_median_of_an_even_count_is_the_mean_of_the_middle_two():
    spec, p = median(minTrials=4)
    trials = [trial(i, flat(v, 2), DONE) for i, v in enumerate([0.1, 0.5, 0.7, 0.9])]  # median 0.6
    assert 9 in stopped(p, spec, trials + [trial(9, flat(0.59, 2))])
    assert 9 not in stopped(p, spec, trials + [trial(9, flat(0.61, 2))])


def test_median_tie_continues():
    spec, p = median(minTrials=3)
    trials = [trial(i, flat(v, 2), DONE) for i, v in enumerate([0.4, 0.6, 0.8])]
    assert stopped(p, spec, trials + [trial(9, flat(0.6, 2))]) == {}
    assert 9 in stopped(p, spec, trials + [trial(9, flat(0.5999, 2))])


def test_median_needs_min_trials_at_the_step():
    spec, p = median(minTrials=5)
    four = [trial(i, flat(0.9, 4), DONE) for i in range(4)]
    bad = trial(9, flat(0.1, 4))
    assert stopped(p, spec, four + [bad]) == {}
    assert 9 in stopped(p, spec, four + [trial(5, flat(0.9, 4), DONE), bad])
    # Trials that stopped before the step do not vote at it.
    short = [trial(20 + i, flat(0.9, 3), PRUNED) for i in range(10)]
    assert stopped(p, spec, four + short + [bad]) == {}


def test_median_start_step():
    spec, p = median(minTrials=1, startStep=3)
    ref = [trial(0, flat(0.9, 10), DONE)]
    assert stopped(p, spec, ref + [trial(9, flat(0.1, 2))]) == {}
    assert 9 in stopped(p, spec, ref + [trial(9, flat(0.1, 3))])


def test_median_uses_the_best_value_so_far():
    spec, p = median(minTrials=2)
    ref = [trial(i, flat(0.9, 5), DONE) for i in range(3)]
    dipped = trial(9, [(1, 0.95), (2, 0.5)])  # best so far 0.95 >= median 0.9
    assert stopped(p, spec, ref + [dipped]) == {}


def test_median_compares_running_completed_and_pruned_but_not_failed_or_canceled():
    spec, p = median(minTrials=3)
    bad = trial(9, flat(0.2, 2))
    ref = [trial(0, flat(0.9, 5), DONE), trial(1, flat(0.8, 2), RUNNING), trial(2, flat(0.7, 3), PRUNED)]
    assert 9 in stopped(p, spec, ref + [bad])
    ignored = [trial(3, flat(0.9, 5), TrialState.FAILED), trial(4, flat(0.9, 5), TrialState.CANCELED)]
    assert stopped(p, spec, ref[:2] + ignored + [bad]) == {}


def test_median_never_stops_trials_without_intermediate_reports():
    spec, p = median(minTrials=1)
    ref = [trial(i, flat(0.9, 5), DONE) for i in range(3)]
    silent = Trial(number=9, params={"x": 0.5}, state=RUNNING, metrics={"acc": 0.0})
    assert stopped(p, spec, ref + [silent]) == {}
    # ... and reference trials without curves do not count either.
    silent_refs = [Trial(number=20 + i, params={"x": 0.1}, state=DONE, metrics={"acc": 0.99}) for i in range(5)]
    assert stopped(p, spec, silent_refs + [trial(9, flat(0.1, 3))]) == {}


def test_median_handles_out_of_order_steps():
    spec, p = median(minTrials=2)
    ref = [trial(0, [(3, 0.9), (1, 0.5), (2, 0.7)], DONE), trial(1, [(2, 0.8), (3, 0.95), (1, 0.6)], DONE)]
    # Latest step is 3 even though it was reported first; at step 3 the median is 0.925 > best 0.6.
    out = stopped(p, spec, ref + [trial(9, [(3, 0.4), (1, 0.6), (2, 0.5)])])
    assert "at step 3" in out[9][1]
    # Judged at step 2 (its latest), the median of [0.7, 0.8] is 0.75 and its best 0.76 continues.
    assert stopped(p, spec, ref + [trial(9, [(2, 0.76), (1, 0.3)])]) == {}


def test_median_sparse_reports_use_the_last_value_at_or_before_the_step():
    spec, p = median(minTrials=2)
    ref = [trial(0, [(2, 0.8), (4, 0.9)], DONE), trial(1, [(2, 0.6), (4, 0.7)], DONE)]
    # At step 3: the others' values are 0.8 and 0.6 (reported at step 2), median 0.7.
    assert 9 in stopped(p, spec, ref + [trial(9, [(3, 0.69)])])
    assert stopped(p, spec, ref + [trial(9, [(3, 0.71)])]) == {}


def test_median_minimize():
    spec = make_spec({"rule": "median", "minTrials": 3}, goal="minimize")
    p = make_pruner(spec)
    ref = [trial(i, flat(v, 2), DONE) for i, v in enumerate([1.0, 2.0, 3.0])]
    assert 9 in stopped(p, spec, ref + [trial(9, flat(2.5, 2))])
    assert stopped(p, spec, ref + [trial(9, flat(1.5, 2))]) == {}


def test_median_only_stops_active_trials():
    spec, p = median(minTrials=1)
    trials = [trial(0, flat(0.9, 3), DONE), trial(1, flat(0.1, 3), DONE), trial(2, flat(0.1, 3), PRUNED)]
    assert stopped(p, spec, trials) == {}


def test_median_statistics_agree_with_a_brute_force_reference():
    import random

    rng = random.Random(4)
    spec, p = median(minTrials=3, startStep=2)
    for _ in range(200):
        trials = []
        for i in range(rng.randint(1, 9)):
            last = rng.randint(1, 6)
            state = rng.choice([RUNNING, DONE, PRUNED, TrialState.FAILED])
            trials.append(trial(i, [(s, round(rng.random(), 2)) for s in rng.sample(range(1, last + 1), last)], state))
        expected = set()
        for t in trials:
            if t.state is not RUNNING:
                continue
            curve = dict(sorted(t.curve))
            s = max(curve)
            if s < 2:
                continue
            vals = []
            for o in trials:
                if o is t or o.state not in (RUNNING, DONE, PRUNED):
                    continue
                oc = dict(sorted(o.curve))
                if max(oc) >= s and any(k <= s for k in oc):
                    vals.append(oc[max(k for k in oc if k <= s)])
            if len(vals) >= 3 and max(curve.values()) < statistics.median(vals):
                expected.add(t.number)
        assert set(stopped(p, spec, trials)) == expected


# --------------------------------------------------------------------------------------------------- ASHA


def test_asha_rungs():
    _, p = asha(minResource=1, reductionFactor=3, maxResource=27)
    assert [p.rung_of(s) for s in (0, 1, 2, 3, 8, 9, 26, 27, 100)] == [
        None, (0, 1), (0, 1), (1, 3), (1, 3), (2, 9), (2, 9), (2, 9), (2, 9)]
    _, p = asha(minResource=2, reductionFactor=2)
    assert [p.rung_of(s) for s in (1, 2, 3, 4, 7, 8, 1000)] == [None, (0, 2), (0, 2), (1, 4), (1, 4), (2, 8),
                                                                (8, 512)]


def test_asha_keeps_the_top_third_of_a_rung():
    spec, p = asha(minTrials=1)
    # Eight earlier trials reached rung 0 (step 1); the ninth is judged among nine: the top floor(9/3) = 3 continue.
    ref = [trial(i, [(1, v), (2, v)], PRUNED) for i, v in enumerate([0.95, 0.9, 0.85, 0.5, 0.4, 0.3, 0.2, 0.1])]
    assert stopped(p, spec, ref + [trial(9, [(1, 0.85)])]) == {}  # third best: continues
    out = stopped(p, spec, ref + [trial(9, [(1, 0.84)])])
    reason, message = out[9]
    assert reason == PruneReason.ASHA == "ASHA"
    assert "rung 0 (step 1" in message and "0.84" in message and "top 3 of the 9 trials" in message
    assert "cutoff 0.85" in message


def test_asha_compares_with_the_trials_that_reached_the_rung_before():
    """Competitors are the trials created no later than the judged one (its arrival order), whatever their state."""
    spec, p = asha(minTrials=1)
    early = trial(0, [(1, 0.5)])
    later = [trial(i, [(1, 0.9)], DONE) for i in range(1, 6)]
    # Trial 0 reached the rung first (alone, so it continued); later, better trials do not stop it retroactively.
    assert stopped(p, spec, [early] + later) == {}
    # The same trial, created after them, is judged among all six: top 2, and it is not.
    assert 10 in stopped(p, spec, later + [trial(10, [(1, 0.5)])])
    # Decisions do not depend on when a backend looks: only on the trials.
    assert stopped(p, spec, list(reversed(later + [trial(10, [(1, 0.5)])]))) == stopped(
        p, spec, later + [trial(10, [(1, 0.5)])])


def test_asha_ties_at_the_cutoff_continue():
    spec, p = asha(minTrials=1)
    ref = [trial(i, [(1, v)], DONE) for i, v in enumerate([0.9, 0.7, 0.7, 0.5, 0.5])]
    # Six trials: top 2, cutoff 0.7; every 0.7 continues, 0.69 does not.
    assert stopped(p, spec, ref + [trial(9, [(1, 0.7)])]) == {}
    assert 9 in stopped(p, spec, ref + [trial(9, [(1, 0.69)])])


def test_asha_first_trials_continue_when_they_are_the_best_so_far():
    spec, p = asha(minTrials=1)
    assert stopped(p, spec, [trial(0, [(1, 0.5)])]) == {}
    # Two trials: top max(1, 2 // 3) = 1; the second stops unless it is the better one.
    assert set(stopped(p, spec, [trial(0, [(1, 0.5)], DONE), trial(1, [(1, 0.4)])])) == {1}
    assert stopped(p, spec, [trial(0, [(1, 0.5)], DONE), trial(1, [(1, 0.6)])]) == {}


def test_asha_min_trials():
    spec, p = asha(minTrials=4)
    trials = [trial(0, [(1, 0.9)], DONE), trial(1, [(1, 0.8)], DONE), trial(2, [(1, 0.1)])]
    assert stopped(p, spec, trials) == {}
    assert set(stopped(p, spec, trials[:2] + [trial(2, [(1, 0.7)], PRUNED), trial(3, [(1, 0.1)])])) == {3}
    # The default is 3: the first two trials of an experiment are never stopped.
    spec, p = asha()
    assert stopped(p, spec, [trial(0, [(1, 0.9)], DONE), trial(1, [(1, 0.1)])]) == {}
    assert 2 in stopped(p, spec, [trial(0, [(1, 0.9)], DONE), trial(1, [(1, 0.8)], DONE), trial(2, [(1, 0.1)])])


def test_asha_judges_only_at_the_highest_rung_reached():
    spec, p = asha(minTrials=1, maxResource=27)
    ref = [trial(i, [(1, 0.9), (3, 0.5)], PRUNED) for i in range(5)]
    # Worst of all at rung 0 (step 1), but best at rung 1 (step 3): it continues.
    late_bloomer = trial(9, [(1, 0.1), (2, 0.2), (3, 0.95), (4, 0.95)])
    assert stopped(p, spec, ref + [late_bloomer]) == {}
    # Still below rung 1: judged at rung 0.
    assert 9 in stopped(p, spec, ref + [trial(9, [(1, 0.1), (2, 0.2)])])


def test_asha_rung_value_is_the_first_report_at_or_after_the_rung():
    spec, p = asha(minTrials=1)
    ref = [trial(i, [(1, 0.5), (3, v)], DONE) for i, v in enumerate([0.9, 0.8, 0.7])]  # rung 1 cutoff (top 1): 0.9
    skipped = trial(9, [(1, 0.6), (5, 0.95)])  # reached rung 1 with the report at step 5
    assert stopped(p, spec, ref + [skipped]) == {}
    out = stopped(p, spec, ref + [trial(9, [(1, 0.6), (5, 0.85)])])
    assert "reported at step 5" in out[9][1]


def test_asha_out_of_order_steps():
    spec, p = asha(minTrials=1)
    trials = [trial(i, [(3, v), (1, 0.5)], DONE) for i, v in enumerate([0.9, 0.8, 0.7])]
    assert 9 in stopped(p, spec, trials + [trial(9, [(4, 0.2), (1, 0.99), (3, 0.1)])])
    assert stopped(p, spec, trials + [trial(9, [(4, 0.2), (1, 0.99), (3, 0.95)])]) == {}


def test_asha_never_stops_trials_without_intermediate_reports_or_at_the_full_budget():
    spec, p = asha(minTrials=1, maxResource=9)
    ref = [trial(i, [(1, 0.9), (3, 0.9), (9, 0.9)], DONE) for i in range(6)]
    silent = Trial(number=9, params={"x": 0.5}, state=RUNNING, metrics={"acc": 0.0})
    assert stopped(p, spec, ref + [silent]) == {}
    # A trial that reached maxResource has done its work: not judged.
    assert stopped(p, spec, ref + [trial(9, [(1, 0.1), (3, 0.1), (9, 0.1)])]) == {}
    assert 9 in stopped(p, spec, ref + [trial(9, [(1, 0.1), (3, 0.1), (8, 0.1)])])


def test_asha_minimize_and_failed_trials_ignored():
    spec, p = asha(goal="minimize", minTrials=3)
    trials = [trial(0, [(1, 1.0)], DONE), trial(1, [(1, 2.0)], DONE), trial(2, [(1, 0.5)], TrialState.FAILED)]
    assert set(stopped(p, spec, trials + [trial(9, [(1, 3.0)])])) == {9}
    assert stopped(p, spec, trials + [trial(9, [(1, 0.9)])]) == {}
    assert stopped(p, spec, trials[:2] + [trial(9, [(1, 3.0)])]) == {9: stopped(p, spec, trials + [trial(9, [(1, 3.0)])])[9]}


def test_asha_agrees_with_a_brute_force_reference():
    import random

    rng = random.Random(7)
    spec, p = asha(minTrials=2, maxResource=27)
    for _ in range(200):
        trials = []
        for i in range(rng.randint(1, 10)):
            steps = rng.sample(range(1, 30), rng.randint(1, 6))
            state = rng.choice([RUNNING, DONE, PRUNED, TrialState.FAILED, TrialState.CANCELED])
            trials.append(trial(i, [(s, round(rng.random(), 2)) for s in steps], state))
        expected = set()
        for t in trials:
            if t.state is not RUNNING:
                continue
            last = max(s for s, _ in t.curve)
            rungs = [r for r in (1, 3, 9) if r <= last]
            if last >= 27 or not rungs:
                continue
            r = rungs[-1]

            def at(o):  # the value of the first report at or after the rung
                return sorted((s, v) for s, v in o.curve if s >= r)[0][1]

            vals = [at(o) for o in trials if o.number <= t.number and o.state in (RUNNING, DONE, PRUNED)
                    and max(s for s, _ in o.curve) >= r]
            if len(vals) < 2:
                continue
            cutoff = sorted(vals, reverse=True)[max(1, len(vals) // 3) - 1]
            if at(t) < cutoff:
                expected.add(t.number)
        assert set(stopped(p, spec, trials)) == expected


def test_decisions_are_deterministic_and_order_independent():
    import random

    spec, p = asha(minTrials=2)
    rng = random.Random(0)
    trials = [trial(i, [(s, rng.random()) for s in range(1, rng.randint(2, 12))],
                    rng.choice([RUNNING, DONE, PRUNED])) for i in range(40)]
    a = p.decide(spec, trials)
    shuffled = trials[:]
    rng.shuffle(shuffled)
    assert p.decide(spec, shuffled) == a
    assert a  # something to decide


# --------------------------------------------------------------------------------------------------- the plan


def test_plan_turns_decisions_into_pruned_stop_orders_and_feeds_them_to_the_engine():
    spec = make_spec({"rule": "median", "minTrials": 2}, maxTrials=10, parallelTrials=3)
    trials = [trial(0, flat(0.9, 4), DONE), trial(1, flat(0.8, 4), DONE), trial(2, flat(0.1, 3))]
    for t in trials[:2]:
        t.metrics = {"acc": 0.9}
    plan = make_plan(spec, trials, experiment="e")
    assert [(s.number, s.state, s.reason) for s in plan.stop] == [(2, PRUNED, "MedianStopping")]
    assert "step 3" in plan.stop[0].message
    assert len(plan.create) == 3  # parallelTrials=3 and the stopped trial no longer takes a slot
    t = trials[2]
    t.state = PRUNED
    obs = t.observation(spec.objective)
    assert obs.state is ObservationState.PRUNED and obs.loss == -0.1 and obs.intermediate[-1] == (3, -0.1)


def test_plan_without_early_stopping_stops_nothing():
    spec = make_spec(None)
    trials = [trial(0, flat(0.9, 4), DONE), trial(1, flat(0.8, 4), DONE), trial(2, flat(0.1, 3))]
    assert make_plan(spec, trials, experiment="e").stop == []


@pytest.mark.parametrize("rule", ["median", "asha"])
def test_trials_that_only_report_final_values_run_to_the_end(rule):
    spec = make_spec({"rule": rule, "minTrials": 1})
    trials = [Trial(number=i, params={"x": i / 10}, state=DONE, metrics={"acc": 0.9}) for i in range(5)]
    trials.append(Trial(number=5, params={"x": 0.55}, state=RUNNING))
    assert make_plan(spec, trials, experiment="e").stop == []
