"""The results API on local directories: complete runs, runs still being written, damage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubetune.results import ResultsError, load
from kubetune.trials import TrialState
from tests.support.synthetic_results import make_trials, write_results_dir


def test_complete_run(tmp_path: Path) -> None:
    trials = make_trials(40)
    out = write_results_dir(tmp_path / "run", trials)
    res = load(str(out))
    assert res.name == "synthetic" and res.spec.objective.metric == "accuracy"
    assert [r.number for r in res.trials] == list(range(40))
    assert [r.state for r in res.trials] == [t.state for t in trials]
    assert [r.trial.curve for r in res.trials] == [t.curve for t in trials]
    # the best trial by brute force over what was written
    succeeded = [t for t in trials if t.state is TrialState.SUCCEEDED]
    best = max(succeeded, key=lambda t: t.metrics["accuracy"])
    assert res.best is not None and res.best.number == best.number
    assert res.outcome == {"succeeded": True, "reason": "MaxTrialsReached", "message": "done"}
    assert res.trials[0].duration_seconds == pytest.approx(3600.0)
    assert res.notes == []


def test_run_still_being_written(tmp_path: Path) -> None:
    out = write_results_dir(tmp_path / "run", make_trials(10), finished=False)
    (out / "summary.json").unlink()
    with open(out / "trials.jsonl", "a") as f:
        f.write('{"number": 10, "params": {"lr": 0.1')  # cut short
    res = load(str(out))
    assert len(res.trials) == 10
    assert res.outcome is None
    assert any("line 11 is still being written" in n for n in res.notes)
    assert any("summary.json is missing" in n for n in res.notes)


def test_journal_only_shows_running_trials(tmp_path: Path) -> None:
    trials = make_trials(6)
    trials[5].state = TrialState.RUNNING
    out = write_results_dir(tmp_path / "run", trials, finished=False)
    (out / "trials.jsonl").unlink()
    res = load(str(out))
    assert [r.state for r in res.trials] == [t.state for t in trials]
    assert res.trials[5].state is TrialState.RUNNING
    assert any("trials.jsonl is missing" in n for n in res.notes)


def test_a_finish_in_the_journal_is_newer_than_a_running_row(tmp_path: Path) -> None:
    trials = make_trials(3)
    out = write_results_dir(tmp_path / "run", trials)
    lines = (out / "trials.jsonl").read_text().splitlines()
    rec = json.loads(lines[2])
    rec["state"] = "Running"
    lines[2] = json.dumps(rec)
    (out / "trials.jsonl").write_text("\n".join(lines) + "\n")
    assert load(str(out)).trials[2].state is trials[2].state


def test_hostile_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    out = write_results_dir(tmp_path / "run", make_trials(5), journal=False)
    bad = [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"number": 90, "params": {"unknown": 1}, "state": "Succeeded"}),
        json.dumps({"number": 91, "params": {"lr": {"nested": 1}}, "state": "Succeeded"}),
        json.dumps({"number": 92, "params": {"lr": 0.1}, "state": "Exploded"}),
        json.dumps({"number": -1, "params": {"lr": 0.1}, "state": "Succeeded"}),
        json.dumps({"number": 93, "params": {"lr": 0.1}, "state": "Succeeded",
                    "metrics": {f"m{i}": i for i in range(5000)}, "curve": [[i, i] for i in range(5000)]}),
        "[" * 100_000,
    ]
    with open(out / "trials.jsonl", "a") as f:
        f.write("\n".join(bad) + "\n" + "x" * (2 << 20))
    res = load(str(out))
    assert [r.number for r in res.trials] == [0, 1, 2, 3, 4, 93]
    big = res.trials[-1].trial
    assert len(big.metrics) <= 64 and len(big.curve) <= 200  # bounded where it is read
    assert any("5 unreadable or surplus" in n for n in res.notes)
    assert any("not JSON" in n for n in res.notes)
    assert any("longer than" in n for n in res.notes)


@pytest.mark.parametrize("setup", ["missing", "empty", "garbage", "file"])
def test_not_a_results_directory(tmp_path: Path, setup: str) -> None:
    path = tmp_path / "d"
    if setup == "empty":
        path.mkdir()
    elif setup == "garbage":
        path.mkdir()
        (path / "experiment.json").write_text('{"kind": "TuningExperiment"}')
    elif setup == "file":
        path.write_text("x")
    with pytest.raises(ResultsError):
        load(str(path))


def test_report_of_a_real_run_while_it_runs(tmp_path: Path) -> None:
    # kubetune run with trials that wait for a file: the report is read mid-run (a trial Running, no outcome),
    # then again once the run has ended
    import subprocess
    import sys
    import time

    from kubetune.report import build
    from tests.unit.test_local_run import write_experiment

    gate = tmp_path / "go"
    script = f"""
        import os, sys, time
        import kubetune_trial as kt
        x = float(sys.argv[sys.argv.index("--x") + 1])
        kt.report(step=0, acc=x / 2)
        while int(os.environ["KUBETUNE_TRIAL_NUMBER"]) >= 2 and not os.path.exists({str(gate)!r}):
            time.sleep(0.05)
        kt.report(acc=x)
    """
    exp = write_experiment(tmp_path, script, maxTrials=4, parallelTrials=1)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kubetune", "run", str(exp), "-o", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / "experiment.json").exists():
                res = load(str(out))
                if any(r.state is TrialState.RUNNING and r.number == 2 for r in res.trials):
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the third trial never started")
        assert res.outcome is None
        assert [r.state for r in res.trials[:2]] == [TrialState.SUCCEEDED] * 2
        report = build(res)
        assert "running or interrupted" in report.html and "history" in report.figures
        gate.write_text("")
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        proc.wait()
    res = load(str(out))
    assert [r.state for r in res.trials] == [TrialState.SUCCEEDED] * 4 and res.outcome is not None
    assert res.notes == []
