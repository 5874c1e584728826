"""kubetune from Python: create, follow and read experiments on a cluster, or read a local results directory.

>>> from kubetune.client import Client
>>> kt = Client(namespace="ml")                      # kubeconfig, context, namespace as kubectl takes them
>>> kt.create("examples/digits-svm.yaml")            # a path, a YAML string, a dict or a TuningExperiment
>>> kt.wait("digits-svm", timeout=600)               # the experiment once it has ended
>>> kt.dataframe("digits-svm")                       # one row per trial (needs pandas: kubetune[pandas])
>>> kt.best("digits-svm").params

The same reading code serves ``kubetune get/trials/best`` and the results API (``kubetune.results``).
"""

from __future__ import annotations

import builtins
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .results.cluster import (
    Cluster,
    ClusterError,
    ClusterExperiment,
    NotFound,
    condition,
    outcome_of,
    parse_experiment,
    transient,
)
from .results.local import LocalDirectory
from .results.model import ExperimentResults, ResultsError, TrialRecord
from .spec import TuningExperiment, render_value
from .template import trial_name
from .trials import TrialState
from .validation import InvalidExperiment, load_experiment, validate_document
from .validation import parse_experiment as parse_manifest

if TYPE_CHECKING:
    import pandas  # type: ignore[import-untyped]

__all__ = ["Client", "ClusterError", "ExperimentStalled", "InvalidExperiment", "NotFound",
           "WaitTimeout", "dataframe", "load", "rows"]

ExperimentLike = str | os.PathLike[str] | Mapping[str, Any] | TuningExperiment


class WaitTimeout(TimeoutError):
    """The experiment had not ended when the timeout passed."""


class ExperimentStalled(ClusterError):
    """The operator cannot go on with the experiment (``Stalled=True``: an invalid spec or trial template)."""


def load(directory: str | os.PathLike[str]) -> ExperimentResults:
    """The results of a local ``kubetune run`` directory, through the same API as a cluster's experiment."""
    return LocalDirectory(Path(directory)).load()


def manifest(experiment: ExperimentLike) -> TuningExperiment:
    """A validated experiment from a file path, a YAML text, a dict or a model (the checks of ``kubetune
    validate``, with the same messages); raises :class:`~kubetune.validation.InvalidExperiment`."""
    if isinstance(experiment, TuningExperiment):
        doc: Any = experiment.model_dump(by_alias=True, exclude_none=True, mode="json")
    elif isinstance(experiment, Mapping):
        doc = dict(experiment)
    elif isinstance(experiment, os.PathLike) or (isinstance(experiment, str) and "\n" not in experiment and (
            Path(experiment).suffix in (".yaml", ".yml", ".json") or Path(experiment).is_file())):
        return load_experiment(Path(experiment))
    else:
        return parse_manifest(str(experiment))
    exp, problems = validate_document(doc)
    if problems or exp is None:
        raise InvalidExperiment(problems)
    return exp


def body_of(exp: TuningExperiment) -> dict[str, Any]:
    """The object to create: what the manifest said (fields it left out stay out: the API server applies the CRD's
    defaults), without a status."""
    body = exp.model_dump(by_alias=True, exclude_unset=True, exclude={"status"}, mode="json")
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if v is not None}
    body["metadata"] = {**meta, "name": exp.metadata.name}
    return body


RECOVERING_STALLS = frozenset({"WarmStartSourceMissing"})
"""Stalled reasons the operator leaves by itself (it looks again on every reconcile): a wait goes on through them."""


class Client:
    """Experiments on one cluster. ``kubeconfig``/``context``/``namespace`` as kubectl's flags; the namespace
    defaults to the context's."""

    def __init__(self, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None,
                 namespace: str | None = None, *, cluster: Cluster | None = None) -> None:
        self.cluster = cluster or Cluster.connect(kubeconfig, context, namespace)

    @property
    def namespace(self) -> str:
        return self.cluster.namespace

    def create(self, experiment: ExperimentLike, namespace: str | None = None) -> dict[str, Any]:
        """Validate offline, then create the experiment; returns the created object."""
        body = body_of(manifest(experiment))
        return self.cluster.create_experiment(body, namespace)

    def get(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        """The experiment object (spec and status)."""
        return self.cluster.get_experiment(name, namespace)

    def list(self, namespace: str | None = None, all_namespaces: bool = False) -> builtins.list[dict[str, Any]]:
        return self.cluster.list_experiments(namespace, all_namespaces)

    def results(self, name: str, namespace: str | None = None) -> ExperimentResults:
        """Spec, every trial (recorded, and running from their Jobs) and the outcome once it has ended."""
        return ClusterExperiment(name, namespace or self.namespace, cluster=self.cluster).load()

    def trials(self, name: str, namespace: str | None = None) -> builtins.list[TrialRecord]:
        return self.results(name, namespace).trials

    def best(self, name: str, namespace: str | None = None) -> TrialRecord | None:
        """The best succeeded trial (None while there is none)."""
        return self.results(name, namespace).best

    def dataframe(self, name: str, namespace: str | None = None) -> pandas.DataFrame:
        return dataframe(self.results(name, namespace))

    def delete(self, name: str, namespace: str | None = None) -> None:
        """Delete the experiment; its Jobs and result ConfigMaps go with it (owner references)."""
        self.cluster.delete_experiment(name, namespace)

    def wait(self, name: str, timeout: float | None = None, namespace: str | None = None, *, poll: float = 1.0,
             on_poll: Callable[[dict[str, Any]], None] | None = None,
             on_error: Callable[[ClusterError], None] | None = None) -> dict[str, Any]:
        """Wait until the experiment has ended (``Succeeded`` True or False) and return it.

        Raises :class:`WaitTimeout` after ``timeout`` seconds and :class:`ExperimentStalled` when the operator
        reports ``Stalled=True`` for the current generation (not for :data:`RECOVERING_STALLS`: the wait goes on).
        ``on_poll`` is called with each object read.
        A failure worth retrying (the API server restarting or unreachable, throttled, a 5xx; see
        :func:`~kubetune.results.cluster.transient`), in reading the experiment or in ``on_poll``, is passed to
        ``on_error`` and the read is made again, every ``poll`` seconds doubling up to ``RETRY_MAX`` while it
        lasts, until ``timeout``; any other failure (the experiment deleted, access denied) is raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = poll
        while True:
            try:
                obj = self.get(name, namespace)
                if on_poll is not None:
                    on_poll(obj)
            except ClusterError as e:
                if not transient(e):
                    raise
                if on_error is not None:
                    on_error(e)
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"{name} had not ended after {timeout:g} s (last read failed: {e})") from None
                self._sleep(wait, deadline)
                wait = min(max(wait, 0.1) * 2, max(poll, self.RETRY_MAX))
                continue
            wait = poll
            if outcome_of(obj) is not None:
                return obj
            stalled = condition(obj, "Stalled")
            if stalled and stalled.get("status") == "True" and stalled.get("reason") not in RECOVERING_STALLS \
                    and stalled.get("observedGeneration") in (None, obj["metadata"].get("generation")):
                raise ExperimentStalled(f"{name} is stalled: {stalled.get('reason')}: {stalled.get('message')}"[:1000])
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"{name} had not ended after {timeout:g} s")
            self._sleep(poll, deadline)

    RETRY_MAX = 15.0
    """Seconds: the longest pause between two reads while the API server does not answer."""

    @staticmethod
    def _sleep(seconds: float, deadline: float | None) -> None:
        time.sleep(seconds if deadline is None else max(0.0, min(seconds, deadline - time.monotonic())))


def rows(results: ExperimentResults) -> tuple[list[str], list[list[Any]]]:
    """The trial table: ``number, name, state, reason, param_<p>..., <metrics>..., start_time, completion_time,
    duration_seconds, message`` (the columns of ``results.csv``; with ``spec.constraints``, ``feasible`` after
    ``reason``: True, False, or None for a trial that did not succeed); metric columns are the spec's, then others by
    first appearance, at most 100 more."""
    spec = results.spec
    params = [p.name for p in spec.parameters]
    metrics = list(spec.metric_names)
    known = set(metrics)
    for r in results.trials:
        for m in r.trial.metrics:
            if m not in known and len(known) < len(spec.metric_names) + 100:
                known.add(m)
                metrics.append(m)
    cs = spec.constraints or []
    header = ["number", "name", "state", "reason", *(["feasible"] if cs else []), *[f"param_{p}" for p in params],
              *metrics, "start_time", "completion_time", "duration_seconds", "message"]
    out = []
    for r in results.trials:
        t = r.trial
        feasible = [t.feasible(cs) if t.state is TrialState.SUCCEEDED else None] if cs else []
        out.append([t.number, trial_name(results.name, t.number), t.state.value, t.reason, *feasible,
                    *[t.params.get(p) for p in params], *[t.metrics.get(m) for m in metrics],
                    t.start_time, t.completion_time, r.duration_seconds, t.recorded_message()])
    return header, out


def dataframe(results: ExperimentResults | Iterable[TrialRecord]) -> pandas.DataFrame:
    """One row per trial, the columns of :func:`rows` (parameters as their values, metrics as floats)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("kubetune's dataframes need pandas: pip install 'kubetune[pandas]'") from None
    if not isinstance(results, ExperimentResults):
        raise TypeError("dataframe() takes ExperimentResults (Client.results(name) or kubetune.client.load(dir))")
    header, data = rows(results)
    df = pd.DataFrame(data, columns=header)
    return df.set_index("number", drop=False) if len(df) else df


def record_json(results: ExperimentResults, r: TrialRecord) -> dict[str, Any]:
    """A trial as JSON: its record (as the operator stores it), its name and its duration."""
    doc = {"name": trial_name(results.name, r.number), **r.trial.to_record()}
    if r.duration_seconds is not None and math.isfinite(r.duration_seconds):
        doc["duration_seconds"] = r.duration_seconds
    return doc


def format_params(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={render_value(v)}" for k, v in params.items())


__all__ += ["ExperimentLike", "ResultsError", "body_of", "format_params", "manifest", "parse_experiment",
            "record_json"]
