"""Gaussian-process Bayesian optimization with expected improvement, in numpy/scipy.

After ``nStartupTrials`` quasi-random (Sobol') trials, a Gaussian process (Matern 5/2 ARD, hyperparameters by
maximum a posteriori, see :mod:`kubetune.engine._gp`) models the power-warped losses over the unit cube, with
categorical parameters one-hot encoded. The next configuration maximizes log expected improvement, found by a
global random candidate set plus local perturbations of the best trials, refined in shrinking steps; int and
stepped parameters are scored at the values the trial will actually run. On a step-like objective (at least three
trials share the best loss exactly: an accuracy on a small set, a depth-limited tree), expected improvement is taken
over the best level minus the gap to the next level, and every other suggestion is TPE's (:mod:`.tpe`, which samples
around the whole best level), so ties inside a plateau stop holding the search (:func:`plateau_margin`,
``settings.plateauRule``). On such an objective the process's constant prior mean is also the upper quartile of the
warped losses instead of their mean: away from the trials the model expects a worse than typical loss, so expected
improvement looks for the next level near the good trials (a thin band at the edge of a plateau, a pocket beside
a good configuration) rather than in the corners of the space, where a zero-mean model's uncertainty is largest.

Conditional parameters: a coordinate that is inactive in a trial (or a candidate) is encoded by a fixed rule, so the
model never sees a value that had no effect and two configurations that differ only in inactive parameters are the
same point: an inactive numeric parameter is the constant -0.5 (half a unit below its range) and an inactive
categorical parameter's one-hot columns are all 0. The mismatch between a trial where a parameter is active and one
where it is not then costs about as much distance as a change of category.

Outcome constraints (``spec.constraints``), as Optuna's GPSampler does: one more Gaussian process per constraint
models its value (standardized; fitted on the complete trials that reported the metric, so one that did not is left
out of that model: it is infeasible, never the incumbent, but says nothing about the value), and the acquisition is
log expected improvement over the best *feasible* trial plus the log probability that every constraint holds
(constraints independent), so expected improvement is multiplied by the probability of feasibility. Until a trial is
feasible, the probability of feasibility alone is maximized. The objective's process still learns from infeasible
trials.

Parallel trials use the *kriging believer*: pending trials, and earlier suggestions of the same batch, join the
model with the posterior mean as their outcome (and may become the incumbent), which removes their uncertainty and
so their expected improvement, and the batch spreads out. Failed trials are left out of the model (never
repeated); pruned trials rank behind every complete trial. At most ``maxModelTrials`` trials feed the model (the
best half and a random spread of the rest), which bounds the cost of a suggestion on long experiments.

This replaces scikit-optimize's GP (no scikit-optimize code runs here): the same kind of model, but hyperparameters
are fitted on at most 128 trials with analytic gradients, the acquisition function is evaluated on ~1,250
vectorised candidates, BLAS runs single-threaded (small matrices), and a batch fits the model once instead of once
per suggestion. docs/benchmarks.md has the measured speed and search quality against scikit-optimize.
"""

from __future__ import annotations

import contextlib
import math
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from pydantic import Field
from scipy.special import log_ndtr

from ._gp import GaussianProcess, log_expected_improvement, warp_targets
from ._unit import ModelSettings, UnitHistory, active_mask, categorical_sizes, startup, to_unit_matrix
from .base import Sampler, SuggestContext
from .space import CategoricalDistribution, Distribution, FloatDistribution, IntDistribution, ParamValue, SearchSpace

_FIT_SUBSET = 128
_MAX_GRID = 100_000
_SCORE_CHUNK = 2**20
"""Elements of the (candidates, trials) matrices of one scoring step (8 MiB of floats)."""
_controller: Any = None
_INACTIVE = -0.5
"""The model input of an inactive numeric parameter."""
_PLATEAU_TIES = 3
"""Trials sharing the best loss exactly that make the objective count as step-like (see :func:`plateau_margin`)."""
_STEP_PRIOR_QUANTILE = 0.75
"""On a step-like objective, the quantile of the warped losses taken as the process's constant prior mean."""


def plateau_margin(z: np.ndarray, ties: int = _PLATEAU_TIES) -> float:
    """The improvement to ask for on a step-like objective: 0, or the gap to the next level.

    Accuracies on a few hundred samples, depth-limited trees and integer settings give losses on a few levels, and
    a region where many configurations reach the best level exactly. Expected improvement over that level is
    largest inside the region (its mean is the best, its uncertainty small but not zero), so the search stays
    there: suggestions that can only tie. When at least ``ties`` trials share the best loss exactly, expected
    improvement is taken over the best level minus the gap to the next level up (in the model's warped units): the
    smallest step seen, which a tie cannot reach and a configuration that is both promising and uncertain can. On a
    continuous objective no two losses tie and nothing changes."""
    if len(z) < ties:
        return 0.0
    lo = float(np.min(z))
    tol = 1e-12 * max(1.0, abs(lo))
    at = z <= lo + tol
    if int(np.count_nonzero(at)) < ties or at.all():
        return 0.0
    return float(np.min(z[~at]) - lo)


def step_prior(z: np.ndarray) -> np.ndarray:
    """The warped losses of a step-like objective, shifted so that the process's zero prior mean stands at their
    upper quartile (``_STEP_PRIOR_QUANTILE``) instead of their mean: a pessimistic prior, so expected improvement is
    high near good trials and low far from every trial (see the module docstring)."""
    shifted: np.ndarray = z - float(np.quantile(z, _STEP_PRIOR_QUANTILE))
    return shifted


def _single_threaded_blas() -> AbstractContextManager[object]:
    """Limit BLAS to one thread: the matrices here are small, and multithreaded BLAS on small matrices is many
    times slower on a busy machine (threads spin waiting for a core)."""
    global _controller
    try:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        return _controller.limit(limits=1, user_api="blas")  # type: ignore[no-any-return]
    except Exception:  # threadpoolctl missing or an unknown BLAS: run as is
        return contextlib.nullcontext()


def _unit_values(dist: Distribution, n: int) -> np.ndarray:
    """``[dist.to_unit(dist.value(k)) for k in range(n)]``: the same floats, vectorised where the formulas allow."""
    if isinstance(dist, IntDistribution) and max(abs(dist.low), abs(dist._top)) < 2**53:
        v = dist.low + np.arange(n, dtype=float) * dist.step  # exact: whole numbers below 2**53
        lo, hi = dist.edges
        if dist.log:
            a, b = math.log(lo), math.log(hi)
            return np.array([(math.log(max(x, lo)) - a) / (b - a) for x in v.tolist()]).clip(0.0, 1.0)
        if math.isfinite(hi - lo):
            return np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    if isinstance(dist, FloatDistribution) and dist.step is not None and not dist.log \
            and math.isfinite(dist.high - dist.low):
        raw = (dist.low + np.arange(n, dtype=float) * dist.step).tolist()  # FloatDistribution.value, vectorised
        v = np.clip([round(x, 12) if abs(x) < 2.0**52 else x for x in raw], dist.low, dist.high)
        col: np.ndarray = np.clip((v - dist.low) / (dist.high - dist.low), 0.0, 1.0)
        return col
    return np.array([dist.to_unit(dist.value(k)) for k in range(n)])


def _snap_by_arithmetic(dist: Distribution, u: np.ndarray) -> np.ndarray:
    """Unit coordinates moved onto the nearest value of a finite numeric dimension too large to list, like
    ``to_unit(from_unit(u))`` (up to float rounding); continuous dimensions and bounds beyond 2**53 are left as they
    are (their values are closer together than the model can tell apart)."""
    if isinstance(dist, CategoricalDistribution) or dist.step is None:
        return u
    low, step = float(dist.low), float(dist.step)
    if isinstance(dist, IntDistribution):
        lo, hi = dist.edges
        top = float(dist._top)
    else:
        lo, hi, top = dist.low, dist.high, dist.low + (dist._n_steps) * step
    if max(abs(lo), abs(hi)) >= 2.0**53 or not math.isfinite(hi - lo):
        return u
    if dist.log:
        a, b = math.log(lo), math.log(hi)
        x = np.exp(a + u * (b - a))
    else:
        x = lo + u * (hi - lo)
    v = np.clip(low + np.rint((x - low) / step) * step, low, min(top, dist.high))
    if dist.log:
        return np.clip((np.log(np.maximum(v, lo)) - a) / (b - a), 0.0, 1.0)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0)


class _Feasibility:
    """Gaussian processes of the constraint values (standardized) and the threshold each must stay at or below."""

    def __init__(self, models: list[tuple[GaussianProcess, float]]) -> None:
        self.models = models

    def log_pof(self, E: np.ndarray) -> np.ndarray:
        """Log probability that every constraint holds at the encoded points ``E`` (independent constraints)."""
        out = np.zeros(len(E))
        for gp, threshold in self.models:
            mu, sd = gp.predict(E)
            out += log_ndtr((threshold - mu) / np.maximum(sd, 1e-12))
        return out

    def likely(self, E: np.ndarray) -> np.ndarray:
        """Points whose predicted constraint values all hold (posterior means at or below the thresholds)."""
        ok = np.ones(len(E), dtype=bool)
        for gp, threshold in self.models:
            ok &= gp.predict(E)[0] <= threshold
        return ok


class BayesianSettings(ModelSettings):
    max_model_trials: int = Field(
        300,
        alias="maxModelTrials",
        ge=20,
        le=2000,
        description="bayesian: at most this many finished trials (the best half and a random spread of the rest) "
        "feed the Gaussian process; bounds the time and memory per suggestion on long experiments (2000: about "
        "200 MiB and seconds per suggestion).",
    )
    n_candidates: int = Field(
        512,
        alias="nCandidates",
        ge=16,
        le=20000,
        description="bayesian: random candidates scored by expected improvement per suggestion, before local "
        "refinement around the most promising ones.",
    )
    plateau_rule: bool = Field(
        True,
        alias="plateauRule",
        description="bayesian: when at least three trials tie at the best loss (a step-like objective), ask "
        "expected improvement for one more level, take every other suggestion from tpe and set the model's prior "
        "mean at the upper quartile of the losses, so a plateau of ties does not hold the search and the next level "
        "is sought near the good trials; no effect on objectives without ties.",
    )


class BayesianSampler(Sampler):
    name = "bayesian"
    warm_start = True
    Settings = BayesianSettings
    multi_objective_refusal = "its Gaussian process and expected improvement model one objective"
    summary = "Gaussian-process Bayesian optimization (expected improvement): best results for small budgets."
    supports_conditions = True
    supports_constraints = True

    def __init__(self, space: SearchSpace, **kwargs: object) -> None:
        super().__init__(space, **kwargs)  # type: ignore[arg-type]
        sizes = categorical_sizes(space)
        self._sizes = sizes
        self._tpe_sampler: Sampler | None = None
        """The plateau rule's TPE (made on first use)."""
        self._num_idx = [i for i, k in enumerate(sizes) if k == 0]
        self._cat_idx = [i for i, k in enumerate(sizes) if k > 0]
        col_dim: list[int] = []
        for i, k in enumerate(sizes):
            col_dim += [i] * max(k, 1)
        self._col_dim = np.array(col_dim)
        # Unit coordinates of every value of small finite numeric dimensions, to snap candidates onto them; the
        # total is bounded (_MAX_GRID). Larger ones snap by arithmetic (_snap_by_arithmetic).
        self._grids: list[np.ndarray | None] = []
        budget = _MAX_GRID
        for i in self._num_idx:
            dist = space.distributions[i]
            n = dist.n_values
            if n is None or n > budget:
                self._grids.append(None)
                continue
            budget -= n
            self._grids.append(np.unique(_unit_values(dist, n)))

    @property
    def _s(self) -> BayesianSettings:
        return self.settings  # type: ignore[return-value]

    # -- encoding -----------------------------------------------------------------------------------------------

    def _encode(self, U: np.ndarray) -> np.ndarray:
        """Unit coordinates ``(n, d)`` to model inputs: numeric columns as they are, categories one-hot; inactive
        coordinates by the fixed rule of the module docstring."""
        if self.space.conditional:
            return self._encode_conditional(U)
        cols = []
        for i, k in enumerate(self._sizes):
            if k == 0:
                cols.append(U[:, i : i + 1])
            else:
                idx = np.minimum((U[:, i] * k).astype(int), k - 1)
                cols.append(np.eye(k)[idx])
        return np.hstack(cols)

    def _encode_conditional(self, U: np.ndarray) -> np.ndarray:
        active = active_mask(self.space, U)
        cols = []
        for i, k in enumerate(self._sizes):
            on = active[:, i]
            if k == 0:
                cols.append(np.where(on, U[:, i], _INACTIVE)[:, None])
            else:
                idx = np.clip((np.nan_to_num(U[:, i], nan=0.0) * k).astype(int), 0, k - 1)
                cols.append(np.eye(k)[idx] * on[:, None])
        return np.hstack(cols)

    def _snap(self, U: np.ndarray) -> np.ndarray:
        """Snap numeric coordinates onto representable values and categories onto their bin centres."""
        U = np.clip(U, 0.0, 1.0)
        for j, i in enumerate(self._num_idx):
            g = self._grids[j]
            if g is not None:
                pos = np.clip(np.searchsorted(g, U[:, i]), 1, len(g) - 1)
                left, right = g[pos - 1], g[pos]
                U[:, i] = np.where(U[:, i] - left <= right - U[:, i], left, right)
            else:
                U[:, i] = _snap_by_arithmetic(self.space.distributions[i], U[:, i])
        for i in self._cat_idx:
            k = self._sizes[i]
            U[:, i] = (np.minimum((U[:, i] * k).astype(int), k - 1) + 0.5) / k
        return U

    # -- suggestion ---------------------------------------------------------------------------------------------

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        with _single_threaded_blas():
            return self._suggest_model(ctx, n)

    def _suggest_model(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        s = self._s
        out, hist = startup(self, ctx, n, s.n_startup_trials)
        if hist is None:
            return out
        rows: np.ndarray | None = None
        if hist.constraints is not None:  # keep track of which trials feed the model
            Xi, y = self._model_subset(ctx, np.column_stack([hist.X, np.arange(len(hist.y))]), hist.y)
            X, rows = Xi[:, :-1], Xi[:, -1].astype(int)
        else:
            X, y = self._model_subset(ctx, hist.X, hist.y)
        z = warp_targets(y)
        if s.plateau_rule and plateau_margin(z) > 0:
            z = step_prior(z)
        E = self._encode(X)
        gp = GaussianProcess(self._col_dim, len(self.space))
        if len(z) > _FIT_SUBSET:
            keep = self._fit_subset(ctx, z)
            gp.fit(E[keep], z[keep], ctx.rng, restarts=1)
            gp.condition(E, z)
        else:
            gp.fit(E, z, ctx.rng, restarts=1 if len(z) > 64 else 2)
        feasibility: _Feasibility | None = None
        if rows is None:
            best: float | None = float(np.min(gp.predict(E)[0]))
            top = X[np.argsort(z, kind="stable")[:5]]
            margin = plateau_margin(z) if s.plateau_rule else 0.0
        else:
            feasibility = self._feasibility(ctx, hist, rows)
            ok = ~hist.infeasible[rows] & (rows < hist.n_complete)
            margin = plateau_margin(z[ok]) if s.plateau_rule else 0.0
            # The incumbent is the best feasible trial; without one, the acquisition is the probability of
            # feasibility alone. Local search starts from the best feasible trials, then the least violating.
            best = float(np.min(gp.predict(E[ok])[0])) if ok.any() else None
            top = X[np.lexsort((z, ~ok))[:5]]
        if self.space.conditional:
            # Inactive coordinates of the incumbents: the centre, used only where a perturbation activates them.
            top = np.where(np.isnan(top), 0.5, top)
        # Kriging believer: pending trials and this batch's suggestions count as observed at the posterior mean.
        fantasies = to_unit_matrix(self.space, list(ctx.pending)) if ctx.pending else np.zeros((0, X.shape[1]))
        while len(out) < n:
            if len(fantasies):
                Ef = self._encode(fantasies)
                gp.condition(E, z)
                believed = gp.predict(Ef)[0]
                gp.condition(np.vstack([E, Ef]), np.concatenate([z, believed]), exact=len(Ef))
                # The believed outcomes are observations now, so they can be the incumbent too; otherwise a
                # predicted minimum below the best trial keeps positive EI and the batch piles up there.
                if feasibility is None:
                    best = min(best, float(np.min(believed)))  # type: ignore[type-var]
                elif best is not None and (likely := feasibility.likely(Ef)).any():
                    best = min(best, float(np.min(believed[likely])))
            if margin > 0 and feasibility is None and \
                    (len(ctx.history) + len(ctx.pending) + len(out)) % 2 == 1:
                # On a plateau, every other suggestion is TPE's: it samples around the whole best level instead of
                # where the model's uncertainty is largest.
                sub = SuggestContext(history=ctx.history, pending=[*ctx.pending, *out], rng=ctx.rng, seen=ctx.seen)
                got = self._tpe()._suggest(sub, 1)
                pick = got[0] if got else None
                if pick is not None:
                    ctx.seen.add(self.space.key(pick))
            else:
                pick = self._maximize(ctx, gp, None if best is None else best - margin, top, feasibility)
            if pick is None:
                more = self._random_unique(ctx, 1)
                if not more:
                    break
                pick = more[0]
            out.append(pick)
            fantasies = np.vstack([fantasies, np.array(self.space.to_unit(pick))[None]])
        return out

    def _tpe(self) -> Sampler:
        from .tpe import TPESampler

        if self._tpe_sampler is None:
            self._tpe_sampler = TPESampler(self.space, seed=self.seed, settings={"nStartupTrials": 1})
        return self._tpe_sampler

    def _model_subset(self, ctx: SuggestContext, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cap = self._s.max_model_trials
        if len(y) <= cap:
            return X, y
        order = np.argsort(y, kind="stable")
        rest = order[cap // 2 :]
        keep = np.concatenate([order[: cap // 2], ctx.rng.choice(rest, size=cap - cap // 2, replace=False)])
        return X[keep], y[keep]

    def _fit_subset(self, ctx: SuggestContext, z: np.ndarray) -> np.ndarray:
        order = np.argsort(z, kind="stable")
        half = _FIT_SUBSET // 2
        return np.concatenate([order[:half], ctx.rng.choice(order[half:], size=_FIT_SUBSET - half, replace=False)])

    # -- acquisition --------------------------------------------------------------------------------------------

    def _perturb(self, rng: np.random.Generator, centres: np.ndarray, each: int, scale: float) -> np.ndarray:
        U = np.repeat(centres, each, axis=0)
        if self._num_idx:
            U[:, self._num_idx] += rng.normal(0.0, scale, (len(U), len(self._num_idx)))
        flip_p = 1.0 / max(len(self.space), 1)
        for i in self._cat_idx:
            flip = rng.random(len(U)) < flip_p
            U[flip, i] = rng.random(int(flip.sum()))
        return self._snap(U)

    def _feasibility(self, ctx: SuggestContext, hist: UnitHistory, rows: np.ndarray) -> _Feasibility:
        """One Gaussian process per constraint on its values at the complete trials among ``rows``."""
        assert hist.constraints is not None
        complete = rows[rows < hist.n_complete]
        E = self._encode(hist.X[complete])
        models = []
        for j in range(hist.constraints.shape[1]):
            c = hist.constraints[complete, j]
            known = np.isfinite(c)  # a trial that did not report the metric says nothing about its value
            if known.sum() < 2:
                continue
            mean, sd = float(np.mean(c[known])), float(np.std(c[known])) or 1.0
            gp = GaussianProcess(self._col_dim, len(self.space))
            Ek, ck = E[known], (c[known] - mean) / sd
            if len(ck) > _FIT_SUBSET:  # hyperparameters from a subset, as for the objective; then all of them
                keep = ctx.rng.choice(len(ck), size=_FIT_SUBSET, replace=False)
                gp.fit(Ek[keep], ck[keep], ctx.rng, restarts=1)
                gp.condition(Ek, ck)
            else:
                gp.fit(Ek, ck, ctx.rng, restarts=1)
            models.append((gp, -mean / sd))
        return _Feasibility(models)

    def _maximize(self, ctx: SuggestContext, gp: GaussianProcess, best: float | None,
                  top: np.ndarray, feasibility: _Feasibility | None = None) -> dict[str, ParamValue] | None:
        rng = ctx.rng
        d = len(self.space)

        def score(U: np.ndarray) -> np.ndarray:
            # In chunks: the posterior at c candidates needs (c, trials) matrices, bounded here (_SCORE_CHUNK).
            rows = max(1, _SCORE_CHUNK // max(len(gp.X), 1))
            parts = []
            for i in range(0, len(U), rows):
                Ec = self._encode(U[i : i + rows])
                if feasibility is None:
                    assert best is not None
                    mu, sd = gp.predict(Ec)
                    parts.append(log_expected_improvement(mu, sd, best))
                    continue
                a = feasibility.log_pof(Ec)
                if best is not None:
                    mu, sd = gp.predict(Ec)
                    a = a + log_expected_improvement(mu, sd, best)
                parts.append(a)
            return np.concatenate(parts)

        U = np.vstack([self._snap(rng.random((self._s.n_candidates, d))), self._perturb(rng, top, 32, 0.1)])
        a = score(U)
        keep = np.argsort(-a, kind="stable")[:8]
        U, a = U[keep], a[keep]
        for scale in (0.05, 0.02, 0.005):
            V = self._perturb(rng, U, 24, scale)
            b = score(V)
            U, a = np.vstack([U, V]), np.concatenate([a, b])
            keep = np.argsort(-a, kind="stable")[:8]
            U, a = U[keep], a[keep]
        # The final ranking, best first, skipping configurations already tried or pending.
        for u in U:
            p = self.space.from_unit(u.tolist())
            k = self.space.key(p)
            if k not in ctx.seen:
                ctx.seen.add(k)
                return p
        return None
