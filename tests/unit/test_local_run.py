"""``kubetune run`` end to end: real processes, small trial scripts written to tmp_path."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.cli import main

ROOT = Path(__file__).resolve().parents[2]


def write_experiment(tmp_path: Path, script: str, *, name: str = "exp", parameters: list[dict[str, Any]] | None = None,
                     command: list[str] | None = None, job: dict[str, Any] | None = None,
                     **spec: Any) -> Path:
    """A trial script ``trial.py`` and an experiment ``exp.yaml`` running it with ``--x ${params.x}``."""
    (tmp_path / "trial.py").write_text(textwrap.dedent(script))
    parameters = parameters or [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}]
    first = parameters[0]["name"]
    doc = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningExperiment",
        "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "acc", "goal": "maximize"},
            "parameters": parameters,
            "algorithm": {"name": "random", "seed": 1},
            "maxTrials": 4,
            "parallelTrials": 2,
            "trialTemplate": {
                "spec": {
                    **(job or {}),
                    "template": {"spec": {"restartPolicy": "Never", "containers": [{
                        "name": "trial",
                        "image": "unused:1",
                        "command": command or ["python", str(tmp_path / "trial.py"), "--x", "${params.x}"],
                        "env": [{"name": "FROM_TEMPLATE", "value": f"x=${{params.{first}}}"}],
                    }]}},
                },
            },
            **spec,
        },
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def kubetune_run(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubetune", "run", str(tmp_path / "exp.yaml"),
                           "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=timeout)


def results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


GOOD = """
    import argparse, os, time
    import kubetune_trial as kt
    p = argparse.ArgumentParser(); p.add_argument("--x", type=float); x = p.parse_args().x
    assert kt.params()["x"] == x
    assert os.environ["FROM_TEMPLATE"] == f"x={os.environ['KUBETUNE_PARAMS'][5:-1]}"
    for step in range(2):
        kt.report(step=step, acc=x * (step + 1) / 2)
        time.sleep(0.05)
    kt.report(acc=x, extra=1.5)
"""


# ------------------------------------------------------------------------------------------------- success

def test_successful_run_writes_results(tmp_path: Path) -> None:
    write_experiment(tmp_path, GOOD, maxTrials=5, parallelTrials=2, additionalMetrics=["extra"])
    r = kubetune_run(tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    rows = results(out)
    assert [row["number"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert [row["name"] for row in rows] == [f"exp-000{i}" for i in range(5)]
    assert list(rows[0])[:6] == ["number", "name", "state", "reason", "param_x", "acc"]
    assert {"extra", "start_time", "completion_time", "duration_seconds", "message"} <= set(rows[0])
    for row in rows:
        assert row["state"] == "Succeeded" and row["reason"] == "Completed", row
        assert float(row["acc"]) == float(row["param_x"])  # the final report wins over the steps
        assert float(row["extra"]) == 1.5
        # the trial sleeps 0.1 s: sub-second durations are measured, not rounded to whole seconds
        assert 0.1 <= float(row["duration_seconds"]) < 30
        assert row["start_time"].endswith("Z") and row["start_time"] <= row["completion_time"]
        assert row["message"] == ""
    recs = records(out)
    assert [rec["number"] for rec in recs] == [0, 1, 2, 3, 4]
    for rec in recs:
        assert rec["state"] == "Succeeded"
        x = rec["params"]["x"]
        assert rec["curve"] == [[0, pytest.approx(x / 2)], [1, pytest.approx(x)]]
    best = max(rows, key=lambda row: float(row["acc"]))
    s = summary(out)
    assert s["outcome"]["succeeded"] is True and s["outcome"]["reason"] == "MaxTrialsReached"
    assert s["trials"] == 5
    assert s["best_trial"]["number"] == int(best["number"])
    assert f"best: #{best['number']}" in r.stdout
    assert "experiment succeeded: MaxTrialsReached" in r.stderr
    # The run's own records: the experiment as read, each trial's params and output.
    assert json.loads((out / "experiment.json").read_text())["metadata"]["name"] == "exp"
    trial_dir = out / "trials" / "exp-0000"
    assert json.loads((trial_dir / "params.json").read_text()) == recs[0]["params"]
    assert (trial_dir / "output.log").exists()


def test_trial_failures_are_recorded_with_reasons(tmp_path: Path) -> None:
    script = """
        import json, os, signal, sys
        mode = sys.argv[2]
        if mode == "ok":
            import kubetune_trial as kt
            kt.report(acc=0.9)
        elif mode == "crash":
            print("boom: the data set is missing", flush=True)
            sys.exit(3)
        elif mode == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        elif mode == "silent":
            import kubetune_trial as kt
            kt.report(loss=0.1)  # never the objective
        elif mode == "nan":
            import kubetune_trial as kt
            kt.report(acc=float("nan"))  # the SDK refuses: the trial crashes with MetricsError
        elif mode == "termlog":
            with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as f:
                f.write("starting\\n" + json.dumps({"acc": 0.5, "loss": 2}) + "\\n")
        elif mode == "termlog-nan":
            with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as f:
                f.write('{"acc": NaN}\\n')
        elif mode == "termlog-text":
            with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as f:
                f.write("acc=0.5\\n")
    """
    modes = ["ok", "crash", "killed", "silent", "nan", "termlog", "termlog-nan", "termlog-text"]
    write_experiment(tmp_path, script, parameters=[{"name": "mode", "type": "categorical", "values": modes}],
                     command=["python", str(tmp_path / "trial.py"), "--mode", "${params.mode}"],
                     algorithm={"name": "grid"}, maxTrials=len(modes), parallelTrials=3, maxFailedTrials=10)
    r = kubetune_run(tmp_path)
    assert r.returncode == 0, r.stderr
    by_mode = {row["param_mode"]: row for row in results(tmp_path / "out")}
    assert set(by_mode) == set(modes)

    def outcome(mode: str) -> tuple[str, str, str]:
        row = by_mode[mode]
        return row["state"], row["reason"], row["message"]

    assert outcome("ok") == ("Succeeded", "Completed", "")
    assert outcome("crash") == ("Failed", "Error", "exit code 3: boom: the data set is missing")
    assert outcome("killed") == ("Failed", "Error", "killed by signal 9")
    assert outcome("silent") == ("Failed", "MetricsMissing",
                                 "the trial exited without reporting the objective metric 'acc'")
    state, reason, message = outcome("nan")
    assert (state, reason) == ("Failed", "Error")
    assert message == "exit code 1: kubetune_trial.MetricsError: metric 'acc' must be finite, got nan"
    assert outcome("termlog") == ("Succeeded", "Completed", "")
    assert float(by_mode["termlog"]["acc"]) == 0.5 and float(by_mode["termlog"]["loss"]) == 2.0
    assert outcome("termlog-nan") == ("Failed", "InvalidMetrics", "the termination message: metric 'acc' is not finite")
    assert outcome("termlog-text") == ("Failed", "InvalidMetrics", "the termination message's last line is not JSON")
    assert float(by_mode["silent"]["loss"]) == 0.1  # what it did report is kept
    s = summary(tmp_path / "out")
    assert s["outcome"]["reason"] == "MaxTrialsReached"
    assert s["best_trial"]["params"] == {"mode": "ok"}
    # One line per finished trial in the progress output (not a terminal: no live line).
    assert r.stderr.count("Failed") >= 6


def test_command_not_found(tmp_path: Path) -> None:
    write_experiment(tmp_path, GOOD, command=["kubetune-no-such-command", "--x", "${params.x}"],
                     maxTrials=2, parallelTrials=1, maxFailedTrials=5)
    r = kubetune_run(tmp_path)
    assert r.returncode == 1
    rows = results(tmp_path / "out")
    assert [(row["state"], row["reason"], row["message"]) for row in rows] == [
        ("Failed", "CommandNotFound", "command not found: kubetune-no-such-command")] * 2
    assert "experiment failed: NoSuccessfulTrials: none of 2 trials succeeded" in r.stderr


def test_command_not_executable(tmp_path: Path) -> None:
    (tmp_path / "notexec.sh").write_text("#!/bin/sh\necho hi\n")
    write_experiment(tmp_path, GOOD, command=[str(tmp_path / "notexec.sh")], maxTrials=1, parallelTrials=1)
    r = kubetune_run(tmp_path)
    assert r.returncode == 1
    [row] = results(tmp_path / "out")
    assert (row["state"], row["reason"]) == ("Failed", "CommandNotFound")
    assert row["message"] == f"command not executable: {tmp_path / 'notexec.sh'}"


def test_too_many_failures(tmp_path: Path) -> None:
    script = """
        import os, sys, time
        n = int(os.environ["KUBETUNE_TRIAL_NUMBER"])
        if n >= 3:
            time.sleep(60)  # still running when the experiment fails: canceled
        if n == 2:  # the third failure comes once trial 3 has started
            sibling = os.path.join(os.path.dirname(os.environ["KUBETUNE_REPORT_FILE"]), "..", "exp-0003")
            for _ in range(600):
                if os.path.exists(sibling):
                    break
                time.sleep(0.05)
        print("fatal: out of memory", flush=True)
        sys.exit(2)
    """
    write_experiment(tmp_path, script, maxTrials=10, parallelTrials=2, maxFailedTrials=2)
    started = time.monotonic()
    r = kubetune_run(tmp_path)
    assert time.monotonic() - started < 60
    assert r.returncode == 1
    assert "experiment failed: TooManyFailedTrials: 3 trials failed, more than maxFailedTrials=2" in r.stderr
    rows = results(tmp_path / "out")
    failed = [row for row in rows if row["state"] == "Failed"]
    assert len(failed) == 3
    assert all(row["message"] == "exit code 2: fatal: out of memory" for row in failed)
    # trials 0 and 1 fail, 2 and 3 start; 2 fails: the experiment fails and stops trial 3.
    assert [(row["number"], row["state"]) for row in rows] == [
        ("0", "Failed"), ("1", "Failed"), ("2", "Failed"), ("3", "Canceled")]
    assert rows[3]["reason"] == "ExperimentFinished"
    assert rows[3]["message"] == "stopped because the experiment finished: TooManyFailedTrials"
    s = summary(tmp_path / "out")
    assert s["outcome"] == {"succeeded": False, "reason": "TooManyFailedTrials",
                            "message": "3 trials failed, more than maxFailedTrials=2"}
    assert s["best_trial"] is None


def test_target_reached_stops_running_trials(tmp_path: Path) -> None:
    script = """
        import os, time, kubetune_trial as kt
        n = int(os.environ["KUBETUNE_TRIAL_NUMBER"])
        if n == 0:
            kt.report(acc=0.99)
        else:
            kt.report(step=0, acc=0.1)
            while kt.report(step=1, acc=0.1):
                time.sleep(0.05)
    """
    write_experiment(tmp_path, script, maxTrials=10, parallelTrials=2,
                     objective={"metric": "acc", "goal": "maximize", "target": 0.95})
    r = kubetune_run(tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = results(tmp_path / "out")
    assert rows[0]["state"] == "Succeeded"
    assert "experiment succeeded: TargetReached: trial 0 reached acc=0.99 (target 0.95)" in r.stderr
    for row in rows[1:]:
        assert (row["state"], row["reason"]) == ("Canceled", "ExperimentFinished")
    assert len(rows) == 2


# ------------------------------------------------------------------------------------------------- options

def test_overrides(tmp_path: Path) -> None:
    write_experiment(tmp_path, GOOD, maxTrials=10, parallelTrials=5)
    r = kubetune_run(tmp_path, "--max-trials", "3", "--parallel", "1")
    assert r.returncode == 0, r.stderr
    assert "running exp: 3 trials, 1 at a time" in r.stderr
    rows = results(tmp_path / "out")
    assert len(rows) == 3
    starts = [(row["start_time"], row["completion_time"]) for row in rows]
    # one at a time: each trial starts after the previous one finished
    assert all(starts[i][1] <= starts[i + 1][0] for i in range(2))
    assert summary(tmp_path / "out")["outcome"]["message"].startswith("ran 3 of maxTrials=3")


def test_max_trials_override_alone_clamps_parallelism(tmp_path: Path) -> None:
    write_experiment(tmp_path, GOOD, maxTrials=10, parallelTrials=5)
    r = kubetune_run(tmp_path, "-n", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "running exp: 2 trials, 2 at a time" in r.stderr
    assert len(results(tmp_path / "out")) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parallel", "5", "--max-trials", "3"], "spec.parallelTrials: parallelTrials must not exceed maxTrials"),
        (["--parallel", "20"], "spec.parallelTrials: parallelTrials must not exceed maxTrials"),
        (["--max-trials", "0"], "--max-trials and --parallel must be at least 1"),
        (["--parallel", "0"], "--max-trials and --parallel must be at least 1"),
        (["--max-trials", "-3"], "--max-trials and --parallel must be at least 1"),
        (["--max-trials", "20000"], "spec.maxTrials: Invalid value: 20000: should be less than or equal to 10000"),
        (["--max-trials", "5000", "--parallel", "2000"],
         "spec.parallelTrials: Invalid value: 2000: should be less than or equal to 1000"),
    ],
)
def test_invalid_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                           message: str) -> None:
    write_experiment(tmp_path, GOOD, maxTrials=10, parallelTrials=2)
    code = main(["run", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "out"), *args])
    assert code == 2
    assert capsys.readouterr().err.splitlines() == ["invalid overrides:", f"  {message}"]
    assert not (tmp_path / "out").exists()


def test_override_that_is_not_a_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_experiment(tmp_path, GOOD)
    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "exp.yaml"), "--parallel", "many"])
    assert info.value.code == 2
    assert "argument --parallel/-p: invalid int value: 'many'" in capsys.readouterr().err


def test_invalid_experiment_is_not_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_experiment(tmp_path, GOOD, maxTrials=2, parallelTrials=3)
    assert main(["run", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'exp.yaml'}: invalid TuningExperiment:",
        "  spec.parallelTrials: parallelTrials must not exceed maxTrials"]
    assert not (tmp_path / "out").exists()


def test_default_output_directory(tmp_path: Path) -> None:
    write_experiment(tmp_path, GOOD, name="my-exp", maxTrials=1, parallelTrials=1)
    r = subprocess.run([sys.executable, "-m", "kubetune", "run", "exp.yaml", "-q"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(results(tmp_path / "kubetune-runs" / "my-exp")) == 1


# ------------------------------------------------------------------------------------------------- stopping

def test_ctrl_c_stops_running_trials_and_keeps_results(tmp_path: Path) -> None:
    script = """
        import os, sys, time, kubetune_trial as kt
        n = int(os.environ["KUBETUNE_TRIAL_NUMBER"])
        here = os.path.dirname(os.environ["KUBETUNE_REPORT_FILE"])
        open(os.path.join(here, "pid"), "w").write(str(os.getpid()))
        if n < 2:
            kt.report(acc=0.1 * (n + 1))
            sys.exit(0)
        if n == 2:  # uses the SDK: SIGTERM makes report() return False, and it exits cleanly
            kt.report(step=0, acc=0.01)
            open(os.path.join(here, "ready"), "w").close()
            while kt.report(step=1, acc=0.01):
                time.sleep(0.05)
            open(os.path.join(here, "stopped-cleanly"), "w").close()
            sys.exit(0)
        open(os.path.join(here, "ready"), "w").close()
        time.sleep(120)  # no SDK: SIGTERM ends it
    """
    write_experiment(tmp_path, script, maxTrials=10, parallelTrials=2)
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "kubetune", "run", "exp.yaml", "--out", str(out)], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        ready = [out / "trials" / f"exp-000{i}" / "ready" for i in (2, 3)]
        while not all(f.exists() for f in ready):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "trials 2 and 3 never started"
            time.sleep(0.05)
        time.sleep(0.3)
        sent = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 130, stderr
    assert time.monotonic() - sent < 10
    assert "interrupted; 4 trials recorded" in stderr
    rows = results(out)
    assert [(row["number"], row["state"], row["reason"]) for row in rows] == [
        ("0", "Succeeded", "Completed"),
        ("1", "Succeeded", "Completed"),
        ("2", "Canceled", "Interrupted"),
        ("3", "Canceled", "Interrupted"),
    ]
    assert rows[2]["message"] == "interrupted by the user"
    assert float(rows[2]["acc"]) == 0.01  # what the stopped trial reported is kept
    assert (out / "trials" / "exp-0002" / "stopped-cleanly").exists()
    assert len(records(out)) == 4
    s = summary(out)
    assert s["best_trial"]["number"] == 1
    # No trial process is left behind.
    for i in range(4):
        pid = int((out / "trials" / f"exp-000{i}" / "pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_active_deadline_seconds(tmp_path: Path) -> None:
    script = """
        import time, kubetune_trial as kt
        kt.report(step=0, acc=0.5)
        time.sleep(60)
    """
    write_experiment(tmp_path, script, maxTrials=1, parallelTrials=1, job={"activeDeadlineSeconds": 1})
    started = time.monotonic()
    r = kubetune_run(tmp_path)
    assert time.monotonic() - started < 30
    assert r.returncode == 1
    [row] = results(tmp_path / "out")
    assert (row["state"], row["reason"], row["message"]) == (
        "Failed", "DeadlineExceeded", "the trial ran longer than activeDeadlineSeconds")
    assert "experiment failed: NoSuccessfulTrials" in r.stderr


# ------------------------------------------------------------------------------------------------- the example

def test_digits_svm_example(tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "kubetune", "run", str(ROOT / "examples" / "digits-svm.yaml"),
                        "--max-trials", "6", "--out", str(out)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=600)
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    rows = results(out)
    assert len(rows) == 6
    assert all(row["state"] == "Succeeded" for row in rows), rows
    for row in rows:
        assert 0.0 < float(row["accuracy"]) <= 1.0
        assert float(row["fit_seconds"]) > 0
        assert row["param_kernel"] in ("rbf", "poly", "sigmoid")
    best = max(float(row["accuracy"]) for row in rows)
    s = summary(out)
    assert s["best_trial"]["metrics"]["accuracy"] == pytest.approx(best)
    assert s["outcome"]["succeeded"] is True
    assert s["outcome"]["reason"] in ("MaxTrialsReached", "TargetReached")
    # The 3-fold steps were reported as a learning curve.
    assert all(len(rec.get("curve", [])) == 3 for rec in records(out))
    print(f"digits-svm: 6 trials in {elapsed:.1f}s, best accuracy {best:.4f}")


def test_an_internal_error_stops_every_trial_and_keeps_results(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """If the run itself fails (a bug, a full disk), no trial process outlives it and the results are written."""
    from kubetune.local import runner as runner_module
    from kubetune.validation import load_experiment

    script = """
        import os, time
        here = os.path.dirname(os.environ["KUBETUNE_REPORT_FILE"])
        open(os.path.join(here, "pid"), "w").write(str(os.getpid()))
        time.sleep(120)
    """
    write_experiment(tmp_path, script, maxTrials=4, parallelTrials=2)
    out = tmp_path / "out"
    real = runner_module.make_plan
    calls = {"n": 0}

    def failing_plan(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1 and all((out / "trials" / f"exp-000{i}" / "pid").exists() for i in (0, 1)):
            raise RuntimeError("the sampler broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "make_plan", failing_plan)
    runner = runner_module.LocalRunner(load_experiment(tmp_path / "exp.yaml"), out)
    with pytest.raises(RuntimeError, match="the sampler broke"):
        runner.run()
    rows = results(out)
    assert [(row["number"], row["state"], row["reason"]) for row in rows] == [
        ("0", "Canceled", "Interrupted"), ("1", "Canceled", "Interrupted")]
    assert rows[0]["message"] == "stopped because kubetune run failed: RuntimeError: the sampler broke"
    for i in (0, 1):
        pid = int((out / "trials" / f"exp-000{i}" / "pid").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
