"""Operator performance at cluster scale, on the real control plane of the tests.

One command starts etcd + kube-apiserver + kube-controller-manager (tests/support/controlplane.py), the benchmark
kubelet (tests/support/fast_kubelet.py: trial pods finish after a delay without running anything) and the
operator as its own process, then measures:

* ``first-job``: time from creating an experiment to the first trial Job (seen on a Job watch), one experiment at
  a time, on an idle operator and while ``--background`` experiments keep trials running;
* ``turnaround``: for E experiments x P parallel trials: trial turnaround (the final metrics annotation of a
  finished pod -> the next Job of the same experiment), sustained trials per minute, CPU seconds per trial of the
  operator / kube-apiserver / etcd / kube-controller-manager / the benchmark kubelet, API requests per trial by
  verb (the operator's, counted in its process), operator RSS;
* ``long``: one large experiment per algorithm (20 parallel, fast trials): reconcile duration from the operator's
  histogram at 10 % / 50 % / 100 % of the trials, wall time, RSS, result ConfigMaps; again with median early
  stopping and 50 intermediate steps per trial.

``python benchmarks/operator_scale.py`` (full: writes benchmarks/results/operator-scale-<date>.md and
docs/benchmarks-operator.md), ``--quick`` (a small smoke run), ``--only first-job,turnaround,long``,
``--scale 0.5`` (scales every count down), ``--profile`` (py-spy on the operator during the largest turnaround).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = ROOT / "tests" / "support"
for _path in (SUPPORT, ROOT / "trial_image"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from controlplane import ControlPlane, die_with_parent, ensure_binaries, free_port  # noqa: E402
from fast_kubelet import FastKubelet  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from operator_process import GROUP, PLURAL, VERSION, Experiments, wait_for  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from kubetune_trial import DEFAULT_REPORT_INTERVAL  # noqa: E402

CRD = ROOT / "crds" / "tuningexperiments.kubetune.io.yaml"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ALGORITHMS = ("random", "tpe", "bayesian")
DOC_START, DOC_END = "<!-- operator-scale results: start -->", "<!-- operator-scale results: end -->"


class TunedControlPlane(ControlPlane):
    """The tests' control plane, optionally with extra kube-controller-manager flags (e.g. its client rate limit,
    ``--kube-api-qps``, default 20, or the Job controller's workers, ``--concurrent-job-syncs``, default 5)."""

    kcm_flags: tuple[str, ...] = ()

    def _spawn(self, name: str, args: Any) -> subprocess.Popen[bytes]:
        if name == "kube-controller-manager":
            args = [*args, *self.kcm_flags]
        return super()._spawn(name, args)


# -- sizes ---------------------------------------------------------------------------------------------------------


@dataclass
class Sizes:
    first_job: int = 50
    background: int = 100
    background_parallel: int = 2
    turnaround: tuple[tuple[int, int], ...] = ((1, 10), (10, 10), (100, 10))
    rounds: int = 4
    trial_seconds: float = 1.0
    long_trials: int = 10_000
    long_parallel: int = 20
    long_trial_seconds: float = 0.2
    long_steps: int = 50
    long_step_trial_seconds: float = 5.0
    """Trials that report ``long_steps`` intermediate steps last this long."""
    long_writes: int | None = None
    """Annotation patches per trial for the intermediate steps; None: as many as the SDK sends with its default
    ``KUBETUNE_REPORT_INTERVAL`` (one a second: 5 for 50 steps in 5 s, so 20 parallel trials make 20 patches a
    second, plus their final reports)."""
    long_timeout: float = 3600.0
    long_variants: tuple[str, ...] = ("random", "tpe", "bayesian", "random+median")
    """``ALGORITHM[+median][@SECONDS]``: the algorithm, median early stopping with ``long_steps`` intermediate
    steps per trial, and a time limit of its own."""
    turnaround_timeout: float = 900.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(first_job=5, background=5, turnaround=((5, 2),), rounds=2, trial_seconds=0.5, long_trials=30,
                   long_parallel=5, long_trial_seconds=0.2, long_steps=10, long_step_trial_seconds=1.0,
                   long_writes=None, long_timeout=120.0, long_variants=("random", "random+median"))

    def scaled(self, factor: float) -> Sizes:
        def n(v: int) -> int:
            return max(1, round(v * factor))
        return dataclasses.replace(self, first_job=n(self.first_job), background=n(self.background),
                                   turnaround=tuple((n(e), p) for e, p in self.turnaround),
                                   long_trials=n(self.long_trials))


def sdk_writes(sizes: Sizes) -> int:
    """Intermediate annotation patches of one long ``+median`` trial: ``long_writes``, or what the SDK sends (the
    first report at once, then at most one per ``KUBETUNE_REPORT_INTERVAL``)."""
    if sizes.long_writes is not None:
        return sizes.long_writes
    return min(sizes.long_steps, max(1, math.ceil(sizes.long_step_trial_seconds / DEFAULT_REPORT_INTERVAL)))


@dataclass(frozen=True)
class Variant:
    """One long experiment: ``ALGORITHM[+median][@SECONDS]``."""

    algorithm: str
    median: bool
    timeout: float | None

    @classmethod
    def parse(cls, text: str) -> Variant:
        spec, _, seconds = text.strip().partition("@")
        algorithm, _, rule = spec.partition("+")
        if algorithm not in ALGORITHMS or rule not in ("", "median"):
            raise ValueError(f"a long variant is ALGORITHM[+median][@SECONDS] with ALGORITHM one of {ALGORITHMS}, "
                             f"got {text!r}")
        return cls(algorithm, rule == "median", float(seconds) if seconds else None)


# -- measuring -----------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[operator-scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, float(s.value)) for f in text_string_to_metric_families(text) for s in f.samples]


def http_get(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


class JobClock:
    """One watch on trial Jobs in every namespace: when each Job was first seen (``time.time()``)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.batch = client.BatchV1Api(api)
        self.seen: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        self.completed: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="job-clock", daemon=True)
        self.watch: watch.Watch | None = None

    def start(self) -> JobClock:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.watch is not None:
            self.watch.stop()
        self.thread.join(timeout=70)

    def _note(self, job: dict[str, Any], at: float) -> None:
        meta = job["metadata"]
        labels = meta.get("labels") or {}
        try:
            number = int(labels["kubetune.io/trial-number"])
        except (KeyError, ValueError):
            return
        key = (meta["namespace"], labels.get("kubetune.io/experiment", ""))
        complete = any(c.get("type") == "Complete" and c.get("status") == "True"
                       for c in (job.get("status") or {}).get("conditions") or [])
        with self.lock:
            self.seen[key].setdefault(number, at)
            if complete:
                self.completed[key].setdefault(number, at)

    def _loop(self) -> None:
        selector = "app.kubernetes.io/managed-by=kubetune"
        rv = None
        while not self.stop_event.is_set():
            try:
                if rv is None:
                    listing = json.loads(cast(Any, self.batch.list_job_for_all_namespaces(
                        label_selector=selector, _preload_content=False)).data)
                    for job in listing["items"]:
                        self._note(job, time.time())
                    rv = listing["metadata"]["resourceVersion"]
                self.watch = watch.Watch()
                for event in self.watch.stream(self.batch.list_job_for_all_namespaces, label_selector=selector,
                                               resource_version=rv, timeout_seconds=60,
                                               allow_watch_bookmarks=True):
                    obj = event["raw_object"]
                    if event["type"] == "ERROR":
                        rv = None
                        break
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._note(obj, time.time())
            except ApiException as exc:
                rv = None if exc.status == 410 else rv
                self.stop_event.wait(0.5)
            except Exception:
                self.stop_event.wait(0.5)

    def jobs(self, namespace: str, experiment: str) -> dict[int, float]:
        with self.lock:
            return dict(self.seen.get((namespace, experiment), {}))

    def completions(self, namespace: str, experiment: str) -> dict[int, float]:
        with self.lock:
            return dict(self.completed.get((namespace, experiment), {}))

    def first(self, namespace: str, experiment: str) -> float | None:
        times = self.jobs(namespace, experiment)
        return min(times.values()) if times else None


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, float]
    operator_requests: dict[tuple[str, str], float]
    apiserver_requests: dict[tuple[str, str], float]
    operator_metrics: list[tuple[str, dict[str, str], float]]
    flows: dict[str, float]
    """API server requests by APF flow schema: the controllers' service accounts vs. exempt (admin: the operator,
    the benchmark kubelet and harness)."""
    throttled: int
    """Lines of the kube-controller-manager's log about client-side throttling."""


class Operator:
    """``kubetune operator`` in its own process, with its API requests counted (benchmarks/_operator_probe.py)."""

    source: Path | None = None
    """A directory holding another ``kubetune`` package to run instead of the working tree's (first on the
    operator's PYTHONPATH), e.g. an earlier commit's ``operator/`` from ``git archive``."""

    def __init__(self, kubeconfig: Path, log_dir: Path) -> None:
        self.kubeconfig, self.log_dir = kubeconfig, log_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.port = free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join([*([str(self.source)] if self.source else []), str(ROOT),
                                              os.environ.get("PYTHONPATH", "")])}
        with open(self.log_dir / f"operator-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks._operator_probe", "operator", "--all-namespaces",
                 "--liveness", "", "--metrics-port", str(self.port)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent)
        wait_for("the operator's metrics endpoint", self._up, timeout=60, interval=0.2)
        time.sleep(1.0)  # its watches start right after the startup handlers

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            return "kubetune_trials_created_total" in self.metrics()
        except OSError:
            return False

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.port}/metrics")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = (self.log_dir / f"operator-{self.starts}.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


class Bench:
    """The cluster, the kubelet, the operator and the measurements shared by the scenarios."""

    def __init__(self, cp: ControlPlane, work: Path) -> None:
        self.cp = cp
        self.api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.kubelet = FastKubelet(cp.kubeconfig, threads=8, workdir=work / "kubelet").start()
        self.clock = JobClock(self.api).start()
        self.operator = Operator(cp.kubeconfig, work)
        self.pids = {name: proc.pid for name, proc in cp._procs}

    def close(self) -> None:
        self.operator.stop()
        self.clock.stop()
        self.kubelet.stop()
        self.api.close()

    # -- objects ----------------------------------------------------------------------------------------------------

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        wait_for(f"the default ServiceAccount of {name}", lambda: self._has_default_sa(name), timeout=60)
        return name

    def _has_default_sa(self, namespace: str) -> bool:
        try:
            self.core.read_namespaced_service_account("default", namespace)
            return True
        except ApiException as exc:
            if exc.status != 404:
                raise
            return False

    def delete_namespace(self, name: str, timeout: float = 300.0) -> None:
        """Delete the namespace's experiments and wait until their Jobs and pods are gone (the garbage collector's
        work, which loads the API server), then delete the namespace without waiting for it."""
        log(f"cleaning up namespace {name}")
        started = time.monotonic()
        with contextlib.suppress(ApiException):
            self.custom.delete_collection_namespaced_custom_object(GROUP, VERSION, name, PLURAL)
        batch = client.BatchV1Api(self.api)

        def empty() -> bool:
            return not (batch.list_namespaced_job(name, limit=1).items
                        or self.core.list_namespaced_pod(name, limit=1).items)
        try:
            wait_for(f"namespace {name} to be empty", empty, timeout=timeout, interval=1.0)
            log(f"namespace {name} empty after {time.monotonic() - started:.1f} s")
        except AssertionError:
            log(f"namespace {name} still has Jobs or pods after {timeout:.0f} s; going on")
        with contextlib.suppress(ApiException):
            self.core.delete_namespace(name, propagation_policy="Background")

    def create(self, namespace: str, name: str, *, max_trials: int, parallel: int, algorithm: str = "random",
               early_stopping: dict[str, Any] | None = None) -> None:
        spec: dict[str, Any] = {
            "objective": {"metric": "score", "goal": "maximize"},
            "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                           {"name": "y", "type": "float", "min": 0.0, "max": 1.0},
                           {"name": "k", "type": "categorical", "values": ["a", "b", "c"]}],
            "algorithm": {"name": algorithm, "seed": 1},
            "maxTrials": max_trials,
            "parallelTrials": parallel,
            "maxFailedTrials": max_trials,
            "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "trial", "image": "none", "command": ["true"]}]}}}},
        }
        if early_stopping:
            spec["earlyStopping"] = early_stopping
        Experiments(self.api, namespace).create({"apiVersion": f"{GROUP}/{VERSION}", "kind": "TuningExperiment",
                                                 "metadata": {"name": name}, "spec": spec})

    def statuses(self, namespace: str) -> dict[str, dict[str, Any]]:
        items = cast(dict[str, Any], self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL))[
            "items"]
        return {i["metadata"]["name"]: i.get("status") or {} for i in items}

    # -- measurements -----------------------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        cpu["operator"] = cpu_seconds(self.operator.pid)
        cpu["benchmark kubelet + harness"] = cpu_seconds(os.getpid())
        op = samples(self.operator.metrics())
        op_req: defaultdict[tuple[str, str], float] = defaultdict(float)
        for name, labels, value in op:
            if name == "kubetune_bench_api_requests_total":
                op_req[(labels["verb"], labels["resource"])] += value
        api_req: defaultdict[tuple[str, str], float] = defaultdict(float)
        flows: defaultdict[str, float] = defaultdict(float)
        for name, labels, value in samples(str(self.cp.request("GET", "/metrics"))):
            if name == "apiserver_flowcontrol_dispatched_requests_total":
                flows[labels.get("flow_schema", "")] += value
            if name == "apiserver_request_total":
                resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource")
                                                         else "")
                api_req[(labels.get("verb", ""), resource)] += value
        throttled = 0
        with contextlib.suppress(OSError):
            with open(self.cp.logs_dir / "kube-controller-manager.log", errors="replace") as f:
                throttled = sum(1 for line in f if "client-side throttling" in line)
        return Snapshot(time.time(), cpu, dict(op_req), dict(api_req), op, dict(flows), throttled)

    def operator_rss(self) -> tuple[int, int]:
        return rss_bytes(self.operator.pid)

    def restart_operator(self) -> None:
        self.operator.stop()
        self.operator.start()


def delta(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}


def histogram(snapshot: Snapshot, name: str) -> tuple[float, float, dict[float, float]]:
    """(sum, count, cumulative buckets) of an operator histogram."""
    total = count = 0.0
    buckets: dict[float, float] = {}
    for sample_name, labels, value in snapshot.operator_metrics:
        if sample_name == f"{name}_sum":
            total = value
        elif sample_name == f"{name}_count":
            count = value
        elif sample_name == f"{name}_bucket":
            buckets[float(labels["le"])] = value
    return total, count, buckets


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over the observations between two snapshots (linear within a bucket)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return float("nan")
    rank = q * counts[-1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / max(count - prev_count, 1e-12))
        prev_bound, prev_count = bound, count
    return float("nan")


# -- scenarios -------------------------------------------------------------------------------------------------


def scenario_first_job(bench: Bench, sizes: Sizes) -> dict[str, Any]:
    bench.restart_operator()
    bench.kubelet.delay, bench.kubelet.steps = 3600.0, 0  # the measured experiments' trials just stay running
    rows = []
    for label, background in (("idle operator", 0), (f"{sizes.background} experiments running", sizes.background)):
        bg_ns = None
        if background:
            bench.kubelet.delay = sizes.trial_seconds
            bg_ns = bench.namespace("bg")
            for i in range(background):
                bench.create(bg_ns, f"bg-{i:03d}", max_trials=10_000, parallel=sizes.background_parallel)
            wait_for("every background experiment's first Job",
                     lambda: all(bench.clock.first(bg_ns, f"bg-{i:03d}") for i in range(background)),
                     timeout=600, interval=0.5)
        ns = bench.namespace("first")
        bench.create(ns, "warm-up", max_trials=1, parallel=1)  # the operator's first experiment pays for imports
        wait_for("the warm-up Job", lambda: bench.clock.first(ns, "warm-up"), timeout=300, interval=0.05)
        times = []
        for i in range(sizes.first_job):
            name = f"first-{i:03d}"
            started = time.time()
            bench.create(ns, name, max_trials=1, parallel=1)
            seen = wait_for(f"the first Job of {name}", lambda: bench.clock.first(ns, name), timeout=300,
                            interval=0.005, on_timeout=bench.operator.log_tail)
            times.append(seen - started)
        rows.append({"condition": label, "experiments": len(times), "p50_s": percentile(times, 0.5),
                     "p99_s": percentile(times, 0.99), "max_s": max(times)})
        bench.kubelet.delay = 3600.0
        bench.delete_namespace(ns)
        if bg_ns:
            bench.delete_namespace(bg_ns)
    return {"rows": rows}


def scenario_turnaround(bench: Bench, sizes: Sizes, profile: bool, work: Path) -> dict[str, Any]:
    rows, cpu_rows, request_rows, api_rows = [], [], [], []
    profile_report = None
    largest = max(sizes.turnaround, key=lambda c: c[0] * c[1])
    for experiments, parallel in sizes.turnaround:
        bench.restart_operator()
        version = operator_version()
        bench.kubelet.delay, bench.kubelet.steps = sizes.trial_seconds, 0
        ns = bench.namespace("turn")
        names = [f"t-{i:03d}" for i in range(experiments)]
        max_trials = parallel * sizes.rounds
        before = bench.snapshot()
        spy = None
        if profile and (experiments, parallel) == largest and shutil.which("py-spy"):
            spy = start_profiler(bench.operator.pid, work / "operator-profile.txt")
        for name in names:
            bench.create(ns, name, max_trials=max_trials, parallel=parallel)

        running: list[int] = []

        def all_done() -> bool:
            running.append(bench.kubelet.running())  # trial pods running, once a second
            st = bench.statuses(ns)
            return len(st) == len(names) and all(s.get("completionTime") for s in st.values())
        timeout = min(120 + 3 * experiments * max_trials, sizes.turnaround_timeout)
        finished_in_time = True
        try:
            wait_for(f"{experiments} x {parallel} to finish", all_done, timeout=timeout, interval=1.0)
        except AssertionError:
            finished_in_time = False
        after = bench.snapshot()
        if spy is not None:
            profile_report = stop_profiler(spy, work / "operator-profile.txt")
        rss, peak = bench.operator_rss()
        finished = [f for f in bench.kubelet.finished if f.namespace == ns]
        turnarounds, parts = turnaround_pairs(bench, ns, names, parallel, finished)
        total = len(finished)
        first_job = min((bench.clock.first(ns, n) or after.at) for n in names)
        last_finish = max((f.succeeded for f in finished), default=after.at)
        window = max(last_finish - first_job, 1e-6)
        cpu = delta(after.cpu, before.cpu)
        label = f"{experiments} x {parallel}"
        rows.append({"config": label, "operator_version": version, "concurrent": experiments * parallel,
                     "trials": total,
                     "all_finished": finished_in_time, "turnaround_p50_s": percentile(turnarounds, 0.5),
                     "turnaround_p99_s": percentile(turnarounds, 0.99),
                     **{f"{k}_p50_s": percentile(v, 0.5) for k, v in parts.items()},
                     "trials_per_min": total / window * 60, "operator_rss_mib": rss / 2**20,
                     "running_peak": max(running, default=0),
                     "running_mean": sum(running) / max(len(running), 1),
                     "operator_peak_rss_mib": peak / 2**20})
        per = max(total, 1)
        cpu_rows.append({"config": label, **{k: v / per for k, v in sorted(cpu.items())},
                         "window_s": window})
        ops = delta(after.operator_requests, before.operator_requests)
        by_verb: defaultdict[str, float] = defaultdict(float)
        for (verb, _resource), v in ops.items():
            by_verb[verb] += v
        request_rows.append({"config": label, "per_trial": {k: v / per for k, v in sorted(by_verb.items())},
                             "by_resource": {f"{v} {r}": n / per for (v, r), n in sorted(ops.items())}})
        api = delta(after.apiserver_requests, before.apiserver_requests)
        api_verbs: defaultdict[str, float] = defaultdict(float)
        for (verb, _resource), v in api.items():
            api_verbs[verb] += v
        api_rows.append({"config": label, "per_trial": {k: v / per for k, v in sorted(api_verbs.items())},
                         "by_flow_schema": {k: v / per for k, v in sorted(delta(after.flows, before.flows).items())},
                         "kcm_throttling_lines": after.throttled - before.throttled})
        bench.delete_namespace(ns)
    return {"rows": rows, "cpu": cpu_rows, "operator_requests": request_rows, "apiserver_requests": api_rows,
            "profile": profile_report}


def turnaround_pairs(bench: Bench, ns: str, names: list[str], parallel: int, finished: list[Any]
                     ) -> tuple[list[float], dict[str, list[float]]]:
    """The k-th finished trial of an experiment (by its final annotation) frees the slot that the (parallel+k)-th
    Job fills: turnaround = that Job seen - the annotation written. Also its parts: annotation -> the finished
    trial's Job seen Complete (the Job controller), -> the next Job seen (the operator); and, for every trial, its
    Job seen -> its pod seen (the Job controller creating the pod)."""
    out: list[float] = []
    parts: dict[str, list[float]] = {"job_complete": [], "operator": [], "pod_created": []}
    for name in names:
        mine = sorted((f for f in finished if f.experiment == name), key=lambda f: f.annotated)
        seen = bench.clock.jobs(ns, name)
        done = bench.clock.completions(ns, name)
        jobs = sorted(seen.values())
        for k, f in enumerate(mine):
            if f.number in seen and f.seen:
                parts["pod_created"].append(f.seen - seen[f.number])
            if parallel + k < len(jobs) and jobs[parallel + k] >= f.annotated:
                out.append(jobs[parallel + k] - f.annotated)
                if f.number in done:
                    parts["job_complete"].append(done[f.number] - f.annotated)
                    parts["operator"].append(jobs[parallel + k] - done[f.number])
    return out, parts


def operator_version() -> str:
    """The commit the operator ran from (it is started from the working tree), and whether operator/ had local
    changes then; or the ``--operator-source`` it ran from."""
    if Operator.source is not None:
        return f"{Operator.source} (--operator-source)"
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %cI"], capture_output=True,
                              text=True, timeout=30).stdout.strip()
        diff = subprocess.run(["git", "-C", str(ROOT), "diff", "HEAD", "--", "operator/kubetune"],
                              capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not diff:
        return head
    return f"{head} + uncommitted changes in operator/kubetune (diff sha256 {hashlib.sha256(diff).hexdigest()[:12]})"


def reconcile_window(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """The operator's reconcile and planning histograms between two snapshots."""
    s0, c0, b0 = histogram(a, "kubetune_reconcile_seconds")
    s1, c1, b1 = histogram(b, "kubetune_reconcile_seconds")
    q0, qc0, _ = histogram(a, "kubetune_suggestion_seconds")
    q1, qc1, _ = histogram(b, "kubetune_suggestion_seconds")
    return {"reconciles": int(c1 - c0), "reconcile_mean_s": (s1 - s0) / max(c1 - c0, 1),
            "reconcile_p50_s": histogram_quantile(0.5, b0, b1), "reconcile_p99_s": histogram_quantile(0.99, b0, b1),
            "plannings": int(qc1 - qc0), "suggestion_mean_s": (q1 - q0) / max(qc1 - qc0, 1)}


def long_windows(trials: int, parallel: int) -> list[tuple[int, int]]:
    """(from, to) finished trials around 10 %, 50 % and 100 % of ``trials``: the reconciles while the history grew
    over the last 5 % of the trials before each mark (at least ``parallel`` trials)."""
    width = max(parallel, trials // 20)
    marks = sorted({max(1, trials // 10), max(1, trials // 2), trials})
    return [(max(0, m - width), m) for m in marks]


def metrics_snapshot(text: str, at: float) -> Snapshot:
    """The operator's own metrics alone (what :func:`reconcile_window` reads)."""
    return Snapshot(at, {}, {}, {}, samples(text), {}, 0)


def finished_of(snapshot: Snapshot) -> int:
    """Trials the operator has recorded as finished (``kubetune_trials_finished_total``, every state)."""
    return int(sum(v for n, _, v in snapshot.operator_metrics if n == "kubetune_trials_finished_total"))


class MetricsSeries:
    """The operator's metrics every ``interval`` seconds on a thread of its own, so a window can be cut after the
    fact (the reconciles over the last trials before a time limit)."""

    def __init__(self, operator: Operator, interval: float = 15.0) -> None:
        self.operator, self.interval = operator, interval
        self.series: list[Snapshot] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="metrics-series", daemon=True)

    def __enter__(self) -> MetricsSeries:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            with contextlib.suppress(OSError, ValueError):
                self.series.append(metrics_snapshot(self.operator.metrics(), time.time()))


def last_window(series: list[Snapshot], end: Snapshot, width: int, started: float) -> dict[str, Any] | None:
    """The reconciles over the last ``width`` finished trials before ``end`` (from the latest sample at least that
    far back; the earliest sample when none is)."""
    finished = finished_of(end)
    earlier = [s for s in series if s.at < end.at]
    if not earlier:
        return None
    back = [s for s in earlier if finished_of(s) <= finished - width]
    first = back[-1] if back else earlier[0]
    span = max(end.at - first.at, 1e-6)
    return {"mark": "end", "from_finished": finished_of(first), "finished": finished,
            **reconcile_window(first, end), "window_s": span,
            "trials_per_min": (finished - finished_of(first)) / span * 60, "elapsed_s": end.at - started}


def scenario_long(bench: Bench, sizes: Sizes, checkpoint: Any = None) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    windows = long_windows(sizes.long_trials, sizes.long_parallel)
    for text in sizes.long_variants:
        variant = Variant.parse(text)
        timeout = variant.timeout or sizes.long_timeout
        bench.restart_operator()
        version = operator_version()
        bench.kubelet.delay = sizes.long_step_trial_seconds if variant.median else sizes.long_trial_seconds
        bench.kubelet.steps = sizes.long_steps if variant.median else 0
        bench.kubelet.writes = sdk_writes(sizes) if variant.median else None
        early = {"rule": "median"} if variant.median else None
        ns = bench.namespace("long")
        name = f"long-{variant.algorithm}"
        load_before = os.getloadavg()
        annotations_before = bench.kubelet.counts["annotations"]
        log(f"long: {text} ({sizes.long_trials} trials, {sizes.long_parallel} parallel, at most {timeout:.0f} s; "
            f"operator {version})")
        started = time.time()
        base = bench.snapshot()
        sampler = MetricsSeries(bench.operator).__enter__()
        bench.create(ns, name, max_trials=sizes.long_trials, parallel=sizes.long_parallel,
                     algorithm=variant.algorithm, early_stopping=early)
        opened: dict[int, tuple[Snapshot, int]] = {}
        at_marks: list[dict[str, Any]] = []
        done = False
        status: dict[str, Any] = {}
        finished = 0
        next_log = started + 60
        while True:
            with contextlib.suppress(ApiException, OSError):
                status = cast(dict[str, Any], bench.custom.get_namespaced_custom_object(
                    GROUP, VERSION, ns, PLURAL, name)).get("status") or {}
            trials = status.get("trials") or {}
            finished = sum(int(trials.get(k, 0)) for k in ("succeeded", "failed", "pruned"))
            done = bool(status.get("completionTime"))
            out_of_time = time.time() - started >= timeout
            for i, (lo, mark) in enumerate(windows):
                if i not in opened and (finished >= lo or done):
                    opened[i] = (bench.snapshot(), finished)
                if i in opened and len(at_marks) == i and (finished >= mark or done):
                    snap = bench.snapshot()
                    first, first_finished = opened[i]
                    span = max(snap.at - first.at, 1e-6)
                    at_marks.append({"mark": mark, "from_finished": first_finished, "finished": finished,
                                     **reconcile_window(first, snap), "window_s": span,
                                     "trials_per_min": (finished - first_finished) / span * 60,
                                     "elapsed_s": snap.at - started})
            if done or out_of_time:
                break
            if time.time() >= next_log:
                log(f"long: {text}: {finished} finished after {time.time() - started:.0f} s")
                next_log += 60
            time.sleep(0.25)
        wall = time.time() - started
        end = bench.snapshot()
        sampler.__exit__()
        if not done and len(at_marks) < len(windows):  # cut by the time limit: also the last trials before it
            last = last_window(sampler.series, end, windows[0][1] - windows[0][0], started)
            if last is not None:
                at_marks.append(last)
        rss, peak = bench.operator_rss()
        cms = bench.core.list_namespaced_config_map(ns, label_selector=f"kubetune.io/experiment={name}").items
        sizes_b = [sum(len(k) + len(v) for k, v in (cm.data or {}).items()) for cm in cms]
        raw = bench.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, _preload_content=False)
        body = cast(Any, raw).data
        obj = json.loads(body)
        trials = (obj.get("status") or {}).get("trials") or {}
        finished = sum(int(trials.get(k, 0)) for k in ("succeeded", "failed", "pruned"))
        ops = delta(end.operator_requests, base.operator_requests)
        by_verb: defaultdict[str, float] = defaultdict(float)
        for (verb, _resource), n in ops.items():
            by_verb[verb] += n
        per = max(finished, 1)
        rows.append({
            "variant": text, "algorithm": variant.algorithm,
            "early_stopping": f"median, {sizes.long_steps} steps" if variant.median else "none",
            "intermediate_writes": bench.kubelet.writes if variant.median else 0,
            "max_trials": sizes.long_trials, "parallel": sizes.long_parallel, "timeout_s": timeout,
            "trial_seconds": bench.kubelet.delay, "finished": finished,
            "succeeded": int(trials.get("succeeded", 0)), "pruned": int(trials.get("pruned", 0)),
            "failed": int(trials.get("failed", 0)), "completed": bool((obj.get("status") or {}).get("completionTime")),
            "wall_s": wall, "trials_per_min": finished / max(wall, 1e-6) * 60,
            "operator_cpu_s": end.cpu["operator"] - base.cpu["operator"],
            "operator_cpu_s_per_trial": (end.cpu["operator"] - base.cpu["operator"]) / per,
            "operator_requests_per_trial": {k: v / per for k, v in sorted(by_verb.items())},
            "annotations_per_trial": (bench.kubelet.counts["annotations"] - annotations_before) / per,
            "rss_mib": rss / 2**20, "peak_rss_mib": peak / 2**20, "configmaps": len(cms),
            "configmap_bytes_total": sum(sizes_b), "configmap_bytes_max": max(sizes_b, default=0),
            "experiment_bytes": len(body), "status_bytes": len(json.dumps(obj.get("status") or {},
                                                                          separators=(",", ":"))),
            "marks": at_marks, "operator_version": version, "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        })
        log(f"long: {text}: {finished} finished in {wall:.0f} s")
        bench.delete_namespace(ns)
        if checkpoint is not None:
            checkpoint(rows)
    bench.kubelet.steps, bench.kubelet.writes = 0, None
    return {"rows": rows, "windows": windows}


# -- profiling -----------------------------------------------------------------------------------------------------


def start_profiler(pid: int, out: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy twice: every thread that is not idle (where the time goes, waiting on the API included), and only
    the thread holding the GIL (where the CPU goes). Blocking mode (it pauses the process 25 times a second):
    ``--nonblocking`` reads torn frames under this load and py-spy panics."""
    return [subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "25", "--format", "raw",
                              "--output", str(out.with_suffix(suffix)), *extra],
                             stdout=subprocess.DEVNULL, stderr=open(out.with_suffix(suffix + ".log"), "wb"),
                             start_new_session=True)
            for suffix, extra in ((".raw", []), (".gil.raw", ["--gil"]))]


def stop_profiler(procs: list[subprocess.Popen[bytes]], out: Path) -> dict[str, Any] | None:
    for proc in procs:
        os.killpg(proc.pid, signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    raw, gil = out.with_suffix(".raw"), out.with_suffix(".gil.raw")
    if not raw.exists():
        log("py-spy wrote no profile: " + out.with_suffix(".raw.log").read_text(errors="replace")[-2000:])
        return None
    report = summarize_profile(raw.read_text(errors="replace"))
    if gil.exists():
        report["gil"] = summarize_profile(gil.read_text(errors="replace"))
    return report


def summarize_profile(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks (``a;b;c N`` lines)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        own[_frame(frames[-1])] += n
        for f in {_frame(f) for f in frames}:
            inclusive[f] += n
    return {"samples": total,
            "self": [(f, n / max(total, 1)) for f, n in own.most_common(top)],
            "inclusive": [(f, n / max(total, 1)) for f, n in inclusive.most_common(top * 3)
                          if "kubetune" in f or "kopf" in f][:top]}


def _frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (package/file.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for anchor in ("kubetune", "kopf", "kubernetes", "aiohttp", "urllib3", "asyncio", "json", "ssl", "pydantic"):
        if anchor in parts:
            path = "/".join(parts[parts.index(anchor):])
            break
    else:
        path = Path(path).name
    return f"{name} ({path})"


# -- report --------------------------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "n/a" if v != v else (f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}")
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    if "first_job" in results:
        out += ["### Time to first Job", "",
                table(["condition", "experiments", "p50 (s)", "p99 (s)", "max (s)"],
                      [[r["condition"], r["experiments"], r["p50_s"], r["p99_s"], r["max_s"]]
                       for r in results["first_job"]["rows"]]), ""]
    if "turnaround" in results:
        t = results["turnaround"]
        out += ["### Trial turnaround and throughput", "",
                table(["experiments x parallel", "concurrent trials", "trials", "all finished", "turnaround p50 (s)",
                       "turnaround p99 (s)", "trials/min", "pods running: mean", "peak", "operator RSS (MiB)",
                       "peak RSS (MiB)"],
                      [[r["config"], r["concurrent"], r["trials"], "yes" if r["all_finished"] else "no",
                        r["turnaround_p50_s"], r["turnaround_p99_s"], r["trials_per_min"],
                        r.get("running_mean", "n/a"), r.get("running_peak", "n/a"), r["operator_rss_mib"],
                        r["operator_peak_rss_mib"]] for r in t["rows"]]), ""]
        versions = sorted({r.get("operator_version", "") for r in t["rows"]} - {""})
        if versions:
            out += ["Operator version: " + "; ".join(versions) + ".", ""]
        out += ["Where the turnaround goes (p50 of each part; the Job controller's parts are seen on a Job watch):",
                "", table(["experiments x parallel", "annotation -> Job Complete (Job controller)",
                           "Job Complete -> next Job (operator)", "Job -> its pod (Job controller)"],
                          [[r["config"], r["job_complete_p50_s"], r["operator_p50_s"], r["pod_created_p50_s"]]
                           for r in t["rows"]]), ""]
        procs = [k for k in t["cpu"][0] if k not in ("config", "window_s")] if t["cpu"] else []
        out += ["### CPU seconds per trial", "",
                table(["experiments x parallel", *procs], [[r["config"], *[r[p] for p in procs]] for r in t["cpu"]]),
                ""]
        verbs = sorted({v for r in t["operator_requests"] for v in r["per_trial"]})
        out += ["### Operator API requests per trial, by verb", "",
                table(["experiments x parallel", *verbs, "total"],
                      [[r["config"], *[r["per_trial"].get(v, 0.0) for v in verbs], sum(r["per_trial"].values())]
                       for r in t["operator_requests"]]), ""]
        if t["operator_requests"]:
            last = t["operator_requests"][-1]
            out += [f"By resource ({last['config']}):", "",
                    table(["verb resource", "per trial"], [[k, v] for k, v in last["by_resource"].items()]), ""]
        verbs = sorted({v for r in t["apiserver_requests"] for v in r["per_trial"]})
        out += ["### All API server requests per trial (every client), by verb", "",
                table(["experiments x parallel", *verbs], [[r["config"], *[r["per_trial"].get(v, 0.0) for v in verbs]]
                                                          for r in t["apiserver_requests"]]), ""]
        flows = sorted({v for r in t["apiserver_requests"] for v in r.get("by_flow_schema", {})})
        out += ["By API Priority and Fairness flow schema (exempt: admin clients = the operator, the benchmark "
                "kubelet and harness; kube-system-service-accounts: the controllers), and the "
                "kube-controller-manager's log lines about client-side throttling:", "",
                table(["experiments x parallel", *flows, "kcm throttling lines"],
                      [[r["config"], *[r.get("by_flow_schema", {}).get(f, 0.0) for f in flows],
                        r.get("kcm_throttling_lines", 0)] for r in t["apiserver_requests"]]), ""]
        if t.get("profile"):
            p = t["profile"]
            out += [f"### Operator profile (py-spy, {p['samples']} samples of non-idle threads, largest "
                    "configuration)", "",
                    "Own time:", "", table(["function", "share"], [[f, f"{s:.1%}"] for f, s in p["self"]]), "",
                    "Inclusive time (kubetune and kopf frames):", "",
                    table(["function", "share"], [[f, f"{s:.1%}"] for f, s in p["inclusive"]]), ""]
            if p.get("gil"):
                g = p["gil"]
                out += [f"CPU: only the thread holding the GIL ({g['samples']} samples). Own time:", "",
                        table(["function", "share"], [[f, f"{s:.1%}"] for f, s in g["self"]]), "",
                        "Inclusive:", "", table(["function", "share"], [[f, f"{s:.1%}"] for f, s in g["inclusive"]]),
                        ""]
    if "long" in results:
        rows = results["long"]["rows"]
        out += ["### Long experiments", "",
                table(["algorithm", "early stopping", "maxTrials", "finished", "pruned", "completed", "wall (s)",
                       "trials/min", "operator CPU (s)", "CPU s/trial", "RSS at the end (MiB)", "peak RSS (MiB)",
                       "load average (1 min) start -> end", "operator version"],
                      [[r["algorithm"], r["early_stopping"], r["max_trials"], r["finished"], r["pruned"],
                        "yes" if r["completed"] else f"no (time limit {r.get('timeout_s', 0):.0f} s)", r["wall_s"],
                        r["trials_per_min"], r["operator_cpu_s"], r.get("operator_cpu_s_per_trial", float("nan")),
                        r["rss_mib"], r["peak_rss_mib"],
                        f"{r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f}" if "loadavg_before" in r else "",
                        r.get("operator_version", "")] for r in rows]), "",
                "Result objects at the end (ConfigMaps of trial records: data bytes; the TuningExperiment as "
                "served, and its status alone), operator API requests and annotation patches per trial:", "",
                table(["algorithm", "early stopping", "result ConfigMaps", "bytes total", "bytes max",
                       "experiment bytes", "status bytes", "operator requests/trial", "annotation patches/trial"],
                      [[r["algorithm"], r["early_stopping"], r["configmaps"], r["configmap_bytes_total"],
                        r["configmap_bytes_max"], r.get("experiment_bytes", float("nan")),
                        r.get("status_bytes", float("nan")),
                        ", ".join(f"{k} {v:.2f}" for k, v in (r.get("operator_requests_per_trial") or {}).items()),
                        r.get("annotations_per_trial", float("nan"))] for r in rows]), "",
                "Reconcile duration (operator histogram `kubetune_reconcile_seconds`; p50/p99 interpolated within "
                "its buckets) while the finished trials grew to each mark; planning = `kubetune_suggestion_seconds`:",
                "",
                table(["algorithm", "early stopping", "finished trials", "reconciles", "reconcile mean (s)",
                       "reconcile p50 (s)", "reconcile p99 (s)", "planning mean (s)", "trials/min in window",
                       "elapsed (s)"],
                      [[r["algorithm"], r["early_stopping"], f"{m.get('from_finished', '?')} -> {m['finished']}",
                        m.get("reconciles", "?"), m["reconcile_mean_s"], m["reconcile_p50_s"], m["reconcile_p99_s"],
                        m["suggestion_mean_s"], m.get("trials_per_min", float("nan")), m["elapsed_s"]]
                       for r in rows for m in r["marks"]]), ""]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    return {"nproc": os.cpu_count(), "cpu": model, "memory_gib": round(mem / 2**30, 1),
            "python": platform.python_version(), "loadavg": os.getloadavg()}


def busy_processes(exclude: set[int], limit: int = 8) -> list[str]:
    """Other processes that used the most CPU over one second (what else ran)."""
    def ticks() -> dict[int, tuple[float, str]]:
        out = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) not in exclude:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    out[int(d.name)] = (cpu_seconds(int(d.name)), (d / "comm").read_text().strip())
        return out
    a = ticks()
    time.sleep(1.0)
    b = ticks()
    used = sorted(((b[p][0] - a[p][0], b[p][1]) for p in b if p in a), reverse=True)
    return [f"{name} {share:.0%}" for share, name in used[:limit] if share >= 0.05]


# -- main ----------------------------------------------------------------------------------------------------------


SCENARIOS = ("first-job", "turnaround", "long")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small smoke run (what CI runs)")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help="comma-separated scenarios: first-job, turnaround, long")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count by this")
    parser.add_argument("--turnaround", help="experiments x parallel of the turnaround scenario, e.g. 100x10,10x10")
    parser.add_argument("--long-trials", type=int, help="trials of each long experiment (maxTrials)")
    parser.add_argument("--long-timeout", type=float, help="seconds each long experiment may run")
    parser.add_argument("--long-variants", help="comma-separated long experiments, ALGORITHM[+median][@SECONDS], "
                        "e.g. random,tpe@900,random+median (default: random,tpe,bayesian,random+median)")
    parser.add_argument("--rounds", type=int, help="trials per parallel slot in the turnaround scenario")
    parser.add_argument("--trial-seconds", type=float, help="how long a trial of the turnaround scenario runs")
    parser.add_argument("--profile", action="store_true", help="py-spy on the operator (largest turnaround)")
    parser.add_argument("--kcm-flag", action="append", default=[], metavar="FLAG",
                        help="an extra kube-controller-manager flag, e.g. --kcm-flag=--concurrent-job-syncs=50")
    parser.add_argument("--out", type=Path, help="write results.json and results.md here (instead of the "
                        "dated result file and docs/benchmarks-operator.md)")
    parser.add_argument("--operator-source", type=Path, metavar="DIR",
                        help="run the kubetune package in DIR (e.g. an earlier commit's operator/, from git archive) "
                        "instead of the working tree's")
    parser.add_argument("--from-json", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: write the result file and the docs block again from a results JSON")
    args = parser.parse_args(argv)
    if args.from_json:
        write(json.loads(args.from_json.read_text()), args.out)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the cluster and the operator
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.scale != 1.0:
        sizes = sizes.scaled(args.scale)
    if args.turnaround:
        sizes.turnaround = tuple((int(e), int(p)) for e, p in (c.strip().split("x") for c in
                                                                args.turnaround.split(",") if c.strip()))
    if args.long_trials:
        sizes.long_trials = args.long_trials
    if args.long_timeout:
        sizes.long_timeout = args.long_timeout
    if args.long_variants:
        sizes.long_variants = tuple(v.strip() for v in args.long_variants.split(",") if v.strip())
    try:
        for v in sizes.long_variants:
            Variant.parse(v)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds:
        sizes.rounds = args.rounds
    if args.trial_seconds:
        sizes.trial_seconds = args.trial_seconds
    if args.operator_source:
        if not (args.operator_source / "kubetune" / "__init__.py").is_file():
            parser.error(f"no kubetune package in {args.operator_source}")
        Operator.source = args.operator_source.resolve()
    only = [s for s in SCENARIOS if s in {s.strip() for s in args.only.split(",")}]
    unknown = {s.strip() for s in args.only.split(",") if s.strip()} - set(SCENARIOS)
    if unknown or not only:
        parser.error(f"unknown scenarios: {sorted(unknown)}")

    command = "python benchmarks/operator_scale.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {"command": command.strip(), "machine": machine(), "scenarios": only,
                               "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                               "sizes": dataclasses.asdict(sizes), "busy_before": busy_processes({os.getpid()}),
                               "operator_version_at_start": operator_version()}
    started = time.time()
    bin_dir = ensure_binaries()
    TunedControlPlane.kcm_flags = tuple(args.kcm_flag)
    results["kcm_flags"] = list(args.kcm_flag)
    with TunedControlPlane(bin_dir) as cp:
        cp.kubectl("apply", "--server-side", "-f", str(CRD))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/tuningexperiments.kubetune.io")
        work = Path(cp.workdir) / "bench"
        work.mkdir(parents=True, exist_ok=True)
        bench = Bench(cp, work)

        def checkpoint(scenario: str, value: Any) -> None:
            """Results so far, written after each step: a run cut short keeps what it measured."""
            results[scenario] = value
            results["kubelet"] = dict(bench.kubelet.counts)
            results["kubelet_errors"] = list(bench.kubelet.errors[:20])
            results["wall_s"] = time.time() - started
            results["machine"]["loadavg_end"] = os.getloadavg()
            write(results, args.out, partial=True)
        try:
            if "first-job" in only:
                checkpoint("first_job", scenario_first_job(bench, sizes))
                print(render({"first_job": results["first_job"]}), flush=True)
            if "turnaround" in only:
                checkpoint("turnaround", scenario_turnaround(bench, sizes, args.profile, work))
                print(render({"turnaround": results["turnaround"]}), flush=True)
            if "long" in only:
                results["long"] = scenario_long(bench, sizes, lambda rows: checkpoint("long", {"rows": rows}))
                print(render({"long": results["long"]}), flush=True)
            results["kubelet"] = dict(bench.kubelet.counts)
            results["kubelet_errors"] = list(bench.kubelet.errors[:20])
            results["busy_after"] = busy_processes({os.getpid(), bench.operator.pid, *bench.pids.values()})
        finally:
            bench.close()
    results["wall_s"] = time.time() - started
    results["machine"]["loadavg_end"] = os.getloadavg()
    write(results, args.out)
    return 0


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    end = m.get("loadavg_end") or [float("nan")] * 3
    return "\n".join([
        f"Run {results['started']} ({results['wall_s'] / 60:.1f} min): `{results['command']}`", "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}; load average at "
        f"the start {m['loadavg'][0]:.2f}/{m['loadavg'][1]:.2f}/{m['loadavg'][2]:.2f}, at the end "
        f"{end[0]:.2f}/{end[1]:.2f}/{end[2]:.2f}.", "",
        "Other processes using CPU at the start: " + (", ".join(results["busy_before"]) or "none") + "; at the end: "
        + (", ".join(results.get("busy_after") or []) or "none") + ".", "",
        f"Operator version at the start: {results.get('operator_version_at_start', 'not recorded')}.", "",
        f"Sizes: `{json.dumps(results['sizes'])}`; extra kube-controller-manager flags: "
        f"{' '.join(results.get('kcm_flags') or []) or 'none (its defaults)'}.",
        "",
        f"Benchmark kubelet: `{json.dumps(results.get('kubelet', {}))}`" + (
            f"; errors: {results['kubelet_errors']}" if results.get("kubelet_errors") else ""), ""])


def markers(scenarios: list[str]) -> tuple[str, str]:
    """The docs block of a run of every scenario, or of a run of some (each set has a block of its own)."""
    if list(scenarios) == list(SCENARIOS):
        return DOC_START, DOC_END
    name = ",".join(scenarios)
    return f"<!-- operator-scale results ({name}): start -->", f"<!-- operator-scale results ({name}): end -->"


def write(results: dict[str, Any], out: Path | None, partial: bool = False) -> None:
    """The results JSON and Markdown; a finished run also replaces its block in docs/benchmarks-operator.md."""
    text = header(results) + "\n" + render(results)
    if partial:
        text = "(Partial: the run was still going when this was written.)\n\n" + text
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "results.md").write_text(text)
        return
    scenarios = list(results.get("scenarios") or SCENARIOS)
    date = results["started"][:10]
    suffix = "" if scenarios == list(SCENARIOS) else "-" + "-".join(scenarios)
    stamp = results["started"][11:16].replace(":", "")
    path = ROOT / "benchmarks" / "results" / f"operator-scale-{date}-{stamp}{suffix}.md"
    path.write_text(f"# Operator at cluster scale, {date}\n\n" + text)
    (path.with_suffix(".json")).write_text(json.dumps(results, indent=1, default=str))
    if partial:
        return
    doc = ROOT / "docs" / "benchmarks-operator.md"
    start, end = markers(scenarios)
    block = f"{start}\n{text}\n{end}"
    current = doc.read_text() if doc.exists() else f"# Operator at cluster scale\n\n{start}\n{end}\n"
    if start in current and end in current:
        head, rest = current.split(start, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current += "\n" + block + "\n"
    doc.write_text(current)
    print(f"wrote {path.relative_to(ROOT)} and the results block of {doc.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
