"""Early stopping: rules that stop hopeless trials from their intermediate reports.

A :class:`Pruner` looks at every trial of an experiment (the running ones with their learning curves, and the
finished ones as reference) and names the running trials to stop. Like the suggestion engine it is stateless and
deterministic, so both backends and a restarted operator reach the same decisions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from ..spec import ExperimentSpec
    from ..trials import Trial


class Pruner(ABC):
    @abstractmethod
    def decide(self, spec: "ExperimentSpec", trials: Sequence["Trial"]) -> list[tuple[int, str, str]]:
        """``(trial number, reason, message)`` for each running trial to stop now."""


def make_pruner(spec: "ExperimentSpec") -> Pruner | None:
    """The pruner the spec asks for, or ``None`` without ``spec.earlyStopping``."""
    config = getattr(spec, "early_stopping", None)
    if config is None:
        return None
    raise NotImplementedError("early stopping is not available yet")
