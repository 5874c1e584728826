"""The cmaes algorithm on the real control plane: the operator runs a CMA-ES experiment to the end, each trial is
the configuration the engine's replay of the recorded history gives, and the API server refuses a categorical
parameter for it. Jobs are counted by uid, processes by the node agent's launches."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_process import Experiments, OperatorProcess, script_experiment, wait_for

from kubetune.engine import make_sampler
from kubetune.spec import ExperimentSpec
from kubetune.trials import Trial

TRIAL = """
    import math
    import kubetune_trial as kt
    p = kt.params()
    lr, units = float(p["lr"]), int(p["units"])
    kt.report(score=-((math.log10(lr) + 2.0) ** 2 + ((units - 40) / 30.0) ** 2))
"""

MAX_TRIALS = 10


@pytest.fixture(scope="module")
def trial_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cmaes") / "trial.py"
    path.write_text(textwrap.dedent(TRIAL))
    return path


def experiment(name: str, script: Path) -> dict[str, Any]:
    return script_experiment(name, ["python", str(script)], {
        "objective": {"metric": "score", "goal": "maximize"},
        "parameters": [{"name": "lr", "type": "float", "min": 1e-5, "max": 1.0, "scale": "log"},
                       {"name": "units", "type": "int", "min": 8, "max": 128, "step": 8}],
        "algorithm": {"name": "cmaes", "seed": 3, "settings": {"populationSize": 4, "sigma0": 0.3}},
        "maxTrials": MAX_TRIALS,
        "parallelTrials": 1,  # one at a time: every trial is the suggestion for the trials before it
    })


def _debug(ex: Experiments, op: OperatorProcess, name: str) -> str:
    return f"status: {ex.get(name).get('status')}\noperator log:\n{op.log_tail(40)}"


def test_cmaes_experiment_runs_the_replayed_suggestions(op: OperatorProcess, ns: str, kube_api: client.ApiClient,
                                                        node_agent: Any, trial_script: Path) -> None:
    ex = Experiments(kube_api, ns)
    body = experiment("cma", trial_script)
    ex.create(body)
    done = wait_for("the experiment to finish", lambda: ex.finished("cma"), timeout=240,
                    on_timeout=lambda: _debug(ex, op, "cma"))
    assert (done["status"], done["reason"]) == ("True", "MaxTrialsReached"), done
    records = ex.records("cma")
    assert sorted(records) == list(range(MAX_TRIALS))
    assert all(r["state"] == "Succeeded" for r in records.values()), records
    # Each trial is what a fresh sampler suggests for the trials before it (two full generations of 4 were told
    # by the time the last ones were drawn): the operator's long-lived sampler resumed exactly.
    spec = ExperimentSpec.model_validate(body["spec"])
    trials = [Trial.from_record(records[n]) for n in range(MAX_TRIALS)]
    for k in range(MAX_TRIALS):
        sampler = make_sampler("cmaes", spec.search_space(), seed=3, settings=spec.algorithm.sampler_settings())
        [want] = sampler.suggest([t.observation(spec.objective) for t in trials[:k]], [], n=1)
        assert trials[k].params == want, (k, trials[k].params, want)
    space = spec.search_space()
    assert all(space.contains(dict(t.params)) for t in trials)
    assert len({space.key(t.params) for t in trials}) == MAX_TRIALS
    status = ex.get("cma")["status"]
    assert status["trials"]["created"] == MAX_TRIALS
    best = max(range(MAX_TRIALS), key=lambda n: records[n]["metrics"]["score"])
    assert status["bestTrial"]["number"] == best
    launched = {x.job_uid for x in node_agent.launches(ns) if x.trial.startswith("cma-")}
    assert len(launched) == MAX_TRIALS  # one Job per trial ran a process, no more


def test_api_server_refuses_a_categorical_parameter_for_cmaes(op: OperatorProcess, ns: str,
                                                              kube_api: client.ApiClient, trial_script: Path) -> None:
    body = experiment("cma-cat", trial_script)
    bad = copy.deepcopy(body)
    bad["spec"]["parameters"].append({"name": "opt", "type": "categorical", "values": ["adam", "sgd"]})
    custom = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", ns, "tuningexperiments", bad)
    assert err.value.status == 422
    message = json.loads(err.value.body)["message"]
    assert "spec.algorithm: Invalid value" in message
    assert "the cmaes algorithm searches float and int parameters only: use tpe or bayesian for categorical " \
           "parameters" in message
    # the same experiment with another algorithm is admitted (dry run: nothing is created)
    bad["spec"]["algorithm"] = {"name": "tpe"}
    custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", ns, "tuningexperiments", bad, dry_run="All")
