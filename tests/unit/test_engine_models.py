"""The model-based samplers' own pieces: unit-cube history, the GP, log EI, settings, parallel diversity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import check_grad

from kubetune.engine import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    Observation,
    ObservationState,
    SearchSpace,
    make_sampler,
)
from kubetune.engine._gp import GaussianProcess, log_expected_improvement, warp_targets
from kubetune.engine._unit import to_unit_matrix, unit_history
from kubetune.engine.bayesian import BayesianSampler
from kubetune.engine.tpe import TPESampler

SPACE = SearchSpace.of(
    {
        "a": FloatDistribution(1e-6, 1.0, log=True),
        "b": FloatDistribution(-2.0, 3.0, step=0.25),
        "c": IntDistribution(0, 50),
        "d": IntDistribution(3, 1000, log=True),
        "e": IntDistribution(2, 20, step=3),
        "f": CategoricalDistribution(("x", 1, 2.5, True)),
    }
)


def test_vectorised_to_unit_matches_the_distributions() -> None:
    params = [SPACE.from_unit(u) for u in np.random.default_rng(0).random((500, len(SPACE)))]
    assert np.array_equal(to_unit_matrix(SPACE, params), np.array([SPACE.to_unit(p) for p in params]))


def test_pruned_trials_rank_behind_complete_ones_by_progress_then_loss() -> None:
    p = [SPACE.from_unit([i / 10] * len(SPACE)) for i in range(5)]
    hist = [
        Observation(p[0], ObservationState.COMPLETE, 3.0),
        Observation(p[1], ObservationState.PRUNED, 0.1, intermediate=((1, 0.1),)),
        Observation(p[2], ObservationState.FAILED),
        Observation(p[3], ObservationState.PRUNED, 9.0, intermediate=((1, 0.5), (4, 9.0))),
        Observation(p[4], ObservationState.COMPLETE, 1.0),
    ]
    h = unit_history(SPACE, hist)
    assert h.n_complete == 2 and len(h.y) == 4  # the failed trial is left out
    y = dict(zip([tuple(r) for r in h.X], h.y))
    worst_complete = max(y[tuple(SPACE.to_unit(p[0]))], y[tuple(SPACE.to_unit(p[4]))])
    further, earlier = y[tuple(SPACE.to_unit(p[3]))], y[tuple(SPACE.to_unit(p[1]))]
    assert worst_complete < further < earlier


def test_gp_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    X = rng.random((25, 4))
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2
    gp = GaussianProcess(np.array([0, 1, 2, 2]), 3)
    for _ in range(3):
        theta = gp.theta + rng.normal(0, 0.5, len(gp.theta))
        err = check_grad(lambda t: gp._neg_log_posterior(t, X, y)[0], lambda t: gp._neg_log_posterior(t, X, y)[1],
                         theta)
        assert err < 1e-3 * max(1.0, float(np.linalg.norm(gp._neg_log_posterior(theta, X, y)[1])))


def test_gp_interpolates_a_smooth_function() -> None:
    rng = np.random.default_rng(2)
    X = rng.random((40, 2))
    f = lambda A: np.sin(4 * A[:, 0]) + np.cos(3 * A[:, 1])
    gp = GaussianProcess(np.array([0, 1]), 2)
    gp.fit(X, f(X), rng)
    T = rng.random((200, 2))
    mu, sd = gp.predict(T)
    assert np.sqrt(np.mean((mu - f(T)) ** 2)) < 0.1
    assert np.all(sd > 0)


def test_log_ei_matches_the_closed_form_and_stays_finite_in_the_tail() -> None:
    import mpmath
    mpmath.mp.dps = 50
    mu = np.array([-1.0, 0.0, 0.5, 2.0, 8.0, 40.0, 1e3, 1e5])
    sd = np.array([1.0, 0.5, 1.0, 0.3, 1.0, 1.0, 1.0, 1.0])
    got = log_expected_improvement(mu, sd, best=0.0)
    for m, s, g in zip(mu, sd, got):
        z = mpmath.mpf(-m) / mpmath.mpf(s)
        h = z * mpmath.ncdf(z) + mpmath.npdf(z)
        assert g == pytest.approx(float(mpmath.log(s * h)), rel=1e-7, abs=1e-7), (m, s)
    assert np.all(np.isfinite(got)) and np.all(np.diff(got[2:]) < 0)


def test_warp_is_monotone_and_standardized() -> None:
    y = np.random.default_rng(3).lognormal(0, 2, 60)
    z = warp_targets(y)
    assert np.array_equal(np.argsort(y), np.argsort(z))
    assert abs(z.mean()) < 1e-9 and abs(z.std() - 1) < 1e-9


def test_shared_setting_has_one_definition() -> None:
    """The CRD schema is the union of all settings: a shared alias must agree in type, bounds and default."""
    a = TPESampler.Settings.model_fields["n_startup_trials"]
    b = BayesianSampler.Settings.model_fields["n_startup_trials"]
    assert a.alias == b.alias == "nStartupTrials"
    assert a.annotation is b.annotation and a.default == b.default and a.metadata == b.metadata
    for cls, prefix in ((TPESampler, "tpe"), (BayesianSampler, "bayesian")):
        for name, f in cls.Settings.model_fields.items():
            assert f.alias and f.description and prefix in f.description.split(":")[0], name
            assert f.annotation is bool or f.metadata, f"{name} needs bounds"


@pytest.mark.parametrize("name", ["tpe", "bayesian"])
def test_settings_by_alias(name: str) -> None:
    s = make_sampler(name, SPACE, settings={"nStartupTrials": 3})
    assert s.settings.n_startup_trials == 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        make_sampler(name, SPACE, settings={"nStartupTrials": 0})


@pytest.mark.parametrize("name", ["tpe", "bayesian"])
def test_parallel_batch_spreads_out(name: str) -> None:
    """A batch after a clear optimum is not 8 copies of one neighbourhood: pending trials count."""
    space = SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)})
    rng = np.random.default_rng(4)
    hist = [Observation(p, ObservationState.COMPLETE, (p["x"] - 0.3) ** 2 + (p["y"] - 0.7) ** 2)
            for p in (space.from_unit(u) for u in rng.random((30, 2)))]
    sampler = make_sampler(name, space, seed=0)
    batch = sampler.suggest(hist, [], n=8)
    pts = np.array([[p["x"], p["y"]] for p in batch])
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))[np.triu_indices(8, 1)]
    assert d.min() > 1e-5
    # TPE spreads the batch over the good region; EI with believed outcomes may refine a well-resolved optimum
    # with a tight batch (here a noise-free quadratic), but never repeats a point.
    assert np.median(d) > (0.01 if name == "tpe" else 1e-3)
    # And the batch still concentrates on the good region.
    assert np.mean(np.hypot(pts[:, 0] - 0.3, pts[:, 1] - 0.7)) < 0.35


@pytest.mark.parametrize("name", ["tpe", "bayesian"])
def test_only_failed_or_pruned_history_still_suggests(name: str) -> None:
    sampler = make_sampler(name, SPACE, seed=0, settings={"nStartupTrials": 2})
    ps = sampler.suggest([], [], n=4)
    hist = [Observation(ps[0], ObservationState.FAILED), Observation(ps[1], ObservationState.FAILED),
            Observation(ps[2], ObservationState.PRUNED, intermediate=((1, 2.0),)),
            Observation(ps[3], ObservationState.PRUNED, intermediate=((2, math.inf),))]
    nxt = sampler.suggest(hist, [], n=3)
    assert len(nxt) == 3 and all(SPACE.contains(p) for p in nxt)


def test_plateau_margin_known_answers() -> None:
    from kubetune.engine.bayesian import plateau_margin

    assert plateau_margin(np.array([0.3, -1.2, 0.5, 2.0])) == 0.0  # no ties: a continuous objective
    assert plateau_margin(np.array([-1.0, -1.0, 0.5, 2.0])) == 0.0  # two ties are not a plateau
    assert plateau_margin(np.array([-1.0, 0.5, -1.0, 2.0, -1.0, 0.25])) == pytest.approx(1.25)  # the next level up
    assert plateau_margin(np.array([0.0, 0.0, 0.0, 0.0])) == 0.0  # one level only: no step to go by
    assert plateau_margin(np.array([1.0, -1.0, -1.0, -1.0]), ties=4) == 0.0


def test_a_plateau_at_the_best_level_does_not_hold_the_search() -> None:
    """A wide region of ties at the best loss (a step-like objective such as an accuracy on a small set): expected
    improvement over the tie stays highest inside the region, where no suggestion can do better than tie. With the
    plateau rule the model's suggestions (every other one of a batch) mostly leave the region and the others are
    TPE's, around the good levels; the same history with one loss of the plateau a hair lower (no ties, so no rule)
    keeps the model's batch in the region, which shows the test can tell the two apart."""
    space = SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)})
    rng = np.random.default_rng(7)
    U = rng.random((40, 2))

    def radius(p: dict[str, object]) -> float:
        return math.hypot(float(p["x"]) - 0.3, float(p["y"]) - 0.3)  # type: ignore[arg-type]

    def loss(u: np.ndarray) -> float:  # three levels; the plateau is the disc of radius 0.2 around (0.3, 0.3)
        r = radius({"x": u[0], "y": u[1]})
        return -0.95 if r < 0.2 else (-0.90 if r < 0.45 else -0.80)

    ys = [loss(u) for u in U]
    assert ys.count(-0.95) >= 5
    plateau = [Observation(space.from_unit(list(u)), ObservationState.COMPLETE, y) for u, y in zip(U, ys, strict=True)]
    ties_broken = list(plateau)
    k = ys.index(-0.95)
    ties_broken[k] = Observation(plateau[k].params, ObservationState.COMPLETE, -0.951)
    model_inside = tpe_good = no_ties_inside = rule_off_inside = 0
    for seed in range(4):
        rule_off_inside += sum(radius(p) < 0.2 for p in make_sampler(
            "bayesian", space, seed=seed, settings={"plateauRule": False}).suggest(plateau, [], n=8))
        batch = make_sampler("bayesian", space, seed=seed).suggest(plateau, [], n=8)
        model_inside += sum(radius(p) < 0.2 for p in batch[0::2])
        tpe_good += sum(radius(p) < 0.45 for p in batch[1::2])
        no_ties_inside += sum(radius(p) < 0.2 for p in make_sampler("bayesian", space, seed=seed).suggest(
            ties_broken, [], n=8))
    assert model_inside <= 7, model_inside  # of 16 model suggestions, most outside the plateau
    assert tpe_good >= 14, tpe_good  # of 16 TPE suggestions, nearly all on the two best levels
    assert no_ties_inside >= 20, no_ties_inside  # of 32, without ties: the region keeps them
    assert rule_off_inside >= 20, rule_off_inside  # and so it does with ties and plateauRule: false


def test_a_step_like_objective_gets_a_pessimistic_prior_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a step-like objective the process is fitted on losses whose upper quartile is its zero prior mean (so far
    from every trial it expects a worse than typical loss); without ties, or with plateauRule: false, on losses
    whose mean is zero. The targets the process is fitted on are recorded as they are passed to it."""
    space = SearchSpace.of({"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)})
    U = np.random.default_rng(5).random((30, 2))
    levels = [-0.95 if u[0] + u[1] < 0.8 else (-0.9 if u[0] + u[1] < 1.3 else -0.7) for u in U]
    assert levels.count(-0.95) >= 3
    smooth = [float(u[0] + u[1]) for u in U]
    fitted: list[np.ndarray] = []
    real_fit = GaussianProcess.fit

    def spy(self: GaussianProcess, X: np.ndarray, y: np.ndarray, *args: object, **kwargs: object) -> None:
        fitted.append(np.array(y))
        real_fit(self, X, y, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(GaussianProcess, "fit", spy)

    def targets(ys: list[float], **settings: object) -> np.ndarray:
        fitted.clear()
        hist = [Observation(space.from_unit(list(u)), ObservationState.COMPLETE, y) for u, y in zip(U, ys, strict=True)]
        make_sampler("bayesian", space, seed=0, settings=settings).suggest(hist, [], n=1)
        assert len(fitted) == 1
        return fitted[0]

    step = targets(levels)
    assert np.quantile(step, 0.75) == pytest.approx(0.0, abs=1e-12)
    assert np.mean(step) < -0.1  # most trials lie below the prior mean
    assert np.argsort(step, kind="stable").tolist() == np.argsort(levels, kind="stable").tolist()  # order kept
    assert np.mean(targets(smooth)) == pytest.approx(0.0, abs=1e-9)  # no ties: the mean, as before
    assert np.mean(targets(levels, plateauRule=False)) == pytest.approx(0.0, abs=1e-9)
