"""``kubetune run``: the local backend. Trials are local processes; the plan is the operator's.

Each trial runs the first container's ``command`` + ``args`` with parameters substituted, the container's ``env``
(literal values) and the kubetune env vars, in the current directory (or the container's ``workingDir``). A
leading ``python``/``python3`` is this interpreter, so a virtualenv's packages are used. Metrics come back through
the SDK's report file (``KUBETUNE_REPORT_FILE``), with the termination-message file as the fallback.

Sturdiness, by design rather than by timing:

* SIGINT and SIGTERM only append to a list (:class:`_Signals`); the loop reads it at safe points, so no
  ``KeyboardInterrupt`` ever lands inside ``Popen``, the results writer or the sampler. The first signal stops
  every trial (SIGTERM to its process group, SIGKILL after the pod's ``terminationGracePeriodSeconds``); a second
  one SIGKILLs them at once. The plan is computed in a worker thread so a slow sampler does not delay the stop.
* Each trial is its own process group, and Linux SIGKILLs the trial's first process when ``kubetune run`` dies
  (``PR_SET_PDEATHSIG``). When a trial's first process exits, whatever it left in its group is killed, as when a
  pod's main container ends.
* The journal (:class:`~kubetune.local.results.Journal`) records each launch before the process starts and each
  finish after it ends, synced to disk: a run killed at any moment resumes with the same command. Trials that were
  running are recorded ``Canceled``/``Interrupted`` and not run again (each trial runs once, as on Kubernetes); any
  process of theirs still alive is killed first.
* What a trial writes is read in bounded pieces: at most :data:`REPORT_READ_LIMIT` bytes a poll, lines of at most
  :data:`~kubetune.metrics.MAX_REPORT_BYTES` (longer ones are skipped unread), only the last :data:`REPORT_TAIL`
  bytes when the trial writes faster than it is read; lines are parsed by :mod:`kubetune.metrics` and the trial's
  record is bounded by :mod:`kubetune.trials` (:data:`~kubetune.trials.MAX_METRICS` metrics, objective first).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from ..checkpoints import checkpoint_env, deletable
from ..engine import Sampler
from ..metrics import (
    MAX_REPORT_BYTES,
    TERMINATION_MESSAGE_LIMIT,
    MetricsFormatError,
    parse_report_line,
    parse_termination_message,
)
from ..pausing import paused_reason, pauses, superseded
from ..plan import NewTrial, Outcome, Plan, StopOrder, build_sampler, make_plan, recent_segments
from ..pruning import make_pruner
from ..spec import ExperimentSpec, TuningExperiment, trial_time_limit
from ..template import render_pod_spec, trial_name
from ..trials import Reason, Trial, TrialState, add_curve_point, bound_metrics, clip_text
from ..warmstart import WarmStartResult
from .results import JOURNAL, Journal, JournalError, ResultsWriter, journal_identity

POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 10.0
"""SIGTERM to SIGKILL when the pod template sets no ``terminationGracePeriodSeconds``."""
MAX_GRACE_SECONDS = 600.0
KILL_WAIT_SECONDS = 5.0
"""How long a trial may take to vanish after SIGKILL before it is recorded anyway (a process stuck in the kernel)."""
RESULTS_INTERVAL = 1.0
"""results.csv/trials.jsonl/summary.json are rewritten at most this often while running (the journal every trial)."""

REPORT_LINE_LIMIT = MAX_REPORT_BYTES
"""A longer report line is skipped unread."""
REPORT_READ_LIMIT = 4 * REPORT_LINE_LIMIT
"""Bytes of a trial's report file read per poll (more than a line, so an over-long line is recognized)."""
REPORT_TAIL = 4 * REPORT_READ_LIMIT
"""When the unread part of a report file is longer, only its last this-many bytes are read."""

LOCK_FILE = ".kubetune.lock"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunRefused(Exception):
    """The run cannot start: the output directory is in use or holds another experiment's run."""


@dataclass
class LocalTrial:
    trial: Trial
    name: str
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    grace: float = STOP_GRACE_SECONDS
    report_offset: int = 0
    skip_line: bool = False
    """The report file's current line is being skipped (too long, or cut by a jump to the tail)."""
    skipped_bytes: int = 0
    """Report bytes jumped over because the trial wrote them faster than they were read."""
    stop_order: StopOrder | None = None
    stop_sent: float | None = None
    killed: float | None = None
    bad_reports: int = 0
    last_bad_report: str = ""
    partial_reports: int = 0
    last_partial_report: str = ""
    dropped_metrics: int = 0


@dataclass
class RunResult:
    outcome: Outcome | None
    trials: list[Trial]
    best: Trial | None
    out_dir: Path
    interrupted: bool = False
    signal: int | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 128 + (self.signal or signal.SIGINT)
        return 0 if self.outcome is not None and self.outcome.succeeded else 1


# -- signals --------------------------------------------------------------------------------------------------------


class _Signals:
    """SIGINT/SIGTERM as a list read at safe points, plus a self-pipe that cuts the loop's sleep short.

    The handlers only append to :attr:`received`: nothing is raised inside the loop. (A ``KeyboardInterrupt``
    between ``Popen.poll()`` taking its lock and its ``try`` leaves the lock held: every later ``poll()`` says
    "running" and ``wait()`` blocks for ever.) Only the main thread can install handlers; elsewhere this is a
    plain sleep.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, received: list[int] | None = None) -> None:
        self.received: list[int] = received if received is not None else []
        """Shared with whoever caught signals before the run (``kubetune run`` does from its first line)."""
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._saved: dict[int, Any] = {}
        self._saved_fd: int | None = None
        self._closed = False
        self._lock = threading.Lock()  # never taken by the handler: wake() from a worker vs. closing the pipe

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            self._saved_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
            for sig in self.SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        if self._saved_fd is not None:
            signal.set_wakeup_fd(self._saved_fd)
        with self._lock:
            self._closed = True
            os.close(self._r)
            os.close(self._w)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def wake(self) -> None:
        """Cut the current :meth:`sleep` short (from any thread; a no-op once the run has ended)."""
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._w, b"\0")
            except OSError:  # the pipe is full: a wake-up is pending anyway
                pass

    def sleep(self, seconds: float) -> None:
        if not self.received:
            select.select([self._r], [], [], seconds)
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass


class _Planning:
    """``make_plan`` in a worker thread: the loop keeps watching trials and signals while a sampler works."""

    def __init__(self, compute: Callable[[], Plan], done: Callable[[], None]) -> None:
        self._compute = compute
        self._notify = done
        self.plan: Plan | None = None
        self.error: BaseException | None = None
        self.done = False
        threading.Thread(target=self._run, name="kubetune-plan", daemon=True).start()

    def _run(self) -> None:
        try:
            self.plan = self._compute()
        except BaseException as e:  # handed to the loop, which re-raises it
            self.error = e
        finally:
            self.done = True
            self._notify()

    def result(self) -> Plan:
        if self.error is not None:
            raise self.error
        assert self.plan is not None
        return self.plan


# -- processes ------------------------------------------------------------------------------------------------------


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_runner(parent: int) -> Callable[[], None] | None:
    """``preexec_fn``: the trial's first process is SIGKILLed when the thread that started it (the main one) ends."""
    if _PRCTL is None:
        return None
    prctl = _PRCTL

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _kill_leftovers(trials_dir: Path) -> int:
    """SIGKILL every process whose ``KUBETUNE_REPORT_FILE`` lies under ``trials_dir`` (Linux ``/proc``).

    Used when a run is resumed: processes of the previous run's trials that outlived it (children that left the
    process group of a trial killed with the runner). ``pidfd`` pins each process between reading its
    environment and signalling it, so a recycled pid is never signalled.
    """
    prefix = b"KUBETUNE_REPORT_FILE=" + os.fsencode(str(trials_dir)) + b"/"
    me = os.getpid()
    killed = 0
    try:
        pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        if pid == me:
            continue
        fd = None
        try:
            if hasattr(os, "pidfd_open"):
                fd = os.pidfd_open(pid)
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read(1 << 20)
            if not any(item.startswith(prefix) for item in env.split(b"\0")):
                continue
            if fd is not None:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
            killed += 1
        except OSError:
            continue
        finally:
            if fd is not None:
                os.close(fd)
    return killed


def _clock_origin(trials: Iterable[Trial]) -> float | None:
    """``time.monotonic()`` of the earliest start among ``trials`` (their recorded wall-clock times), or None."""
    starts = []
    for t in trials:
        try:
            starts.append(datetime.fromisoformat((t.start_time or "").replace("Z", "+00:00")))
        except (ValueError, TypeError):
            continue
    aware = [s if s.tzinfo else s.replace(tzinfo=timezone.utc) for s in starts]
    if not aware:
        return None
    ago = max((datetime.now(timezone.utc) - min(aware)).total_seconds(), 0.0)
    return time.monotonic() - ago


# -- what trials write ----------------------------------------------------------------------------------------------


def _read_tail(path: Path, limit: int) -> bytes:
    """The last ``limit`` bytes of a file; ``b""`` when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - limit, 0))
            return f.read(limit)
    except OSError:
        return b""


def _last_line(path: Path, limit: int = 200) -> str:
    lines = [ln for ln in _read_tail(path, 4096).decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip()[:limit] if lines else ""


# -- the runner -----------------------------------------------------------------------------------------------------


class LocalRunner:
    def __init__(
        self,
        experiment: TuningExperiment,
        out_dir: Path,
        *,
        on_event: Callable[[str, LocalRunner], None] | None = None,
        fresh: bool = False,
        signals: list[int] | None = None,
        warm_start: Sequence[Path] = (),
    ) -> None:
        """``signals``: SIGINT/SIGTERM caught before :meth:`run` (they stop the run at once); the run appends to it."""
        self.experiment = experiment
        self.early_signals = signals
        from ..results.warm import source_directories  # the results package reads what this one writes

        self.warm_dirs = source_directories(experiment.spec, Path(os.path.abspath(out_dir)), warm_start)
        """Results directories to warm-start from: ``spec.warmStart.experiments`` next to ``out_dir``, then
        ``warm_start`` (``kubetune run --warm-start``)."""
        self.warm: WarmStartResult | None = None
        self.spec: ExperimentSpec = experiment.spec
        self.name = experiment.metadata.name
        self.out_dir = Path(os.path.abspath(out_dir))
        self.on_event = on_event or (lambda message, runner: None)
        self.fresh = fresh
        self.trials: dict[int, LocalTrial] = {}
        self.sampler: Sampler = build_sampler(self.spec, self.name)
        self.pruner = make_pruner(self.spec)
        self.writer = ResultsWriter(self.out_dir, self.spec, self.name)
        self.journal = Journal(self.out_dir / JOURNAL)
        self.plan: Plan | None = None
        self.started = time.monotonic()
        self.resumed: tuple[int, int] | None = None
        """``(trials recorded earlier, of which lost)`` when this run continues a journal."""
        self.stopping = False
        self.clock: float | None = None
        """When (``time.monotonic()``) the experiment's clock started, for ``stopping.maxDurationSeconds``: the start
        of its first trial, read from the journal when the run is resumed (the time between runs counts)."""
        self._signals: _Signals | None = None
        self._dirty = False
        self._written = 0.0
        self._lock_fd: int | None = None
        self.checkpoints_deleted: set[int] = set()
        """With pbt: the trials whose checkpoint directory this run deleted (see :mod:`kubetune.checkpoints`)."""

    # -- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run the experiment to its end, or until SIGINT/SIGTERM. Raises :class:`RunRefused` before any trial."""
        with _Signals(self.early_signals) as signals:
            self._signals = signals
            self._lock()
            try:
                self._warm_start()
                self._open()
                return self._run()
            finally:
                self.journal.close()
                self._unlock()
                self._signals = None

    def _run(self) -> RunResult:
        assert self._signals is not None
        received = self._signals.received
        try:
            self._loop()
        except BaseException as e:  # a bug or an I/O error: no trial process may outlive the run
            self._stop_all(f"stopped because kubetune run failed: {type(e).__name__}: {e}")
            self._drain(already=len(received))
            raise
        finally:
            self._write_results(final=True)
        plan = self.plan
        return RunResult(plan.outcome if plan else None, self.all_trials(), plan.best if plan else None,
                         self.out_dir, bool(received), received[0] if received else None)

    def _loop(self) -> None:
        assert self._signals is not None
        signals = self._signals
        planning: _Planning | None = None
        while True:
            if signals.received:
                self.on_event("interrupted", self)
                self._stop_all("interrupted by the user")
                self._drain(already=1)  # a planning thread still running is abandoned: its plan is never applied
                return
            self._poll()
            if planning is None:
                planning = _Planning(self._compute_plan(), signals.wake)
            if not planning.done:
                self._tick()
                signals.sleep(POLL_SECONDS)
                continue
            plan = planning.result()
            planning = None
            self.plan = plan
            for order in plan.stop:
                self._stop(order)
            for new in plan.create:
                if signals.received:
                    break
                self._launch(new)
            self._delete_checkpoints()
            if plan.finished:
                return
            self.on_event("tick", self)
            self._tick()
            signals.sleep(POLL_SECONDS)

    @property
    def checkpoint_root(self) -> Path:
        """Where ``kubetune run`` keeps the trials' checkpoints (with ``spec.checkpoints``)."""
        return self.out_dir / "checkpoints"

    def _delete_checkpoints(self) -> None:
        """With pbt, delete the checkpoints nothing can restore from any more (:func:`kubetune.checkpoints.deletable`)
        once, so at most ``2 * populationSize + parallelTrials`` exist at a time. With asha pausing, delete a paused
        trial's checkpoint once the trial that continued it finished (:func:`kubetune.pausing.superseded`)."""
        if self.spec.checkpoints is None:
            return
        if pauses(self.spec):
            for number in sorted(superseded(self.all_trials()) - self.checkpoints_deleted):
                shutil.rmtree(self.checkpoint_root / trial_name(self.name, number), ignore_errors=True)
                self.checkpoints_deleted.add(number)
            return
        if self.spec.algorithm.name != "pbt":
            return
        trials = self.all_trials()
        candidates = [t.number for t in trials if t.lineage is not None and not t.active
                      and t.number not in self.checkpoints_deleted]
        for number in sorted(deletable(recent_segments(trials), candidates, [t for t in trials if t.active])):
            shutil.rmtree(self.checkpoint_root / trial_name(self.name, number), ignore_errors=True)
            self.checkpoints_deleted.add(number)

    def _compute_plan(self) -> Callable[[], Plan]:
        # The worker gets its own copies: the loop keeps updating the live trials while it works.
        snapshot = [dataclasses.replace(t, params=dict(t.params), metrics=dict(t.metrics), curve=list(t.curve))
                    for t in self.all_trials()]
        spec, name, sampler, pruner = self.spec, self.name, self.sampler, self.pruner
        elapsed = self.elapsed()
        warm = self.warm.observations if self.warm is not None else ()
        return lambda: make_plan(spec, snapshot, experiment=name, sampler=sampler, pruner=pruner, elapsed=elapsed,
                                 warm=warm)

    def _warm_start(self) -> None:
        """Read the warm-start sources once, before anything else: a missing or unreadable one refuses the run."""
        if not self.warm_dirs:
            return
        from ..results.model import ResultsError
        from ..results.warm import load_local

        try:
            self.warm = load_local(self.spec, self.warm_dirs)
        except ResultsError as e:
            raise RunRefused(str(e)) from None
        self.on_event("warm-start", self)

    def elapsed(self) -> float | None:
        """Seconds since the experiment's clock started (None before its first trial)."""
        return None if self.clock is None else time.monotonic() - self.clock

    def _tick(self) -> None:
        if self._dirty and time.monotonic() - self._written >= RESULTS_INTERVAL:
            self._write_results()

    def _write_results(self, final: bool = False) -> None:
        self.writer.write(self.all_trials(), self.plan.outcome if self.plan and final else None)
        self._dirty = False
        self._written = time.monotonic()

    def all_trials(self) -> list[Trial]:
        return [lt.trial for lt in sorted(self.trials.values(), key=lambda lt: lt.trial.number)]

    # -- the output directory -----------------------------------------------------------------------------------

    def _lock(self) -> None:
        import fcntl

        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunRefused(f"another kubetune run is using {self.out_dir}") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _open(self) -> None:
        """Start a journal, or continue the one in the output directory."""
        if self.fresh:
            self.journal.path.unlink(missing_ok=True)
            shutil.rmtree(self.out_dir / "trials", ignore_errors=True)
            shutil.rmtree(self.checkpoint_root, ignore_errors=True)
            for stale in ("results.csv", "trials.jsonl", "summary.json"):
                (self.out_dir / stale).unlink(missing_ok=True)
        try:
            state = self.journal.open(journal_identity(self.name, self.spec))
        except JournalError as e:
            raise RunRefused(f"{e}; run with --fresh to discard it, or choose another --out") from None
        (self.out_dir / "experiment.json").write_text(
            json.dumps(self.experiment.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2)
        )
        if not state.trials:
            return
        lost = state.lost
        if lost:
            _kill_leftovers(self.out_dir / "trials")
        self.clock = _clock_origin(state.trials.values())
        for trial in sorted(state.trials.values(), key=lambda t: t.number):
            name = trial_name(self.name, trial.number)
            self.trials[trial.number] = LocalTrial(trial=trial, name=name, directory=self.out_dir / "trials" / name)
        for trial in lost:
            lt = self.trials[trial.number]
            self._read_reports(lt, final=True)  # what it reported before the kill is kept
            self._finish(lt, TrialState.CANCELED, Reason.INTERRUPTED,
                         "kubetune run ended while the trial ran; it is not run again")
        self.resumed = (len(state.trials), len(lost))
        self._write_results()
        self.on_event("resumed", self)

    # -- launching ----------------------------------------------------------------------------------------------

    def _launch(self, new: NewTrial) -> None:
        name = trial_name(self.name, new.number)
        directory = self.out_dir / "trials" / name
        directory.mkdir(parents=True, exist_ok=True)
        extra = None
        if self.spec.checkpoints is not None:
            extra = checkpoint_env(str(self.checkpoint_root), self.name, new.number, new.lineage)
            Path(extra["KUBETUNE_CHECKPOINT_DIR"]).mkdir(parents=True, exist_ok=True)
        trial = Trial(number=new.number, params=new.params, state=TrialState.RUNNING, start_time=_now(),
                      lineage=new.lineage, checkpoint=extra["KUBETUNE_CHECKPOINT_DIR"] if extra else "")
        lt = LocalTrial(trial=trial, name=name, directory=directory)
        self.trials[new.number] = lt
        if self.clock is None:
            self.clock = lt.started
        self.journal.launch(trial)  # before the process exists: a kill from here on never runs this trial twice
        pod_spec = render_pod_spec(self.spec.trial_template.spec["template"]["spec"], self.name, new.number,
                                   new.params, self.spec.conditional_names, extra)
        grace = pod_spec.get("terminationGracePeriodSeconds")
        if isinstance(grace, (int, float)) and not isinstance(grace, bool) and 0 <= grace <= MAX_GRACE_SECONDS:
            lt.grace = float(grace)
        container = pod_spec["containers"][0]
        argv = [str(a) for a in list(container.get("command") or []) + list(container.get("args") or [])]
        if not argv:
            self._finish(lt, TrialState.FAILED, Reason.COMMAND_NOT_FOUND,
                         "the first container has no command; `kubetune run` cannot use the image's entrypoint")
            return
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        env = dict(os.environ)
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
        report_file = directory / "reports.jsonl"
        termination_log = directory / "termination-log"
        report_file.write_bytes(b"")  # a trial directory left by an earlier run starts empty
        termination_log.unlink(missing_ok=True)
        env.update({
            "KUBETUNE_REPORT_FILE": str(report_file),
            "KUBETUNE_TERMINATION_LOG": str(termination_log),
        })
        env.pop("KUBETUNE_POD_NAME", None)
        cwd = container.get("workingDir") or os.getcwd()
        if not os.path.isdir(cwd):
            self._finish(lt, TrialState.FAILED, Reason.ERROR, f"workingDir {cwd!r} does not exist")
            return
        (directory / "params.json").write_text(json.dumps(new.params, indent=2))
        with open(directory / "output.log", "wb") as log:
            try:
                lt.process = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=_die_with_runner(os.getpid()),
                )
            except FileNotFoundError:
                self._finish(lt, TrialState.FAILED, Reason.COMMAND_NOT_FOUND, f"command not found: {argv[0]}")
            except PermissionError:
                self._finish(lt, TrialState.FAILED, Reason.COMMAND_NOT_FOUND, f"command not executable: {argv[0]}")
            except (OSError, subprocess.SubprocessError) as e:
                self._finish(lt, TrialState.FAILED, Reason.ERROR, f"cannot start {argv[0]}: {e}")
        limit = trial_time_limit(self.spec)
        if limit is not None:
            lt.deadline = lt.started + float(limit[0])
        self.on_event(f"started {name}", self)

    # -- observing ----------------------------------------------------------------------------------------------

    def _poll(self) -> None:
        for lt in list(self.trials.values()):
            if not lt.trial.active or lt.process is None:
                continue
            self._read_reports(lt)
            code = self._reap(lt)
            now = time.monotonic()
            if code is None:
                if lt.killed is not None:
                    if now - lt.killed > KILL_WAIT_SECONDS:  # stuck in the kernel: record it, stop waiting
                        order = lt.stop_order
                        self._finish(lt, order.state if order else TrialState.FAILED,
                                     order.reason if order else Reason.ERROR,
                                     f"the process did not end within {KILL_WAIT_SECONDS:g}s of SIGKILL")
                elif lt.deadline is not None and now > lt.deadline and lt.stop_order is None:
                    # as the Job controller does: the trial's pod is deleted (SIGTERM, SIGKILL after its grace)
                    limit = trial_time_limit(self.spec)
                    assert limit is not None
                    what = ("activeDeadlineSeconds" if limit[1] == "activeDeadlineSeconds"
                            else f"{limit[1]}={limit[0]:g}s")
                    lt.stop_order = StopOrder(lt.trial.number, TrialState.FAILED, Reason.DEADLINE_EXCEEDED,
                                              f"the trial ran longer than {what}")
                    self._signal(lt, signal.SIGTERM)
                elif lt.stop_sent is not None and now - lt.stop_sent > lt.grace:
                    self._signal(lt, signal.SIGKILL)
                continue
            self._read_reports(lt, final=True)
            self._on_exit(lt, code)

    def _reap(self, lt: LocalTrial) -> int | None:
        """The trial's exit code once its first process has ended (and its process group has been killed)."""
        process = lt.process
        assert process is not None
        if process.returncode is not None:
            return process.returncode
        if not hasattr(os, "waitid"):
            return process.poll()
        try:
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return process.poll()
        if info is None:
            return None
        # Exited but not yet reaped: its pid still names the process group, so no other group can have it.
        self._signal(lt, signal.SIGKILL)
        return process.wait()

    def _read_reports(self, lt: LocalTrial, final: bool = False) -> None:
        """Read what the trial appended to its report file since the last poll, in bounded pieces."""
        path = lt.directory / "reports.jsonl"
        try:
            size = os.stat(path).st_size
        except OSError:
            return
        if size < lt.report_offset:  # the trial truncated its file: start over
            lt.report_offset, lt.skip_line = 0, False
        if size - lt.report_offset > REPORT_TAIL:  # too far behind: keep the latest reports
            lt.skipped_bytes += size - REPORT_TAIL - lt.report_offset
            lt.report_offset, lt.skip_line = size - REPORT_TAIL, True
        if size == lt.report_offset:
            return
        try:
            with open(path, "rb") as f:
                while lt.report_offset < size:
                    f.seek(lt.report_offset)
                    data = f.read(min(REPORT_READ_LIMIT, size - lt.report_offset))
                    if not data:
                        break
                    self._consume_reports(lt, data, last=final and lt.report_offset + len(data) >= size)
                    if not final:
                        break
        except OSError:
            return

    def _consume_reports(self, lt: LocalTrial, data: bytes, last: bool) -> None:
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            self._report_line(lt, data[pos:nl])
            pos = nl + 1
        rest = len(data) - pos
        if rest >= REPORT_LINE_LIMIT or (last and rest):
            if last and rest < REPORT_LINE_LIMIT:
                self._report_line(lt, data[pos:])  # the trial has ended: its last line will not grow
            else:
                if not lt.skip_line:  # counted once, however many reads it spans
                    self._bad_report(lt, f"a report line is longer than the {REPORT_LINE_LIMIT} bytes kubetune reads")
                lt.skip_line = True
            pos = len(data)
        lt.report_offset += pos

    def _report_line(self, lt: LocalTrial, line: bytes) -> None:
        if lt.skip_line:  # the end of a line that was too long, or cut by a jump to the tail
            lt.skip_line = False
            return
        if not line.strip():
            return
        try:
            report = parse_report_line(line)
        except MetricsFormatError as e:
            self._bad_report(lt, str(e))
            return
        except Exception as e:  # the parser promises MetricsFormatError only; a trial must not end the run
            self._bad_report(lt, f"a report line could not be read ({type(e).__name__})")
            return
        if report.notes:
            lt.partial_reports += 1
            lt.last_partial_report = clip_text("; ".join(report.notes), 200)
        self._merge_metrics(lt, report.metrics)
        metric = self.spec.objective.metric
        for step, values in report.curve:
            if metric in values:
                lt.trial.curve = add_curve_point(lt.trial.curve, step, values[metric])

    @staticmethod
    def _bad_report(lt: LocalTrial, why: str) -> None:
        lt.bad_reports += 1
        lt.last_bad_report = clip_text(why, 200)

    def _merge_metrics(self, lt: LocalTrial, metrics: dict[str, float]) -> None:
        """Merge the latest values, bounded as records are: the spec's metrics first, then the others by name."""
        merged = {**lt.trial.metrics, **metrics}
        lt.trial.metrics, dropped = bound_metrics(merged, self.spec.metric_names)
        lt.dropped_metrics = max(lt.dropped_metrics, dropped)

    def _on_exit(self, lt: LocalTrial, code: int) -> None:
        order = lt.stop_order
        if order is not None:
            self._finish(lt, order.state, order.reason, order.message)
            return
        if code != 0:
            tail = _last_line(lt.directory / "output.log")
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            self._finish(lt, TrialState.FAILED, Reason.ERROR, f"{how}" + (f": {tail}" if tail else ""))
            return
        metric = self.spec.objective.metric
        if metric not in lt.trial.metrics:
            try:  # what Kubernetes keeps of a termination message: its last 4096 bytes
                self._merge_metrics(lt, parse_termination_message(
                    _read_tail(lt.directory / "termination-log", TERMINATION_MESSAGE_LIMIT)) or {})
            except MetricsFormatError as e:
                self._finish(lt, TrialState.FAILED, Reason.INVALID_METRICS, str(e))
                return
            except Exception as e:  # the parser promises MetricsFormatError only; a trial must not end the run
                self._finish(lt, TrialState.FAILED, Reason.INVALID_METRICS,
                             f"the termination message could not be read ({type(e).__name__})")
                return
        missing = [o.metric for o in self.spec.objective_list if o.metric not in lt.trial.metrics]
        if missing:
            self._finish(lt, TrialState.FAILED, Reason.METRICS_MISSING,
                         f"the trial exited without reporting the objective metric {missing[0]!r}")
            return
        why = paused_reason(self.spec, lt.trial)  # a segment that ended on a rung (kubetune.pausing)
        if why is not None:
            self._finish(lt, TrialState.PAUSED, *why)
            return
        self._finish(lt, TrialState.SUCCEEDED, Reason.COMPLETED, "")

    def _finish(self, lt: LocalTrial, state: TrialState, reason: str, message: str) -> None:
        lt.trial.state = state
        lt.trial.reason = reason
        lt.trial.message = message
        lt.trial.completion_time = _now()
        if lt.bad_reports:
            lt.trial.note(f"ignored {lt.bad_reports} report line{'s' if lt.bad_reports > 1 else ''} "
                          f"(the last: {lt.last_bad_report})")
        if lt.partial_reports:
            lt.trial.note(f"{lt.partial_reports} report line{'s' if lt.partial_reports > 1 else ''} in part "
                          f"unusable (the last: {lt.last_partial_report})")
        if lt.dropped_metrics:
            lt.trial.note(f"kept {len(lt.trial.metrics)} of the metrics reported")
        if lt.skipped_bytes:
            lt.trial.note(f"skipped {lt.skipped_bytes} bytes of reports written faster than they were read")
        try:
            self.journal.finish(lt.trial)
        except OSError:
            if not self.stopping:  # a full disk stops the run; while stopping, every trial must still be stopped
                raise
        self._dirty = True
        self.on_event(f"finished {lt.name}", self)

    # -- stopping -----------------------------------------------------------------------------------------------

    def _stop(self, order: StopOrder) -> None:
        lt = self.trials.get(order.number)
        if lt is None or not lt.trial.active or lt.stop_order is not None:
            return
        lt.stop_order = order
        if lt.process is None:
            self._finish(lt, order.state, order.reason, order.message)
            return
        self._signal(lt, signal.SIGTERM)

    def _signal(self, lt: LocalTrial, sig: int) -> None:
        """Signal the trial's process group; only while its first process is not reaped (its pid is the group's)."""
        if lt.process is None or lt.process.returncode is not None:
            return
        now = time.monotonic()
        if sig == signal.SIGTERM:
            lt.stop_sent = now
        elif sig == signal.SIGKILL and lt.killed is None and lt.trial.active:
            lt.killed = now
        try:
            os.killpg(lt.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _stop_all(self, message: str) -> None:
        """Stop every running trial: SIGTERM now, SIGKILL after its grace period (see :meth:`_drain`)."""
        self.stopping = True
        for lt in list(self.trials.values()):
            if not lt.trial.active:
                continue
            if lt.stop_order is None:
                lt.stop_order = StopOrder(lt.trial.number, TrialState.CANCELED, Reason.INTERRUPTED, message)
            if lt.process is None:
                self._finish(lt, lt.stop_order.state, lt.stop_order.reason, lt.stop_order.message)
            elif lt.stop_sent is None:
                self._signal(lt, signal.SIGTERM)

    def _drain(self, already: int) -> None:
        """Wait until no trial runs; a signal beyond the first ``already`` skips the grace periods (SIGKILL now)."""
        signals = self._signals
        while any(lt.trial.active for lt in self.trials.values()):
            if signals is not None and len(signals.received) > already:
                for lt in self.trials.values():
                    if lt.trial.active and lt.killed is None:
                        self._signal(lt, signal.SIGKILL)
            self._poll()
            if signals is not None:
                signals.sleep(POLL_SECONDS)
            else:
                time.sleep(POLL_SECONDS)
