"""Trials as the core sees them: what was tried, in which state it is, and what it reported."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import Any

from .engine import Observation, ObservationState, ParamValue
from .spec import Constraint, Objective

# -- record bounds ------------------------------------------------------------------------------------------------
#
# A record is serialized with ``json.dumps(record, separators=(",", ":"))`` (ASCII output: every non-ASCII character
# is a ``\uXXXX`` escape), so its size in bytes is its length in characters, and that length is also an upper
# bound on the UTF-8 size of any other JSON rendering of the same record. Every bound below is in those bytes.

MAX_CURVE_POINTS = 200
"""Bound on the learning-curve points kept per trial (older points are thinned, the latest always kept)."""
MAX_STEP = 2**53
"""Steps are integers with ``0 <= step < MAX_STEP`` (exact as a float, so any JSON reader keeps them)."""
MAX_METRICS = 64
"""At most this many metrics per trial: the objective and additional metrics first, then the others by name."""
MAX_METRIC_NAME = 128
"""Metric names are 1..128 printable characters; longer names are dropped."""
MAX_METRICS_BYTES = 4096
"""The serialized ``metrics`` object of a record is at most this many bytes (fewer metrics are kept otherwise)."""
MAX_MESSAGE = 1024
"""A message is cut, on a character boundary, to at most this many serialized bytes."""
MAX_SHORT_TEXT = 128
"""Reasons and timestamps: at most this many serialized bytes each."""
MAX_RECORD_BYTES = 16 * 1024
"""The largest serialized record :meth:`Trial.to_record` produces (unless its parameters alone are larger).

Why 16 KiB: a results ConfigMap holds ``SHARD_SIZE`` = 50 records, and the API server rejects a ConfigMap whose
keys plus values exceed 1 MiB (etcd's limit for the whole object is 1.5 MiB). 50 records of 16,384 bytes under
6-byte keys (``t00042``) are 50 * 16,390 = 819,500 bytes, 78 % of 1,048,576: 229,076 bytes of headroom.

What the field bounds add up to: a curve of 200 points of ``[step,value]`` is at most 200 * 44 + 1 bytes (a
16-digit step, a 24-character float, brackets and commas), metrics at most 4,096, message 1,026 with quotes,
reason and two timestamps 3 * 130, keys and the number about 120: 14,433 bytes, leaving 1,951 for the
parameters. 64 parameters with 63-character names and int64 or 12-digit float values need up to
64 * 87 = 5,568, so a record at every field bound at once is thinned further: its curve first (older points), then
its metrics (the last kept first), then its message, until it fits (see :meth:`Trial.fit`). Parameters are never
cut: they are what the trial tried, and the spec bounds them. A trial's ``checkpoint`` path (at most
:data:`MAX_CHECKPOINT_PATH` bytes) and pbt ``lineage`` (at most :data:`MAX_LINEAGE_BYTES`) are never cut either: the
curve and the metrics give way to them (``tests/unit/test_hostile_output.py`` builds the largest record with both).
"""

MAX_CHECKPOINT_PATH = 512
"""A trial's checkpoint location as recorded: at most this many bytes (``mountPath`` of at most 256 characters,
the experiment's name of at most 52 and the trial's of at most 57, with separators, stay below it)."""
MAX_LINEAGE_BYTES = 112
"""The serialized ``lineage`` of a record: four integers below 2^53 under short keys, at most this many bytes."""

_ELLIPSIS = "\u2026"


class TrialState(str, enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    PRUNED = "Pruned"
    CANCELED = "Canceled"
    PAUSED = "Paused"
    """Ended at a rung of successive halving that pauses (``earlyStopping: {rule: asha}`` with
    ``spec.checkpoints``, see :mod:`kubetune.pausing`): no pod is held, its checkpoint is kept, and a promotion
    resumes it as a new trial whose lineage names it as the parent."""

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


@dataclass(frozen=True)
class Lineage:
    """Where a trial of a population (``algorithm: pbt``), or a hyperband promotion that resumes a checkpoint
    (:mod:`kubetune.resume`), comes from: its member (a hyperband configuration's first trial), the trial whose
    checkpoint it restored (None for a fresh start) and the steps its segment starts from and trains to. Recorded
    with the trial (at most :data:`MAX_LINEAGE_BYTES`), so the population can be rebuilt from the records alone."""

    member: int
    parent: int | None
    start: int
    end: int

    def to_record(self) -> dict[str, int]:
        rec = {"member": self.member, "start": self.start, "end": self.end}
        if self.parent is not None:
            rec["parent"] = self.parent
        return rec

    @classmethod
    def from_record(cls, rec: Any) -> Lineage | None:
        """The lineage of a stored record, or None when it is not a valid one."""
        if not isinstance(rec, Mapping):
            return None
        member, start, end = (valid_step(rec.get(k)) for k in ("member", "start", "end"))
        parent = valid_step(rec["parent"]) if "parent" in rec else None
        if member is None or start is None or end is None or ("parent" in rec and parent is None):
            return None
        return cls(member, parent, start, end)


@dataclass
class Trial:
    number: int
    params: dict[str, ParamValue]
    state: TrialState = TrialState.PENDING
    metrics: dict[str, float] = field(default_factory=dict)
    """Latest reported metrics (the final report once finished), bounded by :meth:`fit`."""
    curve: list[tuple[int, float]] = field(default_factory=list)
    """Objective values reported with a step, in step order, bounded by :data:`MAX_CURVE_POINTS`."""
    reason: str = ""
    message: str = ""
    start_time: str | None = None
    completion_time: str | None = None
    truncation: str = field(default="", compare=False)
    lineage: Lineage | None = None
    """With ``algorithm: pbt``, a hyperband promotion that resumes, or successive halving that pauses: the trial's
    member and the checkpoint it restored (see :class:`Lineage`)."""
    checkpoint: str = ""
    """With ``spec.checkpoints``: where the trial's checkpoint is, as the trial sees it (at most
    :data:`MAX_CHECKPOINT_PATH` bytes; empty without checkpoints)."""
    """What was dropped or cut from the trial's output (empty when nothing); added to the recorded message and not
    stored on its own."""

    @property
    def active(self) -> bool:
        return not self.state.finished

    def duration_seconds(self) -> float | None:
        """Seconds from start to completion, or None when either time is missing or unreadable."""
        if not self.start_time or not self.completion_time:
            return None
        try:
            a = datetime.fromisoformat(self.start_time.replace("Z", "+00:00"))
            b = datetime.fromisoformat(self.completion_time.replace("Z", "+00:00"))
            d = (b - a).total_seconds()
        except (ValueError, TypeError, OverflowError):
            return None
        return d if math.isfinite(d) and d >= 0 else None

    def objective_value(self, objective: Objective) -> float | None:
        v = self.metrics.get(objective.metric)
        return v if v is not None and math.isfinite(v) else None

    def objective_values(self, objectives: Sequence[Objective]) -> tuple[float, ...] | None:
        """The values of every objective, or None when one is missing or not finite."""
        values = tuple(self.objective_value(o) for o in objectives)
        return None if any(v is None for v in values) else values  # type: ignore[return-value]

    def losses(self, objectives: Sequence[Objective]) -> tuple[float, ...] | None:
        """:meth:`objective_values` oriented for minimization (a Succeeded trial only; else None)."""
        values = self.objective_values(objectives) if self.state is TrialState.SUCCEEDED else None
        return None if values is None else tuple(o.loss(v) for o, v in zip(objectives, values))

    def constraint_values(self, constraints: Sequence[Constraint]) -> tuple[float, ...]:
        """One value per constraint, Optuna's convention: ``<= 0`` when it holds on the final metrics, ``inf`` when
        the metric was not reported (see :meth:`Constraint.violation`)."""
        return tuple(c.violation(self.metrics.get(c.metric)) for c in constraints)

    def feasible(self, constraints: Sequence[Constraint]) -> bool:
        """Whether this is a Succeeded trial on which every constraint holds. A Succeeded trial that did not report
        a constraint's metric is infeasible; failed, pruned and canceled trials have no feasibility (False here, and
        never counted as infeasible)."""
        return self.state is TrialState.SUCCEEDED and all(v <= 0 for v in self.constraint_values(constraints))

    def infeasible(self, constraints: Sequence[Constraint]) -> bool:
        """Whether this is a Succeeded trial on which a constraint does not hold (see :meth:`feasible`)."""
        return bool(constraints) and self.state is TrialState.SUCCEEDED and not self.feasible(constraints)

    def observation(self, objective: Objective | Sequence[Objective],
                    constraints: Sequence[Constraint] = ()) -> Observation:
        """This (finished) trial as the suggestion engine sees it. Given several objectives (a list of two or
        more), a Succeeded trial that reported every one is complete with ``losses``; one that did not is failed,
        and pruning does not apply (the spec refuses early stopping with several objectives). With outcome
        ``constraints``, a complete observation carries :meth:`constraint_values`."""
        if not isinstance(objective, Objective):
            if len(objective) > 1:
                losses = self.losses(objective)
                state = ObservationState.COMPLETE if losses is not None else ObservationState.FAILED
                values = self.constraint_values(constraints) if state is ObservationState.COMPLETE else ()
                return Observation(self.params, state, None, (), losses=losses, constraints=values)
            objective = objective[0]
        inter = tuple((s, objective.loss(v)) for s, v in self.curve)
        if self.state is TrialState.SUCCEEDED:
            value = self.objective_value(objective)
            loss = objective.loss(value) if value is not None else None
            if constraints:
                return Observation(self.params, ObservationState.COMPLETE, loss, inter,
                                   constraints=self.constraint_values(constraints))
            return Observation(self.params, ObservationState.COMPLETE, loss, inter)
        if self.state is TrialState.PRUNED:
            loss = inter[-1][1] if inter else None
            return Observation(self.params, ObservationState.PRUNED, loss, inter)
        if self.state is TrialState.PAUSED:  # a partial result, as a pruned trial's: its value at the rung
            value = self.objective_value(objective)
            loss = objective.loss(value) if value is not None else (inter[-1][1] if inter else None)
            return Observation(self.params, ObservationState.PRUNED, loss, inter)
        return Observation(self.params, ObservationState.FAILED, None, inter)

    # -- bounds -------------------------------------------------------------------------------------------------

    def fit(self, first: Sequence[str] = ()) -> list[str]:
        """Apply the record bounds to this trial in place and return what was cut (empty when nothing).

        ``first`` names the metrics kept before all others (the objective, then the additional metrics); without
        it the current order of :attr:`metrics` is the priority. Idempotent: a fitted trial fits again unchanged.
        The notes are added to :attr:`truncation`; the message itself is composed by :meth:`recorded_message`.
        """
        notes: list[str] = []
        metrics, dropped = bound_metrics(self.metrics, list(first) + list(self.metrics))
        if dropped:
            notes.append(f"kept {len(metrics)} of {len(metrics) + dropped} metrics")
        curve = make_curve(self.curve)
        if len(curve) < len(self.curve):
            notes.append(f"kept {len(curve)} of {len(self.curve)} curve points")
        self.metrics, self.curve = metrics, curve
        self.reason = clip_text(self.reason, MAX_SHORT_TEXT)
        self.start_time = clip_text(self.start_time, MAX_SHORT_TEXT) if self.start_time else self.start_time
        self.completion_time = (clip_text(self.completion_time, MAX_SHORT_TEXT) if self.completion_time
                                else self.completion_time)
        for text in notes:
            self.note(text)
        cut = self._fit_record()
        return notes + cut

    def note(self, text: str) -> None:
        """Add ``text`` to what was cut from this trial's output."""
        if text and text not in self.truncation:
            self.truncation = f"{self.truncation}; {text}" if self.truncation else text

    def recorded_message(self) -> str:
        """The message as recorded: the trial's message and what was cut, within :data:`MAX_MESSAGE` bytes (what
        was cut is kept whole when it can be; the message gives way)."""
        note = self.truncation
        if not note or note in self.message:
            return clip_text(self.message, MAX_MESSAGE)
        if not self.message:
            return clip_text(note, MAX_MESSAGE)
        note = clip_text(note, MAX_MESSAGE // 2)
        room = MAX_MESSAGE - (json_size(note) - 2) - 2
        return f"{clip_text(self.message, room)}; {note}"

    def _fit_record(self) -> list[str]:
        """Thin the curve, then drop the last metrics, until the serialized record is within MAX_RECORD_BYTES."""
        base, points, kept = self.truncation, len(self.curve), len(self.metrics)
        notes: list[str] = []
        while (excess := record_size(self._record()) - MAX_RECORD_BYTES) > 0:
            if len(self.curve) > 1:  # drop about as many points as the excess takes, at least one
                per_point = json_size(self.curve) / len(self.curve)
                self.curve = _drop_points(self.curve, int(excess / per_point) + 1)
            elif len(self.metrics) > 1:
                self.metrics = dict(list(self.metrics.items())[:-1])
            else:
                break  # the parameters alone are larger than the budget
            notes = []
            if len(self.curve) < points:
                notes.append(f"the curve was thinned to {len(self.curve)} points to fit the record")
            if len(self.metrics) < kept:
                notes.append(f"kept {len(self.metrics)} of {kept} metrics to fit the record")
            self.truncation = base
            for text in notes:
                self.note(text)
        return notes

    # -- records ------------------------------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"number": self.number, "params": self.params, "state": self.state.value}
        if self.metrics:
            rec["metrics"] = self.metrics
        if self.curve:
            rec["curve"] = [list(p) for p in self.curve]
        message = self.recorded_message()
        for key, value in (("reason", self.reason), ("message", message), ("start_time", self.start_time),
                           ("completion_time", self.completion_time)):
            if value:
                rec[key] = value
        if self.lineage is not None:
            rec["lineage"] = self.lineage.to_record()
        if self.checkpoint:
            rec["checkpoint"] = clip_text(self.checkpoint, MAX_CHECKPOINT_PATH)
        return rec

    def to_record(self) -> dict[str, Any]:
        """The trial as stored: every bound applied (see :data:`MAX_RECORD_BYTES`), so at most that many bytes
        serialized unless the parameters alone are larger."""
        bounded = Trial(self.number, self.params, self.state, dict(self.metrics), list(self.curve), self.reason,
                        self.message, self.start_time, self.completion_time, self.truncation, self.lineage,
                        self.checkpoint)
        bounded.fit()
        return bounded._record()

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Trial:
        return cls(
            number=int(rec["number"]),
            params=dict(rec["params"]),
            state=TrialState(rec["state"]),
            metrics={k: f for k, v in (rec.get("metrics") or {}).items() if (f := finite_float(v)) is not None},
            curve=make_curve(rec.get("curve") or []),
            reason=rec.get("reason", ""),
            message=rec.get("message", ""),
            start_time=rec.get("start_time"),
            completion_time=rec.get("completion_time"),
            lineage=Lineage.from_record(rec.get("lineage")),
            checkpoint=rec["checkpoint"] if isinstance(rec.get("checkpoint"), str) else "",
        )


# -- bounded pieces ---------------------------------------------------------------------------------------------


def json_size(value: Any) -> int:
    """Bytes of ``value`` serialized as records are (ASCII JSON, compact separators)."""
    return len(json.dumps(value, separators=(",", ":")))


def record_size(record: Mapping[str, Any]) -> int:
    return json_size(record)


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (booleans, non-numbers, NaN, infinities, ints beyond float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def valid_step(step: Any) -> int | None:
    """``step`` as an int when it is an integer (not a bool; a whole float is accepted) in ``[0, MAX_STEP)``."""
    if isinstance(step, bool):
        return None
    if isinstance(step, float):
        if not (0.0 <= step < MAX_STEP) or not step.is_integer():
            return None
        return int(step)
    if isinstance(step, int) and 0 <= step < MAX_STEP:
        return step
    return None


def valid_metric_name(name: Any) -> bool:
    return isinstance(name, str) and 0 < len(name) <= MAX_METRIC_NAME and name.isprintable()


def bound_metrics(metrics: Mapping[Any, Any], first: Sequence[str] = ()) -> tuple[dict[str, float], int]:
    """At most :data:`MAX_METRICS` valid metrics within :data:`MAX_METRICS_BYTES`, and how many were dropped.

    Valid: a name of 1..:data:`MAX_METRIC_NAME` printable characters and a finite number. The names in ``first``
    come first, in that order; the others follow sorted by name. Keeping stops at the first metric that does not
    fit, so the kept metrics are always a prefix of that order.
    """
    valid: dict[str, float] = {}
    for name, value in metrics.items():
        f = finite_float(value)
        if f is not None and valid_metric_name(name):
            valid[name] = f
    order = list(dict.fromkeys([n for n in first if n in valid]))
    seen = set(order)
    order += sorted(n for n in valid if n not in seen)
    kept: dict[str, float] = {}
    size = 2  # {}
    for name in order[:MAX_METRICS]:
        entry = json_size(name) + 1 + json_size(valid[name]) + (1 if kept else 0)
        if size + entry > MAX_METRICS_BYTES:
            break
        kept[name] = valid[name]
        size += entry
    return kept, len(metrics) - len(kept)


def make_curve(points: Iterable[tuple[Any, Any]], limit: int = MAX_CURVE_POINTS) -> list[tuple[int, float]]:
    """A bounded curve from ``(step, value)`` points in report order: invalid steps and values are left out, a later
    point for the same step wins, sorted by step, thinned to ``limit`` points (the latest always kept)."""
    by_step: dict[int, float] = {}
    for step, value in points:
        s, v = valid_step(step), finite_float(value)
        if s is not None and v is not None:
            by_step[s] = v
    return thin_curve(sorted(by_step.items()), limit)


def clip_text(text: str, max_bytes: int) -> str:
    """``text`` cut on a character boundary so that it serializes to at most ``max_bytes`` (quotes excluded), with
    an ellipsis when cut."""
    if json_size(text) - 2 <= max_bytes:
        return text
    head = text[:max_bytes]
    costs = list(accumulate(json_size(c) - 2 for c in head))
    room = max_bytes - (json_size(_ELLIPSIS) - 2)
    n = 0
    while n < len(costs) and costs[n] <= room:
        n += 1
    return head[:n] + _ELLIPSIS


def add_curve_point(curve: list[tuple[int, float]], step: int, value: float) -> list[tuple[int, float]]:
    """Insert ``(step, value)`` in step order (a later report for the same step wins), keeping the curve bounded."""
    out = [p for p in curve if p[0] != step]
    out.append((step, value))
    out.sort(key=lambda p: p[0])
    return thin_curve(out)


def _drop_points(curve: list[tuple[int, float]], k: int) -> list[tuple[int, float]]:
    """``curve`` without ``k`` points (at most all but the last): every other one from the oldest on."""
    k = min(k, len(curve) - 1)
    if 2 * k < len(curve):
        return [p for i, p in enumerate(curve) if not (i % 2 == 1 and i < 2 * k)]
    return thin_curve(curve, len(curve) - k)


def thin_curve(curve: list[tuple[int, float]], limit: int = MAX_CURVE_POINTS) -> list[tuple[int, float]]:
    """Keep at most ``limit`` points: drop every other point of the older half until it fits; keep the last."""
    while len(curve) > limit:
        half = len(curve) // 2
        thinned = curve[:half:2] + curve[half:]
        curve = thinned if len(thinned) < len(curve) else curve[len(curve) - limit:]
    return curve
