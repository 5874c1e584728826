"""Live progress of a local run: one redrawn status line on a terminal, one line per finished trial elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..plan import best_trial
from ..spec import render_value
from ..trials import Trial, TrialState
from .runner import LocalRunner


def _fmt_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def describe(trial: Trial, metric: str) -> str:
    value = trial.metrics.get(metric)
    params = " ".join(f"{k}={render_value(v)}" for k, v in trial.params.items())
    tail = f"{metric}={_fmt_metric(value)}" if value is not None else (trial.reason or "")
    if trial.state is not TrialState.SUCCEEDED and trial.message:
        tail += f" ({trial.message[:120]})"
    return f"#{trial.number:<4} {trial.state.value:<9} {tail}  [{params}]"


class Progress:
    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.reported: set[int] = set()
        self.last_draw = 0.0
        self.started = time.monotonic()

    def __call__(self, event: str, runner: LocalRunner) -> None:
        spec = runner.spec
        metric = spec.objective.metric
        trials = runner.all_trials()
        if event == "resumed" and runner.resumed is not None:
            recorded, lost = runner.resumed
            self.reported.update(t.number for t in trials if not t.active)
            self._line(f"continuing the run in {runner.out_dir}: {recorded} trials recorded earlier"
                       + (f", {lost} of them lost when it ended (recorded Canceled, not run again)" if lost else ""))
        for t in trials:
            if not t.active and t.number not in self.reported:
                self.reported.add(t.number)
                self._line(describe(t, metric))
        if self.live and (time.monotonic() - self.last_draw > 0.25 or event != "tick"):
            self.last_draw = time.monotonic()
            self.stream.write("\r\033[K" + self.status(runner, trials))
            self.stream.flush()
        if event == "interrupted":
            self._line("interrupted: stopping running trials and keeping the results recorded so far")

    def status(self, runner: LocalRunner, trials: list[Trial]) -> str:
        spec = runner.spec
        done = sum(1 for t in trials if not t.active)
        running = len(trials) - done
        best = best_trial(spec, trials)
        best_txt = (f"best {spec.objective.metric}={_fmt_metric(best.objective_value(spec.objective))} "
                    f"(#{best.number})") if best else "best -"
        elapsed = time.monotonic() - self.started
        return f"[{done}/{spec.max_trials} done, {running} running, {elapsed:.0f}s] {best_txt}"

    def _line(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()
