"""Parsing what trials report: the SDK's pod annotation and the termination-message fallback (API.md §2)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

METRICS_ANNOTATION = "kubetune.io/metrics"
TERMINATION_MESSAGE_LIMIT = 4096


class MetricsFormatError(ValueError):
    pass


@dataclass
class Report:
    """The latest state of a trial's reports: merged latest metrics and the per-step curve of every metric."""

    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seq: int = 0

    def objective_curve(self, metric: str) -> list[tuple[int, float]]:
        return [(step, values[metric]) for step, values in self.curve if metric in values]


def _finite_numbers(obj: Any, what: str) -> dict[str, float]:
    if not isinstance(obj, dict):
        raise MetricsFormatError(f"{what} is not a JSON object")
    out: dict[str, float] = {}
    for k, v in obj.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MetricsFormatError(f"{what}: metric {k!r} is not a number")
        if not math.isfinite(v):
            raise MetricsFormatError(f"{what}: metric {k!r} is not finite")
        out[str(k)] = float(v)
    return out


def parse_annotation(text: str) -> Report:
    """Parse the ``kubetune.io/metrics`` annotation the SDK writes."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise MetricsFormatError(f"{METRICS_ANNOTATION} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise MetricsFormatError(f"{METRICS_ANNOTATION} is not a JSON object")
    if "metrics" not in doc:  # a plain object of final metrics, written by hand
        return Report(metrics=_finite_numbers(doc, METRICS_ANNOTATION))
    seq = doc.get("seq") or 0
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise MetricsFormatError(f"{METRICS_ANNOTATION}: seq is not an integer")
    curve = doc.get("curve") or []
    if not isinstance(curve, list):
        raise MetricsFormatError(f"{METRICS_ANNOTATION}: curve is not a list")
    report = Report(metrics=_finite_numbers(doc["metrics"], METRICS_ANNOTATION), seq=seq)
    for point in curve:
        if (isinstance(point, list) and len(point) == 2 and isinstance(point[0], int)
                and not isinstance(point[0], bool)):
            try:
                report.curve.append((point[0], _finite_numbers(point[1], METRICS_ANNOTATION)))
            except MetricsFormatError:
                continue
    report.curve.sort(key=lambda p: p[0])
    return report


def parse_termination_message(text: str) -> dict[str, float] | None:
    """The last non-empty line of a termination message as a JSON object of finite numbers.

    Returns ``None`` when there is no message; raises :class:`MetricsFormatError` when the last line is not such
    an object.
    """
    lines = [ln for ln in text[-TERMINATION_MESSAGE_LIMIT:].splitlines() if ln.strip()]
    if not lines:
        return None
    try:
        obj = json.loads(lines[-1])
    except ValueError:
        raise MetricsFormatError("the termination message's last line is not JSON") from None
    return _finite_numbers(obj, "the termination message")
