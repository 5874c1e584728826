"""The terminal view of a run, fed with snapshots: ``kubetune run`` (trials as local processes) and ``kubetune
submit --wait`` (an experiment on a cluster) draw the same thing from a :class:`Snapshot`.

On a terminal (drawn with ``rich``): a progress bar with elapsed time and ETA, the counts by state, the best trial so
far and the running trials, redrawn in place, with each finished trial printed once above it as a row of one
aligned table that fits the terminal's width (text is cut between words, never inside one). Elsewhere (a pipe, a
file, ``-q``): one plain line per finished trial.

Nothing here knows where the trials run: the local runner and the cluster reader each build snapshots.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from rich.cells import cell_len

from .spec import MAX_FRONT_IN_STATUS, ExperimentSpec, render_value
from .trials import Trial, TrialState

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.progress import Progress, TaskID
    from rich.table import Table

ELLIPSIS = "…"
GAP = 2
"""Spaces between the table's columns."""
NARROW = 60
"""Below this many columns the progress bar drops its words (elapsed time and ETA stay, as numbers)."""
STATE_WIDTH = max(len(s.value) for s in TrialState)
_WORD = re.compile(r"\S+")
_COUNT_ORDER = [*(s for s in TrialState if s.finished), *(s for s in TrialState if not s.finished)]
_STYLES = {TrialState.FAILED: "red", TrialState.PRUNED: "dim", TrialState.CANCELED: "dim", TrialState.PAUSED: "cyan"}


@dataclass(frozen=True)
class Snapshot:
    """A run at one moment, wherever it runs."""

    metric: str
    """The objective's metric."""
    max_trials: int
    trials: Sequence[Trial]
    """Every trial known, finished and running, by number."""
    best: Trial | None = None
    """The best succeeded trial so far (by the rule of :func:`kubetune.plan.best_trial`)."""
    started: float = field(default_factory=time.monotonic)
    """When the run started, on the :func:`time.monotonic` clock."""
    front: int | None = None
    """With several objectives: how many trials the Pareto front has so far (shown instead of the best trial)."""
    objectives: tuple[str, ...] = ()
    """With several objectives: their metrics, each shown on a finished trial's plain line."""

    @property
    def finished(self) -> list[Trial]:
        return [t for t in self.trials if not t.active]

    @property
    def running(self) -> list[Trial]:
        return [t for t in self.trials if t.active]

    def counts(self) -> dict[TrialState, int]:
        """Trials by state, finished states first; states with none left out."""
        n = {s: 0 for s in _COUNT_ORDER}
        for t in self.trials:
            n[t.state] += 1
        return {s: c for s, c in n.items() if c}


def counts_text(counts: dict[TrialState, int]) -> str:
    """``3 succeeded, 1 failed, 2 running`` (``no trials`` when empty)."""
    return ", ".join(f"{c} {s.value.lower()}" for s, c in counts.items()) or "no trials"


def fmt_metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def clean(text: str) -> str:
    """``text`` on one line with nothing a terminal would act on: every unprintable character (line breaks, escape
    sequences' ESC, other controls) becomes a space. What a trial wrote reaches the screen only through this."""
    return "".join(c if c.isprintable() else " " for c in text)


def fit(text: str, width: int) -> str:
    """``text`` within ``width`` terminal cells: cut after the last whole word that leaves room for an ellipsis; a
    first word too wide for the room leaves the ellipsis alone."""
    if cell_len(text) <= width:
        return text
    if width < 1:
        return ""
    head = ""
    for m in _WORD.finditer(text):
        if cell_len(text[:m.end()]) + 1 > width:
            break
        head = text[:m.end()]
    return head + ELLIPSIS


def clip(text: str, width: int) -> str:
    """``text`` within ``width`` cells, cut anywhere (for a name, which has no words to cut between)."""
    if cell_len(text) <= width:
        return text
    while text and cell_len(text) + 1 > width:
        text = text[:-1]
    return text + ELLIPSIS if width >= 1 else ""


def format_params(trial: Trial, short: bool = False) -> str:
    """``k=v`` pairs; ``short`` writes floats with 6 significant digits (the live table), else exactly."""
    return clean(" ".join(f"{k}={f'{v:.6g}' if short and isinstance(v, float) else render_value(v)}"
                          for k, v in trial.params.items()))


def describe(trial: Trial, metric: str | Sequence[str]) -> str:
    """One plain line for a finished trial: ``#3    Succeeded accuracy=0.97  [C=1.5 kernel=rbf]`` (given several
    objectives' metrics, each one that was reported)."""
    names = [metric] if isinstance(metric, str) else list(metric)
    tail = " ".join(f"{m}={fmt_metric(trial.metrics[m])}" for m in names if m in trial.metrics)
    tail = tail or clean(trial.reason or "")
    if trial.state is not TrialState.SUCCEEDED and trial.message:
        tail += f" ({clean(trial.message[:120])})"
    return f"#{trial.number:<4} {trial.state.value:<9} {tail}  [{format_params(trial)}]"


def describe_front(spec: ExperimentSpec, front: Sequence[Trial], limit: int = MAX_FRONT_IN_STATUS) -> list[str]:
    """Plain lines for a Pareto front: a heading, then one line per member (at most ``limit``, spread over the front
    as status chooses them: :func:`kubetune.plan.front_in_status`)."""
    from .plan import front_in_status

    goals = ", ".join(f"{o.metric} ({o.goal})" for o in spec.objective_list)
    shown = front_in_status(spec, front, limit)
    more = f"; {len(shown)} shown, spread by crowding distance" if len(shown) < len(front) else ""
    lines = [f"Pareto front: {len(front)} trial{'' if len(front) == 1 else 's'} over {goals}{more}"]
    for t in shown:
        values = " ".join(f"{o.metric}={fmt_metric(t.metrics.get(o.metric))}" for o in spec.objective_list)
        lines.append(f"#{t.number:<4} {values}  [{format_params(t)}]")
    return lines


def columns(width: int, max_trials: int) -> tuple[int, int, int, int]:
    """Widths of the trial table's columns for a terminal ``width`` cells wide: number, state, objective value (or
    a running trial's last report), parameters (the rest, at least 1). The table fits any width of at least 36."""
    number = max(1, len(str(max(max_trials - 1, 0))))
    value = 18 if width >= 80 else 13 if width >= 60 else 10  # 13: any value %.6g prints, -1.23457e+308
    rest = width - number - STATE_WIDTH - value - 3 * GAP
    if rest < 10:
        value = max(8, value - (10 - rest))
        rest = width - number - STATE_WIDTH - value - 3 * GAP
    return number, STATE_WIDTH, value, max(1, rest)


class RunView:
    """Prints each finished trial once, in the order of the snapshots, and keeps the live panel drawn.

    ``live`` defaults to whether ``stream`` is a terminal. ``max_rows`` running trials are listed (the rest are
    counted). ``eta_window``: the seconds of completions the ETA is estimated from.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None, *, max_rows: int = 8,
                 eta_window: float = 30.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.max_rows = max_rows
        self.eta_window = eta_window
        self.reported: set[int] = set()
        self._screen: _Screen | None = None

    def skip(self, numbers: Iterable[int]) -> None:
        """Count these trials as printed (the finished trials of a run being continued)."""
        self.reported.update(numbers)

    def update(self, snapshot: Snapshot, redraw: bool = True) -> list[Trial]:
        """Print the trials finished since the last snapshot (by number) and, with ``redraw``, draw the live panel
        again; returns the trials printed."""
        new = [t for t in snapshot.finished if t.number not in self.reported]
        self.reported.update(t.number for t in new)
        if not self.live:
            for t in new:
                self._write(describe(t, snapshot.objectives or snapshot.metric))
            return new
        screen = self._open()
        for t in new:
            screen.finished(t, snapshot)
        if redraw:
            screen.draw(snapshot)
        return new

    def note(self, text: str) -> None:
        """A line of our own above the live panel (or a plain line)."""
        if self.live:
            self._open().note(text)
        else:
            self._write(text)

    def close(self) -> None:
        """Take the live panel off the screen (what was printed above it stays)."""
        if self._screen is not None:
            self._screen.close()
            self._screen = None

    def _open(self) -> _Screen:
        if self._screen is None:
            self._screen = _Screen(self.stream, self.max_rows, self.eta_window)
        return self._screen

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


class _Screen:
    """The terminal side, drawn with rich: finished trials scroll above a redrawn progress panel."""

    def __init__(self, stream: TextIO, max_rows: int, eta_window: float) -> None:
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

        self.console: Console = Console(file=stream, highlight=False, soft_wrap=False)
        self.max_rows = max_rows
        self.wide_columns = (TextColumn("trials"), BarColumn(bar_width=None), MofNCompleteColumn(),
                             TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.narrow_columns = (BarColumn(bar_width=None), MofNCompleteColumn(), TimeElapsedColumn(),
                               TimeRemainingColumn())
        self.bar: Progress = Progress(*self.wide_columns, console=self.console, expand=True,
                                      speed_estimate_period=eta_window)
        self.task: TaskID | None = None
        self.live: Live = Live(console=self.console, auto_refresh=False, transient=True, redirect_stderr=False,
                               redirect_stdout=False)
        self.header_printed = False
        self.live.start()

    def _table(self, max_trials: int) -> Table:
        from rich.table import Table

        table = Table.grid(padding=(0, GAP))
        for w in columns(self.console.size.width, max_trials):
            table.add_column(width=w, no_wrap=True, overflow="ellipsis")
        return table

    def _row(self, table: Table, cells: tuple[str, str, str, str], max_trials: int, style: str = "") -> None:
        widths = columns(self.console.size.width, max_trials)
        table.add_row(*(fit(c, w) for c, w in zip(cells, widths)), style=style)

    def finished(self, t: Trial, snapshot: Snapshot) -> None:
        width = columns(self.console.size.width, snapshot.max_trials)[2]
        if not self.header_printed:
            self.header_printed = True
            header = self._table(snapshot.max_trials)
            others = snapshot.objectives[1:]  # several objectives: the first has the value column
            header.add_row("#", "state", clip(snapshot.metric, width),
                           ", ".join([*others, "parameters"]) if others else "parameters", style="bold")
            self.live.console.print(header)
        tail = format_params(t, short=True)
        if t.state is not TrialState.SUCCEEDED and (t.reason or t.message):
            tail = f"{clean(t.reason)}: {clean(t.message[:200])}  [{tail}]"
        elif snapshot.objectives[1:]:
            tail = "  ".join([*(f"{m}={fmt_metric(t.metrics.get(m))}" for m in snapshot.objectives[1:]), tail])
        table = self._table(snapshot.max_trials)
        self._row(table, (str(t.number), t.state.value, fmt_metric(t.metrics.get(snapshot.metric)), tail),
                  snapshot.max_trials, style=_STYLES.get(t.state, ""))
        self.live.console.print(table)

    def note(self, text: str) -> None:
        from rich.text import Text

        self.live.console.print(Text(fit(clean(text), self.console.size.width)), no_wrap=True)

    def draw(self, snapshot: Snapshot) -> None:
        from rich.console import Group
        from rich.text import Text

        width = self.console.size.width
        finished = snapshot.finished
        running = snapshot.running
        if self.task is None:  # trials finished before the first draw do not count towards the ETA's speed
            self.task = self.bar.add_task("trials", total=snapshot.max_trials, completed=len(finished))
            for task in self.bar.tasks:
                if task.id == self.task:
                    task.start_time = min(snapshot.started, time.monotonic())
        self.bar.columns = self.wide_columns if width >= NARROW else self.narrow_columns
        self.bar.update(self.task, completed=len(finished), total=snapshot.max_trials)
        best = snapshot.best
        if snapshot.front is not None:
            text = f"Pareto front: {snapshot.front} trial{'' if snapshot.front == 1 else 's'}"
        elif best is not None:
            text = (f"best {snapshot.metric}={fmt_metric(best.metrics.get(snapshot.metric))} (#{best.number})  "
                    f"{format_params(best, short=True)}")
        else:
            text = "best -"
        parts: list[RenderableType] = [self.bar, Text(fit(text, width)),
                                       Text(fit(counts_text(snapshot.counts()), width), style="dim")]
        if running:
            table = self._table(snapshot.max_trials)
            room = columns(width, snapshot.max_trials)[2]
            for t in running[: self.max_rows]:
                last = t.curve[-1] if t.curve else None
                progress = "running"
                if last is not None:
                    progress = f"step {last[0]}: {fmt_metric(last[1])}"
                    if cell_len(progress) > room:
                        progress = f"{fmt_metric(last[1])} @{last[0]}"
                self._row(table, (str(t.number), TrialState.RUNNING.value, progress, format_params(t, short=True)),
                          snapshot.max_trials, style="cyan")
            parts.append(table)
            if len(running) > self.max_rows:
                parts.append(Text(f"... and {len(running) - self.max_rows} more running", style="dim"))
        self.live.update(Group(*parts), refresh=True)

    def close(self) -> None:
        self.live.stop()
