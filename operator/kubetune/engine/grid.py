"""Grid search over every combination of parameter values.

Needs a finite grid: int and categorical parameters always are; a float parameter needs a ``step``. Points are
enumerated lazily by index (mixed radix), so large grids cost nothing up front. ``order: shuffled`` visits the grid
in a pseudo-random order given by an affine permutation of the indices, seeded by the experiment seed, which is
better than lexicographic order when the budget is smaller than the grid.
"""

from __future__ import annotations

import math
from typing import Literal

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
    summary = "Every combination of values (floats need a step), lexicographic or shuffled."

    def __init__(self, space: SearchSpace, **kwargs: object) -> None:
        super().__init__(space, **kwargs)  # type: ignore[arg-type]
        if space.grid_size() is None:
            raise ValueError("the grid algorithm needs a finite grid: give every float parameter a step")
        self._axes = [d.grid() or [] for d in space.distributions]
        self._size = math.prod(len(a) for a in self._axes)

    def _point(self, index: int) -> dict[str, ParamValue]:
        out: dict[str, ParamValue] = {}
        for name, axis in reversed(list(zip(self.space.names, self._axes))):
            index, r = divmod(index, len(axis))
            out[name] = axis[r]
        return {n: out[n] for n in self.space.names}

    def _permutation(self) -> tuple[int, int]:
        """Multiplier and offset of a bijection i -> (a*i + b) mod size."""
        if self.settings.order == "lexicographic" or self._size <= 1:  # type: ignore[attr-defined]
            return 1, 0
        rng = self._rng(0)
        a = int(rng.integers(1, max(self._size, 2)))
        while math.gcd(a, self._size) != 1:
            a = a % self._size + 1
        return a, int(rng.integers(0, self._size))

    def _suggest(self, ctx: SuggestContext, n: int) -> list[dict[str, ParamValue]]:
        a, b = self._permutation()
        out: list[dict[str, ParamValue]] = []
        for i in range(self._size):
            point = self._point((a * i + b) % self._size)
            out += self._take_unique(ctx, [point], 1)
            if len(out) == n:
                break
        return out
