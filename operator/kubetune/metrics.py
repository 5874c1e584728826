"""Parsing what trials report: the SDK's pod annotation, the termination-message fallback and ``kubetune run``'s
report file.

Everything here reads untrusted text. The text is bounded before it is parsed (:data:`MAX_REPORT_BYTES`), nesting
deeper than :data:`MAX_JSON_DEPTH` is refused before :func:`json.loads` sees it, and every failure is a
:class:`MetricsFormatError` with a message for the trial's record: no other exception leaves this module.

Two kinds of problems:

* the text as a whole is unusable (too large, not UTF-8, not JSON, too deep, not an object, ``metrics`` not an
  object): :class:`MetricsFormatError`;
* parts of it are (a metric that is not a finite number or has a bad name, a curve point with a bad step, a
  duplicate key, a bad ``seq``): those parts are left out, :attr:`Report.rejected` says why for each metric, and
  :attr:`Report.notes` says what was left out, so a trial whose objective is fine still succeeds with a note.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from .trials import MAX_METRIC_NAME, MAX_STEP, finite_float, valid_step

METRICS_ANNOTATION = "kubetune.io/metrics"
TERMINATION_MESSAGE_LIMIT = 4096
"""Kubernetes keeps at most the last 4096 bytes of a container's termination message; so does ``kubetune run``."""
MAX_REPORT_BYTES = 256 * 1024
"""Largest report text parsed: the API server's limit for all annotations of an object together. Larger text (a
local report line or termination file) is refused unparsed."""
MAX_JSON_DEPTH = 8
"""Deepest bracket nesting accepted (the SDK writes 4: ``{"curve": [[step, {...}]]}``)."""
MAX_SEQ = 2**63
"""``seq`` is an integer in ``[0, MAX_SEQ)``; another value is ignored (read as 0) with a note."""
MAX_NAMES_IN_NOTE = 3

_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
"""A JSON string, or an unterminated one up to the end (so each quote is scanned once: linear time)."""
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class MetricsFormatError(ValueError):
    """A report that cannot be used at all; the message is written to the trial's record."""


@dataclass
class Report:
    """The latest state of a trial's reports: merged latest metrics and the per-step curve of every metric."""

    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    seq: int = 0
    rejected: dict[str, str] = field(default_factory=dict, compare=False)
    """Metric names (as reported) that were left out, and why (``"is not finite"``)."""
    notes: list[str] = field(default_factory=list, compare=False)
    """What was left out, for the trial's message (a few lines, however much was left out)."""
    source: str = field(default=METRICS_ANNOTATION, compare=False)

    def objective_curve(self, metric: str) -> list[tuple[int, float]]:
        return [(step, values[metric]) for step, values in self.curve if metric in values]

    def problem(self, metric: str) -> str | None:
        """Why ``metric`` was left out of this report (``None`` when it was not reported, or is fine)."""
        why = self.rejected.get(metric)
        return f"{self.source}: metric {metric!r} {why}" if why else None


# ------------------------------------------------------------------------------------------------ bounded JSON


def _text(data: str | bytes, what: str, limit: int) -> str:
    if isinstance(data, (bytes, bytearray)):
        if len(data) > limit:
            raise MetricsFormatError(f"{what} is {len(data)} bytes, more than the {limit} kubetune reads")
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise MetricsFormatError(f"{what} is not UTF-8 text (byte {e.start})") from None
    if len(data) > limit:  # characters: a cheap lower bound on the UTF-8 size
        raise MetricsFormatError(f"{what} is {len(data)} characters, more than the {limit} bytes kubetune reads")
    return data


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings (an unterminated string counts as text: json.loads refuses it)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(_DEPTH_STEP[c] for c in brackets), default=0)


def _int(digits: str) -> int | float:
    # Long digit strings become floats (an int beyond float range becomes inf, refused later) instead of ints that
    # float() cannot convert and that Python refuses to parse beyond 4300 digits.
    return int(digits) if len(digits) <= 19 else float(digits)


class _Pairs:
    """A JSON object with its duplicate keys (the last one wins, as in :func:`json.loads`)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.pairs)

    def get(self, key: str) -> Any:
        found = None
        for k, v in self.pairs:
            if k == key:
                found = v
        return found

    def has(self, key: str) -> bool:
        return any(k == key for k, _ in self.pairs)


def load_json(data: str | bytes, what: str, limit: int = MAX_REPORT_BYTES) -> Any:
    """Parse untrusted JSON: at most ``limit`` bytes, nesting at most :data:`MAX_JSON_DEPTH`, objects as
    :class:`_Pairs` (so duplicate keys can be reported). Raises only :class:`MetricsFormatError`."""
    text = _text(data, what, limit)
    if _depth(text) > MAX_JSON_DEPTH:
        raise MetricsFormatError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_Pairs, parse_int=_int)
    except (ValueError, RecursionError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise MetricsFormatError(f"{what} is not JSON: {detail}") from None


# ------------------------------------------------------------------------------------------------ reports


class _Notes:
    """Counts what was left out, with a few example names, and renders it as short notes."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, example: str | None = None) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if example is not None:
            names = self.examples.setdefault(kind, [])
            if len(names) < MAX_NAMES_IN_NOTE:
                names.append(repr(example[:40] + ("\u2026" if len(example) > 40 else "")))

    def render(self) -> list[str]:
        out = []
        for kind, n in self.counts.items():
            names = self.examples.get(kind)
            out.append(f"ignored {n} {kind}" + (f" ({', '.join(names)}{', ...' if n > len(names) else ''})"
                                               if names else ""))
        return out


def _object(obj: Any) -> _Pairs | None:
    return obj if isinstance(obj, _Pairs) else None


def _unique(obj: _Pairs, notes: _Notes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj:
        if k in out:
            notes.add("duplicate keys (the last value is used)", k)
        out[k] = v
    return out


_WHY_NOTE = {
    "is not finite": "metrics that are not finite",
    "is not a number": "metrics that are not numbers",
    f"has a name longer than {MAX_METRIC_NAME} characters": f"metrics with names longer than {MAX_METRIC_NAME} "
                                                            "characters",
    "has an empty or unprintable name": "metrics with empty or unprintable names",
}


def _why(name: str, value: Any) -> str | None:
    if len(name) > MAX_METRIC_NAME:
        return f"has a name longer than {MAX_METRIC_NAME} characters"
    if not name or not name.isprintable():
        return "has an empty or unprintable name"
    if finite_float(value) is None:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return "is not finite" if number else "is not a number"
    return None


def _metrics(values: dict[str, Any], notes: _Notes | None, rejected: dict[str, str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in values.items():
        why = _why(name, value)
        if why is None:
            out[name] = float(value)
            continue
        if rejected is not None:
            rejected[name] = why
        if notes is not None:
            notes.add(_WHY_NOTE[why], name)
    return out


_STEP_RANGE = f"an integer step in [0, 2**{MAX_STEP.bit_length() - 1})"


def _report(doc: Any, what: str) -> Report:
    obj = _object(doc)
    if obj is None:
        raise MetricsFormatError(f"{what} is not a JSON object")
    notes = _Notes()
    top = _unique(obj, notes)
    report = Report(source=what)
    if "metrics" not in top:  # a plain object of final metrics, written by hand
        report.metrics = _metrics(top, notes, report.rejected)
        report.notes = notes.render()
        return report
    metrics = _object(top["metrics"])
    if metrics is None:
        raise MetricsFormatError(f"{what}: metrics is not a JSON object")
    report.metrics = _metrics(_unique(metrics, notes), notes, report.rejected)
    seq = top.get("seq")
    if seq is not None:
        if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < MAX_SEQ:
            report.seq = seq
        else:
            notes.add("seq that is not an integer in [0, 2**63)")
    curve = top.get("curve")
    if curve is not None and not isinstance(curve, list):
        notes.add("curve that is not a list")
        curve = None
    points: dict[int, dict[str, float]] = {}
    for point in curve or []:
        step = valid_step(point[0]) if isinstance(point, list) and len(point) == 2 else None
        values = _object(point[1]) if step is not None else None
        if step is None or values is None:
            notes.add(f"curve points that are not [step, {{metrics}}] with {_STEP_RANGE}")
            continue
        kept = _metrics(dict(values), None, None)
        if kept:
            points[step] = kept  # a later point for the same step wins
    report.curve = sorted(points.items())
    report.notes = notes.render()
    return report


def parse_annotation(text: str | bytes) -> Report:
    """Parse the ``kubetune.io/metrics`` annotation the SDK writes (or a plain object of final metrics)."""
    return _report(load_json(text, METRICS_ANNOTATION), METRICS_ANNOTATION)


def _last_line(text: str | bytes) -> str | bytes | None:
    """The last non-empty line of the last :data:`TERMINATION_MESSAGE_LIMIT` bytes of ``text``."""
    if isinstance(text, str):
        text = text[-TERMINATION_MESSAGE_LIMIT:]
        lines: list[Any] = [ln for ln in text.splitlines() if ln.strip()]
    else:
        text = bytes(text[-TERMINATION_MESSAGE_LIMIT:])
        lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def parse_termination_report(text: str | bytes) -> Report | None:
    """The last non-empty line of a termination message (its last 4096 bytes) as a report of final metrics.

    ``None`` when there is no message; :class:`MetricsFormatError` when the last line is not a JSON object.
    Metrics that are not finite numbers are left out and listed in :attr:`Report.rejected`.
    """
    what = "the termination message"
    line = _last_line(text)
    if line is None:
        return None
    last = "the termination message's last line"
    try:
        doc = load_json(line, last)
    except MetricsFormatError as e:
        text = str(e)
        raise MetricsFormatError(f"{last} is not JSON" if text.startswith(f"{last} is not JSON") else text) from None
    report = _report(doc, what)
    report.curve = []  # final metrics only
    return report


def parse_termination_message(text: str | bytes) -> dict[str, float] | None:
    """The last non-empty line of a termination message as a JSON object of finite numbers, strictly.

    Returns ``None`` when there is no message; raises :class:`MetricsFormatError` when the last line is not such
    an object or any of its metrics is not a finite number (:func:`parse_termination_report` keeps the others).
    """
    report = parse_termination_report(text)
    if report is None:
        return None
    for name in report.rejected:
        problem = report.problem(name)
        assert problem is not None
        raise MetricsFormatError(problem)
    return report.metrics


def parse_report_line(line: str | bytes) -> Report:
    """One line of ``kubetune run``'s report file (``{"step": N|null, "metrics": {...}, "time": T}``, as the SDK
    writes it): its metrics, and a one-point curve when it has a valid step. :class:`MetricsFormatError` when the
    line is unusable; a line longer than :data:`MAX_REPORT_BYTES` is refused unparsed."""
    what = "a report line"
    doc = load_json(line, what)
    obj = _object(doc)
    if obj is None or not obj.has("metrics"):
        raise MetricsFormatError(f"{what} is not a JSON object with metrics")
    report = _report(doc, what)
    step = obj.get("step")
    notes = _Notes()
    if step is not None:
        s = valid_step(step)
        if s is None:
            notes.add(f"reports without {_STEP_RANGE}")
        elif report.metrics:
            report.curve = [(s, dict(report.metrics))]
    report.notes += notes.render()
    return report
