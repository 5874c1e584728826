"""Random search: independent uniform draws in the unit cube, mapped through each distribution.

Uniform in the unit cube means log-uniform for ``scale: log`` parameters and equal probability for every value of an
int or categorical parameter. Conditional parameters are drawn only when active (their coordinate of an inactive
draw is ignored). Duplicates of finished or pending trials are redrawn while the space has room.
"""

from __future__ import annotations

from .base import Sampler, SuggestContext
from .space import ParamValue


class RandomSampler(Sampler):
    name = "random"
    supports_multi_objective = True
    summary = "Independent uniform draws (log-uniform on log scales). A strong baseline for up to ~20 trials."
    supports_conditions = True
    supports_constraints = True

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        return self._random_unique(ctx, n)
