"""Several objectives on the real control plane: the operator runs a tpe experiment with two objectives to the end,
status carries the Pareto front (its size, and a bounded selection of its members with their values) computed
from the recorded trials, a trial that leaves an objective out is recorded Failed, and the API server refuses
a target in objectives with the offline message. Jobs are counted by uid from the node agent's launches."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_process import Experiments, OperatorProcess, script_experiment, wait_for

from kubetune.cli import main
from kubetune.plan import front_in_status, pareto_front
from kubetune.spec import MAX_FRONT_IN_STATUS, ExperimentSpec
from kubetune.trials import Trial, TrialState

# Every trial is on the front (accuracy rises exactly as size does), except the first (initialTrials: x = 0.51),
# which leaves size out; so the front has MAX_TRIALS - 1 > 20 members and status shows a selection of 20.
TRIAL = """
    import kubetune_trial as kt
    p = kt.params()
    x = float(p["x"])
    if x == 0.51:
        kt.report(accuracy=x)
    else:
        kt.report(accuracy=x, size=100.0 * x)
"""

MAX_TRIALS = 24


@pytest.fixture(scope="module")
def trial_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pareto") / "trial.py"
    path.write_text(textwrap.dedent(TRIAL))
    return path


def experiment(name: str, script: Path) -> dict[str, Any]:
    return script_experiment(name, ["python", str(script)], {
        "objectives": [{"metric": "accuracy", "goal": "maximize"}, {"metric": "size", "goal": "minimize"}],
        "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
        "algorithm": {"name": "tpe", "seed": 5, "settings": {"nStartupTrials": 6}},
        "initialTrials": [{"x": 0.51}],
        "maxTrials": MAX_TRIALS,
        "parallelTrials": 6,
    })


def test_pareto_front_in_status(op: OperatorProcess, ns: str, kube_api: client.ApiClient, node_agent: Any,
                                control_plane: Any, trial_script: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ex = Experiments(kube_api, ns)
    body = experiment("pareto", trial_script)
    ex.create(body)
    done = wait_for("the experiment to finish", lambda: ex.finished("pareto"), timeout=300,
                    on_timeout=lambda: f"status: {ex.get('pareto').get('status')}\n{op.log_tail(40)}")
    assert (done["status"], done["reason"]) == ("True", "MaxTrialsReached"), done
    records = ex.records("pareto")
    assert sorted(records) == list(range(MAX_TRIALS))
    trials = [Trial.from_record(records[n]) for n in range(MAX_TRIALS)]
    first = trials[0]  # an objective left out: Failed, not on the front
    assert first.params == {"x": 0.51} and (first.state, first.reason) == (TrialState.FAILED, "MetricsMissing")
    assert first.message == "the trial finished without reporting the objective metric 'size'"
    complete = trials[1:]
    assert complete and all(t.state is TrialState.SUCCEEDED for t in complete)
    # brute force over the records: a trial is on the front when no other one is at least as good on both and
    # better on one (here every complete trial, their values being strictly increasing together)
    on_front = sorted(t.number for t in complete
                      if not any(o.metrics["accuracy"] >= t.metrics["accuracy"] and o.metrics["size"] <= t.metrics["size"]
                                 and o.metrics != t.metrics for o in complete))
    assert on_front == sorted(t.number for t in complete)
    spec = ExperimentSpec.model_validate(body["spec"])
    assert [t.number for t in pareto_front(spec, trials)] == on_front

    status = ex.get("pareto")["status"]
    assert "bestTrial" not in status or status["bestTrial"] is None
    front = status["paretoFront"]
    assert front["metrics"] == ["accuracy", "size"] and front["size"] == len(on_front)
    shown = [m["number"] for m in front["trials"]]
    assert len(shown) == min(len(on_front), MAX_FRONT_IN_STATUS) and set(shown) <= set(on_front)
    assert shown == [t.number for t in front_in_status(spec, pareto_front(spec, trials))]
    assert len(on_front) == MAX_TRIALS - 1 > MAX_FRONT_IN_STATUS == len(shown)
    by_acc = sorted(complete, key=lambda t: t.metrics["accuracy"])  # the extremes of each objective stay shown
    assert by_acc[0].number in shown and by_acc[-1].number in shown
    for m in front["trials"]:
        rec = records[m["number"]]["metrics"]
        assert m["values"] == [rec["accuracy"], rec["size"]] and m["name"] == f"pareto-{m['number']:04d}"
    assert f"a Pareto front of {len(on_front)} trials" in done["message"]
    launched = {x.job_uid for x in node_agent.launches(ns) if x.trial.startswith("pareto-")}
    assert len(launched) == MAX_TRIALS  # one Job per trial ran a process, no more

    # the command line: `best` prints the whole front from the records, `get` its size
    kc = ["-n", ns, "--kubeconfig", str(control_plane.kubeconfig)]
    capsys.readouterr()
    assert main(["best", "pareto", *kc]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"Pareto front: {len(on_front)} trials over accuracy (maximize), size (minimize)")
    assert [int(line.split()[0][1:]) for line in out[1:]] == on_front
    assert main(["best", "pareto", "-o", "json", *kc]) == 0
    assert [r["number"] for r in json.loads(capsys.readouterr().out)] == on_front
    assert main(["get", *kc]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("pareto "))
    assert f"front:{len(on_front)}" in row.split()


def test_api_server_refuses_a_target_in_objectives(op: OperatorProcess, ns: str, kube_api: client.ApiClient,
                                                   trial_script: Path) -> None:
    bad = experiment("pareto-target", trial_script)
    bad["spec"]["objectives"][0]["target"] = 0.99
    custom = client.CustomObjectsApi(kube_api)
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object("kubetune.io", "v1alpha1", ns, "tuningexperiments", bad)
    assert err.value.status == 422
    message = json.loads(err.value.body)["message"]
    assert "spec.objectives: Invalid value" in message
    assert "target is not defined for several objectives" in message
