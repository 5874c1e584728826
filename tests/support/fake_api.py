"""An in-memory API server for unit tests of the reconciler, with fault injection.

It stands in for the generated ``CoreV1Api``, ``BatchV1Api`` and ``CustomObjectsApi`` under the operator's real
:class:`kubetune.k8s.api.Api` (so its retries, timeouts and 409/404 handling are what is tested), holds one
namespace's trial Jobs, their Pods, ConfigMaps and one experiment, and simulates each trial: a Job gets a pod that
runs, reports a learning curve into its ``kubetune.io/metrics`` annotation, and ends with its final metrics (or
fails) after a few ticks. Changes become watch events, delivered to the reconciler through ``experiment_changed``,
``job_changed`` and ``pod_changed`` with the same summaries the kopf handlers make; the three streams can lag and
are not ordered with each other.

Faults: every call draws from a :class:`Faults` schedule and may fail with 500, 503, 429 (+ Retry-After), 409, a
connection reset or a read timeout, before the server applied it or after (the response was lost). What the
server really applied is counted in :class:`Ledger` (Jobs created per name, record versions, events).

This is no proof that the operator works on Kubernetes: ``tests/integration`` runs it on a real control plane.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import threading
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from kubetune.k8s.observe import summarize_job, summarize_pod
from kubetune.spec import GROUP, PLURAL, VERSION

OPS = ("create_job", "read_job", "delete_job", "patch_status", "list_configmaps", "patch_configmap",
       "create_configmap", "create_event", "list_pods")
WRITES = frozenset({"create_job", "delete_job", "patch_status", "patch_configmap", "create_configmap",
                    "create_event"})
KINDS = ("500", "503", "429", "409", "reset", "timeout")
AFTER_KINDS = frozenset({"500", "503", "reset", "timeout"})
"""Failures that can happen after the server applied a write (the response is lost on the way back)."""


class _Headers(dict[str, str]):
    def get(self, key: str, default: Any = None) -> Any:  # HTTP headers are case-insensitive
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)


@dataclass(frozen=True)
class Fault:
    kind: str
    after: bool = False
    """The server applied the change, then the response was lost."""
    retry_after: float | None = None

    def error(self, op: str) -> Exception:
        if self.kind == "reset":
            return urllib3.exceptions.ProtocolError(
                "Connection aborted.", ConnectionResetError(104, "Connection reset by peer"))
        if self.kind == "timeout":
            return urllib3.exceptions.ReadTimeoutError(None, f"/fake/{op}", "Read timed out. (read timeout=60)")
        status = int(self.kind)
        reason = HTTPStatus(status).phrase
        e = ApiException(status=status, reason=reason,
                         body=json.dumps({"kind": "Status", "code": status, "message": f"injected {reason}"}))
        if self.retry_after is not None:
            e.headers = _Headers({"Retry-After": f"{self.retry_after:g}"})
        return e


class Faults:
    """A seeded fault schedule: each call fails with probability ``rate``; some faults repeat on the next calls of
    the same kind (a burst), so that the API's own retries run out and the reconcile has to try again.

    Each kind of call draws from a random stream of its own, so that calls of one kind made concurrently (the
    reconciler's Job creates, Events posted in the background) leave the schedule of the others as it is: the
    faults of a kind depend on how many such calls were made, not on how threads interleaved."""

    def __init__(self, seed: int, rate: float = 0.2, burst: float = 0.15, ops: Iterable[str] = OPS,
                 kinds: Iterable[str] = KINDS) -> None:
        self.seed = seed
        self._rngs: dict[str, random.Random] = {}
        self.rate, self.burst = rate, burst
        self.ops, self.kinds = frozenset(ops), tuple(kinds)
        self.enabled = True
        self.injected: Counter[tuple[str, str, str]] = Counter()
        """(op, kind, "before"|"after") -> faults injected."""
        self._bursts: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()

    def draw(self, op: str) -> Fault | None:
        with self._lock:
            if not self.enabled or op not in self.ops:
                return None
            queued = self._bursts.get(op)
            rng = self._rngs.setdefault(op, random.Random(f"{self.seed}:{op}"))
            if queued:
                fault = queued.pop()
            elif rng.random() < self.rate:
                kind = rng.choice(self.kinds)
                after = op in WRITES and kind in AFTER_KINDS and rng.random() < 0.5
                retry_after = rng.choice([None, 0.0, 1.0, 3.0, 120.0]) if kind == "429" else None
                fault = Fault(kind, after, retry_after)
                if rng.random() < self.burst:
                    self._bursts[op] = [Fault(kind, False, retry_after)] * rng.randint(2, 6)
            else:
                return None
            self.injected[(op, fault.kind, "after" if fault.after else "before")] += 1
            return fault

    def by_op(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (op, _, _), n in self.injected.items():
            out[op] += n
        return dict(out)

    def after_count(self) -> int:
        return sum(n for (_, _, when), n in self.injected.items() if when == "after")


@dataclass
class TrialTruth:
    """What one trial Job's pod really did."""

    reports: list[dict[str, float]] = field(default_factory=list)
    """Every metrics document the pod wrote, in order (the last is the final one when it ended by itself)."""
    outcome: str = ""
    """"" while it runs; "Succeeded", "Failed" (exit 1), or "Stopped" (its Job was deleted first)."""


@dataclass
class Ledger:
    """Everything the server keeps that grows with trials (the ConfigMaps), and what it counted."""

    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    creations: Counter[str] = field(default_factory=Counter)
    """Job name -> creates the server applied (including those whose response was lost)."""
    truth: dict[str, TrialTruth] = field(default_factory=dict)
    """Job uid -> what its pod did."""
    job_uids: dict[str, str] = field(default_factory=dict)
    """Job name -> uid of the (last) Job of that name created for the experiment."""
    finished_versions: dict[str, list[str]] = field(default_factory=dict)
    """Record key -> distinct finished record contents written, in order."""
    regressions: list[str] = field(default_factory=list)
    """Record keys overwritten with an active state after a finished one (must stay empty)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def objective(params: Mapping[str, Any]) -> float:
    """The fake trial's final accuracy: a fixed function of its parameters, in (0, 1)."""
    digest = zlib.crc32(json.dumps(params, sort_keys=True).encode())
    return round(0.05 + 0.9 * (digest % 100_000) / 100_000, 6)


def _ts(tick: int) -> str:
    return f"2026-01-01T{tick // 3600 % 24:02d}:{tick // 60 % 60:02d}:{tick % 60:02d}Z"


def _obj(meta: Mapping[str, Any], data: Mapping[str, str] | None = None) -> SimpleNamespace:
    """A read-back object shaped like the client's models (only what the operator reads)."""
    owners = [SimpleNamespace(uid=o["uid"], kind=o.get("kind"), name=o.get("name"))
              for o in meta.get("ownerReferences") or []]
    return SimpleNamespace(
        metadata=SimpleNamespace(name=meta["name"], namespace=meta.get("namespace"), uid=meta.get("uid"),
                                 labels=dict(meta.get("labels") or {}), owner_references=owners or None),
        data=dict(data) if data is not None else None,
    )


class FakeCluster:
    """One namespace of an API server with a simulated trial lifecycle (see the module docstring)."""

    def __init__(self, experiment: dict[str, Any], *, faults: Faults | None = None, seed: int = 0,
                 run_ticks: tuple[int, int] = (2, 6), fail_rate: float = 0.1, steps: int = 4,
                 quick: bool = False) -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults
        self.run_ticks, self.fail_rate, self.steps = run_ticks, fail_rate, steps
        self.quick = quick
        """Pods start Running (no Pending tick): fewer ticks per trial."""
        self.namespace = experiment["metadata"]["namespace"]
        self.experiment: dict[str, Any] | None = copy.deepcopy(experiment)
        self.key = (self.namespace, experiment["metadata"]["name"])
        self.tick_no = 0
        self.uids = (f"uid-{n:06d}" for n in itertools.count(1))
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.plans: dict[str, dict[str, int]] = {}
        """Job uid -> its trial's schedule: start tick, end tick, steps, exit code."""
        self.ledger = Ledger()
        self.events: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.untimed_calls: list[str] = []
        self.running_max = 0
        self.on_change: list[Callable[[FakeCluster], None]] = []
        self.streams: dict[str, deque[tuple[str, Any]]] = {"experiments": deque(), "jobs": deque(), "pods": deque()}
        self._emit("experiments", self.experiment["metadata"]["name"], self.experiment)

    # -- the watch -----------------------------------------------------------------------------------------------

    def _emit(self, stream: str, name: str, body: dict[str, Any] | None) -> None:
        """Queue a watch event: the experiment's body, or what the kopf handlers make of a Job's or Pod's body at
        the time of the event."""
        if stream == "experiments":
            item: Any = copy.deepcopy(body)
        elif body is None:
            item = None
        else:
            item = summarize_job(body) if stream == "jobs" else summarize_pod(body)
        self.streams[stream].append((name, item))

    def deliver(self, reconciler: Any, rng: random.Random | None = None) -> int:
        """Deliver queued watch events: all of them, or with ``rng`` a random prefix of each stream (lag)."""
        with self.lock:
            batches = []
            for stream, queue in self.streams.items():
                n = len(queue) if rng is None else rng.randint(0, len(queue))
                batches.append((stream, [queue.popleft() for _ in range(n)]))
        delivered = 0
        for stream, batch in batches:
            for name, item in batch:
                delivered += 1
                if stream == "experiments":
                    reconciler.experiment_changed(self.key, item)
                elif stream == "jobs":
                    reconciler.job_changed(self.key, name, item)
                else:
                    reconciler.pod_changed(self.key, name, item)
        return delivered

    def relist(self) -> None:
        """A new watcher (a restarted operator): the pending events are lost, every object arrives anew."""
        with self.lock:
            for queue in self.streams.values():
                queue.clear()
            if self.experiment is not None:
                self._emit("experiments", self.experiment["metadata"]["name"], self.experiment)
            for name, job in self.jobs.items():
                self._emit("jobs", name, job)
            for name, pod in self.pods.items():
                self._emit("pods", name, pod)

    def pending_events(self) -> int:
        return sum(len(q) for q in self.streams.values())

    # -- invariants ----------------------------------------------------------------------------------------------

    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if not self._job_finished(j))

    def _changed(self) -> None:
        self.running_max = max(self.running_max, self.running())
        for check in self.on_change:
            check(self)

    @staticmethod
    def _job_finished(job: Mapping[str, Any]) -> bool:
        return any(c["status"] == "True" and c["type"] in ("Complete", "Failed")
                   for c in (job.get("status") or {}).get("conditions") or [])

    # -- requests ------------------------------------------------------------------------------------------------

    def _request(self, op: str, kwargs: Mapping[str, Any], apply: Callable[[], Any]) -> Any:
        self.calls[op] += 1
        if kwargs.get("_request_timeout") is None:
            self.untimed_calls.append(op)
        fault = self.faults.draw(op) if self.faults else None
        if fault is not None and not fault.after:
            raise fault.error(op)
        with self.lock:
            result = apply()
            self._changed()
        if fault is not None:
            raise fault.error(op)
        return result

    @staticmethod
    def _error(status: int, reason: str) -> ApiException:
        return ApiException(status=status, reason=reason, body=json.dumps({"code": status, "message": reason}))

    # BatchV1Api

    def create_namespaced_job(self, namespace: str, body: dict[str, Any], **kw: Any) -> Any:
        def apply() -> Any:
            name = body["metadata"]["name"]
            if name in self.jobs:
                raise self._error(409, f'jobs.batch "{name}" already exists')
            job = {**body, "metadata": dict(body["metadata"])}  # the spec is only read
            uid = next(self.uids)
            job["metadata"].update(uid=uid, namespace=namespace, creationTimestamp=_ts(self.tick_no))
            job["status"] = {}
            self.jobs[name] = job
            self.ledger.creations[name] += 1
            if self._owned_by_experiment(job):
                self.ledger.job_uids[name] = uid
            self.ledger.truth[uid] = TrialTruth()
            params = json.loads(job["metadata"]["annotations"]["kubetune.io/parameters"])
            steps = int(params.get("epochs", self.steps))
            start = self.tick_no + 1
            # the trial's own stream: Jobs created concurrently get the same schedule in any order
            rng = random.Random(f"{self.seed}:{name}")
            end = start + rng.randint(*self.run_ticks) + min(steps, 4)
            fails = rng.random() < self.fail_rate
            self.plans[uid] = {"start": start, "end": end, "steps": steps, "exit": 1 if fails else 0}
            self._emit("jobs", name, job)
            return _obj(job["metadata"])
        return self._request("create_job", kw, apply)

    def read_namespaced_job(self, name: str, namespace: str, **kw: Any) -> Any:
        def apply() -> Any:
            if name not in self.jobs:
                raise self._error(404, f'jobs.batch "{name}" not found')
            return _obj(self.jobs[name]["metadata"])
        return self._request("read_job", kw, apply)

    def delete_namespaced_job(self, name: str, namespace: str, propagation_policy: str | None = None,
                              **kw: Any) -> Any:
        def apply() -> Any:
            job = self.jobs.pop(name, None)
            if job is None:
                raise self._error(404, f'jobs.batch "{name}" not found')
            self._emit("jobs", name, None)
            uid = job["metadata"]["uid"]
            self.plans.pop(uid, None)
            truth = self.ledger.truth.get(uid)
            for pod_name, pod in list(self.pods.items()):
                if pod["metadata"]["labels"]["job-name"] != name:
                    continue
                pod["metadata"]["deletionTimestamp"] = _ts(self.tick_no)
                pod["metadata"]["gc"] = True
                if pod["status"]["phase"] not in ("Succeeded", "Failed") and truth is not None:
                    truth.outcome = "Stopped"
                self._emit("pods", pod_name, pod)
            if truth is not None and not truth.outcome:
                truth.outcome = "Stopped"  # deleted before its pod even started
            return SimpleNamespace(status="Success")
        return self._request("delete_job", kw, apply)

    # CustomObjectsApi

    def patch_namespaced_custom_object_status(self, group: str, version: str, namespace: str, plural: str,
                                              name: str, body: dict[str, Any], **kw: Any) -> Any:
        assert (group, version, plural) == (GROUP, VERSION, PLURAL)

        def apply() -> Any:
            if self.experiment is None or self.experiment["metadata"]["name"] != name:
                raise self._error(404, f'{PLURAL}.{GROUP} "{name}" not found')
            self.experiment = merge_patch(self.experiment, body)
            assert self.experiment is not None
            self._emit("experiments", name, self.experiment)
            return copy.deepcopy(self.experiment)
        return self._request("patch_status", kw, apply)

    # CoreV1Api

    def list_namespaced_config_map(self, namespace: str, label_selector: str = "", **kw: Any) -> Any:
        want = dict(part.split("=", 1) for part in label_selector.split(",") if part)

        def apply() -> Any:
            items = [_obj(cm["metadata"], cm["data"]) for cm in self.ledger.configmaps.values()
                     if all(cm["metadata"].get("labels", {}).get(k) == v for k, v in want.items())]
            return SimpleNamespace(items=items)
        return self._request("list_configmaps", kw, apply)

    def patch_namespaced_config_map(self, name: str, namespace: str, body: dict[str, Any], **kw: Any) -> Any:
        def apply() -> Any:
            cm = self.ledger.configmaps.get(name)
            if cm is None:
                raise self._error(404, f'configmaps "{name}" not found')
            self._write_records(cm, body.get("data") or {})
            return _obj(cm["metadata"], cm["data"])
        return self._request("patch_configmap", kw, apply)

    def create_namespaced_config_map(self, namespace: str, body: dict[str, Any], **kw: Any) -> Any:
        def apply() -> Any:
            name = body["metadata"]["name"]
            if name in self.ledger.configmaps:
                raise self._error(409, f'configmaps "{name}" already exists')
            cm = {"metadata": {**copy.deepcopy(body["metadata"]), "uid": next(self.uids)}, "data": {}}
            self.ledger.configmaps[name] = cm
            self._write_records(cm, body.get("data") or {})
            return _obj(cm["metadata"], cm["data"])
        return self._request("create_configmap", kw, apply)

    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **kw: Any) -> Any:
        want = dict(part.split("=", 1) for part in label_selector.split(",") if part)

        def apply() -> Any:
            return SimpleNamespace(items=[
                _obj(p["metadata"]) for p in self.pods.values()
                if all(p["metadata"]["labels"].get(k) == v for k, v in want.items())])
        return self._request("list_pods", kw, apply)

    def create_namespaced_event(self, namespace: str, body: dict[str, Any], **kw: Any) -> Any:
        def apply() -> Any:
            self.events[body["reason"]] += 1
            return None
        return self._request("create_event", kw, apply)

    def _write_records(self, cm: dict[str, Any], data: Mapping[str, str]) -> None:
        for key, value in data.items():
            state = json.loads(value)["state"]
            versions = self.ledger.finished_versions.setdefault(key, [])
            if state in ("Pending", "Running"):
                if versions:
                    self.ledger.regressions.append(key)
            elif not versions or versions[-1] != value:
                versions.append(value)
            cm["data"][key] = value

    def _owned_by_experiment(self, obj: Mapping[str, Any]) -> bool:
        return self.experiment is not None and any(
            o.get("uid") == self.experiment["metadata"]["uid"] for o in obj["metadata"].get("ownerReferences") or [])

    # -- the cluster's own work ----------------------------------------------------------------------------------

    def tick(self) -> None:
        """One step of time: pods start, report, end; deleted Jobs' pods terminate and go."""
        with self.lock:
            self.tick_no += 1
            now = self.tick_no
            for pod_name, pod in list(self.pods.items()):
                if pod["metadata"].get("gc"):  # the garbage collector / kubelet finishes a deleted pod
                    self.pods.pop(pod_name)
                    self._emit("pods", pod_name, None)
            for name, job in list(self.jobs.items()):
                uid = job["metadata"]["uid"]
                plan = self.plans.get(uid)
                if plan is None or self._job_finished(job):
                    continue
                pod_name = f"{name}-p{uid[-6:]}"
                pod = self.pods.get(pod_name)
                if pod is None and now >= plan["start"]:
                    pod = self._new_pod(job, pod_name)
                    if self.quick:
                        pod["status"].update(phase="Running", startTime=_ts(now))
                        job["status"]["startTime"] = _ts(now)
                    self.pods[pod_name] = pod
                    self._emit("pods", pod_name, pod)
                    continue
                if pod is None:
                    continue
                if pod["status"]["phase"] == "Pending":
                    pod["status"].update(phase="Running", startTime=_ts(now))
                    job["status"]["startTime"] = _ts(now)
                    self._emit("pods", pod_name, pod)
                    self._emit("jobs", name, job)
                    continue
                done = now >= plan["end"]
                self._report(uid, pod, plan, final=done)
                if done:
                    self._end(job, pod, plan)
                self._emit("pods", pod_name, pod)
                if done:
                    self._emit("jobs", name, job)
            self._changed()

    def _new_pod(self, job: Mapping[str, Any], pod_name: str) -> dict[str, Any]:
        template = job["spec"]["template"]
        return {
            "metadata": {
                "name": pod_name, "namespace": self.namespace, "uid": next(self.uids),
                "creationTimestamp": _ts(self.tick_no),
                "labels": {**template["metadata"]["labels"], "job-name": job["metadata"]["name"],
                           "batch.kubernetes.io/job-name": job["metadata"]["name"]},
                "annotations": {},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                     "uid": job["metadata"]["uid"], "controller": True}],
            },
            "status": {"phase": "Pending"},
        }

    def _report(self, uid: str, pod: dict[str, Any], plan: Mapping[str, int], final: bool) -> None:
        job_name = pod["metadata"]["labels"]["job-name"]
        params = json.loads(self.jobs[job_name]["metadata"]["annotations"]["kubetune.io/parameters"])
        truth = self.ledger.truth[uid]
        value = objective(params)
        seq = len(truth.reports) + 1
        step = min(seq, plan["steps"])
        if final and plan["exit"] != 0:
            return  # a crashing trial writes nothing more
        metrics = {"accuracy": value if final else round(value * step / (plan["steps"] + 1), 6)}
        if final:
            metrics["loss"] = round(1 - value, 6)
        doc = json.loads(pod["metadata"]["annotations"].get("kubetune.io/metrics") or '{"curve": []}')
        curve = doc["curve"] if final else doc["curve"] + [[step, {"accuracy": metrics["accuracy"]}]]
        pod["metadata"]["annotations"]["kubetune.io/metrics"] = json.dumps(
            {"seq": seq, "metrics": metrics, "curve": curve})
        truth.reports.append(metrics)

    def _end(self, job: dict[str, Any], pod: dict[str, Any], plan: Mapping[str, int]) -> None:
        truth = self.ledger.truth[job["metadata"]["uid"]]
        now = _ts(self.tick_no)
        code = plan["exit"]
        pod["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
        pod["status"]["containerStatuses"] = [{"name": "trial", "state": {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error"}}}]
        if code == 0:
            job["status"].update(conditions=[{"type": "Complete", "status": "True"}], completionTime=now,
                                 succeeded=1)
            truth.outcome = "Succeeded"
        else:
            job["status"].update(conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                              "message": "Job has reached the specified backoff limit"}],
                                 failed=1)
            truth.outcome = "Failed"

    # -- the experiment ------------------------------------------------------------------------------------------

    def update_spec(self, **spec: Any) -> None:
        """The user edits the spec (a new generation)."""
        with self.lock:
            assert self.experiment is not None
            self.experiment["spec"].update(spec)
            self.experiment["metadata"]["generation"] = self.experiment["metadata"].get("generation", 1) + 1
            self._emit("experiments", self.experiment["metadata"]["name"], self.experiment)

    def delete_experiment(self) -> None:
        """Delete the experiment; the garbage collector deletes what it owns (Jobs, then their pods; ConfigMaps)."""
        with self.lock:
            assert self.experiment is not None
            name = self.experiment["metadata"]["name"]
            self.experiment = None
            self.streams["experiments"].append((name, None))
            for job_name in list(self.jobs):
                job = self.jobs.pop(job_name)
                self.plans.pop(job["metadata"]["uid"], None)
                self._emit("jobs", job_name, None)
                for pod_name, pod in list(self.pods.items()):
                    if pod["metadata"]["labels"]["job-name"] == job_name:
                        pod["metadata"]["deletionTimestamp"] = _ts(self.tick_no)
                        pod["metadata"]["gc"] = True
                        self._emit("pods", pod_name, pod)
            self.ledger.configmaps.clear()

    def status(self) -> dict[str, Any]:
        with self.lock:
            assert self.experiment is not None
            return copy.deepcopy(self.experiment.get("status") or {})

    def records(self) -> dict[int, dict[str, Any]]:
        with self.lock:
            out: dict[int, dict[str, Any]] = {}
            for cm in self.ledger.configmaps.values():
                for value in cm["data"].values():
                    rec = json.loads(value)
                    assert rec["number"] not in out, f"trial {rec['number']} recorded twice"
                    out[rec["number"]] = rec
            return out
