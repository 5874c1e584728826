"""initialTrials and warmStart on the real control plane: an experiment warm-started by name from another finished
one, its initial trials as its first Jobs (counted by uid, parameters read from each Job and its process), and a
source that does not exist yet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_process import Experiments, OperatorProcess, wait_for

from kubetune.plan import History, make_plan
from kubetune.spec import ExperimentSpec
from kubetune.trials import Trial
from kubetune.warmstart import take_in

OBJECTIVE = Path(__file__).resolve().parent / "trials" / "objective.py"
X = {"name": "x", "type": "float", "min": 0.0, "max": 1.0}


def experiment(name: str, max_trials: int, parallel: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "goal": "maximize"},
            "parameters": [X],
            "algorithm": {"name": "tpe", "seed": 4, "settings": {"nStartupTrials": 4}},
            "maxTrials": max_trials,
            "parallelTrials": parallel,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "serviceAccountName": "kubetune-trial",
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "trial", "image": "kubetune-trial:test",
                                "command": ["python", str(OBJECTIVE), "--x", "${params.x}"],
                                "env": [{"name": "TRIAL_STEPS", "value": "1"}]}],
            }}}},
            **spec,
        },
    }


def _debug(ex: Experiments, op: OperatorProcess, name: str) -> str:
    return f"status: {ex.get(name).get('status')}\noperator log:\n{op.log_tail(40)}"


def test_warm_start_by_name_and_initial_trials_as_the_first_jobs(op: OperatorProcess, ns: str,
                                                                 kube_api: client.ApiClient, node_agent: Any) -> None:
    ex = Experiments(kube_api, ns)
    ex.create(experiment("ws-source", max_trials=6, parallel=3))
    wait_for("the source to finish", lambda: ex.finished("ws-source"), timeout=120,
             on_timeout=lambda: _debug(ex, op, "ws-source"))
    initial = [{"x": 0.9}, {"x": 0.05}]
    body = experiment("ws-target", max_trials=3, parallel=1, initialTrials=initial,
                      warmStart={"experiments": ["ws-source"], "maxTrials": 5})
    uid = ex.create(body)["metadata"]["uid"]
    done = wait_for("the warm-started experiment to finish", lambda: ex.finished("ws-target"), timeout=120,
                    on_timeout=lambda: _debug(ex, op, "ws-target"))
    assert done["status"] == "True" and done["reason"] == "MaxTrialsReached", done
    status = ex.get("ws-target")["status"]
    assert status["trials"]["created"] == 3  # the 5 observations taken in are not trials of this experiment
    assert status["warmStart"]["trials"] == 5 and status["warmStart"]["skipped"] == 1
    assert status["warmStart"]["message"].startswith("5 of 6 trials taken in from ws-source; skipped: 1 beyond")

    # the Jobs the API server holds for this experiment (uid), each launched once by the node
    jobs = [j for j in ex.jobs("ws-target") if any(o.uid == uid for o in j.metadata.owner_references or [])]
    assert len({j.metadata.uid for j in jobs}) == 3
    by_number = {int(j.metadata.labels["kubetune.io/trial-number"]): j for j in jobs}
    assert sorted(by_number) == [0, 1, 2]
    for number, given in enumerate(initial):
        job = by_number[number]
        assert json.loads(job.metadata.annotations["kubetune.io/parameters"]) == given
        env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
        assert json.loads(env["KUBETUNE_PARAMS"]) == given
        assert job.spec.template.spec.containers[0].command[-1] == repr(given["x"])
    launches = [launch for launch in node_agent.launches(ns) if launch.job_uid in {j.metadata.uid for j in jobs}]
    assert sorted(launch.job_uid for launch in launches) == sorted(j.metadata.uid for j in jobs)

    # trial 2 is the suggestion the plan makes from the source's records and trials 0 and 1 (parallelTrials 1:
    # both had finished): the operator took in exactly the best 5 of the source, by name
    spec = ExperimentSpec.model_validate(body["spec"])
    source = [Trial.from_record(r) for _, r in sorted(ex.records("ws-source").items())]
    warm = take_in(spec, [("ws-source", source)])
    assert warm.taken == 5
    records = ex.records("ws-target")
    history = History(spec, "ws-target", [Trial.from_record(records[n]) for n in (0, 1)], warm.observations)
    expected = make_plan(spec, [], experiment="ws-target", history=history).create[0]
    assert (expected.number, expected.params) == (2, records[2]["params"])
    cold = History(spec, "ws-target", [Trial.from_record(records[n]) for n in (0, 1)])
    assert make_plan(spec, [], experiment="ws-target", history=cold).create[0].params != records[2]["params"]
    reasons = [e.reason for e in ex.events("ws-target", until={"WarmStart"})]
    assert "WarmStart" in reasons, reasons


def test_a_missing_source_stalls_the_experiment_until_it_exists(op: OperatorProcess, ns: str,
                                                                kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, ns)
    ex.create(experiment("ws-waits", max_trials=1, parallel=1, warmStart={"experiments": ["ws-later"]}))
    stalled = wait_for("the Stalled condition", lambda: (c := ex.condition("ws-waits", "Stalled")) and
                       c["status"] == "True" and c, timeout=60, on_timeout=lambda: _debug(ex, op, "ws-waits"))
    assert stalled["reason"] == "WarmStartSourceMissing"
    assert stalled["message"] == f"warmStart.experiments: ws-later not found in namespace {ns}"
    assert ex.jobs("ws-waits") == []
    ex.create(experiment("ws-later", max_trials=1, parallel=1))
    done = wait_for("the waiting experiment to go on once its source exists", lambda: ex.finished("ws-waits"),
                    timeout=90, on_timeout=lambda: _debug(ex, op, "ws-waits"))
    assert done["status"] == "True", done
    assert ex.condition("ws-waits", "Stalled")["status"] == "False"


@pytest.mark.parametrize(("spec", "message"), [
    ({"initialTrials": [{"x": 0.5}, {"x": 0.6}], "maxTrials": 1, "parallelTrials": 1},
     "initialTrials must not outnumber maxTrials"),
    ({"initialTrials": [{"x": 0.5}], "algorithm": {"name": "hyperband", "settings": {"resourceParameter": "n"}},
      "parameters": [X, {"name": "n", "type": "int", "min": 1, "max": 9}]},
     "initialTrials cannot be combined with the hyperband algorithm"),
    ({"algorithm": {"name": "random"}, "warmStart": {"experiments": ["other"]}},
     "warmStart applies only to algorithm bayesian, tpe"),
])
def test_the_api_server_refuses_what_cel_can_check(ns: str, kube_api: client.ApiClient, spec: dict[str, Any],
                                                   message: str) -> None:
    with pytest.raises(client.ApiException) as e:
        Experiments(kube_api, ns).create(experiment("ws-invalid", max_trials=2, parallel=1, **spec))
    said = json.loads(e.value.body)["message"]
    assert message in said and ("spec.initialTrials" in said or "spec.warmStart" in said), said


def test_names_and_values_the_api_server_cannot_check_stall_the_experiment(op: OperatorProcess, ns: str,
                                                                           kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, ns)
    ex.create(experiment("ws-out-of-range", max_trials=2, parallel=1, initialTrials=[{"x": 1.5}, {"y": 0.5}]))
    stalled = wait_for("the Stalled condition", lambda: (c := ex.condition("ws-out-of-range", "Stalled")) and
                       c["status"] == "True" and c, timeout=60)
    assert (stalled["reason"], stalled["message"]) == (
        "InvalidSpec", "spec.initialTrials[0].x: 1.5 is above max 1; spec.initialTrials[1].y: not a parameter of this "
        "experiment; spec.initialTrials[1].x: Required value")
    assert ex.jobs("ws-out-of-range") == []
