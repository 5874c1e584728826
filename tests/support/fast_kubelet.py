"""A kubelet for benchmarks: trial pods "run" without any process, so the control plane and the operator are
what is measured.

:class:`FastKubelet` is a :class:`node_agent.NodeAgent` (node registration, Lease and heartbeat, the one pod
watch, binding and force deletion are the agent's) that handles the pods of kubetune trials
(``app.kubernetes.io/managed-by=kubetune``) differently: it binds them, marks them ``Running``, and after
``delay`` seconds writes the trial's metrics into the pod's ``kubetune.io/metrics`` annotation through the API as
the trial SDK does (the same JSON document: ``seq``, ``step``, ``metrics``, ``curve``, ``time``; a JSON merge
patch), optionally after ``steps`` intermediate reports spread over the delay, then sets the pod ``Succeeded``
with a terminated container (exit 0), so the real Job controller completes the Job. A pod deleted while it "runs"
(a pruned or canceled trial) is deleted at once, as a kubelet does once its container has exited.

The metric is a deterministic function of the trial's parameters (the container's ``KUBETUNE_PARAMS``), so a
search has something to optimise. Intermediate values rise towards it, so worse trials look worse at every step
(median early stopping has something to stop).

Load: one watch thread, one timer thread and a small thread pool for the API calls; nothing per pod but a small
record. It keeps up with thousands of concurrent pods; the API server is the limit.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import json
import math
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from node_agent import NodeAgent, Obj, now

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "kubetune"
EXPERIMENT_LABEL = "kubetune.io/experiment"
TRIAL_NUMBER_LABEL = "kubetune.io/trial-number"
METRICS_ANNOTATION = "kubetune.io/metrics"
MAX_CURVE_POINTS = 100  # the SDK's bound on the curve it sends
MERGE_PATCH = "application/merge-patch+json"
RETRIES = 6

Objective = Callable[[Mapping[str, Any]], float]


def default_objective(params: Mapping[str, Any]) -> float:
    """1 at numeric parameters all equal to 0.37; categorical values cost a fixed amount each (by their text)."""
    score = 1.0
    for name in sorted(params):
        value = params[name]
        if isinstance(value, bool) or isinstance(value, str):
            score -= (zlib.crc32(f"{name}={value}".encode()) % 7) / 70.0
        else:
            score -= (float(value) - 0.37) ** 2
    return score if math.isfinite(score) else -1e9


def curve_value(final: float, step: int, steps: int) -> float:
    """The intermediate value at ``step`` of ``steps``: rises linearly to ``final`` (keeps trials' order)."""
    return final - 0.5 * (1.0 - (step + 1) / steps)


def add_point(curve: list[list[Any]], step: int, metrics: dict[str, float]) -> list[list[Any]]:
    """The SDK's curve update (replace the step, keep order, thin the older half beyond the bound)."""
    curve = [p for p in curve if p[0] != step] + [[step, metrics]]
    curve.sort(key=lambda p: p[0])
    while len(curve) > MAX_CURVE_POINTS:
        half = len(curve) // 2
        curve = curve[:half:2] + curve[half:]
    return curve


def report_documents(final: Mapping[str, float], steps: int, writes: int | None = None,
                     clock: Callable[[], float] = time.time) -> list[dict[str, Any]]:
    """The annotation documents one trial writes: ``steps`` intermediate reports (grouped into at most ``writes``
    patches, each carrying every report so far, as the SDK's document does), then the final report."""
    metric_docs: list[dict[str, Any]] = []
    latest: dict[str, float] = {}
    curve: list[list[Any]] = []
    seq = 0
    marks = _write_marks(steps, writes)
    for step in range(steps):
        values = {k: curve_value(v, step, steps) for k, v in final.items()}
        seq += 1
        latest.update(values)
        curve = add_point(curve, step, values)
        if step in marks:
            metric_docs.append({"seq": seq, "step": step, "metrics": dict(latest), "curve": list(curve),
                                "time": clock()})
    seq += 1
    latest.update(final)
    metric_docs.append({"seq": seq, "step": None, "metrics": dict(latest), "curve": list(curve), "time": clock()})
    return metric_docs


def _write_marks(steps: int, writes: int | None) -> set[int]:
    if steps <= 0:
        return set()
    if writes is None or writes >= steps:
        return set(range(steps))
    if writes <= 0:
        return set()
    return {math.ceil(steps * (i + 1) / writes) - 1 for i in range(writes)}


def params_of(pod: Obj) -> dict[str, Any]:
    for container in pod.get("spec", {}).get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == "KUBETUNE_PARAMS" and "value" in env:
                with contextlib.suppress(ValueError):
                    value = json.loads(env["value"])
                    return value if isinstance(value, dict) else {}
    return {}


@dataclass
class FinishedTrial:
    """What the kubelet did for one trial pod (times are ``time.time()``)."""

    namespace: str
    experiment: str
    number: int
    pod: str
    started: float
    annotated: float
    """When the final metrics annotation was written (the API answered)."""
    succeeded: float
    seen: float = 0.0
    """When the pod was first seen on the watch (created by the Job controller)."""


@dataclass(order=True)
class _Timer:
    due: float
    seq: int
    action: Callable[[], None] = field(compare=False)


@dataclass
class _PodRun:
    namespace: str
    name: str
    uid: str
    pod: Obj
    cancelled: bool = False
    started: float = 0.0
    started_at: str = ""
    done: bool = False


class FastKubelet(NodeAgent):
    """See the module docstring. ``start()``/``stop()`` or a ``with`` block; :attr:`finished` lists what ran."""

    def __init__(self, kubeconfig: Path | str, node_name: str = "kubetune-fast-node", *, delay: float = 1.0,
                 steps: int = 0, writes: int | None = None, metric: str = "score",
                 objective: Objective = default_objective, threads: int = 8, workdir: Path | None = None,
                 keep_finished: int = 100_000) -> None:
        super().__init__(kubeconfig, node_name=node_name, workdir=workdir, cpu="1000", memory="4Ti",
                         max_pods=100_000)
        # A client whose connection pool matches the thread pool (the default keeps 10 and drops the rest).
        conf = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=conf)
        conf.connection_pool_maxsize = threads + 4
        self.api.close()
        self.api = client.ApiClient(conf)
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        self.delay, self.steps, self.writes = delay, steps, writes
        self.metric, self.objective = metric, objective
        self.keep_finished = keep_finished
        self.finished: list[FinishedTrial] = []
        self.counts: dict[str, int] = {"bound": 0, "started": 0, "annotations": 0, "succeeded": 0,
                                       "deleted_running": 0, "retries": 0}
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fast-kubelet")
        self._runs: dict[str, _PodRun] = {}
        self._binding: dict[str, float] = {}  # pod uid -> first seen
        self._timers: list[_Timer] = []
        self._timer_seq = itertools.count()
        self._timer_cv = threading.Condition()

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> FastKubelet:
        super().start()
        t = threading.Thread(target=self._timer_loop, name="fast-kubelet-timers", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._timer_cv:
            self._timer_cv.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        super().stop()

    def running(self) -> int:
        """Trial pods marked ``Running`` that have not finished (or been deleted) yet."""
        with self._lock:
            return sum(1 for r in self._runs.values() if r.started and not r.cancelled and not r.done)

    # -- the watch (called on the agent's watch thread) ---------------------------------------------------------

    def _handle(self, pod: Obj, deleted: bool) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        if (meta.get("labels") or {}).get(MANAGED_BY) != MANAGED_BY_VALUE:
            return
        uid, node = meta["uid"], spec.get("nodeName")
        with self._lock:
            run = self._runs.get(uid)
            if deleted:
                self._runs.pop(uid, None)
                self._binding.pop(uid, None)
                if run is not None:
                    run.cancelled = True
                return
            if not node:
                if meta.get("deletionTimestamp") or uid in self._binding:
                    return
                self._binding[uid] = time.time()
                self.counts["bound"] += 1
            elif node != self.node_name:
                return
            elif meta.get("deletionTimestamp"):
                if run is not None and run.cancelled:
                    return
                if run is None:
                    run = self._runs[uid] = _PodRun(meta["namespace"], meta["name"], uid, pod)
                run.cancelled = True
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    self.counts["deleted_running"] += 1
            elif run is None and (pod.get("status") or {}).get("phase") in (None, "Pending"):
                run = self._runs[uid] = _PodRun(meta["namespace"], meta["name"], uid, pod)
            else:
                return
        if not node:
            self._submit(self._bind, meta["namespace"], meta["name"])
            return
        assert run is not None
        if run.cancelled:
            self._submit(self.force_delete, run.namespace, run.name, run.uid)
        else:
            self._submit(self._start_pod, run)

    # -- the pod's life (on the pool) ---------------------------------------------------------------------------

    def _start_pod(self, run: _PodRun) -> None:
        run.started, run.started_at = time.time(), now()
        status = {
            "phase": "Running", "startTime": run.started_at,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "conditions": _conditions(ready=True),
            "containerStatuses": self._container_statuses(run, {"running": {"startedAt": run.started_at}}),
        }
        if not self._patch_status(run, status):
            return
        with self._lock:
            self.counts["started"] += 1
        params = params_of(run.pod)
        final = {self.metric: float(self.objective(params))}
        docs = report_documents(final, self.steps, self.writes)
        for i, doc in enumerate(docs):
            due = run.started + self.delay * (i + 1) / len(docs)
            self._at(due, functools.partial(self._submit, self._report, run, doc, i == len(docs) - 1))

    def _report(self, run: _PodRun, doc: dict[str, Any], last: bool) -> None:
        if run.cancelled:
            return
        doc = {**doc, "time": time.time()}
        body = {"metadata": {"annotations": {METRICS_ANNOTATION: json.dumps(doc, separators=(",", ":"))}}}
        if not self._api(run, lambda: self.core.patch_namespaced_pod(
                run.name, run.namespace, body, _content_type=MERGE_PATCH, _preload_content=False)):
            return
        annotated = time.time()
        with self._lock:
            self.counts["annotations"] += 1
        if not last:
            return
        finished_at = now()
        terminated = {"exitCode": 0, "reason": "Completed", "startedAt": run.started_at, "finishedAt": finished_at,
                      "containerID": f"kubetune-fast://{run.uid}"}
        status = {"phase": "Succeeded", "conditions": _conditions(ready=False),
                  "containerStatuses": self._container_statuses(run, {"terminated": terminated})}
        if not self._patch_status(run, status):
            return
        run.done = True
        labels = run.pod["metadata"].get("labels") or {}
        with self._lock:
            seen = self._binding.get(run.uid, run.started)
        record = FinishedTrial(run.namespace, labels.get(EXPERIMENT_LABEL, ""),
                               int(labels.get(TRIAL_NUMBER_LABEL, "-1") or -1), run.name, run.started, annotated,
                               time.time(), seen)
        with self._lock:
            self.counts["succeeded"] += 1
            if len(self.finished) < self.keep_finished:
                self.finished.append(record)

    def _container_statuses(self, run: _PodRun, state: Obj) -> list[Obj]:
        running = "running" in state
        return [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                 "containerID": f"kubetune-fast://{run.uid}", "ready": running and i == 0, "started": running,
                 "restartCount": 0, "state": state if i == 0 else {"terminated": {
                     "exitCode": 0, "reason": "NotRunByTestNode"}}, "lastState": {}}
                for i, c in enumerate(run.pod["spec"]["containers"])]

    def _patch_status(self, run: _PodRun, status: Obj) -> bool:
        return self._api(run, lambda: self.core.patch_namespaced_pod_status(
            run.name, run.namespace, {"status": status}, _content_type=MERGE_PATCH, _preload_content=False))

    def _api(self, run: _PodRun, call: Callable[[], Any]) -> bool:
        """One API call for the pod, retried on transient failures; False when the pod is gone or stopping."""
        for attempt in range(RETRIES):
            if run.cancelled or self._stop.is_set():
                return False
            try:
                call()
                return True
            except ApiException as exc:
                if exc.status == 404:
                    run.cancelled = True
                    return False
                if exc.status not in (None, 0, 408, 429, 500, 502, 503, 504) or attempt == RETRIES - 1:
                    self.error(f"{run.namespace}/{run.name}: {exc.status} {exc.reason}")
                    return False
            except OSError as exc:  # urllib3's errors are OSErrors too
                if attempt == RETRIES - 1:
                    self.error(f"{run.namespace}/{run.name}: {exc!r}")
                    return False
            with self._lock:
                self.counts["retries"] += 1
            time.sleep(min(0.1 * 2 ** attempt, 2.0))
        return False

    # -- the pool and the timers --------------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._stop.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the pool shut down meanwhile
            self._pool.submit(self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            if not self._stop.is_set():
                self.error(f"{getattr(fn, '__name__', fn)}: {exc!r}")

    def _at(self, due: float, action: Callable[[], None]) -> None:
        with self._timer_cv:
            heapq.heappush(self._timers, _Timer(due, next(self._timer_seq), action))
            self._timer_cv.notify()

    def _timer_loop(self) -> None:
        while not self._stop.is_set():
            with self._timer_cv:
                while not self._stop.is_set() and (not self._timers or self._timers[0].due > time.time()):
                    wait = self._timers[0].due - time.time() if self._timers else None
                    self._timer_cv.wait(wait)
                if self._stop.is_set():
                    return
                timer = heapq.heappop(self._timers)
            timer.action()


def _conditions(ready: bool) -> list[Obj]:
    stamp = now()
    why = {} if ready else {"reason": "PodCompleted"}
    out = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": stamp}
           for t in ("PodReadyToStartContainers", "Initialized", "PodScheduled")]
    out += [{"type": t, "status": "True" if ready else "False", "lastProbeTime": None, "lastTransitionTime": stamp,
             **why} for t in ("ContainersReady", "Ready")]
    if not ready:
        out[0]["status"] = "False"
    return out


__all__ = ["FastKubelet", "FinishedTrial", "default_objective", "report_documents", "params_of"]
