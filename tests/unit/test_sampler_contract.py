"""The contract every registered algorithm must pass."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kubetune.engine import (
    SAMPLERS,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    Observation,
    ObservationState,
    SearchSpace,
)
from kubetune.engine import make_sampler as _make_sampler
from kubetune.engine.space import Condition

ALL = sorted(SAMPLERS)

# Hyperband sets an int *resource* parameter (epochs) instead of searching it and re-runs a configuration with a
# larger resource when promoting it, so it needs a setting naming that parameter, and a space with another
# parameter to search. The contract runs it with the space's first int parameter as the resource; the two tests
# whose premise does not hold for it (a space without int parameters, a one-parameter space) are covered by
# tests/unit/test_hyperband.py instead.
NEEDS_RESOURCE = {"hyperband"}

# CMA-ES searches float and int parameters only and rejects a space with a categorical parameter (so does the
# spec, at admission). The contract runs it on the spaces without their categorical parameters, and checks the
# rejection where the contract's premise is a categorical space.
NUMERIC_ONLY = {"cmaes"}

# PBT's segments repeat configurations by design: it never exhausts a space (see the exhaustion test below).
REPEATS = {"pbt"}


def make_sampler(name: str, space: SearchSpace, *, seed: int | None = None, settings: dict | None = None):
    if settings is None and name in NEEDS_RESOURCE:
        settings = {"resourceParameter": next(n for n, d in space.dims if isinstance(d, IntDistribution))}
    return _make_sampler(name, space, seed=seed, settings=settings)


MIXED = SearchSpace.of(
    {
        "lr": FloatDistribution(1e-5, 1.0, log=True),
        "dropout": FloatDistribution(0.0, 0.5, step=0.05),
        "layers": IntDistribution(1, 8),
        "units": IntDistribution(16, 1024, log=True),
        "opt": CategoricalDistribution(("adam", "sgd", "rmsprop")),
        "bn": CategoricalDistribution((True, False)),
    }
)
# A finite version for the grid algorithm.
MIXED_FINITE = SearchSpace.of(
    {
        "lr": FloatDistribution(0.001, 0.1, step=0.001),
        "dropout": FloatDistribution(0.0, 0.5, step=0.05),
        "layers": IntDistribution(1, 8),
        "units": IntDistribution(16, 1024, log=True),
        "opt": CategoricalDistribution(("adam", "sgd", "rmsprop")),
        "bn": CategoricalDistribution((True, False)),
    }
)


def space_for(name: str, space: SearchSpace = MIXED) -> SearchSpace:
    if name == "grid" and space.grid_size() is None:
        return MIXED_FINITE
    if name in NUMERIC_ONLY:
        return SearchSpace(tuple((n, d) for n, d in space.dims if not isinstance(d, CategoricalDistribution)))
    return space


def loss_of(params: dict) -> float:
    """A smooth-ish synthetic objective over MIXED (lower is better)."""
    lr = float(params["lr"])
    return (
        (math.log10(lr) + 2.5) ** 2
        + (float(params["dropout"]) - 0.2) ** 2
        + 0.1 * abs(int(params["layers"]) - 3)
        + 0.2 * (params.get("opt", "adam") != "adam")
        + 0.05 * abs(math.log2(int(params["units"])) - 7)
    )


def run_loop(name: str, space: SearchSpace, n_trials: int, batch: int = 1, seed: int = 3) -> list[Observation]:
    sampler = make_sampler(name, space, seed=seed)
    history: list[Observation] = []
    while len(history) < n_trials:
        suggestions = sampler.suggest(history, [], n=min(batch, n_trials - len(history)))
        if not suggestions:
            break
        for p in suggestions:
            history.append(Observation(params=p, state=ObservationState.COMPLETE, loss=loss_of(p)))
    return history


@pytest.mark.parametrize("name", ALL)
def test_values_within_bounds_types_and_json(name: str) -> None:
    space = space_for(name)
    history = run_loop(name, space, 30, batch=3)
    assert len(history) == 30
    for obs in history:
        p = dict(obs.params)
        assert space.contains(p), p
        assert isinstance(p["layers"], int) and not isinstance(p["layers"], bool)
        assert isinstance(p["units"], int)
        assert isinstance(p["lr"], float)
        assert isinstance(p["dropout"], float)
        if name not in NUMERIC_ONLY:
            assert p["opt"] in ("adam", "sgd", "rmsprop") and type(p["opt"]) is str
            assert type(p["bn"]) is bool
        json.dumps(p)  # no numpy scalars
        assert round(p["dropout"] / 0.05, 6) == round(p["dropout"] / 0.05)


@pytest.mark.parametrize("name", [n for n in ALL if n != "grid"])
def test_log_scale_is_honoured(name: str) -> None:
    """With a log scale over 6 decades, draws spread across decades instead of piling into the top one."""
    space = SearchSpace.of({"x": FloatDistribution(1e-6, 1.0, log=True), "y": IntDistribution(1, 100000, log=True)})
    sampler = make_sampler(name, space, seed=1)
    # No informative history: a flat objective, so the algorithm's prior (initial design) shows.
    history: list[Observation] = []
    for _ in range(12):
        for p in sampler.suggest(history, [], n=4):
            history.append(Observation(params=p, state=ObservationState.COMPLETE, loss=1.0))
    xs = np.array([o.params["x"] for o in history])
    ys = np.array([o.params["y"] for o in history])
    # Under a linear scale, ~90% of draws would exceed 0.1; under a log scale only ~1/6 do.
    assert np.mean(xs > 0.1) < 0.5
    assert np.mean(ys > 10000) < 0.5
    assert xs.min() < 1e-3 and ys.min() < 100


@pytest.mark.parametrize("name", ALL)
def test_deterministic_under_seed(name: str) -> None:
    space = space_for(name)
    a = run_loop(name, space, 20, batch=2, seed=11)
    b = run_loop(name, space, 20, batch=2, seed=11)
    assert [dict(o.params) for o in a] == [dict(o.params) for o in b]


@pytest.mark.parametrize("name", ALL)
def test_replay_gives_same_next_suggestion(name: str) -> None:
    """A fresh sampler (e.g. after an operator restart) given the same history suggests the same thing."""
    space = space_for(name)
    history = run_loop(name, space, 12, seed=5)
    first = make_sampler(name, space, seed=5).suggest(history, [], n=3)
    again = make_sampler(name, space, seed=5).suggest(history, [], n=3)
    assert first == again


@pytest.mark.parametrize("name", ALL)
def test_no_duplicates_with_pending_and_in_batch(name: str) -> None:
    space = space_for(name)
    history = run_loop(name, space, 15, seed=2)
    sampler = make_sampler(name, space, seed=2)
    pending = sampler.suggest(history, [], n=4)
    batch = sampler.suggest(history, pending, n=8)
    keys = [space.key(p) for p in batch]
    assert len(batch) == 8
    assert len(set(keys)) == len(keys)
    taken = {space.key(o.params) for o in history} | {space.key(p) for p in pending}
    assert not (set(keys) & taken)


# Hyperband needs an int resource parameter: its exhaustion is tested in test_hyperband.py. PBT repeats
# configurations by design (a member's segments keep or perturb its hyperparameters), so no space is ever used up
# for it (remaining() is None; test_pbt.py::test_pbt_ends_with_max_trials_not_with_an_exhausted_space).
@pytest.mark.parametrize("name", [n for n in ALL if n not in NEEDS_RESOURCE | NUMERIC_ONLY | REPEATS])
def test_categorical_only_space_is_exhausted_exactly(name: str) -> None:
    space = SearchSpace.of(
        {"a": CategoricalDistribution(("x", "y", "z")), "b": CategoricalDistribution((1, 2.5, True))}
    )
    sampler = make_sampler(name, space, seed=0)
    history: list[Observation] = []
    for _ in range(20):
        batch = sampler.suggest(history, [], n=2)
        if not batch:
            break
        for p in batch:
            history.append(Observation(params=p, state=ObservationState.COMPLETE, loss=float(len(history))))
    keys = [space.key(o.params) for o in history]
    assert len(keys) == 9 and len(set(keys)) == 9
    assert sampler.remaining(history, []) == 0
    assert sampler.suggest(history, [], n=1) == []


@pytest.mark.parametrize("name", sorted(NUMERIC_ONLY))
def test_numeric_only_algorithms_refuse_categorical_parameters(name: str) -> None:
    for space in (MIXED, SearchSpace.of({"a": CategoricalDistribution(("x", "y", "z"))})):
        with pytest.raises(ValueError, match="categorical"):
            make_sampler(name, space, seed=0)


# Hyperband does not search its resource parameter, so a one-parameter space has nothing to search.
@pytest.mark.parametrize("name", [n for n in ALL if n not in NEEDS_RESOURCE])
def test_one_parameter_space(name: str) -> None:
    space = SearchSpace.of({"x": IntDistribution(0, 50)})
    history = []
    sampler = make_sampler(name, space, seed=4)
    for _ in range(10):
        for p in sampler.suggest(history, [], n=2):
            history.append(Observation(params=p, state=ObservationState.COMPLETE, loss=float((p["x"] - 17) ** 2)))
    xs = [o.params["x"] for o in history]
    assert len(xs) == 20 and len(set(xs)) == 20
    assert all(0 <= x <= 50 for x in xs)


@pytest.mark.parametrize("name", ALL)
def test_failed_and_pruned_trials_are_accepted_and_not_repeated(name: str) -> None:
    space = space_for(name)
    history = run_loop(name, space, 8, seed=9)
    sampler = make_sampler(name, space, seed=9)
    failed = sampler.suggest(history, [], n=2)
    history = history + [
        Observation(params=failed[0], state=ObservationState.FAILED, loss=None),
        Observation(params=failed[1], state=ObservationState.PRUNED, loss=5.0, intermediate=((1, 5.0),)),
    ]
    nxt = sampler.suggest(history, [], n=5)
    assert len(nxt) == 5
    keys = {space.key(p) for p in nxt}
    assert space.key(failed[0]) not in keys and space.key(failed[1]) not in keys


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("grid",)])
def test_beats_nothing_is_not_required_but_finds_reasonable_region(name: str) -> None:
    """Every non-grid algorithm finds a configuration better than the median random configuration."""
    space = space_for(name, MIXED)
    history = run_loop(name, space, 40, batch=4, seed=21)
    rng = np.random.default_rng(0)
    random_losses = [loss_of(space.from_unit(u)) for u in rng.random((500, len(space)))]
    best = min(o.loss for o in history if o.loss is not None)
    assert best < float(np.percentile(random_losses, 10))


@pytest.mark.parametrize("name", ALL)
def test_unknown_setting_is_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        make_sampler(name, space_for(name), settings={"noSuchSetting": 1})


# -- conditional spaces --------------------------------------------------------------------------------------------
# A sampler declares whether it handles conditional parameters (``supports_conditions``); those that do must suggest
# exactly the active parameters of each configuration, every one in bounds, and never a configuration that differs
# from a tried one only in inactive parameters; the others must refuse a conditional space when constructed.

CONDITIONAL = [n for n in ALL if SAMPLERS[n].supports_conditions]
UNCONDITIONAL = [n for n in ALL if not SAMPLERS[n].supports_conditions]

COND = SearchSpace.of(
    {
        "layers": IntDistribution(1, 8),
        "opt": CategoricalDistribution(("adam", "sgd", "rmsprop")),
        "lr": FloatDistribution(1e-5, 1.0, log=True),
        "momentum": FloatDistribution(0.0, 0.99),
        "nesterov": CategoricalDistribution((True, False)),
        "dampening": FloatDistribution(0.0, 0.5, step=0.05),
        "rho": FloatDistribution(0.5, 0.99),
        "units": IntDistribution(16, 1024, log=True),
    },
    {
        "momentum": Condition("opt", ("sgd", "rmsprop")),
        "nesterov": Condition("opt", ("sgd",)),
        "dampening": Condition("nesterov", (False,)),
        "rho": Condition("opt", ("rmsprop",)),
    },
)
COND_FINITE = SearchSpace.of(
    {
        "layers": IntDistribution(1, 4),
        "opt": CategoricalDistribution(("adam", "sgd", "rmsprop")),
        "lr": FloatDistribution(0.001, 0.1, step=0.001),
        "momentum": FloatDistribution(0.0, 0.9, step=0.1),
        "nesterov": CategoricalDistribution((True, False)),
        "dampening": FloatDistribution(0.0, 0.5, step=0.05),
        "rho": FloatDistribution(0.5, 0.9, step=0.1),
        "units": IntDistribution(16, 1024, log=True),
    },
    dict(COND.conditions),
)


def cond_space_for(name: str) -> SearchSpace:
    return COND_FINITE if name == "grid" else COND


def cond_loss(p: dict) -> float:
    loss = (math.log10(float(p["lr"])) + 2.5) ** 2 + 0.1 * abs(int(p["layers"]) - 3)
    if p["opt"] == "sgd":
        loss += 0.3 * abs(float(p["momentum"]) - 0.9) + (0.0 if p["nesterov"] else 0.2 * float(p["dampening"]))
    elif p["opt"] == "rmsprop":
        loss += 0.1 + abs(float(p["rho"]) - 0.9) + 0.1 * float(p["momentum"])
    return loss


def cond_loop(name: str, n_trials: int, batch: int = 3, seed: int = 3) -> list[Observation]:
    space = cond_space_for(name)
    sampler = make_sampler(name, space, seed=seed)
    history: list[Observation] = []
    while len(history) < n_trials:
        pending = sampler.suggest(history, [], n=1)
        suggestions = pending + sampler.suggest(history, pending, n=min(batch, n_trials - len(history)) - 1)
        if not suggestions:
            break
        for p in suggestions:
            # some failed and pruned trials too: the models rank them with NaN coordinates where inactive
            if len(history) % 9 == 4:
                history.append(Observation(params=p, state=ObservationState.FAILED))
            elif len(history) % 9 == 7:
                history.append(Observation(params=p, state=ObservationState.PRUNED, loss=cond_loss(p) + 1,
                                           intermediate=((1, cond_loss(p) + 1),)))
            else:
                history.append(Observation(params=p, state=ObservationState.COMPLETE, loss=cond_loss(p)))
    return history


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_suggestions_hold_exactly_the_active_parameters(name: str) -> None:
    space = cond_space_for(name)
    history = cond_loop(name, 36)
    assert len(history) == 36
    seen_inactive = set()
    for obs in history:
        p = dict(obs.params)
        active = space.active_names(p)
        assert list(p) == active, p  # no inactive parameter, every active one, in declaration order
        assert space.contains(p), p  # each value in bounds, on its step, of its type
        json.dumps(p)
        seen_inactive |= set(space.names) - set(active)
        for n in ("momentum", "dampening", "rho"):
            if n in p:
                assert isinstance(p[n], float)
    assert {"momentum", "nesterov", "rho"} <= seen_inactive  # the conditions did switch parameters off
    keys = [space.key(o.params) for o in history]
    assert len(set(keys)) == len(keys)  # distinct configurations: inactive parameters do not make a new one


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_deterministic_and_replayable(name: str) -> None:
    a = cond_loop(name, 15, seed=11)
    b = cond_loop(name, 15, seed=11)
    assert [dict(o.params) for o in a] == [dict(o.params) for o in b]
    space = cond_space_for(name)
    first = make_sampler(name, space, seed=5).suggest(a, [], n=3)
    again = make_sampler(name, space, seed=5).suggest(a, [], n=3)
    assert first == again and all(space.contains(p) for p in first)


@pytest.mark.parametrize("name", [n for n in CONDITIONAL if n not in NEEDS_RESOURCE])
def test_conditional_categorical_space_is_exhausted_exactly(name: str) -> None:
    """x alone, or y or z each with b=u (2 values of c) or b=v (3 of d): 1 + 2 * (2 + 3) = 11 configurations, not
    the 3 * 2 * 2 * 3 = 36 of the flat product."""
    space = SearchSpace.of(
        {
            "a": CategoricalDistribution(("x", "y", "z")),
            "b": CategoricalDistribution(("u", "v")),
            "c": CategoricalDistribution((1, 2)),
            "d": CategoricalDistribution(("p", "q", "r")),
        },
        {"b": Condition("a", ("y", "z")), "c": Condition("b", ("u",)), "d": Condition("b", ("v",))},
    )
    assert space.grid_size() == 11
    sampler = make_sampler(name, space, seed=0)
    history: list[Observation] = []
    for _ in range(20):
        batch = sampler.suggest(history, [], n=2)
        if not batch:
            break
        for p in batch:
            assert space.contains(p), p
            history.append(Observation(params=p, state=ObservationState.COMPLETE, loss=float(len(history))))
    keys = [space.key(o.params) for o in history]
    assert len(keys) == 11 and len(set(keys)) == 11
    assert sampler.remaining(history, []) == 0
    assert sampler.suggest(history, [], n=1) == []


def test_samplers_without_conditions_refuse_a_conditional_space() -> None:
    class Plain(SAMPLERS["random"]):  # type: ignore[misc,valid-type]
        name = "plain"
        supports_conditions = False

    for cls in [Plain, *(SAMPLERS[n] for n in UNCONDITIONAL)]:
        with pytest.raises(ValueError, match=f"the {cls.name} algorithm does not support conditional parameters"):
            cls(COND, seed=0)
        cls(space_for(cls.name), seed=0)  # while a space without conditions is fine
