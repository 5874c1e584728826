"""The base class every suggestion algorithm implements.

An algorithm ("sampler") is *stateless across calls*: each call to :meth:`Sampler.suggest` receives the whole
history of the experiment and the configurations still pending. Nothing is kept between calls, so

* a restarted operator that replays the same history gets the same suggestions (for a seeded sampler), and
* the Kubernetes backend and the local runner can share one implementation without sharing memory.

Samplers always *minimize* ``Observation.loss``; the caller turns ``maximize`` objectives into losses by negation.

Writing a new algorithm:

1. subclass :class:`Sampler`, set ``name`` (the value of ``spec.algorithm.name``) and, if it takes settings, a
   ``Settings`` pydantic model (camelCase aliases; every field optional with a default);
2. implement :meth:`Sampler._suggest` returning ``n`` configurations in the unit cube or as parameter dicts;
3. register it in :mod:`kubetune.engine.registry`;
4. it must pass ``tests/unit/test_sampler_contract.py``, which runs the same contract on every registered sampler;
5. set ``supports_conditions = True`` once it handles conditional spaces (:attr:`SearchSpace.conditions`): it then
   suggests active parameters only and its model ignores inactive ones. A sampler that does not is refused a
   conditional space at construction (so at admission of the experiment) with a clear message;
6. set ``supports_multi_objective = True`` once it handles several objectives (``Observation.losses``); a sampler
   that does not is refused ``objectives > 1`` at construction with a clear message.
"""

from __future__ import annotations

import enum
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from .space import ParamValue, SearchSpace


class ObservationState(str, enum.Enum):
    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"


@dataclass(frozen=True)
class Observation:
    """One finished trial as an algorithm sees it."""

    params: Mapping[str, ParamValue]
    state: ObservationState
    loss: float | None = None
    """The objective oriented for minimization; ``None`` when the trial failed before reporting."""
    intermediate: tuple[tuple[int, float], ...] = ()
    """``(step, loss)`` pairs reported while the trial ran (oriented like ``loss``)."""
    losses: tuple[float, ...] | None = None
    """With several objectives (``spec.objectives``): every objective oriented for minimization, in the spec's
    order, on a complete trial that reported them all (``loss`` is then None); None otherwise."""
    constraints: tuple[float, ...] = ()
    """With outcome constraints (``spec.constraints``), on a complete trial: one value per constraint in the spec's
    order, Optuna's convention (``<= 0`` when it holds, the amount above 0 is the violation; ``inf`` when the trial
    did not report the metric). Empty on failed and pruned trials (they have no feasibility) and without
    constraints."""

    @property
    def feasible(self) -> bool:
        """Whether every constraint holds (True without constraints)."""
        return all(c <= 0 for c in self.constraints)

    @property
    def last_step(self) -> int | None:
        return self.intermediate[-1][0] if self.intermediate else None


class SamplerSettings(BaseModel):
    """Base for per-algorithm settings: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class NoSettings(SamplerSettings):
    pass


@dataclass
class SuggestContext:
    """Everything a sampler may read while suggesting; built by :meth:`Sampler.suggest`."""

    history: Sequence[Observation]
    pending: Sequence[Mapping[str, ParamValue]]
    rng: np.random.Generator
    seen: set[tuple[object, ...]] = field(default_factory=set)


class Sampler(ABC):
    """Suggests configurations to try next.

    Subclasses set :attr:`name` and optionally :attr:`Settings`, and implement :meth:`_suggest`.
    """

    name: ClassVar[str]
    Settings: ClassVar[type[SamplerSettings]] = NoSettings
    summary: ClassVar[str] = ""
    warm_start: ClassVar[bool] = False
    """Whether the algorithm learns from observations of earlier experiments (``spec.warmStart``); the spec admits
    a warm start only for algorithms that set it."""
    supports_conditions: ClassVar[bool] = False
    """Whether the sampler handles conditional parameters (``when``); see the module docstring."""
    supports_multi_objective: ClassVar[bool] = False
    """Whether the sampler handles several objectives (``Observation.losses``); see the module docstring."""
    multi_objective_refusal: ClassVar[str] = "it models a single objective"
    """Why a sampler that does not support several objectives refuses them (part of its admission message)."""
    supports_constraints: ClassVar[bool] = False
    """Whether the sampler accepts outcome constraints (``Observation.constraints``): the spec admits
    ``constraints`` only for algorithms that set it (see :data:`kubetune.spec.CONSTRAINT_ALGORITHMS`)."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int | None = None,
        settings: SamplerSettings | Mapping[str, object] | None = None,
        objectives: int = 1,
    ) -> None:
        if space.conditional and not type(self).supports_conditions:
            raise ValueError(f"the {self.name} algorithm does not support conditional parameters (parameters with "
                             "when); remove the conditions or choose another algorithm")
        if objectives > 1 and not type(self).supports_multi_objective:
            raise ValueError(f"the {self.name} algorithm does not support several objectives "
                             f"({self.multi_objective_refusal}); use tpe, random, sobol or grid with objectives")
        self.space = space
        self.seed = seed
        self.objectives = objectives
        if settings is None:
            settings = {}
        self.settings = settings if isinstance(settings, SamplerSettings) else self.Settings.model_validate(settings)

    # -- public API ---------------------------------------------------------------------------------------------

    def suggest(
        self,
        history: Sequence[Observation],
        pending: Sequence[Mapping[str, ParamValue]] = (),
        n: int = 1,
        *,
        known: AbstractSet[tuple[object, ...]] | None = None,
    ) -> list[dict[str, ParamValue]]:
        """Return up to ``n`` new configurations.

        ``history`` holds finished trials in creation order; ``pending`` the configurations of trials still
        running. The result avoids every configuration in both whenever the space has room for it, and never
        repeats a configuration within the batch. It is shorter than ``n`` only when the space is exhausted
        (see :meth:`remaining`).

        ``known``, when given, is the set of keys (:meth:`SearchSpace.key`) of the configurations in ``history``,
        kept by a caller that adds to it as trials finish instead of hashing every configuration on every call;
        the result is the same as without it.
        """
        if n <= 0:
            return []
        remaining = self.remaining(history, pending) if known is None else self.remaining_known(history, pending,
                                                                                                 known)
        if remaining is not None:
            n = min(n, remaining)
            if n <= 0:
                return []
        ctx = SuggestContext(history=history, pending=pending, rng=self._rng(len(history) + len(pending)))
        if known is None:
            known = {self.space.key(o.params) for o in history}
        ctx.seen = set(known) | {self.space.key(p) for p in pending}
        out = self._suggest(ctx, n)
        return [self._clean(p) for p in out][:n]

    def remaining(self, history: Sequence[Observation], pending: Sequence[Mapping[str, ParamValue]]) -> int | None:
        """How many distinct configurations are left to try, or ``None`` when unbounded."""
        size = self.space.grid_size()
        if size is None:
            return None
        tried = {self.space.key(o.params) for o in history} | {self.space.key(p) for p in pending}
        return max(size - len(tried), 0)

    def remaining_known(
        self,
        history: Sequence[Observation],
        pending: Sequence[Mapping[str, ParamValue]],
        known: AbstractSet[tuple[object, ...]],
    ) -> int | None:
        """:meth:`remaining`, given the set of keys of the configurations in ``history`` (see :meth:`suggest`)."""
        if type(self).remaining is not Sampler.remaining:  # a sampler that counts in its own way
            return self.remaining(history, pending)
        size = self.space.grid_size()
        if size is None:
            return None
        fresh = {self.space.key(p) for p in pending} - known
        return max(size - len(known) - len(fresh), 0)

    # -- for subclasses -----------------------------------------------------------------------------------------

    @abstractmethod
    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        """Return ``n`` configurations (dicts of parameter values)."""

    def _rng(self, salt: int) -> np.random.Generator:
        """A generator determined by the seed and ``salt`` (the number of trials so far) when seeded."""
        if self.seed is None:
            return np.random.default_rng()
        digest = hashlib.sha256(f"{self.name}:{self.seed}:{salt}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def _take_unique(
        self, ctx: SuggestContext, candidates: list[dict[str, ParamValue]], n: int
    ) -> list[dict[str, ParamValue]]:
        """Pick up to ``n`` candidates not yet seen, marking them seen."""
        out: list[dict[str, ParamValue]] = []
        for c in candidates:
            k = self.space.key(c)
            if k in ctx.seen:
                continue
            ctx.seen.add(k)
            out.append(c)
            if len(out) == n:
                break
        return out

    def _random_unique(self, ctx: SuggestContext, n: int, max_tries: int = 64) -> list[dict[str, ParamValue]]:
        """Uniform random configurations not seen yet (falls back to repeats only for a tiny exhausted space)."""
        out: list[dict[str, ParamValue]] = []
        tries = 0
        while len(out) < n and tries < max_tries:
            batch = ctx.rng.random((max(n - len(out), 1) * 2, len(self.space)))
            out += self._take_unique(ctx, [self.space.from_unit(row) for row in batch], n - len(out))
            tries += 1
        return out

    def _clean(self, params: Mapping[str, ParamValue]) -> dict[str, ParamValue]:
        """Plain Python values only (no numpy scalars), re-quantized into the space."""
        out: dict[str, ParamValue] = {}
        on = set(self.space.active_names(params)) if self.space.conditional else None
        for name, dist in self.space.dims:
            if on is not None and name not in on:
                continue
            v = params[name]
            if isinstance(v, np.generic):
                v = v.item()
            if not dist.contains(v):
                v = dist.from_unit(dist.to_unit(v))
            out[name] = v
        return out
