"""The HTML report: every view present, bounded for 10,000 trials, and the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kubetune.cli import main
from kubetune.report import build
from kubetune.report.data import MAX_CURVES, MAX_POINTS, MAX_TABLE_ROWS
from kubetune.results import load
from tests.support.synthetic_results import make_trials, write_results_dir

PLOTS = ["history", "importance", "slices", "parallel", "contour", "curves"]


def _points(fig: object) -> int:
    n = 0
    for trace in fig.data:  # type: ignore[attr-defined]
        if trace.type == "parcoords":
            n = max(n, max(len(d["values"]) for d in trace.dimensions))
        elif trace.type == "heatmap":
            continue
        else:
            n = max(n, len(trace.x or []))
    return n


def test_small_run_has_every_view(tmp_path: Path) -> None:
    out = write_results_dir(tmp_path / "run", make_trials(60))
    report = build(load(str(out)))
    assert list(report.figures) == PLOTS
    for name in PLOTS:
        assert f'id="plot-{name}"' in report.html
    assert not re.search(r'<script[^>]+src=', report.html)  # plotly.js inline: works offline
    assert report.html.count("<tr") == 61  # header + one row per trial
    assert "&lt;b&gt;not bold&lt;/b&gt;" in report.html and "<b>not bold</b>" not in report.html
    assert report.notes == []
    # lr dominates the synthetic objective
    imp = report.figures["importance"].data[0]
    assert list(reversed(imp.y))[0] == "lr"
    slices = report.figures["slices"]
    lr_axis = next(ax for name, ax in slices.layout.to_plotly_json().items()
                   if name.startswith("xaxis") and ax.get("type") == "log")
    assert lr_axis["type"] == "log"
    assert any(ax.get("type") == "category" and ax.get("categoryarray") == ["adam", "sgd", "rmsprop"]
               for name, ax in slices.layout.to_plotly_json().items() if name.startswith("xaxis"))
    curves = report.figures["curves"]
    assert any(t.name == "pruned here" for t in curves.data)


def test_ten_thousand_trials_are_bounded(tmp_path: Path) -> None:
    out = write_results_dir(tmp_path / "run", make_trials(10_000), journal=False)
    res = load(str(out))
    assert len(res.trials) == 10_000
    report = build(res)
    for name, fig in report.figures.items():
        limit = MAX_CURVES if name == "curves" else MAX_POINTS
        assert _points(fig) <= limit, name
    assert len([t for t in report.figures["curves"].data if t.mode == "lines" and t.x != (None,)]) <= MAX_CURVES
    assert report.html.count("<tr") == MAX_TABLE_ROWS + 1
    size = len(report.html.encode())
    assert size < 9_000_000, size
    text = " ".join(report.notes)
    for what in ("optimization history", "slice plots", "parallel coordinates", "learning curves",
                 "trial table", "parameter importance"):
        assert what in text
        assert what in report.html
    # the best trial is always drawn
    best = res.best
    assert best is not None
    hist = report.figures["history"].data[0]
    assert best.number in hist.x


def test_no_succeeded_trial(tmp_path: Path) -> None:
    trials = [t for t in make_trials(40) if t.state.value == "Failed"]
    out = write_results_dir(tmp_path / "run", trials)
    report = build(load(str(out)))
    assert report.figures == {}
    assert "Parameter importance needs" in report.html


def test_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = write_results_dir(tmp_path / "run", make_trials(30))
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "kubetune: synthetic" in html
    assert main(["report", str(out), "-o", str(tmp_path / "x" / "r.html")]) == 0
    assert (tmp_path / "x" / "r.html").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "cannot report" in capsys.readouterr().err
    # the plot data embedded in the page is the data read
    m = re.search(r'Plotly.newPlot\(\s*"plot-history",\s*(\[.*?\]),\s*\{', html, re.S)
    assert m is not None
    traces = json.loads(m.group(1))
    assert traces[0]["name"] == "succeeded"
