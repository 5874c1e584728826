"""The algorithms ``spec.algorithm.name`` may name, one module each."""

from __future__ import annotations

from collections.abc import Mapping

from .base import Sampler, SamplerSettings
from .bayesian import BayesianSampler
from .cmaes import CmaEsSampler
from .grid import GridSampler
from .hyperband import HyperbandSampler
from .pbt import PBTSampler
from .random import RandomSampler
from .sobol import SobolSampler
from .space import SearchSpace
from .tpe import TPESampler

SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls for cls in (RandomSampler, GridSampler, SobolSampler, TPESampler, BayesianSampler,
                             HyperbandSampler, CmaEsSampler, PBTSampler)
}

DEFAULT_ALGORITHM = "bayesian"


def sampler_class(name: str) -> type[Sampler]:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(sorted(SAMPLERS))}") from None


def make_sampler(
    name: str,
    space: SearchSpace,
    *,
    seed: int | None = None,
    settings: SamplerSettings | Mapping[str, object] | None = None,
    objectives: int = 1,
) -> Sampler:
    return sampler_class(name)(space, seed=seed, settings=settings, objectives=objectives)
