"""The operator end to end on the real control plane: real API server (CRD schema + CEL), real Job controller and
garbage collector, the node agent running trials as processes, the real trial SDK patching pod annotations."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_process import Experiments, OperatorProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "tuningexperiments.kubetune.io.yaml"
OBJECTIVE = Path(__file__).resolve().parent / "trials" / "objective.py"



@pytest.fixture(scope="module")  # stops with this module: later modules run operators of their own
def operator(control_plane: Any, crd: None, node_agent: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("operator")).start()
    try:
        yield op
    finally:
        op.stop()
        print(f"\n[operator] last log lines:\n{op.log_tail(30)}", file=sys.stderr)



def experiment(name: str, *, parameters: list[dict[str, Any]], max_trials: int, parallel: int = 2,
               algorithm: str = "random", env: dict[str, str] | None = None, max_failed: int = 3,
               target: float | None = None) -> dict[str, Any]:
    objective: dict[str, Any] = {"metric": "score", "goal": "maximize"}
    if target is not None:
        objective["target"] = target
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": objective,
            "additionalMetrics": ["x_seen"],
            "parameters": parameters,
            "algorithm": {"name": algorithm, "seed": 1},
            "maxTrials": max_trials,
            "parallelTrials": parallel,
            "maxFailedTrials": max_failed,
            "trialTemplate": {
                "metadata": {"labels": {"team": "tests"}},
                "spec": {
                    "backoffLimit": 0,
                    "template": {"spec": {
                        "serviceAccountName": "kubetune-trial",
                        "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": 5,
                        "containers": [{
                            "name": "trial",
                            "image": "kubetune-trial:test",
                            "command": ["python", str(OBJECTIVE), "--x", "${params.x}"],
                            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                        }],
                    }},
                },
            },
        },
    }


X = {"name": "x", "type": "float", "min": 0.0, "max": 1.0}


def _debug(ex: Experiments, op: OperatorProcess, name: str) -> str:
    try:
        status = ex.get(name).get("status")
    except ApiException as e:
        status = f"<{e.status}>"
    return f"status: {status}\noperator log:\n{op.log_tail(40)}"


def test_experiment_runs_to_success_with_real_jobs_and_sdk(operator: OperatorProcess, trial_namespace: str,
                                                           kube_api: client.ApiClient, control_plane: Any) -> None:
    ex = Experiments(kube_api, trial_namespace)
    ex.create(experiment("quad", parameters=[X], max_trials=6, parallel=2, algorithm="sobol"))
    done = wait_for("the experiment to finish", lambda: ex.finished("quad"), timeout=180,
                    on_timeout=lambda: _debug(ex, operator, "quad"))
    assert done["status"] == "True", done
    assert done["reason"] == "MaxTrialsReached"
    status = ex.get("quad")["status"]
    assert status["trials"] == {"created": 6, "running": 0, "succeeded": 6, "failed": 0, "pruned": 0}
    assert status["observedGeneration"] == 1
    best = status["bestTrial"]
    records = ex.records("quad")
    assert sorted(records) == list(range(6))
    scores = {n: r["metrics"]["score"] for n, r in records.items()}
    assert best["number"] == max(scores, key=scores.get)
    assert best["objectiveValue"] == pytest.approx(max(scores.values()))
    assert best["name"] == f"quad-{best['number']:04d}"
    for rec in records.values():
        # the SDK reported through the pod annotation: the per-step curve and the extra metric arrived
        assert rec["state"] == "Succeeded"
        assert len(rec["curve"]) == 3
        assert rec["metrics"]["x_seen"] == pytest.approx(rec["params"]["x"])
        assert rec["metrics"]["score"] == pytest.approx(-((rec["params"]["x"] - 0.3) ** 2))
    jobs = ex.jobs("quad")
    assert jobs, "finished Jobs are kept (up to a bound) for inspection"
    for job in jobs:
        assert job.metadata.labels["team"] == "tests"
        assert job.metadata.labels["app.kubernetes.io/managed-by"] == "kubetune"
        assert job.metadata.owner_references[0].kind == "TuningExperiment"
        assert "kubetune.io/parameters" in job.metadata.annotations
        assert job.spec.pod_failure_policy is not None
        env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
        assert env["KUBETUNE_TRIAL"] == job.metadata.name
        assert '"x"' in env["KUBETUNE_PARAMS"]
    expected = {"TrialCreated", "BestTrialImproved", "ExperimentSucceeded"}
    assert expected <= {e.reason for e in ex.events("quad", until=expected)}
    # `kubectl get tex`: best value, trials succeeded/created/max, the Succeeded condition and reason, age
    header, row = control_plane.kubectl("get", "tex", "quad", "-n", trial_namespace).stdout.splitlines()
    assert header.split() == ["NAME", "BEST", "SUCCEEDED-TRIALS", "TRIALS", "MAX", "SUCCEEDED", "REASON", "AGE"]
    cells = row.split()
    assert cells[0] == "quad" and float(cells[1]) == pytest.approx(best["objectiveValue"], abs=1e-6)
    assert cells[2:7] == ["6", "6", "6", "True", "MaxTrialsReached"]


def test_failed_missing_metric_and_termination_message_trials(operator: OperatorProcess, trial_namespace: str,
                                                              kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    # the grid varies the last parameter fastest: the first four trials take every mode with x = 0
    body = experiment("modes", parameters=[
        {"name": "x", "type": "float", "min": 0.0, "max": 0.5, "step": 0.5},
        {"name": "mode", "type": "categorical", "values": ["ok", "crash", "nometric", "termlog"]},
    ], max_trials=4, parallel=4, algorithm="grid", max_failed=5)
    ex.create(body)
    done = wait_for("the experiment to finish", lambda: ex.finished("modes"), timeout=180,
                    on_timeout=lambda: _debug(ex, operator, "modes"))
    records = ex.records("modes")
    by_mode = {r["params"]["mode"]: r for r in records.values()}
    assert set(by_mode) == {"ok", "crash", "nometric", "termlog"}
    assert by_mode["ok"]["state"] == "Succeeded"
    assert by_mode["crash"]["state"] == "Failed" and by_mode["crash"]["reason"] == "Error"
    assert "exit code 3" in by_mode["crash"]["message"]
    assert by_mode["nometric"]["state"] == "Failed" and by_mode["nometric"]["reason"] == "MetricsMissing"
    assert by_mode["termlog"]["state"] == "Succeeded"
    assert by_mode["termlog"]["metrics"]["score"] == pytest.approx(-((by_mode["termlog"]["params"]["x"] - 0.3) ** 2))
    assert done["status"] == "True"
    status = ex.get("modes")["status"]
    assert status["trials"]["failed"] == 2 and status["trials"]["succeeded"] == 2
    assert "TrialFailed" in {e.reason for e in ex.events("modes", until={"TrialFailed"})}


def test_too_many_failures_fails_the_experiment(operator: OperatorProcess, trial_namespace: str,
                                                kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    body = experiment("crashy", parameters=[
        {"name": "mode", "type": "categorical", "values": ["crash"]}, X], max_trials=6, parallel=2, max_failed=1)
    ex.create(body)
    done = wait_for("the experiment to fail", lambda: ex.finished("crashy"), timeout=180,
                    on_timeout=lambda: _debug(ex, operator, "crashy"))
    assert done["status"] == "False" and done["reason"] == "TooManyFailedTrials"
    assert ex.get("crashy")["status"]["trials"]["created"] < 6


def test_pod_deleted_mid_run_ends_in_named_state(operator: OperatorProcess, trial_namespace: str,
                                                 kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    ex.create(experiment("victim", parameters=[X], max_trials=1, parallel=1,
                         env={"TRIAL_SECONDS": "60", "TRIAL_STEPS": "60"}))
    pod = wait_for("a running trial pod", lambda: next(
        (p for p in ex.pods("victim") if p.status.phase == "Running"), None), timeout=60)
    wait_for("a first report", lambda: (ex.core.read_namespaced_pod(pod.metadata.name, trial_namespace)
                                         .metadata.annotations or {}).get("kubetune.io/metrics"), timeout=30)
    ex.core.delete_namespaced_pod(pod.metadata.name, trial_namespace)
    done = wait_for("the experiment to finish", lambda: ex.finished("victim"), timeout=120,
                    on_timeout=lambda: _debug(ex, operator, "victim"))
    rec = ex.records("victim")[0]
    assert rec["state"] == "Failed"
    assert rec["reason"] == "PodDeleted", rec
    assert done["reason"] == "NoSuccessfulTrials"


def test_operator_restart_mid_experiment_loses_and_duplicates_nothing(
        operator: OperatorProcess, trial_namespace: str, kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    ex.create(experiment("restart", parameters=[X], max_trials=8, parallel=2, algorithm="tpe",
                         env={"TRIAL_SECONDS": "1.5"}))
    wait_for("three trials", lambda: len(ex.records("restart")) >= 3, timeout=120,
             on_timeout=lambda: _debug(ex, operator, "restart"))
    operator.kill(signal.SIGKILL)
    time.sleep(2.0)  # trials keep running and finishing while the operator is down
    operator.start()
    done = wait_for("the experiment to finish", lambda: ex.finished("restart"), timeout=240,
                    on_timeout=lambda: _debug(ex, operator, "restart"))
    assert done["status"] == "True" and done["reason"] == "MaxTrialsReached"
    records = ex.records("restart")
    assert sorted(records) == list(range(8))
    assert all(r["state"] == "Succeeded" for r in records.values()), records
    xs = [r["params"]["x"] for r in records.values()]
    assert len(set(xs)) == 8
    assert ex.get("restart")["status"]["trials"]["created"] == 8
    # exactly one Job per trial (all 8 are within the number of finished Jobs kept)
    assert sorted(j.metadata.name for j in ex.jobs("restart")) == [f"restart-{n:04d}" for n in range(8)]


def test_budget_raised_after_completion_continues(operator: OperatorProcess, trial_namespace: str,
                                                  kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    ex.create(experiment("budget", parameters=[X], max_trials=2, parallel=2))
    wait_for("the experiment to finish", lambda: ex.finished("budget"), timeout=120,
             on_timeout=lambda: _debug(ex, operator, "budget"))
    ex.patch_spec("budget", {"maxTrials": 4})

    def finished_again() -> bool:
        obj = ex.get("budget")
        c = next((c for c in obj["status"]["conditions"] if c["type"] == "Succeeded"), {})
        return c.get("status") == "True" and obj["status"]["trials"]["created"] == 4 and \
            obj["status"]["observedGeneration"] == 2

    wait_for("the experiment to finish its raised budget", finished_again, timeout=120,
             on_timeout=lambda: _debug(ex, operator, "budget"))
    assert sorted(ex.records("budget")) == [0, 1, 2, 3]


def test_deleting_the_experiment_garbage_collects_jobs_and_records(operator: OperatorProcess, trial_namespace: str,
                                                                  kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    ex.create(experiment("gone", parameters=[X], max_trials=4, parallel=2, env={"TRIAL_SECONDS": "30"}))
    wait_for("running jobs", lambda: len(ex.jobs("gone")) >= 2, timeout=60)
    ex.delete("gone")
    wait_for("the experiment to go", lambda: not _exists(ex, "gone"), timeout=60)
    wait_for("its jobs and result ConfigMaps to be garbage-collected",
             lambda: not ex.jobs("gone") and not ex.records("gone"), timeout=120)
    wait_for("its pods to end", lambda: not ex.pods("gone"), timeout=120)


def _exists(ex: Experiments, name: str) -> bool:
    try:
        ex.get(name)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


def test_invalid_job_template_stalls_with_the_api_servers_reason(operator: OperatorProcess, trial_namespace: str,
                                                                 kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    body = experiment("badjob", parameters=[X], max_trials=2)
    body["spec"]["trialTemplate"]["spec"]["completions"] = -1
    ex.create(body)
    stalled = wait_for("Stalled", lambda: (c := ex.condition("badjob", "Stalled")) and c["status"] == "True" and c,
                       timeout=60, on_timeout=lambda: _debug(ex, operator, "badjob"))
    assert stalled["reason"] == "InvalidTrialTemplate"
    assert "completions" in stalled["message"]


def test_the_example_experiment_runs_on_the_cluster(operator: OperatorProcess, trial_namespace: str,
                                                    kube_api: client.ApiClient) -> None:
    """examples/digits-svm.yaml as shipped (budget cut to 4 trials): real scikit-learn trials via the SDK."""
    body = yaml.safe_load((ROOT / "examples" / "digits-svm.yaml").read_text())
    body["spec"]["maxTrials"] = 4
    ex = Experiments(kube_api, trial_namespace)
    ex.create(body)
    done = wait_for("the example to finish", lambda: ex.finished("digits-svm"), timeout=240,
                    on_timeout=lambda: _debug(ex, operator, "digits-svm"))
    status = ex.get("digits-svm")["status"]
    assert done["status"] == "True", status
    assert status["trials"]["succeeded"] == 4
    best = status["bestTrial"]
    assert 0.1 < best["metrics"]["accuracy"] <= 1.0 and best["metrics"]["fit_seconds"] > 0
    assert set(best["parameters"]) == {"C", "gamma", "kernel", "degree"}
    records = ex.records("digits-svm")
    assert all(len(r["curve"]) == 3 for r in records.values())  # one point per cross-validation fold


def test_median_stopping_prunes_trials_and_their_pods_end(operator: OperatorProcess, trial_namespace: str,
                                                         kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    body = experiment("prune", parameters=[X], max_trials=10, parallel=2, algorithm="sobol",
                      env={"TRIAL_SECONDS": "4", "TRIAL_STEPS": "10"}, max_failed=0)
    body["spec"]["earlyStopping"] = {"rule": "median", "minTrials": 2, "startStep": 2}
    ex.create(body)
    done = wait_for("the experiment to finish", lambda: ex.finished("prune"), timeout=300,
                    on_timeout=lambda: _debug(ex, operator, "prune"))
    assert done["status"] == "True", done
    records = ex.records("prune")
    pruned = [r for r in records.values() if r["state"] == "Pruned"]
    assert pruned, records
    status = ex.get("prune")["status"]
    assert status["trials"]["pruned"] == len(pruned)
    assert status["trials"]["succeeded"] + len(pruned) == 10
    for r in pruned:
        assert r["reason"] and r["message"]
        assert 2 <= r["curve"][-1][0] < 9, r  # stopped from startStep on, before the last step
    # the pruned trials' pods ended: nothing of the experiment is left running
    wait_for("no running pods", lambda: not [p for p in ex.pods("prune") if p.status.phase == "Running"],
             timeout=60)
    assert "TrialPruned" in {e.reason for e in ex.events("prune", until={"TrialPruned"})}
