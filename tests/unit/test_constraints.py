"""Outcome constraints (spec.constraints): feasibility, the best trial among feasible trials, the counts and
outcomes, and the algorithms that learn where trials are feasible."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kubetune.engine import SAMPLERS, Observation, ObservationState, make_sampler
from kubetune.engine._unit import unit_history
from kubetune.engine.space import FloatDistribution, IntDistribution, SearchSpace
from kubetune.engine.tpe import _constrained_order
from kubetune.plan import History, Outcomes, best_trial, count, make_plan, without_improvement
from kubetune.spec import CONSTRAINT_ALGORITHMS, Constraint, ExperimentSpec
from kubetune.trials import Trial, TrialState

EXP = "exp"
ROOT = Path(__file__).resolve().parents[2]


def make_spec(constraints: list[dict[str, Any]] | None = None, **over: Any) -> ExperimentSpec:
    doc: dict[str, Any] = {
        "objective": {"metric": "acc", "goal": "maximize"},
        "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                       {"name": "y", "type": "float", "min": 0.0, "max": 1.0}],
        "algorithm": {"name": "random", "seed": 3},
        "maxTrials": 10,
        "parallelTrials": 1,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    if constraints is not None:
        doc["constraints"] = constraints
    for key, value in over.items():
        if key == "target":
            doc["objective"]["target"] = value
        else:
            doc[key] = value
    return ExperimentSpec.model_validate(doc)


LATENCY = [{"metric": "latency_ms", "max": 50}]


def trial(number: int, acc: float | None, latency: float | None, state: TrialState = TrialState.SUCCEEDED) -> Trial:
    metrics = {k: v for k, v in (("acc", acc), ("latency_ms", latency)) if v is not None}
    return Trial(number, {"x": number / 1000, "y": 0.5}, state, metrics)


# -- feasibility ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bounds, value, expected", [
    ({"max": 50}, 40.0, -10.0),
    ({"max": 50}, 50.0, 0.0),
    ({"max": 50}, 62.5, 12.5),
    ({"min": 0.9}, 0.95, -0.05),
    ({"min": 0.9}, 0.5, 0.4),
    ({"min": 1, "max": 3}, 2.5, -0.5),  # the nearer bound
    ({"min": 1, "max": 3}, 0.0, 1.0),
    ({"min": 1, "max": 3}, 7.0, 4.0),
    ({"min": 2, "max": 2}, 2.0, 0.0),
    ({"max": 50}, None, math.inf),
])
def test_violation_known_answers(bounds: dict[str, float], value: float | None, expected: float) -> None:
    v = Constraint(metric="m", **bounds).violation(value)
    assert v == pytest.approx(expected) if math.isfinite(expected) else v == math.inf


def test_feasibility_of_trials() -> None:
    cs = make_spec(LATENCY).constraints
    assert cs is not None
    assert trial(0, 0.9, 50.0).feasible(cs) and not trial(0, 0.9, 50.0).infeasible(cs)
    assert trial(1, 0.9, 50.5).infeasible(cs) and not trial(1, 0.9, 50.5).feasible(cs)
    # a completed trial without the constraint's metric is infeasible
    assert trial(2, 0.9, None).infeasible(cs)
    # failed and pruned trials have no feasibility: neither feasible nor infeasible
    for state in (TrialState.FAILED, TrialState.PRUNED, TrialState.CANCELED, TrialState.RUNNING):
        t = trial(3, 0.9, 10.0, state)
        assert not t.feasible(cs) and not t.infeasible(cs)


def test_observations_carry_constraint_values_on_complete_trials_only() -> None:
    spec = make_spec([{"metric": "latency_ms", "max": 50}, {"metric": "mem", "min": 1, "max": 2}])
    from kubetune.plan import observe
    t = trial(0, 0.9, 70.0)
    t.metrics["mem"] = 1.5
    o = observe(spec, t)
    assert o.constraints == (20.0, -0.5) and not o.feasible
    assert observe(spec, trial(1, 0.9, 10.0)).constraints == (-40.0, math.inf)
    assert observe(spec, trial(2, 0.9, 10.0, TrialState.PRUNED)).constraints == ()
    assert observe(spec, trial(3, None, 10.0, TrialState.FAILED)).constraints == ()
    # without constraints the observation is the one it always was
    assert observe(make_spec(), t) == Observation(t.params, ObservationState.COMPLETE, -0.9, ())


def test_constraint_metrics_are_kept_first_in_records() -> None:
    spec = make_spec(LATENCY, additionalMetrics=["fit_seconds"])
    assert spec.metric_names == ["acc", "fit_seconds", "latency_ms"]
    t = Trial(0, {"x": 0.1, "y": 0.1}, TrialState.SUCCEEDED,
              {**{f"a{i:03d}": 1.0 for i in range(200)}, "acc": 0.5, "latency_ms": 3.0, "fit_seconds": 1.0})
    t.fit(spec.metric_names)
    assert list(t.metrics)[:3] == ["acc", "fit_seconds", "latency_ms"]


# -- the best trial, counts and outcomes ----------------------------------------------------------------------------


def _brute_best(trials: list[Trial], lo: float | None, hi: float | None) -> Trial | None:
    """The best feasible trial by a different formulation: filter by the bounds written out, sort by (-acc, number)."""
    ok = [t for t in trials if t.state is TrialState.SUCCEEDED and "acc" in t.metrics and "latency_ms" in t.metrics
          and (lo is None or t.metrics["latency_ms"] >= lo) and (hi is None or t.metrics["latency_ms"] <= hi)]
    ok.sort(key=lambda t: (-t.metrics["acc"], t.number))
    return ok[0] if ok else None


_STATES = st.sampled_from([TrialState.SUCCEEDED] * 4 + [TrialState.FAILED, TrialState.PRUNED, TrialState.CANCELED])
_VALUE = st.one_of(st.none(), st.integers(0, 8).map(float))


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(_STATES, _VALUE, _VALUE), max_size=25),
       lo=st.one_of(st.none(), st.integers(0, 4).map(float)), hi=st.one_of(st.none(), st.integers(4, 8).map(float)),
       order=st.randoms(use_true_random=False))
def test_best_trial_is_the_best_feasible_one(rows: list[tuple[TrialState, float | None, float | None]],
                                             lo: float | None, hi: float | None, order: Any) -> None:
    if lo is None and hi is None:
        hi = 4.0
    bounds = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    spec = make_spec([{"metric": "latency_ms", **bounds}], maxTrials=100)
    trials = [trial(i, a, lat, s) for i, (s, a, lat) in enumerate(rows)]
    expected = _brute_best(trials, lo, hi)
    assert best_trial(spec, trials) is expected
    # the incremental history, fed in any order, agrees
    shuffled = list(trials)
    order.shuffle(shuffled)
    h = History(spec, EXP, shuffled)
    assert h.best is expected
    n_infeasible = sum(1 for t in trials if t.state is TrialState.SUCCEEDED
                       and ("latency_ms" not in t.metrics or (lo is not None and t.metrics["latency_ms"] < lo)
                            or (hi is not None and t.metrics["latency_ms"] > hi)))
    assert h.counts.infeasible == count(trials, spec).infeasible == n_infeasible
    assert make_plan(spec, trials, experiment=EXP).counts.as_status(True)["infeasible"] == n_infeasible


def test_status_counts_have_infeasible_only_with_constraints() -> None:
    trials = [trial(0, 0.9, 70.0), trial(1, 0.8, 20.0)]
    with_c = make_plan(make_spec(LATENCY), trials, experiment=EXP, suggest=False)
    assert with_c.counts.as_status(True) == {"created": 2, "running": 0, "succeeded": 2, "failed": 0, "pruned": 0,
                                             "infeasible": 1}
    assert "infeasible" not in make_plan(make_spec(), trials, experiment=EXP).counts.as_status()


def test_a_target_reached_by_an_infeasible_trial_does_not_end_the_experiment() -> None:
    spec = make_spec(LATENCY, target=0.95)
    plan = make_plan(spec, [trial(0, 0.99, 80.0)], experiment=EXP)
    assert plan.outcome is None and plan.best is None and len(plan.create) == 1
    plan = make_plan(spec, [trial(0, 0.99, 80.0), trial(1, 0.96, 40.0)], experiment=EXP)
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.TARGET_REACHED
    assert plan.best is not None and plan.best.number == 1
    assert "trial 1 reached acc=0.96" in plan.outcome.message


def test_no_feasible_trials_fails_the_experiment() -> None:
    spec = make_spec(LATENCY, maxTrials=3)
    plan = make_plan(spec, [trial(0, 0.9, 80.0), trial(1, 0.8, None), trial(2, None, None, TrialState.FAILED)],
                     experiment=EXP)
    assert plan.finished and plan.outcome is not None
    assert (plan.outcome.succeeded, plan.outcome.reason) == (False, Outcomes.NO_FEASIBLE_TRIALS)
    assert "none of the 2 succeeded trials was feasible" in plan.outcome.message
    # one feasible trial is enough
    plan = make_plan(spec, [trial(0, 0.9, 80.0), trial(1, 0.8, 10.0), trial(2, 0.1, 90.0)], experiment=EXP)
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.MAX_TRIALS_REACHED
    assert "best acc=0.8 (trial 1)" in plan.outcome.message


def test_an_infeasible_trial_never_improves() -> None:
    spec = make_spec(LATENCY, maxTrials=20, stopping={"noImprovement": {"trials": 3}})
    trials = [trial(0, 0.5, 10.0), trial(1, 0.9, 99.0), trial(2, 0.95, 99.0), trial(3, 0.99, None)]
    assert without_improvement(spec, trials) == 3
    plan = make_plan(spec, trials, experiment=EXP)
    assert plan.outcome is not None and plan.outcome.reason == Outcomes.NO_IMPROVEMENT
    assert History(spec, EXP, trials).without_improvement == 3


# -- algorithms -----------------------------------------------------------------------------------------------------


def test_which_algorithms_accept_constraints() -> None:
    assert set(CONSTRAINT_ALGORITHMS) == {"random", "sobol", "grid", "tpe", "bayesian"}
    assert {"cmaes", "hyperband"} <= set(SAMPLERS) - set(CONSTRAINT_ALGORITHMS)


SPACE = SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)})
FINITE = SearchSpace.of({"x": IntDistribution(0, 9), "y": IntDistribution(0, 9)})


def _toy(p: dict[str, Any]) -> tuple[float, tuple[float, ...]]:
    """Minimize -(x + y) subject to x + y <= 0.6 (scaled to the unit square): the optimum lies on the boundary."""
    x, y = float(p["x"]), float(p["y"])
    if x > 1 or y > 1:
        x, y = x / 9, y / 9
    return -(x + y), (x + y - 0.6,)


def _drive(name: str, space: SearchSpace, trials: int, seed: int, batch: int = 1,
           settings: dict[str, Any] | None = None) -> list[Observation]:
    sampler = make_sampler(name, space, seed=seed, settings=settings or {})
    history: list[Observation] = []
    while len(history) < trials:
        out = sampler.suggest(history, [], n=batch)
        if not out:
            break
        for i, p in enumerate(out):
            loss, cons = _toy(p)
            k = len(history)
            if k % 9 == 7:  # failed and pruned trials have no constraint values
                history.append(Observation(p, ObservationState.FAILED))
            elif k % 9 == 8:
                history.append(Observation(p, ObservationState.PRUNED, loss + 1, ((1, loss + 1),)))
            elif k % 11 == 10:  # a completed trial that did not report the metric
                history.append(Observation(p, ObservationState.COMPLETE, loss, (), constraints=(math.inf,)))
            else:
                history.append(Observation(p, ObservationState.COMPLETE, loss, (), constraints=cons))
            del i
    return history


@pytest.mark.parametrize("name", CONSTRAINT_ALGORITHMS)
def test_contract_with_constraints(name: str) -> None:
    """Every algorithm that accepts constraints: valid, distinct, reproducible suggestions from a history with
    feasible, infeasible, unreported, failed and pruned trials, in batches too."""
    space = FINITE if name == "grid" else SPACE
    settings = {"nStartupTrials": 4} if name in ("tpe", "bayesian") else {}
    a = _drive(name, space, 30, seed=4, batch=3, settings=settings)
    b = _drive(name, space, 30, seed=4, batch=3, settings=settings)
    assert [o.params for o in a] == [o.params for o in b]
    keys = [space.key(o.params) for o in a]
    assert len(set(keys)) == len(keys)
    for o in a:
        assert set(o.params) == set(space.names)
        for name_, dist in space.dims:
            assert dist.contains(o.params[name_])


def _feasible_share(name: str, seed: int) -> float:
    history = _drive(name, SPACE, 40, seed=seed, settings={"nStartupTrials": 10} if name != "random" else {})
    later = [o for o in history[10:]]
    return sum(_toy(o.params)[1][0] <= 0 for o in later) / len(later)


@pytest.mark.parametrize("name", ["tpe", "bayesian"])
def test_model_based_algorithms_learn_feasibility(name: str) -> None:
    """After the initial design, tpe and bayesian suggest feasible configurations (x + y <= 0.6, 18 % of the square)
    far more often than random search does, and end closer to the constrained optimum (-0.6)."""
    seeds = range(3)
    share = np.mean([_feasible_share(name, s) for s in seeds])
    random_share = np.mean([_feasible_share("random", s) for s in seeds])
    assert random_share < 0.35
    assert share > random_share + 0.2, (share, random_share)
    best = [min(o.loss for o in _drive(name, SPACE, 40, seed=s, settings={"nStartupTrials": 10})
                if o.state is ObservationState.COMPLETE and o.feasible and o.constraints and o.loss is not None)
            for s in seeds]
    assert np.mean(best) < -0.5, best


# -- tpe's split is Optuna's -------------------------------------------------------------------------------------


_ROW = st.one_of(
    st.tuples(st.just("complete"), st.integers(0, 6).map(float),
              st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0, math.inf]), min_size=2, max_size=2)),
    st.tuples(st.just("pruned"), st.integers(0, 6).map(float), st.integers(1, 3)),
)


@settings(max_examples=120, deadline=None)
@given(rows=st.lists(_ROW, min_size=2, max_size=20), gamma_n=st.integers(1, 20))
@example(rows=[("pruned", 0.0, 1), ("complete", 0.0, [-1.0, -1.0]), ("pruned", 0.0, 1),
               ("complete", 0.0, [math.inf, math.inf]), ("pruned", 0.0, 1), ("complete", 0.0, [-1.0, math.inf])],
         gamma_n=5)  # two metrics unreported rank behind one
def test_tpe_split_matches_optunas_constrained_split(rows: list[tuple[Any, ...]], gamma_n: int) -> None:
    """The good group of tpe with constraints is the below group of Optuna's TPESampler with constraints_func
    (optuna/samplers/_tpe/sampler.py, ``_split_trials``), run on the same trials."""
    import optuna
    from optuna.samplers._tpe.sampler import _split_trials
    from optuna.trial import TrialState as OState
    from optuna.trial import create_trial

    space = SearchSpace.of({"x": FloatDistribution(0.0, 1.0)})
    history: list[Observation] = []
    frozen = []
    for i, row in enumerate(rows):
        p = {"x": i / 100}
        if row[0] == "complete":
            # Optuna keeps finite values: an unreported metric is a violation larger than every sum of others
            cons = tuple(min(v, 1e6) for v in row[2])
            history.append(Observation(p, ObservationState.COMPLETE, row[1], (), constraints=tuple(row[2])))
            frozen.append(create_trial(state=OState.COMPLETE, value=row[1], constraints={f"c{j}": v for j, v in enumerate(cons)},
                                       user_attrs={"i": i}))
        else:
            history.append(Observation(p, ObservationState.PRUNED, row[1], ((row[2], row[1]),)))
            frozen.append(create_trial(state=OState.PRUNED, intermediate_values={row[2]: row[1]},
                                       user_attrs={"i": i}))
    for t, n in zip(frozen, range(len(frozen))):
        t.number = n
    study = optuna.create_study(direction="minimize")
    n_below = min(gamma_n, len(rows))
    below, _above = _split_trials(study, frozen, n_below)
    expected = {t.user_attrs["i"] for t in below}
    hist = unit_history(space, history)
    order = _constrained_order(hist)
    # rows of hist: complete trials in history order, then pruned ones
    complete = [i for i, r in enumerate(rows) if r[0] == "complete"]
    pruned = [i for i, r in enumerate(rows) if r[0] == "pruned"]
    pruned_rank = sorted(pruned, key=lambda i: (-rows[i][2], rows[i][1], i))
    position = complete + pruned_rank
    assert {position[j] for j in order[:n_below]} == expected


# -- kubetune run, results.csv, the report and the benchmark ------------------------------------------------------


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/digits-svm-constrained.yaml as shipped, its budget cut to 10 trials."""
    import subprocess
    import sys

    example = ROOT / "examples" / "digits-svm-constrained.yaml"
    tmp = tmp_path_factory.mktemp("constrained")
    out = tmp / "out"
    r = subprocess.run([sys.executable, "-m", "kubetune", "run", str(example), "--max-trials", "10", "--quiet",
                        "--out", str(out)], capture_output=True, text=True, cwd=tmp, timeout=600)
    assert r.returncode in (0, 1), r.stderr
    (out / "exit_code").write_text(str(r.returncode))
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_example_runs_with_kubetune_run(example_run: Path) -> None:
    import json

    rows = _rows(example_run)
    assert len(rows) == 10 and all(row["state"] == "Succeeded" for row in rows), rows
    # feasibility written out, and checked here against the bound itself
    ok = [row for row in rows if float(row["support_vectors"]) <= 450]
    assert [row["feasible"] for row in rows] == ["true" if float(r["support_vectors"]) <= 450 else "false"
                                                 for r in rows]
    assert ok and len(ok) < len(rows), "the example's budget should bind: some trials feasible, some not"
    summary = json.loads((example_run / "summary.json").read_text())
    best = max(ok, key=lambda r: (float(r["accuracy"]), -int(r["number"])))
    assert summary["best_trial"]["number"] == int(best["number"])
    assert summary["outcome"]["reason"] == "MaxTrialsReached"
    assert (example_run / "exit_code").read_text() == "0"


def test_report_marks_infeasible_trials(example_run: Path) -> None:
    import re

    from kubetune.report import build
    from kubetune.results import load

    rows = _rows(example_run)
    infeasible = {int(r["number"]) for r in rows if r["feasible"] == "false"}
    report = build(load(str(example_run)))
    marked = {int(n) for n in re.findall(r'<tr[^>]*><td data-v="(\d+)">\d+</td><td class="Succeeded">Succeeded</td>'
                                         r'<td class="Infeasible">no</td>', report.html)}
    assert marked == infeasible
    history = report.figures["history"]
    trace = next(t for t in history.data if t.name.startswith("infeasible"))
    assert sorted(trace.x) == sorted(infeasible)
    feasible_best = min(float(r["accuracy"]) for r in rows)  # the best-so-far line never shows an infeasible value
    line = next(t for t in history.data if t.name == "best so far")
    feasible_values = {float(r["accuracy"]) for r in rows if r["feasible"] == "true"}
    assert set(line.y) <= feasible_values and min(line.y) >= feasible_best
    assert f"{len(infeasible)} succeeded trials infeasible" in report.html


def test_benchmark_quick_run(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import constrained

    assert constrained.main(["--quick"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| problem (optimum) | optimizer |")
    rows = [line for line in table[2:] if line.startswith("| gramacy")]
    assert {line.split("|")[2].strip() for line in rows} == set(constrained.OPTIMIZERS)
    # the brute-force optimum of Gramacy's toy problem is the published one (0.5998)
    assert constrained.optimum("gramacy") == pytest.approx(0.5998, abs=1e-4)
    assert constrained.optimum("gomez-levy") == pytest.approx(-0.9711, abs=1e-4)


# -- several objectives and constraints in one spec ---------------------------------------------------------------


def _mo_spec(algorithm: str = "random") -> ExperimentSpec:
    doc: dict[str, Any] = {
        "objectives": [{"metric": "acc", "goal": "maximize"}, {"metric": "size", "goal": "minimize"}],
        "constraints": [{"metric": "latency_ms", "max": 50}],
        "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                       {"name": "y", "type": "float", "min": 0.0, "max": 1.0}],
        "algorithm": {"name": algorithm, "seed": 3},
        "maxTrials": 100,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    return ExperimentSpec.model_validate(doc)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(_STATES, st.integers(0, 5), st.integers(0, 5), _VALUE), max_size=20),
       order=st.randoms(use_true_random=False))
def test_pareto_front_holds_feasible_trials_only(rows: list[tuple[TrialState, int, int, float | None]],
                                                  order: Any) -> None:
    from kubetune.plan import pareto_front

    spec = _mo_spec()
    trials = []
    for i, (state, acc, size, lat) in enumerate(rows):
        metrics = {"acc": float(acc), "size": float(size)}
        if lat is not None:
            metrics["latency_ms"] = lat * 10  # 0..80: above 50 is infeasible
        trials.append(Trial(i, {"x": i / 100, "y": 0.5}, state, metrics))
    ok = [t for t in trials if t.state is TrialState.SUCCEEDED and "latency_ms" in t.metrics
          and t.metrics["latency_ms"] <= 50]

    def dominated(a: Trial, b: Trial) -> bool:  # b dominates a: no worse in both, better in one
        ge = b.metrics["acc"] >= a.metrics["acc"] and b.metrics["size"] <= a.metrics["size"]
        return ge and (b.metrics["acc"] > a.metrics["acc"] or b.metrics["size"] < a.metrics["size"])

    expected = sorted(t.number for t in ok if not any(dominated(t, o) for o in ok))
    assert [t.number for t in pareto_front(spec, trials)] == expected
    shuffled = list(trials)
    order.shuffle(shuffled)
    assert sorted(t.number for t in History(spec, EXP, shuffled).front) == expected
    plan = make_plan(spec, trials, experiment=EXP, suggest=False)
    assert [t.number for t in plan.front] == expected
    assert plan.counts.infeasible == sum(1 for t in trials if t.state is TrialState.SUCCEEDED) - len(ok)


def test_tpe_with_several_objectives_ranks_feasible_trials_first() -> None:
    """MOTPE among the feasible trials, then infeasible ones by violation (Optuna's split with several objectives);
    the experiment runs, and its suggestions are reproducible."""
    from kubetune.plan import observe

    spec = _mo_spec("tpe")
    rng = np.random.default_rng(0)
    trials = []
    for i in range(30):
        x, y = rng.random(2)
        metrics = {"acc": x + y, "size": x * y, "latency_ms": 100 * x}
        trials.append(Trial(i, {"x": float(x), "y": float(y)}, TrialState.SUCCEEDED, metrics))
    hist = unit_history(spec.search_space(), [observe(spec, t) for t in trials])
    assert hist.losses is not None and hist.constraints is not None
    n_good = 3
    order = _constrained_order(hist, n_good)
    infeasible = [i for i, t in enumerate(trials) if t.metrics["latency_ms"] > 50]
    k = len(trials) - len(infeasible)
    assert set(order[:k]) == set(range(len(trials))) - set(infeasible)
    tail = [trials[i].metrics["latency_ms"] for i in order[k:]]
    assert tail == sorted(tail)
    plan_a = make_plan(spec, trials, experiment=EXP)
    plan_b = make_plan(spec, trials, experiment=EXP)
    assert plan_a.create and plan_a.create[0].params == plan_b.create[0].params


def test_client_rows_have_the_columns_of_results_csv(example_run: Path) -> None:
    from kubetune.client import rows
    from kubetune.results import load

    header, data = rows(load(str(example_run)))
    csv_rows = _rows(example_run)
    assert header == list(csv_rows[0])
    i = header.index("feasible")
    assert ["true" if row[i] else "false" for row in data] == [r["feasible"] for r in csv_rows]


def test_warm_start_takes_in_constraint_values_from_the_earlier_metrics() -> None:
    from kubetune.warmstart import take_in

    earlier = [trial(0, 0.9, 70.0), trial(1, 0.8, 20.0), trial(2, 0.7, None), trial(3, None, None, TrialState.FAILED)]
    spec = make_spec(LATENCY, algorithm={"name": "tpe", "seed": 1}, warmStart={"experiments": ["old"]})
    got = take_in(spec, [("old", earlier)])
    assert [(o.loss, o.constraints) for o in got.observations] == [(-0.9, (20.0,)), (-0.8, (-30.0,)),
                                                                   (-0.7, (math.inf,))]
    plain = make_spec(algorithm={"name": "tpe", "seed": 1}, warmStart={"experiments": ["old"]})
    assert all(o.constraints == () for o in take_in(plain, [("old", earlier)]).observations)


@settings(max_examples=300, deadline=None)
@given(lo=st.one_of(st.none(), st.floats(-1e6, 1e6)), hi=st.one_of(st.none(), st.floats(-1e6, 1e6)),
       value=st.floats(-2e6, 2e6))
def test_violation_holds_exactly_inside_the_bounds(lo: float | None, hi: float | None, value: float) -> None:
    if lo is None and hi is None or (lo is not None and hi is not None and lo > hi):
        return
    v = Constraint(metric="m", min=lo, max=hi).violation(value)
    inside = (lo is None or value >= lo) and (hi is None or value <= hi)
    assert (v <= 0) == inside
    if not inside:  # the distance to the bound that is crossed
        assert v == pytest.approx(max(lo - value if lo is not None else -math.inf,
                                      value - hi if hi is not None else -math.inf))


@pytest.mark.parametrize("name", ["tpe", "bayesian"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_without_a_feasible_trial_the_search_moves_toward_feasibility(name: str, seed: int) -> None:
    """Every trial so far has x >= 0.4 and violates x <= 0.2 by x - 0.2 (the objective prefers large x): the next
    suggestion is less violating than every trial so far (tpe: the least violating trials form the good group;
    bayesian: the probability of feasibility alone is maximized)."""
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(12):
        x, y = 0.4 + 0.6 * float(rng.random()), float(rng.random())
        history.append(Observation({"x": x, "y": y}, ObservationState.COMPLETE, -x, (), constraints=(x - 0.2,)))
    sampler = make_sampler(name, SPACE, seed=seed, settings={"nStartupTrials": 5})
    [p] = sampler.suggest(history, [], n=1)
    assert float(p["x"]) < min(float(o.params["x"]) for o in history), p


def test_bayesian_with_many_trials_and_constraints() -> None:
    """Beyond 128 trials the constraint models take their hyperparameters from a subset (as the objective's does)
    and condition on every trial; the suggestion is valid and lies where the models say it is likely feasible."""
    rng = np.random.default_rng(3)
    history = []
    for _ in range(200):
        p = {"x": float(rng.random()), "y": float(rng.random())}
        history.append(Observation(p, ObservationState.COMPLETE, -(p["x"] + p["y"]), (),
                                   constraints=(p["x"] + p["y"] - 0.6, p["x"] - 0.5)))
    [p] = make_sampler("bayesian", SPACE, seed=1).suggest(history, [], n=1)
    assert SPACE.contains(p)
    assert p["x"] + p["y"] <= 0.6 + 0.05 and p["x"] <= 0.5 + 0.05, p


def test_kubetune_run_fails_when_no_trial_is_feasible(tmp_path: Path) -> None:
    """The example with a budget no SVM meets (at most 1 support vector): every trial is recorded, none is feasible,
    the experiment fails with NoFeasibleTrials (exit 1) and has no best trial."""
    import json
    import subprocess
    import sys

    import yaml

    doc = yaml.safe_load((ROOT / "examples" / "digits-svm-constrained.yaml").read_text())
    doc["spec"]["constraints"] = [{"metric": "support_vectors", "max": 1}]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "kubetune", "run", str(path), "--max-trials", "3", "--quiet",
                        "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 1, r.stderr
    assert "experiment failed: NoFeasibleTrials: none of the 3 succeeded trials was feasible" in r.stderr
    assert "best:" not in r.stdout
    rows = _rows(out)
    assert [row["feasible"] for row in rows] == ["false"] * 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_trial"] is None and summary["outcome"]["reason"] == "NoFeasibleTrials"


@pytest.mark.parametrize("name", ["tpe", "bayesian", "random", "sobol"])
def test_constraints_in_a_conditional_space(name: str) -> None:
    """Conditional parameters and constraints together: suggestions carry exactly their active parameters and the
    model-based algorithms still find the feasible region (x <= 0.3, whichever branch)."""
    from kubetune.engine.space import CategoricalDistribution, Condition

    space = SearchSpace.of(
        {"x": FloatDistribution(0.0, 1.0), "kind": CategoricalDistribution(("a", "b")),
         "depth": IntDistribution(1, 8)},
        {"depth": Condition("kind", ("b",))})
    sampler = make_sampler(name, space, seed=2, settings={"nStartupTrials": 6} if name in ("tpe", "bayesian") else {})
    history: list[Observation] = []
    while len(history) < 30:
        for p in sampler.suggest(history, [], n=2):
            assert set(p) == set(space.active_names(p))
            x = float(p["x"])
            history.append(Observation(p, ObservationState.COMPLETE, -x, (), constraints=(x - 0.3,)))
    if name in ("tpe", "bayesian"):
        # the optimum lies on the boundary (x = 0.3): suggestions crowd it from both sides, so "near" is the test
        later = history[10:]
        assert sum(float(o.params["x"]) <= 0.35 for o in later) / len(later) > 0.5
        assert max(float(o.params["x"]) for o in history if o.feasible) > 0.25


def test_report_pareto_plot_draws_infeasible_trials_apart(tmp_path: Path) -> None:
    """Several objectives and constraints: the front joins feasible trials only, infeasible ones are their own
    trace (the brute-force front of the feasible trials is the one drawn)."""
    import json

    from kubetune.local.results import ResultsWriter
    from kubetune.plan import Outcome
    from kubetune.report import build
    from kubetune.results import load
    from kubetune.spec import TuningExperiment

    exp = TuningExperiment.model_validate({
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "mo"},
        "spec": _mo_spec().model_dump(mode="json", by_alias=True, exclude_none=True)})
    rng = np.random.default_rng(1)
    trials = []
    for i in range(40):
        x, y = float(rng.random()), float(rng.random())
        trials.append(Trial(i, {"x": x, "y": y}, TrialState.SUCCEEDED,
                            {"acc": x, "size": 1 - y + 0.2 * x, "latency_ms": 100 * y}, reason="Completed"))
    out = tmp_path / "mo"
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps(exp.model_dump(mode="json", by_alias=True, exclude_none=True)))
    ResultsWriter(out, exp.spec, "mo").write(trials, Outcome(True, "MaxTrialsReached", "done"))
    report = build(load(str(out)))
    fig = report.figures["pareto"]
    traces = {t.name.split(" (")[0]: t for t in fig.data}
    infeasible = {i for i, t in enumerate(trials) if t.metrics["latency_ms"] > 50}
    assert len(traces["infeasible"].x) == len(infeasible)
    ok = [t for t in trials if t.number not in infeasible]
    front = {t.number for t in ok if not any(o.metrics["acc"] >= t.metrics["acc"] and o.metrics["size"]
                                               <= t.metrics["size"] and (o.metrics["acc"] > t.metrics["acc"]
                                                                         or o.metrics["size"] < t.metrics["size"])
                                               for o in ok)}
    line = traces["Pareto front"]
    assert sorted(line.x) == sorted(trials[n].metrics["acc"] for n in front)
