"""The ``TuningExperiment`` spec and status as pydantic models: the single source of the CRD schema.

The models validate types, bounds and enums; :mod:`kubetune.rules` rules attached to each model (``__rules__``)
express the cross-field constraints once for both the API server (CEL) and offline validation.
Nothing here imports Kubernetes.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    create_model,
    field_validator,
)
from pydantic.alias_generators import to_camel

from .engine import DEFAULT_ALGORITHM, SAMPLERS, SearchSpace, sampler_class
from .engine.space import (
    CategoricalDistribution,
    Distribution,
    FloatDistribution,
    IntDistribution,
    ParamValue,
)
from .engine.space import Condition as SpaceCondition
from .pruning.config import HYPERBAND_RULES, EarlyStopping
from .rules import Rule

GROUP = "kubetune.io"
VERSION = "v1alpha1"
KIND = "TuningExperiment"
PLURAL = "tuningexperiments"
SINGULAR = "tuningexperiment"
SHORT_NAMES = ["tex"]
CATEGORIES = ["kubetune"]
API_VERSION = f"{GROUP}/{VERSION}"
MAX_NAME_LENGTH = 52
MAX_TRIALS_LIMIT = 10_000

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
METRIC_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-/]*$"


class KubeModel(BaseModel):
    """camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    __rules__: ClassVar[list[Rule]] = []


# --------------------------------------------------------------------------------------------------- objective


class Objective(KubeModel):
    metric: str = Field(
        min_length=1, max_length=63, pattern=METRIC_PATTERN, description="Name of the metric trials report."
    )
    goal: Literal["maximize", "minimize"] = Field(description="Whether larger or smaller values are better.")
    target: float | None = Field(
        None, description="Optional: the experiment succeeds as soon as the best trial reaches this value."
    )

    def better(self, a: float, b: float) -> bool:
        """True when value ``a`` is strictly better than ``b``."""
        return a > b if self.goal == "maximize" else a < b

    def reaches_target(self, value: float) -> bool:
        if self.target is None:
            return False
        return value >= self.target if self.goal == "maximize" else value <= self.target

    def loss(self, value: float) -> float:
        """The value oriented for minimization, as the suggestion engine expects."""
        return -value if self.goal == "maximize" else value


# --------------------------------------------------------------------------------------------------- constraints

MAX_CONSTRAINTS = 16


class Constraint(KubeModel):
    """An outcome constraint: a trial is feasible when its final value of ``metric`` lies within ``[min, max]``."""

    metric: str = Field(
        min_length=1,
        max_length=63,
        pattern=METRIC_PATTERN,
        description="A metric trials report (not the objective's): its final value must lie within min and max.",
    )
    min: float | None = Field(None, description="Lower bound (inclusive) of the metric's final value.")
    max: float | None = Field(None, description="Upper bound (inclusive) of the metric's final value.")

    __rules__ = [
        Rule(
            "has(self.min) || has(self.max)",
            "a constraint needs min or max (or both)",
            lambda c: c.min is not None or c.max is not None,
        ),
        Rule(
            "!has(self.min) || !has(self.max) || self.min <= self.max",
            "a constraint's min must not exceed its max",
            lambda c: c.min is None or c.max is None or c.min <= c.max,
            field="min",
        ),
    ]

    def violation(self, value: float | None) -> float:
        """How far ``value`` lies outside ``[min, max]`` (Optuna's convention: ``<= 0`` when it holds, the distance
        to the nearer bound, negative, inside); ``inf`` when the metric was not reported."""
        if value is None or not math.isfinite(value):
            return math.inf
        sides = [b - value for b in (self.min,) if b is not None] + [value - b for b in (self.max,) if b is not None]
        return max(sides)


# --------------------------------------------------------------------------------------------------- parameters

MAX_CATEGORICAL_LENGTH = 64
CATEGORICAL_PATTERN = r"^[ -~]*$"
CategoricalValue = StrictInt | StrictStr
"""Categorical values are strings or integers (``x-kubernetes-int-or-string``): the only scalar union a structural
CRD schema can both admit and check with CEL. Floats and booleans are written quoted (``"0.5"``, ``"true"``); they
reach commands rendered the same way. Strings are printable ASCII of at most 64 characters, so that a trial's
parameters always fit its bounded record (64 parameters x (63-character name + 64 characters, each at most 2 bytes
in JSON) stay far below the 16 KiB a record may take)."""


def _is_whole(x: float | None) -> bool:
    return x is None or float(x).is_integer()


def _check_categorical_values(value: Any) -> Any:
    """Categorical values (``values`` and ``when.values``): strings or integers, bounded strings."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                kind = "boolean" if isinstance(v, bool) else "number" if isinstance(v, float) else "object"
                example = str(v).lower() if isinstance(v, bool) else str(v)
                raise ValueError(
                    f'values[{i}] must be of type integer,string: "{kind}" '
                    f'(write floats and booleans quoted, e.g. "{example}")'
                )
            if isinstance(v, str) and len(v) > MAX_CATEGORICAL_LENGTH:
                raise ValueError(f"values[{i}]: Too long: may not be more than {MAX_CATEGORICAL_LENGTH} bytes")
            if isinstance(v, str) and not re.fullmatch(CATEGORICAL_PATTERN, v):
                shown = json.dumps(v, ensure_ascii=False)
                raise ValueError(f"values[{i}]: Invalid value: {shown}: should match '{CATEGORICAL_PATTERN}'")
    return value


class ParameterCondition(KubeModel):
    """When a parameter is active: while the categorical parameter ``parameter`` takes one of ``values``."""

    parameter: str = Field(
        min_length=1,
        max_length=63,
        pattern=NAME_PATTERN,
        title="ConditionParameter",  # not "Parameter": the CRD generator attaches a model's rules by title
        description="The categorical parameter that decides, declared earlier in spec.parameters. When it is "
        "itself inactive, so is this parameter.",
    )
    values: list[CategoricalValue] = Field(
        min_length=1,
        max_length=64,
        description="The values of that parameter under which this parameter is active: distinct, each one of its "
        "values.",
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "x-kubetune-item-max-length": MAX_CATEGORICAL_LENGTH,
            "x-kubetune-item-pattern": CATEGORICAL_PATTERN,
        },
    )

    @field_validator("values", mode="before")
    @classmethod
    def _scalar_values(cls, value: Any) -> Any:
        return _check_categorical_values(value)


class Parameter(KubeModel):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN, description="Parameter name, unique.")
    type: Literal["float", "int", "categorical"] = Field(description="float | int | categorical.")
    min: float | None = Field(None, description="Lower bound (inclusive), for float and int.")
    max: float | None = Field(None, description="Upper bound (inclusive), for float and int.")
    scale: Literal["linear", "log"] = Field(
        "linear", description="linear (default) or log; log needs min > 0 and is honoured by every algorithm."
    )
    step: float | None = Field(
        None, gt=0, description="Optional quantization: values are min + k*step. For int it must be whole."
    )
    values: list[CategoricalValue] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="The choices of a categorical parameter: distinct strings or integers (quote floats and "
        "booleans).",
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "x-kubetune-item-max-length": MAX_CATEGORICAL_LENGTH,  # checked on strings only
            "x-kubetune-item-pattern": CATEGORICAL_PATTERN,
        },
    )
    when: ParameterCondition | None = Field(
        None,
        description="Optional: the parameter is active only while a categorical parameter declared earlier takes "
        "one of the given values (e.g. degree only when kernel is poly). An inactive parameter is not suggested, "
        "not in the trial's parameters, not injected (an argument of command or args holding its placeholder is "
        "left out, an env var whose value holds it is not set), and two trials that differ only in inactive "
        "parameters are the same configuration.",
    )

    @field_validator("values", mode="before")
    @classmethod
    def _scalar_values(cls, value: Any) -> Any:
        return _check_categorical_values(value)

    __rules__ = [
        Rule(
            "self.type == 'categorical' || (has(self.min) && has(self.max))",
            "float and int parameters need min and max",
            lambda p: p.type == "categorical" or (p.min is not None and p.max is not None),
        ),
        Rule(
            "!has(self.min) || !has(self.max) || self.min < self.max",
            "min must be less than max",
            lambda p: p.min is None or p.max is None or p.min < p.max,
            field="min",
        ),
        Rule(
            "self.scale != 'log' || !has(self.min) || self.min > 0.0",
            "scale log needs min > 0",
            lambda p: p.scale != "log" or p.min is None or p.min > 0,
            field="min",
        ),
        Rule(
            "self.type != 'categorical' || has(self.values)",
            "categorical parameters need values",
            lambda p: p.type != "categorical" or p.values is not None,
        ),
        Rule(
            "self.type != 'categorical' || (!has(self.min) && !has(self.max) && !has(self.step))",
            "categorical parameters take values, not min, max or step",
            lambda p: p.type != "categorical" or (p.min is None and p.max is None and p.step is None),
        ),
        Rule(
            "self.type == 'categorical' || !has(self.values)",
            "values apply only to categorical parameters",
            lambda p: p.type == "categorical" or p.values is None,
            field="values",
        ),
        Rule(
            "self.type != 'int' || ((!has(self.min) || self.min == double(int(self.min)))"
            " && (!has(self.max) || self.max == double(int(self.max))))",
            "int parameters need whole-number min and max",
            lambda p: p.type != "int" or (_is_whole(p.min) and _is_whole(p.max)),
        ),
        Rule(
            "self.type != 'int' || !has(self.step) || self.step == double(int(self.step))",
            "int parameters need a whole-number step",
            lambda p: p.type != "int" or _is_whole(p.step),
            field="step",
        ),
        Rule(
            "!has(self.step) || !has(self.min) || !has(self.max) || self.step <= self.max - self.min",
            "step must not exceed max - min",
            lambda p: p.step is None or p.min is None or p.max is None or p.step <= p.max - p.min,
            field="step",
        ),
        Rule(
            "!has(self.when) || self.when.parameter != self.name",
            "when.parameter must name another parameter",
            lambda p: p.when is None or p.when.parameter != p.name,
            field="when.parameter",
        ),
        Rule(
            "!has(self.step) || self.scale != 'log' || (self.type == 'int' && self.step == 1.0)",
            "step cannot be combined with scale log (except step 1 for int parameters)",
            lambda p: p.step is None or p.scale != "log" or (p.type == "int" and p.step == 1),
            field="step",
        ),
    ]

    def to_distribution(self) -> Distribution:
        log = self.scale == "log"
        if self.type == "categorical":
            assert self.values is not None
            return CategoricalDistribution(tuple(self.values))
        assert self.min is not None and self.max is not None
        if self.type == "int":
            return IntDistribution(int(self.min), int(self.max), log=log, step=int(self.step or 1))
        return FloatDistribution(float(self.min), float(self.max), log=log, step=self.step)


# --------------------------------------------------------------------------------------------------- algorithm


def _settings_model() -> type[BaseModel]:
    """The union of every algorithm's settings, each optional; which apply to which algorithm is a rule."""
    fields: dict[str, Any] = {}
    owners: dict[str, list[str]] = {}
    for name, cls in sorted(SAMPLERS.items()):
        for fname, finfo in cls.Settings.model_fields.items():
            alias = finfo.alias or to_camel(fname)
            owners.setdefault(alias, []).append(name)
            if alias in fields:  # shared by several algorithms (populationSize): one field, both descriptions
                shared, first = fields[alias]
                fields[alias] = (shared, Field(None, description=f"{first.description} {finfo.description}"))
                continue
            inner: Any = finfo.annotation
            if finfo.metadata:
                inner = Annotated.__class_getitem__((inner, *finfo.metadata))  # type: ignore[attr-defined]
            annotated = Optional[inner]  # noqa: UP045 (a runtime type expression)
            fields[alias] = (annotated, Field(None, description=finfo.description))
    model: type[BaseModel] = create_model(
        "AlgorithmSettings",
        __config__=ConfigDict(extra="forbid", populate_by_name=True),
        **fields,
    )
    model.__owners__ = owners  # type: ignore[attr-defined]
    return model


AlgorithmSettings = _settings_model()
SETTING_OWNERS: dict[str, list[str]] = AlgorithmSettings.__owners__  # type: ignore[attr-defined]


def _setting_rule(alias: str, owners: list[str]) -> Rule:
    names = ", ".join(owners)
    cel_list = ", ".join(f"'{o}'" for o in owners)
    def check(a: Any) -> bool:
        return getattr(a.settings, alias, None) is None or a.name in owners

    return Rule(
        f"!has(self.settings) || !has(self.settings.{alias}) || self.name in [{cel_list}]",
        f"settings.{alias} applies only to algorithm {names}",
        check,
        field=f"settings.{alias}",
    )


class Algorithm(KubeModel):
    name: Literal[tuple(sorted(SAMPLERS))] = Field(  # type: ignore[valid-type]
        DEFAULT_ALGORITHM, description="The search algorithm: " + "; ".join(
            f"{n}: {c.summary}" for n, c in sorted(SAMPLERS.items())
        )
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Optional seed: same seed and same results give the same suggestions."
    )
    settings: AlgorithmSettings | None = Field(  # type: ignore[valid-type]
        None, description="Per-algorithm settings; each applies to the algorithms its description names."
    )

    __rules__ = [_setting_rule(alias, owners) for alias, owners in SETTING_OWNERS.items()]

    def sampler_settings(self) -> dict[str, Any]:
        settings: BaseModel | None = self.settings
        if settings is None:
            return {}
        return settings.model_dump(exclude_none=True)


# --------------------------------------------------------------------------------------------------- stopping

MAX_DURATION_SECONDS = 366 * 24 * 3600
"""Bound on the experiment's wall-clock budget and on a trial's time limit in the schema (a leap year)."""


class NoImprovement(KubeModel):
    trials: int = Field(
        ge=1,
        le=MAX_TRIALS_LIMIT,
        description="End the experiment once this many trials in a row did not improve: finished trials in "
        "trial-number order, Canceled ones not counted, counted from the last trial that improved (from the first "
        "trial when none did). No new trials are created meanwhile; running ones finish, and one of them that "
        "improves lets the experiment go on.",
    )
    min_relative_improvement: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="A Succeeded trial improves when its objective value v beats the value of the last trial "
        "that improved by more than this fraction of that value's magnitude (maximize: v > r + f*|r|; minimize: "
        "v < r - f*|r|, with f this fraction and r that value); the first Succeeded trial always improves. "
        "0 (default): any strictly better value. The margin is relative to |r|: with r near 0 even tiny changes "
        "count.",
    )

    def improves(self, goal: str, value: float, reference: float | None) -> bool:
        """Whether ``value`` improves on ``reference`` (the value of the last trial that improved, if any)."""
        if reference is None:
            return True
        margin = self.min_relative_improvement * abs(reference)
        return value > reference + margin if goal == "maximize" else value < reference - margin


class Stopping(KubeModel):
    no_improvement: NoImprovement | None = Field(
        None, description="Optional: end the experiment when the objective stopped improving (reason NoImprovement)."
    )
    max_duration_seconds: int | None = Field(
        None,
        ge=1,
        le=MAX_DURATION_SECONDS,
        description="Optional wall-clock budget in seconds, counted from the start of the first trial "
        "(status.startTime): when it runs out no new trial is created, running trials are stopped as Canceled, "
        "and the experiment ends with reason TimeLimitReached.",
    )


# --------------------------------------------------------------------------------------------------- template


class TemplateMetadata(KubeModel):
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to every trial Job.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations added to every trial Job.")


class TrialTemplate(KubeModel):
    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata, description="Labels and annotations.")
    spec: dict[str, Any] = Field(
        description="A batch/v1 JobSpec for one trial; validated by the API server when each Job is created.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


# --------------------------------------------------------------------------------------------------- conditions

_PARENT_AT = "self.parameters.map(q, q.name == p.when.parameter).indexOf(true)"
_SELF_AT = "self.parameters.map(q, q.name == p.name).indexOf(true)"
"""Positions by lists of booleans: ``indexOf`` over constant-size elements keeps the rules' estimated cost within the
API server's budget (``[x].all(i, ...)`` binds a value once; CRD rules have no ``cel.bind``)."""
CONDITION_ALGORITHMS = tuple(sorted(n for n, c in SAMPLERS.items() if c.supports_conditions))
"""Algorithms that handle conditional parameters (the others are refused a spec with ``when``)."""


def _conditions_hold(s: Any, check: Any) -> bool:
    """Whether ``check(parameter, index, parent index or None)`` holds for every conditional parameter."""
    names = [p.name for p in s.parameters]
    for i, p in enumerate(s.parameters):
        if p.when is not None and not check(p, i, names.index(p.when.parameter) if p.when.parameter in names
                                            else None):
            return False
    return True


def _values_among(s: Any, p: Any, j: int | None) -> bool:
    if j is None or s.parameters[j].values is None:
        return True
    parent = s.parameters[j].values
    return all(any(type(v) is type(w) and v == w for w in parent) for v in p.when.values)


CONDITION_RULES = [
    Rule(
        f"self.parameters.all(p, !has(p.when) || ({_PARENT_AT} >= 0 && {_PARENT_AT} < {_SELF_AT}))",
        "when.parameter must name a parameter declared earlier in spec.parameters",
        lambda s: _conditions_hold(s, lambda p, i, j: j is not None and j < i),
        field="parameters",
    ),
    Rule(
        "self.parameters.all(p, !has(p.when) || "
        "self.parameters.all(q, q.name != p.when.parameter || q.type == 'categorical'))",
        "when.parameter must name a categorical parameter",
        lambda s: _conditions_hold(s, lambda p, i, j: j is None or s.parameters[j].type == "categorical"),
        field="parameters",
    ),
    Rule(
        f"self.parameters.all(p, !has(p.when) || [{_PARENT_AT}].all(i, i < 0 || !has(self.parameters[i].values) || "
        "p.when.values.all(v, v in self.parameters[i].values)))",
        "when.values must be values of the parameter that when.parameter names",
        lambda s: _conditions_hold(s, lambda p, i, j: _values_among(s, p, j)),
        field="parameters",
    ),
    Rule(
        "self.algorithm.name in [" + ", ".join(f"'{n}'" for n in CONDITION_ALGORITHMS) + "] || "
        "self.parameters.all(p, !has(p.when))",
        "conditional parameters (when) need an algorithm that supports them: " + ", ".join(CONDITION_ALGORITHMS),
        lambda s: s.algorithm.name in CONDITION_ALGORITHMS or all(p.when is None for p in s.parameters),
        field="algorithm",
    ),
    Rule(
        "self.algorithm.name != 'hyperband' || !has(self.algorithm.settings) || "
        "!has(self.algorithm.settings.resourceParameter) || "
        "self.parameters.all(p, p.name != self.algorithm.settings.resourceParameter || !has(p.when))",
        "settings.resourceParameter must name a parameter without a condition (when)",
        lambda s: s.algorithm.name != "hyperband" or s.algorithm.settings is None
        or getattr(s.algorithm.settings, "resourceParameter", None) is None
        or all(p.name != s.algorithm.settings.resourceParameter or p.when is None for p in s.parameters),
        field="algorithm",
    ),
]


# --------------------------------------------------------------------------------------------------- initial trials
# and warm start

MAX_INITIAL_TRIALS = 100
"""Bound on ``spec.initialTrials`` entries."""
MAX_WARM_START_SOURCES = 10
MAX_WARM_START_TRIALS = 1000
"""Bound on the observations a warm start takes in (``spec.warmStart.maxTrials``)."""
DEFAULT_WARM_START_TRIALS = 100
SOURCE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
INITIAL_TRIALS_EXCLUDED = ("hyperband",)
"""Algorithms that take no ``initialTrials``: hyperband's brackets decide each trial's configuration and budget."""
WARM_START_ALGORITHMS = tuple(sorted(n for n, c in SAMPLERS.items() if c.warm_start))
"""Algorithms that learn from a warm start (the others would ignore it: it is refused for them)."""

ValueMap = Annotated[
    dict[str, Any],
    Field(max_length=64),
    WithJsonSchema({"type": "object", "maxProperties": 64, "x-kubernetes-preserve-unknown-fields": True}),
]
"""A value per parameter: numbers for float and int parameters, a string or integer among the values of a categorical
one. Numbers and strings are a union a CRD schema cannot type, so the schema keeps the object as it is (CEL sees no
field of it): names and values are checked against the search space offline and by the operator
(:func:`initial_trial_problems`)."""


class ValueProblem(ValueError):
    """Why a value is not in a parameter's domain; ``kind`` is a short category (``above max``, ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def coerce_value(param: Parameter, value: Any) -> ParamValue:
    """``value`` as a value of ``param`` (ints for int parameters, floats for float ones, a categorical value as
    listed), or :class:`ValueProblem` saying why it is not one: of another type, outside ``[min, max]``, not whole
    for an int, off the step grid, not one of the categorical values."""
    shown = json.dumps(value, default=str)[:80]
    if param.type == "categorical":
        assert param.values is not None
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            for v in param.values:
                if type(v) is type(value) and v == value:
                    return v
        listed = ", ".join(json.dumps(v) for v in param.values[:8]) + (", ..." if len(param.values) > 8 else "")
        hint = ' (write floats and booleans quoted, as in values)' if isinstance(value, (bool, float)) else ""
        raise ValueProblem("not a value", f"{shown} is not one of [{listed}]{hint}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueProblem("not a number", f"{shown} is not a number ({param.type} parameter)")
    try:
        number = float(value)
    except OverflowError:
        raise ValueProblem("above max", f"{shown} is above max {param.max:g}") from None
    if not math.isfinite(number):
        raise ValueProblem("not a number", f"{shown} is not a finite number")
    assert param.min is not None and param.max is not None
    if number < param.min:
        raise ValueProblem("below min", f"{shown} is below min {param.min:g}")
    if number > param.max:
        raise ValueProblem("above max", f"{shown} is above max {param.max:g}")
    if param.type == "int":
        if not number.is_integer():
            raise ValueProblem("not whole", f"{shown} is not a whole number (int parameter)")
        out: ParamValue = int(value)
    else:
        out = number
    if param.step is not None and not param.to_distribution().contains(out):
        raise ValueProblem("off the step grid",
                           f"{shown} is not on the step grid (min {param.min:g} + k * step {param.step:g})")
    return out


class WarmStart(KubeModel):
    experiments: list[Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=SOURCE_NAME_PATTERN)]] \
        = Field(
            min_length=1,
            max_length=MAX_WARM_START_SOURCES,
            description="Earlier experiments to learn from: on a cluster, TuningExperiments of these names in the "
            "same namespace (their result records); with kubetune run, the results directories of these names next "
            "to the run's own (kubetune-runs/NAME by default).",
            json_schema_extra={"x-kubernetes-list-type": "set", "x-kubetune-item-max-length": MAX_NAME_LENGTH},
        )
    max_trials: int = Field(
        DEFAULT_WARM_START_TRIALS,
        ge=1,
        le=MAX_WARM_START_TRIALS,
        description="At most this many earlier trials are taken in: the best by this experiment's objective "
        "(ties: the earlier source, then the lower trial number).",
    )
    defaults: ValueMap | None = Field(
        None,
        description="Values for parameters an earlier experiment did not have (e.g. a library's default it used): "
        "an earlier trial without a value for a parameter takes it from here, and is skipped when there is none.",
    )


def _when(p: Parameter) -> str:
    assert p.when is not None
    return f"{p.when.parameter} in [{', '.join(json.dumps(v) for v in p.when.values)}]"


def initial_trial_problems(spec: ExperimentSpec) -> list[tuple[str, str]]:
    """``(path, message)`` for every name of ``initialTrials`` and ``warmStart.defaults`` that is not a parameter,
    every parameter without ``when`` missing from an initial trial, every value not in its parameter's domain, a
    conditional parameter given while inactive or missing while active, and repeated initial trials: the checks the
    CRD's CEL rules cannot make (they see no field of an entry, see :data:`ValueMap`)."""
    params = {p.name: p for p in spec.parameters}
    problems: list[tuple[str, str]] = []
    seen: dict[tuple[object, ...], int] = {}
    try:
        space = spec.search_space()
    except (ValueError, TypeError, ArithmeticError):
        return []  # the parameters' own problems are reported first
    for i, entry in enumerate(spec.initial_trials or []):
        values: dict[str, ParamValue] = {}
        for name, value in entry.items():
            if name not in params:
                problems.append((f"initialTrials[{i}].{name}", "not a parameter of this experiment"))
                continue
            try:
                values[name] = coerce_value(params[name], value)
            except ValueProblem as e:
                problems.append((f"initialTrials[{i}].{name}", str(e)))
        missing = [p.name for p in spec.parameters if p.when is None and p.name not in entry]
        problems += [(f"initialTrials[{i}].{name}", "Required value") for name in missing]
        if len(values) < len(entry) or missing:
            continue  # reported above
        active = set(space.active_names(values))
        for p in spec.parameters:
            if p.when is None:
                continue
            if p.name in active and p.name not in values:
                problems.append((f"initialTrials[{i}].{p.name}", f"Required value: active here ({_when(p)})"))
            elif p.name not in active and p.name in values:
                problems.append((f"initialTrials[{i}].{p.name}",
                                 f"inactive here (it is active when {_when(p)}): leave it out"))
        if active == set(values):
            key = space.key(values)
            if key in seen:
                problems.append((f"initialTrials[{i}]", f"repeats initialTrials[{seen[key]}]"))
            seen.setdefault(key, i)
    defaults = spec.warm_start.defaults if spec.warm_start is not None else None
    for name, value in (defaults or {}).items():
        if name not in params:
            problems.append((f"warmStart.defaults.{name}", "not a parameter of this experiment"))
        else:
            try:
                coerce_value(params[name], value)
            except ValueProblem as e:
                problems.append((f"warmStart.defaults.{name}", str(e)))
    return problems


INITIAL_AND_WARM_RULES = [
    Rule(
        "!has(self.initialTrials) || size(self.initialTrials) <= self.maxTrials",
        "initialTrials must not outnumber maxTrials",
        lambda s: not s.initial_trials or len(s.initial_trials) <= s.max_trials,
        field="initialTrials",
    ),
    Rule(
        "!has(self.initialTrials) || !(self.algorithm.name in ["
        + ", ".join(f"'{a}'" for a in INITIAL_TRIALS_EXCLUDED) + "])",
        "initialTrials cannot be combined with the hyperband algorithm: its brackets decide each trial's "
        "configuration and budget",
        lambda s: not s.initial_trials or s.algorithm.name not in INITIAL_TRIALS_EXCLUDED,
        field="initialTrials",
    ),
    Rule(
        "!has(self.warmStart) || self.algorithm.name in [" + ", ".join(f"'{a}'" for a in WARM_START_ALGORITHMS)
        + "]",
        f"warmStart applies only to algorithm {', '.join(WARM_START_ALGORITHMS)}: the others do not learn from "
        "earlier trials",
        lambda s: s.warm_start is None or s.algorithm.name in WARM_START_ALGORITHMS,
        field="warmStart",
    ),
]


CONSTRAINT_ALGORITHMS = tuple(sorted(n for n, c in SAMPLERS.items() if c.supports_constraints))
"""Algorithms that accept outcome constraints (the others are refused a spec with ``constraints``)."""

CONSTRAINT_RULES = [
    Rule(
        "!has(self.constraints) || self.constraints.all(c, (!has(self.objective) || c.metric != self.objective.metric)"
        " && (!has(self.objectives) || self.objectives.all(o, o.metric != c.metric)))",
        "a constraint cannot bound an objective's metric: objectives are optimized, not constrained "
        "(objective.target ends the experiment at a value); constrain another metric the trials report",
        lambda s: not s.constraints or all(c.metric not in [o.metric for o in s.objective_list] for c in s.constraints),
        field="constraints",
    ),
    Rule(
        "!has(self.constraints) || size(self.constraints) == 0 || self.algorithm.name in ["
        + ", ".join(f"'{a}'" for a in CONSTRAINT_ALGORITHMS) + "]",
        f"constraints need an algorithm that supports them: {', '.join(CONSTRAINT_ALGORITHMS)} (the others rank "
        "or promote trials by the objective alone, before or without the final metrics)",
        lambda s: not s.constraints or s.algorithm.name in CONSTRAINT_ALGORITHMS,
        field="constraints",
    ),
]


# --------------------------------------------------------------------------------------------------- checkpoints
# and population-based training

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
PBT_DEFAULT_POPULATION = 8


class Checkpoints(KubeModel):
    persistent_volume_claim: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="The PersistentVolumeClaim (in the experiment's namespace) mounted into every trial Job at "
        "mountPath; each trial writes its checkpoint to <mountPath>/<experiment>/<trial>. For pbt every trial "
        "must be able to read the others' directories: ReadWriteMany, or all trials on one node. kubetune run "
        "ignores it and uses <results directory>/checkpoints.",
    )
    mount_path: str = Field(
        "/checkpoints",
        min_length=2,
        max_length=256,
        pattern=r"^/[^:]*$",
        description="Where the claim is mounted in every container of a trial (an absolute path). Default "
        "/checkpoints.",
    )


def _pbt_settings(s: Any, name: str) -> Any:
    return getattr(s.algorithm.settings, name, None) if s.algorithm.settings is not None else None


PBT_RULES = [
    Rule(
        "self.algorithm.name != 'pbt' || has(self.checkpoints)",
        "the pbt algorithm needs spec.checkpoints: each segment of a member restores a checkpoint another trial "
        "wrote, from a volume every trial mounts",
        lambda s: s.algorithm.name != "pbt" or s.checkpoints is not None,
        field="algorithm",
    ),
    Rule(
        "self.algorithm.name != 'pbt' || !has(self.earlyStopping)",
        "earlyStopping cannot be combined with the pbt algorithm: pbt ends each segment itself and replaces the "
        "bottom of its population",
        lambda s: s.algorithm.name != "pbt" or s.early_stopping is None,
        field="earlyStopping",
    ),
    Rule(
        "self.algorithm.name != 'pbt' || !has(self.initialTrials)",
        "initialTrials cannot be combined with the pbt algorithm: its population decides each segment's "
        "configuration and checkpoint",
        lambda s: s.algorithm.name != "pbt" or not s.initial_trials,
        field="initialTrials",
    ),
    Rule(
        "self.algorithm.name != 'pbt' || self.maxTrials >= (has(self.algorithm.settings) && "
        f"has(self.algorithm.settings.populationSize) ? self.algorithm.settings.populationSize : "
        f"{PBT_DEFAULT_POPULATION})",
        f"with the pbt algorithm maxTrials counts segments and must be at least settings.populationSize (default "
        f"{PBT_DEFAULT_POPULATION})",
        lambda s: s.algorithm.name != "pbt"
        or s.max_trials >= (_pbt_settings(s, "populationSize") or PBT_DEFAULT_POPULATION),
        field="maxTrials",
    ),
]

PAUSE_RULES = [
    # earlyStopping {rule: asha} with spec.checkpoints pauses trials at its rungs (kubetune.pausing)
    Rule(
        "!has(self.checkpoints) || !has(self.earlyStopping) || self.earlyStopping.rule != 'asha' || "
        "has(self.earlyStopping.maxResource)",
        "with spec.checkpoints, earlyStopping rule asha pauses trials at its rungs and resumes them from their "
        "checkpoints when promoted: it needs maxResource, the step every configuration that keeps being promoted "
        "trains to",
        lambda s: s.checkpoints is None or s.early_stopping is None or s.early_stopping.rule != "asha"
        or s.early_stopping.max_resource is not None,
        field="earlyStopping",
    ),
    Rule(
        "!has(self.checkpoints) || !has(self.earlyStopping) || self.earlyStopping.rule != 'asha' || "
        "self.algorithm.name != 'hyperband'",
        "earlyStopping rule asha with spec.checkpoints pauses and resumes trials at its rungs, and so do the "
        "hyperband algorithm's promotions: use one of the two",
        lambda s: s.checkpoints is None or s.early_stopping is None or s.early_stopping.rule != "asha"
        or s.algorithm.name != "hyperband",
        field="earlyStopping",
    ),
]


# --------------------------------------------------------------------------------------------------- spec


# --------------------------------------------------------------------------------------------------- objectives

MIN_OBJECTIVES = 2
MAX_OBJECTIVES = 4
"""``objectives`` holds 2..4 objectives (the exact hypervolume the algorithms and benchmarks use stays cheap)."""
MAX_FRONT_IN_STATUS = 20
"""``status.paretoFront.trials`` holds at most this many members of the Pareto front (see ``paretoFront``)."""
MULTI_OBJECTIVE_ALGORITHMS = tuple(sorted(n for n, c in SAMPLERS.items() if c.supports_multi_objective))
"""Algorithms that accept several objectives (the others are refused a spec with ``objectives``)."""


def _single_objective_algorithm_rule(name: str) -> Rule:
    why = sampler_class(name).multi_objective_refusal
    default = " (the default algorithm)" if name == DEFAULT_ALGORITHM else ""
    return Rule(
        f"!has(self.objectives) || self.algorithm.name != '{name}'",
        f"the {name} algorithm{default} does not support several objectives ({why}): use "
        + ", ".join(MULTI_OBJECTIVE_ALGORITHMS) + " with objectives",
        lambda s: s.objectives is None or s.algorithm.name != name,
        field="algorithm",
    )


MULTI_OBJECTIVE_RULES = [
    Rule(
        "has(self.objective) != has(self.objectives)",
        "give exactly one of objective (one metric) and objectives (2 to 4 metrics, a Pareto front)",
        lambda s: (s.single_objective is None) != (s.objectives is None),
    ),
    Rule(
        "!has(self.objectives) || self.objectives.all(o, self.objectives.exists_one(p, p.metric == o.metric))",
        "objectives must name distinct metrics",
        lambda s: s.objectives is None or len({o.metric for o in s.objectives}) == len(s.objectives),
        field="objectives",
    ),
    Rule(
        "!has(self.objectives) || self.objectives.all(o, !has(o.target))",
        "target is not defined for several objectives: the result is a Pareto front, not one best value (end the "
        "experiment with maxTrials or stopping.maxDurationSeconds)",
        lambda s: s.objectives is None or all(o.target is None for o in s.objectives),
        field="objectives",
    ),
    Rule(
        "!has(self.objectives) || !has(self.earlyStopping)",
        "earlyStopping is not available with several objectives (it compares trials by one objective's curve)",
        lambda s: s.objectives is None or s.early_stopping is None,
        field="earlyStopping",
    ),
    Rule(
        "!has(self.objectives) || !has(self.stopping) || !has(self.stopping.noImprovement)",
        "stopping.noImprovement is not available with several objectives (it follows one best value)",
        lambda s: s.objectives is None or s.stopping is None or s.stopping.no_improvement is None,
        field="stopping",
    ),
    Rule(
        "!has(self.objectives) || !has(self.warmStart)",
        "warmStart is not available with several objectives (it ranks earlier trials by one objective)",
        lambda s: s.objectives is None or s.warm_start is None,
        field="warmStart",
    ),
    *[_single_objective_algorithm_rule(n) for n in sorted(SAMPLERS) if n not in MULTI_OBJECTIVE_ALGORITHMS],
]


class ExperimentSpec(KubeModel):
    single_objective: Objective | None = Field(
        None, alias="objective",
        description="The metric to optimize and its goal (exactly one of objective and objectives).",
    )
    objectives: list[Objective] | None = Field(
        None,
        min_length=MIN_OBJECTIVES,
        max_length=MAX_OBJECTIVES,
        description="Several metrics to optimize at once (2 to 4, distinct, without target): the result is the "
        "Pareto front of the trials, status.paretoFront. Algorithms: " + ", ".join(MULTI_OBJECTIVE_ALGORITHMS)
        + ". Exactly one of objective and objectives.",
    )
    additional_metrics: list[Annotated[str, Field(min_length=1, max_length=63, pattern=METRIC_PATTERN)]] = Field(
        default_factory=list,
        max_length=16,
        description="Other metrics trials report: recorded and shown, not optimized.",
        json_schema_extra={"x-kubetune-item-max-length": 63},
    )
    constraints: list[Constraint] | None = Field(
        None,
        max_length=MAX_CONSTRAINTS,
        description="Optional outcome constraints, keyed by metric: a Succeeded trial is feasible when every "
        "constraint holds on its final metrics, and infeasible when one does not or its metric was not reported "
        "(failed and pruned trials are neither). The best trial is the best feasible one, objective.target and "
        "stopping.noImprovement count feasible trials only, and tpe and bayesian learn where trials are feasible. "
        "Not with cmaes or hyperband.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["metric"]},
    )
    parameters: list[Parameter] = Field(
        min_length=1,
        max_length=64,
        description="The search space, a list keyed by parameter name.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    algorithm: Algorithm = Field(
        default_factory=Algorithm,
        description="The search algorithm.",
        json_schema_extra={"default": {}},  # so the API server fills in the name's default before CEL runs
    )
    early_stopping: EarlyStopping | None = Field(
        None, description="Optional: stop hopeless trials early from their intermediate reports (median or asha)."
    )
    initial_trials: list[ValueMap] | None = Field(
        None,
        max_length=MAX_INITIAL_TRIALS,
        description="Optional: configurations to try first, in order (e.g. a library's defaults): trial k is "
        "initialTrials[k]. Each gives a value for every active parameter (and none for an inactive one), within its "
        "bounds, on its step grid, one of a categorical's values. They count toward maxTrials and the algorithm "
        "learns from them like from any trial; "
        "grid search does not repeat them. Not with hyperband.",
    )
    warm_start: WarmStart | None = Field(
        None,
        description="Optional: learn from the trials of earlier experiments before suggesting (tpe, bayesian). "
        "They are observations for the algorithm, not trials of this experiment (not counted in maxTrials); "
        "status.warmStart says how many were taken in.",
    )
    max_trials: int = Field(ge=1, le=MAX_TRIALS_LIMIT, description="Budget: the number of trials to run.")
    parallel_trials: int = Field(1, ge=1, le=1000, description="How many trials run at once (<= maxTrials).")
    max_failed_trials: int = Field(
        3, ge=0, le=MAX_TRIALS_LIMIT, description="The experiment fails when more trials than this fail."
    )
    stopping: Stopping | None = Field(
        None, description="Optional: when the experiment ends besides maxTrials and objective.target (no "
        "improvement for a number of trials, a wall-clock budget)."
    )
    trial_timeout_seconds: int | None = Field(
        None,
        ge=1,
        le=MAX_DURATION_SECONDS,
        description="Optional time limit per trial in seconds: each trial Job gets activeDeadlineSeconds (the "
        "smaller of this and the template's); a trial running longer is stopped and recorded Failed with reason "
        "DeadlineExceeded (it counts toward maxFailedTrials).",
    )
    checkpoints: Checkpoints | None = Field(
        None,
        description="Optional: where trials keep checkpoints (a PersistentVolumeClaim mounted into every trial); "
        "needed by pbt; with hyperband a promotion resumes its parent's checkpoint, and with earlyStopping rule asha "
        "trials pause at the rungs and resume when promoted. A trial finds its own directory and the one to "
        "restore from with the SDK (checkpoint_dir(), restore_dir()) or the env vars KUBETUNE_CHECKPOINT_DIR and "
        "KUBETUNE_RESTORE_DIR.",
    )
    trial_template: TrialTemplate = Field(description="A batch/v1 Job template for one trial.")

    __rules__ = [
        Rule(
            "self.parallelTrials <= self.maxTrials",
            "parallelTrials must not exceed maxTrials",
            lambda s: s.parallel_trials <= s.max_trials,
            field="parallelTrials",
        ),
        Rule(
            "self.algorithm.name != 'grid' || self.parameters.all(p, p.type != 'float' || has(p.step))",
            "the grid algorithm needs a finite grid: give every float parameter a step",
            lambda s: s.algorithm.name != "grid" or all(p.type != "float" or p.step is not None for p in s.parameters),
            field="algorithm",
        ),
        Rule(
            "self.algorithm.name != 'cmaes' || self.parameters.all(p, p.type != 'categorical')",
            "the cmaes algorithm searches float and int parameters only: use tpe or bayesian for categorical "
            "parameters",
            lambda s: s.algorithm.name != "cmaes" or all(p.type != "categorical" for p in s.parameters),
            field="algorithm",
        ),
        *HYPERBAND_RULES,
        *INITIAL_AND_WARM_RULES,
        *CONSTRAINT_RULES,
        Rule(
            "!has(self.trialTimeoutSeconds) || !has(self.stopping) || !has(self.stopping.maxDurationSeconds)"
            " || self.trialTimeoutSeconds <= self.stopping.maxDurationSeconds",
            "trialTimeoutSeconds must not exceed stopping.maxDurationSeconds",
            lambda s: s.trial_timeout_seconds is None or s.stopping is None or s.stopping.max_duration_seconds is None
            or s.trial_timeout_seconds <= s.stopping.max_duration_seconds,
            field="trialTimeoutSeconds",
        ),
        *CONDITION_RULES,
        *PBT_RULES,
        *PAUSE_RULES,
        *MULTI_OBJECTIVE_RULES,
        Rule(
            "self.parameters == oldSelf.parameters",
            "parameters cannot change once the experiment exists: its trials belong to that search space; "
            "create a new experiment to search another one",
            lambda s: True,  # a transition rule: one object alone always satisfies it
            field="parameters",
        ),
    ]

    def initial_params(self, start: int = 0, n: int = MAX_INITIAL_TRIALS) -> list[dict[str, ParamValue]]:
        """The configurations of ``initialTrials[start:start + n]``, as the parameters' values (the spec is valid:
        see :func:`initial_trial_problems`)."""
        entries = (self.initial_trials or [])[start:start + n] if n > 0 else []
        return [{p.name: coerce_value(p, entry[p.name]) for p in self.parameters if p.name in entry}
                for entry in entries]

    def search_space(self) -> SearchSpace:
        conditions = tuple((p.name, SpaceCondition(p.when.parameter, tuple(p.when.values)))
                           for p in self.parameters if p.when is not None)
        return SearchSpace(tuple((p.name, p.to_distribution()) for p in self.parameters), conditions)

    @property
    def conditional_names(self) -> list[str]:
        """The parameters with a condition (``when``): those a trial's parameters may lack."""
        return [p.name for p in self.parameters if p.when is not None]

    @property
    def objective_list(self) -> list[Objective]:
        """Every objective: ``[objective]`` or ``objectives``."""
        if self.objectives is not None:
            return list(self.objectives)
        return [self.single_objective] if self.single_objective is not None else []

    @property
    def objective(self) -> Objective:
        """The objective, or the first of several (``objectives``); see :attr:`multi_objective`."""
        objectives = self.objective_list
        if not objectives:
            raise ValueError("the spec has neither objective nor objectives")
        return objectives[0]

    @property
    def multi_objective(self) -> bool:
        return self.objectives is not None

    @property
    def metric_names(self) -> list[str]:
        first = [o.metric for o in self.objective_list]
        names = first + [m for m in self.additional_metrics if m not in first]
        return names + [c.metric for c in self.constraints or () if c.metric not in names]


# --------------------------------------------------------------------------------------------------- status


class Condition(KubeModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    type: str = Field(max_length=316, description="Succeeded, Reconciling or Stalled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, description="CamelCase reason.")
    message: str = Field("", max_length=32768, description="Human-readable message.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="The spec generation this condition describes.")


class TrialCounts(KubeModel):
    created: int = Field(0, description="Trials created so far.")
    running: int = Field(0, description="Trials not finished yet.")
    succeeded: int = Field(0, description="Trials that reported the objective.")
    failed: int = Field(0, description="Trials that failed.")
    pruned: int = Field(0, description="Trials stopped early.")
    paused: int | None = Field(
        None, description="With earlyStopping rule asha and spec.checkpoints: trials that ended at a rung, holding "
        "no pod; a promotion resumes one from its checkpoint as a new trial."
    )
    infeasible: int | None = Field(
        None, description="With spec.constraints: Succeeded trials on which a constraint does not hold or whose "
        "metric was not reported (also counted in succeeded)."
    )


class BestTrial(KubeModel):
    name: str = Field(max_length=63, description="The trial's name (its Job's name).")
    number: int = Field(description="The trial's number.")
    objective_value: float = Field(description="The objective value of the best trial.")
    parameters: dict[str, str] = Field(default_factory=dict, description="Parameters, rendered as strings.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Final metrics.")


class ParetoMember(KubeModel):
    name: str = Field(max_length=63, description="The trial's name (its Job's name).")
    number: int = Field(description="The trial's number.")
    values: list[float] = Field(
        max_length=MAX_OBJECTIVES, description="The trial's value of each objective, in the order of objectives."
    )


class ParetoFront(KubeModel):
    metrics: list[str] = Field(
        max_length=MAX_OBJECTIVES, description="The objectives' metrics, the order of each member's values.",
        json_schema_extra={"x-kubetune-item-max-length": 63},
    )
    size: int = Field(description="How many trials the whole Pareto front has (the results hold them all).")
    trials: list[ParetoMember] = Field(
        default_factory=list,
        max_length=MAX_FRONT_IN_STATUS,
        description=f"Members of the front, in number order: all of them when there are at most "
        f"{MAX_FRONT_IN_STATUS}, else {MAX_FRONT_IN_STATUS} spread over it by crowding distance (the extremes of "
        "every objective kept).",
    )


class WarmStartStatus(KubeModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    trials: int = Field(0, description="Trials of the earlier experiments the algorithm learns from.")
    skipped: int = Field(0, description="Trials of the earlier experiments left out (outside the search space, "
                         "without the objective, or beyond warmStart.maxTrials).")
    message: str = Field("", max_length=2048, description="Where they came from and why any were left out.")


class ExperimentStatus(KubeModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    observed_generation: int | None = Field(None, description="The spec generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Succeeded (the summary), Reconciling, Stalled.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    trials: TrialCounts = Field(default_factory=TrialCounts, description="Trial counts by state.")
    best_trial: BestTrial | None = Field(None, description="The best trial so far (one objective).")
    pareto_front: ParetoFront | None = Field(
        None, description="With several objectives: the Pareto front of the Succeeded trials so far."
    )
    start_time: str | None = Field(None, description="When the first trial was created.")
    completion_time: str | None = Field(None, description="When the experiment finished.")
    results: str | None = Field(
        None, max_length=253, description="Prefix of the ConfigMaps holding every finished trial's record."
    )
    warm_start: WarmStartStatus | None = Field(None, description="What the warm start took in (spec.warmStart).")


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field("experiment", max_length=253)
    namespace: str | None = None


class TuningExperiment(BaseModel):
    """A whole manifest, as read from a file."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    api_version: Literal["kubetune.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["TuningExperiment"]
    metadata: Metadata = Field(default_factory=Metadata)
    spec: ExperimentSpec
    status: dict[str, Any] | None = None

    __rules__: ClassVar[list[Rule]] = [
        Rule(
            "!has(self.spec.warmStart) || !(self.metadata.name in self.spec.warmStart.experiments)",
            "spec.warmStart.experiments cannot name the experiment itself",
            lambda e: e.spec.warm_start is None or e.metadata.name not in e.spec.warm_start.experiments,
        ),
        Rule(
            f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
            f"metadata.name must be at most {MAX_NAME_LENGTH} characters so trial Job names stay valid",
            lambda e: len(e.metadata.name) <= MAX_NAME_LENGTH,
        ),
    ]


def render_value(value: ParamValue) -> str:
    """How a parameter value is written into commands, env values and status: JSON-like scalars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return repr(value)
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def check_algorithm(spec: ExperimentSpec) -> None:
    """Instantiate the algorithm once, so settings errors surface before any trial starts."""
    sampler_class(spec.algorithm.name)(
        spec.search_space(), seed=spec.algorithm.seed, settings=spec.algorithm.sampler_settings(),
        objectives=len(spec.objective_list),
    )

def trial_time_limit(spec: ExperimentSpec) -> tuple[float, str] | None:
    """A trial's time limit in seconds and the field that sets it: the smaller of ``trialTimeoutSeconds`` and the
    template's ``activeDeadlineSeconds`` (when positive; the API server checks the template's), or None. On a tie,
    ``trialTimeoutSeconds``."""
    limits: list[tuple[float, str]] = []
    if spec.trial_timeout_seconds is not None:
        limits.append((spec.trial_timeout_seconds, "trialTimeoutSeconds"))
    deadline = spec.trial_template.spec.get("activeDeadlineSeconds")
    if isinstance(deadline, (int, float)) and not isinstance(deadline, bool) and deadline > 0:
        limits.append((deadline, "activeDeadlineSeconds"))
    return min(limits, key=lambda x: x[0]) if limits else None
