"""Successive halving that pauses and resumes (``earlyStopping: {rule: asha}`` with spec.checkpoints) on the real
control plane: every trial's Job trains one segment and completes (``Paused`` at a rung, or ``Succeeded`` at
``maxResource``); a promotion is a new Job that restores the paused trial's checkpoint from the experiment's
PersistentVolumeClaim and trains only the next rung's steps.

The trial (``trials/resume_trial.py``) fails when the checkpoint it is told to restore is missing or holds another
step; it writes the env it was given and, in its checkpoint, every step its configuration's chain trained. Jobs are
counted by uid from the processes the node agent launched."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_process import Experiments, OperatorProcess, table_cell, wait_for

from kubetune.trials import Trial, TrialState

TRIAL = Path(__file__).resolve().parent / "trials" / "resume_trial.py"
NAME = "sha-pause"
CLAIM = "sha-checkpoints"
MAX_TRIALS = 12


def experiment() -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": NAME},
        "spec": {
            "objective": {"metric": "q", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0, "max": 1}],
            "algorithm": {"name": "random", "seed": 4},
            "earlyStopping": {"rule": "asha", "minTrials": 1, "reductionFactor": 3, "maxResource": 9},
            "checkpoints": {"persistentVolumeClaim": CLAIM},
            "maxTrials": MAX_TRIALS, "parallelTrials": 3,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "serviceAccountName": "kubetune-trial",  # reports reach the pod
                "containers": [{"name": "trial", "image": "kubetune-trial:test",
                                "command": [sys.executable, str(TRIAL)]}]}}}},
        },
    }


def test_asha_pauses_trials_at_rungs_and_promotions_resume_them(
        op: OperatorProcess, ns: str, kube_api: client.ApiClient, node_agent: Any, control_plane: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
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
    trials = [Trial.from_record(records[n]) for n in range(MAX_TRIALS)]
    # no trial pruned or failed (a missing or wrong checkpoint makes the trial exit 3)
    states = [t.state for t in trials]
    assert set(states) <= {TrialState.PAUSED, TrialState.SUCCEEDED}, {n: r.get("message") for n, r in records.items()}
    assert TrialState.SUCCEEDED in states and TrialState.PAUSED in states
    status = ex.get(NAME)["status"]
    assert status["trials"]["paused"] == states.count(TrialState.PAUSED)
    assert status["trials"]["succeeded"] == states.count(TrialState.SUCCEEDED)
    # kubectl get -o wide and kubetune get -o wide show the paused count
    from kubetune.cli import main

    paused = str(states.count(TrialState.PAUSED))
    kubectl = control_plane.kubectl("get", "tex", NAME, "-n", ns, "-o", "wide").stdout
    assert table_cell(kubectl, "PAUSED") == paused
    capsys.readouterr()
    assert main(["get", NAME, "-n", ns, "-o", "wide", "--kubeconfig", str(control_plane.kubeconfig)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert dict(zip(header.split(), row.split()))["PAUSED"] == paused
    best = status["bestTrial"]["number"]
    assert trials[best].state is TrialState.SUCCEEDED and trials[best].lineage.end == 9  # type: ignore[union-attr]

    root = node_agent.claim_dir(ns, CLAIM) / NAME
    chains: dict[int, list[Trial]] = defaultdict(list)
    for t in trials:
        assert t.lineage is not None, records[t.number]
        chains[t.lineage.member].append(t)
    assert any(len(c) >= 2 for c in chains.values()), "no promotion happened"
    for member, chain in chains.items():
        chain.sort(key=lambda t: t.lineage.start)  # type: ignore[union-attr]
        assert chain[0].number == member and chain[0].lineage.parent is None  # type: ignore[union-attr]
        for prev, t in zip(chain, chain[1:]):  # each promotion restores the paused trial of the rung below
            assert prev.state is TrialState.PAUSED and t.params == prev.params
            assert t.lineage.parent == prev.number and t.lineage.start == prev.lineage.end  # type: ignore
        for t in chain:
            assert [s for s, _ in t.curve] == list(range(t.lineage.start + 1, t.lineage.end + 1)), records[t.number]
            seen = json.loads((root / f"{NAME}-{t.number:04d}" / "seen.json").read_text())
            assert seen["KUBETUNE_END_STEP"] == str(t.lineage.end)  # type: ignore[union-attr]
            if t.lineage.parent is None:  # type: ignore[union-attr]
                assert seen["KUBETUNE_RESTORE_DIR"] is None and seen["KUBETUNE_RESTORE_STEP"] is None
            else:
                assert Path(seen["KUBETUNE_RESTORE_DIR"]) == root / f"{NAME}-{t.lineage.parent:04d}"  # type: ignore
                assert seen["KUBETUNE_RESTORE_STEP"] == str(t.lineage.start)  # type: ignore[union-attr]
        # the chain trained every step once: the last checkpoint holds steps 1..end
        last = json.loads((root / f"{NAME}-{chain[-1].number:04d}" / "state.json").read_text())
        assert last["steps"] == list(range(1, chain[-1].lineage.end + 1))  # type: ignore[union-attr]

    # one Job per trial, counted by uid from the processes the node ran; no pod of a paused trial is left running
    launched = [x for x in node_agent.launches(ns) if x.trial.startswith(f"{NAME}-")]
    assert len(launched) == MAX_TRIALS and len({x.job_uid for x in launched}) == MAX_TRIALS
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(ns, label_selector=f"kubetune.io/experiment={NAME}").items
    assert pods and all(p.status.phase == "Succeeded" for p in pods), [(p.metadata.name, p.status.phase) for p in pods]
