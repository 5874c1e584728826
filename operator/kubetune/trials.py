"""Trials as the core sees them: what was tried, in which state it is, and what it reported."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .engine import Observation, ObservationState, ParamValue
from .spec import Objective

MAX_CURVE_POINTS = 200
"""Bound on the learning-curve points kept per trial (older points are thinned, the latest always kept)."""
MAX_MESSAGE = 1024


class TrialState(str, enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PRUNED = "Pruned"
    CANCELED = "Canceled"

    @property
    def finished(self) -> bool:
        return self not in (TrialState.PENDING, TrialState.RUNNING)


class Reason:
    """CamelCase reasons recorded on trials."""

    COMPLETED = "Completed"
    METRICS_MISSING = "MetricsMissing"
    INVALID_METRICS = "InvalidMetrics"
    ERROR = "Error"
    COMMAND_NOT_FOUND = "CommandNotFound"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    POD_DELETED = "PodDeleted"
    JOB_DELETED = "JobDeleted"
    EXPERIMENT_FINISHED = "ExperimentFinished"
    INTERRUPTED = "Interrupted"


@dataclass
class Trial:
    number: int
    params: dict[str, ParamValue]
    state: TrialState = TrialState.PENDING
    metrics: dict[str, float] = field(default_factory=dict)
    """Latest reported metrics (the final report once finished)."""
    curve: list[tuple[int, float]] = field(default_factory=list)
    """Objective values reported with a step, in step order, bounded by :data:`MAX_CURVE_POINTS`."""
    reason: str = ""
    message: str = ""
    start_time: str | None = None
    completion_time: str | None = None

    @property
    def active(self) -> bool:
        return not self.state.finished

    def objective_value(self, objective: Objective) -> float | None:
        v = self.metrics.get(objective.metric)
        return v if v is not None and math.isfinite(v) else None

    def observation(self, objective: Objective) -> Observation:
        """This (finished) trial as the suggestion engine sees it."""
        inter = tuple((s, objective.loss(v)) for s, v in self.curve)
        if self.state is TrialState.SUCCEEDED:
            value = self.objective_value(objective)
            loss = objective.loss(value) if value is not None else None
            return Observation(self.params, ObservationState.COMPLETE, loss, inter)
        if self.state is TrialState.PRUNED:
            loss = inter[-1][1] if inter else None
            return Observation(self.params, ObservationState.PRUNED, loss, inter)
        return Observation(self.params, ObservationState.FAILED, None, inter)

    # -- records ------------------------------------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"number": self.number, "params": self.params, "state": self.state.value}
        if self.metrics:
            rec["metrics"] = self.metrics
        if self.curve:
            rec["curve"] = [list(p) for p in self.curve]
        for key in ("reason", "message", "start_time", "completion_time"):
            value = getattr(self, key)
            if value:
                rec[key] = value[:MAX_MESSAGE] if key == "message" else value
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> "Trial":
        return cls(
            number=int(rec["number"]),
            params=dict(rec["params"]),
            state=TrialState(rec["state"]),
            metrics={k: float(v) for k, v in (rec.get("metrics") or {}).items()},
            curve=[(int(s), float(v)) for s, v in rec.get("curve") or []],
            reason=rec.get("reason", ""),
            message=rec.get("message", ""),
            start_time=rec.get("start_time"),
            completion_time=rec.get("completion_time"),
        )


def add_curve_point(curve: list[tuple[int, float]], step: int, value: float) -> list[tuple[int, float]]:
    """Insert ``(step, value)`` in step order (a later report for the same step wins), keeping the curve bounded."""
    out = [p for p in curve if p[0] != step]
    out.append((step, value))
    out.sort(key=lambda p: p[0])
    return thin_curve(out)


def thin_curve(curve: list[tuple[int, float]], limit: int = MAX_CURVE_POINTS) -> list[tuple[int, float]]:
    """Keep at most ``limit`` points: drop every other point of the older half until it fits; keep the last."""
    while len(curve) > limit:
        half = len(curve) // 2
        curve = curve[:half:2] + curve[half:]
    return curve
