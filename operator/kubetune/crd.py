"""Generate the TuningExperiment CustomResourceDefinition from the pydantic models.

The models' JSON schema is turned into a Kubernetes structural schema: references inlined, ``Optional`` unwrapped,
titles dropped, descriptions and bounds kept, and each model's :class:`~kubetune.rules.Rule` list emitted as
``x-kubernetes-validations``. ``crds/`` holds the output; a test keeps it in sync.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from . import spec as s

_KEEP = {
    "type", "description", "default", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "items", "properties", "required",
    "additionalProperties", "format", "maxProperties",
}


def _models() -> dict[str, type[BaseModel]]:
    """Every model reachable from the spec and status, by JSON-schema title."""
    out: dict[str, type[BaseModel]] = {}

    def visit(model: type[BaseModel]) -> None:
        if model.__name__ in out:
            return
        out[model.__name__] = model
        for f in model.model_fields.values():
            for t in _types_in(f.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    visit(t)

    visit(s.ExperimentSpec)
    visit(s.ExperimentStatus)
    return out


def _types_in(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    return [t for a in args for t in _types_in(a)]


def _convert(node: dict[str, Any], defs: dict[str, Any], models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs, models)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) == 1:
            return _convert({**branches[0], **rest}, defs, models)
        types = sorted(b.get("type", "") for b in branches)
        if types != ["integer", "string"]:
            raise ValueError(f"no structural schema for a union of {types}")
        union: dict[str, Any] = {k: v for k, v in rest.items() if k in ("description",)}
        union["x-kubernetes-int-or-string"] = True
        return union
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out["properties"] = {k: _convert(v, defs, models) for k, v in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs, models)
        elif key == "additionalProperties" and isinstance(value, dict):
            out["additionalProperties"] = _convert(value, defs, models)
        elif key == "const":
            out["enum"] = [value]
        elif key in _KEEP:
            out[key] = value
        elif key.startswith("x-kubernetes-"):
            out[key] = value
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]
    if node.get("x-kubetune-item-max-length") and "items" in out:
        out["items"]["maxLength"] = node["x-kubetune-item-max-length"]
    if node.get("x-kubetune-item-pattern") and "items" in out:
        out["items"]["pattern"] = node["x-kubetune-item-pattern"]
    title = node.get("title")
    model = models.get(title) if title else None
    if model is not None:
        rules = [r.to_crd() for r in getattr(model, "__rules__", [])]
        if rules:
            out["x-kubernetes-validations"] = rules
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "additionalProperties" in out and "properties" not in out:
        pass
    if out.get("type") == "number" and out.get("default") is not None:
        out["default"] = float(out["default"])
    if "x-kubernetes-preserve-unknown-fields" in out:
        out.pop("additionalProperties", None)  # with it, the API server prunes below the first level
    if "default" in out and out["default"] is None:
        del out["default"]
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(key), (int, float)) and not isinstance(out.get(key), bool):
            out[bound] = out[key]
            out[key] = True
    order = {"type": 0, "description": 1}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], 2)))


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs, _models())


def _condition_column(condition: str, name: str, field: str = "status", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].{field}',
    }
    if priority:
        col["priority"] = priority
    return col


def crd() -> dict[str, Any]:
    spec_schema = _schema(s.ExperimentSpec)
    status_schema = _schema(s.ExperimentStatus)
    root_rules = [r.to_crd() for r in s.TuningExperiment.__rules__]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{s.PLURAL}.{s.GROUP}",
            "labels": {"app.kubernetes.io/name": "kubetune", "app.kubernetes.io/part-of": "kubetune"},
        },
        "spec": {
            "group": s.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": s.KIND,
                "listKind": f"{s.KIND}List",
                "plural": s.PLURAL,
                "singular": s.SINGULAR,
                "shortNames": s.SHORT_NAMES,
                "categories": s.CATEGORIES,
            },
            "versions": [
                {
                    "name": s.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Metric", "type": "string", "jsonPath": ".spec.objective.metric", "priority": 1},
                        {"name": "Best", "type": "number", "jsonPath": ".status.bestTrial.objectiveValue"},
                        {"name": "Succeeded-Trials", "type": "integer", "jsonPath": ".status.trials.succeeded"},
                        {"name": "Trials", "type": "integer", "jsonPath": ".status.trials.created"},
                        {"name": "Max", "type": "integer", "jsonPath": ".spec.maxTrials"},
                        {"name": "Running", "type": "integer", "jsonPath": ".status.trials.running", "priority": 1},
                        {"name": "Pruned", "type": "integer", "jsonPath": ".status.trials.pruned", "priority": 1},
                        {"name": "Paused", "type": "integer", "jsonPath": ".status.trials.paused", "priority": 1},
                        {"name": "Failed", "type": "integer", "jsonPath": ".status.trials.failed", "priority": 1},
                        {"name": "Infeasible", "type": "integer", "jsonPath": ".status.trials.infeasible",
                         "priority": 1},
                        {"name": "Front", "type": "integer", "jsonPath": ".status.paretoFront.size", "priority": 1},
                        _condition_column("Succeeded", "Succeeded"),
                        _condition_column("Succeeded", "Reason", "reason"),
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A hyperparameter tuning experiment: runs one batch/v1 Job per trial.",
                            "required": ["spec"],
                            "x-kubernetes-validations": root_rules,
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `kubetune crd` from operator/kubetune/spec.py. Do not edit.\n"


class _Dumper(yaml.SafeDumper):
    """Writes a schema used in two places (e.g. ``objective`` and the items of ``objectives``) out in full each
    time, without YAML anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_yaml() -> str:
    return HEADER + yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=120)
