"""The results API: an experiment's spec, its trials as typed records and its best trial, from any source.

A source is anything that yields :class:`ExperimentResults`; :func:`load` picks one from a string. The first source
is a local results directory (what ``kubetune run`` writes, :mod:`kubetune.results.local`).
"""

from __future__ import annotations

from pathlib import Path

from .local import LocalDirectory
from .model import ExperimentResults, ResultsError, ResultsSource, TrialRecord

__all__ = ["CLUSTER_PREFIXES", "ExperimentResults", "LocalDirectory", "ResultsError", "ResultsSource", "TrialRecord",
           "load", "source_for"]


CLUSTER_PREFIXES = ("tex/", "tuningexperiment/", "tuningexperiments/", "tuningexperiment.kubetune.io/",
                    "tuningexperiments.kubetune.io/")
"""``tex/NAME`` or ``tex/NAMESPACE/NAME`` (kubectl's TYPE/NAME) names an experiment on the cluster of the current
kubeconfig context (:mod:`kubetune.results.cluster`)."""


def source_for(source: str, *, kubeconfig: str | None = None, context: str | None = None) -> ResultsSource:
    """The results source a command-line argument names: an existing local results directory, else
    ``tex/[NAMESPACE/]NAME`` for an experiment on the cluster of the kubeconfig's current context (or of
    ``kubeconfig`` and ``context``, as kubectl's flags)."""
    if source.startswith(CLUSTER_PREFIXES) and not Path(source).exists():
        from .cluster import ClusterExperiment

        parts = source.split("/")[1:]
        if len(parts) in (1, 2) and all(parts):
            return ClusterExperiment(parts[-1], parts[0] if len(parts) == 2 else None, kubeconfig=kubeconfig,
                                     context=context)
    return LocalDirectory(source)


def load(source: str, *, kubeconfig: str | None = None, context: str | None = None) -> ExperimentResults:
    return source_for(source, kubeconfig=kubeconfig, context=context).load()
