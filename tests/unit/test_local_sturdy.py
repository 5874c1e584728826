"""``kubetune run`` under faults: signals at many moments, SIGKILL and resume, hostile trial output.

Runs are forked from the test process (the CLI's ``main`` in a new session), so each costs no interpreter start-up
and faults can be injected by patching the runner's functions inside the child only. What is checked is what really
happened: the exit status from ``waitpid``, trial processes found alive in ``/proc`` (by the report file in their
environment, so children of trials count), launches counted by the trials themselves in an append-only log.
"""

from __future__ import annotations

import csv
import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.cli import main
from kubetune.local import progress

GRACE = 1  # terminationGracePeriodSeconds of every trial here
MARGIN = 8.0  # generous: two shared cores; a hang shows as tens of seconds
REAPED = -1000


# ------------------------------------------------------------------------------------------------- helpers

TRIAL = """
    import os, signal, subprocess, sys, time
    n = int(os.environ["KUBETUNE_TRIAL_NUMBER"])
    x = float(sys.argv[2])
    fd = os.open(os.environ["LAUNCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{n} {os.getpid()}\\n".encode())
    os.close(fd)
    if n % 3 == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends this one
    if n % 4 == 1:  # a child in the trial's process group, as a data loader would be
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(float(os.environ.get("TRIAL_SECONDS", "0.6")) * x)
    import kubetune_trial as kt
    kt.report(step=0, acc=x / 2)
    kt.report(acc=x)
"""


def write_experiment(tmp_path: Path, *, script: str = TRIAL, max_trials: int = 40, parallel: int = 3,
                     parameters: list[dict[str, Any]] | None = None, arg: str = "${params.x}",
                     grace: int = GRACE, **spec: Any) -> Path:
    (tmp_path / "trial.py").write_text(textwrap.dedent(script))
    doc = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningExperiment",
        "metadata": {"name": "sturdy"},
        "spec": {
            "objective": {"metric": "acc", "goal": "maximize"},
            "parameters": parameters or [{"name": "x", "type": "float", "min": 0.0, "max": 1.0}],
            "algorithm": {"name": "random", "seed": 7},
            "maxTrials": max_trials,
            "parallelTrials": parallel,
            "maxFailedTrials": max_trials,
            "trialTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": grace,
                "containers": [{"name": "trial", "image": "unused:1",
                                "command": ["python", str(tmp_path / "trial.py"), "--x", arg]}],
            }}}},
            **spec,
        },
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def fork_run(tmp_path: Path, out: Path, *extra: str, inject: Callable[[], None] | None = None,
             env: dict[str, str] | None = None) -> int:
    """Start ``kubetune run`` in a forked child leading its own session (as a shell job); return its pid."""
    log = out.parent / f"{out.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.setsid()
            stream = open(log, "a", buffering=1)
            os.dup2(stream.fileno(), 1)
            os.dup2(stream.fileno(), 2)
            sys.stdout = sys.stderr = stream
            progress.Progress.__init__.__defaults__ = (stream, None)
            os.environ.update(env or {})
            os.environ["LAUNCH_LOG"] = str(out.parent / f"{out.name}.launches")
            if inject is not None:
                inject()
            code = main(["run", str(tmp_path / "exp.yaml"), "--out", str(out), "--quiet", *extra])
        except KeyboardInterrupt:  # what the interpreter does with an uncaught one: die by SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while os.getpgid(pid) != pid:  # signals go to its process group: wait until the child leads it
        assert time.monotonic() < deadline, "the forked run never became a session leader"
        time.sleep(0.001)
    return pid


def wait_exit(pid: int, timeout: float) -> int | None:
    """The child's exit code (negative: killed by that signal), or None if it is still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (by wait_for)
            return REAPED
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    wait_exit(pid, 10)


def trial_processes(out: Path) -> list[int]:
    """Live (not zombie) processes whose KUBETUNE_REPORT_FILE lies under ``out``: trials and their children."""
    needle = b"KUBETUNE_REPORT_FILE=" + os.fsencode(str(out.resolve() / "trials")) + b"/"
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if state != b"Z" and any(item.startswith(needle) for item in env.split(b"\0")):
            found.append(int(d))
    return found


def assert_no_trial_processes(out: Path, within: float = 3.0, only: set[int] | None = None) -> None:
    """No trial process (or, with ``only``, none of those pids) is alive, allowing for asynchronous SIGKILL."""
    deadline = time.monotonic() + within
    while True:
        alive = [pid for pid in trial_processes(out) if only is None or pid in only]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in trial_processes(out) if alive else []:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"trial processes left alive: {alive}"


def first_processes(out: Path) -> set[int]:
    """The pids of the trials' first processes, as they logged them."""
    path = out.parent / f"{out.name}.launches"
    return {int(line.split()[1]) for line in path.read_text().splitlines()} if path.exists() else set()


def launches(out: Path) -> Counter[int]:
    path = out.parent / f"{out.name}.launches"
    if not path.exists():
        return Counter()
    return Counter(int(line.split()[0]) for line in path.read_text().splitlines())


def read_results(out: Path) -> list[dict[str, str]]:
    """results.csv, trials.jsonl and summary.json parse and agree; returns the rows."""
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert [int(r["number"]) for r in rows] == [rec["number"] for rec in records]
    assert summary["trials"] == len(rows)
    return rows


def wait_for(predicate: Callable[[], bool], pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the moment never came"
        done, status = os.waitpid(pid, os.WNOHANG)
        assert not done, f"kubetune run ended early: {os.waitstatus_to_exitcode(status)}"
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------------- fault hooks


def hold(name: str, marker: Path, nth: int, seconds: float) -> Callable[[], None]:
    """An injection for the child: the ``nth`` call of runner function ``name`` touches ``marker`` and sleeps."""

    def inject() -> None:
        from kubetune.local import results, runner

        calls = {"n": 0}

        def held(real: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                calls["n"] += 1
                if calls["n"] == nth:
                    marker.touch()
                    time.sleep(seconds)
                return real(*args, **kwargs)
            return wrapper

        if name == "suggest":  # a slow sampler (a large history)
            runner.make_plan = held(runner.make_plan)  # type: ignore[assignment]
        elif name == "launch":  # inside the launch, before and while the process starts
            real_popen = runner.subprocess.Popen

            class Sub:
                Popen = staticmethod(held(real_popen))
                STDOUT, DEVNULL, SubprocessError = (runner.subprocess.STDOUT, runner.subprocess.DEVNULL,
                                                    runner.subprocess.SubprocessError)

            runner.subprocess = Sub  # type: ignore[assignment]
        elif name == "write":  # between writing a results file and renaming it into place
            real_replace = results.os.replace

            class Os:
                def __getattr__(self, attr: str) -> Any:
                    return getattr(os, attr)

                replace = staticmethod(held(real_replace))

            results.os = Os()  # type: ignore[assignment]
        elif name == "reap":  # while looking whether a trial has exited (where Popen.poll() takes its lock)
            real_waitid = runner.os.waitid

            class RunnerOs:
                def __getattr__(self, attr: str) -> Any:
                    return getattr(os, attr)

                waitid = staticmethod(held(real_waitid))

            runner.os = RunnerOs()  # type: ignore[assignment]
        elif name == "journal":  # while appending to the journal
            results.Journal._append = held(results.Journal._append)  # type: ignore[method-assign]
        else:
            raise AssertionError(name)

    return inject


# ------------------------------------------------------------------------------------------------- 1: signals

PHASES = ["suggest", "launch", "write", "journal", "reap", "running", "grace", "twice", "sigterm"]


@pytest.mark.parametrize("phase", PHASES)
def test_interrupt_at_many_moments(tmp_path: Path, phase: str) -> None:
    """SIGINT to the whole session at moments drawn from a seeded RNG inside each phase; every run exits 130
    within the grace period and a margin, leaves no trial process, and leaves results that parse."""
    rng = random.Random(f"sturdy-{phase}")
    # With a 60 s grace period, exiting within the margin proves that the second signal skipped it.
    grace = 60 if phase == "twice" else GRACE
    write_experiment(tmp_path, grace=grace)
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        marker = tmp_path / f"marker{attempt}"
        inject = None
        if phase in ("suggest", "launch", "write", "journal", "reap"):
            nth = rng.randint(2, 6)
            # the suggest hold is longer than the whole bound: the stop must not wait for a sampler
            inject = hold(phase, marker, nth, 60.0 if phase == "suggest" else 1.0)
        pid = fork_run(tmp_path, out, inject=inject)
        try:
            if inject is not None:
                wait_for(marker.exists, pid)
            elif phase in ("grace", "twice"):  # a trial that ignores SIGTERM is running
                wait_for(lambda: any(n % 3 == 0 for n in launches(out)), pid)
            else:
                k = rng.randint(1, 8)
                wait_for(lambda: sum(launches(out).values()) >= k, pid)
            time.sleep(rng.uniform(0, 0.3))
            sent = time.monotonic()
            sig = signal.SIGTERM if phase == "sigterm" else signal.SIGINT
            os.killpg(pid, sig)
            if phase == "twice":
                time.sleep(rng.uniform(0, 0.3 * GRACE))  # the second Ctrl-C, during the grace period
                os.killpg(pid, signal.SIGINT)
            code = wait_exit(pid, GRACE + MARGIN)  # also for "twice": its trials' grace is 60 s
            elapsed = time.monotonic() - sent
        finally:
            if wait_exit(pid, 0) is None:
                kill_session(pid)
        log = (tmp_path / f"out{attempt}.log").read_text()
        assert code == 128 + sig, f"{phase} #{attempt}: exit {code} after {elapsed:.1f}s\n{log}"
        assert_no_trial_processes(out)
        rows = read_results(out)
        launched = launches(out)
        assert all(v == 1 for v in launched.values()), launched
        assert set(launched) <= {int(r["number"]) for r in rows}
        assert all(r["state"] in ("Succeeded", "Failed", "Canceled") for r in rows), rows
        assert any(r["reason"] == "Interrupted" for r in rows) or not any(
            r["state"] == "Canceled" for r in rows)


CONSOLE_SCRIPT = Path(sys.executable).parent / "kubetune"  # what `pip install` put beside this interpreter


def test_interrupt_while_starting_exits_130(tmp_path: Path) -> None:
    """Ctrl-C at a random moment of start-up (the interpreter importing, the file read, the sampler built, the first
    trials launched) of a fresh ``kubetune run`` process, as a shell job, started both as ``python -m kubetune`` and
    as the installed ``kubetune`` command: 130, or death by SIGINT (which a shell also shows as 130) if it lands
    before ``main`` is called; never a run that goes on. A Ctrl-C while the interpreter itself starts (its ``site``
    module, before any code of the project runs) is CPython's "Fatal Python error", exit 1: allowed for that alone.
    A fresh process, not a fork of the test process, so no state of other tests (handlers, threads) is inherited."""
    write_experiment(tmp_path)
    rng = random.Random("sturdy-start")
    commands = [[sys.executable, "-m", "kubetune"], [str(CONSOLE_SCRIPT)]]
    for attempt in range(4):
        out = tmp_path / f"out{attempt}"
        log = tmp_path / f"out{attempt}.log"
        env = {**os.environ, "LAUNCH_LOG": str(tmp_path / f"out{attempt}.launches")}
        with open(log, "w") as stream:
            proc = subprocess.Popen(
                [*commands[attempt % 2], "run", str(tmp_path / "exp.yaml"), "--out", str(out), "--quiet"],
                stdout=stream, stderr=stream, env=env, start_new_session=True)
        time.sleep(rng.uniform(0, 1.5))
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code: int | None = proc.wait(GRACE + MARGIN)
        except subprocess.TimeoutExpired:
            code = None
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        text = log.read_text()
        assert code in (130, -signal.SIGINT) or (code == 1 and "init_import_site" in text), (code, text)
        assert_no_trial_processes(out)


INTERRUPT_ON_IMPORT = """
import importlib.abc, os, signal, sys

MODULE = sys.argv.pop(1)

class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, handled at the next bytecode: inside that import
        return None

sys.meta_path.insert(0, Interrupt())
from kubetune.cli import main  # as the installed `kubetune` command starts
sys.exit(main())
"""


@pytest.mark.parametrize(("module", "command"), [
    ("pydantic", "validate"), ("kubetune.spec", "validate"), ("kubetune.engine.bayesian", "validate"),
    # modules a command loads only when it runs
    ("kubetune.report", "report"), ("kubetune.dashboard", "dashboard"), ("kubetune.k8s.main", "operator"),
])
def test_ctrl_c_while_the_command_line_loads_exits_130(tmp_path: Path, module: str, command: str) -> None:
    """A Ctrl-C that lands exactly while the CLI's modules load (injected by an import hook as ``module`` is
    imported, from the same entry point the ``kubetune`` console script uses) ends with 130 and no traceback:
    not a KeyboardInterrupt traceback, nor the SchemaError pydantic turns an interrupted schema build into; also
    for the modules a command imports when it starts."""
    write_experiment(tmp_path)
    args = {"validate": [str(tmp_path / "exp.yaml")], "report": [str(tmp_path / "no-such-dir")],
            "dashboard": [str(tmp_path / "no-such-dir")], "operator": []}[command]
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_ON_IMPORT, module, command, *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "valid TuningExperiment" not in proc.stdout, (proc.stdout, proc.stderr)
    if command != "validate":  # the interrupt came before the command did anything
        assert "no-such-dir" not in proc.stderr + proc.stdout, (proc.stdout, proc.stderr)


# ------------------------------------------------------------------------------------------------- 2: SIGKILL


def test_resume_after_sigkill_runs_each_trial_once(tmp_path: Path) -> None:
    """SIGKILL the runner (alone, as the OOM killer would) at several moments, resume with the same command each
    time: in the end exactly maxTrials trials, none launched twice, no process of a killed run left over."""
    max_trials, parallel = 20, 2
    write_experiment(tmp_path, max_trials=max_trials, parallel=parallel)
    out = tmp_path / "out"
    rng = random.Random("sturdy-resume")
    seen_params: dict[int, Any] = {}
    kills = 0

    def finished() -> int:
        path = out / "journal.jsonl"
        return path.read_text().count('{"finish"') if path.exists() else 0

    for k in (1, 5, 9, 13):
        pid = fork_run(tmp_path, out)
        try:
            if kills == 0:  # the first kill catches a trial starting
                wait_for(lambda: sum(launches(out).values()) >= 1, pid)
            else:
                wait_for(lambda: finished() >= k, pid)
                time.sleep(rng.uniform(0, 0.5))
            os.kill(pid, signal.SIGKILL)
            assert wait_exit(pid, 10) == -signal.SIGKILL
            kills += 1
        finally:
            if wait_exit(pid, 0) is None:
                kill_session(pid)
        # the trials' first processes die with the runner (PR_SET_PDEATHSIG); their children are left for the
        # resumed run to kill
        assert_no_trial_processes(out, only=first_processes(out))
        journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()[1:]
                   if line.endswith("}")]
        for rec in journal:
            body = next(iter(rec.values()))
            assert seen_params.setdefault(body["number"], body["params"]) == body["params"]
    pid = fork_run(tmp_path, out)
    code = wait_exit(pid, 120)
    if code is None:
        kill_session(pid)
    log = (tmp_path / "out.log").read_text()
    assert code in (0, 1), log
    assert f"continuing the run in {out}" in log
    assert_no_trial_processes(out)
    rows = read_results(out)
    assert [int(r["number"]) for r in rows] == list(range(max_trials))
    launched = launches(out)
    assert max(launched.values()) == 1, launched
    lost = [r for r in rows if r["reason"] == "Interrupted"]
    for r in rows:
        assert r["state"] in ("Succeeded", "Canceled"), r
        if r["state"] == "Succeeded":
            assert launched[int(r["number"])] == 1
    assert all(r["message"] == "kubetune run ended while the trial ran; it is not run again" for r in lost)
    assert 1 <= len(lost) <= parallel * kills  # at most parallelTrials lost per kill
    assert sum(launched.values()) <= max_trials
    for r in rows:  # a resumed run never re-suggests a recorded trial
        assert float(r["param_x"]) == pytest.approx(seen_params.get(int(r["number"]), {"x": float(r["param_x"])})["x"])
    print(f"resume: {kills} SIGKILLs, {sum(launched.values())} launches for {max_trials} trials, "
          f"{len(lost)} lost")


def test_trials_die_with_a_killed_runner_and_their_children_with_the_resume(tmp_path: Path) -> None:
    script = """
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        fd = os.open(os.environ["LAUNCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{os.environ['KUBETUNE_TRIAL_NUMBER']} {os.getpid()} {child.pid}\\n".encode())
        time.sleep(120)
    """
    write_experiment(tmp_path, script=script, max_trials=2, parallel=2)
    out = tmp_path / "out"
    pid = fork_run(tmp_path, out)
    try:
        wait_for(lambda: sum(launches(out).values()) == 2, pid)
        os.kill(pid, signal.SIGKILL)
        assert wait_exit(pid, 10) == -signal.SIGKILL
    finally:
        if wait_exit(pid, 0) is None:
            kill_session(pid)
    firsts = first_processes(out)
    assert len(firsts) == 2
    assert_no_trial_processes(out, only=firsts)  # killed with the runner, although they ignore SIGTERM
    children = set(trial_processes(out))
    assert len(children) == 2  # the children outlive it: they are not the runner's
    pid = fork_run(tmp_path, out)
    assert wait_exit(pid, 60) == 1  # both trials lost: none succeeded
    assert_no_trial_processes(out, within=0)  # the resumed run killed them before anything else
    rows = read_results(out)
    assert [(r["state"], r["reason"]) for r in rows] == [("Canceled", "Interrupted")] * 2
    assert launches(out) == Counter({0: 1, 1: 1})


def test_resume_refuses_another_spec_and_fresh_starts_over(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    write_experiment(tmp_path, max_trials=2, parallel=2)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "exp.yaml"), "--out", str(out), "-q"]
    monkeypatch.setenv("LAUNCH_LOG", str(tmp_path / "first.launches"))
    assert main(args) == 0
    first = read_results(out)
    # the same spec again: the finished run is continued, nothing is launched again
    monkeypatch.setenv("LAUNCH_LOG", str(tmp_path / "again.launches"))
    assert main(args) == 0
    assert not (tmp_path / "again.launches").exists()
    assert read_results(out) == first
    # more trials with -n: the recorded ones are kept, two more run
    assert main([*args, "-n", "4"]) == 0
    assert launches(tmp_path / "again") == Counter({2: 1, 3: 1})
    assert read_results(out)[:2] == first
    capsys.readouterr()
    # another spec: refused, nothing touched
    write_experiment(tmp_path, max_trials=2, parallel=2, algorithm={"name": "random", "seed": 8})
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (f"cannot run: {out} holds a run of 'sturdy' with a different spec (changed: algorithm); "
            "run with --fresh to discard it, or choose another --out") in err
    assert len(read_results(out)) == 4
    assert main([*args, "--fresh"]) == 0
    assert [r["number"] for r in read_results(out)] == ["0", "1"]
    assert not (out / "trials" / "sturdy-0003").exists()


def test_a_second_run_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    write_experiment(tmp_path, max_trials=2, parallel=1, script="import time; time.sleep(60)")
    out = tmp_path / "out"
    pid = fork_run(tmp_path, out)
    try:
        wait_for(lambda: (out / "journal.jsonl").exists(), pid)
        other = fork_run(tmp_path, out)
        assert wait_exit(other, 30) == 2
        assert f"cannot run: another kubetune run is using {out}" in (tmp_path / "out.log").read_text()
    finally:
        kill_session(pid)
    assert_no_trial_processes(out)


def test_damaged_journal_is_refused_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    write_experiment(tmp_path, max_trials=1, parallel=1)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "exp.yaml"), "--out", str(out), "-q", "-n", "2"]
    monkeypatch.setenv("LAUNCH_LOG", str(tmp_path / "x.launches"))
    assert main(args[:-2]) == 0
    journal = out / "journal.jsonl"
    journal.write_bytes(journal.read_bytes() + b'{"finish": {"number": 0, "par')  # cut by a kill: dropped
    assert main(args) == 0
    assert [r["number"] for r in read_results(out)] == ["0", "1"]
    lines = journal.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"}\n") for line in lines)
    journal.write_bytes(lines[0] + b"\xff\xfe not json\n" + b"".join(lines[1:]))
    capsys.readouterr()
    assert main(args) == 2
    assert "journal.jsonl is damaged at line 2" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- 3: hostile output

HOSTILE = r"""
    import json, os, sys
    mode = sys.argv[2]
    report = open(os.environ["KUBETUNE_REPORT_FILE"], "ab")
    term = os.environ["KUBETUNE_TERMINATION_LOG"]
    good = b'{"step": null, "metrics": {"acc": 0.5}}\n'
    if mode == "huge-numbers":
        report.write(b'{"metrics": {"acc": 1e999, "big": ' + b"9" * 5000 + b', "x": ' + b"1" * 400 + b'}}\n')
        report.write(b'{"metrics": {"acc": 0.25, "n": -1e308}}\n')
    elif mode == "deep":
        report.write(b'{"metrics": {"acc": ' + b"[" * 100000 + b"]" * 100000 + b"}}\n")
        report.write(b'{"metrics": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}\n" + good)
    elif mode == "not-utf8":
        report.write(b'{"metrics": {"acc\xff\xfe": 1.0}}\n\xc3\x28\xa0\xa1\n' + good)
    elif mode == "megabytes":  # one 200 MB line, then a good report: never read into memory at once
        report.write(b'{"metrics": {"acc": 0.9, "pad": "')
        chunk = b"x" * (1 << 20)
        for _ in range(200):
            report.write(chunk)
        report.write(b'"}}\n' + good)
    elif mode == "many-metrics":
        report.write(json.dumps({"metrics": {f"m{i}": i for i in range(3000)}}).encode() + b"\n")
        report.write(json.dumps({"metrics": {("n" * 10000): 1, "acc": 0.75}}).encode() + b"\n")
    elif mode == "absurd-steps":
        for step in (-1, 10**30, 1.5, "x", True, None, 2, 10**400):
            report.write(json.dumps({"step": step, "metrics": {"acc": 0.5}}).encode() + b"\n")
    elif mode == "garbage":
        report.write(os.urandom(3 << 20))
    elif mode == "term-huge":  # 10 MB termination file: only its tail is read
        with open(term, "wb") as f:
            f.write(b"y" * (10 << 20) + b'\n{"acc": 0.6}\n')
    elif mode == "term-deep":
        with open(term, "wb") as f:
            f.write(b"[" * 2000 + b"]" * 2000 + b"\n")
    elif mode == "term-not-utf8":
        with open(term, "wb") as f:
            f.write(b'{"acc": 0.5, "\xff": 1}\n')
    elif mode == "term-huge-number":
        with open(term, "wb") as f:
            f.write(b'{"acc": ' + b"9" * 4000 + b"}\n")
    report.close()
"""

EXPECTED = {  # mode: (state, reason); metrics where they are certain
    "huge-numbers": ("Succeeded", "Completed", {"acc": 0.25}),
    "deep": ("Succeeded", "Completed", {"acc": 0.5}),
    "not-utf8": ("Succeeded", "Completed", {"acc": 0.5}),
    "megabytes": ("Succeeded", "Completed", {"acc": 0.5}),
    "many-metrics": ("Succeeded", "Completed", {"acc": 0.75}),
    "absurd-steps": ("Succeeded", "Completed", {"acc": 0.5}),
    "garbage": ("Failed", "MetricsMissing", {}),
    "term-huge": ("Succeeded", "Completed", {"acc": 0.6}),
    "term-deep": ("Failed", "InvalidMetrics", {}),
    "term-not-utf8": ("Failed", "InvalidMetrics", {}),
    "term-huge-number": ("Failed", "InvalidMetrics", {}),
}


def test_hostile_trial_output_ends_in_named_states(tmp_path: Path) -> None:
    modes = list(EXPECTED)
    write_experiment(tmp_path, script=HOSTILE, max_trials=len(modes), parallel=2, arg="${params.mode}",
                     parameters=[{"name": "mode", "type": "categorical", "values": modes}],
                     algorithm={"name": "grid"})
    out = tmp_path / "out"
    rss_file = tmp_path / "rss"

    def measure_peak() -> None:  # the runner's own peak memory, written when the run returns
        from kubetune.local import runner

        real = runner.LocalRunner.run

        def run(self: Any) -> Any:
            try:
                return real(self)
            finally:
                rss_file.write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))

        runner.LocalRunner.run = run  # type: ignore[method-assign]

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pid = fork_run(tmp_path, out, inject=measure_peak)
    code = wait_exit(pid, 120)
    if code is None:
        kill_session(pid)
    log = (tmp_path / "out.log").read_text()
    assert code == 0, log
    rows = {r["param_mode"]: r for r in read_results(out)}
    assert set(rows) == set(modes)
    for mode, (state, reason, metrics) in EXPECTED.items():
        row = rows[mode]
        assert (row["state"], row["reason"]) == (state, reason), (mode, row)
        for name, value in metrics.items():
            assert float(row[name]) == value, (mode, row)
    records = {rec["params"]["mode"]: rec for rec in
               (json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines())}
    kept = records["many-metrics"]["metrics"]
    assert "acc" in kept and 1 < len(kept) <= 64, kept
    # what was left out is said in the trial's message
    assert "kept 64 of the metrics reported" in rows["many-metrics"]["message"]
    assert rows["deep"]["message"].startswith("ignored 2 report lines")
    # skipped as one over-long line, or jumped over when it was found already far behind: either is said
    assert any(why in rows["megabytes"]["message"] for why in ("longer than", "written faster than")), rows
    assert records["absurd-steps"]["curve"] == [[2, 0.5]]
    assert all(len(json.dumps(rec)) < 64 * 1024 for rec in records.values())
    # The 200 MB line was skipped, not read: the child's peak is its size at fork plus far less than 200 MB.
    assert rss_file.exists(), log
    peak_kib = int(rss_file.read_text())
    print(f"hostile output: runner peak {peak_kib} KiB, test process at fork {before} KiB")
    assert peak_kib - before < 40 * 1024, f"runner peak {peak_kib} KiB, test process {before} KiB"
    assert_no_trial_processes(out)
