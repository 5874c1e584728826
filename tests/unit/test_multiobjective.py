"""Several objectives: Pareto dominance, hypervolume and crowding (checked against brute force over another
formulation and known answers), the contract of every algorithm that accepts ``objectives`` and the refusal of every
one that does not, the front a plan keeps (incremental and from scratch agree), and its bounded form in status."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.engine import (
    SAMPLERS,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    Observation,
    ObservationState,
    SearchSpace,
    make_sampler,
)
from kubetune.engine.pareto import (
    crowding_distance,
    dominates,
    front_indices,
    greedy_hssp,
    hypervolume,
    hypervolume_contributions,
    motpe_order,
    nondominated_ranks,
    select_spread,
)
from kubetune.k8s.status import pareto_front_status
from kubetune.plan import History, front_in_status, make_plan, pareto_front
from kubetune.spec import MAX_FRONT_IN_STATUS, MULTI_OBJECTIVE_ALGORITHMS, ExperimentSpec
from kubetune.trials import Trial, TrialState

# -- brute force over other formulations ----------------------------------------------------------------------------


def brute_dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def hv_inclusion_exclusion(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """The union of the boxes [p, ref] by inclusion-exclusion over every subset (exact, exponential)."""
    pts = [p for p in points if all(x < r for x, r in zip(p, ref))]
    total = 0.0
    for k in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, k):
            corner = [max(p[j] for p in subset) for j in range(len(ref))]
            total += (-1) ** (k + 1) * math.prod(r - c for r, c in zip(ref, corner))
    return total


small_int = st.integers(min_value=0, max_value=6)


def point_sets(m: int, max_size: int = 7) -> st.SearchStrategy[list[tuple[int, ...]]]:
    return st.lists(st.tuples(*[small_int] * m), min_size=0, max_size=max_size)


# -- known answers -----------------------------------------------------------------------------------------------


def test_hypervolume_known_answers() -> None:
    # three steps of a staircase under (5, 5): widths 1, 1, 2 at heights 2, 3, 4
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [5, 5]) == 13.0
    # one point: the box to the reference
    assert hypervolume([[1, 2, 3, 0.5]], [2, 4, 7, 1]) == pytest.approx(1 * 2 * 4 * 0.5)
    # unit axes under (2, 2, 2): three boxes of 4, pairwise overlaps of 2, a common cube of 1: 12 - 6 + 1
    assert hypervolume(np.eye(3), [2, 2, 2]) == pytest.approx(7.0)
    # a point on or beyond the reference counts nothing; a dominated point adds nothing
    assert hypervolume([[5, 1], [1, 5]], [5, 5]) == 0.0
    assert hypervolume([[1, 1], [2, 2]], [3, 3]) == 4.0
    assert hypervolume(np.zeros((0, 2)), [1, 1]) == 0.0


def test_ranks_known_answer() -> None:
    y = [[1, 3], [2, 2], [3, 1], [2, 3], [4, 4], [1, 3]]
    assert nondominated_ranks(y).tolist() == [0, 0, 0, 1, 2, 0]  # equal rows share a rank
    assert front_indices(y).tolist() == [0, 1, 2, 5]


# -- properties against brute force ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=2, max_value=4).flatmap(lambda m: st.tuples(st.just(m), point_sets(m))))
def test_hypervolume_equals_inclusion_exclusion(case: tuple[int, list[tuple[int, ...]]]) -> None:
    m, points = case
    ref = (7.0,) * m
    expected = hv_inclusion_exclusion([tuple(float(x) for x in p) for p in points], ref)
    got = hypervolume(np.array(points, dtype=float).reshape(len(points), m), ref)
    assert got == pytest.approx(expected, abs=1e-9)


def test_hypervolume_agrees_with_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    y = rng.random((25, 3))
    samples = rng.random((200_000, 3))
    inside = np.zeros(len(samples), dtype=bool)
    for p in y:
        inside |= (samples >= p).all(axis=1)
    estimate = inside.mean()
    stderr = math.sqrt(estimate * (1 - estimate) / len(samples))
    assert abs(hypervolume(y, [1, 1, 1]) - estimate) < 5 * stderr


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=2, max_value=4).flatmap(lambda m: st.tuples(st.just(m), point_sets(m, 12))))
def test_ranks_and_front_match_the_definition(case: tuple[int, list[tuple[int, ...]]]) -> None:
    """Ranks are the unique assignment where no row is dominated by one of its own or a later rank and every row
    of rank r > 0 is dominated by one of rank r - 1; the front is rank 0, and no member dominates another."""
    m, points = case
    y = np.array(points, dtype=float).reshape(len(points), m)
    ranks = nondominated_ranks(y)
    for i, a in enumerate(points):
        for j, b in enumerate(points):
            if brute_dominates(b, a):
                assert ranks[j] < ranks[i]
        if ranks[i] > 0:
            assert any(ranks[j] == ranks[i] - 1 and brute_dominates(points[j], a) for j in range(len(points)))
    front = [i for i, a in enumerate(points) if not any(brute_dominates(b, a) for b in points)]
    assert front_indices(y).tolist() == front == [i for i in range(len(points)) if ranks[i] == 0]


@settings(max_examples=100, deadline=None)
@given(point_sets(2, 10), st.integers(min_value=1, max_value=10))
def test_contributions_and_spread(points: list[tuple[int, int]], k: int) -> None:
    y = np.array(points, dtype=float).reshape(len(points), 2)
    ref = [7.0, 7.0]
    full = hypervolume(y, ref)
    for i, c in enumerate(hypervolume_contributions(y, ref)):
        rest = [p for j, p in enumerate(points) if j != i]
        assert c == pytest.approx(full - hv_inclusion_exclusion([tuple(map(float, p)) for p in rest], (7.0, 7.0)))
    if len(points):
        front = y[front_indices(y)]
        keep = select_spread(front, k)
        assert len(keep) == min(k, len(front)) and list(keep) == sorted(set(keep.tolist()))
        if k >= 2 and len(np.unique(front, axis=0)) == len(front):
            # the extremes of each objective stay (they have infinite crowding distance)
            for j in range(2):
                assert int(np.argmin(front[:, j])) in keep or k < 2


def test_crowding_distance_known_answer() -> None:
    y = np.array([[0.0, 4.0], [1.0, 2.0], [3.0, 1.0], [4.0, 0.0]])
    d = crowding_distance(y)
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert d[1] == pytest.approx((3 - 0) / 4 + (4 - 1) / 4)
    assert d[2] == pytest.approx((4 - 1) / 4 + (2 - 0) / 4)


def test_motpe_order_puts_the_front_first_and_splits_it_by_subset_selection() -> None:
    y = np.array([[4.0, 4.0], [1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.0, 3.0]])
    pos = motpe_order(y, n_good=2)
    order = np.argsort(pos).tolist()
    # the front is rows 1..3; under the rank's reference (3.2, 3.2) the middle one's box is the largest (1.44 against
    # 0.44), so it is chosen first; either end adds 0.2 after it
    assert sorted(order[:3]) == [1, 2, 3] and order[0] == 2 and order[1] in (1, 3)
    assert order[3:] == [4, 0]
    assert motpe_order(y, n_good=4).tolist() == [4, 0, 1, 2, 3]  # the cut falls in rank 1 (one row): row order


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=2, max_value=3).flatmap(lambda m: st.tuples(st.just(m), point_sets(m, 7))),
       st.integers(min_value=1, max_value=7))
def test_greedy_subset_selection_takes_the_largest_gain_each_time(case: tuple[int, list[tuple[int, ...]]],
                                                                  k: int) -> None:
    m, points = case
    ref = (7.0,) * m
    pts = [tuple(float(x) for x in p) for p in points]
    chosen = greedy_hssp(np.array(pts).reshape(len(pts), m), k, ref).tolist()
    assert len(chosen) == min(k, len(pts)) and len(set(chosen)) == len(chosen)
    for step, i in enumerate(chosen):
        before = [pts[j] for j in chosen[:step]]
        base = hv_inclusion_exclusion(before, ref)
        gains = {j: hv_inclusion_exclusion(before + [pts[j]], ref) - base for j in range(len(pts))
                 if j not in chosen[:step]}
        assert gains[i] == pytest.approx(max(gains.values()), abs=1e-9)


# -- algorithms ----------------------------------------------------------------------------------------------------

SPACE = SearchSpace.of({  # finite, so that grid runs on it too
    "x": FloatDistribution(0.0, 1.0, step=0.005),
    "y": FloatDistribution(0.0, 1.0, step=0.125),
    "n": IntDistribution(1, 5),
    "c": CategoricalDistribution(("a", "b")),
})


def zdt1(p: dict) -> tuple[float, float]:
    f1 = float(p["x"])
    g = 1 + 9 * (float(p["y"]) + (int(p["n"]) - 1) / 4 + (p["c"] == "b")) / 3
    return f1, g * (1 - math.sqrt(f1 / g))


def run_multi(name: str, n_trials: int, seed: int, batch: int = 2, fail_every: int = 0) -> list[Observation]:
    sampler = make_sampler(name, SPACE, seed=seed, objectives=2,
                           settings={"nStartupTrials": 5} if name == "tpe" else None)
    history: list[Observation] = []
    while len(history) < n_trials:
        out = sampler.suggest(history, [], n=min(batch, n_trials - len(history)))
        if not out:
            break
        for p in out:
            if fail_every and len(history) % fail_every == fail_every - 1:
                history.append(Observation(p, ObservationState.FAILED))
            else:
                history.append(Observation(p, ObservationState.COMPLETE, None, losses=zdt1(p)))
    return history


@pytest.mark.parametrize("name", MULTI_OBJECTIVE_ALGORITHMS)
def test_multi_objective_contract(name: str) -> None:
    """Values in the space, never repeated (with failures in the history), deterministic under a seed, and a fresh
    sampler replaying the history suggests the same."""
    history = run_multi(name, 24, seed=3, fail_every=5)
    assert len(history) == 24
    assert len({SPACE.key(o.params) for o in history}) == 24
    assert all(SPACE.contains(dict(o.params)) for o in history)
    assert [dict(o.params) for o in run_multi(name, 24, seed=3, fail_every=5)] == [dict(o.params) for o in history]
    again = [make_sampler(name, SPACE, seed=3, objectives=2).suggest(history, [], n=3) for _ in range(2)]
    assert again[0] == again[1] and len(again[0]) == 3
    assert not {SPACE.key(p) for p in again[0]} & {SPACE.key(o.params) for o in history}


def test_objectives_are_accepted_exactly_by_the_declared_algorithms() -> None:
    assert set(MULTI_OBJECTIVE_ALGORITHMS) == {"grid", "random", "sobol", "tpe"} <= set(SAMPLERS)
    for name, cls in SAMPLERS.items():
        if cls.supports_multi_objective:
            continue
        with pytest.raises(ValueError, match=f"the {name} algorithm does not support several objectives"):
            make_sampler(name, SearchSpace.of({"x": FloatDistribution(0, 1), "e": IntDistribution(1, 9)}),
                         objectives=2, settings={"resourceParameter": "e"} if name == "hyperband" else None)


def test_motpe_beats_random_on_zdt1() -> None:
    """After the same budget, MOTPE's front dominates more of the objective space than random search's (summed over
    three seeds; a wrong split, e.g. ranking by the first objective alone, loses this)."""
    ref = (1.1, 11.0)

    def hv(name: str, seed: int) -> float:
        done = [o.losses for o in run_multi(name, 60, seed=seed) if o.losses is not None]
        return hypervolume(np.array(done), ref)

    assert sum(hv("tpe", s) for s in range(3)) > sum(hv("random", s) for s in range(3))


# -- the plan's front ---------------------------------------------------------------------------------------------


def spec_of(goals: tuple[str, ...] = ("minimize", "maximize"), algorithm: str = "random") -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "objectives": [{"metric": f"m{i}", "goal": g} for i, g in enumerate(goals)],
        "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}],
        "algorithm": {"name": algorithm, "seed": 1},
        "maxTrials": 1000,
        "parallelTrials": 2,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    })


def trial(number: int, values: list[float | None], state: TrialState = TrialState.SUCCEEDED) -> Trial:
    metrics = {f"m{i}": v for i, v in enumerate(values) if v is not None}
    return Trial(number, {"x": number / 1000}, state, metrics)


trial_values = st.lists(st.tuples(st.sampled_from([TrialState.SUCCEEDED] * 4 + [TrialState.FAILED]),
                                  st.lists(st.one_of(st.none(), st.integers(0, 5).map(float)), min_size=3,
                                           max_size=3)), max_size=30)


@settings(max_examples=120, deadline=None)
@given(trial_values, st.randoms(use_true_random=False))
def test_front_incremental_equals_from_scratch_equals_brute_force(rows: list, rnd: random.Random) -> None:
    spec = spec_of(("minimize", "maximize", "minimize"))
    trials = [trial(i, values, state) for i, (state, values) in enumerate(rows)]
    candidates = {t.number: (v[0], -v[1], v[2]) for t in trials
                  if t.state is TrialState.SUCCEEDED and None not in (v := [t.metrics.get(f"m{i}") for i in range(3)])}
    expected = sorted(n for n, a in candidates.items() if not any(brute_dominates(b, a) for b in candidates.values()))
    assert [t.number for t in pareto_front(spec, trials)] == expected
    shuffled = list(trials)
    rnd.shuffle(shuffled)
    history = History(spec, "exp", shuffled)
    assert sorted(t.number for t in history.front) == expected
    plan = make_plan(spec, [], experiment="exp", history=history, suggest=False)
    assert [t.number for t in plan.front] == expected and plan.best is None
    assert [t.number for t in make_plan(spec, trials, experiment="exp", suggest=False).front] == expected


def test_front_in_status_is_bounded_and_keeps_the_extremes() -> None:
    spec = spec_of(("minimize", "minimize"))
    n = 200
    front = [trial(i, [i / n, 1 - i / n + 0.001 * math.sin(i)]) for i in range(n)]
    assert len(pareto_front(spec, front)) == n  # every one is on the front
    shown = front_in_status(spec, front)
    assert len(shown) == MAX_FRONT_IN_STATUS
    numbers = [t.number for t in shown]
    assert numbers == sorted(numbers) and 0 in numbers and n - 1 in numbers
    status = pareto_front_status(spec, "exp", front)
    assert status["size"] == n and status["metrics"] == ["m0", "m1"]
    assert len(status["trials"]) == MAX_FRONT_IN_STATUS
    assert status["trials"][0] == {"name": "exp-0000", "number": 0, "values": [0.0, front[0].metrics["m1"]]}
    # spread: no two shown members are neighbours on the front while larger gaps exist elsewhere
    gaps = np.diff(numbers)
    assert gaps.max() <= 3 * gaps.mean()


def test_outcome_names_the_front() -> None:
    spec = spec_of(("minimize", "minimize"))
    spec = spec.model_copy(update={"max_trials": 3, "parallel_trials": 1})
    trials = [trial(0, [1, 2]), trial(1, [2, 1]), trial(2, [3, 3])]
    plan = make_plan(spec, trials, experiment="exp")
    assert plan.outcome is not None and plan.outcome.reason == "MaxTrialsReached"
    assert plan.outcome.message == "ran 3 of maxTrials=3; a Pareto front of 2 trials"


def test_trial_missing_an_objective_is_not_on_the_front_and_is_failed_for_the_sampler() -> None:
    spec = spec_of(("minimize", "minimize"))
    t = trial(0, [1.0, None])
    assert pareto_front(spec, [t]) == []
    obs = t.observation(spec.objective_list)
    assert obs.state is ObservationState.FAILED and obs.losses is None and obs.loss is None
    ok = trial(1, [1.0, 2.0]).observation(spec.objective_list)
    assert ok.state is ObservationState.COMPLETE and ok.losses == (1.0, 2.0) and ok.loss is None
    assert dominates(np.array([1.0, 2.0]), np.array([1.0, 3.0]))


# -- the benchmark harness and the example -------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_benchmark_quick_run_scores_every_algorithm() -> None:
    from benchmarks import multiobjective as bench

    results = bench.run(quick=True, log=False)
    for problem, budget, runs in results:
        assert {r.algorithm for r in runs} == set(bench.ALGORITHMS) and budget == 12
        for r in runs:
            assert 0.0 < r.hypervolume <= math.prod(problem.reference)
            if problem.best_front is not None:  # nothing beats the true front
                assert r.hypervolume <= hypervolume(problem.best_front, problem.reference) + 1e-9
    text = bench.table(results)
    assert text.count("| kubetune tpe (MOTPE) |") == len(results)
    # ZDT1's true front f2 = 1 - sqrt(f1) under (1.1, 11): for f1 in [0, 1] the height 11 - (1 - sqrt(f1)), whose
    # integral is 11 - 1/3, and for f1 in [1, 1.1] the whole 11
    zdt1 = bench.zdt(1)
    assert zdt1.best_front is not None
    exact = (11.0 - 1.0 / 3.0) + 0.1 * 11.0
    assert hypervolume(zdt1.best_front, zdt1.reference) == pytest.approx(exact, abs=1e-3)
    assert zdt1.evaluate({f"x{i}": 0.0 for i in range(10)}) == (0.0, 1.0)


def test_example_runs_with_kubetune_run(tmp_path) -> None:
    """examples/digits-svm-pareto.yaml as shipped, its budget cut to 6 trials: every trial reports both objectives,
    and summary.json's front is the brute-force front of results.csv."""
    import csv
    import json
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "digits-svm-pareto.yaml"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "kubetune", "run", str(example), "--max-trials", "6", "--quiet",
                        "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(row["state"] == "Succeeded" for row in rows), rows
    points = {int(row["number"]): (-float(row["accuracy"]), float(row["support_vectors"])) for row in rows}
    front = sorted(n for n, a in points.items() if not any(brute_dominates(b, a) for b in points.values()))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pareto_front"] == front and summary["best_trial"] is None
    assert summary["outcome"]["message"].endswith(f"a Pareto front of {len(front)} trial" + "s" * (len(front) > 1))
    assert f"Pareto front: {len(front)} trial" in r.stdout
    for n in front:
        assert f"#{n:<4} accuracy=" in r.stdout


def test_report_draws_the_front_and_names_it() -> None:
    from kubetune.report.html import sections
    from kubetune.results import ExperimentResults, TrialRecord

    spec = spec_of(("maximize", "minimize"))
    trials = [trial(i, [v, s]) for i, (v, s) in enumerate([(0.9, 5.0), (0.8, 3.0), (0.7, 4.0), (0.95, 9.0)])]
    trials.append(trial(4, [None, None], TrialState.FAILED))
    results = ExperimentResults("exp", spec, [TrialRecord(t) for t in trials])
    assert [r.number for r in results.front] == [0, 1, 3] and results.best is None
    s = sections(results)
    fig = s.figures["pareto"]
    line = next(t for t in fig.data if t.name.startswith("Pareto front"))
    assert line.name == "Pareto front (3)"
    assert list(line.x) == [0.8, 0.9, 0.95] and list(line.y) == [3.0, 5.0, 9.0]
    others = next(t for t in fig.data if t.name == "trials")
    assert list(others.x) == [0.7]
    assert "Pareto front</b>3 trials: #0, #1, #3" in s.summary
    assert "objectives</b>maximize m0, minimize m1" in s.summary


def test_plain_progress_lines_show_every_objective() -> None:
    import io

    from kubetune.progress import RunView, Snapshot, describe, describe_front

    spec = spec_of(("maximize", "minimize"))
    trials = [trial(0, [0.9, 5.0]), trial(1, [0.8, None], TrialState.FAILED)]
    trials[1].reason = "MetricsMissing"
    stream = io.StringIO()
    RunView(stream, live=False).update(Snapshot("m0", 10, trials, None, objectives=("m0", "m1")))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("#0    Succeeded m0=0.9 m1=5  [x=0.0]")
    assert lines[1].startswith("#1    Failed    m0=0.8  [x=0.001]")
    assert describe(trials[0], "m1") == "#0    Succeeded m1=5  [x=0.0]"  # one objective: as before
    assert describe_front(spec, pareto_front(spec, trials)) == [
        "Pareto front: 1 trial over m0 (maximize), m1 (minimize)", "#0    m0=0.9 m1=5  [x=0.0]"]
