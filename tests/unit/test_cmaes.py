"""The cmaes algorithm: it behaves like CMA-ES, its replayed state does not depend on how it was reached, and it
keeps to the space it admits.

The shared contract (every algorithm) is in test_sampler_contract.py; this file checks what is particular to
CMA-ES: known properties of the method (convergence on a convex quadratic, restarts growing the population),
replay from the history (a sampler driven call after call, with trials finishing out of order, suggests exactly
what a fresh sampler given the same history suggests), pruned and failed trials, and rejection of categorical
parameters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.optimizers import make_optimizer
from kubetune.engine import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    Observation,
    ObservationState,
    SearchSpace,
    make_sampler,
)
from kubetune.engine.cmaes import _CHECKPOINTS, CmaEsSampler
from kubetune.validation import validate_document

COMPLETE, PRUNED, FAILED = ObservationState.COMPLETE, ObservationState.PRUNED, ObservationState.FAILED

D = 5
BOX = SearchSpace.of({f"x{i}": FloatDistribution(-5.0, 5.0) for i in range(D)})
OPT = np.array([1.3, -2.1, 0.7, 2.9, -0.4])
ROT = np.linalg.qr(np.random.default_rng(7).normal(size=(D, D)))[0]
SCALES = np.array([1.0, 3.0, 10.0, 30.0, 100.0])


def ellipsoid(p: dict) -> float:
    """A rotated ellipsoid (condition number 100) with its minimum 0 at OPT, away from the box's centre."""
    z = ROT @ (np.array([p[f"x{i}"] for i in range(D)]) - OPT)
    return float((SCALES * z**2).sum())


def drive(name: str, space: SearchSpace, loss, n_trials: int, seed: int, batch: int = 1,
          settings: dict | None = None) -> list[Observation]:
    sampler = make_sampler(name, space, seed=seed, settings=settings)
    history: list[Observation] = []
    while len(history) < n_trials:
        batch_ = sampler.suggest(history, [], n=min(batch, n_trials - len(history)))
        if not batch_:  # a finite space used up
            break
        history += [Observation(p, COMPLETE, loss=loss(p)) for p in batch_]
    return history


# -- CMA-ES's known behaviour -------------------------------------------------------------------------------------


def test_far_better_than_random_on_a_convex_quadratic() -> None:
    """CMA-ES converges linearly on a convex quadratic once its covariance is learned; random search does not
    get near the minimum in the same budget."""
    n = 400
    cma = [min(o.loss for o in drive("cmaes", BOX, ellipsoid, n, seed)) for seed in range(3)]
    rnd = [min(o.loss for o in drive("random", BOX, ellipsoid, n, seed)) for seed in range(3)]
    assert max(cma) < float(np.median(rnd)) / 1000, (cma, rnd)


def test_mean_moves_to_the_minimum_and_step_size_shrinks() -> None:
    history = drive("cmaes", BOX, ellipsoid, 600, seed=1)
    state = CmaEsSampler(BOX, seed=1).replay(history)
    mean = np.array([d.from_unit(u) for (_, d), u in zip(BOX.dims, state.cma.mean)])
    assert np.abs(mean - OPT).max() < 0.05, mean
    assert state.cma._sigma < 0.01  # from 1/6 of each range


def test_batches_also_converge() -> None:
    cma = min(o.loss for o in drive("cmaes", BOX, ellipsoid, 400, seed=2, batch=8))
    rnd = min(o.loss for o in drive("random", BOX, ellipsoid, 400, seed=2, batch=8))
    assert cma < rnd / 100, (cma, rnd)


def test_ipop_restarts_grow_the_population_and_none_never_restarts() -> None:
    # A flat objective: CMA-ES's flat-fitness criterion (no change over 10 + ceil(30 d / popsize) generations)
    # stops it after 20 generations of 6 (120 trials), then after 15 of 12 (180 more), ...
    space = SearchSpace.of({"a": FloatDistribution(0.0, 1.0), "b": IntDistribution(0, 9)})
    rng = np.random.default_rng(0)
    history = [Observation(space.from_unit(u), COMPLETE, loss=1.0) for u in rng.random((400, 2)).tolist()]
    ipop = CmaEsSampler(space, seed=0).replay(history)
    none = CmaEsSampler(space, seed=0, settings={"restartStrategy": "none"}).replay(history)
    assert ipop.restarts >= 2
    assert ipop.cma.population_size == min(6 * 2 ** ipop.restarts, 1000)  # 4 + floor(3 ln 2) = 6 at first
    assert none.restarts == 0 and none.cma.population_size == 6
    tripled = CmaEsSampler(space, seed=0, settings={"incPopsize": 3}).replay(history)
    assert tripled.cma.population_size == 6 * 3 ** tripled.restarts


def test_population_size_setting_sets_the_generation() -> None:
    history = drive("cmaes", BOX, ellipsoid, 45, seed=0, settings={"populationSize": 10})
    state = CmaEsSampler(BOX, seed=0, settings={"populationSize": 10}).replay(history)
    assert state.cma.population_size == 10 and state.told == 40 and state.cma.generation == 4


# -- pruned and failed trials -------------------------------------------------------------------------------------


def test_pruned_trials_rank_behind_complete_ones() -> None:
    """One generation: the trials on the left were pruned with tiny intermediate losses, the ones on the right
    completed with large losses. The mean moves right: a pruned trial ranks behind every complete one."""
    space = SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)})
    lam = 4 + math.floor(3 * math.log(2))
    gen = []
    for i in range(lam):
        if i % 2:
            gen.append(Observation({"x": 0.2, "y": 0.1 * i}, PRUNED, loss=None, intermediate=((1, -1e9),)))
        else:
            gen.append(Observation({"x": 0.8, "y": 0.1 * i}, COMPLETE, loss=1e6 + i))
    state = CmaEsSampler(space, seed=0).replay(gen)
    assert state.told == lam and state.cma.mean[0] > 0.5
    # Swapping the roles moves it left: the outcome is the rankings', not the positions'.
    swapped = [Observation(o.params, COMPLETE, loss=1.0 + i) if o.state is PRUNED else
               Observation(o.params, PRUNED, loss=None, intermediate=((1, 0.0),)) for i, o in enumerate(gen)]
    assert CmaEsSampler(space, seed=0).replay(swapped).cma.mean[0] < 0.5


def test_failed_trials_belong_to_no_generation() -> None:
    history = drive("cmaes", BOX, ellipsoid, 40, seed=3)
    with_failures = []
    for i, o in enumerate(history):
        if i % 3 == 0:
            with_failures.append(Observation({k: -v for k, v in o.params.items()}, FAILED, loss=None))
        with_failures.append(o)
    a = CmaEsSampler(BOX, seed=3).replay(history)
    b = CmaEsSampler(BOX, seed=3).replay(with_failures)
    assert a.told == b.told
    np.testing.assert_array_equal(a.cma.mean, b.cma.mean)
    np.testing.assert_array_equal(a.cma._C, b.cma._C)
    nxt = make_sampler("cmaes", BOX, seed=3).suggest(with_failures, [], n=4)
    assert len(nxt) == 4 and not {BOX.key(p) for p in nxt} & {BOX.key(o.params) for o in with_failures}


def test_hostile_losses_stay_finite() -> None:
    space = SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "y": IntDistribution(0, 9)})
    sampler = make_sampler("cmaes", space, seed=0)
    history: list[Observation] = []
    losses = [1.7e308, -1.7e308, 0.0, 5e-324, math.inf, math.nan, 1e300, -1e300]
    for i in range(60):
        for p in sampler.suggest(history, [], n=1):
            state = PRUNED if i % 7 == 3 else COMPLETE
            history.append(Observation(p, state, loss=losses[i % len(losses)],
                                       intermediate=((i, losses[(i + 1) % len(losses)]),)))
    assert len(history) == 60 and all(space.contains(dict(o.params)) for o in history)
    assert np.all(np.isfinite(CmaEsSampler(space, seed=0).replay(history).cma.mean))


# -- replay -------------------------------------------------------------------------------------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    parallel=st.integers(1, 6),
    choices=st.lists(st.tuples(st.integers(0, 5), st.sampled_from([COMPLETE, COMPLETE, COMPLETE, PRUNED, FAILED]),
                               st.integers(1, 3)), min_size=40, max_size=70),
)
def test_a_sampler_driven_call_after_call_suggests_what_a_fresh_one_does(
    seed: int, parallel: int, choices: list[tuple[int, ObservationState, int]]
) -> None:
    """Trials run ``parallel`` at a time and finish in the order drawn (so later trials often finish first and
    earlier ones are inserted into the history behind them, by trial number). After every event, the long-lived
    sampler (which resumes from its kept states) and a fresh one (which replays everything) suggest the same."""
    space = SearchSpace.of({"lr": FloatDistribution(1e-5, 1.0, log=True), "d": FloatDistribution(0.0, 0.5, step=0.05),
                            "layers": IntDistribution(1, 8), "units": IntDistribution(16, 1024, log=True)})
    settings_ = {"populationSize": 4}
    live = make_sampler("cmaes", space, seed=seed, settings=settings_)
    finished: dict[int, Observation] = {}
    running: dict[int, dict] = {}
    number = 0
    for pick, state, n in choices:
        history = [finished[k] for k in sorted(finished)]
        pending = [running[k] for k in sorted(running)]
        want = min(n, parallel - len(running))
        if want > 0:
            got = live.suggest(history, pending, n=want)
            fresh = make_sampler("cmaes", space, seed=seed, settings=settings_).suggest(history, pending, n=want)
            assert got == fresh
            for p in got:
                running[number] = p
                number += 1
        if running:
            k = sorted(running)[pick % len(running)]
            p = running.pop(k)
            loss = math.log10(p["lr"]) ** 2 + p["d"] + 0.1 * p["layers"]
            finished[k] = Observation(p, state, loss=None if state is FAILED else loss,
                                      intermediate=((1, loss),) if state is PRUNED else ())
    history = [finished[k] for k in sorted(finished)]
    assert live.replay(history).told == CmaEsSampler(space, seed=seed, settings=settings_).replay(history).told
    assert len(live._checkpoints) <= _CHECKPOINTS


def test_resuming_gives_the_same_state_as_replaying() -> None:
    history = drive("cmaes", BOX, ellipsoid, 300, seed=4)
    live = CmaEsSampler(BOX, seed=4)
    for k in range(0, 301, 7):
        live.replay(history[:k])
    # A trial inserted early (it finished late) invalidates the kept states after it.
    late = Observation({f"x{i}": 0.0 for i in range(D)}, COMPLETE, loss=ellipsoid({f"x{i}": 0.0 for i in range(D)}))
    for h in (history, history[:150] + [late] + history[150:]):
        a, b = live.replay(h), CmaEsSampler(BOX, seed=4).replay(h)
        assert a.told == b.told and a.restarts == b.restarts
        np.testing.assert_array_equal(a.cma.mean, b.cma.mean)
        np.testing.assert_array_equal(a.cma._C, b.cma._C)
        assert a.cma._sigma == b.cma._sigma


def test_seeds_differ_and_a_seed_repeats() -> None:
    a = drive("cmaes", BOX, ellipsoid, 30, seed=5, batch=3)
    b = drive("cmaes", BOX, ellipsoid, 30, seed=5, batch=3)
    c = drive("cmaes", BOX, ellipsoid, 30, seed=6, batch=3)
    assert [o.params for o in a] == [o.params for o in b]
    assert [o.params for o in a] != [o.params for o in c]


# -- the space ----------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_suggestions_stay_in_any_numeric_space(data: st.DataObject) -> None:
    dims = {}
    for i in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["float", "float-log", "float-step", "int", "int-log", "int-step"]))
        lo = data.draw(st.integers(1, 1000))
        hi = lo + data.draw(st.integers(4, 10**6))
        if kind == "float":
            dims[f"p{i}"] = FloatDistribution(float(-lo), float(hi))
        elif kind == "float-log":
            dims[f"p{i}"] = FloatDistribution(lo * 1e-6, float(hi), log=True)
        elif kind == "float-step":
            dims[f"p{i}"] = FloatDistribution(float(lo), float(hi), step=(hi - lo) / data.draw(st.integers(1, 50)))
        elif kind == "int":
            dims[f"p{i}"] = IntDistribution(-lo, hi)
        elif kind == "int-log":
            dims[f"p{i}"] = IntDistribution(lo, hi, log=True)
        else:
            dims[f"p{i}"] = IntDistribution(lo, hi, step=data.draw(st.integers(1, 4)))
    space = SearchSpace.of(dims)
    target = data.draw(st.lists(st.floats(0, 1), min_size=len(space), max_size=len(space)))

    def loss(p: dict) -> float:
        return float(sum((u - t) ** 2 for u, t in zip(space.to_unit(p), target)))

    history = drive("cmaes", space, loss, 40, seed=data.draw(st.integers(0, 100)), batch=3)
    for o in history:
        assert space.contains(dict(o.params)), o.params
        for name, d in space.dims:
            v = o.params[name]
            assert type(v) is (int if isinstance(d, IntDistribution) else float)
    keys = [space.key(o.params) for o in history]
    assert len(set(keys)) == len(keys) == min(40, space.grid_size() or 40)


def test_a_converged_search_over_few_values_still_suggests_untried_ones() -> None:
    space = SearchSpace.of({"x": IntDistribution(0, 9), "y": IntDistribution(0, 9)})
    history = drive("cmaes", space, lambda p: (p["x"] - 3) ** 2 + (p["y"] - 6) ** 2, 100, seed=0, batch=3)
    assert len({space.key(o.params) for o in history}) == 100
    assert make_sampler("cmaes", space, seed=0).suggest(history, [], n=1) == []


def test_categorical_parameters_are_refused_by_the_sampler_and_the_spec() -> None:
    space = SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "opt": CategoricalDistribution(("adam", "sgd"))})
    with pytest.raises(ValueError, match="'opt' is categorical"):
        make_sampler("cmaes", space)
    doc = {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "c"},
        "spec": {"objective": {"metric": "loss", "goal": "minimize"},
                 "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1},
                                {"name": "opt", "type": "categorical", "values": ["adam", "sgd"]}],
                 "algorithm": {"name": "cmaes"}, "maxTrials": 4,
                 "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t",
                                                                                "command": ["true"]}]}}}}},
    }
    _exp, problems = validate_document(doc)
    assert [(p.path, p.message) for p in problems] == [
        ("spec.algorithm", "the cmaes algorithm searches float and int parameters only: use tpe or bayesian for "
                           "categorical parameters")]
    doc["spec"]["parameters"].pop()
    assert validate_document(doc)[1] == []


def test_benchmark_adapters_run() -> None:
    """The quality benchmark's two CMA-ES entries (ours and Optuna's) drive the same problem."""
    from benchmarks.problems import problem

    prob = problem("branin")
    for name in ("kubetune-cmaes", "optuna-cmaes"):
        opt = make_optimizer(name, prob.space, 0)
        for _ in range(4):
            params = opt.ask(3)
            assert len(params) == 3 and all(prob.space.contains(p) for p in params)
            opt.tell(params, [prob.loss(p) for p in params])


def test_example_runs_with_kubetune_run(tmp_path) -> None:
    """examples/digits-svm-cmaes.yaml as shipped, its budget cut to 8 trials (one generation of 6 and two more)."""
    import csv
    import json
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "digits-svm-cmaes.yaml"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "kubetune", "run", str(example), "--max-trials", "8", "--quiet",
                        "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(row["state"] == "Succeeded" for row in rows), rows
    assert {k for k in rows[0] if k.startswith("param_")} == {"param_C", "param_gamma"}
    for row in rows:
        assert 0.01 <= float(row["param_C"]) <= 1000 and 1e-5 <= float(row["param_gamma"]) <= 10
        assert 0.0 < float(row["accuracy"]) <= 1.0
    assert len({(row["param_C"], row["param_gamma"]) for row in rows}) == 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"]["reason"] == "MaxTrialsReached"
    assert summary["best_trial"]["metrics"]["accuracy"] == pytest.approx(max(float(row["accuracy"]) for row in rows))


def test_largest_settings_stay_within_the_operators_memory() -> None:
    """64 parameters and the largest population the schema admits: a generation's update holds popsize * d^2
    floats a few times over; the peak stays well within the operator's memory request (256 MiB)."""
    import tracemalloc

    dims = 64
    space = SearchSpace.of({f"p{i}": FloatDistribution(0.0, 1.0) for i in range(dims)})
    rng = np.random.default_rng(0)
    history = [Observation(space.from_unit(rng.random(dims).tolist()), COMPLETE, float(rng.random()))
               for _ in range(2050)]
    busy = [space.from_unit(rng.random(dims).tolist()) for _ in range(50)]
    sampler = make_sampler("cmaes", space, seed=1, settings={"populationSize": 1000})
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        out = sampler.suggest(history, busy, n=4)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert len(out) == 4 and all(space.contains(p) for p in out)
    assert sampler.replay(history).told == 2000  # type: ignore[attr-defined]
    assert peak < 160 * 2**20, f"peak {peak / 2**20:.0f} MiB"
