"""The dashboard's current state: the report's sections as one JSON document with a version, re-built only when the
watched source changed.

:class:`Live` holds the latest :class:`Snapshot`. :meth:`Live.refresh` takes the source's stamp and, only when it
differs from the last one, reads the source and builds the sections (the report's bounded figures and table); the
web server's request threads only hand out the snapshot, so any number of open pages cost one refresh per interval.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from plotly.utils import PlotlyJSONEncoder

from ..report.html import sections
from ..results import ExperimentResults, ResultsError
from .watch import Watched

_UNSET = object()


@dataclass(frozen=True)
class Snapshot:
    """One state of the dashboard: ``body`` is the JSON document the page draws, ``version`` its content hash."""

    version: str
    body: bytes
    name: str
    source: str
    trials: int
    finished: bool
    error: str | None


def content(results: ExperimentResults) -> dict[str, Any]:
    """The report's sections as JSON-ready data: plotly figures (data and layout), summary and table HTML, notes."""
    s = sections(results)
    return {
        "name": results.name,
        "source": results.source,
        "trials": len(results.trials),
        "finished": results.finished,
        "figures": [{"id": fid, "figure": fig.to_plotly_json()} for fid, fig in s.figures.items()],
        "summary": s.summary,
        "importance": s.importance,
        "notes": s.notes,
        "table": s.table,
    }


def snapshot(data: dict[str, Any], error: str | None = None) -> Snapshot:
    """``data`` (from :func:`content`) with ``error`` as a versioned snapshot; equal content, equal version."""
    text = json.dumps({**data, "error": error}, cls=PlotlyJSONEncoder, sort_keys=True, separators=(",", ":"))
    version = hashlib.sha256(text.encode()).hexdigest()[:16]
    updated = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = f'{{"version":"{version}","updated":"{updated}",{text[1:]}'.encode()
    return Snapshot(version, body, str(data["name"]), str(data["source"]), int(data["trials"]),
                    bool(data["finished"]), error)


class Live:
    """The latest snapshot of a watched source, refreshed when its stamp changes."""

    def __init__(self, source: Watched, interval: float = 2.0,
                 build: Callable[[ExperimentResults], dict[str, Any]] = content) -> None:
        self.source = source
        self.interval = interval
        self.build = build
        self.loads = 0
        """Full reads of the source so far."""
        self.checks = 0
        """Stamps taken so far."""
        self._stamp: Hashable = _UNSET
        self._data: dict[str, Any] | None = None
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    @property
    def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is None:
            raise RuntimeError("no snapshot yet: call refresh() first")
        return snap

    def refresh(self) -> bool:
        """Read the source if its stamp changed; True when it was read. A :class:`ResultsError` propagates."""
        with self._lock:
            self.checks += 1
            stamp = self.source.stamp()
            if stamp == self._stamp and self._snapshot is not None and self._snapshot.error is None:
                return False
            results = self.source.load()
            self.loads += 1
            data = self.build(results)
            self._data = data
            self._stamp = stamp
            self._snapshot = snapshot(data)
            return True

    def poll(self) -> None:
        """:meth:`refresh`, keeping the last state with an error message when the source cannot be read now."""
        try:
            self.refresh()
        except ResultsError as e:
            self._fail(str(e))
        except Exception as e:  # the page says what broke; the server keeps serving the last state
            self._fail(f"{type(e).__name__}: {e}"[:500])

    def _fail(self, message: str) -> None:
        with self._lock:
            if self._data is not None and (self._snapshot is None or self._snapshot.error != message):
                self._snapshot = snapshot(self._data, message)

    def run(self, stop: threading.Event) -> None:
        """Poll ``interval`` seconds after the previous poll ended, until ``stop`` is set."""
        while not stop.wait(self.interval):
            self.poll()
