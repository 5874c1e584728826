"""Chaos on the real control plane: the operator SIGKILLed over and over, kube-apiserver and etcd restarted, trial
Jobs and pods deleted while the operator is down, an experiment deleted and re-created under the same name.

Each scenario counts what really happened instead of trusting names: the Jobs the API server saw created (a
watch records every Job by uid, with its owner's uid) and the processes the node agent launched (by pod and Job
uid). Each ends with exactly the expected trials, each run once, every trial recorded, and the experiment in its
final condition. One summary line per scenario goes to stdout (run with ``-s`` to see it).
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from node_agent import NodeAgent, is_transient
from operator_process import Experiments, OperatorProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "tuningexperiments.kubetune.io.yaml"
TRIAL = Path(__file__).resolve().parent / "trials" / "chaos_trial.py"
SEED = 20261201


# -- what the API server saw: every Job by uid ---------------------------------------------------------------------


@dataclass(frozen=True)
class JobSeen:
    uid: str
    name: str
    owner_uid: str
    number: int
    params: str


class JobLedger:
    """Records every Job created in a namespace (list + watch, resumed after disconnects), keyed by uid."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.batch = client.BatchV1Api(self.api)
        self.namespace = namespace
        self.jobs: dict[str, JobSeen] = {}
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._run, name="job-ledger", daemon=True)

    def __enter__(self) -> JobLedger:
        self._thread.start()
        wait_for("the Job ledger's first list", lambda: self._listed, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout=40)
        self.api.close()

    _listed = False

    def _add(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        owner = next((o["uid"] for o in meta.get("ownerReferences") or [] if o.get("controller")), "")
        labels = meta.get("labels") or {}
        seen = JobSeen(uid=meta["uid"], name=meta["name"], owner_uid=owner,
                       number=int(labels.get("kubetune.io/trial-number", -1)),
                       params=(meta.get("annotations") or {}).get("kubetune.io/parameters", ""))
        with self._lock:
            self.jobs.setdefault(seen.uid, seen)

    def _run(self) -> None:
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    listing = json.loads(self.batch.list_namespaced_job(
                        self.namespace, _preload_content=False, _request_timeout=(5, 30)).data)
                    for job in listing["items"]:
                        self._add(job)
                    rv = listing["metadata"]["resourceVersion"]
                    self._listed = True
                self._watch = watch.Watch()
                for event in self._watch.stream(self.batch.list_namespaced_job, self.namespace,
                                                resource_version=rv, timeout_seconds=20,
                                                allow_watch_bookmarks=True, _request_timeout=(5, 50)):
                    obj = event["raw_object"]
                    if event["type"] == "ERROR":
                        if obj.get("code") == 410:
                            rv = None  # history compacted: list again
                            break
                        raise ApiException(status=obj.get("code"), reason=str(obj))
                    rv = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._add(obj)
            except Exception as exc:
                if isinstance(exc, ApiException) and exc.status == 410:
                    rv = None
                elif not is_transient(exc) and not self._stop.is_set():
                    self.problems.append(repr(exc))
                self._stop.wait(0.2)

    def owned_by(self, owner_uid: str) -> list[JobSeen]:
        with self._lock:
            return [j for j in self.jobs.values() if j.owner_uid == owner_uid]

    def count(self, owner_uid: str) -> int:
        return len(self.owned_by(owner_uid))


# -- fixtures -------------------------------------------------------------------------------------------------------




@pytest.fixture
def op(control_plane: Any, trial_namespace: str, node_agent: NodeAgent, tmp_path: Path) -> Iterator[OperatorProcess]:
    """An operator for this test's namespace only, so no other test's experiments are touched by its faults."""
    proc = OperatorProcess(control_plane.kubeconfig, tmp_path, extra_args=["-n", trial_namespace]).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def ledger(control_plane: Any, trial_namespace: str) -> Iterator[JobLedger]:
    with JobLedger(control_plane.kubeconfig, trial_namespace) as led:
        yield led
    assert not led.problems, led.problems


@pytest.fixture
def ex(kube_api: client.ApiClient, trial_namespace: str) -> Experiments:
    return Experiments(kube_api, trial_namespace)


# -- helpers --------------------------------------------------------------------------------------------------------


def body(name: str, max_trials: int, parallel: int, *, seed: int = 1, hold: Path | None = None,
         max_failed: int = 0) -> dict[str, Any]:
    env = [{"name": "HOLD_FILE", "value": str(hold)}] if hold else []
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "score", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "algorithm": {"name": "random", "seed": seed},
            "maxTrials": max_trials,
            "parallelTrials": parallel,
            "maxFailedTrials": max_failed,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "serviceAccountName": "kubetune-trial",
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "trial", "image": "kubetune-trial:test",
                                "command": ["python", str(TRIAL), "--x", "${params.x}"], "env": env}],
            }}}},
        },
    }


def tolerant(check: Callable[[], Any]) -> Callable[[], Any]:
    """*check*, reading a transient API failure (a restarting API server or etcd) as 'not yet'."""
    def run() -> Any:
        try:
            return check()
        except Exception as exc:
            if is_transient(exc):
                return None
            raise
    return run


def records(ex: Experiments, name: str, owner_uid: str) -> dict[int, dict[str, Any]]:
    """The trial records of the experiment with *owner_uid* (not of an earlier one of the same name)."""
    out: dict[int, dict[str, Any]] = {}
    for cm in ex.core.list_namespaced_config_map(
            ex.namespace, label_selector=f"kubetune.io/experiment={name},kubetune.io/results=true").items:
        if owner_uid not in {o.uid for o in cm.metadata.owner_references or []}:
            continue
        for value in (cm.data or {}).values():
            rec = json.loads(value)
            assert rec["number"] not in out, f"trial {rec['number']} recorded twice"
            out[rec["number"]] = rec
    return out


def debug(ex: Experiments, op: OperatorProcess, name: str) -> str:
    try:
        status = ex.get(name).get("status")
    except Exception as e:
        status = repr(e)
    return f"status: {status}\noperator log ({op.log_path}):\n{op.log_tail(60)}"


def finish(ex: Experiments, op: OperatorProcess, name: str, timeout: float) -> dict[str, Any]:
    return wait_for(f"{name} to finish", tolerant(lambda: ex.finished(name)), timeout=timeout,
                    on_timeout=lambda: debug(ex, op, name))


@dataclass
class Outcome:
    records: dict[int, dict[str, Any]]
    jobs: dict[int, list[JobSeen]]
    launches: dict[int, int]

    @property
    def launch_counts(self) -> Counter[int]:
        return Counter(self.launches.values())


def account(ex: Experiments, ledger: JobLedger, agent: NodeAgent, name: str, uid: str, max_trials: int,
            *, control_plane_restarted: bool = False) -> Outcome:
    """Check the invariants every scenario ends with, from what really happened; returns the counts.

    With ``control_plane_restarted``, a Job may have run two pods: when kube-apiserver goes away in the middle of
    the Job controller's pod create, the controller cannot know the create went through and makes another pod
    (Kubernetes' own behaviour, outside the operator). Then every launch must still be a distinct pod of that one
    Job, each pod started once, and the trial recorded once."""
    recs = records(ex, name, uid)
    assert sorted(recs) == list(range(max_trials)), f"records: {sorted(recs)}"
    jobs: dict[int, list[JobSeen]] = {}
    for job in ledger.owned_by(uid):
        jobs.setdefault(job.number, []).append(job)
    duplicates = {n: [j.uid for j in js] for n, js in jobs.items() if len(js) > 1}
    assert not duplicates, f"trials whose Job was created more than once: {duplicates}"
    assert sorted(jobs) == list(range(max_trials)), f"Jobs created for trials {sorted(jobs)}"
    for n, (job,) in jobs.items():
        assert job.name == f"{name}-{n:04d}"
        assert json.loads(job.params) == recs[n]["params"], f"trial {n}: record and Job disagree"
    job_number = {j.uid: n for n, (j,) in jobs.items()}
    launched = [x for x in agent.launches(ex.namespace) if x.job_uid in job_number]
    launches = Counter(job_number[x.job_uid] for x in launched)
    for x in launched:
        assert x.trial == f"{name}-{job_number[x.job_uid]:04d}", x
    over = {n: c for n, c in launches.items() if c > 1}
    if control_plane_restarted:
        pods_per_job: dict[int, list[str]] = {}
        for x in launched:
            pods_per_job.setdefault(job_number[x.job_uid], []).append(x.pod_uid)
        same_pod = {n: uids for n, uids in pods_per_job.items() if len(uids) != len(set(uids))}
        assert not same_pod, f"a pod's process was started more than once: {same_pod}"
        over = {n: c for n, c in over.items() if c > 2}
    assert not over, f"trials launched more than once: {over}"
    status = ex.get(name)["status"]
    assert status["trials"]["created"] == max_trials, status["trials"]
    return Outcome(recs, jobs, {n: launches.get(n, 0) for n in range(max_trials)})


def summary(capsys: pytest.CaptureFixture[str], scenario: str, started: float, outcome: Outcome,
            agent: NodeAgent, extra: str) -> None:
    """One line of measured numbers on stdout, past pytest's capture so the CI log shows it."""
    states = Counter(f"{r['state']}" + (f"/{r['reason']}" if r["state"] != "Succeeded" else "")
                     for r in outcome.records.values())
    per_trial = ", ".join(f"{c} trials x{k}" for k, c in sorted(outcome.launch_counts.items()))
    with capsys.disabled():
        print(f"\n[chaos] {scenario}: {extra}; trials recorded {len(outcome.records)}, Jobs created "
              f"{sum(len(js) for js in outcome.jobs.values())} (one per trial); launches per trial: {per_trial}; "
              f"states {dict(states)}; node-agent retried calls {sum(agent.faults.values())}; "
              f"wall {time.monotonic() - started:.0f} s", flush=True)


# -- scenarios ------------------------------------------------------------------------------------------------------

KILLS = 22
KILL_TRIALS, KILL_PARALLEL = 320, 10


def test_operator_sigkilled_at_random_moments(op: OperatorProcess, ex: Experiments, ledger: JobLedger,
                                              node_agent: NodeAgent, capsys: pytest.CaptureFixture[str]) -> None:
    """SIGKILL the operator at >= 20 seeded random moments of a 320-trial, 10-parallel experiment, restarting it
    each time: all 320 trials recorded, each Job created once, each trial launched exactly once."""
    rng = random.Random(SEED)
    started = time.monotonic()
    name = "killed"
    uid = ex.create(body(name, KILL_TRIALS, KILL_PARALLEL))["metadata"]["uid"]
    while op.kills < KILLS:
        # a random moment: after 1..6 more Jobs were created since the last kill, plus up to 0.3 s (a reconcile
        # takes tens of milliseconds: a longer wait lets so many Jobs through that the budget ends the kills early)
        target = min(ledger.count(uid) + rng.randint(1, 6), KILL_TRIALS)
        wait_for(f"{target} Jobs created", lambda t=target: ledger.count(uid) >= t, timeout=120, interval=0.02,
                 on_timeout=lambda: debug(ex, op, name))
        time.sleep(rng.uniform(0.0, 0.3))
        if ledger.count(uid) >= KILL_TRIALS:
            break  # the budget is spent: later kills would not be "mid-experiment"
        op.kill(signal.SIGKILL)
        last_kill_at = ledger.count(uid)
        time.sleep(rng.uniform(0.0, 0.5))
        op.start()
    assert op.kills >= 20, f"only {op.kills} kills happened before the budget was spent"
    done = finish(ex, op, name, timeout=300)
    assert done["status"] == "True" and done["reason"] == "MaxTrialsReached", done
    outcome = account(ex, ledger, node_agent, name, uid, KILL_TRIALS)
    assert all(r["state"] == "Succeeded" for r in outcome.records.values()), \
        {n: r for n, r in outcome.records.items() if r["state"] != "Succeeded"}
    assert set(outcome.launches.values()) == {1}, outcome.launch_counts
    summary(capsys, "operator SIGKILL", started, outcome, node_agent,
            f"kills survived {op.kills} (operator started {op.starts} times, the last kill after "
            f"{last_kill_at} of {KILL_TRIALS} Jobs were created)")


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_component_restarted_mid_experiment(component: str, control_plane: Any,
                                                          op: OperatorProcess, ex: Experiments, ledger: JobLedger,
                                                          node_agent: NodeAgent,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Stop kube-apiserver (or etcd), keep it down 3 s, start it again on the same port, certificates and data:
    the experiment still ends with every trial recorded, each Job created once, each pod started once (a trial
    runs twice only if the Job controller itself made a second pod, see :func:`account`)."""
    started = time.monotonic()
    name, max_trials = f"restart-{component}", 40
    uid = ex.create(body(name, max_trials, 8))["metadata"]["uid"]
    wait_for("a dozen Jobs", lambda: ledger.count(uid) >= 12, timeout=120, interval=0.02,
             on_timeout=lambda: debug(ex, op, name))
    before = len(records(ex, name, uid))
    faults_before = sum(node_agent.faults.values())
    down = control_plane.restart(component, down_seconds=3.0)
    done = finish(ex, op, name, timeout=240)
    assert done["status"] == "True" and done["reason"] == "MaxTrialsReached", done
    assert op.running and op.starts == 1, "the operator itself rode out the restart"
    outcome = account(ex, ledger, node_agent, name, uid, max_trials, control_plane_restarted=True)
    assert all(r["state"] == "Succeeded" for r in outcome.records.values()), outcome.records
    # every trial ran; a second run is a second pod the Job controller made, checked by account()
    assert min(outcome.launches.values()) >= 1, outcome.launch_counts
    summary(capsys, f"{component} restart", started, outcome, node_agent,
            f"{component} down {down:.1f} s after {before} of {max_trials} trials were recorded; node-agent "
            f"calls retried during it {sum(node_agent.faults.values()) - faults_before}")


def test_jobs_and_pods_deleted_while_the_operator_is_down(op: OperatorProcess, ex: Experiments, ledger: JobLedger,
                                                          node_agent: NodeAgent, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Trials 0-1 lose their Job and trials 2-3 their pod while the operator is down: they end Failed/JobDeleted
    and Failed/PodDeleted, nothing runs twice, and the budget still ends with maxTrials created."""
    started = time.monotonic()
    hold = tmp_path / "hold"
    hold.touch()
    name, max_trials = "deleted", 8
    uid = ex.create(body(name, max_trials, 4, hold=hold, max_failed=4))["metadata"]["uid"]

    def reported_pods() -> dict[int, Any]:
        out = {}
        for pod in ex.pods(name):
            if pod.status.phase == "Running" and "kubetune.io/metrics" in (pod.metadata.annotations or {}):
                out[int(pod.metadata.labels["kubetune.io/trial-number"])] = pod
        return out

    pods = wait_for("four trials running and reporting", lambda: len(p := reported_pods()) == 4 and p,
                    timeout=120, on_timeout=lambda: debug(ex, op, name))
    assert sorted(pods) == [0, 1, 2, 3]
    op.kill(signal.SIGKILL)
    for n in (0, 1):
        ex.batch.delete_namespaced_job(f"{name}-{n:04d}", ex.namespace, propagation_policy="Background")
    for n in (2, 3):
        ex.core.delete_namespaced_pod(pods[n].metadata.name, ex.namespace)

    def settled() -> bool:
        left = {p.metadata.name for p in ex.pods(name)}
        jobs = {j.metadata.name: j for j in ex.jobs(name)}
        return (not left & {pods[n].metadata.name for n in range(4)}
                and not {f"{name}-0000", f"{name}-0001"} & set(jobs)
                and all(any(c.status == "True" and c.type in ("Complete", "Failed")
                            for c in jobs[f"{name}-{n:04d}"].status.conditions or []) for n in (2, 3)))
    wait_for("the deletions to finish while the operator is down", settled, timeout=90)
    assert ledger.count(uid) == 4, "nothing created Jobs while the operator was down"
    hold.unlink()  # the trials still to come run without waiting
    op.start()
    done = finish(ex, op, name, timeout=180)
    assert done["status"] == "True" and done["reason"] == "MaxTrialsReached", done
    outcome = account(ex, ledger, node_agent, name, uid, max_trials)
    got = {n: (r["state"], r.get("reason")) for n, r in outcome.records.items()}
    assert got == {0: ("Failed", "JobDeleted"), 1: ("Failed", "JobDeleted"),
                   2: ("Failed", "PodDeleted"), 3: ("Failed", "PodDeleted"),
                   **{n: ("Succeeded", "Completed") for n in range(4, max_trials)}}, got
    assert set(outcome.launches.values()) == {1}, outcome.launches  # the victims had started, and only once
    summary(capsys, "Jobs/pods deleted while the operator is down", started, outcome, node_agent,
            "2 Jobs and 2 pods deleted")


def test_same_name_recreated_while_old_jobs_are_collected(op: OperatorProcess, ex: Experiments, ledger: JobLedger,
                                                          node_agent: NodeAgent, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Delete an experiment and re-create one with the same name while the old trial Jobs still exist (a test
    finalizer holds them, as a slow garbage collector would): the new experiment adopts none of them, records
    only its own trials (by owner uid) and completes with exactly those."""
    started = time.monotonic()
    hold = tmp_path / "hold-old"
    hold.touch()
    name, max_trials, parallel = "reborn", 6, 3
    old_uid = ex.create(body(name, max_trials, parallel, seed=1, hold=hold))["metadata"]["uid"]
    wait_for("the old experiment's trials running", lambda: sum(
        1 for p in ex.pods(name) if p.status.phase == "Running") == parallel, timeout=120,
        on_timeout=lambda: debug(ex, op, name))
    old_jobs = ledger.owned_by(old_uid)
    assert len(old_jobs) == parallel
    finalizer = {"metadata": {"finalizers": ["kubetune.test/hold"]}}
    for job in old_jobs:
        ex.batch.patch_namespaced_job(job.name, ex.namespace, finalizer)
    ex.delete(name)
    wait_for("the old experiment to go", lambda: not any(
        o["metadata"]["name"] == name for o in ex.custom.list_namespaced_custom_object(
            "kubetune.io", "v1alpha1", ex.namespace, "tuningexperiments")["items"]), timeout=60)
    new_uid = ex.create(body(name, max_trials, parallel, seed=2))["metadata"]["uid"]
    wait_for("the garbage collector to start on the old Jobs", lambda: all(
        j.metadata.deletion_timestamp for j in ex.jobs(name) if j.metadata.uid in {o.uid for o in old_jobs}),
        timeout=60)
    time.sleep(3.0)  # the new experiment's operator passes run while the old Jobs block its trial names
    held = [j.metadata.name for j in ex.jobs(name) if j.metadata.uid in {o.uid for o in old_jobs}]
    assert len(held) == parallel, "the old Jobs were still there while the new experiment started"
    for job in old_jobs:
        ex.batch.patch_namespaced_job(job.name, ex.namespace, {"metadata": {"finalizers": None}})
    done = finish(ex, op, name, timeout=180)
    assert done["status"] == "True" and done["reason"] == "MaxTrialsReached", done
    outcome = account(ex, ledger, node_agent, name, new_uid, max_trials)
    assert all(r["state"] == "Succeeded" for r in outcome.records.values()), outcome.records
    assert set(outcome.launches.values()) == {1}, outcome.launches
    assert not {j.uid for js in outcome.jobs.values() for j in js} & {j.uid for j in old_jobs}
    old_xs = {json.loads(j.params)["x"] for j in old_jobs}
    assert not {r["params"]["x"] for r in outcome.records.values()} & old_xs, "an old trial was recorded as new"
    old_launches = [x for x in node_agent.launches(ex.namespace) if x.job_uid in {j.uid for j in old_jobs}]
    assert len(old_launches) == parallel, "each old Job ran its one pod, and nothing re-ran it"
    hold.unlink()
    summary(capsys, "same-name re-create", started, outcome, node_agent,
            f"{len(held)} old Jobs held while the new experiment ran; none adopted")

