"""Results of an experiment on a cluster: the TuningExperiment (spec and status), its result ConfigMaps and the Jobs
of trials still running.

What is read is what the operator writes (``kubetune.k8s.store``): records under ``t<n>`` keys of the ConfigMaps
selected by :func:`~kubetune.k8s.store.selector`, each through :meth:`~kubetune.trials.Trial.from_record` and the
record bounds. ConfigMaps owned by another uid (an earlier experiment of the same name) are skipped, as the operator
skips them. A trial that has a Job but no record yet is shown ``Running`` with the parameters of the Job's
``kubetune.io/parameters`` annotation. Lists are read in pages, and everything read is bounded like a local results
directory (at most ``MAX_TRIALS_LIMIT`` trials, parameters only when they are the spec's, with scalar values).

API failures become :class:`ClusterError` with one line saying what went wrong (no cluster, no CRD, not found,
forbidden), never a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import ValidationError

from ..k8s import labels as L
from ..k8s.store import selector
from ..metrics import METRICS_ANNOTATION, MetricsFormatError, parse_annotation
from ..spec import GROUP, MAX_TRIALS_LIMIT, PLURAL, VERSION, TuningExperiment
from ..trials import TrialState, make_curve
from .local import LocalDirectory
from .model import ExperimentResults, ResultsError, TrialRecord

RESOURCE = f"{PLURAL}.{GROUP}"
TIMEOUT = (5.0, 30.0)
"""Connect and read timeout of every request."""
CONFIGMAP_PAGE = 10
"""ConfigMaps per list page: 10 full shards are about 8 MB."""
PAGE = 100
SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ClusterError(ResultsError):
    """A request failed; the message is one line saying why, ``status`` the HTTP status (0 without one)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class NotFound(ClusterError):
    pass


TRANSIENT_STATUSES = frozenset({0, 408, 429, 500, 502, 503, 504})
"""Statuses of a failure worth retrying: no answer at all (0: a restarting API server, a broken connection), a
timeout, throttling, or the server's own trouble."""


def transient(e: ClusterError) -> bool:
    """Whether the request may succeed if made again later (see :data:`TRANSIENT_STATUSES`)."""
    return e.status in TRANSIENT_STATUSES


def _status(e: ApiException) -> tuple[str, Any]:
    """The message and details of the Status an API error carries (empty when its body is no Status)."""
    try:
        body = json.loads(e.body or "{}")
        return str(body.get("message") or ""), body.get("details") or {}
    except (ValueError, TypeError, AttributeError):
        return "", {}


def unknown_resource(e: ApiException) -> bool:
    """A 404 that names no object: the API server does not serve the resource (the CRD is not installed)."""
    return e.status == 404 and not _status(e)[1]


def describe_error(e: BaseException, what: str = "") -> str:
    """One line for a failed request: what the server said, or why it could not be reached."""
    if isinstance(e, ApiException):
        message, _ = _status(e)
        if unknown_resource(e):
            return (f"the server does not know {RESOURCE}: is the CRD installed? "
                    "(kubectl apply --server-side -f crds/tuningexperiments.kubetune.io.yaml)")
        if e.status == 401:
            return f"unauthorized: {message or e.reason} (check the credentials of your kubeconfig)"
        return (message or f"{e.status} {e.reason}").splitlines()[0][:500]
    if isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError)):
        reason = getattr(e, "reason", None) or e
        return f"cannot reach the cluster{' ' + what if what else ''}: {str(reason).splitlines()[0][:300]}"
    return f"{type(e).__name__}: {e}"[:500]


@dataclass
class Cluster:
    """A connection to a cluster: the API client and the namespace used when none is given.

    ``kubeconfig``/``context`` as kubectl's ``--kubeconfig``/``--context``; without a kubeconfig file the
    in-cluster configuration is used. The default namespace is the context's (``default`` when it has none), or the
    pod's own namespace in a cluster.
    """

    api: client.ApiClient
    namespace: str

    @classmethod
    def connect(cls, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None,
                namespace: str | None = None) -> Cluster:
        # $KUBECONFIG is read now: the client library reads it once, when it is imported
        path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or None
        try:
            if path is None and not context and _in_cluster():
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                api = client.ApiClient(cfg)
                default = _read_text(SERVICEACCOUNT_NAMESPACE) or "default"
            else:
                api = config.new_client_from_config(config_file=path, context=context)
                default = _context_namespace(path, context)
        except (ConfigException, OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            where = path or "~/.kube/config"
            raise ClusterError(f"no usable cluster configuration in {where}: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"[:500]) from None
        return cls(api, namespace or default)

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    def call(self, fn: Any, *args: Any, what: str = "", **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``; a failure becomes :class:`ClusterError` (:class:`NotFound` for a missing
        object) with one line of explanation."""
        try:
            return fn(*args, _request_timeout=TIMEOUT, **kwargs)
        except ApiException as e:
            text = describe_error(e, what)
            if e.status == 404 and not unknown_resource(e):
                raise NotFound(text, 404) from None
            raise ClusterError(text, int(e.status or 0)) from None
        except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError) as e:
            raise ClusterError(describe_error(e, f"at {self.server}")) from None

    # -- experiments --------------------------------------------------------------------------------------------

    def get_experiment(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or self.namespace
        obj: dict[str, Any] = self.call(self.custom.get_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, name)
        return obj

    def list_experiments(self, namespace: str | None = None, all_namespaces: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE}
            if token:
                kwargs["_continue"] = token
            if all_namespaces:
                page = self.call(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, **kwargs)
            else:
                page = self.call(self.custom.list_namespaced_custom_object, GROUP, VERSION,
                                 namespace or self.namespace, PLURAL, **kwargs)
            out += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return out

    def create_experiment(self, body: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        ns = namespace or (body.get("metadata") or {}).get("namespace") or self.namespace
        obj: dict[str, Any] = self.call(self.custom.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, body)
        return obj

    def delete_experiment(self, name: str, namespace: str | None = None) -> None:
        self.call(self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace or self.namespace, PLURAL,
                  name, propagation_policy="Background")

    # -- what belongs to an experiment --------------------------------------------------------------------------

    def _pages(self, fn: Any, namespace: str, label_selector: str, limit: int) -> Iterator[Any]:
        token = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": label_selector, "limit": limit}
            if token:
                kwargs["_continue"] = token
            page = self.call(fn, namespace, **kwargs)
            yield from page.items
            token = page.metadata._continue
            if not token:
                return

    def result_configmaps(self, name: str, namespace: str) -> Iterator[Any]:
        return self._pages(self.core.list_namespaced_config_map, namespace, selector(name), CONFIGMAP_PAGE)

    def trial_jobs(self, name: str, namespace: str) -> Iterator[Any]:
        return self._pages(self.batch.list_namespaced_job, namespace,
                           f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE},{L.EXPERIMENT}={name}", PAGE)

    def trial_pods(self, job: str, namespace: str) -> list[Any]:
        return list(self._pages(self.core.list_namespaced_pod, namespace, f"job-name={job}", PAGE))


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG") and not Path(
        os.path.expanduser("~/.kube/config")).exists()


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _context_namespace(path: str | None, context: str | None) -> str:
    contexts, active = config.list_kube_config_contexts(config_file=path)
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def _created(obj: Any) -> datetime:
    return obj.metadata.creation_timestamp or datetime.min.replace(tzinfo=timezone.utc)


def owned_by(obj: Any, uid: str) -> bool:
    """Whether an object read from the API belongs to the experiment ``uid`` (the operator's rule: an object with
    owners, none of them ``uid``, is left over from an earlier experiment of the same name)."""
    owners = obj.metadata.owner_references or []
    return not owners or any(o.uid == uid for o in owners)


def outcome_of(experiment: dict[str, Any]) -> dict[str, object] | None:
    """``{"succeeded", "reason", "message"}`` from the Succeeded condition once it is True or False, else None."""
    for c in (experiment.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Succeeded" and c.get("status") in ("True", "False"):
            return {"succeeded": c["status"] == "True", "reason": str(c.get("reason") or "")[:128],
                    "message": str(c.get("message") or "")[:1024]}
    return None


def condition(experiment: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (experiment.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def parse_experiment(obj: dict[str, Any]) -> TuningExperiment:
    try:
        return TuningExperiment.model_validate({k: v for k, v in obj.items() if k != "metadata"}
                                               | {"metadata": {"name": obj["metadata"]["name"],
                                                               "namespace": obj["metadata"].get("namespace")}})
    except (ValidationError, KeyError, TypeError) as e:
        name = (obj.get("metadata") or {}).get("name", "?")
        raise ClusterError(f"{RESOURCE}/{name} has a spec kubetune cannot read: {str(e).splitlines()[0][:300]}"
                           ) from None


class ClusterExperiment:
    """An experiment on a cluster as a results source."""

    def __init__(self, name: str, namespace: str | None = None, *, cluster: Cluster | None = None,
                 kubeconfig: str | None = None, context: str | None = None) -> None:
        self.cluster = cluster or Cluster.connect(kubeconfig, context, namespace)
        self.name = name
        self.namespace = namespace or self.cluster.namespace
        self.object: dict[str, Any] | None = None
        """The experiment as last read by :meth:`load`."""

    def load(self, experiment: dict[str, Any] | None = None) -> ExperimentResults:
        """Read the results; ``experiment`` is the object when the caller has just read it."""
        obj = experiment if experiment is not None else self.cluster.get_experiment(self.name, self.namespace)
        self.object = obj
        exp = parse_experiment(obj)
        spec = exp.spec
        uid = obj["metadata"].get("uid", "")
        notes: list[str] = []
        records: dict[int, TrialRecord] = {}
        dropped = foreign = 0
        for cm in self.cluster.result_configmaps(self.name, self.namespace):
            if not owned_by(cm, uid):
                foreign += 1
                continue
            for value in (cm.data or {}).values():
                try:
                    doc = json.loads(value)
                except (ValueError, TypeError, RecursionError):
                    doc = None
                trial = LocalDirectory._trial(doc, spec)
                if trial is None or (trial.number not in records and len(records) >= MAX_TRIALS_LIMIT):
                    dropped += 1
                    continue
                records[trial.number] = TrialRecord(trial, trial.duration_seconds())
        reports: dict[str, Any] | None = None
        for job in self.cluster.trial_jobs(self.name, self.namespace):
            if not owned_by(job, uid):
                continue
            meta = job.metadata
            try:
                number = int((meta.labels or {})[L.TRIAL_NUMBER])
                params = json.loads((meta.annotations or {})[L.PARAMETERS_ANNOTATION])
            except (KeyError, ValueError, TypeError, RecursionError):
                continue
            known = records.get(number)
            if known is not None and known.state.finished:
                continue
            start = job.status.start_time.strftime("%Y-%m-%dT%H:%M:%SZ") if job.status and job.status.start_time \
                else None
            doc = {"number": number, "params": params, "state": TrialState.RUNNING.value,
                   "start_time": start or (known.trial.start_time if known else None)}
            if reports is None:
                reports = self._reports(spec.metric_names[0])
            doc.update(reports.get(job.metadata.uid) or {})
            trial = LocalDirectory._trial(doc, spec)
            if trial is None or (known is None and len(records) >= MAX_TRIALS_LIMIT):
                continue
            records[number] = TrialRecord(trial, None)
        if foreign:
            notes.append(f"{foreign} result ConfigMaps of an earlier experiment of the same name skipped")
        if dropped:
            notes.append(f"{dropped} unreadable or surplus trial records skipped")
        return ExperimentResults(
            name=self.name, spec=spec, trials=[records[n] for n in sorted(records)], outcome=outcome_of(obj),
            source=f"{self.namespace}/{self.name}", notes=notes,
        )

    def _reports(self, objective: str) -> dict[str, dict[str, Any]]:
        """The latest report of each running trial, by its Job's uid: ``metrics`` and the objective's ``curve``
        from the newest pod's ``kubetune.io/metrics`` annotation, parsed with the operator's bounded parser."""
        newest: dict[str, Any] = {}
        for pod in self.cluster._pages(self.cluster.core.list_namespaced_pod, self.namespace,
                                       f"{L.MANAGED_BY}={L.MANAGED_BY_VALUE},{L.EXPERIMENT}={self.name}", PAGE):
            text = (pod.metadata.annotations or {}).get(METRICS_ANNOTATION)
            job_uids = [o.uid for o in pod.metadata.owner_references or [] if o.kind == "Job"]
            if text is None or not job_uids:
                continue
            old = newest.get(job_uids[0])
            if old is None or _created(pod) > _created(old):
                newest[job_uids[0]] = pod
        out: dict[str, dict[str, Any]] = {}
        for job_uid, pod in newest.items():
            try:
                report = parse_annotation(pod.metadata.annotations[METRICS_ANNOTATION])
            except MetricsFormatError:
                continue
            out[job_uid] = {"metrics": report.metrics,
                            "curve": [list(p) for p in make_curve(report.objective_curve(objective))]}
        return out
