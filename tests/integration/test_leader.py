"""Two operator replicas with leader election on the real control plane: only the Lease holder creates Jobs, a
SIGKILLed leader is replaced within 15 s and the experiment ends with exactly maxTrials trials, a leader that shuts
down cleanly releases the Lease and the standby takes over at once.

Who created each Job is read from the Job itself: with leader election the operator's requests carry the user
agent ``kubetune@<host>_<pid>/...``, which the API server records as the field manager in ``managedFields``.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_process import Experiments, OperatorProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "tuningexperiments.kubetune.io.yaml"
OBJECTIVE = Path(__file__).resolve().parent / "trials" / "objective.py"
LEASE = "kubetune-operator"
MAX_TRIALS = 10
HANDOVER_LIMIT = 15.0



def _experiment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "algorithm": {"name": "random", "seed": 5},
            "maxTrials": MAX_TRIALS, "parallelTrials": 2,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "serviceAccountName": "kubetune-trial", "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "trial", "image": "kubetune-trial:test",
                                "command": ["python", str(OBJECTIVE), "--x", "${params.x}"],
                                "env": [{"name": "TRIAL_SECONDS", "value": "1.0"}]}]}}}},
        },
    }


def _identity(op: OperatorProcess) -> str:
    assert op.proc is not None
    return f"{socket.gethostname()}_{op.proc.pid}"


def _holder(api: client.ApiClient, namespace: str) -> str:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, namespace)
    except ApiException as e:
        if e.status == 404:
            return ""
        raise
    return lease.spec.holder_identity or ""


def _creator(job: Any) -> str:
    """The operator replica that created the Job (its kubetune@ field manager); '' if none."""
    managers = {m.manager for m in job.metadata.managed_fields or [] if m.manager.startswith("kubetune@")}
    assert len(managers) <= 1, f"{job.metadata.name} written by several replicas: {managers}"
    return managers.pop().removeprefix("kubetune@") if managers else ""


def _log(op: OperatorProcess) -> str:
    return op.log_path.read_text(errors="replace")


def test_two_replicas_one_leader_handover_after_sigkill_and_on_clean_shutdown(
        control_plane: Any, crd: None, node_agent: Any, kube_api: client.ApiClient, trial_namespace: str,
        tmp_path: Path) -> None:
    namespace = trial_namespace
    args = ["--leader-election", "--lease-namespace", namespace, "--lease-name", LEASE]
    a = OperatorProcess(control_plane.kubeconfig, tmp_path / "a", args)
    b = OperatorProcess(control_plane.kubeconfig, tmp_path / "b", args)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ex = Experiments(kube_api, namespace)

    def debug() -> str:
        try:
            status = ex.get("ha").get("status")
        except ApiException as e:
            status = f"<{e.status}>"
        return (f"lease holder: {_holder(kube_api, namespace)!r}\nstatus: {status}\n"
                f"--- a:\n{a.log_tail(30)}\n--- b:\n{b.log_tail(30)}")

    try:
        a.start()
        id_a = _identity(a)
        wait_for("replica a to take the lease", lambda: _holder(kube_api, namespace) == id_a, timeout=60,
                 on_timeout=debug)
        b.start()
        id_b = _identity(b)
        wait_for("replica b to stand by", lambda: "leader election on lease" in _log(b), timeout=60,
                 on_timeout=debug)

        ex.create(_experiment("ha"))
        wait_for("three trial Jobs", lambda: len(ex.jobs("ha")) >= 3, timeout=120, on_timeout=debug)
        assert _holder(kube_api, namespace) == id_a
        before = {j.metadata.name: _creator(j) for j in ex.jobs("ha")}
        assert set(before.values()) == {id_a}, f"Jobs created while a leads: {before}"
        assert not ex.finished("ha"), "the experiment must still be running when the leader dies"

        killed_at = time.monotonic()
        a.kill(signal.SIGKILL)
        lease_taken = first_job = 0.0
        deadline = killed_at + 60
        while time.monotonic() < deadline and not first_job:
            now = time.monotonic()
            if not lease_taken and _holder(kube_api, namespace) == id_b:
                lease_taken = now
            if any(_creator(j) == id_b for j in ex.jobs("ha")):
                first_job = now
            time.sleep(0.1)
        assert first_job, "replica b never created a Job\n" + debug()
        lease_seconds = (lease_taken or first_job) - killed_at
        handover = first_job - killed_at
        print(f"\n[leader] SIGKILL -> lease taken by the standby: {lease_seconds:.1f} s; "
              f"-> its first Job: {handover:.1f} s", file=sys.stderr)
        assert handover < HANDOVER_LIMIT, f"handover took {handover:.1f} s\n" + debug()

        done = wait_for("the experiment to finish", lambda: ex.finished("ha"), timeout=240, on_timeout=debug)
        assert done["status"] == "True" and done["reason"] == "MaxTrialsReached", done
        records = ex.records("ha")
        assert sorted(records) == list(range(MAX_TRIALS))
        assert all(r["state"] == "Succeeded" for r in records.values()), records
        assert ex.get("ha")["status"]["trials"]["created"] == MAX_TRIALS
        jobs = ex.jobs("ha")
        assert sorted(j.metadata.name for j in jobs) == [f"ha-{n:04d}" for n in range(MAX_TRIALS)]
        creators = {j.metadata.name: _creator(j) for j in jobs}
        assert set(creators.values()) == {id_a, id_b}, creators
        for name, creator in creators.items():  # a made the ones before the kill (and perhaps one in flight)
            if name in before:
                assert creator == id_a
        assert _log(a).count("leading as") == 1 and _log(b).count("leading as") == 1
        assert "stopped leading" not in _log(b)

        # A clean shutdown releases the Lease: a fresh replica takes over at its next try.
        a.start()
        id_a2 = _identity(a)
        wait_for("the new replica to stand by", lambda: "leader election on lease" in _log(a), timeout=60,
                 on_timeout=debug)
        assert _holder(kube_api, namespace) == id_b
        stopped_at = time.monotonic()
        b.stop()  # SIGTERM
        wait_for("the new replica to take the released lease", lambda: _holder(kube_api, namespace) == id_a2,
                 timeout=30, interval=0.1, on_timeout=debug)
        released = time.monotonic() - stopped_at
        print(f"[leader] SIGTERM -> lease taken by the standby: {released:.1f} s", file=sys.stderr)
        assert released < 8.0, "a released lease is taken at the next retry, not after the lease duration"
        assert "released the lease" in _log(b)
    finally:
        a.stop()
        b.stop()
