"""CMA-ES (Hansen 2016) for numeric search spaces, with the ``cmaes`` library (the one Optuna's CmaEsSampler uses).

CMA-ES works in the unit cube (:mod:`kubetune.engine.space`), so log scales are searched in log space and int and
stepped parameters as continuous coordinates rounded to their values. Categorical parameters have no such
embedding: a space holding one is rejected (``spec.py`` carries the same rule for the API server).

CMA-ES keeps a state (mean, step size, covariance, evolution paths) that every generation updates, while samplers
are stateless across calls (:mod:`kubetune.engine.base`). The state is therefore *replayed* from the history on
each call, as a restarted operator would:

* the usable finished trials (complete with a finite loss, and pruned), in history order (trial-number order), are
  cut into consecutive generations of ``populationSize`` trials; each full generation is told to the optimizer
  with the trials' own parameters (their unit coordinates, after rounding) and losses;
* within a generation, pruned trials rank behind every complete trial (a trial that got further first, then by its
  last intermediate loss), as in the other model-based samplers; failed trials carry no loss and belong to no
  generation (they are never repeated, like any tried configuration);
* with ``restartStrategy: ipop`` (the default), when the optimizer meets one of its stopping criteria after a
  generation, it restarts with a larger population (``incPopsize`` times, at most ``_MAX_POPULATION``) from a mean
  drawn uniformly from the cube by a generator seeded by the algorithm's seed and the restart count (IPOP-CMA-ES,
  Auger & Hansen 2005, as in Optuna);
* the trials after the last full generation and the pending trials are the current generation in flight: new
  configurations are drawn from the replayed state, with a generator seeded by the seed and the number of trials
  so far (so a batch of ``n`` is ``n`` draws of the same distribution), skipping configurations already tried or
  pending. When CMA-ES keeps proposing tried configurations (a converged distribution over int values), the batch
  is filled with random untried configurations.

Trials running across a generation boundary (``parallelTrials`` > 1, or a batch larger than what the generation
still needs) were drawn from an earlier state and are told to the generation they fall in by trial number. CMA-ES
tolerates such injected solutions: the ranking is what it uses, and its negative (active) weights are normalised by
each solution's distance. In a sequential experiment (one trial at a time) every trial is told to the generation it
was drawn from, which is plain CMA-ES.

Cost: a replay is one ``tell`` per generation, ``O(d^3 + popsize * d^2)`` each for ``d`` parameters. The sampler
keeps the states at the last ``_CHECKPOINTS`` generation boundaries with the trials they were built from; a call
whose history starts with those trials continues from the latest matching state instead of replaying everything
(the result is the same; it only saves time). A fresh sampler (after a restart) replays the whole history once.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from cmaes import CMA
from pydantic import Field

from ._unit import to_unit_matrix
from .base import Observation, ObservationState, Sampler, SamplerSettings, SuggestContext
from .space import CategoricalDistribution, ParamValue, SearchSpace

_MAX_POPULATION = 1000
"""The largest population restarts grow to (a ``tell`` holds ``popsize * d^2`` floats)."""
_CHECKPOINTS = 32
"""Generation-boundary states kept between calls."""
_DEFAULT_SIGMA0 = 1.0 / 6.0
"""A sixth of each parameter's range, Optuna's default."""
_ASK_ROUNDS = 8


class CmaEsSettings(SamplerSettings):
    sigma0: float | None = Field(
        None,
        alias="sigma0",
        ge=0.001,
        le=1.0,
        description="cmaes: initial step size as a fraction of each parameter's range (on its log scale where "
        "log); default 1/6.",
    )
    population_size: int | None = Field(
        None,
        alias="populationSize",
        ge=4,
        le=_MAX_POPULATION,
        description="cmaes: trials per generation; default 4 + floor(3 ln d) for d parameters.",
    )
    restart_strategy: Literal["none", "ipop"] = Field(
        "ipop",
        alias="restartStrategy",
        description="cmaes: ipop (default) restarts with a larger population when the search converges; none "
        "never restarts.",
    )
    inc_popsize: int = Field(
        2,
        alias="incPopsize",
        ge=1,
        le=10,
        description="cmaes: the factor the population grows by at each ipop restart. Default 2.",
    )


@dataclass
class _State:
    """The optimizer after a number of told trials."""

    cma: CMA
    restarts: int
    told: int
    """How many usable trials (complete or pruned) have been told."""


class CmaEsSampler(Sampler):
    name = "cmaes"
    Settings = CmaEsSettings
    multi_objective_refusal = "its evolution strategy ranks candidates by one objective"
    summary = ("CMA-ES: evolution strategy adapting a full covariance, for numeric (float/int) parameters only; "
               "good with hundreds of trials and correlated parameters.")

    def __init__(self, space: SearchSpace, **kwargs: object) -> None:
        super().__init__(space, **kwargs)  # type: ignore[arg-type]
        categorical = [n for n, d in space.dims if isinstance(d, CategoricalDistribution)]
        if categorical:
            raise ValueError(f"the cmaes algorithm searches float and int parameters only; {categorical[0]!r} is "
                             "categorical (use tpe or bayesian for categorical parameters)")
        s = self._s
        self._d = len(space)
        self._sigma0 = s.sigma0 if s.sigma0 is not None else _DEFAULT_SIGMA0
        self._popsize0 = s.population_size or 4 + math.floor(3 * math.log(self._d))
        self._lock = threading.Lock()
        self._told: list[Observation] = []
        self._checkpoints: list[_State] = []

    @property
    def _s(self) -> CmaEsSettings:
        return self.settings  # type: ignore[return-value]

    # -- suggestion ---------------------------------------------------------------------------------------------

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        state = self.replay(ctx.history)
        cma = copy.deepcopy(state.cma)  # asking decomposes the covariance in place; the checkpoint stays as told
        cma.reseed_rng(int(ctx.rng.integers(2**32)))
        out: list[dict[str, ParamValue]] = []
        draws = max(n, cma.population_size)
        for _ in range(_ASK_ROUNDS):
            cands = [self.space.from_unit(cma.ask().tolist()) for _ in range(draws)]
            out += self._take_unique(ctx, cands, n - len(out))
            if len(out) == n:
                return out
        return out + self._random_unique(ctx, n - len(out))

    # -- replay -------------------------------------------------------------------------------------------------

    def replay(self, history: Sequence[Observation]) -> _State:
        """The optimizer state after telling every full generation of ``history``."""
        usable = [o for o in history if _usable(o)]
        with self._lock:
            same = _common_prefix(self._told, usable)
            kept = [st for st in self._checkpoints if st.told <= same]
        state = kept[-1] if kept else _State(self._fresh(0), 0, 0)
        if len(usable) - state.told < state.cma.population_size:
            return state
        base = state.told
        X = self._unit(usable[base:])
        new: list[_State] = []
        while len(usable) - state.told >= state.cma.population_size:
            lam = state.cma.population_size
            values = _generation_values(usable[state.told:state.told + lam])
            cma = copy.deepcopy(state.cma)
            cma.tell([(X[state.told - base + i], values[i]) for i in range(lam)])
            state = _State(cma, state.restarts, state.told + lam)
            if self._s.restart_strategy == "ipop" and cma.should_stop():
                state = _State(self._fresh(state.restarts + 1), state.restarts + 1, state.told)
            new.append(state)
        with self._lock:
            self._checkpoints = [*kept, *new][-_CHECKPOINTS:]
            self._told = usable[:state.told]
        return state

    def _fresh(self, restarts: int) -> CMA:
        """The optimizer at the start of the search (``restarts == 0``) or of an ipop restart."""
        popsize = self._popsize0
        if restarts:
            popsize = min(popsize * self._s.inc_popsize ** restarts, _MAX_POPULATION)
            seed = 0 if self.seed is None else self.seed
            mean = np.random.default_rng([seed, restarts]).random(self._d)
        else:
            mean = np.full(self._d, 0.5)
        bounds = np.tile([0.0, 1.0], (self._d, 1))
        return CMA(mean=mean, sigma=self._sigma0, bounds=bounds, population_size=popsize, seed=0)

    def _unit(self, observations: Sequence[Observation]) -> np.ndarray:
        return to_unit_matrix(self.space, [o.params for o in observations])


def _common_prefix(a: Sequence[Observation], b: Sequence[Observation]) -> int:
    """How many leading observations ``a`` and ``b`` share."""
    k = 0
    for x, y in zip(a, b):
        if x is not y and x != y:
            break
        k += 1
    return k


def _usable(o: Observation) -> bool:
    if o.state is ObservationState.PRUNED:
        return True
    return o.state is ObservationState.COMPLETE and _finite(o.loss)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


_BIG = 1e300


def _generation_values(gen: Sequence[Observation]) -> list[float]:
    """Values to tell for one generation: complete trials their loss, pruned trials ranked behind them."""
    complete = [float(o.loss) for o in gen if o.state is ObservationState.COMPLETE]  # type: ignore[arg-type]
    pruned = sorted((i for i, o in enumerate(gen) if o.state is ObservationState.PRUNED),
                    key=lambda i: _pruned_order(gen[i]))
    values = [min(max(float(o.loss), -_BIG), _BIG) if o.state is ObservationState.COMPLETE else 0.0  # type: ignore[arg-type]
              for o in gen]
    if pruned:
        top = min(max(complete), _BIG) if complete else 0.0
        spread = (min(top - min(complete), _BIG) if complete else 0.0) or 1.0
        for rank, i in enumerate(pruned):
            values[i] = min(top + spread * (0.1 + 0.1 * rank / len(pruned)), 2 * _BIG)
    return values


def _pruned_order(o: Observation) -> tuple[float, float]:
    step = o.last_step if o.last_step is not None else -1
    last = o.intermediate[-1][1] if o.intermediate else o.loss
    return (-float(step), float(last) if last is not None and _finite(last) else math.inf)
