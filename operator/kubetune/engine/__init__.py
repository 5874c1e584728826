"""The suggestion engine: search spaces and algorithms. Imports nothing from the operator or Kubernetes."""

from .base import Observation, ObservationState, Sampler, SamplerSettings
from .registry import DEFAULT_ALGORITHM, SAMPLERS, make_sampler, sampler_class
from .space import (
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    ParamValue,
    SearchSpace,
)

__all__ = [
    "CategoricalDistribution",
    "DEFAULT_ALGORITHM",
    "Distribution",
    "FloatDistribution",
    "IntDistribution",
    "Observation",
    "ObservationState",
    "ParamValue",
    "SAMPLERS",
    "Sampler",
    "SamplerSettings",
    "SearchSpace",
    "make_sampler",
    "sampler_class",
]
