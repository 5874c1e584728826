"""The live view of kubetune run (and of submit --wait, fed with snapshots) on a real pseudo-terminal, and plain lines
elsewhere."""

from __future__ import annotations

import io
import os
import re
import select
import time
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.cells import cell_len

from kubetune.local.progress import Progress
from kubetune.plan import best_trial
from kubetune.progress import RunView, Snapshot, counts_text, fit
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


def _one_tick_on_a_terminal(runner: SimpleNamespace) -> str:
    """What one tick of the live view draws for ``runner`` on a real pseudo-terminal, styles stripped and every
    cursor move a line break."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    try:
        assert stream.isatty()
        progress = Progress(stream)
        assert progress.live
        progress("tick", runner)  # type: ignore[arg-type]
        progress.close()
        return CURSOR.sub("\n", STYLE.sub("", _drain(master).decode("utf-8", "replace")))
    finally:
        stream.close()
        os.close(master)


def test_live_view_on_a_terminal() -> None:
    trials = make_trials(6)
    for t in trials[4:]:
        t.state, t.metrics = TrialState.RUNNING, {}
    screen = _one_tick_on_a_terminal(_runner(trials))
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


def test_live_view_shows_every_objective() -> None:
    # Several objectives: the first has the value column, the others lead each finished row's last cell.
    from kubetune.spec import TuningExperiment

    doc = experiment(max_trials=20).model_dump(by_alias=True, exclude_none=True)
    del doc["spec"]["objective"], doc["spec"]["earlyStopping"]
    doc["spec"]["objectives"] = [{"metric": "accuracy", "goal": "maximize"}, {"metric": "loss", "goal": "minimize"}]
    doc["spec"]["additionalMetrics"] = []
    spec = TuningExperiment.model_validate(doc).spec
    trials = [t for t in make_trials(6, curves=False) if t.state is TrialState.SUCCEEDED]
    screen = _one_tick_on_a_terminal(SimpleNamespace(spec=spec, all_trials=lambda: trials, resumed=None, out_dir="out"))
    lines = [ln for ln in screen.split("\n") if ln.strip()]
    assert any(ln.split()[:5] == ["#", "state", "accuracy", "loss,", "parameters"] for ln in lines), lines
    rows = {int(ln.split()[0]): ln for ln in lines if re.match(r"^\d+\s+Succeeded\s", ln)}
    assert sorted(rows) == [t.number for t in trials]
    for t in trials:
        cells = rows[t.number].split()
        assert cells[2] == f"{t.metrics['accuracy']:.6g}" and cells[3] == f"loss={t.metrics['loss']:.6g}", cells
    assert "Pareto front:" in screen


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


# -- the snapshot-driven view, as `kubetune submit --wait` feeds it -------------------------------------------------

# A run of 6 trials as a follower sees it: trials finish out of number order, several between two snapshots, and a
# snapshot may bring nothing new. The known order of first appearance as finished: 1, then 0 2 3 (one snapshot),
# then 5, then 4.
FINISHED_AT = {1: 1, 0: 2, 2: 2, 3: 2, 5: 3, 4: 5}
EXPECTED_ORDER = [1, 0, 2, 3, 5, 4]


def _sequence() -> list[Snapshot]:
    spec = experiment(max_trials=6).spec
    final = make_trials(6)
    final[2].message = "exit code 1\x1b]0;owned\x07 then \x1b[2Jcleared\nsecond line"
    final[2].state, final[2].reason, final[2].metrics = TrialState.FAILED, "Error", {}
    started = time.monotonic() - 42
    out = []
    for step in range(6):
        trials = []
        for t in final:
            if FINISHED_AT[t.number] <= step:
                trials.append(t)
            elif t.number <= 1 + step:  # created, not finished yet: its latest report
                trials.append(Trial(t.number, dict(t.params), TrialState.RUNNING, curve=t.curve[:2]))
        out.append(Snapshot("accuracy", spec.max_trials, trials, best_trial(spec, trials), started))
    return out


def test_each_finished_trial_is_printed_once_in_the_order_it_finished() -> None:
    stream = io.StringIO()
    view = RunView(stream)
    printed = []
    for snap in _sequence():
        printed += [t.number for t in view.update(snap)]
        printed_again = view.update(snap)  # the same snapshot twice: nothing new
        assert printed_again == []
    view.close()
    assert printed == EXPECTED_ORDER
    lines = stream.getvalue().splitlines()
    assert [int(ln.split()[0][1:]) for ln in lines] == EXPECTED_ORDER
    assert "\x1b" not in stream.getvalue() and "\x07" not in stream.getvalue()
    failed = next(ln for ln in lines if ln.startswith("#2 "))
    assert "Failed" in failed and "cleared second line" in failed  # one line, the controls made spaces


def _live_screen(snapshots: list[Snapshot], columns: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """What the view writes to a real pseudo-terminal, with rich told the terminal is ``columns`` wide."""
    monkeypatch.setenv("COLUMNS", str(columns))
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")
    raw = b""
    try:
        view = RunView(stream, eta_window=600)
        assert view.live
        for snap in snapshots:
            view.update(snap)
            raw += _drain(master)
        view.close()
        raw += _drain(master)
    finally:
        stream.close()
        os.close(master)
    assert b"\x1b]0;" not in raw and b"\x1b[2Jcleared" not in raw  # a trial's message sets no title, clears nothing
    return CURSOR.sub("\n", STYLE.sub("", raw.decode("utf-8", "replace")))


ROW = re.compile(r"^(\d+)\s+(Succeeded|Pruned|Failed|Canceled)\s")


@pytest.mark.parametrize("columns", [40, 60, 100])
def test_live_view_rows_fit_the_terminal_and_cut_between_words(columns: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots = _sequence()
    final = {t.number: t for t in snapshots[-1].trials}
    screen = _live_screen(snapshots, columns, monkeypatch)
    lines = [ln.rstrip() for ln in screen.split("\n") if ln.strip()]
    assert max(len(ln) for ln in lines) <= columns, [ln for ln in lines if len(ln) > columns]
    rows = [ln for ln in lines if ROW.match(ln)]
    assert [int(ROW.match(r).group(1)) for r in rows] == EXPECTED_ORDER  # type: ignore[union-attr]
    assert len({r.index(r.split()[1]) for r in rows}) == 1  # one aligned table
    header = next(ln for ln in lines if ln.split()[:2] == ["#", "state"])
    assert header.index("state") == rows[0].index(rows[0].split()[1])
    for r in rows:
        t = final[int(r.split()[0])]
        tokens = r.split()[3:] if t.state is TrialState.SUCCEEDED else []
        for token in tokens:  # every parameter shown whole (k=v) or only the ellipsis: no word cut inside
            if token == "…":
                continue
            key, _, value = token.rstrip("…").partition("=")
            assert key in t.params, (token, r)
            want = t.params[key]
            if isinstance(want, float):
                assert float(value) == pytest.approx(want, rel=1e-5), (token, r)
            else:
                assert value == str(want), (token, r)
    assert "6/6" in screen and "1/6" in screen  # the bar counted finished trials as they came
    assert re.search(r"\b0:00:4[2-9]\b", screen), screen  # elapsed from the snapshot's start time
    if columns >= 60:
        assert "ETA" in screen and "elapsed" in screen
    assert "best accuracy=" in screen
    assert re.search(r"^\d+\s+Running\s", screen, re.M)


@given(st.text(alphabet=st.sampled_from("ab c=1.\u00e9\u4e2d"), max_size=60), st.integers(0, 70))
def test_fit_cuts_between_words_within_the_width(text: str, width: int) -> None:
    out = fit(text, width)
    assert cell_len(out) <= width
    if cell_len(text) <= width:
        assert out == text
    elif width >= 1:
        assert out.endswith("…")
        head = out[:-1]
        assert text.startswith(head)
        # the cut is at a word's end: what follows in the text is a space (or nothing is kept)
        assert head == "" or (not head[-1].isspace() and text[len(head)] == " ")


def test_counts_by_state_finished_first() -> None:
    snap = _sequence()[3]
    assert snap.counts() == {TrialState.SUCCEEDED: 2, TrialState.FAILED: 2, TrialState.PRUNED: 1,
                             TrialState.RUNNING: 1}
    assert counts_text(snap.counts()) == "2 succeeded, 2 failed, 1 pruned, 1 running"
    assert counts_text({}) == "no trials"


def test_the_cluster_follower_reads_on_change_or_refresh_and_prints_each_trial_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``submit --wait``'s follower with an injected results source and clock: the records are read again when the
    object's resourceVersion changed or REFRESH seconds passed, never sooner than BACKOFF times the last read took;
    each finished trial is printed once."""
    from kubetune.cli_cluster import _Follower
    from kubetune.results.model import ExperimentResults, TrialRecord

    spec = experiment(max_trials=6).spec
    snapshots = _sequence()
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    class Source:
        loads = 0

        def load(self, obj: dict[str, object]) -> ExperimentResults:
            self.loads += 1
            clock[0] += 0.5  # each read takes half a second
            trials = snapshots[min(self.loads - 1, len(snapshots) - 1)].trials
            return ExperimentResults("synthetic", spec, [TrialRecord(t) for t in trials])

    source = Source()
    stream = io.StringIO()
    follow = _Follower(source, RunView(stream))  # type: ignore[arg-type]

    def poll(version: str, final: bool = False) -> None:
        follow({"metadata": {"resourceVersion": version, "creationTimestamp": "2026-01-01T00:00:00Z"}}, final)
        clock[0] += 0.1

    poll("1")
    assert source.loads == 1
    poll("1")  # unchanged, REFRESH not passed: no read
    assert source.loads == 1
    poll("2")  # changed: read at once after the first read (that one also opened the connection)
    assert source.loads == 2
    poll("3")  # changed, but sooner than BACKOFF (2) times the last read (0.5 s) after it
    assert source.loads == 2
    clock[0] += 1.0
    poll("3")
    assert source.loads == 3
    clock[0] += _Follower.REFRESH
    poll("3")  # unchanged, REFRESH passed: read (running trials' reports)
    assert source.loads == 4
    for v in range(4, 12):
        clock[0] += 2.0
        poll(str(v))
    poll("12", final=True)
    printed = [int(ln.split()[0][1:]) for ln in stream.getvalue().splitlines()]
    assert printed == EXPECTED_ORDER
    assert follow.counts() == "3 succeeded, 2 failed, 1 pruned"
