"""kubetune's TPE rule by rule against Optuna's TPESampler, and how a batch handles pending trials."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from kubetune.engine import (
    CategoricalDistribution,
    FloatDistribution,
    Observation,
    ObservationState,
    SearchSpace,
    make_sampler,
)
from kubetune.engine.tpe import TPESampler, _age_weights, _groups

LINE = SearchSpace.of({"x": FloatDistribution(0.0, 1.0)})


def _quadratic_history(space: SearchSpace, n: int, centre: float = 0.3, seed: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for u in rng.random((n, len(space))):
        p = space.from_unit(u.tolist())
        out.append(Observation(p, ObservationState.COMPLETE, float(sum((float(v) - centre) ** 2 for v in p.values()))))
    return out


# -- known answers: Optuna's Parzen estimator and weights ------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 30])
def test_parzen_density_matches_optuna(n: int) -> None:
    """Same observations, same density: kernels at the trials, the larger-neighbour-gap bandwidth with the magic
    clip, the prior kernel (centre, width of the range, weight 1), truncation to the bounds, the categorical
    smoothing; multivariate (one joint kernel per trial)."""
    pe = importlib.import_module("optuna.samplers._tpe.parzen_estimator")
    from optuna.distributions import CategoricalDistribution as OCat
    from optuna.distributions import FloatDistribution as OFloat
    from optuna.samplers._tpe.sampler import default_weights

    space = SearchSpace.of({"a": FloatDistribution(0.0, 1.0), "b": FloatDistribution(0.0, 1.0),
                            "c": CategoricalDistribution(("p", "q", "r"))})
    rng = np.random.default_rng(n)
    X = rng.random((n, 3))
    X[:, 2] = (rng.integers(0, 3, n) + 0.5) / 3
    sampler = TPESampler(space, seed=0)
    (group,) = _groups(space)
    ours = sampler._estimator(group, X, default_weights(n))  # Optuna weighs by creation order
    theirs = pe._ParzenEstimator(
        {"a": X[:, 0], "b": X[:, 1], "c": np.floor(X[:, 2] * 3)},
        {"a": OFloat(0.0, 1.0), "b": OFloat(0.0, 1.0), "c": OCat(["p", "q", "r"])},
        pe._ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True, consider_endpoints=False,
                                      weights=default_weights, multivariate=True),
    )
    pts = rng.random((200, 2))
    cats = rng.integers(0, 3, 200)
    got = ours.log_pdf(pts, cats[:, None])
    want = theirs.log_pdf({"a": pts[:, 0], "b": pts[:, 1], "c": cats.astype(float)})
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("m", [1, 24, 25, 26, 60])
def test_bad_group_weights_match_optunas_default_weights(m: int) -> None:
    """Older bad trials weigh less as Optuna's ``default_weights`` ramp, by creation order, whatever the loss order."""
    from_optuna = importlib.import_module("optuna.samplers._tpe.sampler").default_weights
    creation = np.random.default_rng(m).permutation(3 * m)[:m]  # history positions, listed in loss order
    got = _age_weights(creation)
    want = from_optuna(m)[np.argsort(np.argsort(creation))]
    np.testing.assert_allclose(got, want)


def test_constant_liar_spreads_a_batch_away_from_pending_trials() -> None:
    """Pending trials at the current best of a 1-D problem: with the constant liar no two suggestions of a batch,
    nor a suggestion and a pending trial, are within 1e-4 of each other, and the batch is on average clearly further
    from the pending points than without the liar (which piles suggestions next to them)."""
    spread = {True: [], False: []}  # type: dict[bool, list[float]]
    for seed in range(12):
        hist = _quadratic_history(LINE, 20, seed=seed)
        x_best = float(min(hist, key=lambda o: float(o.loss or 0.0)).params["x"])
        pending = [{"x": x_best + d} for d in (-0.004, 0.002, 0.006)]
        P = np.array([p["x"] for p in pending])
        for liar in (True, False):
            s = make_sampler("tpe", LINE, seed=seed, settings={"constantLiar": liar})
            b = np.array([p["x"] for p in s.suggest(hist, pending, n=6)])
            to_pending = np.abs(b[:, None] - P[None]).min(axis=1)
            spread[liar].append(float(to_pending.mean()))
            if liar:
                assert np.abs(b[:, None] - b[None])[np.triu_indices(6, 1)].min() > 1e-4, seed
                assert to_pending.min() > 1e-4, seed
    assert np.mean(spread[True]) > 1.4 * np.mean(spread[False])
    assert sum(a > b for a, b in zip(spread[True], spread[False])) >= 8


@pytest.mark.parametrize(("n_bad", "n_liars"), [(3, 2), (20, 8), (40, 8), (80, 0)])
def test_liars_share_the_bad_groups_age_ramp_as_its_newest_members(n_bad: int, n_liars: int) -> None:
    """Optuna's constant liar puts running trials into the "above" group, weighed by one ``default_weights`` ramp in
    trial-number order (running trials are the newest)."""
    from_optuna = importlib.import_module("optuna.samplers._tpe.sampler").default_weights
    from kubetune.engine.tpe import _bad_weights

    n_history = n_bad + 5
    bad_rank = np.random.default_rng(n_bad).permutation(n_history)[:n_bad]
    got = _bad_weights(bad_rank, n_history, n_liars)
    numbers = np.concatenate([bad_rank, n_history + np.arange(n_liars)])
    want = from_optuna(n_bad + n_liars)[np.argsort(np.argsort(numbers))]
    np.testing.assert_allclose(got, want)
    assert np.all(got[n_bad:] == 1.0)
