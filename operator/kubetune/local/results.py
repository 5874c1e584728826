"""Results of a local run: the journal that makes a run resumable, and the tables a user reads.

``journal.jsonl`` is appended (and synced to disk) when a trial is launched and when it finishes, so a run killed at
any moment can be resumed from it. ``results.csv``: one row per trial (number, name, state, reason, one ``param_*``
column per parameter, one column per metric, duration); ``pandas.read_csv`` reads it as it is. ``trials.jsonl``:
the full record of every trial, learning curve included. ``summary.json``: the outcome and the best trial. The three
tables are rewritten whole through a temporary file and ``os.replace``, so a reader never sees a truncated file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..plan import Outcome, best_trial, pareto_front
from ..spec import ExperimentSpec, render_value
from ..template import trial_name
from ..trials import Trial, TrialState

JOURNAL = "journal.jsonl"
JOURNAL_VERSION = 1
MAX_JOURNAL_LINE = 1 << 20
"""A journal line longer than this is damage, not a record (records are bounded where they are built)."""
MAX_EXTRA_COLUMNS = 100
"""Metric columns in results.csv beyond the spec's metrics (trials.jsonl keeps every metric a trial reported)."""
RESUMABLE_SPEC_CHANGES = ("maxTrials", "parallelTrials", "stopping")
"""Spec fields that may differ when a run is resumed (``-n``/``-p`` on the command line; ``stopping``, e.g. a larger
``maxDurationSeconds`` to go on after the time limit ended a run)."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _seconds(t: Trial) -> str:
    d = t.duration_seconds()
    return "" if d is None else f"{d:.1f}"


class LineTooLong(ValueError):
    """A JSON-lines file holds a line longer than the bound: damage, not a record."""

    def __init__(self, path: Path, lineno: int, bound: int) -> None:
        super().__init__(f"{path}: line {lineno} is longer than {bound} bytes")
        self.lineno = lineno


def complete_lines(f: BinaryIO, path: Path, bound: int = MAX_JOURNAL_LINE) -> Iterator[tuple[int, bytes]]:
    """The complete lines of a JSON-lines file (newline included), numbered from 1, each read with a bound.

    A last line without its newline is one still being written (or cut by a kill): it is not yielded, and the file
    position is then past it, so ``f.tell()`` against the bytes yielded tells the caller. A line longer than
    ``bound`` raises :class:`LineTooLong`.
    """
    lineno = 0
    while True:
        line = f.readline(bound + 1)
        if not line:
            return
        lineno += 1
        if not line.endswith(b"\n"):
            if len(line) > bound:
                raise LineTooLong(path, lineno, bound)
            return
        yield lineno, line


class ResultsWriter:
    def __init__(self, out_dir: Path, spec: ExperimentSpec, experiment: str = "") -> None:
        self.out_dir = out_dir
        self.spec = spec
        self.experiment = experiment

    def write(self, trials: Sequence[Trial], outcome: Outcome | None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        params = [p.name for p in self.spec.parameters]
        metrics = list(self.spec.metric_names)
        known = set(metrics)
        for t in trials:
            for m in t.metrics:
                if m not in known and len(known) < len(self.spec.metric_names) + MAX_EXTRA_COLUMNS:
                    known.add(m)
                    metrics.append(m)
        buf = io.StringIO()
        w = csv.writer(buf)
        cs = self.spec.constraints or []
        w.writerow(["number", "name", "state", "reason", *(["feasible"] if cs else []),
                    *[f"param_{p}" for p in params], *metrics,
                    "start_time", "completion_time", "duration_seconds", "message"])
        for t in trials:
            # with constraints: true/false for Succeeded trials, empty for the others (they have no feasibility)
            feasible = [("true" if t.feasible(cs) else "false") if t.state is TrialState.SUCCEEDED else ""] if cs \
                else []
            w.writerow([
                t.number, trial_name(self.experiment, t.number) if self.experiment else t.number, t.state.value,
                t.reason, *feasible, *[render_value(t.params[p]) if p in t.params else "" for p in params],
                *[repr(t.metrics[m]) if m in t.metrics else "" for m in metrics],
                t.start_time or "", t.completion_time or "", _seconds(t), t.recorded_message(),
            ])
        _atomic_write(self.out_dir / "results.csv", buf.getvalue())
        _atomic_write(self.out_dir / "trials.jsonl", "".join(json.dumps(t.to_record()) + "\n" for t in trials))
        best = best_trial(self.spec, trials)
        summary = {
            "outcome": None if outcome is None else {
                "succeeded": outcome.succeeded, "reason": outcome.reason, "message": outcome.message},
            "best_trial": None if best is None else best.to_record(),
            **({"pareto_front": [t.number for t in pareto_front(self.spec, trials)]} if self.spec.multi_objective
               else {}),
            "trials": len(trials),
        }
        _atomic_write(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


# -- the journal --------------------------------------------------------------------------------------------------


class JournalError(Exception):
    """The output directory holds a journal this run cannot continue (another experiment, or damage)."""


def journal_identity(name: str, spec: ExperimentSpec) -> dict[str, Any]:
    """What must match for a run to continue a journal: the name and the spec but for maxTrials/parallelTrials."""
    doc = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    for key in RESUMABLE_SPEC_CHANGES:
        doc.pop(key, None)
    return {"name": name, "spec": json.loads(json.dumps(doc, sort_keys=True))}


@dataclass
class JournalState:
    """What a journal says: every trial launched, in its latest recorded state."""

    trials: dict[int, Trial] = field(default_factory=dict)

    @property
    def lost(self) -> list[Trial]:
        """Trials launched but never recorded as finished: the run ended while they ran."""
        return [t for t in self.trials.values() if not t.state.finished]


class Journal:
    """An append-only record of launches and finishes, synced after every record.

    Line 1 names the experiment (:func:`journal_identity`); then ``{"launch": record}`` before a trial's process is
    started and ``{"finish": record}`` once it has ended. A trial is therefore launched at most once per journal: a
    launch without a finish is a trial the previous run lost.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: io.BufferedWriter | None = None

    def open(self, identity: dict[str, Any]) -> JournalState:
        """Load an existing journal of the same experiment (or start one) and open it for appending."""
        state = JournalState()
        good_end = 0
        if self.path.exists():
            state, good_end = self._load(identity)
        f = open(self.path, "r+b" if self.path.exists() else "w+b")
        f.truncate(good_end)  # drop a record cut short by a kill
        f.seek(good_end)
        self._file = f  # type: ignore[assignment]
        if good_end == 0:
            self._append({"journal": JOURNAL_VERSION, **identity})
        return state

    def _load(self, identity: dict[str, Any]) -> tuple[JournalState, int]:
        state = JournalState()
        offset = 0
        with open(self.path, "rb") as f:
            try:
                for lineno, line in complete_lines(f, self.path):
                    try:
                        rec = json.loads(line)
                        if lineno == 1:
                            self._check_header(rec, identity)
                        else:
                            self._apply(state, rec)
                    except JournalError:
                        raise
                    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, OverflowError) as e:
                        raise JournalError(f"{self.path} is damaged at line {lineno}: "
                                           f"{type(e).__name__}: {e}") from None
                    offset += len(line)
            except LineTooLong as e:
                raise JournalError(f"{self.path} is damaged: line {e.lineno} is longer than "
                                   f"{MAX_JOURNAL_LINE} bytes") from None
        return state, offset

    def _check_header(self, rec: Any, identity: dict[str, Any]) -> None:
        if not isinstance(rec, dict) or rec.get("journal") != JOURNAL_VERSION:
            raise JournalError(f"{self.path} is not a kubetune run journal (version {JOURNAL_VERSION})")
        if rec.get("name") != identity["name"]:
            raise JournalError(f"{self.path.parent} holds a run of another experiment ({rec.get('name')!r})")
        theirs, ours = rec.get("spec"), identity["spec"]
        if theirs != ours:
            keys = sorted({k for k in set(theirs or {}) | set(ours) if (theirs or {}).get(k) != ours.get(k)})
            raise JournalError(f"{self.path.parent} holds a run of {identity['name']!r} with a different spec "
                               f"(changed: {', '.join(keys)})")

    @staticmethod
    def _apply(state: JournalState, rec: Any) -> None:
        if not isinstance(rec, dict) or len(rec) != 1:
            raise ValueError("not a journal record")
        (kind, body), = rec.items()
        trial = Trial.from_record(body)
        if kind == "launch":
            if trial.number in state.trials:
                raise ValueError(f"trial {trial.number} launched twice")
        elif kind == "finish":
            if trial.number not in state.trials or not trial.state.finished:
                raise ValueError(f"trial {trial.number} finished without a launch")
        else:
            raise ValueError(f"unknown record {kind!r}")
        state.trials[trial.number] = trial

    def launch(self, trial: Trial) -> None:
        self._append({"launch": trial.to_record()})

    def finish(self, trial: Trial) -> None:
        assert trial.state is not TrialState.RUNNING
        self._append({"finish": trial.to_record()})

    def _append(self, rec: dict[str, Any]) -> None:
        assert self._file is not None
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        if len(line) > MAX_JOURNAL_LINE:
            raise ValueError(f"a journal record of {len(line)} bytes (bound {MAX_JOURNAL_LINE})")
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
