"""Typed results, independent of where they were read from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..engine import ParamValue
from ..plan import best_trial, pareto_front
from ..spec import ExperimentSpec
from ..trials import Trial, TrialState


class ResultsError(Exception):
    """The source holds no readable results (no experiment, or damage beyond a run still being written)."""


@dataclass(frozen=True)
class TrialRecord:
    """One trial as recorded: a bounded :class:`~kubetune.trials.Trial` plus the duration, when known."""

    trial: Trial
    duration_seconds: float | None = None

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def state(self) -> TrialState:
        return self.trial.state

    @property
    def params(self) -> dict[str, ParamValue]:
        return self.trial.params


@dataclass
class ExperimentResults:
    name: str
    spec: ExperimentSpec
    trials: list[TrialRecord]
    """Every recorded trial, by number."""
    outcome: dict[str, object] | None = None
    """``{"succeeded": bool, "reason": str, "message": str}`` once the experiment has ended, else None."""
    source: str = ""
    notes: list[str] = field(default_factory=list)
    """What the reader skipped or could not read (a line being written, a missing summary, ...)."""

    @property
    def best(self) -> TrialRecord | None:
        """The best succeeded trial by the objective (the same rule the operator and ``kubetune run`` apply)."""
        t = best_trial(self.spec, [r.trial for r in self.trials])
        return None if t is None else next(r for r in self.trials if r.trial is t)

    @property
    def front(self) -> list[TrialRecord]:
        """With several objectives, the Pareto front of the succeeded trials, by number (the rule the operator and
        ``kubetune run`` apply; empty with one objective)."""
        members = {id(t) for t in pareto_front(self.spec, [r.trial for r in self.trials])}
        return [r for r in self.trials if id(r.trial) in members]

    @property
    def finished(self) -> bool:
        return self.outcome is not None


class ResultsSource(Protocol):
    """Where results come from: a local directory today; a cluster's experiment plugs in the same way."""

    def load(self) -> ExperimentResults: ...
