"""The generated CRD: in sync with the models, structural, and carrying every cross-field rule."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from kubetune import crd as crd_module
from kubetune import spec as s
from kubetune.crd import HEADER, crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds" / "tuningexperiments.kubetune.io.yaml"
REGENERATE = "kubetune crd -o crds/tuningexperiments.kubetune.io.yaml"


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    return crd()


@pytest.fixture(scope="module")
def version(generated: dict[str, Any]) -> dict[str, Any]:
    versions = generated["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


@pytest.fixture(scope="module")
def schema(version: dict[str, Any]) -> dict[str, Any]:
    return version["schema"]["openAPIV3Schema"]


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


# ------------------------------------------------------------------------------------------------- in sync

def test_committed_crd_is_in_sync() -> None:
    assert COMMITTED.exists(), f"{COMMITTED} is missing: run `{REGENERATE}`"
    committed = COMMITTED.read_text()
    generated = crd_yaml()
    assert committed == generated, (
        f"{COMMITTED.relative_to(ROOT)} differs from what operator/kubetune/spec.py generates; "
        f"run `{REGENERATE}` and commit the result"
    )


def test_kubetune_crd_command_prints_the_same(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "kubetune", "crd"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == crd_yaml()
    out = tmp_path / "crd.yaml"
    r = subprocess.run([sys.executable, "-m", "kubetune", "crd", "-o", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert out.read_text() == crd_yaml()


def test_output_starts_with_the_header_and_parses_back(generated: dict[str, Any]) -> None:
    text = crd_yaml()
    assert text.startswith(HEADER)
    assert yaml.safe_load(text) == generated


# ------------------------------------------------------------------------------------------------- identity

def test_names_scope_and_subresources(generated: dict[str, Any], version: dict[str, Any]) -> None:
    assert generated["apiVersion"] == "apiextensions.k8s.io/v1"
    assert generated["kind"] == "CustomResourceDefinition"
    assert generated["metadata"]["name"] == "tuningexperiments.kubetune.io"
    spec = generated["spec"]
    assert spec["group"] == "kubetune.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "TuningExperiment",
        "listKind": "TuningExperimentList",
        "plural": "tuningexperiments",
        "singular": "tuningexperiment",
        "shortNames": ["tex"],
        "categories": ["kubetune"],
    }
    assert version["name"] == "v1alpha1" and version["served"] is True and version["storage"] is True
    assert version["subresources"] == {"status": {}}


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    # API.md: best objective value, trials succeeded/total, the Succeeded condition, age.
    assert columns["Best"]["jsonPath"] == ".status.bestTrial.objectiveValue"
    assert columns["Best"]["type"] == "number"
    assert columns["Succeeded-Trials"]["jsonPath"] == ".status.trials.succeeded"
    assert columns["Trials"]["jsonPath"] == ".status.trials.created"
    assert columns["Max"]["jsonPath"] == ".spec.maxTrials"
    assert columns["Age"] == {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    # several objectives: the Pareto front's size, with -o wide
    assert columns["Front"] == {"name": "Front", "type": "integer", "jsonPath": ".status.paretoFront.size",
                                "priority": 1}
    # Conditions are a list: columns select the Succeeded condition by type, never by position.
    assert columns["Succeeded"]["jsonPath"] == '.status.conditions[?(@.type=="Succeeded")].status'
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Succeeded")].reason'
    for c in version["additionalPrinterColumns"]:
        assert c["type"] in ("string", "number", "integer", "boolean", "date"), c
        if ".conditions" in c["jsonPath"]:
            assert "[?(@.type==" in c["jsonPath"], c
            assert "[0]" not in c["jsonPath"], c
    # The columns shown by default (priority 0) include everything API.md promises.
    default = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    for name in ("Best", "Succeeded-Trials", "Trials", "Succeeded", "Age"):
        assert name in default


def test_every_printer_column_points_at_a_schema_field(schema: dict[str, Any], version: dict[str, Any]) -> None:
    for c in version["additionalPrinterColumns"]:
        path = c["jsonPath"]
        if path.startswith(".metadata."):
            continue
        node = schema
        for part in re.sub(r"\[\?\(.*?\)\]", "[]", path).lstrip(".").split("."):
            name = part.split("[")[0]
            node = node["properties"][name]
            if "[" in part:
                node = node["items"]
        assert "type" in node, path


# ------------------------------------------------------------------------------------------------- structural

UNTYPED = {".spec.parameters[].values[]": "x-kubernetes-int-or-string"}  # categorical values: strings or integers
UNTYPED[".spec.parameters[].when.values[]"] = "x-kubernetes-int-or-string"  # values of the categorical it names
PRESERVE_UNKNOWN = {".spec.trialTemplate.spec"}  # a batch/v1 JobSpec, validated by the API server per Job
# a value per parameter (a number, or a categorical string or integer), checked against the space by kubetune
PRESERVE_UNKNOWN |= {".spec.initialTrials[]", ".spec.warmStart.defaults"}


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    untyped = {}
    for path, node in _nodes(schema):
        if "type" not in node:
            marker = [k for k in ("x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string")
                      if node.get(k) is True]
            assert marker, f"{path or '<root>'} has no type"
            untyped[path] = marker[0]
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
        assert "default" not in node or node["default"] is not None, f"{path}: default: null"
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "not", "title", "const", "nullable", "$defs"):
            assert forbidden not in node, f"{path}: {forbidden}"
        if node.get("type") == "object":
            assert not ("properties" in node and isinstance(node.get("additionalProperties"), dict)), path
        assert node.get("additionalProperties") is not False, path
        for key in node:
            assert key in crd_module._KEEP or key.startswith("x-kubernetes-"), f"{path}: unexpected key {key}"
    assert untyped == UNTYPED
    preserved = {p for p, node in _nodes(schema) if node.get("x-kubernetes-preserve-unknown-fields")}
    assert preserved == PRESERVE_UNKNOWN
    for path in preserved:  # with additionalProperties the API server would prune below the first level
        assert "additionalProperties" not in dict(_nodes(schema))[path], path


def test_no_default_null_anywhere_in_the_text() -> None:
    assert "default: null" not in crd_yaml()


def test_required_fields_and_bounds(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    # objective or objectives: exactly one, by a CEL rule (tests/unit/test_validation.py)
    assert set(spec["required"]) == {"parameters", "maxTrials", "trialTemplate"}
    assert schema["required"] == ["spec"]
    props = spec["properties"]
    assert (props["maxTrials"]["minimum"], props["maxTrials"]["maximum"]) == (1, s.MAX_TRIALS_LIMIT)
    assert props["parallelTrials"]["default"] == 1
    assert props["maxFailedTrials"]["default"] == 3
    params = props["parameters"]
    assert (params["minItems"], params["maxItems"]) == (1, 64)
    assert params["x-kubernetes-list-type"] == "map"
    assert params["x-kubernetes-list-map-keys"] == ["name"]
    item = params["items"]["properties"]
    assert item["type"]["enum"] == ["float", "int", "categorical"]
    assert item["scale"]["enum"] == ["linear", "log"] and item["scale"]["default"] == "linear"
    assert item["step"]["exclusiveMinimum"] is True and item["step"]["minimum"] == 0
    assert props["objective"]["properties"]["goal"]["enum"] == ["maximize", "minimize"]
    assert props["algorithm"]["properties"]["name"]["enum"] == sorted(s.SAMPLERS)
    assert props["additionalMetrics"]["items"]["pattern"] == s.METRIC_PATTERN
    assert props["objective"]["properties"]["metric"]["pattern"] == s.METRIC_PATTERN
    several = props["objectives"]
    assert (several["minItems"], several["maxItems"]) == (s.MIN_OBJECTIVES, s.MAX_OBJECTIVES) == (2, 4)
    assert several["items"]["properties"]["goal"]["enum"] == ["maximize", "minimize"]
    front = schema["properties"]["status"]["properties"]["paretoFront"]["properties"]
    assert front["trials"]["maxItems"] == s.MAX_FRONT_IN_STATUS == 20
    assert front["trials"]["items"]["properties"]["values"]["maxItems"] == 4


def test_every_field_has_a_description(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]
    for path, node in _nodes(spec, ".spec"):
        if path.endswith("[]") or path.endswith("{}") or path == ".spec":
            continue
        assert node.get("description"), f"{path} has no description"


def test_every_setting_of_every_algorithm_is_in_the_schema(schema: dict[str, Any]) -> None:
    settings = schema["properties"]["spec"]["properties"]["algorithm"]["properties"]["settings"]["properties"]
    for name, cls in s.SAMPLERS.items():
        for fname, finfo in cls.Settings.model_fields.items():
            alias = finfo.alias or fname
            assert alias in settings, f"{name}: setting {alias} missing"


# ------------------------------------------------------------------------------------------------- rules

def _rules_in(schema: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for path, node in _nodes(schema):
        if node.get("x-kubernetes-validations"):
            out[path] = node["x-kubernetes-validations"]
    return out


def _model_nodes(model: type[BaseModel], node: dict[str, Any], path: str
                 ) -> Iterator[tuple[type[BaseModel], dict[str, Any], str]]:
    """Walk the models and the schema together: each model with the schema node generated from it."""
    yield model, node, path
    for name, finfo in model.model_fields.items():
        alias = finfo.alias or name
        for t in crd_module._types_in(finfo.annotation):
            if isinstance(t, type) and issubclass(t, BaseModel):
                sub = node["properties"][alias]
                if sub.get("type") == "array":
                    yield from _model_nodes(t, sub["items"], f"{path}.{alias}[]")
                else:
                    yield from _model_nodes(t, sub, f"{path}.{alias}")


def test_every_rule_of_every_model_is_a_cel_rule_with_the_same_message(schema: dict[str, Any]) -> None:
    pairs = list(_model_nodes(s.ExperimentSpec, schema["properties"]["spec"], ".spec"))
    pairs.append((s.TuningExperiment, schema, ""))
    seen_models = {m for m, _n, _p in pairs}
    # every model with rules that the CRD generator knows about is reached by the walk
    assert {m for m in crd_module._models().values() if getattr(m, "__rules__", [])} <= seen_models
    checked = set()
    total = 0
    for model, node, path in pairs:
        rules = getattr(model, "__rules__", [])
        emitted = node.get("x-kubernetes-validations", [])
        assert len(emitted) == len(rules), f"{model.__name__} at {path or '<root>'}"
        for rule, cel in zip(rules, emitted):
            assert cel["rule"] == rule.cel, path
            assert cel["message"] == rule.message, path
            assert cel.get("fieldPath") == (f".{rule.field}" if rule.field else None), path
        if rules:
            checked.add(path)
            total += len(rules)
    # the rules this repository promises live where they should
    assert {"", ".spec", ".spec.parameters[]", ".spec.algorithm"} <= checked
    # and there is no CEL rule anywhere that the Python side does not apply
    assert set(_rules_in(schema)) == checked
    assert sum(len(v) for v in _rules_in(schema).values()) == total


def test_status_models_carry_no_rules(schema: dict[str, Any]) -> None:
    # The operator writes status; a CEL rule there would make its writes fail.
    assert not [p for p in _rules_in(schema) if p.startswith(".status")]


def test_rules_the_api_promises_are_there(schema: dict[str, Any]) -> None:
    messages = {r["message"] for v in _rules_in(schema).values() for r in v}
    for promised in (
        "min must be less than max",
        "scale log needs min > 0",
        "categorical parameters need values",
        "categorical parameters take values, not min, max or step",
        "parallelTrials must not exceed maxTrials",
        "the grid algorithm needs a finite grid: give every float parameter a step",
        "metadata.name must be at most 52 characters so trial Job names stay valid",
    ):
        assert promised in messages
    # Distinct categorical values: the list is a set (the API server rejects duplicates itself).
    values = schema["properties"]["spec"]["properties"]["parameters"]["items"]["properties"]["values"]
    assert values["x-kubernetes-list-type"] == "set"
    # Unique parameter names: the list is a map keyed by name (the API server rejects duplicates itself).
    assert schema["properties"]["spec"]["properties"]["parameters"]["x-kubernetes-list-map-keys"] == ["name"]
    # Every algorithm-specific setting has a rule tying it to its algorithms.
    for alias, owners in s.SETTING_OWNERS.items():
        assert f"settings.{alias} applies only to algorithm {', '.join(owners)}" in messages


def test_field_paths_name_existing_fields(schema: dict[str, Any]) -> None:
    nodes = dict(_nodes(schema))
    for where, rules in _rules_in(schema).items():
        for rule in rules:
            if "fieldPath" not in rule:
                continue
            node = nodes[where]
            for part in rule["fieldPath"].lstrip(".").split("."):
                node = node["properties"][part]


def test_rule_messages_are_unique_per_node(schema: dict[str, Any]) -> None:
    for where, rules in _rules_in(schema).items():
        messages = [r["message"] for r in rules]
        assert len(messages) == len(set(messages)), where
