"""Record bounds on the real control plane.

* A full results shard of the largest records the bounds allow goes through the operator's own store code to the
  real API server (which refuses a ConfigMap over 1 MiB) and reads back equal.
* Hostile trials end as designed with the real operator, node agent and API server: 5,000 metrics and a
  5,000-character name end ``Succeeded`` with the truncation in the message and a ``TrialOutputTruncated`` event;
  a 400-digit integer objective and 100,000 levels of nesting end ``Failed/InvalidMetrics``; the experiment
  finishes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from operator_process import Experiments, OperatorProcess, wait_for

from kubetune.k8s.api import Api
from kubetune.k8s.store import SHARD_SIZE, TrialStore, shard_name
from kubetune.trials import MAX_METRICS, MAX_RECORD_BYTES, TrialState

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "tuningexperiments.kubetune.io.yaml"
TRIALS = Path(__file__).resolve().parent / "trials"
CONFIGMAP_DATA_LIMIT = 1024 * 1024

sys.path.insert(0, str(ROOT / "tests" / "unit"))
from test_hostile_output import largest_trial  # noqa: E402


@pytest.fixture
def op(control_plane: Any, trial_namespace: str, node_agent: Any, tmp_path: Path) -> Iterator[OperatorProcess]:
    """An operator for this test's namespace."""
    proc = OperatorProcess(control_plane.kubeconfig, tmp_path, extra_args=["-n", trial_namespace]).start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"\n[operator] last log lines:\n{proc.log_tail(30)}", file=sys.stderr)


def experiment(name: str, command: list[str], values: list[str], max_failed: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "goal": "maximize"},
            "parameters": [{"name": "mode", "type": "categorical", "values": values}],
            "algorithm": {"name": "grid"},
            "maxTrials": len(values),
            "parallelTrials": len(values),
            "maxFailedTrials": max_failed,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "serviceAccountName": "kubetune-trial",
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "trial", "image": "kubetune-trial:test", "command": command}],
            }}}},
        },
    }


def test_a_full_shard_of_the_largest_records_round_trips_through_the_api_server(
        trial_namespace: str, kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    # The owner of the shard (owner references keep the garbage collector from deleting it). No operator is
    # started here; one watching every namespace would record its one trial in shard 000, not in this one.
    owner = ex.create(experiment("bounds", ["python", str(TRIALS / "hostile.py"), "--mode", "ok"], ["ok"]))
    api = Api(client.CoreV1Api(kube_api), client.BatchV1Api(kube_api), client.CustomObjectsApi(kube_api))
    store = TrialStore(api, owner)
    first = 200 * SHARD_SIZE  # one shard, the last of a 10,000-trial experiment
    trials = []
    for n in range(first, first + SHARD_SIZE):
        t = largest_trial(n)
        t.state = [TrialState.SUCCEEDED, TrialState.FAILED, TrialState.PRUNED, TrialState.CANCELED][n % 4]
        trials.append(t)
    written = {t.number: t.to_record() for t in trials}
    sizes = [len(json.dumps(r, separators=(",", ":"))) for r in written.values()]
    assert max(sizes) <= MAX_RECORD_BYTES and min(sizes) > MAX_RECORD_BYTES * 0.9, sizes  # at the bound
    store.save(trials)

    cm = client.CoreV1Api(kube_api).read_namespaced_config_map(shard_name("bounds", first), trial_namespace)
    assert len(cm.data) == SHARD_SIZE
    size = sum(len(k.encode()) + len(v.encode()) for k, v in cm.data.items())
    assert 0.7 * CONFIGMAP_DATA_LIMIT < size <= 0.8 * CONFIGMAP_DATA_LIMIT, size
    loaded = TrialStore(api, owner).load()
    assert {n: t.to_record() for n, t in loaded.items() if n >= first} == written
    assert {n: json.loads(v)["number"] for n, v in ((int(k[1:]), v) for k, v in cm.data.items())} == {
        n: n for n in written}


def test_hostile_trials_end_as_designed_and_the_experiment_finishes(
        op: OperatorProcess, trial_namespace: str, kube_api: client.ApiClient) -> None:
    ex = Experiments(kube_api, trial_namespace)
    modes = ["many", "hugeint", "deep", "ok"]
    ex.create(experiment("hostile", ["python", str(TRIALS / "hostile.py"), "--mode", "${params.mode}"], modes))
    done = wait_for("the experiment to finish", lambda: ex.finished("hostile"), timeout=180,
                    on_timeout=lambda: f"status: {ex.get('hostile').get('status')}\n{op.log_tail(40)}")
    assert done["status"] == "True" and done["reason"] == "MaxTrialsReached", done
    by_mode = {r["params"]["mode"]: r for r in ex.records("hostile").values()}
    assert set(by_mode) == set(modes)

    many = by_mode["many"]
    assert (many["state"], many["reason"]) == ("Succeeded", "Completed")
    assert many["metrics"]["score"] == 0.5 and next(iter(many["metrics"])) == "score"
    assert len(many["metrics"]) == MAX_METRICS
    assert "kept 64 of 5001 metrics" in many["message"]
    assert "ignored 1 metrics with names longer than 128 characters" in many["message"]

    for mode, text in (("hugeint", "kubetune.io/metrics: metric 'score' is not finite"),
                       ("deep", "kubetune.io/metrics is nested deeper than 8 levels")):
        rec = by_mode[mode]
        assert (rec["state"], rec["reason"]) == ("Failed", "InvalidMetrics"), rec
        assert text in rec["message"], rec

    assert by_mode["ok"]["state"] == "Succeeded" and "message" not in by_mode["ok"]
    status = ex.get("hostile")["status"]
    assert status["trials"]["succeeded"] == 2 and status["trials"]["failed"] == 2
    assert status["bestTrial"]["metrics"]["score"] == 0.5

    events = ex.events("hostile", until={"TrialOutputTruncated", "TrialFailed"})
    truncated = [e for e in events if e.reason == "TrialOutputTruncated"]
    assert truncated and all(e.type == "Warning" for e in truncated)
    trial = f"hostile-{many['number']:04d}"
    assert any(e.message.startswith(f"{trial}: ") and "kept 64 of 5001 metrics" in e.message for e in truncated)
    assert {e.message.split(":")[0] for e in truncated} == {trial}  # the failed trials post TrialFailed instead
    assert "Traceback" not in op.log_tail(400)  # no exception escaped a reconcile
