"""Quasi-random search with a scrambled Sobol' sequence (``scipy.stats.qmc``).

Sobol' points fill the unit cube far more evenly than independent random draws, which matters most for small
budgets. The sequence position is the number of trials created so far, so suggestions continue the same sequence
across calls and after a restart. Points that quantize onto a configuration already tried are skipped.
"""

from __future__ import annotations

import warnings

from scipy.stats import qmc

from .base import Sampler, SuggestContext
from .space import ParamValue


class SobolSampler(Sampler):
    name = "sobol"
    summary = "Scrambled Sobol' low-discrepancy sequence: even coverage for small budgets."

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        start = len(ctx.history) + len(ctx.pending)
        seed = 0 if self.seed is None else self.seed
        engine = qmc.Sobol(d=len(self.space), scramble=True, seed=seed)
        if start:
            engine.fast_forward(start)
        out: list[dict[str, ParamValue]] = []
        for _ in range(8):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # balance-properties warning for non powers of two
                pts = engine.random(max(2 * (n - len(out)), 1))
            out += self._take_unique(ctx, [self.space.from_unit(p) for p in pts], n - len(out))
            if len(out) == n:
                return out
        return out + self._random_unique(ctx, n - len(out))
