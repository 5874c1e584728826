"""Early stopping: rules that stop hopeless trials from their intermediate reports.

A :class:`Pruner` looks at every trial of an experiment (the running ones with their learning curves, and the
finished ones as reference) and names the running trials to stop. Like the suggestion engine it is stateless and
deterministic, so both backends and a restarted operator reach the same decisions.

``spec.earlyStopping`` (:mod:`kubetune.pruning.config`) picks the rule: ``median`` (:mod:`.median`) or ``asha``
(:mod:`.asha`). :func:`kubetune.plan.make_plan` turns each decision into a ``StopOrder`` with state ``Pruned`` and
the rule's reason (:class:`PruneReason`); the message names the step and the values compared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..spec import ExperimentSpec
    from ..trials import Trial
    from ._curve import FinishedCurves


class PruneReason:
    """CamelCase reasons recorded on trials stopped by a rule."""

    MEDIAN = "MedianStopping"
    ASHA = "ASHA"


class Pruner(ABC):
    reason: str = ""

    @abstractmethod
    def decide(self, spec: ExperimentSpec, trials: Sequence[Trial]) -> list[tuple[int, str, str]]:
        """``(trial number, reason, message)`` for each running trial to stop now."""

    def decide_active(
        self, spec: ExperimentSpec, finished: FinishedCurves, active: Sequence[Trial]
    ) -> list[tuple[int, str, str]]:
        """:meth:`decide` over ``active`` and the finished trials kept in ``finished`` (every finished trial a
        rule compares with), reading summaries of the finished curves instead of every curve."""
        return self.decide(spec, sorted([*finished.trials, *active], key=lambda t: t.number))


def make_pruner(spec: ExperimentSpec) -> Pruner | None:
    """The pruner the spec asks for, or ``None`` without ``spec.earlyStopping``."""
    config = getattr(spec, "early_stopping", None)
    if config is None:
        return None
    effective = config.effective
    if effective.rule == "median":
        from .median import MedianPruner

        return MedianPruner(effective)
    if effective.rule == "asha":
        if getattr(spec, "checkpoints", None) is not None:
            return None  # trials pause at the rungs instead: kubetune.pausing promotes and resumes them
        from .asha import AshaPruner

        return AshaPruner(effective)
    raise ValueError(f"unknown early-stopping rule {effective.rule!r}")
