"""The cluster side of the command line: submit, get, trials, best, logs, delete (kubectl's habits: ``-n``, ``-A``,
``--kubeconfig``, ``--context``, ``-o``).

Every failure is one line on stderr and a non-zero exit code: 1 for errors (no cluster, no CRD, not found,
forbidden, a failed experiment), 2 for an invalid experiment (the checks and messages of ``kubetune validate``, or
the API server's), 124 when ``submit --wait`` times out, 130 (143) when it is stopped by Ctrl-C (SIGTERM): the
experiment goes on. ``submit --wait`` draws the view of ``kubetune run`` (:mod:`kubetune.progress`).
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from .spec import GROUP, SINGULAR, render_value
from .template import trial_name
from .trials import TrialState
from .validation import InvalidExperiment, load_experiment

if TYPE_CHECKING:
    from .client import Client
    from .progress import RunView, Snapshot
    from .results.cluster import ClusterExperiment
    from .results.model import ExperimentResults

# the Kubernetes client is imported when a cluster command runs, so `kubetune run` does not pay for it

EXIT_FAILED, EXIT_INVALID, EXIT_TIMEOUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 124, 130, 143
OBJECT = f"{SINGULAR}.{GROUP}"
"""How kubectl names one experiment in its messages (``tuningexperiment.kubetune.io/NAME created``)."""
POLL = 1.0
"""Seconds between reads of the experiment while following it."""
ETA_WINDOW = 600.0
"""Seconds of finished trials the ETA of ``submit --wait`` is estimated from: on a cluster trials finish in bursts
(pods scheduled and started together), so rich's default of 30 s would leave the ETA blank between them."""
MAX_LOG_BYTES = 4 << 20
"""``kubetune logs`` reads at most this much of a pod's log (``--limit-bytes``), like a bounded ``kubectl logs``."""


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_FAILED


def _client(args: argparse.Namespace) -> Client:
    from .client import Client

    return Client(args.kubeconfig, args.context, args.namespace)


def _age(timestamp: str | None, now: datetime | None = None) -> str:
    """kubectl's short age: 42s, 3m12s, 17m, 5h3m, 20h, 3d4h, 12d."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    s = int(max(0.0, ((now or datetime.now(timezone.utc)) - then).total_seconds()))
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if d < 2:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d"


def _table(header: list[str], body: list[list[str]], out: TextIO | None = None) -> None:
    """Columns separated by three spaces, left-aligned, like kubectl's printer."""
    out = out or sys.stdout
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    out.writelines("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in [header, *body])


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "<none>"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


# -- submit ---------------------------------------------------------------------------------------------------------


def _cmd_submit(args: argparse.Namespace) -> int:
    try:
        exp = load_experiment(args.file)
    except InvalidExperiment as e:
        print(e, file=sys.stderr)
        return EXIT_INVALID
    from .client import body_of
    from .results.cluster import ClusterError

    kt = _client(args)
    namespace = args.namespace or exp.metadata.namespace or kt.namespace
    name = exp.metadata.name
    try:
        kt.cluster.create_experiment(body_of(exp), namespace)
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID if e.status == 422 else EXIT_FAILED
    print(f"{OBJECT}/{name} created")
    if not args.wait:
        return 0
    spec = exp.spec
    print(f"waiting for {namespace}/{name}: {spec.max_trials} trials, {spec.parallel_trials} at a time, "
          f"algorithm {spec.algorithm.name}" + (f", timeout {args.timeout:g}s" if args.timeout else ""),
          file=sys.stderr)
    return _follow(kt, name, namespace, args.timeout)


class _Terminated(Exception):
    """SIGTERM while following an experiment."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _started(obj: dict[str, Any]) -> float:
    """When the experiment was created, on the ``time.monotonic()`` clock (now when unreadable or in the future)."""
    meta = obj.get("metadata") or {}
    try:
        then = datetime.fromisoformat(str(meta.get("creationTimestamp")).replace("Z", "+00:00"))
        age = (datetime.now(timezone.utc) - then).total_seconds()
    except (ValueError, TypeError, OverflowError):
        age = 0.0
    return time.monotonic() - min(max(0.0, age), 10 * 365 * 86400.0)


class _Follower:
    """Reads the experiment's results as ``kt.wait`` polls the object, and feeds the view.

    The records are read again when the object changed (each finished trial changes its status), else every
    ``REFRESH`` seconds (the running trials' reports live on their pods); never sooner than ``BACKOFF`` times the
    last read took after it (at most ``MAX_BACKOFF`` seconds), so following a large experiment spends at most a
    third of the time reading it.
    """

    REFRESH = 5.0
    BACKOFF = 2.0
    MAX_BACKOFF = 30.0

    def __init__(self, source: ClusterExperiment, view: RunView) -> None:
        self.source = source
        self.view = view
        self.results: ExperimentResults | None = None
        self.started: float | None = None
        self.version = ""
        self.loaded = 0.0
        self.next_load = 0.0
        self.loads = 0
        self.outage = False
        """A read failed in a way worth retrying and none has succeeded since."""

    def snapshot(self) -> Snapshot | None:
        from .progress import Snapshot

        r = self.results
        if r is None:
            return None
        best = r.best
        return Snapshot(r.spec.objective.metric, r.spec.max_trials, [t.trial for t in r.trials],
                        best.trial if best else None, self.started if self.started is not None else time.monotonic(),
                        len(r.front) if r.spec.multi_objective else None,
                        tuple(o.metric for o in r.spec.objective_list) if r.spec.multi_objective else ())

    def __call__(self, obj: dict[str, Any], final: bool = False) -> None:
        now = time.monotonic()
        version = str((obj.get("metadata") or {}).get("resourceVersion"))
        if self.started is None:
            self.started = _started(obj)
        due = self.results is None or final or (
            now >= self.next_load and (version != self.version or now - self.loaded >= self.REFRESH))
        if due:
            self.results = self.source.load(obj)
            took = time.monotonic() - now
            self.version, self.loaded = version, time.monotonic()
            self.loads += 1
            if self.loads > 1:  # the first read also opens the connection
                self.next_load = self.loaded + min(self.MAX_BACKOFF, self.BACKOFF * took)
        if self.outage:
            self.outage = False
            self.view.note(f"reading {self.source.namespace}/{self.source.name} again")
        snapshot = self.snapshot()
        if snapshot is not None:
            self.view.update(snapshot)

    def lost(self, error: Exception) -> None:
        """A read failed and is retried (the API server restarting, say): said once until a read succeeds."""
        if not self.outage:
            self.outage = True
            self.view.note(f"cannot read {self.source.namespace}/{self.source.name}: {error}; retrying until it "
                           "answers (Ctrl-C stops following)")

    def counts(self) -> str:
        from .progress import counts_text

        snapshot = self.snapshot()
        return counts_text(snapshot.counts() if snapshot else {})


def _follow(kt: Client, name: str, namespace: str, timeout: float | None) -> int:
    """Follow the experiment until it ends, with the view of ``kubetune run`` (live on a terminal, a line per
    finished trial otherwise); 0 succeeded, 1 failed or stalled, 124 timeout, 130 Ctrl-C, 143 SIGTERM. Stopping the
    command never stops the experiment."""
    from .client import ExperimentStalled, WaitTimeout
    from .progress import RunView, describe, describe_front
    from .results.cluster import ClusterError, ClusterExperiment, outcome_of

    view = RunView(sys.stderr, max_rows=8, eta_window=ETA_WINDOW)
    follow = _Follower(ClusterExperiment(name, namespace, cluster=kt.cluster), view)
    goes_on = (f"it goes on running on the cluster (kubetune get {name} -n {namespace}; "
               f"kubetune delete {name} -n {namespace} stops it)")
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _terminate) if main else None
    obj: dict[str, Any] | None = None
    code, message = 0, ""
    try:
        ended = kt.wait(name, timeout, namespace, poll=POLL, on_poll=follow, on_error=follow.lost)
        follow(ended, final=True)  # the records written with the final status
        obj = ended
    except WaitTimeout:
        code, message = EXIT_TIMEOUT, f"timed out after {timeout:g}s waiting for {namespace}/{name}; {goes_on}"
    except KeyboardInterrupt:
        code, message = EXIT_INTERRUPTED, f"interrupted: stopped following {namespace}/{name}; {goes_on}"
    except _Terminated:
        code, message = EXIT_TERMINATED, f"terminated: stopped following {namespace}/{name}; {goes_on}"
    except (ExperimentStalled, ClusterError) as e:
        code, message = EXIT_FAILED, f"error: {e}"
    finally:
        view.close()
        if main:
            signal.signal(signal.SIGTERM, old)
    results = follow.results
    if obj is None or results is None:
        if results is not None and code != EXIT_FAILED:
            print(f"trials so far: {follow.counts()}", file=sys.stderr)
        print(message, file=sys.stderr)
        return code
    outcome = outcome_of(obj) or {}
    word = "succeeded" if outcome.get("succeeded") else "failed"
    print(f"experiment {word}: {outcome.get('reason')}: {outcome.get('message')}", file=sys.stderr)
    print(f"trials: {follow.counts()}", file=sys.stderr)
    warm = (obj.get("status") or {}).get("warmStart")
    if isinstance(warm, dict) and warm.get("message"):
        print(f"warm start: {str(warm['message'])[:2048]}", file=sys.stderr)
    best = results.best
    if best is not None:
        print("best: " + describe(best.trial, results.spec.objective.metric))
    if results.spec.multi_objective:
        print("\n".join(describe_front(results.spec, [r.trial for r in results.front])))
    return 0 if outcome.get("succeeded") else EXIT_FAILED


# -- get ------------------------------------------------------------------------------------------------------------


def _experiment_row(obj: dict[str, Any], wide: bool, with_namespace: bool) -> list[str]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    trials = status.get("trials") or {}
    succeeded: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {})
    row = [meta.get("namespace", "")] if with_namespace else []
    row.append(meta.get("name", ""))
    if wide:
        row.append(_fmt((spec.get("objective") or {}).get("metric")))
    best = (status.get("bestTrial") or {}).get("objectiveValue")  # printed whole, as kubectl prints it
    front = (status.get("paretoFront") or {}).get("size") if isinstance(status.get("paretoFront"), dict) else None
    shown = f"front:{_fmt(front)}" if front is not None else "<none>" if best is None else str(best)
    row += [shown, _fmt(trials.get("succeeded")),
            _fmt(trials.get("created")), _fmt(spec.get("maxTrials"))]
    if wide:
        row += [_fmt(trials.get("running")), _fmt(trials.get("pruned")), _fmt(trials.get("paused")),
                _fmt(trials.get("failed")), _fmt(trials.get("infeasible"))]
    row += [_fmt(succeeded.get("status")), _fmt(succeeded.get("reason")), _age(meta.get("creationTimestamp"))]
    return row


def _dump(doc: Any, output: str) -> None:
    import yaml

    if output == "json":
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


def _cmd_get(args: argparse.Namespace) -> int:
    kt = _client(args)
    if args.watch and (not args.name or args.all_namespaces or args.output):
        return _error("--watch follows one experiment: give its NAME, without -A or -o")
    if args.name:
        if args.all_namespaces:
            return _error("a resource cannot be retrieved by name across all namespaces")
        items = [kt.get(args.name, args.namespace)]
        if args.watch:
            return _follow(kt, args.name, args.namespace or kt.namespace, None)
    else:
        items = kt.list(args.namespace, args.all_namespaces)
    if args.output in ("yaml", "json"):
        _dump(items[0] if args.name else {"apiVersion": "v1", "kind": "List", "items": items}, args.output)
        return 0
    if not items:
        where = "" if args.all_namespaces else f" in {args.namespace or kt.namespace} namespace"
        print(f"No resources found{where}.", file=sys.stderr)
        return 0
    wide = args.output == "wide"
    header = (["NAMESPACE"] if args.all_namespaces else []) + ["NAME"] + (["METRIC"] if wide else []) + [
        "BEST", "SUCCEEDED-TRIALS", "TRIALS", "MAX"] + (["RUNNING", "PRUNED", "PAUSED", "FAILED", "INFEASIBLE"] if wide
                                                        else []) + [
        "SUCCEEDED", "REASON", "AGE"]
    _table(header, [_experiment_row(o, wide, args.all_namespaces) for o in items])
    return 0


# -- trials and best ------------------------------------------------------------------------------------------------


def _results(args: argparse.Namespace) -> ExperimentResults:
    from .results.cluster import ClusterExperiment

    kt = _client(args)
    return ClusterExperiment(args.name, args.namespace or kt.namespace, cluster=kt.cluster).load()


def _cmd_trials(args: argparse.Namespace) -> int:
    from .client import record_json, rows

    results = _results(args)
    for note in results.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.output == "json":
        sys.stdout.write(json.dumps([record_json(results, r) for r in results.trials], indent=2) + "\n")
        return 0
    if args.output == "csv":
        header, data = rows(results)
        w = csv.writer(sys.stdout)
        w.writerow(header)
        for row in data:
            w.writerow(["" if v is None else render_value(v) if not isinstance(v, float) else repr(v) for v in row])
        return 0
    if not results.trials:
        print(f"No trials yet for {results.source}.", file=sys.stderr)
        return 0
    spec = results.spec
    metric = spec.objective.metric
    params = [p.name for p in spec.parameters]
    wide = args.output == "wide"
    extra = list(spec.additional_metrics) if wide else []
    constraints = spec.constraints or []
    header = ["NAME", "STATE", *(["FEASIBLE"] if constraints else []), "REASON", metric.upper(),
              *[m.upper() for m in extra], "DURATION", *[p.upper() for p in params]] + (
                  ["STARTED", "MESSAGE"] if wide else [])
    body = []
    for r in results.trials:
        t = r.trial
        # with constraints: yes/no for Succeeded trials, <none> for the others (they have no feasibility)
        feasible = [("yes" if t.feasible(constraints) else "no") if t.state is TrialState.SUCCEEDED else "<none>"] \
            if constraints else []
        row = [trial_name(results.name, t.number), t.state.value, *feasible, _fmt(t.reason),
               _fmt(t.metrics.get(metric)),
               *[_fmt(t.metrics.get(m)) for m in extra],
               "<none>" if r.duration_seconds is None else f"{r.duration_seconds:.1f}s",
               *[render_value(t.params[p]) if p in t.params else "<none>" for p in params]]
        if wide:
            row += [_fmt(t.start_time), _fmt(t.recorded_message().replace("\n", " ")[:200])]
        body.append(row)
    _table(header, body)
    return 0


def _cmd_best(args: argparse.Namespace) -> int:
    from .client import record_json
    from .progress import describe_front

    results = _results(args)
    if results.spec.multi_objective:  # several objectives: the best trials are the Pareto front
        front = results.front
        if not front:
            return _error(f"{results.source} has no succeeded trial with every objective yet")
        if args.output == "json":
            sys.stdout.write(json.dumps([record_json(results, r) for r in front], indent=2) + "\n")
            return 0
        print("\n".join(describe_front(results.spec, [r.trial for r in front], limit=len(front))))
        return 0
    best = results.best
    if best is None:
        if results.spec.constraints and any(r.state is TrialState.SUCCEEDED for r in results.trials):
            return _error(f"{results.source} has no feasible trial yet (every succeeded trial violates a "
                          "constraint or did not report its metric)")
        return _error(f"{results.source} has no succeeded trial yet")
    if args.output == "json":
        sys.stdout.write(json.dumps(record_json(results, best), indent=2) + "\n")
        return 0
    spec = results.spec
    t = best.trial
    print(f"best trial: {trial_name(results.name, t.number)} (#{t.number}) "
          f"{spec.objective.metric}={_fmt(t.objective_value(spec.objective))} ({spec.objective.goal})")
    print("parameters:")
    for k, v in t.params.items():
        print(f"  {k}: {render_value(v)}")
    print("metrics:")
    for k, m in t.metrics.items():
        print(f"  {k}: {m!r}")
    if spec.algorithm.name == "pbt" and t.lineage is not None:  # the hyperparameters that produced it
        from .lineage import describe_schedule, schedule

        print(f"schedule (member {t.lineage.member}):")
        print("\n".join(describe_schedule(schedule({r.trial.number: r.trial for r in results.trials}, t))))
    return 0


# -- logs -----------------------------------------------------------------------------------------------------------


def _trial_number(experiment: str, trial: str) -> int | None:
    text = trial[len(experiment) + 1:] if trial.startswith(experiment + "-") else trial.lstrip("#")
    return int(text) if text.isdigit() else None


def _cmd_logs(args: argparse.Namespace) -> int:
    from .progress import describe
    from .results.cluster import ClusterError, ClusterExperiment, NotFound, owned_by

    kt = _client(args)
    namespace = args.namespace or kt.namespace
    number = _trial_number(args.name, args.trial)
    if number is None:
        return _error(f"{args.trial!r} is not a trial of {args.name}: give its number or its name "
                      f"({trial_name(args.name, 3)} or 3)")
    job_name = trial_name(args.name, number)
    source = ClusterExperiment(args.name, namespace, cluster=kt.cluster)
    results = source.load()
    record = next((r for r in results.trials if r.number == number), None)
    said = ("its record: " + describe(record.trial, results.spec.objective.metric)) if record else \
        f"{args.name} has no record of trial #{number}"
    uid = (source.object or {}).get("metadata", {}).get("uid", "")
    c = kt.cluster
    try:
        job = c.call(c.batch.read_namespaced_job, job_name, namespace)
    except NotFound:
        job = None
    if job is None or not owned_by(job, uid):
        if record is None:
            return _error(f"trial {job_name} not found: {said}")
        return _error(f"the Job {job_name} was cleaned up (the operator keeps the newest 10 finished trial Jobs); "
                      f"{said}")
    pods = [p for p in c.trial_pods(job_name, namespace) if owned_by(p, job.metadata.uid)]
    if not pods:
        return _error(f"the Job {job_name} has no pod (not started yet, or its pod was deleted); {said}")
    pod = max(pods, key=lambda p: (p.metadata.creation_timestamp or datetime.min.replace(tzinfo=timezone.utc)))
    containers = [x.name for x in pod.spec.containers]
    container = args.container or containers[0]
    kwargs: dict[str, Any] = {"container": container, "limit_bytes": MAX_LOG_BYTES}
    if args.tail is not None and args.tail >= 0:
        kwargs["tail_lines"] = args.tail
    try:
        text = c.call(c.core.read_namespaced_pod_log, pod.metadata.name, namespace, **kwargs)
    except ClusterError as e:
        return _error(f"cannot read the logs of pod {pod.metadata.name}: {e}; {said}")
    sys.stdout.write(text if isinstance(text, str) else str(text))
    return 0


# -- delete ---------------------------------------------------------------------------------------------------------


def _cmd_delete(args: argparse.Namespace) -> int:
    from .results.cluster import ClusterError

    kt = _client(args)
    status = 0
    for name in args.names:
        try:
            kt.delete(name, args.namespace)
        except ClusterError as e:
            status = _error(str(e))
            continue
        print(f'{OBJECT} "{name}" deleted')
    return status


# -- the parser -----------------------------------------------------------------------------------------------------


def _guarded(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from .results.cluster import ClusterError

        try:
            return int(fn(args) or 0)
        except ClusterError as e:
            return _error(str(e))
        except KeyboardInterrupt:
            return 130
    return run


def _connection(*, all_namespaces: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--namespace", "-n", help="the namespace (default: the kubeconfig context's)")
    if all_namespaces:
        p.add_argument("--all-namespaces", "-A", action="store_true", help="every namespace")
    p.add_argument("--kubeconfig", help="the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    p.add_argument("--context", help="the kubeconfig context to use")
    return p


def register(sub: Any) -> None:
    """Add the cluster subcommands to ``kubetune``'s subparsers."""
    conn = _connection()

    s = sub.add_parser("submit", parents=[conn], help="validate an experiment file and create it on the cluster")
    s.add_argument("file", help="a TuningExperiment YAML file")
    s.add_argument("--wait", "-w", action="store_true",
                   help="follow the experiment until it ends: exit 0 succeeded, 1 failed, 124 timeout, "
                        "130 Ctrl-C (the experiment goes on)")
    s.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    s.set_defaults(func=_guarded(_cmd_submit))

    g = sub.add_parser("get", parents=[_connection(all_namespaces=True)],
                       help="list experiments (like kubectl get tex), or show one")
    g.add_argument("name", nargs="?")
    g.add_argument("--output", "-o", choices=["wide", "yaml", "json"])
    g.add_argument("--watch", "-w", action="store_true",
                   help="with NAME: follow the experiment until it ends, as submit --wait does (same exit codes)")
    g.set_defaults(func=_guarded(_cmd_get))

    t = sub.add_parser("trials", parents=[conn], help="an experiment's trials, recorded and running")
    t.add_argument("name")
    t.add_argument("--output", "-o", choices=["wide", "csv", "json"])
    t.set_defaults(func=_guarded(_cmd_trials))

    b = sub.add_parser("best", parents=[conn], help="an experiment's best trial: parameters and metrics (with "
                       "several objectives: every trial of the Pareto front)")
    b.add_argument("name")
    b.add_argument("--output", "-o", choices=["json"])
    b.set_defaults(func=_guarded(_cmd_best))

    lg = sub.add_parser("logs", parents=[conn], help="a trial's logs, while its Job and pod exist")
    lg.add_argument("name", help="the experiment")
    lg.add_argument("trial", help="the trial's number or name (3 or <experiment>-0003)")
    lg.add_argument("--container", "-c", help="the container (default: the first)")
    lg.add_argument("--tail", type=int, default=None, help="only the last N lines")
    lg.set_defaults(func=_guarded(_cmd_logs))

    d = sub.add_parser("delete", parents=[conn], help="delete experiments (their Jobs and records go with them)")
    d.add_argument("names", nargs="+", metavar="name")
    d.set_defaults(func=_guarded(_cmd_delete))

