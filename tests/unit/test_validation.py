"""The spec rules: every invalid manifest gets its exact field path and message (``kubetune validate``).

Each case is a small variation of one valid base manifest, so a case fails for the one reason it names.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.engine import DEFAULT_ALGORITHM, SAMPLERS
from kubetune.spec import (
    CONDITION_ALGORITHMS,
    CONSTRAINT_ALGORITHMS,
    MAX_NAME_LENGTH,
    MULTI_OBJECTIVE_ALGORITHMS,
    SETTING_OWNERS,
    TuningExperiment,
)
from kubetune.validation import InvalidExperiment, Problem, load_experiment, parse_experiment, validate_document

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

BASE_YAML = """\
apiVersion: kubetune.io/v1alpha1
kind: TuningExperiment
metadata:
  name: exp
spec:
  objective:
    metric: acc
    goal: maximize
  parameters:
    - name: lr
      type: float
      min: 0.001
      max: 1.0
      scale: log
    - name: layers
      type: int
      min: 1
      max: 4
    - name: opt
      type: categorical
      values: [adam, sgd]
  algorithm:
    name: random
    seed: 1
  maxTrials: 10
  parallelTrials: 2
  trialTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: trial
              image: trial:1
              command: [python, train.py, --lr, "${params.lr}", --layers, "${params.layers}"]
              env:
                - {name: OPT, value: "${params.opt}"}
"""
BASE: dict[str, Any] = yaml.safe_load(BASE_YAML)

MINIMAL = {
    "apiVersion": "kubetune.io/v1alpha1",
    "kind": "TuningExperiment",
    "spec": {
        "objective": {"metric": "loss", "goal": "minimize"},
        "parameters": [{"name": "x", "type": "float", "min": -1, "max": 1}],
        "maxTrials": 1,
        "trialTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "t", "command": ["true"]}]}}}},
    },
}


def P(i: int) -> Callable[[dict], dict]:
    return lambda d: d["spec"]["parameters"][i]


def container(d: dict) -> dict:
    return d["spec"]["trialTemplate"]["spec"]["template"]["spec"]["containers"][0]


def pod_spec(d: dict) -> dict:
    return d["spec"]["trialTemplate"]["spec"]["template"]["spec"]


def _set(get: Callable[[dict], dict], **kv: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        get(d).update({k.rstrip("_"): v for k, v in kv.items()})
    return mutate


def _pop(get: Callable[[dict], dict], key: str) -> Callable[[dict], None]:
    return lambda d: get(d).pop(key)


spec = lambda d: d["spec"]
top = lambda d: d
algo = lambda d: d["spec"]["algorithm"]
objective = lambda d: d["spec"]["objective"]
meta = lambda d: d["metadata"]

TC = "spec.trialTemplate.spec.template.spec"

def _conditional(when: dict[str, Any]) -> Callable[[dict], None]:
    """Append a float parameter "momentum" with the condition ``when``."""
    return lambda d: d["spec"]["parameters"].append({"name": "momentum", "type": "float", "min": 0.0, "max": 0.99,
                                                     "when": when})


TWO_OBJECTIVES = [{"metric": "acc", "goal": "maximize"}, {"metric": "size", "goal": "minimize"}]
SINGLE_OBJECTIVE_ALGORITHMS = sorted(n for n, c in SAMPLERS.items() if not c.supports_multi_objective)


def _refusal(name: str) -> str:
    default = " (the default algorithm)" if name == DEFAULT_ALGORITHM else ""
    return (f"the {name} algorithm{default} does not support several objectives "
            f"({SAMPLERS[name].multi_objective_refusal}): use {', '.join(MULTI_OBJECTIVE_ALGORITHMS)} with objectives")


def _several(objectives: list[dict[str, Any]]) -> Callable[[dict], None]:
    """Replace the objective with ``objectives``."""
    def mutate(d: dict) -> None:
        d["spec"].pop("objective")
        d["spec"]["objectives"] = copy.deepcopy(objectives)
    return mutate


UNCONDITIONAL = sorted(n for n, c in SAMPLERS.items() if not c.supports_conditions and n != "hyperband")

# (id, mutation of the base, expected problems as (path, message))
CASES: list[tuple[str, Callable[[dict], None], list[tuple[str, str]]]] = [
    # unknown fields
    ("unknown-top-level-field", _set(top, extra=1), [("extra", "field not declared in schema")]),
    ("unknown-spec-field", _set(spec, maxTrails=5), [("spec.maxTrails", "field not declared in schema")]),
    ("unknown-parameter-field", _set(P(0), minimum=0.1),
     [("spec.parameters[0].minimum", "field not declared in schema")]),
    ("unknown-objective-field", _set(objective, direction="up"),
     [("spec.objective.direction", "field not declared in schema")]),
    # missing required fields
    ("missing-objective", _pop(spec, "objective"),
     [("spec", "give exactly one of objective (one metric) and objectives (2 to 4 metrics, a Pareto front)")]),
    ("missing-goal", _pop(objective, "goal"), [("spec.objective.goal", "Required value")]),
    ("missing-metric", _pop(objective, "metric"), [("spec.objective.metric", "Required value")]),
    ("missing-parameters", _pop(spec, "parameters"), [("spec.parameters", "Required value")]),
    ("missing-maxTrials", _pop(spec, "maxTrials"), [("spec.maxTrials", "Required value")]),
    ("missing-trialTemplate", _pop(spec, "trialTemplate"), [("spec.trialTemplate", "Required value")]),
    ("missing-spec", _pop(top, "spec"), [("spec", "Required value")]),
    ("missing-parameter-type", _pop(P(1), "type"), [("spec.parameters[1].type", "Required value")]),
    ("empty-parameters", _set(spec, parameters=[]),
     [("spec.parameters", "Invalid value: List should have at least 1 item after validation, not 0")]),
    # enums
    ("bad-goal", _set(objective, goal="max"),
     [("spec.objective.goal", "Unsupported value: \"max\": supported values: 'maximize' or 'minimize'")]),
    ("bad-parameter-type", _set(P(0), type="double"),
     [("spec.parameters[0].type",
       "Unsupported value: \"double\": supported values: 'float', 'int' or 'categorical'")]),
    ("bad-scale", _set(P(0), scale="exp"),
     [("spec.parameters[0].scale", "Unsupported value: \"exp\": supported values: 'linear' or 'log'")]),
    # bounds
    ("min-greater-than-max", _set(P(1), min=5), [("spec.parameters[1].min", "min must be less than max")]),
    ("min-equals-max", _set(P(1), min=4), [("spec.parameters[1].min", "min must be less than max")]),
    ("float-min-equals-max", _set(P(0), min=1.0), [("spec.parameters[0].min", "min must be less than max")]),
    ("float-without-min", _pop(P(0), "min"), [("spec.parameters[0]", "float and int parameters need min and max")]),
    ("int-without-max", _pop(P(1), "max"), [("spec.parameters[1]", "float and int parameters need min and max")]),
    ("log-min-zero", _set(P(0), min=0), [("spec.parameters[0].min", "scale log needs min > 0")]),
    ("log-min-negative", _set(P(0), min=-1), [("spec.parameters[0].min", "scale log needs min > 0")]),
    # categorical
    ("categorical-without-values", _pop(P(2), "values"),
     [("spec.parameters[2]", "categorical parameters need values")]),
    ("categorical-empty-values", _set(P(2), values=[]),
     [("spec.parameters[2].values", "Invalid value: List should have at least 1 item after validation, not 0")]),
    ("categorical-duplicate-values", _set(P(2), values=["adam", "sgd", "adam"]),
     [("spec.parameters[2].values[2]", 'Duplicate value: "adam"')]),
    ("categorical-duplicate-integers", _set(P(2), values=[1, 2, 1]),
     [("spec.parameters[2].values[2]", "Duplicate value: 1")]),
    ("categorical-float-value", _set(P(2), values=[0.5, "a"]),
     [("spec.parameters[2].values", 'values[0] must be of type integer,string: "number" (write floats and booleans '
                                    'quoted, e.g. "0.5")')]),
    ("categorical-boolean-value", _set(P(2), values=["a", True]),
     [("spec.parameters[2].values", 'values[1] must be of type integer,string: "boolean" (write floats and booleans '
                                    'quoted, e.g. "true")')]),
    ("categorical-with-min-max", _set(P(2), min=0, max=1),
     [("spec.parameters[2]", "categorical parameters take values, not min, max or step")]),
    ("categorical-with-step", _set(P(2), step=1),
     [("spec.parameters[2]", "categorical parameters take values, not min, max or step")]),
    ("categorical-65-values", _set(P(2), values=[f"v{i}" for i in range(65)]),
     [("spec.parameters[2].values", "Invalid value: List should have at most 64 items after validation, not 65")]),
    ("values-on-float", _set(P(0), values=["0.1", "0.2"]),
     [("spec.parameters[0].values", "values apply only to categorical parameters")]),
    # int and step
    ("int-fractional-min", _set(P(1), min=1.5),
     [("spec.parameters[1]", "int parameters need whole-number min and max")]),
    ("int-fractional-max", _set(P(1), max=3.5),
     [("spec.parameters[1]", "int parameters need whole-number min and max")]),
    ("int-fractional-step", _set(P(1), step=0.5),
     [("spec.parameters[1].step", "int parameters need a whole-number step")]),
    ("step-greater-than-range", _set(P(1), step=4), [("spec.parameters[1].step", "step must not exceed max - min")]),
    ("step-zero", _set(P(1), step=0), [("spec.parameters[1].step", "Invalid value: 0: should be greater than 0.0")]),
    ("step-with-log-float", _set(P(0), step=0.01),
     [("spec.parameters[0].step", "step cannot be combined with scale log (except step 1 for int parameters)")]),
    ("step-2-with-log-int", _set(P(1), scale="log", step=2),
     [("spec.parameters[1].step", "step cannot be combined with scale log (except step 1 for int parameters)")]),
    ("duplicate-parameter-names", lambda d: d["spec"]["parameters"].append(
        {"name": "lr", "type": "int", "min": 1, "max": 3}),
     [("spec.parameters[3]", 'Duplicate value: {"name":"lr"}')]),
    ("parameter-name-starts-with-digit", _set(P(0), name="1lr"),
     [("spec.parameters[0].name", "Invalid value: \"1lr\": should match '^[A-Za-z_][A-Za-z0-9_.\\-]*$'")]),
    ("65-parameters", _set(spec, parameters=[{"name": f"p{i}", "type": "int", "min": 0, "max": 1}
                                             for i in range(65)]),
     [("spec.parameters", "Invalid value: List should have at most 64 items after validation, not 65")]),
    # algorithm
    ("unknown-algorithm", _set(algo, name="annealing"),
     [("spec.algorithm.name", "Unsupported value: \"annealing\": supported values: "
                              + " or ".join([", ".join(f"'{n}'" for n in sorted(SAMPLERS)[:-1]),
                                             f"'{sorted(SAMPLERS)[-1]}'"]))]),
    ("unknown-setting", _set(algo, settings={"temperature": 1}),
     [("spec.algorithm.settings.temperature", "field not declared in schema")]),
    ("setting-of-another-algorithm", _set(algo, settings={"order": "shuffled"}),
     [("spec.algorithm.settings.order", "settings.order applies only to algorithm grid")]),
    ("shared-setting-on-wrong-algorithm", _set(algo, settings={"nStartupTrials": 5}),
     [("spec.algorithm.settings.nStartupTrials", "settings.nStartupTrials applies only to algorithm bayesian, tpe")]),
    ("setting-above-bound", _set(algo, name="tpe", settings={"gamma": 1.5}),
     [("spec.algorithm.settings.gamma", "Invalid value: 1.5: should be less than 1.0")]),
    ("setting-below-bound", _set(algo, name="tpe", settings={"nStartupTrials": 0}),
     [("spec.algorithm.settings.nStartupTrials", "Invalid value: 0: should be greater than or equal to 1")]),
    ("setting-bad-enum", _set(algo, name="grid", settings={"order": "random"}),
     [("spec.algorithm.settings.order",
       "Unsupported value: \"random\": supported values: 'lexicographic' or 'shuffled'")]),
    ("grid-float-without-step", _set(algo, name="grid"),
     [("spec.algorithm", "the grid algorithm needs a finite grid: give every float parameter a step")]),
    ("cmaes-with-categorical", _set(algo, name="cmaes"),
     [("spec.algorithm", "the cmaes algorithm searches float and int parameters only: use tpe or bayesian for "
                         "categorical parameters")]),
    ("cmaes-population-below-bound",
     lambda d: (_set(algo, name="cmaes", settings={"populationSize": 3})(d), _without_categorical(d)),
     [("spec.algorithm.settings.populationSize", "Invalid value: 3: should be greater than or equal to 4")]),
    ("cmaes-bad-restart-strategy",
     lambda d: (_set(algo, name="cmaes", settings={"restartStrategy": "bipop"})(d), _without_categorical(d)),
     [("spec.algorithm.settings.restartStrategy", "Unsupported value: \"bipop\": supported values: 'none' or "
                                                  "'ipop'")]),
    ("negative-seed", _set(algo, seed=-1),
     [("spec.algorithm.seed", "Invalid value: -1: should be greater than or equal to 0")]),
    # budget
    ("parallelTrials-above-maxTrials", _set(spec, parallelTrials=11),
     [("spec.parallelTrials", "parallelTrials must not exceed maxTrials")]),
    ("maxTrials-zero", _set(spec, maxTrials=0),
     [("spec.maxTrials", "Invalid value: 0: should be greater than or equal to 1")]),
    ("maxTrials-above-limit", _set(spec, maxTrials=10001, parallelTrials=1),
     [("spec.maxTrials", "Invalid value: 10001: should be less than or equal to 10000")]),
    ("maxTrials-not-a-number", _set(spec, maxTrials="ten"),
     [("spec.maxTrials", "Invalid value: \"ten\": Input should be a valid integer, unable to parse string as an "
                         "integer")]),
    ("maxFailedTrials-negative", _set(spec, maxFailedTrials=-1),
     [("spec.maxFailedTrials", "Invalid value: -1: should be greater than or equal to 0")]),
    # stopping criteria and the per-trial time limit
    ("noImprovement-trials-zero", _set(spec, stopping={"noImprovement": {"trials": 0}}),
     [("spec.stopping.noImprovement.trials", "Invalid value: 0: should be greater than or equal to 1")]),
    ("noImprovement-without-trials", _set(spec, stopping={"noImprovement": {"minRelativeImprovement": 0.01}}),
     [("spec.stopping.noImprovement.trials", "Required value")]),
    ("noImprovement-relative-above-1", _set(spec, stopping={"noImprovement": {"trials": 5,
                                                                             "minRelativeImprovement": 1.5}}),
     [("spec.stopping.noImprovement.minRelativeImprovement",
       "Invalid value: 1.5: should be less than or equal to 1.0")]),
    ("noImprovement-relative-negative", _set(spec, stopping={"noImprovement": {"trials": 5,
                                                                               "minRelativeImprovement": -0.1}}),
     [("spec.stopping.noImprovement.minRelativeImprovement",
       "Invalid value: -0.1: should be greater than or equal to 0.0")]),
    ("stopping-unknown-field", _set(spec, stopping={"maxDuration": "1h"}),
     [("spec.stopping.maxDuration", "field not declared in schema")]),
    ("maxDurationSeconds-zero", _set(spec, stopping={"maxDurationSeconds": 0}),
     [("spec.stopping.maxDurationSeconds", "Invalid value: 0: should be greater than or equal to 1")]),
    ("maxDurationSeconds-above-bound", _set(spec, stopping={"maxDurationSeconds": 366 * 24 * 3600 + 1}),
     [("spec.stopping.maxDurationSeconds", "Invalid value: 31622401: should be less than or equal to 31622400")]),
    ("maxDurationSeconds-a-string", _set(spec, stopping={"maxDurationSeconds": "1h"}),
     [("spec.stopping.maxDurationSeconds", "Invalid value: \"1h\": Input should be a valid integer, unable to parse "
                                           "string as an integer")]),
    ("trialTimeoutSeconds-zero", _set(spec, trialTimeoutSeconds=0),
     [("spec.trialTimeoutSeconds", "Invalid value: 0: should be greater than or equal to 1")]),
    ("trialTimeoutSeconds-over-maxDurationSeconds",
     _set(spec, trialTimeoutSeconds=600, stopping={"maxDurationSeconds": 300}),
     [("spec.trialTimeoutSeconds", "trialTimeoutSeconds must not exceed stopping.maxDurationSeconds")]),
    # names
    ("name-53-characters", _set(meta, name="a" * 53),
     [("", "metadata.name must be at most 52 characters so trial Job names stay valid")]),
    ("metric-with-spaces", _set(objective, metric="my accuracy"),
     [("spec.objective.metric", "Invalid value: \"my accuracy\": should match '^[A-Za-z_][A-Za-z0-9_.\\-/]*$'")]),
    ("additional-metric-with-spaces", _set(spec, additionalMetrics=["fit seconds"]),
     [("spec.additionalMetrics[0]", "Invalid value: \"fit seconds\": should match '^[A-Za-z_][A-Za-z0-9_.\\-/]*$'")]),
    ("additional-metric-too-long", _set(spec, additionalMetrics=["m" * 64]),
     [("spec.additionalMetrics[0]", "Invalid value: String should have at most 63 characters")]),
    ("target-not-a-number", _set(objective, target="high"),
     [("spec.objective.target", "Invalid value: \"high\": Input should be a valid number, unable to parse string "
                                "as a number")]),
    # trial template
    ("template-without-containers", _set(pod_spec, containers=[]),
     [(f"{TC}.containers", "Required value: at least one container")]),
    ("template-without-pod-template", lambda d: d["spec"]["trialTemplate"]["spec"].pop("template"),
     [(TC, "Required value: a pod template with containers")]),
    ("container-without-name", _pop(container, "name"), [(f"{TC}.containers[0].name", "Required value")]),
    ("command-not-a-list", _set(container, command="python train.py"),
     [(f"{TC}.containers[0].command", "must be a list of strings")]),
    ("placeholder-unknown-parameter-in-args", _set(container, args=["--momentum", "${params.momentum}"]),
     [(f"{TC}.containers[0].args[1]", "unknown parameter 'momentum' in placeholder ${params.momentum}")]),
    ("placeholder-unknown-parameter-in-env", _set(container, env=[{"name": "X", "value": "${params.zz}"}]),
     [(f"{TC}.containers[0].env[0].value", "unknown parameter 'zz' in placeholder ${params.zz}")]),
    ("restartPolicy-Always", _set(pod_spec, restartPolicy="Always"),
     [(f"{TC}.restartPolicy", 'Unsupported value: "Always": supported values: "Never", "OnFailure"')]),
    ("template-label-not-a-string", _set(lambda d: d["spec"]["trialTemplate"], metadata={"labels": {"team": 1}}),
     [("spec.trialTemplate.metadata.labels.team", "Invalid value: 1: Input should be a valid string")]),
    ("template-spec-not-a-mapping", _set(lambda d: d["spec"]["trialTemplate"], spec="job"),
     [("spec.trialTemplate.spec", "Invalid value: \"job\": Input should be a valid dictionary")]),
    # conditional parameters (when): a parameter "momentum" appended after opt (categorical adam | sgd)
    ("when-parameter-unknown", _conditional({"parameter": "nope", "values": ["sgd"]}),
     [("spec.parameters", "when.parameter must name a parameter declared earlier in spec.parameters")]),
    ("when-parameter-declared-later", _set(P(0), when={"parameter": "opt", "values": ["sgd"]}),
     [("spec.parameters", "when.parameter must name a parameter declared earlier in spec.parameters")]),
    ("when-parameter-itself", _set(P(2), when={"parameter": "opt", "values": ["adam"]}),
     [("spec.parameters", "when.parameter must name a parameter declared earlier in spec.parameters"),
      ("spec.parameters[2].when.parameter", "when.parameter must name another parameter")]),
    ("when-parameter-not-categorical", _conditional({"parameter": "layers", "values": [2]}),
     [("spec.parameters", "when.parameter must name a categorical parameter")]),
    ("when-values-not-among-its-values", _conditional({"parameter": "opt", "values": ["rmsprop"]}),
     [("spec.parameters", "when.values must be values of the parameter that when.parameter names")]),
    ("when-values-repeated", _conditional({"parameter": "opt", "values": ["sgd", "sgd"]}),
     [("spec.parameters[3].when.values[1]", 'Duplicate value: "sgd"')]),
    ("when-values-empty", _conditional({"parameter": "opt", "values": []}),
     [("spec.parameters[3].when.values", "Invalid value: List should have at least 1 item after validation, not 0")]),
    ("when-value-a-float", _conditional({"parameter": "opt", "values": [0.5]}),
     [("spec.parameters[3].when.values",
       'values[0] must be of type integer,string: "number" (write floats and booleans quoted, e.g. "0.5")')]),
    ("when-hyperband-resource", lambda d: (
        d["spec"]["parameters"].insert(0, {"name": "arch", "type": "categorical", "values": ["a", "b"]}),
        _set(P(2), when={"parameter": "arch", "values": ["a"]})(d),
        _set(algo, name="hyperband", settings={"resourceParameter": "layers"})(d)),
     [("spec.algorithm", "settings.resourceParameter must name a parameter without a condition (when)")]),
    ("when-placeholder-whole-argument", lambda d: (
        _conditional({"parameter": "opt", "values": ["sgd"]})(d),
        container(d)["command"].extend(["--momentum", "${params.momentum}"])),
     [(f"{TC}.containers[0].command[7]",
       "conditional parameter 'momentum' is a whole argument: the argument is left out when momentum is inactive, "
       "which would leave its option without a value or shift the arguments after it; write option and value as "
       "one argument, e.g. --momentum=${params.momentum}")]),
    ("when-placeholder-in-a-script", lambda d: (
        _conditional({"parameter": "opt", "values": ["sgd"]})(d),
        container(d)["command"].append("--momentum ${params.momentum}")),
     [(f"{TC}.containers[0].command[6]",
       "conditional parameter 'momentum' is in an argument with whitespace (a script?): the whole argument is left "
       "out when momentum is inactive; pass it through an env var (not set when inactive) instead")]),
    # several objectives (objectives); the base has objective acc (maximize) and algorithm random
    ("objective-and-objectives", _set(spec, objectives=TWO_OBJECTIVES),
     [("spec", "give exactly one of objective (one metric) and objectives (2 to 4 metrics, a Pareto front)")]),
    ("objectives-one", _several([{"metric": "acc", "goal": "maximize"}]),
     [("spec.objectives", "Invalid value: List should have at least 2 items after validation, not 1")]),
    ("objectives-five", _several([{"metric": f"m{i}", "goal": "minimize"} for i in range(5)]),
     [("spec.objectives", "Invalid value: List should have at most 4 items after validation, not 5")]),
    ("objectives-same-metric", _several([{"metric": "acc", "goal": "maximize"}, {"metric": "acc", "goal": "minimize"}]),
     [("spec.objectives", "objectives must name distinct metrics")]),
    ("objectives-target", _several([{"metric": "acc", "goal": "maximize", "target": 0.9},
                                    {"metric": "size", "goal": "minimize"}]),
     [("spec.objectives", "target is not defined for several objectives: the result is a Pareto front, not one best "
                          "value (end the experiment with maxTrials or stopping.maxDurationSeconds)")]),
    ("objectives-bad-goal", _several([{"metric": "acc", "goal": "max"}, {"metric": "size", "goal": "minimize"}]),
     [("spec.objectives[0].goal", "Unsupported value: \"max\": supported values: 'maximize' or 'minimize'")]),
    ("objectives-early-stopping", lambda d: (_several(TWO_OBJECTIVES)(d), _set(spec, earlyStopping={"rule": "median"})(d)),
     [("spec.earlyStopping",
       "earlyStopping is not available with several objectives (it compares trials by one objective's curve)")]),
    ("objectives-no-improvement",
     lambda d: (_several(TWO_OBJECTIVES)(d), _set(spec, stopping={"noImprovement": {"trials": 5}})(d)),
     [("spec.stopping", "stopping.noImprovement is not available with several objectives (it follows one best "
                        "value)")]),
    ("objectives-warm-start",
     lambda d: (_several(TWO_OBJECTIVES)(d), _set(spec, warmStart={"experiments": ["older"]})(d),
                _set(algo, name="tpe")(d)),
     [("spec.warmStart", "warmStart is not available with several objectives (it ranks earlier trials by one "
                         "objective)")]),
    *[(f"objectives-algorithm-{name}",
       (lambda name: lambda d: (_several(TWO_OBJECTIVES)(d), _set(algo, name=name)(d),
                                d["spec"]["parameters"].pop(2)))(name),  # no categorical (cmaes)
       [("spec.algorithm", _refusal(name))])
      for name in ("bayesian", "cmaes")],
    # outcome constraints
    ("constraint-without-bounds", _set(spec, constraints=[{"metric": "latency"}]),
     [("spec.constraints[0]", "a constraint needs min or max (or both)")]),
    ("constraint-min-above-max", _set(spec, constraints=[{"metric": "latency", "min": 5, "max": 1}]),
     [("spec.constraints[0].min", "a constraint's min must not exceed its max")]),
    ("constraint-on-the-objective", _set(spec, constraints=[{"metric": "acc", "min": 0.5}]),
     [("spec.constraints", "a constraint cannot bound an objective's metric: objectives are optimized, not "
       "constrained (objective.target ends the experiment at a value); constrain another metric the trials report")]),
    ("constraint-on-one-of-the-objectives", lambda d: (
        d["spec"].pop("objective"),
        _set(spec, objectives=TWO_OBJECTIVES, constraints=[{"metric": "size", "max": 10}])(d)),
     [("spec.constraints", "a constraint cannot bound an objective's metric: objectives are optimized, not "
       "constrained (objective.target ends the experiment at a value); constrain another metric the trials report")]),
    ("constraint-metric-twice", _set(spec, constraints=[{"metric": "latency", "max": 5}, {"metric": "latency",
                                                                                        "min": 1}]),
     [("spec.constraints[1]", 'Duplicate value: {"metric":"latency"}')]),
    ("constraints-at-most-16", _set(spec, constraints=[{"metric": f"m{i}", "max": 1} for i in range(17)]),
     [("spec.constraints", "Invalid value: List should have at most 16 items after validation, not 17")]),
    ("constraint-metric-pattern", _set(spec, constraints=[{"metric": "9lives", "max": 1}]),
     [("spec.constraints[0].metric", "Invalid value: \"9lives\": should match '^[A-Za-z_][A-Za-z0-9_.\\-/]*$'")]),
    *[(f"constraints-with-{name}", (lambda name: lambda d: (
        _set(spec, constraints=[{"metric": "latency", "max": 5}])(d),
        d["spec"].update(parameters=[p for p in d["spec"]["parameters"] if p["type"] != "categorical"]),
        _set(algo, name=name, **({"settings": {"resourceParameter": "layers"}} if name == "hyperband" else {}))(d),
        container(d).update(command=["true"]), container(d).pop("env")))(name),
       [("spec.constraints", "constraints need an algorithm that supports them: "
         + ", ".join(CONSTRAINT_ALGORITHMS) + " (the others rank or promote trials by the objective alone, before or "
         "without the final metrics)")])
      for name in ("cmaes", "hyperband")],
    # resource identity
    ("wrong-apiVersion", _set(top, apiVersion="kubetune.io/v1"),
     [("apiVersion", "Unsupported value: \"kubetune.io/v1\": supported values: 'kubetune.io/v1alpha1'")]),
    ("wrong-kind", _set(top, kind="Experiment"),
     [("kind", "Unsupported value: \"Experiment\": supported values: 'TuningExperiment'")]),
]


@pytest.mark.parametrize("name", SINGLE_OBJECTIVE_ALGORITHMS)
def test_every_single_objective_algorithm_refuses_several(name: str) -> None:
    """Every registered algorithm that does not support several objectives is refused them with its reason (among
    whatever else its own settings need), and the rest accept them."""
    doc = copy.deepcopy(BASE)
    _several(TWO_OBJECTIVES)(doc)
    doc["spec"]["algorithm"] = {"name": name}
    _exp, problems = validate_document(doc)
    assert ("spec.algorithm", _refusal(name)) in [(p.path, p.message) for p in problems]
    for ok in MULTI_OBJECTIVE_ALGORITHMS:
        doc["spec"]["algorithm"] = {"name": ok}
        if ok == "grid":
            doc["spec"]["parameters"][0]["scale"] = "linear"
            doc["spec"]["parameters"][0]["step"] = 0.1
        assert validate_document(doc)[1] == [], ok


@pytest.mark.parametrize("mutate, expected", [pytest.param(m, e, id=i) for i, m, e in CASES])
def test_invalid_manifest(mutate: Callable[[dict], None], expected: list[tuple[str, str]]) -> None:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    _exp, problems = validate_document(doc)
    assert [(p.path, p.message) for p in problems] == expected
    # The same problems, through the YAML text path that `kubetune validate` and `kubetune run` use.
    with pytest.raises(InvalidExperiment) as info:
        parse_experiment(yaml.safe_dump(doc, sort_keys=False), "exp.yaml")
    assert info.value.problems == [Problem(p, m) for p, m in expected]
    for path, message in expected:
        assert (f"  {path}: {message}" if path else f"  {message}") in str(info.value)


def test_algorithms_without_conditions_refuse_conditional_parameters() -> None:
    assert set(CONDITION_ALGORITHMS) | set(UNCONDITIONAL) | {"hyperband"} == set(SAMPLERS)
    for name in UNCONDITIONAL:
        doc = copy.deepcopy(BASE)
        _conditional({"parameter": "opt", "values": ["sgd"]})(doc)
        doc["spec"]["algorithm"] = {"name": name}
        _exp, problems = validate_document(doc)
        assert Problem("spec.algorithm", "conditional parameters (when) need an algorithm that supports them: "
                       + ", ".join(CONDITION_ALGORITHMS)) in problems


def test_there_are_enough_invalid_cases() -> None:
    assert len(CASES) >= 35
    assert len({i for i, _m, _e in CASES}) == len(CASES)


def test_categorical_value_that_is_a_mapping_gets_one_problem() -> None:
    doc = copy.deepcopy(BASE)
    doc["spec"]["parameters"][2]["values"] = ["adam", {"name": "sgd"}]
    _exp, problems = validate_document(doc)
    assert len(problems) == 1
    assert problems[0].path == "spec.parameters[2].values"
    assert problems[0].message.startswith('values[1] must be of type integer,string: "object"')


def test_every_problem_is_reported_at_once() -> None:
    doc = copy.deepcopy(BASE)
    doc["spec"]["objective"]["goal"] = "up"
    doc["spec"]["parameters"][2]["bogus"] = True
    doc["spec"].pop("maxTrials")
    _exp, problems = validate_document(doc)
    assert {p.path for p in problems} == {"spec.objective.goal", "spec.parameters[2].bogus", "spec.maxTrials"}


def test_rule_problems_are_reported_together() -> None:
    doc = copy.deepcopy(BASE)
    doc["spec"]["parameters"][1]["min"] = 9
    doc["spec"]["parameters"][0]["min"] = -1
    doc["spec"]["parallelTrials"] = 20
    _exp, problems = validate_document(doc)
    assert [(p.path, p.message) for p in problems] == [
        ("spec.parallelTrials", "parallelTrials must not exceed maxTrials"),
        ("spec.parameters[0].min", "scale log needs min > 0"),
        ("spec.parameters[1].min", "min must be less than max"),
    ]


# ------------------------------------------------------------------------------------------------- YAML level

@pytest.mark.parametrize(
    "text, message",
    [
        pytest.param("apiVersion: kubetune.io/v1alpha1\nspec: {parameters: [1, 2\nkind: X\n",
                     "invalid YAML: line 3, column 5: expected ',' or ']', but got ':'", id="unclosed-flow-sequence"),
        pytest.param("spec:\n  objective: {metric: a\n",
                     "invalid YAML: line 3, column 1: expected ',' or '}', but got '<stream end>'",
                     id="unclosed-flow-mapping"),
        pytest.param("spec:\n\tmaxTrials: 3\n",
                     "invalid YAML: line 2, column 1: found character '\\t' that cannot start any token",
                     id="tab-indentation"),
        pytest.param("- 1\n- 2\n", "a TuningExperiment manifest must be a YAML mapping", id="a-list"),
        pytest.param("", "expected exactly one TuningExperiment, found 0", id="empty-file"),
        pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\nkind: Secret\n",
                     "expected exactly one TuningExperiment, found 0", id="only-other-kinds"),
        pytest.param(BASE_YAML + "---\n" + BASE_YAML, "expected exactly one TuningExperiment, found 2",
                     id="two-documents"),
    ],
)
def test_invalid_yaml_and_documents(text: str, message: str) -> None:
    with pytest.raises(InvalidExperiment) as info:
        parse_experiment(text, "f.yaml")
    assert info.value.problems == [Problem("", message)]
    assert str(info.value).startswith("f.yaml: invalid TuningExperiment:\n")


def test_other_kinds_in_the_same_file_are_ignored() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ml}\n---\n" + BASE_YAML
    exp = parse_experiment(text)
    assert exp.metadata.name == "exp"


def test_missing_file() -> None:
    with pytest.raises(InvalidExperiment) as info:
        load_experiment("/nonexistent/exp.yaml")
    assert info.value.problems == [Problem("", "cannot read /nonexistent/exp.yaml: No such file or directory")]


# ------------------------------------------------------------------------------------------------- valid ones

@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path: Path) -> None:
    exp = load_experiment(path)
    assert isinstance(exp, TuningExperiment)
    assert exp.spec.max_trials >= exp.spec.parallel_trials


def test_there_is_an_example() -> None:
    assert ROOT / "examples" / "digits-svm.yaml" in EXAMPLES


def test_base_is_valid_and_camel_case_is_read() -> None:
    exp = parse_experiment(BASE_YAML)
    s = exp.spec
    assert (s.max_trials, s.parallel_trials, s.max_failed_trials) == (10, 2, 3)
    assert [p.name for p in s.parameters] == ["lr", "layers", "opt"]
    assert s.parameters[0].scale == "log" and s.parameters[2].values == ["adam", "sgd"]


def test_minimal_manifest_gets_defaults() -> None:
    exp, problems = validate_document(copy.deepcopy(MINIMAL))
    assert problems == []
    assert exp is not None
    s = exp.spec
    assert exp.metadata.name == "experiment"
    assert s.parallel_trials == 1 and s.max_failed_trials == 3
    assert s.algorithm.name == DEFAULT_ALGORITHM == "bayesian" and s.algorithm.seed is None
    assert s.parameters[0].scale == "linear" and s.parameters[0].step is None
    assert s.additional_metrics == []


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_set(meta, name="a" * MAX_NAME_LENGTH), id="name-exactly-52"),
        pytest.param(_set(spec, parallelTrials=10), id="parallel-equals-max"),
        pytest.param(_set(P(1), scale="log", step=1), id="int-log-step-1"),
        pytest.param(_set(P(1), step=3), id="step-equals-range"),
        pytest.param(_set(P(2), values=["true", 1, "1", "2.5", 0]), id="mixed-categorical-values"),
        pytest.param(lambda d: (_set(spec, parameters=[{"name": f"p{i}", "type": "int", "min": 0, "max": 1}
                                                     for i in range(64)])(d),
                                _set(container, command=["train", "${params.p63}"], env=[])(d)),
                     id="64-parameters"),
        pytest.param(_set(algo, name="grid", settings={"order": "shuffled"}),
                     id="grid-with-finite-space"),
        pytest.param(_set(algo, name="tpe", settings={"nStartupTrials": 3, "gamma": 0.25}), id="tpe-settings"),
        pytest.param(_set(algo, name="bayesian", settings={"nStartupTrials": 3}), id="bayesian-shared-setting"),
        pytest.param(lambda d: (_set(algo, name="cmaes", settings={"sigma0": 0.3, "populationSize": 8,
                                                                   "restartStrategy": "none"})(d),
                                _without_categorical(d)), id="cmaes-numeric-space"),
        pytest.param(lambda d: (_conditional({"parameter": "opt", "values": ["sgd"]})(d),
                                container(d)["command"].append("--momentum=${params.momentum}"),
                                container(d)["env"].append({"name": "M", "value": "${params.momentum}"})),
                     id="conditional-parameter"),
        pytest.param(lambda d: (_conditional({"parameter": "opt", "values": ["sgd"]})(d),
                                _set(algo, name="grid")(d), _set(P(3), step=0.33)(d)),
                     id="conditional-grid"),
        pytest.param(_set(pod_spec, restartPolicy="OnFailure"), id="restart-on-failure"),
        pytest.param(_set(objective, target=0.9), id="target"),
        pytest.param(_set(spec, maxFailedTrials=0), id="no-failures-allowed"),
        pytest.param(_set(spec, stopping={"noImprovement": {"trials": 20, "minRelativeImprovement": 0.001},
                                          "maxDurationSeconds": 3600}, trialTimeoutSeconds=3600),
                     id="stopping-and-trial-timeout"),
    ],
)
def test_valid_variations(mutate: Callable[[dict], None]) -> None:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    if doc["spec"]["algorithm"]["name"] == "grid":  # a finite grid: the float gets a step
        doc["spec"]["parameters"][0].update(scale="linear", step=0.001)
    exp, problems = validate_document(doc)
    assert problems == []
    assert exp is not None


SETTING_VALUES = {"nStartupTrials": 5, "maxModelTrials": 50, "nCandidates": 64, "plateauRule": False, "order": "shuffled",
                  "nEiCandidates": 12, "gamma": 0.2, "multivariate": False, "priorWeight": 2.0, "constantLiar": False,
                  "resourceParameter": "layers", "minResource": 1, "maxResource": 4, "reductionFactor": 2,
                  "sigma0": 0.25, "populationSize": 6, "restartStrategy": "none", "incPopsize": 3,
                  "perturbationInterval": 3, "quantileFraction": 0.5, "resampleProbability": 0.1,
                  "perturbationFactors": [1.5, 0.5]}
REQUIRED_SETTINGS = {"hyperband": {"resourceParameter": "layers"}}


def _without_categorical(doc: dict[str, Any]) -> None:
    """The base manifest without its categorical parameter (for the cmaes algorithm, which searches numbers)."""
    doc["spec"]["parameters"] = [p for p in doc["spec"]["parameters"] if p["type"] != "categorical"]
    doc["spec"]["trialTemplate"]["spec"]["template"]["spec"]["containers"][0].pop("env")


@pytest.mark.parametrize("alias", sorted(SETTING_OWNERS))
def test_every_setting_is_accepted_by_its_own_algorithm_only(alias: str) -> None:
    assert alias in SETTING_VALUES, "a new setting needs a value here"
    for name in sorted(SAMPLERS):
        doc = copy.deepcopy(BASE)
        doc["spec"]["algorithm"] = {"name": name, "settings": {**REQUIRED_SETTINGS.get(name, {}),
                                                               alias: SETTING_VALUES[alias]}}
        if name == "grid":
            doc["spec"]["parameters"][0].update(scale="linear", step=0.001)
        if name == "cmaes":
            _without_categorical(doc)
        if name == "pbt":  # pbt needs checkpoints and at least a population's worth of segments
            doc["spec"].update(checkpoints={"persistentVolumeClaim": "ck"}, maxTrials=max(doc["spec"]["maxTrials"], 8))
        _exp, problems = validate_document(doc)
        if name in SETTING_OWNERS[alias]:
            assert problems == [], (alias, name)
        else:
            assert Problem(f"spec.algorithm.settings.{alias}",
                           f"settings.{alias} applies only to algorithm {', '.join(SETTING_OWNERS[alias])}") \
                in problems, (alias, name)


# ------------------------------------------------------------------------------------------------- the CLI

def _kubetune(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubetune", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_validate_valid(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(BASE_YAML)
    r = _kubetune("validate", str(path), str(ROOT / "examples" / "digits-svm.yaml"))
    assert r.returncode == 0, r.stderr
    assert f"{path}: valid TuningExperiment 'exp' (3 parameters, algorithm random, maxTrials 10)" in r.stdout
    assert "valid TuningExperiment 'digits-svm'" in r.stdout
    assert r.stderr == ""


def test_cli_validate_invalid(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE_YAML)
    bad = tmp_path / "bad.yaml"
    doc = copy.deepcopy(BASE)
    doc["spec"]["parameters"][0]["min"] = 0
    doc["spec"]["parallelTrials"] = 99
    bad.write_text(yaml.safe_dump(doc))
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [1\n")
    r = _kubetune("validate", str(bad), str(good), str(broken))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"{bad}: invalid TuningExperiment:",
        "  spec.parallelTrials: parallelTrials must not exceed maxTrials",
        "  spec.parameters[0].min: scale log needs min > 0",
        f"{broken}: invalid TuningExperiment:",
        "  invalid YAML: line 2, column 1: expected ',' or ']', but got '<stream end>'",
    ]
    # The valid file in between is still checked and reported.
    assert f"{good}: valid TuningExperiment 'exp'" in r.stdout


def test_cli_validate_usage_error() -> None:
    r = _kubetune("validate")
    assert r.returncode == 2
    assert "the following arguments are required: files" in r.stderr
