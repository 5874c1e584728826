"""Results from a local directory written by ``kubetune run``.

What is read: ``experiment.json`` (the experiment, required), ``trials.jsonl`` (every trial's record, rewritten whole
at most once a second while the run goes on), ``journal.jsonl`` (appended as each trial starts and ends, so it can be
newer than ``trials.jsonl``) and ``summary.json`` (the outcome). A run still being written is read as far as it
goes: a last line without its newline is skipped, a missing table or summary is noted, never an error. Everything
read is untrusted and bounded: lines of at most 1 MiB, at most ``MAX_TRIALS_LIMIT`` trials, records re-fitted to
the record bounds, parameters kept only when they are the spec's parameters with scalar values.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..local.results import JOURNAL, MAX_JOURNAL_LINE, LineTooLong, complete_lines
from ..spec import MAX_TRIALS_LIMIT, ExperimentSpec, TuningExperiment
from ..trials import Trial
from .model import ExperimentResults, ResultsError, TrialRecord

MAX_DOCUMENT_BYTES = 4 << 20
"""experiment.json and summary.json larger than this are not read."""


def _read_document(path: Path) -> Any:
    with open(path, "rb") as f:
        data = f.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
    return json.loads(data)


def _lines(path: Path, notes: list[str]) -> Iterator[tuple[int, Any]]:
    """Complete JSON lines of ``path``; a last line still being written and undecodable lines are noted."""
    with open(path, "rb") as f:
        read = 0
        try:
            for lineno, line in complete_lines(f, path):
                read += len(line)
                try:
                    yield lineno, json.loads(line)
                except (ValueError, RecursionError) as e:
                    notes.append(f"{path.name}: line {lineno} is not JSON ({type(e).__name__}); skipped")
        except LineTooLong as e:
            notes.append(f"{path.name}: line {e.lineno} is longer than {MAX_JOURNAL_LINE} bytes; "
                         "the rest of the file was not read")
            return
        if f.tell() > read:
            notes.append(f"{path.name}: line {lineno + 1 if read else 1} is still being written; skipped")


class LocalDirectory:
    """A results directory of ``kubetune run`` as a results source."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> ExperimentResults:
        exp = self._experiment()
        spec = exp.spec
        notes: list[str] = []
        trials: dict[int, Trial] = {}
        dropped = 0
        journal = self.path / JOURNAL
        table = self.path / "trials.jsonl"
        # the journal first (launches and finishes in order), then trials.jsonl: for a trial in both, the table's
        # record is at least as new unless the journal recorded its finish since the table was last written
        for path in (journal, table):
            if not path.exists():
                if path is table:
                    notes.append("trials.jsonl is missing (the run has not written it yet)")
                continue
            for lineno, doc in _lines(path, notes):
                if path is journal:
                    if lineno == 1 or not isinstance(doc, dict) or len(doc) != 1:
                        continue
                    doc = next(iter(doc.values()))
                trial = self._trial(doc, spec)
                if trial is None:
                    dropped += 1
                    continue
                old = trials.get(trial.number)
                if old is not None and old.state.finished and not trial.state.finished:
                    continue  # the table was written before the journal recorded the finish
                if old is None and len(trials) >= MAX_TRIALS_LIMIT:
                    dropped += 1
                    continue
                trials[trial.number] = trial
        if dropped:
            notes.append(f"{dropped} unreadable or surplus trial records skipped")
        outcome = self._outcome(notes)
        return ExperimentResults(
            name=exp.metadata.name, spec=spec,
            trials=[TrialRecord(t, t.duration_seconds()) for _, t in sorted(trials.items())],
            outcome=outcome, source=str(self.path), notes=notes,
        )

    def _experiment(self) -> TuningExperiment:
        path = self.path / "experiment.json"
        if not self.path.is_dir():
            raise ResultsError(f"{self.path} is not a directory")
        if not path.exists():
            raise ResultsError(f"{self.path} holds no kubetune run (no experiment.json)")
        try:
            return TuningExperiment.model_validate(_read_document(path))
        except (OSError, ValueError, RecursionError, ValidationError) as e:
            raise ResultsError(f"{path} is not a readable experiment: {str(e)[:500]}") from None

    @staticmethod
    def _trial(doc: Any, spec: ExperimentSpec) -> Trial | None:
        if not isinstance(doc, dict):
            return None
        params = doc.get("params")
        names = {p.name for p in spec.parameters}
        if (not isinstance(params, dict) or not set(params) <= names
                or not all(isinstance(v, (str, int, float, bool)) for v in params.values())
                or any(isinstance(v, str) and len(v) > 1024 for v in params.values())):
            return None
        try:
            t = Trial.from_record(doc)
            if not 0 <= t.number < 2**53:
                return None
            for key in ("reason", "message", "start_time", "completion_time"):
                if not isinstance(getattr(t, key), (str, type(None))):
                    return None
            t.fit(spec.metric_names)
        except (KeyError, ValueError, TypeError, AttributeError, OverflowError):
            return None
        return t

    def _outcome(self, notes: list[str]) -> dict[str, object] | None:
        path = self.path / "summary.json"
        if not path.exists():
            notes.append("summary.json is missing (the run has not written it yet)")
            return None
        try:
            doc = _read_document(path)
        except (OSError, ValueError, RecursionError):
            notes.append("summary.json is unreadable")
            return None
        out = doc.get("outcome") if isinstance(doc, dict) else None
        if not isinstance(out, dict):
            return None
        return {"succeeded": bool(out.get("succeeded")), "reason": str(out.get("reason", ""))[:128],
                "message": str(out.get("message", ""))[:1024]}

