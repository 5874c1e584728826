"""Grid search over every combination of parameter values.

Needs a finite grid: int and categorical parameters always are; a float parameter needs a ``step``. Points are
enumerated lazily by index (mixed radix over each axis's ``n_values``, the ``k``-th value of an axis by arithmetic),
so a grid of any size (64 axes of a billion values each) costs nothing up front and nothing is ever listed.
With conditional parameters the grid holds only active combinations: a categorical parent's values each own a block
of indices sized by the subtrees they activate (:meth:`SearchSpace.point`), so inactive combinations are neither
enumerated nor counted.
``order: shuffled`` visits the grid in a pseudo-random order given by an affine permutation of the indices, seeded
by the experiment seed, which is better than lexicographic order when the budget is smaller than the grid.

A suggestion walks the visiting order from its start and skips configurations already tried or pending. Every
skipped index is a distinct configuration of the history or pending trials (the index-to-configuration map is
one-to-one), so a call looks at no more than ``len(history) + len(pending) + n`` indices, whatever the grid size.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from .base import Sampler, SamplerSettings, SuggestContext
from .space import ParamValue, SearchSpace


class GridSettings(SamplerSettings):
    order: Literal["lexicographic", "shuffled"] = Field(
        "lexicographic", description="grid: visit points in lexicographic order or in a seeded shuffled order."
    )


class GridSampler(Sampler):
    name = "grid"
    Settings = GridSettings
    supports_multi_objective = True
    summary = "Every combination of values (floats need a step), lexicographic or shuffled."
    supports_conditions = True
    supports_constraints = True

    def __init__(self, space: SearchSpace, **kwargs: object) -> None:
        super().__init__(space, **kwargs)  # type: ignore[arg-type]
        size = space.grid_size()
        if size is None:
            raise ValueError("the grid algorithm needs a finite grid: give every float parameter a step")
        self._size: int = size

    def _point(self, index: int) -> dict[str, ParamValue]:
        return self.space.point(index)

    def _permutation(self) -> tuple[int, int]:
        """Multiplier and offset of a bijection i -> (a*i + b) mod size."""
        if self.settings.order == "lexicographic" or self._size <= 1:  # type: ignore[attr-defined]
            return 1, 0
        rng = self._rng(0)
        a = _below(rng, 1, max(self._size, 2))
        while math.gcd(a, self._size) != 1:  # a few steps: coprimes are dense
            a = a % self._size + 1
        return a, _below(rng, 0, self._size)

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        a, b = self._permutation()
        out: list[dict[str, ParamValue]] = []
        # Each skipped index is a distinct seen configuration, so this bound is never what ends the walk early
        # while the grid has room; it only makes the walk's cost independent of the grid size.
        for i in range(min(self._size, len(ctx.seen) + n)):
            point = self._point((a * i + b) % self._size)
            out += self._take_unique(ctx, [point], 1)
            if len(out) == n:
                break
        return out


def _below(rng: np.random.Generator, low: int, high: int) -> int:
    """A uniform integer in ``[low, high)``; Python ints of any size (numpy's stop at 2**63)."""
    if high <= 2**62:
        return int(rng.integers(low, high))
    span = high - low
    return low + int.from_bytes(rng.bytes(span.bit_length() // 8 + 9), "little") % span
