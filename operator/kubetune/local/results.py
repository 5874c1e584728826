"""Results of a local run, written after every finished trial so nothing is lost on a crash or Ctrl-C.

``results.csv``: one row per trial (number, name, state, reason, one ``param_*`` column per parameter, one column
per metric, duration); ``pandas.read_csv`` reads it as it is. ``trials.jsonl``: the full record of every trial,
learning curve included. ``summary.json``: the outcome and the best trial.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Sequence

from ..plan import Outcome, best_trial
from ..spec import ExperimentSpec, render_value
from ..template import trial_name
from ..trials import Trial


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _seconds(t: Trial) -> str:
    if not t.start_time or not t.completion_time:
        return ""
    a = datetime.fromisoformat(t.start_time.replace("Z", "+00:00"))
    b = datetime.fromisoformat(t.completion_time.replace("Z", "+00:00"))
    return f"{(b - a).total_seconds():.1f}"


class ResultsWriter:
    def __init__(self, out_dir: Path, spec: ExperimentSpec, experiment: str = "") -> None:
        self.out_dir = out_dir
        self.spec = spec
        self.experiment = experiment

    def write(self, trials: Sequence[Trial], outcome: Outcome | None) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        params = [p.name for p in self.spec.parameters]
        metrics = list(self.spec.metric_names)
        for t in trials:
            metrics += [m for m in t.metrics if m not in metrics]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["number", "name", "state", "reason", *[f"param_{p}" for p in params], *metrics,
                    "start_time", "completion_time", "duration_seconds", "message"])
        for t in trials:
            w.writerow([
                t.number, trial_name(self.experiment, t.number) if self.experiment else t.number, t.state.value,
                t.reason, *[render_value(t.params[p]) if p in t.params else "" for p in params],
                *[repr(t.metrics[m]) if m in t.metrics else "" for m in metrics],
                t.start_time or "", t.completion_time or "", _seconds(t), t.message,
            ])
        _atomic_write(self.out_dir / "results.csv", buf.getvalue())
        _atomic_write(self.out_dir / "trials.jsonl", "".join(json.dumps(t.to_record()) + "\n" for t in trials))
        best = best_trial(self.spec, trials)
        summary = {
            "outcome": None if outcome is None else {
                "succeeded": outcome.succeeded, "reason": outcome.reason, "message": outcome.message},
            "best_trial": None if best is None else best.to_record(),
            "trials": len(trials),
        }
        _atomic_write(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
