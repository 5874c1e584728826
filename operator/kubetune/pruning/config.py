"""``spec.earlyStopping`` (which rule stops hopeless trials, and its knobs) and the hyperband algorithm's spec rules.

The model uses the same conventions as :mod:`kubetune.spec` (camelCase on the wire, unknown fields rejected,
cross-field :class:`~kubetune.rules.Rule` s giving both the CEL and the Python check). It does not import
:mod:`kubetune.spec` (which imports it).

Rule-specific fields (``startStep`` for ``median``; ``minResource``, ``maxResource``, ``reductionFactor`` for
``asha``) have no schema default, so that a rule can reject them when set for the other rule; their defaults are
the ``DEFAULT_*`` constants below, applied by :attr:`EarlyStopping.effective`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ..rules import Rule

DEFAULT_MIN_TRIALS = 3
"""As Ray Tune's MedianStoppingRule (min_samples_required=3); in the benchmark 3 did better than 5 for both rules."""
DEFAULT_START_STEP = 0
DEFAULT_MIN_RESOURCE = 1
DEFAULT_REDUCTION_FACTOR = 3
MAX_STEP = 1_000_000
"""Bound on steps/resources in the schema (a million epochs or iterations)."""


class _Model(BaseModel):
    """Same configuration as ``kubetune.spec.KubeModel``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    __rules__: ClassVar[list[Rule]] = []


def _to_snake(alias: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in alias)


def _only_for(field: str, rule: str) -> Rule:
    attribute = _to_snake(field)

    def check(e: Any) -> bool:
        return bool(e.rule == rule or getattr(e, attribute) is None)

    return Rule(
        f"self.rule == '{rule}' || !has(self.{field})",
        f"{field} applies only to rule {rule}",
        check,
        field=field,
    )


@dataclass(frozen=True)
class Effective:
    """The settings of one rule with every default applied."""

    rule: str
    min_trials: int
    start_step: int
    min_resource: int
    max_resource: int | None
    reduction_factor: int


class EarlyStopping(_Model):
    rule: Literal["median", "asha"] = Field(
        description="median: stop a trial whose best value so far is worse than the median of the other trials' "
        "values at the same step. asha: asynchronous successive halving: at each rung "
        "(minResource * reductionFactor^k steps) a trial continues only if it is in the top 1/reductionFactor "
        "of the trials that reached that rung before it."
    )
    min_trials: int = Field(
        DEFAULT_MIN_TRIALS,
        ge=1,
        le=1000,
        description="Never stop a trial on too little evidence. median: at least this many other trials must "
        "have reported the step; asha: at least this many trials created no later than the judged one (itself "
        f"included) must have reached the rung. Default {DEFAULT_MIN_TRIALS}.",
    )
    start_step: int | None = Field(
        None,
        ge=0,
        le=MAX_STEP,
        description=f"median only: no trial is stopped before it reports this step. Default {DEFAULT_START_STEP}.",
    )
    min_resource: int | None = Field(
        None,
        ge=1,
        le=MAX_STEP,
        description="asha only: the step of the first rung; rungs are at minResource * reductionFactor^k. "
        f"Default {DEFAULT_MIN_RESOURCE}.",
    )
    max_resource: int | None = Field(
        None,
        ge=1,
        le=MAX_STEP,
        description="asha only: the step at which trials end (their full budget); no rung at or beyond it. "
        "Default: no limit.",
    )
    reduction_factor: int | None = Field(
        None,
        ge=2,
        le=10,
        description="asha only: eta; the top 1/eta of a rung continue and rungs are eta times apart. "
        f"Default {DEFAULT_REDUCTION_FACTOR}.",
    )

    __rules__ = [
        _only_for("startStep", "median"),
        _only_for("minResource", "asha"),
        _only_for("maxResource", "asha"),
        _only_for("reductionFactor", "asha"),
        Rule(
            f"!has(self.maxResource) || (has(self.minResource) ? self.minResource : {DEFAULT_MIN_RESOURCE})"
            " < self.maxResource",
            f"minResource (default {DEFAULT_MIN_RESOURCE}) must be less than maxResource",
            lambda e: e.max_resource is None
            or (e.min_resource if e.min_resource is not None else DEFAULT_MIN_RESOURCE) < e.max_resource,
            field="maxResource",
        ),
    ]

    @property
    def effective(self) -> Effective:
        return Effective(
            rule=self.rule,
            min_trials=self.min_trials,
            start_step=DEFAULT_START_STEP if self.start_step is None else self.start_step,
            min_resource=DEFAULT_MIN_RESOURCE if self.min_resource is None else self.min_resource,
            max_resource=self.max_resource,
            reduction_factor=DEFAULT_REDUCTION_FACTOR if self.reduction_factor is None else self.reduction_factor,
        )


# --------------------------------------------------------------------------------------------------- hyperband
# Cross-field rules of the hyperband algorithm (kubetune.engine.hyperband) over the whole spec: they need the
# parameter list, so they live on ExperimentSpec. The sampler checks the same things when it is built.

_S = "self.algorithm.settings"
_HAS_RP = f"has({_S}) && has({_S}.resourceParameter)"


def _settings(spec: Any, name: str) -> Any:
    settings = spec.algorithm.settings
    return None if settings is None else getattr(settings, name, None)


def _resource_param(spec: Any) -> Any:
    name = _settings(spec, "resourceParameter")
    return next((p for p in spec.parameters if p.name == name), None) if name is not None else None


def _resource_range(spec: Any) -> tuple[float, float] | None:
    p = _resource_param(spec)
    if p is None or p.min is None or p.max is None:
        return None
    lo, hi = _settings(spec, "minResource"), _settings(spec, "maxResource")
    return (p.min if lo is None else float(lo)), (p.max if hi is None else float(hi))


_LO = f"(has({_S}.minResource) ? double({_S}.minResource) : p.min)"
_HI = f"(has({_S}.maxResource) ? double({_S}.maxResource) : p.max)"
_FOR_RP = f"!({_HAS_RP}) || self.parameters.all(p, p.name != {_S}.resourceParameter || !has(p.min) || !has(p.max) || "

HYPERBAND_RULES = [
    Rule(
        f"self.algorithm.name != 'hyperband' || ({_HAS_RP})",
        "the hyperband algorithm needs settings.resourceParameter: the int parameter used as the resource "
        "(e.g. epochs)",
        lambda s: s.algorithm.name != "hyperband" or _settings(s, "resourceParameter") is not None,
        field="algorithm",
    ),
    Rule(
        f"!({_HAS_RP}) || self.parameters.exists(p, p.name == {_S}.resourceParameter && p.type == 'int')",
        "settings.resourceParameter must name an int parameter",
        lambda s: _settings(s, "resourceParameter") is None
        or (_resource_param(s) is not None and _resource_param(s).type == "int"),
        field="algorithm",
    ),
    Rule(
        "self.algorithm.name != 'hyperband' || self.parameters.size() >= 2",
        "the hyperband algorithm needs at least one parameter besides settings.resourceParameter",
        lambda s: s.algorithm.name != "hyperband" or len(s.parameters) >= 2,
        field="parameters",
    ),
    Rule(
        _FOR_RP + f"((!has({_S}.minResource) || double({_S}.minResource) >= p.min)"
        f" && (!has({_S}.maxResource) || double({_S}.maxResource) <= p.max)))",
        "settings.minResource and settings.maxResource must lie within the resource parameter's min and max",
        lambda s: (p := _resource_param(s)) is None or p.min is None or p.max is None
        or ((_settings(s, "minResource") is None or _settings(s, "minResource") >= p.min)
            and (_settings(s, "maxResource") is None or _settings(s, "maxResource") <= p.max)),
        field="algorithm",
    ),
    Rule(
        _FOR_RP + f"{_LO} >= 1.0)",
        "the resource must be at least 1: set settings.minResource, or a min of at least 1 for the resource "
        "parameter",
        lambda s: (r := _resource_range(s)) is None or r[0] >= 1,
        field="algorithm",
    ),
    Rule(
        _FOR_RP + f"{_LO} < {_HI})",
        "settings.minResource must be less than settings.maxResource (they default to the resource parameter's "
        "min and max)",
        lambda s: (r := _resource_range(s)) is None or r[0] < r[1],
        field="algorithm",
    ),
]
