"""`kubetune submit FILE --wait` as its own process against the real control plane, the operator and the node agent:
every finished trial shown once (checked against the records the operator wrote), the exit code of each outcome
(succeeded, failed, timeout, Ctrl-C, which leaves the experiment running), and the live view on a pseudo-terminal."""

from __future__ import annotations

import collections
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from operator_process import Experiments, OperatorProcess, wait_for

OBJECTIVE = Path(__file__).resolve().parent / "trials" / "objective.py"
STYLE = re.compile(r"\x1b\[[0-9;]*m")
CURSOR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")  # moves and erases end a drawn line too
ROW = re.compile(r"^(\d+)\s+(Succeeded|Failed|Pruned|Canceled)\s")


@pytest.fixture(scope="module")
def ex(kube_api: client.ApiClient, ns: str) -> Experiments:
    return Experiments(kube_api, ns)


def experiment_file(directory: Path, name: str, max_trials: int, parallel: int, *, seconds: float = 0.0,
                    mode: str = "ok", max_failed: int | None = None) -> Path:
    """An experiment of `objective.py` trials (score = -(x - 0.3)^2); ``mode: crash`` makes every trial exit 3."""
    spec: dict[str, Any] = {
        "objective": {"metric": "score", "goal": "maximize"},
        "parameters": [{"name": "x", "type": "float", "min": 0.0, "max": 1.0},
                       {"name": "mode", "type": "categorical", "values": [mode]}],
        "algorithm": {"name": "random", "seed": 5},
        "maxTrials": max_trials, "parallelTrials": parallel,
        "trialTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
            "serviceAccountName": "kubetune-trial", "restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "trial", "image": "kubetune-trial:test",
                            "command": ["python", str(OBJECTIVE), "--x", "${params.x}"],
                            "env": [{"name": "TRIAL_SECONDS", "value": str(seconds)}]}]}}}},
    }
    if max_failed is not None:
        spec["maxFailedTrials"] = max_failed
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "kubetune.io/v1alpha1", "kind": "TuningExperiment",
                                    "metadata": {"name": name}, "spec": spec}))
    return path


def command(path: Path, ns: str, control_plane: Any, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kubetune", "submit", str(path), "--wait", "-n", ns,
            "--kubeconfig", str(control_plane.kubeconfig), *extra]


def trial_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if re.match(r"^#\d+ ", ln)]


def test_every_finished_trial_once_and_exit_0(op: OperatorProcess, ns: str, control_plane: Any, ex: Experiments,
                                              tmp_path: Path) -> None:
    """Ten quick trials, four at a time: several finish between two reads, each is printed once."""
    path = experiment_file(tmp_path, "many", 10, 4)
    proc = subprocess.run(command(path, ns, control_plane, "--timeout", "180"), capture_output=True, text=True,
                          timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stderr  # not a terminal: plain lines
    records = ex.records("many")
    assert sorted(records) == list(range(10))
    lines = trial_lines(proc.stderr)
    numbers = [int(ln.split()[0][1:]) for ln in lines]
    assert collections.Counter(numbers) == collections.Counter(range(10)), proc.stderr  # each exactly once
    for ln in lines:
        rec = records[int(ln.split()[0][1:])]
        assert ln.split()[1] == rec["state"] == "Succeeded"
        assert f"score={rec['metrics']['score']:.6g}" in ln and f"x={rec['params']['x']!r}" in ln
    assert "experiment succeeded: MaxTrialsReached" in proc.stderr
    assert "trials: 10 succeeded\n" in proc.stderr
    best = max(records, key=lambda n: records[n]["metrics"]["score"])
    out = proc.stdout.splitlines()
    assert out[0] == "tuningexperiment.kubetune.io/many created"
    assert out[-1].startswith(f"best: #{best} ") and f"x={records[best]['params']['x']!r}" in out[-1], out


def test_failed_experiment_exits_1(op: OperatorProcess, ns: str, control_plane: Any, ex: Experiments,
                                   tmp_path: Path) -> None:
    """Every trial exits 3; with maxFailedTrials 1 the second failure fails the experiment."""
    path = experiment_file(tmp_path, "crashing", 5, 1, mode="crash", max_failed=1)
    proc = subprocess.run(command(path, ns, control_plane, "--timeout", "180"), capture_output=True, text=True,
                          timeout=240, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    records = ex.records("crashing")
    assert len(records) == 2 and all(r["state"] == "Failed" for r in records.values()), records
    lines = trial_lines(proc.stderr)
    assert sorted(int(ln.split()[0][1:]) for ln in lines) == sorted(records), proc.stderr
    assert all(ln.split()[1] == "Failed" and records[int(ln.split()[0][1:])]["reason"] in ln for ln in lines)
    assert "experiment failed: TooManyFailedTrials" in proc.stderr
    assert "trials: 2 failed\n" in proc.stderr
    assert proc.stdout == "tuningexperiment.kubetune.io/crashing created\n"  # no best trial


def test_timeout_exits_124_and_the_experiment_goes_on(op: OperatorProcess, ns: str, control_plane: Any,
                                                      ex: Experiments, tmp_path: Path) -> None:
    path = experiment_file(tmp_path, "slowish", 2, 2, seconds=30)
    started = time.monotonic()
    proc = subprocess.run(command(path, ns, control_plane, "--timeout", "3"), capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 124, proc.stderr
    assert time.monotonic() - started < 60
    last = proc.stderr.splitlines()[-1]
    assert last.startswith(f"timed out after 3s waiting for {ns}/slowish; it goes on running on the cluster")
    wait_for("its trials to start", lambda: len(ex.jobs("slowish")) == 2, timeout=60)
    assert ex.finished("slowish") is None  # still running: the timeout stopped only the command
    ex.delete("slowish")


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGINT, 130, "interrupted"),
                                                    (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_exits_130_and_leaves_the_experiment_running(sig: int, code: int, word: str, op: OperatorProcess,
                                                            ns: str, control_plane: Any, ex: Experiments,
                                                            tmp_path: Path) -> None:
    """Ctrl-C (SIGINT; SIGTERM alike) stops following, says the experiment goes on, and it does: the same object
    runs its trials to the end."""
    name = f"stopped-{word}"
    path = experiment_file(tmp_path, name, 2, 2, seconds=15)  # still running when the signal comes, even when loaded
    proc = subprocess.Popen(command(path, ns, control_plane), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for("the trials' Jobs", lambda: len(ex.jobs(name)) == 2, timeout=60)
        uid = ex.get(name)["metadata"]["uid"]
        assert proc.poll() is None
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"{word}: stopped following {ns}/{name}; it goes on running on the cluster "
        f"(kubetune get {name} -n {ns}; kubetune delete {name} -n {ns} stops it)"), err
    done = wait_for("the experiment to succeed", lambda: ex.finished(name), timeout=120)
    assert done["status"] == "True" and done["reason"] == "MaxTrialsReached", done
    assert ex.get(name)["metadata"]["uid"] == uid
    assert sorted(ex.records(name)) == [0, 1]
    ex.delete(name)


def test_following_rides_out_an_api_server_restart(op: OperatorProcess, ns: str, control_plane: Any,
                                                  ex: Experiments, tmp_path: Path) -> None:
    """kube-apiserver stopped for 4 s while `submit --wait` follows: the command says it cannot read the
    experiment, waits, says when it reads it again, and ends as usual (exit 0, every trial printed once)."""
    name = "restarted"
    path = experiment_file(tmp_path, name, 8, 2, seconds=1.5)
    proc = subprocess.Popen(command(path, ns, control_plane, "--timeout", "300"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for("a first recorded trial", lambda: ex.records(name), timeout=120)
        down = control_plane.restart("kube-apiserver", down_seconds=4.0)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert down >= 4.0
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lost = [ln for ln in err.splitlines() if ln.startswith(f"cannot read {ns}/{name}: ")]
    again = [ln for ln in err.splitlines() if ln == f"reading {ns}/{name} again"]
    assert len(lost) == 1 and lost[0].endswith("retrying until it answers (Ctrl-C stops following)"), err
    assert len(again) == 1 and err.index(lost[0]) < err.index(again[0]), err
    numbers = [int(ln.split()[0][1:]) for ln in trial_lines(err)]
    assert collections.Counter(numbers) == collections.Counter(range(8)), err
    assert "experiment succeeded: MaxTrialsReached" in err
    assert out.splitlines()[-1].startswith("best: #")
    ex.delete(name)


def test_get_watch_follows_an_experiment_already_running(op: OperatorProcess, ns: str, control_plane: Any,
                                                         ex: Experiments, tmp_path: Path) -> None:
    """`kubetune get NAME --watch` on an experiment created elsewhere, after some of its trials finished: those are
    printed first, then the others as they finish, each once; the exit code by outcome."""
    path = experiment_file(tmp_path, "watched", 6, 2, seconds=2)
    ex.create(yaml.safe_load(path.read_text()))
    wait_for("a first recorded trial", lambda: ex.records("watched"), timeout=90)
    proc = subprocess.run([sys.executable, "-m", "kubetune", "get", "watched", "--watch", "-n", ns,
                           "--kubeconfig", str(control_plane.kubeconfig)],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    records = ex.records("watched")
    numbers = [int(ln.split()[0][1:]) for ln in trial_lines(proc.stderr)]
    assert sorted(records) == list(range(6))
    assert collections.Counter(numbers) == collections.Counter(range(6)), proc.stderr
    assert "experiment succeeded: MaxTrialsReached" in proc.stderr and "trials: 6 succeeded\n" in proc.stderr
    best = max(records, key=lambda n: records[n]["metrics"]["score"])
    assert proc.stdout.startswith(f"best: #{best} "), proc.stdout
    ex.delete("watched")


def _read_until_exit(master: int, proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def test_live_view_on_a_terminal(op: OperatorProcess, ns: str, control_plane: Any, ex: Experiments,
                                 tmp_path: Path) -> None:
    """On a pseudo-terminal 72 columns wide: the progress bar with elapsed time and ETA, the running trials, and the
    finished trials once each as one aligned table within the width."""
    columns = 72
    path = experiment_file(tmp_path, "onscreen", 6, 2, seconds=3)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
    proc = subprocess.Popen(command(path, ns, control_plane, "--timeout", "180"), stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    try:
        raw = _read_until_exit(master, proc, 240)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    screen = CURSOR.sub("\n", STYLE.sub("", raw.decode("utf-8", "replace")))
    assert code == 0, screen
    assert "Traceback" not in screen
    lines = [ln.rstrip() for ln in screen.split("\n") if ln.strip()]
    plain = ("tuningexperiment.kubetune.io/", "waiting for ", "experiment succeeded: ", "trials: ", "best: ")
    drawn = [ln for ln in lines if not ln.startswith(plain)]  # the view's lines, not the messages around it
    assert max(len(ln) for ln in drawn) <= columns, [ln for ln in drawn if len(ln) > columns]
    records = ex.records("onscreen")
    assert sorted(records) == list(range(6))
    rows = [ln for ln in lines if ROW.match(ln)]
    assert collections.Counter(int(r.split()[0]) for r in rows) == collections.Counter(range(6)), screen
    assert len({r.index(r.split()[1]) for r in rows}) == 1  # one aligned table
    header = next(ln for ln in lines if ln.split()[:4] == ["#", "state", "score", "parameters"])
    assert header.index("state") == rows[0].index(rows[0].split()[1])
    for r in rows:
        rec = records[int(r.split()[0])]
        assert r.split()[1] == rec["state"] and float(r.split()[2]) == pytest.approx(rec["metrics"]["score"],
                                                                                      rel=1e-5)
    assert re.search(r"trials .*\d/6 elapsed \d+:\d\d:\d\d ETA", screen), screen
    assert re.search(r"^\d+\s+Running\s", screen, re.M)
    assert "best score=" in screen
    best = max(records, key=lambda n: records[n]["metrics"]["score"])
    assert any(ln.startswith(f"best: #{best} ") for ln in lines)
    assert "experiment succeeded: MaxTrialsReached" in screen and "trials: 6 succeeded" in screen
