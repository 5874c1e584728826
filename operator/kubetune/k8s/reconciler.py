"""One idempotent reconcile per experiment: observe, record, plan, apply, report.

Watch handlers (see :mod:`kubetune.k8s.handlers.watch`) keep an in-memory view of every experiment and of the
labelled trial Jobs and Pods, and wake the experiment's worker. A worker is an asyncio task that runs
:meth:`ExperimentWorker.reconcile` whenever something changed (and every ``RESYNC_SECONDS`` regardless). Blocking
work (API calls, the suggestion engine) runs in worker threads, so the event loop never waits on it.

No finalizer is needed: deleting an experiment deletes its Jobs and result ConfigMaps through owner references,
and a worker whose experiment disappeared from the view stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from pydantic import ValidationError

from ..plan import Plan, make_plan
from ..spec import ExperimentSpec, check_algorithm
from ..template import template_problems, trial_name
from ..trials import Trial, TrialState
from ..validation import Problem, rule_problems
from . import events, prometheus
from .api import Api, ApiException, api
from .jobs import build_job
from .observe import ClusterView, JobSummary, PodSummary, lost_trial, merge_pod, observe_trial
from .status import changed, running_status, stalled_status
from .store import TrialStore

log = logging.getLogger("kubetune.reconciler")

Key = tuple[str, str]
RESYNC_SECONDS = 30.0
DEBOUNCE_SECONDS = 0.2
KEEP_FINISHED_JOBS = 10
"""Finished trial Jobs kept for `kubectl logs` (the newest ones); older ones go once their results are recorded."""


def parse_spec(body: Mapping[str, Any]) -> tuple[ExperimentSpec | None, list[Problem]]:
    """The spec, or the problems that stall the experiment (the API server normally rejects these first)."""
    try:
        spec = ExperimentSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        return None, [Problem(".".join(str(p) for p in err["loc"]), err["msg"]) for err in e.errors()]
    problems = [Problem(f"spec{'.' if p.path else ''}{p.path}", p.message) for p in rule_problems(spec)]
    names = [p.name for p in spec.parameters]
    problems += [Problem("spec.trialTemplate." + p, m) for p, m in template_problems(spec.trial_template.spec, names)]
    if not problems:
        try:
            check_algorithm(spec)
        except (ValueError, TypeError) as e:
            problems.append(Problem("spec.algorithm", str(e).splitlines()[0]))
    return (None if problems else spec), problems


@dataclass
class ClusterState:
    """What the watch handlers have seen."""

    experiments: dict[Key, dict[str, Any]] = field(default_factory=dict)
    views: dict[Key, ClusterView] = field(default_factory=dict)

    def view(self, key: Key) -> ClusterView:
        return self.views.setdefault(key, ClusterView())


class ExperimentWorker:
    def __init__(self, key: Key, state: ClusterState, api_factory: Any = api) -> None:
        self.key = key
        self.state = state
        self.api_factory = api_factory
        self.wakeup = asyncio.Event()
        self.records: dict[int, Trial] | None = None
        self.uid: str | None = None
        self.seen_jobs: set[str] = set()
        self.last_best: int | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def api(self) -> Api:
        return self.api_factory()

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self.reconcile()
                backoff = 1.0
                timeout = RESYNC_SECONDS
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciling %s/%s failed; retrying in %.0fs", *self.key, backoff)
                timeout, backoff = backoff, min(backoff * 2, 60.0)
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(DEBOUNCE_SECONDS)
            self.wakeup.clear()

    # -- one reconcile ------------------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        body = self.state.experiments.get(self.key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        started = time.monotonic()
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        if meta.get("uid") != self.uid:  # a new experiment under the same name: start over
            self.uid, self.records, self.seen_jobs, self.last_best = meta.get("uid"), None, set(), None
        spec, problems = parse_spec(body)
        if spec is None:
            message = "; ".join(str(p) for p in problems)[:2000]
            await self._patch_status(body, stalled_status(body, "InvalidSpec", message))
            return
        store = TrialStore(self.api, body)
        if self.records is None:
            self.records = await asyncio.to_thread(store.load)
        view = self.state.view(self.key)
        trials, finished_now, missing_jobs = self._observe(spec, name, view)
        if finished_now:
            await asyncio.to_thread(store.save, finished_now)
            for t in finished_now:
                self.records[t.number] = t
                prometheus.TRIALS_FINISHED.inc(t.state.value)
                if t.state is TrialState.FAILED:
                    await asyncio.to_thread(events.post, self.api, body, "TrialFailed",
                                            f"{trial_name(name, t.number)}: {t.reason}: {t.message}", True)

        plan: Plan = await asyncio.to_thread(prometheus.timed_plan(body), spec, list(trials.values()), experiment=name)

        stopped: list[Trial] = []
        for order in plan.stop:
            t = trials[order.number]
            t.state, t.reason, t.message = order.state, order.reason, order.message
            stopped.append(t)
        if stopped:
            await asyncio.to_thread(store.save, stopped)
            for t in stopped:
                self.records[t.number] = t
                prometheus.TRIALS_FINISHED.inc(t.state.value)
                await asyncio.to_thread(self.api.delete_job, namespace, trial_name(name, t.number))
                reason = "TrialPruned" if t.state is TrialState.PRUNED else "TrialCanceled"
                await asyncio.to_thread(events.post, self.api, body, reason,
                                        f"{trial_name(name, t.number)}: {t.message}")

        created: list[Trial] = [Trial(n.number, n.params, TrialState.PENDING) for n in plan.create]
        if created:
            await asyncio.to_thread(store.save, created)
            for t in created:
                self.records[t.number] = t
        for t in created + [self.records[n] for n in missing_jobs]:
            job = build_job(body, spec, t.number, t.params)
            try:
                made = await asyncio.to_thread(self.api.create_job, namespace, job)
            except ApiException as e:
                if e.status in (400, 422):
                    await self._patch_status(body, stalled_status(body, "InvalidTrialTemplate",
                                                                  _api_message(e)))
                    return
                raise
            if made:
                prometheus.TRIALS_CREATED.inc()
                await asyncio.to_thread(events.post, self.api, body, "TrialCreated",
                                        f"{job['metadata']['name']}: {job['metadata']['annotations']['kubetune.io/parameters']}")
        if stopped or created:  # counts and outcome as they are now
            plan = await asyncio.to_thread(make_plan, spec, self._current(trials) + created, experiment=name,
                                           suggest=False)

        await self._cleanup_jobs(namespace, view)
        if plan.best is not None and plan.best.number != self.last_best:
            if self.last_best is not None or plan.counts.succeeded == 1:
                value = plan.best.objective_value(spec.objective)
                await asyncio.to_thread(events.post, self.api, body, "BestTrialImproved",
                                        f"{trial_name(name, plan.best.number)}: {spec.objective.metric}={value:g}")
            self.last_best = plan.best.number
        if plan.finished and (body.get("status") or {}).get("completionTime") is None:
            assert plan.outcome is not None
            await asyncio.to_thread(events.post, self.api, body,
                                    "ExperimentSucceeded" if plan.outcome.succeeded else "ExperimentFailed",
                                    f"{plan.outcome.reason}: {plan.outcome.message}", not plan.outcome.succeeded)
        await self._patch_status(body, running_status(body, spec, plan))
        prometheus.RECONCILE_SECONDS.observe(time.monotonic() - started)

    def _current(self, trials: dict[int, Trial]) -> list[Trial]:
        assert self.records is not None
        return [self.records[n] if n in self.records and self.records[n].state.finished else t
                for n, t in trials.items()]

    def _observe(self, spec: ExperimentSpec, name: str, view: ClusterView) -> tuple[dict[int, Trial], list[Trial], list[int]]:
        """Trials as of now; the ones that just finished (to record); pending ones whose Job must be (re)made."""
        assert self.records is not None
        trials: dict[int, Trial] = {}
        finished_now: list[Trial] = []
        missing: list[int] = []
        jobs_by_number: dict[int, JobSummary] = {j.number: j for j in view.jobs.values()}
        self.seen_jobs |= set(view.jobs)
        for number in sorted(set(self.records) | set(jobs_by_number)):
            rec = self.records.get(number)
            if rec is not None and rec.state.finished:
                trials[number] = rec
                continue
            job = jobs_by_number.get(number)
            if job is None:
                assert rec is not None
                if trial_name(name, number) in self.seen_jobs:
                    obs = lost_trial(rec)
                else:
                    trials[number] = rec
                    missing.append(number)
                    continue
            elif job.deleting:
                trials[number] = rec or Trial(number, dict(job.params), TrialState.RUNNING)
                continue
            else:
                obs = observe_trial(spec, job, view.pods_of(job.name), rec)
            trials[number] = obs.trial
            if obs.final:
                finished_now.append(obs.trial)
        return trials, finished_now, missing

    async def _cleanup_jobs(self, namespace: str, view: ClusterView) -> None:
        assert self.records is not None
        done = sorted(
            (j for j in view.jobs.values()
             if not j.deleting and j.number in self.records and self.records[j.number].state.finished),
            key=lambda j: j.number,
        )
        for job in done[: max(len(done) - KEEP_FINISHED_JOBS, 0)]:
            await asyncio.to_thread(self.api.delete_job, namespace, job.name)

    async def _patch_status(self, body: Mapping[str, Any], status: dict[str, Any]) -> None:
        old = body.get("status") or {}
        if not changed(old, status):
            return
        meta = body["metadata"]
        try:
            await asyncio.to_thread(self.api.patch_status, meta["namespace"], meta["name"], status)
        except ApiException as e:
            if e.status != 404:
                raise
            return
        # Keep our copy current until the watch delivers the new object.
        merged = {**old, **{k: v for k, v in status.items() if v is not None}}
        for k, v in status.items():
            if v is None:
                merged.pop(k, None)
        current = self.state.experiments.get(self.key)
        if current is not None and current["metadata"].get("uid") == meta.get("uid"):
            current["status"] = merged


def _api_message(e: ApiException) -> str:
    import json

    try:
        return str(json.loads(e.body).get("message", e.reason))[:2000]
    except (ValueError, TypeError, AttributeError):
        return str(e.reason)


class Reconciler:
    """Owns one worker per experiment."""

    def __init__(self, api_factory: Any = api) -> None:
        self.state = ClusterState()
        self.workers: dict[Key, ExperimentWorker] = {}
        self.api_factory = api_factory
        self.leading = True
        """False while another replica holds the leader Lease (see leader.py): the view is fed, no worker runs."""

    def experiment_changed(self, key: Key, body: dict[str, Any] | None) -> None:
        if body is None:
            self.state.experiments.pop(key, None)
            self.state.views.pop(key, None)
            worker = self.workers.pop(key, None)
            if worker and worker.task:
                worker.task.cancel()
            prometheus.EXPERIMENTS.set(len(self.state.experiments))
            return
        self.state.experiments[key] = body
        prometheus.EXPERIMENTS.set(len(self.state.experiments))
        self.wake(key)

    def job_changed(self, key: Key, name: str, summary: JobSummary | None) -> None:
        view = self.state.view(key)
        if summary is None:
            view.jobs.pop(name, None)
            for pod in [p for p in view.pods.values() if p.job == name]:  # keeps the view bounded
                view.pods.pop(pod.name, None)
        else:
            view.jobs[name] = summary
        self.wake(key)

    def pod_changed(self, key: Key, name: str, summary: PodSummary | None) -> None:
        view = self.state.view(key)
        merged = merge_pod(view.pods.get(name), summary, name)
        if merged is not None:
            view.pods[name] = merged
        self.wake(key)

    def wake(self, key: Key) -> None:
        if key not in self.state.experiments or not self.leading:
            return
        worker = self.workers.get(key)
        if worker is None or worker.task is None or worker.task.done():
            worker = self.workers[key] = worker or ExperimentWorker(key, self.state, self.api_factory)
            worker.task = asyncio.get_running_loop().create_task(worker.run(), name=f"kubetune:{key[0]}/{key[1]}")
        worker.wakeup.set()

    async def stop(self) -> None:
        tasks = [w.task for w in self.workers.values() if w.task]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.workers.clear()  # a later leadership starts from the cluster, not from what this replica cached
