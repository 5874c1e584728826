"""The operator's Prometheus metrics (``prometheus_client``), served on their own port by a small aiohttp app.

Everything lives in one :data:`REGISTRY` (plus the process collector: CPU seconds, resident memory, open files).
The reconciler reports through a few objects here; the timings that span a reconcile (trial turnaround, time to
the first Job) are kept per worker task, so concurrent experiments never mix their clocks:

* ``kubetune_trial_turnaround_seconds``: from the reconcile recording a finished trial to the creation of the
  Job that takes its place (one observation per new Job that follows finished trials in the same reconcile);
* ``kubetune_time_to_first_job_seconds``: from the experiment's ``creationTimestamp`` (whole seconds, as the API
  server stamps it) to the creation of its first trial Job;
* ``kubetune_suggestion_seconds``: one call of the planner (early-stopping decisions and the suggestion engine).
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

prometheus_client.disable_created_metrics()  # no `_created` series: they double the output and nobody graphs them

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
MAX_PENDING_FINISHES = 1024
"""Finished trials remembered per worker while they wait for the Job that replaces them (bounded)."""


class LabelledCounter:
    """A counter with one label, incremented as ``inc(label_value)``."""

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.metric = Counter(name, documentation, [label], registry=REGISTRY)

    def inc(self, label_value: str = "", by: float = 1.0) -> None:
        self.metric.labels(label_value).inc(by)


class _TrialsCreated:
    """``kubetune_trials_created_total``; each increment also closes the worker's pending timings."""

    def __init__(self) -> None:
        self.metric = Counter("kubetune_trials_created_total", "Trial Jobs created.", registry=REGISTRY)

    def inc(self) -> None:
        self.metric.inc()
        now = time.time()
        timings = _timings(create=False)
        if timings is None:
            return
        with _lock:
            first = timings.first_job_due
            timings.first_job_due = None
            finished_at = timings.finished.popleft() if timings.finished else None
        if first is not None:
            TIME_TO_FIRST_JOB.observe(max(now - first, 0.0))
        if finished_at is not None:
            TRIAL_TURNAROUND.observe(max(now - finished_at, 0.0))


class _TrialsFinished(LabelledCounter):
    """``kubetune_trials_finished_total{state}``; each increment starts a turnaround clock."""

    def inc(self, label_value: str = "", by: float = 1.0) -> None:
        super().inc(label_value, by)
        timings = _timings(create=True)
        if timings is not None:
            with _lock:
                timings.finished.append(time.time())


class _ReconcileSeconds:
    """``kubetune_reconcile_seconds`` (histogram); the end of a reconcile drops the worker's unmatched finishes
    (the experiment created no Job to replace them: it finished, or it is at its parallelism)."""

    def __init__(self) -> None:
        self.metric = Histogram("kubetune_reconcile_seconds", "Time spent in one experiment reconcile.",
                                buckets=FAST_BUCKETS, registry=REGISTRY)

    def observe(self, seconds: float) -> None:
        self.metric.observe(seconds)
        timings = _timings(create=False)
        if timings is not None:
            with _lock:
                timings.finished.clear()


TRIALS_CREATED = _TrialsCreated()
TRIALS_FINISHED = _TrialsFinished("kubetune_trials_finished_total", "Trials recorded as finished, by state.",
                                  "state")
EXPERIMENTS = Gauge("kubetune_experiments", "Experiments watched.", registry=REGISTRY)
RECONCILE_SECONDS = _ReconcileSeconds()
TRIAL_TURNAROUND = Histogram(
    "kubetune_trial_turnaround_seconds",
    "From recording a finished trial to creating the Job of the trial that replaces it.",
    buckets=FAST_BUCKETS, registry=REGISTRY)
SUGGESTION_SECONDS = Histogram(
    "kubetune_suggestion_seconds", "Time in one planning call (early stopping and the suggestion engine).",
    buckets=FAST_BUCKETS, registry=REGISTRY)
TIME_TO_FIRST_JOB = Histogram(
    "kubetune_time_to_first_job_seconds",
    "From an experiment's creationTimestamp (whole seconds) to the creation of its first trial Job.",
    buckets=SLOW_BUCKETS, registry=REGISTRY)
API_ERRORS = Counter("kubetune_api_errors_total", "Kubernetes API calls that failed, by verb and HTTP status code.",
                     ["verb", "code"], registry=REGISTRY)
EVENTS_DROPPED = Counter("kubetune_events_dropped_total",
                         "Kubernetes Events not posted because too many were waiting to be posted.",
                         registry=REGISTRY)
RUNNING_TRIALS = Gauge("kubetune_running_trials", "Trial Jobs that exist and have not finished (all experiments).",
                       registry=REGISTRY)
RUNNING_EXPERIMENTS = Gauge("kubetune_running_experiments", "Experiments watched that have not finished.",
                            registry=REGISTRY)


def count_api_error(verb: str, code: int | str) -> None:
    """One failed API call (``code`` is the HTTP status, or 0 when no response arrived)."""
    API_ERRORS.labels(verb, str(code)).inc()


# -- per-worker clocks -----------------------------------------------------------------------------------------


class _Timings:
    __slots__ = ("finished", "first_job_due")

    def __init__(self) -> None:
        self.finished: deque[float] = deque(maxlen=MAX_PENDING_FINISHES)
        self.first_job_due: float | None = None


_lock = threading.Lock()
_by_task: weakref.WeakKeyDictionary[asyncio.Task[Any], _Timings] = weakref.WeakKeyDictionary()


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (unit tests, worker threads)
        return None


def _timings(create: bool, task: asyncio.Task[Any] | None = None) -> _Timings | None:
    task = task or _current_task()
    if task is None:
        return None
    with _lock:
        timings = _by_task.get(task)
        if timings is None and create:
            timings = _by_task[task] = _Timings()
        return timings


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def timed_plan(experiment: Mapping[str, Any]) -> Callable[..., Any]:
    """``make_plan``, timed into ``kubetune_suggestion_seconds``. Call it on the worker's task (it binds the task);
    the returned function may run in a thread. A plan that starts the experiment's first trials (none created
    before, counting the plan's history) arms the time to first Job, observed when the next Job is created on this
    task."""
    from ..plan import make_plan

    task = _current_task()
    created = _epoch((experiment.get("metadata") or {}).get("creationTimestamp"))

    def plan(spec: Any, trials: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = make_plan(spec, trials, **kwargs)
        SUGGESTION_SECONDS.observe(time.perf_counter() - started)
        if result.create and result.counts.created == 0 and created is not None and task is not None:
            timings = _timings(create=True, task=task)
            assert timings is not None
            with _lock:
                timings.first_job_due = created
        return result

    return plan


# -- gauges read from the reconciler at scrape time -----------------------------------------------------------


def _running_trials() -> float:
    from .handlers.state import reconciler

    return float(sum(1 for view in list(reconciler().state.views.values()) for job in list(view.jobs.values())
                     if not (job.complete or job.failed or job.deleting)))


def _running_experiments() -> float:
    from .handlers.state import reconciler

    return float(sum(1 for body in list(reconciler().state.experiments.values())
                     if not (body.get("status") or {}).get("completionTime")))


RUNNING_TRIALS.set_function(_running_trials)
RUNNING_EXPERIMENTS.set_function(_running_experiments)


# -- exposition ------------------------------------------------------------------------------------------------


def render() -> str:
    """Every metric in the Prometheus text format."""
    return prometheus_client.generate_latest(REGISTRY).decode()


async def serve(port: int) -> web.AppRunner:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=prometheus_client.generate_latest(REGISTRY),
                            headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
