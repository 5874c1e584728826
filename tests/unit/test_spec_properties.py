"""Property tests: every spec the schema admits is safe to plan and suggest for.

Hypothesis generates experiments over everything the CRD admits for parameters (any finite min/max, whole or not,
tiny and huge steps, log scales over hundreds of decades, up to 64 parameters, categoricals with up to 64 values),
every registered algorithm with its settings, and early stopping. Each one goes through ``kubetune.validation``,
then :func:`kubetune.plan.make_plan` for several rounds with a growing history of finished trials (succeeded,
failed, pruned with learning curves), under a memory bound (tracemalloc peak) and a generous time bound that only
guards against hangs. Properties:

* validation either admits the spec or returns clean problems, never raises; whether a float parameter is admitted
  is predicted here with exact rational arithmetic (:class:`fractions.Fraction`), not with the engine's formulas;
* every suggestion is inside the search space, has no NaN, and differs from every finished and pending trial;
* a batch is full whenever the space has room for it, where room is counted here by exact arithmetic over the
  parameters (not by the sampler's ``remaining``).

The profile is fixed (``derandomize=True``) so CI runs the same examples every time; the number of examples that
ran is printed by ``test_zz_report`` (run with ``-s`` to see it) and checked against a floor.
"""

from __future__ import annotations

import contextlib
import csv
import math
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
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
from kubetune.pausing import pauses, settle
from kubetune.plan import make_plan
from kubetune.spec import ExperimentSpec
from kubetune.trials import Reason, Trial, TrialState
from kubetune.validation import validate_document

FLOAT_MAX = 1.7976931348623157e308
MEMORY_BOUND = 50 * 2**20  # bytes: tracemalloc peak while planning one example
TIME_BOUND = 60.0  # CPU seconds for one example: only a guard against hangs and blow-ups (CPU, not wall:
# the machine may be busy)
ROUNDS = 4
STATS: Counter[str] = Counter()
TRIALS: list[Trial] = []
"""The trials of the last planned example (for the tests that inspect them)."""
ELAPSED = [0.0]

CI = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# ----------------------------------------------------------------------------------------------- strategies

EXTREMES = [0.0, 1.0, -1.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-300, -1e-300, 1e300, -1e300, 1e308,
            -1e308, FLOAT_MAX, -FLOAT_MAX, 2.0**53, -(2.0**53), 1e9, 1e15, 1e15 + 4]
finite = st.one_of(
    st.sampled_from(EXTREMES),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.floats(allow_nan=False, allow_infinity=False),
)
whole = st.one_of(
    st.integers(-20, 20),
    st.integers(-(10**12), 10**12),
    st.integers(-(2**80), 2**80),
    st.sampled_from([0, 1, 10**9, 2**63, -(2**63), int(1e300), int(FLOAT_MAX), -int(FLOAT_MAX)]),
    st.floats(-FLOAT_MAX, FLOAT_MAX, allow_nan=False).map(math.trunc),
).map(float)


@st.composite
def float_param(draw: st.DrawFn, name: str) -> dict[str, Any]:
    a = draw(finite)
    anything = draw(st.integers(0, 9)) == 0  # any numbers: finds the ranges and steps the engine must refuse
    if anything:
        b = draw(finite)
    else:  # a width relative to the magnitude that the engine resolves
        ratio = draw(st.one_of(st.sampled_from([2e-6, 1e-3, 1.0, 2.0]), st.floats(2e-6, 4.0)))
        width = max(abs(a), draw(st.sampled_from([1e-300, 1e-9, 1.0]))) * ratio
        b = a + width if math.isfinite(a + width) else a - width
    if a == b or not (math.isfinite(a) and math.isfinite(b)):
        a, b = 0.0, 1.0
    lo, hi = min(a, b), max(a, b)
    p: dict[str, Any] = {"name": name, "type": "float", "min": lo, "max": hi}
    kind = draw(st.sampled_from(["plain", "log", "step"]))
    if kind == "log" and lo > 0:
        p["scale"] = "log"
    elif kind == "step":
        span = Fraction(hi) - Fraction(lo)
        if anything:
            frac = Fraction(draw(st.one_of(st.sampled_from([1.0, 0.5, 1e-6, 1e-9, 1e-12, 1e-300]),
                                           st.floats(1e-15, 1.0))))
        else:  # between 2e-9 * max(1, |min|, |max|) and the whole range, log-uniformly
            finest = Fraction(2e-9) * max(Fraction(1), abs(Fraction(lo)), abs(Fraction(hi))) / span
            if finest >= 1:
                return p
            frac = Fraction(math.exp(math.log(finest) * draw(st.floats(0.0, 1.0))))
            frac = min(max(frac, finest), Fraction(1))
        step = float(span * frac)
        if step > 0 and math.isfinite(step):
            p["step"] = step
    return p


@st.composite
def int_param(draw: st.DrawFn, name: str, resource: bool = False) -> dict[str, Any]:
    a, b = draw(whole), draw(whole)
    if resource:
        a, b = abs(a) + 1.0, abs(b) + 1.0
    if a == b:
        b = a + 1.0 if abs(a) < 2**52 else (float(int(a) // 2) if a > 1 else 7.0)  # whole, as an int needs
    lo, hi = min(a, b), max(a, b)
    p: dict[str, Any] = {"name": name, "type": "int", "min": lo, "max": hi}
    span = int(hi) - int(lo)
    if not resource and draw(st.booleans()) and lo > 0:
        p["scale"] = "log"
    elif draw(st.booleans()):
        step = draw(st.one_of(st.integers(1, 3), st.integers(1, max(span, 1))))
        p["step"] = float(min(step, span, int(FLOAT_MAX)))
        if float(p["step"]) > hi - lo or int(p["step"]) != p["step"]:
            del p["step"]
    return p


@st.composite
def categorical_param(draw: st.DrawFn, name: str) -> dict[str, Any]:
    values = draw(st.lists(st.one_of(st.integers(-(2**40), 2**40), st.text("abcxyz01._-", min_size=1, max_size=8)),
                           min_size=1, max_size=64, unique_by=lambda v: (type(v), v)))
    return {"name": name, "type": "categorical", "values": values}


ALGORITHMS = sorted(SAMPLERS)
NUMERIC_ONLY = {"cmaes"}
"""Algorithms that refuse categorical parameters (a CEL rule): they get int parameters of as many values instead."""


def numeric_only(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``params`` with each categorical parameter replaced by an int parameter of as many values."""
    return [{"name": p["name"], "type": "int", "min": 0, "max": max(len(p["values"]) - 1, 1)}
            if p["type"] == "categorical" else p for p in params]


@st.composite
def experiment(draw: st.DrawFn) -> dict[str, Any]:
    algo = draw(st.sampled_from(ALGORITHMS))
    n_params = draw(st.one_of(st.integers(1, 4), st.integers(1, 64)))
    params: list[dict[str, Any]] = []
    settings_: dict[str, Any] = {}
    if algo == "hyperband":
        params.append(draw(int_param("epochs", resource=True)))
        settings_["resourceParameter"] = "epochs"
        lo, hi = int(params[0]["min"]), int(params[0]["max"])
        if draw(st.booleans()) and lo <= 1_000_000:
            settings_["minResource"] = draw(st.integers(max(lo, 1), min(hi, 1_000_000)))
        if draw(st.booleans()) and lo + 1 <= 1_000_000:
            low_max = max(settings_.get("minResource", lo) + 1, lo)
            if low_max <= min(hi, 1_000_000):
                settings_["maxResource"] = draw(st.integers(low_max, min(hi, 1_000_000)))
        settings_["reductionFactor"] = draw(st.integers(2, 10))
        n_params = max(n_params, 2)
    while len(params) < n_params:
        name = f"p{len(params)}"
        kind = draw(st.sampled_from(["float", "int"] if algo in NUMERIC_ONLY else ["float", "int", "categorical"]))
        if kind == "float":
            params.append(draw(float_param(name)))
        elif kind == "int":
            params.append(draw(int_param(name)))
        else:
            params.append(draw(categorical_param(name)))
    if algo == "grid":
        for p in params:  # the grid needs a step on every float (a CEL rule); keep the range, add one
            if p["type"] == "float" and "step" not in p:
                p.pop("scale", None)
                p["step"] = float((Fraction(p["max"]) - Fraction(p["min"])) / draw(st.sampled_from([1, 3, 1000])))
        settings_["order"] = draw(st.sampled_from(["lexicographic", "shuffled"]))
    if algo in ("tpe", "bayesian"):
        settings_["nStartupTrials"] = draw(st.integers(1, 6))
    if algo == "tpe":
        settings_["nEiCandidates"] = draw(st.sampled_from([1, 24, 200]))
        settings_["multivariate"] = draw(st.booleans())
        settings_["constantLiar"] = draw(st.booleans())
    if algo == "bayesian":
        settings_["nCandidates"] = draw(st.sampled_from([16, 512]))
    if algo == "pbt":
        settings_["populationSize"] = draw(st.integers(4, 8))
        settings_["perturbationInterval"] = draw(st.integers(1, 3))
    max_trials = draw(st.integers(settings_.get("populationSize", 1) if algo == "pbt" else 1, 40))
    spec: dict[str, Any] = {
        "objective": {"metric": "loss", "goal": draw(st.sampled_from(["minimize", "maximize"]))},
        "parameters": params,
        "algorithm": {"name": algo, "seed": draw(st.integers(0, 2**32 - 1)), "settings": settings_},
        "maxTrials": max_trials,
        "parallelTrials": draw(st.integers(1, min(max_trials, 6))),
        "maxFailedTrials": 1000,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    }
    if algo == "pbt":  # pbt needs checkpoints and takes no early stopping (CEL rules)
        spec["checkpoints"] = {"persistentVolumeClaim": "ck"}
    rule = draw(st.sampled_from([None] if algo == "pbt" else [None, "median", "asha"]))
    if rule == "median":
        spec["earlyStopping"] = {"rule": "median", "minTrials": draw(st.integers(1, 3)),
                                 "startStep": draw(st.integers(0, 3))}
    elif rule == "asha":
        spec["earlyStopping"] = {"rule": "asha", "minTrials": draw(st.integers(1, 3)),
                                 "minResource": 1, "reductionFactor": draw(st.integers(2, 4))}
        if algo != "hyperband" and draw(st.booleans()):  # trials pause at the rungs (kubetune/pausing.py)
            spec["checkpoints"] = {"persistentVolumeClaim": "ck"}
            spec["earlyStopping"]["maxResource"] = draw(st.integers(2, 20))
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "prop"},
            "spec": spec}


# ------------------------------------------------------------------------------- independent arithmetic


def admitted_float(p: dict[str, Any]) -> bool | None:
    """Whether a float parameter is resolvable at its magnitude, in exact rationals (the documented rule);
    ``None`` right at a threshold, where rounding may go either way."""
    if "step" in p and not p["step"] <= p["max"] - p["min"]:  # a CEL rule, evaluated in doubles
        return None
    lo, hi = Fraction(p["min"]), Fraction(p["max"])
    magnitude = max(abs(lo), abs(hi))
    if "step" in p:
        have, need = Fraction(p["step"]), Fraction(1e-9) * max(Fraction(1), magnitude)
    else:
        have, need = hi - lo, Fraction(1e-6) * max(magnitude, Fraction(1e-300))
    if abs(have - need) <= need * Fraction(1, 10**9):
        return None
    return have > need


def axis_size(p: dict[str, Any]) -> int | None:
    """Number of values of one parameter, exactly; ``None`` when continuous."""
    if p["type"] == "categorical":
        return len(p["values"])
    if p["type"] == "int":
        return (int(p["max"]) - int(p["min"])) // int(p.get("step", 1)) + 1
    if "step" not in p:
        return None
    return math.floor((Fraction(p["max"]) - Fraction(p["min"])) / Fraction(p["step"])) + 1


def space_size(params: list[dict[str, Any]]) -> int | None:
    size = 1
    for p in params:
        n = axis_size(p)
        if n is None:
            return None
        size *= n
    return size


# ----------------------------------------------------------------------------------------- simulation


def fake_loss(params: dict[str, Any], number: int) -> float:
    h = zlib.crc32(repr((number, sorted((k, repr(v)) for k, v in params.items()))).encode())
    return (h % 10_007) / 101.0 - 20.0


def finish(trial: Trial, how: int) -> None:
    loss = fake_loss(trial.params, trial.number)
    if how == 0:
        trial.state, trial.metrics = TrialState.SUCCEEDED, {"loss": loss}
        trial.curve = [(s, loss + 1.0 / (s + 1)) for s in range(1, 4)]
    elif how == 1:
        trial.state, trial.reason = TrialState.FAILED, Reason.ERROR
    else:
        trial.state, trial.reason = TrialState.PRUNED, "ASHA"
        trial.curve = [(1, loss + 3.0), (3, loss + 2.0)]


def check_suggestions(spec: ExperimentSpec, raw: dict[str, Any], trials: list[Trial], new: list[dict[str, Any]],
                      asked: int) -> None:
    space = spec.search_space()
    taken = {space.key(t.params) for t in trials}
    keys = []
    for p in new:
        assert space.contains(p), p
        for v in p.values():
            assert not (isinstance(v, float) and math.isnan(v)), p
        keys.append(space.key(p))
    if raw["spec"]["algorithm"]["name"] == "pbt":  # segments repeat a member's configuration by design, and a
        # member that finished a generation waits for the others: fewer than asked, but never none while idle
        assert len(new) <= asked and (new or any(t.active for t in trials))
        return
    assert len(set(keys)) == len(keys), "a batch repeats a configuration"
    assert not (set(keys) & taken), "a suggestion repeats a finished or pending trial"
    size = space_size(raw["spec"]["parameters"])
    if raw["spec"]["algorithm"]["name"] != "hyperband" and (size is None or size - len(taken) >= asked):
        assert len(new) == asked, f"asked for {asked}, got {len(new)} with room in the space"


@contextlib.contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Trace allocations; yields a function giving the peak (bytes) above the memory in use on entry. Works when
    another test left tracing on (it is then left on)."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        yield lambda: tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()


def run_example(raw: dict[str, Any], rounds: int = ROUNDS) -> str:
    """Validate and plan ``raw``; returns what happened (``planned: ALGORITHM`` or why it was rejected)."""
    exp, problems = validate_document(raw)
    params = raw["spec"]["parameters"]
    verdicts = {f"spec.parameters[{i}]": admitted_float(p) for i, p in enumerate(params) if p["type"] == "float"}
    unresolvable = {path for path, ok in verdicts.items() if ok is False}
    if problems:
        assert all(isinstance(p.message, str) and p.message for p in problems)
        paths = {p.path for p in problems}
        if all(path.startswith("spec.parameters[") and path.endswith("]") for path in paths):
            # Only whole-parameter problems: exactly the float parameters predicted unresolvable.
            ambiguous = {path for path, ok in verdicts.items() if ok is None}
            assert unresolvable <= paths <= unresolvable | ambiguous, [str(p) for p in problems]
            return "rejected: unresolvable float"
        return "rejected: other rule"
    assert exp is not None and not unresolvable, f"admitted {[params[int(x[16:-1])] for x in unresolvable]}"
    spec = exp.spec
    trials: list[Trial] = []
    TRIALS.clear()
    started = time.process_time()
    with traced() as peak_of:
        for r in range(rounds):
            plan = make_plan(spec, trials, experiment="prop")
            for order in plan.stop:
                t = next(t for t in trials if t.number == order.number)
                t.state, t.reason = order.state, order.reason
            running = sum(1 for t in trials if t.active)
            asked = min(spec.parallel_trials - running, spec.max_trials - len(trials))
            if plan.outcome is None and asked > 0:
                new = plan.create
                if pauses(spec):  # a promotion resumes a paused trial: its configuration, once per paused trial
                    resumed = [n for n in new if n.lineage is not None and n.lineage.parent is not None]
                    paused = {t.number: t for t in trials if t.state is TrialState.PAUSED}
                    assert all(n.lineage.parent in paused and n.params == paused[n.lineage.parent].params
                               for n in resumed)  # type: ignore[union-attr]
                    assert not {n.lineage.parent for n in resumed} & {  # type: ignore[union-attr]
                        t.lineage.parent for t in trials if t.lineage is not None}
                    new, asked = [n for n in new if n not in resumed], asked - len(resumed)
                check_suggestions(spec, raw, trials, [n.params for n in new], asked)
            for n in plan.create:
                trials.append(Trial(n.number, dict(n.params), TrialState.RUNNING,
                                    curve=[(1, fake_loss(n.params, n.number) + 5.0)], lineage=n.lineage))
            for i, t in enumerate(t for t in trials if t.active):
                if (i + r) % 3 != 2:  # most running trials finish each round, some keep running
                    finish(t, (t.number + r) % 3)
                    settle(spec, t)  # Paused at a rung when trials pause (kubetune/pausing.py)
            assert time.process_time() - started < TIME_BOUND
        peak = peak_of()
    assert peak < MEMORY_BOUND, f"peak {peak / 2**20:.1f} MiB"
    TRIALS.extend(trials)
    return f"planned: {spec.algorithm.name}"


@CI
@given(experiment())
def test_every_admitted_spec_plans_and_suggests_safely(raw: dict[str, Any]) -> None:
    started = time.monotonic()
    STATS["examples"] += 1
    STATS[run_example(raw)] += 1
    ELAPSED[0] += time.monotonic() - started


# ------------------------------------------------------------------------------- explicit regressions


def spec_doc(params: list[dict[str, Any]], algo: str, **settings_: Any) -> dict[str, Any]:
    if algo in NUMERIC_ONLY:
        params = numeric_only(params)
    extra = {"checkpoints": {"persistentVolumeClaim": "ck"}} if algo == "pbt" else {}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "reg"},
            "spec": {**extra, "objective": {"metric": "loss", "goal": "minimize"}, "parameters": params,
                     "algorithm": {"name": algo, "seed": 5, "settings": settings_}, "maxTrials": 20,
                     "parallelTrials": 4, "maxFailedTrials": 100,
                     "trialTemplate": {"spec": {"template": {"spec": {"containers": [
                         {"name": "t", "command": ["true"]}]}}}}}}


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_seed_parameter_over_a_billion_values(algo: str) -> None:
    """The original failure: an int ``seed`` in 0..1e9 made every algorithm list a billion integers."""
    params = [{"name": "seed", "type": "int", "min": 0, "max": 1e9},
              {"name": "epochs", "type": "int", "min": 1, "max": 27}]
    settings_ = {"resourceParameter": "epochs"} if algo == "hyperband" else {}
    assert run_example(spec_doc(params, algo, **settings_)) == f"planned: {algo}"


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_bounds_at_the_float_limit(algo: str) -> None:
    params = [{"name": "i", "type": "int", "min": -FLOAT_MAX, "max": FLOAT_MAX},
              {"name": "f", "type": "float", "min": -FLOAT_MAX, "max": FLOAT_MAX, "step": 1e300},
              {"name": "g", "type": "float", "min": 5e-324, "max": FLOAT_MAX, "scale": "log"} if algo != "grid" else
              {"name": "g", "type": "int", "min": 1, "max": FLOAT_MAX, "step": 1e307},
              {"name": "epochs", "type": "int", "min": 1, "max": FLOAT_MAX}]
    settings_ = {"resourceParameter": "epochs", "reductionFactor": 2} if algo == "hyperband" else {}
    assert run_example(spec_doc(params, algo, **settings_)) == f"planned: {algo}"


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_int_step_equal_to_the_range_in_doubles_only(algo: str) -> None:
    """The schema compares step and max - min in doubles: 29672399782116304 <= 2.96724007821163e16 - 1000000001
    holds there although the exact difference is one less. The engine agrees (the parameter has one value)."""
    params = [{"name": "epochs", "type": "int", "min": 1000000001.0, "max": 2.9672400782116304e16,
               "step": 2.9672399782116304e16}, {"name": "p1", "type": "categorical", "values": [0, 1]},
              {"name": "e", "type": "int", "min": 1, "max": 9}]
    settings_ = {"resourceParameter": "e"} if algo == "hyperband" else {}
    assert run_example(spec_doc(params, algo, **settings_)) == f"planned: {algo}"
    assert {t.params["epochs"] for t in TRIALS} == {1000000001}


def test_grid_of_64_parameters_of_a_billion_values_suggests_at_once() -> None:
    params = [{"name": f"p{i}", "type": "int", "min": 0, "max": 1e9} for i in range(64)]
    for order in ("lexicographic", "shuffled"):
        assert run_example(spec_doc(params, "grid", order=order)) == "planned: grid"


@pytest.mark.parametrize("step", [1e-300, 1e-12, 0.1])
def test_steps_finer_than_the_bounds_resolve_are_clean_validation_errors(step: float) -> None:
    raw = spec_doc([{"name": "a", "type": "float", "min": 1e15 if step == 0.1 else 0.0,
                     "max": 1e15 + 4 if step == 0.1 else 1e300, "step": step}], "random")
    exp, problems = validate_document(raw)
    assert [p.path for p in problems] == ["spec.parameters[0]"]
    assert "too fine" in problems[0].message


def test_a_range_narrower_than_its_magnitude_resolves_is_a_clean_validation_error() -> None:
    raw = spec_doc([{"name": "a", "type": "float", "min": 1e15, "max": 1e15 + 4}], "random")
    _, problems = validate_document(raw)
    assert [p.path for p in problems] == ["spec.parameters[0]"] and "too close" in problems[0].message


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_small_finite_space_is_used_up_exactly(algo: str) -> None:
    """Distinctness with no slack: the experiment asks for more trials than the space holds."""
    params = [{"name": "a", "type": "int", "min": 1, "max": 3},
              {"name": "b", "type": "categorical", "values": ["x", "y"]},
              {"name": "c", "type": "float", "min": 0, "max": 1, "step": 0.5}]
    settings_ = {"resourceParameter": "a"} if algo == "hyperband" else {}
    raw = spec_doc(params, algo, **settings_)
    raw["spec"]["maxTrials"] = 40
    assert run_example(raw, rounds=20) == f"planned: {algo}"
    space = ExperimentSpec.model_validate(raw["spec"]).search_space()
    configs = {space.key(t.params) for t in TRIALS}
    if algo == "pbt":  # a member's segments repeat its configuration by design: it runs to maxTrials
        assert len(TRIALS) == 40
        return
    assert len(configs) == len(TRIALS)
    if algo != "hyperband":  # hyperband re-runs configurations on larger resources: its own test file
        assert len(configs) == 3 * 2 * 3  # (b is an int of 2 values for cmaes)


def test_distributions_give_values_by_arithmetic() -> None:
    """``value(k)``/``n_values`` agree with a brute-force listing on small axes, and need none on large ones."""
    for dist in (IntDistribution(-7, 20, step=3), FloatDistribution(0.1, 2.5, step=0.3),
                 CategoricalDistribution(("a", 1, "b"))):
        listed = dist.grid()
        assert listed is not None and dist.n_values == len(listed)
        assert [dist.value(k) for k in range(dist.n_values)] == listed
    big = IntDistribution(-int(FLOAT_MAX), int(FLOAT_MAX))
    assert big.n_values == 2 * int(FLOAT_MAX) + 1
    assert big.value(big.n_values - 1) == int(FLOAT_MAX)
    for u in (0.0, 1e-300, 0.25, 0.5, 1 - 1e-16, 1.0):
        v = big.from_unit(u)
        assert big.contains(v) and 0.0 <= big.to_unit(v) <= 1.0
    with pytest.raises(ValueError, match="too many"):
        IntDistribution(0, 10**9).grid()


def suggest_peak(algo: str, settings_: dict[str, Any], dims: int, finished: int, pending: int) -> tuple[int, float]:
    """Peak traced memory (bytes) and seconds of one suggestion after ``finished`` trials."""
    space = SearchSpace.of({f"p{i}": FloatDistribution(0.0, 1.0) for i in range(dims)})
    rng = np.random.default_rng(0)
    history = [Observation(space.from_unit(rng.random(dims).tolist()), ObservationState.COMPLETE,
                           float(rng.random())) for _ in range(finished)]
    busy = [space.from_unit(rng.random(dims).tolist()) for _ in range(pending)]
    sampler = make_sampler(algo, space, seed=1, settings=settings_)
    started = time.monotonic()
    with traced() as peak_of:
        out = sampler.suggest(history, busy, n=1)
        peak = peak_of()
    assert len(out) == 1 and space.contains(out[0])
    return peak, time.monotonic() - started


def test_largest_model_settings_stay_bounded() -> None:
    """The model-based samplers at the largest settings the schema admits, with long histories: memory stays
    within the operator's request (256 MiB), whatever the history and candidate counts."""
    peak, _ = suggest_peak("tpe", {"nEiCandidates": 10000, "nStartupTrials": 1}, dims=16, finished=1000, pending=50)
    assert peak < 64 * 2**20, f"tpe peak {peak / 2**20:.0f} MiB"
    peak, _ = suggest_peak("bayesian", {"nCandidates": 20000, "nStartupTrials": 1}, dims=4, finished=320, pending=0)
    assert peak < 64 * 2**20, f"bayesian peak {peak / 2**20:.0f} MiB"
    # The largest model: its (trials, trials) matrices are what it costs.
    peak, _ = suggest_peak("bayesian", {"maxModelTrials": 2000, "nStartupTrials": 1}, dims=2, finished=2050, pending=0)
    assert peak < 256 * 2**20, f"bayesian peak {peak / 2**20:.0f} MiB"


HUGE_YAML = """\
apiVersion: kubetune.io/v1alpha1
kind: TuningExperiment
metadata: {name: huge}
spec:
  objective: {metric: loss, goal: minimize}
  parameters:
    - {name: seed, type: int, min: 0, max: 1000000000}
    - {name: x, type: float, min: -1.0e308, max: 1.0e308}
    - {name: k, type: int, min: -1.7976931348623157e308, max: 1.7976931348623157e308, step: 3}
  algorithm: {name: ALGORITHM, seed: 3}
  maxTrials: 2
  trialTemplate:
    spec:
      template:
        spec:
          containers:
            - name: t
              command: [python, -c, "import kubetune_trial as kt, sys; kt.report(loss=int(sys.argv[1]) % 7)",
                        "${params.seed}"]
"""


def test_kubetune_validate_and_run_start_a_huge_range_experiment(tmp_path: Path) -> None:
    """The command line end to end with the default algorithm: ``kubetune validate`` accepts the file and
    ``kubetune run`` runs its trials."""
    (tmp_path / "exp.yaml").write_text(HUGE_YAML.replace("ALGORITHM", "bayesian"))
    cmd = [sys.executable, "-m", "kubetune"]
    r = subprocess.run([*cmd, "validate", "exp.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*cmd, "run", "exp.yaml", "-q", "-o", "out"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(tmp_path / "out" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["state"] for row in rows] == ["Succeeded", "Succeeded"]
    for row in rows:
        assert 0 <= int(row["param_seed"]) <= 10**9
        assert abs(float(row["param_x"])) <= 1e308
        assert abs(int(row["param_k"])) <= int(FLOAT_MAX) and (int(row["param_k"]) + int(FLOAT_MAX)) % 3 == 0


def test_zz_report(capsys: pytest.CaptureFixture[str]) -> None:
    """How many random specs ran (printed with ``-s``); a floor keeps the generator from degenerating."""
    with capsys.disabled():
        print(f"\nspec properties: {dict(sorted(STATS.items()))} in {ELAPSED[0]:.1f} s")
    if STATS["examples"]:  # the property test ran in this session
        planned = sum(n for k, n in STATS.items() if k.startswith("planned"))
        assert planned >= STATS["examples"] // 2
