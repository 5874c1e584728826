"""The results API: an experiment's spec, its trials as typed records and its best trial, from any source.

A source is anything that yields :class:`ExperimentResults`; :func:`load` picks one from a string. The first source
is a local results directory (what ``kubetune run`` writes, :mod:`kubetune.results.local`).
"""

from __future__ import annotations

from .local import LocalDirectory
from .model import ExperimentResults, ResultsError, ResultsSource, TrialRecord

__all__ = ["ExperimentResults", "LocalDirectory", "ResultsError", "ResultsSource", "TrialRecord", "load",
           "source_for"]


def source_for(source: str) -> ResultsSource:
    """The results source a command-line argument names (today: a local results directory)."""
    return LocalDirectory(source)


def load(source: str) -> ExperimentResults:
    return source_for(source).load()
