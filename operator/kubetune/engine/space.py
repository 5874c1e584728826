"""Search-space distributions.

Every distribution validates itself on construction and knows how to map its values to and from the unit
interval, so that algorithms can work in ``[0, 1]^d`` and never handle log scales or quantization themselves:

* ``to_unit(value)`` maps a value of the distribution into ``[0, 1]`` (log-aware);
* ``from_unit(u)`` maps any ``u`` in ``[0, 1]`` back to a valid value (log-aware, quantized to ``step``, clipped);
* ``n_values`` is the number of values of a finite distribution (``None`` for a continuous float), and
  ``value(k)`` its ``k``-th value, both by arithmetic: nothing here is ever sized by a range or a grid.

Bounds may be anywhere in the float range (the API server admits any finite number), so every formula stays finite
when ``high - low`` overflows a float. A float parameter must be resolvable at the magnitude of its bounds: a
``step`` of at least ``1e-9 * max(1, |low|, |high|)`` and, without a step, ``high - low`` of at least
``1e-6 * max(|low|, |high|)``; anything finer would quantize onto fewer distinct values than it claims.

Categorical distributions map their choices to the centres of ``len(choices)`` equal bins, so a uniform ``u`` picks
every choice with the same probability.

Values leaving this module are plain Python ``float``/``int``/``str``/``bool`` (never numpy scalars), so they can
be serialised to JSON as they are.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ParamValue = float | int | str | bool
Params = Mapping[str, ParamValue]

_MAX_GRID = 1_000_000
"""The most values :meth:`grid` lists; everything else works by arithmetic."""
_FLOAT_MAX = sys.float_info.max
MIN_STEP_RATIO = 1e-9
"""A float step must be at least this times ``max(1, |low|, |high|)``."""
MIN_RANGE_RATIO = 1e-6
"""A float without a step needs ``high - low`` of at least this times ``max(|low|, |high|, 1e-300)``."""


def _clip01(u: float) -> float:
    if not math.isfinite(u):
        raise ValueError(f"unit value must be finite, got {u!r}")
    return min(1.0, max(0.0, float(u)))


def _lerp(lo: float, hi: float, u: float) -> float:
    """``lo + u * (hi - lo)``, also when ``hi - lo`` overflows a float."""
    d = hi - lo
    if math.isfinite(d):
        return lo + u * d
    return lo * (1.0 - u) + hi * u  # lo < 0 < hi here, so no partial sum overflows


def _ratio(v: float, lo: float, hi: float) -> float:
    """``(v - lo) / (hi - lo)`` for ``lo <= v <= hi``, also when ``hi - lo`` overflows a float."""
    d = hi - lo
    if math.isfinite(d):
        return (v - lo) / d
    return (0.5 * v - 0.5 * lo) / (0.5 * hi - 0.5 * lo)


def _exp(x: float, ceiling: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return ceiling


def _steps(v: float, low: float, step: float) -> float:
    """``(v - low) / step`` (finite for finite arguments with ``step >= 1e-9 * |low|, |v|``)."""
    d = v - low
    if math.isfinite(d):
        return d / step
    return (0.5 * v - 0.5 * low) / step * 2.0


def _magnitude(low: float, high: float) -> float:
    return max(abs(low), abs(high))


@dataclass(frozen=True)
class FloatDistribution:
    """A real parameter in ``[low, high]``, optionally log-scaled or quantized to multiples of ``step`` from ``low``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.step is not None:
            if not (self.step > 0 and math.isfinite(self.step)):
                raise ValueError(f"step must be positive, got {self.step}")
            if self.step > self.high - self.low:
                raise ValueError(f"step ({self.step}) must not exceed high - low ({self.high - self.low})")
            if self.log:
                raise ValueError("step cannot be combined with a log scale for a float parameter")
            finest = MIN_STEP_RATIO * max(1.0, _magnitude(self.low, self.high))
            if self.step < finest:
                raise ValueError(f"step ({self.step:g}) is too fine for the magnitude of min and max: it must be at "
                                 f"least {MIN_STEP_RATIO:g} * max(1, |min|, |max|) = {finest:g}")
        else:
            narrowest = MIN_RANGE_RATIO * max(_magnitude(self.low, self.high), 1e-300)
            if 0.5 * self.high - 0.5 * self.low < 0.5 * narrowest:
                raise ValueError(f"min and max are too close for their magnitude: max - min must be at least "
                                 f"{MIN_RANGE_RATIO:g} * max(|min|, |max|) = {narrowest:g}")

    @property
    def n_values(self) -> int | None:
        """The number of values with a step (``None`` without), by arithmetic."""
        if self.step is None:
            return None
        return int(math.floor(_steps(self.high, self.low, self.step) + 1e-9)) + 1

    @property
    def _n_steps(self) -> int:
        n = self.n_values
        assert n is not None
        return n - 1

    def value(self, k: int) -> float:
        """The ``k``-th value (``0 <= k < n_values``) of a stepped parameter."""
        assert self.step is not None
        v = self.low + k * self.step
        if not math.isfinite(v):
            v = 2.0 * (0.5 * self.low + 0.5 * (k * self.step))
        if abs(v) < 2.0**52:  # beyond, every float is whole and rounding changes nothing (but is slow)
            v = round(v, 12)
        return float(min(self.high, max(self.low, v)))

    def _clamp(self, value: ParamValue) -> float:
        v = float(value)
        return self.low if math.isnan(v) else min(self.high, max(self.low, v))

    def to_unit(self, value: ParamValue) -> float:
        v = self._clamp(value)
        if self.log:
            return _clip01((math.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low)))
        return _clip01(_ratio(v, self.low, self.high))

    def from_unit(self, u: float) -> float:
        u = _clip01(u)
        if self.log:
            v = _exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)), self.high)
        else:
            v = _lerp(self.low, self.high, u)
        if self.step is None:
            # 12 significant digits: exact bounds at the ends, no 999.9999999999989 in commands and tables
            v = float(f"{v:.12g}")
        if self.step is not None:
            k = round(_steps(min(self.high, max(self.low, v)), self.low, self.step))
            return self.value(min(max(k, 0), self._n_steps))
        return float(min(self.high, max(self.low, v)))

    def contains(self, value: ParamValue) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        try:
            v = float(value)
        except OverflowError:
            return False
        if not (self.low - 1e-12 <= v <= self.high + 1e-12):
            return False
        if self.step is not None:
            kf = _steps(self._clamp(v), self.low, self.step)
            k = round(kf)
            return abs(kf - k) < 1e-6 or v == self.value(min(max(k, 0), self._n_steps))
        return True

    def grid(self) -> list[float] | None:
        """Every value of a stepped parameter (at most ``_MAX_GRID``: use :attr:`n_values` and :meth:`value`)."""
        n = self.n_values
        if n is None:
            return None
        _check_listable(n)
        return [self.value(k) for k in range(n)]


@dataclass(frozen=True)
class IntDistribution:
    """An integer parameter in ``[low, high]``, optionally log-scaled or quantized to multiples of ``step``."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.step < 1:
            raise ValueError(f"step must be a positive integer, got {self.step}")
        # Compared in doubles, like the schema's rule: bounds beyond 2**53 may round so that step exceeds the exact
        # difference by a little; the parameter then has the one value ``low``.
        if float(self.step) > float(self.high) - float(self.low):
            raise ValueError(f"step ({self.step}) must not exceed high - low ({self.high - self.low})")
        if self.log and self.step != 1:
            raise ValueError("an int parameter on a log scale needs step 1")
        if max(abs(self.low), abs(self.high), self.step) > _FLOAT_MAX:
            raise ValueError("int bounds and step must be finite floating-point numbers")

    @property
    def _top(self) -> int:
        return self.low + ((self.high - self.low) // self.step) * self.step

    @property
    def n_values(self) -> int:
        return (self.high - self.low) // self.step + 1

    @property
    def edges(self) -> tuple[float, float]:
        """The unit interval's ends in value space: each value owns ``[v - step/2, v + step/2]`` (on a log scale
        the lower end is at least 0.5), within the float range."""
        lo = max(self.low - 0.5 * self.step, -_FLOAT_MAX)
        hi = min(self._top + 0.5 * self.step, _FLOAT_MAX)
        return (max(lo, 0.5) if self.log else lo), hi

    def value(self, k: int) -> int:
        """The ``k``-th value, ``0 <= k < n_values``."""
        return self.low + k * self.step

    def to_unit(self, value: ParamValue) -> float:
        # Integers own the interval [v - 0.5, v + 0.5] so that from_unit(uniform) is uniform over the values.
        if isinstance(value, int):
            v = float(min(max(value, self.low), self.high))
        else:
            v = float(value)
            v = float(self.low) if math.isnan(v) else min(float(self.high), max(float(self.low), v))
        lo, hi = self.edges
        if self.log:
            return _clip01((math.log(max(v, lo)) - math.log(lo)) / (math.log(hi) - math.log(lo)))
        return _clip01(_ratio(v, lo, hi))

    def from_unit(self, u: float) -> int:
        u = _clip01(u)
        lo, hi = self.edges
        if self.log:
            x = _exp(math.log(lo) + u * (math.log(hi) - math.log(lo)), hi)
        else:
            x = _lerp(lo, hi, u)
        d = x - self.low
        if math.isfinite(d):
            k = round(d / self.step)
        else:  # the index itself is beyond the float range: round in integers
            q, r = divmod(int(x) - self.low, self.step)
            k = q + (1 if 2 * r > self.step or (2 * r == self.step and q % 2) else 0)
        k = min(max(k, 0), (self._top - self.low) // self.step)
        return int(self.low + k * self.step)

    def contains(self, value: ParamValue) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, float):
            if not value.is_integer():
                return False
            value = int(value)
        if not isinstance(value, int):
            return False
        return self.low <= value <= self.high and (value - self.low) % self.step == 0

    def grid(self) -> list[int]:
        """Every value (at most ``_MAX_GRID``: use :attr:`n_values` and :meth:`value`)."""
        _check_listable(self.n_values)
        return list(range(self.low, self._top + 1, self.step))


@dataclass(frozen=True)
class CategoricalDistribution:
    """A choice among a fixed list of distinct values (strings, numbers or booleans)."""

    choices: tuple[ParamValue, ...]

    def __post_init__(self) -> None:
        if len(self.choices) == 0:
            raise ValueError("a categorical parameter needs at least one value")
        keys = [_choice_key(c) for c in self.choices]
        if len(set(keys)) != len(keys):
            raise ValueError("categorical values must be distinct")
        for c in self.choices:
            if not isinstance(c, (str, int, float, bool)):
                raise ValueError(f"categorical values must be strings, numbers or booleans, got {c!r}")

    def index(self, value: ParamValue) -> int:
        key = _choice_key(value)
        for i, c in enumerate(self.choices):
            if _choice_key(c) == key:
                return i
        raise ValueError(f"{value!r} is not one of {list(self.choices)!r}")

    def to_unit(self, value: ParamValue) -> float:
        return (self.index(value) + 0.5) / len(self.choices)

    def from_unit(self, u: float) -> ParamValue:
        i = min(int(_clip01(u) * len(self.choices)), len(self.choices) - 1)
        return self.choices[i]

    def contains(self, value: ParamValue) -> bool:
        try:
            self.index(value)
        except ValueError:
            return False
        return True

    @property
    def n_values(self) -> int:
        return len(self.choices)

    def value(self, k: int) -> ParamValue:
        return self.choices[k]

    def grid(self) -> list[ParamValue]:
        return list(self.choices)


def _check_listable(n: int) -> None:
    if n > _MAX_GRID:
        raise ValueError(f"{n} values are too many to list; use n_values and value(k)")


def _choice_key(value: ParamValue) -> tuple[str, object]:
    """The identity of a categorical value (``choice_key``)."""
    # bool is a subclass of int in Python: keep True and 1 distinct.
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", float(value))
    return ("str", value)


Distribution = FloatDistribution | IntDistribution | CategoricalDistribution


@dataclass(frozen=True)
class Condition:
    """A parameter is *active* only while the categorical parameter ``parameter`` (declared earlier, itself active)
    takes one of ``values``."""

    parameter: str
    values: tuple[ParamValue, ...]


@dataclass(frozen=True)
class SearchSpace:
    """An ordered mapping of parameter names to distributions, optionally with conditions.

    ``conditions`` maps a parameter's name to the :class:`Condition` under which it is active. A configuration holds
    exactly its active parameters: parameters without a condition always, a conditional one when its parent is
    active and takes one of the condition's values. Parents are categorical and declared earlier, so the parameters
    form a forest and one pass in declaration order decides what is active. Two configurations that differ only in
    inactive parameters are the same configuration (:meth:`key`), and the grid counts active combinations only
    (:meth:`grid_size`, :meth:`point`, by arithmetic over the forest).
    """

    dims: tuple[tuple[str, Distribution], ...] = field(default_factory=tuple)
    conditions: tuple[tuple[str, Condition], ...] = ()

    def __post_init__(self) -> None:
        names = [n for n, _ in self.dims]
        if not names:
            raise ValueError("a search space needs at least one parameter")
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be unique")
        position = {n: i for i, n in enumerate(names)}
        dists = dict(self.dims)
        rules: dict[str, tuple[str, frozenset[tuple[str, object]]]] = {}
        for name, cond in self.conditions:
            if name not in position:
                raise ValueError(f"a condition names {name!r}, which is not a parameter")
            if name in rules:
                raise ValueError(f"parameter {name!r} has more than one condition")
            parent = dists.get(cond.parameter)
            if parent is None:
                raise ValueError(f"{name}: when.parameter {cond.parameter!r} is not a parameter")
            if position[cond.parameter] >= position[name]:
                raise ValueError(f"{name}: when.parameter {cond.parameter!r} must be declared before {name!r}")
            if not isinstance(parent, CategoricalDistribution):
                raise ValueError(f"{name}: when.parameter {cond.parameter!r} must be a categorical parameter")
            if not cond.values:
                raise ValueError(f"{name}: when.values needs at least one value")
            keys = [_choice_key(v) for v in cond.values]
            if len(set(keys)) != len(keys):
                raise ValueError(f"{name}: when.values must be distinct")
            for v in cond.values:
                if not parent.contains(v):
                    raise ValueError(f"{name}: when.values holds {v!r}, which is not one of the values of "
                                     f"{cond.parameter!r}")
            rules[name] = (cond.parameter, frozenset(keys))
        object.__setattr__(self, "_rules", rules)
        object.__setattr__(self, "_dist", dists)
        object.__setattr__(self, "_parents", {r[0] for r in rules.values()})
        object.__setattr__(self, "_counts", {})
        object.__setattr__(self, "_blocks", {})

    @classmethod
    def of(cls, mapping: Mapping[str, Distribution],
           conditions: Mapping[str, Condition] | None = None) -> SearchSpace:
        return cls(tuple(mapping.items()), tuple((conditions or {}).items()))

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.dims]

    @property
    def distributions(self) -> list[Distribution]:
        return [d for _, d in self.dims]

    @property
    def conditional(self) -> bool:
        """True when some parameter has a condition."""
        return bool(self.conditions)

    def condition_of(self, name: str) -> tuple[str, frozenset[tuple[str, object]]] | None:
        """The parent's name and the keys (see :func:`choice_key`) of the values that make ``name`` active."""
        rules: dict[str, tuple[str, frozenset[tuple[str, object]]]] = self._rules  # type: ignore[attr-defined]
        return rules.get(name)

    def __len__(self) -> int:
        return len(self.dims)

    def active_names(self, params: Params) -> list[str]:
        """The parameters active in ``params`` (whose parents' values decide), in declaration order."""
        if not self.conditions:
            return self.names
        rules: dict[str, tuple[str, frozenset[tuple[str, object]]]] = self._rules  # type: ignore[attr-defined]
        on: set[str] = set()
        out: list[str] = []
        for name, _ in self.dims:
            rule = rules.get(name)
            if rule is None or (rule[0] in on and rule[0] in params and _choice_key(params[rule[0]]) in rule[1]):
                on.add(name)
                out.append(name)
        return out

    def active(self, params: Params) -> dict[str, ParamValue]:
        """``params`` without its inactive parameters."""
        if not self.conditions:
            return dict(params)
        return {n: params[n] for n in self.active_names(params)}

    def to_unit(self, params: Params) -> list[float]:
        """Unit coordinates; an inactive parameter's is NaN."""
        if self.conditions:
            on = set(self.active_names(params))
            return [d.to_unit(params[n]) if n in on else math.nan for n, d in self.dims]
        return [d.to_unit(params[n]) for n, d in self.dims]

    def from_unit(self, us: Sequence[float]) -> dict[str, ParamValue]:
        """The configuration at unit coordinates ``us``: its active parameters only (inactive coordinates are
        ignored and may be anything, NaN included)."""
        if len(us) != len(self.dims):
            raise ValueError(f"expected {len(self.dims)} unit values, got {len(us)}")
        if self.conditions:
            out: dict[str, ParamValue] = {}
            rules: dict[str, tuple[str, frozenset[tuple[str, object]]]] = self._rules  # type: ignore[attr-defined]
            for (n, d), u in zip(self.dims, us):
                rule = rules.get(n)
                if rule is None or (rule[0] in out and _choice_key(out[rule[0]]) in rule[1]):
                    out[n] = d.from_unit(float(u))
            return out
        return {n: d.from_unit(float(u)) for (n, d), u in zip(self.dims, us)}

    def contains(self, params: Params) -> bool:
        """True when ``params`` holds exactly the active parameters, each a value of its distribution."""
        names = self.active_names(params)
        dists = dict(self.dims)
        return set(params) == set(names) and all(dists[n].contains(params[n]) for n in names)

    def key(self, params: Params) -> tuple[object, ...]:
        """A hashable identity of a configuration, used to detect duplicates; inactive parameters are ``None``."""
        on = set(self.active_names(params)) if self.conditions else None
        out: list[object] = []
        for n, d in self.dims:
            if on is not None and n not in on:
                out.append(None)
                continue
            v = params[n]
            if isinstance(d, CategoricalDistribution):
                out.append(_choice_key(v))
            elif isinstance(d, IntDistribution):
                out.append(int(v))
            elif d.step is not None:
                f = float(v)
                out.append(round(f, 12) if abs(f) < 2.0**52 else f)
            else:
                # Continuous values carry 12 significant digits (see from_unit): at any magnitude.
                out.append(float(f"{float(v):.12g}"))
        return tuple(out)

    def grid_size(self) -> int | None:
        """Number of distinct configurations of the full grid (an exact int, never materialised), or ``None`` when
        some dimension is continuous. With conditions, only active combinations count: a categorical parent
        contributes, per value, the product of the sizes of the subtrees it activates."""
        if self.conditions:
            return self._forest_size()
        size = 1
        for d in self.distributions:
            n = d.n_values
            if n is None:
                return None
            size *= n
        return size

    def point(self, index: int) -> dict[str, ParamValue]:
        """The ``index``-th configuration of the grid (``0 <= index < grid_size()``), by arithmetic: mixed radix over
        the parameters without a condition (the last one varies fastest); a categorical parent's values each own a
        block sized by the subtrees they activate."""
        out: dict[str, ParamValue] = {}
        self._decode(self._roots(), index, out)
        return {n: out[n] for n in self.names if n in out}

    # -- the forest of conditions ---------------------------------------------------------------------------------

    def _roots(self) -> list[str]:
        return [n for n in self.names if self.condition_of(n) is None]

    def _children(self, name: str, choice: ParamValue) -> list[str]:
        key = _choice_key(choice)
        out = []
        for n in self.names:
            rule = self.condition_of(n)
            if rule is not None and rule[0] == name and key in rule[1]:
                out.append(n)
        return out

    def _count(self, name: str) -> int | None:
        """Configurations of the subtree of ``name`` (cached; at most 64 x 64 steps per parameter)."""
        counts: dict[str, int | None] = self._counts  # type: ignore[attr-defined]
        if name in counts:
            return counts[name]
        result: int | None
        if name in self._parents:  # type: ignore[attr-defined]
            result = 0
            for _choice, _kids, sub in self._blocks_of(name):
                if sub is None:
                    result = None
                    break
                result += sub
        else:
            result = self._dist[name].n_values  # type: ignore[attr-defined]
        counts[name] = result
        return result

    def _blocks_of(self, name: str) -> list[tuple[ParamValue, list[str], int | None]]:
        """Per value of the categorical parent ``name``: the children it activates and their block's size."""
        blocks: dict[str, list[tuple[ParamValue, list[str], int | None]]] = self._blocks  # type: ignore[attr-defined]
        if name not in blocks:
            out = []
            for choice in self._dist[name].choices:  # type: ignore[attr-defined]
                kids = self._children(name, choice)
                out.append((choice, kids, self._product(kids)))
            blocks[name] = out
        return blocks[name]

    def _product(self, names: list[str]) -> int | None:
        size = 1
        for n in names:
            c = self._count(n)
            if c is None:
                return None
            size *= c
        return size

    def _forest_size(self) -> int | None:
        return self._product(self._roots())

    def _decode(self, names: list[str], index: int, out: dict[str, ParamValue]) -> None:
        dists: dict[str, Distribution] = self._dist  # type: ignore[attr-defined]
        for name in reversed(names):
            if name not in self._parents:  # type: ignore[attr-defined]
                dist = dists[name]
                n = dist.n_values
                assert n is not None
                index, r = divmod(index, n)
                out[name] = dist.value(r)
                continue
            count = self._count(name)
            assert count is not None
            index, r = divmod(index, count)
            for choice, kids, sub in self._blocks_of(name):
                assert sub is not None
                if r < sub:
                    out[name] = choice
                    self._decode(kids, r, out)
                    break
                r -= sub

    def cardinality(self) -> float:
        size = self.grid_size()
        if size is None or size.bit_length() > 1000:
            return math.inf
        return float(size)
