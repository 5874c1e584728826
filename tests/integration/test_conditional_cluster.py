"""Conditional parameters on the real control plane: the operator's Jobs carry an inactive parameter nowhere (not in
the parameters annotation, not in KUBETUNE_PARAMS, no env var, no argument), every Job is counted by uid from a
watch, and each trial checks from inside its process that what it was given agrees."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from operator_process import Experiments, OperatorProcess, wait_for

TRIAL = """
import json, os, sys
import kubetune_trial as kt
p = json.loads(os.environ["KUBETUNE_PARAMS"])
argv = sys.argv[1:]
given = {"params": "degree" in p, "env": "DEGREE" in os.environ, "argv": any(a.startswith("--degree=") for a in argv)}
agree = len(set(given.values())) == 1 and given["params"] == (p["kernel"] == "poly")
if given["params"]:
    agree = agree and os.environ["DEGREE"] == str(p["degree"]) and f"--degree={p['degree']}" in argv
score = -(float(p["C"]) - 0.3) ** 2 - (abs(p["degree"] - 3) if "degree" in p else 0.5)
kt.report(score=score, agree=1.0 if agree else 0.0)
"""


class JobWatch:
    """Every Job the API server made in a namespace, by uid (list, then watch), with what it injected."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.batch = client.BatchV1Api(self.api)
        self.namespace = namespace
        self.jobs: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> JobWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._watch.stop()
        self._thread.join(timeout=30)
        self.api.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for event in self._watch.stream(self.batch.list_namespaced_job, self.namespace, timeout_seconds=10):
                    job = event["raw_object"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.jobs.setdefault(job["metadata"]["uid"], job)
            except Exception as e:  # a dropped watch is resumed with a fresh list (setdefault keeps each uid once)
                print(f"[job watch] {e!r}", file=sys.stderr)


@pytest.fixture(scope="module")
def operator(control_plane: Any, crd: None, node_agent: Any, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(control_plane.kubeconfig, tmp_path_factory.mktemp("operator")).start()
    try:
        yield op
    finally:
        op.stop()
        print(f"\n[operator] last log lines:\n{op.log_tail(30)}", file=sys.stderr)


def _experiment(script: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": "cond"},
        "spec": {
            "objective": {"metric": "score", "goal": "maximize"},
            "additionalMetrics": ["agree"],
            "parameters": [
                {"name": "kernel", "type": "categorical", "values": ["rbf", "poly", "sigmoid"]},
                {"name": "C", "type": "float", "min": 0.0, "max": 1.0},
                {"name": "degree", "type": "int", "min": 2, "max": 5,
                 "when": {"parameter": "kernel", "values": ["poly"]}},
            ],
            "algorithm": {"name": "tpe", "seed": 3, "settings": {"nStartupTrials": 4}},
            "maxTrials": 9, "parallelTrials": 3,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "serviceAccountName": "kubetune-trial", "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "trial", "image": "kubetune-trial:test",
                    "command": ["python", str(script), "--kernel", "${params.kernel}", "--degree=${params.degree}"],
                    "env": [{"name": "DEGREE", "value": "${params.degree}"}],
                }],
            }}}},
        },
    }


def test_inactive_parameters_reach_no_job(operator: OperatorProcess, trial_namespace: str,
                                          kube_api: client.ApiClient, control_plane: Any,
                                          tmp_path: Path) -> None:
    script = tmp_path / "cond_trial.py"
    script.write_text(TRIAL)
    ex = Experiments(kube_api, trial_namespace)
    with JobWatch(control_plane.kubeconfig, trial_namespace) as jobs:
        ex.create(_experiment(script))
        done = wait_for("the conditional experiment to finish", lambda: ex.finished("cond"), timeout=180,
                        on_timeout=lambda: operator.log_tail(40))
        records = ex.records("cond")
        wait_for("every Job on the watch", lambda: len(jobs.jobs) >= len(records), timeout=30)
    assert done["reason"] == "MaxTrialsReached", done
    assert sorted(records) == list(range(9))
    numbers = sorted(int(j["metadata"]["labels"]["kubetune.io/trial-number"]) for j in jobs.jobs.values())
    assert numbers == list(range(9)), numbers  # one Job per trial, counted by uid
    kernels = set()
    for job in jobs.jobs.values():
        number = int(job["metadata"]["labels"]["kubetune.io/trial-number"])
        annotated = json.loads(job["metadata"]["annotations"]["kubetune.io/parameters"])
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        assert json.loads(env["KUBETUNE_PARAMS"]) == annotated == records[number]["params"]
        kernels.add(annotated["kernel"])
        if annotated["kernel"] == "poly":
            assert 2 <= annotated["degree"] <= 5
            assert env["DEGREE"] == str(annotated["degree"])
            assert container["command"][-1] == f"--degree={annotated['degree']}"
        else:
            assert set(annotated) == {"kernel", "C"}, annotated
            assert "DEGREE" not in env
            assert not any(a.startswith("--degree") for a in container["command"]), container["command"]
        assert records[number]["state"] == "Succeeded", records[number]
        assert records[number]["metrics"]["agree"] == 1.0  # what the process itself saw
    assert "poly" in kernels and kernels - {"poly"}, kernels
