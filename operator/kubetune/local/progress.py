"""Live progress of a local run: snapshots of the :class:`~kubetune.local.runner.LocalRunner` drawn by the shared
view (:mod:`kubetune.progress`).

On a terminal (drawn with ``rich``): a progress bar with elapsed time and ETA, the best trial so far and the running
trials, redrawn in place, with each finished trial printed above it as a row of one aligned table cut to the
terminal's width. Elsewhere (a pipe, a file, ``-q``): one plain line per finished trial.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

from ..plan import best_trial, pareto_front
from ..progress import RunView, Snapshot, describe, describe_front

if TYPE_CHECKING:
    from .runner import LocalRunner

__all__ = ["Progress", "describe", "describe_front"]


class Progress:
    """The runner's ``on_event`` callback: each event becomes a snapshot for the view."""

    MAX_RUNNING_ROWS = 8
    """Running trials listed in the live view (the rest are counted)."""
    REDRAW = 0.25
    """Seconds between redraws on ticks (other events redraw at once)."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.view = RunView(stream, live, max_rows=self.MAX_RUNNING_ROWS)
        self.started = time.monotonic()
        self.last_draw = 0.0

    @property
    def live(self) -> bool:
        return self.view.live

    def __call__(self, event: str, runner: LocalRunner) -> None:
        spec = runner.spec
        trials = runner.all_trials()
        if event == "resumed" and runner.resumed is not None:
            recorded, lost = runner.resumed
            self.view.skip(t.number for t in trials if not t.active)
            self.view.note(f"continuing the run in {runner.out_dir}: {recorded} trials recorded earlier"
                           + (f", {lost} of them lost when it ended (recorded Canceled, not run again)" if lost
                              else ""))
        if event == "warm-start" and runner.warm is not None:
            self.view.note(f"warm start: {runner.warm.message()}")
        redraw = event != "tick" or time.monotonic() - self.last_draw > self.REDRAW
        if redraw:
            self.last_draw = time.monotonic()
        snapshot = Snapshot(spec.objective.metric, spec.max_trials, trials, best_trial(spec, trials), self.started,
                            len(pareto_front(spec, trials)) if spec.multi_objective else None,
                            tuple(o.metric for o in spec.objective_list) if spec.multi_objective else ())
        self.view.update(snapshot, redraw=redraw)
        if event == "interrupted":
            self.view.note("interrupted: stopping running trials and keeping the results recorded so far")

    def close(self) -> None:
        self.view.close()
