"""Population-based training (PBT; Jaderberg et al. 2017, "Population Based Training of Neural Networks").

A population of ``populationSize`` *members* trains at once. A member's training is cut into *segments* of
``perturbationInterval`` reported steps; every segment is one trial, which restores the checkpoint its segment
starts from and writes its own. When a member's segment ends, the member's next segment is decided:

* **exploit and explore** when the member's last score is in the bottom ``quantileFraction`` of the population's
  last scores: the next segment restores the checkpoint of a member drawn uniformly from the top
  ``quantileFraction`` (its latest finished segment) with that member's hyperparameters *explored*: each
  parameter is resampled from its distribution with probability ``resampleProbability``, else a float or int is
  multiplied by one of ``perturbationFactors`` (drawn uniformly) and a categorical moves to a neighbouring value;
* **continue** otherwise: the next segment restores the member's own checkpoint with the same hyperparameters.

Reference: Ray Tune's ``PopulationBasedTraining`` (``python/ray/tune/schedulers/pbt.py``), whose semantics are
followed for the quantiles (members with a score, sorted; ``ceil(n * quantileFraction)`` on each side, at most
``floor(n / 2)``, none while fewer than two members have a score), ``explore`` (resample with
``resample_probability``, else a factor drawn from ``perturbation_factors``, default ``(1.2, 0.8)``, or the
neighbouring value of a categorical, each side with probability 1/2) and the defaults (``quantile_fraction`` 0.25,
``resample_probability`` 0.25). Deviations, each because Ray's behaviour is unsound for a bounded search space or
does not fit trials that are Jobs:

* an explored value is clipped into the parameter's bounds and put back on its grid (``step``, int), where Ray lets
  ``value * 1.2`` leave the range and truncates ints toward zero;
* a segment is a new trial (a new Job) that restores a checkpoint, not a paused actor that is reset in place;
* a member whose segment failed (or ended without the objective) is treated as in the bottom quantile: it exploits
  a top member when there is one, else it starts afresh (Ray would end such a trial with an error);
* generations are synchronous (Ray's ``synch=True``, the paper's appendix A.1): a member that finished step ``E``
  waits until every member finished ``E``, and all are ranked by their scores at ``E``. Ray's asynchronous default
  compares a member's fresh score with the others' older ones, taken at other steps; with segments that are Jobs
  starting whenever a slot frees up, that comparison favours whoever happens to finish last.

The sampler keeps nothing between calls (see :mod:`kubetune.engine.base`): :meth:`PBTSampler.next_segments` is a
function of the last two finished segments of each member, and its random draws are seeded by the experiment's
seed, the step and the member being decided, so a restarted operator that replays the same records decides the
same.
:meth:`Sampler.suggest` on its own draws the initial population (uniform, like random search).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field

from .base import Observation, Sampler, SamplerSettings, SuggestContext
from .space import CategoricalDistribution, FloatDistribution, IntDistribution, ParamValue, SearchSpace

MAX_POPULATION = 256
"""Bound on ``populationSize`` (the schema's maximum): per-member state is sized by it, never by the trials."""


class PBTSettings(SamplerSettings):
    population_size: int = Field(
        8, alias="populationSize", ge=4, le=MAX_POPULATION,
        description="pbt: how many members train (4 to 256; each member's segments are trials). Default 8.",
    )
    perturbation_interval: int = Field(
        5, alias="perturbationInterval", ge=1, le=1_000_000,
        description="pbt: the reported steps of one segment; after each segment a member continues, or "
        "exploits a better member's checkpoint and explores its hyperparameters. Default 5.",
    )
    quantile_fraction: float = Field(
        0.25, alias="quantileFraction", gt=0, le=0.5,
        description="pbt: members in the bottom fraction by their last score exploit one of the top fraction "
        "(0 < q <= 0.5). Default 0.25.",
    )
    resample_probability: float = Field(
        0.25, alias="resampleProbability", ge=0, le=1,
        description="pbt: when exploring, the probability of drawing a parameter afresh from its distribution "
        "instead of perturbing it. Default 0.25.",
    )
    perturbation_factors: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        [1.2, 0.8], alias="perturbationFactors", min_length=1, max_length=8,
        description="pbt: a perturbed float or int parameter is multiplied by one of these, drawn uniformly "
        "(each > 0 and <= 100), then clipped into its bounds. Default [1.2, 0.8].",
    )


@dataclass(frozen=True)
class Segment:
    """One trial of a PBT member, as the sampler sees it."""

    number: int
    """The trial's number."""
    params: Mapping[str, ParamValue]
    member: int
    start: int
    """The step the segment starts from (the restored checkpoint's step; 0 for a fresh start)."""
    end: int
    """The step the segment trains to."""
    finished: bool
    loss: float | None = None
    """The finished segment's objective oriented for minimization; None when it has none (failed, no metric)."""


@dataclass(frozen=True)
class NextSegment:
    """A segment to start: its member, hyperparameters, the trial whose checkpoint it restores and its steps."""

    member: int
    params: dict[str, ParamValue]
    parent: int | None
    """The number of the trial whose checkpoint this segment restores; None to start afresh."""
    start: int
    end: int
    exploited: bool = False
    """Whether the checkpoint is another member's (exploit and explore)."""


def quantiles(scored: Sequence[Segment], fraction: float) -> tuple[list[Segment], list[Segment]]:
    """The bottom and the top ``fraction`` of ``scored`` (segments with a loss), Ray Tune's ``_quantiles``:
    sorted by loss (worst = highest loss first; ties by member), ``ceil(n * fraction)`` on each side but at most
    ``floor(n / 2)``, none while fewer than two are scored."""
    ranked = sorted(scored, key=lambda s: (-(s.loss if s.loss is not None else math.inf), s.member))
    n = len(ranked)
    if n <= 1:
        return [], []
    k = math.ceil(n * fraction)
    if k > n / 2:
        k = n // 2
    return ranked[:k], ranked[n - k:]


class PBTSampler(Sampler):
    name = "pbt"
    Settings = PBTSettings
    multi_objective_refusal = "its members are ranked by one objective to pick whom to copy"
    summary = ("Population-based training: populationSize members train in segments of perturbationInterval "
               "steps; after each, the bottom quantile restores a top member's checkpoint with perturbed "
               "hyperparameters (needs spec.checkpoints).")

    def __init__(self, space: SearchSpace, **kwargs: object) -> None:
        super().__init__(space, **kwargs)  # type: ignore[arg-type]
        s: PBTSettings = self.settings  # type: ignore[assignment]
        self.population = s.population_size
        self.interval = s.perturbation_interval
        self.fraction = s.quantile_fraction
        self.resample = s.resample_probability
        self.factors = tuple(s.perturbation_factors)

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        return self._random_unique(ctx, n)

    def remaining(self, history: Sequence[Observation], pending: Sequence[Mapping[str, ParamValue]]) -> int | None:
        """Unbounded: segments repeat configurations by design, so a finite space is never used up."""
        return None

    # -- segments -----------------------------------------------------------------------------------------------

    def next_segments(self, recent: Mapping[int, Sequence[Segment]], busy: Sequence[int], n: int) -> list[NextSegment]:
        """Up to ``n`` segments to start now.

        ``recent`` maps a member to its last (at most two) *finished* segments, oldest first (see
        :func:`kubetune.plan.recent_segments`); ``busy`` are the members with a segment pending or running.
        Generations are synchronous: members that never ran start first (lowest member first); then the members at
        the population's lowest step ``E`` (every member has finished a segment ending at ``E``) are decided, by
        the population's scores at ``E`` (a member one generation ahead is scored by its segment ending at ``E``).
        A member that finished ``E`` while others have not waits. A decision depends on ``E``, the member and the
        segments ending at ``E`` only, so it is the same whichever plan makes it (also after a restart). At most
        ``populationSize`` members exist, so this is O(populationSize log populationSize)."""
        busy_set = set(busy)
        out: list[NextSegment] = []
        fresh = [m for m in range(self.population) if m not in recent and m not in busy_set]
        for m in fresh[:n]:
            rng = self._segment_rng(0, m)
            params = self.space.from_unit(rng.random(len(self.space)).tolist())
            out.append(NextSegment(m, self._clean(params), None, 0, self.interval))
        if len(recent) < self.population or len(out) >= n:
            return out  # the first generation is not complete yet
        e = min(segs[-1].end for segs in recent.values())
        at_e = {m: next((s for s in reversed(segs) if s.end == e), None) for m, segs in recent.items()}
        scored = [s for s in at_e.values() if s is not None and s.loss is not None and math.isfinite(s.loss)]
        bottom, top = quantiles(scored, self.fraction)
        bottom_members = {s.member for s in bottom}
        for m in sorted(recent):
            s = recent[m][-1]
            if len(out) >= n:
                break
            if m in busy_set or s.end != e:
                continue
            rng = self._segment_rng(e, m)
            failed = s.loss is None or not math.isfinite(s.loss)
            if (failed or m in bottom_members) and top:
                donor = top[int(rng.integers(len(top)))]
                params = self.explore(donor.params, rng)
                out.append(NextSegment(m, params, donor.number, e, e + self.interval, exploited=True))
            elif failed:  # nobody to learn from: start this member afresh
                params = self._clean(self.space.from_unit(rng.random(len(self.space)).tolist()))
                out.append(NextSegment(m, params, None, 0, self.interval))
            else:
                out.append(NextSegment(m, dict(s.params), s.number, e, e + self.interval))
        return out

    def explore(self, params: Mapping[str, ParamValue], rng: np.random.Generator) -> dict[str, ParamValue]:
        """``params`` explored (see the module docstring), every value back in the space."""
        out: dict[str, ParamValue] = {}
        for name, dist in self.space.dims:
            value = params[name]
            if rng.random() < self.resample:
                out[name] = dist.from_unit(float(rng.random()))
                continue
            if isinstance(dist, CategoricalDistribution):
                k = dist.index(value) if dist.contains(value) else 0
                k = max(0, k - 1) if rng.random() > 0.5 else min(dist.n_values - 1, k + 1)
                out[name] = dist.value(k)
                continue
            factor = self.factors[int(rng.integers(len(self.factors)))]
            assert isinstance(dist, (FloatDistribution, IntDistribution))
            try:
                moved = float(value) * factor
            except (TypeError, ValueError, OverflowError):
                moved = float(dist.low)
            moved = min(max(moved, float(dist.low)), float(dist.high)) if math.isfinite(moved) else float(dist.high)
            out[name] = dist.from_unit(dist.to_unit(round(moved) if isinstance(dist, IntDistribution) else moved))
        return self._clean(out)

    def _segment_rng(self, step: int, member: int) -> np.random.Generator:
        """The draws that decide ``member``'s segment from ``step``: from the seed, the step and the member, so a
        replay (or another plan) decides the same."""
        seed = self.seed if self.seed is not None else 0
        digest = hashlib.sha256(f"{self.name}:segment:{seed}:{step}:{member}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))
