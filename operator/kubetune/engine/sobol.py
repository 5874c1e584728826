"""Quasi-random search with a scrambled Sobol' sequence (``scipy.stats.qmc``).

Sobol' points fill the unit cube far more evenly than independent random draws, which matters most for small
budgets. The sequence position is the number of trials created so far, so suggestions continue the same sequence
across calls and after a restart. A conditional parameter keeps its own coordinate, which is used only where it is
active. Points that quantize onto a configuration already tried are skipped.
"""

from __future__ import annotations

from ._unit import sobol_unique
from .base import Sampler, SuggestContext
from .space import ParamValue


class SobolSampler(Sampler):
    name = "sobol"
    supports_multi_objective = True
    summary = "Scrambled Sobol' low-discrepancy sequence: even coverage for small budgets."
    supports_conditions = True
    supports_constraints = True

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        return sobol_unique(self, ctx, n)
