"""Hyperband with spec.checkpoints on the real control plane: a promotion is a Job that restores the checkpoint of
the trial it promotes, from the experiment's PersistentVolumeClaim, and trains only the new steps.

The trial (``trials/resume_trial.py``) fails when the checkpoint it is told to restore is missing or holds another
step; it writes the env it was given and, in its checkpoint, every step its configuration's chain trained. Jobs are
counted by uid from the processes the node agent launched."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from kubernetes import client
from operator_process import Experiments, OperatorProcess, wait_for

from kubetune.trials import Trial

TRIAL = Path(__file__).resolve().parent / "trials" / "resume_trial.py"
NAME = "hb-resume"
CLAIM = "hb-checkpoints"
MAX_TRIALS = 14


def experiment() -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": NAME},
        "spec": {
            "objective": {"metric": "q", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1},
                           {"name": "epochs", "type": "int", "min": 1, "max": 9}],
            "algorithm": {"name": "hyperband", "seed": 4, "settings": {"resourceParameter": "epochs"}},
            "checkpoints": {"persistentVolumeClaim": CLAIM},
            "maxTrials": MAX_TRIALS, "parallelTrials": 3,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "serviceAccountName": "kubetune-trial",  # reports reach the pod
                "containers": [{"name": "trial", "image": "kubetune-trial:test",
                                "command": [sys.executable, str(TRIAL)]}]}}}},
        },
    }


def test_hyperband_promotions_resume_from_the_promoted_trials_checkpoint(
        op: OperatorProcess, ns: str, kube_api: client.ApiClient, node_agent: Any) -> None:
    client.CoreV1Api(kube_api).create_namespaced_persistent_volume_claim(ns, {
        "metadata": {"name": CLAIM},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    ex = Experiments(kube_api, ns)
    ex.create(experiment())
    done = wait_for("the experiment to finish", lambda: ex.finished(NAME), timeout=240,
                    on_timeout=lambda: f"{ex.get(NAME).get('status')}\n{op.log_tail(40)}")
    assert (done["status"], done["reason"]) == ("True", "MaxTrialsReached"), done

    records = ex.records(NAME)
    assert sorted(records) == list(range(MAX_TRIALS))
    # every trial succeeded: a missing or wrong checkpoint makes the trial exit 3
    assert all(r["state"] == "Succeeded" for r in records.values()), {n: r.get("message") for n, r in records.items()}
    trials = [Trial.from_record(records[n]) for n in range(MAX_TRIALS)]
    resumed = [t for t in trials if t.lineage is not None]
    assert resumed, "no promotion happened"
    root = node_agent.claim_dir(ns, CLAIM) / NAME
    by_x: dict[float, list[Trial]] = defaultdict(list)
    for t in trials:
        by_x[float(t.params["x"])].append(t)
    for chain in by_x.values():
        chain.sort(key=lambda t: int(t.params["epochs"]))
        assert chain[0].lineage is None
        for prev, t in zip(chain, chain[1:]):  # each promotion restores the configuration's previous rung
            assert t.lineage is not None and t.lineage.parent == prev.number and t.lineage.member == chain[0].number
            assert t.lineage.start == int(prev.params["epochs"]) and t.lineage.end == int(t.params["epochs"])
            assert [s for s, _ in t.curve] == list(range(t.lineage.start + 1, t.lineage.end + 1)), records[t.number]
        # the pod of each trial saw its restore dir and step; the chain trained every step once
        for t in chain:
            seen = json.loads((root / f"{NAME}-{t.number:04d}" / "seen.json").read_text())
            if t.lineage is None:
                assert seen["KUBETUNE_RESTORE_DIR"] is None and seen["KUBETUNE_RESTORE_STEP"] is None
            else:
                assert Path(seen["KUBETUNE_RESTORE_DIR"]) == root / f"{NAME}-{t.lineage.parent:04d}"
                assert seen["KUBETUNE_RESTORE_STEP"] == str(t.lineage.start)
                assert seen["KUBETUNE_END_STEP"] == str(t.lineage.end)
        last = json.loads((root / f"{NAME}-{chain[-1].number:04d}" / "state.json").read_text())
        assert last["steps"] == list(range(1, int(chain[-1].params["epochs"]) + 1))

    # one Job per trial, counted by uid from the processes the node ran; the Jobs still there carry the restore env
    launched = [x for x in node_agent.launches(ns) if x.trial.startswith(f"{NAME}-")]
    assert len(launched) == MAX_TRIALS and len({x.job_uid for x in launched}) == MAX_TRIALS
    assert sorted(x.trial for x in launched) == [f"{NAME}-{n:04d}" for n in range(MAX_TRIALS)]
    for j in ex.jobs(NAME):
        number = int(j.metadata.name.rsplit("-", 1)[1])
        env = {e.name: e.value for e in j.spec.template.spec.containers[0].env or []}
        lin = trials[number].lineage
        if lin is not None:
            assert env["KUBETUNE_RESTORE_DIR"] == f"/checkpoints/{NAME}/{NAME}-{lin.parent:04d}"
            assert env["KUBETUNE_RESTORE_STEP"] == str(lin.start)
        else:
            assert "KUBETUNE_RESTORE_DIR" not in env
