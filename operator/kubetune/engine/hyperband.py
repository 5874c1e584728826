"""Hyperband (Li et al. 2018) as brackets of asynchronous successive halving (ASHA, Li et al. 2020).

One int parameter of the search space is the *resource* (``settings.resourceParameter``: epochs, iterations, ...).
Hyperband never searches it: it sets it. Every other parameter is drawn at random, as in the paper.

The resource ladder has ``s_max + 1`` rungs ending at ``maxResource``: ``r_k = maxResource / eta^(s_max - k)``
(rounded onto the parameter's values), with ``s_max = floor(log_eta(maxResource / minResource))``. Bracket ``s``
(``s = s_max .. 0``) starts new configurations at rung ``s_max - s``: bracket ``s_max`` tries many configurations
on the smallest resource, bracket 0 runs a few at the full resource. New configurations are spread over the
brackets in proportion to Hyperband's bracket sizes ``n_s = ceil((s_max + 1) / (s + 1) * eta^s)`` (a deterministic
low-discrepancy assignment, so every bracket progresses from the start instead of one after the other).

Within a bracket, promotion is asynchronous: once ``m`` trials of the bracket finished at rung ``k``, the best
``floor(m / eta)`` of them are promoted, i.e. the same configuration is suggested again with the resource of rung
``k + 1``. Promotions come before new configurations, higher rungs first. Failed and pruned trials finish a rung
without being promotable. Ties on the loss go to the trial that finished earlier in the history.

A promoted configuration is a new trial that starts from scratch with the larger resource (a trial may resume from
its own checkpoint, keyed by its other parameters, to save that work). Everything is derived from the history and
the pending trials, so the sampler stays stateless like every other algorithm.

Conditional parameters are drawn only when active, and a lineage holds its active parameters only (the resource
itself cannot be conditional).

Configurations are identified by their *lineage*: all parameters except the resource. A trial whose resource is
not on the ladder (e.g. the settings changed) keeps its lineage taken but is never promoted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import Field

from .base import Observation, ObservationState, Sampler, SamplerSettings, SuggestContext
from .space import IntDistribution, ParamValue, SearchSpace

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_ENUMERATE_LIMIT = 4096


class HyperbandSettings(SamplerSettings):
    resource_parameter: str | None = Field(
        None,
        alias="resourceParameter",
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$",
        description="hyperband (required): the int parameter that is the resource (epochs, iterations, ...); "
        "hyperband sets it on the rungs' values instead of searching it.",
    )
    min_resource: int | None = Field(
        None,
        alias="minResource",
        ge=1,
        le=1_000_000,
        description="hyperband: the smallest resource a configuration is run with; default the resource "
        "parameter's min.",
    )
    max_resource: int | None = Field(
        None,
        alias="maxResource",
        ge=1,
        le=1_000_000,
        description="hyperband: the full resource (the top rung); default the resource parameter's max.",
    )
    reduction_factor: int = Field(
        3,
        alias="reductionFactor",
        ge=2,
        le=10,
        description="hyperband: eta; rungs are eta times apart and the top 1/eta of a rung is promoted. "
        "Default 3.",
    )


@dataclass
class _Lineage:
    """One configuration (all parameters but the resource) and its trials by rung."""

    key: tuple[object, ...]
    params: dict[str, ParamValue]
    base: int | None = None
    """The ladder index it started on (which fixes its bracket); ``None`` for an off-ladder start."""
    finished: dict[int, tuple[float, int]] = field(default_factory=dict)
    """Rung index -> (loss or +inf when not promotable, position in the history)."""
    started: set[int] = field(default_factory=set)
    """Rung indexes with a trial, finished or pending."""


class HyperbandSampler(Sampler):
    name = "hyperband"
    Settings = HyperbandSettings
    multi_objective_refusal = "successive halving promotes trials by one objective"
    summary = ("Hyperband: brackets of asynchronous successive halving over an int resource parameter "
               "(settings.resourceParameter, e.g. epochs), so most configurations get a small budget.")
    supports_conditions = True

    def __init__(self, space: SearchSpace, **kwargs: object) -> None:
        super().__init__(space, **kwargs)  # type: ignore[arg-type]
        s: HyperbandSettings = self.settings  # type: ignore[assignment]
        if s.resource_parameter is None:
            raise ValueError("the hyperband algorithm needs settings.resourceParameter: the int parameter used as "
                             "the resource (e.g. epochs)")
        dists = dict(space.dims)
        if s.resource_parameter not in dists:
            raise ValueError(f"settings.resourceParameter {s.resource_parameter!r} is not a parameter")
        dist = dists[s.resource_parameter]
        if not isinstance(dist, IntDistribution):
            raise ValueError("settings.resourceParameter must name an int parameter")
        if space.condition_of(s.resource_parameter) is not None:
            raise ValueError("settings.resourceParameter must name a parameter without a condition (when)")
        if len(space) < 2:
            raise ValueError("the hyperband algorithm needs at least one parameter besides settings.resourceParameter")
        lo = dist.low if s.min_resource is None else s.min_resource
        hi = dist.high if s.max_resource is None else s.max_resource
        if lo < 1:
            raise ValueError("the resource starts at 1: set settings.minResource, or a min of at least 1 for the "
                             "resource parameter")
        if not dist.low <= lo < hi <= dist.high:
            raise ValueError("settings.minResource must be less than settings.maxResource, both within the "
                             "resource parameter's min and max")
        self.resource = s.resource_parameter
        self.eta = s.reduction_factor
        self.ladder = _ladder(dist, lo, hi, self.eta)
        self.s_max = len(self.ladder) - 1
        # Bracket s starts on ladder index s_max - s; its share of new configurations is Hyperband's n_s.
        sizes = [_bracket_size(self.s_max, s, self.eta) for s in range(self.s_max + 1)]
        total = sum(sizes)
        self._shares = [n / total for n in sizes]
        self._rungs = {v: i for i, v in enumerate(self.ladder)}
        self._others = [(n, d) for n, d in space.dims if n != self.resource]
        self._other_space = SearchSpace(tuple(self._others), space.conditions) if space.conditional else None

    # -- the bracket structure ----------------------------------------------------------------------------------

    def bracket_of_new(self, j: int) -> int:
        """Bracket ``s`` of the ``j``-th configuration (0-based): a golden-ratio sequence over the shares."""
        u = (0.5 + j * _GOLDEN) % 1.0
        acc = 0.0
        for s in range(self.s_max, -1, -1):  # the exploratory brackets first on the unit interval
            acc += self._shares[s]
            if u < acc:
                return s
        return 0

    def lineage_key(self, params: Mapping[str, ParamValue]) -> tuple[object, ...]:
        full = self.space.key(params)
        return tuple(k for (n, _), k in zip(self.space.dims, full) if n != self.resource)

    def _rung_index(self, value: ParamValue) -> int | None:
        try:
            return self._rungs.get(int(value))
        except (ValueError, TypeError, OverflowError):
            return None

    def lineages(
        self, history: Sequence[Observation], pending: Sequence[Mapping[str, ParamValue]]
    ) -> list[_Lineage]:
        by_key: dict[tuple[object, ...], _Lineage] = {}

        def get(params: Mapping[str, ParamValue]) -> _Lineage:
            key = self.lineage_key(params)
            lin = by_key.get(key)
            if lin is None:
                lin = by_key[key] = _Lineage(key, {n: params[n] for n, _ in self._others if n in params})
            return lin

        foreign: set[tuple[object, ...]] = set()
        for params in [o.params for o in history] + list(pending):
            lin = get(params)
            idx = self._rung_index(params[self.resource])
            if idx is None:
                foreign.add(lin.key)
            else:
                lin.started.add(idx)
        for lin in by_key.values():
            lin.base = min(lin.started) if lin.started and lin.key not in foreign else None
        for pos, o in enumerate(history):
            idx = self._rung_index(o.params[self.resource])
            if idx is None:
                continue
            ok = o.state is ObservationState.COMPLETE and o.loss is not None and math.isfinite(o.loss)
            loss = float(o.loss) if ok else math.inf  # type: ignore[arg-type]
            lin = by_key[self.lineage_key(o.params)]
            lin.finished.setdefault(idx, (loss, pos))
        return list(by_key.values())

    def promotions(self, lineages: Sequence[_Lineage]) -> list[dict[str, ParamValue]]:
        """Configurations to run on their next rung now, higher rungs first."""
        out: list[dict[str, ParamValue]] = []
        # Group once by (rung, base rung): the ladder has up to ~1,000 rungs for a resource range near the float
        # limit, so scanning every lineage for every (rung, bracket) pair would not be bounded.
        groups: dict[tuple[int, int], list[_Lineage]] = {}
        for lin in lineages:
            if lin.base is None:
                continue
            for k in lin.finished:
                if lin.base <= k < self.s_max:
                    groups.setdefault((k, lin.base), []).append(lin)
        for k, base in sorted(groups, key=lambda kb: (-kb[0], kb[1])):  # higher rungs first, then by bracket
            rung = groups[(k, base)]
            quota = len(rung) // self.eta
            if quota == 0:
                continue
            ranked = sorted(rung, key=lambda lin: lin.finished[k])[:quota]
            for lin in ranked:
                if math.isinf(lin.finished[k][0]) or any(i > k for i in lin.started):
                    continue
                out.append({**lin.params, self.resource: self.ladder[k + 1]})
        return out

    # -- Sampler ------------------------------------------------------------------------------------------------

    def remaining(self, history: Sequence[Observation], pending: Sequence[Mapping[str, ParamValue]]) -> int | None:
        size = self._other_size()
        if size is None:
            return None
        lineages = self.lineages(history, pending)
        return max(size - len(lineages), 0) + len(self.promotions(lineages))

    def _other_size(self) -> int | None:
        if self._other_space is not None:
            return self._other_space.grid_size()
        size = 1
        for _, d in self._others:
            n = d.n_values
            if n is None:
                return None
            size *= n
        return size

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        lineages = self.lineages(ctx.history, ctx.pending)
        out = self.promotions(lineages)[:n]
        seen = {lin.key for lin in lineages}
        started = len(lineages)
        while len(out) < n:
            fresh = self._new_config(ctx, seen)
            if fresh is None:
                break
            s = self.bracket_of_new(started)
            started += 1
            fresh[self.resource] = self.ladder[self.s_max - s]
            out.append(fresh)
        return out

    def _new_config(self, ctx: SuggestContext, seen: set[tuple[object, ...]]) -> dict[str, ParamValue] | None:
        for _ in range(64):
            params = self.space.from_unit(ctx.rng.random(len(self.space)).tolist())
            key = self.lineage_key(params)
            if key not in seen:
                seen.add(key)
                return params
        # Random draws keep hitting taken configurations: the space is finite and nearly used up. A large grid is
        # walked by index from a random start instead of listed. Every skipped index is a distinct taken lineage, so the
        # walk looks at no more than len(seen) + 1 indices, whatever the grid size.
        size = self._other_size()
        if size is None:
            return None
        if self._other_space is not None:
            return self._walk_conditional(ctx, seen, size)
        if size <= _ENUMERATE_LIMIT:  # small: a uniform choice among the free configurations
            names = [n for n, _ in self._others]
            free = []
            for values in itertools.product(*(d.grid() or [] for _, d in self._others)):
                params = dict(zip(names, values))
                params[self.resource] = self.ladder[-1]
                if self.lineage_key(params) not in seen:
                    free.append(params)
            if not free:
                return None
            params = free[int(ctx.rng.integers(len(free)))]
            seen.add(self.lineage_key(params))
            return params
        start = int(ctx.rng.integers(size)) if size <= 2**62 else int(ctx.rng.integers(2**62))
        for i in range(min(size, len(seen) + 1)):
            index = (start + i) % size
            params = {self.resource: self.ladder[-1]}
            for name, dist in reversed(self._others):
                n = dist.n_values
                assert n is not None
                index, r = divmod(index, n)
                params[name] = dist.value(r)
            key = self.lineage_key(params)
            if key not in seen:
                seen.add(key)
                return params
        return None

    def _walk_conditional(self, ctx: SuggestContext, seen: set[tuple[object, ...]],
                          size: int) -> dict[str, ParamValue] | None:
        """:meth:`_new_config`'s walk over a conditional space's grid of active combinations, by index."""
        assert self._other_space is not None
        start = int(ctx.rng.integers(size)) if size <= 2**62 else int(ctx.rng.integers(2**62))
        for i in range(min(size, len(seen) + 1)):
            params = {**self._other_space.point((start + i) % size), self.resource: self.ladder[-1]}
            params = {n: params[n] for n in self.space.names if n in params}
            key = self.lineage_key(params)
            if key not in seen:
                seen.add(key)
                return params
        return None


def _bracket_size(s_max: int, s: int, eta: int) -> int:
    """Hyperband's ``n_s = ceil((s_max + 1) / (s + 1) * eta^s)``; in integers once ``eta^s`` leaves float range."""
    power: int = eta**s
    if power < 2**53:
        return math.ceil((s_max + 1) / (s + 1) * power)
    return -(-((s_max + 1) * power) // (s + 1))


def _ladder(dist: IntDistribution, lo: int, hi: int, eta: int) -> list[int]:
    """The rungs' resources: ``hi / eta^i`` for ``i = s_max .. 0``, on the parameter's values, distinct, >= lo."""
    step = dist.step
    lo_v = dist.low + -(-(lo - dist.low) // step) * step  # the smallest value >= lo
    hi_v = dist.low + ((hi - dist.low) // step) * step  # the largest value <= hi
    if hi_v <= lo_v:
        return [hi_v]
    s_max = int(math.floor(math.log(hi_v / lo_v) / math.log(eta) + 1e-9))
    out: list[int] = []
    for i in range(s_max, -1, -1):
        v = dist.low + round((hi_v / eta ** i - dist.low) / step) * step
        v = min(max(v, lo_v), hi_v)
        if not out or v > out[-1]:
            out.append(v)
    return out
