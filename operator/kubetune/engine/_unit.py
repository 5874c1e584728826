"""Shared helpers for model-based samplers: the history as arrays in the unit cube.

Model-based algorithms (``tpe``, ``bayesian``) work on ``[0, 1]^d`` (see :mod:`kubetune.engine.space`), so log
scales, steps and integers need no special handling. This module turns the history into

* ``X``: unit-cube coordinates of the trials the model learns from,
* ``y``: their losses, where pruned trials rank behind every complete trial, ordered by how far they got and by
  their last intermediate loss (failed trials carry no information about the objective and are left out; the base
  class still never repeats them),

and provides the quasi-random initial design shared by the model-based samplers.

In a conditional space (:attr:`SearchSpace.conditions`) a parameter that is inactive in a trial has no value; its
coordinate is NaN in ``X``, and :func:`active_mask` tells which coordinates of candidate points are active. Each
model decides what an inactive coordinate means to it (see ``tpe`` and ``bayesian``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field
from scipy.stats import qmc

from .base import Observation, ObservationState, Sampler, SamplerSettings, SuggestContext
from .pareto import nondominated_ranks
from .space import CategoricalDistribution, FloatDistribution, ParamValue, SearchSpace, _choice_key


class ModelSettings(SamplerSettings):
    """Settings shared by the model-based samplers (one field definition, so the CRD schema agrees)."""

    n_startup_trials: int = Field(
        10,
        alias="nStartupTrials",
        ge=1,
        le=1000,
        description="tpe, bayesian: number of initial quasi-random (scrambled Sobol') trials before the model is "
        "used; pending trials count toward it.",
    )


@dataclass(frozen=True)
class UnitHistory:
    """The usable history in unit coordinates; ``y`` is finite and lower is better."""

    X: np.ndarray  # (n, d)
    y: np.ndarray  # (n,)
    n_complete: int
    losses: np.ndarray | None = None
    """With several objectives: ``(n, m)`` finite losses of the (complete) trials; ``y`` is then each trial's
    non-domination rank."""
    constraints: np.ndarray | None = None
    """With outcome constraints: ``(n_complete, k)`` constraint values of the complete trials (the first
    ``n_complete`` rows), Optuna's convention (``<= 0`` holds), ``inf`` where a metric was not reported; else None."""

    @property
    def infeasible(self) -> np.ndarray:
        """``(n,)`` booleans: complete trials that violate a constraint (pruned trials never do)."""
        out = np.zeros(len(self.y), dtype=bool)
        if self.constraints is not None and len(self.constraints):
            out[: self.n_complete] = (self.constraints > 0).any(axis=1)
        return out


def to_unit_matrix(space: SearchSpace, params: Sequence[Mapping[str, ParamValue]]) -> np.ndarray:
    """Unit-cube coordinates of ``params`` as an ``(n, d)`` float array.

    Vectorised per dimension with the same formulas as each distribution's ``to_unit`` (checked against it by the
    sampler tests), because converting thousands of trials one value at a time dominates a TPE suggestion.
    """
    out = np.zeros((len(params), len(space)))
    if not params:
        return out
    on = [set(space.active_names(p)) for p in params] if space.conditional else None
    for j, (name, dist) in enumerate(space.dims):
        if on is not None and space.condition_of(name) is not None:
            # Conditional: NaN where inactive, the same formulas on the rows where it is active.
            rows = [i for i, a in enumerate(on) if name in a]
            out[:, j] = np.nan
            if rows:
                sub = SearchSpace(((name, dist),))
                out[rows, j] = to_unit_matrix(sub, [{name: params[i][name]} for i in rows])[:, 0]
            continue
        if isinstance(dist, CategoricalDistribution):
            k = len(dist.choices)
            lookup = {_choice_key(c): (i + 0.5) / k for i, c in enumerate(dist.choices)}
            out[:, j] = [lookup[_choice_key(p[name])] for p in params]
            continue
        v = np.array([float(p[name]) for p in params])
        if isinstance(dist, FloatDistribution):
            lo, hi = float(dist.low), float(dist.high)
        else:
            lo, hi = dist.edges
            if dist.log:
                v = np.maximum(v, lo)
        if dist.log:
            col = (np.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        elif math.isfinite(hi - lo):
            col = (v - lo) / (hi - lo)
        else:  # bounds near the float limit: the same ratio with halved terms, which stay finite
            col = (0.5 * v - 0.5 * lo) / (0.5 * hi - 0.5 * lo)
        out[:, j] = np.clip(col, 0.0, 1.0)
    return out


def active_mask(space: SearchSpace, U: np.ndarray) -> np.ndarray:
    """Which coordinates of the unit points ``U`` ``(n, d)`` are active (all of them without conditions): a
    conditional coordinate is active where its parent is and the parent's category is one of its condition's."""
    mask = np.ones(U.shape, dtype=bool)
    if not space.conditional:
        return mask
    index = {n: i for i, n in enumerate(space.names)}
    for j, name in enumerate(space.names):
        rule = space.condition_of(name)
        if rule is None:
            continue
        pj = index[rule[0]]
        parent = space.distributions[pj]
        assert isinstance(parent, CategoricalDistribution)
        k = len(parent.choices)
        allowed = np.array([_choice_key(c) in rule[1] for c in parent.choices])
        cat = np.clip((np.nan_to_num(U[:, pj], nan=0.0) * k).astype(int), 0, k - 1)
        mask[:, j] = mask[:, pj] & allowed[cat]
    return mask


def unit_history(space: SearchSpace, history: Sequence[Observation]) -> UnitHistory:
    """Complete trials with their loss, then pruned trials ranked behind them.

    A pruned trial that got further (larger last step) ranks before one that stopped earlier; among equal steps,
    the lower last intermediate loss ranks first. Pruned trials get synthetic losses above the worst complete loss
    so that every rank-based or value-based model sees them as worse than any complete trial.
    """
    if any(o.losses is not None for o in history):
        return _multi_objective_history(space, history)
    complete = [o for o in history if o.state is ObservationState.COMPLETE and _finite(o.loss)]
    pruned = [o for o in history if o.state is ObservationState.PRUNED]
    y_c = np.array([float(o.loss or 0.0) for o in complete], dtype=float)  # all finite (filtered above)
    params: list[Mapping[str, ParamValue]] = [o.params for o in complete]
    ys = list(y_c)
    if pruned:
        def order(o: Observation) -> tuple[float, float]:
            step = o.last_step if o.last_step is not None else -1
            last = o.intermediate[-1][1] if o.intermediate else o.loss
            return (-float(step), float(last) if last is not None and _finite(last) else math.inf)

        ranked = sorted(pruned, key=order)
        if len(y_c):
            top, spread = float(np.max(y_c)), float(np.ptp(y_c)) or 1.0
        else:
            top, spread = 0.0, 1.0
        for i, o in enumerate(ranked):
            params.append(o.params)
            ys.append(top + spread * (0.1 + 0.1 * i / max(len(ranked), 1)))
    return UnitHistory(X=to_unit_matrix(space, params), y=np.array(ys, dtype=float), n_complete=len(complete),
                       constraints=_constraint_matrix(complete))


def _constraint_matrix(complete: Sequence[Observation]) -> np.ndarray | None:
    """The complete trials' constraint values as :attr:`UnitHistory.constraints` (None without constraints)."""
    k = max((len(o.constraints) for o in complete), default=0)
    if not k:
        return None
    return np.array([list(o.constraints) if len(o.constraints) == k else [math.inf] * k for o in complete],
                    dtype=float).reshape(len(complete), k)


def _multi_objective_history(space: SearchSpace, history: Sequence[Observation]) -> UnitHistory:
    """Complete trials that reported every objective (pruning is not available with several objectives)."""
    complete = [o for o in history if o.state is ObservationState.COMPLETE and o.losses is not None
                and all(_finite(v) for v in o.losses)]
    m = max((len(o.losses or ()) for o in complete), default=0)
    complete = [o for o in complete if len(o.losses or ()) == m]
    Y = np.array([list(o.losses or ()) for o in complete], dtype=float).reshape(len(complete), m)
    y = nondominated_ranks(Y).astype(float) if len(complete) else np.zeros(0)
    return UnitHistory(X=to_unit_matrix(space, [o.params for o in complete]), y=y, n_complete=len(complete),
                       losses=Y, constraints=_constraint_matrix(complete))


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(float(v))


def sobol_unique(sampler: Sampler, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
    """Continue the sampler's scrambled Sobol' sequence at position ``len(history) + len(pending)``.

    The same design as the ``sobol`` algorithm, used as the initial design of the model-based samplers.
    """
    start = len(ctx.history) + len(ctx.pending)
    engine = qmc.Sobol(d=len(sampler.space), scramble=True, seed=0 if sampler.seed is None else sampler.seed)
    if start:
        engine.fast_forward(start)
    out: list[dict[str, ParamValue]] = []
    for _ in range(8):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # balance-properties warning for non powers of two
            pts = engine.random(max(2 * (n - len(out)), 1))
        out += sampler._take_unique(ctx, [sampler.space.from_unit(p) for p in pts], n - len(out))
        if len(out) == n:
            return out
    return out + sampler._random_unique(ctx, n - len(out))


def startup(
    sampler: Sampler, ctx: SuggestContext, n: int, n_startup: int
) -> tuple[list[dict[str, ParamValue]], UnitHistory | None]:
    """The initial design shared by the model-based samplers.

    Returns quasi-random points while fewer than ``n_startup`` trials exist, and the history in the unit cube.
    The history is ``None`` when the batch is already complete or the model has too little to learn from (the
    batch is then filled with random points).
    """
    started = len(ctx.history) + len(ctx.pending)
    out: list[dict[str, ParamValue]] = []
    if started < n_startup:
        out = sobol_unique(sampler, ctx, min(n, n_startup - started))
    hist = unit_history(sampler.space, ctx.history)
    if len(out) == n or len(hist.y) < 2:
        return out + sampler._random_unique(ctx, n - len(out)), None
    return out, hist


def quantize(space: SearchSpace, u: np.ndarray) -> np.ndarray:
    """Snap unit coordinates onto the values the space can represent (bin centres for ints and categories)."""
    return np.array([space.to_unit(space.from_unit(row)) for row in np.atleast_2d(u)], dtype=float)


def categorical_sizes(space: SearchSpace) -> list[int]:
    """Number of choices per dimension (0 for numeric dimensions)."""
    return [len(d.choices) if isinstance(d, CategoricalDistribution) else 0 for d in space.distributions]
