"""``spec.initialTrials`` and ``spec.warmStart``: admission, the plan, the out-of-space rules, both local sources."""

from __future__ import annotations

import heapq
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.engine import SAMPLERS, Observation, ObservationState
from kubetune.plan import History, make_plan
from kubetune.results.warm import load_local, source_directories
from kubetune.spec import WARM_START_ALGORITHMS, ExperimentSpec
from kubetune.trials import Trial, TrialState
from kubetune.validation import validate_document
from kubetune.warmstart import project, take_in

ROOT = Path(__file__).resolve().parents[2]
EXP = "exp"


def spec_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "objective": {"metric": "loss", "goal": "minimize"},
        "parameters": [
            {"name": "x", "type": "float", "min": 0.0, "max": 1.0},
            {"name": "n", "type": "int", "min": 1, "max": 9, "step": 2},
            {"name": "k", "type": "categorical", "values": ["a", "b", 3]},
        ],
        "algorithm": {"name": "tpe", "seed": 3},
        "maxTrials": 10,
        "parallelTrials": 3,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    doc.update(over)
    return doc


def make_spec(**over: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate(spec_doc(**over))


def problems(**over: Any) -> list[str]:
    doc = {"apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": EXP},
           "spec": spec_doc(**over)}
    _, found = validate_document(doc)
    return [str(p) for p in found]


# ------------------------------------------------------------------------------------------------- admission

GOOD = {"x": 0.5, "n": 3, "k": "a"}


@pytest.mark.parametrize(("entry", "expected"), [
    ({**GOOD, "x": -0.5}, "spec.initialTrials[1].x: -0.5 is below min 0"),
    ({**GOOD, "x": 1.5}, "spec.initialTrials[1].x: 1.5 is above max 1"),
    ({**GOOD, "x": "0.5"}, 'spec.initialTrials[1].x: "0.5" is not a number (float parameter)'),
    ({**GOOD, "x": True}, "spec.initialTrials[1].x: true is not a number (float parameter)"),
    ({**GOOD, "x": {"a": 1}}, 'spec.initialTrials[1].x: {"a": 1} is not a number (float parameter)'),
    ({**GOOD, "n": 2.5}, "spec.initialTrials[1].n: 2.5 is not a whole number (int parameter)"),
    ({**GOOD, "n": 4}, "spec.initialTrials[1].n: 4 is not on the step grid (min 1 + k * step 2)"),
    ({**GOOD, "n": 11}, "spec.initialTrials[1].n: 11 is above max 9"),
    ({**GOOD, "k": "c"}, 'spec.initialTrials[1].k: "c" is not one of ["a", "b", 3]'),
    ({**GOOD, "k": "3"}, 'spec.initialTrials[1].k: "3" is not one of ["a", "b", 3]'),
    ({**GOOD, "k": 0.5}, 'spec.initialTrials[1].k: 0.5 is not one of ["a", "b", 3] (write floats and booleans '
                         'quoted, as in values)'),
    (GOOD, "spec.initialTrials[1]: repeats initialTrials[0]"),
])
def test_an_initial_trial_outside_the_space_is_named_with_its_entry_and_parameter(entry: dict[str, Any],
                                                                                  expected: str) -> None:
    assert problems(initialTrials=[GOOD, entry]) == [expected]


@pytest.mark.parametrize(("over", "expected"), [
    ({"initialTrials": [GOOD, {"x": 0.1, "n": 3}]}, "spec.initialTrials[1].k: Required value"),
    ({"initialTrials": [{**GOOD, "y": 1}]}, "spec.initialTrials[0].y: not a parameter of this experiment"),
    ({"initialTrials": [GOOD, {**GOOD, "x": 0.1}], "maxTrials": 1, "parallelTrials": 1},
     "spec.initialTrials: initialTrials must not outnumber maxTrials"),
    ({"initialTrials": [GOOD] * 101}, "spec.initialTrials: Invalid value: List should have at most 100 items after validation, not 101"),
    ({"warmStart": {"experiments": ["old"], "defaults": {"y": 1}}},
     "spec.warmStart.defaults.y: not a parameter of this experiment"),
    ({"warmStart": {"experiments": ["old"], "defaults": {"n": 0}}},
     "spec.warmStart.defaults.n: 0 is below min 1"),
    ({"warmStart": {"experiments": ["old"], "maxTrials": 1001}},
     "spec.warmStart.maxTrials: Invalid value: 1001: should be less than or equal to 1000"),
    ({"warmStart": {"experiments": ["Old_Name"]}},
     "spec.warmStart.experiments[0]: Invalid value: \"Old_Name\": should match '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'"),
    ({"warmStart": {"experiments": []}},
     "spec.warmStart.experiments: Invalid value: List should have at least 1 item after validation, not 0"),
    ({"warmStart": {"experiments": [EXP]}}, "spec.warmStart.experiments cannot name the experiment itself"),
])
def test_invalid_initial_trials_and_warm_start_are_refused_with_clear_messages(over: dict[str, Any],
                                                                               expected: str) -> None:
    found = problems(**over)
    assert any(p.endswith(expected) or p == expected for p in found), found


def _hyperband(**over: Any) -> dict[str, Any]:
    return {"algorithm": {"name": "hyperband", "seed": 1, "settings": {"resourceParameter": "n"}}, **over}


@pytest.mark.parametrize("algorithm", sorted(SAMPLERS))
def test_warm_start_is_refused_for_every_algorithm_that_does_not_learn(algorithm: str) -> None:
    over = _hyperband() if algorithm == "hyperband" else {"algorithm": {"name": algorithm}}
    found = problems(warmStart={"experiments": ["old"]}, **over)
    if algorithm in ("tpe", "bayesian"):
        assert algorithm in WARM_START_ALGORITHMS
        assert found == []
    else:
        assert f"spec.warmStart: warmStart applies only to algorithm {', '.join(WARM_START_ALGORITHMS)}: the others " \
               "do not learn from earlier trials" in found


NO_INITIAL_TRIALS = {"hyperband", "pbt"}
"""Algorithms that decide every trial's configuration themselves."""


def test_initial_trials_are_refused_with_hyperband_and_pbt_and_admitted_with_every_other_algorithm() -> None:
    assert problems(**_hyperband(initialTrials=[GOOD])) == [
        "spec.initialTrials: initialTrials cannot be combined with the hyperband algorithm: its brackets decide "
        "each trial's configuration and budget"]
    assert ("spec.initialTrials: initialTrials cannot be combined with the pbt algorithm: its population decides "
            "each segment's configuration and checkpoint") in problems(algorithm={"name": "pbt"},
                                                                      initialTrials=[GOOD])
    for name in sorted(set(SAMPLERS) - NO_INITIAL_TRIALS):
        params, given = numeric_only(name, [GOOD])
        assert problems(algorithm={"name": name}, initialTrials=given, **params) == [], name


NUMERIC = {"parameters": spec_doc()["parameters"][:2]}


def numeric_only(algorithm: str, entries: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The space and entries without the categorical parameter for algorithms that search numbers only (a step for
    x with grid search)."""
    if algorithm == "grid":
        return {"parameters": [{**spec_doc()["parameters"][0], "step": 0.25}, *spec_doc()["parameters"][1:]]}, entries
    if algorithm != "cmaes":
        return {}, entries
    return NUMERIC, [{k: v for k, v in e.items() if k != "k"} for e in entries]


def test_the_operator_stalls_a_spec_whose_initial_trials_the_api_server_cannot_check() -> None:
    from kubetune.k8s.reconciler import parse_spec

    spec, found = parse_spec({"spec": spec_doc(initialTrials=[{**GOOD, "x": 2}])})
    assert spec is None
    assert [str(p) for p in found] == ["spec.initialTrials[0].x: 2 is above max 1"]
    spec, found = parse_spec({"spec": spec_doc(initialTrials=[GOOD])})
    assert spec is not None and found == []


# ------------------------------------------------------------------------------------------------- the plan

INITIAL = [{"x": 0.25, "n": 1, "k": "b"}, {"x": 1, "n": 9, "k": 3}, {"x": 0, "n": 5, "k": "a"},
           {"x": 0.75, "n": 7, "k": "a"}]


def run_plans(spec: ExperimentSpec, *, warm: tuple[Observation, ...] = (), incremental: bool = False,
              value: Any = None) -> list[Trial]:
    """Plan, create, finish (all of a batch at once) until the plan creates nothing; each plan applied twice."""
    value = value or (lambda p: (float(p["x"]) - 0.3) ** 2 + int(p["n"]) / 100)
    trials: dict[int, Trial] = {}
    history = History(spec, EXP, warm=warm) if incremental else None
    for _ in range(100):
        active = [t for t in trials.values() if t.active]
        if history is not None:
            plan = make_plan(spec, active, experiment=EXP, history=history)
            again = make_plan(spec, active, experiment=EXP, history=history)
        else:
            plan = make_plan(spec, list(trials.values()), experiment=EXP, warm=warm)
            again = make_plan(spec, list(trials.values()), experiment=EXP, warm=warm)
        assert plan.create == again.create  # a plan applied twice is harmless: same numbers, same configurations
        if not plan.create and not active:
            break
        for new in plan.create:
            assert new.number not in trials
            trials[new.number] = Trial(new.number, new.params, TrialState.RUNNING)
        for t in [t for t in trials.values() if t.active]:
            t.state, t.metrics = TrialState.SUCCEEDED, {"loss": value(t.params)}
            if history is not None:
                history.add(t)
    return [trials[n] for n in sorted(trials)]


@pytest.mark.parametrize("algorithm", sorted(set(SAMPLERS) - NO_INITIAL_TRIALS))
def test_the_first_trials_carry_exactly_the_initial_trials_in_order(algorithm: str) -> None:
    params, given = numeric_only(algorithm, INITIAL)
    spec = make_spec(algorithm={"name": algorithm, "seed": 5}, initialTrials=given, maxTrials=12,
                     parallelTrials=3, **params)
    trials = run_plans(spec)
    assert len(trials) == 12
    expected = [{**e, "x": float(e["x"])} for e in given]
    got = [t.params for t in trials[:4]]
    assert got == expected
    assert [type(t.params["x"]) for t in trials[:4]] == [float] * 4  # the parameter's type, as suggestions have
    keys = {json.dumps(t.params, sort_keys=True) for t in trials}
    assert len(keys) == 12  # the algorithm does not repeat them
    assert make_spec(algorithm={"name": algorithm, "seed": 5}, maxTrials=12).initial_trials is None


def test_grid_search_skips_the_points_given_as_initial_trials_and_still_covers_the_grid() -> None:
    params = [{"name": "n", "type": "int", "min": 1, "max": 3}, {"name": "k", "type": "categorical",
                                                                   "values": ["a", "b"]}]
    given = [{"n": 3, "k": "b"}, {"n": 1, "k": "b"}]
    spec = make_spec(parameters=params, algorithm={"name": "grid"}, initialTrials=given, maxTrials=10,
                     parallelTrials=2)
    trials = run_plans(spec, value=lambda p: p["n"])
    assert [t.params for t in trials[:2]] == given
    brute = {(n, k) for n in (1, 2, 3) for k in ("a", "b")}
    assert sorted((t.params["n"], t.params["k"]) for t in trials) == sorted(brute)  # 6 trials, each point once


@pytest.mark.parametrize("algorithm", ["tpe", "bayesian", "random", "sobol"])
def test_incremental_history_plans_the_same_trials_with_initial_trials_and_warm_start(algorithm: str) -> None:
    spec = make_spec(algorithm={"name": algorithm, "seed": 11}, initialTrials=INITIAL[:2], maxTrials=14,
                     parallelTrials=3)
    warm = tuple(Observation({"x": i / 20, "n": 1 + 2 * (i % 5), "k": "ab"[i % 2]}, ObservationState.COMPLETE,
                             (i / 20 - 0.3) ** 2) for i in range(20))
    full = run_plans(spec, warm=warm)
    incremental = run_plans(spec, warm=warm, incremental=True)
    assert [t.params for t in full] == [t.params for t in incremental]


SQUARE = {"objective": {"metric": "loss", "goal": "minimize"},
          "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                         {"name": "y", "type": "float", "min": 0.0, "max": 1.0}]}


@pytest.mark.parametrize("algorithm", sorted(WARM_START_ALGORITHMS))
def test_a_warm_start_makes_the_first_suggestion_model_based_near_the_known_optimum(algorithm: str) -> None:
    """Known answer: 40 earlier trials of (x-0.8)^2 + (y-0.2)^2 put the first suggestion near (0.8, 0.2); without
    them the first suggestion (same seed) is the quasi-random start, and differs."""
    rng = __import__("random").Random(0)
    points = [(rng.random(), rng.random()) for _ in range(40)]
    warm = tuple(Observation({"x": x, "y": y}, ObservationState.COMPLETE, (x - 0.8) ** 2 + (y - 0.2) ** 2)
                 for x, y in points)
    near = 0
    seeds = range(8)
    for seed in seeds:
        spec = make_spec(**SQUARE, algorithm={"name": algorithm, "seed": seed}, maxTrials=5, parallelTrials=1)
        cold = make_plan(spec, [], experiment=EXP).create[0].params
        hot = make_plan(spec, [], experiment=EXP, warm=warm).create[0].params
        assert hot != cold
        assert make_plan(spec, [], experiment=EXP, warm=warm).create[0].params == hot  # deterministic
        near += math.dist((hot["x"], hot["y"]), (0.8, 0.2)) < 0.25
    assert near >= 6, near  # a uniform point is that close with probability 0.2


# ------------------------------------------------------------------------------------------------- out of the space

SOURCE_SPACE = make_spec(warmStart={"experiments": ["old"]})


def succeeded(number: int, params: dict[str, Any], loss: float | None = 0.5, **metrics: float) -> Trial:
    m = dict(metrics)
    if loss is not None:
        m["loss"] = loss
    return Trial(number, params, TrialState.SUCCEEDED, m)


@pytest.mark.parametrize(("params", "outcome"), [
    ({"x": 0.5, "n": 3, "k": "a", "old": 7}, {"x": 0.5, "n": 3, "k": "a"}),  # an extra old parameter is dropped
    ({"x": 1, "n": 3.0, "k": 3}, {"x": 1.0, "n": 3, "k": 3}),  # numbers as the parameter's type
    ({"x": 0.5, "n": 3}, "without k"),  # no value, no default: skipped
    ({"x": 1.5, "n": 3, "k": "a"}, "x above max"),
    ({"x": -0.1, "n": 3, "k": "a"}, "x below min"),
    ({"x": 0.5, "n": 11, "k": "a"}, "n above max"),
    ({"x": 0.5, "n": 4, "k": "a"}, "n off the step grid"),
    ({"x": 0.5, "n": 2.5, "k": "a"}, "n not whole"),
    ({"x": 0.5, "n": 3, "k": "gone"}, "k not a value"),  # a categorical value no longer present
    ({"x": 0.5, "n": 3, "k": "3"}, "k not a value"),
    ({"x": "0.5", "n": 3, "k": "a"}, "x not a number"),
])
def test_each_out_of_space_rule(params: dict[str, Any], outcome: Any) -> None:
    assert project(SOURCE_SPACE, params) == outcome
    result = take_in(SOURCE_SPACE, [("old", [succeeded(0, params)])])
    if isinstance(outcome, str):
        assert result.observations == () and result.skipped == {outcome: 1}
        assert f"skipped: 1 {outcome}" in result.message()
    else:
        [obs] = result.observations
        assert dict(obs.params) == outcome and obs.loss == 0.5 and result.skipped == {}


def test_a_missing_parameter_takes_the_default_and_the_default_is_checked_like_any_value() -> None:
    spec = make_spec(warmStart={"experiments": ["old"], "defaults": {"k": "b", "n": 5}})
    assert project(spec, {"x": 0.5}) == {"x": 0.5, "n": 5, "k": "b"}
    assert project(spec, {"x": 0.5, "k": "a"}) == {"x": 0.5, "n": 5, "k": "a"}  # a value of its own wins


def test_the_objective_is_read_by_this_experiments_metric_and_oriented_by_its_goal() -> None:
    maximize = make_spec(objective={"metric": "acc", "goal": "maximize"}, warmStart={"experiments": ["old"]})
    trials = [
        succeeded(0, GOOD, loss=0.1, acc=0.9),  # the source minimized loss and also reported acc
        succeeded(1, {**GOOD, "x": 0.1}, loss=0.2),  # no acc: skipped
        Trial(2, {**GOOD, "x": 0.2}, TrialState.FAILED, {"acc": 0.99}),
        Trial(3, {**GOOD, "x": 0.3}, TrialState.PRUNED, {"acc": 0.98}),
        succeeded(4, {**GOOD, "x": 0.4}, acc=math.nan),
    ]
    result = take_in(maximize, [("old", trials)])
    assert [(dict(o.params), o.loss) for o in result.observations] == [(GOOD, -0.9)]
    assert result.skipped == {"without acc": 2, "not Succeeded": 2}
    assert (result.read, result.taken, result.skipped_total) == (5, 1, 4)
    assert result.status() == {"trials": 1, "skipped": 4, "message": result.message()}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-0.5, 0.0, 0.3, 0.99, 1, 1.2]), st.sampled_from([1, 3, 4, 9, 11]), st.sampled_from(["a", "b", "z"]),
                          st.floats(-10, 10), st.integers(0, 1)), max_size=40),
       st.integers(1, 12))
def test_the_best_max_trials_are_taken_in_as_brute_force_selects_them(rows: list[Any], cap: int) -> None:
    spec = make_spec(warmStart={"experiments": ["a", "b"], "maxTrials": cap})
    space = spec.search_space()
    sources: dict[int, list[Trial]] = {0: [], 1: []}
    for i, (x, n, k, loss, src) in enumerate(rows):
        sources[src].append(succeeded(i, {"x": x, "n": n, "k": k}, loss=loss))
    result = take_in(spec, [("a", sources[0]), ("b", sources[1])])
    # brute force, another formulation: the engine's own membership test, then the smallest by (loss, source, number)
    eligible = [(t.metrics["loss"], src, t.number, t.params) for src in (0, 1) for t in sources[src]
                if space.contains(t.params)]
    best = heapq.nsmallest(cap, eligible, key=lambda e: e[:3])
    expected = [(e[3], e[0]) for e in sorted(best, key=lambda e: (e[1], e[2]))]
    assert [(dict(o.params), o.loss) for o in result.observations] == expected
    assert result.read == len(rows) and result.taken + result.skipped_total == len(rows)
    assert result.skipped.get("beyond warmStart.maxTrials", 0) == max(len(eligible) - cap, 0)


# ------------------------------------------------------------------------------------------------- kubetune run

TRIAL = """
    import json, os, sys
    import kubetune_trial as kt
    p = kt.params()
    with open(os.path.join(os.path.dirname(__file__), "launched.jsonl"), "a") as f:
        f.write(json.dumps({"experiment": os.environ["KUBETUNE_EXPERIMENT"], "params": p,
                            "number": int(os.environ["KUBETUNE_TRIAL_NUMBER"])}) + "\\n")
    kt.report(loss=(p["x"] - OPT) ** 2)
"""


def write(tmp_path: Path, name: str, opt: float, **spec: Any) -> Path:
    (tmp_path / "trial.py").write_text(textwrap.dedent(TRIAL).replace("OPT", "float(sys.argv[1])"))
    doc = {"apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": name},
           "spec": {"objective": {"metric": "loss", "goal": "minimize"},
                    "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
                    "algorithm": {"name": "tpe", "seed": 2}, "maxTrials": 6, "parallelTrials": 2,
                    "trialTemplate": {"spec": {"template": {"spec": {"containers": [{
                        "name": "t", "command": ["python", str(tmp_path / "trial.py"), str(opt)]}]}}}},
                    **spec}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(tmp_path: Path, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubetune", "run", "-q", str(path), *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)


def launched(tmp_path: Path, experiment: str) -> list[dict[str, Any]]:
    lines = (tmp_path / "launched.jsonl").read_text().splitlines()
    ran = sorted((d["number"], d["params"]) for d in map(json.loads, lines) if d["experiment"] == experiment)
    assert [n for n, _ in ran] == list(range(len(ran)))  # each trial's process ran once
    return [params for _, params in ran]


def test_kubetune_run_runs_the_initial_trials_first_and_learns_from_the_earlier_run(tmp_path: Path) -> None:
    source = write(tmp_path, "old", 0.7)
    r = run(tmp_path, source)
    assert r.returncode == 0, r.stderr
    target = write(tmp_path, "new", 0.75, initialTrials=[{"x": 0.5}, {"x": 0.9}],
                   warmStart={"experiments": ["old"], "maxTrials": 4})
    r = run(tmp_path, target)
    assert r.returncode == 0, r.stderr
    assert "warm start: 4 of 6 trials taken in from " in r.stderr
    assert "skipped: 2 beyond warmStart.maxTrials" in r.stderr
    ran = launched(tmp_path, "new")
    assert len(ran) == 6  # warm-start trials are not trials of this run: maxTrials of its own ran
    assert ran[:2] == [{"x": 0.5}, {"x": 0.9}]  # what the processes of trials 0 and 1 were given
    rows = [json.loads(line) for line in (tmp_path / "kubetune-runs" / "new" / "trials.jsonl").read_text()
            .splitlines()]
    assert [(row["number"], row["params"]) for row in rows[:2]] == [(0, {"x": 0.5}), (1, {"x": 0.9})]
    assert len(rows) == 6

    # the same through --warm-start DIR, the source named by its directory
    plain = write(tmp_path, "flag", 0.75)
    r = run(tmp_path, plain, "--warm-start", str(tmp_path / "kubetune-runs" / "old"))
    assert r.returncode == 0, r.stderr
    assert "warm start: 6 of 6 trials taken in from " in r.stderr


def test_kubetune_run_refuses_a_missing_source_before_any_trial(tmp_path: Path) -> None:
    target = write(tmp_path, "new", 0.5, warmStart={"experiments": ["never-ran"]})
    r = run(tmp_path, target)
    assert r.returncode == 2
    assert f"cannot run: warm start: {tmp_path / 'kubetune-runs' / 'never-ran'} is not a directory" in r.stderr
    assert not (tmp_path / "launched.jsonl").exists()
    random_spec = write(tmp_path, "rnd", 0.5, algorithm={"name": "random"})
    r = run(tmp_path, random_spec, "--warm-start", str(tmp_path))
    assert r.returncode == 2 and "--warm-start applies only to algorithm bayesian, tpe" in r.stderr


def test_source_directories_sit_next_to_the_output_directory(tmp_path: Path) -> None:
    spec = make_spec(warmStart={"experiments": ["a", "b"]})
    out = tmp_path / "runs" / "new"
    assert source_directories(spec, out, [tmp_path / "x", tmp_path / "runs" / "a"]) == [
        tmp_path / "runs" / "a", tmp_path / "runs" / "b", tmp_path / "x"]
    with pytest.raises(Exception, match="holds no kubetune run"):
        (tmp_path / "runs" / "a").mkdir(parents=True)
        load_local(spec, [tmp_path / "runs" / "a"])


def test_the_warm_example_learns_from_the_digits_svm_run(tmp_path: Path) -> None:
    example = ROOT / "examples" / "digits-svm-warm.yaml"
    doc = yaml.safe_load(example.read_text())
    assert doc["spec"]["warmStart"]["experiments"] == ["digits-svm"]
    r = subprocess.run([sys.executable, "-m", "kubetune", "run", "-q", str(ROOT / "examples" / "digits-svm.yaml"),
                        "-n", "4"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    given = len(doc["spec"]["initialTrials"])
    r = subprocess.run([sys.executable, "-m", "kubetune", "run", "-q", str(example), "-n", str(given + 1)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "warm start: 4 of 4 trials taken in from " in r.stderr
    rows = [json.loads(line) for line in (tmp_path / "kubetune-runs" / "digits-svm-warm" / "trials.jsonl")
            .read_text().splitlines()]
    assert len(rows) == given + 1
    for row, entry in zip(rows, doc["spec"]["initialTrials"]):
        assert row["params"] == {k: (float(v) if k in ("C", "gamma") else v) for k, v in entry.items()}
        assert row["state"] == "Succeeded"


def test_the_benchmark_runs_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks import warm_start

    assert warm_start.main(["--quick", "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["algorithm"], r["seed"], r["taken"]) for r in rows] == [("tpe", 0, 12), ("tpe", 1, 12)]
    for r in rows:
        assert r["warm"] <= r["warm5"] and r["cold"] <= r["cold5"]  # best-so-far never worsens
    assert "| branin / shifted by (1, 1) | tpe | 2 |" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------- the operator's reader

class _FakeCore:
    """list_namespaced_config_map in pages of ``limit``, as the API server pages (continue tokens)."""

    def __init__(self, configmaps: list[Any]) -> None:
        self.configmaps = configmaps
        self.calls: list[dict[str, Any]] = []

    def list_namespaced_config_map(self, namespace: str, **kw: Any) -> Any:
        from types import SimpleNamespace

        self.calls.append(kw)
        selected = [c for c in self.configmaps if kw["label_selector"].endswith(
            f"kubetune.io/experiment={c.metadata.labels['kubetune.io/experiment']},kubetune.io/results=true")]
        start = int(kw.get("_continue") or 0)
        page = selected[start:start + kw["limit"]]
        token = str(start + kw["limit"]) if start + kw["limit"] < len(selected) else None
        return SimpleNamespace(items=page, metadata=SimpleNamespace(_continue=token))


class _FakeCustom:
    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str,
                                     **kw: Any) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return self.objects[name]


def _configmap(experiment: str, owner: str, records: list[Trial]) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(
        metadata=SimpleNamespace(labels={"kubetune.io/experiment": experiment}, name=f"{experiment}-results-x",
                                 owner_references=[SimpleNamespace(uid=owner)]),
        data={f"t{t.number:05d}": json.dumps(t.to_record()) for t in records})


def test_the_operator_reads_sources_by_name_in_pages_and_skips_other_owners() -> None:
    from kubetune.k8s.api import Api
    from kubetune.k8s.warm import SourceMissing, load_cluster

    spec = make_spec(warmStart={"experiments": ["old", "older"], "maxTrials": 3})
    source_doc = {"metadata": {"name": "old", "uid": "u-old"}, "spec": spec_doc(algorithm={"name": "tpe"})}
    shards = [_configmap("old", "u-old", [succeeded(10 * s + i, {**GOOD, "x": (10 * s + i) / 100}, loss=i)
                                          for i in range(3)]) for s in range(11)]
    shards.append(_configmap("old", "u-earlier", [succeeded(99, GOOD, loss=-100)]))  # an earlier "old": skipped
    core = _FakeCore(shards)
    api = Api(core=core, batch=object(), custom=_FakeCustom({"old": source_doc}))
    with pytest.raises(SourceMissing, match="warmStart.experiments: older not found in namespace ns"):
        load_cluster(api, "ns", spec)
    result = load_cluster(api, "ns", spec, skip_missing=True)
    assert result.sources == ("old", "older (not found)")
    assert result.read == 33
    # the best 3 (loss 0) are the first trial of each of the first three shards by number
    assert [dict(o.params)["x"] for o in result.observations] == [0.0, 0.1, 0.2]
    assert all(c["limit"] == 10 for c in core.calls) and len(core.calls) == 2  # 12 ConfigMaps, 10 a page


# ------------------------------------------------------------------------------------------------- sampler contract

CONTRACT_SPACES = {
    "mixed": spec_doc()["parameters"],
    "log-and-steps": [{"name": "lr", "type": "float", "min": 1e-5, "max": 1.0, "scale": "log"},
                      {"name": "units", "type": "int", "min": 8, "max": 512, "scale": "log"},
                      {"name": "drop", "type": "float", "min": 0.0, "max": 0.5, "step": 0.1}],
    "one-categorical": [{"name": "k", "type": "categorical", "values": ["a", "b", "c", 7]}],
}


@pytest.mark.parametrize("space", sorted(CONTRACT_SPACES))
@pytest.mark.parametrize("algorithm", sorted(WARM_START_ALGORITHMS))
def test_warm_start_contract(algorithm: str, space: str) -> None:
    """With observations of an earlier experiment, every suggestion is in the space, distinct, avoids this
    experiment's finished and pending configurations (not the warm ones: they were tried elsewhere) and is the same
    for the same seed and inputs; a finite space is not exhausted by warm observations."""
    import random as random_module

    spec = make_spec(parameters=CONTRACT_SPACES[space], algorithm={"name": algorithm, "seed": 9}, maxTrials=50,
                     parallelTrials=4)
    sampler_space = spec.search_space()
    rng = random_module.Random(1)
    warm = tuple(Observation(sampler_space.from_unit([rng.random() for _ in range(len(sampler_space))]),
                             ObservationState.COMPLETE, rng.random()) for _ in range(25))
    finished = [Trial(i, dict(sampler_space.from_unit([rng.random() for _ in range(len(sampler_space))])),
                      TrialState.SUCCEEDED, {"loss": rng.random()}) for i in range(3)]
    pending = [Trial(3, dict(sampler_space.from_unit([0.5] * len(sampler_space))), TrialState.RUNNING)]
    history = History(spec, EXP, finished, warm)
    plan = make_plan(spec, pending, experiment=EXP, history=history)
    again = make_plan(spec, [*finished, *pending], experiment=EXP, warm=warm)
    size = sampler_space.grid_size()
    room = 4 - 1 if size is None else min(3, size - len({sampler_space.key(t.params) for t in finished + pending}))
    assert [(n.number, n.params) for n in plan.create] == [(n.number, n.params) for n in again.create]
    assert len(plan.create) == room and [n.number for n in plan.create] == list(range(4, 4 + room))
    keys = [sampler_space.key(n.params) for n in plan.create]
    assert len(set(keys)) == len(keys)
    assert not set(keys) & {sampler_space.key(t.params) for t in finished + pending}
    for n in plan.create:
        assert sampler_space.contains(n.params), n.params
    assert plan.outcome is None


def test_waiting_goes_on_while_a_warm_start_source_is_missing_and_stops_for_an_invalid_spec() -> None:
    import kubetune.client as kc

    def stalled(reason: str) -> dict[str, Any]:
        return {"metadata": {"name": "exp", "generation": 1}, "status": {"conditions": [
            {"type": "Stalled", "status": "True", "reason": reason, "message": "m", "observedGeneration": 1}]}}

    done = {"metadata": {"name": "exp", "generation": 1}, "status": {"conditions": [
        {"type": "Succeeded", "status": "True", "reason": "MaxTrialsReached", "message": ""}]}}

    class Cluster:
        namespace = "ns"

        def __init__(self, objects: list[dict[str, Any]]) -> None:
            self.objects = objects
            self.reads = 0

        def get_experiment(self, name: str, namespace: str | None = None) -> dict[str, Any]:
            self.reads += 1
            return self.objects.pop(0)

    cluster = Cluster([stalled("WarmStartSourceMissing"), stalled("WarmStartSourceMissing"), done])
    assert kc.Client(cluster=cluster).wait("exp", poll=0.0) is done  # type: ignore[arg-type]
    assert cluster.reads == 3
    with pytest.raises(kc.ExperimentStalled, match="exp is stalled: InvalidSpec: m"):
        kc.Client(cluster=Cluster([stalled("InvalidSpec")])).wait("exp", poll=0.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- conditional spaces

CONDITIONAL = [{"name": "kernel", "type": "categorical", "values": ["rbf", "poly", 3]},
               {"name": "degree", "type": "int", "min": 2, "max": 5, "when": {"parameter": "kernel",
                                                                               "values": ["poly"]}},
               {"name": "coef", "type": "float", "min": 0.0, "max": 1.0, "when": {"parameter": "kernel",
                                                                                  "values": [3]}},
               {"name": "C", "type": "float", "min": 0.1, "max": 10.0}]


@pytest.mark.parametrize(("entry", "expected"), [
    ({"kernel": "rbf", "C": 1.0}, []),
    ({"kernel": "poly", "degree": 3, "C": 1.0}, []),
    ({"kernel": "poly", "C": 1.0}, ['spec.initialTrials[0].degree: Required value: active here (kernel in ["poly"])']),
    ({"kernel": "rbf", "degree": 3, "C": 1.0},
     ['spec.initialTrials[0].degree: inactive here (it is active when kernel in ["poly"]): leave it out']),
    ({"kernel": 3, "coef": 2.0, "C": 1.0}, ["spec.initialTrials[0].coef: 2.0 is above max 1"]),
    ({"kernel": "rbf"}, ["spec.initialTrials[0].C: Required value"]),
    ({"kernel": "rbf", "C": 1.0, "gamma": 0.1}, ["spec.initialTrials[0].gamma: not a parameter of this experiment"]),
])
def test_initial_trials_in_a_conditional_space_give_exactly_the_active_parameters(entry: dict[str, Any],
                                                                                 expected: list[str]) -> None:
    assert problems(parameters=CONDITIONAL, initialTrials=[entry]) == expected


@pytest.mark.parametrize("algorithm", ["tpe", "bayesian", "random"])
def test_conditional_initial_trials_are_the_first_trials_as_given(algorithm: str) -> None:
    given = [{"kernel": "poly", "degree": 4, "C": 2.0}, {"kernel": 3, "coef": 0.5, "C": 0.5}, {"kernel": "rbf", "C": 1}]
    spec = make_spec(parameters=CONDITIONAL, algorithm={"name": algorithm, "seed": 2}, initialTrials=given,
                     maxTrials=6, parallelTrials=2)
    trials = run_plans(spec, value=lambda p: float(p["C"]))
    assert [t.params for t in trials[:3]] == [given[0], given[1], {"kernel": "rbf", "C": 1.0}]
    assert len(trials) == 6


@pytest.mark.parametrize(("params", "outcome"), [
    ({"kernel": "rbf", "degree": 4, "coef": 0.3, "C": 1.0}, {"kernel": "rbf", "C": 1.0}),  # inactive ones dropped
    ({"kernel": "poly", "degree": 4, "C": 1.0}, {"kernel": "poly", "degree": 4, "C": 1.0}),
    ({"kernel": "poly", "C": 1.0}, "without degree"),  # active, no value, no default
    ({"kernel": "poly", "degree": 9, "C": 1.0}, "degree above max"),
    ({"kernel": "rbf", "degree": 9, "C": 1.0}, {"kernel": "rbf", "C": 1.0}),  # out of range but inactive: dropped
])
def test_out_of_space_rules_in_a_conditional_space(params: dict[str, Any], outcome: Any) -> None:
    spec = make_spec(parameters=CONDITIONAL, warmStart={"experiments": ["old"]})
    assert project(spec, params) == outcome
    with_default = make_spec(parameters=CONDITIONAL, warmStart={"experiments": ["old"], "defaults": {"degree": 3}})
    assert project(with_default, {"kernel": "poly", "C": 1.0}) == {"kernel": "poly", "degree": 3, "C": 1.0}
