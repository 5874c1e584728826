"""Outcome constraints on the real control plane: the operator records infeasible trials (over the bound, or without
the constraint's metric), counts them in status, keeps the best trial feasible, does not end the experiment when
only infeasible trials reach the target, and feeds the constraint values to tpe; the API server refuses constraints
for an algorithm that does not support them. Jobs are counted by uid, processes by the node agent's launches."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_process import Experiments, OperatorProcess, script_experiment, table_cell, wait_for

from kubetune.engine import make_sampler
from kubetune.plan import observe
from kubetune.spec import ExperimentSpec
from kubetune.trials import Trial

# score = x + y; cost = x + y as well, bounded by 1.0, and not reported at all when x < 0.15
TRIAL = """
    import kubetune_trial as kt
    p = kt.params()
    x, y = float(p["x"]), float(p["y"])
    metrics = {"score": x + y}
    if x >= 0.15:
        metrics["cost"] = x + y
    kt.report(**metrics)
"""

MAX_TRIALS = 10
TARGET = 1.3


@pytest.fixture(scope="module")
def trial_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("constraints") / "trial.py"
    path.write_text(textwrap.dedent(TRIAL))
    return path


def experiment(name: str, script: Path) -> dict[str, Any]:
    return script_experiment(name, ["python", str(script)], {
        "objective": {"metric": "score", "goal": "maximize", "target": TARGET},
        "constraints": [{"metric": "cost", "max": 1.0}],
        "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                       {"name": "y", "type": "float", "min": 0.0, "max": 1.0}],
        "algorithm": {"name": "tpe", "seed": 2, "settings": {"nStartupTrials": 4}},
        "maxTrials": MAX_TRIALS,
        "parallelTrials": 1,  # one at a time: every trial is the suggestion for the trials before it
    })


def _debug(ex: Experiments, op: OperatorProcess, name: str) -> str:
    return f"status: {ex.get(name).get('status')}\noperator log:\n{op.log_tail(40)}"


def _infeasible(record: dict[str, Any]) -> bool:
    """The rule written out: a Succeeded trial is infeasible when cost is missing or above 1.0."""
    cost = record.get("metrics", {}).get("cost")
    return record["state"] == "Succeeded" and (cost is None or cost > 1.0)


@pytest.fixture(scope="module")
def finished(op: OperatorProcess, ns: str, kube_api: client.ApiClient, node_agent: Any,
             trial_script: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The experiment "cons" run to its end: its spec and its Succeeded condition."""
    ex = Experiments(kube_api, ns)
    body = experiment("cons", trial_script)
    ex.create(body)
    done = wait_for("the experiment to finish", lambda: ex.finished("cons"), timeout=240,
                    on_timeout=lambda: _debug(ex, op, "cons"))
    return body, done


def test_infeasible_trials_are_recorded_and_the_best_trial_is_feasible(
        finished: tuple[dict[str, Any], dict[str, Any]], ns: str, kube_api: client.ApiClient, node_agent: Any) -> None:
    ex = Experiments(kube_api, ns)
    body, done = finished
    # infeasible trials reached the target (checked below), yet the experiment ran its whole budget
    assert (done["status"], done["reason"]) == ("True", "MaxTrialsReached"), done
    records = ex.records("cons")
    assert sorted(records) == list(range(MAX_TRIALS))
    assert all(r["state"] == "Succeeded" for r in records.values()), records
    infeasible = [n for n, r in records.items() if _infeasible(r)]
    missing = [n for n, r in records.items() if "cost" not in r.get("metrics", {})]
    over_target = [n for n in infeasible if records[n]["metrics"]["score"] >= TARGET]
    assert missing and over_target and len(infeasible) < MAX_TRIALS, records
    status = ex.get("cons")["status"]
    assert status["trials"]["created"] == MAX_TRIALS
    assert status["trials"]["infeasible"] == len(infeasible)
    feasible = [n for n in records if n not in infeasible]
    best = max(feasible, key=lambda n: (records[n]["metrics"]["score"], -n))
    assert status["bestTrial"]["number"] == best
    assert status["bestTrial"]["metrics"]["cost"] <= 1.0
    # Each trial is what a fresh tpe suggests for the recorded trials before it, with their constraint values;
    # without them the suggestions differ, so the operator did feed them to the sampler.
    spec = ExperimentSpec.model_validate(body["spec"])
    trials = [Trial.from_record(records[n]) for n in range(MAX_TRIALS)]
    differs = 0
    for k in range(MAX_TRIALS):
        sampler = make_sampler("tpe", spec.search_space(), seed=2, settings=spec.algorithm.sampler_settings())
        [want] = sampler.suggest([observe(spec, t) for t in trials[:k]], [], n=1)
        assert trials[k].params == want, (k, trials[k].params, want)
        blind = make_sampler("tpe", spec.search_space(), seed=2, settings=spec.algorithm.sampler_settings())
        differs += blind.suggest([t.observation(spec.objective) for t in trials[:k]], [], n=1)[0] != want
    assert differs > 0
    launched = {x.job_uid for x in node_agent.launches(ns) if x.trial.startswith("cons-")}
    assert len(launched) == MAX_TRIALS  # one Job per trial ran a process, no more


def test_api_server_refuses_constraints_for_cmaes(op: OperatorProcess, ns: str, kube_api: client.ApiClient,
                                                  trial_script: Path) -> None:
    bad = copy.deepcopy(experiment("cons-cma", trial_script))
    bad["spec"]["algorithm"] = {"name": "cmaes"}
    bad["spec"]["objective"].pop("target")
    custom = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", ns, "tuningexperiments", bad)
    assert err.value.status == 422
    message = json.loads(err.value.body)["message"]
    assert "spec.constraints: Invalid value" in message
    assert "constraints need an algorithm that supports them: bayesian, grid, random, sobol, tpe" in message
    # the same experiment with bayesian is admitted (dry run: nothing is created)
    bad["spec"]["algorithm"] = {"name": "bayesian"}
    custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", ns, "tuningexperiments", bad, dry_run="All")


def test_cli_shows_feasibility(finished: tuple[dict[str, Any], dict[str, Any]], ns: str, kube_api: client.ApiClient,
                               control_plane: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """kubetune get -o wide and kubectl get -o wide show the infeasible count; kubetune trials a FEASIBLE column,
    and its csv the feasible column of results.csv."""
    from kubetune.cli import main

    records = Experiments(kube_api, ns).records("cons")
    infeasible = {n for n, r in records.items() if _infeasible(r)}
    kc = ["--kubeconfig", str(control_plane.kubeconfig)]

    def kubetune(*args: str) -> str:
        capsys.readouterr()
        assert main([*args, *kc]) == 0
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return out

    header, row = kubetune("get", "cons", "-n", ns, "-o", "wide").splitlines()
    assert dict(zip(header.split(), row.split()))["INFEASIBLE"] == str(len(infeasible))
    kubectl = control_plane.kubectl("get", "tex", "cons", "-n", ns, "-o", "wide").stdout
    assert table_cell(kubectl, "INFEASIBLE") == str(len(infeasible))
    header, *rows = kubetune("trials", "cons", "-n", ns).splitlines()
    assert header.split()[:3] == ["NAME", "STATE", "FEASIBLE"]
    assert {int(r.split()[0].rsplit("-", 1)[1]) for r in rows if r.split()[2] == "no"} == infeasible
    assert all(r.split()[2] == "yes" for r in rows if int(r.split()[0].rsplit("-", 1)[1]) not in infeasible)
    lines = kubetune("trials", "cons", "-n", ns, "-o", "csv").splitlines()
    assert lines[0].split(",")[:5] == ["number", "name", "state", "reason", "feasible"]
    assert {int(r.split(",")[0]) for r in lines[1:] if r.split(",")[4] == "false"} == infeasible
