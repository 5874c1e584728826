"""The Kubernetes backend's pure parts: Job construction, observation rules, status conditions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.k8s.jobs import build_job
from kubetune.k8s.observe import JobSummary, PodSummary, merge_pod, observe_trial, summarize_job, summarize_pod
from kubetune.k8s.status import condition, running_status
from kubetune.plan import make_plan
from kubetune.trials import Trial, TrialState
from kubetune.validation import load_experiment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def exp():
    return load_experiment(ROOT / "examples" / "digits-svm.yaml")


def body_of(exp) -> dict:
    return {"metadata": {"name": "digits-svm", "namespace": "ml", "uid": "u-1", "generation": 3}}


def test_build_job_injects_parameters_labels_owner_and_policies(exp) -> None:
    params = {"C": 12.5, "gamma": 0.001, "kernel": "rbf", "degree": 3}
    job = build_job(body_of(exp), exp.spec, 7, params)
    meta = job["metadata"]
    assert meta["name"] == "digits-svm-0007"
    assert meta["labels"]["team"] == "vision"
    assert meta["labels"]["kubetune.io/trial-number"] == "7"
    assert json.loads(meta["annotations"]["kubetune.io/parameters"]) == params
    owner = meta["ownerReferences"][0]
    assert owner["uid"] == "u-1" and owner["controller"] is True and owner["kind"] == "TuningExperiment"
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"]["kubetune.io/experiment"] == "digits-svm"
    c = pod["spec"]["containers"][0]
    assert c["command"][c["command"].index("--C") + 1] == "12.5"
    assert c["command"][c["command"].index("--kernel") + 1] == "rbf"
    env = {e["name"]: e for e in c["env"]}
    assert env["KUBETUNE_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert json.loads(env["KUBETUNE_PARAMS"]["value"]) == params
    assert env["KUBETUNE_TRIAL_NUMBER"]["value"] == "7"
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"
    # the experiment's template is not mutated
    assert "${params.C}" in exp.spec.trial_template.spec["template"]["spec"]["containers"][0]["command"]


def _job(**kw) -> JobSummary:
    base = dict(name="e-0001", number=1, params={"x": 1.0}, complete=False, failed=False)
    base.update(kw)
    return JobSummary(**base)


def _pod(**kw) -> PodSummary:
    base = dict(name="e-0001-abc", job="e-0001", phase="Running", deleting=False, metrics_text=None)
    base.update(kw)
    return PodSummary(**base)


def _doc(seq: int, metrics: dict, curve=()) -> str:
    return json.dumps({"seq": seq, "metrics": metrics, "curve": [[s, m] for s, m in curve]})


def test_running_trial_carries_latest_metrics_and_curve(exp) -> None:
    pod = _pod(metrics_text=_doc(2, {"accuracy": 0.8}, [(0, {"accuracy": 0.7}), (1, {"accuracy": 0.8})]))
    obs = observe_trial(exp.spec, _job(), [pod], None)
    assert obs.trial.state is TrialState.RUNNING and not obs.final
    assert obs.trial.curve == [(0, 0.7), (1, 0.8)]
    assert obs.trial.metrics == {"accuracy": 0.8}


def test_complete_job_waits_for_the_pods_final_state(exp) -> None:
    obs = observe_trial(exp.spec, _job(complete=True), [_pod(phase="Running")], None)
    assert not obs.final


def test_complete_job_with_metric_succeeds(exp) -> None:
    pod = _pod(phase="Succeeded", metrics_text=_doc(3, {"accuracy": 0.9, "fit_seconds": 2.0}))
    obs = observe_trial(exp.spec, _job(complete=True), [pod], None)
    assert obs.final and obs.trial.state is TrialState.SUCCEEDED
    assert obs.trial.metrics["accuracy"] == 0.9


def test_complete_job_without_metric_is_metrics_missing(exp) -> None:
    obs = observe_trial(exp.spec, _job(complete=True), [_pod(phase="Succeeded")], None)
    assert obs.trial.state is TrialState.FAILED and obs.trial.reason == "MetricsMissing"


def test_termination_message_fallback(exp) -> None:
    pod = _pod(phase="Succeeded", exit_code=0, termination_message='starting\n{"accuracy": 0.77}\n')
    obs = observe_trial(exp.spec, _job(complete=True), [pod], None)
    assert obs.trial.state is TrialState.SUCCEEDED and obs.trial.metrics == {"accuracy": 0.77}


def test_malformed_annotation_without_fallback_is_invalid_metrics(exp) -> None:
    pod = _pod(phase="Succeeded", metrics_text='{"metrics": {"accuracy": "high"}}')
    obs = observe_trial(exp.spec, _job(complete=True), [pod], None)
    assert obs.trial.state is TrialState.FAILED and obs.trial.reason == "InvalidMetrics"


@pytest.mark.parametrize(
    "job_kw, pod_kw, reason, text",
    [
        (dict(failure_reason="BackoffLimitExceeded"), dict(exit_code=3, termination_reason="Error"), "Error",
         "exit code 3"),
        (dict(failure_reason="DeadlineExceeded", failure_message="Job was active longer"), {}, "DeadlineExceeded",
         "active longer"),
        (dict(failure_reason="BackoffLimitExceeded"), dict(exit_code=143, deleting=True, deleted_while_running=True), "PodDeleted",
         "deleted"),
    ],
)
def test_failed_job_reasons(exp, job_kw, pod_kw, reason, text) -> None:
    pod = _pod(phase="Failed", **pod_kw)
    obs = observe_trial(exp.spec, _job(failed=True, **job_kw), [pod] if pod_kw else [], None)
    assert obs.final and obs.trial.state is TrialState.FAILED
    assert obs.trial.reason == reason
    assert text in obs.trial.message


def test_summaries_from_api_bodies() -> None:
    job = summarize_job({
        "metadata": {"name": "e-0002", "labels": {"kubetune.io/trial-number": "2"},
                     "annotations": {"kubetune.io/parameters": '{"x": 0.5}'}},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
    })
    assert job is not None and job.number == 2 and job.failed and job.params == {"x": 0.5}
    assert summarize_job({"metadata": {"name": "other", "labels": {}}}) is None
    pod = summarize_pod({
        "metadata": {"name": "p", "labels": {"job-name": "e-0002"}, "annotations": {"kubetune.io/metrics": "{}"}},
        "status": {"phase": "Failed", "containerStatuses": [
            {"state": {"terminated": {"exitCode": 2, "reason": "Error", "message": "boom"}}}]},
    })
    assert pod is not None and pod.exit_code == 2 and pod.termination_message == "boom" and pod.metrics_text == "{}"


def test_condition_transition_time_moves_only_on_status_change() -> None:
    old = [{"type": "Succeeded", "status": "Unknown", "lastTransitionTime": "2020-01-01T00:00:00Z"}]
    same = condition(old, "Succeeded", "Unknown", "TrialsRunning", "1 of 2", 1)
    assert same["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    moved = condition(old, "Succeeded", "True", "MaxTrialsReached", "done", 1)
    assert moved["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def test_running_status_shape(exp) -> None:
    trials = [Trial(0, {"C": 1.0, "gamma": 0.1, "kernel": "rbf", "degree": 2}, TrialState.SUCCEEDED,
                    metrics={"accuracy": 0.5}),
              Trial(1, {"C": 2.0, "gamma": 0.1, "kernel": "rbf", "degree": 2}, TrialState.RUNNING)]
    plan = make_plan(exp.spec, trials, experiment="digits-svm")
    status = running_status(body_of(exp), exp.spec, plan)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Succeeded"]["status"] == "Unknown" and conds["Reconciling"]["status"] == "True"
    assert conds["Stalled"]["status"] == "False"
    assert all(c["observedGeneration"] == 3 for c in conds.values())
    assert status["bestTrial"]["name"] == "digits-svm-0000"
    assert status["bestTrial"]["parameters"]["C"] == "1.0"
    assert status["trials"]["running"] >= 1


def test_pod_deleted_while_running_that_exits_zero_is_pod_deleted(exp) -> None:
    """SIGTERM from a deleted pod lets an SDK trial exit 0; the Job completes, but the trial did not finish."""
    running = _pod(metrics_text=_doc(1, {"accuracy": 0.5}, [(0, {"accuracy": 0.5})]))
    deleting = merge_pod(running, _pod(deleting=True, metrics_text=running.metrics_text), running.name)
    assert deleting is not None and deleting.deleted_while_running
    ended = merge_pod(deleting, _pod(phase="Succeeded", deleting=True, exit_code=0,
                                     metrics_text=running.metrics_text), running.name)
    gone = merge_pod(ended, None, running.name)
    assert gone is not None and gone.gone and gone.deleted_while_running and gone.ended
    obs = observe_trial(exp.spec, _job(complete=True), [gone], None)
    assert obs.final and obs.trial.state is TrialState.FAILED and obs.trial.reason == "PodDeleted"
    assert "exited with code 0" in obs.trial.message


def test_pod_deleted_after_it_finished_keeps_its_result(exp) -> None:
    done = _pod(phase="Succeeded", metrics_text=_doc(2, {"accuracy": 0.9}))
    later = merge_pod(done, _pod(phase="Succeeded", deleting=True, metrics_text=done.metrics_text), done.name)
    gone = merge_pod(later, None, done.name)
    assert gone is not None and not gone.deleted_while_running
    obs = observe_trial(exp.spec, _job(complete=True), [gone], None)
    assert obs.trial.state is TrialState.SUCCEEDED and obs.trial.metrics["accuracy"] == 0.9
