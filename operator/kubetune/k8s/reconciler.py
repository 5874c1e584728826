"""One idempotent reconcile per experiment: observe, record, plan, apply, report.

Watch handlers (see :mod:`kubetune.k8s.handlers.watch`) keep an in-memory view of every experiment and of the
labelled trial Jobs and Pods, and wake the experiment's worker when what it reads of them changed. A worker is an
asyncio task that runs :meth:`ExperimentWorker.reconcile` whenever something changed (and every ``RESYNC_SECONDS``
regardless); changes that arrive while a reconcile runs are taken in together by the next one. Blocking work (API
calls, the suggestion engine) runs on the threads of :func:`kubetune.k8s.api.executor`, so the event loop never
waits on it. Within one reconcile, the Job creates and deletes run concurrently (at most ``CONCURRENT_CALLS`` at
once), the finished, stopped and new trials are recorded in one write per ConfigMap shard, and Events are handed
to :mod:`kubetune.k8s.events` without waiting for them.

No finalizer is needed: deleting an experiment deletes its Jobs and result ConfigMaps through owner references,
and a worker whose experiment disappeared from the view stops.

Memory stays bounded however many trials an experiment runs: the view holds the Jobs that exist (active ones and
the newest finished ones kept for logs) and their pods, a deleted Job's pods go with it, a view whose experiment
and objects are all gone is dropped, and per-trial worker state is kept only while the trial is active. What grows
is the records (:class:`Records`), one bounded record per trial (the same records the ConfigMaps hold), with the
plan's :class:`~kubetune.plan.History` of the finished ones.

A reconcile costs in proportion to the active trials, not to every trial: the records keep the numbers of the
active ones, and the history keeps what planning derives from the finished ones (the engine's observations, the
keys of their configurations, counts, the best trial, the sampler), updated as each record is stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import ValidationError

from ..checkpoints import trial_checkpoint
from ..engine import Observation
from ..plan import History, Plan, make_plan
from ..spec import ExperimentSpec, check_algorithm, initial_trial_problems
from ..template import template_problems, trial_name
from ..trials import Trial, TrialState
from ..validation import Problem, rule_problems
from ..warmstart import WarmStartResult
from . import events, prometheus
from . import labels as L
from .api import Api, ApiException, ForeignObject, api, blocking
from .jobs import build_job
from .observe import (
    ClusterView,
    JobSummary,
    PodSummary,
    completes_by_itself,
    lost_trial,
    merge_pod,
    observe_trial,
)
from .status import changed, elapsed_seconds, running_status, stalled_status
from .store import TrialStore
from .warm import SourceMissing, load_cluster

log = logging.getLogger("kubetune.reconciler")

Key = tuple[str, str]
T = TypeVar("T")
RESYNC_SECONDS = 30.0
DEBOUNCE_SECONDS = 0.0
KEEP_FINISHED_JOBS = 10
"""Finished trial Jobs kept for `kubectl logs` (the newest ones); older ones go once their results are recorded."""
CONCURRENT_CALLS = 8
"""API calls one reconcile has in flight at once (Job creates and deletes, existence checks)."""
WAKE_MARGIN_SECONDS = 0.05
"""How long after ``stopping.maxDurationSeconds`` runs out the worker wakes to end the experiment."""
UNSEEN_GRACE_SECONDS = 30.0
"""How long a Job known to exist (made by this worker, or confirmed by the API server) may stay out of the watch's
view before the API server is asked about it again."""


def parse_spec(body: Mapping[str, Any]) -> tuple[ExperimentSpec | None, list[Problem]]:
    """The spec, or the problems that stall the experiment (the API server normally rejects these first)."""
    try:
        spec = ExperimentSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        return None, [Problem(".".join(str(p) for p in err["loc"]), err["msg"]) for err in e.errors()]
    problems = [Problem(f"spec{'.' if p.path else ''}{p.path}", p.message) for p in rule_problems(spec)]
    if not problems:
        problems += [Problem(f"spec.{path}", message) for path, message in initial_trial_problems(spec)]
    names = [p.name for p in spec.parameters]
    problems += [Problem("spec.trialTemplate." + p, m)
                 for p, m in template_problems(spec.trial_template.spec, names, spec.conditional_names)]
    if not problems:
        try:
            check_algorithm(spec)
        except (ValueError, TypeError) as e:
            problems.append(Problem("spec.algorithm", str(e).splitlines()[0]))
    return (None if problems else spec), problems


@dataclass(frozen=True)
class Timing:
    """The worker loop's clock: resync period, an optional pause before each reconcile (none by default: changes
    that arrive during a reconcile are batched into the next one), and the backoff after a failed reconcile."""

    resync: float = RESYNC_SECONDS
    debounce: float = DEBOUNCE_SECONDS
    backoff: float = 1.0
    backoff_max: float = 60.0


class Records(dict[int, Trial]):
    """The experiment's trial records by number, with the numbers of the active ones and the plan's history of the
    finished ones, both kept up to date as records are stored."""

    def __init__(self, records: Mapping[int, Trial] | None = None) -> None:
        super().__init__()
        self.active: set[int] = set()
        self.history: History | None = None
        for number, trial in (records or {}).items():
            self[number] = trial

    def __setitem__(self, number: int, trial: Trial) -> None:
        previous = self.get(number)
        super().__setitem__(number, trial)
        if "active" not in self.__dict__:  # unpickling sets the items before the attributes
            return
        if trial.state.finished:
            self.active.discard(number)
            if self.history is not None:
                self.history.add(trial)
        else:
            self.active.add(number)
            if previous is not None and previous.state.finished:
                self.history = None  # not expected (a record is final once finished): built again when asked

    def restore(self, previous: Mapping[int, Trial | None]) -> None:
        """Put back the records as they were (``None``: there was none), after they could not be stored."""
        for number, trial in previous.items():
            if trial is not None:
                self[number] = trial
            elif number in self:
                old = self.pop(number)
                self.active.discard(number)
                if old.state.finished:
                    self.history = None

    def sync(self) -> None:
        """Take in active records whose trial object was marked finished in place."""
        for number in sorted(n for n in self.active if self[n].state.finished):
            self[number] = self[number]

    def history_for(self, spec: ExperimentSpec, experiment: str, warm: Sequence[Observation] = ()) -> History:
        """The history of the finished records for ``spec`` (built again when the spec changed), with ``warm``
        (the warm start's observations, the same for one spec)."""
        self.sync()
        if self.history is None or self.history.spec != spec:
            self.history = History(spec, experiment, (t for t in self.values() if t.state.finished), warm)
        return self.history


@dataclass
class ClusterState:
    """What the watch handlers have seen."""

    experiments: dict[Key, dict[str, Any]] = field(default_factory=dict)
    views: dict[Key, ClusterView] = field(default_factory=dict)

    def view(self, key: Key) -> ClusterView:
        return self.views.setdefault(key, ClusterView())


class ExperimentWorker:
    def __init__(
        self, key: Key, state: ClusterState, api_factory: Callable[[], Api] = api, timing: Timing = Timing()
    ) -> None:
        self.key = key
        self.state = state
        self.api_factory = api_factory
        self.timing = timing
        self.wakeup = asyncio.Event()
        self.records: Records | None = None
        self.uid: str | None = None
        self.seen: set[int] = set()
        """Active trials whose Job has been seen: if it disappears before the trial finished, the trial is lost
        (not created again). Numbers leave the set once their trial is recorded as finished."""
        self.known_jobs: dict[int, float] = {}
        """Active trials whose Job exists (this worker made it, or the API server confirmed it) but the watch has not
        shown it yet, with when that was known: such a Job is neither made again nor asked about for
        ``UNSEEN_GRACE_SECONDS``. A reconcile that runs before the watch delivers a new Job would otherwise take it
        for missing."""
        self.deletes_sent: dict[str, float] = {}
        """Jobs this worker asked the API server to delete, with when: not asked again for
        ``UNSEEN_GRACE_SECONDS`` while the watch has not shown them deleting (nor gone)."""
        self.last_best: int | None = None
        self.store: TrialStore | None = None
        """The records' ConfigMaps (made with the records, and again for a new experiment of the same name)."""
        self.stops_unchecked = True
        """The records were loaded and the API server not yet asked for pods of trials they say were stopped."""
        self.parsed: tuple[tuple[Any, Any], ExperimentSpec | None, list[Problem]] | None = None
        """:func:`parse_spec`'s answer with the (uid, ``metadata.generation``) it was made for. The API server bumps
        the generation on every change of the spec (and only then), so a reconcile validates the spec only when it
        changed, not on every trial's event."""
        self.task: asyncio.Task[None] | None = None
        self.warm: WarmStartResult | None = None
        """What ``spec.warmStart`` took in, read once per experiment (uid) and warmStart spec."""
        self.warm_for: tuple[Any, ...] | None = None
        self.time_limit_at: float | None = None
        """When (``time.monotonic()``) the experiment's ``stopping.maxDurationSeconds`` runs out, while it goes on:
        the worker reconciles then, even if nothing else happens."""

    @property
    def api(self) -> Api:
        return self.api_factory()

    async def run(self) -> None:
        timing = self.timing
        backoff = timing.backoff
        while True:
            try:
                await self.reconcile()
                backoff = timing.backoff
                timeout = timing.resync
                if self.time_limit_at is not None:
                    timeout = min(timeout, max(self.time_limit_at - time.monotonic(), 0.0) + WAKE_MARGIN_SECONDS)
            except asyncio.CancelledError:
                raise
            except (ApiException, ForeignObject) as e:  # the API's own retries gave up: try again later
                log.warning("reconciling %s/%s failed: %s; retrying in %.1fs", *self.key, _describe(e), backoff)
                timeout, backoff = backoff, min(backoff * 2, timing.backoff_max)
            except Exception:
                log.exception("reconciling %s/%s failed; retrying in %.1fs", *self.key, backoff)
                timeout, backoff = backoff, min(backoff * 2, timing.backoff_max)
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            # One turn of the event loop lets the watch events already received land in the view first.
            await asyncio.sleep(timing.debounce)
            self.wakeup.clear()

    # -- one reconcile ------------------------------------------------------------------------------------------

    def _parse(self, body: Mapping[str, Any]) -> tuple[ExperimentSpec | None, list[Problem]]:
        meta = body["metadata"]
        generation = meta.get("generation")
        key = (meta.get("uid"), generation)
        if generation is not None and self.parsed is not None and self.parsed[0] == key:
            return self.parsed[1], self.parsed[2]
        spec, problems = parse_spec(body)
        self.parsed = (key, spec, problems) if generation is not None else None
        return spec, problems

    async def reconcile(self) -> None:
        body = self.state.experiments.get(self.key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        started = time.monotonic()
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        if meta.get("uid") != self.uid:  # a new experiment under the same name: start over
            self.uid, self.records, self.seen, self.last_best, self.store = meta.get("uid"), None, set(), None, None
            self.known_jobs, self.deletes_sent = {}, {}
            self.time_limit_at = None
        spec, problems = self._parse(body)
        if spec is None:
            message = "; ".join(str(p) for p in problems)[:2000]
            await self._patch_status(body, stalled_status(body, "InvalidSpec", message))
            return
        if self.store is None or self.records is None:
            self.store = TrialStore(self.api, body)
        store = self.store
        if self.records is None:
            self.records = Records(await blocking(store.load))
            self.stops_unchecked = True
        if not await self._warm_start(body, spec):
            return
        view = self.state.view(self.key)
        await self._confirm_gone(namespace, name, view)
        trials, finished_now, missing_jobs, stale_jobs = self._observe(spec, name, view)
        records = self.records

        # Plan with the finished trials taken in, then record them, the stopped and the new trials in one write per
        # shard, before any Job is created or deleted. Should that write fail, the records are put back as they were.
        previous: dict[int, Trial | None] = {}

        def keep(t: Trial) -> None:
            previous.setdefault(t.number, records.get(t.number))
            records[t.number] = t

        try:
            for t in finished_now:
                keep(t)
            history = records.history_for(spec, name, self.warm.observations if self.warm else ())
            elapsed = elapsed_seconds(body, bool(records)) if spec.stopping is not None else None
            plan: Plan = await blocking(prometheus.timed_plan(body), spec, [t for t in trials.values() if t.active],
                                        experiment=name, history=history, elapsed=elapsed)
            self.time_limit_at = None if plan.time_left is None else time.monotonic() + plan.time_left
            stopped: list[Trial] = []
            for order in plan.stop:
                t = replace(trials[order.number], state=order.state, reason=order.reason, message=order.message)
                trials[order.number] = t
                stopped.append(t)
                keep(t)
            created = [Trial(n.number, n.params, TrialState.PENDING, lineage=n.lineage,
                             checkpoint=trial_checkpoint(spec, name, n.number)) for n in plan.create]
            for t in created:
                keep(t)
            if previous:
                await blocking(store.save, [*finished_now, *stopped, *created])
        except BaseException:
            records.restore(previous)
            raise

        for t in finished_now:
            prometheus.TRIALS_FINISHED.inc(t.state.value)
            if t.state is TrialState.FAILED:
                events.emit(self.api, body, "TrialFailed", f"{trial_name(name, t.number)}: {t.reason}: {t.message}",
                            True)
            if t.truncation:  # the trial's output was cut to the record bounds
                events.emit(self.api, body, "TrialOutputTruncated", f"{trial_name(name, t.number)}: {t.truncation}",
                            True)
        for t in stopped:
            prometheus.TRIALS_FINISHED.inc(t.state.value)
            reason = "TrialPruned" if t.state is TrialState.PRUNED else "TrialCanceled"
            events.emit(self.api, body, reason, f"{trial_name(name, t.number)}: {t.message}")

        # Stopped trials' Jobs go, stale ones too (a failed delete, or a restart in between), before any new Job is
        # made: the trials running never outnumber parallelTrials. Then the new and missing Jobs are made.
        deletes = self._unsent([*stale_jobs, *(trial_name(name, t.number) for t in stopped)], view)
        if self.stops_unchecked:
            deletes += [job for job in await self._stopped_with_pods(namespace, name) if job not in deletes]
        failure: Exception | None = await self._delete_jobs(namespace, deletes)
        if failure is not None:
            raise failure
        self.stops_unchecked = False
        gone = {t.number for t in stopped}
        launch = created + [records[n] for n in missing_jobs if n not in gone]
        jobs = [build_job(body, spec, t.number, t.params, t.lineage) for t in launch]
        outcomes = await gather_calls([functools.partial(self.api.create_job, namespace, job) for job in jobs])
        invalid: ApiException | None = None
        launched: list[Trial] = []
        for t, job, made in zip(launch, jobs, outcomes):
            if isinstance(made, ApiException) and made.status in (400, 422):
                invalid = invalid or made
            elif isinstance(made, Exception):
                failure = failure or made  # the trial stays Pending: its Job is made by a later reconcile
            else:
                if made:
                    prometheus.TRIALS_CREATED.inc()
                    parameters = job["metadata"]["annotations"]["kubetune.io/parameters"]
                    events.emit(self.api, body, "TrialCreated", f"{job['metadata']['name']}: {parameters}")
                launched.append(t)
        now = time.monotonic()
        for t in launched:  # the records say the Jobs exist: a Job missing later was deleted, it is not made again
            t.state = TrialState.RUNNING
            self.known_jobs[t.number] = now
        if invalid is not None:
            if launched:
                await blocking(store.save, launched)
            await self._patch_status(body, stalled_status(body, "InvalidTrialTemplate", _api_message(invalid)))
            return

        if stopped:  # counts and outcome as they are now (stopping the last running trials may end the experiment)
            history = records.history_for(spec, name, self.warm.observations if self.warm else ())
            plan = await blocking(make_plan, spec, self._current(trials, history) + created,
                                  experiment=name, suggest=False, history=history, elapsed=elapsed)
        elif created:
            plan = after_creating(plan, len(created))
        if plan.best is not None and plan.best.number != self.last_best:
            if self.last_best is not None or plan.counts.succeeded == 1:
                value = plan.best.objective_value(spec.objective)
                events.emit(self.api, body, "BestTrialImproved",
                            f"{trial_name(name, plan.best.number)}: {spec.objective.metric}={value:g}")
            self.last_best = plan.best.number
        if plan.finished and (body.get("status") or {}).get("completionTime") is None:
            assert plan.outcome is not None
            events.emit(self.api, body, "ExperimentSucceeded" if plan.outcome.succeeded else "ExperimentFailed",
                        f"{plan.outcome.reason}: {plan.outcome.message}", not plan.outcome.succeeded)

        async def save_launched() -> None:
            if launched:
                await blocking(store.save, launched)

        last = await asyncio.gather(save_launched(), self._cleanup_jobs(namespace, view),
                                    self._patch_status(body, self._with_warm(running_status(body, spec, plan))),
                                    return_exceptions=True)
        _raise_cancelled(last)
        failure = failure or next((r for r in last if isinstance(r, Exception)), None)
        if failure is not None:
            raise failure
        prometheus.RECONCILE_SECONDS.observe(time.monotonic() - started)

    async def _warm_start(self, body: Mapping[str, Any], spec: ExperimentSpec) -> bool:
        """Read ``spec.warmStart``'s sources once (per experiment uid and warmStart spec). False when a source is
        missing before the experiment's first trial: it is Stalled (``WarmStartSourceMissing``) and no trial is
        made; the next reconcile (at the latest after ``RESYNC_SECONDS``) looks again. An experiment that has trials
        goes on without a source that disappeared, with a warning event."""
        if spec.warm_start is None:
            self.warm = self.warm_for = None
            return True
        key = (self.uid, spec.warm_start)
        if self.warm is not None and self.warm_for == key:
            return True
        meta = body["metadata"]
        started = bool(self.records)
        try:
            self.warm = await blocking(load_cluster, self.api, meta["namespace"], spec, skip_missing=started)
        except SourceMissing as e:
            await self._patch_status(body, stalled_status(body, "WarmStartSourceMissing", str(e)))
            return False
        self.warm_for = key
        missing = [s for s in self.warm.sources if s.endswith("(not found)")]
        if missing:
            events.emit(self.api, body, "WarmStartSourceMissing",
                        f"going on without {', '.join(missing)}: {self.warm.message()}", True)
        elif not started:
            events.emit(self.api, body, "WarmStart", self.warm.message())
        return True

    def _with_warm(self, status: dict[str, Any]) -> dict[str, Any]:
        if self.warm is not None:
            status["warmStart"] = self.warm.status()
        return status

    @staticmethod
    def _current(trials: dict[int, Trial], history: History) -> list[Trial]:
        """The active trials of ``trials`` that are not recorded as finished (those are in ``history``)."""
        return [t for n, t in trials.items() if t.active and n not in history]

    def _ours(self, job: JobSummary) -> bool:
        """Whether the Job belongs to this experiment (a Job left by an earlier experiment of the same name, still
        being garbage-collected, has the same name and labels but another owner uid)."""
        return not job.owner_uid or job.owner_uid == self.uid

    async def _confirm_gone(self, namespace: str, name: str, view: ClusterView) -> None:
        """Ask the API server what the view cannot tell after a restart (a watch may not have listed everything
        yet), only for the trials concerned: whether a Job the records say was created still exists (if not, it was
        deleted and the trial is lost, see :meth:`_observe`), and whether a finished Job with no pod in the view
        still has one (if not, the pod was deleted before its final state was seen: the trial ends PodDeleted)."""
        records = self.records
        assert records is not None and self.uid is not None
        uid = self.uid
        ours = {j.number: j for j in view.jobs.values() if self._ours(j)}
        now = time.monotonic()
        self.known_jobs = {n: at for n, at in self.known_jobs.items()
                           if n in records.active and n not in ours and now - at < UNSEEN_GRACE_SECONDS}
        unseen = [number for number in sorted(records.active)
                  if records[number].state is TrialState.RUNNING and number not in ours and number not in self.seen
                  and number not in self.known_jobs]
        podless = []
        for job in ours.values():
            known = records.get(job.number)
            if not (job.complete or job.failed) or job.deleting or (known is not None and known.state.finished):
                continue
            if any(not (p.job_uid and job.uid) or p.job_uid == job.uid for p in view.pods_of(job.name)):
                continue
            podless.append(job)
        if not unseen and not podless:
            return
        results = await gather_calls(
            [functools.partial(self.api.job_exists, namespace, trial_name(name, n), uid) for n in unseen]
            + [functools.partial(self.api.job_has_pods, namespace, job.name, job.uid) for job in podless])
        for number, exists in zip(unseen, results):
            if exists is False:
                self.seen.add(number)
            elif exists is True:
                self.known_jobs[number] = now
        for job, has_pods in zip(podless, results[len(unseen):]):
            if has_pods is False:
                gone = f"{job.name}/deleted"  # no pod can have this name
                view.put_pod(PodSummary(name=gone, job=job.name, phase="Unknown", deleting=True, metrics_text=None,
                                        gone=True, deleted_while_running=True, job_uid=job.uid))
        failure = next((r for r in results if isinstance(r, Exception)), None)
        if failure is not None:
            raise failure

    def _observe(
        self, spec: ExperimentSpec, name: str, view: ClusterView
    ) -> tuple[dict[int, Trial], list[Trial], list[int], list[str]]:
        """Trials as of now (the active ones, and the finished ones that still have a Job); the ones that just
        finished (to record); pending ones whose Job must be (re)made; Jobs of trials recorded as stopped that still
        run (to delete). Only active records and the view's Jobs are looked at, not every record."""
        if not isinstance(self.records, Records):
            self.records = Records(self.records)
        records = self.records
        records.sync()
        trials: dict[int, Trial] = {}
        finished_now: list[Trial] = []
        missing: list[int] = []
        stale: list[str] = []
        jobs_by_number: dict[int, JobSummary] = {j.number: j for j in view.jobs.values() if self._ours(j)}
        self.seen = {n for n in self.seen if not (n in records and records[n].state.finished)}
        self.seen |= {n for n in jobs_by_number if not (n in records and records[n].state.finished)}
        for number in sorted(records.active | set(jobs_by_number)):
            rec = records.get(number)
            job = jobs_by_number.get(number)
            if rec is not None and rec.state.finished:
                trials[number] = rec
                if (job is not None and not (job.deleting or job.complete or job.failed)
                        and not completes_by_itself(job, self._pods(view, job))):
                    stale.append(job.name)
                continue
            if job is None:
                assert rec is not None
                if number in self.seen:
                    obs = lost_trial(rec)
                elif number in self.known_jobs:  # it exists; the watch has not shown it yet
                    trials[number] = rec
                    continue
                else:
                    trials[number] = rec
                    missing.append(number)
                    continue
            elif job.deleting:
                trials[number] = rec or Trial(number, dict(job.params), TrialState.RUNNING)
                continue
            else:
                obs = observe_trial(spec, job, self._pods(view, job), rec)
            trials[number] = obs.trial
            if obs.final:
                finished_now.append(obs.trial)
        return trials, finished_now, missing, stale

    async def _stopped_with_pods(self, namespace: str, name: str) -> list[str]:
        """The Jobs of trials recorded as stopped (``Pruned``, ``Canceled``) that still have a pod, as the API server
        lists them: asked once after the records are loaded, because a stop recorded before a restart may have had
        its delete fail, and the watch may not have shown that Job yet when new Jobs are about to be made."""
        records = self.records
        assert records is not None
        if not any(t.state in (TrialState.PRUNED, TrialState.CANCELED) for t in records.values()):
            return []  # nothing was stopped (a new experiment): nothing to ask
        pods = await blocking(self.api.list_pods, namespace,
                              f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE},{L.EXPERIMENT}={name}")
        jobs: set[str] = set()
        for pod in pods:
            labels = pod.metadata.labels or {}
            try:
                number = int(labels.get(L.TRIAL_NUMBER, ""))
            except ValueError:
                continue
            rec = records.get(number)
            if rec is not None and rec.state in (TrialState.PRUNED, TrialState.CANCELED):
                jobs.add(labels.get(L.TRIAL) or trial_name(name, number))
        return sorted(jobs)

    @staticmethod
    def _pods(view: ClusterView, job: JobSummary) -> list[PodSummary]:
        """The Job's pods (not those of an earlier Job of the same name)."""
        return [p for p in view.pods_of(job.name) if not (p.job_uid and job.uid) or p.job_uid == job.uid]

    async def _cleanup_jobs(self, namespace: str, view: ClusterView) -> None:
        assert self.records is not None
        done = sorted(
            (j for j in view.jobs.values()
             if self._ours(j) and not j.deleting and j.number in self.records
             and self.records[j.number].state.finished),
            key=lambda j: j.number,
        )
        old = self._unsent([job.name for job in done[: max(len(done) - KEEP_FINISHED_JOBS, 0)]], view)
        failure = await self._delete_jobs(namespace, old)
        if failure is not None:
            raise failure

    def _unsent(self, names: Sequence[str], view: ClusterView) -> list[str]:
        """``names`` but the Jobs whose delete was sent lately and not yet seen on the watch (a reconcile that runs
        before the watch delivers the deletion would otherwise send it again)."""
        now = time.monotonic()
        self.deletes_sent = {n: at for n, at in self.deletes_sent.items()
                             if n in view.jobs and not view.jobs[n].deleting and now - at < UNSEEN_GRACE_SECONDS}
        return [n for n in names if n not in self.deletes_sent]

    async def _delete_jobs(self, namespace: str, names: Sequence[str]) -> Exception | None:
        """Delete the Jobs concurrently; the first failure, if any (the others are made all the same)."""
        results = await gather_calls([functools.partial(self.api.delete_job, namespace, n) for n in names])
        now = time.monotonic()
        for n, r in zip(names, results):
            if not isinstance(r, Exception):
                self.deletes_sent[n] = now
        return next((r for r in results if isinstance(r, Exception)), None)

    async def _patch_status(self, body: Mapping[str, Any], status: dict[str, Any]) -> None:
        old = body.get("status") or {}
        if not changed(old, status):
            return
        meta = body["metadata"]
        if not await blocking(self.api.patch_status, meta["namespace"], meta["name"], status):
            return  # the experiment is gone (404): nothing to report to
        # Keep our copy current until the watch delivers the new object.
        merged = {**old, **{k: v for k, v in status.items() if v is not None}}
        for k, v in status.items():
            if v is None:
                merged.pop(k, None)
        current = self.state.experiments.get(self.key)
        if current is not None and current["metadata"].get("uid") == meta.get("uid"):
            current["status"] = merged


async def gather_calls(calls: Sequence[Callable[[], T]], limit: int = CONCURRENT_CALLS) -> list[T | Exception]:
    """Run the blocking ``calls`` on the API threads, at most ``limit`` at once; each one's result, or the exception
    it raised (one failure does not stop the others). Cancelling the caller cancels the calls not yet started."""
    if len(calls) == 1:
        try:
            return [await blocking(calls[0])]
        except Exception as e:
            return [e]
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Callable[[], T]) -> T:
        async with semaphore:
            return await blocking(call)

    results = await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)
    _raise_cancelled(results)
    return [r for r in results if not isinstance(r, BaseException) or isinstance(r, Exception)]


def _raise_cancelled(results: Sequence[object]) -> None:
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, Exception):
            raise r


def after_creating(plan: Plan, n: int) -> Plan:
    """The summary of ``plan`` once its ``n`` new trials exist, without planning again over every trial: created
    and running go up by ``n``; the best trial stays, and so does the outcome (a plan that creates trials has none)."""
    assert plan.outcome is None
    counts = replace(plan.counts, created=plan.counts.created + n, running=plan.counts.running + n)
    return Plan(counts=counts, best=plan.best)


def _essence(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a reconcile reads of the experiment."""
    meta = body.get("metadata") or {}
    return (meta.get("uid"), meta.get("generation"), meta.get("deletionTimestamp"), meta.get("name"),
            meta.get("namespace"), body.get("spec"), body.get("status"))


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        return f"{e.status} {e.reason}"
    return str(e)[:300]


def _api_message(e: ApiException) -> str:
    import json

    try:
        return str(json.loads(e.body or "").get("message", e.reason))[:2000]
    except (ValueError, TypeError, AttributeError):
        return str(e.reason)


class Reconciler:
    """Owns one worker per experiment."""

    def __init__(self, api_factory: Callable[[], Api] = api, timing: Timing = Timing()) -> None:
        self.state = ClusterState()
        self.workers: dict[Key, ExperimentWorker] = {}
        self.api_factory = api_factory
        self.timing = timing
        self.leading = True
        """False while another replica holds the leader Lease (see leader.py): the view is fed, no worker runs."""

    def experiment_changed(self, key: Key, body: dict[str, Any] | None) -> None:
        """The experiment as the watch shows it now (``None``: deleted). The worker is woken unless only what the
        reconciler does not read changed (e.g. the echo of its own status patch: the status it wrote is kept)."""
        if body is None:
            self.state.experiments.pop(key, None)
            self.state.views.pop(key, None)
            worker = self.workers.pop(key, None)
            if worker and worker.task:
                worker.task.cancel()
            prometheus.EXPERIMENTS.set(len(self.state.experiments))
            return
        previous = self.state.experiments.get(key)
        self.state.experiments[key] = body
        prometheus.EXPERIMENTS.set(len(self.state.experiments))
        if previous is None or _essence(previous) != _essence(body):
            self.wake(key)

    def job_changed(self, key: Key, name: str, summary: JobSummary | None) -> None:
        view = self.state.view(key)
        if summary is None:
            view.jobs.pop(name, None)
            view.drop_pods_of(name)  # keeps the view bounded
        elif view.jobs.get(name) == summary:
            return  # nothing the reconciler reads changed
        else:
            view.jobs[name] = summary
        self._forget_if_empty(key, view)
        self.wake(key)

    def pod_changed(self, key: Key, name: str, summary: PodSummary | None) -> None:
        view = self.state.view(key)
        previous = view.pods.get(name)
        if summary is None and (previous is None or previous.job not in view.jobs):
            # Its Job is gone already (a deleted Job's pods end after it): nothing is left to judge by it.
            view.drop_pod(name)
        else:
            merged = merge_pod(previous, summary, name)
            if merged is not None and merged == previous:
                return  # nothing the reconciler reads changed (the summary kept holds the parsed annotation)
            if merged is not None:
                view.put_pod(merged)
        self._forget_if_empty(key, view)
        self.wake(key)

    def _forget_if_empty(self, key: Key, view: ClusterView) -> None:
        """Drop the view of an experiment that is gone once its last Job and pod are gone too."""
        if key not in self.state.experiments and not view.jobs and not view.pods:
            self.state.views.pop(key, None)

    def wake(self, key: Key) -> None:
        if key not in self.state.experiments or not self.leading:
            return
        worker = self.workers.get(key)
        if worker is None or worker.task is None or worker.task.done():
            worker = self.workers[key] = worker or ExperimentWorker(key, self.state, self.api_factory, self.timing)
            worker.task = asyncio.get_running_loop().create_task(worker.run(), name=f"kubetune:{key[0]}/{key[1]}")
        worker.wakeup.set()

    async def stop(self) -> None:
        tasks = [w.task for w in self.workers.values() if w.task]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.workers.clear()  # a later leadership starts from the cluster, not from what this replica cached
