"""The live view of kubetune run on a real pseudo-terminal, and plain lines elsewhere."""

from __future__ import annotations

import io
import os
import re
import select
from types import SimpleNamespace

from kubetune.local.progress import Progress
from kubetune.trials import Trial, TrialState
from tests.support.synthetic_results import experiment, make_trials

STYLE = re.compile(r"\x1b\[[0-9;]*m")
CURSOR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")  # moves and erases end a drawn line too


def _runner(trials: list[Trial]) -> SimpleNamespace:
    return SimpleNamespace(spec=experiment(max_trials=20).spec, all_trials=lambda: trials, resumed=None,
                           out_dir="out")


def _drain(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out


def test_live_view_on_a_terminal() -> None:
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    try:
        assert stream.isatty()
        trials = make_trials(6)
        for t in trials[4:]:
            t.state, t.metrics = TrialState.RUNNING, {}
        runner = _runner(trials)
        progress = Progress(stream)
        assert progress.live
        progress("tick", runner)  # type: ignore[arg-type]
        progress.close()
        screen = CURSOR.sub("\n", STYLE.sub("", _drain(master).decode("utf-8", "replace")))
    finally:
        stream.close()
        os.close(master)
    lines = [ln for ln in screen.split("\n") if ln.strip()]
    assert any(ln.split()[:4] == ["#", "state", "accuracy", "parameters"] for ln in lines)
    rows = [ln for ln in lines if re.match(r"^\d+\s+(Succeeded|Pruned|Failed)\s", ln)]
    assert [int(r.split()[0]) for r in rows] == [0, 1, 2, 3]
    # one aligned table: every row's state starts in the same column
    assert len({r.index(r.split()[1]) for r in rows}) == 1
    assert "0/20" not in screen and "4/20" in screen and "ETA" in screen and "elapsed" in screen
    assert re.search(r"4\s+Running", screen) and re.search(r"5\s+Running", screen)
    assert "best accuracy=" in screen
    assert max(len(ln) for ln in lines) <= 80, [ln for ln in lines if len(ln) > 80]  # rich: 80 columns without a size


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    trials = make_trials(3)
    progress = Progress(stream)
    assert not progress.live
    progress("tick", _runner(trials))  # type: ignore[arg-type]
    progress.close()
    text = stream.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert [ln.split()[0] for ln in text.splitlines()] == ["#0", "#1", "#2"]
