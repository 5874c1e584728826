"""``kubetune run``: the local backend. Trials are local processes; the plan is the operator's.

Each trial runs the first container's ``command`` + ``args`` with parameters substituted, the container's ``env``
(literal values) and the kubetune env vars, in the current directory (or the container's ``workingDir``). A
leading ``python``/``python3`` is this interpreter, so a virtualenv's packages are used. Metrics come back through
the SDK's report file (``KUBETUNE_REPORT_FILE``), with the termination-message file as the fallback.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..engine import Sampler
from ..metrics import MetricsFormatError, parse_termination_message
from ..plan import NewTrial, Outcome, Plan, StopOrder, build_sampler, make_plan
from ..pruning import make_pruner
from ..spec import ExperimentSpec, TuningExperiment
from ..template import render_pod_spec, trial_name
from ..trials import Reason, Trial, TrialState, add_curve_point
from .results import ResultsWriter

POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 10.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class LocalTrial:
    trial: Trial
    name: str
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    report_offset: int = 0
    stop_order: StopOrder | None = None
    stop_sent: float | None = None


@dataclass
class RunResult:
    outcome: Outcome | None
    trials: list[Trial]
    best: Trial | None
    out_dir: Path
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if self.outcome is not None and self.outcome.succeeded else 1


class LocalRunner:
    def __init__(
        self,
        experiment: TuningExperiment,
        out_dir: Path,
        *,
        on_event: Callable[[str, "LocalRunner"], None] | None = None,
    ) -> None:
        self.experiment = experiment
        self.spec: ExperimentSpec = experiment.spec
        self.name = experiment.metadata.name
        self.out_dir = out_dir
        self.on_event = on_event or (lambda message, runner: None)
        self.trials: dict[int, LocalTrial] = {}
        self.sampler: Sampler = build_sampler(self.spec, self.name)
        self.pruner = make_pruner(self.spec)
        self.writer = ResultsWriter(out_dir, self.spec, self.name)
        self.plan: Plan | None = None
        self.started = time.monotonic()

    # -- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "experiment.json").write_text(
            json.dumps(self.experiment.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2)
        )
        interrupted = False
        try:
            while True:
                self._poll()
                plan = make_plan(self.spec, self.all_trials(), experiment=self.name,
                                 sampler=self.sampler, pruner=self.pruner)
                self.plan = plan
                for order in plan.stop:
                    self._stop(order)
                for new in plan.create:
                    self._launch(new)
                if plan.finished:
                    break
                self.on_event("tick", self)
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            interrupted = True
            self.on_event("interrupted", self)
            self._stop_all(Reason.INTERRUPTED, "interrupted by the user")
        except Exception as e:  # a bug or an I/O error: no trial process may outlive the run
            self._stop_all(Reason.INTERRUPTED, f"stopped because kubetune run failed: {type(e).__name__}: {e}")
            raise
        finally:
            self.writer.write(self.all_trials(), self.plan.outcome if self.plan else None)
        plan = self.plan
        return RunResult(plan.outcome if plan else None, self.all_trials(), plan.best if plan else None,
                         self.out_dir, interrupted)

    def all_trials(self) -> list[Trial]:
        return [lt.trial for lt in sorted(self.trials.values(), key=lambda lt: lt.trial.number)]

    # -- launching ----------------------------------------------------------------------------------------------

    def _launch(self, new: NewTrial) -> None:
        name = trial_name(self.name, new.number)
        directory = self.out_dir / "trials" / name
        directory.mkdir(parents=True, exist_ok=True)
        trial = Trial(number=new.number, params=new.params, state=TrialState.RUNNING, start_time=_now())
        lt = LocalTrial(trial=trial, name=name, directory=directory)
        self.trials[new.number] = lt
        job_spec = self.spec.trial_template.spec
        pod_spec = render_pod_spec(job_spec["template"]["spec"], self.name, new.number, new.params)
        container = pod_spec["containers"][0]
        argv = list(container.get("command") or []) + list(container.get("args") or [])
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
        report_file.touch()
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
        log = open(directory / "output.log", "wb")
        # Ctrl-C between starting the process and recording it would orphan the process: hold SIGINT until then.
        blocked = _block_sigint()
        try:
            lt.process = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except FileNotFoundError:
            self._finish(lt, TrialState.FAILED, Reason.COMMAND_NOT_FOUND, f"command not found: {argv[0]}")
        except PermissionError:
            self._finish(lt, TrialState.FAILED, Reason.COMMAND_NOT_FOUND, f"command not executable: {argv[0]}")
        except OSError as e:
            self._finish(lt, TrialState.FAILED, Reason.ERROR, f"cannot start {argv[0]}: {e}")
        finally:
            log.close()
            if blocked:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        deadline = job_spec.get("activeDeadlineSeconds")
        if isinstance(deadline, (int, float)) and deadline > 0:
            lt.deadline = lt.started + float(deadline)
        self.on_event(f"started {name}", self)

    # -- observing ----------------------------------------------------------------------------------------------

    def _poll(self) -> None:
        for lt in list(self.trials.values()):
            if not lt.trial.active or lt.process is None:
                continue
            self._read_reports(lt)
            code = lt.process.poll()
            now = time.monotonic()
            if code is None:
                if lt.deadline is not None and now > lt.deadline and lt.stop_order is None:
                    lt.stop_order = StopOrder(lt.trial.number, TrialState.FAILED, Reason.DEADLINE_EXCEEDED,
                                              "the trial ran longer than activeDeadlineSeconds")
                    self._signal(lt, signal.SIGKILL)
                elif lt.stop_sent is not None and now - lt.stop_sent > STOP_GRACE_SECONDS:
                    self._signal(lt, signal.SIGKILL)
                continue
            self._read_reports(lt)
            self._on_exit(lt, code)

    def _read_reports(self, lt: LocalTrial) -> None:
        path = lt.directory / "reports.jsonl"
        try:
            with open(path, "rb") as f:
                f.seek(lt.report_offset)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        lt.report_offset += end + 1
        for line in data[: end + 1].splitlines():
            try:
                rec = json.loads(line)
                metrics = {k: float(v) for k, v in rec["metrics"].items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if not all(math.isfinite(v) for v in metrics.values()):
                continue
            lt.trial.metrics.update(metrics)
            step = rec.get("step")
            objective = metrics.get(self.spec.objective.metric)
            if step is not None and objective is not None:
                lt.trial.curve = add_curve_point(lt.trial.curve, int(step), objective)

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
            try:
                text = (lt.directory / "termination-log").read_text(errors="replace")
            except OSError:
                text = ""
            try:
                lt.trial.metrics.update(parse_termination_message(text) or {})
            except MetricsFormatError as e:
                self._finish(lt, TrialState.FAILED, Reason.INVALID_METRICS, str(e))
                return
        if metric not in lt.trial.metrics:
            self._finish(lt, TrialState.FAILED, Reason.METRICS_MISSING,
                         f"the trial exited without reporting the objective metric {metric!r}")
            return
        self._finish(lt, TrialState.SUCCEEDED, Reason.COMPLETED, "")

    def _finish(self, lt: LocalTrial, state: TrialState, reason: str, message: str) -> None:
        lt.trial.state = state
        lt.trial.reason = reason
        lt.trial.message = message
        lt.trial.completion_time = _now()
        self.writer.write(self.all_trials(), None)
        self.on_event(f"finished {lt.name}", self)

    # -- stopping -----------------------------------------------------------------------------------------------

    def _stop(self, order: StopOrder) -> None:
        lt = self.trials.get(order.number)
        if lt is None or not lt.trial.active or lt.stop_order is not None:
            return
        lt.stop_order = order
        if lt.process is None or lt.process.poll() is not None:
            self._finish(lt, order.state, order.reason, order.message)
            return
        self._signal(lt, signal.SIGTERM)

    def _signal(self, lt: LocalTrial, sig: int) -> None:
        if lt.process is None:
            return
        if sig == signal.SIGTERM:
            lt.stop_sent = time.monotonic()
        try:
            os.killpg(lt.process.pid, sig)
        except ProcessLookupError:
            pass

    def _stop_all(self, reason: str, message: str) -> None:
        for lt in self.trials.values():
            if lt.trial.active:
                lt.stop_order = StopOrder(lt.trial.number, TrialState.CANCELED, reason, message)
                if lt.process is None:
                    self._finish(lt, TrialState.CANCELED, reason, message)
                else:
                    self._signal(lt, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            try:
                self._poll()
            except KeyboardInterrupt:
                break
            if not any(lt.trial.active for lt in self.trials.values()):
                return
            time.sleep(POLL_SECONDS)
        for lt in self.trials.values():
            if lt.trial.active:
                self._signal(lt, signal.SIGKILL)
                if lt.process is not None:
                    lt.process.wait()
                order = lt.stop_order
                assert order is not None
                self._finish(lt, order.state, order.reason, order.message)


def _block_sigint() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    return True


def _last_line(path: Path, limit: int = 200) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - 4096, 0))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:limit] if lines else ""
