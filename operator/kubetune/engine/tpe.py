"""Tree-structured Parzen Estimator (Bergstra et al. 2011, in the style of Optuna's TPE), in numpy.

After ``nStartupTrials`` quasi-random (Sobol') trials, the finished trials are split by loss into a *good* group
(the best ``ceil(gamma * n)`` trials, at most 25) and a *bad* group. Each group becomes a Parzen density over the
unit cube: one kernel per trial plus a broad prior kernel,

* numeric dimensions (float, int, log or stepped, all alike in unit coordinates): a Gaussian truncated to ``[0, 1]``;
* categorical dimensions: the trial's category plus a smoothing mass spread over all categories.

``nEiCandidates`` candidates are drawn from the good density ``l(x)`` and the one maximizing ``l(x) / g(x)`` (which
is proportional to expected improvement under the TPE model) is suggested. With ``multivariate`` the kernels are
joint over all dimensions (one kernel per trial), so interactions between parameters are kept; without it each
dimension has its own density, as in the original paper, and candidates are scored by the sum over dimensions.
Bandwidths follow Optuna: the larger gap to a neighbouring trial in that dimension, clipped.

Conditional parameters (Optuna's group decomposition): the parameters are split into groups that are always active
together (the same chain of conditions), and each group has its own pair of densities, fitted on the trials where
the group was active only; the good/bad split itself is over all trials. A candidate draws every group from its
good density, and its score sums ``log l(x) - log g(x)`` over the groups active in it, so values that had no effect
on a trial never shape a density and inactive draws never count. Without conditions there is one group, the whole
space.

Several objectives (``spec.objectives``, Optuna's MOTPE): the good group is taken by non-domination rank, and within
the rank the split cuts through by greedy hypervolume subset selection (see
:func:`kubetune.engine.pareto.motpe_order`); the densities and the candidate score are the same as with one.

Outcome constraints (``spec.constraints``), as Optuna's TPESampler with ``constraints_func`` (its ``_split_trials``:
complete, then pruned, then infeasible trials fill the good group): the trials are ranked feasible complete ones by
loss first, then pruned ones, then infeasible ones by their summed violation (the sum of the positive constraint
values, ``inf`` for a missing metric), and the good group is the first ``ceil(gamma * n)`` of that order (with
several objectives, the feasible trials are ranked as MOTPE ranks them). While few trials are feasible the good
group holds the least violating ones, so the search moves toward the feasible region; once enough are, infeasible
trials only shape the bad density.

Parallel trials (``constantLiar``, on by default): pending trials, and the suggestions already made in the same
batch, join the bad group as Optuna's ``constant_liar=True`` puts running trials into its "above" group: they never
enter the good group nor count toward its size (``gamma`` is over finished trials), and they share the bad group's
age weights as its newest members. A liar at ``x`` raises ``g`` there, so the next suggestion of the batch moves away
from it instead of piling onto the same spot. Without the liar, pending trials are only kept from being repeated.
Measured against leaving them out (``benchmarks/tpe_compare.py``, docs/benchmarks.md "kubetune tpe against Optuna's
TPE"), the two score alike in batches of 4 and 8 (paired differences within noise); the liar keeps a batch's
suggestions apart from each other and from running trials, so it stays the default.

Against Optuna's TPESampler (5.x, single objective; it is multivariate by default there too) the model is the same
rule by rule: ``min(ceil(0.1 n), 25)`` good trials, the bad group's linear age ramp beyond its 25 newest trials,
prior weight 1 (centre of the range, width of the range), bandwidth from the larger neighbour gap without the
endpoints and clipped below at ``range / min(100, m + 2)``, truncated kernels, 24 candidates from ``l``; the unit
tests compare the densities with Optuna's Parzen estimator. What differs: the first ``nStartupTrials`` are scrambled
Sobol' points and pending trials count toward them (Optuna samples at random until that many trials have
*finished*, so a batch of 8 spends 16 trials at random), integer parameters have continuous kernels over their
unit-cube bins (candidates are scored at the value the trial will run), and a suggestion never repeats a tried
configuration. Failed trials are left out of the model; pruned trials rank behind every complete trial (see
:mod:`kubetune.engine._unit`). Only ``ctx.rng`` is used for randomness, so a seeded sampler is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import Field
from scipy.special import logsumexp, ndtr, ndtri

from ._unit import ModelSettings, UnitHistory, active_mask, categorical_sizes, startup, to_unit_matrix
from .base import Sampler, SuggestContext
from .pareto import motpe_order
from .space import ParamValue, SearchSpace

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_MAX_GOOD = 25
_MAX_CANDIDATES = 4096
"""Candidates per attempt once the first ``nEiCandidates`` were all taken (the attempts double up to this)."""
_CHUNK = 2**20
"""Elements of the largest intermediate array of a density evaluation (8 MiB of floats)."""


class TPESettings(ModelSettings):
    n_ei_candidates: int = Field(
        24,
        alias="nEiCandidates",
        ge=1,
        le=10000,
        description="tpe: candidates drawn from the good-trial density per suggestion; the best ratio wins.",
    )
    gamma: float = Field(
        0.1,
        alias="gamma",
        gt=0.0,
        lt=1.0,
        description="tpe: fraction of finished trials (at most 25) that form the good group.",
    )
    multivariate: bool = Field(
        True,
        alias="multivariate",
        description="tpe: model all parameters jointly (keeps interactions) instead of one density per parameter.",
    )
    prior_weight: float = Field(
        1.0,
        alias="priorWeight",
        gt=0.0,
        le=100.0,
        description="tpe: weight of the broad prior kernel relative to one trial's kernel.",
    )
    constant_liar: bool = Field(
        True,
        alias="constantLiar",
        description="tpe: count pending trials (and earlier suggestions of the same batch) as bad trials, so "
        "parallel suggestions spread out.",
    )


@dataclass
class _Parzen:
    """A weighted mixture of per-trial kernels (plus the prior as the last component) over the unit cube."""

    log_w: np.ndarray  # (m,)
    mu: np.ndarray  # (m, d_num)
    sigma: np.ndarray  # (m, d_num)
    log_norm: np.ndarray  # (m, d_num): log of the truncation mass
    cat_logp: list[np.ndarray]  # per categorical dimension: (m, K)
    multivariate: bool

    def log_pdf(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Log density at ``c`` points given numeric unit coordinates ``(c, d_num)`` and category indexes.

        Multivariate: ``(c,)``. Otherwise one column per dimension, ``(c, d_num + d_cat)`` (the joint log density
        is their sum). Points are taken in chunks so that the ``(points, kernels, dimensions)`` intermediate stays
        bounded (``_CHUNK`` elements) for any number of trials and candidates; each row is computed alike.
        """
        m = len(self.log_w)
        width = m * max(self.mu.shape[1] + len(self.cat_logp), 1)
        rows = max(1, _CHUNK // width)
        if len(num) <= rows:
            return self._log_pdf(num, cat)
        return np.concatenate([self._log_pdf(num[i : i + rows], cat[i : i + rows]) for i in range(0, len(num), rows)])

    def _log_pdf(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        terms: list[np.ndarray] = []  # each (c, m)
        if num.shape[1]:
            z = (num[:, None, :] - self.mu[None]) / self.sigma[None]
            lk = -0.5 * z * z - np.log(self.sigma)[None] - _LOG_SQRT_2PI - self.log_norm[None]
            if self.multivariate:
                terms.append(lk.sum(axis=2))
            else:
                terms += [lk[:, :, j] for j in range(lk.shape[2])]
        for j, table in enumerate(self.cat_logp):
            terms.append(table[:, cat[:, j]].T)
        if self.multivariate:
            joint: np.ndarray = logsumexp(sum(terms) + self.log_w[None], axis=1)
            return joint
        return np.stack([logsumexp(t + self.log_w[None], axis=1) for t in terms], axis=1)

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        m, d_num = self.mu.shape
        w = np.exp(self.log_w - logsumexp(self.log_w))
        n_cols = d_num + len(self.cat_logp)
        if self.multivariate:
            comp = np.repeat(rng.choice(m, size=size, p=w)[:, None], max(n_cols, 1), axis=1)
        else:
            comp = rng.choice(m, size=(size, max(n_cols, 1)), p=w)
        num = np.empty((size, d_num))
        for j in range(d_num):
            mu, sd = self.mu[comp[:, j], j], self.sigma[comp[:, j], j]
            lo, hi = ndtr((0.0 - mu) / sd), ndtr((1.0 - mu) / sd)
            p = np.clip(lo + rng.random(size) * (hi - lo), 1e-12, 1 - 1e-12)
            num[:, j] = np.clip(mu + sd * ndtri(p), 0.0, 1.0)
        cat = np.empty((size, len(self.cat_logp)), dtype=int)
        for j, table in enumerate(self.cat_logp):
            probs = np.exp(table[comp[:, d_num + j]])
            cum = np.cumsum(probs, axis=1)
            cat[:, j] = np.minimum((rng.random(size)[:, None] * cum[:, -1:] > cum).sum(axis=1), table.shape[1] - 1)
        return num, cat


@dataclass(frozen=True)
class _Group:
    """Dimensions that are always active together: their numeric and categorical indexes in the space."""

    num_idx: list[int]
    cat_idx: list[int]
    cat_k: list[int]

    @property
    def first(self) -> int:
        return min(self.num_idx + self.cat_idx)


def _groups(space: SearchSpace) -> list[_Group]:
    """The space's dimensions grouped by their chain of conditions (one group without conditions)."""
    sizes = categorical_sizes(space)
    chains: dict[tuple[object, ...], list[int]] = {}
    for i, name in enumerate(space.names):
        chain: list[object] = []
        rule = space.condition_of(name)
        while rule is not None:
            chain.append((rule[0], tuple(sorted(rule[1], key=repr))))
            rule = space.condition_of(rule[0])
        chains.setdefault(tuple(chain), []).append(i)
    out = []
    for dims in chains.values():
        cat = [i for i in dims if sizes[i] > 0]
        out.append(_Group([i for i in dims if sizes[i] == 0], cat, [sizes[i] for i in cat]))
    return sorted(out, key=lambda g: g.first)


class TPESampler(Sampler):
    name = "tpe"
    warm_start = True
    Settings = TPESettings
    summary = "Tree-structured Parzen Estimator: fast model-based search, scales to thousands of trials."
    supports_conditions = True
    supports_constraints = True
    supports_multi_objective = True

    def __init__(self, space: SearchSpace, **kwargs: object) -> None:
        super().__init__(space, **kwargs)  # type: ignore[arg-type]
        self._groups = _groups(space)

    @property
    def _s(self) -> TPESettings:
        return self.settings  # type: ignore[return-value]

    # -- suggestion ---------------------------------------------------------------------------------------------

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        s = self._s
        out, hist = startup(self, ctx, n, s.n_startup_trials)
        if hist is None:
            return out
        n_good = min(max(int(math.ceil(s.gamma * len(hist.y))), 1), _MAX_GOOD)
        if hist.losses is not None and hist.infeasible.any():  # several objectives and outcome constraints
            order = _constrained_order(hist, n_good)
        elif hist.losses is not None:  # several objectives: rank, then hypervolume subset selection (MOTPE)
            order = np.argsort(motpe_order(hist.losses, n_good), kind="stable")
        elif hist.constraints is not None:  # outcome constraints: Optuna's constrained split
            order = _constrained_order(hist)
        else:
            order = np.argsort(hist.y, kind="stable")
        good, bad = hist.X[order[:n_good]], hist.X[order[n_good:]]
        bad_rank = order[n_good:]
        liars = to_unit_matrix(self.space, list(ctx.pending)) if s.constant_liar else np.zeros((0, len(self.space)))
        good_est = [self._estimator(g, *_rows(g, good, np.ones(len(good)))) for g in self._groups]
        while len(out) < n:
            bad_all = np.vstack([bad, liars]) if len(liars) else bad
            w_bad = _bad_weights(bad_rank, len(hist.y), len(liars))
            bad_est = [self._estimator(g, *_rows(g, bad_all, w_bad)) for g in self._groups]
            pick = self._best_candidate(ctx, good_est, bad_est)
            if pick is None:  # every candidate was taken: fall back to a random untried configuration
                more = self._random_unique(ctx, 1)
                if not more:
                    break
                pick = more[0]
            out.append(pick)
            if s.constant_liar:
                liars = np.vstack([liars, np.array(self.space.to_unit(pick))[None]])
        return out

    def _best_candidate(self, ctx: SuggestContext, good: list[_Parzen],
                        bad: list[_Parzen]) -> dict[str, ParamValue] | None:
        size = self._s.n_ei_candidates
        dists = self.space.distributions
        for _attempt in range(4):
            U = np.empty((size, len(self.space)))
            parts = []
            for g, est in zip(self._groups, good):
                num, cat = est.sample(ctx.rng, size)
                U[:, g.num_idx] = num
                for j, i in enumerate(g.cat_idx):
                    U[:, i] = (cat[:, j] + 0.5) / g.cat_k[j]
                parts.append((num, cat))
            active = active_mask(self.space, U) if self.space.conditional else None
            score: np.ndarray | None = None
            for g, (num, cat), l_est, g_est in zip(self._groups, parts, good, bad):
                # Score at the quantized values, which is what the trial will actually run (the numeric
                # coordinates of the candidate's parameters, without building every candidate's parameters).
                qnum = np.array([[dists[i].to_unit(dists[i].from_unit(float(u))) for i, u in zip(g.num_idx, row)]
                                 for row in num.tolist()]).reshape(size, len(g.num_idx))
                part = l_est.log_pdf(qnum, cat) - g_est.log_pdf(qnum, cat)
                if part.ndim == 2:
                    # Univariate: the candidates' summed score. (Choosing each dimension's best value on its own,
                    # as Hyperopt and Optuna do, scored lower on the synthetic benchmarks.)
                    part = part.sum(axis=1)
                if active is not None:
                    part = np.where(active[:, g.first], part, 0.0)  # an inactive group has no say
                score = part if score is None else score + part
            assert score is not None
            for i in np.argsort(-score, kind="stable"):
                p = self.space.from_unit(U[i].tolist())
                k = self.space.key(p)
                if k not in ctx.seen:
                    ctx.seen.add(k)
                    return p
            # Every candidate was taken: draw more, up to a bounded number per attempt.
            size = min(2 * size, max(self._s.n_ei_candidates, _MAX_CANDIDATES))
        return None

    # -- density estimation -------------------------------------------------------------------------------------

    def _estimator(self, g: _Group, X: np.ndarray, weights: np.ndarray) -> _Parzen:
        s = self._s
        m = len(X)
        log_w = np.log(np.append(weights, s.prior_weight) / (weights.sum() + s.prior_weight))
        num = X[:, g.num_idx]
        d_num = num.shape[1]
        mu = np.vstack([num, np.full((1, d_num), 0.5)])
        sigma = np.empty((m + 1, d_num))
        for j in range(d_num):
            sigma[:m, j] = _neighbour_bandwidth(num[:, j])
        sigma[-1] = 1.0  # the prior kernel
        lo, hi = ndtr((0.0 - mu) / sigma), ndtr((1.0 - mu) / sigma)
        log_norm = np.log(np.maximum(hi - lo, 1e-300))
        cat_logp = []
        for j, i in enumerate(g.cat_idx):
            k = g.cat_k[j]
            idx = np.minimum((X[:, i] * k).astype(int), k - 1)
            table = np.full((m + 1, k), s.prior_weight / (m + 1))
            table[np.arange(m), idx] += 1.0
            table[-1] = 1.0
            cat_logp.append(np.log(table / table.sum(axis=1, keepdims=True)))
        return _Parzen(log_w, mu, sigma, log_norm, cat_logp, s.multivariate)


def _constrained_order(hist: UnitHistory, n_good: int = 0) -> np.ndarray:
    """Positions of ``hist``'s trials, best first, as Optuna's constrained split ranks them: feasible complete trials
    by loss (with several objectives by :func:`motpe_order` among the feasible ones, for a good group of
    ``n_good``), then pruned trials (by their ranking loss), then infeasible trials: fewer constraint metrics left
    unreported (an infinite violation) first, then by summed finite violation, as Optuna ranks them when a missing
    value is a violation larger than any other; ties in history order."""
    infeasible = hist.infeasible
    group = np.where(infeasible, 2, np.where(np.arange(len(hist.y)) < hist.n_complete, 0, 1))
    score = hist.y.copy()
    missing = np.zeros(len(score))
    if hist.losses is not None:
        ok = np.flatnonzero(~infeasible)
        score[ok] = motpe_order(hist.losses[ok], min(n_good, len(ok)))
    if hist.constraints is not None and infeasible.any():
        c = hist.constraints
        violation = np.where(np.isfinite(c) & (c > 0), c, 0.0).sum(axis=1)
        bad = infeasible[: hist.n_complete]
        score[: hist.n_complete] = np.where(bad, violation, score[: hist.n_complete])
        missing[: hist.n_complete] = np.where(bad, np.isinf(c).sum(axis=1), 0)
    return np.lexsort((np.arange(len(score)), score, missing, group))


def _rows(g: _Group, X: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The trials (and their weights) in which group ``g`` was active: its coordinates are not NaN there."""
    if not len(X) or not np.isnan(X[:, g.first]).any():
        return X, weights
    keep = ~np.isnan(X[:, g.first])
    return X[keep], weights[keep]


def _neighbour_bandwidth(x: np.ndarray) -> np.ndarray:
    """Optuna's bandwidths: the larger gap to a sorted neighbour (the outermost points use their inner gap), clipped
    to ``[1 / min(100, m + 2), 1]``."""
    m = len(x)
    if m == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="stable")
    padded = np.concatenate([[0.0], x[order], [1.0]])
    gaps = np.maximum(padded[1:-1] - padded[:-2], padded[2:] - padded[1:-1])
    if m >= 2:
        gaps[0] = padded[2] - padded[1]
        gaps[-1] = padded[-2] - padded[-3]
    sig = np.empty(m)
    sig[order] = gaps
    return np.clip(sig, 1.0 / min(100.0, m + 2.0), 1.0)


def _bad_weights(bad_rank: np.ndarray, n_history: int, n_liars: int) -> np.ndarray:
    """Weights of the bad group's trials followed by its liars, as Optuna weighs its "above" group with the constant
    liar: one ramp (:func:`_age_weights`) over all of them in creation order, the liars (running trials) newest."""
    return _age_weights(np.concatenate([bad_rank, n_history + np.arange(n_liars)]))


def _age_weights(rank_index: np.ndarray) -> np.ndarray:
    """Optuna's weights: the 25 newest trials weigh 1, older ones ramp down linearly (by trial index)."""
    m = len(rank_index)
    if m < 25:
        return np.ones(m)
    ramp = np.concatenate([np.linspace(1.0 / m, 1.0, m - 25), np.ones(25)])
    # rank_index holds positions in the history (creation order for complete trials, pruned after them).
    age_order = np.argsort(np.argsort(rank_index, kind="stable"), kind="stable")
    return ramp[age_order]
