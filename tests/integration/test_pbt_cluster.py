"""Population-based training on the real control plane, with the operator SIGKILLed and restarted mid-run.

Every segment is a trial Job that mounts the experiment's PersistentVolumeClaim (the node agent gives all pods that
mount one claim the same host directory) and restores the checkpoint its lineage names; the trial
(``kubetune_trial.examples.pbt_toy``) fails if that checkpoint is missing or holds another step. Jobs are counted
by uid, processes by the node agent's launches, checkpoints by the files on the shared directory (the operator deletes no checkpoint on a cluster)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from operator_process import Experiments, OperatorProcess, wait_for

from kubetune.plan import latest_segments
from kubetune.trials import Trial

ROOT = Path(__file__).resolve().parents[2]
NAME = "pbt-toy"
CLAIM = "pbt-checkpoints"
MAX_TRIALS = 16
POPULATION = 4
INTERVAL = 4


def experiment() -> dict[str, Any]:
    """examples/pbt-toy.yaml as shipped, its budget cut to 16 segments and each step slowed to 0.3 s (so the
    operator is killed while segments run)."""
    doc = yaml.safe_load((ROOT / "examples" / "pbt-toy.yaml").read_text())
    spec = doc["spec"]
    assert spec["algorithm"]["settings"]["populationSize"] == POPULATION
    assert spec["checkpoints"] == {"persistentVolumeClaim": CLAIM, "mountPath": "/checkpoints"}
    spec["maxTrials"] = MAX_TRIALS
    container = spec["trialTemplate"]["spec"]["template"]["spec"]["containers"][0]
    container["command"] += ["--sleep", "0.3"]
    return doc


def test_pbt_survives_an_operator_restart_without_losing_a_member_or_a_checkpoint(
        op: OperatorProcess, ns: str, kube_api: client.ApiClient, node_agent: Any) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_persistent_volume_claim(ns, {
        "metadata": {"name": CLAIM},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    ex = Experiments(kube_api, ns)
    ex.create(experiment())

    def debug() -> str:
        return f"status: {ex.get(NAME).get('status')}\nrecords: {sorted(ex.records(NAME))}\n{op.log_tail(40)}"

    # SIGKILL the operator once some segments finished and others run, then start it again
    wait_for("six finished segments", lambda: sum(r["state"] != "Running" and r["state"] != "Pending"
                                                  for r in ex.records(NAME).values()) >= 6,
             timeout=180, on_timeout=debug)
    before = ex.records(NAME)
    op.kill()
    time.sleep(1.0)
    op.start()
    done = wait_for("the experiment to finish", lambda: ex.finished(NAME), timeout=300, on_timeout=debug)
    assert (done["status"], done["reason"]) == ("True", "MaxTrialsReached"), done
    assert op.kills == 1 and op.starts == 2

    records = ex.records(NAME)
    assert sorted(records) == list(range(MAX_TRIALS))
    # no member lost: every segment succeeded (a missing or wrong checkpoint makes the trial exit 3), every member
    # has segments on both sides of the restart, and what was recorded before it is unchanged or only finished
    assert all(r["state"] == "Succeeded" for r in records.values()), {n: r.get("message") for n, r in records.items()}
    for n, r in before.items():
        assert records[n]["params"] == r["params"] and records[n]["lineage"] == r["lineage"]
    trials = [Trial.from_record(records[n]) for n in range(MAX_TRIALS)]
    members = {t.lineage.member for t in trials if t.lineage is not None}
    assert members == set(range(POPULATION))
    after = [t for t in trials if t.number not in before]
    assert {t.lineage.member for t in after if t.lineage} == members
    # lineage: each segment starts where the trial it restores ended, and trains one interval
    for t in trials:
        lin = t.lineage
        assert lin is not None and lin.end - lin.start == INTERVAL
        if lin.parent is None:
            assert lin.start == 0 and t.number < POPULATION
        else:
            parent = trials[lin.parent]
            assert parent.lineage is not None and lin.start == parent.lineage.end and lin.parent < t.number
        assert [s for s, _ in t.curve] == list(range(lin.start + 1, lin.end + 1))
        assert t.checkpoint == f"/checkpoints/{NAME}/{NAME}-{t.number:04d}"
    assert any(t.lineage and t.lineage.parent is not None and trials[t.lineage.parent].lineage.member
               != t.lineage.member for t in trials), "no member exploited another"

    # no checkpoint lost: every trial's directory on the claim holds the step its segment ended at
    root = node_agent.claim_dir(ns, CLAIM) / NAME
    for t in trials:
        saved = json.loads((root / f"{NAME}-{t.number:04d}" / "theta.json").read_text())
        assert saved["step"] == t.lineage.end
    latest = latest_segments(trials)
    assert len(latest) == POPULATION

    # one Job per trial, counted by uid from the processes the node ran (finished Jobs may be cleaned up): one
    # process per Job, one Job per trial name; the Jobs still there mount the claim
    launched = [x for x in node_agent.launches(ns) if x.trial.startswith(f"{NAME}-")]
    assert len(launched) == MAX_TRIALS and len({x.job_uid for x in launched}) == MAX_TRIALS
    assert sorted(x.trial for x in launched) == [f"{NAME}-{n:04d}" for n in range(MAX_TRIALS)]
    jobs = ex.jobs(NAME)
    assert {j.metadata.uid for j in jobs} <= {x.job_uid for x in launched}
    for j in jobs:
        pod = j.spec.template.spec
        assert [v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim] == [CLAIM]
        assert [m.mount_path for m in pod.containers[0].volume_mounts] == ["/checkpoints"]

    status = ex.get(NAME)["status"]
    best = max(range(MAX_TRIALS), key=lambda n: records[n]["metrics"]["q"])
    assert status["bestTrial"]["number"] == best


def test_digits_sgd_example_restores_models_across_jobs(op: OperatorProcess, ns: str, kube_api: client.ApiClient,
                                                        node_agent: Any) -> None:
    """examples/digits-sgd-pbt.yaml as shipped, its budget cut to two generations (8 segments): the second
    generation's Jobs unpickle the models the first wrote on the claim and train them on."""
    doc = yaml.safe_load((ROOT / "examples" / "digits-sgd-pbt.yaml").read_text())
    name, claim = doc["metadata"]["name"], doc["spec"]["checkpoints"]["persistentVolumeClaim"]
    population = doc["spec"]["algorithm"]["settings"]["populationSize"]
    doc["spec"]["maxTrials"] = 2 * population
    ex = Experiments(kube_api, ns)
    ex.create(doc)
    done = wait_for("the experiment to finish", lambda: ex.finished(name), timeout=300,
                    on_timeout=lambda: f"{ex.get(name).get('status')}\n{op.log_tail(40)}")
    assert (done["status"], done["reason"]) == ("True", "MaxTrialsReached"), done
    trials = [Trial.from_record(r) for _, r in sorted(ex.records(name).items())]
    assert len(trials) == 2 * population and all(t.state.value == "Succeeded" for t in trials)
    interval = doc["spec"]["algorithm"]["settings"]["perturbationInterval"]
    for t in trials[population:]:
        assert t.lineage is not None and t.lineage.parent is not None and t.lineage.start == interval
        assert [s for s, _ in t.curve] == list(range(interval + 1, 2 * interval + 1))
        assert t.metrics["accuracy"] > 0.8
    root = node_agent.claim_dir(ns, claim) / name
    assert sorted(p.name for p in root.iterdir()) == [f"{name}-{n:04d}" for n in range(2 * population)]
