"""Offline validation of a TuningExperiment manifest: the checks the API server applies, with the same messages.

Schema checks (types, bounds, enums, unknown fields) come from the pydantic models, worded like the API server's
messages; cross-field checks come from the same :class:`~kubetune.rules.Rule` objects that generate the CRD's CEL
rules. On top, checks the API server cannot make before a trial Job exists (the template has a container, the
algorithm accepts its settings) are reported as well, with their own path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .spec import TuningExperiment, check_algorithm, initial_trial_problems
from .template import template_problems


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidExperiment(ValueError):
    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        head = f"{source}: " if source else ""
        super().__init__(head + "invalid TuningExperiment:\n" + "\n".join(f"  {p}" for p in problems))


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part) in ("str", "bool", "int", "float") or str(part).startswith(("function-", "literal[")):
            continue  # union branch names, not fields
        else:
            out += ("." if out else "") + str(part)
    return out


def _describe(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "missing":
        return "Required value"
    if kind == "extra_forbidden":
        return "field not declared in schema"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        return f"Unsupported value: {json.dumps(value, default=str)}: supported values: {expected}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": "greater than or equal to",
            "greater_than": "greater than",
            "less_than_equal": "less than or equal to",
            "less_than": "less than",
        }[kind]
        bound = next(iter(ctx.values()), "")
        return f"Invalid value: {json.dumps(value, default=str)}: should be {words} {bound}"
    if kind in ("too_short", "too_long", "string_too_short", "string_too_long"):
        return f"Invalid value: {err['msg']}"
    if kind == "string_pattern_mismatch":
        return f"Invalid value: {json.dumps(value, default=str)}: should match '{ctx.get('pattern')}'"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"Invalid value: {json.dumps(value, default=str)[:80]}: {err['msg']}"


def schema_problems(e: ValidationError) -> list[Problem]:
    """The problems of a pydantic validation error, worded like the API server's."""
    return [Problem(_loc_to_path(err["loc"]), _describe(err)) for err in e.errors()]


def _walk(model: BaseModel, path: str) -> Iterator[tuple[BaseModel, str]]:
    yield model, path
    for name, finfo in type(model).model_fields.items():
        value = getattr(model, name)
        key = finfo.alias or name
        sub = f"{path}.{key}" if path else key
        if isinstance(value, BaseModel):
            yield from _walk(value, sub)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _walk(item, f"{sub}[{i}]")


def rule_problems(model: BaseModel) -> list[Problem]:
    """Apply every cross-field rule in the model tree."""
    problems: list[Problem] = []
    for node, path in _walk(model, ""):
        for rule in getattr(type(node), "__rules__", []):
            try:
                ok = rule.check(node)
            except Exception:  # a rule on a partially invalid object: let another rule speak
                ok = True
            if not ok:
                where = (f"{path}.{rule.field}" if path else rule.field) if rule.field else path
                problems.append(Problem(where, rule.message))
    return problems


def _duplicates(doc: dict[str, Any]) -> list[Problem]:
    params = ((doc.get("spec") or {}).get("parameters")) or []
    seen: set[str] = set()
    out: list[Problem] = []
    if isinstance(params, list):
        for i, p in enumerate(params):
            if isinstance(p, dict) and isinstance(p.get("name"), str):
                if p["name"] in seen:
                    out.append(Problem(f"spec.parameters[{i}]", f'Duplicate value: {{"name":"{p["name"]}"}}'))
                seen.add(p["name"])
            when = p.get("when") if isinstance(p, dict) else None
            for where, values in (("values", p.get("values") if isinstance(p, dict) else None),
                                  ("when.values", when.get("values") if isinstance(when, dict) else None)):
                if not isinstance(values, list):
                    continue
                seen_values: set[tuple[str, str]] = set()  # linear in the list, however long a local file makes it
                for j, v in enumerate(values):
                    key = (type(v).__name__, json.dumps(v, sort_keys=True, default=str))
                    if key in seen_values:
                        out.append(Problem(f"spec.parameters[{i}].{where}[{j}]", f"Duplicate value: {json.dumps(v)}"))
                        if len(out) >= 100:
                            return out
                    seen_values.add(key)
    constraints = (doc.get("spec") or {}).get("constraints")
    metrics: set[str] = set()
    for i, c in enumerate(constraints if isinstance(constraints, list) else []):
        if isinstance(c, dict) and isinstance(c.get("metric"), str):
            if c["metric"] in metrics:
                out.append(Problem(f"spec.constraints[{i}]", f'Duplicate value: {{"metric":"{c["metric"]}"}}'))
            metrics.add(c["metric"])
    return out


def validate_document(doc: Any) -> tuple[TuningExperiment | None, list[Problem]]:
    """Validate one parsed manifest; returns the model (when schema-valid) and every problem found."""
    if not isinstance(doc, dict):
        return None, [Problem("", "a TuningExperiment manifest must be a YAML mapping")]
    problems = _duplicates(doc)
    try:
        exp = TuningExperiment.model_validate(doc)
    except ValidationError as e:
        problems += schema_problems(e)
        return None, problems
    problems += rule_problems(exp)
    if not problems:
        problems += [Problem(f"spec.{path}", message) for path, message in initial_trial_problems(exp.spec)]
    if not problems:
        names = [p.name for p in exp.spec.parameters]
        problems += [Problem("spec.trialTemplate." + p, m)
                     for p, m in template_problems(exp.spec.trial_template.spec, names,
                                                   exp.spec.conditional_names)]
        for i, param in enumerate(exp.spec.parameters):
            try:
                param.to_distribution()
            except (ValueError, TypeError, ArithmeticError) as e:
                problems.append(Problem(f"spec.parameters[{i}]", _first_line(e)))
    if not problems:
        try:
            check_algorithm(exp.spec)
        except (ValueError, TypeError, ArithmeticError) as e:
            problems.append(Problem("spec.algorithm", _first_line(e)))
    return exp, problems


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def load_experiment(path: str | Path) -> TuningExperiment:
    """Read and validate a manifest file; raise :class:`InvalidExperiment` with every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidExperiment([Problem("", f"cannot read {path}: {e.strerror}")], str(path)) from None
    return parse_experiment(text, str(path))


def parse_experiment(text: str, source: str = "") -> TuningExperiment:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise InvalidExperiment([Problem("", f"invalid YAML: {where}{getattr(e, 'problem', e)}")], source) from None
    others = [d for d in docs if isinstance(d, dict) and d.get("kind") not in (None, "TuningExperiment")]
    if len(others) < len(docs) or len(docs) > 1:  # other kinds alongside: skip them; a lone document: check it
        docs = [d for d in docs if not any(d is o for o in others)]
    if len(docs) != 1:
        raise InvalidExperiment([Problem("", f"expected exactly one TuningExperiment, found {len(docs)}")], source)
    exp, problems = validate_document(docs[0])
    if problems or exp is None:
        raise InvalidExperiment(problems, source)
    return exp
