"""Turn what the cluster shows (trial Jobs and their Pods) into core :class:`~kubetune.trials.Trial` objects.

Pure functions over small summaries of the watched objects, so the rules are unit-testable without a cluster.
A trial's result is read from its pod's ``kubetune.io/metrics`` annotation, else from the container's termination
message. A Job that has completed is only judged once the watch has shown its pod terminated, because the pod's last
annotation update happens before its termination and the two watch streams are not ordered with each other. A Job
of one pod (``completions`` and ``parallelism`` at most 1) whose pods have all ended, the last one ``Succeeded``, is
judged at once: the Job will be ``Complete``, which the Job controller says only a while later.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..metrics import (
    METRICS_ANNOTATION,
    MetricsFormatError,
    parse_annotation,
    parse_termination_report,
)
from ..pausing import settle
from ..spec import ExperimentSpec, trial_time_limit
from ..trials import Reason, Trial, TrialState, bound_metrics, make_curve
from . import labels as L


@dataclass(frozen=True)
class PodSummary:
    name: str
    job: str
    phase: str
    deleting: bool
    metrics_text: str | None
    exit_code: int | None = None
    termination_reason: str | None = None
    termination_message: str | None = None
    start_time: str | None = None
    created: str = ""
    finished_at: str | None = None
    """When its container terminated (the first terminated container's ``finishedAt``)."""
    gone: bool = False
    """The pod object no longer exists (this is its last known state)."""
    deleted_while_running: bool = False
    """Deletion was requested before the pod reached a final phase (set by :func:`merge_pod`)."""
    digests: dict[tuple[str, ...], _Digest | str] = field(default_factory=dict, init=False, compare=False, repr=False)
    """The annotation parsed, per metric names (see :func:`_digest`): each text is parsed once."""
    job_uid: str = ""
    """The uid of the Job that owns the pod (a Job of the same name made earlier owns other pods)."""

    @property
    def ended(self) -> bool:
        return self.phase in ("Succeeded", "Failed") or self.gone


def merge_pod(previous: PodSummary | None, new: PodSummary | None, name: str) -> PodSummary | None:
    """The pod's next summary: a deleted pod keeps its last state (its annotation held the metrics), and whether it
    was deleted while still running is remembered."""
    if new is None:
        return replace(previous, gone=True) if previous is not None else None
    running_before = previous is None or previous.phase not in ("Succeeded", "Failed")
    sticky = previous is not None and previous.deleted_while_running
    return replace(new, deleted_while_running=sticky or (new.deleting and running_before))


@dataclass(frozen=True)
class JobSummary:
    name: str
    number: int
    params: dict[str, Any]
    complete: bool
    failed: bool
    failure_reason: str = ""
    failure_message: str = ""
    deleting: bool = False
    start_time: str | None = None
    completion_time: str | None = None
    uid: str = ""
    owner_uid: str = ""
    """The uid of the experiment that controls the Job (an earlier experiment of the same name owns other Jobs)."""
    single: bool = True
    """The Job runs one pod to completion (``completions`` and ``parallelism`` unset or 1): its first succeeded pod
    completes it."""


def _controller_uid(meta: Mapping[str, Any]) -> str:
    for owner in meta.get("ownerReferences") or []:
        if isinstance(owner, Mapping) and owner.get("controller"):
            return str(owner.get("uid") or "")
    return ""


def summarize_pod(body: Mapping[str, Any]) -> PodSummary | None:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    job = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name") or labels.get(L.TRIAL)
    if not job:
        return None
    status = body.get("status") or {}
    exit_code = reason = message = finished_at = None
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            exit_code = term.get("exitCode")
            reason = term.get("reason")
            message = term.get("message")
            finished_at = term.get("finishedAt")
            break
    return PodSummary(
        name=meta.get("name", ""),
        job=job,
        phase=status.get("phase") or "Pending",
        deleting=bool(meta.get("deletionTimestamp")),
        metrics_text=(meta.get("annotations") or {}).get(METRICS_ANNOTATION),
        exit_code=exit_code,
        termination_reason=reason,
        termination_message=message,
        start_time=status.get("startTime"),
        created=meta.get("creationTimestamp") or "",
        finished_at=finished_at if isinstance(finished_at, str) else None,
        job_uid=_controller_uid(meta),
    )


def summarize_job(body: Mapping[str, Any]) -> JobSummary | None:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    try:
        number = int(labels[L.TRIAL_NUMBER])
        params = json.loads((meta.get("annotations") or {})[L.PARAMETERS_ANNOTATION])
    except (KeyError, ValueError, TypeError):
        return None
    status = body.get("status") or {}
    complete = failed = False
    f_reason = f_message = ""
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            complete = True
        elif cond.get("type") == "Failed":
            failed = True
            f_reason = cond.get("reason") or ""
            f_message = cond.get("message") or ""
    return JobSummary(
        name=meta.get("name", ""),
        number=number,
        params=params,
        complete=complete,
        failed=failed,
        failure_reason=f_reason,
        failure_message=f_message,
        deleting=bool(meta.get("deletionTimestamp")),
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        uid=meta.get("uid") or "",
        owner_uid=_controller_uid(meta),
        single=all((body.get("spec") or {}).get(k) in (None, 1) for k in ("completions", "parallelism")),
    )


@dataclass
class Observed:
    """A trial as observed now, with what must be recorded."""

    trial: Trial
    final: bool = False
    """The trial reached a final state in this observation (record it, then its Job may go)."""


@dataclass(frozen=True)
class _Digest:
    """What observation needs of one annotation text, bounded: small whatever the text held."""

    seq: int
    metrics: dict[str, float]
    """At most MAX_METRICS, the objective and additional metrics first (never mutated: callers copy)."""
    reported: int
    """How many usable metrics the report held."""
    curve: list[tuple[int, float]]
    notes: tuple[str, ...]
    problem: str | None
    """Why the objective was left out of the report (``None`` when it is there or was not reported)."""


def _digest(pod: PodSummary, names: tuple[str, ...]) -> _Digest | str:
    """The pod's annotation parsed and bounded for the metrics ``names`` (objective first), or why it is unusable.

    Parsed once per pod summary: a reconcile runs on the event loop and reads every running trial again, and a
    trial may write up to 256 KiB. The digest lives as long as the summary (a new annotation is a new summary)."""
    found = pod.digests.get(names)
    if found is not None:
        return found
    assert pod.metrics_text is not None
    try:
        report = parse_annotation(pod.metrics_text)
        metrics, _ = bound_metrics(report.metrics, names)
        found = _Digest(report.seq, metrics, len(report.metrics), make_curve(report.objective_curve(names[0])),
                        tuple(report.notes), report.problem(names[0]))
    except MetricsFormatError as e:
        found = str(e)
    if len(pod.digests) >= 4:  # the spec's metric names changed: older digests are of no use
        pod.digests.clear()
    pod.digests[names] = found
    return found


def _report(pods: list[PodSummary], names: tuple[str, ...]) -> tuple[_Digest | None, str | None]:
    """The newest report among the trial's pods, and an error text when an annotation is unusable."""
    best: _Digest | None = None
    error = None
    for pod in sorted(pods, key=lambda p: p.created):
        if pod.metrics_text is None:
            continue
        digest = _digest(pod, names)
        if isinstance(digest, str):
            error = digest
        elif best is None or digest.seq >= best.seq:
            best = digest
    return best, error


def _final_metrics(metric: str, trial: Trial, report: _Digest | None, report_error: str | None,
                   terminated: list[PodSummary], notes: list[str]) -> str | None:
    """Complete ``trial.metrics`` from the termination messages when the objective is missing; the reason the
    objective is unusable (``None`` when it is there, or simply was never reported)."""
    problem = report.problem if report is not None else None
    if metric in trial.metrics:
        return None
    for pod in terminated:
        if not pod.termination_message:
            continue
        try:
            term = parse_termination_report(pod.termination_message)
        except MetricsFormatError as e:
            report_error = report_error or str(e)
            continue
        if term is None:
            continue
        trial.metrics.update(term.metrics)
        problem = problem or term.problem(metric)
        notes += term.notes
    if metric in trial.metrics:
        return None
    return problem or report_error


def observe_trial(spec: ExperimentSpec, job: JobSummary, pods: list[PodSummary], base: Trial | None) -> Observed:
    """The state of one trial whose Job exists and that is not recorded as finished.

    What the trial reported is untrusted: it is parsed with bounds (:mod:`kubetune.metrics`) and the trial is held
    to the record bounds (:meth:`Trial.fit`). A finished trial whose output was cut says so in its message and in
    :attr:`Trial.truncation`.
    """
    metric = spec.objective.metric
    trial = Trial(
        number=job.number,
        params=dict(base.params if base else job.params),
        state=TrialState.PENDING,
        start_time=job.start_time or (base.start_time if base else None),
        lineage=base.lineage if base else None,
        checkpoint=base.checkpoint if base else "",
    )
    report, report_error = _report(pods, tuple(spec.metric_names))
    notes: list[str] = []
    if report is not None:
        trial.metrics, trial.curve = dict(report.metrics), list(report.curve)
        notes += report.notes
        if report.reported > len(report.metrics):
            notes.append(f"kept {len(report.metrics)} of {report.reported} metrics")
    terminated = [p for p in sorted(pods, key=lambda p: p.created) if p.ended]
    interrupted = [p for p in pods if p.deleted_while_running]
    if job.complete or (not job.failed and _succeeded(job, pods, terminated)):
        if not terminated:
            trial.state = TrialState.RUNNING  # wait for the pod's final state to arrive
            return Observed(trial)
        last = terminated[-1]
        if last.deleted_while_running:
            trial.state, trial.reason = TrialState.FAILED, Reason.POD_DELETED
            trial.message = "the trial's pod was deleted while it ran" + (
                f"; it exited with code {last.exit_code}" if last.exit_code is not None else "")
            trial.completion_time = job.completion_time
            return _final(spec, trial, notes)
        problem = _final_metrics(metric, trial, report, report_error, terminated, notes)
        trial.completion_time = job.completion_time or last.finished_at
        missing = [o.metric for o in spec.objective_list if o.metric not in trial.metrics]
        if not missing:
            trial.state, trial.reason = TrialState.SUCCEEDED, Reason.COMPLETED
            settle(spec, trial)  # or Paused at a rung (kubetune.pausing)
        elif problem and metric in missing:  # the message says why; what else the report lacked is moot
            trial.state, trial.reason, trial.message = TrialState.FAILED, Reason.INVALID_METRICS, problem
            notes.clear()
        else:
            trial.state, trial.reason = TrialState.FAILED, Reason.METRICS_MISSING
            trial.message = f"the trial finished without reporting the objective metric {missing[0]!r}"
        return _final(spec, trial, notes)
    if job.failed:
        trial.state = TrialState.FAILED
        trial.completion_time = job.completion_time
        deleted = interrupted
        ended = terminated[-1] if terminated else None
        if job.failure_reason == "DeadlineExceeded":
            trial.reason = Reason.DEADLINE_EXCEEDED
        elif deleted and (ended is None or ended.deleted_while_running):
            trial.reason = Reason.POD_DELETED
        else:
            trial.reason = Reason.ERROR
        detail = job.failure_message
        if ended is not None and ended.exit_code is not None:
            detail = f"exit code {ended.exit_code}" + (f" ({ended.termination_reason})" if ended.termination_reason
                                                      else "")
            if deleted:
                detail += ", pod deleted while running"
        trial.message = detail or job.failure_reason
        limit = trial_time_limit(spec) if trial.reason == Reason.DEADLINE_EXCEEDED else None
        if limit is not None:  # the Job's activeDeadlineSeconds came from this limit
            trial.message = f"the trial ran longer than {limit[1]}={limit[0]:g}s: {trial.message}"
        return _final(spec, trial, notes)
    if any(p.phase == "Running" for p in pods) or report is not None:
        trial.state = TrialState.RUNNING
    for text in notes:
        trial.note(text)
    return Observed(trial)


def completes_by_itself(job: JobSummary, pods: list[PodSummary]) -> bool:
    """Whether the Job, not yet ``Complete``, is done all the same (see :func:`_succeeded`): it is not to be
    deleted as a Job that still runs."""
    return _succeeded(job, pods, [p for p in sorted(pods, key=lambda p: p.created) if p.ended])


def _succeeded(job: JobSummary, pods: list[PodSummary], terminated: list[PodSummary]) -> bool:
    """Whether a Job of one pod is done before the Job controller says so: every pod ended, the last one
    ``Succeeded`` by itself (not deleted while it ran, and still there)."""
    if not job.single or not pods or len(terminated) != len(pods):
        return False
    last = terminated[-1]
    return last.phase == "Succeeded" and not last.gone and not last.deleted_while_running and not last.deleting


def _final(spec: ExperimentSpec, trial: Trial, notes: list[str]) -> Observed:
    """A trial that just finished, held to the record bounds; what was cut goes into its message."""
    for text in notes:
        trial.note(text)
    trial.fit(spec.metric_names)
    trial.message = trial.recorded_message()
    return Observed(trial, final=True)


def lost_trial(base: Trial) -> Observed:
    """A trial whose Job disappeared before its result was recorded."""
    trial = Trial(number=base.number, params=dict(base.params), state=TrialState.FAILED, metrics=dict(base.metrics),
                  curve=list(base.curve), reason=Reason.JOB_DELETED,
                  message="the trial's Job was deleted before it finished", start_time=base.start_time,
                  lineage=base.lineage, checkpoint=base.checkpoint)
    return Observed(trial, final=True)


@dataclass
class ClusterView:
    """The watched objects of one experiment. Pods are also indexed by their Job's name, so a reconcile finds a
    trial's pods without looking at every pod: change :attr:`pods` only through :meth:`put_pod` and
    :meth:`drop_pod`."""

    jobs: dict[str, JobSummary] = field(default_factory=dict)
    pods: dict[str, PodSummary] = field(default_factory=dict)
    by_job: dict[str, dict[str, PodSummary]] = field(default_factory=dict, repr=False)

    def pods_of(self, job: str) -> list[PodSummary]:
        return list((self.by_job.get(job) or {}).values())

    def put_pod(self, pod: PodSummary) -> None:
        previous = self.pods.get(pod.name)
        if previous is not None and previous.job != pod.job:
            self.drop_pod(pod.name)
        self.pods[pod.name] = pod
        self.by_job.setdefault(pod.job, {})[pod.name] = pod

    def drop_pod(self, name: str) -> None:
        pod = self.pods.pop(name, None)
        if pod is None:
            return
        of_job = self.by_job.get(pod.job)
        if of_job is not None:
            of_job.pop(name, None)
            if not of_job:
                del self.by_job[pod.job]

    def drop_pods_of(self, job: str) -> None:
        for name in list(self.by_job.get(job) or ()):
            self.drop_pod(name)
