"""What the dashboard watches: a results source plus a cheap stamp that changes when the source may have changed.

The full read (:meth:`Watched.load`) is done only when the stamp differs from the last one:

* a local results directory: the size, modification time and inode of ``experiment.json``, ``journal.jsonl``,
  ``trials.jsonl`` and ``summary.json`` (four ``stat`` calls);
* an experiment on a cluster: the TuningExperiment's ``resourceVersion`` (one GET; the operator patches the status
  after it records finished trials, so a new record always comes with a new version), and, while trials are
  running, at most one full read every ``running_period`` seconds for their latest reports (which live in pod
  annotations and do not change the experiment).
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable
from typing import Any, Protocol

from ..local.results import JOURNAL
from ..results import CLUSTER_PREFIXES, ExperimentResults, LocalDirectory, source_for
from ..trials import TrialState

WATCHED_FILES = ("experiment.json", JOURNAL, "trials.jsonl", "summary.json")


class Watched(Protocol):
    """A results source with a stamp: equal stamps mean nothing to re-read."""

    def stamp(self) -> Hashable: ...

    def load(self) -> ExperimentResults: ...


class LocalWatch:
    """A results directory written by ``kubetune run``."""

    def __init__(self, directory: LocalDirectory) -> None:
        self.directory = directory

    def stamp(self) -> Hashable:
        out: list[tuple[int, int, int] | None] = []
        for name in WATCHED_FILES:
            try:
                st = os.stat(self.directory.path / name)
            except OSError:
                out.append(None)
                continue
            out.append((st.st_size, st.st_mtime_ns, st.st_ino))
        return tuple(out)

    def load(self) -> ExperimentResults:
        return self.directory.load()


class ClusterWatch:
    """A TuningExperiment on a cluster, read through :class:`~kubetune.results.cluster.ClusterExperiment`."""

    def __init__(self, experiment: Any, running_period: float = 10.0,
                 clock: Any = time.monotonic) -> None:
        self.experiment = experiment
        """A :class:`~kubetune.results.cluster.ClusterExperiment`."""
        self.running_period = running_period
        self.clock = clock
        self._object: dict[str, Any] | None = None
        self._running = False
        self._loaded_at = 0.0
        self._epoch = 0
        """Counts the periodic reads that fell due while trials were running."""

    def stamp(self) -> Hashable:
        obj: dict[str, Any] = self.experiment.cluster.get_experiment(self.experiment.name, self.experiment.namespace)
        self._object = obj
        meta = obj.get("metadata") or {}
        if self._running and self.clock() - self._loaded_at >= self.running_period:
            self._epoch += 1
        return str(meta.get("uid", "")), str(meta.get("resourceVersion", "")), self._epoch

    def load(self) -> ExperimentResults:
        self._loaded_at = self.clock()
        results: ExperimentResults = self.experiment.load(self._object)
        self._running = not results.finished and any(
            r.state in (TrialState.RUNNING, TrialState.PENDING) for r in results.trials)
        return results


def watch(source: str, running_period: float = 10.0, *, kubeconfig: str | None = None,
          context: str | None = None) -> Watched:
    """The watched source a command-line argument names (as ``kubetune report`` reads it)."""
    src = source_for(source, kubeconfig=kubeconfig, context=context)
    if isinstance(src, LocalDirectory):
        return LocalWatch(src)
    assert source.startswith(CLUSTER_PREFIXES)
    return ClusterWatch(src, running_period)
