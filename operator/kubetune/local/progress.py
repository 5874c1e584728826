"""Live progress of a local run.

On a terminal (drawn with ``rich``): a progress bar with elapsed time and ETA, the best trial so far and the running
trials, redrawn in place, with each finished trial printed above it as a row of one aligned table cut to the
terminal's width. Elsewhere (a pipe, a file, ``-q``): one plain line per finished trial.
"""

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
    MAX_RUNNING_ROWS = 8
    """Running trials listed in the live view (the rest are counted)."""

    def __init__(self, stream: TextIO = sys.stderr, live: bool | None = None) -> None:
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.reported: set[int] = set()
        self.last_draw = 0.0
        self.started = time.monotonic()
        self._view: _LiveView | None = None

    def __call__(self, event: str, runner: LocalRunner) -> None:
        spec = runner.spec
        metric = spec.objective.metric
        trials = runner.all_trials()
        if self.live and self._view is None:
            self._view = _LiveView(self.stream, runner, self.MAX_RUNNING_ROWS)
        if event == "resumed" and runner.resumed is not None:
            recorded, lost = runner.resumed
            self.reported.update(t.number for t in trials if not t.active)
            self._line(f"continuing the run in {runner.out_dir}: {recorded} trials recorded earlier"
                       + (f", {lost} of them lost when it ended (recorded Canceled, not run again)" if lost else ""))
        for t in trials:
            if not t.active and t.number not in self.reported:
                self.reported.add(t.number)
                if self._view is not None:
                    self._view.finished(t)
                else:
                    self._line(describe(t, metric))
        if self._view is not None and (time.monotonic() - self.last_draw > 0.25 or event != "tick"):
            self.last_draw = time.monotonic()
            self._view.draw(runner, trials)
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
        if self._view is not None:
            self._view.print(text)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._view is not None:
            self._view.close()
            self._view = None


class _LiveView:
    """The terminal view, drawn with rich: finished trials scroll above a redrawn progress panel."""

    def __init__(self, stream: TextIO, runner: LocalRunner, max_rows: int) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=stream, highlight=False, soft_wrap=False)
        self.spec = runner.spec
        self.max_rows = max_rows
        self.bar = Progress(TextColumn("trials"), BarColumn(bar_width=None), MofNCompleteColumn(),
                            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=self.console, expand=True)
        self.task = self.bar.add_task("trials", total=runner.spec.max_trials)
        self.live = Live(console=self.console, auto_refresh=False, transient=True, redirect_stderr=False,
                         redirect_stdout=False)
        self.header_printed = False
        self.live.start()

    def _widths(self) -> tuple[int, int, int, int]:
        """Columns of the finished-trials table: number, state, objective, parameters (the rest of the width)."""
        width = self.console.size.width
        return 6, 10, 18, max(10, width - 6 - 10 - 18 - 3 * 2)

    def _row(self, cells: list[str], style: str = "") -> object:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        for w in self._widths():
            table.add_column(width=w, no_wrap=True, overflow="ellipsis")
        table.add_row(*cells, style=style)
        return table

    def finished(self, t: Trial) -> None:
        metric = self.spec.objective.metric
        if not self.header_printed:
            self.header_printed = True
            self.live.console.print(self._row(["#", "state", metric, "parameters"], style="bold"))
        value = t.metrics.get(metric)
        tail = " ".join(f"{k}={render_value(v)}" for k, v in t.params.items())
        if t.state is not TrialState.SUCCEEDED:
            tail = f"{t.reason}: {t.message[:200]}  [{tail}]" if t.reason or t.message else tail
        style = {"Failed": "red", "Pruned": "dim", "Canceled": "dim"}.get(t.state.value, "")
        self.live.console.print(self._row([str(t.number), t.state.value, _fmt_metric(value), tail], style=style))

    def print(self, text: str) -> None:
        self.live.console.print(text, overflow="ellipsis", no_wrap=True, markup=False)

    def draw(self, runner: LocalRunner, trials: list[Trial]) -> None:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        spec = self.spec
        done = sum(1 for t in trials if not t.active)
        running = [t for t in trials if t.active]
        self.bar.update(self.task, completed=done, total=spec.max_trials)
        best = best_trial(spec, trials)
        if best is not None:
            params = " ".join(f"{k}={render_value(v)}" for k, v in best.params.items())
            best_line = Text(f"best {spec.objective.metric}={_fmt_metric(best.objective_value(spec.objective))} "
                             f"(#{best.number})  {params}", overflow="ellipsis", no_wrap=True)
        else:
            best_line = Text("best -")
        parts: list[object] = [self.bar, best_line]
        if running:
            table = Table.grid(padding=(0, 2))
            for w in self._widths():
                table.add_column(width=w, no_wrap=True, overflow="ellipsis")
            for t in running[: self.max_rows]:
                last = t.curve[-1] if t.curve else None
                progress = f"step {last[0]}: {_fmt_metric(last[1])}" if last else "running"
                table.add_row(str(t.number), "Running", progress,
                              " ".join(f"{k}={render_value(v)}" for k, v in t.params.items()), style="cyan")
            parts.append(table)
            if len(running) > self.max_rows:
                parts.append(Text(f"... and {len(running) - self.max_rows} more running", style="dim"))
        self.live.update(Group(*parts), refresh=True)  # type: ignore[arg-type]

    def close(self) -> None:
        self.live.stop()
