"""The API server enforces the CRD's schema and CEL rules with the same messages `kubetune validate` gives."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubetune.engine import DEFAULT_ALGORITHM, SAMPLERS
from kubetune.validation import validate_document

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "digits-svm.yaml").read_text())

Mutation = Callable[[dict[str, Any]], None]


def _param(i: int, **changes: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        p = doc["spec"]["parameters"][i]
        for k, v in changes.items():
            if v is None:
                p.pop(k, None)
            else:
                p[k] = v
    return mutate


def _spec(**changes: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        doc["spec"].update(changes)
    return mutate


TWO_OBJECTIVES = [{"metric": "accuracy", "goal": "maximize"}, {"metric": "support_vectors", "goal": "minimize"}]


def _objectives(objectives: list[dict[str, Any]], **changes: Any) -> Mutation:
    """Replace the example's objective with ``objectives`` (and change other fields of the spec)."""
    def mutate(doc: dict[str, Any]) -> None:
        doc["spec"].pop("objective")
        doc["spec"].update(objectives=copy.deepcopy(objectives), **changes)
    return mutate


# (id, mutation, substring every side must report). Parameter 0 is C (float, log), 2 is kernel (categorical).
CASES: list[tuple[str, Mutation, str]] = [
    ("min-not-below-max", _param(0, min=5, max=5, scale="linear"), "min must be less than max"),
    ("log-needs-positive-min", _param(0, min=0), "scale log needs min > 0"),
    ("categorical-needs-values", _param(2, values=None), "categorical parameters need values"),
    ("categorical-no-bounds", _param(2, min=1), "categorical parameters take values, not min, max or step"),
    ("values-only-categorical", _param(0, values=[1, 2]), "values apply only to categorical parameters"),
    ("int-whole-bounds", _param(3, min=1.5), "int parameters need whole-number min and max"),
    ("int-whole-step", _param(3, step=0.5), "int parameters need a whole-number step"),
    ("step-too-large", _param(3, step=10), "step must not exceed max - min"),
    ("step-with-log", _param(0, step=1), "step cannot be combined with scale log"),
    ("distinct-values", _param(2, values=["rbf", "rbf"]), 'Duplicate value: "rbf"'),
    ("float-needs-bounds", _param(0, min=None), "float and int parameters need min and max"),
    ("parallel-over-max", _spec(parallelTrials=50, maxTrials=10), "parallelTrials must not exceed maxTrials"),
    ("grid-needs-finite", _spec(algorithm={"name": "grid"}),
     "the grid algorithm needs a finite grid: give every float parameter a step"),
    ("cmaes-numeric-only", _spec(algorithm={"name": "cmaes"}),
     "the cmaes algorithm searches float and int parameters only: use tpe or bayesian for categorical parameters"),
    ("setting-of-other-algorithm", _spec(algorithm={"name": "random", "settings": {"order": "shuffled"}}),
     "settings.order applies only to algorithm grid"),
    ("name-too-long", lambda d: d["metadata"].update(name="x" * 53),
     "metadata.name must be at most 52 characters"),
    ("unknown-algorithm", _spec(algorithm={"name": "annealing"}), "Unsupported value: \"annealing\""),
    ("zero-trials", _spec(maxTrials=0), "greater than or equal to 1"),
    ("bad-goal", lambda d: d["spec"]["objective"].update(goal="maximise"), "Unsupported value: \"maximise\""),
    ("float-categorical-values", _param(2, values=["rbf", 0.5]), 'must be of type integer,string: "number"'),
    ("categorical-value-too-long", _param(2, values=["rbf", "x" * 65]), "may not be more than 64"),
    ("categorical-value-not-ascii", _param(2, values=["rbf", "\u00e9t\u00e9"]), "should match '^[ -~]*$'"),
    ("duplicate-names", lambda d: d["spec"]["parameters"].append(copy.deepcopy(d["spec"]["parameters"][0])),
     "Duplicate value"),
    # spec.earlyStopping and the hyperband algorithm (parameter 3 is degree, int 2..5)
    ("early-stopping-field-of-other-rule", _spec(earlyStopping={"rule": "asha", "startStep": 2}),
     "startStep applies only to rule median"),
    ("early-stopping-min-resource", _spec(earlyStopping={"rule": "asha", "minResource": 9, "maxResource": 9}),
     "minResource (default 1) must be less than maxResource"),
    ("early-stopping-unknown-rule", _spec(earlyStopping={"rule": "mean"}), "Unsupported value: \"mean\""),
    ("hyperband-needs-resource", _spec(algorithm={"name": "hyperband"}),
     "the hyperband algorithm needs settings.resourceParameter"),
    ("hyperband-resource-is-int", _spec(algorithm={"name": "hyperband", "settings": {"resourceParameter": "C"}}),
     "settings.resourceParameter must name an int parameter"),
    ("hyperband-resource-in-range",
     _spec(algorithm={"name": "hyperband", "settings": {"resourceParameter": "degree", "maxResource": 9}}),
     "settings.minResource and settings.maxResource must lie within the resource parameter's min and max"),
    ("hyperband-resource-order",
     _spec(algorithm={"name": "hyperband", "settings": {"resourceParameter": "degree", "minResource": 5}}),
     "settings.minResource must be less than settings.maxResource"),
    ("hyperband-resource-from-1",
     lambda d: (_param(3, min=0)(d), _spec(algorithm={"name": "hyperband",
                                                     "settings": {"resourceParameter": "degree"}})(d)),
     "the resource must be at least 1"),
    # spec.stopping and spec.trialTimeoutSeconds
    ("no-improvement-trials-zero", _spec(stopping={"noImprovement": {"trials": 0}}),
     "greater than or equal to 1"),
    ("no-improvement-relative-above-1",
     _spec(stopping={"noImprovement": {"trials": 5, "minRelativeImprovement": 2}}), "less than or equal to 1"),
    ("max-duration-zero", _spec(stopping={"maxDurationSeconds": 0}), "greater than or equal to 1"),
    ("max-duration-above-bound", _spec(stopping={"maxDurationSeconds": 31622401}), "less than or equal to 31622400"),
    ("trial-timeout-over-max-duration", _spec(trialTimeoutSeconds=600, stopping={"maxDurationSeconds": 300}),
     "trialTimeoutSeconds must not exceed stopping.maxDurationSeconds"),
    # conditional parameters (when); parameter 3 is degree, 2 is kernel (rbf, poly, sigmoid)
    ("when-parameter-unknown", _param(3, when={"parameter": "nope", "values": ["poly"]}),
     "when.parameter must name a parameter declared earlier in spec.parameters"),
    ("when-parameter-declared-later", _param(0, when={"parameter": "kernel", "values": ["poly"]}),
     "when.parameter must name a parameter declared earlier in spec.parameters"),
    ("when-parameter-itself", _param(2, when={"parameter": "kernel", "values": ["rbf"]}),
     "when.parameter must name another parameter"),
    ("when-parameter-not-categorical", _param(3, when={"parameter": "C", "values": ["poly"]}),
     "when.parameter must name a categorical parameter"),
    ("when-values-not-among-its-values", _param(3, when={"parameter": "kernel", "values": ["poly", "linear"]}),
     "when.values must be values of the parameter that when.parameter names"),
    ("when-values-repeated", _param(3, when={"parameter": "kernel", "values": ["poly", "poly"]}),
     'Duplicate value: "poly"'),
    ("when-value-a-float", _param(3, when={"parameter": "kernel", "values": [0.5]}),
     'must be of type integer,string: "number"'),
    ("when-hyperband-resource",
     lambda d: (_param(3, when={"parameter": "kernel", "values": ["poly"]})(d),
                _spec(algorithm={"name": "hyperband", "settings": {"resourceParameter": "degree"}})(d)),
     "settings.resourceParameter must name a parameter without a condition (when)"),
    *[(f"when-algorithm-{name}",
       (lambda name: lambda d: (_param(3, when={"parameter": "kernel", "values": ["poly"]})(d),
                                _spec(algorithm={"name": name})(d)))(name),
       "conditional parameters (when) need an algorithm that supports them")
      for name in sorted(n for n, c in SAMPLERS.items() if not c.supports_conditions)],
    ("hyperband-needs-another-parameter",
     _spec(parameters=[{"name": "degree", "type": "int", "min": 2, "max": 5}],
           algorithm={"name": "hyperband", "settings": {"resourceParameter": "degree"}}),
     "the hyperband algorithm needs at least one parameter besides settings.resourceParameter"),
    # spec.initialTrials and spec.warmStart (the example's parameters: C, gamma, kernel, degree); names and values
    # inside an entry are kubetune's to check (tests/unit/test_warm_start.py): CEL sees no field of it
    ("initial-trials-outnumber-max-trials",
     _spec(initialTrials=[{"C": 1.0, "gamma": 0.001, "kernel": "rbf", "degree": 3}] * 2, maxTrials=1,
           parallelTrials=1), "initialTrials must not outnumber maxTrials"),
    ("initial-trials-at-most-100",
     _spec(initialTrials=[{"C": 1.0, "gamma": 0.001, "kernel": "rbf", "degree": 3}] * 101, maxTrials=200),
     "at most 100 items"),
    ("initial-trial-at-most-64-values", _spec(initialTrials=[{f"p{i}": i for i in range(65)}]), "at most 64 items"),
    ("initial-trials-with-hyperband",
     _spec(initialTrials=[{"C": 1.0, "gamma": 0.001, "kernel": "rbf", "degree": 3}],
           algorithm={"name": "hyperband", "settings": {"resourceParameter": "degree"}}),
     "initialTrials cannot be combined with the hyperband algorithm"),
    # spec.checkpoints and the pbt algorithm
    ("pbt-needs-checkpoints", _spec(algorithm={"name": "pbt"}), "the pbt algorithm needs spec.checkpoints"),
    ("pbt-no-early-stopping", _spec(algorithm={"name": "pbt"}, checkpoints={"persistentVolumeClaim": "ck"},
                                    earlyStopping={"rule": "median"}),
     "earlyStopping cannot be combined with the pbt algorithm"),
    ("pbt-no-initial-trials", _spec(algorithm={"name": "pbt"}, checkpoints={"persistentVolumeClaim": "ck"},
                                    initialTrials=[{"C": 1.0, "gamma": 0.001, "kernel": "rbf", "degree": 3}]),
     "initialTrials cannot be combined with the pbt algorithm"),
    ("pbt-max-trials-below-population", _spec(algorithm={"name": "pbt", "settings": {"populationSize": 40}},
                                              checkpoints={"persistentVolumeClaim": "ck"}),
     "with the pbt algorithm maxTrials counts segments and must be at least settings.populationSize"),
    ("pbt-default-population", _spec(algorithm={"name": "pbt"}, checkpoints={"persistentVolumeClaim": "ck"},
                                     maxTrials=7, parallelTrials=2),
     "must be at least settings.populationSize (default 8)"),
    ("pbt-quantile-fraction", _spec(algorithm={"name": "pbt", "settings": {"quantileFraction": 0.6}},
                                    checkpoints={"persistentVolumeClaim": "ck"}), "less than or equal to 0.5"),
    ("pbt-factors-positive", _spec(algorithm={"name": "pbt", "settings": {"perturbationFactors": [1.2, 0]}},
                                   checkpoints={"persistentVolumeClaim": "ck"}), "greater than 0"),
    ("pbt-settings-only-pbt", _spec(algorithm={"name": "random", "settings": {"perturbationInterval": 3}}),
     "settings.perturbationInterval applies only to algorithm pbt"),
    # earlyStopping asha with checkpoints pauses trials at its rungs (kubetune/pausing.py)
    ("pausing-asha-needs-max-resource", _spec(checkpoints={"persistentVolumeClaim": "ck"},
                                              earlyStopping={"rule": "asha"}),
     "with spec.checkpoints, earlyStopping rule asha pauses trials at its rungs"),
    ("pausing-asha-not-with-hyperband",
     _spec(checkpoints={"persistentVolumeClaim": "ck"}, earlyStopping={"rule": "asha", "maxResource": 5},
           algorithm={"name": "hyperband", "settings": {"resourceParameter": "degree"}}),
     "and so do the hyperband algorithm's promotions: use one of the two"),
    ("checkpoints-mount-path-absolute", _spec(checkpoints={"persistentVolumeClaim": "ck", "mountPath": "ck"}),
     "should match '^/[^:]*$'"),
    ("checkpoints-claim-name", _spec(checkpoints={"persistentVolumeClaim": "Not_A_Name"}), "should match"),
    ("warm-start-with-random", _spec(algorithm={"name": "random"}, warmStart={"experiments": ["older"]}),
     "warmStart applies only to algorithm bayesian, tpe"),
    ("warm-start-not-itself", _spec(warmStart={"experiments": ["digits-svm"]}),
     "spec.warmStart.experiments cannot name the experiment itself"),
    ("warm-start-max-trials", _spec(warmStart={"experiments": ["older"], "maxTrials": 1001}),
     "less than or equal to 1000"),
    # spec.constraints
    ("constraint-without-bounds", _spec(constraints=[{"metric": "fit_seconds"}]),
     "a constraint needs min or max (or both)"),
    ("constraint-min-above-max", _spec(constraints=[{"metric": "fit_seconds", "min": 5, "max": 1}]),
     "a constraint's min must not exceed its max"),
    ("constraint-on-the-objective", _spec(constraints=[{"metric": "accuracy", "min": 0.9}]),
     "a constraint cannot bound an objective's metric"),
    ("constraint-metric-twice", _spec(constraints=[{"metric": "fit_seconds", "max": 5},
                                                   {"metric": "fit_seconds", "min": 1}]),
     'Duplicate value: {"metric":"fit_seconds"}'),
    ("constraints-at-most-16", _spec(constraints=[{"metric": f"m{i}", "max": 1} for i in range(17)]),
     "at most 16 items"),
    *[(f"constraints-with-{name}",
       _spec(constraints=[{"metric": "fit_seconds", "max": 5}],
             algorithm={"name": name, **({"settings": {"resourceParameter": "degree"}} if name == "hyperband"
                                         else {})}),
       "constraints need an algorithm that supports them: "
       + ", ".join(sorted(n for n, c in SAMPLERS.items() if c.supports_constraints)))
      for name in sorted(n for n, c in SAMPLERS.items() if not c.supports_constraints)],
    # several objectives (objectives); the example has objective accuracy (with a target) and algorithm bayesian
    ("objective-and-objectives", _spec(objectives=TWO_OBJECTIVES),
     "give exactly one of objective (one metric) and objectives (2 to 4 metrics, a Pareto front)"),
    ("objectives-at-least-2", _objectives(TWO_OBJECTIVES[:1], algorithm={"name": "tpe"}), "at least 2 items"),
    ("objectives-at-most-4", _objectives([{"metric": f"m{i}", "goal": "minimize"} for i in range(5)],
                                         algorithm={"name": "tpe"}), "at most 4 items"),
    ("objectives-distinct", _objectives([TWO_OBJECTIVES[0], {"metric": "accuracy", "goal": "minimize"}],
                                        algorithm={"name": "tpe"}), "objectives must name distinct metrics"),
    ("objectives-no-target", _objectives([{**TWO_OBJECTIVES[0], "target": 0.99}, TWO_OBJECTIVES[1]],
                                         algorithm={"name": "tpe"}),
     "target is not defined for several objectives: the result is a Pareto front, not one best value"),
    ("objectives-early-stopping", _objectives(TWO_OBJECTIVES, algorithm={"name": "tpe"},
                                              earlyStopping={"rule": "median"}),
     "earlyStopping is not available with several objectives"),
    ("objectives-no-improvement", _objectives(TWO_OBJECTIVES, algorithm={"name": "tpe"},
                                              stopping={"noImprovement": {"trials": 5}}),
     "stopping.noImprovement is not available with several objectives"),
    ("objectives-warm-start", _objectives(TWO_OBJECTIVES, algorithm={"name": "tpe"},
                                          warmStart={"experiments": ["older"]}),
     "warmStart is not available with several objectives"),
    *[(f"objectives-with-{name}",
       _objectives(TWO_OBJECTIVES, algorithm={"name": name, **({"settings": {"resourceParameter": "degree"}}
                                                             if name == "hyperband" else {})}),
       f"the {name} algorithm{' (the default algorithm)' if name == DEFAULT_ALGORITHM else ''} does not support "
       "several objectives")
      for name in sorted(n for n, c in SAMPLERS.items() if not c.supports_multi_objective)],
]


@pytest.fixture(scope="module")
def crd_ready(control_plane: Any) -> None:
    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "tuningexperiments.kubetune.io.yaml"))
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                          "crd/tuningexperiments.kubetune.io")


def _server_error(api: client.ApiClient, namespace: str, doc: dict[str, Any]) -> str | None:
    custom = client.CustomObjectsApi(api)
    try:
        custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "tuningexperiments", doc,
                                               dry_run="All")
    except ApiException as e:
        return json.loads(e.body)["message"]
    return None


def test_valid_example_is_admitted(crd_ready: None, kube_api: client.ApiClient, namespace: str) -> None:
    assert _server_error(kube_api, namespace, copy.deepcopy(EXAMPLE)) is None


def test_conditional_example_is_admitted(crd_ready: None, kube_api: client.ApiClient, namespace: str) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "digits-svm-conditional.yaml").read_text())
    assert validate_document(doc)[1] == []
    assert _server_error(kube_api, namespace, doc) is None
    # the longest conditions the schema admits cost the API server's CEL no more than it allows
    doc["spec"]["parameters"] = [{"name": f"k{i:02d}", "type": "categorical", "values": [f"v{j:02d}" + "x" * 60
                                                                                           for j in range(64)]}
                                 for i in range(32)] + [
        {"name": f"p{i:02d}" + "y" * 59, "type": "float", "min": 0, "max": 1,
         "when": {"parameter": f"k{i:02d}", "values": [f"v{j:02d}" + "x" * 60 for j in range(64)]}}
        for i in range(32)]
    doc["spec"]["trialTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"] = ["true"]
    assert validate_document(doc)[1] == []
    assert _server_error(kube_api, namespace, doc) is None


def test_pareto_example_is_admitted(crd_ready: None, kube_api: client.ApiClient, namespace: str) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "digits-svm-pareto.yaml").read_text())
    assert validate_document(doc)[1] == []
    assert _server_error(kube_api, namespace, doc) is None
    # four objectives, the most the schema admits, with every algorithm that takes them
    doc["spec"]["objectives"] += [{"metric": "fit_seconds", "goal": "minimize"}, {"metric": "m4", "goal": "maximize"}]
    for name in sorted(n for n, c in SAMPLERS.items() if c.supports_multi_objective):
        doc["spec"]["algorithm"] = {"name": name}
        if name == "grid":
            for p in doc["spec"]["parameters"]:
                p.update(scale="linear", step=p["max"] / 8)
        assert validate_document(doc)[1] == [], name
        assert _server_error(kube_api, namespace, doc) is None, name


def test_pbt_example_is_admitted(crd_ready: None, kube_api: client.ApiClient, namespace: str) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "pbt-toy.yaml").read_text())
    assert validate_document(doc)[1] == []
    assert _server_error(kube_api, namespace, doc) is None
    # checkpoints are admitted with every algorithm (pbt needs them, the others may use them)
    doc["spec"]["algorithm"] = {"name": "random"}
    assert _server_error(kube_api, namespace, doc) is None


@pytest.mark.parametrize("case_id, mutate, expected", CASES, ids=[c[0] for c in CASES])
def test_rejected_at_admission_with_the_offline_message(crd_ready: None, kube_api: client.ApiClient, namespace: str,
                                                       case_id: str, mutate: Mutation, expected: str) -> None:
    doc = copy.deepcopy(EXAMPLE)
    mutate(doc)
    _, problems = validate_document(doc)
    offline = "\n".join(str(p) for p in problems)
    assert expected in offline, f"offline validation missed it: {offline}"
    message = _server_error(kube_api, namespace, doc)
    assert message is not None, "the API server admitted an invalid experiment"
    assert expected in message, message
    # the same field path leads both messages
    first = problems[0].path
    if first and not first.startswith("metadata"):
        assert first.split("[")[0] in message, (first, message)


def test_parameters_cannot_change_but_the_budget_can(crd_ready: None, kube_api: client.ApiClient,
                                                      namespace: str) -> None:
    """The search space is fixed once the experiment exists (its records belong to it); the budget is not."""
    custom = client.CustomObjectsApi(kube_api)
    doc = copy.deepcopy(EXAMPLE)
    doc["spec"]["parameters"][2]["values"] = ["rbf", 3, "x" * 64]  # the longest value admitted
    custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "tuningexperiments", doc)
    name = doc["metadata"]["name"]
    with pytest.raises(ApiException) as raised:
        custom.patch_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "tuningexperiments", name,
                                              [{"op": "replace", "path": "/spec/parameters/0/max", "value": 5000}],
                                              _content_type="application/json-patch+json")
    assert raised.value.status == 422
    assert "parameters cannot change once the experiment exists" in json.loads(raised.value.body)["message"]
    custom.patch_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "tuningexperiments", name,
                                          {"spec": {"maxTrials": 40}})
    stored = custom.get_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "tuningexperiments", name)
    assert stored["spec"]["maxTrials"] == 40 and stored["spec"]["parameters"][0]["max"] == 1000


def test_stored_experiment_keeps_the_whole_job_template(crd_ready: None, kube_api: client.ApiClient,
                                                        namespace: str) -> None:
    """trialTemplate.spec is preserved as written (no pruning below its first level)."""
    custom = client.CustomObjectsApi(kube_api)
    doc = copy.deepcopy(EXAMPLE)
    del doc["spec"]["algorithm"]  # defaulted by the schema
    custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "tuningexperiments", doc)
    stored = custom.get_namespaced_custom_object("kubetune.io", "v1alpha1", namespace, "tuningexperiments",
                                                 doc["metadata"]["name"])
    assert stored["spec"]["trialTemplate"] == doc["spec"]["trialTemplate"]
    assert stored["spec"]["parallelTrials"] == 2 and stored["spec"]["algorithm"] == {"name": DEFAULT_ALGORITHM}
    # defaults from the schema
    assert stored["spec"]["parameters"][0]["scale"] == "log"
    assert stored["spec"]["parameters"][3]["scale"] == "linear"
