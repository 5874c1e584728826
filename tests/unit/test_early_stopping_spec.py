"""Validation of spec.earlyStopping and of the hyperband algorithm's settings: paths and messages."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kubetune.crd import crd
from kubetune.pruning.config import HYPERBAND_RULES, EarlyStopping
from kubetune.validation import load_experiment, validate_document

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "TuningExperiment",
    "metadata": {"name": "es"},
    "spec": {
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "parameters": [
            {"name": "lr", "type": "float", "min": 0.001, "max": 1, "scale": "log"},
            {"name": "epochs", "type": "int", "min": 1, "max": 27},
        ],
        "maxTrials": 10,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [
            {"name": "t", "image": "x", "command": ["python", "-c", "pass", "${params.lr}", "${params.epochs}"]}]}}}},
    },
}


def problems(early=None, algorithm=None, parameters=None) -> list[tuple[str, str]]:
    doc = copy.deepcopy(BASE)
    if early is not None:
        doc["spec"]["earlyStopping"] = early
    if algorithm is not None:
        doc["spec"]["algorithm"] = algorithm
    if parameters is not None:
        doc["spec"]["parameters"] = parameters
    _, found = validate_document(doc)
    return [(p.path, p.message) for p in found]


@pytest.mark.parametrize(
    "early",
    [
        {"rule": "median"},
        {"rule": "median", "minTrials": 3, "startStep": 2},
        {"rule": "asha"},
        {"rule": "asha", "minTrials": 1, "minResource": 1, "maxResource": 27, "reductionFactor": 3},
        {"rule": "asha", "maxResource": 2},
    ],
)
def test_valid(early):
    assert problems(early) == []


@pytest.mark.parametrize(
    ("early", "expected"),
    [
        ({}, ("spec.earlyStopping.rule", "Required value")),
        ({"rule": "mean"}, ("spec.earlyStopping.rule", "Unsupported value: \"mean\": supported values: 'median' or 'asha'")),
        ({"rule": "median", "minTrials": 0},
         ("spec.earlyStopping.minTrials", "Invalid value: 0: should be greater than or equal to 1")),
        ({"rule": "asha", "reductionFactor": 1},
         ("spec.earlyStopping.reductionFactor", "Invalid value: 1: should be greater than or equal to 2")),
        ({"rule": "asha", "reductionFactor": 11},
         ("spec.earlyStopping.reductionFactor", "Invalid value: 11: should be less than or equal to 10")),
        ({"rule": "median", "startStep": -1},
         ("spec.earlyStopping.startStep", "Invalid value: -1: should be greater than or equal to 0")),
        ({"rule": "median", "patience": 3}, ("spec.earlyStopping.patience", "field not declared in schema")),
        ({"rule": "asha", "startStep": 3}, ("spec.earlyStopping.startStep", "startStep applies only to rule median")),
        ({"rule": "median", "minResource": 3},
         ("spec.earlyStopping.minResource", "minResource applies only to rule asha")),
        ({"rule": "median", "maxResource": 30},
         ("spec.earlyStopping.maxResource", "maxResource applies only to rule asha")),
        ({"rule": "median", "reductionFactor": 2},
         ("spec.earlyStopping.reductionFactor", "reductionFactor applies only to rule asha")),
        ({"rule": "asha", "minResource": 9, "maxResource": 9},
         ("spec.earlyStopping.maxResource", "minResource (default 1) must be less than maxResource")),
        ({"rule": "asha", "maxResource": 1},
         ("spec.earlyStopping.maxResource", "minResource (default 1) must be less than maxResource")),
    ],
)
def test_invalid(early, expected):
    assert expected in problems(early)


def test_every_problem_is_reported():
    found = problems({"rule": "median", "minResource": 3, "reductionFactor": 2})
    assert ("spec.earlyStopping.minResource", "minResource applies only to rule asha") in found
    assert ("spec.earlyStopping.reductionFactor", "reductionFactor applies only to rule asha") in found


def test_effective_defaults():
    e = EarlyStopping.model_validate({"rule": "asha"}).effective
    assert (e.min_trials, e.min_resource, e.max_resource, e.reduction_factor) == (3, 1, None, 3)
    assert EarlyStopping.model_validate({"rule": "median"}).effective.start_step == 0


# --------------------------------------------------------------------------------------------------- hyperband

HB = {"name": "hyperband", "settings": {"resourceParameter": "epochs"}}


def test_hyperband_valid():
    assert problems(algorithm=HB) == []
    assert problems(algorithm={"name": "hyperband", "settings": {
        "resourceParameter": "epochs", "minResource": 3, "maxResource": 27, "reductionFactor": 3}}) == []
    assert problems(early={"rule": "median"}, algorithm=HB) == []


@pytest.mark.parametrize(
    ("algorithm", "parameters", "expected"),
    [
        ({"name": "hyperband"}, None,
         ("spec.algorithm", "the hyperband algorithm needs settings.resourceParameter: the int parameter used as the "
                            "resource (e.g. epochs)")),
        ({"name": "hyperband", "settings": {"resourceParameter": "lr"}}, None,
         ("spec.algorithm", "settings.resourceParameter must name an int parameter")),
        ({"name": "hyperband", "settings": {"resourceParameter": "steps"}}, None,
         ("spec.algorithm", "settings.resourceParameter must name an int parameter")),
        (HB, [{"name": "epochs", "type": "int", "min": 1, "max": 27}],
         ("spec.parameters", "the hyperband algorithm needs at least one parameter besides settings.resourceParameter")),
        ({"name": "hyperband", "settings": {"resourceParameter": "epochs", "maxResource": 81}}, None,
         ("spec.algorithm",
          "settings.minResource and settings.maxResource must lie within the resource parameter's min and max")),
        ({"name": "hyperband", "settings": {"resourceParameter": "epochs", "minResource": 27}}, None,
         ("spec.algorithm", "settings.minResource must be less than settings.maxResource (they default to the "
                            "resource parameter's min and max)")),
        (HB, [{"name": "lr", "type": "float", "min": 0.1, "max": 1}, {"name": "epochs", "type": "int", "min": 0, "max": 9}],
         ("spec.algorithm", "the resource must be at least 1: set settings.minResource, or a min of at least 1 for the "
                            "resource parameter")),
        ({"name": "random", "settings": {"resourceParameter": "epochs"}}, None,
         ("spec.algorithm.settings.resourceParameter", "settings.resourceParameter applies only to algorithm hyperband")),
        ({"name": "hyperband", "settings": {"resourceParameter": "epochs", "reductionFactor": 1}}, None,
         ("spec.algorithm.settings.reductionFactor", "Invalid value: 1: should be greater than or equal to 2")),
    ],
)
def test_hyperband_invalid(algorithm, parameters, expected):
    assert expected in problems(algorithm=algorithm, parameters=parameters)


def test_rules_match_the_sampler_checks():
    """Every spec the rules accept, the sampler accepts too (check_algorithm runs after the rules)."""
    for settings in ({"minResource": 1, "maxResource": 2}, {"minResource": 26}, {"maxResource": 3, "reductionFactor": 10}):
        assert problems(algorithm={"name": "hyperband", "settings": {"resourceParameter": "epochs", **settings}}) == []


def test_crd_carries_the_rules_and_the_schema():
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    es = schema["properties"]["earlyStopping"]
    assert es["required"] == ["rule"] and es["properties"]["rule"]["enum"] == ["median", "asha"]
    assert es["properties"]["minTrials"]["default"] == 3
    assert "default" not in es["properties"]["reductionFactor"]  # rule-specific fields: no schema default
    assert [v["message"] for v in es["x-kubernetes-validations"]] == [r.message for r in EarlyStopping.__rules__]
    spec_rules = [v["message"] for v in schema["x-kubernetes-validations"]]
    assert all(r.message in spec_rules for r in HYPERBAND_RULES)
    settings = schema["properties"]["algorithm"]["properties"]["settings"]["properties"]
    assert settings["resourceParameter"]["type"] == "string"
    assert settings["reductionFactor"]["minimum"] == 2 and settings["reductionFactor"]["maximum"] == 10


@pytest.mark.parametrize("name", ["digits-mlp-asha.yaml", "digits-mlp-hyperband.yaml"])
def test_examples_validate(name):
    exp = load_experiment(ROOT / "examples" / name)
    assert exp.spec.early_stopping is not None or exp.spec.algorithm.name == "hyperband"
    yaml.safe_load((ROOT / "examples" / name).read_text())
